//! `--sandbox namespace|chroot|none`: where `pinlease serve` runs once its
//! sockets are open (docs/security.md).
//!
//! - `namespace`: new mount, pid, network, IPC and UTS namespaces (and a
//!   user namespace when not run as root, mapping only the daemon's own
//!   uid and gid), the root pivoted to an empty read-only tmpfs;
//! - `chroot`: chroot(2) into an empty directory made for the run (root
//!   only: it needs CAP_SYS_CHROOT), for where namespaces are refused;
//! - `none`: no sandbox.
//!
//! Both sandboxes drop every capability (effective, permitted, inheritable,
//! ambient and the bounding set): once the sockets are bound the daemon
//! needs none, since guest memory and eventfds arrive as fds over the
//! vhost-user socket and the admin socket's peer check (SO_PEERCRED) is
//! unprivileged. Without `--sandbox` the daemon takes the strictest mode
//! the system allows: `namespace`, or `chroot` when running as root and
//! the kernel refuses the namespaces; refused both, it stops and says
//! which flag to use, so it never runs unsandboxed without being told.
//!
//! A sandboxed daemon is a child of a small supervisor (the process that
//! was started; `supervisor.rs`): the files the daemon made outside the
//! sandbox (its socket files, the abort report) cannot be reached from
//! inside it, so the supervisor removes and writes them, forwards SIGINT,
//! SIGTERM, SIGHUP and SIGQUIT to the daemon and ends the way the daemon
//! ended (same exit code or signal).

mod caps;
mod supervisor;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;
use std::sync::OnceLock;

use log::{info, warn};

/// How the daemon is confined once its sockets are open.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// New mount, pid, net, ipc, uts (and user) namespaces; pivot_root
    /// into an empty read-only tmpfs; no capabilities.
    Namespace,
    /// chroot into an empty directory; no capabilities (root only).
    Chroot,
    /// No sandbox.
    None,
}

impl SandboxMode {
    pub fn name(self) -> &'static str {
        match self {
            SandboxMode::Namespace => "namespace",
            SandboxMode::Chroot => "chroot",
            SandboxMode::None => "none",
        }
    }
}

/// Why the sandbox could not be entered; each names the step and the
/// value it worked on.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("--sandbox {mode}: {step}: {source}")]
    Step {
        mode: &'static str,
        step: String,
        source: std::io::Error,
    },
    #[error("--sandbox {mode}: the sandboxed daemon failed to start: {message}")]
    Child { mode: &'static str, message: String },
    #[error(
        "no sandbox is possible here: namespaces are refused ({namespace}){chroot}; \
         pass --sandbox none to run without one"
    )]
    NoneWorks { namespace: String, chroot: String },
}

/// What the supervisor takes care of for a sandboxed daemon.
pub struct Supervision {
    /// The listening sockets: the supervisor closes its copies, so only the
    /// daemon holds them.
    pub listening_fds: Vec<RawFd>,
    /// Socket files the supervisor removes once the daemon has ended.
    pub socket_files: Vec<PathBuf>,
    /// `--abort-report`: the supervisor writes what the daemon sends it.
    pub abort_report: Option<PathBuf>,
}

/// Channel messages, daemon to supervisor (one byte, then a payload).
const MSG_READY: u8 = b'R';
const MSG_FAILED: u8 = b'E';
const MSG_ABORT: u8 = b'A';

/// The write end of the channel to the supervisor, in a sandboxed daemon.
static SUPERVISOR: OnceLock<File> = OnceLock::new();

fn step(mode: SandboxMode, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let step = what.into();
    move |source| SandboxError::Step {
        mode: mode.name(),
        step,
        source,
    }
}

/// Turns -1 into the OS error.
pub(crate) fn check(r: libc::c_long) -> std::io::Result<libc::c_long> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Enters MODE (None: the strictest that works). Returns the mode entered
/// in the sandboxed daemon; in the supervisor it does not return. Call it
/// while the process has a single thread, after the sockets are bound.
pub fn enter(mode: Option<SandboxMode>, sup: &Supervision) -> Result<SandboxMode, SandboxError> {
    match mode {
        Some(SandboxMode::None) => {
            warn!("sandbox: none (the daemon runs unconfined)");
            Ok(SandboxMode::None)
        }
        Some(m) => fork_into(m, sup),
        None => match fork_into(SandboxMode::Namespace, sup) {
            Err(SandboxError::Step { step, source, .. })
                if refused(&source) && (step == UNSHARE_STEP || step == USERNS_STEP) =>
            {
                let namespace = format!("{step}: {source}");
                if euid() != 0 {
                    return Err(SandboxError::NoneWorks {
                        namespace,
                        chroot: ", and chroot needs root".into(),
                    });
                }
                warn!("sandbox: namespaces refused ({namespace}); using chroot");
                fork_into(SandboxMode::Chroot, sup).map_err(|e| SandboxError::NoneWorks {
                    namespace,
                    chroot: format!(", and {e}"),
                })
            }
            other => other,
        },
    }
}

