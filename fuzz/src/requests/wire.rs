//! The wire: requests encoded and sent through the real decoder
//! (`protocol::handle`), the response framing checked (tag, length, body
//! size) and counted as the device should count it, the status checked
//! against the problems the model found; and the MALFORMED step, requests
//! broken in each way the decoder must refuse.

use std::mem::size_of;

use pinlease::protocol;
use pinlease_abi::*;

use super::Harness;
use crate::input::Input;

impl Harness {
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
    pub(super) fn expect(
        &mut self,
        op: Opcode,
        ctx: u64,
        body: &[u8],
        errs: &[Status],
    ) -> Option<Vec<u8>> {
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

    /// A request broken in one way the decoder must refuse, with the
    /// status docs/abi.md 4.3 gives it; nothing changes.
    pub(super) fn malformed(&mut self, input: &mut Input) {
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
}
