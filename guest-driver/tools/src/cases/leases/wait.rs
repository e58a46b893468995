//! The wait policy (`wait_policy_*`): the breaker waits until the holder
//! releases the lease.

use crate::cases::helpers::{kname, lease_state, reap_breaker, spawn_breaker, wait_event, Breaker};
use crate::cases::leases::{
    check_breaker_effect, holder, prepare_breaker, XFS_IO_FCOLLAPSE, XFS_IO_FPUNCH, XFS_IO_REFLINK,
};
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, Exit};
use crate::{case_fns, ensure, fail};
use pinlease_abi as abi;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

case_fns! {
    pub(in crate::cases) fn wait_policy_truncate_waits_for_release =>
        wait_with(Breaker::Truncate, "wait-truncate");
    pub(in crate::cases) fn wait_policy_collapse_range_waits_for_release =>
        wait_with(Breaker::CollapseRange, "wait-collapse");
    pub(in crate::cases) fn wait_policy_punch_hole_waits_for_release =>
        wait_with(Breaker::PunchHole, "wait-punch");
    pub(in crate::cases) fn wait_policy_insert_range_waits_for_release =>
        wait_with(Breaker::InsertRange, "wait-insert");
    pub(in crate::cases) fn wait_policy_zero_range_waits_for_release =>
        wait_with(Breaker::ZeroRange, "wait-zero");
    pub(in crate::cases) fn wait_policy_reflink_waits_for_release =>
        wait_with(Breaker::Reflink, "wait-reflink");
    pub(in crate::cases) fn wait_policy_write_waits_for_release =>
        wait_with(Breaker::Write, "wait-write");
    pub(in crate::cases) fn wait_policy_xfs_io_truncate =>
        wait_with(Breaker::XfsIoTruncate, "wait-xfsio-truncate");
    pub(in crate::cases) fn wait_policy_xfs_io_fpunch =>
        wait_with(XFS_IO_FPUNCH, "wait-xfsio-fpunch");
    pub(in crate::cases) fn wait_policy_xfs_io_fcollapse =>
        wait_with(XFS_IO_FCOLLAPSE, "wait-xfsio-fcollapse");
    pub(in crate::cases) fn wait_policy_xfs_io_reflink =>
        wait_with(XFS_IO_REFLINK, "wait-xfsio-reflink");
}

fn wait_with(t: &mut CaseCtx, how: Breaker, name: &str) -> CaseResult {
    let Some(h) = holder(t, "/mnt/xfs", "xfs", name, abi::PL_POLICY_WAIT)? else {
        fail!("no lease on XFS");
    };
    let _src = prepare_breaker(t, how, &h.file.path)?;
    let t0 = Instant::now();
    let pid = spawn_breaker(how, &h.file.path)?;
    let lease = h.lease;
    let (hit, _) = wait_event(t, h.ev.as_raw_fd(), Duration::from_secs(5), |e| {
        e.kind == abi::PL_EVENT_LEASE_BROKEN && e.args[0] == lease
    })?;
    let broken_after = t0.elapsed();
    if hit.is_none() {
        // Did the kernel break the lease at all? If the breaker returned
        // and the lease is still active, that is what 6.12 does.
        if let Some(exit) = sys::wait_timeout(pid, Duration::ZERO)? {
            let st = lease_state(h.dev.raw(), lease)?;
            if st.as_deref() == Some("active") {
                t.diag(format!(
                    "finding: {} XFS does not break the layout lease on {how:?}: it returned after {:?} ({exit}), lease still active", kname(),
                    t0.elapsed()
                ));
                h.dev.write(h.lkey, 0, h.key, 0, 4096)?;
                h.dev.dereg_mr(h.key)?;
                h.dev.lease_release(lease)?;
                h.dev.dereg_mr(h.lkey)?;
                return Ok(());
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    let still = sys::wait_timeout(pid, Duration::ZERO)?;
    if still.is_some() || hit.is_none() {
        let _ = reap_breaker(pid, Duration::from_secs(1), &format!("{how:?}"));
    }
    ensure!(
        hit.is_some(),
        "no LEASE_BROKEN for lease {lease:#x} within 5 s of {how:?}"
    );
    ensure!(
        still.is_none(),
        "{how:?} did not wait for the holder: {:?}",
        still
    );
    let blocked = t0.elapsed();
    t.diag(format!(
        "LEASE_BROKEN {broken_after:?} after {how:?} started; breaker still blocked after {blocked:?}: {}",
        sys::proc_stack(pid)
    ));
    let st = lease_state(h.dev.raw(), lease)?;
    ensure!(
        st.as_deref() == Some("breaking"),
        "lease state {st:?} while the breaker waits"
    );
    // The device still reaches the MR: the holder decides.
    h.dev.write(h.lkey, 0, h.key, 0, 4096)?;
    h.dev.dereg_mr(h.key)?;
    ensure!(
        sys::wait_timeout(pid, Duration::from_millis(300))?.is_none(),
        "{how:?} went on before LEASE_RELEASE"
    );
    h.dev.lease_release(lease)?;
    let t1 = Instant::now();
    let exit = reap_breaker(
        pid,
        Duration::from_secs(10),
        &format!("{how:?} after LEASE_RELEASE"),
    )?;
    t.diag(format!(
        "{how:?} returned {:?} after LEASE_RELEASE ({:?} after it started): {exit}",
        t1.elapsed(),
        t0.elapsed()
    ));
    ensure!(exit == Exit::Code(0), "{how:?} child: {exit}");
    check_breaker_effect(how, &h.file.path)?;
    t.diag(format!(
        "finding: {} XFS breaks the layout lease on {how:?}; with the wait policy the breaker sleeps until LEASE_RELEASE", kname(),
    ));
    h.dev.dereg_mr(h.lkey)?;
    Ok(())
}
