//! Requests written into guest memory once and resubmitted, so the timed
//! loops measure the virtqueue round trip and the daemon, not the encoding.

use std::collections::HashMap;

use pinlease_abi::*;
use pinlease_testkit::frontend::client::encode_request;
use pinlease_testkit::frontend::{Desc, TestFrontend, REQUEST_QUEUE};
use vm_memory::{Bytes, GuestAddress};

use crate::measure::{measure_interleaved, one_each, Rate};
use crate::{PAGE, REPS_RT, TIMEOUT};

/// A request written into guest memory once, and its response buffer.
pub(crate) struct Prebuilt {
    pub(crate) req: u64,
    pub(crate) req_len: u32,
    pub(crate) resp: u64,
    pub(crate) resp_cap: u32,
}

impl Prebuilt {
    pub(crate) fn new(fe: &mut TestFrontend, req: &[u8], resp_cap: u32) -> Prebuilt {
        let gpa = fe
            .alloc(req.len() as u64, PAGE)
            .expect("guest memory for a request");
        fe.write_mem(gpa, req).expect("writing a request");
        let resp = fe
            .alloc(u64::from(resp_cap), 64)
            .expect("guest memory for a response");
        Prebuilt {
            req: gpa,
            req_len: req.len() as u32,
            resp,
            resp_cap,
        }
    }

    pub(crate) fn submit(&self, fe: &mut TestFrontend) -> u16 {
        fe.submit_chain(
            REQUEST_QUEUE,
            &[
                Desc::readable(self.req, self.req_len),
                Desc::writable(self.resp, self.resp_cap),
            ],
        )
        .expect("submitting a chain")
    }

    /// One request in flight: submit, kick, wait. Returns the used length.
    pub(crate) fn round_trip(&self, fe: &mut TestFrontend) -> u32 {
        let head = self.submit(fe);
        fe.kick_if_needed(REQUEST_QUEUE).expect("kick");
        let used = fe
            .wait_used(REQUEST_QUEUE, TIMEOUT)
            .expect("waiting for the used ring")
            .expect("the device did not answer in time");
        assert_eq!(used.id, head, "only one chain was in flight");
        used.len
    }

    pub(crate) fn status(&self, fe: &TestFrontend) -> u32 {
        fe.memory()
            .read_obj::<u32>(GuestAddress(self.resp))
            .expect("reading a response")
    }

    /// A round trip that must succeed with a response of `len` bytes.
    pub(crate) fn ok(&self, fe: &mut TestFrontend, len: u32) {
        let n = self.round_trip(fe);
        let s = self.status(fe);
        assert!(
            n == len && s == 0,
            "request failed: used length {n} (expected {len}), status {s}"
        );
    }
}

pub(crate) fn nop_request() -> Vec<u8> {
    encode_request(Opcode::Nop as u16, 0, 1, &[])
}

/// `depth` copies of a request kept in flight: each completion is answered
/// by resubmitting the same chain. Returns a closure doing one completion.
pub(crate) struct Pipeline {
    pub(crate) chains: Vec<Prebuilt>,
    pub(crate) by_head: HashMap<u16, usize>,
    /// Requests completed and resubmitted by `complete_one`.
    pub(crate) completed: u64,
    /// Of those resubmissions, how many kicked (the device had not
    /// turned kicks off while draining the queue).
    pub(crate) kicks: u64,
}

impl Pipeline {
    pub(crate) fn new(fe: &mut TestFrontend, req: &[u8], resp_cap: u32, depth: usize) -> Pipeline {
        let chains: Vec<Prebuilt> = (0..depth)
            .map(|_| Prebuilt::new(fe, req, resp_cap))
            .collect();
        let mut by_head = HashMap::new();
        for (i, c) in chains.iter().enumerate() {
            by_head.insert(c.submit(fe), i);
        }
        fe.kick(REQUEST_QUEUE).expect("kick");
        Pipeline {
            chains,
            by_head,
            completed: 0,
            kicks: 0,
        }
    }

    pub(crate) fn complete_one(&mut self, fe: &mut TestFrontend, len: u32) {
        let used = fe
            .wait_used(REQUEST_QUEUE, TIMEOUT)
            .expect("waiting for the used ring")
            .expect("the device did not answer in time");
        let i = self.by_head.remove(&used.id).expect("a head we submitted");
        let c = &self.chains[i];
        assert!(
            used.len == len && c.status(fe) == 0,
            "pipelined request failed"
        );
        let head = c.submit(fe);
        self.by_head.insert(head, i);
        self.completed += 1;
        if fe.kick_if_needed(REQUEST_QUEUE).expect("kick") {
            self.kicks += 1;
        }
    }

    pub(crate) fn drain(mut self, fe: &mut TestFrontend) {
        while !self.by_head.is_empty() {
            let used = fe
                .wait_used(REQUEST_QUEUE, TIMEOUT)
                .expect("waiting for the used ring")
                .expect("the device did not answer in time");
            self.by_head.remove(&used.id);
        }
    }
}

/// `nop` (a prebuilt NOP) and `op` take turns on `fe` (see
/// [`measure_interleaved`]), so the ratio of their rates compares like with
/// like; returns the rates `[nop, op]`.
pub(crate) fn interleaved_with_nop(
    fe: &mut TestFrontend,
    nop: &Prebuilt,
    mut op: impl FnMut(&mut TestFrontend) -> u64,
) -> Vec<Rate> {
    let cell = std::cell::RefCell::new(fe);
    let mut nops = one_each(|| nop.ok(&mut cell.borrow_mut(), 16));
    measure_interleaved(
        REPS_RT,
        &mut [&mut nops, &mut || op(&mut cell.borrow_mut())],
    )
}
