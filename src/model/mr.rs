//! Memory regions: the guest pages a context registered, and the gate that
//! makes revoke final.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};
use std::time::SystemTime;

use crate::abi::{PlFileId, Status, PL_PAGE_SIZE};
use crate::model::context::Context;
use crate::model::lease::Lease;
use crate::model::table::Handle;

const LIVE: u8 = 0;
const REVOKING: u8 = 1;
const REVOKED: u8 = 2;

/// Guards DMA against revoke. Operations enter it (shared); revoke flips the
/// state so no new operation enters, then takes it exclusively, which waits
/// for the operations already inside. When `revoke` returns, nothing can
/// touch the MR's pages any more. Long operations poll `is_live` between
/// chunks and give up with ECANCELED, so a revoke never waits long.
#[derive(Default)]
pub struct Gate {
    state: AtomicU8,
    inflight: RwLock<()>,
}

impl Gate {
    pub fn enter(&self) -> Result<RwLockReadGuard<'_, ()>, Status> {
        if !self.is_live() {
            return Err(Status::Canceled);
        }
        let g = self.inflight.read().unwrap_or_else(|e| e.into_inner());
        // Re-check: a revoke may have started while we waited for the lock.
        if !self.is_live() {
            return Err(Status::Canceled);
        }
        Ok(g)
    }

    pub fn is_live(&self) -> bool {
        self.state.load(Ordering::Acquire) == LIVE
    }

    /// Revokes; true for the caller that did it, false if already revoked.
    pub fn revoke(&self) -> bool {
        if self
            .state
            .compare_exchange(LIVE, REVOKING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        drop(self.inflight.write().unwrap_or_else(|e| e.into_inner()));
        self.state.store(REVOKED, Ordering::Release);
        true
    }
}

/// A file range an MR maps, as the guest reported it at REG_MR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRange {
    pub file: PlFileId,
    pub offset: u64,
}

/// Why an MR was revoked, shown in status and sent in MR_REVOKED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// DEREG_MR: the owner took it down (not counted as a revoke).
    Deregistered,
    LeaseBreak,
    MemoryMap,
    ContextClose,
    SourceGone,
    /// The daemon's fault plan revoked it (docs/faults.md 1.3, revoke-mr).
    Injected,
}

impl RevokeReason {
    /// True for revokes the owner did not ask for.
    pub fn is_revoke(self) -> bool {
        matches!(
            self,
            RevokeReason::LeaseBreak
                | RevokeReason::MemoryMap
                | RevokeReason::SourceGone
                | RevokeReason::Injected
        )
    }

    pub fn wire(self) -> u64 {
        match self {
            RevokeReason::Deregistered => 0,
            RevokeReason::LeaseBreak => crate::abi::PL_REVOKE_LEASE_BREAK,
            RevokeReason::MemoryMap => crate::abi::PL_REVOKE_MEMORY_MAP,
            RevokeReason::ContextClose => crate::abi::PL_REVOKE_CONTEXT_CLOSE,
            RevokeReason::SourceGone => crate::abi::PL_REVOKE_SOURCE_GONE,
            RevokeReason::Injected => crate::abi::PL_REVOKE_INJECTED,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RevokeReason::Deregistered => "deregistered",
            RevokeReason::LeaseBreak => "lease-break",
            RevokeReason::MemoryMap => "memory-map",
            RevokeReason::ContextClose => "context-close",
            RevokeReason::SourceGone => "source-gone",
            RevokeReason::Injected => "injected",
        }
    }
}

/// Where an MR's pages come from: its own page list, or an exported MR it
/// aliases (IMPORT_MR). An import holds its source strongly: the source's
/// struct lives while an import does, but the source's revoke revokes it.
pub enum Pages {
    Own(Box<[u64]>),
    Imported(Arc<Mr>),
}

pub struct Mr {
    pub key: Handle,
    pub ctx: Handle,
    /// Back pointer to the owning context: weak, upgraded when needed.
    pub context: Weak<Context>,
    pub access: u32,
    pub flags: u32,
    pub first_page_offset: u32,
    pub length: u64,
    pub pages: Pages,
    pub file: Option<FileRange>,
    pub created: SystemTime,
    pub gate: Gate,
    pub revoke_reason: Mutex<Option<RevokeReason>>,
    /// The lease of the same holder covering the MR's file range, if any.
    pub lease: Mutex<Option<Arc<Lease>>>,
    /// The MR's export, if one is alive: weak, so the MR never keeps its
    /// export alive (the export holds the MR; docs/design.md §6, seed 002).
    pub export: Mutex<Weak<Export>>,
    /// MRs imported from this one, revoked with it.
    pub imports: Mutex<Vec<Weak<Mr>>>,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// The canary scrubber's counters (`PL_REG_SCRUB` MRs only).
    pub scrub: MrScrub,
}

