//! The listening vhost-user sockets of `pinlease serve`, acquired before
//! anything else runs: one path, `--socket-count N` paths (`PATH0` ..
//! `PATH{N-1}`, the rust-vmm vhost-device convention), an inherited
//! listening socket (`--fd N`, QEMU's "backend program conventions"), or
//! the sockets systemd passes (`LISTEN_FDS`, the sd_listen_fds protocol).
//!
//! Its own module so that whatever restricts the process later (a sandbox,
//! seccomp) can be entered once every socket is open: [`open`] is the only
//! place that binds or adopts a listening socket.
//!
//! Sockets bound here from a path are removed when their [`ListenSocket`]
//! is dropped (vhost's `Listener` does it); inherited sockets are not ours
//! to remove and are only closed.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vhost::vhost_user::Listener;

/// Most sockets `--socket-count` opens: one serve thread each.
pub const MAX_SOCKET_COUNT: u32 = 64;

/// The first fd systemd passes (`SD_LISTEN_FDS_START`, sd-daemon.h).
pub const LISTEN_FDS_START: RawFd = 3;

/// The variables of the sd_listen_fds protocol; removed from the
/// environment once read, so children do not inherit them.
pub const ACTIVATION_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Longest socket path `bind(2)` takes: `sun_path` less its NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// One fd systemd passed, with its name from `LISTEN_FDNAMES` if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivatedFd {
    pub fd: RawFd,
    pub name: Option<String>,
}

/// Where the daemon's listening sockets come from (one of the three ways).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// `--socket-path PATH`: one socket at PATH.
    Path(PathBuf),
    /// `--socket-path PATH --socket-count N`: sockets PATH0 .. PATH{N-1}.
    Numbered { base: PathBuf, count: u32 },
    /// `--fd N`: an inherited listening socket.
    Fd(RawFd),
    /// Socket activation: the fds systemd passed, from 3 on.
    Activated(Vec<ActivatedFd>),
}

/// A listening socket and what `pinlease status` calls it.
pub struct ListenSocket {
    pub listener: Listener,
    /// The path, `fd N`, or `fd N (NAME)` for a named activated socket.
    pub name: String,
    /// The file removed when the socket is dropped (None: inherited).
    pub path: Option<PathBuf>,
}

/// Why the listening sockets cannot be had; each names the flag or
/// variable and the value seen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("--fd {fd}: {what}")]
    Fd { fd: RawFd, what: String },
    #[error("LISTEN_FDS: passed fd {fd}: {what}")]
    ActivatedFd { fd: RawFd, what: String },
    #[error("{var}={value:?}: {what}")]
    ActivationVar {
        var: &'static str,
        value: String,
        what: String,
    },
    #[error("socket path {path}: {what}")]
    Path { path: PathBuf, what: String },
}

/// `PATH` with `index` appended, as `--socket-count` names its sockets.
pub fn numbered_path(base: &Path, index: u32) -> PathBuf {
    let mut s = OsString::from(base.as_os_str());
    s.push(index.to_string());
    PathBuf::from(s)
}

impl SocketSpec {
    /// The socket files this spec binds (none for inherited sockets).
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            SocketSpec::Path(p) => vec![p.clone()],
            SocketSpec::Numbered { base, count } => {
                (0..*count).map(|i| numbered_path(base, i)).collect()
            }
            SocketSpec::Fd(_) | SocketSpec::Activated(_) => vec![],
        }
    }
}

/// Whether `path` fits in `sun_path`.
pub fn path_fits(path: &Path) -> bool {
    path.as_os_str().as_bytes().len() <= MAX_SOCKET_PATH_BYTES
}

/// The socket-activation fds passed to this process, read from the
/// environment as sd_listen_fds(3) does, and the variables removed
/// (whether or not they were meant for this pid). None when there are
/// none for this pid.
///
/// Call it before any thread starts: it changes the environment.
pub fn take_activation_from_env() -> Result<Option<Vec<ActivatedFd>>, ListenError> {
    let get = |k| std::env::var(k).ok();
    let (pid, fds, names) = (get("LISTEN_PID"), get("LISTEN_FDS"), get("LISTEN_FDNAMES"));
    for var in ACTIVATION_VARS {
        std::env::remove_var(var);
    }
    activation_from(pid, fds, names, std::process::id())
}

