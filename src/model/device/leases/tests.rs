//! Tests of LEASE_TAKE, LEASE_RELEASE and LEASE_BREAK under each policy.

use std::sync::atomic::Ordering;

use crate::abi::*;
use crate::model::lease::LeaseState;
use crate::model::status::hex;
use crate::model::AtomicOp;

use crate::model::test_support::*;

// ---- leases ------------------------------------------------------------------------------

#[test]
fn lease_take_and_release_validation() {
    let dev = device_limited(|l| l.max_leases = 2);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let f = file(1);
    assert_eq!(st(dev.lease_take(a, &take_req(f, 0, 0, 0))), Status::Inval);
    assert_eq!(st(dev.lease_take(a, &take_req(f, 0, 0, 4))), Status::Inval);
    assert_eq!(
        st(dev.lease_take(a, &take_req(f, u64::MAX, 1, PL_POLICY_WAIT))),
        Status::Range
    );
    assert_eq!(
        st(dev.lease_take(a, &take_req(f, 10, u64::MAX - 9, PL_POLICY_WAIT))),
        Status::Range
    );
    let mut resv = take_req(f, 0, 0, PL_POLICY_WAIT);
    resv.file.reserved = 1;
    assert_eq!(st(dev.lease_take(a, &resv)), Status::Inval);
    assert!(dev.leases.is_empty());

    let l = take(&dev, a, f, 0, 0, PL_POLICY_WAIT);
    let s = lease_status(&dev, l).unwrap();
    assert_eq!(
        (s.start, s.end, &*s.state, &*s.policy, s.owner_pid),
        (0, None, "active", "wait", 99)
    );
    assert_eq!(s.holder, hex(a));
    let l2 = take(&dev, b, f, 10, 10, PL_POLICY_REVOKE);
    assert_eq!(lease_status(&dev, l2).unwrap().end, Some(20));
    assert_eq!(
        st(dev.lease_take(a, &take_req(file(2), 0, 0, PL_POLICY_WAIT))),
        Status::NoMem
    );

    assert_eq!(
        st(dev.lease_release(b, &release_req(l, PL_RELEASE_HOLDER))),
        Status::Perm
    );
    assert_eq!(
        st(dev.lease_release(b, &release_req(l, PL_RELEASE_LOST))),
        Status::Perm
    );
    assert_eq!(st(dev.lease_release(a, &release_req(l, 2))), Status::Inval);
    let mut rr = release_req(l, PL_RELEASE_HOLDER);
    rr.reserved = 1;
    assert_eq!(st(dev.lease_release(a, &rr)), Status::Inval);
    assert_eq!(st(dev.lease_release(a, &release_req(0, 0))), Status::NoEnt);
    assert_eq!(
        st(dev.lease_release(a, &release_req(l2 + 7, 0))),
        Status::NoEnt
    );
    assert_eq!(lease_state(&dev, l), LeaseState::Active);
    dev.lease_release(a, &release_req(l, PL_RELEASE_HOLDER))
        .unwrap();
    assert_eq!(
        st(dev.lease_release(a, &release_req(l, PL_RELEASE_HOLDER))),
        Status::Stale
    );
    assert_eq!(st(dev.lease(l)), Status::Stale);
    assert!(lease_status(&dev, l).is_none());
    take(&dev, a, file(2), 0, 0, PL_POLICY_WAIT);
    assert_eq!(dev.leases.len(), 2);

    // Bad breaks.
    let mut bad = break_req(f, 0, 0);
    bad.reason = 0;
    assert_eq!(st(dev.lease_break(&bad)), Status::Inval);
    bad.reason = PL_BREAK_OTHER + 1;
    assert_eq!(st(dev.lease_break(&bad)), Status::Inval);
    assert_eq!(
        st(dev.lease_break(&break_req(f, 1, u64::MAX))),
        Status::Range
    );
    assert_eq!(lease_state(&dev, l2), LeaseState::Active);
}