impl Mr {
    /// The page list the MR's bytes live in (the source's for an import).
    pub fn page_list(&self) -> &[u64] {
        match &self.pages {
            Pages::Own(p) => p,
            Pages::Imported(src) => src.page_list(),
        }
    }

    pub fn first_page_offset(&self) -> u32 {
        match &self.pages {
            Pages::Own(_) => self.first_page_offset,
            Pages::Imported(src) => src.first_page_offset(),
        }
    }

    pub fn npages(&self) -> usize {
        match &self.pages {
            Pages::Own(p) => p.len(),
            Pages::Imported(_) => 0,
        }
    }

    /// Live means neither this MR nor (for an import) its source is revoked.
    pub fn is_live(&self) -> bool {
        self.gate.is_live()
            && match &self.pages {
                Pages::Own(_) => true,
                Pages::Imported(src) => src.is_live(),
            }
    }

    /// Checks `[offset, offset + len)` lies inside the MR.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<(), Status> {
        match offset.checked_add(len) {
            Some(end) if end <= self.length => Ok(()),
            _ => Err(Status::Range),
        }
    }
}

/// An MR export: unique per MR while it lives. It holds the MR strongly;
/// the MR points back weakly (`Mr::export`) and EXPORT_MR upgrades that
/// pointer only while `refs` is non-zero, under the MR's export lock, so
/// two exports of one MR can never coexist.
pub struct Export {
    pub handle: Handle,
    pub mr: Arc<Mr>,
    /// EXPORT_MR calls not yet matched by a DESTROY_CHILD.
    pub refs: AtomicU32,
}

impl Export {
    pub fn refs(&self) -> u32 {
        self.refs.load(Ordering::Acquire)
    }
}

/// Per-MR counters of the canary scrubber (`crate::model::scrub`): every
/// MR carries them, so they live with the MR, below the scrubber.
#[derive(Default)]
pub struct MrScrub {
    /// Completed passes (canaries verified, where armed, and rewritten).
    pub rounds: AtomicU64,
    /// Canary words written, over all passes.
    pub canaries_written: AtomicU64,
    /// Canary words found changed when verified.
    pub mismatches: AtomicU64,
    /// MR offset of the last changed word seen (u64::MAX: none yet).
    pub last_mismatch_offset: AtomicU64,
    /// When the last pass completed (Unix ms; 0: never).
    pub last_round_unix_ms: AtomicU64,
    /// The MR holds a complete set of canaries from the previous pass.
    armed: AtomicBool,
}

impl MrScrub {
    /// Disarms the MR for a pass: true when it held a complete set of
    /// canaries to verify.
    pub fn take_armed(&self) -> bool {
        self.armed.swap(false, Ordering::AcqRel)
    }

    /// A pass completed: the MR holds a complete set of canaries.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    pub fn last_mismatch(&self) -> Option<u64> {
        let v = self.last_mismatch_offset.load(Ordering::Relaxed);
        (self.mismatches.load(Ordering::Relaxed) > 0).then_some(v)
    }
}

/// Per-page pin accounting: how many live MRs hold each guest page frame.
/// Stored as u16 counters in 16 MiB chunks allocated on first use, so a
/// pinned page costs at most 2 bytes here (8 more in its MR's page list).
/// Hashes a chunk number by Fibonacci multiplication: SipHash cost 20 ns a
/// page on REG_MR (docs/benchmarks.md). Keys are guest page-frame chunks a
/// guest chooses, but the map holds at most one entry per 16 MiB of guest
/// memory (REG_MR checks every page against the memory map first), so
/// colliding keys cannot make it large.
#[derive(Default, Clone, Copy)]
pub struct ChunkHasher(u64);

impl std::hash::Hasher for ChunkHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type ChunkMap<V> = std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<ChunkHasher>>;

