//! Layout-lease helpers: a lease's state in fdinfo, the breaker children
//! that truncate, punch, collapse, reflink or write a leased file, and the
//! lease-break-time setting.

use crate::cases::helpers::{debugfs_table, fdinfo, names_handle, KIB};
use crate::dev::Dev;
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, Exit};
use crate::{ensure, fail};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The leased files' length (and the breakers' range).
pub const LEASE_LEN: usize = 64 * KIB;

/// How long a case waits for the runner to take a status snapshot.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// The `lease:` line of `text` (fdinfo) naming `lease`.
pub fn lease_line(text: &str, lease: u64) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with("lease:") && names_handle(l, lease))
        .map(str::to_string)
}

/// LEASE_TAKE with `policy` on the whole of the file at `path` (opened for
/// the call, closed after it); returns the lease handle.
pub fn lease_whole_file(dev: &Dev, path: &str, policy: u32) -> Result<u64, CaseErr> {
    let data = std::fs::File::open(path).map_err(|e| CaseErr::Fail(format!("open {path}: {e}")))?;
    Ok(dev.lease_take(data.as_raw_fd(), policy, 0, 0)?)
}

/// Fails unless debugfs `leases` shows `lease` as lost (the row is
/// diagnosed).
pub fn expect_debugfs_lease_lost(t: &mut CaseCtx, lease: u64) -> CaseResult {
    let tab = debugfs_table("leases")?;
    let row = tab.lines().find(|l| names_handle(l, lease)).unwrap_or("");
    t.diag(format!("debugfs leases: {row}"));
    ensure!(
        row.contains("lost"),
        "debugfs leases row for {lease:#x}: {row:?}"
    );
    Ok(())
}

/// The value of `key=` in a `lease:` line.
pub fn line_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// The lease's state in `fd`'s fdinfo, or None when it is not listed.
pub fn lease_state(fd: i32, lease: u64) -> Result<Option<String>, CaseErr> {
    let text = fdinfo(fd)?;
    Ok(lease_line(&text, lease).and_then(|l| line_field(&l, "state").map(str::to_string)))
}

