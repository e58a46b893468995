//! The harness of the `daemon_bad_input_*` tests: a daemon with a client
//! ready for hand-made chains, and what every bad-input case checks after
//! it.

use pinlease_abi::*;
use pinlease_testkit::frontend::client::{encode_request, Client};
use pinlease_testkit::frontend::{Desc, UsedElem};

use super::*;

pub const MIB: u64 = 1 << 20;

pub const EINVAL: u64 = Status::Inval as u64;

// DEVICE_ERROR args[1] values (docs/abi.md §6).
pub const DE_OVERSIZED: u64 = 2;
pub const DE_SHORT_RESPONSE: u64 = 3;
pub const DE_WRONG_DIRECTION: u64 = 4;
pub const DE_NO_RESPONSE: u64 = 5;
pub const DE_OUTSIDE_MEMORY: u64 = 6;

/// A daemon, a client with event buffers posted, and two scratch pages
/// for hand-made chains.
pub struct Bad {
    pub d: Daemon,
    pub c: Client,
    pub req: u64,
    pub resp: u64,
}

impl Bad {
    pub fn new() -> Bad {
        let d = Daemon::start();
        let mut c = d.client_with_events(32);
        let req = c.frontend_mut().alloc(PL_PAGE_SIZE, PL_PAGE_SIZE).unwrap();
        let resp = c.frontend_mut().alloc(PL_PAGE_SIZE, PL_PAGE_SIZE).unwrap();
        Bad { d, c, req, resp }
    }

    /// Submits `descs` on the request queue and waits for its used element.
    pub fn chain(&mut self, descs: &[Desc]) -> UsedElem {
        let fe = self.c.frontend_mut();
        let head = fe.submit_chain(0, descs).unwrap();
        fe.kick(0).unwrap();
        let u = fe
            .wait_used(0, T)
            .unwrap()
            .expect("the device must complete every chain");
        assert_eq!(u.id, head);
        u
    }

    /// Writes `bytes` to the request page and zeroes the response page.
    pub fn stage(&mut self, bytes: &[u8]) {
        let fe = self.c.frontend();
        fe.write_mem(self.req, bytes).unwrap();
        fe.write_mem(self.resp, &[0u8; 4096]).unwrap();
    }

    pub fn resp_hdr(&self) -> PlRespHdr {
        PlRespHdr::read_from(&self.c.frontend().read_mem(self.resp, 16).unwrap()).unwrap()
    }

    /// The next event must be DEVICE_ERROR [EINVAL, what, 0, 0] for ctx 0.
    #[track_caller]
    pub fn device_error(&mut self, what: u64) {
        let e = expect_event(&mut self.c, "DEVICE_ERROR");
        assert_eq!(
            (e.kind, e.ctx, e.flags, e.args),
            (PL_EVENT_DEVICE_ERROR, 0, 0, [EINVAL, what, 0, 0])
        );
    }

    /// The counter `kind` reads `n`, the log has a line for it, requests
    /// work again, and the daemon is healthy.
    #[track_caller]
    pub fn check(&mut self, kind: &str, n: u64) {
        assert_eq!(
            self.d.bad_input(kind),
            n,
            "counters.bad_input.{kind}; status {}",
            self.d.status_json()
        );
        let log = self.d.log();
        assert!(
            log.contains(&format!("bad input: {kind}")),
            "no log line for {kind}:\n{log}"
        );
        self.c.nop().unwrap();
        assert_eq!(self.c.query().unwrap().abi_version, 1);
        self.d.assert_healthy();
    }

    pub fn contexts(&self) -> serde_json::Value {
        self.d.device()["contexts"].clone()
    }
}

pub fn create_context_req(tag: u64) -> Vec<u8> {
    let body = PlCreateContextReq {
        pid: 1,
        reserved: 0,
        comm: *b"evil\0\0\0\0\0\0\0\0\0\0\0\0",
    };
    encode_request(Opcode::CreateContext as u16, 0, tag, body.as_bytes())
}
