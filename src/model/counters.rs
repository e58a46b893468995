//! Device counters: requests by opcode and status, bytes moved, revokes,
//! bad-input rejections by kind. Atomics, so any thread may bump them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::abi::{Opcode, Status};

/// Kinds of malformed input the transport or the decoder rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BadInput {
    /// Request shorter than its header or its opcode's body.
    ShortRequest,
    /// Request longer than the device accepts, or body longer than needed.
    OversizedRequest,
    /// Response buffer too small for the response.
    ShortResponse,
    /// A writable descriptor before a readable one, or no readable one.
    WrongDirection,
    /// No writable descriptor to answer in.
    NoResponseBuffer,
    /// A descriptor's buffer lies outside guest memory.
    BadAddress,
    /// A malformed descriptor chain (loop, too long, bad indirect table).
    BadChain,
    UnknownOpcode,
    /// Non-zero reserved field, unknown flag or enumeration value.
    BadField,
    /// Event buffer smaller than one event.
    ShortEventBuffer,
}

impl BadInput {
    pub const ALL: [BadInput; 10] = [
        BadInput::ShortRequest,
        BadInput::OversizedRequest,
        BadInput::ShortResponse,
        BadInput::WrongDirection,
        BadInput::NoResponseBuffer,
        BadInput::BadAddress,
        BadInput::BadChain,
        BadInput::UnknownOpcode,
        BadInput::BadField,
        BadInput::ShortEventBuffer,
    ];

    /// The number DEVICE_ERROR events carry for this kind (ABI: the
    /// declaration order above, from 1).
    pub fn wire(self) -> u64 {
        self as u64 + 1
    }

    pub fn name(self) -> &'static str {
        match self {
            BadInput::ShortRequest => "short-request",
            BadInput::OversizedRequest => "oversized-request",
            BadInput::ShortResponse => "short-response-buffer",
            BadInput::WrongDirection => "wrong-descriptor-direction",
            BadInput::NoResponseBuffer => "no-response-buffer",
            BadInput::BadAddress => "address-outside-guest-memory",
            BadInput::BadChain => "malformed-chain",
            BadInput::UnknownOpcode => "unknown-opcode",
            BadInput::BadField => "bad-field",
            BadInput::ShortEventBuffer => "short-event-buffer",
        }
    }
}

const OPS: usize = Opcode::ALL.len() + 1; // + unknown opcodes
const STATUSES: usize = Status::ALL.len();

pub struct Counters {
    requests: [[AtomicU64; STATUSES]; OPS],
    bad_input: [AtomicU64; BadInput::ALL.len()],
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub revokes: AtomicU64,
    pub lost_accesses: AtomicU64,
    pub memory_map_updates: AtomicU64,
    pub device_resets: AtomicU64,
    /// Scrubber: rounds run, MR passes, canary words written, words found
    /// changed at verification, passes into MRs under a LOST lease.
    pub scrub_rounds: AtomicU64,
    pub scrub_mr_passes: AtomicU64,
    pub scrub_canaries_written: AtomicU64,
    pub scrub_mismatches: AtomicU64,
    pub scrub_lost_accesses: AtomicU64,
    /// Scrub period in force (ms, 0 = scrubber off), for status.
    pub scrub_period_ms: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            bad_input: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            revokes: AtomicU64::new(0),
            lost_accesses: AtomicU64::new(0),
            memory_map_updates: AtomicU64::new(0),
            device_resets: AtomicU64::new(0),
            scrub_rounds: AtomicU64::new(0),
            scrub_mr_passes: AtomicU64::new(0),
            scrub_canaries_written: AtomicU64::new(0),
            scrub_mismatches: AtomicU64::new(0),
            scrub_lost_accesses: AtomicU64::new(0),
            scrub_period_ms: AtomicU64::new(0),
        }
    }
}

fn status_index(s: Status) -> usize {
    Status::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl Counters {
    /// Counts a completed request; `op` None for an unknown opcode.
    pub fn request(&self, op: Option<Opcode>, status: Status) {
        let o = op.map_or(OPS - 1, |o| o as usize);
        self.requests[o][status_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn bad_input(&self, kind: BadInput) {
        let i = BadInput::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.bad_input[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn bad_input_count(&self, kind: BadInput) -> u64 {
        let i = BadInput::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.bad_input[i].load(Ordering::Relaxed)
    }

    /// Non-zero request counts as opcode name -> status name -> count.
    pub fn requests_by_opcode(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for (o, row) in self.requests.iter().enumerate() {
            let name = Opcode::ALL.get(o).map_or("UNKNOWN", |op| op.name());
            for (s, c) in row.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    out.entry(name.to_string())
                        .or_insert_with(BTreeMap::new)
                        .insert(Status::ALL[s].name().to_string(), n);
                }
            }
        }
        out
    }

    pub fn bad_input_by_kind(&self) -> BTreeMap<String, u64> {
        BadInput::ALL
            .iter()
            .map(|k| (k.name().to_string(), self.bad_input_count(*k)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn bad_input_total(&self) -> u64 {
        self.bad_input
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}
