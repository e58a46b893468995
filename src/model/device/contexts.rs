//! Contexts and their children: CREATE/CLOSE/RELEASE_CONTEXT and
//! CREATE/DESTROY_CHILD (the two lifetimes of docs/design.md §6, seed 000).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use crate::abi::*;
use crate::model::child::{Child, ChildKind};
use crate::model::context::Context;
use crate::model::mr::RevokeReason;
use crate::model::table::Handle;

use super::{Device, Reject, Result, Writer};

impl Device {
    pub fn create_context(&self, pid: u32, comm: &str) -> Result<Handle> {
        let mut w = self.writer();
        let h = w.contexts.alloc().ok_or_else(|| {
            Reject::new(
                Status::NoMem,
                format!("context table full ({} contexts)", self.limits.max_contexts),
            )
        })?;
        self.contexts
            .insert(h, Arc::new(Context::new(h, pid, comm.to_string())));
        self.live_contexts.fetch_add(1, Ordering::Relaxed);
        Ok(h)
    }

    /// Ends the context's hardware lifetime: destroys its MRs (pins gone),
    /// releases its leases, and answers ESHUTDOWN to anything later.
    pub fn close_context(&self, h: Handle) -> Result<PlCloseContextResp> {
        let ctx = self.open_context(h)?;
        let mut w = self.writer();
        self.close_locked(&mut w, &ctx)
    }

    pub(super) fn close_locked(
        &self,
        w: &mut Writer,
        ctx: &Arc<Context>,
    ) -> Result<PlCloseContextResp> {
        let (mrs, leases) = {
            let mut hw = Self::open_hw(ctx)?;
            hw.closed = true;
            (std::mem::take(&mut hw.mrs), std::mem::take(&mut hw.leases))
        };
        let mut resp = PlCloseContextResp::default();
        for key in mrs {
            if let Some(mr) = self.mrs.get(key) {
                resp.pages_unpinned += self.destroy_mr_locked(w, &mr, RevokeReason::ContextClose);
                resp.mrs_destroyed += 1;
            }
        }
        for lh in leases {
            if self.leases.remove(lh).is_some() {
                w.leases.free(lh);
                resp.leases_released += 1;
            }
        }
        self.publish_pins(w);
        self.events.push(
            PL_EVENT_CONTEXT_TORN_DOWN,
            ctx.handle,
            [
                resp.mrs_destroyed.into(),
                resp.leases_released.into(),
                resp.pages_unpinned,
                0,
            ],
        );
        Ok(resp)
    }

