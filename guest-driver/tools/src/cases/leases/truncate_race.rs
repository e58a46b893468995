//! Concurrent truncate vs REG_MR under a layout lease (docs/scenarios.md
//! §10 describes the kernel race this case runs into).

use crate::cases::helpers::{
    fdinfo, lease_line, lease_state, line_field, open_needing, pins_held, read_events,
    reap_breaker, TestFile, LEASE_LEN,
};
use crate::dev::SysError;
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, errno_name, Exit, Mapping};
use crate::uapi::*;
use crate::{ensure, fail};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long the race runs.
const RACE_TIME: Duration = Duration::from_millis(1000);

/// How long the truncate may wait behind an active lease nobody broke
/// before the race case lets that lease go: a lease the kernel did break
/// is revoked by the module's work within milliseconds.
const UNBROKEN_WAIT: Duration = Duration::from_millis(200);

/// Is `breaker` waiting in `__break_lease()` while `lease` of `fd` has
/// never been broken (`breaks=0` in the fdinfo)?
fn breaker_waits_unbroken(fd: i32, lease: u64, breaker: libc::pid_t) -> Result<bool, CaseErr> {
    let unbroken = lease_line(&fdinfo(fd)?, lease)
        .and_then(|l| line_field(&l, "breaks").map(|b| b == "0"))
        .unwrap_or(false);
    Ok(unbroken && sys::proc_stack(breaker).contains("__break_lease"))
}

