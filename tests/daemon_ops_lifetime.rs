//! How long things live, end to end against the real daemon binary:
//! exported and imported MRs (and imports of imports) and their sources,
//! CLOSE_CONTEXT's teardown, MRs revoked when the guest memory map
//! changes, and events waiting for buffers. Events are decoded from queue
//! 1 and state is read back through the admin socket.

mod common;

use common::mr::*;
use common::*;
use pinlease_abi::*;
use pinlease_testkit::frontend::client::{Client, RegMrArgs};
use serde_json::json;

#[test]
fn export_import_alias_the_same_bytes() {
    let mut d = Daemon::start();
    let mut c = d.client_with_events(16);
    let a = c.create_context(1, "exporter").unwrap();
    let b = c.create_context(2, "importer").unwrap();
    let (src, src_pages) = c.alloc_mr(a, 3, PL_ACCESS_READ | PL_ACCESS_WRITE).unwrap();
    let (bl, bl_pages) = c.alloc_mr(b, 3, PL_ACCESS_ALL).unwrap();

    let e1 = c.export_mr(a, src).unwrap();
    assert_eq!(e1.refs, 1);
    let e2 = c.export_mr(a, src).unwrap();
    assert_eq!((e2.export, e2.refs), (e1.export, 2), "exports are unique");
    assert_eq!(status_of(c.export_mr(b, src)), Status::Perm);

    assert_eq!(
        status_of(c.import_mr(b, e1.export, PL_ACCESS_ALL)),
        Status::Perm,
        "ATOMIC is not in the source's access"
    );
    assert_eq!(status_of(c.import_mr(b, e1.export, 0)), Status::Perm);
    let imp = c
        .import_mr(b, e1.export, PL_ACCESS_READ | PL_ACCESS_WRITE)
        .unwrap();
    assert_eq!(imp.lease, 0);
    assert_ne!(imp.key, src);

    // B writes through its import: the bytes land in A's pages.
    let data = pattern(2 * P as usize, 9);
    write_mr(c.frontend(), &bl_pages, 0, 0, &data);
    c.write(b, &dma(bl, 0, imp.key, 100, 2 * P)).unwrap();
    assert_eq!(
        read_mr(c.frontend(), &src_pages, 0, 100, 2 * P as usize),
        data
    );
    // And reads through it what A's pages hold.
    c.frontend()
        .write_mem(src_pages[2] + 8, b"from-A!!")
        .unwrap();
    c.read(b, &dma(bl, 0, imp.key, 2 * P + 8, 8)).unwrap();
    assert_eq!(c.frontend().read_mem(bl_pages[0], 8).unwrap(), b"from-A!!");

    let dev = d.device();
    let m = find_by_handle(&dev["mrs"], "key", imp.key).unwrap();
    assert_eq!(m["imported_from"], json!(format!("{src:#x}")));
    assert_eq!(m["context"], json!(format!("{b:#x}")));
    let ca = find_by_handle(&dev["contexts"], "handle", a).unwrap();
    assert_eq!(ca["children"][0]["kind"], json!("mr-export"));
    assert_eq!(ca["children"][0]["refs"], json!(2));
    // Imports hold no pins: 3 + 3 pages.
    assert_eq!(dev["pinned_pages"], json!(6));

    // Dropping one export reference keeps it; imports are unaffected by it.
    c.destroy_child(a, e1.export).unwrap();
    let e3 = c.export_mr(a, src).unwrap();
    assert_eq!((e3.export, e3.refs), (e1.export, 2));
    assert_eq!(status_of(c.destroy_child(b, e1.export)), Status::Perm);

    // Deregistering the source revokes the import, to its own context.
    c.dereg_mr(a, src).unwrap();
    let e = expect_event(&mut c, "MR_REVOKED source-gone");
    assert_eq!(
        (e.kind, e.ctx, e.args),
        (
            PL_EVENT_MR_REVOKED,
            b,
            [imp.key, PL_REVOKE_SOURCE_GONE, 0, 0]
        )
    );
    expect_no_event(&mut c); // nothing for the deregistered MR itself
    assert_eq!(
        status_of(c.write(b, &dma(bl, 0, imp.key, 0, 8))),
        Status::Canceled
    );
    assert_eq!(
        status_of(c.import_mr(b, e1.export, PL_ACCESS_READ)),
        Status::Canceled
    );
    assert_eq!(status_of(c.export_mr(a, src)), Status::Stale);
    // The import's key stays valid until DEREG_MR.
    c.dereg_mr(b, imp.key).unwrap();
    assert_eq!(status_of(c.dereg_mr(b, imp.key)), Status::Stale);
    c.destroy_child(a, e1.export).unwrap();
    c.destroy_child(a, e1.export).unwrap();
    assert_eq!(status_of(c.destroy_child(a, e1.export)), Status::Stale);
    assert_eq!(
        status_of(c.import_mr(b, e1.export, PL_ACCESS_READ)),
        Status::Stale
    );
    // An event channel is not an export.
    let ch = c.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
    assert_eq!(status_of(c.import_mr(b, ch, PL_ACCESS_READ)), Status::Inval);
    assert_eq!(
        status_of(c.create_child(a, PL_CHILD_MR_EXPORT)),
        Status::Inval
    );
    let dev = d.device();
    assert_eq!(dev["pinned_pages"], json!(3));
    assert_eq!(dev["mrs"].as_array().unwrap().len(), 1);
    d.assert_healthy();
}

