//! Hostile descriptor chains against the real daemon (docs/design.md §7,
//! docs/abi.md §2.4, §3, §4.3): short, oversized and misdirected parts,
//! buffers outside guest memory, response and event buffers too small,
//! and the rate limit on bad-input log lines. Each case checks the answer
//! (an error status, or used length 0 plus a DEVICE_ERROR event), the
//! counter `pinlease status --json` shows, a log line, and that the next
//! request works. Every test ends by checking that the daemon is alive and
//! never panicked.

mod common;

use std::mem::size_of;

use common::bad_input::*;
use common::*;
use pinlease_abi::*;
use pinlease_testkit::frontend::client::{encode_request, encode_request_hdr, RegMrArgs};
use pinlease_testkit::frontend::Desc;
use serde_json::json;

#[test]
fn short_request_gets_header_only_with_tag_0() {
    let mut b = Bad::new();
    // 23 bytes: a header missing its last byte (the tag is non-zero).
    let mut req = encode_request(Opcode::Nop as u16, 0, 0x1122_3344_5566_7788, &[]);
    req.truncate(23);
    b.stage(&req);
    let u = b.chain(&[Desc::readable(b.req, 23), Desc::writable(b.resp, 64)]);
    assert_eq!(u.len, 16, "header only");
    let h = b.resp_hdr();
    assert_eq!((h.status, h.len, h.tag), (Status::Inval as u32, 0, 0));
    // A single byte.
    let u = b.chain(&[Desc::readable(b.req, 1), Desc::writable(b.resp, 64)]);
    assert_eq!(u.len, 16);
    assert_eq!(b.resp_hdr().status, Status::Inval as u32);
    b.check("short-request", 2);
}

#[test]
fn short_body_is_einval_and_creates_nothing() {
    let mut b = Bad::new();
    let c = &mut b.c;
    let body = [0u8; 20];
    let (h, rest) = c.raw(Opcode::CreateContext as u16, 0, &body, 64).unwrap();
    assert_eq!(
        (h.status, h.len, h.tag, rest.len()),
        (Status::Inval as u32, 0, c.last_tag(), 0)
    );
    // REG_MR shorter than its fixed part.
    let ctx = c.create_context(1, "x").unwrap();
    let (h, _) = c.raw(Opcode::RegMr as u16, ctx, &[0u8; 40], 64).unwrap();
    assert_eq!(h.status, Status::Inval as u32);
    // WRITE with half a body.
    let (h, _) = c.raw(Opcode::Write as u16, ctx, &[0u8; 20], 64).unwrap();
    assert_eq!(h.status, Status::Inval as u32);
    assert_eq!(b.contexts().as_array().unwrap().len(), 1);
    assert_eq!(b.d.device()["mrs"], json!([]));
    b.check("short-request", 3);
}

#[test]
fn oversized_body_is_e2big() {
    let mut b = Bad::new();
    let c = &mut b.c;
    let (h, _) = c.raw(Opcode::Nop as u16, 0, &[0u8; 8], 64).unwrap();
    assert_eq!((h.status, h.tag), (Status::TooBig as u32, c.last_tag()));
    let (h, _) = c.raw(Opcode::QueryDevice as u16, 0, &[0u8; 1], 64).unwrap();
    assert_eq!(h.status, Status::TooBig as u32);
    let mut body = PlCreateContextReq::default().as_bytes().to_vec();
    body.extend_from_slice(&[0u8; 8]);
    let (h, _) = c.raw(Opcode::CreateContext as u16, 0, &body, 64).unwrap();
    assert_eq!(h.status, Status::TooBig as u32);
    assert_eq!(b.contexts(), json!([]), "nothing created");
    // REG_MR whose page list is one entry longer than npages.
    let c = &mut b.c;
    let ctx = c.create_context(1, "x").unwrap();
    let pages = c.alloc_pages(1).unwrap();
    let mut body = RegMrArgs::pages(PL_ACCESS_ALL, &pages).body();
    body.extend_from_slice(&pages[0].to_le_bytes());
    let (h, _) = c.raw(Opcode::RegMr as u16, ctx, &body, 64).unwrap();
    assert_eq!(h.status, Status::TooBig as u32);
    assert_eq!(b.d.device()["mrs"], json!([]));
    b.check("oversized-request", 4);
}

