//! Interrupt suppression: the daemon signals a queue's call eventfd unless
//! the driver set `VRING_AVAIL_F_NO_INTERRUPT` in `avail.flags`, as
//! pinlease.ko does while it polls the used ring for an answer
//! (`req_poll_us`). A driver that asks for no interrupt still gets its
//! answer in the used ring; one that clears the flag gets interrupts again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pinlease_abi::*;
use pinlease_testkit::frontend::client::encode_request;
use pinlease_testkit::frontend::{Desc, TestFrontend, VRING_AVAIL_F_NO_INTERRUPT};

const REQUEST_QUEUE: usize = PL_QUEUE_REQUEST as usize;

/// Submits a NOP and spins on the used ring (no eventfd wait) until it is
/// answered, as a polling driver does.
fn nop_polling(fe: &mut TestFrontend, tag: u64) {
    let req = encode_request(Opcode::Nop as u16, 0, tag, &[]);
    let resp_len = std::mem::size_of::<PlRespHdr>() as u32;
    let req_gpa = fe.alloc(req.len() as u64, 8).unwrap();
    let resp_gpa = fe.alloc(u64::from(resp_len), 8).unwrap();
    fe.write_mem(req_gpa, &req).unwrap();
    let head = fe
        .submit_chain(
            REQUEST_QUEUE,
            &[
                Desc::readable(req_gpa, req.len() as u32),
                Desc::writable(resp_gpa, resp_len),
            ],
        )
        .unwrap();
    fe.kick(REQUEST_QUEUE).unwrap();
    let start = Instant::now();
    loop {
        if let Some(e) = fe.poll_used(REQUEST_QUEUE).unwrap() {
            assert_eq!(e.id, head, "used element of another chain");
            assert_eq!(e.len, resp_len, "NOP answer length");
            return;
        }
        assert!(start.elapsed() < T, "NOP (tag {tag}) not answered in {T:?}");
        std::thread::yield_now();
    }
}

/// Whether the call eventfd of the request queue fires within `within`.
fn call_within(fe: &TestFrontend, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        if fe.take_call(REQUEST_QUEUE).unwrap() {
            return true;
        }
        if start.elapsed() >= within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn no_interrupt_while_the_driver_asks_for_none_and_one_again_after() {
    let mut d = Daemon::start();
    let mut fe = d.frontend();

    nop_polling(&mut fe, 1);
    assert!(
        call_within(&fe, T),
        "flags 0: the answer came without an interrupt"
    );

    fe.set_avail_flags(REQUEST_QUEUE, VRING_AVAIL_F_NO_INTERRUPT)
        .unwrap();
    for tag in 2..10 {
        nop_polling(&mut fe, tag);
    }
    // The daemon signals right after writing the used ring; a quarter of a
    // second is far longer than it takes when it (wrongly) does.
    assert!(
        !call_within(&fe, Duration::from_millis(250)),
        "VRING_AVAIL_F_NO_INTERRUPT set: the daemon still signalled"
    );

    fe.set_avail_flags(REQUEST_QUEUE, 0).unwrap();
    nop_polling(&mut fe, 10);
    assert!(
        call_within(&fe, T),
        "flags 0 again: the answer came without an interrupt"
    );
    drop(fe);
    d.assert_healthy();
}
