//! [`LeaseTable`]: the one global table of layout leases, with lock-free
//! readers (docs/design.md §7) and writers whose cost does not grow with
//! the table.
//!
//! Three parts, each published on its own (writers serialise on the
//! device's writer lock):
//!
//! - **by handle**: pages of slots indexed by the handle's slot index, one
//!   `ArcSwapOption<Lease>` each. Insert and remove store one slot: O(1).
//! - **by file**: a hash table of buckets, each an immutable `Vec` of
//!   (file, that file's index) behind an `ArcSwapOption`. A write replaces
//!   one bucket (about one file at load factor <= 1); the table doubles
//!   when it holds more files than buckets (that one insert copies every
//!   bucket: amortised O(1)). The hash is keyed (std's `RandomState`):
//!   file identities come from the guest.
//! - **one file's index**: `imbl` ordered maps keyed (start, handle) whose
//!   values are the lease's end and its `Arc`; a bounded lease overlapping
//!   `[s, e)` starts before `e` and no earlier than `s - L` (L: the file's
//!   longest bounded lease), so only starts in that window are scanned;
//!   leases to the end of the file are kept apart and overlap exactly when
//!   they start before `e`.
//!
//! Why not one persistent map of everything (as before): at 10^6 leases a
//! path copy of the by-handle `imbl` map of 10^6 entries bumps the
//! refcounts of every child of each copied node, most of them cold: about
//! 9 us per insert. Here a write touches one slot, one bucket and one
//! file's maps (O(log n_f), n_f: that file's leases). The `Arc<Lease>`
//! stays in the file's maps (not only in its slot) because a check would
//! otherwise pay two more cache misses per lease it visits (slot, then
//! lease): 2.5 us instead of 1 at 10^6 leases.
//!
//! What a reader sees: each file's leases as of one moment (one bucket
//! snapshot), as with any snapshot possibly a lease removed since; a
//! removed `Lease` lives on while a reader holds its `Arc` and is never
//! put back. `get` sees the slot as of the moment it reads it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::Lease;
use crate::abi::PlFileId;
use crate::model::table::Handle;

type FileKey = (u64, u64, u32);

fn file_key(f: &PlFileId) -> FileKey {
    (f.dev, f.ino, f.generation)
}

/// Slots per page of the by-handle index.
const SLOT_PAGE: usize = 1024;

type SlotPage = Box<[ArcSwapOption<Lease>]>;

/// Leases by the slot index of their handle. Handles come from
/// `table::Slots`, which reuses freed indices, so the indices stay below
/// the most leases ever live at once; pages are allocated as they are
/// first needed.
#[derive(Default)]
struct BySlot {
    pages: ArcSwap<Vec<Option<Arc<SlotPage>>>>,
}

fn slot_of(h: Handle) -> (usize, usize) {
    let index = h as u32 as usize;
    (index / SLOT_PAGE, index % SLOT_PAGE)
}

impl BySlot {
    /// Reader: the lease with handle `h`, if it is in its slot.
    fn get(&self, h: Handle) -> Option<Arc<Lease>> {
        let (page, at) = slot_of(h);
        let pages = self.pages.load();
        let slot = pages.get(page)?.as_ref()?[at].load();
        match &*slot {
            Some(l) if l.handle == h => Some(l.clone()),
            _ => None,
        }
    }

    /// Writer: puts `lease` in its handle's slot.
    fn store(&self, lease: Arc<Lease>) {
        let (page, at) = slot_of(lease.handle);
        let pages = self.pages.load();
        if let Some(Some(p)) = pages.get(page) {
            p[at].store(Some(lease));
            return;
        }
        let mut next = (**pages).clone();
        if next.len() <= page {
            next.resize(page + 1, None);
        }
        let p: Arc<SlotPage> = Arc::new((0..SLOT_PAGE).map(|_| ArcSwapOption::empty()).collect());
        p[at].store(Some(lease));
        next[page] = Some(p);
        self.pages.store(Arc::new(next));
    }

    /// Writer: empties `h`'s slot if `h` is in it.
    fn take(&self, h: Handle) -> Option<Arc<Lease>> {
        let (page, at) = slot_of(h);
        let pages = self.pages.load();
        let slot = &pages.get(page)?.as_ref()?[at];
        if slot.load().as_ref().is_some_and(|l| l.handle == h) {
            slot.swap(None)
        } else {
            None
        }
    }

