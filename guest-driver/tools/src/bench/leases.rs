//! Layout-lease figures on an XFS file (/mnt/xfs): LEASE_TAKE +
//! LEASE_RELEASE pairs, and the time truncate(2) takes to return when the
//! file is under a lease of each policy with a registered MR of its shared
//! mapping, set up as the suite's lease cases set it up (cases/leases/:
//! the file written before the lease, the lease on the whole file, then the
//! MR pinned short-term: a writable long-term pin of a shared XFS mapping
//! is refused since 6.5).

use super::figures::{self, Figure, Side};
use super::{run_loop, timed, Bench, BenchError, BenchResult, Bounds, Line};
use crate::cases::helpers::{lease_whole_file, BreakTime, TestFile, LEASE_LEN};
use crate::dev::{parse_events, Dev, EVENT_SIZE};
use crate::sys::{self, Mapping};
use crate::uapi::PINLEASE_PIN_SHORTTERM;
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

const MNT: &str = "/mnt/xfs";

/// lease-break-time (seconds) while `truncate_timeout` runs: the shortest
/// the kernel takes (/proc/sys/fs/lease-break-time is in whole seconds), so
/// the figure is this plus the break's own cost.
const BREAK_TIME_S: u32 = 1;

/// How long the WAIT holder waits for LEASE_BROKEN before it releases
/// anyway (so the truncate returns and the bench reports the miss).
const BROKEN_WAIT: Duration = Duration::from_secs(10);

/// `lease_pair`: LEASE_TAKE (policy REVOKE, whole file) + LEASE_RELEASE of
/// one XFS file, pairs per second.
pub(super) fn lease_pair(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let dev = b.open()?;
    let file = TestFile::on(MNT, "xfs", "bench-lease-pair")?;
    std::fs::write(&file.path, vec![0x4cu8; LEASE_LEN])
        .map_err(|e| BenchError::Setup(format!("write {}: {e}", file.path)))?;
    let data = std::fs::File::open(&file.path)
        .map_err(|e| BenchError::Setup(format!("open {}: {e}", file.path)))?;
    let s = run_loop(&b.timing, Bounds::RATE, || {
        timed(|| {
            let l = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
            dev.lease_release(l)?;
            Ok(())
        })
        .map(|((), d)| d)
    })?;
    Ok(vec![Line::new(Side::Pinlease, f, s.rate(1.0))
        .stats(&s, 0)
        .detail("policy", "revoke")
        .detail("fs", "xfs")])
}

fn policy_of(f: &Figure) -> BenchResult<(u32, &'static str)> {
    match f.id {
        id if id == figures::TRUNCATE_REVOKE.id => Ok((abi::PL_POLICY_REVOKE, "revoke")),
        id if id == figures::TRUNCATE_WAIT.id => Ok((abi::PL_POLICY_WAIT, "wait")),
        id if id == figures::TRUNCATE_TIMEOUT.id => Ok((abi::PL_POLICY_TIMEOUT, "timeout")),
        id => Err(BenchError::Setup(format!(
            "figure {id}: not a truncate figure"
        ))),
    }
}

/// truncate(2) of `path` to 0.
fn truncate_to_0(path: &str) -> BenchResult<()> {
    let c = CString::new(path).map_err(|_| BenchError::Setup(format!("path {path:?}")))?;
    // SAFETY: truncate(2) of a NUL-terminated path.
    if unsafe { libc::truncate(c.as_ptr(), 0) } < 0 {
        return Err(crate::dev::SysError::last(format!("truncate({path}, 0)")).into());
    }
    Ok(())
}

/// Reads what the event fd holds now (it is non-blocking).
fn drain(ev: &OwnedFd) -> Vec<abi::PlEvent> {
    let mut out = Vec::new();
    while let Ok(buf) = sys::read_fd(ev.as_raw_fd(), EVENT_SIZE * 64) {
        if buf.is_empty() {
            break;
        }
        out.extend(parse_events(&buf));
    }
    out
}