#[test]
fn break_with_revoke_policy_revokes_exactly_the_holders_overlapping_mrs() {
    device_and_ram!(dev, r; a, b);
    let (f, g) = (file(1), file(2));
    let lease = take(&dev, a, f, 0, 0x10000, PL_POLICY_REVOKE);
    let pg = |i: u64, n: usize| Layout::pages(run(i * 0x1000, n));
    // a's MRs.
    let inside = reg_file(&dev, a, &pg(1, 2), PL_ACCESS_ALL, f, 0);
    assert_eq!(inside.lease, lease);
    let straddle = reg_file(&dev, a, &pg(3, 2), PL_ACCESS_ALL, f, 0xf000);
    assert_eq!(straddle.lease, 0, "not fully inside the lease");
    let beyond = reg_file(&dev, a, &pg(5, 1), PL_ACCESS_ALL, f, 0x10000).key;
    let other_file = reg_file(&dev, a, &pg(6, 1), PL_ACCESS_ALL, g, 0).key;
    let no_file = reg(&dev, a, &pg(7, 1), PL_ACCESS_ALL);
    // b's MR on the same file range: b holds no lease there.
    let bs = reg_file(&dev, b, &pg(8, 1), PL_ACCESS_ALL, f, 0);
    assert_eq!(bs.lease, 0, "a's lease does not cover b's MR");
    assert_eq!(dev.pin_totals(), (8, 8));

    assert_eq!(
        brk(&dev, f, 0x20000, 0x1000).leases,
        0,
        "range outside the lease"
    );
    assert_eq!(brk(&dev, g, 0, 0).leases, 0, "other file");
    assert!(dev.events.pop().is_none());

    // A break of one page inside the lease: the lease's whole range counts.
    let resp = brk(&dev, f, 0x8000, 0x1000);
    assert_eq!(
        resp,
        PlLeaseBreakResp {
            leases: 1,
            leases_held: 0,
            mrs_revoked: 2,
            reserved: 0,
            pages_unpinned: 4
        }
    );
    assert_eq!(dev.pin_totals(), (4, 4));
    let mut ev = event_summary(&dev);
    let broken = ev.pop().unwrap();
    assert_eq!(
        broken,
        (
            PL_EVENT_LEASE_BROKEN,
            a,
            [lease, PL_BREAK_TRUNCATE.into(), PL_POLICY_REVOKE.into(), 2]
        )
    );
    ev.sort();
    let mut want = vec![
        (
            PL_EVENT_MR_REVOKED,
            a,
            [inside.key, PL_REVOKE_LEASE_BREAK, 2, lease],
        ),
        (
            PL_EVENT_MR_REVOKED,
            a,
            [straddle.key, PL_REVOKE_LEASE_BREAK, 2, 0],
        ),
    ];
    want.sort();
    assert_eq!(ev, want);
    assert_eq!(lease_state(&dev, lease), LeaseState::Revoked);
    assert!(!dev.mr(inside.key).unwrap().is_live());
    assert!(!dev.mr(straddle.key).unwrap().is_live());
    // Everything else is live and moves bytes.
    r.write(0x5000, &[9; 16]).unwrap();
    for k in [beyond, other_file, no_file] {
        write(&dev, a, beyond, 0, k, 64, 16).unwrap();
        assert!(mr_status(&dev, k).unwrap().state == "live");
    }
    write(&dev, b, bs.key, 0, no_file, 0, 16).unwrap();
    let mut got = [0u8; 16];
    r.read(0x6000 + 64, &mut got).unwrap();
    assert_eq!(got, [9; 16]);

    // A second break of the revoked lease counts it and does nothing else.
    let again = brk(&dev, f, 0, 0);
    assert_eq!(
        (
            again.leases,
            again.leases_held,
            again.mrs_revoked,
            again.pages_unpinned
        ),
        (1, 0, 0, 0)
    );
    assert!(dev.events.pop().is_none());
    // A revoked lease does not block a new one.
    let l2 = take(&dev, b, f, 0, 0, PL_POLICY_REVOKE);
    assert_eq!(lease_state(&dev, l2), LeaseState::Active);
}

