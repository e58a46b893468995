//! The device's one global table of layout leases (seed 001: "a single
//! table someplace of all the layout leases with the file they are held on
//! and the FD/socket/etc that is holding the pin"): file, range, holder
//! context, policy, state.
//!
//! Readers (conflict lookups, status) load a published snapshot and never
//! take the writers' lock. The index is per file (a hash map of files, each
//! with its own ordered maps), so a lookup costs a hash probe plus
//! O(log n_f + m) in that file's n_f leases: a bounded lease overlapping
//! `[s, e)` starts before `e` and no earlier than `s - L`, where L is the
//! file's longest bounded lease, so only starts in that window are scanned
//! (m of them); leases to the end of the file are kept apart and overlap
//! exactly when they start before `e`. Other files are never read.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::abi::{PlFileId, PL_POLICY_REVOKE, PL_POLICY_TIMEOUT, PL_POLICY_WAIT};
use crate::model::context::Context;
use crate::model::table::Handle;

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

type FileKey = (u64, u64, u32);

fn file_key(f: &PlFileId) -> FileKey {
    (f.dev, f.ino, f.generation)
}

/// One file's leases. Leases to the end of the file are kept apart: they
/// overlap `[s, e)` exactly when they start before `e`, and mixing them
/// with bounded leases would stretch the bounded scan window to the file's
/// start.
#[derive(Clone, Default)]
struct FileLeases {
    /// Leases with a finite end, by start.
    bounded: imbl::OrdMap<(u64, Handle), Arc<Lease>>,
    /// Lengths of the bounded leases, to keep `max_len` on removal.
    lens: imbl::OrdMap<(u64, Handle), ()>,
    /// Longest bounded lease: a bounded lease overlapping `[s, e)` starts
    /// no earlier than `s - max_len`.
    max_len: u64,
    /// Leases to the end of the file (`end == u64::MAX`), by start.
    to_eof: imbl::OrdMap<(u64, Handle), Arc<Lease>>,
}

impl FileLeases {
    fn is_empty(&self) -> bool {
        self.bounded.is_empty() && self.to_eof.is_empty()
    }
}

/// One published version of the table: per file, so a lookup reads only
/// its file's (usually small) maps, and a write path-copies only them.
#[derive(Clone, Default)]
struct Index {
    files: imbl::HashMap<FileKey, FileLeases>,
    by_handle: imbl::HashMap<Handle, Arc<Lease>>,
}

#[derive(Default)]
pub struct LeaseTable {
    index: ArcSwap<Index>,
}

impl LeaseTable {
    pub fn len(&self) -> usize {
        self.index.load().by_handle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, h: Handle) -> Option<Arc<Lease>> {
        self.index.load().by_handle.get(&h).cloned()
    }

    /// All leases, ordered by file, start and handle.
    pub fn all(&self) -> Vec<Arc<Lease>> {
        let mut v: Vec<Arc<Lease>> = self.index.load().by_handle.values().cloned().collect();
        v.sort_by_key(|l| (file_key(&l.file), l.start, l.handle));
        v
    }

    /// Reader: leases on `file` overlapping `[start, end)`.
    pub fn overlapping(&self, file: &PlFileId, start: u64, end: u64) -> Vec<Arc<Lease>> {
        let mut out = Vec::new();
        self.for_each_overlapping(file, start, end, |l| {
            out.push(l.clone());
            true
        });
        out
    }

    /// Reader: calls `f` for each lease on `file` overlapping `[start, end)`,
    /// in order of start, until it returns false. Returns how many leases
    /// were visited.
    pub fn for_each_overlapping<F>(&self, file: &PlFileId, start: u64, end: u64, mut f: F) -> usize
    where
        F: FnMut(&Arc<Lease>) -> bool,
    {
        if start >= end {
            return 0;
        }
        let idx = self.index.load();
        let Some(fl) = idx.files.get(&file_key(file)) else {
            return 0;
        };
        let lo = start.saturating_sub(fl.max_len);
        let mut bounded = fl
            .bounded
            .range((lo, 0)..(end, 0))
            .map(|(_, l)| l)
            .filter(|l| l.end > start)
            .peekable();
        // Most files have no lease to EOF: skip that map's range walk
        // (an imbl range costs as much as the rest of a lookup).
        let mut to_eof = (!fl.to_eof.is_empty())
            .then(|| fl.to_eof.range(..(end, 0)).map(|(_, l)| l))
            .into_iter()
            .flatten()
            .peekable();
        let mut n = 0;
        // Merge the two runs by (start, handle).
        loop {
            let next = match (bounded.peek(), to_eof.peek()) {
                (Some(b), Some(e)) if (b.start, b.handle) <= (e.start, e.handle) => bounded.next(),
                (Some(_), Some(_)) => to_eof.next(),
                (Some(_), None) => bounded.next(),
                (None, Some(_)) => to_eof.next(),
                (None, None) => None,
            };
            let Some(lease) = next else {
                break;
            };
            n += 1;
            if !f(lease) {
                break;
            }
        }
        n
    }

