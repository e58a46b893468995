//! The `requests` target: request bytes through the real decoder
//! (`pinlease::protocol::handle`) into a device over real guest memory
//! (`pinlease::guest_ram::MmapRam`), checked against a reference model.
//!
//! The input is a program: each step picks a request (or a device reset, or
//! a memory-map change) and its fields, mostly from handles the model knows
//! (live, closed or gone) and values near the edges. For every request the
//! model computes the statuses docs/abi.md allows (every problem the
//! request has; when it has several, which one is reported is not
//! specified) and the target asserts the device answered one of them, or
//! OK when the request has none. A request answered OK is applied to the
//! model: its handles, states and, for DMA, the bytes — the model keeps a
//! shadow copy of guest memory and updates it with its own byte loops, and
//! after every data request the device's guest memory must equal it. After
//! every step the device's `status()` must agree with the model: contexts,
//! MRs (live / revoked), leases and their states, children, pins and the
//! per-opcode request counters. Any disagreement panics.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::size_of;
use std::sync::Arc;

use pinlease::guest_ram::MmapRam;
use pinlease::model::memory::GuestRam;
use pinlease::model::status::hex;
use pinlease::model::{Device, Limits};
use pinlease::protocol;
use pinlease_abi::*;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::input::Input;

pub const PAGE: u64 = PL_PAGE_SIZE;
/// Guest memory: region A (8 pages at 0), a hole, region B (4 pages at
/// 0x10000), which a memory-map change can take away and give back.
pub const REGION_A: (u64, u64) = (0, 8 * PAGE);
pub const REGION_B: (u64, u64) = (0x10000, 4 * PAGE);
const RAM_END: u64 = REGION_B.0 + REGION_B.1;
/// Small tables, so the fuzzer reaches every limit.
pub const LIMITS: Limits = Limits {
    max_contexts: 4,
    max_mrs: 12,
    max_pages_per_mr: 6,
    max_leases: 6,
    max_children_per_context: 3,
    event_backlog: 16,
};
/// Page-list entries a REG_MR carries at most (above the limit, for E2BIG).
const MAX_LIST: u64 = 10;
/// Steps a program runs at most.
const MAX_STEPS: usize = 64;

/// The step kinds, in the order of the selector byte (`step % STEPS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    CreateContext = 0,
    CloseContext,
    ReleaseContext,
    CreateChild,
    DestroyChild,
    RegMr,
    DeregMr,
    Write,
    Read,
    CompareSwap,
    FetchAdd,
    Fill,
    Verify,
    LeaseTake,
    LeaseRelease,
    LeaseBreak,
    ExportMr,
    ImportMr,
    NopOrQuery,
    Reset,
    MemoryMap,
    Malformed,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {self:?}")
    }
}

