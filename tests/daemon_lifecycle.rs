//! The daemon's life around its connections and its admin socket: fresh
//! state per frontend, `--max-connections`, clean exits on signals, socket
//! path checks, the admin socket's own bad input and access control, and
//! the `pinlease status` CLI; and the request queue's kicks, turned off
//! while the daemon drains it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mr::dma;
use common::*;
use pinlease_abi::*;
use pinlease_testkit::daemon::wait_for_path;
use pinlease_testkit::frontend::client::{encode_request, RegMrArgs};
use pinlease_testkit::frontend::{Desc, REQUEST_QUEUE};
use serde_json::{json, Value};

/// Sends `bytes` on a fresh admin connection and reads one reply line.
fn admin_raw(path: &Path, bytes: &[u8]) -> Value {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    // The daemon may answer an over-long line and close before we finish
    // writing it: the reply, not our write, is what the tests check.
    let _ = s.write_all(bytes);
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
}

#[track_caller]
fn admin_error(path: &Path, bytes: &[u8], names: &str) {
    let r = admin_raw(path, bytes);
    assert_eq!(r["ok"], json!(false), "reply {r}");
    let msg = r["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {r}"));
    assert!(msg.contains(names), "error {msg:?} should name {names:?}");
}

#[test]
fn a_new_connection_gets_fresh_state() {
    let mut d = Daemon::start();
    let s = d.status();
    assert_eq!(
        (s["connected"].clone(), s["connections"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(s["status"], json!(null), "no device before any frontend");
    let mut c = d.client();
    d.wait_connection(1);
    let ctx = c.create_context(1, "first").unwrap();
    let (key, _) = c.alloc_mr(ctx, 4, PL_ACCESS_ALL).unwrap();
    let lease = c
        .lease_take(ctx, &lease_req(file(5), 0, 0, PL_POLICY_WAIT))
        .unwrap();
    let ch = c.create_child(ctx, PL_CHILD_EVENT_CHANNEL).unwrap();
    let bases = c.into_frontend().disconnect().unwrap();
    assert_eq!(bases.len(), 2);
    d.wait_connected(false);

    let mut c = d.client();
    d.wait_connection(2);
    let dev = d.device();
    assert_eq!(dev["contexts"], json!([]));
    assert_eq!(dev["mrs"], json!([]));
    assert_eq!(dev["leases"], json!([]));
    assert_eq!(
        (dev["pinned_pages"].clone(), dev["pins"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(dev["counters"]["requests"], json!({}));
    // Handles of the old connection mean nothing to the new device.
    assert_eq!(status_of(c.close_context(ctx)), Status::BadF);
    let ctx2 = c.create_context(2, "second").unwrap();
    assert_eq!(status_of(c.dereg_mr(ctx2, key)), Status::NoEnt);
    assert_eq!(status_of(c.fetch_add(ctx2, key, 0, 1)), Status::NoEnt);
    assert_eq!(
        status_of(c.lease_release(ctx2, lease, PL_RELEASE_HOLDER)),
        Status::NoEnt
    );
    assert_eq!(status_of(c.destroy_child(ctx2, ch)), Status::NoEnt);
    // And the new device works.
    let (k2, pages) = c.alloc_mr(ctx2, 1, PL_ACCESS_ALL).unwrap();
    assert_eq!(c.fetch_add(ctx2, k2, 8, 5).unwrap(), 0);
    assert_eq!(
        c.frontend().read_mem(pages[0] + 8, 8).unwrap(),
        5u64.to_le_bytes()
    );
    d.assert_healthy();
}

#[test]
fn sequential_connections_with_abrupt_close() {
    let mut d = Daemon::start();
    for round in 1..=3u64 {
        let mut c = d.client();
        d.wait_connection(round);
        c.post_event_buffers(4).unwrap();
        let ctx = c.create_context(round as u32, "round").unwrap();
        let (a, apages) = c.alloc_mr(ctx, 2, PL_ACCESS_ALL).unwrap();
        let (b, bpages) = c.alloc_mr(ctx, 2, PL_ACCESS_ALL).unwrap();
        let data = pattern(8192, round as u8);
        c.frontend().write_mem(apages[0], &data).unwrap();
        c.write(ctx, &dma(a, 0, b, 0, 8192)).unwrap();
        assert_eq!(c.frontend().read_mem(bpages[0], 8192).unwrap(), data);
        // Events are numbered per device: from 1 again.
        c.close_context(ctx).unwrap();
        let e = expect_event(&mut c, "CONTEXT_TORN_DOWN");
        assert_eq!((e.seq, e.ctx, e.args), (1, ctx, [2, 0, 4, 0]));
        // No orderly disconnect: the socket just closes (a crashed QEMU).
        drop(c);
        d.wait_connected(false);
    }
    assert_eq!(d.status()["connections"], json!(3));
    d.assert_healthy();
}

#[test]
fn max_connections_exits_after_serving_them() {
    let mut d = Daemon::start_with(&["--max-connections", "1"]);
    let mut c = d.client();
    c.nop().unwrap();
    let ctx = c.create_context(1, "only").unwrap();
    c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    c.into_frontend().disconnect().unwrap();
    let st = d.wait_exit(T);
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log());
    assert!(!d.sock().exists(), "vhost-user socket removed");
    assert!(!d.admin().exists(), "admin socket removed");
    assert!(!d.log().contains("panicked"));
}

#[test]
fn sigterm_while_connected_exits_cleanly() {
    let mut d = Daemon::start();
    let mut c = d.client();
    d.wait_connection(1);
    let ctx = c.create_context(1, "busy").unwrap();
    c.alloc_mr(ctx, 8, PL_ACCESS_ALL).unwrap();
    c.nop().unwrap();
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(T);
    assert_eq!(st.code(), Some(0), "log:\n{}", d.log());
    assert!(!d.sock().exists(), "vhost-user socket removed");
    assert!(!d.admin().exists(), "admin socket removed");
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("stopping"), "{log}");
    drop(c);
}

#[test]
fn sigint_while_idle_exits_cleanly() {
    let mut d = Daemon::start();
    d.signal(libc::SIGINT);
    assert_eq!(d.wait_exit(T).code(), Some(0), "log:\n{}", d.log());
    assert!(!d.sock().exists());
    assert!(!d.admin().exists());
}

#[test]
fn socket_path_in_use_or_not_a_socket_is_refused() {
    let mut d = Daemon::start();
    let run = |sock: &Path, admin: &Path| {
        Command::new(env!("CARGO_BIN_EXE_pinlease"))
            .args(["serve", "--socket-path"])
            .arg(sock)
            .arg("--admin-socket")
            .arg(admin)
            .env_remove("PINLEASE_ADMIN_SOCKET")
            .output()
            .unwrap()
    };
    // Another daemon is listening on it.
    let out = run(&d.sock(), &d.dir().join("admin2.sock"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(d.sock().to_str().unwrap()) && err.contains("listening"),
        "{err}"
    );
    // A regular file is never replaced.
    let f = d.dir().join("plain-file");
    std::fs::write(&f, b"keep me").unwrap();
    let out = run(&f, &d.dir().join("admin3.sock"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(f.to_str().unwrap()) && err.contains("not a socket"),
        "{err}"
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"keep me");
    // The admin socket of the running daemon is not stolen either.
    let out = run(&d.dir().join("vu2.sock"), &d.admin());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(d.admin().to_str().unwrap()));
    // The first daemon is unaffected.
    let mut c = d.client();
    c.nop().unwrap();
    d.assert_healthy();
}

#[test]
fn stale_socket_file_of_a_killed_daemon_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vu.sock");
    let admin = dir.path().join("admin.sock");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_pinlease"))
            .args(["serve", "--socket-path"])
            .arg(&sock)
            .arg("--admin-socket")
            .arg(&admin)
            .env_remove("PINLEASE_ADMIN_SOCKET")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    wait_for_path(&sock, "socket");
    wait_for_path(&admin, "admin socket");
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(sock.exists(), "SIGKILL leaves the socket file behind");
    // The sandboxed daemon dies with its supervisor (parent-death signal),
    // a moment later: then nothing listens on the file any more.
    pinlease_testkit::daemon::poll(T, || match UnixStream::connect(&sock) {
        Ok(_) => Err(()),
        Err(_) => Ok(()),
    })
    .expect("the sandboxed daemon outlived its killed supervisor");
    let second = spawn();
    let mut d = Daemon::adopt(env!("CARGO_BIN_EXE_pinlease"), second, dir);
    let t = Instant::now();
    let mut c = loop {
        // The stale files exist from the start: retry until served.
        if let Ok(fe) = pinlease_testkit::frontend::TestFrontend::connect(
            &d.sock(),
            frontend_config(),
            Duration::from_millis(200),
        ) {
            break pinlease_testkit::frontend::client::Client::new(fe);
        }
        assert!(t.elapsed() < T, "second daemon never served");
        std::thread::sleep(Duration::from_millis(20));
    };
    c.nop().unwrap();
    d.wait_connection(1);
    d.assert_healthy();
}

#[test]
fn admin_socket_bad_input_gets_clear_errors() {
    let mut d = Daemon::start();
    let a = d.admin();
    admin_error(&a, b"this is not json\n", "not JSON");
    admin_error(&a, b"{\"cmd\": \"status\"\n", "not JSON");
    admin_error(&a, b"\n", "not JSON");
    admin_error(&a, b"{\"cmd\": \"frobnicate\"}\n", "frobnicate");
    admin_error(&a, b"{\"command\": \"status\"}\n", "cmd");
    admin_error(&a, b"{\"cmd\": 5}\n", "cmd");
    admin_error(&a, b"[1, 2, 3]\n", "cmd");
    admin_error(&a, b"\xff\xfe{}\n", "");
    // The longest accepted line is 64 KiB including its newline: a status
    // request padded with spaces to exactly that is served...
    let max = pinlease::admin::MAX_REQUEST_BYTES;
    let mut line = b"{\"cmd\": \"status\"}".to_vec();
    line.resize(max - 1, b' ');
    line.push(b'\n');
    let r = admin_raw(&a, &line);
    assert_eq!(r["ok"], json!(true), "{r}");
    // ... one byte more is refused, naming the limit.
    line.insert(0, b' ');
    admin_error(&a, &line, &max.to_string());
    // Far over the limit, without any newline.
    admin_error(&a, &vec![b'x'; 200 * 1024], &max.to_string());
    // Several requests on one connection, one reply each.
    let mut s = UnixStream::connect(&a).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"{\"cmd\":\"status\"}\nnope\n{\"cmd\":\"status\"}\n")
        .unwrap();
    let mut r = BufReader::new(&s);
    let oks: Vec<bool> = (0..3)
        .map(|_| {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            serde_json::from_str::<Value>(&l).unwrap()["ok"] == json!(true)
        })
        .collect();
    assert_eq!(oks, [true, false, true]);
    drop(s);
    // Still answering, also through the client library and the CLI.
    assert_eq!(d.status()["ok"], json!(true));
    let out = d.status_cli(true);
    assert!(out.status.success());
    // An error reply becomes an Err carrying the daemon's message.
    let e = pinlease::admin::request(&a, &json!({"cmd": "nope"})).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    d.assert_healthy();
}

#[test]
fn an_idle_admin_client_does_not_block_others() {
    let mut d = Daemon::start();
    // A client that connects and never sends a full line (a hung tool, or
    // one that crashed before writing).
    let mut idle = UnixStream::connect(d.admin()).unwrap();
    idle.write_all(b"{\"cmd\":").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let out = d.status_cli(true);
    let took = t.elapsed();
    assert!(out.status.success());
    assert!(
        took < Duration::from_secs(3),
        "pinlease status took {took:?} while another admin client was idle"
    );
    drop(idle);
    d.assert_healthy();
}

#[test]
fn admin_socket_is_0600() {
    let mut d = Daemon::start();
    let mode = std::fs::metadata(d.admin()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin socket mode {mode:o}");
    d.assert_healthy();
}

/// Runs `argv` as uid/gid 65534 (nobody), or None when no tool can.
fn as_nobody(argv: &[&std::ffi::OsStr]) -> Option<std::process::Output> {
    let tries: [(&str, &[&str]); 2] = [
        (
            "setpriv",
            &["--reuid=65534", "--regid=65534", "--clear-groups", "--"],
        ),
        ("runuser", &["-u", "nobody", "--"]),
    ];
    for (tool, pre) in tries {
        let r = Command::new(tool)
            .args(pre)
            .args(argv)
            .env_remove("PINLEASE_ADMIN_SOCKET")
            .output();
        if let Ok(out) = r {
            // The tool itself failing to switch (not root) gives 1 or 127
            // with its own message; treat "cannot" as unavailable.
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains(&format!("{tool}:")) && !err.contains("pinlease") {
                eprintln!("{tool} cannot switch user here: {err}");
                continue;
            }
            return Some(out);
        }
    }
    None
}

/// A daemon whose admin socket user `nobody` can reach (directory 0755),
/// or None when the test cannot run a command as another user.
fn daemon_for_nobody() -> Option<Daemon> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root to run a client as another user");
        return None;
    }
    let d = Daemon::start();
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if as_nobody(&["/bin/true".as_ref()]).is_none() {
        eprintln!("SKIP: neither setpriv nor runuser can run a command as nobody");
        return None;
    }
    Some(d)
}

fn status_argv(admin: &Path) -> Vec<&std::ffi::OsStr> {
    vec![
        env!("CARGO_BIN_EXE_pinlease").as_ref(),
        "status".as_ref(),
        "--admin-socket".as_ref(),
        admin.as_os_str(),
    ]
}

#[test]
fn admin_refuses_a_peer_with_another_uid() {
    let Some(mut d) = daemon_for_nobody() else {
        return;
    };
    let admin = d.admin();
    // The 0600 mode stops nobody at connect(2).
    let out = as_nobody(&status_argv(&admin)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody read status: {err}");
    assert!(
        err.contains("ermission denied") && err.contains(admin.to_str().unwrap()),
        "{err}"
    );
    // With the mode opened up, the daemon's own check (SO_PEERCRED) refuses:
    // a peer that only reads gets the refusal line.
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o666)).unwrap();
    let py = Path::new("/usr/bin/python3");
    if py.exists() {
        let script = format!(
            "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
             print(s.makefile().readline(), end='')",
            admin.to_str().unwrap()
        );
        let out = as_nobody(&[py.as_os_str(), "-c".as_ref(), script.as_ref()]).unwrap();
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "reply {:?} ({e}); stderr {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(reply["ok"], json!(false), "{reply}");
        let msg = reply["error"].as_str().unwrap_or_default();
        assert!(msg.contains("peer uid 65534 is not allowed"), "{reply}");
    } else {
        eprintln!("no /usr/bin/python3: checking the refusal through the CLI only");
        let out = as_nobody(&status_argv(&admin)).unwrap();
        assert!(!out.status.success());
    }
    assert!(
        d.log().contains("refused peer uid 65534"),
        "log:\n{}",
        d.log()
    );
    // Root is still served.
    assert_eq!(d.status()["ok"], json!(true));
    d.assert_healthy();
}

#[test]
fn status_cli_as_another_uid_names_the_refusal() {
    let Some(mut d) = daemon_for_nobody() else {
        return;
    };
    let admin = d.admin();
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o666)).unwrap();
    for i in 0..10 {
        let out = as_nobody(&status_argv(&admin)).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("peer uid 65534 is not allowed"),
            "run {i}: the CLI lost the daemon's refusal: {err}"
        );
    }
    d.assert_healthy();
}

