//! The kernel log (/dev/kmsg): reading what a case added, the lines the
//! contract treats as bad, writing markers.

use super::errno::last_errno;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Reader of the kernel log from a saved position (nonblocking).
pub struct Kmsg {
    fd: Option<OwnedFd>,
}

// KMSG_BAD: the substrings of kernel log lines that fail a case, generated
// by build.rs from guest-driver/include/kernel_warnings.txt (the list
// init.sh and the runner use too).
include!(concat!(env!("OUT_DIR"), "/kernel_warnings.rs"));

impl Kmsg {
    /// Opens /dev/kmsg positioned at the end of the log.
    pub fn open_at_end() -> Kmsg {
        Kmsg::open(true)
    }

    /// Opens /dev/kmsg at the oldest record the kernel still holds.
    pub fn open_at_start() -> Kmsg {
        Kmsg::open(false)
    }

    fn open(at_end: bool) -> Kmsg {
        let path = CString::new("/dev/kmsg").unwrap();
        // SAFETY: open with a valid path.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Kmsg { fd: None };
        }
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if at_end {
            // SAFETY: lseek on an open fd.
            unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
        }
        Kmsg { fd: Some(fd) }
    }

    pub fn available(&self) -> bool {
        self.fd.is_some()
    }

    /// The messages logged since the last call (or since opening).
    pub fn read_new(&mut self) -> Vec<String> {
        let Some(fd) = &self.fd else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: reading into a live buffer.
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n < 0 {
                match last_errno() {
                    // Overwritten records: go on with the next one.
                    libc::EPIPE => continue,
                    libc::EINTR => continue,
                    _ => break,
                }
            }
            if n == 0 {
                break;
            }
            let rec = String::from_utf8_lossy(&buf[..n as usize]);
            out.push(kmsg_message(&rec).to_string());
        }
        out
    }
}

/// The message part of a /dev/kmsg record ("6,123,456,-;text\n KEY=v").
pub fn kmsg_message(rec: &str) -> &str {
    let first = rec.lines().next().unwrap_or("");
    match first.split_once(';') {
        Some((_, msg)) => msg,
        None => first,
    }
}

pub fn kmsg_bad_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| KMSG_BAD.iter().any(|b| l.contains(b)))
        .cloned()
        .collect()
}

/// Writes a line to the kernel log at KERN_DEBUG (so it never reaches the
/// console, where the suite's KTAP goes); ignored when not permitted.
pub fn kmsg_write(line: &str) {
    let line = format!("<7>{line}");
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records() {
        assert_eq!(
            kmsg_message("4,1234,5678,-;WARNING: CPU: 0 PID: 1\n SUBSYSTEM=x\n"),
            "WARNING: CPU: 0 PID: 1"
        );
        let lines = vec![
            "pinlease: bound".to_string(),
            "refcount_t: underflow; use-after-free.".to_string(),
            "general protection fault, probably for non-canonical address".to_string(),
        ];
        assert_eq!(kmsg_bad_lines(&lines).len(), 2);
    }
}
