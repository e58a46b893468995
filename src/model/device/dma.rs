//! Device accesses to MRs: WRITE/READ (DMA), atomics, FILL and VERIFY,
//! each inside the MRs' revoke gates.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::abi::*;
use crate::model::lease::{Lease, LeaseState};
use crate::model::memory::{GuestRam, RamError};
use crate::model::mr::{Gate, Mr, Pages};
use crate::model::table::Handle;

use super::{AtomicOp, Device, DmaDir, Reject, Result};

/// The guest memory map as `Device::ram` hands it out.
type SharedRam = Arc<Box<dyn GuestRam>>;

/// How many bytes a DMA copies between checks that its MRs are still live:
/// a revoke waits at most for one such piece (about 6 us at memcpy speed),
/// and bigger pieces keep the per-piece bookkeeping off the copy's cost.
const DMA_CHUNK: u64 = 256 * 1024;

impl Device {
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

    pub(crate) fn ram_error(e: RamError) -> Reject {
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

    /// The MR a FILL or VERIFY works on, once the context is open, the
    /// request valid, `bit` granted and the range inside the MR; and the
    /// guest memory.
    fn pattern_target(
        &self,
        ctx_h: Handle,
        req: &PlPatternReq,
        bit: u32,
        what: &str,
    ) -> Result<(Arc<Mr>, SharedRam)> {
        self.open_context(ctx_h)?;
        Self::check_pattern(req)?;
        let mr = self.mr(req.key)?;
        Self::need_access(&mr, bit, what)?;
        Self::check_range(&mr, req.offset, req.length)?;
        Ok((mr, self.ram()?))
    }

    fn pattern_word(req: &PlPatternReq, mr_offset: u64) -> u64 {
        match req.mode {
            PL_PATTERN_OFFSET_XOR => req.pattern ^ mr_offset,
            _ => req.pattern,
        }
    }

    /// Writes the pattern over `[offset, offset + length)` of the MR.
    pub fn fill(&self, ctx_h: Handle, req: &PlPatternReq) -> Result<()> {
        let (mr, ram) = self.pattern_target(ctx_h, req, PL_ACCESS_WRITE, "device writes")?;
        let _in = enter_all(&[&mr])?;
        let _ = self.note_access(&mr);
        let mut buf = Vec::new();
        self.walk(&mr, req.offset, req.length, |gpa, off, n| {
            // A run may start or end inside a word: it ends where guest
            // memory stops being contiguous, which an MR whose
            // first_page_offset is not a multiple of 8 puts mid-word. So
            // the words covering the run are made and the run's bytes cut
            // out of them, each word by its own MR offset.
            let (first_word, skip) = (off & !7, (off & 7) as usize);
            buf.clear();
            let mut w = first_word;
            while w < off + n {
                buf.extend(Self::pattern_word(req, w).to_le_bytes());
                w += 8;
            }
            ram.write(gpa, &buf[skip..skip + n as usize])
                .map_err(Self::ram_error)
        })?;
        mr.bytes_written.fetch_add(req.length, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(req.length, Ordering::Relaxed);
        Ok(())
    }

    /// Compares `[offset, offset + length)` of the MR with the pattern.
    pub fn verify(&self, ctx_h: Handle, req: &PlPatternReq) -> Result<PlVerifyResp> {
        let (mr, ram) = self.pattern_target(ctx_h, req, PL_ACCESS_READ, "device reads")?;
        let _in = enter_all(&[&mr])?;
        let _ = self.note_access(&mr);
        let mut resp = PlVerifyResp {
            first_bad_offset: u64::MAX,
            ..Default::default()
        };
        let mut buf = Vec::new();
        // A word split between two runs (see fill) is put together here:
        // its first bytes wait in `word` for the next run.
        let mut word: Vec<u8> = Vec::with_capacity(8);
        let mut word_off = req.offset;
        let check = |resp: &mut PlVerifyResp, o: u64, bytes: &[u8]| {
            let seen = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
            if seen != Self::pattern_word(req, o) {
                if resp.mismatches == 0 {
                    resp.first_bad_offset = o;
                    resp.first_bad_value = seen;
                }
                resp.mismatches += 1;
            }
        };
        self.walk(&mr, req.offset, req.length, |gpa, _off, n| {
            buf.resize(n as usize, 0);
            ram.read(gpa, &mut buf).map_err(Self::ram_error)?;
            let mut rest = &buf[..];
            if !word.is_empty() {
                let take = (8 - word.len()).min(rest.len());
                word.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if word.len() == 8 {
                    check(&mut resp, word_off, &word);
                    word_off += 8;
                    word.clear();
                }
            }
            let whole = rest.len() / 8 * 8;
            for w in rest[..whole].chunks_exact(8) {
                check(&mut resp, word_off, w);
                word_off += 8;
            }
            word.extend_from_slice(&rest[whole..]);
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

#[cfg(test)]
mod tests;
