//! What the daemon's fault plan acts through (docs/faults.md 1.3):
//! candidates for an injected revoke or break, injecting them, and the
//! NEEDS_RESET state.

use std::sync::atomic::Ordering;

use crate::abi::*;
use crate::model::lease::LeaseState;
use crate::model::mr::RevokeReason;
use crate::model::table::Handle;

use super::Device;

impl Device {
    /// Live MR keys, ascending: the candidates of an injected revoke.
    pub fn live_mr_keys(&self) -> Vec<Handle> {
        let mut keys: Vec<Handle> = self
            .mrs
            .snapshot()
            .iter()
            .filter(|(_, mr)| mr.is_live())
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// ACTIVE leases as (handle, holder context), ascending by handle: the
    /// candidates of an injected spurious break.
    pub fn active_leases(&self) -> Vec<(Handle, Handle)> {
        let mut v: Vec<(Handle, Handle)> = self
            .leases
            .all()
            .iter()
            .filter(|l| l.state() == LeaseState::Active)
            .map(|l| (l.handle, l.holder))
            .collect();
        v.sort_unstable();
        v
    }

    /// Does LEASE_BREAK `req` hit an ACTIVE lease (the lease-break point)?
    pub fn break_hits_active(&self, req: &PlLeaseBreakReq) -> bool {
        let Ok(end) = Self::lease_end(req.start, req.length) else {
            return false;
        };
        self.leases
            .overlapping(&req.file, req.start, end)
            .iter()
            .any(|l| l.state() == LeaseState::Active)
    }

    /// Revokes MR `key` with PL_REVOKE_INJECTED (MR_REVOKED to its owner).
    /// Returns false when it is not live (anymore).
    pub fn revoke_injected(&self, key: Handle) -> bool {
        let Some(mr) = self.mrs.get(key) else {
            return false;
        };
        let mut w = self.writer();
        if !mr.is_live() {
            return false;
        }
        self.revoke_locked(&mut w, &mr, RevokeReason::Injected, true);
        self.publish_pins(&w);
        true
    }

    /// Breaks lease `h` as LEASE_BREAK would, with PL_BREAK_INJECTED: its
    /// policy applies. Returns false when it is not ACTIVE (anymore).
    pub fn break_lease_injected(&self, h: Handle) -> bool {
        let Some(lease) = self.leases.get(h) else {
            return false;
        };
        let mut w = self.writer();
        if lease.state() != LeaseState::Active {
            return false;
        }
        self.break_locked(&mut w, &lease, PL_BREAK_INJECTED);
        self.publish_pins(&w);
        true
    }

    /// Enters NEEDS_RESET and tells the driver (PL_EVENT_NEEDS_RESET, args
    /// [rule id, 0, 0, 0]); until `reset`, requests get EIO and no DMA runs.
    pub fn enter_needs_reset(&self, rule: u32) {
        self.needs_reset_rule.store(rule, Ordering::SeqCst);
        self.needs_reset.store(true, Ordering::SeqCst);
        self.events
            .push(PL_EVENT_NEEDS_RESET, 0, [u64::from(rule), 0, 0, 0]);
    }

    /// Refuses a request in NEEDS_RESET: the status bit of a real device
    /// stays set until the reset, so every refusal repeats the event; a
    /// driver that lost the first one (a dropped event) still learns why
    /// everything fails, instead of seeing EIO forever.
    pub fn refuse_needing_reset(&self) {
        let rule = self.needs_reset_rule.load(Ordering::SeqCst);
        self.events
            .push(PL_EVENT_NEEDS_RESET, 0, [u64::from(rule), 0, 0, 0]);
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use crate::abi::*;
    use crate::model::lease::LeaseState;

    use crate::model::test_support::*;

    // ---- fault injection (docs/faults.md 1.3) ------------------------------------------

    #[test]
    fn injected_revoke_break_and_needs_reset() {
        let dev = device(4);
        let c = ctx(&dev);
        let f = file(77);
        let lease = take(&dev, c, f, 0, 4 * PAGE, PL_POLICY_REVOKE);
        let under = reg_file(&dev, c, &Layout::pages(run(0, 2)), PL_ACCESS_ALL, f, 0);
        let other = reg(&dev, c, &Layout::pages(run(8 * PAGE, 1)), PL_ACCESS_ALL);
        assert_eq!(dev.live_mr_keys(), {
            let mut k = vec![under.key, other];
            k.sort_unstable();
            k
        });
        assert_eq!(dev.active_leases(), vec![(lease, c)]);
        assert!(dev.break_hits_active(&break_req(f, 0, PAGE)));
        assert!(!dev.break_hits_active(&break_req(file(78), 0, PAGE)));

        assert!(dev.revoke_injected(other));
        assert!(!dev.revoke_injected(other), "already revoked");
        let e = dev.events.pop().unwrap();
        assert_eq!(
            (e.kind, e.args[0], e.args[1]),
            (PL_EVENT_MR_REVOKED, other, PL_REVOKE_INJECTED)
        );
        assert_eq!(
            st(write(&dev, c, other, 0, under.key, 0, 8)),
            Status::Canceled
        );

        assert!(dev.break_lease_injected(lease));
        assert!(!dev.break_lease_injected(lease), "no longer ACTIVE");
        assert_eq!(dev.lease(lease).unwrap().state(), LeaseState::Revoked);
        assert!(
            !dev.mr(under.key).unwrap().is_live(),
            "revoke policy applied"
        );
        let kinds: Vec<(u16, u64)> = std::iter::from_fn(|| dev.events.pop())
            .map(|e| (e.kind, e.args[1]))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (PL_EVENT_MR_REVOKED, crate::abi::PL_REVOKE_LEASE_BREAK),
                (PL_EVENT_LEASE_BROKEN, u64::from(PL_BREAK_INJECTED)),
            ]
        );

        dev.enter_needs_reset(4);
        assert!(dev.needs_reset());
        let e = dev.events.pop().unwrap();
        assert_eq!((e.kind, e.args), (PL_EVENT_NEEDS_RESET, [4, 0, 0, 0]));
        assert!(dev.status().needs_reset);
        dev.reset();
        assert!(!dev.needs_reset());
        assert!(dev.live_mr_keys().is_empty());
    }
}
