//! The canary scrubber end to end (docs/abi.md §5.9.1): the real daemon
//! with `--scrub-period-ms`, the host test frontend as the guest. Canaries
//! appear in guest memory, stop for good when a lease break revokes the
//! MR, keep coming (and are counted) under a LOST lease; bad CLI values
//! are refused.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use pinlease_abi::*;
use pinlease_testkit::frontend::client::{Client, RegMrArgs};
use serde_json::{json, Value};

const P: u64 = PL_PAGE_SIZE;
const PERIOD_MS: u64 = 20;

fn scrub_daemon() -> Daemon {
    Daemon::start_with(&["--scrub-period-ms", &PERIOD_MS.to_string()])
}

/// Words of the whole-page MR over `pages` that hold their canary.
fn canaries(c: &Client, pages: &[u64], key: u64) -> usize {
    let seed = pl_scrub_seed(key);
    let mut n = 0;
    for (i, &p) in pages.iter().enumerate() {
        let b = c.frontend().read_mem(p, P as usize).unwrap();
        for (j, w) in b.chunks_exact(8).enumerate() {
            let o = i as u64 * P + j as u64 * 8;
            if u64::from_le_bytes(w.try_into().unwrap()) == seed ^ o {
                n += 1;
            }
        }
    }
    n
}

fn all_zero(c: &Client, pages: &[u64]) -> bool {
    pages.iter().all(|&p| {
        c.frontend()
            .read_mem(p, P as usize)
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    })
}

fn zero(c: &Client, pages: &[u64]) {
    for &p in pages {
        c.frontend().write_mem(p, &[0u8; P as usize]).unwrap();
    }
}

fn scrub_rounds(d: &Daemon) -> u64 {
    d.device()["counters"]["scrub"]["rounds"]
        .as_u64()
        .expect("counters.scrub.rounds")
}

