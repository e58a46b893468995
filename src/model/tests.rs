//! Unit tests of the device model: every state transition of contexts,
//! children, MRs, leases and exports, and the races the seeds describe
//! (revoke vs in-flight DMA, lookups vs destroys, export vs destroy).
//!
//! Tests check statuses through `Reject::status` and the bytes the device
//! moved through real guest memory (`crate::guest_ram`), never only that a
//! call returned Ok.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::abi::*;
use crate::guest_ram::{test_ram, MmapRam};
use crate::model::lease::LeaseState;
use crate::model::memory::GuestRam;
use crate::model::mr::FileRange;
use crate::model::status::{hex, LeaseStatus, MrStatus};
use crate::model::table::Handle;
use crate::model::{AtomicOp, Device, DmaDir, Limits, RegMr};

const PAGE: u64 = PL_PAGE_SIZE;
const MIB: usize = 1 << 20;

// ---- helpers --------------------------------------------------------------------

/// A device with `mib` MiB of guest memory at guest-physical 0.
fn device(mib: usize) -> Arc<Device> {
    device_with(Limits::default(), &[(0, mib * MIB)])
}

fn device_with(limits: Limits, regions: &[(u64, usize)]) -> Arc<Device> {
    let dev = Arc::new(Device::new(limits));
    dev.set_memory(Box::new(test_ram(regions)));
    dev
}

fn ram(dev: &Device) -> Arc<Box<dyn GuestRam>> {
    dev.memory().expect("memory map set")
}

/// The status of a failed call; panics when it succeeded.
#[track_caller]
fn st<T>(r: crate::model::device::Result<T>) -> Status {
    match r {
        Ok(_) => panic!("expected a rejection, got Ok"),
        Err(e) => e.status,
    }
}

fn ctx(dev: &Device) -> Handle {
    dev.create_context(42, "test").expect("create context")
}

/// Pages `base, base + 4096, ...` (`n` of them).
fn run(base: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| base + i * PAGE).collect()
}

/// Where an MR's bytes lie in guest memory: the page list and offset the
/// test registered, so it can check the device's bytes itself.
#[derive(Clone, Debug)]
struct Layout {
    pages: Vec<u64>,
    off: u32,
    len: u64,
}

impl Layout {
    fn new(pages: Vec<u64>, off: u32, len: u64) -> Self {
        Layout { pages, off, len }
    }

    /// A layout over whole pages.
    fn pages(pages: Vec<u64>) -> Self {
        let len = pages.len() as u64 * PAGE;
        Layout::new(pages, 0, len)
    }

    fn gpa(&self, o: u64) -> u64 {
        let p = u64::from(self.off) + o;
        self.pages[(p / PAGE) as usize] + p % PAGE
    }

    /// Calls `f(gpa, position in the range, n)` over the in-page runs of
    /// `[o, o + len)`.
    fn runs(&self, o: u64, len: u64, mut f: impl FnMut(u64, usize, usize)) {
        let mut done = 0;
        while done < len {
            let gpa = self.gpa(o + done);
            let n = (PAGE - gpa % PAGE).min(len - done);
            f(gpa, done as usize, n as usize);
            done += n;
        }
    }

    fn write(&self, ram: &dyn GuestRam, o: u64, bytes: &[u8]) {
        self.runs(o, bytes.len() as u64, |gpa, at, n| {
            ram.write(gpa, &bytes[at..at + n]).unwrap()
        });
    }

    fn read(&self, ram: &dyn GuestRam, o: u64, len: u64) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        self.runs(o, len, |gpa, at, n| {
            ram.read(gpa, &mut out[at..at + n]).unwrap()
        });
        out
    }

    fn all(&self, ram: &dyn GuestRam) -> Vec<u8> {
        self.read(ram, 0, self.len)
    }

    fn word(&self, ram: &dyn GuestRam, o: u64) -> u64 {
        u64::from_le_bytes(self.read(ram, o, 8).try_into().unwrap())
    }

    fn set_word(&self, ram: &dyn GuestRam, o: u64, v: u64) {
        self.write(ram, o, &v.to_le_bytes());
    }

    fn req(&self, access: u32) -> RegMr {
        RegMr {
            access,
            flags: 0,
            first_page_offset: self.off,
            length: self.len,
            file: None,
            pages: self.pages.clone(),
        }
    }

    fn req_file(&self, access: u32, file: PlFileId, offset: u64) -> RegMr {
        RegMr {
            flags: PL_REG_HAS_FILE,
            file: Some(FileRange { file, offset }),
            ..self.req(access)
        }
    }
}

/// Deterministic, position-dependent bytes (never all equal).
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

fn reg(dev: &Device, ctx: Handle, l: &Layout, access: u32) -> Handle {
    dev.reg_mr(ctx, l.req(access)).expect("reg_mr").key
}

fn reg_file(
    dev: &Device,
    ctx: Handle,
    l: &Layout,
    access: u32,
    f: PlFileId,
    off: u64,
) -> PlRegMrResp {
    dev.reg_mr(ctx, l.req_file(access, f, off))
        .expect("reg_mr with file")
}

fn file(ino: u64) -> PlFileId {
    PlFileId {
        dev: 0x803,
        ino,
        generation: 7,
        reserved: 0,
    }
}

fn dma_req(lk: Handle, lo: u64, rk: Handle, ro: u64, len: u64) -> PlDmaReq {
    PlDmaReq {
        local_key: lk,
        local_offset: lo,
        remote_key: rk,
        remote_offset: ro,
        length: len,
    }
}

fn write(
    dev: &Device,
    c: Handle,
    lk: Handle,
    lo: u64,
    rk: Handle,
    ro: u64,
    len: u64,
) -> crate::model::device::Result<()> {
    dev.dma(c, DmaDir::Write, &dma_req(lk, lo, rk, ro, len))
}

fn read(
    dev: &Device,
    c: Handle,
    lk: Handle,
    lo: u64,
    rk: Handle,
    ro: u64,
    len: u64,
) -> crate::model::device::Result<()> {
    dev.dma(c, DmaDir::Read, &dma_req(lk, lo, rk, ro, len))
}

fn atomic(key: Handle, offset: u64, operand: u64, swap: u64) -> PlAtomicReq {
    PlAtomicReq {
        key,
        offset,
        operand,
        swap,
    }
}

fn pattern(key: Handle, offset: u64, length: u64, pattern: u64, mode: u32) -> PlPatternReq {
    PlPatternReq {
        key,
        offset,
        length,
        pattern,
        mode,
        reserved: 0,
    }
}

fn take_req(f: PlFileId, start: u64, length: u64, policy: u32) -> PlLeaseTakeReq {
    PlLeaseTakeReq {
        file: f,
        start,
        length,
        policy,
        owner_pid: 99,
    }
}

fn take(dev: &Device, c: Handle, f: PlFileId, start: u64, length: u64, policy: u32) -> Handle {
    dev.lease_take(c, &take_req(f, start, length, policy))
        .expect("lease_take")
}

fn release_req(lease: Handle, reason: u32) -> PlLeaseReleaseReq {
    PlLeaseReleaseReq {
        lease,
        reason,
        reserved: 0,
    }
}

fn break_req(f: PlFileId, start: u64, length: u64) -> PlLeaseBreakReq {
    PlLeaseBreakReq {
        file: f,
        start,
        length,
        reason: PL_BREAK_TRUNCATE,
        reserved: 0,
    }
}

fn brk(dev: &Device, f: PlFileId, start: u64, length: u64) -> PlLeaseBreakResp {
    dev.lease_break(&break_req(f, start, length))
        .expect("lease_break")
}

fn import_req(export: Handle, access: u32) -> PlImportMrReq {
    PlImportMrReq {
        export,
        access,
        reserved: 0,
    }
}

/// All queued events, oldest first.
fn events(dev: &Device) -> Vec<PlEvent> {
    std::iter::from_fn(|| dev.events.pop()).collect()
}

/// (kind, ctx, args) of the queued events, oldest first.
fn event_summary(dev: &Device) -> Vec<(u16, Handle, [u64; 4])> {
    events(dev)
        .iter()
        .map(|e| (e.kind, e.ctx, e.args))
        .collect()
}

fn mr_status(dev: &Device, key: Handle) -> Option<MrStatus> {
    dev.status().mrs.into_iter().find(|m| m.key == hex(key))
}

fn lease_status(dev: &Device, h: Handle) -> Option<LeaseStatus> {
    dev.status().leases.into_iter().find(|l| l.handle == hex(h))
}

fn lease_state(dev: &Device, h: Handle) -> LeaseState {
    dev.lease(h).expect("lease in table").state()
}

/// A map of two regions sharing their memory with `full`, minus the region
/// at `base` (so the remaining region keeps its bytes across the change).
fn without_region(full: &GuestMemoryMmap<()>, base: u64, size: usize) -> MmapRam {
    let (rest, _) = full
        .remove_region(GuestAddress(base), size as u64)
        .expect("region to remove");
    MmapRam::new(rest)
}

fn two_region_map(r1: (u64, usize), r2: (u64, usize)) -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(r1.0), r1.1), (GuestAddress(r2.0), r2.1)])
        .expect("anonymous guest memory")
}

// ---- 1. contexts ----------------------------------------------------------------------

#[test]
fn context_create_close_release_and_handle_states() {
    let dev = device(1);
    let c = ctx(&dev);
    assert_ne!(c, 0);
    assert_eq!(dev.live_contexts(), 1);
    let resp = dev.close_context(c).unwrap();
    assert_eq!(resp, PlCloseContextResp::default());
    assert_eq!(st(dev.close_context(c)), Status::Shutdown, "second close");
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_CONTEXT_TORN_DOWN, c, [0, 0, 0, 0])]
    );
    let s = dev.status();
    assert_eq!(s.contexts.len(), 1);
    assert_eq!(s.contexts[0].state, "closed");
    dev.release_context(c).unwrap();
    assert!(
        dev.events.pop().is_none(),
        "release of a closed context sends nothing"
    );
    assert_eq!(dev.live_contexts(), 0);
    assert!(dev.status().contexts.is_empty());

    // Stale handle: every request naming it answers ESTALE.
    assert_eq!(st(dev.release_context(c)), Status::Stale);
    assert_eq!(st(dev.close_context(c)), Status::Stale);
    assert_eq!(st(dev.context(c)), Status::Stale);
    assert_eq!(
        st(dev.reg_mr(c, Layout::pages(run(0, 1)).req(PL_ACCESS_ALL))),
        Status::Stale
    );
    assert_eq!(
        st(dev.create_child(c, PL_CHILD_EVENT_CHANNEL)),
        Status::Stale
    );
    assert_eq!(
        st(dev.lease_take(c, &take_req(file(1), 0, 0, PL_POLICY_WAIT))),
        Status::Stale
    );

    // Never issued: 0, an index never used, a generation never given out.
    for h in [0, c + 1, c + (2 << 32), 1 << 32 | 500] {
        assert_eq!(st(dev.context(h)), Status::BadF, "handle {h:#x}");
        assert_eq!(st(dev.close_context(h)), Status::BadF, "handle {h:#x}");
        assert_eq!(st(dev.release_context(h)), Status::BadF, "handle {h:#x}");
        assert_eq!(
            st(dev.create_child(h, PL_CHILD_EVENT_CHANNEL)),
            Status::BadF
        );
    }
}

#[test]
fn every_op_on_a_closed_context_is_eshutdown_except_destroy_child_and_release() {
    let dev = device(1);
    let other = ctx(&dev);
    let other_mr = reg(&dev, other, &Layout::pages(run(0x10000, 1)), PL_ACCESS_ALL);
    let other_export = dev.export_mr(other, other_mr).unwrap().export;

    let c = ctx(&dev);
    let l = Layout::pages(run(0, 2));
    let k = reg(&dev, c, &l, PL_ACCESS_ALL);
    let export = dev.export_mr(c, k).unwrap().export;
    let chan = dev.create_child(c, PL_CHILD_EVENT_CHANNEL).unwrap();
    let lease = take(&dev, c, file(1), 0, 0, PL_POLICY_WAIT);
    dev.close_context(c).unwrap();

    let sd = Status::Shutdown;
    assert_eq!(st(dev.close_context(c)), sd);
    assert_eq!(st(dev.reg_mr(c, l.req(PL_ACCESS_ALL))), sd);
    assert_eq!(st(dev.dereg_mr(c, k)), sd);
    assert_eq!(st(write(&dev, c, k, 0, other_mr, 0, 8)), sd);
    assert_eq!(st(read(&dev, c, k, 0, other_mr, 0, 8)), sd);
    assert_eq!(
        st(dev.atomic(c, AtomicOp::FetchAdd, &atomic(other_mr, 0, 1, 0))),
        sd
    );
    assert_eq!(
        st(dev.fill(c, &pattern(other_mr, 0, 8, 1, PL_PATTERN_CONST))),
        sd
    );
    assert_eq!(
        st(dev.verify(c, &pattern(other_mr, 0, 8, 1, PL_PATTERN_CONST))),
        sd
    );
    assert_eq!(
        st(dev.lease_take(c, &take_req(file(2), 0, 0, PL_POLICY_WAIT))),
        sd
    );
    assert_eq!(
        st(dev.lease_release(c, &release_req(lease, PL_RELEASE_HOLDER))),
        sd
    );
    assert_eq!(st(dev.create_child(c, PL_CHILD_EVENT_CHANNEL)), sd);
    assert_eq!(st(dev.export_mr(c, k)), sd);
    assert_eq!(
        st(dev.import_mr(c, &import_req(other_export, PL_ACCESS_READ))),
        sd
    );

    // The ones allowed on a closed context.
    assert_eq!(st(dev.release_context(c)), Status::Busy);
    dev.destroy_child(c, export).unwrap();
    dev.destroy_child(c, chan).unwrap();
    dev.release_context(c).unwrap();
    assert_eq!(st(dev.context(c)), Status::Stale);
}