#[test]
fn readable_part_over_max_request_bytes_gets_no_response() {
    let mut b = Bad::new();
    // One 4 MiB buffer named by several readable descriptors.
    let big = b.c.frontend_mut().alloc(4 * MIB, PL_PAGE_SIZE).unwrap();
    let nop = encode_request(Opcode::Nop as u16, 0, 5, &[]);
    b.stage(&nop);
    let u = b.chain(&[
        Desc::readable(b.req, nop.len() as u32),
        Desc::readable(big, 4 << 20),
        Desc::readable(big, 4 << 20),
        Desc::readable(big, 4 << 20),
        Desc::writable(b.resp, 64),
    ]);
    assert_eq!(u.len, 0, "no response");
    assert_eq!(b.resp_hdr(), PlRespHdr::default(), "nothing written");
    b.device_error(DE_OVERSIZED);
    b.check("oversized-request", 1);
}

#[test]
fn response_buffer_too_small_for_the_body() {
    let mut b = Bad::new();
    // CREATE_CONTEXT needs 16 + 8 bytes; 16 and 23 hold only the header.
    for cap in [16u32, 23] {
        let (h, body) =
            b.c.raw(
                Opcode::CreateContext as u16,
                0,
                PlCreateContextReq::default().as_bytes(),
                cap,
            )
            .unwrap();
        assert_eq!(
            (h.status, h.len, h.tag, body.len()),
            (Status::Inval as u32, 0, b.c.last_tag(), 0),
            "cap {cap}"
        );
    }
    assert_eq!(b.contexts(), json!([]), "no context was created");
    // QUERY_DEVICE in 16 + 39 bytes.
    let (h, _) = b.c.raw(Opcode::QueryDevice as u16, 0, &[], 55).unwrap();
    assert_eq!(h.status, Status::Inval as u32);
    // The response may be scattered over several writable descriptors.
    let req = create_context_req(9);
    b.stage(&req);
    let resp = b.resp;
    let u = b.chain(&[
        Desc::readable(b.req, req.len() as u32),
        Desc::writable(resp, 8),
        Desc::writable(resp + 100, 8),
        Desc::writable(resp + 200, 8),
    ]);
    assert_eq!(u.len, 24);
    let fe = b.c.frontend();
    let mut got = fe.read_mem(resp, 8).unwrap();
    got.extend(fe.read_mem(resp + 100, 8).unwrap());
    got.extend(fe.read_mem(resp + 200, 8).unwrap());
    let h = PlRespHdr::read_from(&got).unwrap();
    assert_eq!((h.status, h.len, h.tag), (0, 8, 9));
    let handle = u64::from_le_bytes(got[16..24].try_into().unwrap());
    assert_eq!(b.contexts()[0]["handle"], json!(format!("{handle:#x}")));
    b.check("short-response-buffer", 3);
}

#[test]
fn writable_part_under_16_bytes_gets_no_response() {
    let mut b = Bad::new();
    let req = create_context_req(3);
    b.stage(&req);
    let u = b.chain(&[
        Desc::readable(b.req, req.len() as u32),
        Desc::writable(b.resp, 8),
        Desc::writable(b.resp + 64, 7),
    ]);
    assert_eq!(u.len, 0);
    b.device_error(DE_SHORT_RESPONSE);
    assert_eq!(b.contexts(), json!([]), "not executed");
    b.check("short-response-buffer", 1);
}

#[test]
fn wrong_descriptor_direction_gets_no_response() {
    let mut b = Bad::new();
    let req = create_context_req(3);
    b.stage(&req);
    // Readable after writable.
    let u = b.chain(&[
        Desc::readable(b.req, 16),
        Desc::writable(b.resp, 64),
        Desc::readable(b.req + 16, req.len() as u32 - 16),
    ]);
    assert_eq!(u.len, 0);
    b.device_error(DE_WRONG_DIRECTION);
    assert_eq!(b.resp_hdr(), PlRespHdr::default(), "nothing written");
    // Only writable descriptors: no readable bytes.
    let u = b.chain(&[Desc::writable(b.resp, 64), Desc::writable(b.resp + 64, 64)]);
    assert_eq!(u.len, 0);
    b.device_error(DE_WRONG_DIRECTION);
    // Zero-length readable descriptor: still no readable bytes.
    let u = b.chain(&[Desc::readable(b.req, 0), Desc::writable(b.resp, 64)]);
    assert_eq!(u.len, 0);
    b.device_error(DE_WRONG_DIRECTION);
    assert_eq!(b.contexts(), json!([]));
    b.check("wrong-descriptor-direction", 3);
}

#[test]
fn chain_without_writable_buffer_gets_no_response() {
    let mut b = Bad::new();
    let req = create_context_req(3);
    b.stage(&req);
    let u = b.chain(&[Desc::readable(b.req, req.len() as u32)]);
    assert_eq!(u.len, 0);
    b.device_error(DE_NO_RESPONSE);
    assert_eq!(b.contexts(), json!([]), "not executed");
    b.check("no-response-buffer", 1);
}

