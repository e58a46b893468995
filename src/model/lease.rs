//! The device's one global table of layout leases (seed 001: "a single
//! table someplace of all the layout leases with the file they are held on
//! and the FD/socket/etc that is holding the pin"): file, range, holder
//! context, policy, state.
//!
//! The table ([`LeaseTable`], `lease/table.rs`) has lock-free readers
//! (conflict lookups, status) and indexes leases by handle and per file,
//! so a lookup costs a hash probe plus O(log n_f + m) in that file's n_f
//! leases and reads no other file; how, and what a write costs, is at the
//! top of that file.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use crate::abi::{PlFileId, PL_POLICY_REVOKE, PL_POLICY_TIMEOUT, PL_POLICY_WAIT};
use crate::model::context::Context;
use crate::model::table::Handle;

mod table;

pub use table::LeaseTable;

/// What happens when the guest kernel breaks the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Revoke the holder's MRs in range; the breaker goes on.
    Revoke,
    /// The breaker waits until the holder deregisters and releases.
    Wait,
    /// The kernel's lease-break-time runs out; pins may remain (LOST).
    Timeout,
}

impl Policy {
    pub fn from_wire(v: u32) -> Option<Policy> {
        match v {
            PL_POLICY_REVOKE => Some(Policy::Revoke),
            PL_POLICY_WAIT => Some(Policy::Wait),
            PL_POLICY_TIMEOUT => Some(Policy::Timeout),
            _ => None,
        }
    }

    pub fn wire(self) -> u32 {
        match self {
            Policy::Revoke => PL_POLICY_REVOKE,
            Policy::Wait => PL_POLICY_WAIT,
            Policy::Timeout => PL_POLICY_TIMEOUT,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::Revoke => "revoke",
            Policy::Wait => "wait",
            Policy::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LeaseState {
    Active = 0,
    /// Broken under wait/timeout: the kernel's breaker is waiting.
    Breaking = 1,
    /// Broken under revoke: the holder's MRs in range were revoked.
    Revoked = 2,
    /// The kernel removed the lease while pins remained.
    Lost = 3,
}

impl LeaseState {
    fn from_u8(v: u8) -> LeaseState {
        match v {
            0 => LeaseState::Active,
            1 => LeaseState::Breaking,
            2 => LeaseState::Revoked,
            _ => LeaseState::Lost,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Breaking => "breaking",
            LeaseState::Revoked => "revoked",
            LeaseState::Lost => "lost",
        }
    }
}

pub struct Lease {
    pub handle: Handle,
    pub file: PlFileId,
    pub start: u64,
    /// Exclusive; u64::MAX for "to the end of the file".
    pub end: u64,
    pub holder: Handle,
    /// Weak back pointer to the holding context, upgraded when needed.
    pub holder_context: Weak<Context>,
    pub owner_pid: u32,
    pub policy: Policy,
    state: AtomicU8,
    /// When the lease entered its current state.
    pub since: Mutex<SystemTime>,
    /// Device accesses to MRs under this lease after it was LOST.
    pub lost_accesses: AtomicU64,
    /// Of those, the scrubber's (one per MR per scrub round).
    pub scrub_lost_accesses: AtomicU64,
    /// SCRUB_LOST_ACCESS was sent for this lease (once per lease).
    pub scrub_reported: std::sync::atomic::AtomicBool,
}

impl Lease {
    pub fn new(
        handle: Handle,
        file: PlFileId,
        start: u64,
        end: u64,
        holder: &Arc<Context>,
        owner_pid: u32,
        policy: Policy,
    ) -> Self {
        Lease {
            handle,
            file,
            start,
            end,
            holder: holder.handle,
            holder_context: Arc::downgrade(holder),
            owner_pid,
            policy,
            state: AtomicU8::new(LeaseState::Active as u8),
            since: Mutex::new(SystemTime::now()),
            lost_accesses: AtomicU64::new(0),
            scrub_lost_accesses: AtomicU64::new(0),
            scrub_reported: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn state(&self) -> LeaseState {
        LeaseState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set_state(&self, s: LeaseState) {
        self.state.store(s as u8, Ordering::Release);
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = SystemTime::now();
    }

    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }

    /// True when `[offset, offset+len)` of `file` is inside this lease.
    pub fn covers(&self, file: &PlFileId, offset: u64, len: u64) -> bool {
        self.file == *file && self.start <= offset && offset.saturating_add(len) <= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64) -> PlFileId {
        PlFileId::new(8, ino, 1)
    }

    fn lease(h: Handle, f: PlFileId, start: u64, end: u64, ctx: &Arc<Context>) -> Arc<Lease> {
        Arc::new(Lease::new(h, f, start, end, ctx, 1, Policy::Revoke))
    }

    #[test]
    fn state_changes_are_visible_and_timestamped() {
        let ctx = Arc::new(Context::new(1, 1, "t".into()));
        let l = lease(1, file(1), 0, 10, &ctx);
        let t0 = *l.since.lock().unwrap();
        assert_eq!(l.state(), LeaseState::Active);
        l.set_state(LeaseState::Lost);
        assert_eq!(l.state(), LeaseState::Lost);
        assert!(*l.since.lock().unwrap() >= t0);
        assert!(l.covers(&file(1), 2, 8));
        assert!(!l.covers(&file(1), 2, 9));
    }
}
