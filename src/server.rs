//! `pinlease serve`: on each listening socket (`crate::listen`) a serve
//! loop of its own serves one frontend at a time with a fresh device, and
//! listens again when it disconnects, until SIGINT/SIGTERM. Socket files
//! bound from a path are removed on exit (by the sandbox's supervisor when
//! the daemon is sandboxed); inherited ones are left alone. `bind` readies
//! the sockets before the sandbox is entered; `serve` runs inside it.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::{error, info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::backend::{PinleaseBackend, DEFERRED_DUE_ID, EVENTS_PENDING_ID};
use crate::error::{Error, Result};
use crate::listen::ListenSocket;
use crate::model::scrub::Scrubber;
use crate::model::Device;
use crate::state::FrontendSlot;

/// The serve loop's configuration; `crate::config` builds it from the
/// command line.
pub use crate::config::ServeLoopConfig;
/// What the admin socket and the signal handler share with the serve loop.
pub use crate::state::ServerState;

/// Waits until the listener has a connection (true), or a stop was asked
/// or accepting ended (false).
fn wait_for_connection(listener: &Listener, state: &ServerState) -> Result<bool> {
    loop {
        if !state.accepting() {
            return Ok(false);
        }
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: state.stop_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of 2 pollfd for the whole call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Io {
                what: "poll on the vhost-user listener".into(),
                source: e,
            });
        }
        if fds[1].revents != 0 && !state.accepting() {
            return Ok(false);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
    }
}

fn serve_one(
    listener: &mut Listener,
    slot: &FrontendSlot,
    cfg: &ServeLoopConfig,
    state: &ServerState,
) -> Result<()> {
    let device = Arc::new(Device::new(cfg.limits));
    let backend = Arc::new(
        PinleaseBackend::with_faults(device.clone(), state.faults.clone()).map_err(|e| {
            Error::Io {
                what: "creating the backend's event notifier".into(),
                source: e,
            }
        })?,
    );
    let mut daemon = VhostUserDaemon::new(
        "pinlease".to_string(),
        backend.clone(),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| Error::Daemon(e.to_string()))?;
    let listeners = [
        (
            backend.events_pending_fd(),
            EVENTS_PENDING_ID,
            "event notifier",
        ),
        (backend.deferred_due_fd(), DEFERRED_DUE_ID, "fault timer"),
    ];
    for handler in daemon.get_epoll_handlers() {
        for (fd, id, what) in listeners {
            handler
                .register_listener(fd, EventSet::IN, u64::from(id))
                .map_err(|e| Error::Daemon(format!("registering the {what}: {e}")))?;
        }
    }
    daemon
        .start(listener)
        .map_err(|e| Error::Daemon(format!("accepting a frontend: {e}")))?;
    let n = slot.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let i = slot.index;
    info!("frontend connected (slot {i}, connection {n}); fresh device state");
    // One scrubber per connection; stopped (and joined) when it ends.
    let scrubber = match cfg.scrub_period {
        Some(p) => Some(Scrubber::start(device.clone(), p).map_err(|e| Error::Io {
            what: "spawning the scrubber thread".into(),
            source: e,
        })?),
        None => None,
    };
    *slot.device.lock().unwrap_or_else(|e| e.into_inner()) = Some(device);
    *slot.shutdown.lock().unwrap_or_else(|e| e.into_inner()) = daemon.shutdown_handle();
    slot.connected.store(true, Ordering::SeqCst);
    if state.stopping() {
        daemon.request_shutdown();
    }
    let result = daemon.wait();
    if let Some(s) = scrubber {
        s.stop();
    }
    slot.connected.store(false, Ordering::SeqCst);
    *slot.shutdown.lock().unwrap_or_else(|e| e.into_inner()) = None;
    for handler in daemon.get_epoll_handlers() {
        handler.send_exit_event();
    }
    match result {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => info!("frontend {n} of slot {i} disconnected"),
        Err(e) => warn!("frontend {n} of slot {i} ended with an error: {e}"),
    }
    Ok(())
}

/// One socket's serve loop: a frontend at a time, until a stop, or until
/// the daemon has served `max_connections` in all.
fn slot_loop(
    sock: &mut ListenSocket,
    slot: &FrontendSlot,
    cfg: &ServeLoopConfig,
    state: &ServerState,
) -> Result<()> {
    let i = slot.index;
    info!("slot {i}: listening on {}", sock.name);
    loop {
        if let Some(max) = cfg.max_connections {
            if state.connections() >= max {
                // Wakes the other slots' loops too.
                state.stop_accepting();
                break;
            }
        }
        if !wait_for_connection(&sock.listener, state)? {
            break;
        }
        if let Err(e) = serve_one(&mut sock.listener, slot, cfg, state) {
            // One bad connection must not end the daemon.
            error!("slot {i}: {e}");
        }
        if !state.stopping() {
            info!("slot {i}: listening again on {}", sock.name);
        }
    }
    Ok(())
}

