//! The admin socket: `pinlease status` and `pinlease inject` talk to
//! the daemon here. One JSON object per line each way. The socket is mode
//! 0600 and every peer's credentials are checked (SO_PEERCRED): only root
//! and the daemon's own uid are served.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use log::{info, warn};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::state::{FrontendSlot, ServerState};

/// Longest request line accepted.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

pub struct AdminServer {
    path: PathBuf,
    /// The listening socket's fd, to wake its accept at exit.
    listen_fd: std::os::fd::RawFd,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Answers one request object.
pub fn answer(state: &ServerState, req: &Value) -> Value {
    let Some(cmd) = req.get("cmd").and_then(Value::as_str) else {
        return json!({"ok": false, "error": format!("request has no string \"cmd\": {req}")});
    };
    match cmd {
        "status" => status_reply(state),
        "fault-list" => json!({"ok": true, "faults": state.faults.status()}),
        "fault-add" | "fault-clear" | "fault-load" | "fault-now" => {
            match fault_command(state, cmd, req) {
                Ok(v) => v,
                Err(e) => json!({"ok": false, "error": e}),
            }
        }
        other => {
            json!({"ok": false, "error": format!("unknown command {other:?} (known: status, fault-list, fault-add, fault-clear, fault-load, fault-now)")})
        }
    }
}

/// One frontend slot's part of the `status` reply.
fn frontend_status(slot: &FrontendSlot) -> Value {
    json!({
        "index": slot.index,
        "socket": slot.socket,
        "connected": slot.is_connected(),
        "connections": slot.connections.load(Ordering::SeqCst),
        "status": slot.current_device().map(|d| d.status()),
    })
}

/// The `status` reply: `frontends`, one object per listening socket (its
/// index, socket, connected, connections and device `status`), and the
/// daemon-wide `faults`. A daemon with one socket also has its frontend's
/// `connected`, `connections` and `status` at the top level, the reply's
/// shape before `--socket-count`, which scripts and abort reports read.
pub fn status_reply(state: &ServerState) -> Value {
    let frontends: Vec<Value> = state.frontends.iter().map(frontend_status).collect();
    let mut reply = json!({"ok": true});
    if let [only] = frontends.as_slice() {
        for k in ["connected", "connections", "status"] {
            reply[k] = only[k].clone();
        }
    }
    reply["frontends"] = Value::Array(frontends);
    reply["faults"] = json!(state.faults.status());
    reply
}

/// The slot a `fault-now` acts on: `"frontend": N`, or the only one.
fn fault_now_slot<'a>(
    state: &'a ServerState,
    req: &Value,
) -> std::result::Result<&'a FrontendSlot, String> {
    match req.get("frontend") {
        None | Some(Value::Null) => match state.frontends.as_slice() {
            [only] => Ok(only),
            all => Err(format!(
                "fault-now: the daemon has {} frontends; name one with \"frontend\" (0 to {})",
                all.len(),
                all.len() - 1
            )),
        },
        Some(v) => v
            .as_u64()
            .and_then(|i| state.frontends.get(usize::try_from(i).ok()?))
            .ok_or_else(|| {
                format!(
                    "fault-now \"frontend\" = {v}: not a frontend index (0 to {})",
                    state.frontends.len() - 1
                )
            }),
    }
}