/// [`take_activation_from_env`] on given values, for tests.
pub fn activation_from(
    listen_pid: Option<String>,
    listen_fds: Option<String>,
    listen_fdnames: Option<String>,
    my_pid: u32,
) -> Result<Option<Vec<ActivatedFd>>, ListenError> {
    let (Some(pid), Some(fds)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    let pid_n: u32 = pid.parse().map_err(|_| ListenError::ActivationVar {
        var: "LISTEN_PID",
        value: pid.clone(),
        what: "not a pid".into(),
    })?;
    if pid_n != my_pid {
        // Meant for another process (a parent that did not unset them).
        return Ok(None);
    }
    let max = (MAX_SOCKET_COUNT as usize).to_string();
    let n: usize = fds.parse().map_err(|_| ListenError::ActivationVar {
        var: "LISTEN_FDS",
        value: fds.clone(),
        what: "not a number of fds".into(),
    })?;
    if n == 0 {
        return Ok(None);
    }
    if n > MAX_SOCKET_COUNT as usize {
        return Err(ListenError::ActivationVar {
            var: "LISTEN_FDS",
            value: fds,
            what: format!("more sockets than pinlease serves (at most {max})"),
        });
    }
    let names: Vec<Option<String>> = match listen_fdnames {
        None => vec![None; n],
        Some(s) => {
            let v: Vec<&str> = s.split(':').collect();
            if v.len() != n {
                return Err(ListenError::ActivationVar {
                    var: "LISTEN_FDNAMES",
                    value: s.clone(),
                    what: format!("{} name(s) for LISTEN_FDS={n}", v.len()),
                });
            }
            v.into_iter()
                .map(|x| (!x.is_empty()).then(|| x.to_string()))
                .collect()
        }
    };
    Ok(Some(
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| ActivatedFd {
                fd: LISTEN_FDS_START + i as RawFd,
                name,
            })
            .collect(),
    ))
}

fn sockopt_int(fd: RawFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for writes of the sizes given; a bad fd
    // is an error return, not undefined behaviour.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

/// Why `fd` is not a listening AF_UNIX SOCK_STREAM socket, if it is not.
pub fn check_listening_unix_socket(fd: RawFd) -> Result<(), String> {
    if fd < 0 {
        return Err("not a file descriptor (negative)".into());
    }
    // SAFETY: fstat writes into a zeroed stat; a bad fd is an error return.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(format!(
            "not an open file descriptor ({})",
            std::io::Error::last_os_error()
        ));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err("not a socket".into());
    }
    let get = |opt, what| sockopt_int(fd, opt).map_err(|e| format!("reading {what}: {e}"));
    let domain = get(libc::SO_DOMAIN, "SO_DOMAIN")?;
    if domain != libc::AF_UNIX {
        return Err(format!(
            "not a unix socket (address family {domain}, AF_UNIX is {})",
            libc::AF_UNIX
        ));
    }
    let ty = get(libc::SO_TYPE, "SO_TYPE")?;
    if ty != libc::SOCK_STREAM {
        return Err(format!(
            "not a stream socket (type {ty}, SOCK_STREAM is {})",
            libc::SOCK_STREAM
        ));
    }
    if get(libc::SO_ACCEPTCONN, "SO_ACCEPTCONN")? == 0 {
        return Err("a unix stream socket that is not listening".into());
    }
    Ok(())
}

/// Takes ownership of a checked listening socket; close-on-exec, so the
/// daemon's children never hold it.
fn adopt(fd: RawFd) -> Listener {
    // SAFETY: fcntl on an fd just checked to be an open socket.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
    // SAFETY: the fd is an open listening socket nothing else in this
    // process owns (it was inherited); the Listener closes it on drop and,
    // built from a UnixListener, unlinks no file.
    Listener::from(unsafe { UnixListener::from_raw_fd(fd) })
}