#[test]
fn close_reports_totals_in_response_and_torn_down_event() {
    let dev = device(1);
    let c = ctx(&dev);
    reg(&dev, c, &Layout::pages(run(0, 3)), PL_ACCESS_ALL);
    reg(
        &dev,
        c,
        &Layout::new(vec![0x8000, 0x3000], 10, 5000),
        PL_ACCESS_READ,
    );
    take(&dev, c, file(1), 0, 0, PL_POLICY_REVOKE);
    take(&dev, c, file(2), 4096, 4096, PL_POLICY_WAIT);
    assert_eq!(dev.pin_totals(), (5, 5));
    let resp = dev.close_context(c).unwrap();
    assert_eq!(
        resp,
        PlCloseContextResp {
            mrs_destroyed: 2,
            leases_released: 2,
            pages_unpinned: 5
        }
    );
    assert_eq!(dev.pin_totals(), (0, 0));
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_CONTEXT_TORN_DOWN, c, [2, 2, 5, 0])],
        "no per-MR event to the closing context"
    );
}

#[test]
fn release_of_an_open_context_closes_it_first() {
    let dev = device(1);
    let c = ctx(&dev);
    let k = reg(&dev, c, &Layout::pages(run(0x4000, 4)), PL_ACCESS_ALL);
    take(&dev, c, file(1), 0, 0, PL_POLICY_REVOKE);
    assert_eq!(dev.pin_totals(), (4, 4));
    dev.release_context(c).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0));
    assert!(dev.leases.is_empty());
    assert_eq!(st(dev.mr(k)), Status::Stale);
    assert_eq!(st(dev.context(c)), Status::Stale);
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_CONTEXT_TORN_DOWN, c, [1, 1, 4, 0])]
    );
    let s = dev.status();
    assert!(s.contexts.is_empty() && s.mrs.is_empty() && s.leases.is_empty());
}

#[test]
fn context_table_full_is_enomem_until_a_release() {
    let limits = Limits {
        max_contexts: 2,
        ..Limits::default()
    };
    let dev = device_with(limits, &[(0, MIB)]);
    let a = ctx(&dev);
    let b = ctx(&dev);
    assert_eq!(st(dev.create_context(1, "x")), Status::NoMem);
    dev.close_context(a).unwrap();
    assert_eq!(
        st(dev.create_context(1, "x")),
        Status::NoMem,
        "a closed but unreleased context still counts"
    );
    dev.release_context(a).unwrap();
    let c = ctx(&dev);
    assert_ne!(c, a, "the freed slot gets a new generation");
    assert_eq!(c as u32, a as u32, "the slot is reused");
    assert_eq!(st(dev.close_context(a)), Status::Stale);
    assert_eq!(st(dev.create_context(1, "x")), Status::NoMem);
    // The new occupant of the slot is usable and distinct from the old.
    reg(&dev, c, &Layout::pages(run(0, 1)), PL_ACCESS_ALL);
    assert_eq!(dev.status().contexts.len(), 2);
    assert!(dev.context(b).is_ok());
}

// ---- 2. two lifetimes ------------------------------------------------------------------

#[test]
fn child_keeps_the_context_struct_but_not_its_pins() {
    let dev = device(1);
    let c = ctx(&dev);
    let k1 = reg(&dev, c, &Layout::pages(run(0, 8)), PL_ACCESS_ALL);
    let k2 = reg(&dev, c, &Layout::pages(run(0x20000, 2)), PL_ACCESS_ALL);
    let chan = dev.create_child(c, PL_CHILD_EVENT_CHANNEL).unwrap();
    assert_eq!(dev.pin_totals(), (10, 10));
    dev.close_context(c).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0), "children never keep pins");
    assert_eq!(st(dev.mr(k1)), Status::Stale);
    assert_eq!(st(dev.mr(k2)), Status::Stale);

    assert_eq!(st(dev.release_context(c)), Status::Busy);
    let s = dev.status();
    assert!(s.mrs.is_empty(), "MRs gone from status");
    assert_eq!(s.contexts.len(), 1, "context struct still alive");
    assert_eq!(s.contexts[0].state, "closed");
    assert_eq!(s.contexts[0].mrs, 0);
    assert_eq!(s.contexts[0].children.len(), 1);
    assert_eq!(s.contexts[0].children[0].handle, hex(chan));
    assert_eq!(s.contexts[0].children[0].kind, "event-channel");
    assert_eq!(st(dev.release_context(c)), Status::Busy, "still busy");
    assert!(dev.context(c).is_ok());

    dev.destroy_child(c, chan).unwrap();
    assert_eq!(st(dev.destroy_child(c, chan)), Status::Stale);
    dev.release_context(c).unwrap();
    assert!(dev.status().contexts.is_empty());
    assert_eq!(st(dev.context(c)), Status::Stale);
    assert_eq!(st(dev.destroy_child(c, chan)), Status::Stale);
}

#[test]
fn release_of_open_context_with_a_child_closes_it_and_answers_ebusy() {
    let dev = device(1);
    let c = ctx(&dev);
    let l = Layout::pages(run(0, 3));
    reg(&dev, c, &l, PL_ACCESS_ALL);
    let chan = dev.create_child(c, PL_CHILD_EVENT_CHANNEL).unwrap();
    assert_eq!(st(dev.release_context(c)), Status::Busy);
    assert_eq!(dev.pin_totals(), (0, 0), "closed all the same");
    assert_eq!(st(dev.reg_mr(c, l.req(PL_ACCESS_ALL))), Status::Shutdown);
    assert_eq!(st(dev.close_context(c)), Status::Shutdown);
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_CONTEXT_TORN_DOWN, c, [1, 0, 3, 0])]
    );
    dev.destroy_child(c, chan).unwrap();
    dev.release_context(c).unwrap();
    assert!(dev.events.pop().is_none());
}

#[test]
fn child_handle_checks() {
    let limits = Limits {
        max_children_per_context: 2,
        ..Limits::default()
    };
    let dev = device_with(limits, &[(0, MIB)]);
    let a = ctx(&dev);
    let b = ctx(&dev);
    assert_eq!(st(dev.create_child(a, PL_CHILD_MR_EXPORT)), Status::Inval);
    assert_eq!(st(dev.create_child(a, 0)), Status::Inval);
    assert_eq!(st(dev.create_child(a, 3)), Status::Inval);
    let ch = dev.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
    assert_eq!(
        st(dev.destroy_child(b, ch)),
        Status::Perm,
        "another context's child"
    );
    assert_eq!(st(dev.destroy_child(a, 0)), Status::NoEnt);
    assert_eq!(st(dev.destroy_child(a, ch + 1)), Status::NoEnt);
    // Per-context limit: event channels and exports together.
    let k = reg(&dev, a, &Layout::pages(run(0, 1)), PL_ACCESS_ALL);
    let ex = dev.export_mr(a, k).unwrap().export;
    assert_eq!(
        st(dev.create_child(a, PL_CHILD_EVENT_CHANNEL)),
        Status::NoMem
    );
    let k2 = reg(&dev, a, &Layout::pages(run(0x1000, 1)), PL_ACCESS_ALL);
    assert_eq!(st(dev.export_mr(a, k2)), Status::NoMem);
    assert_eq!(
        dev.export_mr(a, k).unwrap().export,
        ex,
        "re-export needs no new child"
    );
    // Another context is not affected by a's limit.
    dev.create_child(b, PL_CHILD_EVENT_CHANNEL).unwrap();
    dev.destroy_child(a, ch).unwrap();
    assert_eq!(st(dev.destroy_child(a, ch)), Status::Stale);
    dev.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
}

// ---- 3. memory regions ---------------------------------------------------------------

#[test]
fn reg_mr_rejects_bad_requests_and_pins_nothing() {
    let limits = Limits {
        max_pages_per_mr: 4,
        ..Limits::default()
    };
    // Two regions: [0, 64K) and [128K, 128K + 66K): the second ends mid-page.
    let dev = device_with(limits, &[(0, 0x10000), (0x20000, 0x10800)]);
    let c = ctx(&dev);
    let ok = Layout::pages(run(0, 2));
    let bad = |r: RegMr| st(dev.reg_mr(c, r));

    assert_eq!(bad(ok.req(0)), Status::Inval, "access 0");
    assert_eq!(bad(ok.req(8)), Status::Inval, "unknown access bit");
    assert_eq!(bad(ok.req(PL_ACCESS_ALL | 0x100)), Status::Inval);
    assert_eq!(
        bad(RegMr {
            flags: 8,
            ..ok.req(PL_ACCESS_ALL)
        }),
        Status::Inval,
        "unknown flag"
    );
    assert_eq!(
        bad(Layout::new(vec![], 0, 0).req(PL_ACCESS_ALL)),
        Status::Inval,
        "no pages"
    );
    assert_eq!(
        bad(Layout::new(vec![], 0, 4096).req(PL_ACCESS_ALL)),
        Status::Inval,
        "no pages"
    );
    assert_eq!(
        bad(Layout::pages(run(0, 5)).req(PL_ACCESS_ALL)),
        Status::TooBig
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 4096, 1).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(run(0, 2), 4096, 1).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 0, 0).req(PL_ACCESS_ALL)),
        Status::Inval,
        "length 0"
    );
    // Page count must match first_page_offset + length exactly, both ways.
    assert_eq!(
        bad(Layout::new(run(0, 2), 0, 4096).req(PL_ACCESS_ALL)),
        Status::Inval,
        "spare page"
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 0, 4097).req(PL_ACCESS_ALL)),
        Status::Inval,
        "missing page"
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 100, 3997).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(run(0, 2), 100, 3996).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 1, u64::MAX).req(PL_ACCESS_ALL)),
        Status::Range
    );
    // Page addresses.
    assert_eq!(
        bad(Layout::new(vec![0x1001], 0, 10).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(vec![0, 0x1800], 0, 8192).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(vec![0x10000], 0, 10).req(PL_ACCESS_ALL)),
        Status::Fault,
        "in the hole"
    );
    assert_eq!(
        bad(Layout::new(vec![0, 0x40000], 0, 8192).req(PL_ACCESS_ALL)),
        Status::Fault,
        "past the end"
    );
    assert_eq!(
        bad(Layout::new(vec![0x30000], 0, 10).req(PL_ACCESS_ALL)),
        Status::Fault,
        "page crossing the end of a region"
    );
    assert_eq!(
        bad(Layout::new(vec![0xffff_ffff_ffff_f000], 0, 10).req(PL_ACCESS_ALL)),
        Status::Fault
    );
    // File offset overflow.
    assert_eq!(
        bad(ok.req_file(PL_ACCESS_ALL, file(1), u64::MAX - 100)),
        Status::Range
    );

    assert_eq!(dev.pin_totals(), (0, 0));
    assert!(dev.status().mrs.is_empty());
    assert!(dev.status().contexts[0].mrs == 0);

    // Boundaries that are fine.
    reg(&dev, c, &Layout::new(run(0, 1), 100, 3996), PL_ACCESS_READ);
    reg(&dev, c, &Layout::new(run(0, 1), 4095, 1), PL_ACCESS_READ);
    reg(
        &dev,
        c,
        &Layout::new(vec![0x2f000], 0, 4096),
        PL_ACCESS_READ,
    );
    reg(&dev, c, &Layout::pages(run(0, 4)), PL_ACCESS_READ);
    dev.reg_mr(c, ok.req_file(PL_ACCESS_ALL, file(1), u64::MAX - 8192))
        .unwrap();
}

