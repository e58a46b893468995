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
//!
//! The modules, one concern each: `step` (which step a byte picks and the
//! field pickers), `model` (the model's contexts, MRs, children, leases and
//! the lookups the steps share), `wire` (sending through the decoder,
//! framing and status checks, malformed requests), one module per step
//! family (`contexts`, `mrs`, `dma` with the shadow memory, `leases`,
//! `device` for resets and memory-map changes) and `status` (the `status()`
//! comparison).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pinlease::guest_ram::MmapRam;
use pinlease::model::memory::GuestRam;
use pinlease::model::{Device, Limits};
use pinlease_abi::*;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::input::Input;

mod contexts;
mod device;
mod dma;
mod leases;
mod model;
mod mrs;
mod status;
mod step;
mod wire;

use model::{Child, Ctx, Lease, Mr};
pub use step::Step;

const PAGE: u64 = PL_PAGE_SIZE;
/// Guest memory: region A (8 pages at 0), a hole, region B (4 pages at
/// 0x10000), which a memory-map change can take away and give back.
const REGION_A: (u64, u64) = (0, 8 * PAGE);
const REGION_B: (u64, u64) = (0x10000, 4 * PAGE);
const RAM_END: u64 = REGION_B.0 + REGION_B.1;
/// Small tables, so the fuzzer reaches every limit.
const LIMITS: Limits = Limits {
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
}