const UNSHARE_STEP: &str = "unshare(CLONE_NEWPID)";
const USERNS_STEP: &str = "entering a user namespace (CLONE_NEWUSER)";

/// What a kernel that forbids namespaces answers.
fn refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS | libc::ENOSYS)
    )
}

/// Forks the daemon into MODE's sandbox; the parent becomes its supervisor.
fn fork_into(mode: SandboxMode, sup: &Supervision) -> Result<SandboxMode, SandboxError> {
    let chroot_dir = match mode {
        SandboxMode::Chroot => Some(
            supervisor::empty_dir()
                .map_err(step(mode, "creating an empty directory to chroot into"))?,
        ),
        _ => None,
    };
    if mode == SandboxMode::Namespace {
        if euid() != 0 {
            // Unprivileged: a user namespace owns the others; it maps only
            // our own uid and gid, so nothing else can be become.
            enter_user_namespace().map_err(step(mode, USERNS_STEP))?;
        }
        // SAFETY: unshare has no memory preconditions; CLONE_NEWPID only
        // puts this process's future children in a new pid namespace.
        check(unsafe { libc::unshare(libc::CLONE_NEWPID) } as libc::c_long)
            .map_err(step(mode, UNSHARE_STEP))?;
    }
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)
        .map_err(step(mode, "creating the supervisor channel (pipe2)"))?;
    // SAFETY: both fds were just created and are owned here only.
    let (mut rx, tx) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let signals = supervisor::block_signals().map_err(step(mode, "blocking signals"))?;
    // SAFETY: the process has one thread (the caller's promise), so the
    // child's copy of it is consistent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(step(mode, "fork")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(rx);
        // Killed outright, the supervisor takes the daemon with it, also
        // before the sandbox is complete; if it is gone already, so are we.
        if set_parent_death_signal().is_err() || supervisor_gone(&tx) {
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(1) };
        }
        supervisor::restore_signals(&signals);
        let mut tx = tx;
        match confine(mode, chroot_dir.as_ref()) {
            Ok(()) => {
                if tx.write_all(&[MSG_READY]).is_err() {
                    // The supervisor is gone: nothing to serve for.
                    std::process::exit(1);
                }
                let _ = SUPERVISOR.set(tx);
                info!(
                    "sandbox: {} (no capabilities{})",
                    mode.name(),
                    if mode == SandboxMode::Namespace {
                        "; new mount, pid, net, ipc, uts namespaces; root is an empty read-only tmpfs"
                    } else {
                        "; root is an empty directory"
                    }
                );
                return Ok(mode);
            }
            Err(e) => {
                let mut msg = vec![MSG_FAILED];
                msg.extend_from_slice(e.to_string().as_bytes());
                let _ = tx.write_all(&msg);
                // SAFETY: leave without running the parent's exit handlers twice.
                unsafe { libc::_exit(1) };
            }
        }
    }
    drop(tx);
    // Ready, or why not.
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    let got = rx.read(&mut byte).unwrap_or(0);
    if got == 0 || byte[0] != MSG_READY {
        let _ = rx.read_to_end(&mut first);
        let status = supervisor::reap(pid);
        supervisor::restore_signals(&signals);
        if let Some(d) = &chroot_dir {
            let _ = std::fs::remove_dir(d);
        }
        let message = if got == 1 && byte[0] == MSG_FAILED {
            String::from_utf8_lossy(&first).into_owned()
        } else {
            format!("it ended before saying it was ready ({status})")
        };
        return Err(SandboxError::Child {
            mode: mode.name(),
            message,
        });
    }
    supervisor::supervise(pid, rx, signals, sup, chroot_dir)
}

/// The child's side: MODE's confinement, then no capabilities.
fn confine(mode: SandboxMode, chroot_dir: Option<&PathBuf>) -> Result<(), SandboxError> {
    match mode {
        SandboxMode::Namespace => enter_namespaces(mode)?,
        SandboxMode::Chroot => {
            let dir = chroot_dir.expect("chroot mode has its directory");
            let c = cstring(dir.as_os_str());
            // SAFETY: c is a valid NUL-terminated path.
            check(unsafe { libc::chroot(c.as_ptr()) } as libc::c_long)
                .map_err(step(mode, format!("chroot({})", dir.display())))?;
            chdir_root(mode)?;
        }
        SandboxMode::None => {}
    }
    caps::drop_all().map_err(step(mode, "dropping capabilities"))?;
    // Again: a credential change may clear it.
    set_parent_death_signal().map_err(step(mode, "prctl(PR_SET_PDEATHSIG)"))?;
    Ok(())
}

fn set_parent_death_signal() -> std::io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } as libc::c_long)?;
    Ok(())
}

/// The channel's read end is closed: the supervisor died before
/// PR_SET_PDEATHSIG was set.
fn supervisor_gone(tx: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: tx.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) };
    p.revents & libc::POLLERR != 0
}