#[test]
fn reg_mr_without_a_memory_map_is_efault() {
    let dev = Device::new(Limits::default());
    let c = ctx(&dev);
    assert_eq!(
        st(dev.reg_mr(c, Layout::pages(run(0, 1)).req(PL_ACCESS_ALL))),
        Status::Fault
    );
}

#[test]
fn pin_accounting_counts_pages_and_pins() {
    let dev = device(1);
    let c = ctx(&dev);
    let a = reg(&dev, c, &Layout::pages(vec![0x5000]), PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (1, 1));
    let b = reg(&dev, c, &Layout::new(vec![0x5000], 8, 16), PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (1, 2), "two MRs on one page");
    let twice = reg(&dev, c, &Layout::pages(vec![0x5000, 0x5000]), PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (1, 4), "a page listed twice");
    let three = reg(
        &dev,
        c,
        &Layout::pages(vec![0x9000, 0x1000, 0x5000]),
        PL_ACCESS_ALL,
    );
    assert_eq!(dev.pin_totals(), (3, 7));
    let s = dev.status();
    assert_eq!((s.pinned_pages, s.pins), (3, 7));
    dev.dereg_mr(c, b).unwrap();
    assert_eq!(dev.pin_totals(), (3, 6));
    dev.dereg_mr(c, twice).unwrap();
    assert_eq!(dev.pin_totals(), (3, 4));
    dev.dereg_mr(c, three).unwrap();
    assert_eq!(dev.pin_totals(), (1, 1));
    dev.dereg_mr(c, a).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0));
}

#[test]
fn dereg_checks_ownership_and_staleness() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let l = Layout::pages(run(0, 1));
    let k = reg(&dev, a, &l, PL_ACCESS_ALL);
    assert_eq!(st(dev.dereg_mr(b, k)), Status::Perm);
    assert!(dev.mr(k).is_ok(), "untouched by the refused dereg");
    assert_eq!(dev.pin_totals(), (1, 1));
    assert_eq!(st(dev.dereg_mr(a, 0)), Status::NoEnt);
    assert_eq!(st(dev.dereg_mr(a, k + 1)), Status::NoEnt);
    dev.dereg_mr(a, k).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0));
    assert_eq!(st(dev.dereg_mr(a, k)), Status::Stale);
    assert_eq!(st(dev.dereg_mr(b, k)), Status::Stale);
    assert_eq!(dev.pin_totals(), (0, 0));
    assert!(
        dev.events.pop().is_none(),
        "dereg sends no event to its own context"
    );
}

#[test]
fn mr_table_full_is_enomem_imports_included() {
    let limits = Limits {
        max_mrs: 2,
        ..Limits::default()
    };
    let dev = device_with(limits, &[(0, MIB)]);
    let c = ctx(&dev);
    let l = Layout::pages(run(0, 1));
    let k1 = reg(&dev, c, &l, PL_ACCESS_ALL);
    let _k2 = reg(&dev, c, &l, PL_ACCESS_ALL);
    assert_eq!(st(dev.reg_mr(c, l.req(PL_ACCESS_ALL))), Status::NoMem);
    let ex = dev.export_mr(c, k1).unwrap().export;
    assert_eq!(
        st(dev.import_mr(c, &import_req(ex, PL_ACCESS_READ))),
        Status::NoMem
    );
    assert_eq!(dev.pin_totals(), (1, 2), "refused REG_MR pinned nothing");
    dev.dereg_mr(c, k1).unwrap();
    reg(&dev, c, &l, PL_ACCESS_ALL);
}

#[test]
fn keys_are_never_reused_and_old_keys_are_stale_everywhere() {
    let limits = Limits {
        max_mrs: 1,
        ..Limits::default()
    };
    let dev = device_with(limits, &[(0, MIB)]);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let l = Layout::pages(run(0x3000, 1));
    let old = reg(&dev, a, &l, PL_ACCESS_ALL);
    dev.dereg_mr(a, old).unwrap();
    let new = reg(&dev, a, &l, PL_ACCESS_ALL);
    assert_eq!(old as u32, new as u32, "same slot");
    assert_ne!(old, new, "different key");
    let r = ram(&dev);
    l.set_word(r.as_ref().as_ref(), 0, 77);

    assert_eq!(st(dev.mr(old)), Status::Stale);
    assert_eq!(
        st(write(&dev, a, old, 0, new, 8, 8)),
        Status::Stale,
        "stale local"
    );
    assert_eq!(
        st(write(&dev, a, new, 0, old, 8, 8)),
        Status::Stale,
        "stale remote"
    );
    assert_eq!(st(read(&dev, a, new, 0, old, 8, 8)), Status::Stale);
    assert_eq!(
        st(write(&dev, b, new, 0, old, 8, 8)),
        Status::Perm,
        "new is a's"
    );
    assert_eq!(
        st(dev.atomic(b, AtomicOp::FetchAdd, &atomic(old, 0, 1, 0))),
        Status::Stale
    );
    assert_eq!(
        st(dev.atomic(b, AtomicOp::CompareSwap, &atomic(old, 0, 77, 1))),
        Status::Stale
    );
    assert_eq!(
        st(dev.fill(b, &pattern(old, 0, 8, 5, PL_PATTERN_CONST))),
        Status::Stale
    );
    assert_eq!(
        st(dev.verify(b, &pattern(old, 0, 8, 5, PL_PATTERN_CONST))),
        Status::Stale
    );
    assert_eq!(st(dev.export_mr(a, old)), Status::Stale);
    assert_eq!(st(dev.dereg_mr(a, old)), Status::Stale);
    assert_eq!(
        l.word(r.as_ref().as_ref(), 0),
        77,
        "no stale access touched the page"
    );
    // The new key works.
    assert_eq!(
        dev.atomic(b, AtomicOp::FetchAdd, &atomic(new, 0, 1, 0))
            .unwrap(),
        77
    );
    assert_eq!(l.word(r.as_ref().as_ref(), 0), 78);
}

// ---- 4. DMA ------------------------------------------------------------------------------

#[test]
fn write_and_read_across_scattered_mrs_are_byte_exact() {
    let dev = device(1);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    let c = ctx(&dev);
    // Out-of-order, non-contiguous page lists, neither starting at offset 0.
    let a = Layout::new(vec![0x5000, 0x2000, 0x9000], 100, 3 * 4096 - 150);
    let b = Layout::new(vec![0x14000, 0xd000, 0x11000, 0x1e000], 3000, 13000);
    // Background in every page of both MRs, outside and inside the MRs.
    for &p in a.pages.iter().chain(&b.pages) {
        r.write(p, &[0xee; 4096]).unwrap();
    }
    let src = bytes(a.len as usize, 0x31);
    a.write(r, 0, &src);
    let ka = reg(&dev, c, &a, PL_ACCESS_READ | PL_ACCESS_WRITE);
    let kb = reg(&dev, c, &b, PL_ACCESS_READ | PL_ACCESS_WRITE);

    write(&dev, c, ka, 7, kb, 1234, 10000).unwrap();
    let got = b.all(r);
    for (o, &v) in got.iter().enumerate() {
        let want = if (1234..11234).contains(&o) {
            src[o - 1234 + 7]
        } else {
            0xee
        };
        assert_eq!(v, want, "MR b offset {o}");
    }
    // Bytes of b's pages outside the MR are untouched.
    let mut head = vec![0u8; 3000];
    r.read(b.pages[0], &mut head).unwrap();
    assert!(head.iter().all(|&x| x == 0xee));
    let mut tail = vec![0u8; 4096 - (3000 + 13000) % 4096];
    r.read(b.gpa(12999) + 1, &mut tail).unwrap();
    assert!(tail.iter().all(|&x| x == 0xee));

    // READ remote b -> local a.
    let mid = bytes(b.len as usize, 0x77);
    b.write(r, 0, &mid);
    read(&dev, c, ka, 0, kb, 500, 9000).unwrap();
    let got = a.all(r);
    for (o, &v) in got.iter().enumerate() {
        let want = if o < 9000 { mid[500 + o] } else { src[o] };
        assert_eq!(v, want, "MR a offset {o}");
    }
    let mut head = vec![0u8; 100];
    r.read(a.pages[0], &mut head).unwrap();
    assert!(head.iter().all(|&x| x == 0xee), "bytes before a's offset");

    let s = mr_status(&dev, kb).unwrap();
    assert_eq!((s.bytes_written, s.bytes_read), (10000, 9000));
}

#[test]
fn dma_across_contexts_and_within_one_mr() {
    let dev = device(1);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    let a = ctx(&dev);
    let b = ctx(&dev);
    let la = Layout::new(vec![0x8000, 0x3000], 16, 6000);
    let lb = Layout::pages(vec![0x40000]);
    let ka = reg(&dev, a, &la, PL_ACCESS_ALL);
    let kb = reg(&dev, b, &lb, PL_ACCESS_READ | PL_ACCESS_WRITE);
    let data = bytes(6000, 9);
    la.write(r, 0, &data);
    // b writes its own MR into a's MR (remote key of another context).
    let from_b = bytes(4096, 0xa5);
    lb.write(r, 0, &from_b);
    write(&dev, b, kb, 96, ka, 4000, 1000).unwrap();
    assert_eq!(la.read(r, 4000, 1000), from_b[96..1096]);
    assert_eq!(la.read(r, 0, 4000), data[..4000]);
    assert_eq!(la.read(r, 5000, 1000), data[5000..]);
    // b reads a's MR into its own.
    read(&dev, b, kb, 0, ka, 0, 4096).unwrap();
    assert_eq!(lb.read(r, 0, 4000), data[..4000]);
    // Same MR as source and destination (non-overlapping ranges).
    la.write(r, 0, &data);
    write(&dev, a, ka, 0, ka, 3000, 2500).unwrap();
    assert_eq!(la.read(r, 3000, 2500), data[..2500]);
    assert_eq!(la.read(r, 0, 3000), data[..3000]);
    read(&dev, a, ka, 5600, ka, 10, 400).unwrap();
    assert_eq!(la.read(r, 5600, 400), la.read(r, 10, 400));
}

#[test]
fn dma_enforces_access_flags_ownership_and_ranges() {
    let dev = device(1);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    let a = ctx(&dev);
    let b = ctx(&dev);
    let p = |i: u64| Layout::pages(vec![i * 0x1000]);
    let rw = reg(&dev, a, &p(1), PL_ACCESS_READ | PL_ACCESS_WRITE);
    let ro = reg(&dev, a, &p(2), PL_ACCESS_READ);
    let wo = reg(&dev, a, &p(3), PL_ACCESS_WRITE);
    let at = reg(&dev, a, &p(4), PL_ACCESS_ATOMIC);
    let other = reg(&dev, b, &p(5), PL_ACCESS_ALL);
    for i in 1..=5 {
        r.write(i * 0x1000, &[i as u8; 4096]).unwrap();
    }
    let perm = Status::Perm;
    // WRITE: the device reads local, writes remote.
    assert_eq!(
        st(write(&dev, a, wo, 0, rw, 0, 8)),
        perm,
        "local lacks READ"
    );
    assert_eq!(st(write(&dev, a, at, 0, rw, 0, 8)), perm);
    assert_eq!(
        st(write(&dev, a, rw, 0, ro, 0, 8)),
        perm,
        "remote lacks WRITE"
    );
    // READ: the device reads remote, writes local.
    assert_eq!(
        st(read(&dev, a, rw, 0, wo, 0, 8)),
        perm,
        "remote lacks READ"
    );
    assert_eq!(
        st(read(&dev, a, ro, 0, rw, 0, 8)),
        perm,
        "local lacks WRITE"
    );
    // local key must be the context's own.
    assert_eq!(st(write(&dev, a, other, 0, rw, 0, 8)), perm);
    assert_eq!(st(read(&dev, a, other, 0, rw, 0, 8)), perm);
    for i in 1..=5u64 {
        let mut pg = [0u8; 4096];
        r.read(i * 0x1000, &mut pg).unwrap();
        assert!(
            pg.iter().all(|&x| x == i as u8),
            "refused DMA touched page {i}"
        );
    }
    // Allowed directions.
    write(&dev, a, ro, 0, wo, 0, 16).unwrap();
    read(&dev, a, wo, 100, ro, 0, 16).unwrap();
    write(&dev, a, rw, 0, other, 0, 4096).unwrap();

    // Ranges.
    let range = Status::Range;
    assert_eq!(st(write(&dev, a, rw, 1, other, 0, 4096)), range);
    assert_eq!(st(write(&dev, a, rw, 0, other, 4095, 2)), range);
    assert_eq!(
        st(write(&dev, a, rw, 4097, other, 0, 0)),
        range,
        "offset past the end, length 0"
    );
    assert_eq!(st(write(&dev, a, rw, u64::MAX, other, 0, 1)), range);
    assert_eq!(st(write(&dev, a, rw, 0, other, u64::MAX, 1)), range);
    assert_eq!(st(write(&dev, a, rw, 1, other, 1, u64::MAX)), range);
    assert_eq!(st(read(&dev, a, rw, u64::MAX, other, 0, 2)), range);
    assert_eq!(st(read(&dev, a, rw, 0, other, 8, u64::MAX - 4)), range);
    write(&dev, a, rw, 4088, other, 0, 8).unwrap();
    // Zero length is a successful no-op, even at the very end; keys still checked.
    r.write(0x5000, &[0x42; 8]).unwrap();
    write(&dev, a, rw, 4096, other, 4096, 0).unwrap();
    read(&dev, a, rw, 0, other, 0, 0).unwrap();
    let mut w = [0u8; 8];
    r.read(0x5000, &mut w).unwrap();
    assert_eq!(w, [0x42; 8]);
    assert_eq!(st(write(&dev, a, rw, 0, 0, 0, 0)), Status::NoEnt);
    assert_eq!(st(write(&dev, a, rw, 0, other + 100, 0, 0)), Status::NoEnt);
}

