//! The one launcher of the real `pinlease serve` daemon on the host, for
//! the daemon's tests and benchmarks: a child process whose sockets (and
//! log) live in a fresh temporary directory, stopped when the [`Daemon`] is
//! dropped, so a failing test never leaves one behind.
//!
//! The testkit does not depend on the `pinlease` crate (the daemon's tests
//! depend on the testkit), so the caller names the binary: the daemon's
//! tests and benches pass `env!("CARGO_BIN_EXE_pinlease")`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::frontend::client::Client;
use crate::frontend::{self, FrontendConfig, TestFrontend};

/// How long the daemon may take to create a socket, and a frontend to
/// connect to it.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a daemon told to stop with SIGTERM may take before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// File names inside the daemon's directory.
const VHOST_USER_SOCKET: &str = "vu.sock";
const ADMIN_SOCKET: &str = "admin.sock";
const LOG_FILE: &str = "daemon.log";

/// Waits until `path` exists; panics after [`STARTUP_TIMEOUT`] naming
/// `what` and the path.
pub fn wait_for_path(path: &Path, what: &str) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < STARTUP_TIMEOUT,
            "{what} {} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Calls `probe` every 10 ms until it answers `Ok`, for at most `within`;
/// when time runs out, its last `Err` (for the caller's panic message).
pub fn poll<R, E>(within: Duration, mut probe: impl FnMut() -> Result<R, E>) -> Result<R, E> {
    let t = Instant::now();
    loop {
        let last = probe();
        if last.is_ok() || t.elapsed() >= within {
            return last;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How a dropped [`Daemon`] is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: a test is over, nothing about the exit matters.
    Kill,
    /// SIGTERM, then SIGKILL after a grace period: the daemon exits as it
    /// would in production (a benchmark's figures are unaffected by a
    /// killed process's teardown).
    Term,
}

/// What to start: `pinlease [--log-level L] serve --socket-path DIR/vu.sock
/// [--admin-socket DIR/admin.sock] ARGS...`.
#[derive(Clone, Debug)]
pub struct Launch {
    bin: PathBuf,
    log_level: String,
    admin_socket: bool,
    log_to_file: bool,
    stop: Stop,
    socket_count: Option<u32>,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
}

impl Launch {
    /// The daemon binary `bin` with the tests' defaults: `--log-level
    /// debug`, an admin socket, stderr into `daemon.log` in the daemon's
    /// directory (see [`Daemon::log`]), [`Stop::Kill`] on drop.
    pub fn new(bin: impl Into<PathBuf>) -> Launch {
        Launch {
            bin: bin.into(),
            log_level: "debug".into(),
            admin_socket: true,
            log_to_file: true,
            stop: Stop::Kill,
            socket_count: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `--socket-count N`: the daemon listens on `vu.sock0` ..
    /// `vu.sock{N-1}` ([`Daemon::sock_at`]), one frontend slot each.
    pub fn socket_count(mut self, n: u32) -> Launch {
        self.socket_count = Some(n);
        self
    }

    /// `--log-level LEVEL` instead of `debug`.
    pub fn log_level(mut self, level: &str) -> Launch {
        self.log_level = level.into();
        self
    }

    /// No `--admin-socket` (the daemon then has none: the environment's
    /// `PINLEASE_ADMIN_SOCKET` is always removed).
    pub fn without_admin_socket(mut self) -> Launch {
        self.admin_socket = false;
        self
    }

    /// The daemon's stderr goes to ours instead of `daemon.log`.
    pub fn stderr_inherited(mut self) -> Launch {
        self.log_to_file = false;
        self
    }

    /// How the daemon is stopped when the [`Daemon`] is dropped.
    pub fn stop(mut self, stop: Stop) -> Launch {
        self.stop = stop;
        self
    }

    /// Extra `serve` arguments, after the socket paths.
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, extra: &[S]) -> Launch {
        self.args
            .extend(extra.iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An environment variable for the daemon, on top of ours.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Launch {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// One of our environment variables the daemon must not see.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Launch {
        self.env.push((key.into(), None));
        self
    }

    /// Spawns the daemon and waits until its sockets exist.
    pub fn start(self) -> Daemon {
        let dir = tempfile::tempdir().expect("creating the daemon's temporary directory");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--log-level", &self.log_level, "serve", "--socket-path"])
            .arg(dir.path().join(VHOST_USER_SOCKET));
        if self.admin_socket {
            cmd.arg("--admin-socket").arg(dir.path().join(ADMIN_SOCKET));
        }
        if let Some(n) = self.socket_count {
            cmd.arg("--socket-count").arg(n.to_string());
        }
        cmd.args(&self.args);
        for (key, value) in &self.env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.env_remove("PINLEASE_ADMIN_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if self.log_to_file {
            let log = std::fs::File::create(dir.path().join(LOG_FILE))
                .expect("creating the daemon's log file");
            cmd.stderr(log);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.bin.display()));
        let d = Daemon {
            child: Some(child),
            dir,
            bin: self.bin,
            stop: self.stop,
            socket_count: self.socket_count,
        };
        if self.admin_socket {
            wait_for_path(&d.admin(), "admin socket");
            // bind(2) creates the file before listen(2) makes it accept:
            // a client in between is refused.
            poll(STARTUP_TIMEOUT, || {
                std::os::unix::net::UnixStream::connect(d.admin())
            })
            .unwrap_or_else(|e| panic!("admin socket {}: {e}", d.admin().display()));
        }
        for s in d.socks() {
            wait_for_path(&s, "vhost-user socket");
        }
        d
    }
}

/// A running `pinlease serve` child and its directory.
pub struct Daemon {
    child: Option<Child>,
    dir: TempDir,
    bin: PathBuf,
    stop: Stop,
    socket_count: Option<u32>,
}

impl Daemon {
    /// Takes charge of a daemon the caller spawned itself (binary `bin`,
    /// sockets in `dir` under the names [`Launch`] uses), to stop it with
    /// [`Stop::Kill`] on drop.
    pub fn adopt(bin: impl Into<PathBuf>, child: Child, dir: TempDir) -> Daemon {
        Daemon {
            child: Some(child),
            dir,
            bin: bin.into(),
            stop: Stop::Kill,
            socket_count: None,
        }
    }

    /// The daemon binary, to run its other subcommands against this daemon.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The daemon's directory: its sockets and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The vhost-user socket (started without
    /// [`socket_count`](Launch::socket_count)).
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join(VHOST_USER_SOCKET)
    }

    /// Socket `index` of a daemon started with
    /// [`socket_count`](Launch::socket_count): `vu.sock{index}`.
    pub fn sock_at(&self, index: u32) -> PathBuf {
        self.dir.path().join(format!("{VHOST_USER_SOCKET}{index}"))
    }

    /// Every vhost-user socket the daemon listens on.
    pub fn socks(&self) -> Vec<PathBuf> {
        match self.socket_count {
            None => vec![self.sock()],
            Some(n) => (0..n).map(|i| self.sock_at(i)).collect(),
        }
    }

    /// The admin socket (present unless started
    /// [`without_admin_socket`](Launch::without_admin_socket)).
    pub fn admin(&self) -> PathBuf {
        self.dir.path().join(ADMIN_SOCKET)
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// The daemon's stderr so far (empty when it was not sent to the log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(LOG_FILE)).unwrap_or_default()
    }

    /// A frontend connected to the daemon.
    pub fn frontend_with(&self, cfg: FrontendConfig) -> frontend::Result<TestFrontend> {
        TestFrontend::connect(&self.sock(), cfg, STARTUP_TIMEOUT)
    }

    /// A frontend connected to socket `index` ([`Daemon::sock_at`]).
    pub fn frontend_at(&self, index: u32, cfg: FrontendConfig) -> frontend::Result<TestFrontend> {
        TestFrontend::connect(&self.sock_at(index), cfg, STARTUP_TIMEOUT)
    }

    /// A typed client connected to the daemon.
    pub fn client_with(&self, cfg: FrontendConfig) -> frontend::Result<Client> {
        self.frontend_with(cfg).map(Client::new)
    }

    /// True while the daemon process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child_mut().try_wait(), Ok(None))
    }

    /// Waits for the daemon to exit on its own; returns its exit status.
    /// Panics after `within`, with the daemon's log.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        poll(within, || {
            let st = self.child_mut().try_wait();
            st.expect("waiting for the daemon").ok_or(())
        })
        .unwrap_or_else(|()| {
            panic!(
                "daemon still running after {within:?}\nlog:\n{}",
                self.log()
            )
        })
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, not reaped yet (so the pid
        // cannot have been reused); no memory is involved.
        let r = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({}, {sig})", self.pid());
    }

    fn child(&self) -> &Child {
        self.child
            .as_ref()
            .expect("daemon child taken only by drop")
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("daemon child taken only by drop")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if self.stop == Stop::Term {
            // SAFETY: plain kill(2) of our own child's pid, which we have
            // not reaped yet (so the pid cannot have been reused).
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let t0 = Instant::now();
            while t0.elapsed() < TERM_GRACE {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!("pinlease daemon {} ignored SIGTERM; killing it", c.id());
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}