fn cstring(s: &std::ffi::OsStr) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(s.as_bytes()).expect("paths have no NUL byte")
}

fn chdir_root(mode: SandboxMode) -> Result<(), SandboxError> {
    // SAFETY: a valid NUL-terminated path.
    check(unsafe { libc::chdir(c"/".as_ptr()) } as libc::c_long).map_err(step(mode, "chdir(/)"))?;
    Ok(())
}

/// unshare(CLONE_NEWUSER) and map our own uid and gid to themselves.
fn enter_user_namespace() -> std::io::Result<()> {
    // SAFETY: getegid has no preconditions.
    let (uid, gid) = (euid(), unsafe { libc::getegid() });
    // SAFETY: unshare has no memory preconditions; single-threaded here.
    check(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as libc::c_long)?;
    // An unprivileged process may map only its own ids, and its gid only
    // once setgroups(2) is denied in the namespace.
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    Ok(())
}

/// In the new pid namespace already (pid 1): the other namespaces, then an
/// empty read-only tmpfs as the root.
fn enter_namespaces(mode: SandboxMode) -> Result<(), SandboxError> {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // SAFETY: unshare has no memory preconditions.
    check(unsafe { libc::unshare(flags) } as libc::c_long).map_err(step(
        mode,
        "unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)",
    ))?;
    // Nothing we mount or unmount may propagate back to the host.
    // SAFETY: valid NUL-terminated strings or null where mount allows it.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } as libc::c_long)
    .map_err(step(mode, "making / private (mount MS_REC|MS_PRIVATE)"))?;
    // The new root: an empty tmpfs, mounted (in our namespace only) over
    // the temporary directory, which only serves as a mount point.
    let new_root = std::env::temp_dir();
    let c_root = cstring(new_root.as_os_str());
    // SAFETY: as above.
    check(unsafe {
        libc::mount(
            c"pinlease-sandbox".as_ptr(),
            c_root.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
            c"size=4k,nr_inodes=1,mode=0555".as_ptr().cast(),
        )
    } as libc::c_long)
    .map_err(step(
        mode,
        format!("mounting an empty tmpfs on {}", new_root.display()),
    ))?;
    // SAFETY: as above.
    check(unsafe { libc::chdir(c_root.as_ptr()) } as libc::c_long)
        .map_err(step(mode, format!("chdir({})", new_root.display())))?;
    // pivot_root(".", "."): the old root ends up stacked on the new one,
    // where a lazy unmount removes it without needing a directory for it.
    // SAFETY: valid NUL-terminated strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) }).map_err(
        step(mode, format!("pivot_root into {}", new_root.display())),
    )?;
    // SAFETY: as above.
    check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } as libc::c_long)
        .map_err(step(mode, "unmounting the old root (umount2 MNT_DETACH)"))?;
    chdir_root(mode)
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT held back (blocked) from before
/// the socket files appear until the daemon's handlers are in place: a
/// stop asked for in between is then served, not lost (a daemon that is
/// its pid namespace's init ignores signals it has no handler for) and
/// does not kill the daemon before it can remove its sockets.
pub struct HeldSignals(supervisor::Signals);

pub fn hold_stop_signals() -> std::io::Result<HeldSignals> {
    supervisor::block_signals().map(HeldSignals)
}

impl HeldSignals {
    /// Delivers what arrived meanwhile to the handlers now installed.
    pub fn release(self) {
        supervisor::restore_signals(&self.0);
    }
}

/// A sandboxed daemon's planned abort (`abort` fault): sends REPORT (the
/// `--abort-report` text, when one was asked for) to the supervisor and
/// exits; the supervisor writes the file and ends with SIGABRT. Returns
/// when the daemon is not sandboxed.
pub fn planned_abort(report: Option<&str>) {
    let Some(mut channel) = SUPERVISOR.get() else {
        return;
    };
    let mut msg = vec![MSG_ABORT];
    msg.extend_from_slice(report.unwrap_or("").as_bytes());
    let _ = channel.write_all(&msg);
    // In a pid namespace the daemon is its init, which its own SIGABRT
    // cannot kill; the supervisor dies of it instead.
    // SAFETY: _exit ends the process without unwinding, as abort would.
    unsafe { libc::_exit(128 + libc::SIGABRT) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_namespaces_falls_back() {
        for errno in [
            libc::EPERM,
            libc::EINVAL,
            libc::ENOSPC,
            libc::EUSERS,
            libc::ENOSYS,
        ] {
            assert!(
                refused(&std::io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [libc::ENOMEM, libc::EIO, libc::ENOENT] {
            assert!(
                !refused(&std::io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }

    #[test]
    fn errors_name_the_mode_and_the_step() {
        let e = step(SandboxMode::Chroot, "chroot(/tmp/x)")(std::io::Error::from_raw_os_error(
            libc::EPERM,
        ));
        assert_eq!(
            e.to_string(),
            "--sandbox chroot: chroot(/tmp/x): Operation not permitted (os error 1)"
        );
    }
}