#[test]
fn atomics_compare_swap_fetch_add_and_checks() {
    let dev = device(1);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    let a = ctx(&dev);
    let b = ctx(&dev);
    let l = Layout::new(vec![0x7000, 0x2000], 16, 8000);
    let k = reg(&dev, a, &l, PL_ACCESS_ATOMIC | PL_ACCESS_READ);
    let word = 4080; // the first word of the second page
    assert_eq!(l.gpa(word), 0x2000);
    l.set_word(r, word, 10);
    l.set_word(r, word - 8, 0xdead);

    // b may do atomics on a's MR: any context's key.
    let cs = |op, off, a1, s| dev.atomic(b, op, &atomic(k, off, a1, s));
    assert_eq!(
        cs(AtomicOp::CompareSwap, word, 10, 99).unwrap(),
        10,
        "success"
    );
    assert_eq!(l.word(r, word), 99);
    assert_eq!(
        cs(AtomicOp::CompareSwap, word, 10, 5).unwrap(),
        99,
        "failure returns the value seen"
    );
    assert_eq!(l.word(r, word), 99, "failure leaves the word");
    assert_eq!(cs(AtomicOp::FetchAdd, word, 3, 0).unwrap(), 99);
    assert_eq!(l.word(r, word), 102);
    l.set_word(r, word, u64::MAX);
    assert_eq!(cs(AtomicOp::FetchAdd, word, 2, 0).unwrap(), u64::MAX);
    assert_eq!(l.word(r, word), 1, "wrapping add");
    assert_eq!(l.word(r, word - 8), 0xdead, "neighbour untouched");
    assert_eq!(l.word(r, word + 8), 0);
    // Last word of the MR.
    assert_eq!(cs(AtomicOp::FetchAdd, 7992, 1, 0).unwrap(), 0);
    assert_eq!(l.word(r, 7992), 1);

    assert_eq!(
        st(cs(AtomicOp::FetchAdd, word + 4, 1, 0)),
        Status::Inval,
        "misaligned"
    );
    assert_eq!(st(cs(AtomicOp::CompareSwap, 1, 1, 0)), Status::Inval);
    assert_eq!(
        st(cs(AtomicOp::FetchAdd, word, 1, 1)),
        Status::Inval,
        "FETCH_ADD swap != 0"
    );
    assert_eq!(st(cs(AtomicOp::FetchAdd, 8000, 1, 0)), Status::Range);
    assert_eq!(
        st(cs(AtomicOp::FetchAdd, u64::MAX - 7, 1, 0)),
        Status::Range
    );
    assert_eq!(l.word(r, word), 1);

    let k2 = reg(
        &dev,
        a,
        &Layout::pages(vec![0x9000]),
        PL_ACCESS_READ | PL_ACCESS_WRITE,
    );
    assert_eq!(
        st(dev.atomic(a, AtomicOp::FetchAdd, &atomic(k2, 0, 1, 0))),
        Status::Perm
    );
    assert_eq!(
        st(dev.atomic(a, AtomicOp::CompareSwap, &atomic(k2, 0, 0, 1))),
        Status::Perm
    );
    assert_eq!(
        st(dev.atomic(a, AtomicOp::CompareSwap, &atomic(0, 0, 0, 1))),
        Status::NoEnt
    );
}

#[test]
fn fill_and_verify_in_both_modes_find_corrupted_words() {
    let dev = device(1);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    let a = ctx(&dev);
    let l = Layout::new(vec![0xc000, 0x4000, 0x8000], 8, 3 * 4096 - 8);
    for &p in &l.pages {
        r.write(p, &[0x11; 4096]).unwrap();
    }
    let k = reg(&dev, a, &l, PL_ACCESS_READ | PL_ACCESS_WRITE);
    let clean = PlVerifyResp {
        mismatches: 0,
        first_bad_offset: u64::MAX,
        first_bad_value: 0,
    };

    // CONST over a middle range.
    let p = 0x0123_4567_89ab_cdef;
    dev.fill(a, &pattern(k, 16, 8192, p, PL_PATTERN_CONST))
        .unwrap();
    for o in (16..16 + 8192).step_by(8) {
        assert_eq!(l.word(r, o), p, "word at {o}");
    }
    assert_eq!(l.word(r, 8), 0x1111_1111_1111_1111, "before the range");
    assert_eq!(
        l.word(r, 16 + 8192),
        0x1111_1111_1111_1111,
        "after the range"
    );
    let mut first = [0u8; 8];
    r.read(0xc000, &mut first).unwrap();
    assert_eq!(first, [0x11; 8], "before the MR's first_page_offset");
    assert_eq!(
        dev.verify(a, &pattern(k, 16, 8192, p, PL_PATTERN_CONST))
            .unwrap(),
        clean
    );

    // OFFSET_XOR over the whole MR.
    let len = l.len; // 12280, a multiple of 8
    dev.fill(a, &pattern(k, 0, len, p, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    for o in (0..len).step_by(8) {
        assert_eq!(l.word(r, o), p ^ o, "word at {o}");
    }
    assert_eq!(
        dev.verify(a, &pattern(k, 0, len, p, PL_PATTERN_OFFSET_XOR))
            .unwrap(),
        clean
    );
    // The CONST view of an OFFSET_XOR fill mismatches everywhere but offset 0.
    let v = dev
        .verify(a, &pattern(k, 0, len, p, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(
        (v.mismatches, v.first_bad_offset, v.first_bad_value),
        (len / 8 - 1, 8, p ^ 8)
    );

    // Corrupt words by hand, as the guest CPU would.
    l.set_word(r, 8000, 0xbad);
    l.set_word(r, 4088, 0xbad2);
    let v = dev
        .verify(a, &pattern(k, 0, len, p, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(
        (v.mismatches, v.first_bad_offset, v.first_bad_value),
        (2, 4088, 0xbad2)
    );
    let v = dev
        .verify(a, &pattern(k, 4096, len - 4096, p, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(
        (v.mismatches, v.first_bad_offset, v.first_bad_value),
        (1, 8000, 0xbad)
    );
    assert_eq!(
        dev.verify(a, &pattern(k, 0, 0, p, PL_PATTERN_CONST))
            .unwrap(),
        clean,
        "length 0"
    );
    dev.fill(a, &pattern(k, len, 0, 7, PL_PATTERN_CONST))
        .unwrap();

    // Bad requests change nothing.
    let inval = Status::Inval;
    assert_eq!(
        st(dev.fill(a, &pattern(k, 0, 8, 1, 2))),
        inval,
        "unknown mode"
    );
    assert_eq!(st(dev.verify(a, &pattern(k, 0, 8, 1, 9))), inval);
    assert_eq!(
        st(dev.fill(a, &pattern(k, 4, 8, 1, PL_PATTERN_CONST))),
        inval
    );
    assert_eq!(
        st(dev.fill(a, &pattern(k, 0, 12, 1, PL_PATTERN_CONST))),
        inval
    );
    assert_eq!(
        st(dev.verify(a, &pattern(k, 0, 12, 1, PL_PATTERN_CONST))),
        inval
    );
    let mut reserved = pattern(k, 0, 8, 1, PL_PATTERN_CONST);
    reserved.reserved = 1;
    assert_eq!(st(dev.fill(a, &reserved)), inval);
    assert_eq!(
        st(dev.fill(a, &pattern(k, 8, len, 1, PL_PATTERN_CONST))),
        Status::Range
    );
    assert_eq!(
        st(dev.fill(a, &pattern(k, u64::MAX - 7, 16, 1, PL_PATTERN_CONST))),
        Status::Range
    );
    assert_eq!(
        st(dev.verify(a, &pattern(k, len, 8, 1, PL_PATTERN_CONST))),
        Status::Range
    );
    let ro = reg(&dev, a, &Layout::pages(vec![0x20000]), PL_ACCESS_READ);
    let wo = reg(&dev, a, &Layout::pages(vec![0x21000]), PL_ACCESS_WRITE);
    assert_eq!(
        st(dev.fill(a, &pattern(ro, 0, 8, 1, PL_PATTERN_CONST))),
        Status::Perm
    );
    assert_eq!(
        st(dev.verify(a, &pattern(wo, 0, 8, 1, PL_PATTERN_CONST))),
        Status::Perm
    );
    dev.fill(a, &pattern(wo, 0, 4096, 3, PL_PATTERN_CONST))
        .unwrap();
    let v = dev
        .verify(a, &pattern(k, 0, len, p, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(v.mismatches, 2, "refused requests wrote nothing");
}

// ---- 5. revoke ------------------------------------------------------------------------------

/// What the DMA thread of a revoke test saw: (started after the revoke
/// returned, status) for each attempt.
type Attempts = Vec<(bool, Status)>;

/// Runs repeated 1 MiB WRITEs `src -> dst` on a thread, calls `revoke` once
/// some have completed, then checks that after `revoke` returned no DMA
/// changed a byte of `dst` (the source is rewritten meanwhile), and that
/// in-flight and later attempts ended with ECANCELED, never anything else.
fn revoke_under_dma(
    dev: &Arc<Device>,
    c: Handle,
    src: (Handle, &Layout),
    dst: (Handle, &Layout),
    revoke: impl FnOnce(),
) -> Attempts {
    let r = ram(dev);
    let (ks, ls) = src;
    let (kd, ld) = dst;
    ls.write(r.as_ref().as_ref(), 0, &bytes(ls.len as usize, 0x5c));
    let revoked = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));
    let t = {
        let (dev, revoked, stop, ok, after) = (
            dev.clone(),
            revoked.clone(),
            stop.clone(),
            ok.clone(),
            after.clone(),
        );
        let len = ld.len;
        thread::spawn(move || {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let post = revoked.load(Ordering::SeqCst);
                let s = match write(&dev, c, ks, 0, kd, 0, len) {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        Status::Ok
                    }
                    Err(e) => e.status,
                };
                if post {
                    after.fetch_add(1, Ordering::SeqCst);
                }
                seen.push((post, s));
            }
            seen
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "DMA thread made no progress");
        thread::yield_now();
    }
    revoke();
    revoked.store(true, Ordering::SeqCst);
    let snapshot = ld.all(r.as_ref().as_ref());
    // New source bytes: any copy from now on would show in dst.
    ls.write(r.as_ref().as_ref(), 0, &bytes(ls.len as usize, 0xa3));
    let deadline = Instant::now() + Duration::from_millis(300);
    while after.load(Ordering::SeqCst) < 50 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::SeqCst);
    let seen = t.join().unwrap();
    assert!(
        ld.all(r.as_ref().as_ref()) == snapshot,
        "a DMA wrote into the MR after its revoke returned"
    );
    assert!(
        seen.iter().filter(|(post, _)| *post).count() > 0,
        "no attempt after revoke"
    );
    for (i, (post, s)) in seen.iter().enumerate() {
        assert!(
            *s == Status::Ok || *s == Status::Canceled,
            "attempt {i}: {s:?} (in-flight DMA must end with ECANCELED)"
        );
        if *post {
            assert_eq!(*s, Status::Canceled, "attempt {i} started after the revoke");
        }
    }
    let first_cancel = seen
        .iter()
        .position(|(_, s)| *s == Status::Canceled)
        .unwrap();
    assert!(
        seen[first_cancel..]
            .iter()
            .all(|(_, s)| *s == Status::Canceled),
        "an attempt succeeded after one was canceled"
    );
    seen
}

#[test]
fn lease_break_revoke_is_final_under_concurrent_dma() {
    let dev = device(4);
    let c = ctx(&dev);
    // 1 MiB each; the target's page list is reversed (4 KiB runs).
    let ls = Layout::pages(run(0, 256));
    let mut tp = run(2 * MIB as u64, 256);
    tp.reverse();
    let ld = Layout::pages(tp);
    let ks = reg(&dev, c, &ls, PL_ACCESS_READ);
    let lease = take(&dev, c, file(9), 0, 0, PL_POLICY_REVOKE);
    let resp = reg_file(&dev, c, &ld, PL_ACCESS_WRITE, file(9), 0);
    assert_eq!(resp.lease, lease);
    let kd = resp.key;
    let d2 = dev.clone();
    revoke_under_dma(&dev, c, (ks, &ls), (kd, &ld), || {
        let b = brk(&d2, file(9), 0, 4096);
        assert_eq!(
            (b.leases, b.leases_held, b.mrs_revoked, b.pages_unpinned),
            (1, 0, 1, 256)
        );
    });
    assert_eq!(dev.pin_totals(), (256, 256), "only the source stays pinned");
    assert_eq!(
        event_summary(&dev),
        vec![
            (
                PL_EVENT_MR_REVOKED,
                c,
                [kd, PL_REVOKE_LEASE_BREAK, 256, lease]
            ),
            (
                PL_EVENT_LEASE_BROKEN,
                c,
                [lease, PL_BREAK_TRUNCATE.into(), PL_POLICY_REVOKE.into(), 1]
            ),
        ]
    );
}

#[test]
fn memory_map_change_revoke_is_final_under_concurrent_dma() {
    let full = two_region_map((0, 2 * MIB), (4 * MIB as u64, MIB));
    let dev = Arc::new(Device::new(Limits::default()));
    dev.set_memory(Box::new(MmapRam::new(full.clone())));
    let c = ctx(&dev);
    let ls = Layout::pages(run(0, 256));
    let ld = Layout::pages(run(4 * MIB as u64, 256));
    let ks = reg(&dev, c, &ls, PL_ACCESS_READ);
    let kd = reg(&dev, c, &ld, PL_ACCESS_WRITE);
    let old = ram(&dev);
    let d2 = dev.clone();
    let f2 = full.clone();
    // `revoke_under_dma` reads through the map current when it starts,
    // which keeps the removed region mapped for the final comparison.
    revoke_under_dma(&dev, c, (ks, &ls), (kd, &ld), || {
        assert_eq!(
            d2.set_memory(Box::new(without_region(&f2, 4 * MIB as u64, MIB))),
            1
        );
    });
    drop(old);
    assert!(dev.mr(ks).unwrap().is_live());
    assert_eq!(dev.pin_totals(), (256, 256));
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_MR_REVOKED, c, [kd, PL_REVOKE_MEMORY_MAP, 256, 0])]
    );
}

#[test]
fn revoked_mr_stays_visible_refuses_access_and_dereg_does_not_double_unpin() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    // The revoked MR shares its first page with a live one.
    let lv = Layout::pages(vec![0x1000]);
    let live = reg(&dev, a, &lv, PL_ACCESS_ALL);
    let lr = Layout::pages(vec![0x1000, 0x2000, 0x3000]);
    let lease = take(&dev, a, file(1), 0, 3 * 4096, PL_POLICY_REVOKE);
    let k = reg_file(&dev, a, &lr, PL_ACCESS_ALL, file(1), 0).key;
    let mine = reg(&dev, b, &Layout::pages(vec![0x9000]), PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (4, 5));
    lr.set_word(r, 8192, 5);
    let resp = brk(&dev, file(1), 0, 0);
    assert_eq!((resp.mrs_revoked, resp.pages_unpinned), (1, 3));
    assert_eq!(
        dev.pin_totals(),
        (2, 2),
        "shared page keeps the live MR's pin"
    );
    assert_eq!(lease_state(&dev, lease), LeaseState::Revoked);
    assert_eq!(lease_status(&dev, lease).unwrap().state, "revoked");

    let s = mr_status(&dev, k).expect("revoked MR stays in status");
    assert_eq!((s.state, s.revoke_reason), ("revoked", Some("lease-break")));
    let c = Status::Canceled;
    assert_eq!(st(write(&dev, a, k, 0, live, 0, 8)), c);
    assert_eq!(st(write(&dev, a, live, 0, k, 0, 8)), c);
    assert_eq!(st(read(&dev, a, live, 0, k, 0, 0)), c, "even zero length");
    assert_eq!(st(write(&dev, b, mine, 0, k, 0, 8)), c);
    assert_eq!(
        st(dev.atomic(b, AtomicOp::FetchAdd, &atomic(k, 8192, 1, 0))),
        c
    );
    assert_eq!(st(dev.fill(b, &pattern(k, 0, 8, 1, PL_PATTERN_CONST))), c);
    assert_eq!(st(dev.verify(b, &pattern(k, 0, 8, 1, PL_PATTERN_CONST))), c);
    assert_eq!(st(dev.export_mr(a, k)), c);
    assert_eq!(lr.word(r, 8192), 5);

    let revokes = || dev.counters.revokes.load(Ordering::Relaxed);
    assert_eq!(revokes(), 1);
    dev.dereg_mr(a, k).unwrap();
    assert_eq!(
        dev.pin_totals(),
        (2, 2),
        "dereg of a revoked MR unpins nothing"
    );
    assert_eq!(revokes(), 1, "and does not revoke it again");
    assert_eq!(st(dev.mr(k)), Status::Stale);
    assert!(mr_status(&dev, k).is_none());
    assert!(dev
        .events
        .pop()
        .is_some_and(|e| e.kind == PL_EVENT_MR_REVOKED));
    assert!(dev
        .events
        .pop()
        .is_some_and(|e| e.kind == PL_EVENT_LEASE_BROKEN));
    assert!(dev.events.pop().is_none(), "no event for the dereg");
    dev.dereg_mr(a, live).unwrap();
    dev.dereg_mr(b, mine).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0));
}

