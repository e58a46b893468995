//! What the campaign cases share: device contexts with their event fds,
//! bounded waits for events and for contexts to go, data checks.

use super::outcomes::{param, FaultWatch, Outcomes};
use crate::cases::helpers::DEBUGFS_DIR;
use crate::dev::{event_kind_name, parse_events, Dev, EVENT_SIZE};
use crate::ktap::{CaseErr, CaseResult};
use crate::sys::{self, Exit, Mapping};
use crate::{fail, skip, stray};
use pinlease_abi as abi;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The module's default `req_timeout_ms` (docs/faults.md section 2).
const DEFAULT_REQ_TIMEOUT_MS: u64 = 30_000;

/// How long the module may take to answer or give up on a request (a
/// dropped completion resets the device after `req_timeout_ms`), plus the
/// deferred-release delay, plus slack for TCG.
pub(super) fn module_bound() -> Duration {
    let ms = |n: &str| param(n).and_then(|v| v.parse::<u64>().ok());
    let req = ms("req_timeout_ms").unwrap_or(DEFAULT_REQ_TIMEOUT_MS);
    let delay = ms("fault_release_delay_ms").unwrap_or(0);
    Duration::from_millis(req + delay) + Duration::from_secs(5)
}

/// One device context of a case with its (nonblocking) event fd.
pub(super) struct Ctx {
    pub(super) dev: Dev,
    pub(super) ev: Option<OwnedFd>,
    pub(super) handle: Option<u64>,
}

pub(super) fn open_ctx(o: &mut Outcomes) -> Option<Ctx> {
    let dev = o.rec("OPEN", Dev::open_default())?;
    let ev = o.rec("EVENT_FD", dev.event_fd());
    if let Some(e) = &ev {
        let _ = sys::set_nonblock(e.as_raw_fd());
    }
    let handle = o.rec("QUERY", dev.query()).map(|q| q.ctx);
    Some(Ctx { dev, ev, handle })
}

/// Reads what is queued on `ev` now (bounded: at most 64 reads).
pub(super) fn drain(
    ev: Option<&OwnedFd>,
    o: &mut Outcomes,
    w: &mut FaultWatch,
) -> Vec<abi::PlEvent> {
    let mut out = Vec::new();
    let Some(ev) = ev else { return out };
    for _ in 0..64 {
        match sys::read_fd(ev.as_raw_fd(), EVENT_SIZE * 16) {
            Ok(buf) if !buf.is_empty() => {
                for e in parse_events(&buf) {
                    *o.events.entry(event_kind_name(e.kind)).or_default() += 1;
                    w.event(&e);
                    out.push(e);
                }
            }
            _ => break,
        }
    }
    out
}

/// Waits up to `timeout` for an event matching `pred` on `ev`.
pub(super) fn wait_event(
    ev: Option<&OwnedFd>,
    o: &mut Outcomes,
    w: &mut FaultWatch,
    timeout: Duration,
    pred: impl Fn(&abi::PlEvent) -> bool,
) -> bool {
    let Some(fd) = ev else { return false };
    let t0 = Instant::now();
    loop {
        if drain(Some(fd), o, w).iter().any(&pred) {
            return true;
        }
        let left = timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return false;
        }
        let _ = sys::poll_one(
            fd.as_raw_fd(),
            libc::POLLIN,
            left.as_millis().min(200) as i32,
        );
    }
}

/// Waits until debugfs `contexts` lists none of `handles` and no row of
/// process `pid`; FAIL past `bound`.
pub(super) fn wait_contexts_gone(handles: &[u64], pid: Option<i32>, bound: Duration) -> CaseResult {
    let path = format!("{DEBUGFS_DIR}/contexts");
    if !std::path::Path::new(&path).exists() {
        return Ok(());
    }
    let t0 = Instant::now();
    loop {
        let text = sys::read_to_string(&path)?;
        let left: Vec<&str> = text
            .lines()
            .skip(1)
            .filter(|l| {
                let mut f = l.split_whitespace();
                let ctx = f
                    .next()
                    .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok());
                let p = f.next().and_then(|p| p.parse::<i32>().ok());
                ctx.is_some_and(|c| c != 0 && handles.contains(&c)) || (pid.is_some() && p == pid)
            })
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if t0.elapsed() >= bound {
            fail!(
                "debugfs contexts still lists {} closed context(s) {bound:?} after their last \
                 close: {}",
                left.len(),
                left.join(" | ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Any canary-looking word in `m` (a scrub MR registered at the mapping's
/// start with key `key`) must be that MR's canary for its own offset.
pub(super) fn check_own_canaries(m: &Mapping, key: u64) -> CaseResult {
    let seed = abi::pl_scrub_seed(key);
    let mut bad = None;
    m.for_each_u64(|off, w| {
        if bad.is_none() && stray::canary_slot(w).is_some() && w != seed ^ off as u64 {
            bad = Some((off, w));
        }
    });
    if let Some((off, w)) = bad {
        fail!(
            "scrub MR {key:#x}: word {w:#018x} at offset {off:#x} is a canary of slot {:#x}, \
             not this MR's ({:#018x}): the device wrote another MR's canary into these pages",
            stray::canary_slot(w).unwrap_or(0),
            seed ^ off as u64
        );
    }
    Ok(())
}

/// Data a case wrote with the CPU.
pub(super) fn pat(seed: u64, i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9e37_79b9) ^ seed ^ (i as u64 >> 9)) as u8
}

/// FAIL unless `m[0..len]` holds `want(i)`.
pub(super) fn check_bytes(
    m: &Mapping,
    len: usize,
    what: &str,
    want: impl Fn(usize) -> u8,
) -> CaseResult {
    if let Some((off, got, exp)) = m.first_mismatch(0, len, want) {
        fail!(
            "{what} succeeded but byte {off} is {got:#04x}, expected {exp:#04x}: the device \
             answered success for a transfer it did not do"
        );
    }
    Ok(())
}

/// Kills and reaps a child that is still running (teardown on any path).
pub(super) struct Child(pub(super) libc::pid_t);

impl Child {
    /// Waits up to `timeout`; the exit, or None if it still runs.
    pub(super) fn wait(&mut self, timeout: Duration) -> Result<Option<Exit>, CaseErr> {
        if self.0 <= 0 {
            return Ok(None);
        }
        let r = sys::wait_timeout(self.0, timeout)?;
        if r.is_some() {
            self.0 = 0;
        }
        Ok(r)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.0 > 0 {
            sys::kill(self.0, libc::SIGKILL);
            let _ = sys::wait_timeout(self.0, Duration::from_secs(10));
        }
    }
}

/// A file on /mnt/xfs (SKIP when that is not XFS), removed on drop.
pub(super) struct XfsFile(pub(super) String);

impl XfsFile {
    pub(super) fn new(name: &str) -> Result<XfsFile, CaseErr> {
        match sys::mount_at("/mnt/xfs") {
            Some(m) if m.fstype == "xfs" => {}
            _ => skip!("/mnt/xfs is not an XFS mount in this guest"),
        }
        let p = format!("/mnt/xfs/pinlease-{name}.dat");
        let _ = std::fs::remove_file(&p);
        Ok(XfsFile(p))
    }
}

impl Drop for XfsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