/// The `pinlease inject` commands (docs/faults.md 1.4); validation is the
/// plan file's.
fn fault_command(
    state: &ServerState,
    cmd: &str,
    req: &Value,
) -> std::result::Result<Value, String> {
    use crate::faults::plan::{parse_plan, parse_rule, Action};
    let faults = &state.faults;
    match cmd {
        "fault-add" => {
            let rule = req
                .get("rule")
                .filter(|r| r.is_object())
                .ok_or_else(|| format!("fault-add needs an object \"rule\", got {req}"))?;
            let table = toml::Table::try_from(rule)
                .map_err(|e| format!("rule {rule} cannot be read: {e}"))?;
            let spec = parse_rule(faults.next_id() as usize, &table).map_err(|e| e.0)?;
            let id = faults.add(spec);
            info!("fault rule {id} added: {rule}");
            Ok(json!({"ok": true, "id": id}))
        }
        "fault-clear" => {
            let id = match req.get("id") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| format!("fault-clear \"id\" = {v}: not a rule id"))?,
                ),
            };
            let n = faults.clear(id)?;
            info!("fault rules cleared: {n}");
            Ok(json!({"ok": true, "cleared": n}))
        }
        "fault-load" => {
            let text = req
                .get("plan")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("fault-load needs a string \"plan\", got {req}"))?;
            let plan = parse_plan(text).map_err(|e| e.0)?;
            faults.load(&plan);
            info!(
                "fault plan loaded: seed {}, {} rule(s)",
                plan.seed,
                plan.rules.len()
            );
            Ok(json!({"ok": true, "rules": plan.rules.len(), "seed": plan.seed}))
        }
        _ => {
            let name = req.get("action").and_then(Value::as_str).unwrap_or("");
            let Some(action) = Action::RUNTIME.into_iter().find(|a| a.name() == name) else {
                let known: Vec<&str> = Action::RUNTIME.iter().map(|a| a.name()).collect();
                return Err(format!(
                    "fault-now \"action\" = {:?}: not one of {}",
                    req.get("action").cloned().unwrap_or(Value::Null),
                    known.join(", ")
                ));
            };
            let slot = fault_now_slot(state, req)?;
            let dev = slot
                .current_device()
                .filter(|_| slot.is_connected())
                .ok_or_else(|| match state.frontends.len() {
                    1 => format!("fault-now {name}: no frontend is connected"),
                    _ => format!(
                        "fault-now {name}: no frontend is connected to frontend {} ({})",
                        slot.index, slot.socket
                    ),
                })?;
            faults.now(&dev, action);
            Ok(json!({"ok": true}))
        }
    }
}

fn serve_client(state: &ServerState, stream: UnixStream) {
    let me = geteuid();
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            warn!("admin: {e}");
            return;
        }
    };
    match peer_uid(&stream) {
        Ok(uid) if uid == 0 || uid == me => {}
        Ok(uid) => {
            warn!("admin: refused peer uid {uid} (daemon uid {me})");
            // Read the request first, so the refusal is what the client
            // reads back rather than a broken pipe on its write.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut discard = String::new();
            let _ =
                BufReader::new((&stream).take(MAX_REQUEST_BYTES as u64)).read_line(&mut discard);
            let refusal = json!({"ok": false, "error": format!("peer uid {uid} is not allowed (only root and uid {me})")});
            let _ = writeln!(out, "{refusal}");
            return;
        }
        Err(e) => {
            warn!("admin: cannot read peer credentials: {e}");
            return;
        }
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.take(MAX_REQUEST_BYTES as u64 + 1));
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(n) if n > MAX_REQUEST_BYTES => {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"ok": false, "error": format!("request longer than {MAX_REQUEST_BYTES} bytes")})
                );
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({"ok": false, "error": format!("reading request: {e}")})
                );
                return;
            }
        }
        let reply = match serde_json::from_str::<Value>(line.trim()) {
            Ok(req) => answer(state, &req),
            Err(e) => {
                json!({"ok": false, "error": format!("request is not JSON ({e}): {:?}", line.trim())})
            }
        };
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Binds the admin socket at PATH (mode 0600), before any thread runs
/// and before the sandbox (`AdminServer::start` serves it).
pub fn bind(path: &Path) -> Result<UnixListener> {
    let err = |e: std::io::Error| Error::Admin {
        path: path.to_path_buf(),
        source: e,
    };
    if UnixStream::connect(path).is_ok() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process is listening on it",
        )));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