// ---- 6. leases ------------------------------------------------------------------------------

#[test]
fn lease_take_and_release_validation() {
    let limits = Limits {
        max_leases: 2,
        ..Limits::default()
    };
    let dev = device_with(limits, &[(0, MIB)]);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let f = file(1);
    assert_eq!(st(dev.lease_take(a, &take_req(f, 0, 0, 0))), Status::Inval);
    assert_eq!(st(dev.lease_take(a, &take_req(f, 0, 0, 4))), Status::Inval);
    assert_eq!(
        st(dev.lease_take(a, &take_req(f, u64::MAX, 1, PL_POLICY_WAIT))),
        Status::Range
    );
    assert_eq!(
        st(dev.lease_take(a, &take_req(f, 10, u64::MAX - 9, PL_POLICY_WAIT))),
        Status::Range
    );
    let mut resv = take_req(f, 0, 0, PL_POLICY_WAIT);
    resv.file.reserved = 1;
    assert_eq!(st(dev.lease_take(a, &resv)), Status::Inval);
    assert!(dev.leases.is_empty());

    let l = take(&dev, a, f, 0, 0, PL_POLICY_WAIT);
    let s = lease_status(&dev, l).unwrap();
    assert_eq!(
        (s.start, s.end, s.state, s.policy, s.owner_pid),
        (0, None, "active", "wait", 99)
    );
    assert_eq!(s.holder, hex(a));
    let l2 = take(&dev, b, f, 10, 10, PL_POLICY_REVOKE);
    assert_eq!(lease_status(&dev, l2).unwrap().end, Some(20));
    assert_eq!(
        st(dev.lease_take(a, &take_req(file(2), 0, 0, PL_POLICY_WAIT))),
        Status::NoMem
    );

    assert_eq!(
        st(dev.lease_release(b, &release_req(l, PL_RELEASE_HOLDER))),
        Status::Perm
    );
    assert_eq!(
        st(dev.lease_release(b, &release_req(l, PL_RELEASE_LOST))),
        Status::Perm
    );
    assert_eq!(st(dev.lease_release(a, &release_req(l, 2))), Status::Inval);
    let mut rr = release_req(l, PL_RELEASE_HOLDER);
    rr.reserved = 1;
    assert_eq!(st(dev.lease_release(a, &rr)), Status::Inval);
    assert_eq!(st(dev.lease_release(a, &release_req(0, 0))), Status::NoEnt);
    assert_eq!(
        st(dev.lease_release(a, &release_req(l2 + 7, 0))),
        Status::NoEnt
    );
    assert_eq!(lease_state(&dev, l), LeaseState::Active);
    dev.lease_release(a, &release_req(l, PL_RELEASE_HOLDER))
        .unwrap();
    assert_eq!(
        st(dev.lease_release(a, &release_req(l, PL_RELEASE_HOLDER))),
        Status::Stale
    );
    assert_eq!(st(dev.lease(l)), Status::Stale);
    assert!(lease_status(&dev, l).is_none());
    take(&dev, a, file(2), 0, 0, PL_POLICY_WAIT);
    assert_eq!(dev.leases.len(), 2);

    // Bad breaks.
    let mut bad = break_req(f, 0, 0);
    bad.reason = 0;
    assert_eq!(st(dev.lease_break(&bad)), Status::Inval);
    bad.reason = PL_BREAK_OTHER + 1;
    assert_eq!(st(dev.lease_break(&bad)), Status::Inval);
    assert_eq!(
        st(dev.lease_break(&break_req(f, 1, u64::MAX))),
        Status::Range
    );
    assert_eq!(lease_state(&dev, l2), LeaseState::Active);
}

#[test]
fn break_with_revoke_policy_revokes_exactly_the_holders_overlapping_mrs() {
    let dev = device(1);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    let a = ctx(&dev);
    let b = ctx(&dev);
    let (f, g) = (file(1), file(2));
    let lease = take(&dev, a, f, 0, 0x10000, PL_POLICY_REVOKE);
    let pg = |i: u64, n: usize| Layout::pages(run(i * 0x1000, n));
    // a's MRs.
    let inside = reg_file(&dev, a, &pg(1, 2), PL_ACCESS_ALL, f, 0);
    assert_eq!(inside.lease, lease);
    let straddle = reg_file(&dev, a, &pg(3, 2), PL_ACCESS_ALL, f, 0xf000);
    assert_eq!(straddle.lease, 0, "not fully inside the lease");
    let beyond = reg_file(&dev, a, &pg(5, 1), PL_ACCESS_ALL, f, 0x10000).key;
    let other_file = reg_file(&dev, a, &pg(6, 1), PL_ACCESS_ALL, g, 0).key;
    let no_file = reg(&dev, a, &pg(7, 1), PL_ACCESS_ALL);
    // b's MR on the same file range: b holds no lease there.
    let bs = reg_file(&dev, b, &pg(8, 1), PL_ACCESS_ALL, f, 0);
    assert_eq!(bs.lease, 0, "a's lease does not cover b's MR");
    assert_eq!(dev.pin_totals(), (8, 8));

    assert_eq!(
        brk(&dev, f, 0x20000, 0x1000).leases,
        0,
        "range outside the lease"
    );
    assert_eq!(brk(&dev, g, 0, 0).leases, 0, "other file");
    assert!(dev.events.pop().is_none());

    // A break of one page inside the lease: the lease's whole range counts.
    let resp = brk(&dev, f, 0x8000, 0x1000);
    assert_eq!(
        resp,
        PlLeaseBreakResp {
            leases: 1,
            leases_held: 0,
            mrs_revoked: 2,
            reserved: 0,
            pages_unpinned: 4
        }
    );
    assert_eq!(dev.pin_totals(), (4, 4));
    let mut ev = event_summary(&dev);
    let broken = ev.pop().unwrap();
    assert_eq!(
        broken,
        (
            PL_EVENT_LEASE_BROKEN,
            a,
            [lease, PL_BREAK_TRUNCATE.into(), PL_POLICY_REVOKE.into(), 2]
        )
    );
    ev.sort();
    let mut want = vec![
        (
            PL_EVENT_MR_REVOKED,
            a,
            [inside.key, PL_REVOKE_LEASE_BREAK, 2, lease],
        ),
        (
            PL_EVENT_MR_REVOKED,
            a,
            [straddle.key, PL_REVOKE_LEASE_BREAK, 2, 0],
        ),
    ];
    want.sort();
    assert_eq!(ev, want);
    assert_eq!(lease_state(&dev, lease), LeaseState::Revoked);
    assert!(!dev.mr(inside.key).unwrap().is_live());
    assert!(!dev.mr(straddle.key).unwrap().is_live());
    // Everything else is live and moves bytes.
    r.write(0x5000, &[9; 16]).unwrap();
    for k in [beyond, other_file, no_file] {
        write(&dev, a, beyond, 0, k, 64, 16).unwrap();
        assert!(mr_status(&dev, k).unwrap().state == "live");
    }
    write(&dev, b, bs.key, 0, no_file, 0, 16).unwrap();
    let mut got = [0u8; 16];
    r.read(0x6000 + 64, &mut got).unwrap();
    assert_eq!(got, [9; 16]);

    // A second break of the revoked lease counts it and does nothing else.
    let again = brk(&dev, f, 0, 0);
    assert_eq!(
        (
            again.leases,
            again.leases_held,
            again.mrs_revoked,
            again.pages_unpinned
        ),
        (1, 0, 0, 0)
    );
    assert!(dev.events.pop().is_none());
    // A revoked lease does not block a new one.
    let l2 = take(&dev, b, f, 0, 0, PL_POLICY_REVOKE);
    assert_eq!(lease_state(&dev, l2), LeaseState::Active);
}