#[test]
fn break_with_wait_or_timeout_policy_leaves_mrs_and_blocks_new_leases() {
    for policy in [PL_POLICY_WAIT, PL_POLICY_TIMEOUT] {
        device_and_ram!(dev, r; a, b);
        let f = file(3);
        let lease = take(&dev, a, f, 0x1000, 0x4000, policy);
        let lm = Layout::pages(run(0x1000, 2));
        let k = reg_file(&dev, a, &lm, PL_ACCESS_ALL, f, 0x1000);
        assert_eq!(k.lease, lease);
        let resp = brk(&dev, f, 0, 0x2000);
        assert_eq!(
            (
                resp.leases,
                resp.leases_held,
                resp.mrs_revoked,
                resp.pages_unpinned
            ),
            (1, 1, 0, 0)
        );
        assert_eq!(lease_state(&dev, lease), LeaseState::Breaking);
        assert_eq!(lease_status(&dev, lease).unwrap().state, "breaking");
        assert_eq!(
            event_summary(&dev),
            vec![(
                PL_EVENT_LEASE_BROKEN,
                a,
                [lease, PL_BREAK_TRUNCATE.into(), policy.into(), 1]
            )]
        );
        // MRs untouched.
        assert_eq!(dev.pin_totals(), (2, 2));
        dev.fill(b, &pattern(k.key, 0, 8192, 4, PL_PATTERN_CONST))
            .unwrap();
        assert_eq!(lm.word(r, 8184), 4);
        // A second break: still held, no second event.
        let again = brk(&dev, f, 0x4000, 0);
        assert_eq!((again.leases, again.leases_held), (1, 1));
        assert!(dev.events.pop().is_none());
        // No new lease on an overlapping range, any holder; elsewhere is fine.
        assert_eq!(
            st(dev.lease_take(b, &take_req(f, 0x4fff, 1, PL_POLICY_WAIT))),
            Status::Busy
        );
        assert_eq!(
            st(dev.lease_take(a, &take_req(f, 0, 0, PL_POLICY_REVOKE))),
            Status::Busy
        );
        let other = take(&dev, b, f, 0x5000, 0x1000, PL_POLICY_WAIT);
        take(&dev, b, file(4), 0x1000, 0x4000, PL_POLICY_WAIT);
        // A new MR in the range does not come under a breaking lease.
        let k2 = reg_file(&dev, a, &lm, PL_ACCESS_ALL, f, 0x1000);
        assert_eq!(k2.lease, 0);
        // The holder finishes its part: the lease goes, the range is free.
        dev.lease_release(a, &release_req(lease, PL_RELEASE_HOLDER))
            .unwrap();
        assert_eq!(st(dev.lease(lease)), Status::Stale);
        assert!(dev.mr(k.key).unwrap().is_live());
        assert!(mr_status(&dev, k.key).unwrap().lease.is_none());
        let done = brk(&dev, f, 0x1000, 0x1000);
        assert_eq!((done.leases, done.leases_held), (0, 0));
        take(&dev, b, f, 0, 0x5000, PL_POLICY_WAIT);
        assert_eq!(lease_state(&dev, other), LeaseState::Active);
    }
}

