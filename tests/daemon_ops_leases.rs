//! Layout leases end to end against the real daemon binary: LEASE_BREAK
//! under the revoke, wait and timeout policies, and a LOST lease's
//! accesses counted through imports. Events are decoded from queue 1 and
//! state is read back through the admin socket.

mod common;

use common::mr::*;
use common::*;
use pinlease_abi::*;
use pinlease_testkit::frontend::client::RegMrArgs;
use serde_json::json;

#[test]
fn lease_break_with_revoke_policy_revokes_covered_mrs() {
    let mut d = Daemon::start();
    let mut c = d.client_with_events(16);
    let ctx = c.create_context(7, "holder").unwrap();
    let f = file(100);
    let lease = c
        .lease_take(ctx, &lease_req(f, 0, 0, PL_POLICY_REVOKE))
        .unwrap();
    let pool = c.alloc_pages(6).unwrap();
    let r1 = c
        .reg_mr(
            ctx,
            &RegMrArgs::pages(PL_ACCESS_ALL, &pool[0..2])
                .on_file(f, 4 * P)
                .with_flags(PL_REG_LONGTERM),
        )
        .unwrap();
    assert_eq!(r1.lease, lease, "registered under the covering lease");
    let other_file = c
        .reg_mr(
            ctx,
            &RegMrArgs::pages(PL_ACCESS_ALL, &pool[2..3]).on_file(file(101), 0),
        )
        .unwrap();
    assert_eq!(other_file.lease, 0);
    let plain = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pool[3..5]))
        .unwrap()
        .key;

    let dev = d.device();
    let l = find_by_handle(&dev["leases"], "handle", lease).unwrap();
    assert_eq!(l["holder"], json!(format!("{ctx:#x}")));
    assert_eq!(
        (
            l["state"].clone(),
            l["policy"].clone(),
            l["owner_pid"].clone()
        ),
        (json!("active"), json!("revoke"), json!(4242))
    );
    assert_eq!(
        (l["mrs"].clone(), l["pinned_pages"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(l["end"], json!(null), "to the end of the file");
    let m = find_by_handle(&dev["mrs"], "key", r1.key).unwrap();
    assert_eq!(m["lease"], json!(format!("{lease:#x}")));
    assert_eq!(m["file_offset"], json!(4 * P));
    assert_eq!(m["file"]["ino"], json!(100));

    // Truncate to 5 pages: overlaps the lease (and the MR).
    let r = c
        .lease_break(&break_req(f, 5 * P, 0, PL_BREAK_TRUNCATE))
        .unwrap();
    assert_eq!(
        r,
        PlLeaseBreakResp {
            leases: 1,
            leases_held: 0,
            mrs_revoked: 1,
            reserved: 0,
            pages_unpinned: 2
        }
    );
    let e1 = expect_event(&mut c, "MR_REVOKED lease-break");
    assert_eq!(
        (e1.kind, e1.ctx, e1.seq, e1.args),
        (
            PL_EVENT_MR_REVOKED,
            ctx,
            1,
            [r1.key, PL_REVOKE_LEASE_BREAK, 2, lease]
        )
    );
    let e2 = expect_event(&mut c, "LEASE_BROKEN");
    assert_eq!(
        (e2.kind, e2.ctx, e2.seq, e2.args),
        (
            PL_EVENT_LEASE_BROKEN,
            ctx,
            2,
            [lease, PL_BREAK_TRUNCATE.into(), PL_POLICY_REVOKE.into(), 1]
        )
    );
    expect_no_event(&mut c);
    assert_eq!(
        status_of(c.write(ctx, &dma(r1.key, 0, plain, 0, 8))),
        Status::Canceled
    );
    assert_eq!(status_of(c.fetch_add(ctx, r1.key, 0, 1)), Status::Canceled);
    c.write(ctx, &dma(other_file.key, 0, plain, 0, 8)).unwrap();
    let dev = d.device();
    let l = find_by_handle(&dev["leases"], "handle", lease).unwrap();
    assert_eq!(l["state"], json!("revoked"));
    let m = find_by_handle(&dev["mrs"], "key", r1.key).unwrap();
    assert_eq!(
        (m["state"].clone(), m["revoke_reason"].clone()),
        (json!("revoked"), json!("lease-break"))
    );
    assert_eq!(dev["pinned_pages"], json!(3));
    assert_eq!(dev["counters"]["revokes"], json!(1));

    // A second break finds the revoked lease and does nothing.
    let r = c
        .lease_break(&break_req(f, 0, 0, PL_BREAK_PUNCH_HOLE))
        .unwrap();
    assert_eq!((r.leases, r.leases_held, r.mrs_revoked), (1, 0, 0));
    expect_no_event(&mut c);
    assert_eq!(
        status_of(c.lease_release(ctx, lease, PL_RELEASE_LOST)),
        Status::Inval,
        "a revoked lease cannot be lost"
    );
    c.lease_release(ctx, lease, PL_RELEASE_HOLDER).unwrap();
    assert_eq!(
        status_of(c.lease_release(ctx, lease, PL_RELEASE_HOLDER)),
        Status::Stale
    );
    c.dereg_mr(ctx, r1.key).unwrap();
    assert_eq!(d.device()["leases"], json!([]));
    d.assert_healthy();
}

#[test]
fn lease_break_with_wait_and_timeout_policies() {
    let mut d = Daemon::start();
    let mut c = d.client_with_events(16);
    let ctx = c.create_context(7, "holder").unwrap();
    let other = c.create_context(8, "other").unwrap();
    let f = file(200);
    let pool = c.alloc_pages(8).unwrap();
    // An MR registered before the lease comes under it at LEASE_TAKE.
    let m = c
        .reg_mr(
            ctx,
            &RegMrArgs::pages(PL_ACCESS_ALL, &pool[0..2]).on_file(f, 0),
        )
        .unwrap();
    assert_eq!(m.lease, 0);
    let wait = c
        .lease_take(ctx, &lease_req(f, 0, 1 << 20, PL_POLICY_WAIT))
        .unwrap();
    let dev = d.device();
    assert_eq!(
        find_by_handle(&dev["mrs"], "key", m.key).unwrap()["lease"],
        json!(format!("{wait:#x}"))
    );
    assert_eq!(
        find_by_handle(&dev["leases"], "handle", wait).unwrap()["end"],
        json!(1 << 20)
    );

    let r = c
        .lease_break(&break_req(f, 4096, 4096, PL_BREAK_PUNCH_HOLE))
        .unwrap();
    assert_eq!((r.leases, r.leases_held, r.mrs_revoked), (1, 1, 0));
    let e = expect_event(&mut c, "LEASE_BROKEN wait");
    assert_eq!(
        (e.kind, e.ctx, e.args),
        (
            PL_EVENT_LEASE_BROKEN,
            ctx,
            [wait, PL_BREAK_PUNCH_HOLE.into(), PL_POLICY_WAIT.into(), 1]
        )
    );
    // MRs untouched while breaking.
    c.fetch_add(ctx, m.key, 0, 1).unwrap();
    assert_eq!(
        status_of(c.lease_take(other, &lease_req(f, 0, 4096, PL_POLICY_WAIT))),
        Status::Busy,
        "a BREAKING lease overlaps"
    );
    // Ranges that do not overlap are fine.
    let far = c
        .lease_take(other, &lease_req(f, 1 << 20, 4096, PL_POLICY_REVOKE))
        .unwrap();
    let r = c
        .lease_break(&break_req(f, 0, 4096, PL_BREAK_WRITE))
        .unwrap();
    assert_eq!(
        (r.leases, r.leases_held),
        (1, 1),
        "still breaking, no new event"
    );
    expect_no_event(&mut c);
    assert_eq!(
        find_by_handle(&d.device()["leases"], "handle", wait).unwrap()["state"],
        json!("breaking")
    );
    assert_eq!(
        status_of(c.lease_release(other, wait, PL_RELEASE_HOLDER)),
        Status::Perm
    );
    c.lease_release(ctx, wait, PL_RELEASE_HOLDER).unwrap();
    let r = c
        .lease_break(&break_req(f, 0, 4096, PL_BREAK_WRITE))
        .unwrap();
    assert_eq!((r.leases, r.leases_held), (0, 0));
    assert_eq!(
        find_by_handle(&d.device()["mrs"], "key", m.key).unwrap()["lease"],
        json!(null),
        "under no lease after release"
    );
    c.lease_release(other, far, PL_RELEASE_HOLDER).unwrap();

    // TIMEOUT: break, then the kernel gives up on the holder: LOST.
    let t = c
        .lease_take(ctx, &lease_req(f, 0, 0, PL_POLICY_TIMEOUT))
        .unwrap();
    let r = c
        .lease_break(&break_req(f, 0, 0, PL_BREAK_REFLINK))
        .unwrap();
    assert_eq!((r.leases, r.leases_held), (1, 1));
    let e = expect_event(&mut c, "LEASE_BROKEN timeout");
    assert_eq!(
        e.args,
        [t, PL_BREAK_REFLINK.into(), PL_POLICY_TIMEOUT.into(), 1]
    );
    c.lease_release(ctx, t, PL_RELEASE_LOST).unwrap();
    let e = expect_event(&mut c, "LEASE_LOST");
    assert_eq!(
        (e.kind, e.ctx, e.args),
        (PL_EVENT_LEASE_LOST, ctx, [t, 1, 2, 0])
    );
    // Every device access to an MR under a LOST lease works and is counted.
    c.fetch_add(ctx, m.key, 0, 1).unwrap();
    c.fill(ctx, &pat(m.key, 0, 64, 1, PL_PATTERN_CONST))
        .unwrap();
    c.verify(ctx, &pat(m.key, 0, 64, 1, PL_PATTERN_CONST))
        .unwrap();
    let dev = d.device();
    let l = find_by_handle(&dev["leases"], "handle", t).unwrap();
    assert_eq!(
        (l["state"].clone(), l["lost_accesses"].clone()),
        (json!("lost"), json!(3))
    );
    assert_eq!(dev["counters"]["lost_accesses"], json!(3));
    // A break finds the LOST lease and does nothing.
    let r = c.lease_break(&break_req(f, 0, 0, PL_BREAK_OTHER)).unwrap();
    assert_eq!((r.leases, r.leases_held), (1, 0));
    expect_no_event(&mut c);
    // The lost lease stays until the holder closes.
    let r = c.close_context(ctx).unwrap();
    assert_eq!((r.mrs_destroyed, r.leases_released), (1, 1));
    let e = expect_event(&mut c, "CONTEXT_TORN_DOWN");
    assert_eq!(e.args, [1, 1, 2, 0]);
    assert_eq!(d.device()["leases"], json!([]));

    // Bad lease arguments.
    assert_eq!(
        status_of(c.lease_take(other, &lease_req(f, 0, 0, 9))),
        Status::Inval
    );
    assert_eq!(
        status_of(c.lease_take(other, &lease_req(f, u64::MAX, 2, PL_POLICY_WAIT))),
        Status::Range
    );
    assert_eq!(
        status_of(c.lease_break(&break_req(f, 0, 0, 0))),
        Status::Inval
    );
    assert_eq!(
        status_of(c.lease_break(&break_req(f, 2, u64::MAX, PL_BREAK_TRUNCATE))),
        Status::Range
    );
    d.assert_healthy();
}

#[test]
fn lost_lease_counts_accesses_through_imports() {
    let mut d = Daemon::start();
    let mut c = d.client_with_events(16);
    let holder = c.create_context(1, "holder").unwrap();
    let peer = c.create_context(2, "peer").unwrap();
    let f = file(300);
    let lease = c
        .lease_take(holder, &lease_req(f, 0, 0, PL_POLICY_TIMEOUT))
        .unwrap();
    let pages = c.alloc_pages(1).unwrap();
    let m = c
        .reg_mr(
            holder,
            &RegMrArgs::pages(PL_ACCESS_ALL, &pages).on_file(f, 0),
        )
        .unwrap();
    assert_eq!(m.lease, lease);
    let ex = c.export_mr(holder, m.key).unwrap().export;
    let imp = c.import_mr(peer, ex, PL_ACCESS_ALL).unwrap().key;
    c.lease_break(&break_req(f, 0, 0, PL_BREAK_TRUNCATE))
        .unwrap();
    c.lease_release(holder, lease, PL_RELEASE_LOST).unwrap();
    let evs = [
        expect_event(&mut c, "LEASE_BROKEN"),
        expect_event(&mut c, "LEASE_LOST"),
    ];
    assert_eq!(evs[1].kind, PL_EVENT_LEASE_LOST);
    assert_eq!(evs[1].args[..3], [lease, 1, 1]);
    // The peer keeps using the pages the file no longer owns, through its
    // import: docs/abi.md §7.4 counts that too.
    c.fetch_add(peer, imp, 0, 1).unwrap();
    c.fill(peer, &pat(imp, 8, 8, 3, PL_PATTERN_CONST)).unwrap();
    let dev = d.device();
    assert_eq!(dev["counters"]["lost_accesses"], json!(2));
    assert_eq!(
        find_by_handle(&dev["leases"], "handle", lease).unwrap()["lost_accesses"],
        json!(2)
    );
    d.assert_healthy();
}
