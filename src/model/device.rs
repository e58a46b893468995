//! The device: contexts, MRs, leases, DMA and events, as typed operations.
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
use crate::model::context::{Child, ChildKind, Context, Export};
use crate::model::counters::Counters;
use crate::model::events::{EventQueue, DEFAULT_BACKLOG};
use crate::model::lease::{Lease, LeaseState, LeaseTable, Policy};
use crate::model::memory::GuestRam;
use crate::model::mr::{FileRange, Gate, Mr, Pages, PinCounts, RevokeReason};
use crate::model::table::{Dead, Handle, Slots, Table};

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

/// How many bytes a DMA copies between checks that its MRs are still live:
/// a revoke waits at most for one such piece (about 6 us at memcpy speed),
/// and bigger pieces keep the per-piece bookkeeping off the copy's cost.
const DMA_CHUNK: u64 = 256 * 1024;

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
            return Err(Reject::new(
                Status::Shutdown,
                format!("context {h:#x} is closed"),
            ));
        }
        Ok(c)
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

    // ---- contexts ------------------------------------------------------------

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

    fn close_locked(&self, w: &mut Writer, ctx: &Arc<Context>) -> Result<PlCloseContextResp> {
        let (mrs, leases) = {
            let mut hw = ctx.hw();
            if hw.closed {
                return Err(Reject::new(
                    Status::Shutdown,
                    format!("context {:#x} is closed", ctx.handle),
                ));
            }
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

    fn alloc_child(
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
        let mut hw = ctx.hw();
        if hw.closed {
            return Err(Reject::new(
                Status::Shutdown,
                format!("context {ctx_h:#x} is closed"),
            ));
        }
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

    // ---- memory regions ----------------------------------------------------------

    fn check_reg(&self, r: &RegMr, ram: &dyn GuestRam) -> Result<()> {
        if r.access == 0 || r.access & !PL_ACCESS_ALL != 0 {
            return Err(Reject::new(
                Status::Inval,
                format!(
                    "access flags {:#x} (valid: non-zero subset of {PL_ACCESS_ALL:#x})",
                    r.access
                ),
            ));
        }
        if r.flags & !PL_REG_FLAGS_ALL != 0 {
            return Err(Reject::new(
                Status::Inval,
                format!("REG_MR flags {:#x} (valid: {PL_REG_FLAGS_ALL:#x})", r.flags),
            ));
        }
        if r.flags & PL_REG_SCRUB != 0 && r.access & PL_ACCESS_WRITE == 0 {
            return Err(Reject::new(
                Status::Inval,
                format!(
                    "PL_REG_SCRUB needs PL_ACCESS_WRITE (access {:#x}): the scrubber writes canaries",
                    r.access
                ),
            ));
        }
        let n = r.pages.len() as u64;
        if n == 0 {
            return Err(Reject::new(Status::Inval, "page list is empty"));
        }
        if n > u64::from(self.limits.max_pages_per_mr) {
            return Err(Reject::new(
                Status::TooBig,
                format!("{n} pages, limit {}", self.limits.max_pages_per_mr),
            ));
        }
        if u64::from(r.first_page_offset) >= PL_PAGE_SIZE {
            return Err(Reject::new(
                Status::Inval,
                format!(
                    "first_page_offset {} is not below the page size",
                    r.first_page_offset
                ),
            ));
        }
        // The pages must hold the range exactly: no page missing, none spare.
        let span = u64::from(r.first_page_offset)
            .checked_add(r.length)
            .ok_or_else(|| {
                Reject::new(Status::Range, format!("length {:#x} overflows", r.length))
            })?;
        let needed = span.div_ceil(PL_PAGE_SIZE);
        if r.length == 0 || needed != n {
            return Err(Reject::new(
                Status::Inval,
                format!(
                    "offset {} + length {} needs {needed} pages, the list has {n}",
                    r.first_page_offset, r.length
                ),
            ));
        }
        // Bounds-check runs of physically contiguous pages at once; on a
        // failure, find the first page that is outside, for the message.
        let mut i = 0;
        while i < r.pages.len() {
            let first = r.pages[i];
            let mut n = 1;
            while i + n < r.pages.len()
                && r.pages[i + n] == first.wrapping_add(n as u64 * PL_PAGE_SIZE)
            {
                n += 1;
            }
            for (j, &gpa) in r.pages[i..i + n].iter().enumerate() {
                if gpa % PL_PAGE_SIZE != 0 {
                    return Err(Reject::new(
                        Status::Inval,
                        format!("page {} address {gpa:#x} is not page aligned", i + j),
                    ));
                }
            }
            // A run may also fail by spanning two adjacent regions, each
            // page being fine: only a page that is outside refuses the MR.
            if !ram.contains(first, n as u64 * PL_PAGE_SIZE) {
                let outside = r.pages[i..i + n]
                    .iter()
                    .enumerate()
                    .find(|(_, &g)| !ram.contains(g, PL_PAGE_SIZE));
                if let Some((j, &gpa)) = outside {
                    return Err(Reject::new(
                        Status::Fault,
                        format!("page {} address {gpa:#x} is outside guest memory", i + j),
                    ));
                }
            }
            i += n;
        }
        if let Some(f) = &r.file {
            if f.offset.checked_add(r.length).is_none() {
                return Err(Reject::new(
                    Status::Range,
                    format!(
                        "file offset {:#x} + length {:#x} overflows",
                        f.offset, r.length
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The lease of holder `ctx` that covers `file`, if any.
    fn covering_lease(&self, ctx: Handle, f: &FileRange, len: u64) -> Option<Arc<Lease>> {
        let mut found = None;
        self.leases
            .for_each_overlapping(&f.file, f.offset, f.offset.saturating_add(len), |l| {
                if l.holder == ctx
                    && l.state() == LeaseState::Active
                    && l.covers(&f.file, f.offset, len)
                {
                    found = Some(l.clone());
                    return false;
                }
                true
            });
        found
    }

    pub fn reg_mr(&self, ctx_h: Handle, r: RegMr) -> Result<PlRegMrResp> {
        let ctx = self.open_context(ctx_h)?;
        // Checks and insertion under one writer-lock hold: a memory-map
        // change or a lease release cannot slip in between them.
        let mut w = self.writer();
        let ram = self.ram()?;
        self.check_reg(&r, ram.as_ref().as_ref())?;
        let lease = r
            .file
            .as_ref()
            .and_then(|f| self.covering_lease(ctx_h, f, r.length));
        let mut hw = ctx.hw();
        if hw.closed {
            return Err(Reject::new(
                Status::Shutdown,
                format!("context {ctx_h:#x} is closed"),
            ));
        }
        let key = w.mrs.alloc().ok_or_else(|| {
            Reject::new(
                Status::NoMem,
                format!("MR table full ({} MRs)", self.limits.max_mrs),
            )
        })?;
        for &gpa in &r.pages {
            w.pins.pin(gpa);
        }
        self.publish_pins(&w);
        let lease_h = lease.as_ref().map_or(0, |l| l.handle);
        let mr = Mr {
            key,
            ctx: ctx_h,
            context: Arc::downgrade(&ctx),
            access: r.access,
            flags: r.flags,
            first_page_offset: r.first_page_offset,
            length: r.length,
            pages: Pages::Own(r.pages.into_boxed_slice()),
            file: r.file,
            created: SystemTime::now(),
            gate: Gate::default(),
            revoke_reason: Mutex::new(None),
            lease: Mutex::new(lease),
            export: Mutex::new(std::sync::Weak::new()),
            imports: Mutex::new(Vec::new()),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            scrub: Default::default(),
        };
        self.mrs.insert(key, Arc::new(mr));
        hw.mrs.insert(key);
        Ok(PlRegMrResp {
            key,
            lease: lease_h,
        })
    }

    pub fn dereg_mr(&self, ctx_h: Handle, key: Handle) -> Result<()> {
        let ctx = self.open_context(ctx_h)?;
        let mr = self.own_mr(ctx_h, key)?;
        let mut w = self.writer();
        // A racing DEREG_MR of the same key may have won since the lookup.
        if !ctx.hw().mrs.remove(&key) {
            return Err(Reject::new(
                Status::Stale,
                format!("MR key {key:#x} is gone"),
            ));
        }
        self.destroy_mr_locked(&mut w, &mr, RevokeReason::Deregistered);
        self.publish_pins(&w);
        Ok(())
    }

    /// Revokes `mr` if live: no DMA touches its pages when this returns.
    /// Pins are dropped, imports of it are revoked too (with events), and an
    /// MR_REVOKED event goes to the owner when `notify`. Returns pages unpinned.
    fn revoke_locked(&self, w: &mut Writer, mr: &Mr, reason: RevokeReason, notify: bool) -> u64 {
        if !mr.gate.revoke() {
            return 0;
        }
        *mr.revoke_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        if reason.is_revoke() {
            self.counters.revokes.fetch_add(1, Ordering::Relaxed);
        }
        let mut unpinned = 0;
        if let Pages::Own(pages) = &mr.pages {
            for &gpa in pages.iter() {
                w.pins.unpin(gpa);
            }
            unpinned = pages.len() as u64;
        }
        let imports = std::mem::take(&mut *mr.imports.lock().unwrap_or_else(|e| e.into_inner()));
        for import in imports.iter().filter_map(|i| i.upgrade()) {
            // A context being closed hears nothing about its own MRs.
            let owner_open = import.context.upgrade().is_some_and(|c| !c.is_closed());
            self.revoke_locked(w, &import, RevokeReason::SourceGone, owner_open);
        }
        if notify {
            let lease = mr
                .lease
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map_or(0, |l| l.handle);
            self.events.push(
                PL_EVENT_MR_REVOKED,
                mr.ctx,
                [mr.key, reason.wire(), unpinned, lease],
            );
        }
        unpinned
    }

    /// Revokes and removes `mr` from the MR table (the caller has taken it
    /// out of its context's set). Returns pages unpinned.
    fn destroy_mr_locked(&self, w: &mut Writer, mr: &Arc<Mr>, reason: RevokeReason) -> u64 {
        let unpinned = self.revoke_locked(w, mr, reason, false);
        if self.mrs.remove(mr.key).is_some() {
            w.mrs.free(mr.key);
        }
        unpinned
    }

    // ---- DMA ---------------------------------------------------------------------

    fn need_access(mr: &Mr, bit: u32, what: &str) -> Result<()> {
        if mr.access & bit == 0 {
            return Err(Reject::new(
                Status::Perm,
                format!(
                    "MR key {:#x} (access {:#x}) does not allow {what}",
                    mr.key, mr.access
                ),
            ));
        }
        Ok(())
    }

    fn check_range(mr: &Mr, offset: u64, len: u64) -> Result<()> {
        mr.check_range(offset, len).map_err(|s| {
            Reject::new(
                s,
                format!(
                    "offset {offset:#x} + length {len:#x} is outside MR key {:#x} (length {:#x})",
                    mr.key, mr.length
                ),
            )
        })
    }

    pub(crate) fn canceled(mr: &Mr) -> Reject {
        Reject::new(
            Status::Canceled,
            format!("MR key {:#x} was revoked", mr.key),
        )
    }

    pub(crate) fn ram_error(e: crate::model::memory::RamError) -> Reject {
        Reject::new(Status::Io, e.to_string())
    }

    /// Counts a device access to `mr` whose lease was lost; returns that
    /// lease when it was.
    pub(crate) fn note_access(&self, mr: &Mr) -> Option<Arc<Lease>> {
        let lease = mr.lease.lock().unwrap_or_else(|e| e.into_inner());
        let mut cur = lease.clone();
        drop(lease);
        if cur.is_none() {
            if let Pages::Imported(src) = &mr.pages {
                cur = src.lease.lock().unwrap_or_else(|e| e.into_inner()).clone();
            }
        }
        let l = cur.filter(|l| l.state() == LeaseState::Lost)?;
        l.lost_accesses.fetch_add(1, Ordering::Relaxed);
        self.counters.lost_accesses.fetch_add(1, Ordering::Relaxed);
        Some(l)
    }

    pub fn dma(&self, ctx_h: Handle, dir: DmaDir, req: &PlDmaReq) -> Result<()> {
        self.open_context(ctx_h)?;
        let local = self.own_mr(ctx_h, req.local_key)?;
        let remote = self.mr(req.remote_key)?;
        let (src, src_off, dst, dst_off) = match dir {
            DmaDir::Write => (&local, req.local_offset, &remote, req.remote_offset),
            DmaDir::Read => (&remote, req.remote_offset, &local, req.local_offset),
        };
        Self::need_access(src, PL_ACCESS_READ, "device reads")?;
        Self::need_access(dst, PL_ACCESS_WRITE, "device writes")?;
        Self::check_range(src, src_off, req.length)?;
        Self::check_range(dst, dst_off, req.length)?;
        let ram = self.ram()?;
        let _inside = enter_all(&[src, dst])?;
        let _ = self.note_access(src);
        let _ = self.note_access(dst);
        let mut done = 0u64;
        let mut since_check = 0u64;
        while done < req.length {
            let (sg, sn) = locate(src, src_off + done, req.length - done);
            let (dg, dn) = locate(dst, dst_off + done, req.length - done);
            let n = sn.min(dn);
            ram.copy(sg, dg, n).map_err(Self::ram_error)?;
            done += n;
            since_check += n;
            if since_check >= DMA_CHUNK && done < req.length {
                since_check = 0;
                if !src.is_live() {
                    return Err(Self::canceled(src));
                }
                if !dst.is_live() {
                    return Err(Self::canceled(dst));
                }
            }
        }
        src.bytes_read.fetch_add(done, Ordering::Relaxed);
        dst.bytes_written.fetch_add(done, Ordering::Relaxed);
        self.counters.bytes_read.fetch_add(done, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(done, Ordering::Relaxed);
        Ok(())
    }

    pub fn atomic(&self, ctx_h: Handle, op: AtomicOp, req: &PlAtomicReq) -> Result<u64> {
        self.open_context(ctx_h)?;
        let mr = self.mr(req.key)?;
        Self::need_access(&mr, PL_ACCESS_ATOMIC, "atomics")?;
        if !req.offset.is_multiple_of(8) {
            return Err(Reject::new(
                Status::Inval,
                format!("atomic offset {:#x} is not 8-byte aligned", req.offset),
            ));
        }
        if op == AtomicOp::FetchAdd && req.swap != 0 {
            return Err(Reject::new(
                Status::Inval,
                format!("FETCH_ADD swap field must be 0, saw {:#x}", req.swap),
            ));
        }
        Self::check_range(&mr, req.offset, 8)?;
        let (gpa, _) = locate(&mr, req.offset, 8);
        if gpa % 8 != 0 {
            return Err(Reject::new(
                Status::Inval,
                format!(
                    "MR offset {:#x} lands at guest address {gpa:#x}, not 8-byte aligned (the MR starts {} bytes into its first page)",
                    req.offset,
                    mr.first_page_offset()
                ),
            ));
        }
        let ram = self.ram()?;
        let _in = enter_all(&[&mr])?;
        let _ = self.note_access(&mr);
        let v = match op {
            AtomicOp::CompareSwap => ram.compare_swap_u64(gpa, req.operand, req.swap),
            AtomicOp::FetchAdd => ram.fetch_add_u64(gpa, req.operand),
        }
        .map_err(Self::ram_error)?;
        mr.bytes_written.fetch_add(8, Ordering::Relaxed);
        self.counters.bytes_written.fetch_add(8, Ordering::Relaxed);
        Ok(v)
    }

    fn check_pattern(req: &PlPatternReq) -> Result<()> {
        if req.mode != PL_PATTERN_CONST && req.mode != PL_PATTERN_OFFSET_XOR {
            return Err(Reject::new(
                Status::Inval,
                format!("pattern mode {} (valid: 0 const, 1 offset-xor)", req.mode),
            ));
        }
        if req.reserved != 0 {
            return Err(Reject::new(
                Status::Inval,
                format!("reserved field is {:#x}, must be 0", req.reserved),
            ));
        }
        if !req.offset.is_multiple_of(8) || !req.length.is_multiple_of(8) {
            return Err(Reject::new(
                Status::Inval,
                format!(
                    "pattern offset {:#x} and length {:#x} must be multiples of 8",
                    req.offset, req.length
                ),
            ));
        }
        Ok(())
    }

    fn pattern_word(req: &PlPatternReq, mr_offset: u64) -> u64 {
        match req.mode {
            PL_PATTERN_OFFSET_XOR => req.pattern ^ mr_offset,
            _ => req.pattern,
        }
    }

    /// Writes the pattern over `[offset, offset + length)` of the MR.
    pub fn fill(&self, ctx_h: Handle, req: &PlPatternReq) -> Result<()> {
        self.open_context(ctx_h)?;
        Self::check_pattern(req)?;
        let mr = self.mr(req.key)?;
        Self::need_access(&mr, PL_ACCESS_WRITE, "device writes")?;
        Self::check_range(&mr, req.offset, req.length)?;
        let ram = self.ram()?;
        let _in = enter_all(&[&mr])?;
        let _ = self.note_access(&mr);
        let mut buf = Vec::new();
        self.walk(&mr, req.offset, req.length, |gpa, off, n| {
            buf.clear();
            buf.extend((0..n / 8).flat_map(|i| Self::pattern_word(req, off + i * 8).to_le_bytes()));
            ram.write(gpa, &buf).map_err(Self::ram_error)
        })?;
        mr.bytes_written.fetch_add(req.length, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(req.length, Ordering::Relaxed);
        Ok(())
    }

    /// Compares `[offset, offset + length)` of the MR with the pattern.
    pub fn verify(&self, ctx_h: Handle, req: &PlPatternReq) -> Result<PlVerifyResp> {
        self.open_context(ctx_h)?;
        Self::check_pattern(req)?;
        let mr = self.mr(req.key)?;
        Self::need_access(&mr, PL_ACCESS_READ, "device reads")?;
        Self::check_range(&mr, req.offset, req.length)?;
        let ram = self.ram()?;
        let _in = enter_all(&[&mr])?;
        let _ = self.note_access(&mr);
        let mut resp = PlVerifyResp {
            first_bad_offset: u64::MAX,
            ..Default::default()
        };
        let mut buf = Vec::new();
        self.walk(&mr, req.offset, req.length, |gpa, off, n| {
            buf.resize(n as usize, 0);
            ram.read(gpa, &mut buf).map_err(Self::ram_error)?;
            for (i, w) in buf.chunks_exact(8).enumerate() {
                let o = off + i as u64 * 8;
                let seen = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
                if seen != Self::pattern_word(req, o) {
                    if resp.mismatches == 0 {
                        resp.first_bad_offset = o;
                        resp.first_bad_value = seen;
                    }
                    resp.mismatches += 1;
                }
            }
            Ok(())
        })?;
        mr.bytes_read.fetch_add(req.length, Ordering::Relaxed);
        self.counters
            .bytes_read
            .fetch_add(req.length, Ordering::Relaxed);
        Ok(resp)
    }

    /// Calls `f(gpa, mr_offset, len)` over contiguous runs of the range,
    /// checking between runs that the MR was not revoked meanwhile.
    pub(crate) fn walk<F>(&self, mr: &Mr, offset: u64, len: u64, mut f: F) -> Result<()>
    where
        F: FnMut(u64, u64, u64) -> Result<()>,
    {
        let mut done = 0;
        while done < len {
            let (gpa, n) = locate(mr, offset + done, (len - done).min(DMA_CHUNK));
            f(gpa, offset + done, n)?;
            done += n;
            if done < len && !mr.is_live() {
                return Err(Self::canceled(mr));
            }
        }
        Ok(())
    }

    // ---- leases ------------------------------------------------------------------

    fn lease_end(start: u64, length: u64) -> Result<u64> {
        if length == 0 {
            return Ok(u64::MAX);
        }
        start.checked_add(length).ok_or_else(|| {
            Reject::new(
                Status::Range,
                format!("range start {start:#x} + length {length:#x} overflows"),
            )
        })
    }

    pub fn lease_take(&self, ctx_h: Handle, req: &PlLeaseTakeReq) -> Result<Handle> {
        let ctx = self.open_context(ctx_h)?;
        let policy = Policy::from_wire(req.policy).ok_or_else(|| {
            Reject::new(
                Status::Inval,
                format!(
                    "lease policy {} (valid: 1 revoke, 2 wait, 3 timeout)",
                    req.policy
                ),
            )
        })?;
        if req.file.reserved != 0 {
            return Err(Reject::new(
                Status::Inval,
                "file identity reserved field is not 0",
            ));
        }
        let end = Self::lease_end(req.start, req.length)?;
        let mut w = self.writer();
        let breaking = self
            .leases
            .overlapping(&req.file, req.start, end)
            .into_iter()
            .find(|l| l.state() == LeaseState::Breaking);
        if let Some(l) = breaking {
            return Err(Reject::new(
                Status::Busy,
                format!("lease {:#x} on the range is being broken", l.handle),
            ));
        }
        let mut hw = ctx.hw();
        if hw.closed {
            return Err(Reject::new(
                Status::Shutdown,
                format!("context {ctx_h:#x} is closed"),
            ));
        }
        let h = w.leases.alloc().ok_or_else(|| {
            Reject::new(
                Status::NoMem,
                format!("lease table full ({} leases)", self.limits.max_leases),
            )
        })?;
        let lease = Arc::new(Lease::new(
            h,
            req.file,
            req.start,
            end,
            &ctx,
            req.owner_pid,
            policy,
        ));
        // MRs of this holder registered before the lease come under it.
        for key in hw.mrs.iter() {
            if let Some(mr) = self.mrs.get(*key) {
                if let Some(f) = mr.file.as_ref().filter(|_| mr.is_live()) {
                    if lease.covers(&f.file, f.offset, mr.length) {
                        let mut l = mr.lease.lock().unwrap_or_else(|e| e.into_inner());
                        if l.is_none() {
                            *l = Some(lease.clone());
                        }
                    }
                }
            }
        }
        self.leases.insert(lease);
        hw.leases.insert(h);
        Ok(h)
    }

    pub fn lease_release(&self, ctx_h: Handle, req: &PlLeaseReleaseReq) -> Result<()> {
        let ctx = self.open_context(ctx_h)?;
        if req.reason != PL_RELEASE_HOLDER && req.reason != PL_RELEASE_LOST {
            return Err(Reject::new(
                Status::Inval,
                format!("release reason {} (valid: 0 holder, 1 lost)", req.reason),
            ));
        }
        if req.reserved != 0 {
            return Err(Reject::new(Status::Inval, "reserved field is not 0"));
        }
        let lease = self.lease(req.lease)?;
        if lease.holder != ctx_h {
            return Err(Reject::new(
                Status::Perm,
                format!(
                    "lease {:#x} is held by context {:#x}, not {ctx_h:#x}",
                    lease.handle, lease.holder
                ),
            ));
        }
        let mut w = self.writer();
        let mut hw = ctx.hw();
        let under: Vec<Arc<Mr>> = hw
            .mrs
            .iter()
            .filter_map(|k| self.mrs.get(*k))
            .filter(|mr| {
                mr.lease
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .is_some_and(|l| Arc::ptr_eq(l, &lease))
            })
            .collect();
        if req.reason == PL_RELEASE_LOST && lease.state() == LeaseState::Revoked {
            return Err(Reject::new(
                Status::Inval,
                format!(
                    "lease {:#x} was revoked (its MRs are gone); release it with reason holder",
                    lease.handle
                ),
            ));
        }
        if req.reason == PL_RELEASE_LOST {
            // The kernel dropped the lease while pins remain: keep it in the
            // table, marked, so every later access under it is counted.
            lease.set_state(LeaseState::Lost);
            let live: Vec<&Arc<Mr>> = under.iter().filter(|m| m.is_live()).collect();
            let pages: u64 = live.iter().map(|m| m.npages() as u64).sum();
            self.events.push(
                PL_EVENT_LEASE_LOST,
                ctx_h,
                [lease.handle, live.len() as u64, pages, 0],
            );
            return Ok(());
        }
        for mr in &under {
            *mr.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        if self.leases.remove(lease.handle).is_some() {
            w.leases.free(lease.handle);
            hw.leases.remove(&lease.handle);
        }
        Ok(())
    }

    /// The guest kernel is breaking layout leases on a file range (truncate,
    /// hole punch, reflink, ...). Applies each overlapping lease's policy.
    pub fn lease_break(&self, req: &PlLeaseBreakReq) -> Result<PlLeaseBreakResp> {
        if !(PL_BREAK_TRUNCATE..=PL_BREAK_OTHER).contains(&req.reason) {
            return Err(Reject::new(
                Status::Inval,
                format!("break reason {} (valid: 1..={PL_BREAK_OTHER})", req.reason),
            ));
        }
        if req.reserved != 0 || req.file.reserved != 0 {
            return Err(Reject::new(Status::Inval, "reserved field is not 0"));
        }
        let end = Self::lease_end(req.start, req.length)?;
        let mut w = self.writer();
        let mut resp = PlLeaseBreakResp::default();
        for lease in self.leases.overlapping(&req.file, req.start, end) {
            resp.leases += 1;
            match lease.state() {
                LeaseState::Breaking => {
                    resp.leases_held += 1;
                    continue;
                }
                LeaseState::Revoked | LeaseState::Lost => continue,
                LeaseState::Active => {}
            }
            let (held, mrs_revoked, pages) = self.break_locked(&mut w, &lease, req.reason);
            resp.leases_held += held;
            resp.mrs_revoked += mrs_revoked;
            resp.pages_unpinned += pages;
        }
        self.publish_pins(&w);
        Ok(resp)
    }

    /// Breaks one ACTIVE lease with `reason`, applying its policy: returns
    /// (leases held, MRs revoked, pages unpinned).
    fn break_locked(&self, w: &mut Writer, lease: &Arc<Lease>, reason: u32) -> (u32, u32, u64) {
        let (mut held, mut mrs_revoked, mut pages) = (0, 0, 0);
        let holder = lease.holder_context.upgrade();
        let in_range: Vec<Arc<Mr>> = holder
            .as_ref()
            .map(|c| {
                c.hw()
                    .mrs
                    .iter()
                    .filter_map(|k| self.mrs.get(*k))
                    .filter(|mr| {
                        mr.file.as_ref().is_some_and(|f| {
                            f.file == lease.file
                                && lease.overlaps(f.offset, f.offset.saturating_add(mr.length))
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let live_in_range = in_range.iter().filter(|m| m.is_live()).count() as u64;
        match lease.policy {
            Policy::Revoke => {
                for mr in &in_range {
                    if mr.is_live() {
                        pages += self.revoke_locked(w, mr, RevokeReason::LeaseBreak, true);
                        mrs_revoked += 1;
                    }
                }
                lease.set_state(LeaseState::Revoked);
            }
            Policy::Wait | Policy::Timeout => {
                lease.set_state(LeaseState::Breaking);
                held += 1;
            }
        }
        self.events.push(
            PL_EVENT_LEASE_BROKEN,
            lease.holder,
            [
                lease.handle,
                reason.into(),
                lease.policy.wire().into(),
                live_in_range,
            ],
        );
        (held, mrs_revoked, pages)
    }

    // ---- fault injection (docs/faults.md 1.3) ---------------------------------------

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
        self.needs_reset.store(true, Ordering::SeqCst);
        self.events
            .push(PL_EVENT_NEEDS_RESET, 0, [u64::from(rule), 0, 0, 0]);
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    // ---- exports -----------------------------------------------------------------

    /// Exports an MR: the same export while it lives, one more reference.
    pub fn export_mr(&self, ctx_h: Handle, key: Handle) -> Result<PlExportMrResp> {
        let ctx = self.open_context(ctx_h)?;
        let mr = self.own_mr(ctx_h, key)?;
        if !mr.is_live() {
            return Err(Self::canceled(&mr));
        }
        let mut w = self.writer();
        let mut hw = ctx.hw();
        if hw.closed {
            return Err(Reject::new(
                Status::Shutdown,
                format!("context {ctx_h:#x} is closed"),
            ));
        }
        let mut slot = mr.export.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = slot.upgrade() {
            // refs only reaches 0 under this lock, just before removal.
            if e.refs() > 0 {
                let refs = e.refs.fetch_add(1, Ordering::AcqRel) + 1;
                return Ok(PlExportMrResp {
                    export: e.handle,
                    refs,
                    reserved: 0,
                });
            }
        }
        let h = self.alloc_child(&mut w, &ctx, hw.children.len())?;
        let export = Arc::new(Export {
            handle: h,
            mr: mr.clone(),
            refs: AtomicU32::new(1),
        });
        *slot = Arc::downgrade(&export);
        self.children.insert(
            h,
            Arc::new(Child {
                handle: h,
                context: ctx.clone(),
                kind: ChildKind::Export(export),
                created: SystemTime::now(),
            }),
        );
        hw.children.insert(h);
        Ok(PlExportMrResp {
            export: h,
            refs: 1,
            reserved: 0,
        })
    }

    /// Makes an MR in `ctx` that aliases an exported MR's pages.
    pub fn import_mr(&self, ctx_h: Handle, req: &PlImportMrReq) -> Result<PlRegMrResp> {
        let ctx = self.open_context(ctx_h)?;
        if req.reserved != 0 {
            return Err(Reject::new(Status::Inval, "reserved field is not 0"));
        }
        let child = self
            .children
            .get(req.export)
            .ok_or_else(|| self.dead("export", req.export, |w| &w.children, Status::NoEnt))?;
        let ChildKind::Export(export) = &child.kind else {
            return Err(Reject::new(
                Status::Inval,
                format!("child {:#x} is an event channel, not an export", req.export),
            ));
        };
        let src = export.mr.clone();
        if req.access == 0 || req.access & !src.access != 0 {
            return Err(Reject::new(
                Status::Perm,
                format!(
                    "import access {:#x} is not a non-empty subset of the exported MR's {:#x}",
                    req.access, src.access
                ),
            ));
        }
        let mut w = self.writer();
        if !src.is_live() {
            return Err(Self::canceled(&src));
        }
        let mut hw = ctx.hw();
        if hw.closed {
            return Err(Reject::new(
                Status::Shutdown,
                format!("context {ctx_h:#x} is closed"),
            ));
        }
        let key = w.mrs.alloc().ok_or_else(|| {
            Reject::new(
                Status::NoMem,
                format!("MR table full ({} MRs)", self.limits.max_mrs),
            )
        })?;
        let mr = Arc::new(Mr {
            key,
            ctx: ctx_h,
            context: Arc::downgrade(&ctx),
            access: req.access,
            flags: 0,
            first_page_offset: 0,
            length: src.length,
            pages: Pages::Imported(src.clone()),
            file: src.file,
            created: SystemTime::now(),
            gate: Gate::default(),
            revoke_reason: Mutex::new(None),
            lease: Mutex::new(None),
            export: Mutex::new(std::sync::Weak::new()),
            imports: Mutex::new(Vec::new()),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            scrub: Default::default(),
        });
        let mut imports = src.imports.lock().unwrap_or_else(|e| e.into_inner());
        imports.retain(|i| i.strong_count() > 0);
        imports.push(Arc::downgrade(&mr));
        drop(imports);
        self.mrs.insert(key, mr);
        hw.mrs.insert(key);
        Ok(PlRegMrResp { key, lease: 0 })
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

/// Enters the gates of `mrs` and of the MRs they import from, each distinct
/// gate once: entering one gate twice could deadlock behind a revoke that is
/// waiting for it (std's RwLock makes new readers wait for a queued writer).
pub(crate) fn enter_all<'a>(mrs: &[&'a Mr]) -> Result<Vec<std::sync::RwLockReadGuard<'a, ()>>> {
    let mut seen: Vec<*const Gate> = Vec::new();
    let mut guards = Vec::new();
    for &first in mrs {
        let mut cur = first;
        loop {
            let gate: *const Gate = &cur.gate;
            if !seen.contains(&gate) {
                seen.push(gate);
                guards.push(cur.gate.enter().map_err(|_| Device::canceled(cur))?);
            }
            match &cur.pages {
                Pages::Imported(src) => cur = src,
                Pages::Own(_) => break,
            }
        }
    }
    Ok(guards)
}

/// Guest address of MR offset `off`, and how many bytes (at most `max`)
/// from there are physically contiguous in guest memory.
fn locate(mr: &Mr, off: u64, max: u64) -> (u64, u64) {
    let pages = mr.page_list();
    let pos = u64::from(mr.first_page_offset()) + off;
    let mut page = (pos / PL_PAGE_SIZE) as usize;
    let in_page = pos % PL_PAGE_SIZE;
    let gpa = pages[page] + in_page;
    let mut n = (PL_PAGE_SIZE - in_page).min(max);
    // Merge following pages while they continue the run in guest memory.
    while n < max && n < DMA_CHUNK {
        let Some(&next) = pages.get(page + 1) else {
            break;
        };
        if next != pages[page] + PL_PAGE_SIZE {
            break;
        }
        page += 1;
        n = (n + PL_PAGE_SIZE).min(max);
    }
    (gpa, n)
}