#[test]
fn status_cli_shows_tables_and_json() {
    let mut d = Daemon::start();
    // Before any frontend.
    let out = d.status_cli(false);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not connected"), "{text}");
    assert!(text.contains("no device state yet"), "{text}");

    let mut c = d.client();
    d.wait_connection(1);
    let ctx = c.create_context(4321, "dbench").unwrap();
    let f = file(77);
    let lease = c
        .lease_take(ctx, &lease_req(f, 4096, 8192, PL_POLICY_TIMEOUT))
        .unwrap();
    let pages = c.alloc_pages(2).unwrap();
    let mr = c
        .reg_mr(
            ctx,
            &RegMrArgs::pages(PL_ACCESS_READ | PL_ACCESS_WRITE, &pages)
                .on_file(f, 4096)
                .with_flags(PL_REG_LONGTERM),
        )
        .unwrap();
    assert_eq!(mr.lease, lease);
    let ex = c.export_mr(ctx, mr.key).unwrap().export;

    let out = d.status_cli(false);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let h = |v: u64| format!("{v:#x}");
    for want in [
        "frontend: connected (connections served: 1)".to_string(),
        "contexts (1)".into(),
        "memory regions (1)".into(),
        "layout leases (1)".into(),
        "HOLDER".into(),
        "STATE".into(),
        "dbench".into(),
        "4321".into(),
        h(ctx),
        h(mr.key),
        h(lease),
        format!("{} mr-export of {} refs 1", h(ex), h(mr.key)),
        "rw-".into(),
        "4096..12288".into(),
        "timeout".into(),
        "active".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    // The lease row names its holder and state.
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with(&h(lease)) && l.contains("4096..12288"))
        .unwrap_or_else(|| panic!("no lease row in:\n{text}"));
    for want in [
        h(ctx),
        "active".into(),
        "timeout".into(),
        "77".into(),
        "2051".into(),
    ] {
        assert!(row.contains(&want), "lease row lacks {want:?}: {row}");
    }

    let v = d.status_json();
    assert_eq!(v["ok"], json!(true));
    assert_eq!(v["connected"], json!(true));
    let l = &v["status"]["leases"][0];
    assert_eq!(
        (
            l["holder"].clone(),
            l["state"].clone(),
            l["start"].clone(),
            l["end"].clone()
        ),
        (json!(h(ctx)), json!("active"), json!(4096), json!(12288))
    );
    assert_eq!(v["status"]["mrs"][0]["longterm"], json!(true));

    // Against a missing socket: non-zero exit, the path in the message.
    let missing = d.dir().join("no-such.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_pinlease"))
        .args(["status", "--admin-socket"])
        .arg(&missing)
        .env_remove("PINLEASE_ADMIN_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    // The environment variable works as the flag does.
    let out = Command::new(env!("CARGO_BIN_EXE_pinlease"))
        .args(["status", "--json"])
        .env("PINLEASE_ADMIN_SOCKET", d.admin())
        .output()
        .unwrap();
    assert!(out.status.success());
    // No socket given at all: a usage error naming the flag.
    let out = Command::new(env!("CARGO_BIN_EXE_pinlease"))
        .arg("status")
        .env_remove("PINLEASE_ADMIN_SOCKET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-socket"));
    d.assert_healthy();
}