/// The daemon's listening sockets, ready before the sandbox is entered
/// (nothing is opened by path after that).
pub struct Bound {
    sockets: Vec<ListenSocket>,
    admin: Option<UnixListener>,
}

impl Bound {
    /// The listening fds (the sandbox supervisor closes its copies).
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        self.sockets
            .iter()
            .map(|s| s.listener.as_raw_fd())
            .chain(self.admin.as_ref().map(|a| a.as_raw_fd()))
            .collect()
    }

    /// What `pinlease status` calls each vhost-user socket, in slot order.
    pub fn names(&self) -> Vec<String> {
        self.sockets.iter().map(|s| s.name.clone()).collect()
    }

    /// The socket files the daemon created: its vhost-user sockets bound
    /// from a path (not inherited ones) and the admin socket (the sandbox
    /// supervisor removes them at exit).
    pub fn socket_files(&self, cfg: &ServeLoopConfig) -> Vec<PathBuf> {
        self.sockets
            .iter()
            .filter_map(|s| s.path.clone())
            .chain(cfg.admin_socket.clone())
            .collect()
    }
}

/// Gives the vhost-user sockets bound from a path their `--socket-group`
/// (mode 0660) and binds the admin socket. On an error nothing bound is
/// left behind (dropped sockets remove their files).
pub fn bind(cfg: &ServeLoopConfig, sockets: Vec<ListenSocket>) -> Result<Bound> {
    if let Some(gid) = cfg.socket_group {
        for path in sockets.iter().filter_map(|s| s.path.as_deref()) {
            set_group(path, gid)?;
        }
    }
    let admin = match &cfg.admin_socket {
        Some(p) => Some(crate::admin::bind(p)?),
        None => None,
    };
    Ok(Bound { sockets, admin })
}

/// `--socket-group`: the socket's group GID and mode 0660.
fn set_group(path: &Path, gid: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let err = |what: String| {
        move |source| Error::SocketGroup {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(err(format!("chown to gid {gid}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(err("chmod 0660".into()))
}

/// Runs a serve loop per socket of BOUND, each in a thread of its own
/// with its own slot of `state` (one slot per socket, in order), until
/// `state.request_stop()` or `max_connections`. Installs the seccomp
/// filter first, on every thread (TSYNC: the signal thread runs already);
/// later threads inherit it. Socket files bound from a path are removed
/// when the sockets are dropped at the end.
pub fn serve(cfg: &ServeLoopConfig, bound: Bound, state: Arc<ServerState>) -> Result<()> {
    let Bound { sockets, admin } = bound;
    assert_eq!(
        sockets.len(),
        state.frontends.len(),
        "one frontend slot per listening socket"
    );
    // Before the admin thread: an admin reply means the filter is on.
    crate::seccomp::install(cfg.seccomp, !cfg.sandboxed)
        .map_err(|e| Error::Daemon(e.to_string()))?;
    let _admin = match (admin, &cfg.admin_socket) {
        (Some(l), Some(p)) => Some(crate::admin::AdminServer::start(l, p, state.clone())?),
        _ => None,
    };
    let mut sockets = sockets;
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .iter_mut()
            .zip(&state.frontends)
            .map(|(sock, slot)| {
                let state = &state;
                std::thread::Builder::new()
                    .name(format!("serve-{}", slot.index))
                    .spawn_scoped(scope, move || slot_loop(sock, slot, cfg, state))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(Error::Daemon("a serve loop thread panicked".into()))),
                Err(e) => {
                    // The loops already started must not wait forever.
                    state.request_stop();
                    Err(Error::Io {
                        what: "spawning a serve loop thread".into(),
                        source: e,
                    })
                }
            })
            .collect()
    });
    let removing: Vec<String> = sockets
        .iter()
        .filter_map(|s| s.path.as_ref().map(|p| p.display().to_string()))
        .collect();
    if removing.is_empty() {
        info!("stopping; the inherited socket(s) stay");
    } else {
        info!("stopping; removing {}", removing.join(", "));
    }
    results.into_iter().collect()
}

/// Turns SIGINT and SIGTERM into `state.request_stop()`.
pub fn install_signal_handlers(state: Arc<ServerState>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| Error::Io {
            what: "installing SIGINT/SIGTERM handlers".into(),
            source: e,
        })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                info!("signal {sig}: stopping");
                state.request_stop();
            }
        })
        .map_err(|e| Error::Io {
            what: "spawning the signal thread".into(),
            source: e,
        })?;
    Ok(())
}