    /// Writer (caller holds the device's writer lock).
    pub fn insert(&self, lease: Arc<Lease>) {
        let mut next = (**self.index.load()).clone();
        let fk = file_key(&lease.file);
        let mut fl = next.files.get(&fk).cloned().unwrap_or_default();
        let key = (lease.start, lease.handle);
        if lease.end == u64::MAX {
            fl.to_eof.insert(key, lease.clone());
        } else {
            let len = lease.end - lease.start;
            fl.bounded.insert(key, lease.clone());
            fl.lens.insert((len, lease.handle), ());
            fl.max_len = fl.max_len.max(len);
        }
        next.files.insert(fk, fl);
        next.by_handle.insert(lease.handle, lease);
        self.index.store(Arc::new(next));
    }

    /// Writer (caller holds the device's writer lock).
    pub fn remove(&self, h: Handle) -> Option<Arc<Lease>> {
        let cur = self.index.load();
        let lease = cur.by_handle.get(&h)?.clone();
        let mut next = (**cur).clone();
        let fk = file_key(&lease.file);
        if let Some(mut fl) = next.files.get(&fk).cloned() {
            let key = (lease.start, h);
            if lease.end == u64::MAX {
                fl.to_eof.remove(&key);
            } else {
                fl.bounded.remove(&key);
                fl.lens.remove(&(lease.end - lease.start, h));
                fl.max_len = fl.lens.get_max().map_or(0, |((len, _), _)| *len);
            }
            if fl.is_empty() {
                next.files.remove(&fk);
            } else {
                next.files.insert(fk, fl);
            }
        }
        next.by_handle.remove(&h);
        self.index.store(Arc::new(next));
        Some(lease)
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
    fn overlap_lookup_finds_exactly_the_overlapping_leases() {
        let ctx = Arc::new(Context::new(1, 1, "t".into()));
        let t = LeaseTable::default();
        t.insert(lease(1, file(1), 0, 4096, &ctx));
        t.insert(lease(2, file(1), 4096, 8192, &ctx));
        t.insert(lease(3, file(1), 100_000, u64::MAX, &ctx));
        t.insert(lease(4, file(2), 0, 4096, &ctx));
        let hs = |v: Vec<Arc<Lease>>| v.iter().map(|l| l.handle).collect::<Vec<_>>();
        assert_eq!(hs(t.overlapping(&file(1), 0, 1)), vec![1]);
        assert_eq!(hs(t.overlapping(&file(1), 4095, 4097)), vec![1, 2]);
        assert_eq!(
            hs(t.overlapping(&file(1), 8192, 100_000)),
            Vec::<u64>::new()
        );
        assert_eq!(hs(t.overlapping(&file(1), 200_000, 200_001)), vec![3]);
        assert_eq!(hs(t.overlapping(&file(1), 0, u64::MAX)), vec![1, 2, 3]);
        assert_eq!(hs(t.overlapping(&file(3), 0, u64::MAX)), Vec::<u64>::new());
        assert_eq!(
            hs(t.overlapping(&file(1), 5, 5)),
            Vec::<u64>::new(),
            "empty range"
        );
        let other_gen = PlFileId {
            generation: 2,
            ..file(2)
        };
        assert!(
            t.overlapping(&other_gen, 0, 10).is_empty(),
            "recycled inode is another file"
        );
        assert_eq!(t.remove(3).map(|l| l.handle), Some(3));
        assert!(t.overlapping(&file(1), 200_000, 200_001).is_empty());
        assert!(t.remove(3).is_none());
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn long_lease_removed_shrinks_the_scan_window_again() {
        let ctx = Arc::new(Context::new(1, 1, "t".into()));
        let t = LeaseTable::default();
        for i in 0..1000u64 {
            t.insert(lease(i + 1, file(1), i * 4096, (i + 1) * 4096, &ctx));
        }
        t.insert(lease(5000, file(1), 0, u64::MAX, &ctx));
        let mut visited = 0;
        t.for_each_overlapping(&file(1), 999 * 4096, 999 * 4096 + 1, |_| {
            visited += 1;
            true
        });
        assert_eq!(visited, 2);
        t.remove(5000);
        let n = t.for_each_overlapping(&file(1), 500 * 4096, 500 * 4096 + 1, |_| true);
        assert_eq!(n, 1);
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