/// Polls fdinfo until the lease is in `state` (up to `timeout`).
pub fn wait_lease_state(fd: i32, lease: u64, state: &str, timeout: Duration) -> CaseResult {
    let start = Instant::now();
    loop {
        let s = lease_state(fd, lease)?;
        if s.as_deref() == Some(state) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            fail!(
                "lease {lease:#x}: fdinfo state {s:?} after {timeout:?}, expected {state}: {}",
                fdinfo(fd)?.replace('\n', " | ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the breaker child does to the file.
#[derive(Clone, Copy, Debug)]
pub enum Breaker {
    Truncate,
    PunchHole,
    XfsIoTruncate,
    /// fallocate(FALLOC_FL_COLLAPSE_RANGE, 0, 4096)
    CollapseRange,
    /// fallocate(FALLOC_FL_INSERT_RANGE, 0, 4096)
    InsertRange,
    /// fallocate(FALLOC_FL_ZERO_RANGE, 0, LEASE_LEN)
    ZeroRange,
    /// FICLONERANGE of `<path>.src` onto the leased file, LEASE_LEN at 0
    Reflink,
    /// `xfs_io -c <cmd> <path>`; "SRC" in the command is `<path>.src`
    XfsIo(&'static str),
    /// pwrite(2) of one byte at offset 0 (XFS's write path: BREAK_WRITE)
    Write,
}

/// Source file of the Reflink breakers.
pub fn reflink_src(path: &str) -> String {
    format!("{path}.src")
}

/// fallocate(2) on `path` from a child: 0 or the errno.
fn child_fallocate(c: &std::ffi::CStr, mode: i32, off: i64, len: i64) -> i32 {
    // SAFETY: open/fallocate/close on a valid path and our own fd.
    unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return sys::last_errno();
        }
        let rc = libc::fallocate(fd, mode, off, len);
        let e = sys::last_errno();
        libc::close(fd);
        if rc < 0 {
            return e;
        }
    }
    0
}

/// struct file_clone_range (linux/fs.h).
#[repr(C)]
pub struct FileCloneRange {
    pub src_fd: i64,
    pub src_offset: u64,
    pub src_length: u64,
    pub dest_offset: u64,
}

/// FICLONERANGE = _IOW(0x94, 13, struct file_clone_range)
pub const FICLONERANGE: libc::c_ulong = 0x4020_940d;

/// Forks a child that breaks the layout lease of `path`: exit 0 when the
/// operation returned, else the errno (or xfs_io's exit code).
pub fn spawn_breaker(how: Breaker, path: &str) -> Result<libc::pid_t, CaseErr> {
    let p = path.to_string();
    let pid = sys::fork_child(move || {
        let c = std::ffi::CString::new(p.clone()).unwrap();
        match how {
            Breaker::Truncate => {
                // SAFETY: truncate(2) with a valid path.
                if unsafe { libc::truncate(c.as_ptr(), 0) } < 0 {
                    return sys::last_errno();
                }
                0
            }
            Breaker::PunchHole => {
                // SAFETY: open/fallocate with a valid path and our own fd.
                unsafe {
                    let fd = libc::open(c.as_ptr(), libc::O_RDWR);
                    if fd < 0 {
                        return sys::last_errno();
                    }
                    let rc = libc::fallocate(
                        fd,
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        0,
                        LEASE_LEN as i64,
                    );
                    if rc < 0 {
                        return sys::last_errno();
                    }
                    libc::close(fd);
                }
                0
            }
            Breaker::XfsIoTruncate => xfs_io_child("truncate 0", &p),
            Breaker::XfsIo(cmd) => xfs_io_child(cmd, &p),
            Breaker::CollapseRange => child_fallocate(&c, libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4096),
            Breaker::InsertRange => child_fallocate(&c, libc::FALLOC_FL_INSERT_RANGE, 0, 4096),
            Breaker::ZeroRange => {
                child_fallocate(&c, libc::FALLOC_FL_ZERO_RANGE, 0, LEASE_LEN as i64)
            }
            Breaker::Reflink => {
                let src = std::ffi::CString::new(reflink_src(&p)).unwrap();
                // SAFETY: open/ioctl/close with valid paths and our own fds.
                unsafe {
                    let sfd = libc::open(src.as_ptr(), libc::O_RDONLY);
                    if sfd < 0 {
                        return sys::last_errno();
                    }
                    let dfd = libc::open(c.as_ptr(), libc::O_RDWR);
                    if dfd < 0 {
                        return sys::last_errno();
                    }
                    let mut r = FileCloneRange {
                        src_fd: sfd.into(),
                        src_offset: 0,
                        src_length: LEASE_LEN as u64,
                        dest_offset: 0,
                    };
                    if libc::ioctl(dfd, FICLONERANGE as _, &mut r) < 0 {
                        return sys::last_errno();
                    }
                    libc::close(dfd);
                    libc::close(sfd);
                }
                0
            }
            Breaker::Write => {
                // SAFETY: open/pwrite/close with a valid path and buffer.
                unsafe {
                    let fd = libc::open(c.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return sys::last_errno();
                    }
                    let b = [0x77u8];
                    if libc::pwrite(fd, b.as_ptr().cast(), 1, 0) != 1 {
                        return sys::last_errno();
                    }
                    libc::close(fd);
                }
                0
            }
        }
    })?;
    Ok(pid)
}

/// Runs `xfs_io -c cmd path` ("SRC" in cmd: the reflink source) with its
/// output captured (it must not reach the KTAP stream): its exit code, 124
/// when it printed to stderr (xfs_io exits 0 after many failed commands),
/// 127 when it cannot be run.
fn xfs_io_child(cmd: &str, path: &str) -> i32 {
    let cmd = cmd.replace("SRC", &reflink_src(path));
    match std::process::Command::new("xfs_io")
        .args(["-c", &cmd, path])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.code() == Some(0) && !o.stderr.is_empty() => 124,
        Ok(o) => o.status.code().unwrap_or(125),
        Err(_) => 127,
    }
}

/// Waits for the breaker; fails (killing it) if it does not end in time.
pub fn reap_breaker(pid: libc::pid_t, timeout: Duration, what: &str) -> Result<Exit, CaseErr> {
    match sys::wait_timeout(pid, timeout)? {
        Some(e) => Ok(e),
        None => {
            let st = sys::proc_stack(pid);
            sys::kill(pid, libc::SIGKILL);
            let _ = sys::wait_timeout(pid, Duration::from_secs(10));
            fail!("{what}: breaker still blocked after {timeout:?} ({st})");
        }
    }
}

/// Sets /proc/sys/fs/lease-break-time, restoring the old value on drop.
pub struct BreakTime(String);

impl BreakTime {
    pub fn set(secs: u32) -> Result<BreakTime, CaseErr> {
        let old = sys::read_to_string("/proc/sys/fs/lease-break-time")?;
        sys::write_str("/proc/sys/fs/lease-break-time", &format!("{secs}\n"))?;
        Ok(BreakTime(old))
    }
}

impl Drop for BreakTime {
    fn drop(&mut self) {
        let _ = sys::write_str("/proc/sys/fs/lease-break-time", &self.0);
    }
}