impl AdminServer {
    /// Serves LISTENER (bound at PATH by [`bind`]) on its own thread.
    pub fn start(
        listener: UnixListener,
        path: &Path,
        state: Arc<ServerState>,
    ) -> Result<AdminServer> {
        use std::os::fd::AsRawFd;
        let err = |e: std::io::Error| Error::Admin {
            path: path.to_path_buf(),
            source: e,
        };
        let listen_fd = listener.as_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        // A thread per client: one that connects and stays
                        // silent must not hold up everyone else's status.
                        Ok(s) => {
                            let state = state.clone();
                            let spawned = std::thread::Builder::new()
                                .name("admin-client".into())
                                .spawn(move || serve_client(&state, s));
                            if let Err(e) = spawned {
                                warn!("admin: cannot start a client thread: {e}");
                            }
                        }
                        Err(e) => warn!("admin: accept: {e}"),
                    }
                }
            })
            .map_err(err)?;
        info!("admin socket on {}", path.display());
        Ok(AdminServer {
            path: path.to_path_buf(),
            listen_fd,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept (it fails with EINVAL) so the thread sees
        // the stop flag. Not by connecting to the path: in a sandbox the
        // path is out of reach.
        // SAFETY: the listener stays open until the thread is joined below.
        unsafe { libc::shutdown(self.listen_fd, libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Client side: sends one request, returns the reply object. A reply with
/// `"ok": false` becomes an error carrying the daemon's message.
pub fn request(path: &Path, req: &Value) -> Result<Value> {
    let err = |e: std::io::Error| Error::Admin {
        path: path.to_path_buf(),
        source: e,
    };
    let mut s = UnixStream::connect(path).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(err)?;
    // A daemon that refuses us may close before reading: still read its
    // answer, which says why, before reporting a failed write.
    let sent = writeln!(s, "{req}");
    let mut line = String::new();
    let read = BufReader::new(&s).read_line(&mut line);
    if line.is_empty() {
        sent.map_err(err)?;
        read.map_err(err)?;
        return Err(Error::AdminRequest(
            "daemon closed the connection without answering".into(),
        ));
    }
    let v: Value = serde_json::from_str(line.trim())
        .map_err(|e| Error::AdminRequest(format!("reply is not JSON ({e}): {line:?}")))?;
    if v.get("ok") != Some(&Value::Bool(true)) {
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("reply without ok/error")
            .to_string();
        return Err(Error::AdminRequest(msg));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Action;

    fn fault_now(state: &ServerState, action: Value) -> Value {
        answer(state, &json!({"cmd": "fault-now", "action": action}))
    }

    #[test]
    fn fault_now_takes_the_runtime_actions_only() {
        let state = ServerState::new().unwrap();
        let bad = fault_now(&state, json!("delay"));
        assert_eq!(
            bad["error"],
            "fault-now \"action\" = String(\"delay\"): not one of revoke-mr, spurious-break, needs-reset, abort",
            "{bad}"
        );
        assert_eq!(fault_now(&state, Value::Null)["ok"], false);
        // Each runtime action is known: without a frontend it is refused for
        // that reason, not as an unknown action.
        for action in Action::RUNTIME {
            let r = fault_now(&state, json!(action.name()));
            assert_eq!(
                r["error"],
                format!("fault-now {}: no frontend is connected", action.name()),
                "{r}"
            );
        }
    }

    #[test]
    fn fault_now_names_the_frontend_when_there_are_several() {
        let engine = crate::faults::FaultEngine::new(&Default::default(), None);
        let state = ServerState::with_faults(engine, vec!["/a0".into(), "/a1".into()]).unwrap();
        let r = fault_now(&state, json!("revoke-mr"));
        assert_eq!(
            r["error"],
            "fault-now: the daemon has 2 frontends; name one with \"frontend\" (0 to 1)",
            "{r}"
        );
        for (frontend, want) in [
            (
                json!(2),
                "fault-now \"frontend\" = 2: not a frontend index (0 to 1)",
            ),
            (
                json!("one"),
                "fault-now \"frontend\" = \"one\": not a frontend index (0 to 1)",
            ),
            (
                json!(1),
                "fault-now revoke-mr: no frontend is connected to frontend 1 (/a1)",
            ),
        ] {
            let req = json!({"cmd": "fault-now", "action": "revoke-mr", "frontend": frontend});
            assert_eq!(answer(&state, &req)["error"], want);
        }
        let reply = status_reply(&state);
        assert_eq!(reply["frontends"][1]["socket"], "/a1");
        assert!(reply.get("connected").is_none(), "{reply}");
    }
}