/// Refuses a path that is not a socket or that another process serves;
/// says whether a stale socket is there to be removed.
fn check_socket_path(path: &Path) -> Result<bool, ListenError> {
    let err = |what: String| ListenError::Path {
        path: path.to_path_buf(),
        what,
    };
    if !path_fits(path) {
        return Err(err(format!(
            "{} bytes, longer than a unix socket path can be ({MAX_SOCKET_PATH_BYTES})",
            path.as_os_str().len()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(err(e.to_string())),
        Ok(m) if !m.file_type().is_socket() => Err(err(format!(
            "exists and is not a socket ({:?})",
            m.file_type()
        ))),
        Ok(_) if UnixStream::connect(path).is_ok() => {
            Err(err("another process is listening on it".into()))
        }
        Ok(_) => Ok(true),
    }
}

/// Binds the sockets of `paths`, all or none: every path is checked
/// before the first is bound, and the ones bound are removed again if a
/// later one fails.
fn bind_paths(paths: &[PathBuf]) -> Result<Vec<ListenSocket>, ListenError> {
    let mut stale = Vec::new();
    for p in paths {
        if check_socket_path(p)? {
            stale.push(p);
        }
    }
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let err = |what: String| ListenError::Path {
            path: p.clone(),
            what,
        };
        if stale.contains(&p) {
            std::fs::remove_file(p).map_err(|e| err(format!("removing stale socket: {e}")))?;
        }
        // On error `out` is dropped, which removes the sockets bound so far.
        let listener = Listener::new(p, false).map_err(|e| err(format!("cannot listen: {e}")))?;
        out.push(ListenSocket {
            listener,
            name: p.display().to_string(),
            path: Some(p.clone()),
        });
    }
    Ok(out)
}

/// Opens (or adopts) every listening socket of `spec`.
pub fn open(spec: &SocketSpec) -> Result<Vec<ListenSocket>, ListenError> {
    match spec {
        SocketSpec::Path(_) | SocketSpec::Numbered { .. } => bind_paths(&spec.paths()),
        SocketSpec::Fd(fd) => {
            check_listening_unix_socket(*fd).map_err(|what| ListenError::Fd { fd: *fd, what })?;
            Ok(vec![ListenSocket {
                listener: adopt(*fd),
                name: format!("fd {fd}"),
                path: None,
            }])
        }
        SocketSpec::Activated(fds) => {
            // All checked before any is adopted: a refusal closes nothing.
            for a in fds {
                check_listening_unix_socket(a.fd)
                    .map_err(|what| ListenError::ActivatedFd { fd: a.fd, what })?;
            }
            Ok(fds
                .iter()
                .map(|a| ListenSocket {
                    listener: adopt(a.fd),
                    name: match &a.name {
                        Some(n) => format!("fd {} ({n})", a.fd),
                        None => format!("fd {}", a.fd),
                    },
                    path: None,
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::net::UnixDatagram;

    use super::*;

    fn s(x: &str) -> Option<String> {
        Some(x.to_string())
    }

    #[test]
    fn activation_variables_follow_sd_listen_fds() {
        assert_eq!(activation_from(None, s("2"), None, 7).unwrap(), None);
        assert_eq!(activation_from(s("8"), s("2"), None, 7).unwrap(), None);
        assert_eq!(activation_from(s("7"), s("0"), None, 7).unwrap(), None);
        let two = activation_from(s("7"), s("2"), s("a:"), 7)
            .unwrap()
            .unwrap();
        assert_eq!(
            two,
            vec![
                ActivatedFd {
                    fd: 3,
                    name: s("a")
                },
                ActivatedFd { fd: 4, name: None }
            ]
        );
        let e = activation_from(s("x7"), s("2"), None, 7).unwrap_err();
        assert_eq!(e.to_string(), "LISTEN_PID=\"x7\": not a pid");
        let e = activation_from(s("7"), s("two"), None, 7).unwrap_err();
        assert_eq!(e.to_string(), "LISTEN_FDS=\"two\": not a number of fds");
        let e = activation_from(s("7"), s("65"), None, 7).unwrap_err();
        assert!(
            e.to_string().starts_with("LISTEN_FDS=\"65\": more sockets"),
            "{e}"
        );
        let e = activation_from(s("7"), s("2"), s("a:b:c"), 7).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LISTEN_FDNAMES=\"a:b:c\": 3 name(s) for LISTEN_FDS=2"
        );
    }

    #[test]
    fn numbered_paths_append_the_index() {
        let spec = SocketSpec::Numbered {
            base: "/run/pl.sock".into(),
            count: 3,
        };
        let want: Vec<PathBuf> = ["/run/pl.sock0", "/run/pl.sock1", "/run/pl.sock2"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(spec.paths(), want);
        assert!(SocketSpec::Fd(3).paths().is_empty());
    }

    #[test]
    fn only_a_listening_unix_stream_socket_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let listening = UnixListener::bind(dir.path().join("l")).unwrap();
        assert_eq!(check_listening_unix_socket(listening.as_raw_fd()), Ok(()));

        let file = std::fs::File::open("/proc/self/status").unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let dgram = UnixDatagram::unbound().unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        for (fd, want) in [
            (file.as_raw_fd(), "not a socket"),
            (a.as_raw_fd(), "a unix stream socket that is not listening"),
            (
                dgram.as_raw_fd(),
                "not a stream socket (type 2, SOCK_STREAM is 1)",
            ),
            (
                tcp.as_raw_fd(),
                "not a unix socket (address family 2, AF_UNIX is 1)",
            ),
            (-1, "not a file descriptor (negative)"),
        ] {
            assert_eq!(
                check_listening_unix_socket(fd).unwrap_err(),
                want,
                "fd {fd}"
            );
        }
        // An fd number nothing has open.
        let closed = std::fs::File::open("/proc/self/status")
            .unwrap()
            .into_raw_fd();
        // SAFETY: closing the fd just taken from a File we own.
        unsafe { libc::close(closed) };
        let e = open(&SocketSpec::Fd(closed)).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!("--fd {closed}: not an open file descriptor")),
            "{e}"
        );
    }

    #[test]
    fn an_inherited_socket_is_served_and_its_file_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inherited.sock");
        let fd = UnixListener::bind(&path).unwrap().into_raw_fd();
        let socks = open(&SocketSpec::Fd(fd)).unwrap();
        assert_eq!(socks[0].name, format!("fd {fd}"));
        assert!(UnixStream::connect(&path).is_ok());
        drop(socks);
        assert!(path.exists(), "an inherited socket's file must stay");
    }

    #[test]
    fn numbered_sockets_are_bound_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("vu");
        let spec = SocketSpec::Numbered {
            base: base.clone(),
            count: 3,
        };
        // The last one exists as a regular file: nothing may be bound.
        std::fs::write(numbered_path(&base, 2), b"").unwrap();
        let e = open(&spec).err().unwrap();
        assert!(e.to_string().contains("exists and is not a socket"), "{e}");
        for i in 0..2 {
            assert!(!numbered_path(&base, i).exists(), "socket {i} left behind");
        }
        std::fs::remove_file(numbered_path(&base, 2)).unwrap();
        let socks = open(&spec).unwrap();
        assert_eq!(socks.len(), 3);
        for (i, s) in socks.iter().enumerate() {
            assert_eq!(
                s.path.as_deref(),
                Some(numbered_path(&base, i as u32).as_path())
            );
            assert!(UnixStream::connect(numbered_path(&base, i as u32)).is_ok());
        }
        drop(socks);
        assert!(spec.paths().iter().all(|p| !p.exists()), "removed on drop");
    }

    #[test]
    fn a_path_too_long_for_sun_path_is_refused_before_binding() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(MAX_SOCKET_PATH_BYTES)));
        let e = open(&SocketSpec::Path(long.clone())).err().unwrap();
        assert!(
            e.to_string()
                .starts_with(&format!("socket path {}: 112 bytes", long.display())),
            "{e}"
        );
    }

    #[test]
    fn the_activation_variables_are_removed_once_read() {
        // The only test that touches these variables.
        let pid = std::process::id().to_string();
        std::env::set_var("LISTEN_PID", &pid);
        std::env::set_var("LISTEN_FDS", "1");
        std::env::set_var("LISTEN_FDNAMES", "vu");
        let got = take_activation_from_env().unwrap();
        assert_eq!(
            got,
            Some(vec![ActivatedFd {
                fd: 3,
                name: s("vu")
            }])
        );
        for var in ACTIVATION_VARS {
            assert_eq!(std::env::var_os(var), None, "{var} still set");
        }
        assert_eq!(take_activation_from_env().unwrap(), None);
    }
}
