//! Tests of REG_MR, DEREG_MR, pin accounting, exports and imports.

use crate::abi::*;
use crate::model::status::hex;
use crate::model::{AtomicOp, Device, Limits, RegMr};

use crate::model::test_support::*;

// ---- memory regions ---------------------------------------------------------------

#[test]
fn reg_mr_rejects_bad_requests_and_pins_nothing() {
    let limits = Limits {
        max_pages_per_mr: 4,
        ..Limits::default()
    };
    // Two regions: [0, 64K) and [128K, 128K + 66K): the second ends mid-page.
    let dev = device_with(limits, &[(0, 0x10000), (0x20000, 0x10800)]);
    let c = ctx(&dev);
    let ok = Layout::pages(run(0, 2));
    let bad = |r: RegMr| st(dev.reg_mr(c, r));

    assert_eq!(bad(ok.req(0)), Status::Inval, "access 0");
    assert_eq!(bad(ok.req(8)), Status::Inval, "unknown access bit");
    assert_eq!(bad(ok.req(PL_ACCESS_ALL | 0x100)), Status::Inval);
    assert_eq!(
        bad(RegMr {
            flags: 8,
            ..ok.req(PL_ACCESS_ALL)
        }),
        Status::Inval,
        "unknown flag"
    );
    assert_eq!(
        bad(Layout::new(vec![], 0, 0).req(PL_ACCESS_ALL)),
        Status::Inval,
        "no pages"
    );
    assert_eq!(
        bad(Layout::new(vec![], 0, 4096).req(PL_ACCESS_ALL)),
        Status::Inval,
        "no pages"
    );
    assert_eq!(
        bad(Layout::pages(run(0, 5)).req(PL_ACCESS_ALL)),
        Status::TooBig
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 4096, 1).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(run(0, 2), 4096, 1).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 0, 0).req(PL_ACCESS_ALL)),
        Status::Inval,
        "length 0"
    );
    // Page count must match first_page_offset + length exactly, both ways.
    assert_eq!(
        bad(Layout::new(run(0, 2), 0, 4096).req(PL_ACCESS_ALL)),
        Status::Inval,
        "spare page"
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 0, 4097).req(PL_ACCESS_ALL)),
        Status::Inval,
        "missing page"
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 100, 3997).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(run(0, 2), 100, 3996).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(run(0, 1), 1, u64::MAX).req(PL_ACCESS_ALL)),
        Status::Range
    );
    // Page addresses.
    assert_eq!(
        bad(Layout::new(vec![0x1001], 0, 10).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(vec![0, 0x1800], 0, 8192).req(PL_ACCESS_ALL)),
        Status::Inval
    );
    assert_eq!(
        bad(Layout::new(vec![0x10000], 0, 10).req(PL_ACCESS_ALL)),
        Status::Fault,
        "in the hole"
    );
    assert_eq!(
        bad(Layout::new(vec![0, 0x40000], 0, 8192).req(PL_ACCESS_ALL)),
        Status::Fault,
        "past the end"
    );
    assert_eq!(
        bad(Layout::new(vec![0x30000], 0, 10).req(PL_ACCESS_ALL)),
        Status::Fault,
        "page crossing the end of a region"
    );
    assert_eq!(
        bad(Layout::new(vec![0xffff_ffff_ffff_f000], 0, 10).req(PL_ACCESS_ALL)),
        Status::Fault
    );
    // File offset overflow.
    assert_eq!(
        bad(ok.req_file(PL_ACCESS_ALL, file(1), u64::MAX - 100)),
        Status::Range
    );

    assert_eq!(dev.pin_totals(), (0, 0));
    assert!(dev.status().mrs.is_empty());
    assert!(dev.status().contexts[0].mrs == 0);

    // Boundaries that are fine.
    reg(&dev, c, &Layout::new(run(0, 1), 100, 3996), PL_ACCESS_READ);
    reg(&dev, c, &Layout::new(run(0, 1), 4095, 1), PL_ACCESS_READ);
    reg(
        &dev,
        c,
        &Layout::new(vec![0x2f000], 0, 4096),
        PL_ACCESS_READ,
    );
    reg(&dev, c, &Layout::pages(run(0, 4)), PL_ACCESS_READ);
    dev.reg_mr(c, ok.req_file(PL_ACCESS_ALL, file(1), u64::MAX - 8192))
        .unwrap();
}

#[test]
fn reg_mr_without_a_memory_map_is_efault() {
    let dev = Device::new(Limits::default());
    let c = ctx(&dev);
    assert_eq!(
        st(dev.reg_mr(c, Layout::pages(run(0, 1)).req(PL_ACCESS_ALL))),
        Status::Fault
    );
}

