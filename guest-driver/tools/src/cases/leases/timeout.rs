//! The timeout policy (`timeout_policy_*`): after lease-break-time the
//! breaker goes on, the lease goes LOST and the MR stays pinned.

use crate::cases::helpers::{
    expect_debugfs_lease_lost, kname, lease_state, pins_held, reap_breaker, spawn_breaker,
    wait_event, wait_lease_state, BreakTime, Breaker, LEASE_LEN, SNAPSHOT_WAIT,
};
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
    pub(in crate::cases) fn timeout_policy_xfs_io_truncate =>
        timeout_with(Breaker::XfsIoTruncate, "timeout-xfsio-truncate");
    pub(in crate::cases) fn timeout_policy_xfs_io_fpunch =>
        timeout_with(XFS_IO_FPUNCH, "timeout-xfsio-fpunch");
    pub(in crate::cases) fn timeout_policy_xfs_io_fcollapse =>
        timeout_with(XFS_IO_FCOLLAPSE, "timeout-xfsio-fcollapse");
    pub(in crate::cases) fn timeout_policy_xfs_io_reflink =>
        timeout_with(XFS_IO_REFLINK, "timeout-xfsio-reflink");
    pub(in crate::cases) fn timeout_policy_lease_lost =>
        timeout_with(Breaker::Truncate, "timeout-truncate");
    pub(in crate::cases) fn timeout_policy_punch_hole_lease_lost =>
        timeout_with(Breaker::PunchHole, "timeout-punch");
    pub(in crate::cases) fn timeout_policy_collapse_range_lease_lost =>
        timeout_with(Breaker::CollapseRange, "timeout-collapse");
    pub(in crate::cases) fn timeout_policy_insert_range_lease_lost =>
        timeout_with(Breaker::InsertRange, "timeout-insert");
    pub(in crate::cases) fn timeout_policy_zero_range_lease_lost =>
        timeout_with(Breaker::ZeroRange, "timeout-zero");
    pub(in crate::cases) fn timeout_policy_reflink_lease_lost =>
        timeout_with(Breaker::Reflink, "timeout-reflink");
    pub(in crate::cases) fn timeout_policy_write_lease_lost =>
        timeout_with(Breaker::Write, "timeout-write");
}

/// The timeout policy under `how`, lease-break-time 1 s: the breaker goes on
/// after about 1 s, the lease goes LOST, the MR stays pinned and the device
/// still writes it (a lost access, in the `{name}-lost` snapshot), pins
/// balance after DEREG_MR.
fn timeout_with(t: &mut CaseCtx, how: Breaker, name: &str) -> CaseResult {
    let _bt = BreakTime::set(1)?;
    let Some(h) = holder(t, "/mnt/xfs", "xfs", name, abi::PL_POLICY_TIMEOUT)? else {
        fail!("no lease on XFS");
    };
    let _src = prepare_breaker(t, how, &h.file.path)?;
    let held0 = pins_held()?;
    let lease = h.lease;
    let t0 = Instant::now();
    let pid = spawn_breaker(how, &h.file.path)?;
    let exit = reap_breaker(pid, Duration::from_secs(30), &format!("{how:?}"))?;
    let took = t0.elapsed();
    t.diag(format!(
        "{how:?} returned after {took:?} (lease-break-time 1 s): {exit}"
    ));
    ensure!(exit == Exit::Code(0), "{how:?} child: {exit}");
    if took < Duration::from_millis(700) {
        // Returned at once: did the kernel break the lease at all?
        let (_, all) = wait_event(t, h.ev.as_raw_fd(), Duration::from_millis(500), |e| {
            e.args[0] == lease
        })?;
        let st = lease_state(h.dev.raw(), lease)?;
        ensure!(
            st.as_deref() == Some("active") && !all.iter().any(|e| e.args[0] == lease),
            "{how:?} did not wait for lease-break-time (1 s): {took:?}, lease state {st:?}"
        );
        t.diag(format!(
            "finding: {} XFS does not break the layout lease on {how:?}: returned after {took:?}, lease still active", kname(),
        ));
        h.dev.write(h.lkey, 0, h.key, 0, 4096)?;
        h.dev.dereg_mr(h.key)?;
        h.dev.lease_release(lease)?;
        h.dev.dereg_mr(h.lkey)?;
        return Ok(());
    }
    wait_lease_state(h.dev.raw(), lease, "lost", Duration::from_secs(5))?;
    let lost_after = t0.elapsed();
    let (lost, all) = wait_event(t, h.ev.as_raw_fd(), Duration::from_secs(5), |e| {
        e.kind == abi::PL_EVENT_LEASE_LOST && e.args[0] == lease
    })?;
    ensure!(
        all.iter()
            .any(|e| e.kind == abi::PL_EVENT_LEASE_BROKEN && e.args[0] == lease),
        "no LEASE_BROKEN for lease {lease:#x}"
    );
    ensure!(lost.is_some(), "no LEASE_LOST for lease {lease:#x}");
    ensure!(
        pins_held()? == held0,
        "pins changed while the lease timed out: {} -> {}",
        held0,
        pins_held()?
    );
    // Before the device WRITE: a write(2) leaves the pages in the file.
    check_breaker_effect(how, &h.file.path)?;
    // The device still writes the pages (for the removing triggers, pages
    // the file no longer owns).
    h.dev.write(h.lkey, 0, h.key, 0, 4096)?;
    // The device's table with the lost access counted: status-<name>-lost.
    sys::snapshot(&format!("{name}-lost"), SNAPSHOT_WAIT);
    expect_debugfs_lease_lost(t, lease)?;
    h.dev.dereg_mr(h.key)?;
    let held1 = pins_held()?;
    ensure!(
        held1 == held0 - (LEASE_LEN / 4096) as i64,
        "DEREG_MR of the LOST lease's MR did not release its pins: {held0} -> {held1}"
    );
    t.diag(format!(
        "finding: {} XFS breaks the layout lease on {how:?}; {how:?} went on after {took:?}, lease state lost {lost_after:?} after the start, MR pinned until DEREG_MR (pins {held0} -> {held1})", kname(),
    ));
    h.dev.lease_release(lease)?;
    h.dev.dereg_mr(h.lkey)?;
    Ok(())
}
