//! The supervisor: the process that was started, outside the sandbox. It
//! waits for the sandboxed daemon, forwards stop signals to it, writes the
//! abort report the daemon sends it, removes the socket files the daemon
//! can no longer reach, and ends the way the daemon ended.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

use log::{error, info, warn};

use super::{check, Supervision, MSG_ABORT};

/// Signals the supervisor forwards; SIGCHLD tells it the daemon ended.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The signal mask before `block_signals`.
pub struct Signals {
    old: libc::sigset_t,
    set: libc::sigset_t,
}

/// Blocks the forwarded signals and SIGCHLD (read later through a
/// signalfd), so none is lost between fork and the supervisor's loop.
pub fn block_signals() -> std::io::Result<Signals> {
    // SAFETY: sigset_t is plain data; the sig* calls initialise and fill it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.into_iter().chain([libc::SIGCHLD]) {
            libc::sigaddset(&mut set, s);
        }
        check(libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) as libc::c_long)?;
        Ok(Signals { old, set })
    }
}

pub fn restore_signals(s: &Signals) {
    // SAFETY: s.old is the mask sigprocmask returned.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &s.old, std::ptr::null_mut()) };
}

/// An empty directory, not writable even by its owner, to chroot into.
pub fn empty_dir() -> std::io::Result<PathBuf> {
    let mut template = std::env::temp_dir()
        .join("pinlease-chroot.XXXXXX")
        .into_os_string()
        .into_encoded_bytes();
    template.push(0);
    // SAFETY: template is a writable NUL-terminated buffer ending in XXXXXX.
    let p = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    template.pop();
    // SAFETY: mkdtemp kept the bytes a valid path.
    let dir = PathBuf::from(unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(template) });
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))?;
    Ok(dir)
}

/// How a process ended, as waitpid(2) said.
pub struct Ended(libc::c_int);

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        if libc::WIFEXITED(s) {
            write!(f, "exit code {}", libc::WEXITSTATUS(s))
        } else if libc::WIFSIGNALED(s) {
            write!(f, "killed by signal {}", signal_name(libc::WTERMSIG(s)))
        } else {
            write!(f, "wait status {s:#x}")
        }
    }
}

fn signal_name(sig: libc::c_int) -> String {
    // SAFETY: strsignal returns a static or thread-local string.
    let p = unsafe { libc::strsignal(sig) };
    if p.is_null() {
        return sig.to_string();
    }
    // SAFETY: non-null, NUL-terminated.
    let text = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy();
    format!("{sig} ({text})")
}

/// Waits for PID, retrying on EINTR.
pub fn reap(pid: libc::pid_t) -> Ended {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid int to write.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Ended(status);
        }
    }
}

/// The supervisor's life; ends the process.
pub fn supervise(
    pid: libc::pid_t,
    mut channel: File,
    signals: Signals,
    sup: &Supervision,
    chroot_dir: Option<PathBuf>,
) -> ! {
    for &fd in &sup.listening_fds {
        // SAFETY: the caller's listening sockets; the daemon has its own
        // copies, and the supervisor never uses these again.
        unsafe { libc::close(fd) };
    }
    // SAFETY: signals.set is an initialised set; -1 asks for a new fd.
    let sfd = unsafe { libc::signalfd(-1, &signals.set, libc::SFD_CLOEXEC) };
    let sfd = if sfd < 0 {
        error!("supervisor: signalfd: {}", std::io::Error::last_os_error());
        None
    } else {
        // SAFETY: just created, owned here.
        Some(unsafe { OwnedFd::from_raw_fd(sfd) })
    };
    info!("supervisor: the sandboxed daemon is pid {pid}");
    let mut message = Vec::new();
    let mut channel_open = true;
    let mut ended: Option<Ended> = None;
    while ended.is_none() || channel_open {
        let mut fds = vec![libc::pollfd {
            fd: if channel_open {
                channel.as_raw_fd()
            } else {
                -1
            },
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(s) = &sfd {
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: fds is a valid array of fds.len() pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            error!("supervisor: poll: {}", std::io::Error::last_os_error());
        }
        if channel_open && fds[0].revents != 0 {
            let mut buf = [0u8; 65536];
            match channel.read(&mut buf) {
                Ok(0) | Err(_) => channel_open = false,
                Ok(n) => message.extend_from_slice(&buf[..n]),
            }
        }
        if let Some(s) = &sfd {
            if fds[1].revents != 0 {
                // SAFETY: signalfd_siginfo is plain data of the size read.
                let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                let size = std::mem::size_of::<libc::signalfd_siginfo>();
                // SAFETY: info is writable for size bytes.
                let n = unsafe {
                    libc::read(
                        s.as_raw_fd(),
                        (&mut info as *mut libc::signalfd_siginfo).cast(),
                        size,
                    )
                };
                if n == size as isize && info.ssi_signo as libc::c_int != libc::SIGCHLD {
                    let sig = info.ssi_signo as libc::c_int;
                    info!("supervisor: forwarding signal {sig} to the daemon (pid {pid})");
                    // SAFETY: kill with integer arguments.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
        if ended.is_none() {
            let mut status = 0;
            // SAFETY: status is a valid int to write.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                ended = Some(Ended(status));
            }
        }
    }
    let ended = ended.expect("loop ends once the daemon is reaped");
    for path in &sup.socket_files {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            if let Err(e) = std::fs::remove_file(path) {
                warn!("supervisor: removing {}: {e}", path.display());
            }
        }
    }
    if let Some(d) = chroot_dir {
        let _ = std::fs::remove_dir(&d);
    }
    let aborted = message.first() == Some(&MSG_ABORT);
    if aborted {
        if let Some(path) = &sup.abort_report {
            if message.len() > 1 {
                let written = File::create(path).and_then(|mut f| f.write_all(&message[1..]));
                if let Err(e) = written {
                    error!("abort report {}: {e}", path.display());
                }
            }
        }
        error!("supervisor: the daemon aborted (fault plan); ending with SIGABRT");
        die_of(libc::SIGABRT, &signals);
    }
    let s = ended.0;
    if libc::WIFSIGNALED(s) {
        let sig = libc::WTERMSIG(s);
        if sig == libc::SIGSYS {
            error!(
                "supervisor: the daemon (pid {pid}) was killed by SIGSYS: a system call outside \
                 the seccomp allow-list; the kernel log names it (audit type=1326 ... syscall=NR), \
                 see docs/security.md"
            );
        } else {
            error!("supervisor: the daemon (pid {pid}) was {ended}");
        }
        die_of(sig, &signals);
    }
    info!("supervisor: the daemon ended ({ended})");
    std::process::exit(if libc::WIFEXITED(s) {
        libc::WEXITSTATUS(s)
    } else {
        1
    })
}

/// Ends the supervisor by SIG, as the daemon ended, without a core file of
/// its own (the daemon's, if any, is the one that matters).
fn die_of(sig: libc::c_int, signals: &Signals) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with valid arguments; raise ends the process
    // once the signal is unblocked with its default action.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        restore_signals(signals);
        let mut one: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut one);
        libc::sigaddset(&mut one, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}
