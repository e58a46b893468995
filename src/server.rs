//! `pinlease serve`: listen on the vhost-user socket, serve one frontend at
//! a time with a fresh device, and listen again when it disconnects, until
//! SIGINT/SIGTERM. The socket file is removed on exit (by the sandbox's
//! supervisor when the daemon is sandboxed). `bind` opens the sockets
//! before the sandbox; `serve` runs inside it.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::{error, info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::backend::{PinleaseBackend, DEFERRED_DUE_ID, EVENTS_PENDING_ID};
use crate::error::{Error, Result};
use crate::model::scrub::Scrubber;
use crate::model::Device;

/// The serve loop's configuration; `crate::config` builds it from the
/// command line.
pub use crate::config::ServeLoopConfig;
/// What the admin socket and the signal handler share with the serve loop.
pub use crate::state::ServerState;

/// Refuses to steal a socket another daemon is serving; removes a stale one.
fn prepare_socket_path(path: &Path) -> Result<()> {
    let err = |what: String| Error::SocketPath {
        path: path.to_path_buf(),
        what,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e.to_string())),
        Ok(m) if !m.file_type().is_socket() => Err(err(format!(
            "exists and is not a socket ({:?})",
            m.file_type()
        ))),
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(err("another process is listening on it".into()));
            }
            std::fs::remove_file(path).map_err(|e| err(format!("removing stale socket: {e}")))
        }
    }
}

/// Waits until the listener has a connection (true) or a stop was asked (false).
fn wait_for_connection(listener: &Listener, state: &ServerState) -> Result<bool> {
    loop {
        if state.stopping() {
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
        if fds[1].revents != 0 {
            return Ok(false);
        }
        if fds[0].revents != 0 {
            return Ok(true);
        }
    }
}

fn serve_one(listener: &mut Listener, cfg: &ServeLoopConfig, state: &ServerState) -> Result<()> {
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
    let n = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
    info!("frontend connected (connection {n}); fresh device state");
    // One scrubber per connection; stopped (and joined) when it ends.
    let scrubber = match cfg.scrub_period {
        Some(p) => Some(Scrubber::start(device.clone(), p).map_err(|e| Error::Io {
            what: "spawning the scrubber thread".into(),
            source: e,
        })?),
        None => None,
    };
    *state.device.lock().unwrap_or_else(|e| e.into_inner()) = Some(device);
    *state.shutdown.lock().unwrap_or_else(|e| e.into_inner()) = daemon.shutdown_handle();
    state.connected.store(true, Ordering::SeqCst);
    if state.stopping() {
        daemon.request_shutdown();
    }
    let result = daemon.wait();
    if let Some(s) = scrubber {
        s.stop();
    }
    state.connected.store(false, Ordering::SeqCst);
    *state.shutdown.lock().unwrap_or_else(|e| e.into_inner()) = None;
    for handler in daemon.get_epoll_handlers() {
        handler.send_exit_event();
    }
    match result {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => info!("frontend {n} disconnected"),
        Err(e) => warn!("frontend {n} ended with an error: {e}"),
    }
    Ok(())
}

/// The daemon's listening sockets, bound before the sandbox is entered
/// (nothing is opened by path after that).
pub struct Bound {
    listener: Listener,
    admin: Option<std::os::unix::net::UnixListener>,
}

impl Bound {
    /// The listening fds (the sandbox supervisor closes its copies).
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.admin.as_ref().map(|a| a.as_raw_fd()));
        fds
    }
}

/// The socket files of CFG (the sandbox supervisor removes them at exit).
pub fn socket_files(cfg: &ServeLoopConfig) -> Vec<std::path::PathBuf> {
    std::iter::once(cfg.socket_path.clone())
        .chain(cfg.admin_socket.clone())
        .collect()
}

/// Binds the vhost-user socket (group and mode 0660 per `--socket-group`)
/// and the admin socket. On an error nothing bound is left behind.
pub fn bind(cfg: &ServeLoopConfig) -> Result<Bound> {
    prepare_socket_path(&cfg.socket_path)?;
    // Dropped on an error below: it removes its socket file.
    let listener = Listener::new(&cfg.socket_path, false).map_err(|e| Error::Listen {
        path: cfg.socket_path.clone(),
        source: e,
    })?;
    if let Some(gid) = cfg.socket_group {
        set_group(&cfg.socket_path, gid)?;
    }
    let admin = match &cfg.admin_socket {
        Some(p) => Some(crate::admin::bind(p)?),
        None => None,
    };
    Ok(Bound { listener, admin })
}

/// `--socket-group`: the socket's group GID and mode 0660.
fn set_group(path: &Path, gid: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let err = |what: String| Error::SocketPath {
        path: path.to_path_buf(),
        what,
    };
    std::os::unix::fs::chown(path, None, Some(gid))
        .map_err(|e| err(format!("--socket-group: chown to gid {gid}: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err(format!("--socket-group: chmod 0660: {e}")))
}

/// Runs the serve loop on BOUND until `state.request_stop()` or
/// `max_connections`. Installs the seccomp filter first, on every thread
/// (TSYNC: the signal thread runs already); later threads inherit it.
pub fn serve(cfg: &ServeLoopConfig, bound: Bound, state: Arc<ServerState>) -> Result<()> {
    let Bound {
        mut listener,
        admin,
    } = bound;
    // Before the admin thread: an admin reply means the filter is on.
    crate::seccomp::install(cfg.seccomp, !cfg.sandboxed)
        .map_err(|e| Error::Daemon(e.to_string()))?;
    let _admin = match (admin, &cfg.admin_socket) {
        (Some(l), Some(p)) => Some(crate::admin::AdminServer::start(l, p, state.clone())?),
        _ => None,
    };
    info!("listening on {}", cfg.socket_path.display());
    loop {
        if let Some(max) = cfg.max_connections {
            if state.connections.load(Ordering::SeqCst) >= max {
                break;
            }
        }
        if !wait_for_connection(&listener, &state)? {
            break;
        }
        if let Err(e) = serve_one(&mut listener, cfg, &state) {
            // One bad connection must not end the daemon.
            error!("{e}");
        }
        if !state.stopping() {
            info!("listening again on {}", cfg.socket_path.display());
        }
    }
    info!("stopping; removing {}", cfg.socket_path.display());
    Ok(())
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
