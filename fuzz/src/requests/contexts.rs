//! The context and child steps: CREATE_CONTEXT, CLOSE_CONTEXT (with the
//! model's half of the close: MRs destroyed, leases released, pages
//! unpinned), RELEASE_CONTEXT, CREATE_CHILD and DESTROY_CHILD.

use pinlease_abi::*;

use super::model::{Child, Ctx, CtxState};
use super::{Harness, LIMITS};
use crate::input::Input;

impl Harness {
    pub(super) fn create_context(&mut self, input: &mut Input) {
        let mut errs = Vec::new();
        let live = self
            .ctxs
            .iter()
            .filter(|c| c.state != CtxState::Gone)
            .count();
        if live >= LIMITS.max_contexts as usize {
            errs.push(Status::NoMem);
        }
        let mut comm = [0u8; 16];
        let name = input.bytes(4);
        comm[..name.len()].copy_from_slice(name);
        let req = PlCreateContextReq {
            pid: input.u32(),
            reserved: 0,
            comm,
        };
        if let Some(resp) = self.expect(Opcode::CreateContext, 0, req.as_bytes(), &errs) {
            let handle = PlHandleResp::read_from(&resp).unwrap().handle;
            assert!(handle != 0, "context handle 0");
            assert!(self.ctx_index(handle).is_none(), "context handle reused");
            self.ctxs.push(Ctx {
                handle,
                state: CtxState::Open,
            });
        }
    }

    /// The model's half of CLOSE_CONTEXT: (MRs destroyed, leases released,
    /// pages unpinned).
    fn close_model(&mut self, ci: usize) -> PlCloseContextResp {
        let h = self.ctxs[ci].handle;
        let mut resp = PlCloseContextResp::default();
        for i in 0..self.mrs.len() {
            if self.mrs[i].ctx == h && !self.mrs[i].gone {
                resp.mrs_destroyed += 1;
                resp.pages_unpinned += self.destroy(i);
            }
        }
        for l in self.leases.iter_mut() {
            if l.holder == h && !l.gone {
                l.gone = true;
                resp.leases_released += 1;
            }
        }
        self.ctxs[ci].state = CtxState::Closed;
        resp
    }

    pub(super) fn close_context(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let mut errs = Vec::new();
        let ci = self.open_ctx(c, &mut errs);
        if let Some(resp) = self.expect(Opcode::CloseContext, c, &[], &errs) {
            let got = PlCloseContextResp::read_from(&resp).unwrap();
            let want = self.close_model(ci.expect("OK only for an open context"));
            assert_eq!(got, want, "{}: CLOSE_CONTEXT totals", self.step);
        }
    }

    pub(super) fn release_context(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let mut errs = Vec::new();
        let Some(ci) = self.any_ctx(c, &mut errs) else {
            self.expect(Opcode::ReleaseContext, c, &[], &errs);
            return;
        };
        // The close happens whether or not children keep the object.
        if self.ctxs[ci].state == CtxState::Open {
            self.close_model(ci);
        }
        if self.live_children(c) > 0 {
            errs.push(Status::Busy);
        }
        if self.expect(Opcode::ReleaseContext, c, &[], &errs).is_some() {
            self.ctxs[ci].state = CtxState::Gone;
        }
    }

    pub(super) fn create_child(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let kind = if input.u8() < 0xf0 {
            PL_CHILD_EVENT_CHANNEL
        } else {
            input.u32()
        };
        let mut errs = Vec::new();
        if kind != PL_CHILD_EVENT_CHANNEL {
            errs.push(Status::Inval);
        }
        if self.open_ctx(c, &mut errs).is_some()
            && self.live_children(c) >= LIMITS.max_children_per_context as usize
        {
            errs.push(Status::NoMem);
        }
        let req = PlCreateChildReq { kind, reserved: 0 };
        if let Some(resp) = self.expect(Opcode::CreateChild, c, req.as_bytes(), &errs) {
            let handle = PlHandleResp::read_from(&resp).unwrap().handle;
            assert!(!self.children.iter().any(|ch| ch.handle == handle));
            self.children.push(Child {
                handle,
                ctx: c,
                export_of: None,
                refs: 1,
                gone: false,
            });
        }
    }

    pub(super) fn destroy_child(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let h = self.pick_child(input);
        let mut errs = Vec::new();
        self.any_ctx(c, &mut errs);
        let chi = self.child(h, &mut errs);
        if let Some(i) = chi {
            if self.children[i].ctx != c {
                errs.push(Status::Perm);
            }
        }
        let req = PlHandleReq { handle: h };
        if self
            .expect(Opcode::DestroyChild, c, req.as_bytes(), &errs)
            .is_some()
        {
            let ch = &mut self.children[chi.expect("OK only for a live child")];
            ch.refs -= 1;
            if ch.refs == 0 {
                ch.gone = true;
            }
        }
    }
}