pub(in crate::cases) fn concurrent_truncate_vs_reg_mr(t: &mut CaseCtx) -> CaseResult {
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    let file = TestFile::on("/mnt/xfs", "xfs", "race")?;
    let map = Mapping::new(&file.backing(true), LEASE_LEN, false)?;
    let ev = dev.event_fd()?;
    sys::set_nonblock(ev.as_raw_fd())?;
    let data = std::fs::File::open(&file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.path)))?;
    let held0 = pins_held()?;
    // Forked before any thread exists: truncate to 0 and back, until told.
    let (stop_rd, stop_wr) = sys::pipe()?;
    let path = file.path.clone();
    let (rd_raw, wr_raw) = (stop_rd.as_raw_fd(), stop_wr.as_raw_fd());
    let truncer = sys::fork_child(move || {
        // SAFETY: the child's copy of the write end; the parent keeps its own.
        unsafe { libc::close(wr_raw) };
        let c = std::ffi::CString::new(path).unwrap();
        let mut n = 0;
        loop {
            for size in [0, LEASE_LEN as i64] {
                // SAFETY: truncate(2) with a valid path.
                if unsafe { libc::truncate(c.as_ptr(), size) } < 0 {
                    return sys::last_errno();
                }
            }
            n += 1;
            if sys::poll_one(rd_raw, libc::POLLIN, 0).unwrap_or(1) != 0 {
                // exit code: 0 when it looped at least once
                return if n > 0 { 0 } else { 99 };
            }
        }
    })?;
    drop(stop_rd);
    let deadline = Instant::now() + RACE_TIME;
    let addr = map.addr();
    let dev_ref = &dev;
    // Each racer: REG_MR of the whole mapping; every other one kept until
    // the end (a later break revokes it), the rest deregistered at once.
    let racer = move || -> Result<(Vec<u64>, u32, Vec<i32>), SysError> {
        let (mut kept, mut ok, mut errs) = (Vec::new(), 0u32, Vec::new());
        while Instant::now() < deadline {
            match dev_ref.reg_mr(
                addr,
                LEASE_LEN as u64,
                PL_ACCESS_ALL,
                PINLEASE_PIN_SHORTTERM,
            ) {
                Ok(r) => {
                    ok += 1;
                    if ok % 2 == 0 {
                        kept.push(r.key);
                    } else {
                        dev_ref.dereg_mr(r.key)?;
                    }
                }
                Err(e) => errs.push(e.errno),
            }
        }
        Ok((kept, ok, errs))
    };
    let mut leases = 0u32;
    let mut unbroken_waits = 0u32;
    let mut lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
    leases += 1;
    let results = std::thread::scope(|s| -> Result<_, CaseErr> {
        let r1 = s.spawn(racer);
        let r2 = s.spawn(racer);
        // The lease keeper: a revoked lease is released and taken again.
        // A lease taken between a revoke and the truncate's next look at
        // the inode is one the kernel (6.1, 6.12, 7.3) never breaks:
        // __break_lease() restarts and waits on it without calling
        // lm_break. The keeper lets such a lease go once the truncate has
        // sat behind it, unbroken, for UNBROKEN_WAIT, and counts it.
        let mut keeper = || -> CaseResult {
            let mut since: Option<Instant> = None;
            while Instant::now() < deadline {
                match lease_state(dev.raw(), lease)?.as_deref() {
                    Some("revoked") => {
                        dev.lease_release(lease)?;
                        lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
                        leases += 1;
                        since = None;
                    }
                    Some("active") if breaker_waits_unbroken(dev.raw(), lease, truncer)? => {
                        let t0 = *since.get_or_insert_with(Instant::now);
                        if t0.elapsed() >= UNBROKEN_WAIT {
                            unbroken_waits += 1;
                            dev.lease_release(lease)?;
                            lease =
                                dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
                            leases += 1;
                            since = None;
                        }
                    }
                    _ => since = None,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        };
        let kr = keeper();
        let a = r1
            .join()
            .map_err(|_| CaseErr::Fail("racer panicked".into()))?;
        let b = r2
            .join()
            .map_err(|_| CaseErr::Fail("racer panicked".into()))?;
        kr?;
        Ok((a?, b?))
    })?;
    drop(stop_wr);
    // The last lease goes first: the truncate loop may wait behind it,
    // unbroken (above).
    dev.lease_release(lease)?;
    let texit = reap_breaker(truncer, Duration::from_secs(30), "truncate loop")?;
    let (a, b) = results;
    let mut kept = a.0;
    kept.extend(b.0);
    let ok = a.1 + b.1;
    let mut errs = a.2;
    errs.extend(b.2);
    let evs = read_events(ev.as_raw_fd(), Duration::from_millis(300))?;
    let revoked = evs
        .iter()
        .filter(|e| e.kind == abi::PL_EVENT_MR_REVOKED && kept.contains(&e.args[0]))
        .count();
    let mut hist = std::collections::BTreeMap::new();
    for e in &errs {
        *hist.entry(errno_name(*e)).or_insert(0u32) += 1;
    }
    t.diag(format!(
        "{:?}: {ok} REG_MR ok ({} kept), failures {hist:?}, {revoked} kept MRs revoked by a break, {leases} leases taken; truncate loop: {texit}",
        RACE_TIME,
        kept.len()
    ));
    if unbroken_waits > 0 {
        t.diag(format!(
            "finding: {} {unbroken_waits} time(s) left the truncate waiting in __break_lease() on a lease taken while it waited, never broken (breaks=0, lm_break not called); the keeper released it after {UNBROKEN_WAIT:?}",
            crate::verdicts::uname_release()
        ));
    }
    ensure!(texit == Exit::Code(0), "truncate loop: {texit}");
    // A REG_MR racing a truncate pins pages beyond the new EOF: SIGBUS in
    // the fault, EFAULT from GUP. Nothing else is a clean answer.
    if let Some(e) = errs.iter().find(|&&e| e != libc::EFAULT) {
        fail!("REG_MR failed with {} during the race", errno_name(*e));
    }
    ensure!(ok > 0, "no REG_MR succeeded during the race");
    for k in &kept {
        dev.dereg_mr(*k)?;
    }
    let fi = fdinfo(dev.raw())?;
    ensure!(
        !fi.lines()
            .any(|l| l.starts_with("mr:") || l.starts_with("lease:")),
        "MRs or leases left after the race: {}",
        fi.replace('\n', " | ")
    );
    let held1 = pins_held()?;
    ensure!(
        held1 == held0,
        "pins held {held0} before the race, {held1} after"
    );
    drop(map);
    Ok(())
}