#[test]
fn imports_of_imports_alias_and_die_with_the_root() {
    let mut d = Daemon::start();
    let mut c = d.client_with_events(16);
    let a = c.create_context(1, "a").unwrap();
    let b = c.create_context(2, "b").unwrap();
    let z = c.create_context(3, "z").unwrap();
    let (root, root_pages) = c.alloc_mr(a, 2, PL_ACCESS_ALL).unwrap();
    let e1 = c.export_mr(a, root).unwrap().export;
    let imp1 = c.import_mr(b, e1, PL_ACCESS_ALL).unwrap().key;
    // An imported MR can be exported again, and imported with less access.
    let e2 = c.export_mr(b, imp1).unwrap().export;
    let imp2 = c
        .import_mr(z, e2, PL_ACCESS_WRITE | PL_ACCESS_ATOMIC)
        .unwrap()
        .key;
    assert_eq!(
        status_of(c.import_mr(z, e2, PL_ACCESS_READ | PL_ACCESS_WRITE | 8)),
        Status::Perm
    );
    let (zl, zl_pages) = c.alloc_mr(z, 1, PL_ACCESS_READ).unwrap();
    c.frontend().write_mem(zl_pages[0], b"two hops").unwrap();
    c.write(z, &dma(zl, 0, imp2, P + 24, 8)).unwrap();
    assert_eq!(
        c.frontend().read_mem(root_pages[1] + 24, 8).unwrap(),
        b"two hops"
    );
    assert_eq!(c.fetch_add(z, imp2, P + 32, 2).unwrap(), 0);
    assert_eq!(word_at(c.frontend(), root_pages[1] + 32), 2);
    // imp2 lacks READ: it cannot be a WRITE source.
    assert_eq!(status_of(c.write(z, &dma(imp2, 0, zl, 0, 8))), Status::Perm);
    // Only the root holds pins.
    assert_eq!(d.device()["pinned_pages"], json!(3));

    c.dereg_mr(a, root).unwrap();
    let mut evs = [
        expect_event(&mut c, "MR_REVOKED imp"),
        expect_event(&mut c, "MR_REVOKED imp"),
    ];
    expect_no_event(&mut c);
    evs.sort_by_key(|e| e.ctx);
    assert_eq!(
        evs.iter()
            .map(|e| (e.kind, e.ctx, e.args))
            .collect::<Vec<_>>(),
        vec![
            (PL_EVENT_MR_REVOKED, b, [imp1, PL_REVOKE_SOURCE_GONE, 0, 0]),
            (PL_EVENT_MR_REVOKED, z, [imp2, PL_REVOKE_SOURCE_GONE, 0, 0]),
        ]
    );
    assert_eq!(
        status_of(c.write(z, &dma(zl, 0, imp2, 0, 8))),
        Status::Canceled
    );
    assert_eq!(status_of(c.export_mr(b, imp1)), Status::Canceled);
    d.assert_healthy();
}

