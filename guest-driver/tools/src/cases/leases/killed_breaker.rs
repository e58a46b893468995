//! A breaker that holds the lease's own device fd (a child or thread of
//! the holder) SIGKILLed while it waits: the fuzzer's finding
//! (docs/guest-fuzz.md, "Findings").

use crate::cases::helpers::{
    lease_whole_file, open_needing, reap_breaker, spawn_breaker, Breaker, TestFile, LEASE_LEN,
};
use crate::ensure;
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, Exit, Mapping};
use pinlease_abi as abi;
use std::time::Duration;

/// A truncate child that inherited the device fd holding a WAIT lease on
/// the file is SIGKILLed while it waits. On 6.1, 6.12 and 7.3 it does not
/// die: xfs_break_leased_layouts() ignores its waiting break_layout()'s
/// error, and with SIGKILL pending every wait returns at once, so it spins
/// (state R) while the lease lives; and the lease lives as long as the
/// device fd, which the dying child itself holds. Here the parent holds the
/// fd too and releases the lease: the child must then be gone within 10 s.
/// Had the child held the only fd, nothing could release it: an unkillable
/// task (what `pinlease-guest fuzz` found when a worker thread truncated
/// its own leased file and the worker was SIGKILLed).
pub(in crate::cases) fn killed_breaker_holding_the_lease_fd(t: &mut CaseCtx) -> CaseResult {
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    let file = TestFile::on("/mnt/xfs", "xfs", "killed-breaker")?;
    drop(Mapping::new(&file.backing(true), LEASE_LEN, false)?);
    let lease = lease_whole_file(&dev, &file.path, abi::PL_POLICY_WAIT)?;
    // fork: the breaker inherits the device fd, so it holds the lease it breaks.
    let pid = spawn_breaker(Breaker::Truncate, &file.path)?;
    std::thread::sleep(Duration::from_millis(500));
    let waited = sys::wait_timeout(pid, Duration::ZERO)?;
    sys::kill(pid, libc::SIGKILL);
    let after_kill = sys::wait_timeout(pid, Duration::from_secs(2))?;
    t.diag(match after_kill {
        Some(e) => format!("breaker gone within 2 s of SIGKILL: {e}"),
        None => format!(
            "breaker still there 2 s after SIGKILL (XFS loops while the lease lives): {}",
            sys::proc_stack(pid)
        ),
    });
    let released = dev.lease_release(lease);
    let exit = match after_kill {
        Some(e) => e,
        None => reap_breaker(
            pid,
            Duration::from_secs(10),
            "SIGKILLed truncate after LEASE_RELEASE",
        )?,
    };
    ensure!(
        waited.is_none(),
        "truncate did not wait for the WAIT lease: {waited:?}"
    );
    released?;
    ensure!(
        exit == Exit::Signal(libc::SIGKILL),
        "the SIGKILLed breaker ended with {exit}"
    );
    Ok(())
}