#[test]
fn descriptors_outside_guest_memory_get_no_response() {
    let mut b = Bad::new();
    let nop = encode_request(Opcode::Nop as u16, 0, 1, &[]);
    b.stage(&nop);
    let end = 16 * MIB;
    let cases = [
        // Readable: far outside, straddling the end of memory.
        vec![
            Desc::readable(0x1_0000_0000, 24),
            Desc::writable(b.resp, 64),
        ],
        vec![Desc::readable(end - 8, 24), Desc::writable(b.resp, 64)],
        vec![
            Desc::readable(b.req, 24),
            Desc::readable(u64::MAX - 3, 8),
            Desc::writable(b.resp, 64),
        ],
        // Writable: far outside, straddling the end.
        vec![Desc::readable(b.req, 24), Desc::writable(0x2_0000_0000, 64)],
        vec![Desc::readable(b.req, 24), Desc::writable(end - 8, 64)],
    ];
    for (i, descs) in cases.iter().enumerate() {
        let u = b.chain(descs);
        assert_eq!(u.len, 0, "case {i}");
        b.device_error(DE_OUTSIDE_MEMORY);
    }
    b.check("address-outside-guest-memory", cases.len() as u64);
}

#[test]
fn event_buffer_smaller_than_an_event() {
    let mut b = Bad::new();
    // A separate client whose event queue has no buffers yet.
    drop(b.c);
    b.d.wait_connected(false);
    let mut c = b.d.client();
    b.d.wait_connection(2);
    let small = c.frontend_mut().alloc(64, 8).unwrap();
    let ctx = c.create_context(1, "x").unwrap();
    c.close_context(ctx).unwrap();
    assert_eq!(b.d.device()["counters"]["events"]["backlog"], json!(1));
    let fe = c.frontend_mut();
    fe.submit_chain(1, &[Desc::writable(small, 32)]).unwrap();
    fe.kick(1).unwrap();
    let u = fe.wait_used(1, T).unwrap().expect("short buffer returned");
    assert_eq!(u.len, 0, "returned unused");
    assert_eq!(fe.read_mem(small, 32).unwrap(), [0u8; 32]);
    let dev = b.d.device();
    assert_eq!(
        dev["counters"]["events"]["backlog"],
        json!(1),
        "event waits"
    );
    assert_eq!(dev["counters"]["bad_input"]["short-event-buffer"], json!(1));
    // Two descriptors of 28 bytes together hold one event.
    fe.submit_chain(
        1,
        &[Desc::writable(small, 28), Desc::writable(small + 32, 28)],
    )
    .unwrap();
    fe.kick(1).unwrap();
    let u = fe.wait_used(1, T).unwrap().expect("event delivered");
    assert_eq!(u.len, size_of::<PlEvent>() as u32);
    let mut bytes = fe.read_mem(small, 28).unwrap();
    bytes.extend(fe.read_mem(small + 32, 28).unwrap());
    let e = pinlease_testkit::frontend::client::decode_event(&bytes).unwrap();
    assert_eq!((e.kind, e.ctx, e.seq), (PL_EVENT_CONTEXT_TORN_DOWN, ctx, 1));
    b.c = c;
    b.check("short-event-buffer", 1);
}

#[test]
fn bad_input_log_lines_are_rate_limited() {
    let mut b = Bad::new();
    let n = 200u64;
    let req = encode_request_hdr(
        &PlReqHdr {
            opcode: 0x4242,
            ..Default::default()
        },
        &[],
    );
    for _ in 0..n {
        let r = b.c.frontend_mut().request(&req, 64).unwrap();
        assert_eq!(
            PlRespHdr::read_from(&r).unwrap().status,
            Status::NoSys as u32
        );
    }
    // Wait into the next second so the limiter reports what it suppressed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.c.frontend_mut().request(&req, 64).unwrap();
    assert_eq!(b.d.bad_input("unknown-opcode"), n + 1);
    let log = b.d.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("bad input: unknown-opcode"))
        .collect();
    assert!(
        lines.len() < 80,
        "{} log lines for {} bad requests:\n{log}",
        lines.len(),
        n + 1
    );
    // Every request is accounted for: logged, or counted as suppressed on
    // a later line.
    let suppressed: u64 = lines
        .iter()
        .filter_map(|l| {
            let (before, _) = l.split_once(" similar lines suppressed")?;
            before.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    assert!(suppressed > 0, "no line reports suppressed lines:\n{log}");
    assert_eq!(lines.len() as u64 + suppressed, n + 1, "log:\n{log}");
    b.check("unknown-opcode", n + 1);
}
