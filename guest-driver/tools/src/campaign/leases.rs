//! `campaign_lease_*`: a layout lease under each policy broken by a
//! truncate or punch while the device uses the leased MR.

use super::helpers::{
    check_own_canaries, drain, module_bound, open_ctx, wait_contexts_gone, wait_event, Child,
    XfsFile,
};
use super::outcomes::{FaultWatch, Outcomes};
use crate::cases::helpers::{spawn_breaker, BreakTime, Breaker, LEASE_LEN};
use crate::fail;
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, Backing, Exit, Mapping};
use crate::uapi::*;
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// One lease's life under `policy`: LEASE_TAKE on an XFS file, a
/// short-term writable scrub MR of its shared mapping (6.12 allows that
/// pin; FOLL_LONGTERM of shared writable file pages is refused), a DMA
/// WRITE into it, a breaker child with a bounded wait, the events handled
/// (LEASE_BROKEN under `wait`: DEREG_MR and LEASE_RELEASE), release, close.
fn lease_life(t: &mut CaseCtx, policy: u32, how: Breaker, name: &str) -> CaseResult {
    let mut w = FaultWatch::start();
    let mut o = Outcomes::default();
    let file = XfsFile::new(name)?;
    let _bt = if policy == abi::PL_POLICY_TIMEOUT {
        Some(BreakTime::set(1)?)
    } else {
        None
    };
    // Written before the lease: an XFS write(2) breaks layout leases.
    let map = Mapping::new(
        &Backing::File {
            path: file.0.clone(),
            shared: true,
        },
        LEASE_LEN,
        false,
    )?;
    map.touch();
    let Some(c) = open_ctx(&mut o) else {
        return w.finish(t, &o);
    };
    let handles: Vec<u64> = c.handle.into_iter().collect();
    let data =
        std::fs::File::open(&file.0).map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.0)))?;
    let lease = o.rec(
        "LEASE_TAKE",
        c.dev.lease_take(data.as_raw_fd(), policy, 0, 0),
    );
    drop(data);
    let key = o
        .rec(
            "REG_MR_SCRUB",
            c.dev.reg_mr(
                map.addr(),
                LEASE_LEN as u64,
                PL_ACCESS_ALL,
                PINLEASE_PIN_SHORTTERM | PINLEASE_REG_SCRUB,
            ),
        )
        .map(|r| r.key);
    let local = Mapping::anon(4096)?;
    local.fill_with(0, 4096, |_| 0xa5);
    let lkey = o
        .rec("REG_MR", c.dev.reg_mr(local.addr(), 4096, PL_ACCESS_ALL, 0))
        .map(|r| r.key);
    if let (Some(k), Some(l)) = (key, lkey) {
        o.rec("DMA_WRITE", c.dev.write(l, 0, k, 0, 4096));
    }
    // Before the break: afterwards the mapping may lie beyond EOF.
    std::thread::sleep(Duration::from_millis(100));
    if let Some(k) = key {
        check_own_canaries(&map, k)?;
    }
    drop(map);
    let bound = module_bound();
    let t0 = Instant::now();
    let mut child = Child(spawn_breaker(how, &file.0)?);
    let mut released = false;
    if let Some(l) = lease {
        let broken = wait_event(c.ev.as_ref(), &mut o, &mut w, Duration::from_secs(5), |e| {
            e.kind == abi::PL_EVENT_LEASE_BROKEN && e.args[0] == l
        });
        t.diag(format!(
            "{how:?}: LEASE_BROKEN {} after {:?}",
            if broken { "seen" } else { "not seen" },
            t0.elapsed()
        ));
        if policy == abi::PL_POLICY_TIMEOUT {
            // The kernel times the lease out after lease-break-time (1 s).
            let lost = wait_event(c.ev.as_ref(), &mut o, &mut w, Duration::from_secs(5), |e| {
                e.kind == abi::PL_EVENT_LEASE_LOST && e.args[0] == l
            });
            t.diag(format!(
                "LEASE_LOST {}",
                if lost { "seen" } else { "not seen" }
            ));
        }
        // The holder lets go: its MR first, then the lease.
        if let Some(k) = key {
            o.rec("DEREG_MR", c.dev.dereg_mr(k));
        }
        released = o.rec("LEASE_RELEASE", c.dev.lease_release(l)).is_some();
    }
    let mut holder = Some(c);
    if lease.is_some() && !released {
        // LEASE_RELEASE failed: the device fd's close ends the lease.
        holder = None;
    }
    let exit = match child.wait(bound)? {
        Some(e) => Some(e),
        None => {
            // Still blocked after the release: the close must end it.
            holder = None;
            child.wait(bound)?
        }
    };
    let Some(exit) = exit else {
        let st = sys::proc_stack(child.0);
        fail!(
            "{how:?} of the leased file still blocked {:?} after it started (lease released: \
             {released}, device fd closed; bound {bound:?} each): {st}",
            t0.elapsed()
        );
    };
    t.diag(format!("{how:?} returned after {:?}: {exit}", t0.elapsed()));
    if exit != Exit::Code(0) {
        fail!("{how:?} of the leased file: {exit} (not a device operation: nothing may fail it)");
    }
    if let (Some(c), Some(l)) = (&holder, lkey) {
        o.rec("DEREG_MR", c.dev.dereg_mr(l));
        drain(c.ev.as_ref(), &mut o, &mut w);
    }
    drop(holder);
    drop(local);
    wait_contexts_gone(&handles, None, bound)?;
    w.finish(t, &o)
}

pub(super) fn campaign_lease_revoke(t: &mut CaseCtx) -> CaseResult {
    lease_life(
        t,
        abi::PL_POLICY_REVOKE,
        Breaker::Truncate,
        "campaign-revoke",
    )
}

pub(super) fn campaign_lease_wait(t: &mut CaseCtx) -> CaseResult {
    lease_life(t, abi::PL_POLICY_WAIT, Breaker::PunchHole, "campaign-wait")
}

pub(super) fn campaign_lease_timeout(t: &mut CaseCtx) -> CaseResult {
    lease_life(
        t,
        abi::PL_POLICY_TIMEOUT,
        Breaker::PunchHole,
        "campaign-timeout",
    )
}