#[test]
fn lost_lease_counts_every_later_access() {
    device_and_ram!(dev, r; a, b);
    let f = file(5);
    let lease = take(&dev, a, f, 0, 0, PL_POLICY_TIMEOUT);
    let lm = Layout::pages(vec![0x3000, 0x1000]);
    let under = reg_file(&dev, a, &lm, PL_ACCESS_ALL, f, 0x2000);
    assert_eq!(under.lease, lease);
    let lb = Layout::pages(vec![0x8000]);
    let plain = reg(&dev, b, &lb, PL_ACCESS_ALL);
    lb.write(r, 0, &bytes(4096, 1));

    // Accesses while the lease is active or breaking are not counted.
    write(&dev, b, plain, 0, under.key, 0, 64).unwrap();
    brk(&dev, f, 0, 0);
    write(&dev, b, plain, 0, under.key, 0, 64).unwrap();
    let _ = events(&dev);
    assert_eq!(
        dev.lease(lease)
            .unwrap()
            .lost_accesses
            .load(Ordering::Relaxed),
        0
    );

    dev.lease_release(a, &release_req(lease, PL_RELEASE_LOST))
        .unwrap();
    assert_eq!(lease_state(&dev, lease), LeaseState::Lost);
    let s = lease_status(&dev, lease).unwrap();
    assert_eq!(
        (&*s.state, s.mrs, s.pinned_pages, s.lost_accesses),
        ("lost", 1, 2, 0)
    );
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_LEASE_LOST, a, [lease, 1, 2, 0])]
    );
    let lost = || lease_status(&dev, lease).unwrap().lost_accesses;
    // Each access succeeds as usual, moves its bytes, and is counted.
    let data = bytes(4096, 0x66);
    lb.write(r, 0, &data);
    write(&dev, b, plain, 0, under.key, 100, 3996).unwrap();
    assert_eq!(lm.read(r, 100, 3996), data[..3996]);
    assert_eq!(lost(), 1);
    read(&dev, b, plain, 0, under.key, 0, 4096).unwrap();
    assert_eq!(lost(), 2);
    lm.set_word(r, 4096, 40);
    assert_eq!(
        dev.atomic(b, AtomicOp::FetchAdd, &atomic(under.key, 4096, 2, 0))
            .unwrap(),
        40
    );
    assert_eq!(lm.word(r, 4096), 42);
    assert_eq!(lost(), 3);
    dev.fill(b, &pattern(under.key, 0, 4096, 7, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(lm.word(r, 4088), 7);
    assert_eq!(lost(), 4);
    let v = dev
        .verify(b, &pattern(under.key, 0, 4096, 7, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(v.mismatches, 0);
    assert_eq!(lost(), 5);
    // The holder's own DMA through it, and an import of it, count too.
    let la = Layout::pages(vec![0x9000]);
    let own = reg(&dev, a, &la, PL_ACCESS_ALL);
    write(&dev, a, own, 0, under.key, 0, 8).unwrap();
    assert_eq!(lost(), 6);
    let ex = dev.export_mr(a, under.key).unwrap().export;
    let imp = dev
        .import_mr(b, &import_req(ex, PL_ACCESS_READ))
        .unwrap()
        .key;
    write(&dev, b, imp, 0, plain, 0, 8).unwrap();
    assert_eq!(lost(), 7, "an import counts under its source's lease");
    // Accesses to MRs not under the lease are not counted.
    write(&dev, a, own, 0, plain, 0, 8).unwrap();
    assert_eq!(lost(), 7);
    assert_eq!(dev.counters.lost_accesses.load(Ordering::Relaxed), 7);
    assert_eq!(dev.status().counters.lost_accesses, 7);
    // A refused access is not an access.
    assert_eq!(
        st(write(&dev, b, plain, 0, under.key, 8000, 1000)),
        Status::Range
    );
    assert_eq!(lost(), 7);

    // The LOST lease stays until the holder releases it (or closes).
    let again = brk(&dev, f, 0, 0);
    assert_eq!(
        (again.leases, again.leases_held, again.mrs_revoked),
        (1, 0, 0)
    );
    dev.lease_release(a, &release_req(lease, PL_RELEASE_HOLDER))
        .unwrap();
    assert!(dev.leases.is_empty());
    write(&dev, b, plain, 0, under.key, 0, 8).unwrap();
    assert_eq!(dev.counters.lost_accesses.load(Ordering::Relaxed), 7);
}

#[test]
fn reg_mr_reports_only_the_same_holders_active_covering_lease() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let (f, g) = (file(1), file(2));
    let l = take(&dev, a, f, 0, MIB as u64, PL_POLICY_REVOKE);
    let one = Layout::pages(vec![0x1000]);
    let two = Layout::pages(run(0x2000, 2));
    assert_eq!(reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 4096).lease, l);
    assert_eq!(
        reg_file(&dev, a, &two, PL_ACCESS_ALL, f, MIB as u64 - 8192).lease,
        l,
        "exactly to the end"
    );
    assert_eq!(
        reg_file(&dev, a, &two, PL_ACCESS_ALL, f, MIB as u64 - 4096).lease,
        0,
        "past the end"
    );
    assert_eq!(
        reg_file(&dev, a, &one, PL_ACCESS_ALL, g, 4096).lease,
        0,
        "other file"
    );
    let other_gen = PlFileId { generation: 8, ..f };
    assert_eq!(
        reg_file(&dev, a, &one, PL_ACCESS_ALL, other_gen, 0).lease,
        0,
        "recycled inode"
    );
    assert_eq!(
        dev.reg_mr(a, one.req(PL_ACCESS_ALL)).unwrap().lease,
        0,
        "no file"
    );
    assert_eq!(
        reg_file(&dev, b, &one, PL_ACCESS_ALL, f, 4096).lease,
        0,
        "another holder"
    );
    // Of two covering leases, one is reported.
    let l2 = take(&dev, a, f, 0, 0, PL_POLICY_WAIT);
    let r = reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 0).lease;
    assert!(r == l || r == l2);
    assert_eq!(
        reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 2 * MIB as u64).lease,
        l2
    );
    // The MR is under the reported lease (status shows it).
    let k = reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 2 * MIB as u64);
    assert_eq!(mr_status(&dev, k.key).unwrap().lease, Some(hex(l2)));
    // A revoked lease is not reported.
    brk(&dev, f, 0, 4096);
    let _ = events(&dev);
    assert_eq!(lease_state(&dev, l), LeaseState::Revoked);
    assert_eq!(lease_state(&dev, l2), LeaseState::Breaking);
    assert_eq!(reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 4096).lease, 0);
}

