//! Layout leases: LEASE_TAKE, LEASE_RELEASE and LEASE_BREAK with its
//! per-lease policies (seed 001).

use std::sync::Arc;

use crate::abi::*;
use crate::model::lease::{Lease, LeaseState, Policy};
use crate::model::mr::{Mr, RevokeReason};
use crate::model::table::Handle;

use super::{Device, Reject, Result, Writer};

impl Device {
    pub(super) fn lease_end(start: u64, length: u64) -> Result<u64> {
        if length == 0 {
            return Ok(u64::MAX);
        }
        start.checked_add(length).ok_or_else(|| {
            Reject::new(
                Status::Range,
                format!("range start {start:#x} + length {length:#x} overflows"),
            )
        })
    }

    pub fn lease_take(&self, ctx_h: Handle, req: &PlLeaseTakeReq) -> Result<Handle> {
        let ctx = self.open_context(ctx_h)?;
        let policy = Policy::from_wire(req.policy).ok_or_else(|| {
            Reject::new(
                Status::Inval,
                format!(
                    "lease policy {} (valid: 1 revoke, 2 wait, 3 timeout)",
                    req.policy
                ),
            )
        })?;
        if req.file.reserved != 0 {
            return Err(Reject::new(
                Status::Inval,
                "file identity reserved field is not 0",
            ));
        }
        let end = Self::lease_end(req.start, req.length)?;
        let mut w = self.writer();
        let breaking = self
            .leases
            .overlapping(&req.file, req.start, end)
            .into_iter()
            .find(|l| l.state() == LeaseState::Breaking);
        if let Some(l) = breaking {
            return Err(Reject::new(
                Status::Busy,
                format!("lease {:#x} on the range is being broken", l.handle),
            ));
        }
        let mut hw = Self::open_hw(&ctx)?;
        let h = w.leases.alloc().ok_or_else(|| {
            Reject::new(
                Status::NoMem,
                format!("lease table full ({} leases)", self.limits.max_leases),
            )
        })?;
        let lease = Arc::new(Lease::new(
            h,
            req.file,
            req.start,
            end,
            &ctx,
            req.owner_pid,
            policy,
        ));
        // MRs of this holder registered before the lease come under it.
        for key in hw.mrs.iter() {
            if let Some(mr) = self.mrs.get(*key) {
                if let Some(f) = mr.file.as_ref().filter(|_| mr.is_live()) {
                    if lease.covers(&f.file, f.offset, mr.length) {
                        let mut l = mr.lease.lock().unwrap_or_else(|e| e.into_inner());
                        if l.is_none() {
                            *l = Some(lease.clone());
                        }
                    }
                }
            }
        }
        self.leases.insert(lease);
        hw.leases.insert(h);
        Ok(h)
    }