#[test]
fn pin_accounting_counts_pages_and_pins() {
    let dev = device(1);
    let c = ctx(&dev);
    let a = reg(&dev, c, &Layout::pages(vec![0x5000]), PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (1, 1));
    let b = reg(&dev, c, &Layout::new(vec![0x5000], 8, 16), PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (1, 2), "two MRs on one page");
    let twice = reg(&dev, c, &Layout::pages(vec![0x5000, 0x5000]), PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (1, 4), "a page listed twice");
    let three = reg(
        &dev,
        c,
        &Layout::pages(vec![0x9000, 0x1000, 0x5000]),
        PL_ACCESS_ALL,
    );
    assert_eq!(dev.pin_totals(), (3, 7));
    let s = dev.status();
    assert_eq!((s.pinned_pages, s.pins), (3, 7));
    dev.dereg_mr(c, b).unwrap();
    assert_eq!(dev.pin_totals(), (3, 6));
    dev.dereg_mr(c, twice).unwrap();
    assert_eq!(dev.pin_totals(), (3, 4));
    dev.dereg_mr(c, three).unwrap();
    assert_eq!(dev.pin_totals(), (1, 1));
    dev.dereg_mr(c, a).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0));
}

#[test]
fn dereg_checks_ownership_and_staleness() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let l = Layout::pages(run(0, 1));
    let k = reg(&dev, a, &l, PL_ACCESS_ALL);
    assert_eq!(st(dev.dereg_mr(b, k)), Status::Perm);
    assert!(dev.mr(k).is_ok(), "untouched by the refused dereg");
    assert_eq!(dev.pin_totals(), (1, 1));
    assert_eq!(st(dev.dereg_mr(a, 0)), Status::NoEnt);
    assert_eq!(st(dev.dereg_mr(a, k + 1)), Status::NoEnt);
    dev.dereg_mr(a, k).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0));
    assert_eq!(st(dev.dereg_mr(a, k)), Status::Stale);
    assert_eq!(st(dev.dereg_mr(b, k)), Status::Stale);
    assert_eq!(dev.pin_totals(), (0, 0));
    assert!(
        dev.events.pop().is_none(),
        "dereg sends no event to its own context"
    );
}

#[test]
fn mr_table_full_is_enomem_imports_included() {
    let dev = device_limited(|l| l.max_mrs = 2);
    let c = ctx(&dev);
    let l = Layout::pages(run(0, 1));
    let k1 = reg(&dev, c, &l, PL_ACCESS_ALL);
    let _k2 = reg(&dev, c, &l, PL_ACCESS_ALL);
    assert_eq!(st(dev.reg_mr(c, l.req(PL_ACCESS_ALL))), Status::NoMem);
    let ex = dev.export_mr(c, k1).unwrap().export;
    assert_eq!(
        st(dev.import_mr(c, &import_req(ex, PL_ACCESS_READ))),
        Status::NoMem
    );
    assert_eq!(dev.pin_totals(), (1, 2), "refused REG_MR pinned nothing");
    dev.dereg_mr(c, k1).unwrap();
    reg(&dev, c, &l, PL_ACCESS_ALL);
}

// ---- exports ------------------------------------------------------------------------------

#[test]
fn export_is_unique_and_counts_references() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let e1 = dev.export_mr(a, k).unwrap();
    assert_eq!(e1.refs, 1);
    let e2 = dev.export_mr(a, k).unwrap();
    assert_eq!(
        (e2.export, e2.refs),
        (e1.export, 2),
        "same export, one more reference"
    );
    let s = dev.status();
    let ctx_a = s.contexts.iter().find(|c| c.handle == hex(a)).unwrap();
    assert_eq!(ctx_a.children.len(), 1);
    assert_eq!(ctx_a.children[0].kind, "mr-export");
    assert_eq!(ctx_a.children[0].mr, Some(hex(k)));
    assert_eq!(ctx_a.children[0].refs, Some(2));
    assert_eq!(
        st(dev.export_mr(b, k)),
        Status::Perm,
        "another context's MR"
    );
    assert_eq!(st(dev.destroy_child(b, e1.export)), Status::Perm);

    dev.destroy_child(a, e1.export).unwrap();
    let imp = dev
        .import_mr(b, &import_req(e1.export, PL_ACCESS_READ))
        .unwrap();
    assert_eq!(imp.lease, 0);
    dev.destroy_child(a, e1.export).unwrap();
    assert_eq!(
        st(dev.import_mr(b, &import_req(e1.export, PL_ACCESS_READ))),
        Status::Stale
    );
    assert_eq!(st(dev.destroy_child(a, e1.export)), Status::Stale);
    assert!(dev.status().contexts.iter().all(|c| c.children.is_empty()));
    assert!(
        dev.mr(imp.key).unwrap().is_live(),
        "imports outlive the export"
    );
    // A new export is a new handle.
    let e3 = dev.export_mr(a, k).unwrap();
    assert_ne!(e3.export, e1.export);
    assert_eq!(e3.refs, 1);
    // Exports keep the context object alive, not the MR.
    dev.close_context(a).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0));
    assert_eq!(st(dev.release_context(a)), Status::Busy);
    assert_eq!(
        st(dev.import_mr(b, &import_req(e3.export, PL_ACCESS_READ))),
        Status::Canceled
    );
    dev.destroy_child(a, e3.export).unwrap();
    dev.release_context(a).unwrap();
}