#[test]
fn break_with_wait_or_timeout_policy_leaves_mrs_and_blocks_new_leases() {
    for policy in [PL_POLICY_WAIT, PL_POLICY_TIMEOUT] {
        let dev = device(1);
        let r = ram(&dev);
        let r = r.as_ref().as_ref();
        let a = ctx(&dev);
        let b = ctx(&dev);
        let f = file(3);
        let lease = take(&dev, a, f, 0x1000, 0x4000, policy);
        let lm = Layout::pages(run(0x1000, 2));
        let k = reg_file(&dev, a, &lm, PL_ACCESS_ALL, f, 0x1000);
        assert_eq!(k.lease, lease);
        let resp = brk(&dev, f, 0, 0x2000);
        assert_eq!(
            (
                resp.leases,
                resp.leases_held,
                resp.mrs_revoked,
                resp.pages_unpinned
            ),
            (1, 1, 0, 0)
        );
        assert_eq!(lease_state(&dev, lease), LeaseState::Breaking);
        assert_eq!(lease_status(&dev, lease).unwrap().state, "breaking");
        assert_eq!(
            event_summary(&dev),
            vec![(
                PL_EVENT_LEASE_BROKEN,
                a,
                [lease, PL_BREAK_TRUNCATE.into(), policy.into(), 1]
            )]
        );
        // MRs untouched.
        assert_eq!(dev.pin_totals(), (2, 2));
        dev.fill(b, &pattern(k.key, 0, 8192, 4, PL_PATTERN_CONST))
            .unwrap();
        assert_eq!(lm.word(r, 8184), 4);
        // A second break: still held, no second event.
        let again = brk(&dev, f, 0x4000, 0);
        assert_eq!((again.leases, again.leases_held), (1, 1));
        assert!(dev.events.pop().is_none());
        // No new lease on an overlapping range, any holder; elsewhere is fine.
        assert_eq!(
            st(dev.lease_take(b, &take_req(f, 0x4fff, 1, PL_POLICY_WAIT))),
            Status::Busy
        );
        assert_eq!(
            st(dev.lease_take(a, &take_req(f, 0, 0, PL_POLICY_REVOKE))),
            Status::Busy
        );
        let other = take(&dev, b, f, 0x5000, 0x1000, PL_POLICY_WAIT);
        take(&dev, b, file(4), 0x1000, 0x4000, PL_POLICY_WAIT);
        // A new MR in the range does not come under a breaking lease.
        let k2 = reg_file(&dev, a, &lm, PL_ACCESS_ALL, f, 0x1000);
        assert_eq!(k2.lease, 0);
        // The holder finishes its part: the lease goes, the range is free.
        dev.lease_release(a, &release_req(lease, PL_RELEASE_HOLDER))
            .unwrap();
        assert_eq!(st(dev.lease(lease)), Status::Stale);
        assert!(dev.mr(k.key).unwrap().is_live());
        assert!(mr_status(&dev, k.key).unwrap().lease.is_none());
        let done = brk(&dev, f, 0x1000, 0x1000);
        assert_eq!((done.leases, done.leases_held), (0, 0));
        take(&dev, b, f, 0, 0x5000, PL_POLICY_WAIT);
        assert_eq!(lease_state(&dev, other), LeaseState::Active);
    }
}

#[test]
fn lost_lease_counts_every_later_access() {
    let dev = device(1);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    let a = ctx(&dev);
    let b = ctx(&dev);
    let f = file(5);
    let lease = take(&dev, a, f, 0, 0, PL_POLICY_TIMEOUT);
    let lm = Layout::pages(vec![0x3000, 0x1000]);
    let under = reg_file(&dev, a, &lm, PL_ACCESS_ALL, f, 0x2000);
    assert_eq!(under.lease, lease);
    let lb = Layout::pages(vec![0x8000]);
    let plain = reg(&dev, b, &lb, PL_ACCESS_ALL);
    lb.write(r, 0, &bytes(4096, 1));

    // Accesses while the lease is active or breaking are not counted.
    write(&dev, b, plain, 0, under.key, 0, 64).unwrap();
    brk(&dev, f, 0, 0);
    write(&dev, b, plain, 0, under.key, 0, 64).unwrap();
    let _ = events(&dev);
    assert_eq!(
        dev.lease(lease)
            .unwrap()
            .lost_accesses
            .load(Ordering::Relaxed),
        0
    );

    dev.lease_release(a, &release_req(lease, PL_RELEASE_LOST))
        .unwrap();
    assert_eq!(lease_state(&dev, lease), LeaseState::Lost);
    let s = lease_status(&dev, lease).unwrap();
    assert_eq!(
        (s.state, s.mrs, s.pinned_pages, s.lost_accesses),
        ("lost", 1, 2, 0)
    );
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_LEASE_LOST, a, [lease, 1, 2, 0])]
    );
    let lost = || lease_status(&dev, lease).unwrap().lost_accesses;
    // Each access succeeds as usual, moves its bytes, and is counted.
    let data = bytes(4096, 0x66);
    lb.write(r, 0, &data);
    write(&dev, b, plain, 0, under.key, 100, 3996).unwrap();
    assert_eq!(lm.read(r, 100, 3996), data[..3996]);
    assert_eq!(lost(), 1);
    read(&dev, b, plain, 0, under.key, 0, 4096).unwrap();
    assert_eq!(lost(), 2);
    lm.set_word(r, 4096, 40);
    assert_eq!(
        dev.atomic(b, AtomicOp::FetchAdd, &atomic(under.key, 4096, 2, 0))
            .unwrap(),
        40
    );
    assert_eq!(lm.word(r, 4096), 42);
    assert_eq!(lost(), 3);
    dev.fill(b, &pattern(under.key, 0, 4096, 7, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(lm.word(r, 4088), 7);
    assert_eq!(lost(), 4);
    let v = dev
        .verify(b, &pattern(under.key, 0, 4096, 7, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(v.mismatches, 0);
    assert_eq!(lost(), 5);
    // The holder's own DMA through it, and an import of it, count too.
    let la = Layout::pages(vec![0x9000]);
    let own = reg(&dev, a, &la, PL_ACCESS_ALL);
    write(&dev, a, own, 0, under.key, 0, 8).unwrap();
    assert_eq!(lost(), 6);
    let ex = dev.export_mr(a, under.key).unwrap().export;
    let imp = dev
        .import_mr(b, &import_req(ex, PL_ACCESS_READ))
        .unwrap()
        .key;
    write(&dev, b, imp, 0, plain, 0, 8).unwrap();
    assert_eq!(lost(), 7, "an import counts under its source's lease");
    // Accesses to MRs not under the lease are not counted.
    write(&dev, a, own, 0, plain, 0, 8).unwrap();
    assert_eq!(lost(), 7);
    assert_eq!(dev.counters.lost_accesses.load(Ordering::Relaxed), 7);
    assert_eq!(dev.status().counters.lost_accesses, 7);
    // A refused access is not an access.
    assert_eq!(
        st(write(&dev, b, plain, 0, under.key, 8000, 1000)),
        Status::Range
    );
    assert_eq!(lost(), 7);

    // The LOST lease stays until the holder releases it (or closes).
    let again = brk(&dev, f, 0, 0);
    assert_eq!(
        (again.leases, again.leases_held, again.mrs_revoked),
        (1, 0, 0)
    );
    dev.lease_release(a, &release_req(lease, PL_RELEASE_HOLDER))
        .unwrap();
    assert!(dev.leases.is_empty());
    write(&dev, b, plain, 0, under.key, 0, 8).unwrap();
    assert_eq!(dev.counters.lost_accesses.load(Ordering::Relaxed), 7);
}

#[test]
fn reg_mr_reports_only_the_same_holders_active_covering_lease() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let (f, g) = (file(1), file(2));
    let l = take(&dev, a, f, 0, MIB as u64, PL_POLICY_REVOKE);
    let one = Layout::pages(vec![0x1000]);
    let two = Layout::pages(run(0x2000, 2));
    assert_eq!(reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 4096).lease, l);
    assert_eq!(
        reg_file(&dev, a, &two, PL_ACCESS_ALL, f, MIB as u64 - 8192).lease,
        l,
        "exactly to the end"
    );
    assert_eq!(
        reg_file(&dev, a, &two, PL_ACCESS_ALL, f, MIB as u64 - 4096).lease,
        0,
        "past the end"
    );
    assert_eq!(
        reg_file(&dev, a, &one, PL_ACCESS_ALL, g, 4096).lease,
        0,
        "other file"
    );
    let other_gen = PlFileId { generation: 8, ..f };
    assert_eq!(
        reg_file(&dev, a, &one, PL_ACCESS_ALL, other_gen, 0).lease,
        0,
        "recycled inode"
    );
    assert_eq!(
        dev.reg_mr(a, one.req(PL_ACCESS_ALL)).unwrap().lease,
        0,
        "no file"
    );
    assert_eq!(
        reg_file(&dev, b, &one, PL_ACCESS_ALL, f, 4096).lease,
        0,
        "another holder"
    );
    // Of two covering leases, one is reported.
    let l2 = take(&dev, a, f, 0, 0, PL_POLICY_WAIT);
    let r = reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 0).lease;
    assert!(r == l || r == l2);
    assert_eq!(
        reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 2 * MIB as u64).lease,
        l2
    );
    // The MR is under the reported lease (status shows it).
    let k = reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 2 * MIB as u64);
    assert_eq!(mr_status(&dev, k.key).unwrap().lease, Some(hex(l2)));
    // A revoked lease is not reported.
    brk(&dev, f, 0, 4096);
    let _ = events(&dev);
    assert_eq!(lease_state(&dev, l), LeaseState::Revoked);
    assert_eq!(lease_state(&dev, l2), LeaseState::Breaking);
    assert_eq!(reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 4096).lease, 0);
}

#[test]
fn lease_taken_after_reg_mr_adopts_the_holders_mrs() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let f = file(1);
    let one = Layout::pages(vec![0x1000]);
    let k1 = reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 0x4000).key;
    let k_out = reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 0x20000).key;
    let kb = reg_file(&dev, b, &one, PL_ACCESS_ALL, f, 0x4000).key;
    let first = take(&dev, a, f, 0x4000, 0x1000, PL_POLICY_WAIT);
    assert_eq!(mr_status(&dev, k1).unwrap().lease, Some(hex(first)));
    // A second, wider lease does not steal an MR already under a lease.
    let l = take(&dev, a, f, 0, 0x10000, PL_POLICY_REVOKE);
    let k2 = reg_file(
        &dev,
        a,
        &Layout::pages(vec![0x2000]),
        PL_ACCESS_ALL,
        f,
        0x8000,
    )
    .key;
    assert_eq!(mr_status(&dev, k1).unwrap().lease, Some(hex(first)));
    assert_eq!(mr_status(&dev, k2).unwrap().lease, Some(hex(l)));
    assert_eq!(mr_status(&dev, k_out).unwrap().lease, None);
    assert_eq!(
        mr_status(&dev, kb).unwrap().lease,
        None,
        "another holder's MR"
    );
    let s = lease_status(&dev, l).unwrap();
    assert_eq!((s.mrs, s.pinned_pages), (1, 1));
    // Releasing the first lease leaves k1 under no lease; a new one adopts it.
    dev.lease_release(a, &release_req(first, PL_RELEASE_HOLDER))
        .unwrap();
    assert_eq!(mr_status(&dev, k1).unwrap().lease, None);
    let l3 = take(&dev, a, f, 0x4000, 0x1000, PL_POLICY_REVOKE);
    assert_eq!(mr_status(&dev, k1).unwrap().lease, Some(hex(l3)));
    // Breaking l revokes every overlapping MR of a; the MR_REVOKED events
    // name the lease each MR is under.
    let resp = brk(&dev, f, 0x8000, 1);
    assert_eq!((resp.leases, resp.mrs_revoked), (1, 2));
    let mut ev = event_summary(&dev);
    ev.sort();
    let mut want = vec![
        (PL_EVENT_MR_REVOKED, a, [k1, PL_REVOKE_LEASE_BREAK, 1, l3]),
        (PL_EVENT_MR_REVOKED, a, [k2, PL_REVOKE_LEASE_BREAK, 1, l]),
        (
            PL_EVENT_LEASE_BROKEN,
            a,
            [l, PL_BREAK_TRUNCATE.into(), PL_POLICY_REVOKE.into(), 2],
        ),
    ];
    want.sort();
    assert_eq!(ev, want);
    assert!(dev.mr(kb).unwrap().is_live() && dev.mr(k_out).unwrap().is_live());
    assert_eq!(
        lease_state(&dev, l3),
        LeaseState::Active,
        "l3 does not overlap the break"
    );
}

