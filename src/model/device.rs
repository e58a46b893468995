//! The device: contexts, MRs, leases, DMA and events, as typed operations.
//! This file holds the device's state, lookups, memory map and reset; the
//! operations are in `device/` by concern: `contexts` (contexts and
//! children), `mrs` (REG/DEREG, revoke, export/import), `dma` (DMA,
//! atomics, fill/verify), `leases`, and `faults` (fault injection).
//!
//! Locking: one writer lock serialises every table change (and the handle
//! allocators and pin counts behind it); readers (DMA key lookups, lease
//! conflict lookups, status) use the published tables and never take it.
//! Lock order: writer -> context hardware -> an MR's export/imports/lease.
//! DMA takes only MR gates (shared), so a revoke that waits for in-flight
//! DMA while holding the writer lock cannot deadlock. One reader path does
//! take the writer lock: telling a stale handle (ESTALE) from a forged one
//! (EBADF/ENOENT) after a lookup failed, an error path only.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::abi::*;
use crate::model::child::Child;
use crate::model::context::{Context, Hardware};
use crate::model::counters::Counters;
use crate::model::events::{EventQueue, DEFAULT_BACKLOG};
use crate::model::lease::{Lease, LeaseTable};
use crate::model::memory::GuestRam;
use crate::model::mr::{FileRange, Mr, Pages, PinCounts, RevokeReason};
use crate::model::table::{Dead, Handle, Slots, Table};

mod contexts;
mod dma;
mod faults;
mod leases;
mod mrs;

pub(crate) use dma::enter_all;

/// A refused request: the status the guest sees and, for the log, what was
/// wrong and the value seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: Status,
    pub why: String,
}

impl Reject {
    pub fn new(status: Status, why: impl Into<String>) -> Self {
        Reject {
            status,
            why: why.into(),
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.why)
    }
}

pub type Result<T> = std::result::Result<T, Reject>;

/// Table sizes; the defaults are the ABI's advertised limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_contexts: u32,
    pub max_mrs: u32,
    pub max_pages_per_mr: u32,
    pub max_leases: u32,
    pub max_children_per_context: u32,
    pub event_backlog: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_contexts: PL_MAX_CONTEXTS,
            max_mrs: PL_MAX_MRS,
            max_pages_per_mr: PL_MAX_PAGES_PER_MR,
            max_leases: PL_MAX_LEASES,
            max_children_per_context: PL_MAX_CHILDREN_PER_CONTEXT,
            event_backlog: DEFAULT_BACKLOG,
        }
    }
}

/// Direction of a WRITE or READ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaDir {
    /// local -> remote
    Write,
    /// remote -> local
    Read,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicOp {
    CompareSwap,
    FetchAdd,
}

/// A REG_MR request, decoded.
#[derive(Debug, Clone)]
pub struct RegMr {
    pub access: u32,
    pub flags: u32,
    pub first_page_offset: u32,
    pub length: u64,
    pub file: Option<FileRange>,
    pub pages: Vec<u64>,
}

struct Writer {
    contexts: Slots,
    children: Slots,
    mrs: Slots,
    leases: Slots,
    pins: PinCounts,
}

pub struct Device {
    writer: Mutex<Writer>,
    memory: ArcSwapOption<Box<dyn GuestRam>>,
    pub(crate) contexts: Table<Context>,
    pub(crate) children: Table<Child>,
    pub(crate) mrs: Table<Mr>,
    pub(crate) leases: LeaseTable,
    pub events: EventQueue,
    pub counters: Counters,
    pub limits: Limits,
    pub started: SystemTime,
    /// Mirrors of the pin counts for lock-free status readers.
    pinned_pages: AtomicU64,
    pins: AtomicU64,
    /// Mirror of the live context count (for status).
    live_contexts: AtomicU32,
    /// NEEDS_RESET (a fault plan's needs-reset): every request is answered
    /// EIO and no DMA runs until the driver resets the device.
    needs_reset: AtomicBool,
    /// The rule that raised NEEDS_RESET, repeated in every NEEDS_RESET event.
    needs_reset_rule: AtomicU32,
}