/// Waits until the device-wide round counter passes `n`.
fn wait_rounds(d: &Daemon, n: u64) -> u64 {
    let t = Instant::now();
    loop {
        let r = scrub_rounds(d);
        if r >= n {
            return r;
        }
        assert!(t.elapsed() < T, "scrub rounds stuck at {r} (want {n})");
        std::thread::sleep(Duration::from_millis(PERIOD_MS / 2));
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < T, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn mr_status(d: &Daemon, key: u64) -> Value {
    find_by_handle(&d.device()["mrs"], "key", key)
        .expect("MR in status")
        .clone()
}

#[test]
fn canaries_appear_then_never_again_after_a_revoking_lease_break() {
    let mut d = scrub_daemon();
    let mut c = d.client_with_events(16);
    let ctx = c.create_context(10, "scrub").unwrap();
    let f = file(500);
    let lease = c
        .lease_take(ctx, &lease_req(f, 0, 0, PL_POLICY_REVOKE))
        .unwrap();
    let pages = c.alloc_pages(4).unwrap();
    let m = c
        .reg_mr(
            ctx,
            &RegMrArgs::pages(PL_ACCESS_READ | PL_ACCESS_WRITE, &pages)
                .on_file(f, 0)
                .with_flags(PL_REG_SCRUB),
        )
        .unwrap();
    assert_eq!(m.lease, lease);
    // An MR without the flag is never scribbled on.
    let (_plain, plain_pages) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();

    let words = (4 * P / 8) as usize;
    wait_until("canaries in the whole MR", || {
        canaries(&c, &pages, m.key) == words
    });
    assert!(all_zero(&c, &plain_pages));

    // The guest scribbles on its own memory: counted as a mismatch.
    // (A write landing between the scrubber's read and rewrite of its chunk
    // is overwritten uncounted, docs/abi.md 5.9.1: write again until seen.)
    wait_until("the mismatch counted", || {
        if mr_status(&d, m.key)["scrub"]["mismatches"].as_u64() >= Some(1) {
            return true;
        }
        let w = c.frontend().read_mem(pages[1] + 64, 8).unwrap();
        if w != [0xee; 8] {
            c.frontend().write_mem(pages[1] + 64, &[0xee; 8]).unwrap();
        }
        false
    });
    let ms = mr_status(&d, m.key);
    assert_eq!(ms["scrub"]["last_mismatch_offset"], json!(P + 64));
    assert_eq!(
        ms["scrub"]["seed"],
        json!(format!("{:#x}", pl_scrub_seed(m.key)))
    );
    assert!(ms["scrub"]["rounds"].as_u64().unwrap() >= 2);
    let dev = d.device();
    assert_eq!(dev["counters"]["scrub"]["period_ms"], json!(PERIOD_MS));
    assert!(
        dev["counters"]["scrub"]["canaries_written"]
            .as_u64()
            .unwrap()
            >= words as u64
    );
    assert!(find_by_handle(&dev["mrs"], "key", _plain).unwrap()["scrub"].is_null());
    let text = String::from_utf8(d.status_cli(false).stdout).unwrap();
    assert!(
        text.contains(&format!("scrubber every {PERIOD_MS} ms")),
        "{text}"
    );
    assert!(text.contains("SCRUB(ROUNDS/WORDS/MISMATCHES)"), "{text}");

    // Truncate breaks the lease: the MR is revoked before LEASE_BREAK
    // answers; from then on no canary reaches its pages.
    let r = c
        .lease_break(&break_req(f, 0, 0, PL_BREAK_TRUNCATE))
        .unwrap();
    assert_eq!(r.mrs_revoked, 1);
    let e = expect_event(&mut c, "MR_REVOKED");
    assert_eq!((e.kind, e.args[0]), (PL_EVENT_MR_REVOKED, m.key));
    let e = expect_event(&mut c, "LEASE_BROKEN");
    assert_eq!(e.kind, PL_EVENT_LEASE_BROKEN);
    zero(&c, &pages);
    let rounds_after = mr_status(&d, m.key)["scrub"]["rounds"].clone();
    let r0 = scrub_rounds(&d);
    wait_rounds(&d, r0 + 3);
    assert!(all_zero(&c, &pages), "a canary reappeared after the revoke");
    assert_eq!(canaries(&c, &pages, m.key), 0);
    assert_eq!(mr_status(&d, m.key)["scrub"]["rounds"], rounds_after);
    assert!(all_zero(&c, &plain_pages));

    // Disconnect stops the connection's scrubber.
    drop(c);
    d.wait_connected(false);
    let r1 = scrub_rounds(&d);
    std::thread::sleep(Duration::from_millis(5 * PERIOD_MS));
    assert_eq!(
        scrub_rounds(&d),
        r1,
        "scrubber still running after disconnect"
    );
    d.assert_healthy();
}

#[test]
fn lost_lease_mr_keeps_being_scrubbed_and_counted() {
    let mut d = scrub_daemon();
    let mut c = d.client_with_events(16);
    let ctx = c.create_context(11, "holder").unwrap();
    let f = file(501);
    let lease = c
        .lease_take(ctx, &lease_req(f, 0, 0, PL_POLICY_TIMEOUT))
        .unwrap();
    let pages = c.alloc_pages(2).unwrap();
    let m = c
        .reg_mr(
            ctx,
            &RegMrArgs::pages(PL_ACCESS_WRITE, &pages)
                .on_file(f, 0)
                .with_flags(PL_REG_SCRUB),
        )
        .unwrap();
    assert_eq!(m.lease, lease);
    c.lease_break(&break_req(f, 0, 0, PL_BREAK_TRUNCATE))
        .unwrap();
    c.lease_release(ctx, lease, PL_RELEASE_LOST).unwrap();
    assert_eq!(
        expect_event(&mut c, "LEASE_BROKEN").kind,
        PL_EVENT_LEASE_BROKEN
    );
    assert_eq!(expect_event(&mut c, "LEASE_LOST").kind, PL_EVENT_LEASE_LOST);
    let e = expect_event(&mut c, "SCRUB_LOST_ACCESS");
    assert_eq!(
        (e.kind, e.ctx, e.args),
        (PL_EVENT_SCRUB_LOST_ACCESS, ctx, [lease, m.key, 2, 0])
    );

    // The device keeps writing pages the file no longer owns, and counts.
    zero(&c, &pages);
    wait_until("canaries under the LOST lease", || {
        canaries(&c, &pages, m.key) == (2 * P / 8) as usize
    });
    let lost = |d: &Daemon| {
        find_by_handle(&d.device()["leases"], "handle", lease).unwrap()["lost_accesses"]
            .as_u64()
            .unwrap()
    };
    let n1 = lost(&d);
    assert!(n1 >= 1);
    wait_until("lost accesses to grow", || lost(&d) > n1);
    let dev = d.device();
    let l = find_by_handle(&dev["leases"], "handle", lease).unwrap();
    assert_eq!(l["state"], json!("lost"));
    assert_eq!(l["holder"], json!(format!("{ctx:#x}")));
    assert_eq!(l["file"]["ino"], json!(501));
    assert_eq!(l["lost_accesses"], l["scrub_lost_accesses"]);
    assert!(dev["counters"]["scrub"]["lost_accesses"].as_u64().unwrap() >= 2);
    assert!(dev["counters"]["lost_accesses"].as_u64().unwrap() >= 2);
    // Text view: the lease, its file, the holder and the scrub count.
    let text = String::from_utf8(d.status_cli(false).stdout).unwrap();
    let leases = &text[text.find("layout leases (").expect("lease table")..];
    let row = leases
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{lease:#x}")))
        .unwrap_or_else(|| panic!("no lease row in\n{text}"));
    assert!(row.contains("lost") && row.contains("(scrub "), "{row}");
    assert!(
        row.contains(&format!("{ctx:#x}")) && row.contains("ino 501"),
        "{row}"
    );
    // A rate-limited log line names the lease, the file and the holder.
    wait_until("the LEASE_LOST log line", || {
        d.log().contains(&format!(
            "under LOST lease {lease:#x} (file dev 0x803 ino 501 gen 7"
        ))
    });
    let lines = d.log().matches("LEASE_LOST access").count();
    assert!(lines >= 1);
    // Only once per lease as an event.
    expect_no_event(&mut c);
    d.assert_healthy();
}

#[test]
fn scrubber_is_off_by_default() {
    let mut d = Daemon::start();
    let mut c = d.client();
    let ctx = c.create_context(1, "t").unwrap();
    let pages = c.alloc_pages(1).unwrap();
    c.reg_mr(
        ctx,
        &RegMrArgs::pages(PL_ACCESS_WRITE, &pages).with_flags(PL_REG_SCRUB),
    )
    .unwrap();
    std::thread::sleep(QUIET);
    let dev = d.device();
    assert_eq!(dev["counters"]["scrub"]["period_ms"], json!(0));
    assert_eq!(dev["counters"]["scrub"]["rounds"], json!(0));
    assert!(all_zero(&c, &pages));
    let text = String::from_utf8(d.status_cli(false).stdout).unwrap();
    assert!(text.contains("scrubber off"), "{text}");
    d.assert_healthy();
}

#[test]
fn scrub_flag_without_write_access_is_einval() {
    let mut d = scrub_daemon();
    let mut c = d.client();
    let ctx = c.create_context(1, "t").unwrap();
    let pages = c.alloc_pages(1).unwrap();
    let r = c.reg_mr(
        ctx,
        &RegMrArgs::pages(PL_ACCESS_READ | PL_ACCESS_ATOMIC, &pages).with_flags(PL_REG_SCRUB),
    );
    assert_eq!(status_of(r), Status::Inval);
    assert_eq!(d.device()["mrs"], json!([]));
    d.assert_healthy();
}

#[test]
fn scrub_period_garbage_is_a_clear_cli_error() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["abc", "-5", "1.5", "", "3600001", "99999999999999999999999"] {
        let out = Command::new(env!("CARGO_BIN_EXE_pinlease"))
            .args(["serve", "--socket-path"])
            .arg(dir.path().join("vu.sock"))
            .args(["--scrub-period-ms", bad])
            .env_remove("PINLEASE_ADMIN_SOCKET")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--scrub-period-ms") && err.contains(bad),
            "{bad:?}: unclear error:\n{err}"
        );
        assert!(
            !dir.path().join("vu.sock").exists(),
            "{bad:?}: socket created"
        );
    }
}
