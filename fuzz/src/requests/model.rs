//! The reference model's types: contexts, MRs, children and leases with
//! their states as docs/abi.md describes them, and the lookups and state
//! changes several step families share (finding a handle and the statuses
//! it may earn, revoking and destroying MRs). The step handlers own the
//! rest of the model's changes.

use pinlease_abi::*;

use super::{Harness, PAGE, REGION_A, REGION_B};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CtxState {
    Open,
    Closed,
    Gone,
}

pub(super) struct Ctx {
    pub(super) handle: u64,
    pub(super) state: CtxState,
}

pub(super) struct Mr {
    pub(super) key: u64,
    pub(super) ctx: u64,
    pub(super) access: u32,
    /// Where the MR's bytes lie (an import's are its source's).
    pub(super) first_page_offset: u64,
    pub(super) length: u64,
    pub(super) pages: Vec<u64>,
    /// Registered (holds pins), not imported.
    pub(super) own: bool,
    /// The MR an import aliases.
    pub(super) source: Option<u64>,
    pub(super) file: Option<(PlFileId, u64)>,
    pub(super) live: bool,
    pub(super) gone: bool,
}

impl Mr {
    pub(super) fn gpa(&self, o: u64) -> u64 {
        let p = self.first_page_offset + o;
        self.pages[(p / PAGE) as usize] + p % PAGE
    }

    /// The in-page runs (guest address, bytes) of `[o, o + len)`.
    pub(super) fn runs(&self, o: u64, len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut done = 0;
        while done < len {
            let g = self.gpa(o + done);
            let n = (PAGE - g % PAGE).min(len - done);
            out.push((g, n));
            done += n;
        }
        out
    }

    pub(super) fn pins(&self) -> bool {
        self.own && self.live && !self.gone
    }
}

pub(super) struct Child {
    pub(super) handle: u64,
    pub(super) ctx: u64,
    /// The exported MR's key; None for an event channel.
    pub(super) export_of: Option<u64>,
    pub(super) refs: u32,
    pub(super) gone: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LeaseState {
    Active,
    Breaking,
    Revoked,
    Lost,
}

impl LeaseState {
    pub(super) fn name(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Breaking => "breaking",
            LeaseState::Revoked => "revoked",
            LeaseState::Lost => "lost",
        }
    }
}

pub(super) struct Lease {
    pub(super) handle: u64,
    pub(super) holder: u64,
    pub(super) file: PlFileId,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) policy: u32,
    pub(super) state: LeaseState,
    pub(super) gone: bool,
}

impl Lease {
    pub(super) fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

fn in_region(gpa: u64, region: (u64, u64)) -> bool {
    gpa >= region.0 && gpa < region.0 + region.1
}

/// Looks `h` up among (handle, gone) of one kind (not a context, whose
/// errors differ); adds what the device may answer when it is not live.
fn lookup(
    items: impl Iterator<Item = (u64, bool)>,
    h: u64,
    errs: &mut Vec<Status>,
) -> Option<usize> {
    let found = items.enumerate().find(|(_, (handle, _))| *handle == h);
    match found {
        None => errs.extend([Status::NoEnt, Status::Stale]),
        Some((_, (_, true))) => errs.push(Status::Stale),
        Some((i, _)) => return Some(i),
    }
    None
}

impl Harness {
    // ---- model lookups -------------------------------------------------------

    pub(super) fn ctx_index(&self, h: u64) -> Option<usize> {
        self.ctxs.iter().position(|c| c.handle == h)
    }

    /// A context that must be open; adds what the device may answer if not.
    pub(super) fn open_ctx(&self, h: u64, errs: &mut Vec<Status>) -> Option<usize> {
        match self.ctx_index(h) {
            None => errs.extend([Status::BadF, Status::Stale]),
            Some(i) => match self.ctxs[i].state {
                CtxState::Open => return Some(i),
                CtxState::Closed => errs.push(Status::Shutdown),
                CtxState::Gone => errs.push(Status::Stale),
            },
        }
        None
    }

    /// A context that may be closed (RELEASE_CONTEXT, DESTROY_CHILD).
    pub(super) fn any_ctx(&self, h: u64, errs: &mut Vec<Status>) -> Option<usize> {
        match self.ctx_index(h) {
            None => errs.extend([Status::BadF, Status::Stale]),
            Some(i) if self.ctxs[i].state == CtxState::Gone => errs.push(Status::Stale),
            Some(i) => return Some(i),
        }
        None
    }

    pub(super) fn mr(&self, key: u64, errs: &mut Vec<Status>) -> Option<usize> {
        lookup(self.mrs.iter().map(|m| (m.key, m.gone)), key, errs)
    }

    pub(super) fn child(&self, h: u64, errs: &mut Vec<Status>) -> Option<usize> {
        lookup(self.children.iter().map(|c| (c.handle, c.gone)), h, errs)
    }

    pub(super) fn lease(&self, h: u64, errs: &mut Vec<Status>) -> Option<usize> {
        lookup(self.leases.iter().map(|l| (l.handle, l.gone)), h, errs)
    }

    pub(super) fn live_children(&self, ctx: u64) -> usize {
        self.children
            .iter()
            .filter(|c| c.ctx == ctx && !c.gone)
            .count()
    }

    /// The length of MR `key`, or a page when the model does not know the
    /// key: the range offsets of a request are picked within it.
    pub(super) fn mr_length_or_page(&self, key: u64) -> u64 {
        self.mrs
            .iter()
            .find(|m| m.key == key)
            .map_or(PAGE, |m| m.length)
    }

    pub(super) fn mr_count(&self) -> usize {
        self.mrs.iter().filter(|m| !m.gone).count()
    }

    /// Revokes MR `i` and, as the device does, the live imports of it.
    /// Returns the pages it unpinned.
    pub(super) fn revoke(&mut self, i: usize) -> u64 {
        if !self.mrs[i].live {
            return 0;
        }
        let pages = if self.mrs[i].pins() {
            self.mrs[i].pages.len() as u64
        } else {
            0
        };
        self.mrs[i].live = false;
        let key = self.mrs[i].key;
        for j in 0..self.mrs.len() {
            if self.mrs[j].source == Some(key) && !self.mrs[j].gone {
                self.revoke(j);
            }
        }
        pages
    }

    /// Destroys MR `i` (DEREG_MR, context close): revoked, then gone.
    pub(super) fn destroy(&mut self, i: usize) -> u64 {
        let pages = self.revoke(i);
        self.mrs[i].gone = true;
        pages
    }

    pub(super) fn mapped(&self, gpa: u64) -> bool {
        in_region(gpa, REGION_A) || (self.region_b && in_region(gpa, REGION_B))
    }
}