#[test]
fn close_context_tears_down_mrs_leases_and_imports() {
    let mut d = Daemon::start();
    let mut c = d.client_with_events(16);
    let a = c.create_context(1, "a").unwrap();
    let b = c.create_context(2, "b").unwrap();
    let (m1, _) = c.alloc_mr(a, 3, PL_ACCESS_ALL).unwrap();
    let (_m2, _) = c.alloc_mr(a, 2, PL_ACCESS_ALL).unwrap();
    let (bm, _) = c.alloc_mr(b, 1, PL_ACCESS_ALL).unwrap();
    let lease = c
        .lease_take(a, &lease_req(file(1), 0, 0, PL_POLICY_WAIT))
        .unwrap();
    let ex = c.export_mr(a, m1).unwrap().export;
    let imp = c.import_mr(b, ex, PL_ACCESS_READ).unwrap().key;
    let ch = c.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();

    let r = c.close_context(a).unwrap();
    assert_eq!(
        r,
        PlCloseContextResp {
            mrs_destroyed: 2,
            leases_released: 1,
            pages_unpinned: 5
        }
    );
    let e1 = expect_event(&mut c, "MR_REVOKED of b's import");
    assert_eq!(
        (e1.kind, e1.ctx, e1.args),
        (PL_EVENT_MR_REVOKED, b, [imp, PL_REVOKE_SOURCE_GONE, 0, 0])
    );
    let e2 = expect_event(&mut c, "CONTEXT_TORN_DOWN");
    assert_eq!(
        (e2.kind, e2.ctx, e2.seq, e2.args),
        (PL_EVENT_CONTEXT_TORN_DOWN, a, e1.seq + 1, [2, 1, 5, 0])
    );
    expect_no_event(&mut c);
    let dev = d.device();
    assert_eq!(dev["leases"], json!([]));
    assert_eq!(dev["pinned_pages"], json!(1));
    assert!(find_by_handle(&dev["mrs"], "key", m1).is_none());
    assert_eq!(
        find_by_handle(&dev["mrs"], "key", imp).unwrap()["revoke_reason"],
        json!("source-gone")
    );
    assert_eq!(status_of(c.dereg_mr(a, m1)), Status::Shutdown);
    assert_eq!(
        status_of(c.lease_release(a, lease, PL_RELEASE_HOLDER)),
        Status::Shutdown
    );
    // b is untouched.
    c.write(b, &dma(bm, 0, bm, 8, 8)).unwrap();
    // Children keep the closed context; releasing takes two steps.
    assert_eq!(status_of(c.release_context(a)), Status::Busy);
    c.destroy_child(a, ch).unwrap();
    c.destroy_child(a, ex).unwrap();
    c.release_context(a).unwrap();
    expect_no_event(&mut c);
    // RELEASE of an open context closes it first, with its event.
    c.release_context(b).unwrap();
    let e3 = expect_event(&mut c, "CONTEXT_TORN_DOWN b");
    assert_eq!(
        (e3.kind, e3.ctx, e3.args),
        (PL_EVENT_CONTEXT_TORN_DOWN, b, [2, 0, 1, 0]),
        "imports count as destroyed MRs but hold no pins"
    );
    let dev = d.device();
    assert_eq!(dev["contexts"], json!([]));
    assert_eq!(dev["mrs"], json!([]));
    assert_eq!(
        (dev["pinned_pages"].clone(), dev["pins"].clone()),
        (json!(0), json!(0))
    );
    d.assert_healthy();
}

/// Guest-physical base of the hot-plugged region in the memory-map tests.
const HOT: u64 = 0x4000_0000;

fn hot_setup(c: &mut Client) -> (u64, u64, Vec<u64>, u64, u64) {
    c.post_event_buffers(16).unwrap();
    c.frontend_mut().add_mem_region(HOT, 1 << 20).unwrap();
    let ctx = c.create_context(1, "memmap").unwrap();
    let other = c.create_context(2, "importer").unwrap();
    let hot_pages = vec![HOT + 5 * P, HOT, HOT + 200 * P];
    let hot = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &hot_pages))
        .unwrap()
        .key;
    let (cold, _) = c.alloc_mr(ctx, 2, PL_ACCESS_ALL).unwrap();
    let ex = c.export_mr(ctx, hot).unwrap().export;
    let imp = c.import_mr(other, ex, PL_ACCESS_READ).unwrap().key;
    // Works before the change, and really lands in the new region.
    c.fill(ctx, &pat(hot, 0, 3 * P, 0x77, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(word_at(c.frontend(), HOT + 200 * P + 8), 0x77 ^ (2 * P + 8));
    c.write(ctx, &dma(hot, P, cold, 0, 2 * P)).unwrap();
    (ctx, hot, hot_pages, cold, imp)
}

fn check_hot_revoked(d: &Daemon, c: &mut Client, ctx: u64, hot: u64, cold: u64, imp: u64) {
    let mut evs = [
        expect_event(c, "MR_REVOKED 1"),
        expect_event(c, "MR_REVOKED 2"),
    ];
    expect_no_event(c);
    evs.sort_by_key(|e| e.args[1]);
    assert_eq!(
        (evs[0].kind, evs[0].ctx, evs[0].args),
        (PL_EVENT_MR_REVOKED, ctx, [hot, PL_REVOKE_MEMORY_MAP, 3, 0])
    );
    assert_eq!(
        (evs[1].kind, evs[1].args),
        (PL_EVENT_MR_REVOKED, [imp, PL_REVOKE_SOURCE_GONE, 0, 0])
    );
    assert_eq!(
        status_of(c.write(ctx, &dma(hot, 0, cold, 0, 8))),
        Status::Canceled
    );
    assert_eq!(
        status_of(c.verify(ctx, &pat(hot, 0, 8, 0, PL_PATTERN_CONST))),
        Status::Canceled
    );
    // The MR elsewhere keeps working.
    c.write(ctx, &dma(cold, 0, cold, P, 64)).unwrap();
    c.fill(ctx, &pat(cold, 0, 2 * P, 5, PL_PATTERN_CONST))
        .unwrap();
    let dev = d.device();
    let m = find_by_handle(&dev["mrs"], "key", hot).unwrap();
    assert_eq!(
        (m["state"].clone(), m["revoke_reason"].clone()),
        (json!("revoked"), json!("memory-map"))
    );
    assert_eq!(dev["pinned_pages"], json!(2));
    assert_eq!(
        dev["memory_regions"],
        json!([{"gpa": "0x0", "size": 16 << 20}])
    );
    // The revoked key stays valid for DEREG_MR.
    c.dereg_mr(ctx, hot).unwrap();
    // A page of the removed region is outside guest memory now.
    assert_eq!(
        status_of(c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &[HOT]))),
        Status::Fault
    );
}

