//! The revoke policy (`revoke_policy_*`): a breaker revokes the lease and
//! its MRs, the device's access fails, the breaker goes on.

use crate::cases::helpers::{
    expect_errno, fdinfo, kname, lease_line, lease_state, line_field, pins_held, reap_breaker,
    spawn_breaker, wait_mr_revoked, Breaker, LEASE_LEN, SNAPSHOT_WAIT,
};
use crate::cases::leases::{check_breaker_effect, holder, prepare_breaker};
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, Exit};
use crate::{case_fns, ensure, fail};
use pinlease_abi as abi;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn revoke_with(t: &mut CaseCtx, how: Breaker, name: &str) -> CaseResult {
    let Some(h) = holder(t, "/mnt/xfs", "xfs", name, abi::PL_POLICY_REVOKE)? else {
        fail!("no lease on XFS");
    };
    let _src = prepare_breaker(t, how, &h.file.path)?;
    let held0 = pins_held()?;
    // The device's lease table while the lease is held, for the runner's
    // status-<name>-held.json (docs/scenarios.md shows these).
    sys::snapshot(&format!("{name}-held"), SNAPSHOT_WAIT);
    let pid = spawn_breaker(how, &h.file.path)?;
    let t0 = Instant::now();
    let exit = reap_breaker(pid, Duration::from_secs(30), &format!("{how:?}"))?;
    t.diag(format!("{how:?} returned after {:?}: {exit}", t0.elapsed()));
    ensure!(exit == Exit::Code(0), "{how:?} child: {exit}");
    let key = h.key;
    let (hit, _) = wait_mr_revoked(t, h.ev.as_raw_fd(), key, Duration::from_secs(5))?;
    let Some(e) = hit else {
        fail!("no MR_REVOKED for MR {key:#x} within 5 s after {how:?}");
    };
    ensure!(
        e.args[1] == abi::PL_REVOKE_LEASE_BREAK,
        "MR_REVOKED reason {} != LEASE_BREAK",
        e.args[1]
    );
    expect_errno(
        h.dev.write(h.lkey, 0, h.key, 0, 4096),
        libc::ECANCELED,
        "device WRITE into the revoked MR",
    )?;
    let held1 = pins_held()?;
    t.diag(format!(
        "pins held: {held0} before the break, {held1} after (MR of {} pages)",
        LEASE_LEN / 4096
    ));
    ensure!(
        held0 - held1 == (LEASE_LEN / 4096) as i64,
        "the break released {} pins, expected {}",
        held0 - held1,
        LEASE_LEN / 4096
    );
    let st = lease_state(h.dev.raw(), h.lease)?;
    ensure!(
        st.as_deref() == Some("revoked"),
        "lease state {st:?} after the break"
    );
    sys::snapshot(&format!("{name}-revoked"), SNAPSHOT_WAIT);
    let line = lease_line(&fdinfo(h.dev.raw())?, h.lease).unwrap_or_default();
    ensure!(
        line_field(&line, "breaks") == Some("1") && line_field(&line, "mrs_revoked") == Some("1"),
        "lease after {how:?}: {line}"
    );
    check_breaker_effect(how, &h.file.path)?;
    t.diag(format!(
        "finding: {} XFS breaks the layout lease on {how:?} (the module reports PL_BREAK_OTHER): {line}", kname(),
    ));
    h.dev.dereg_mr(h.key)?;
    h.dev.lease_release(h.lease)?;
    h.dev.dereg_mr(h.lkey)?;
    drop(h.local);
    drop(h.map);
    Ok(())
}

case_fns! {
    pub(in crate::cases) fn revoke_policy_collapse_range =>
        revoke_with(Breaker::CollapseRange, "revoke-collapse");
    pub(in crate::cases) fn revoke_policy_insert_range =>
        revoke_with(Breaker::InsertRange, "revoke-insert");
    pub(in crate::cases) fn revoke_policy_zero_range =>
        revoke_with(Breaker::ZeroRange, "revoke-zero");
    pub(in crate::cases) fn revoke_policy_reflink_onto_leased_file =>
        revoke_with(Breaker::Reflink, "revoke-reflink");
    pub(in crate::cases) fn revoke_policy_xfs_io_fpunch =>
        revoke_with(Breaker::XfsIo("fpunch 0 65536"), "revoke-xfsio-fpunch");
    pub(in crate::cases) fn revoke_policy_xfs_io_fcollapse =>
        revoke_with(Breaker::XfsIo("fcollapse 0 4096"), "revoke-xfsio-fcollapse");
    pub(in crate::cases) fn revoke_policy_xfs_io_finsert =>
        revoke_with(Breaker::XfsIo("finsert 0 4096"), "revoke-xfsio-finsert");
    pub(in crate::cases) fn revoke_policy_xfs_io_fzero =>
        revoke_with(Breaker::XfsIo("fzero 0 65536"), "revoke-xfsio-fzero");
    pub(in crate::cases) fn revoke_policy_xfs_io_reflink =>
        revoke_with(Breaker::XfsIo("reflink SRC 0 0 65536"), "revoke-xfsio-reflink");
    pub(in crate::cases) fn revoke_policy_write => revoke_with(Breaker::Write, "revoke-write");
    pub(in crate::cases) fn revoke_policy_xfs_io_pwrite =>
        revoke_with(Breaker::XfsIo("pwrite 0 4096"), "revoke-xfsio-pwrite");
    pub(in crate::cases) fn revoke_policy_truncate =>
        revoke_with(Breaker::Truncate, "revoke-truncate");
    pub(in crate::cases) fn revoke_policy_punch_hole =>
        revoke_with(Breaker::PunchHole, "revoke-punch");
    pub(in crate::cases) fn revoke_policy_xfs_io_truncate =>
        revoke_with(Breaker::XfsIoTruncate, "revoke-xfsio");
}