impl Device {
    pub fn new(limits: Limits) -> Self {
        Device {
            writer: Mutex::new(Writer {
                contexts: Slots::new(limits.max_contexts as usize),
                children: Slots::new(
                    (limits.max_contexts as usize) * (limits.max_children_per_context as usize),
                ),
                mrs: Slots::new(limits.max_mrs as usize),
                leases: Slots::new(limits.max_leases as usize),
                pins: PinCounts::default(),
            }),
            memory: ArcSwapOption::empty(),
            contexts: Table::default(),
            children: Table::default(),
            mrs: Table::default(),
            leases: LeaseTable::default(),
            events: EventQueue::new(limits.event_backlog),
            counters: Counters::default(),
            limits,
            started: SystemTime::now(),
            pinned_pages: AtomicU64::new(0),
            pins: AtomicU64::new(0),
            live_contexts: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            needs_reset_rule: AtomicU32::new(0),
        }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_pins(&self, w: &Writer) {
        self.pinned_pages
            .store(w.pins.pinned_pages(), Ordering::Relaxed);
        self.pins.store(w.pins.pins(), Ordering::Relaxed);
    }

    /// Distinct guest pages the device may touch, and pins over them.
    pub fn pin_totals(&self) -> (u64, u64) {
        (
            self.pinned_pages.load(Ordering::Relaxed),
            self.pins.load(Ordering::Relaxed),
        )
    }

    pub fn memory(&self) -> Option<Arc<Box<dyn GuestRam>>> {
        self.memory.load_full()
    }

    pub(crate) fn ram(&self) -> Result<Arc<Box<dyn GuestRam>>> {
        self.memory()
            .ok_or_else(|| Reject::new(Status::Fault, "no guest memory map has been set"))
    }

    // ---- lookups -------------------------------------------------------------

    fn dead(&self, what: &str, h: Handle, which: fn(&Writer) -> &Slots, never: Status) -> Reject {
        match which(&self.writer()).check(h) {
            Err(Dead::Stale) => Reject::new(Status::Stale, format!("{what} {h:#x} is gone")),
            _ => Reject::new(never, format!("{what} {h:#x} was never issued")),
        }
    }

    /// The context behind `h`, open or closed.
    pub fn context(&self, h: Handle) -> Result<Arc<Context>> {
        self.contexts
            .get(h)
            .ok_or_else(|| self.dead("context", h, |w| &w.contexts, Status::BadF))
    }

    /// The context behind `h`, which must not be closed.
    fn open_context(&self, h: Handle) -> Result<Arc<Context>> {
        let c = self.context(h)?;
        if c.is_closed() {
            return Err(Self::closed(h));
        }
        Ok(c)
    }

    /// The refusal of a request on the closed context `h`.
    fn closed(h: Handle) -> Reject {
        Reject::new(Status::Shutdown, format!("context {h:#x} is closed"))
    }

    /// `ctx`'s hardware state, locked; refused when the context is closed
    /// (checked under the lock, so it cannot close before the caller is done).
    fn open_hw(ctx: &Context) -> Result<MutexGuard<'_, Hardware>> {
        let hw = ctx.hw();
        if hw.closed {
            return Err(Self::closed(ctx.handle));
        }
        Ok(hw)
    }

    /// A free MR key, or ENOMEM when the MR table is full.
    fn alloc_mr_key(&self, w: &mut Writer) -> Result<Handle> {
        w.mrs.alloc().ok_or_else(|| {
            Reject::new(
                Status::NoMem,
                format!("MR table full ({} MRs)", self.limits.max_mrs),
            )
        })
    }

    pub fn mr(&self, key: Handle) -> Result<Arc<Mr>> {
        self.mrs
            .get(key)
            .ok_or_else(|| self.dead("MR key", key, |w| &w.mrs, Status::NoEnt))
    }

    fn own_mr(&self, ctx: Handle, key: Handle) -> Result<Arc<Mr>> {
        let mr = self.mr(key)?;
        if mr.ctx != ctx {
            return Err(Reject::new(
                Status::Perm,
                format!(
                    "MR key {key:#x} belongs to context {:#x}, not {ctx:#x}",
                    mr.ctx
                ),
            ));
        }
        Ok(mr)
    }

    pub fn lease(&self, h: Handle) -> Result<Arc<Lease>> {
        self.leases
            .get(h)
            .ok_or_else(|| self.dead("lease", h, |w| &w.leases, Status::NoEnt))
    }

    // ---- device ----------------------------------------------------------------

    pub fn query(&self) -> PlQueryDeviceResp {
        PlQueryDeviceResp {
            abi_version: PL_ABI_VERSION.into(),
            page_size: PL_PAGE_SIZE as u32,
            features: PL_FEATURES_ALL,
            max_contexts: self.limits.max_contexts,
            max_mrs: self.limits.max_mrs,
            max_pages_per_mr: self.limits.max_pages_per_mr,
            max_leases: self.limits.max_leases,
            max_children_per_context: self.limits.max_children_per_context,
            max_request_bytes: PL_MAX_REQUEST_BYTES,
        }
    }

