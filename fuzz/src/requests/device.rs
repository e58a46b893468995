//! The whole-device steps: NOP or QUERY_DEVICE, a device reset (every
//! handle gone) and a memory-map change (region B taken away or given
//! back: new, zeroed memory; the MRs pinning pages no longer mapped are
//! revoked).

use pinlease_abi::*;

use super::model::CtxState;
use super::{new_ram, Harness, PAGE};
use crate::input::Input;

impl Harness {
    pub(super) fn nop_or_query(&mut self, input: &mut Input) {
        if input.bool() {
            let c = self.pick_ctx(input);
            self.expect(Opcode::Nop, c, &[], &[]);
        } else if let Some(resp) = self.expect(Opcode::QueryDevice, 0, &[], &[]) {
            let q = PlQueryDeviceResp::read_from(&resp).unwrap();
            assert_eq!(q, self.dev.query(), "{}: QUERY_DEVICE", self.step);
            assert_eq!(u64::from(q.page_size), PAGE);
        }
    }

    pub(super) fn reset(&mut self) {
        self.dev.reset();
        self.changed = true;
        for c in self.ctxs.iter_mut() {
            c.state = CtxState::Gone;
        }
        for m in self.mrs.iter_mut() {
            m.live = false;
            m.gone = true;
        }
        for ch in self.children.iter_mut() {
            ch.gone = true;
        }
        for l in self.leases.iter_mut() {
            l.gone = true;
        }
        assert!(self.dev.events.is_empty(), "events survive a reset");
    }

    pub(super) fn memory_map(&mut self, input: &mut Input) {
        let region_b = input.bool();
        let revoked = self.dev.set_memory(Box::new(new_ram(region_b)));
        self.ram = self.dev.memory().expect("memory map just set");
        self.region_b = region_b;
        self.changed = true;
        // A new map is new (zeroed) memory.
        self.shadow.iter_mut().for_each(|b| *b = 0);
        let mut want = 0;
        for i in 0..self.mrs.len() {
            let m = &self.mrs[i];
            if m.pins() && m.pages.iter().any(|&g| !self.mapped(g)) {
                self.revoke(i);
                want += 1;
            }
        }
        assert_eq!(revoked, want, "MRs revoked by the memory-map change");
    }
}