#[test]
fn close_releases_every_lease_in_every_state() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let one = Layout::pages(vec![0x1000]);
    let active = take(&dev, a, file(1), 0, 0, PL_POLICY_WAIT);
    let breaking = take(&dev, a, file(2), 0, 0, PL_POLICY_WAIT);
    let revoked = take(&dev, a, file(3), 0, 0, PL_POLICY_REVOKE);
    let lost = take(&dev, a, file(4), 0, 0, PL_POLICY_TIMEOUT);
    reg_file(&dev, a, &one, PL_ACCESS_ALL, file(3), 0);
    reg_file(&dev, a, &one, PL_ACCESS_ALL, file(4), 0);
    let keep = take(&dev, b, file(1), 0, 0, PL_POLICY_WAIT);
    brk(&dev, file(2), 0, 0);
    brk(&dev, file(3), 0, 0);
    dev.lease_release(a, &release_req(lost, PL_RELEASE_LOST))
        .unwrap();
    assert_eq!(dev.leases.len(), 5);
    let _ = events(&dev);
    let resp = dev.close_context(a).unwrap();
    assert_eq!(
        (
            resp.mrs_destroyed,
            resp.leases_released,
            resp.pages_unpinned
        ),
        (2, 4, 1),
        "the revoked MR's page was unpinned earlier"
    );
    for l in [active, breaking, revoked, lost] {
        assert_eq!(st(dev.lease(l)), Status::Stale);
    }
    assert_eq!(dev.leases.len(), 1);
    assert_eq!(lease_status(&dev, keep).unwrap().state, "active");
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_CONTEXT_TORN_DOWN, a, [2, 4, 1, 0])]
    );
    dev.close_context(b).unwrap();
    assert!(dev.leases.is_empty());
    assert!(dev.status().leases.is_empty());
    // Breaks find nothing any more.
    assert_eq!(brk(&dev, file(1), 0, 0).leases, 0);
}

// ---- 7. exports ------------------------------------------------------------------------------

#[test]
fn export_is_unique_and_counts_references() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let e1 = dev.export_mr(a, k).unwrap();
    assert_eq!(e1.refs, 1);
    let e2 = dev.export_mr(a, k).unwrap();
    assert_eq!(
        (e2.export, e2.refs),
        (e1.export, 2),
        "same export, one more reference"
    );
    let s = dev.status();
    let ctx_a = s.contexts.iter().find(|c| c.handle == hex(a)).unwrap();
    assert_eq!(ctx_a.children.len(), 1);
    assert_eq!(ctx_a.children[0].kind, "mr-export");
    assert_eq!(ctx_a.children[0].mr, Some(hex(k)));
    assert_eq!(ctx_a.children[0].refs, Some(2));
    assert_eq!(
        st(dev.export_mr(b, k)),
        Status::Perm,
        "another context's MR"
    );
    assert_eq!(st(dev.destroy_child(b, e1.export)), Status::Perm);

    dev.destroy_child(a, e1.export).unwrap();
    let imp = dev
        .import_mr(b, &import_req(e1.export, PL_ACCESS_READ))
        .unwrap();
    assert_eq!(imp.lease, 0);
    dev.destroy_child(a, e1.export).unwrap();
    assert_eq!(
        st(dev.import_mr(b, &import_req(e1.export, PL_ACCESS_READ))),
        Status::Stale
    );
    assert_eq!(st(dev.destroy_child(a, e1.export)), Status::Stale);
    assert!(dev.status().contexts.iter().all(|c| c.children.is_empty()));
    assert!(
        dev.mr(imp.key).unwrap().is_live(),
        "imports outlive the export"
    );
    // A new export is a new handle.
    let e3 = dev.export_mr(a, k).unwrap();
    assert_ne!(e3.export, e1.export);
    assert_eq!(e3.refs, 1);
    // Exports keep the context object alive, not the MR.
    dev.close_context(a).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0));
    assert_eq!(st(dev.release_context(a)), Status::Busy);
    assert_eq!(
        st(dev.import_mr(b, &import_req(e3.export, PL_ACCESS_READ))),
        Status::Canceled
    );
    dev.destroy_child(a, e3.export).unwrap();
    dev.release_context(a).unwrap();
}

#[test]
fn concurrent_export_and_destroy_never_yield_two_live_exports() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 10_000;
    let dev = device(1);
    let a = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    // (handle, holders): the export the threads hold references to now.
    let held = Arc::new(Mutex::new((0u64, 0usize)));
    let distinct = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (dev, held, distinct, start) =
                (dev.clone(), held.clone(), distinct.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    let e = dev.export_mr(a, k).expect("export");
                    assert!(e.refs >= 1);
                    {
                        let mut h = held.lock().unwrap();
                        if h.1 > 0 {
                            assert_eq!(
                                h.0, e.export,
                                "two different exports of one MR alive at once"
                            );
                        }
                        *h = (e.export, h.1 + 1);
                    }
                    distinct.lock().unwrap().insert(e.export);
                    {
                        let mut h = held.lock().unwrap();
                        h.1 -= 1;
                    }
                    dev.destroy_child(a, e.export).expect("destroy");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        dev.status().contexts[0].children.is_empty(),
        "no export left"
    );
    assert!(dev.children.is_empty());
    assert!(
        distinct.lock().unwrap().len() > 1,
        "exports were destroyed and remade"
    );
    // And the machinery still works.
    let e = dev.export_mr(a, k).unwrap();
    assert_eq!(e.refs, 1);
    dev.destroy_child(a, e.export).unwrap();
    dev.release_context(a).unwrap();
}

#[test]
fn import_aliases_the_exported_bytes() {
    let dev = device(1);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    let a = ctx(&dev);
    let b = ctx(&dev);
    let src = Layout::new(vec![0x7000, 0x3000, 0x5000], 0x10, 3 * 4096 - 0x20);
    let k = reg(&dev, a, &src, PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let pins = dev.pin_totals();
    let imp = dev
        .import_mr(b, &import_req(e, PL_ACCESS_READ | PL_ACCESS_WRITE))
        .unwrap();
    assert_eq!(dev.pin_totals(), pins, "an import takes no pins");
    let s = mr_status(&dev, imp.key).unwrap();
    assert_eq!(s.imported_from, Some(hex(k)));
    assert_eq!(
        (s.length, s.context, s.access.as_str()),
        (src.len, hex(b), "rw-")
    );

    // WRITE through the import lands in the source's pages.
    let lb = Layout::pages(run(0x40000, 3));
    let kb = reg(&dev, b, &lb, PL_ACCESS_READ | PL_ACCESS_WRITE);
    let data = bytes(3 * 4096, 0x21);
    lb.write(r, 0, &data);
    write(&dev, b, kb, 5, imp.key, 4000, 6000).unwrap();
    assert_eq!(src.read(r, 4000, 6000), data[5..6005]);
    // The import as local key, both directions.
    src.write(r, 0, &bytes(src.len as usize, 0x99));
    write(&dev, b, imp.key, 0, kb, 0, src.len).unwrap();
    assert_eq!(lb.read(r, 0, src.len), src.all(r));
    read(&dev, b, imp.key, 100, kb, 0, 50).unwrap();
    assert_eq!(
        src.read(r, 100, 50),
        lb.read(r, 0, 50),
        "READ into the import"
    );
    // FILL through the import, VERIFY through the source.
    dev.fill(
        b,
        &pattern(imp.key, 0, src.len, 0xabc, PL_PATTERN_OFFSET_XOR),
    )
    .unwrap();
    let v = dev
        .verify(a, &pattern(k, 0, src.len, 0xabc, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(v.mismatches, 0);
    assert_eq!(src.word(r, 4096), 0xabc ^ 4096);
    // An import of the importer's own export.
    let e_self = dev.export_mr(b, kb).unwrap().export;
    let again = dev
        .import_mr(b, &import_req(e_self, PL_ACCESS_READ))
        .unwrap();
    assert_ne!(again.key, kb);
    // An import of an import.
    let e_imp = dev.export_mr(b, imp.key).unwrap().export;
    let imp2 = dev
        .import_mr(a, &import_req(e_imp, PL_ACCESS_WRITE))
        .unwrap()
        .key;
    dev.fill(a, &pattern(imp2, 8, 8, 0x5555, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(src.word(r, 8), 0x5555);
}

#[test]
fn import_checks_access_kind_and_handle() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let k = reg(
        &dev,
        a,
        &Layout::pages(vec![0x1000]),
        PL_ACCESS_READ | PL_ACCESS_WRITE,
    );
    let e = dev.export_mr(a, k).unwrap().export;
    let chan = dev.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
    for access in [0, PL_ACCESS_ATOMIC, PL_ACCESS_ALL, PL_ACCESS_READ | 8] {
        assert_eq!(
            st(dev.import_mr(b, &import_req(e, access))),
            Status::Perm,
            "access {access:#x}"
        );
    }
    assert_eq!(
        st(dev.import_mr(b, &import_req(chan, PL_ACCESS_READ))),
        Status::Inval
    );
    assert_eq!(
        st(dev.import_mr(b, &import_req(0, PL_ACCESS_READ))),
        Status::NoEnt
    );
    assert_eq!(
        st(dev.import_mr(b, &import_req(e + 1000, PL_ACCESS_READ))),
        Status::NoEnt
    );
    let mut resv = import_req(e, PL_ACCESS_READ);
    resv.reserved = 1;
    assert_eq!(st(dev.import_mr(b, &resv)), Status::Inval);
    assert_eq!(dev.mrs.len(), 1, "nothing imported");
    let ro = dev
        .import_mr(b, &import_req(e, PL_ACCESS_READ))
        .unwrap()
        .key;
    // The import's own access flags apply.
    let kb = reg(&dev, b, &Layout::pages(vec![0x2000]), PL_ACCESS_ALL);
    assert_eq!(st(write(&dev, b, kb, 0, ro, 0, 8)), Status::Perm);
    assert_eq!(
        st(dev.fill(b, &pattern(ro, 0, 8, 1, PL_PATTERN_CONST))),
        Status::Perm
    );
    write(&dev, b, ro, 0, kb, 0, 8).unwrap();
}

#[test]
fn dereg_of_the_source_revokes_its_imports() {
    let dev = device(1);
    let r = ram(&dev);
    let r = r.as_ref().as_ref();
    let a = ctx(&dev);
    let b = ctx(&dev);
    let src = Layout::pages(run(0x1000, 2));
    let k = reg(&dev, a, &src, PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let imp = dev.import_mr(b, &import_req(e, PL_ACCESS_ALL)).unwrap().key;
    let kb = reg(&dev, b, &Layout::pages(vec![0x9000]), PL_ACCESS_ALL);
    src.set_word(r, 0, 1);
    dev.dereg_mr(a, k).unwrap();
    assert_eq!(dev.pin_totals(), (1, 1));
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_MR_REVOKED, b, [imp, PL_REVOKE_SOURCE_GONE, 0, 0])]
    );
    let c = Status::Canceled;
    assert_eq!(st(write(&dev, b, kb, 0, imp, 0, 8)), c);
    assert_eq!(st(read(&dev, b, imp, 0, kb, 0, 8)), c);
    assert_eq!(
        st(dev.atomic(b, AtomicOp::FetchAdd, &atomic(imp, 0, 1, 0))),
        c
    );
    assert_eq!(st(dev.fill(b, &pattern(imp, 0, 8, 2, PL_PATTERN_CONST))), c);
    assert_eq!(st(dev.export_mr(b, imp)), c);
    assert_eq!(src.word(r, 0), 1);
    let s = mr_status(&dev, imp).unwrap();
    assert_eq!((s.state, s.revoke_reason), ("revoked", Some("source-gone")));
    // The export lives on (its reference is not dropped) but imports fail.
    assert_eq!(
        st(dev.import_mr(b, &import_req(e, PL_ACCESS_READ))),
        Status::Canceled
    );
    dev.dereg_mr(b, imp).unwrap();
    assert_eq!(dev.pin_totals(), (1, 1));
    dev.destroy_child(a, e).unwrap();
    assert!(dev.children.is_empty());
}

#[test]
fn close_of_the_source_context_revokes_imports_in_other_contexts() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(run(0x1000, 2)), PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let imp = dev
        .import_mr(b, &import_req(e, PL_ACCESS_READ))
        .unwrap()
        .key;
    // a also holds an import of b's MR: destroyed with a, b's MR untouched.
    let kb = reg(&dev, b, &Layout::pages(vec![0x8000]), PL_ACCESS_ALL);
    let eb = dev.export_mr(b, kb).unwrap().export;
    let a_imp = dev
        .import_mr(a, &import_req(eb, PL_ACCESS_READ))
        .unwrap()
        .key;
    let resp = dev.close_context(a).unwrap();
    assert_eq!((resp.mrs_destroyed, resp.pages_unpinned), (2, 2));
    assert_eq!(
        event_summary(&dev),
        vec![
            (PL_EVENT_MR_REVOKED, b, [imp, PL_REVOKE_SOURCE_GONE, 0, 0]),
            (PL_EVENT_CONTEXT_TORN_DOWN, a, [2, 0, 2, 0]),
        ]
    );
    assert_eq!(st(dev.mr(a_imp)), Status::Stale);
    assert!(dev.mr(kb).unwrap().is_live());
    assert_eq!(dev.pin_totals(), (1, 1));
    assert_eq!(st(read(&dev, b, kb, 0, imp, 0, 8)), Status::Canceled);
}

#[test]
fn close_sends_no_per_mr_event_for_its_own_imports() {
    // ABI 5.5: "No per-MR event goes to the closing context".
    let dev = device(1);
    let a = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let imp = dev
        .import_mr(a, &import_req(e, PL_ACCESS_READ))
        .unwrap()
        .key;
    assert!(imp > k, "the import is destroyed after its source");
    let resp = dev.close_context(a).unwrap();
    assert_eq!((resp.mrs_destroyed, resp.pages_unpinned), (2, 1));
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_CONTEXT_TORN_DOWN, a, [2, 0, 1, 0])]
    );
}