/// The WAIT holder, as a user would write it: on LEASE_BROKEN of `lease`,
/// LEASE_RELEASE it (which lets the breaker go on). Releases after
/// BROKEN_WAIT without the event, and says so.
fn release_on_break(dev: &Dev, ev: &OwnedFd, lease: u64) -> BenchResult<()> {
    let t0 = Instant::now();
    let mut seen = false;
    while !seen && t0.elapsed() < BROKEN_WAIT {
        let left = BROKEN_WAIT.saturating_sub(t0.elapsed());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        if sys::poll_one(ev.as_raw_fd(), libc::POLLIN, ms)? & libc::POLLIN == 0 {
            continue;
        }
        seen = drain(ev)
            .iter()
            .any(|e| e.kind == abi::PL_EVENT_LEASE_BROKEN && e.args[0] == lease);
    }
    dev.lease_release(lease)?;
    if !seen {
        return Err(BenchError::Timeout {
            what: format!("LEASE_BROKEN of lease {lease:#x} (WAIT) after truncate"),
            within: BROKEN_WAIT,
        });
    }
    Ok(())
}

/// One truncate under a fresh lease of `policy` with an MR on the file's
/// mapping: the truncate's time; the MR, lease and mapping go after it.
fn truncate_once(dev: &Dev, ev: &OwnedFd, file: &TestFile, policy: u32) -> BenchResult<Duration> {
    // Written (Mapping::new fills a short file) before the lease: a write
    // to an XFS file breaks layout leases too.
    let map = Mapping::new(&file.backing(true), LEASE_LEN, false)?;
    map.touch();
    let lease = lease_whole_file(dev, &file.path, policy)?;
    let mr = dev.reg_mr(
        map.addr(),
        LEASE_LEN as u64,
        PL_ACCESS_ALL,
        PINLEASE_PIN_SHORTTERM,
    )?;
    let took = if policy == abi::PL_POLICY_WAIT {
        std::thread::scope(|sc| {
            let holder = sc.spawn(|| release_on_break(dev, ev, lease));
            let r = timed(|| truncate_to_0(&file.path));
            let held = holder.join().unwrap_or_else(|_| {
                Err(BenchError::Setup("the WAIT holder thread panicked".into()))
            });
            held.and(r.map(|((), d)| d))
        })?
    } else {
        timed(|| truncate_to_0(&file.path))?.1
    };
    drain(ev);
    // A revoked MR deregisters too; the WAIT lease is already released.
    dev.dereg_mr(mr.key)?;
    if policy != abi::PL_POLICY_WAIT {
        dev.lease_release(lease)?;
    }
    drop(map);
    Ok(took)
}

/// `truncate_{revoke,wait,timeout}`: the median time truncate(2) takes to
/// return (us). TIMEOUT runs with lease-break-time BREAK_TIME_S (restored
/// after) and no warm-up: each truncate lasts about that long.
pub(super) fn truncate(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let (policy, name) = policy_of(f)?;
    let dev = b.open()?;
    let ev = dev.event_fd()?;
    sys::set_nonblock(ev.as_raw_fd())?;
    let file = TestFile::on(MNT, "xfs", &format!("bench-truncate-{name}"))?;
    let (_break_time, bounds) = if policy == abi::PL_POLICY_TIMEOUT {
        let bounds = Bounds {
            min: 1,
            max: usize::MAX,
            warmup: false,
        };
        (Some(BreakTime::set(BREAK_TIME_S)?), bounds)
    } else {
        (None, Bounds::RATE)
    };
    let s = run_loop(&b.timing, bounds, || {
        truncate_once(&dev, &ev, &file, policy)
    })?;
    let mut line = Line::new(Side::Pinlease, f, s.median_secs() * 1e6)
        .stats(&s, LEASE_LEN as u64)
        .detail("policy", name)
        .detail("pin", "shortterm")
        .detail("fs", "xfs");
    if policy == abi::PL_POLICY_TIMEOUT {
        line = line
            .detail("lease_break_time_s", BREAK_TIME_S)
            .detail("warmup", 0);
    }
    Ok(vec![line])
}
