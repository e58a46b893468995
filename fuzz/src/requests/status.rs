//! The status comparison: the device's `status()` against the model
//! (contexts and their children, MRs, leases with their states, pins and
//! pinned pages, per-opcode per-status request counters).

use std::collections::BTreeSet;

use pinlease::model::status::hex;

use super::model::CtxState;
use super::Harness;

impl Harness {
    /// `status()` agrees with the model.
    pub(super) fn check_status(&self) {
        let s = self.dev.status();
        let ctxs: BTreeSet<(String, String)> = s
            .contexts
            .iter()
            .map(|c| (c.handle.clone(), c.state.to_string()))
            .collect();
        let want: BTreeSet<(String, String)> = self
            .ctxs
            .iter()
            .filter(|c| c.state != CtxState::Gone)
            .map(|c| {
                let state = if c.state == CtxState::Open {
                    "open"
                } else {
                    "closed"
                };
                (hex(c.handle), state.to_string())
            })
            .collect();
        assert_eq!(ctxs, want, "{}: contexts in status", self.step);
        for c in &s.contexts {
            let h = self
                .ctxs
                .iter()
                .find(|m| hex(m.handle) == c.handle)
                .unwrap();
            assert_eq!(
                c.children.len(),
                self.live_children(h.handle),
                "{}: children of {}",
                self.step,
                c.handle
            );
        }
        let mrs: BTreeSet<(String, String)> = s
            .mrs
            .iter()
            .map(|m| (m.key.clone(), m.state.to_string()))
            .collect();
        let want: BTreeSet<(String, String)> = self
            .mrs
            .iter()
            .filter(|m| !m.gone)
            .map(|m| {
                let state = if m.live { "live" } else { "revoked" };
                (hex(m.key), state.to_string())
            })
            .collect();
        assert_eq!(mrs, want, "{}: MRs in status", self.step);
        let leases: BTreeSet<(String, String)> = s
            .leases
            .iter()
            .map(|l| (l.handle.clone(), l.state.to_string()))
            .collect();
        let want: BTreeSet<(String, String)> = self
            .leases
            .iter()
            .filter(|l| !l.gone)
            .map(|l| (hex(l.handle), l.state.name().to_string()))
            .collect();
        assert_eq!(leases, want, "{}: leases in status", self.step);
        let pinned: Vec<u64> = self
            .mrs
            .iter()
            .filter(|m| m.pins())
            .flat_map(|m| m.pages.iter().copied())
            .collect();
        let distinct: BTreeSet<u64> = pinned.iter().copied().collect();
        assert_eq!(
            (s.pins, s.pinned_pages),
            (pinned.len() as u64, distinct.len() as u64),
            "{}: pins, pinned pages",
            self.step
        );
        assert_eq!(
            s.counters.requests, self.requests,
            "{}: request counters",
            self.step
        );
    }
}