#[test]
fn rem_mem_reg_revokes_mrs_over_the_removed_region() {
    let mut d = Daemon::start();
    let mut c = d.client();
    let (ctx, hot, _, cold, imp) = hot_setup(&mut c);
    let dev = d.device();
    assert_eq!(dev["memory_regions"].as_array().unwrap().len(), 2);
    assert_eq!(dev["pinned_pages"], json!(5));
    c.frontend_mut().remove_mem_region(HOT).unwrap();
    check_hot_revoked(&d, &mut c, ctx, hot, cold, imp);
    d.assert_healthy();
}

#[test]
fn set_mem_table_subset_revokes_mrs_outside_it() {
    let mut d = Daemon::start();
    let mut c = d.client();
    let (ctx, hot, hot_pages, cold, imp) = hot_setup(&mut c);
    let updates = d.device()["counters"]["memory_map_updates"]
        .as_u64()
        .unwrap();
    c.frontend_mut().set_mem_table_subset(&[0]).unwrap();
    check_hot_revoked(&d, &mut c, ctx, hot, cold, imp);
    assert_eq!(
        d.device()["counters"]["memory_map_updates"],
        json!(updates + 1)
    );
    // The region comes back: new MRs work there; revoked ones stay revoked.
    c.frontend_mut().set_mem_table_again().unwrap();
    let again = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &hot_pages))
        .unwrap()
        .key;
    c.write(ctx, &dma(cold, 0, again, 0, 2 * P)).unwrap();
    assert_eq!(word_at(c.frontend(), HOT + 5 * P), 5);
    assert_eq!(
        status_of(c.read(ctx, &dma(cold, 0, imp, 0, 8))),
        Status::Canceled,
        "the import stays revoked"
    );
    d.assert_healthy();
}

#[test]
fn events_wait_for_buffers_and_report_drops() {
    let mut d = Daemon::start_with(&["--event-backlog", "3"]);
    let mut c = d.client();
    // No event buffer posted yet: events wait in the backlog.
    let ctxs: Vec<u64> = (0..5).map(|i| c.create_context(i, "ev").unwrap()).collect();
    for &x in &ctxs[..3] {
        c.close_context(x).unwrap();
    }
    let ev = &d.device()["counters"]["events"];
    assert_eq!(
        (
            ev["queued"].clone(),
            ev["backlog"].clone(),
            ev["delivered"].clone()
        ),
        (json!(3), json!(3), json!(0))
    );
    // Backlog full: the 4th is dropped and counted.
    c.close_context(ctxs[3]).unwrap();
    let ev = &d.device()["counters"]["events"];
    assert_eq!(
        (ev["dropped"].clone(), ev["backlog"].clone()),
        (json!(1), json!(3))
    );

    c.post_event_buffers(8).unwrap();
    for (i, &x) in ctxs[..3].iter().enumerate() {
        let e = expect_event(&mut c, "queued CONTEXT_TORN_DOWN");
        assert_eq!(
            (e.kind, e.ctx, e.seq, e.flags, e.dropped),
            (PL_EVENT_CONTEXT_TORN_DOWN, x, i as u64 + 1, 0, 0)
        );
    }
    expect_no_event(&mut c);
    // The next event carries the drop: flag and count; dropped events took
    // no sequence number.
    c.close_context(ctxs[4]).unwrap();
    let e = expect_event(&mut c, "event after a drop");
    assert_eq!(
        (e.kind, e.ctx, e.seq, e.flags, e.dropped),
        (
            PL_EVENT_CONTEXT_TORN_DOWN,
            ctxs[4],
            4,
            PL_EVENT_F_DROPPED,
            1
        )
    );
    let ev = &d.device()["counters"]["events"];
    assert_eq!(
        (
            ev["queued"].clone(),
            ev["delivered"].clone(),
            ev["backlog"].clone()
        ),
        (json!(4), json!(4), json!(0))
    );
    d.assert_healthy();
}