const STEPS: [Step; 22] = [
    Step::CreateContext,
    Step::CloseContext,
    Step::ReleaseContext,
    Step::CreateChild,
    Step::DestroyChild,
    Step::RegMr,
    Step::DeregMr,
    Step::Write,
    Step::Read,
    Step::CompareSwap,
    Step::FetchAdd,
    Step::Fill,
    Step::Verify,
    Step::LeaseTake,
    Step::LeaseRelease,
    Step::LeaseBreak,
    Step::ExportMr,
    Step::ImportMr,
    Step::NopOrQuery,
    Step::Reset,
    Step::MemoryMap,
    Step::Malformed,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CtxState {
    Open,
    Closed,
    Gone,
}

struct Ctx {
    handle: u64,
    state: CtxState,
}

struct Mr {
    key: u64,
    ctx: u64,
    access: u32,
    /// Where the MR's bytes lie (an import's are its source's).
    first_page_offset: u64,
    length: u64,
    pages: Vec<u64>,
    /// Registered (holds pins), not imported.
    own: bool,
    /// The MR an import aliases.
    source: Option<u64>,
    file: Option<(PlFileId, u64)>,
    live: bool,
    gone: bool,
}

impl Mr {
    fn gpa(&self, o: u64) -> u64 {
        let p = self.first_page_offset + o;
        self.pages[(p / PAGE) as usize] + p % PAGE
    }

    /// The in-page runs (guest address, bytes) of `[o, o + len)`.
    fn runs(&self, o: u64, len: u64) -> Vec<(u64, u64)> {
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

    fn pins(&self) -> bool {
        self.own && self.live && !self.gone
    }
}

struct Child {
    handle: u64,
    ctx: u64,
    /// The exported MR's key; None for an event channel.
    export_of: Option<u64>,
    refs: u32,
    gone: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseState {
    Active,
    Breaking,
    Revoked,
    Lost,
}

impl LeaseState {
    fn name(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Breaking => "breaking",
            LeaseState::Revoked => "revoked",
            LeaseState::Lost => "lost",
        }
    }
}

struct Lease {
    handle: u64,
    holder: u64,
    file: PlFileId,
    start: u64,
    end: u64,
    policy: u32,
    state: LeaseState,
    gone: bool,
}

impl Lease {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// The device, its guest memory and the reference model of both.
pub struct Harness {
    dev: Device,
    ram: Arc<Box<dyn GuestRam>>,
    region_b: bool,
    shadow: Vec<u8>,
    ctxs: Vec<Ctx>,
    mrs: Vec<Mr>,
    children: Vec<Child>,
    leases: Vec<Lease>,
    requests: BTreeMap<String, BTreeMap<String, u64>>,
    tag: u64,
    /// What the current step is, for panic messages.
    step: Step,
    /// A request was answered OK (or the device reset, or its memory map
    /// changed) since `status()` was last compared.
    changed: bool,
}

fn new_ram(region_b: bool) -> MmapRam {
    let mut ranges = vec![(GuestAddress(REGION_A.0), REGION_A.1 as usize)];
    if region_b {
        ranges.push((GuestAddress(REGION_B.0), REGION_B.1 as usize));
    }
    MmapRam::new(GuestMemoryMmap::from_ranges(&ranges).expect("anonymous guest memory"))
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

/// The word FILL writes at MR offset `o`.
fn pattern_word(pattern: u64, mode: u32, o: u64) -> u64 {
    if mode == PL_PATTERN_OFFSET_XOR {
        pattern ^ o
    } else {
        pattern
    }
}

/// Where a request's fields end when `start + length` (0 = to the end).
fn range_end(start: u64, length: u64) -> Option<u64> {
    if length == 0 {
        Some(u64::MAX)
    } else {
        start.checked_add(length)
    }
}

/// The files leases and file-backed MRs name: three, so they meet often.
fn file(i: u8) -> PlFileId {
    PlFileId::new(8, u64::from(i % 3) + 1, 1)
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        let dev = Device::new(LIMITS);
        dev.set_memory(Box::new(new_ram(true)));
        let ram = dev.memory().expect("memory map just set");
        Harness {
            dev,
            ram,
            region_b: true,
            shadow: vec![0; RAM_END as usize],
            ctxs: Vec::new(),
            mrs: Vec::new(),
            children: Vec::new(),
            leases: Vec::new(),
            requests: BTreeMap::new(),
            tag: 0,
            step: Step::NopOrQuery,
            changed: false,
        }
    }

    /// Runs the program in `data`; returns the harness for its counters.
    pub fn run(data: &[u8]) -> Harness {
        let mut h = Harness::new();
        let mut input = Input::new(data);
        for _ in 0..MAX_STEPS {
            if input.is_empty() {
                break;
            }
            h.step(&mut input);
            // status() is the costly part of a step: compared when the
            // model says something changed, and once at the end (the
            // request counters catch a refusal counted wrong there).
            if std::mem::take(&mut h.changed) {
                h.check_status();
            }
        }
        h.check_status();
        h.check_memory();
        h
    }

    /// (opcode, status) pairs answered so far.
    pub fn answered(&self) -> BTreeSet<(String, String)> {
        self.requests
            .iter()
            .flat_map(|(op, by)| by.keys().map(move |s| (op.clone(), s.clone())))
            .collect()
    }

    // ---- requests ------------------------------------------------------------

    /// Sends one request through the decoder; checks the response framing
    /// and counts it as the device should. Returns the status and the body.
    fn send_raw(&mut self, bytes: &[u8], resp_cap: usize) -> (Status, Vec<u8>) {
        let handled = protocol::handle(&self.dev, None, bytes, resp_cap);
        assert_eq!(
            handled.completion,
            protocol::Completion::default(),
            "{}: no fault plan, yet the completion is not the default",
            self.step
        );
        let r = handled.response;
        let hdr = PlRespHdr::read_from(&r).expect("response has a header");
        let status = Status::ALL
            .into_iter()
            .find(|s| *s as u32 == hdr.status)
            .unwrap_or_else(|| panic!("{}: unknown status {}", self.step, hdr.status));
        let body = r[size_of::<PlRespHdr>()..].to_vec();
        assert_eq!(hdr.len as usize, body.len(), "{}: response len", self.step);
        let req = PlReqHdr::read_from(bytes);
        let op = req.and_then(|h| Opcode::from_u16(h.opcode));
        assert_eq!(hdr.tag, req.map_or(0, |h| h.tag), "{}: tag", self.step);
        if status == Status::Ok {
            let op = op.expect("OK only for a known opcode");
            assert_eq!(body.len(), op.response_body_len(), "{}: body", self.step);
        } else {
            assert!(body.is_empty(), "{}: error with a body", self.step);
        }
        *self
            .requests
            .entry(op.map_or("UNKNOWN", |o| o.name()).to_string())
            .or_default()
            .entry(status.name().to_string())
            .or_default() += 1;
        (status, body)
    }

    fn send(&mut self, op: Opcode, ctx: u64, body: &[u8]) -> (Status, Vec<u8>) {
        self.tag += 1;
        let hdr = PlReqHdr {
            opcode: op as u16,
            ctx,
            tag: self.tag,
            ..Default::default()
        };
        let mut req = hdr.as_bytes().to_vec();
        req.extend_from_slice(body);
        self.send_raw(&req, 4096)
    }

    /// Sends and checks the status against `errs`, the problems the model
    /// found: OK when there are none, one of them otherwise.
    fn expect(&mut self, op: Opcode, ctx: u64, body: &[u8], errs: &[Status]) -> Option<Vec<u8>> {
        let (status, resp) = self.send(op, ctx, body);
        if errs.is_empty() {
            assert_eq!(status, Status::Ok, "{}: expected OK", self.step);
            self.changed = true;
            Some(resp)
        } else {
            assert!(
                errs.contains(&status),
                "{}: answered {status:?}, allowed {errs:?}",
                self.step
            );
            None
        }
    }

    // ---- model lookups -------------------------------------------------------

    fn ctx_index(&self, h: u64) -> Option<usize> {
        self.ctxs.iter().position(|c| c.handle == h)
    }

    /// A context that must be open; adds what the device may answer if not.
    fn open_ctx(&self, h: u64, errs: &mut Vec<Status>) -> Option<usize> {
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
    fn any_ctx(&self, h: u64, errs: &mut Vec<Status>) -> Option<usize> {
        match self.ctx_index(h) {
            None => errs.extend([Status::BadF, Status::Stale]),
            Some(i) if self.ctxs[i].state == CtxState::Gone => errs.push(Status::Stale),
            Some(i) => return Some(i),
        }
        None
    }

    fn mr(&self, key: u64, errs: &mut Vec<Status>) -> Option<usize> {
        lookup(self.mrs.iter().map(|m| (m.key, m.gone)), key, errs)
    }

    fn child(&self, h: u64, errs: &mut Vec<Status>) -> Option<usize> {
        lookup(self.children.iter().map(|c| (c.handle, c.gone)), h, errs)
    }

    fn lease(&self, h: u64, errs: &mut Vec<Status>) -> Option<usize> {
        lookup(self.leases.iter().map(|l| (l.handle, l.gone)), h, errs)
    }

    fn live_children(&self, ctx: u64) -> usize {
        self.children
            .iter()
            .filter(|c| c.ctx == ctx && !c.gone)
            .count()
    }

    fn mr_count(&self) -> usize {
        self.mrs.iter().filter(|m| !m.gone).count()
    }

    /// Revokes MR `i` and, as the device does, the live imports of it.
    /// Returns the pages it unpinned.
    fn revoke(&mut self, i: usize) -> u64 {
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
    fn destroy(&mut self, i: usize) -> u64 {
        let pages = self.revoke(i);
        self.mrs[i].gone = true;
        pages
    }

    // ---- field pickers -------------------------------------------------------

    /// A handle from `known` (newest first) or, rarely, 0 or any value.
    fn pick(input: &mut Input, known: &[u64]) -> u64 {
        let sel = input.u8();
        if sel < 0xf0 && !known.is_empty() {
            return known[known.len() - 1 - sel as usize % known.len()];
        }
        if sel & 1 == 0 {
            0
        } else {
            input.u64()
        }
    }

    fn pick_ctx(&self, input: &mut Input) -> u64 {
        let known: Vec<u64> = self.ctxs.iter().map(|c| c.handle).collect();
        Self::pick(input, &known)
    }

    fn pick_mr(&self, input: &mut Input) -> u64 {
        let known: Vec<u64> = self.mrs.iter().map(|m| m.key).collect();
        Self::pick(input, &known)
    }

    fn pick_child(&self, input: &mut Input) -> u64 {
        let known: Vec<u64> = self.children.iter().map(|c| c.handle).collect();
        Self::pick(input, &known)
    }

    fn pick_lease(&self, input: &mut Input) -> u64 {
        let known: Vec<u64> = self.leases.iter().map(|l| l.handle).collect();
        Self::pick(input, &known)
    }

    /// An offset or length near `size` (an MR's length): 0, small
    /// multiples of 8, `size` and just around it, or anything.
    fn pick_num(input: &mut Input, size: u64) -> u64 {
        let sel = input.u8();
        let small = u64::from(sel >> 3);
        match sel & 7 {
            0 => 0,
            1 => small * 8,
            2 => size,
            3 => size.wrapping_sub(small * 8),
            4 => u64::from(input.u16()),
            5 => input.u64(),
            6 => (size / 2) & !7,
            _ => small,
        }
    }

    fn pick_access(input: &mut Input) -> u32 {
        match input.u8() % 8 {
            0 => PL_ACCESS_READ,
            1 => PL_ACCESS_WRITE,
            2 => PL_ACCESS_READ | PL_ACCESS_WRITE,
            3 | 4 => PL_ACCESS_ALL,
            5 => PL_ACCESS_ATOMIC,
            6 => 0,
            _ => input.u32(),
        }
    }

    /// A file range start and length, in pages mostly.
    fn pick_file_range(input: &mut Input) -> (u64, u64) {
        let sel = input.u8();
        let start = if sel & 0x80 == 0 {
            u64::from(sel & 7) * PAGE
        } else {
            input.u64()
        };
        let sel = input.u8();
        let length = match sel & 3 {
            0 => 0,
            1 | 2 => u64::from(sel >> 2) * PAGE,
            _ => input.u64(),
        };
        (start, length)
    }

    // ---- steps ---------------------------------------------------------------

    fn step(&mut self, input: &mut Input) {
        let step = STEPS[input.u8() as usize % STEPS.len()];
        self.step = step;
        match step {
            Step::CreateContext => self.create_context(input),
            Step::CloseContext => self.close_context(input),
            Step::ReleaseContext => self.release_context(input),
            Step::CreateChild => self.create_child(input),
            Step::DestroyChild => self.destroy_child(input),
            Step::RegMr => self.reg_mr(input),
            Step::DeregMr => self.dereg_mr(input),
            Step::Write => self.dma(input, Opcode::Write),
            Step::Read => self.dma(input, Opcode::Read),
            Step::CompareSwap => self.atomic(input, Opcode::CompareSwap),
            Step::FetchAdd => self.atomic(input, Opcode::FetchAdd),
            Step::Fill => self.pattern(input, Opcode::Fill),
            Step::Verify => self.pattern(input, Opcode::Verify),
            Step::LeaseTake => self.lease_take(input),
            Step::LeaseRelease => self.lease_release(input),
            Step::LeaseBreak => self.lease_break(input),
            Step::ExportMr => self.export_mr(input),
            Step::ImportMr => self.import_mr(input),
            Step::NopOrQuery => self.nop_or_query(input),
            Step::Reset => self.reset(),
            Step::MemoryMap => self.memory_map(input),
            Step::Malformed => self.malformed(input),
        }
    }

    fn create_context(&mut self, input: &mut Input) {
        let mut errs = Vec::new();
        let live = self
            .ctxs
            .iter()
            .filter(|c| c.state != CtxState::Gone)
            .count();
        if live >= LIMITS.max_contexts as usize {
            errs.push(Status::NoMem);
        }
        let mut comm = [0u8; 16];
        let name = input.bytes(4);
        comm[..name.len()].copy_from_slice(name);
        let req = PlCreateContextReq {
            pid: input.u32(),
            reserved: 0,
            comm,
        };
        if let Some(resp) = self.expect(Opcode::CreateContext, 0, req.as_bytes(), &errs) {
            let handle = PlHandleResp::read_from(&resp).unwrap().handle;
            assert!(handle != 0, "context handle 0");
            assert!(self.ctx_index(handle).is_none(), "context handle reused");
            self.ctxs.push(Ctx {
                handle,
                state: CtxState::Open,
            });
        }
    }

    /// The model's half of CLOSE_CONTEXT: (MRs destroyed, leases released,
    /// pages unpinned).
    fn close_model(&mut self, ci: usize) -> PlCloseContextResp {
        let h = self.ctxs[ci].handle;
        let mut resp = PlCloseContextResp::default();
        for i in 0..self.mrs.len() {
            if self.mrs[i].ctx == h && !self.mrs[i].gone {
                resp.mrs_destroyed += 1;
                resp.pages_unpinned += self.destroy(i);
            }
        }
        for l in self.leases.iter_mut() {
            if l.holder == h && !l.gone {
                l.gone = true;
                resp.leases_released += 1;
            }
        }
        self.ctxs[ci].state = CtxState::Closed;
        resp
    }

    fn close_context(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let mut errs = Vec::new();
        let ci = self.open_ctx(c, &mut errs);
        if let Some(resp) = self.expect(Opcode::CloseContext, c, &[], &errs) {
            let got = PlCloseContextResp::read_from(&resp).unwrap();
            let want = self.close_model(ci.expect("OK only for an open context"));
            assert_eq!(got, want, "{}: CLOSE_CONTEXT totals", self.step);
        }
    }

    fn release_context(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let mut errs = Vec::new();
        let Some(ci) = self.any_ctx(c, &mut errs) else {
            self.expect(Opcode::ReleaseContext, c, &[], &errs);
            return;
        };
        // The close happens whether or not children keep the object.
        if self.ctxs[ci].state == CtxState::Open {
            self.close_model(ci);
        }
        if self.live_children(c) > 0 {
            errs.push(Status::Busy);
        }
        if self.expect(Opcode::ReleaseContext, c, &[], &errs).is_some() {
            self.ctxs[ci].state = CtxState::Gone;
        }
    }

    fn create_child(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let kind = if input.u8() < 0xf0 {
            PL_CHILD_EVENT_CHANNEL
        } else {
            input.u32()
        };
        let mut errs = Vec::new();
        if kind != PL_CHILD_EVENT_CHANNEL {
            errs.push(Status::Inval);
        }
        if self.open_ctx(c, &mut errs).is_some()
            && self.live_children(c) >= LIMITS.max_children_per_context as usize
        {
            errs.push(Status::NoMem);
        }
        let req = PlCreateChildReq { kind, reserved: 0 };
        if let Some(resp) = self.expect(Opcode::CreateChild, c, req.as_bytes(), &errs) {
            let handle = PlHandleResp::read_from(&resp).unwrap().handle;
            assert!(!self.children.iter().any(|ch| ch.handle == handle));
            self.children.push(Child {
                handle,
                ctx: c,
                export_of: None,
                refs: 1,
                gone: false,
            });
        }
    }

    fn destroy_child(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let h = self.pick_child(input);
        let mut errs = Vec::new();
        self.any_ctx(c, &mut errs);
        let chi = self.child(h, &mut errs);
        if let Some(i) = chi {
            if self.children[i].ctx != c {
                errs.push(Status::Perm);
            }
        }
        let req = PlHandleReq { handle: h };
        if self
            .expect(Opcode::DestroyChild, c, req.as_bytes(), &errs)
            .is_some()
        {
            let ch = &mut self.children[chi.expect("OK only for a live child")];
            ch.refs -= 1;
            if ch.refs == 0 {
                ch.gone = true;
            }
        }
    }

    fn page(input: &mut Input) -> u64 {
        let p = input.u8();
        if p < 0xf0 {
            let i = u64::from(p % 12);
            return if i < 8 {
                REGION_A.0 + i * PAGE
            } else {
                REGION_B.0 + (i - 8) * PAGE
            };
        }
        match p & 7 {
            0 => REGION_A.0 + REGION_A.1, // the hole
            1 => RAM_END,
            2 => PAGE + 8, // misaligned
            3 => input.u64(),
            4 => !(PAGE - 1),
            _ => REGION_B.0 + REGION_B.1 - PAGE,
        }
    }

    fn mapped(&self, gpa: u64) -> bool {
        in_region(gpa, REGION_A) || (self.region_b && in_region(gpa, REGION_B))
    }

    fn reg_mr(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let access = Self::pick_access(input);
        let sel = input.u8();
        let mut flags = u32::from(sel & 7);
        if sel & 0x80 != 0 {
            flags |= 1 << (input.u8() % 32);
        }
        let sel = input.u8();
        let off = match sel & 3 {
            0 => 0,
            1 => u64::from(input.u16() % 4096),
            2 => u64::from(sel >> 2) * 8,
            _ => u64::from(input.u32()),
        };
        let sel = input.u8();
        let length = match sel & 3 {
            0 => 1 + u64::from(input.u16()) % (6 * PAGE),
            1 => PAGE * u64::from(sel >> 2 & 7) + u64::from(sel >> 5),
            2 => Self::pick_num(input, PAGE),
            _ => input.u64(),
        };
        let needed = off
            .checked_add(length)
            .map(|s| s.div_ceil(PAGE))
            .unwrap_or(u64::MAX);
        let sel = input.u8();
        let npages = match sel {
            0..=0xef => needed,
            0xf0..=0xf7 => needed.wrapping_add(1),
            _ => needed.wrapping_sub(1),
        }
        .min(MAX_LIST);
        let pages: Vec<u64> = (0..npages).map(|_| Self::page(input)).collect();
        let (file_id, file_offset) = if flags & PL_REG_HAS_FILE != 0 || input.u8() >= 0xf8 {
            let f = file(input.u8());
            let sel = input.u8();
            let fo = match sel & 3 {
                0 => 0,
                1 | 2 => u64::from(sel >> 2) * PAGE,
                _ => input.u64(),
            };
            (f, fo)
        } else {
            (PlFileId::default(), 0)
        };

        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if access == 0 || access & !PL_ACCESS_ALL != 0 {
            errs.push(Status::Inval);
        }
        if flags & !PL_REG_FLAGS_ALL != 0 {
            errs.push(Status::Inval);
        }
        if flags & PL_REG_SCRUB != 0 && access & PL_ACCESS_WRITE == 0 {
            errs.push(Status::Inval);
        }
        if npages == 0 || off >= PAGE || length == 0 {
            errs.push(Status::Inval);
        }
        if npages > u64::from(LIMITS.max_pages_per_mr) {
            errs.push(Status::TooBig);
        }
        match off.checked_add(length) {
            None => errs.extend([Status::Range, Status::Inval]),
            Some(_) if needed != npages => errs.push(Status::Inval),
            Some(_) => {}
        }
        if pages.iter().any(|g| g % PAGE != 0) {
            errs.push(Status::Inval);
        }
        if pages.iter().any(|&g| g % PAGE == 0 && !self.mapped(g)) {
            errs.push(Status::Fault);
        }
        let has_file = flags & PL_REG_HAS_FILE != 0;
        if !has_file && (file_id != PlFileId::default() || file_offset != 0) {
            errs.push(Status::Inval);
        }
        if has_file && file_offset.checked_add(length).is_none() {
            errs.push(Status::Range);
        }
        if self.mr_count() >= LIMITS.max_mrs as usize {
            errs.push(Status::NoMem);
        }
        let req = PlRegMrReq {
            access,
            flags,
            npages: npages as u32,
            first_page_offset: off as u32,
            length,
            file: file_id,
            file_offset,
        };
        let mut body = req.as_bytes().to_vec();
        for p in &pages {
            body.extend(p.to_le_bytes());
        }
        let Some(resp) = self.expect(Opcode::RegMr, c, &body, &errs) else {
            return;
        };
        let resp = PlRegMrResp::read_from(&resp).unwrap();
        assert!(resp.key != 0 && !self.mrs.iter().any(|m| m.key == resp.key));
        let file = has_file.then_some((file_id, file_offset));
        // The lease REG_MR reports: the holder's ACTIVE lease on the file
        // containing the MR's whole file range, if there is one.
        let covering = |l: &Lease| {
            !l.gone
                && l.holder == c
                && l.state == LeaseState::Active
                && file.is_some_and(|(f, fo)| {
                    l.file == f && l.start <= fo && fo.saturating_add(length) <= l.end
                })
        };
        if resp.lease == 0 {
            assert!(
                !self.leases.iter().any(covering),
                "{}: REG_MR under no lease, yet a covering lease exists",
                self.step
            );
        } else {
            assert!(
                self.leases
                    .iter()
                    .any(|l| l.handle == resp.lease && covering(l)),
                "{}: REG_MR reported lease {:#x}, which does not cover it",
                self.step,
                resp.lease
            );
        }
        self.mrs.push(Mr {
            key: resp.key,
            ctx: c,
            access,
            first_page_offset: off,
            length,
            pages,
            own: true,
            source: None,
            file,
            live: true,
            gone: false,
        });
    }

    fn dereg_mr(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let key = self.pick_mr(input);
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        let mi = self.mr(key, &mut errs);
        if let Some(i) = mi {
            if self.mrs[i].ctx != c {
                errs.push(Status::Perm);
            }
        }
        let req = PlHandleReq { handle: key };
        if self
            .expect(Opcode::DeregMr, c, req.as_bytes(), &errs)
            .is_some()
        {
            self.destroy(mi.expect("OK only for a live key"));
        }
    }

    /// The problems of MR `key` for a device access at `[offset, +len)`
    /// needing `bit`.
    fn access_errs(
        &self,
        key: u64,
        bit: u32,
        offset: u64,
        len: u64,
        errs: &mut Vec<Status>,
    ) -> Option<usize> {
        let i = self.mr(key, errs)?;
        let m = &self.mrs[i];
        if m.access & bit == 0 {
            errs.push(Status::Perm);
        }
        if offset.checked_add(len).is_none_or(|e| e > m.length) {
            errs.push(Status::Range);
        }
        if !m.live {
            errs.push(Status::Canceled);
        }
        Some(i)
    }

    fn dma(&mut self, input: &mut Input, op: Opcode) {
        let c = self.pick_ctx(input);
        let lk = self.pick_mr(input);
        let rk = self.pick_mr(input);
        let size = |k: u64| {
            self.mrs
                .iter()
                .find(|m| m.key == k)
                .map_or(PAGE, |m| m.length)
        };
        let (ls, rs) = (size(lk), size(rk));
        let lo = Self::pick_num(input, ls);
        let ro = Self::pick_num(input, rs);
        let length = Self::pick_num(input, ls.min(rs));
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        let ((sk, so), (dk, dst_off)) = if op == Opcode::Write {
            ((lk, lo), (rk, ro))
        } else {
            ((rk, ro), (lk, lo))
        };
        let src = self.access_errs(sk, PL_ACCESS_READ, so, length, &mut errs);
        let dst = self.access_errs(dk, PL_ACCESS_WRITE, dst_off, length, &mut errs);
        if let Some(i) = self.mrs.iter().position(|m| m.key == lk) {
            if !self.mrs[i].gone && self.mrs[i].ctx != c {
                errs.push(Status::Perm);
            }
        }
        let req = PlDmaReq {
            local_key: lk,
            local_offset: lo,
            remote_key: rk,
            remote_offset: ro,
            length,
        };
        if self.expect(op, c, req.as_bytes(), &errs).is_none() {
            return;
        }
        let (src, dst) = (&self.mrs[src.unwrap()], &self.mrs[dst.unwrap()]);
        let from = src.runs(so, length);
        let to = dst.runs(dst_off, length);
        let overlap = from.iter().any(|&(f, n)| {
            to.iter()
                .any(|&(t, m)| f < t.saturating_add(m) && t < f.saturating_add(n))
        });
        if overlap {
            // Overlapping ranges: the destination is unspecified
            // (docs/abi.md 5.11); take the device's bytes there.
            for (g, n) in to {
                let at = g as usize..(g + n) as usize;
                self.ram.read(g, &mut self.shadow[at]).expect("mapped");
            }
        } else {
            let bytes = self.gather(&from);
            self.scatter(&to, &bytes);
        }
        self.check_memory();
    }

    /// The shadow's bytes at `runs`, in order.
    fn gather(&self, runs: &[(u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(g, n) in runs {
            out.extend_from_slice(&self.shadow[g as usize..(g + n) as usize]);
        }
        out
    }

    /// Writes `bytes` over the shadow at `runs`, in order.
    fn scatter(&mut self, runs: &[(u64, u64)], bytes: &[u8]) {
        let mut done = 0;
        for &(g, n) in runs {
            let n = n as usize;
            self.shadow[g as usize..g as usize + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }

    fn word(&self, mr: &Mr, o: u64) -> u64 {
        let b = self.gather(&mr.runs(o, 8));
        u64::from_le_bytes(b.try_into().expect("8 bytes"))
    }

    fn set_word(&mut self, mi: usize, o: u64, v: u64) {
        let runs = self.mrs[mi].runs(o, 8);
        self.scatter(&runs, &v.to_le_bytes());
    }

    fn atomic(&mut self, input: &mut Input, op: Opcode) {
        let c = self.pick_ctx(input);
        let key = self.pick_mr(input);
        let size = self
            .mrs
            .iter()
            .find(|m| m.key == key)
            .map_or(PAGE, |m| m.length);
        let offset = Self::pick_num(input, size.wrapping_sub(8));
        let operand = if input.bool() { 0 } else { input.u64() };
        let swap = if op == Opcode::CompareSwap || input.u8() >= 0xf0 {
            input.u64()
        } else {
            0
        };
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if !offset.is_multiple_of(8) || (op == Opcode::FetchAdd && swap != 0) {
            errs.push(Status::Inval);
        }
        let mi = self.access_errs(key, PL_ACCESS_ATOMIC, offset, 8, &mut errs);
        if let Some(i) = mi {
            let m = &self.mrs[i];
            if offset.checked_add(8).is_some_and(|e| e <= m.length)
                && !m.gpa(offset).is_multiple_of(8)
            {
                errs.push(Status::Inval);
            }
        }
        let req = PlAtomicReq {
            key,
            offset,
            operand,
            swap,
        };
        let Some(resp) = self.expect(op, c, req.as_bytes(), &errs) else {
            return;
        };
        let mi = mi.unwrap();
        let got = PlAtomicResp::read_from(&resp).unwrap().original;
        let before = self.word(&self.mrs[mi], offset);
        assert_eq!(got, before, "{}: original value", self.step);
        if op == Opcode::FetchAdd {
            self.set_word(mi, offset, before.wrapping_add(operand));
        } else if before == operand {
            self.set_word(mi, offset, swap);
        }
        self.check_memory();
    }

    fn pattern(&mut self, input: &mut Input, op: Opcode) {
        let c = self.pick_ctx(input);
        let key = self.pick_mr(input);
        let size = self
            .mrs
            .iter()
            .find(|m| m.key == key)
            .map_or(PAGE, |m| m.length);
        let offset = Self::pick_num(input, size);
        let length = Self::pick_num(input, size.wrapping_sub(offset));
        let pattern = if input.bool() { input.u64() } else { 0 };
        let sel = input.u8();
        let mode = match sel {
            0..=0x7f => PL_PATTERN_CONST,
            0x80..=0xef => PL_PATTERN_OFFSET_XOR,
            _ => input.u32(),
        };
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if mode > PL_PATTERN_OFFSET_XOR || !offset.is_multiple_of(8) || !length.is_multiple_of(8) {
            errs.push(Status::Inval);
        }
        let bit = if op == Opcode::Fill {
            PL_ACCESS_WRITE
        } else {
            PL_ACCESS_READ
        };
        let mi = self.access_errs(key, bit, offset, length, &mut errs);
        let req = PlPatternReq::new(key, offset, length, pattern, mode);
        let Some(resp) = self.expect(op, c, req.as_bytes(), &errs) else {
            return;
        };
        let mi = mi.unwrap();
        let runs = self.mrs[mi].runs(offset, length);
        let words = (offset..offset + length).step_by(8);
        if op == Opcode::Fill {
            let bytes: Vec<u8> = words
                .flat_map(|o| pattern_word(pattern, mode, o).to_le_bytes())
                .collect();
            self.scatter(&runs, &bytes);
            self.check_memory();
        } else {
            let mut want = PlVerifyResp {
                first_bad_offset: u64::MAX,
                ..Default::default()
            };
            let bytes = self.gather(&runs);
            for (o, w) in words.zip(bytes.chunks_exact(8)) {
                let seen = u64::from_le_bytes(w.try_into().expect("8 bytes"));
                if seen != pattern_word(pattern, mode, o) {
                    if want.mismatches == 0 {
                        want.first_bad_offset = o;
                        want.first_bad_value = seen;
                    }
                    want.mismatches += 1;
                }
            }
            let got = PlVerifyResp::read_from(&resp).unwrap();
            assert_eq!(got, want, "{}: VERIFY answer", self.step);
        }
    }

    fn lease_take(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let f = file(input.u8());
        let (start, length) = Self::pick_file_range(input);
        let sel = input.u8();
        let policy = if sel < 0xf0 {
            u32::from(sel % 3) + 1
        } else {
            input.u32()
        };
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if !(PL_POLICY_REVOKE..=PL_POLICY_TIMEOUT).contains(&policy) {
            errs.push(Status::Inval);
        }
        let end = range_end(start, length);
        match end {
            None => errs.push(Status::Range),
            Some(end) => {
                let breaking = self.leases.iter().any(|l| {
                    !l.gone
                        && l.file == f
                        && l.state == LeaseState::Breaking
                        && l.overlaps(start, end)
                });
                if breaking {
                    errs.push(Status::Busy);
                }
            }
        }
        if self.leases.iter().filter(|l| !l.gone).count() >= LIMITS.max_leases as usize {
            errs.push(Status::NoMem);
        }
        let req = PlLeaseTakeReq {
            file: f,
            start,
            length,
            policy,
            owner_pid: 7,
        };
        if let Some(resp) = self.expect(Opcode::LeaseTake, c, req.as_bytes(), &errs) {
            let handle = PlHandleResp::read_from(&resp).unwrap().handle;
            assert!(!self.leases.iter().any(|l| l.handle == handle));
            self.leases.push(Lease {
                handle,
                holder: c,
                file: f,
                start,
                end: end.unwrap(),
                policy,
                state: LeaseState::Active,
                gone: false,
            });
        }
    }

    fn lease_release(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let h = self.pick_lease(input);
        let sel = input.u8();
        let reason = if sel < 0xf0 {
            u32::from(sel & 1)
        } else {
            input.u32()
        };
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if reason > PL_RELEASE_LOST {
            errs.push(Status::Inval);
        }
        let li = self.lease(h, &mut errs);
        if let Some(i) = li {
            if self.leases[i].holder != c {
                errs.push(Status::Perm);
            }
            // Undocumented in docs/abi.md 5.15's table but explained by
            // the device: a REVOKED lease's MRs are gone, nothing to lose.
            if reason == PL_RELEASE_LOST && self.leases[i].state == LeaseState::Revoked {
                errs.push(Status::Inval);
            }
        }
        let req = PlLeaseReleaseReq {
            lease: h,
            reason,
            reserved: 0,
        };
        if self
            .expect(Opcode::LeaseRelease, c, req.as_bytes(), &errs)
            .is_some()
        {
            let l = &mut self.leases[li.unwrap()];
            if reason == PL_RELEASE_LOST {
                l.state = LeaseState::Lost;
            } else {
                l.gone = true;
            }
        }
    }

    fn lease_break(&mut self, input: &mut Input) {
        let f = file(input.u8());
        let (start, length) = Self::pick_file_range(input);
        let sel = input.u8();
        let reason = if sel < 0xf0 {
            u32::from(sel % 8) + 1
        } else {
            input.u32()
        };
        let mut errs = Vec::new();
        if !(PL_BREAK_TRUNCATE..=PL_BREAK_OTHER).contains(&reason) {
            errs.push(Status::Inval);
        }
        let end = range_end(start, length);
        if end.is_none() {
            errs.push(Status::Range);
        }
        let req = PlLeaseBreakReq {
            file: f,
            start,
            length,
            reason,
            reserved: 0,
        };
        let Some(resp) = self.expect(Opcode::LeaseBreak, 0, req.as_bytes(), &errs) else {
            return;
        };
        let end = end.unwrap();
        let mut want = PlLeaseBreakResp::default();
        for li in 0..self.leases.len() {
            let l = &self.leases[li];
            if l.gone || l.file != f || !l.overlaps(start, end) {
                continue;
            }
            want.leases += 1;
            match l.state {
                LeaseState::Breaking => want.leases_held += 1,
                LeaseState::Revoked | LeaseState::Lost => {}
                LeaseState::Active if l.policy == PL_POLICY_REVOKE => {
                    let in_range: Vec<usize> = (0..self.mrs.len())
                        .filter(|&i| {
                            let m = &self.mrs[i];
                            !m.gone
                                && m.ctx == l.holder
                                && m.file.is_some_and(|(mf, fo)| {
                                    mf == l.file && l.overlaps(fo, fo.saturating_add(m.length))
                                })
                        })
                        .collect();
                    for i in in_range {
                        if self.mrs[i].live {
                            want.pages_unpinned += self.revoke(i);
                            want.mrs_revoked += 1;
                        }
                    }
                    self.leases[li].state = LeaseState::Revoked;
                }
                LeaseState::Active => {
                    self.leases[li].state = LeaseState::Breaking;
                    want.leases_held += 1;
                }
            }
        }
        let got = PlLeaseBreakResp::read_from(&resp).unwrap();
        assert_eq!(got, want, "{}: LEASE_BREAK totals", self.step);
    }

    fn export_mr(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let key = self.pick_mr(input);
        let mut errs = Vec::new();
        let open = self.open_ctx(c, &mut errs).is_some();
        let mi = self.mr(key, &mut errs);
        let existing = self
            .children
            .iter()
            .position(|ch| !ch.gone && ch.export_of == Some(key));
        if let Some(i) = mi {
            if self.mrs[i].ctx != c {
                errs.push(Status::Perm);
            }
            if !self.mrs[i].live {
                errs.push(Status::Canceled);
            }
        }
        if open
            && existing.is_none()
            && self.live_children(c) >= LIMITS.max_children_per_context as usize
        {
            errs.push(Status::NoMem);
        }
        let req = PlHandleReq { handle: key };
        let Some(resp) = self.expect(Opcode::ExportMr, c, req.as_bytes(), &errs) else {
            return;
        };
        let got = PlExportMrResp::read_from(&resp).unwrap();
        match existing {
            Some(i) => {
                let ch = &mut self.children[i];
                ch.refs += 1;
                assert_eq!((got.export, got.refs), (ch.handle, ch.refs), "re-export");
            }
            None => {
                assert_eq!(got.refs, 1, "{}: a new export's refs", self.step);
                assert!(!self.children.iter().any(|ch| ch.handle == got.export));
                self.children.push(Child {
                    handle: got.export,
                    ctx: c,
                    export_of: Some(key),
                    refs: 1,
                    gone: false,
                });
            }
        }
    }

    fn import_mr(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let export = self.pick_child(input);
        let access = Self::pick_access(input);
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        let src = match self.child(export, &mut errs) {
            Some(i) => match self.children[i].export_of {
                None => {
                    errs.push(Status::Inval);
                    None
                }
                Some(key) => self.mrs.iter().position(|m| m.key == key),
            },
            None => None,
        };
        if let Some(s) = src {
            let m = &self.mrs[s];
            if access == 0 || access & !m.access != 0 {
                errs.push(Status::Perm);
            }
            if !m.live {
                errs.push(Status::Canceled);
            }
        }
        if self.mr_count() >= LIMITS.max_mrs as usize {
            errs.push(Status::NoMem);
        }
        let req = PlImportMrReq {
            export,
            access,
            reserved: 0,
        };
        let Some(resp) = self.expect(Opcode::ImportMr, c, req.as_bytes(), &errs) else {
            return;
        };
        let resp = PlRegMrResp::read_from(&resp).unwrap();
        assert_eq!(resp.lease, 0, "{}: IMPORT_MR lease", self.step);
        assert!(resp.key != 0 && !self.mrs.iter().any(|m| m.key == resp.key));
        let s = &self.mrs[src.expect("OK only for a live export")];
        let mr = Mr {
            key: resp.key,
            ctx: c,
            access,
            first_page_offset: s.first_page_offset,
            length: s.length,
            pages: s.pages.clone(),
            own: false,
            source: Some(s.key),
            file: s.file,
            live: true,
            gone: false,
        };
        self.mrs.push(mr);
    }

    fn nop_or_query(&mut self, input: &mut Input) {
        if input.bool() {
            let c = self.pick_ctx(input);
            self.expect(Opcode::Nop, c, &[], &[]);
        } else if let Some(resp) = self.expect(Opcode::QueryDevice, 0, &[], &[]) {
            let q = PlQueryDeviceResp::read_from(&resp).unwrap();
            assert_eq!(q, self.dev.query(), "{}: QUERY_DEVICE", self.step);
            assert_eq!(u64::from(q.page_size), PAGE);
        }
    }

    fn reset(&mut self) {
        self.dev.reset();
        self.changed = true;
        for c in self.ctxs.iter_mut() {
            c.state = CtxState::Gone;
        }
        for m in self.mrs.iter_mut() {
            m.live = false;
            m.gone = true;
        }
        for ch in self.children.iter_mut() {
            ch.gone = true;
        }
        for l in self.leases.iter_mut() {
            l.gone = true;
        }
        assert!(self.dev.events.is_empty(), "events survive a reset");
    }

    fn memory_map(&mut self, input: &mut Input) {
        let region_b = input.bool();
        let revoked = self.dev.set_memory(Box::new(new_ram(region_b)));
        self.ram = self.dev.memory().expect("memory map just set");
        self.region_b = region_b;
        self.changed = true;
        // A new map is new (zeroed) memory.
        self.shadow.iter_mut().for_each(|b| *b = 0);
        let mut want = 0;
        for i in 0..self.mrs.len() {
            let m = &self.mrs[i];
            if m.pins() && m.pages.iter().any(|&g| !self.mapped(g)) {
                self.revoke(i);
                want += 1;
            }
        }
        assert_eq!(revoked, want, "MRs revoked by the memory-map change");
    }

    /// A request broken in one way the decoder must refuse, with the
    /// status docs/abi.md 4.3 gives it; nothing changes.
    fn malformed(&mut self, input: &mut Input) {
        let kind = input.u8() % 7;
        let n = usize::from(input.u8() % 16);
        self.tag += 1;
        let mut hdr = PlReqHdr {
            opcode: Opcode::Nop as u16,
            tag: self.tag,
            ..Default::default()
        };
        let mut body = Vec::new();
        let mut cap = 4096;
        let want = match kind {
            0 => {
                hdr.opcode = Opcode::ALL.len() as u16 + input.u16() % 1000;
                Status::NoSys
            }
            1 => {
                hdr.flags = 1 + input.u16() % 0xfffe;
                Status::Inval
            }
            2 => {
                hdr.opcode = Opcode::DeregMr as u16;
                body = vec![0; n % 8];
                Status::Inval
            }
            3 => {
                hdr.opcode = if n % 2 == 0 {
                    Opcode::Nop as u16
                } else {
                    Opcode::DeregMr as u16
                };
                body = vec![0; 8 * (n % 2) + 1 + n];
                Status::TooBig
            }
            4 => {
                hdr.opcode = Opcode::QueryDevice as u16;
                cap = n;
                Status::Inval
            }
            5 => {
                hdr.opcode = Opcode::LeaseBreak as u16;
                hdr.ctx = 1 + u64::from(input.u8());
                body = PlLeaseBreakReq::default().as_bytes().to_vec();
                Status::Inval
            }
            _ => {
                // A header cut short: counted under no opcode, tag 0.
                let bytes = hdr.as_bytes()[..n].to_vec();
                let (status, _) = self.send_raw(&bytes, 4096);
                assert_eq!(status, Status::Inval, "short header");
                return;
            }
        };
        let mut req = hdr.as_bytes().to_vec();
        req.extend(body);
        let (status, _) = self.send_raw(&req, cap);
        assert_eq!(status, want, "{}: malformed kind {kind}", self.step);
    }

    // ---- checks --------------------------------------------------------------

    /// The device's guest memory equals the model's shadow.
    fn check_memory(&self) {
        let mut regions = vec![REGION_A];
        if self.region_b {
            regions.push(REGION_B);
        }
        for (base, len) in regions {
            let mut buf = vec![0u8; len as usize];
            self.ram.read(base, &mut buf).expect("mapped region");
            let want = &self.shadow[base as usize..(base + len) as usize];
            if buf != want {
                let at = buf.iter().zip(want).position(|(a, b)| a != b).unwrap();
                panic!(
                    "{}: guest memory differs from the model at {:#x}: device {:#x}, model {:#x}",
                    self.step,
                    base + at as u64,
                    buf[at],
                    want[at]
                );
            }
        }
    }

    /// `status()` agrees with the model.
    fn check_status(&self) {
        let s = self.dev.status();
        let ctxs: BTreeSet<(String, String)> = s
            .contexts
            .iter()
            .map(|c| (c.handle.clone(), c.state.to_string()))
            .collect();
        let want: BTreeSet<(String, String)> = self
            .ctxs
            .iter()
            .filter(|c| c.state != CtxState::Gone)
            .map(|c| {
                let state = if c.state == CtxState::Open {
                    "open"
                } else {
                    "closed"
                };
                (hex(c.handle), state.to_string())
            })
            .collect();
        assert_eq!(ctxs, want, "{}: contexts in status", self.step);
        for c in &s.contexts {
            let h = self
                .ctxs
                .iter()
                .find(|m| hex(m.handle) == c.handle)
                .unwrap();
            assert_eq!(
                c.children.len(),
                self.live_children(h.handle),
                "{}: children of {}",
                self.step,
                c.handle
            );
        }
        let mrs: BTreeSet<(String, String)> = s
            .mrs
            .iter()
            .map(|m| (m.key.clone(), m.state.to_string()))
            .collect();
        let want: BTreeSet<(String, String)> = self
            .mrs
            .iter()
            .filter(|m| !m.gone)
            .map(|m| {
                let state = if m.live { "live" } else { "revoked" };
                (hex(m.key), state.to_string())
            })
            .collect();
        assert_eq!(mrs, want, "{}: MRs in status", self.step);
        let leases: BTreeSet<(String, String)> = s
            .leases
            .iter()
            .map(|l| (l.handle.clone(), l.state.to_string()))
            .collect();
        let want: BTreeSet<(String, String)> = self
            .leases
            .iter()
            .filter(|l| !l.gone)
            .map(|l| (hex(l.handle), l.state.name().to_string()))
            .collect();
        assert_eq!(leases, want, "{}: leases in status", self.step);
        let pinned: Vec<u64> = self
            .mrs
            .iter()
            .filter(|m| m.pins())
            .flat_map(|m| m.pages.iter().copied())
            .collect();
        let distinct: BTreeSet<u64> = pinned.iter().copied().collect();
        assert_eq!(
            (s.pins, s.pinned_pages),
            (pinned.len() as u64, distinct.len() as u64),
            "{}: pins, pinned pages",
            self.step
        );
        assert_eq!(
            s.counters.requests, self.requests,
            "{}: request counters",
            self.step
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    #[test]
    fn seeds_run_clean_and_answer_every_opcode_ok() {
        let mut answered = BTreeSet::new();
        for (_, program) in seeds::requests() {
            answered.extend(Harness::run(&program).answered());
        }
        for op in Opcode::ALL {
            assert!(
                answered.contains(&(op.name().to_string(), "OK".to_string())),
                "no seed has {} answered OK: {answered:?}",
                op.name()
            );
        }
        for s in [
            "ENOMEM",
            "ESTALE",
            "ECANCELED",
            "EINVAL",
            "ENOSYS",
            "E2BIG",
            "EBUSY",
        ] {
            assert!(
                answered.iter().any(|(_, st)| st == s),
                "no seed answers {s}"
            );
        }
    }

    #[test]
    fn a_wrong_model_is_caught() {
        // The harness must be able to fail: a model that believes a FILL
        // wrote nothing disagrees with guest memory.
        let mut h = Harness::new();
        let (_, program) = seeds::requests()
            .into_iter()
            .find(|(n, _)| *n == "fill_verify")
            .unwrap();
        let mut input = Input::new(&program);
        while !input.is_empty() {
            h.step(&mut input);
        }
        h.shadow[0x10] ^= 0xff;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.check_memory()));
        assert!(caught.is_err());
    }
}