/// The daemon turns kicks off while it drains the request queue and back
/// on before it sleeps. Rounds of 8 NOPs, each submitted with
/// `kick_if_needed` (so the kicks it turned off are not sent): a round
/// that is never answered means the daemon went idle with kicks off, or
/// missed a request posted while it turned them back on.
#[test]
fn requests_posted_while_kicks_are_off_are_all_answered() {
    let d = Daemon::start();
    let mut fe = d.frontend();
    let req = encode_request(Opcode::Nop as u16, 0, 1, &[]);
    let req_gpa = fe.alloc(req.len() as u64, 64).unwrap();
    fe.write_mem(req_gpa, &req).unwrap();
    let resps: Vec<u64> = (0..8).map(|_| fe.alloc(64, 64).unwrap()).collect();
    let mut kicks = 0;
    for round in 0..500 {
        for &resp in &resps {
            fe.submit_chain(
                REQUEST_QUEUE,
                &[
                    Desc::readable(req_gpa, req.len() as u32),
                    Desc::writable(resp, 64),
                ],
            )
            .unwrap();
            kicks += usize::from(fe.kick_if_needed(REQUEST_QUEUE).unwrap());
        }
        for i in 0..resps.len() {
            let used = fe.wait_used(REQUEST_QUEUE, T).unwrap();
            assert!(
                used.is_some(),
                "round {round}: NOP {i} of {} not answered",
                resps.len()
            );
        }
    }
    assert!(kicks > 0, "the first submission kicks: kicks start on");
}