#[test]
fn import_aliases_the_exported_bytes() {
    device_and_ram!(dev, r; a, b);
    let src = Layout::new(vec![0x7000, 0x3000, 0x5000], 0x10, 3 * 4096 - 0x20);
    let k = reg(&dev, a, &src, PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let pins = dev.pin_totals();
    let imp = dev
        .import_mr(b, &import_req(e, PL_ACCESS_READ | PL_ACCESS_WRITE))
        .unwrap();
    assert_eq!(dev.pin_totals(), pins, "an import takes no pins");
    let s = mr_status(&dev, imp.key).unwrap();
    assert_eq!(s.imported_from, Some(hex(k)));
    assert_eq!(
        (s.length, s.context, s.access.as_str()),
        (src.len, hex(b), "rw-")
    );

    // WRITE through the import lands in the source's pages.
    let lb = Layout::pages(run(0x40000, 3));
    let kb = reg(&dev, b, &lb, PL_ACCESS_READ | PL_ACCESS_WRITE);
    let data = bytes(3 * 4096, 0x21);
    lb.write(r, 0, &data);
    write(&dev, b, kb, 5, imp.key, 4000, 6000).unwrap();
    assert_eq!(src.read(r, 4000, 6000), data[5..6005]);
    // The import as local key, both directions.
    src.write(r, 0, &bytes(src.len as usize, 0x99));
    write(&dev, b, imp.key, 0, kb, 0, src.len).unwrap();
    assert_eq!(lb.read(r, 0, src.len), src.all(r));
    read(&dev, b, imp.key, 100, kb, 0, 50).unwrap();
    assert_eq!(
        src.read(r, 100, 50),
        lb.read(r, 0, 50),
        "READ into the import"
    );
    // FILL through the import, VERIFY through the source.
    dev.fill(
        b,
        &pattern(imp.key, 0, src.len, 0xabc, PL_PATTERN_OFFSET_XOR),
    )
    .unwrap();
    let v = dev
        .verify(a, &pattern(k, 0, src.len, 0xabc, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(v.mismatches, 0);
    assert_eq!(src.word(r, 4096), 0xabc ^ 4096);
    // An import of the importer's own export.
    let e_self = dev.export_mr(b, kb).unwrap().export;
    let again = dev
        .import_mr(b, &import_req(e_self, PL_ACCESS_READ))
        .unwrap();
    assert_ne!(again.key, kb);
    // An import of an import.
    let e_imp = dev.export_mr(b, imp.key).unwrap().export;
    let imp2 = dev
        .import_mr(a, &import_req(e_imp, PL_ACCESS_WRITE))
        .unwrap()
        .key;
    dev.fill(a, &pattern(imp2, 8, 8, 0x5555, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(src.word(r, 8), 0x5555);
}

#[test]
fn import_checks_access_kind_and_handle() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let k = reg(
        &dev,
        a,
        &Layout::pages(vec![0x1000]),
        PL_ACCESS_READ | PL_ACCESS_WRITE,
    );
    let e = dev.export_mr(a, k).unwrap().export;
    let chan = dev.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
    for access in [0, PL_ACCESS_ATOMIC, PL_ACCESS_ALL, PL_ACCESS_READ | 8] {
        assert_eq!(
            st(dev.import_mr(b, &import_req(e, access))),
            Status::Perm,
            "access {access:#x}"
        );
    }
    assert_eq!(
        st(dev.import_mr(b, &import_req(chan, PL_ACCESS_READ))),
        Status::Inval
    );
    assert_eq!(
        st(dev.import_mr(b, &import_req(0, PL_ACCESS_READ))),
        Status::NoEnt
    );
    assert_eq!(
        st(dev.import_mr(b, &import_req(e + 1000, PL_ACCESS_READ))),
        Status::NoEnt
    );
    let mut resv = import_req(e, PL_ACCESS_READ);
    resv.reserved = 1;
    assert_eq!(st(dev.import_mr(b, &resv)), Status::Inval);
    assert_eq!(dev.mrs.len(), 1, "nothing imported");
    let ro = dev
        .import_mr(b, &import_req(e, PL_ACCESS_READ))
        .unwrap()
        .key;
    // The import's own access flags apply.
    let kb = reg(&dev, b, &Layout::pages(vec![0x2000]), PL_ACCESS_ALL);
    assert_eq!(st(write(&dev, b, kb, 0, ro, 0, 8)), Status::Perm);
    assert_eq!(
        st(dev.fill(b, &pattern(ro, 0, 8, 1, PL_PATTERN_CONST))),
        Status::Perm
    );
    write(&dev, b, ro, 0, kb, 0, 8).unwrap();
}

#[test]
fn dereg_of_the_source_revokes_its_imports() {
    device_and_ram!(dev, r; a, b);
    let src = Layout::pages(run(0x1000, 2));
    let k = reg(&dev, a, &src, PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let imp = dev.import_mr(b, &import_req(e, PL_ACCESS_ALL)).unwrap().key;
    let kb = reg(&dev, b, &Layout::pages(vec![0x9000]), PL_ACCESS_ALL);
    src.set_word(r, 0, 1);
    dev.dereg_mr(a, k).unwrap();
    assert_eq!(dev.pin_totals(), (1, 1));
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_MR_REVOKED, b, [imp, PL_REVOKE_SOURCE_GONE, 0, 0])]
    );
    let c = Status::Canceled;
    assert_eq!(st(write(&dev, b, kb, 0, imp, 0, 8)), c);
    assert_eq!(st(read(&dev, b, imp, 0, kb, 0, 8)), c);
    assert_eq!(
        st(dev.atomic(b, AtomicOp::FetchAdd, &atomic(imp, 0, 1, 0))),
        c
    );
    assert_eq!(st(dev.fill(b, &pattern(imp, 0, 8, 2, PL_PATTERN_CONST))), c);
    assert_eq!(st(dev.export_mr(b, imp)), c);
    assert_eq!(src.word(r, 0), 1);
    let s = mr_status(&dev, imp).unwrap();
    assert_eq!(
        (&*s.state, s.revoke_reason.as_deref()),
        ("revoked", Some("source-gone"))
    );
    // The export lives on (its reference is not dropped) but imports fail.
    assert_eq!(
        st(dev.import_mr(b, &import_req(e, PL_ACCESS_READ))),
        Status::Canceled
    );
    dev.dereg_mr(b, imp).unwrap();
    assert_eq!(dev.pin_totals(), (1, 1));
    dev.destroy_child(a, e).unwrap();
    assert!(dev.children.is_empty());
}

#[test]
fn close_of_the_source_context_revokes_imports_in_other_contexts() {
    let dev = device(1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(run(0x1000, 2)), PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let imp = dev
        .import_mr(b, &import_req(e, PL_ACCESS_READ))
        .unwrap()
        .key;
    // a also holds an import of b's MR: destroyed with a, b's MR untouched.
    let kb = reg(&dev, b, &Layout::pages(vec![0x8000]), PL_ACCESS_ALL);
    let eb = dev.export_mr(b, kb).unwrap().export;
    let a_imp = dev
        .import_mr(a, &import_req(eb, PL_ACCESS_READ))
        .unwrap()
        .key;
    let resp = dev.close_context(a).unwrap();
    assert_eq!((resp.mrs_destroyed, resp.pages_unpinned), (2, 2));
    assert_eq!(
        event_summary(&dev),
        vec![
            (PL_EVENT_MR_REVOKED, b, [imp, PL_REVOKE_SOURCE_GONE, 0, 0]),
            (PL_EVENT_CONTEXT_TORN_DOWN, a, [2, 0, 2, 0]),
        ]
    );
    assert_eq!(st(dev.mr(a_imp)), Status::Stale);
    assert!(dev.mr(kb).unwrap().is_live());
    assert_eq!(dev.pin_totals(), (1, 1));
    assert_eq!(st(read(&dev, b, kb, 0, imp, 0, 8)), Status::Canceled);
}

#[test]
fn close_sends_no_per_mr_event_for_its_own_imports() {
    // ABI 5.5: "No per-MR event goes to the closing context".
    let dev = device(1);
    let a = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let imp = dev
        .import_mr(a, &import_req(e, PL_ACCESS_READ))
        .unwrap()
        .key;
    assert!(imp > k, "the import is destroyed after its source");
    let resp = dev.close_context(a).unwrap();
    assert_eq!((resp.mrs_destroyed, resp.pages_unpinned), (2, 1));
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_CONTEXT_TORN_DOWN, a, [2, 0, 1, 0])]
    );
}