// ---- 8. lookups racing destroys ------------------------------------------------------------

#[test]
fn lookups_racing_dereg_never_resurrect_the_mr() {
    const READERS: usize = 3;
    let dev = device(1);
    let r = ram(&dev);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let target = Layout::pages(vec![0x10000]);
    let locals: Vec<(Handle, Layout)> = (0..READERS as u64)
        .map(|i| {
            let l = Layout::pages(vec![0x20000 + i * 0x1000]);
            l.write(r.as_ref().as_ref(), 0, &[0x10 + i as u8; 4096]);
            (reg(&dev, b, &l, PL_ACCESS_READ), l)
        })
        .collect();
    for round in 0..40 {
        let k = reg(&dev, a, &target, PL_ACCESS_WRITE);
        let gone = Arc::new(AtomicBool::new(false));
        let tries = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = locals
            .iter()
            .map(|(lk, _)| {
                let (dev, gone, tries, lk) = (dev.clone(), gone.clone(), tries.clone(), *lk);
                thread::spawn(move || {
                    let mut after = 0;
                    let mut ok_before = 0;
                    while after < 200 {
                        let post = gone.load(Ordering::SeqCst);
                        let found = dev.mr(k);
                        let copied = write(&dev, b, lk, 0, k, 0, 4096);
                        tries.fetch_add(1, Ordering::SeqCst);
                        if post {
                            assert_eq!(st(found), Status::Stale, "lookup after dereg");
                            assert_eq!(st(copied), Status::Stale, "DMA after dereg");
                            after += 1;
                        } else {
                            // Racing the dereg: found or stale, copied or
                            // canceled/stale, never anything else.
                            if let Err(e) = copied {
                                assert!(
                                    matches!(e.status, Status::Stale | Status::Canceled),
                                    "{e}"
                                );
                            } else {
                                ok_before += 1;
                            }
                        }
                    }
                    ok_before
                })
            })
            .collect();
        while tries.load(Ordering::SeqCst) < 3 * round % 50 {
            thread::yield_now();
        }
        dev.dereg_mr(a, k).unwrap();
        gone.store(true, Ordering::SeqCst);
        // Clear the page: any copy from now on would show.
        r.write(0x10000, &[0; 4096]).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        let mut page = [0u8; 4096];
        r.read(0x10000, &mut page).unwrap();
        assert!(
            page.iter().all(|&x| x == 0),
            "round {round}: a DMA landed after dereg returned"
        );
        assert_eq!(st(dev.mr(k)), Status::Stale);
    }
    assert_eq!(dev.pin_totals(), (READERS as u64, READERS as u64));
}

// ---- 9. memory map changes -------------------------------------------------------------------

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
        mr_status(&dev, both).unwrap().revoke_reason,
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

// ---- 10. events ------------------------------------------------------------------------------

#[test]
fn event_backlog_overflow_drops_and_counts() {
    let limits = Limits {
        event_backlog: 2,
        ..Limits::default()
    };
    let dev = device_with(limits, &[(0, MIB)]);
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

// ---- races decided outside the writer lock ----------------------------------------------------
//
// These tests order two requests deterministically: the test holds an MR's
// gate (or export lock), so a first request parks inside the writer lock;
// later requests are started one by one and the test waits until each is
// asleep on a futex (from /proc) before going on.

/// Waits until thread `tid` of this process sleeps in the futex syscall.
fn wait_blocked(tid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sys =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
        let nr = sys
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<i64>().ok());
        if nr == Some(libc::SYS_futex) {
            return;
        }
        assert!(Instant::now() < deadline, "thread {tid} never blocked");
        thread::yield_now();
    }
}

/// Runs `f` on a new thread and returns once that thread is blocked on a lock.
fn spawn_until_blocked<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        f()
    });
    wait_blocked(rx.recv().unwrap());
    t
}

fn status_of<T>(r: crate::model::device::Result<T>) -> std::result::Result<T, Status> {
    r.map_err(|e| e.status)
}

#[test]
fn second_of_two_racing_deregs_is_estale() {
    let dev = device(1);
    let a = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let mr = dev.mr(k).unwrap();
    let inside = mr.gate.enter().unwrap();
    let d = dev.clone();
    let first = spawn_until_blocked(move || status_of(d.dereg_mr(a, k)));
    assert!(!mr.is_live(), "first dereg is revoking, waiting for us");
    let d = dev.clone();
    let second = spawn_until_blocked(move || status_of(d.dereg_mr(a, k)));
    drop(inside);
    assert_eq!(first.join().unwrap(), Ok(()));
    assert_eq!(second.join().unwrap(), Err(Status::Stale));
}

#[test]
fn second_of_two_racing_export_destroys_is_estale() {
    let dev = device(1);
    let a = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let export = match &dev.children.get(e).unwrap().kind {
        crate::model::context::ChildKind::Export(x) => x.clone(),
        _ => unreachable!(),
    };
    let mr = dev.mr(k).unwrap();
    let lock = mr.export.lock().unwrap();
    let d = dev.clone();
    let first = spawn_until_blocked(move || status_of(d.destroy_child(a, e)));
    let d = dev.clone();
    let second = spawn_until_blocked(move || status_of(d.destroy_child(a, e)));
    drop(lock);
    assert_eq!(first.join().unwrap(), Ok(()));
    let second = second.join().unwrap();
    assert_eq!(export.refs(), 0, "references must not go below zero");
    assert_eq!(second, Err(Status::Stale));
}

#[test]
fn reg_mr_racing_a_memory_map_change_leaves_no_live_mr_outside_the_map() {
    let r2 = (4 * MIB as u64, MIB);
    let full = two_region_map((0, MIB), r2);
    let dev = Arc::new(Device::new(Limits::default()));
    dev.set_memory(Box::new(MmapRam::new(full.clone())));
    let a = ctx(&dev);
    let blocker = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let mr = dev.mr(blocker).unwrap();
    let inside = mr.gate.enter().unwrap();
    // 1. A DEREG_MR parks inside the writer lock, waiting for our gate.
    let d = dev.clone();
    let holder = spawn_until_blocked(move || status_of(d.dereg_mr(a, blocker)));
    // 2. A map change without region 2 queues on the writer lock.
    let d = dev.clone();
    let smaller = without_region(&full, r2.0, r2.1);
    let change = spawn_until_blocked(move || d.set_memory(Box::new(smaller)));
    // 3. A REG_MR in region 2 checks its pages (old map), then queues.
    let d = dev.clone();
    let regd = spawn_until_blocked(move || {
        status_of(d.reg_mr(a, Layout::pages(vec![r2.0]).req(PL_ACCESS_ALL)))
    });
    drop(inside);
    assert_eq!(holder.join().unwrap(), Ok(()));
    change.join().unwrap();
    match regd.join().unwrap() {
        Err(s) => assert_eq!(s, Status::Fault),
        Ok(resp) => {
            let ok = dev.mr(resp.key).unwrap();
            let mem = ram(&dev);
            assert!(
                !ok.is_live() || mem.contains(r2.0, PAGE),
                "live MR {:#x} over page {:#x}, which is outside the memory map \
                 (DMA on it answers {:?}, not ECANCELED)",
                resp.key,
                r2.0,
                dev.fill(a, &pattern(resp.key, 0, 8, 1, PL_PATTERN_CONST))
                    .map_err(|e| e.status)
            );
        }
    }
}

#[test]
fn reg_mr_racing_lease_release_does_not_report_a_released_lease() {
    let dev = device(1);
    let a = ctx(&dev);
    let f = file(1);
    let lease = take(&dev, a, f, 0, 0, PL_POLICY_REVOKE);
    let blocker = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let mr = dev.mr(blocker).unwrap();
    let inside = mr.gate.enter().unwrap();
    let d = dev.clone();
    let holder = spawn_until_blocked(move || status_of(d.dereg_mr(a, blocker)));
    let d = dev.clone();
    let release = spawn_until_blocked(move || {
        status_of(d.lease_release(a, &release_req(lease, PL_RELEASE_HOLDER)))
    });
    let d = dev.clone();
    let regd = spawn_until_blocked(move || {
        status_of(d.reg_mr(a, Layout::pages(vec![0x2000]).req_file(PL_ACCESS_ALL, f, 0)))
    });
    drop(inside);
    assert_eq!(holder.join().unwrap(), Ok(()));
    assert_eq!(release.join().unwrap(), Ok(()));
    let resp = regd.join().unwrap().unwrap();
    assert_eq!(st(dev.lease(lease)), Status::Stale);
    assert_eq!(
        resp.lease, 0,
        "REG_MR reported lease {:#x}, released before the MR existed",
        resp.lease
    );
    assert_eq!(mr_status(&dev, resp.key).unwrap().lease, None);
}

// ---- device reset ---------------------------------------------------------

#[test]
fn device_reset_forgets_every_context_child_mr_and_lease() {
    let dev = device(4);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let la = Layout::pages(run(0x10000, 4));
    let lb = Layout::pages(run(0x20000, 2));
    let ka = reg_file(&dev, a, &la, PL_ACCESS_ALL, file(1), 0).key;
    let kb = reg(&dev, b, &lb, PL_ACCESS_ALL);
    let lease = take(&dev, a, file(1), 0, 0, PL_POLICY_REVOKE);
    let chan = dev.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
    let export = dev.export_mr(b, kb).unwrap().export;
    assert_eq!(dev.pin_totals(), (6, 6));

    assert_eq!(dev.reset(), 2);

    assert_eq!(dev.pin_totals(), (0, 0), "pins survive a reset");
    let s = dev.status();
    assert!(
        s.contexts.is_empty() && s.mrs.is_empty() && s.leases.is_empty(),
        "{s:?}"
    );
    assert!(
        events(&dev).is_empty(),
        "events about a reset device were kept"
    );
    assert_eq!(s.counters.device_resets, 1);
    // Every old handle is stale now, and the device works again.
    assert_eq!(st(dev.close_context(a)), Status::Stale);
    assert_eq!(st(dev.mr(ka)), Status::Stale);
    assert_eq!(st(dev.lease(lease)), Status::Stale);
    let c = ctx(&dev);
    assert_eq!(st(dev.destroy_child(c, chan)), Status::Stale);
    assert_eq!(
        st(dev.import_mr(c, &import_req(export, PL_ACCESS_READ))),
        Status::Stale
    );
    let k = reg(&dev, c, &la, PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (4, 4));
    assert_ne!(k, ka);
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