#[test]
fn lease_taken_after_reg_mr_adopts_the_holders_mrs() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let f = file(1);
    let one = Layout::pages(vec![0x1000]);
    let k1 = reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 0x4000).key;
    let k_out = reg_file(&dev, a, &one, PL_ACCESS_ALL, f, 0x20000).key;
    let kb = reg_file(&dev, b, &one, PL_ACCESS_ALL, f, 0x4000).key;
    let first = take(&dev, a, f, 0x4000, 0x1000, PL_POLICY_WAIT);
    assert_eq!(mr_status(&dev, k1).unwrap().lease, Some(hex(first)));
    // A second, wider lease does not steal an MR already under a lease.
    let l = take(&dev, a, f, 0, 0x10000, PL_POLICY_REVOKE);
    let k2 = reg_file(
        &dev,
        a,
        &Layout::pages(vec![0x2000]),
        PL_ACCESS_ALL,
        f,
        0x8000,
    )
    .key;
    assert_eq!(mr_status(&dev, k1).unwrap().lease, Some(hex(first)));
    assert_eq!(mr_status(&dev, k2).unwrap().lease, Some(hex(l)));
    assert_eq!(mr_status(&dev, k_out).unwrap().lease, None);
    assert_eq!(
        mr_status(&dev, kb).unwrap().lease,
        None,
        "another holder's MR"
    );
    let s = lease_status(&dev, l).unwrap();
    assert_eq!((s.mrs, s.pinned_pages), (1, 1));
    // Releasing the first lease leaves k1 under no lease; a new one adopts it.
    dev.lease_release(a, &release_req(first, PL_RELEASE_HOLDER))
        .unwrap();
    assert_eq!(mr_status(&dev, k1).unwrap().lease, None);
    let l3 = take(&dev, a, f, 0x4000, 0x1000, PL_POLICY_REVOKE);
    assert_eq!(mr_status(&dev, k1).unwrap().lease, Some(hex(l3)));
    // Breaking l revokes every overlapping MR of a; the MR_REVOKED events
    // name the lease each MR is under.
    let resp = brk(&dev, f, 0x8000, 1);
    assert_eq!((resp.leases, resp.mrs_revoked), (1, 2));
    let mut ev = event_summary(&dev);
    ev.sort();
    let mut want = vec![
        (PL_EVENT_MR_REVOKED, a, [k1, PL_REVOKE_LEASE_BREAK, 1, l3]),
        (PL_EVENT_MR_REVOKED, a, [k2, PL_REVOKE_LEASE_BREAK, 1, l]),
        (
            PL_EVENT_LEASE_BROKEN,
            a,
            [l, PL_BREAK_TRUNCATE.into(), PL_POLICY_REVOKE.into(), 2],
        ),
    ];
    want.sort();
    assert_eq!(ev, want);
    assert!(dev.mr(kb).unwrap().is_live() && dev.mr(k_out).unwrap().is_live());
    assert_eq!(
        lease_state(&dev, l3),
        LeaseState::Active,
        "l3 does not overlap the break"
    );
}

#[test]
fn close_releases_every_lease_in_every_state() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let one = Layout::pages(vec![0x1000]);
    let active = take(&dev, a, file(1), 0, 0, PL_POLICY_WAIT);
    let breaking = take(&dev, a, file(2), 0, 0, PL_POLICY_WAIT);
    let revoked = take(&dev, a, file(3), 0, 0, PL_POLICY_REVOKE);
    let lost = take(&dev, a, file(4), 0, 0, PL_POLICY_TIMEOUT);
    reg_file(&dev, a, &one, PL_ACCESS_ALL, file(3), 0);
    reg_file(&dev, a, &one, PL_ACCESS_ALL, file(4), 0);
    let keep = take(&dev, b, file(1), 0, 0, PL_POLICY_WAIT);
    brk(&dev, file(2), 0, 0);
    brk(&dev, file(3), 0, 0);
    dev.lease_release(a, &release_req(lost, PL_RELEASE_LOST))
        .unwrap();
    assert_eq!(dev.leases.len(), 5);
    let _ = events(&dev);
    let resp = dev.close_context(a).unwrap();
    assert_eq!(
        (
            resp.mrs_destroyed,
            resp.leases_released,
            resp.pages_unpinned
        ),
        (2, 4, 1),
        "the revoked MR's page was unpinned earlier"
    );
    for l in [active, breaking, revoked, lost] {
        assert_eq!(st(dev.lease(l)), Status::Stale);
    }
    assert_eq!(dev.leases.len(), 1);
    assert_eq!(lease_status(&dev, keep).unwrap().state, "active");
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_CONTEXT_TORN_DOWN, a, [2, 4, 1, 0])]
    );
    dev.close_context(b).unwrap();
    assert!(dev.leases.is_empty());
    assert!(dev.status().leases.is_empty());
    // Breaks find nothing any more.
    assert_eq!(brk(&dev, file(1), 0, 0).leases, 0);
}
