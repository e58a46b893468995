//! The VM runner's status snapshots: asking for one on the console and
//! waiting for the runner's answer on stdin.

use super::errno::last_errno;
use std::time::{Duration, Instant};

/// The line `guest-driver/vm/run` answers a snapshot request with.
pub use crate::markers::HOST_ACK;

/// Asks the VM runner for a `pinlease status --json` snapshot named `name`
/// (it writes `status-<name>.json` in its output directory): prints
/// `# PINLEASE-SNAPSHOT <name>` on stdout (the console, as a KTAP
/// diagnostic) and waits up to `timeout` for the runner's answer on stdin,
/// so the snapshot shows the device as the caller has it now. Returns
/// whether the runner answered; without a runner (a guest booted by hand)
/// it gives up after `timeout` and the caller goes on.
pub fn snapshot(name: &str, timeout: Duration) -> bool {
    use std::io::Write;
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_name {
        eprintln!("snapshot name {name:?}: use 1-64 of [A-Za-z0-9_.-]");
        return false;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "# {} {name}", crate::markers::SNAPSHOT);
    let _ = out.flush();
    drop(out);
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n <= 0 {
            if n < 0 && last_errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        let mut b = [0u8; 1];
        // SAFETY: reads one byte into a valid one-byte buffer.
        if unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) } != 1 {
            return false;
        }
        if b[0] == b'\n' {
            if String::from_utf8_lossy(&line).trim_end_matches('\r') == HOST_ACK {
                return true;
            }
            line.clear();
        } else {
            line.push(b[0]);
        }
    }
}
