//! FS-DAX: short-term pins under a layout lease, truncate vs pin under a
//! revoke lease.

use crate::cases::helpers::{
    dax_file, expect_errno, fdinfo, kname, lease_line, lease_state, lease_whole_file, line_field,
    open_needing, pins_held, reap_breaker, spawn_breaker, wait_mr_revoked, Breaker, LEASE_LEN,
};
use crate::dev::{Dev, SysResult};
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, Exit, Mapping};
use crate::uapi::*;
use crate::{ensure, fail};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;
use std::time::Duration;

pub(super) fn fsdax_shortterm_pin_under_lease(t: &mut CaseCtx) -> CaseResult {
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    let f = dax_file(t, "dax-lease", LEASE_LEN)?;
    let map = Mapping::new(&f.backing(true), LEASE_LEN, false)?;
    let lease = lease_whole_file(&dev, &f.path, abi::PL_POLICY_REVOKE)?;
    expect_errno(
        dev.reg_mr(map.addr(), LEASE_LEN as u64, PL_ACCESS_ALL, 0),
        libc::EOPNOTSUPP,
        "FOLL_LONGTERM REG_MR of FS-DAX under a lease",
    )?;
    let r = reg_shortterm(&dev, &map)?;
    t.diag(format!(
        "FS-DAX: long-term pin EOPNOTSUPP; short-term pin under revoke lease {lease:#x}: MR {:#x} ({} pages), lease {:#x}",
        r.key, r.npages, r.lease
    ));
    let local = Mapping::anon(4096)?;
    local.fill_with(0, 4096, |i| (i % 251) as u8);
    let lkey = dev.reg_mr(local.addr(), 4096, PL_ACCESS_ALL, 0)?.key;
    dev.write(lkey, 0, r.key, 8192, 4096)?;
    if let Some((o, got, want)) = map.first_mismatch(8192, 4096, |i| ((i - 8192) % 251) as u8) {
        fail!("device WRITE into the DAX MR: byte {o} = {got:#04x}, expected {want:#04x}");
    }
    ensure!(
        lease_state(dev.raw(), lease)?.as_deref() == Some("active"),
        "lease not active after DMA into the DAX pages"
    );
    dev.dereg_mr(r.key)?;
    dev.dereg_mr(lkey)?;
    dev.lease_release(lease)?;
    Ok(())
}

pub(super) fn fsdax_truncate_vs_pin_under_revoke_lease(t: &mut CaseCtx) -> CaseResult {
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    let f = dax_file(t, "dax-truncate", LEASE_LEN)?;
    let map = Mapping::new(&f.backing(true), LEASE_LEN, false)?;
    let ev = dev.event_fd()?;
    sys::set_nonblock(ev.as_raw_fd())?;
    let lease = lease_whole_file(&dev, &f.path, abi::PL_POLICY_REVOKE)?;
    let held0 = pins_held()?;
    let r = reg_shortterm(&dev, &map)?;
    let key = r.key;
    let npages = (LEASE_LEN / 4096) as i64;
    ensure!(
        pins_held()? == held0 + npages,
        "REG_MR did not pin {npages} pages"
    );
    let pid = spawn_breaker(Breaker::Truncate, &f.path)?;
    let (hit, _) = wait_mr_revoked(t, ev.as_raw_fd(), key, Duration::from_secs(1))?;
    if hit.is_some() {
        let _ = reap_breaker(pid, Duration::from_secs(30), "truncate");
        fail!("the DAX truncate revoked MR {key:#x} at once: 6.12 (our reference) waits for the pinned DAX pages in xfs_break_dax_layouts() before break_layout()");
    }
    // 6.12: xfs_break_layouts(BREAK_UNMAP) runs xfs_break_dax_layouts()
    // first, which waits (interruptibly) for the DAX pages' references
    // to drop; break_layout() is only reached after that.
    let still = sys::wait_timeout(pid, Duration::ZERO)?;
    let stack = sys::proc_stack(pid);
    t.diag(format!("truncate after 1 s: {stack}"));
    let line = lease_line(&fdinfo(dev.raw())?, lease).unwrap_or_default();
    ensure!(
        still.is_none(),
        "truncate neither revoked the MR nor waited: {still:?}"
    );
    ensure!(
        line_field(&line, "breaks") == Some("0") && line_field(&line, "state") == Some("active"),
        "lease while the truncate waits: {line}"
    );
    t.diag(format!("finding: on {} a truncate of a DAX file waits for the pinned DAX pages in xfs_break_dax_layouts() before break_layout(): the lease is not broken and the truncate blocks (interruptibly)", kname()));
    sys::kill(pid, libc::SIGKILL);
    let k = reap_breaker(pid, Duration::from_secs(10), "killed truncate")?;
    ensure!(k == Exit::Signal(libc::SIGKILL), "killed truncate: {k}");
    // The XFS write path breaks layout leases without the DAX wait.
    let w = spawn_breaker(Breaker::Write, &f.path)?;
    let wexit = reap_breaker(w, Duration::from_secs(30), "pwrite")?;
    ensure!(wexit == Exit::Code(0), "pwrite child: {wexit}");
    let (hit, _) = wait_mr_revoked(t, ev.as_raw_fd(), key, Duration::from_secs(5))?;
    ensure!(
        hit.is_some(),
        "a write(2) to the DAX file did not revoke MR {key:#x}"
    );
    t.diag(
        "a write(2) (BREAK_WRITE, no DAX wait) broke the lease: MR revoked, pins dropped"
            .to_string(),
    );
    let pid = spawn_breaker(Breaker::Truncate, &f.path)?;
    let truncate_exit = reap_breaker(pid, Duration::from_secs(30), "truncate after the revoke")?;
    ensure!(truncate_exit == Exit::Code(0), "truncate: {truncate_exit}");
    let held1 = pins_held()?;
    ensure!(
        held1 == held0,
        "pins held {held0} before REG_MR, {held1} after the revoke"
    );
    ensure!(
        lease_state(dev.raw(), lease)?.as_deref() == Some("revoked"),
        "lease not revoked"
    );
    ensure!(
        std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(1) == 0,
        "the truncate did not complete"
    );
    expect_errno(
        dev.read(key, 0, key, 0, 8),
        libc::ECANCELED,
        "device access to the revoked DAX MR",
    )?;
    dev.dereg_mr(key)?;
    dev.lease_release(lease)?;
    drop(map);
    Ok(())
}

/// A short-term REG_MR (no FOLL_LONGTERM: what FS-DAX allows) of all of
/// the DAX mapping `map`.
fn reg_shortterm(dev: &Dev, map: &Mapping) -> SysResult<PinleaseRegMr> {
    dev.reg_mr(
        map.addr(),
        LEASE_LEN as u64,
        PL_ACCESS_ALL,
        PINLEASE_PIN_SHORTTERM,
    )
}