#[derive(Default)]
pub struct PinCounts {
    chunks: ChunkMap<Box<[u16]>>,
    /// Pages pinned more than u16::MAX times, counted apart.
    overflow: ChunkMap<u64>,
    pinned_pages: u64,
    pins: u64,
}

const CHUNK_SHIFT: u32 = 12; // 4096 pages = 16 MiB per chunk

impl PinCounts {
    pub fn pin(&mut self, gpa: u64) {
        let pfn = gpa / PL_PAGE_SIZE;
        let chunk = self
            .chunks
            .entry(pfn >> CHUNK_SHIFT)
            .or_insert_with(|| vec![0u16; 1 << CHUNK_SHIFT].into_boxed_slice());
        let c = &mut chunk[(pfn & ((1 << CHUNK_SHIFT) - 1)) as usize];
        if *c == 0 {
            self.pinned_pages += 1;
        }
        if *c == u16::MAX {
            *self.overflow.entry(pfn).or_insert(0) += 1;
        } else {
            *c += 1;
        }
        self.pins += 1;
    }

    pub fn unpin(&mut self, gpa: u64) {
        let pfn = gpa / PL_PAGE_SIZE;
        // Overflowed pages are rare: skip the probe while there are none.
        if !self.overflow.is_empty() {
            if let Some(o) = self.overflow.get_mut(&pfn) {
                *o -= 1;
                if *o == 0 {
                    self.overflow.remove(&pfn);
                }
                self.pins -= 1;
                return;
            }
        }
        let Some(chunk) = self.chunks.get_mut(&(pfn >> CHUNK_SHIFT)) else {
            debug_assert!(false, "unpin of a page never pinned: {gpa:#x}");
            return;
        };
        let c = &mut chunk[(pfn & ((1 << CHUNK_SHIFT) - 1)) as usize];
        if *c == 0 {
            debug_assert!(false, "unpin of a page never pinned: {gpa:#x}");
            return;
        }
        *c -= 1;
        self.pins -= 1;
        if *c == 0 {
            self.pinned_pages -= 1;
        }
    }

    pub fn count(&self, gpa: u64) -> u64 {
        let pfn = gpa / PL_PAGE_SIZE;
        let base = self.chunks.get(&(pfn >> CHUNK_SHIFT)).map_or(0, |c| {
            u64::from(c[(pfn & ((1 << CHUNK_SHIFT) - 1)) as usize])
        });
        base + self.overflow.get(&pfn).copied().unwrap_or(0)
    }

    /// Distinct pages with at least one pin.
    pub fn pinned_pages(&self) -> u64 {
        self.pinned_pages
    }

    /// Pins over all pages (a page in two MRs counts twice).
    pub fn pins(&self) -> u64 {
        self.pins
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn gate_revoke_waits_for_inflight_and_refuses_new_entries() {
        let gate = Arc::new(Gate::default());
        let inside = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicBool::new(false));
        let g2 = gate.clone();
        let (i2, r2) = (inside.clone(), released.clone());
        let t = thread::spawn(move || {
            let _guard = g2.enter().unwrap();
            i2.store(true, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(50));
            r2.store(true, Ordering::SeqCst);
        });
        while !inside.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        assert!(gate.revoke());
        assert!(
            released.load(Ordering::SeqCst),
            "revoke returned while an operation was still inside"
        );
        assert_eq!(gate.enter().err(), Some(Status::Canceled));
        assert!(!gate.revoke(), "second revoke is a no-op");
        t.join().unwrap();
    }

    #[test]
    fn pin_counts_track_pages_and_pins() {
        let mut p = PinCounts::default();
        p.pin(0x1000);
        p.pin(0x1000);
        p.pin(0x10_000_000);
        assert_eq!((p.pinned_pages(), p.pins()), (2, 3));
        assert_eq!(p.count(0x1000), 2);
        p.unpin(0x1000);
        p.unpin(0x1000);
        p.unpin(0x10_000_000);
        assert_eq!((p.pinned_pages(), p.pins()), (0, 0));
        for _ in 0..(u16::MAX as u32 + 5) {
            p.pin(0x2000);
        }
        assert_eq!(p.count(0x2000), u64::from(u16::MAX) + 5);
        for _ in 0..(u16::MAX as u32 + 5) {
            p.unpin(0x2000);
        }
        assert_eq!((p.pinned_pages(), p.pins(), p.count(0x2000)), (0, 0, 0));
    }
}