    fn all(&self) -> Vec<Arc<Lease>> {
        let pages = self.pages.load();
        pages
            .iter()
            .flatten()
            .flat_map(|p| p.iter().filter_map(|s| s.load_full()))
            .collect()
    }
}

/// One file's leases.
#[derive(Clone, Default)]
struct FileLeases {
    /// Leases with a finite end: (start, handle) -> (end, lease). The end
    /// is kept beside the lease so the scan window's leases that end
    /// before the range are skipped without reading their `Lease`.
    bounded: imbl::OrdMap<(u64, Handle), (u64, Arc<Lease>)>,
    /// How many bounded leases have each length, to keep `max_len` on
    /// removal (few distinct lengths in practice, so a small map).
    lens: imbl::OrdMap<u64, u32>,
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

    fn add(&mut self, l: &Arc<Lease>) {
        let key = (l.start, l.handle);
        if l.end == u64::MAX {
            self.to_eof.insert(key, l.clone());
        } else {
            let len = l.end - l.start;
            self.bounded.insert(key, (l.end, l.clone()));
            *self.lens.entry(len).or_insert(0) += 1;
            self.max_len = self.max_len.max(len);
        }
    }

    fn remove(&mut self, l: &Lease) {
        let key = (l.start, l.handle);
        if l.end == u64::MAX {
            self.to_eof.remove(&key);
            return;
        }
        if self.bounded.remove(&key).is_none() {
            return;
        }
        let len = l.end - l.start;
        match self.lens.get(&len).copied() {
            Some(1) | None => {
                self.lens.remove(&len);
            }
            Some(n) => {
                self.lens.insert(len, n - 1);
            }
        }
        self.max_len = self.lens.get_max().map_or(0, |(len, _)| *len);
    }
}

/// A bucket: the files whose hash lands there, each with its index.
type Bucket = Vec<(FileKey, FileLeases)>;

/// The by-file hash table: a power-of-two number of buckets.
struct ByFile {
    buckets: Box<[ArcSwapOption<Bucket>]>,
    hasher: RandomState,
}

/// Buckets of a new table; it doubles past one file per bucket.
const FIRST_BUCKETS: usize = 64;

impl ByFile {
    fn with_buckets(n: usize, hasher: RandomState) -> ByFile {
        ByFile {
            buckets: (0..n).map(|_| ArcSwapOption::empty()).collect(),
            hasher,
        }
    }

    fn bucket(&self, fk: &FileKey) -> &ArcSwapOption<Bucket> {
        let i = self.hasher.hash_one(fk) as usize & (self.buckets.len() - 1);
        &self.buckets[i]
    }

    /// The same files in twice the buckets.
    fn doubled(&self) -> ByFile {
        let next = ByFile::with_buckets(self.buckets.len() * 2, self.hasher.clone());
        for b in self.buckets.iter() {
            for (fk, fl) in b.load().iter().flat_map(|b| b.iter()) {
                let slot = next.bucket(fk);
                let mut v: Bucket = slot.load().as_deref().cloned().unwrap_or_default();
                v.push((*fk, fl.clone()));
                slot.store(Some(Arc::new(v)));
            }
        }
        next
    }
}

pub struct LeaseTable {
    by_slot: BySlot,
    by_file: ArcSwap<ByFile>,
    /// Leases in the table (writers only change it).
    leases: AtomicUsize,
    /// Files with at least one lease (writers only).
    files: AtomicUsize,
}

impl Default for LeaseTable {
    fn default() -> Self {
        LeaseTable {
            by_slot: BySlot::default(),
            by_file: ArcSwap::from_pointee(ByFile::with_buckets(FIRST_BUCKETS, RandomState::new())),
            leases: AtomicUsize::new(0),
            files: AtomicUsize::new(0),
        }
    }
}

impl LeaseTable {
    pub fn len(&self) -> usize {
        self.leases.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, h: Handle) -> Option<Arc<Lease>> {
        self.by_slot.get(h)
    }