    pub fn lease_release(&self, ctx_h: Handle, req: &PlLeaseReleaseReq) -> Result<()> {
        let ctx = self.open_context(ctx_h)?;
        if req.reason != PL_RELEASE_HOLDER && req.reason != PL_RELEASE_LOST {
            return Err(Reject::new(
                Status::Inval,
                format!("release reason {} (valid: 0 holder, 1 lost)", req.reason),
            ));
        }
        if req.reserved != 0 {
            return Err(Reject::new(Status::Inval, "reserved field is not 0"));
        }
        let lease = self.lease(req.lease)?;
        if lease.holder != ctx_h {
            return Err(Reject::new(
                Status::Perm,
                format!(
                    "lease {:#x} is held by context {:#x}, not {ctx_h:#x}",
                    lease.handle, lease.holder
                ),
            ));
        }
        let mut w = self.writer();
        let mut hw = ctx.hw();
        let under: Vec<Arc<Mr>> = hw
            .mrs
            .iter()
            .filter_map(|k| self.mrs.get(*k))
            .filter(|mr| {
                mr.lease
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .is_some_and(|l| Arc::ptr_eq(l, &lease))
            })
            .collect();
        if req.reason == PL_RELEASE_LOST && lease.state() == LeaseState::Revoked {
            return Err(Reject::new(
                Status::Inval,
                format!(
                    "lease {:#x} was revoked (its MRs are gone); release it with reason holder",
                    lease.handle
                ),
            ));
        }
        if req.reason == PL_RELEASE_LOST {
            // The kernel dropped the lease while pins remain: keep it in the
            // table, marked, so every later access under it is counted.
            lease.set_state(LeaseState::Lost);
            let live: Vec<&Arc<Mr>> = under.iter().filter(|m| m.is_live()).collect();
            let pages: u64 = live.iter().map(|m| m.npages() as u64).sum();
            self.events.push(
                PL_EVENT_LEASE_LOST,
                ctx_h,
                [lease.handle, live.len() as u64, pages, 0],
            );
            return Ok(());
        }
        for mr in &under {
            *mr.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        if self.leases.remove(lease.handle).is_some() {
            w.leases.free(lease.handle);
            hw.leases.remove(&lease.handle);
        }
        Ok(())
    }

    /// The guest kernel is breaking layout leases on a file range (truncate,
    /// hole punch, reflink, ...). Applies each overlapping lease's policy.
    pub fn lease_break(&self, req: &PlLeaseBreakReq) -> Result<PlLeaseBreakResp> {
        if !(PL_BREAK_TRUNCATE..=PL_BREAK_OTHER).contains(&req.reason) {
            return Err(Reject::new(
                Status::Inval,
                format!("break reason {} (valid: 1..={PL_BREAK_OTHER})", req.reason),
            ));
        }
        if req.reserved != 0 || req.file.reserved != 0 {
            return Err(Reject::new(Status::Inval, "reserved field is not 0"));
        }
        let end = Self::lease_end(req.start, req.length)?;
        let mut w = self.writer();
        let mut resp = PlLeaseBreakResp::default();
        for lease in self.leases.overlapping(&req.file, req.start, end) {
            resp.leases += 1;
            match lease.state() {
                LeaseState::Breaking => {
                    resp.leases_held += 1;
                    continue;
                }
                LeaseState::Revoked | LeaseState::Lost => continue,
                LeaseState::Active => {}
            }
            let (held, mrs_revoked, pages) = self.break_locked(&mut w, &lease, req.reason);
            resp.leases_held += held;
            resp.mrs_revoked += mrs_revoked;
            resp.pages_unpinned += pages;
        }
        self.publish_pins(&w);
        Ok(resp)
    }

    /// Breaks one ACTIVE lease with `reason`, applying its policy: returns
    /// (leases held, MRs revoked, pages unpinned).
    pub(super) fn break_locked(
        &self,
        w: &mut Writer,
        lease: &Arc<Lease>,
        reason: u32,
    ) -> (u32, u32, u64) {
        let (mut held, mut mrs_revoked, mut pages) = (0, 0, 0);
        let holder = lease.holder_context.upgrade();
        let in_range: Vec<Arc<Mr>> = holder
            .as_ref()
            .map(|c| {
                c.hw()
                    .mrs
                    .iter()
                    .filter_map(|k| self.mrs.get(*k))
                    .filter(|mr| {
                        mr.file.as_ref().is_some_and(|f| {
                            f.file == lease.file
                                && lease.overlaps(f.offset, f.offset.saturating_add(mr.length))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let live_in_range = in_range.iter().filter(|m| m.is_live()).count() as u64;
        match lease.policy {
            Policy::Revoke => {
                for mr in &in_range {
                    if mr.is_live() {
                        pages += self.revoke_locked(w, mr, RevokeReason::LeaseBreak, true);
                        mrs_revoked += 1;
                    }
                }
                lease.set_state(LeaseState::Revoked);
            }
            Policy::Wait | Policy::Timeout => {
                lease.set_state(LeaseState::Breaking);
                held += 1;
            }
        }
        self.events.push(
            PL_EVENT_LEASE_BROKEN,
            lease.holder,
            [
                lease.handle,
                reason.into(),
                lease.policy.wire().into(),
                live_in_range,
            ],
        );
        (held, mrs_revoked, pages)
    }
}

#[cfg(test)]
mod tests;
