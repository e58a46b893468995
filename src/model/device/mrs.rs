//! Memory regions: REG_MR and DEREG_MR, revoke, and MR exports and
//! imports (EXPORT_MR, IMPORT_MR).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::abi::*;
use crate::model::child::{Child, ChildKind};
use crate::model::lease::{Lease, LeaseState};
use crate::model::memory::GuestRam;
use crate::model::mr::{Export, FileRange, Gate, Mr, Pages, RevokeReason};
use crate::model::table::Handle;

use super::{Device, RegMr, Reject, Result, Writer};

impl Device {
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
        let mut hw = Self::open_hw(&ctx)?;
        let key = self.alloc_mr_key(&mut w)?;
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
    pub(super) fn revoke_locked(
        &self,
        w: &mut Writer,
        mr: &Mr,
        reason: RevokeReason,
        notify: bool,
    ) -> u64 {
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
    pub(super) fn destroy_mr_locked(
        &self,
        w: &mut Writer,
        mr: &Arc<Mr>,
        reason: RevokeReason,
    ) -> u64 {
        let unpinned = self.revoke_locked(w, mr, reason, false);
        if self.mrs.remove(mr.key).is_some() {
            w.mrs.free(mr.key);
        }
        unpinned
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
        let mut hw = Self::open_hw(&ctx)?;
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
        let mut hw = Self::open_hw(&ctx)?;
        let key = self.alloc_mr_key(&mut w)?;
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
}

#[cfg(test)]
mod tests;