    /// All leases, ordered by file, start and handle.
    pub fn all(&self) -> Vec<Arc<Lease>> {
        let mut v = self.by_slot.all();
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
    /// in order of start (then handle), until it returns false. Returns how
    /// many leases were visited.
    pub fn for_each_overlapping<F>(&self, file: &PlFileId, start: u64, end: u64, mut f: F) -> usize
    where
        F: FnMut(&Arc<Lease>) -> bool,
    {
        if start >= end {
            return 0;
        }
        let fk = file_key(file);
        let by_file = self.by_file.load();
        let bucket = by_file.bucket(&fk).load();
        let Some((_, fl)) = bucket.iter().flat_map(|b| b.iter()).find(|(k, _)| *k == fk) else {
            return 0;
        };
        let lo = start.saturating_sub(fl.max_len);
        // Open-ended ranges cut short by take_while: imbl seeks a cursor
        // for each bound it is given (a descent of the tree, on cold nodes
        // at 10^6 leases), and an end bound would cost a second one.
        let mut bounded = fl
            .bounded
            .range((lo, 0)..)
            .take_while(|((s, _), _)| *s < end)
            .filter(|(_, (e, _))| *e > start)
            .map(|(_, (_, l))| l)
            .peekable();
        // Most files have no lease to EOF: skip that map's walk.
        let mut to_eof = (!fl.to_eof.is_empty())
            .then(|| {
                fl.to_eof
                    .iter()
                    .take_while(|((s, _), _)| *s < end)
                    .map(|(_, l)| l)
            })
            .into_iter()
            .flatten()
            .peekable();
        let mut n = 0;
        // Merge the two runs by (start, handle).
        loop {
            let next = match (bounded.peek(), to_eof.peek()) {
                (Some(b), Some(e)) if (b.start, b.handle) <= (e.start, e.handle) => bounded.next(),
                (Some(_), Some(_)) | (None, Some(_)) => to_eof.next(),
                (Some(_), None) => bounded.next(),
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

    /// The longest bounded lease on `file` (the scan window), for tests.
    #[cfg(test)]
    fn max_len(&self, file: &PlFileId) -> u64 {
        let fk = file_key(file);
        let by_file = self.by_file.load();
        let bucket = by_file.bucket(&fk).load();
        bucket
            .iter()
            .flat_map(|b| b.iter())
            .find(|(k, _)| *k == fk)
            .map_or(0, |(_, fl)| fl.max_len)
    }

    /// Writer (caller holds the device's writer lock).
    pub fn insert(&self, lease: Arc<Lease>) {
        let fk = file_key(&lease.file);
        self.by_slot.store(lease.clone());
        let by_file = self.by_file.load();
        let slot = by_file.bucket(&fk);
        let mut bucket: Bucket = slot.load().as_deref().cloned().unwrap_or_default();
        match bucket.iter_mut().find(|(k, _)| *k == fk) {
            Some((_, fl)) => fl.add(&lease),
            None => {
                let mut fl = FileLeases::default();
                fl.add(&lease);
                bucket.push((fk, fl));
                self.files.fetch_add(1, Ordering::AcqRel);
            }
        }
        slot.store(Some(Arc::new(bucket)));
        self.leases.fetch_add(1, Ordering::AcqRel);
        if self.files.load(Ordering::Acquire) > by_file.buckets.len() {
            self.by_file.store(Arc::new(by_file.doubled()));
        }
    }

    /// Writer (caller holds the device's writer lock).
    pub fn remove(&self, h: Handle) -> Option<Arc<Lease>> {
        let lease = self.get(h)?;
        let fk = file_key(&lease.file);
        let by_file = self.by_file.load();
        let slot = by_file.bucket(&fk);
        if let Some(old) = slot.load_full() {
            let mut bucket: Bucket = (*old).clone();
            if let Some(i) = bucket.iter().position(|(k, _)| *k == fk) {
                bucket[i].1.remove(&lease);
                if bucket[i].1.is_empty() {
                    bucket.swap_remove(i);
                    self.files.fetch_sub(1, Ordering::AcqRel);
                }
            }
            slot.store((!bucket.is_empty()).then(|| Arc::new(bucket)));
        }
        let taken = self.by_slot.take(h);
        self.leases.fetch_sub(1, Ordering::AcqRel);
        taken
    }
}

#[cfg(test)]
mod tests;
