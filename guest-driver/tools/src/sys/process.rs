//! Processes: fork with a closure, wait with a timeout, signals, kernel
//! stacks.

use super::errno::last_errno;
use crate::dev::{SysError, SysResult};
use std::time::{Duration, Instant};

/// Forks; the child runs `f` and `_exit`s with its return value (101 if it
/// panics). Returns the child's pid.
pub fn fork_child(f: impl FnOnce() -> i32) -> SysResult<libc::pid_t> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: fork; the child only runs `f` and then _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::last("fork()"));
    }
    if pid == 0 {
        let rc = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: leave the child without running the parent's cleanups.
        unsafe { libc::_exit(rc) };
    }
    Ok(pid)
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Waits for `pid` up to `timeout`; None if it is still running then.
pub fn wait_timeout(pid: libc::pid_t, timeout: Duration) -> SysResult<Option<Exit>> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc < 0 {
            if last_errno() == libc::EINTR {
                continue;
            }
            return Err(SysError::last(format!("waitpid({pid})")));
        }
        if rc == pid {
            return Ok(Some(if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                Exit::Code(libc::WEXITSTATUS(status))
            }));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn kill(pid: libc::pid_t, sig: i32) {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid, sig) };
}

/// The stack of a process as the kernel sees it (for hang diagnostics).
pub fn proc_stack(pid: libc::pid_t) -> String {
    let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, r)| r.chars().next().unwrap_or('?'))
        })
        .unwrap_or('?');
    format!("state {state}; stack: {}", stack.replace('\n', " | "))
}