    // ---- memory map --------------------------------------------------------------

    /// Installs the frontend's new memory map. MRs with a page outside it
    /// are revoked (MR_REVOKED, reason memory-map) before this returns.
    /// Returns how many MRs were revoked.
    pub fn set_memory(&self, ram: Box<dyn GuestRam>) -> usize {
        let mut w = self.writer();
        self.counters
            .memory_map_updates
            .fetch_add(1, Ordering::Relaxed);
        let mut revoked = 0;
        for (_, mr) in self.mrs.snapshot().iter() {
            if let Pages::Own(pages) = &mr.pages {
                if mr.gate.is_live() && pages.iter().any(|&g| !ram.contains(g, PL_PAGE_SIZE)) {
                    self.revoke_locked(&mut w, mr, RevokeReason::MemoryMap, true);
                    revoked += 1;
                }
            }
        }
        self.publish_pins(&w);
        self.memory.store(Some(Arc::new(ram)));
        revoked
    }

    /// Device reset: what a real device forgets when the driver resets it
    /// (virtio status 0, which QEMU passes on by stopping the vhost-user
    /// queues). Every context is closed (MRs destroyed, pins dropped,
    /// leases released) and forgotten with its children; queued events
    /// about them are dropped, since the driver that would read them is
    /// gone. Counters stay: they describe the whole connection.
    pub fn reset(&self) -> usize {
        let mut w = self.writer();
        let contexts = self.contexts.snapshot();
        for (_, ctx) in contexts.iter() {
            if !ctx.is_closed() {
                // Cannot fail: only an already closed context is refused.
                let _ = self.close_locked(&mut w, ctx);
            }
            let children = std::mem::take(&mut ctx.hw().children);
            for h in children {
                if self.children.remove(h).is_some() {
                    w.children.free(h);
                }
            }
            if self.contexts.remove(ctx.handle).is_some() {
                w.contexts.free(ctx.handle);
                self.live_contexts.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.events.clear();
        self.needs_reset.store(false, Ordering::SeqCst);
        self.counters.device_resets.fetch_add(1, Ordering::Relaxed);
        self.publish_pins(&w);
        contexts.len()
    }

    pub fn live_contexts(&self) -> u32 {
        self.live_contexts.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::abi::*;
    use crate::guest_ram::MmapRam;
    use crate::model::table::Handle;
    use crate::model::{AtomicOp, Device, Limits};

    use crate::model::test_support::*;

    // ---- memory map changes -------------------------------------------------------------------

    #[test]
    fn memory_map_change_revokes_exactly_the_mrs_outside_it() {
        let r1 = (0u64, MIB);
        let r2 = (4 * MIB as u64, MIB);
        let full = two_region_map(r1, r2);
        let dev = Arc::new(Device::new(Limits::default()));
        dev.set_memory(Box::new(MmapRam::new(full.clone())));
        let a = ctx(&dev);
        let b = ctx(&dev);
        let la = Layout::pages(run(0x1000, 2));
        let in_r1 = reg(&dev, a, &la, PL_ACCESS_ALL);
        let in_r2 = reg(&dev, a, &Layout::pages(vec![r2.0 + 0x3000]), PL_ACCESS_ALL);
        let both = reg(&dev, b, &Layout::pages(vec![0x5000, r2.0]), PL_ACCESS_ALL);
        let e = dev.export_mr(a, in_r2).unwrap().export;
        let imp = dev
            .import_mr(b, &import_req(e, PL_ACCESS_READ))
            .unwrap()
            .key;
        let e1 = dev.export_mr(a, in_r1).unwrap().export;
        let imp1 = dev
            .import_mr(b, &import_req(e1, PL_ACCESS_READ))
            .unwrap()
            .key;
        assert_eq!(dev.pin_totals(), (5, 5));

        let revoked = dev.set_memory(Box::new(without_region(&full, r2.0, r2.1)));
        assert_eq!(revoked, 2);
        assert_eq!(dev.pin_totals(), (2, 2));
        let mut ev = event_summary(&dev);
        ev.sort();
        let mut want = vec![
            (PL_EVENT_MR_REVOKED, a, [in_r2, PL_REVOKE_MEMORY_MAP, 1, 0]),
            (PL_EVENT_MR_REVOKED, b, [both, PL_REVOKE_MEMORY_MAP, 2, 0]),
            (PL_EVENT_MR_REVOKED, b, [imp, PL_REVOKE_SOURCE_GONE, 0, 0]),
        ];
        want.sort();
        assert_eq!(ev, want);
        for k in [in_r2, both, imp] {
            assert!(!dev.mr(k).unwrap().is_live());
        }
        assert_eq!(
            mr_status(&dev, both).unwrap().revoke_reason.as_deref(),
            Some("memory-map")
        );
        assert_eq!(dev.status().memory_regions.len(), 1);
        // The MRs inside the new map still work, bytes and all.
        let r = ram(&dev);
        la.set_word(r.as_ref().as_ref(), 0, 0x77);
        dev.atomic(a, AtomicOp::FetchAdd, &atomic(in_r1, 0, 1, 0))
            .unwrap();
        assert_eq!(la.word(r.as_ref().as_ref(), 0), 0x78);
        let kb = reg(&dev, b, &Layout::pages(vec![0x9000]), PL_ACCESS_ALL);
        write(&dev, b, imp1, 0, kb, 0, 8).unwrap();
        assert_eq!(st(write(&dev, b, imp, 0, kb, 0, 8)), Status::Canceled);
        // REG_MR in the removed region is refused now.
        assert_eq!(
            st(dev.reg_mr(a, Layout::pages(vec![r2.0]).req(PL_ACCESS_ALL))),
            Status::Fault
        );

        // Bringing the region back does not revive anything.
        assert_eq!(dev.set_memory(Box::new(MmapRam::new(full.clone()))), 0);
        assert!(!dev.mr(in_r2).unwrap().is_live());
        assert_eq!(st(write(&dev, b, kb, 0, both, 0, 8)), Status::Canceled);
        assert!(dev.events.pop().is_none());
        assert_eq!(dev.pin_totals(), (3, 3));
        dev.dereg_mr(b, both).unwrap();
        assert_eq!(dev.pin_totals(), (3, 3));
    }

    #[test]
    fn a_contiguous_page_run_across_two_adjacent_regions_registers() {
        // Two regions that touch: a run of pages crossing the seam is one run
        // in guest-physical space but not inside one mapping.
        let dev = device_with(Limits::default(), &[(0, MIB), (MIB as u64, MIB)]);
        let c = ctx(&dev);
        let l = Layout::pages(run(MIB as u64 - 2 * PAGE, 4));
        let k = reg(&dev, c, &l, PL_ACCESS_ALL);
        let src = Layout::pages(run(0x10000, 4));
        let ks = reg(&dev, c, &src, PL_ACCESS_ALL);
        let r = ram(&dev);
        let data = bytes(4 * PAGE as usize, 9);
        src.write(r.as_ref().as_ref(), 0, &data);
        write(&dev, c, ks, 0, k, 0, 4 * PAGE).unwrap();
        assert_eq!(l.all(r.as_ref().as_ref()), data);
        // A run that leaves guest memory is still refused, naming the page.
        let bad = Layout::pages(run(2 * MIB as u64 - PAGE, 2));
        let e = dev.reg_mr(c, bad.req(PL_ACCESS_ALL)).unwrap_err();
        assert_eq!(e.status, Status::Fault);
        assert!(e.why.contains("page 1 address 0x200000"), "{}", e.why);
    }

    // ---- events ------------------------------------------------------------------------------

    #[test]
    fn event_backlog_overflow_drops_and_counts() {
        let dev = device_limited(|l| l.event_backlog = 2);
        let cs: Vec<Handle> = (0..6).map(|_| ctx(&dev)).collect();
        for &c in &cs[..5] {
            dev.close_context(c).unwrap();
        }
        let e1 = dev.events.pop().unwrap();
        let e2 = dev.events.pop().unwrap();
        assert_eq!((e1.seq, e1.flags, e1.dropped, e1.ctx), (1, 0, 0, cs[0]));
        assert_eq!((e2.seq, e2.flags, e2.dropped, e2.ctx), (2, 0, 0, cs[1]));
        assert!(dev.events.pop().is_none());
        dev.close_context(cs[5]).unwrap();
        let e3 = dev.events.pop().unwrap();
        assert_eq!(e3.kind, PL_EVENT_CONTEXT_TORN_DOWN);
        assert_eq!(
            (e3.seq, e3.flags, e3.dropped, e3.ctx),
            (3, PL_EVENT_F_DROPPED, 3, cs[5])
        );
        let s = dev.status().counters.events;
        assert_eq!((s.queued, s.delivered, s.dropped, s.backlog), (3, 3, 3, 0));
        // Dropped events do not undo their effects: contexts are closed.
        for &c in &cs {
            assert_eq!(st(dev.close_context(c)), Status::Shutdown);
        }
    }
}