    /// Ends the context's object lifetime. Closes it first if the driver did
    /// not; refused with EBUSY while a child (event channel, export) lives.
    pub fn release_context(&self, h: Handle) -> Result<()> {
        let ctx = self.context(h)?;
        let mut w = self.writer();
        if !ctx.is_closed() {
            self.close_locked(&mut w, &ctx)?;
        }
        let children = ctx.hw().children.len();
        if children > 0 {
            return Err(Reject::new(
                Status::Busy,
                format!("context {h:#x} still has {children} child handle(s)"),
            ));
        }
        if self.contexts.remove(h).is_some() {
            w.contexts.free(h);
            self.live_contexts.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    // ---- children --------------------------------------------------------------

    pub(super) fn alloc_child(
        &self,
        w: &mut Writer,
        ctx: &Arc<Context>,
        hw_children: usize,
    ) -> Result<Handle> {
        if hw_children >= self.limits.max_children_per_context as usize {
            return Err(Reject::new(
                Status::NoMem,
                format!(
                    "context {:#x} has {hw_children} children, the limit",
                    ctx.handle
                ),
            ));
        }
        w.children
            .alloc()
            .ok_or_else(|| Reject::new(Status::NoMem, "child table full"))
    }

    pub fn create_child(&self, ctx_h: Handle, kind: u32) -> Result<Handle> {
        if kind != PL_CHILD_EVENT_CHANNEL {
            return Err(Reject::new(
                Status::Inval,
                format!(
                    "child kind {kind} cannot be created by CREATE_CHILD (event channel is {PL_CHILD_EVENT_CHANNEL}; exports come from EXPORT_MR)"
                ),
            ));
        }
        let ctx = self.open_context(ctx_h)?;
        let mut w = self.writer();
        let mut hw = Self::open_hw(&ctx)?;
        let h = self.alloc_child(&mut w, &ctx, hw.children.len())?;
        self.children.insert(
            h,
            Arc::new(Child {
                handle: h,
                context: ctx.clone(),
                kind: ChildKind::EventChannel,
                created: SystemTime::now(),
            }),
        );
        hw.children.insert(h);
        Ok(h)
    }

    /// Drops a child handle: an event channel goes at once; an export drops
    /// one reference and goes with its last.
    pub fn destroy_child(&self, ctx_h: Handle, h: Handle) -> Result<()> {
        let ctx = self.context(ctx_h)?;
        let child = self
            .children
            .get(h)
            .ok_or_else(|| self.dead("child", h, |w| &w.children, Status::NoEnt))?;
        if child.context.handle != ctx_h {
            return Err(Reject::new(
                Status::Perm,
                format!(
                    "child {h:#x} belongs to context {:#x}, not {ctx_h:#x}",
                    child.context.handle
                ),
            ));
        }
        let mut w = self.writer();
        // Re-check under the lock: a racing DESTROY_CHILD may have removed
        // it (and an export's refs must never drop below zero).
        if !self
            .children
            .get(h)
            .is_some_and(|c| Arc::ptr_eq(&c, &child))
        {
            return Err(Reject::new(Status::Stale, format!("child {h:#x} is gone")));
        }
        let mut hw = ctx.hw();
        if let ChildKind::Export(export) = &child.kind {
            let _export_lock = export.mr.export.lock().unwrap_or_else(|e| e.into_inner());
            if export.refs.fetch_sub(1, Ordering::AcqRel) > 1 {
                return Ok(());
            }
        }
        if self.children.remove(h).is_some() {
            w.children.free(h);
            hw.children.remove(&h);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::abi::*;
    use crate::model::AtomicOp;

    use crate::model::test_support::*;

    // ---- contexts ----------------------------------------------------------------------

    #[test]
    fn context_create_close_release_and_handle_states() {
        let dev = device(1);
        let c = ctx(&dev);
        assert_ne!(c, 0);
        assert_eq!(dev.live_contexts(), 1);
        let resp = dev.close_context(c).unwrap();
        assert_eq!(resp, PlCloseContextResp::default());
        assert_eq!(st(dev.close_context(c)), Status::Shutdown, "second close");
        assert_eq!(
            event_summary(&dev),
            vec![(PL_EVENT_CONTEXT_TORN_DOWN, c, [0, 0, 0, 0])]
        );
        let s = dev.status();
        assert_eq!(s.contexts.len(), 1);
        assert_eq!(s.contexts[0].state, "closed");
        dev.release_context(c).unwrap();
        assert!(
            dev.events.pop().is_none(),
            "release of a closed context sends nothing"
        );
        assert_eq!(dev.live_contexts(), 0);
        assert!(dev.status().contexts.is_empty());

        // Stale handle: every request naming it answers ESTALE.
        assert_eq!(st(dev.release_context(c)), Status::Stale);
        assert_eq!(st(dev.close_context(c)), Status::Stale);
        assert_eq!(st(dev.context(c)), Status::Stale);
        assert_eq!(
            st(dev.reg_mr(c, Layout::pages(run(0, 1)).req(PL_ACCESS_ALL))),
            Status::Stale
        );
        assert_eq!(
            st(dev.create_child(c, PL_CHILD_EVENT_CHANNEL)),
            Status::Stale
        );
        assert_eq!(
            st(dev.lease_take(c, &take_req(file(1), 0, 0, PL_POLICY_WAIT))),
            Status::Stale
        );

        // Never issued: 0, an index never used, a generation never given out.
        for h in [0, c + 1, c + (2 << 32), 1 << 32 | 500] {
            assert_eq!(st(dev.context(h)), Status::BadF, "handle {h:#x}");
            assert_eq!(st(dev.close_context(h)), Status::BadF, "handle {h:#x}");
            assert_eq!(st(dev.release_context(h)), Status::BadF, "handle {h:#x}");
            assert_eq!(
                st(dev.create_child(h, PL_CHILD_EVENT_CHANNEL)),
                Status::BadF
            );
        }
    }

    #[test]
    fn every_op_on_a_closed_context_is_eshutdown_except_destroy_child_and_release() {
        let dev = device(1);
        let other = ctx(&dev);
        let other_mr = reg(&dev, other, &Layout::pages(run(0x10000, 1)), PL_ACCESS_ALL);
        let other_export = dev.export_mr(other, other_mr).unwrap().export;

        let c = ctx(&dev);
        let l = Layout::pages(run(0, 2));
        let k = reg(&dev, c, &l, PL_ACCESS_ALL);
        let export = dev.export_mr(c, k).unwrap().export;
        let chan = dev.create_child(c, PL_CHILD_EVENT_CHANNEL).unwrap();
        let lease = take(&dev, c, file(1), 0, 0, PL_POLICY_WAIT);
        dev.close_context(c).unwrap();

        let sd = Status::Shutdown;
        assert_eq!(st(dev.close_context(c)), sd);
        assert_eq!(st(dev.reg_mr(c, l.req(PL_ACCESS_ALL))), sd);
        assert_eq!(st(dev.dereg_mr(c, k)), sd);
        assert_eq!(st(write(&dev, c, k, 0, other_mr, 0, 8)), sd);
        assert_eq!(st(read(&dev, c, k, 0, other_mr, 0, 8)), sd);
        assert_eq!(
            st(dev.atomic(c, AtomicOp::FetchAdd, &atomic(other_mr, 0, 1, 0))),
            sd
        );
        assert_eq!(
            st(dev.fill(c, &pattern(other_mr, 0, 8, 1, PL_PATTERN_CONST))),
            sd
        );
        assert_eq!(
            st(dev.verify(c, &pattern(other_mr, 0, 8, 1, PL_PATTERN_CONST))),
            sd
        );
        assert_eq!(
            st(dev.lease_take(c, &take_req(file(2), 0, 0, PL_POLICY_WAIT))),
            sd
        );
        assert_eq!(
            st(dev.lease_release(c, &release_req(lease, PL_RELEASE_HOLDER))),
            sd
        );
        assert_eq!(st(dev.create_child(c, PL_CHILD_EVENT_CHANNEL)), sd);
        assert_eq!(st(dev.export_mr(c, k)), sd);
        assert_eq!(
            st(dev.import_mr(c, &import_req(other_export, PL_ACCESS_READ))),
            sd
        );

        // The ones allowed on a closed context.
        assert_eq!(st(dev.release_context(c)), Status::Busy);
        dev.destroy_child(c, export).unwrap();
        dev.destroy_child(c, chan).unwrap();
        dev.release_context(c).unwrap();
        assert_eq!(st(dev.context(c)), Status::Stale);
    }

    #[test]
    fn close_reports_totals_in_response_and_torn_down_event() {
        let dev = device(1);
        let c = ctx(&dev);
        reg(&dev, c, &Layout::pages(run(0, 3)), PL_ACCESS_ALL);
        reg(
            &dev,
            c,
            &Layout::new(vec![0x8000, 0x3000], 10, 5000),
            PL_ACCESS_READ,
        );
        take(&dev, c, file(1), 0, 0, PL_POLICY_REVOKE);
        take(&dev, c, file(2), 4096, 4096, PL_POLICY_WAIT);
        assert_eq!(dev.pin_totals(), (5, 5));
        let resp = dev.close_context(c).unwrap();
        assert_eq!(
            resp,
            PlCloseContextResp {
                mrs_destroyed: 2,
                leases_released: 2,
                pages_unpinned: 5
            }
        );
        assert_eq!(dev.pin_totals(), (0, 0));
        assert_eq!(
            event_summary(&dev),
            vec![(PL_EVENT_CONTEXT_TORN_DOWN, c, [2, 2, 5, 0])],
            "no per-MR event to the closing context"
        );
    }

    #[test]
    fn release_of_an_open_context_closes_it_first() {
        let dev = device(1);
        let c = ctx(&dev);
        let k = reg(&dev, c, &Layout::pages(run(0x4000, 4)), PL_ACCESS_ALL);
        take(&dev, c, file(1), 0, 0, PL_POLICY_REVOKE);
        assert_eq!(dev.pin_totals(), (4, 4));
        dev.release_context(c).unwrap();
        assert_eq!(dev.pin_totals(), (0, 0));
        assert!(dev.leases.is_empty());
        assert_eq!(st(dev.mr(k)), Status::Stale);
        assert_eq!(st(dev.context(c)), Status::Stale);
        assert_eq!(
            event_summary(&dev),
            vec![(PL_EVENT_CONTEXT_TORN_DOWN, c, [1, 1, 4, 0])]
        );
        let s = dev.status();
        assert!(s.contexts.is_empty() && s.mrs.is_empty() && s.leases.is_empty());
    }

    #[test]
    fn context_table_full_is_enomem_until_a_release() {
        let dev = device_limited(|l| l.max_contexts = 2);
        let a = ctx(&dev);
        let b = ctx(&dev);
        assert_eq!(st(dev.create_context(1, "x")), Status::NoMem);
        dev.close_context(a).unwrap();
        assert_eq!(
            st(dev.create_context(1, "x")),
            Status::NoMem,
            "a closed but unreleased context still counts"
        );
        dev.release_context(a).unwrap();
        let c = ctx(&dev);
        assert_ne!(c, a, "the freed slot gets a new generation");
        assert_eq!(c as u32, a as u32, "the slot is reused");
        assert_eq!(st(dev.close_context(a)), Status::Stale);
        assert_eq!(st(dev.create_context(1, "x")), Status::NoMem);
        // The new occupant of the slot is usable and distinct from the old.
        reg(&dev, c, &Layout::pages(run(0, 1)), PL_ACCESS_ALL);
        assert_eq!(dev.status().contexts.len(), 2);
        assert!(dev.context(b).is_ok());
    }
}
