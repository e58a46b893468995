//! `campaign_process_death`: a child with a context and MRs killed; the
//! module lets go of its context within the bound.

use super::helpers::{module_bound, wait_contexts_gone, Child, XfsFile};
use super::outcomes::{FaultWatch, Outcomes};
use crate::cases::helpers::KIB;
use crate::dev::Dev;
use crate::fail;
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, Mapping};
use crate::uapi::*;
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A child opens the device, registers MRs (one a scrub MR), takes a lease
/// on an XFS file when there is one, reports its context and goes on
/// churning MRs; it is SIGKILLed mid-way. Its context must leave debugfs
/// `contexts` within the module's bound.
pub(super) fn campaign_process_death(t: &mut CaseCtx) -> CaseResult {
    let mut w = FaultWatch::start();
    let mut o = Outcomes::default();
    let file = XfsFile::new("campaign-death").ok();
    let path = file.as_ref().map(|f| f.0.clone());
    let (rd, wr) = sys::pipe()?;
    let (rd_raw, wr_raw) = (rd.as_raw_fd(), wr.as_raw_fd());
    let pid = sys::fork_child(move || {
        // SAFETY: the child's copy of the pipe's read end, unused here.
        unsafe { libc::close(rd_raw) };
        let Ok(dev) = Dev::open_default() else {
            return 1;
        };
        let ctx = dev.query().map(|q| q.ctx).unwrap_or(0);
        let _ = sys::write_all(wr_raw, &ctx.to_le_bytes());
        let m = Mapping::anon(256 * KIB).ok();
        if let Some(m) = &m {
            m.touch();
            let _ = dev.reg_mr(
                m.addr(),
                128 * KIB as u64,
                PL_ACCESS_ALL,
                PINLEASE_REG_SCRUB,
            );
        }
        if let Some(p) = &path {
            if let Ok(f) = std::fs::File::open(p) {
                let _ = dev.lease_take(f.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0);
            }
        }
        loop {
            if let Some(m) = &m {
                if let Ok(r) = dev.reg_mr(
                    m.addr() + 128 * KIB as u64,
                    64 * KIB as u64,
                    PL_ACCESS_ALL,
                    0,
                ) {
                    let _ = dev.fill(r.key, 0, 64 * KIB as u64, 0x42, abi::PL_PATTERN_CONST);
                    let _ = dev.dereg_mr(r.key);
                }
            }
        }
    })?;
    let mut child = Child(pid);
    drop(wr);
    // EOF (EPIPE) here: the child could not open the device.
    let ctx = o
        .rec(
            "CHILD_OPEN",
            sys::read_exact_timeout(rd.as_raw_fd(), 8, module_bound()),
        )
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    // Let it get going, then kill it mid-way.
    std::thread::sleep(Duration::from_millis(300));
    sys::kill(pid, libc::SIGKILL);
    let exit = child.wait(Duration::from_secs(10))?;
    let Some(exit) = exit else {
        fail!(
            "the SIGKILLed child is still there after 10 s: {}",
            sys::proc_stack(pid)
        );
    };
    t.diag(format!("child {pid} (ctx {ctx:#x}): {exit}"));
    let handles: Vec<u64> = [ctx].into_iter().filter(|h| *h != 0).collect();
    wait_contexts_gone(&handles, Some(pid), module_bound())?;
    drop(file);
    w.finish(t, &o)
}
