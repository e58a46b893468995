//! Hostile request fields against the real daemon (docs/design.md §7,
//! docs/abi.md §2.4, §3, §4.3): page counts at and beyond the limits,
//! REG_MR's field checks, unknown opcodes, non-zero reserved fields and
//! flags, and forged, stale and closed handles. Each case checks the
//! answer, the counter `pinlease status --json` shows, a log line, and
//! that the next request works. Every test ends by checking that the
//! daemon is alive and never panicked.

mod common;

use common::bad_input::*;
use common::mr::dma;
use common::*;
use pinlease_abi::*;
use pinlease_testkit::frontend::client::{encode_request, RegMrArgs};
use pinlease_testkit::frontend::{Desc, UsedElem};
use serde_json::json;

/// REG_MR with `npages` entries, the page list given by descriptors over
/// one shared 4 MiB buffer `list` (which repeats one page address). Returns the used element.
fn reg_mr_huge(b: &mut Bad, ctx: u64, npages: u32, list: u64) -> UsedElem {
    let r = PlRegMrReq {
        access: PL_ACCESS_READ,
        npages,
        length: u64::from(npages) * PL_PAGE_SIZE,
        ..Default::default()
    };
    let head = encode_request(Opcode::RegMr as u16, ctx, 77, r.as_bytes());
    b.stage(&head);
    let mut descs = vec![Desc::readable(b.req, head.len() as u32)];
    let mut left = u64::from(npages) * 8;
    while left > 0 {
        let n = left.min(4 * MIB);
        descs.push(Desc::readable(list, n as u32));
        left -= n;
    }
    descs.push(Desc::writable(b.resp, 64));
    b.chain(&descs)
}

#[test]
fn page_counts_at_and_beyond_the_limit() {
    let mut b = Bad::new();
    let ctx = b.c.create_context(1, "huge").unwrap();
    let page = b.c.alloc_pages(1).unwrap()[0];
    let list = b.c.frontend_mut().alloc(4 * MIB, PL_PAGE_SIZE).unwrap();
    let entries: Vec<u8> = std::iter::repeat_n(page.to_le_bytes(), (4 * MIB / 8) as usize)
        .flatten()
        .collect();
    b.c.frontend().write_mem(list, &entries).unwrap();

    // Exactly max_request_bytes: 2^20 entries naming one page is a valid
    // 4 GiB MR (a page may appear more than once).
    let max = b.c.query().unwrap().max_pages_per_mr;
    let u = reg_mr_huge(&mut b, ctx, max, list);
    assert_eq!(u.len, 32, "REG_MR response");
    let h = b.resp_hdr();
    assert_eq!((h.status, h.tag), (0, 77));
    let dev = b.d.device();
    assert_eq!(dev["mrs"][0]["pages"], json!(max));
    assert_eq!(dev["mrs"][0]["length"], json!(u64::from(max) * 4096));
    assert_eq!(
        (dev["pinned_pages"].clone(), dev["pins"].clone()),
        (json!(1), json!(max))
    );

    // npages = max + 1 with its whole list: the readable part is 8 bytes
    // over max_request_bytes, so there is no response.
    let u = reg_mr_huge(&mut b, ctx, max + 1, list);
    assert_eq!(u.len, 0);
    b.device_error(DE_OVERSIZED);

    // npages = u32::MAX (or max + 1) with a one-entry list: refused
    // without reading (or allocating) a list that long.
    for npages in [u32::MAX, max + 1] {
        let r = PlRegMrReq {
            access: PL_ACCESS_READ,
            npages,
            length: 4096,
            ..Default::default()
        };
        let mut body = r.as_bytes().to_vec();
        body.extend_from_slice(&page.to_le_bytes());
        let (h, _) = b.c.raw(Opcode::RegMr as u16, ctx, &body, 64).unwrap();
        assert!(
            h.status == Status::Inval as u32 || h.status == Status::TooBig as u32,
            "npages {npages}: status {}",
            h.status
        );
        assert_eq!(h.len, 0);
    }
    let dev = b.d.device();
    assert_eq!(dev["mrs"].as_array().unwrap().len(), 1);
    // Deregistering the 2^20-pin MR drops every pin.
    let key = u64::from_str_radix(
        dev["mrs"][0]["key"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    b.c.dereg_mr(ctx, key).unwrap();
    let dev = b.d.device();
    assert_eq!(
        (dev["pinned_pages"].clone(), dev["pins"].clone()),
        (json!(0), json!(0))
    );
    b.check("oversized-request", 1);
    assert!(b.d.bad_input("short-request") >= 1);
}

#[test]
fn reg_mr_field_checks() {
    let mut b = Bad::new();
    let c = &mut b.c;
    let ctx = c.create_context(1, "x").unwrap();
    let pages = c.alloc_pages(2).unwrap();
    let ok = RegMrArgs::pages(PL_ACCESS_ALL, &pages);
    let cases: Vec<(&str, RegMrArgs, Status)> = vec![
        (
            "npages 0",
            RegMrArgs {
                pages: &[],
                length: 1,
                ..ok
            },
            Status::Inval,
        ),
        (
            "too few pages",
            RegMrArgs {
                length: 3 * 4096,
                ..ok
            },
            Status::Inval,
        ),
        (
            "spare page",
            RegMrArgs { length: 4096, ..ok },
            Status::Inval,
        ),
        (
            "length 0",
            RegMrArgs {
                length: 0,
                pages: &pages[..1],
                ..ok
            },
            Status::Inval,
        ),
        (
            "first_page_offset 4096",
            RegMrArgs {
                first_page_offset: 4096,
                length: 1,
                pages: &pages[..1],
                ..ok
            },
            Status::Inval,
        ),
        ("access 0", RegMrArgs { access: 0, ..ok }, Status::Inval),
        (
            "access bit 3",
            RegMrArgs {
                access: 8 | 1,
                ..ok
            },
            Status::Inval,
        ),
        ("flag bit 3", RegMrArgs { flags: 8, ..ok }, Status::Inval),
        (
            "PL_REG_SCRUB without PL_ACCESS_WRITE",
            RegMrArgs {
                access: PL_ACCESS_READ,
                flags: PL_REG_SCRUB,
                ..ok
            },
            Status::Inval,
        ),
        (
            "length overflows",
            RegMrArgs {
                first_page_offset: 1,
                length: u64::MAX,
                ..ok
            },
            Status::Range,
        ),
        (
            "file offset overflows",
            RegMrArgs {
                file: Some((file(1), u64::MAX - 4096)),
                ..ok
            },
            Status::Range,
        ),
    ];
    for (what, args, want) in &cases {
        assert_eq!(status_of(c.reg_mr(ctx, args)), *want, "{what}");
    }
    // Misaligned page address; a page outside guest memory (16 MiB); a page
    // straddling nothing but beyond the end; an address that overflows.
    for (what, bad, want) in [
        ("misaligned", pages[1] + 8, Status::Inval),
        ("outside guest memory", 16 * MIB, Status::Fault),
        ("far outside", 0xffff_ffff_ffff_f000, Status::Fault),
    ] {
        let list = [pages[0], bad];
        assert_eq!(
            status_of(c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &list))),
            want,
            "{what}"
        );
    }
    // File fields without PL_REG_HAS_FILE; a non-zero file reserved field.
    let mut r = PlRegMrReq {
        access: PL_ACCESS_ALL,
        npages: 1,
        length: 4096,
        file: file(3),
        ..Default::default()
    };
    let mut body = r.as_bytes().to_vec();
    body.extend_from_slice(&pages[0].to_le_bytes());
    let (h, _) = c.raw(Opcode::RegMr as u16, ctx, &body, 64).unwrap();
    assert_eq!(h.status, Status::Inval as u32, "file without HAS_FILE");
    r.flags = PL_REG_HAS_FILE;
    r.file.reserved = 1;
    let mut body = r.as_bytes().to_vec();
    body.extend_from_slice(&pages[0].to_le_bytes());
    let (h, _) = c.raw(Opcode::RegMr as u16, ctx, &body, 64).unwrap();
    assert_eq!(h.status, Status::Inval as u32, "file reserved");

    let dev = b.d.device();
    assert_eq!(dev["mrs"], json!([]), "nothing registered");
    assert_eq!(dev["pinned_pages"], json!(0));
    let reg = &dev["counters"]["requests"]["REG_MR"];
    assert_eq!(
        (
            reg["EINVAL"].clone(),
            reg["ERANGE"].clone(),
            reg["EFAULT"].clone()
        ),
        (json!(12), json!(2), json!(2))
    );
    let log = b.d.log();
    assert!(
        log.contains("REG_MR ctx") && log.contains("-> EFAULT"),
        "a log line names the EFAULT refusal:\n{log}"
    );
    // The last page of guest memory is fine.
    let c = &mut b.c;
    let last = 16 * MIB - 4096;
    c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &[last]))
        .unwrap();
    b.check("bad-field", 12);
}

#[test]
fn unknown_opcodes_are_enosys() {
    let mut b = Bad::new();
    for op in [Opcode::ALL.len() as u16, 0x7fff, 0xffff] {
        let (h, body) = b.c.raw(op, 0, &[], 64).unwrap();
        assert_eq!(
            (h.status, h.len, h.tag, body.len()),
            (Status::NoSys as u32, 0, b.c.last_tag(), 0),
            "opcode {op}"
        );
    }
    assert_eq!(
        b.d.device()["counters"]["requests"]["UNKNOWN"]["ENOSYS"],
        json!(3)
    );
    b.check("unknown-opcode", 3);
}

#[test]
fn nonzero_reserved_fields_and_flags_are_einval() {
    let mut b = Bad::new();
    let c = &mut b.c;
    let ctx = c.create_context(1, "x").unwrap();
    let (key, kpages) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    let ex = c.export_mr(ctx, key).unwrap().export;
    let lease = c
        .lease_take(ctx, &lease_req(file(1), 0, 4096, PL_POLICY_WAIT))
        .unwrap();
    let hdr = |opcode: Opcode, ctx: u64, flags: u16, reserved: u32| PlReqHdr {
        opcode: opcode as u16,
        flags,
        reserved,
        ctx,
        tag: 0,
    };
    let mut f = file(1);
    f.reserved = 1;
    let cases: Vec<(&str, PlReqHdr, Vec<u8>)> = vec![
        ("hdr.flags", hdr(Opcode::Nop, 0, 1, 0), vec![]),
        ("hdr.flags high bit", hdr(Opcode::Nop, 0, 0x8000, 0), vec![]),
        ("hdr.reserved", hdr(Opcode::QueryDevice, 0, 0, 1), vec![]),
        (
            "ctx on QUERY_DEVICE",
            hdr(Opcode::QueryDevice, ctx, 0, 0),
            vec![],
        ),
        (
            "ctx on CREATE_CONTEXT",
            hdr(Opcode::CreateContext, ctx, 0, 0),
            PlCreateContextReq::default().as_bytes().to_vec(),
        ),
        (
            "CREATE_CONTEXT reserved",
            hdr(Opcode::CreateContext, 0, 0, 0),
            PlCreateContextReq {
                reserved: 1,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            "CREATE_CHILD reserved",
            hdr(Opcode::CreateChild, ctx, 0, 0),
            PlCreateChildReq {
                kind: PL_CHILD_EVENT_CHANNEL,
                reserved: 1,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            "FILL reserved",
            hdr(Opcode::Fill, ctx, 0, 0),
            PlPatternReq {
                key,
                length: 8,
                reserved: 1,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            "LEASE_RELEASE reserved",
            hdr(Opcode::LeaseRelease, ctx, 0, 0),
            PlLeaseReleaseReq {
                lease,
                reason: 0,
                reserved: 1,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            "IMPORT_MR reserved",
            hdr(Opcode::ImportMr, ctx, 0, 0),
            PlImportMrReq {
                export: ex,
                access: PL_ACCESS_READ,
                reserved: 1,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            "LEASE_TAKE file.reserved",
            hdr(Opcode::LeaseTake, ctx, 0, 0),
            lease_req(f, 0, 0, PL_POLICY_WAIT).as_bytes().to_vec(),
        ),
        (
            "LEASE_BREAK reserved",
            hdr(Opcode::LeaseBreak, 0, 0, 0),
            PlLeaseBreakReq {
                reserved: 1,
                ..break_req(file(1), 0, 0, PL_BREAK_TRUNCATE)
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            "LEASE_BREAK file.reserved",
            hdr(Opcode::LeaseBreak, 0, 0, 0),
            break_req(f, 0, 0, PL_BREAK_TRUNCATE).as_bytes().to_vec(),
        ),
        (
            "ctx on LEASE_BREAK",
            hdr(Opcode::LeaseBreak, ctx, 0, 0),
            break_req(file(1), 0, 0, PL_BREAK_TRUNCATE)
                .as_bytes()
                .to_vec(),
        ),
    ];
    for (what, h, body) in &cases {
        let (r, rest) = c.raw_hdr(*h, body, 64).unwrap();
        assert_eq!(
            (r.status, r.len, r.tag, rest.len()),
            (Status::Inval as u32, 0, c.last_tag(), 0),
            "{what}"
        );
    }
    // Nothing happened: no child, no new lease, no break, no import.
    let dev = b.d.device();
    assert_eq!(dev["contexts"].as_array().unwrap().len(), 1);
    assert_eq!(dev["contexts"][0]["children"].as_array().unwrap().len(), 1);
    assert_eq!(dev["leases"].as_array().unwrap().len(), 1);
    assert_eq!(dev["leases"][0]["state"], json!("active"));
    assert_eq!(dev["mrs"].as_array().unwrap().len(), 1);
    assert_eq!(
        b.c.frontend().read_mem(kpages[0], 8).unwrap(),
        [0u8; 8],
        "FILL with a bad reserved field wrote nothing"
    );
    b.check("bad-field", cases.len() as u64);
}

#[test]
fn forged_handles_are_ebadf_or_enoent() {
    let mut b = Bad::new();
    let c = &mut b.c;
    let ctx = c.create_context(1, "x").unwrap();
    let (key, _) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    // Never issued: 0, a slot never used, a generation never given out.
    let forged_ctx = [
        0,
        0x1_0000_0005,
        (7 << 32) | (ctx & 0xffff_ffff),
        0xffff_ffff_ffff_ffff,
    ];
    for f in forged_ctx {
        assert_eq!(status_of(c.close_context(f)), Status::BadF, "ctx {f:#x}");
        assert_eq!(status_of(c.release_context(f)), Status::BadF);
        assert_eq!(
            status_of(c.create_child(f, PL_CHILD_EVENT_CHANNEL)),
            Status::BadF
        );
        assert_eq!(
            status_of(c.reg_mr(f, &RegMrArgs::pages(PL_ACCESS_ALL, &[0x10_0000]))),
            Status::BadF
        );
        assert_eq!(status_of(c.fetch_add(f, key, 0, 1)), Status::BadF);
        assert_eq!(
            status_of(c.lease_take(f, &lease_req(file(1), 0, 0, PL_POLICY_WAIT))),
            Status::BadF
        );
    }
    let forged = [0, 0x1_0000_0063, (9 << 32) | (key & 0xffff_ffff)];
    for f in forged {
        assert_eq!(status_of(c.dereg_mr(ctx, f)), Status::NoEnt, "key {f:#x}");
        assert_eq!(status_of(c.export_mr(ctx, f)), Status::NoEnt);
        assert_eq!(status_of(c.fetch_add(ctx, f, 0, 1)), Status::NoEnt);
        assert_eq!(
            status_of(c.verify(
                ctx,
                &PlPatternReq {
                    key: f,
                    ..Default::default()
                }
            )),
            Status::NoEnt
        );
        assert_eq!(
            status_of(c.write(ctx, &dma(key, 0, f, 0, 8))),
            Status::NoEnt
        );
        assert_eq!(
            status_of(c.lease_release(ctx, f, PL_RELEASE_HOLDER)),
            Status::NoEnt,
            "lease {f:#x}"
        );
        assert_eq!(status_of(c.destroy_child(ctx, f)), Status::NoEnt, "child");
        assert_eq!(
            status_of(c.import_mr(ctx, f, PL_ACCESS_READ)),
            Status::NoEnt,
            "export"
        );
    }
    let dev = b.d.device();
    assert_eq!(
        dev["counters"]["requests"]["CLOSE_CONTEXT"]["EBADF"],
        json!(4)
    );
    assert_eq!(dev["counters"]["requests"]["DEREG_MR"]["ENOENT"], json!(3));
    assert_eq!(dev["contexts"].as_array().unwrap().len(), 1);
    assert_eq!(dev["mrs"].as_array().unwrap().len(), 1);
    b.c.fetch_add(ctx, key, 0, 1).unwrap();
    b.d.assert_healthy();
}

#[test]
fn stale_handles_are_estale() {
    let mut b = Bad::new();
    let c = &mut b.c;
    let ctx = c.create_context(1, "x").unwrap();
    let (key, _) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    let (live, _) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    let ex = c.export_mr(ctx, key).unwrap().export;
    let ch = c.create_child(ctx, PL_CHILD_EVENT_CHANNEL).unwrap();
    let lease = c
        .lease_take(ctx, &lease_req(file(1), 0, 0, PL_POLICY_REVOKE))
        .unwrap();
    c.dereg_mr(ctx, key).unwrap();
    c.destroy_child(ctx, ex).unwrap();
    c.destroy_child(ctx, ch).unwrap();
    c.lease_release(ctx, lease, PL_RELEASE_HOLDER).unwrap();

    assert_eq!(status_of(c.dereg_mr(ctx, key)), Status::Stale);
    assert_eq!(status_of(c.export_mr(ctx, key)), Status::Stale);
    assert_eq!(status_of(c.fetch_add(ctx, key, 0, 1)), Status::Stale);
    assert_eq!(status_of(c.compare_swap(ctx, key, 0, 0, 1)), Status::Stale);
    assert_eq!(
        status_of(c.read(ctx, &dma(live, 0, key, 0, 8))),
        Status::Stale
    );
    assert_eq!(status_of(c.destroy_child(ctx, ex)), Status::Stale);
    assert_eq!(status_of(c.destroy_child(ctx, ch)), Status::Stale);
    assert_eq!(
        status_of(c.import_mr(ctx, ex, PL_ACCESS_READ)),
        Status::Stale
    );
    assert_eq!(
        status_of(c.lease_release(ctx, lease, PL_RELEASE_HOLDER)),
        Status::Stale
    );
    // Slots are reused with a new generation: the old handles stay stale.
    let (key2, _) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    assert_eq!(key2 & 0xffff_ffff, key & 0xffff_ffff, "slot reused");
    assert_ne!(key2, key);
    assert_eq!(status_of(c.dereg_mr(ctx, key)), Status::Stale);
    c.fetch_add(ctx, key2, 0, 1).unwrap();

    c.release_context(ctx).unwrap();
    assert_eq!(status_of(c.close_context(ctx)), Status::Stale);
    assert_eq!(status_of(c.release_context(ctx)), Status::Stale);
    assert_eq!(
        status_of(c.create_child(ctx, PL_CHILD_EVENT_CHANNEL)),
        Status::Stale
    );
    let ctx2 = c.create_context(2, "y").unwrap();
    assert_eq!(ctx2 & 0xffff_ffff, ctx & 0xffff_ffff);
    assert_eq!(status_of(c.close_context(ctx)), Status::Stale);
    c.nop().unwrap();
    let dev = b.d.device();
    assert_eq!(dev["contexts"][0]["handle"], json!(format!("{ctx2:#x}")));
    assert!(dev["counters"]["requests"]["DEREG_MR"]["ESTALE"].as_u64() == Some(2));
    b.d.assert_healthy();
}

#[test]
fn requests_on_a_closed_context_are_eshutdown() {
    let mut b = Bad::new();
    let c = &mut b.c;
    let ctx = c.create_context(1, "x").unwrap();
    let other = c.create_context(2, "y").unwrap();
    let (key, pages) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    let (okey, _) = c.alloc_mr(other, 1, PL_ACCESS_ALL).unwrap();
    let ex = c.export_mr(other, okey).unwrap().export;
    let ch = c.create_child(ctx, PL_CHILD_EVENT_CHANNEL).unwrap();
    let lease = c
        .lease_take(ctx, &lease_req(file(1), 0, 0, PL_POLICY_WAIT))
        .unwrap();
    c.close_context(ctx).unwrap();
    let e = expect_event(c, "CONTEXT_TORN_DOWN");
    assert_eq!(e.args, [1, 1, 1, 0]);

    let sd = Status::Shutdown;
    let req = dma(key, 0, okey, 0, 8);
    let pat = PlPatternReq {
        key: okey,
        length: 8,
        ..Default::default()
    };
    assert_eq!(status_of(c.close_context(ctx)), sd);
    assert_eq!(status_of(c.create_child(ctx, PL_CHILD_EVENT_CHANNEL)), sd);
    assert_eq!(
        status_of(c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages))),
        sd
    );
    assert_eq!(status_of(c.dereg_mr(ctx, key)), sd);
    assert_eq!(status_of(c.write(ctx, &req)), sd);
    assert_eq!(status_of(c.read(ctx, &req)), sd);
    assert_eq!(status_of(c.compare_swap(ctx, okey, 0, 0, 1)), sd);
    assert_eq!(status_of(c.fetch_add(ctx, okey, 0, 1)), sd);
    assert_eq!(status_of(c.fill(ctx, &pat)), sd);
    assert_eq!(status_of(c.verify(ctx, &pat)), sd);
    assert_eq!(
        status_of(c.lease_take(ctx, &lease_req(file(1), 0, 0, PL_POLICY_WAIT))),
        sd
    );
    assert_eq!(
        status_of(c.lease_release(ctx, lease, PL_RELEASE_HOLDER)),
        sd
    );
    assert_eq!(status_of(c.export_mr(ctx, key)), sd);
    assert_eq!(status_of(c.import_mr(ctx, ex, PL_ACCESS_READ)), sd);
    // Nothing was touched on the other context's MR by the refused atomics.
    assert_eq!(c.fetch_add(other, okey, 0, 0).unwrap(), 0);
    // DESTROY_CHILD and RELEASE_CONTEXT still work.
    assert_eq!(status_of(c.release_context(ctx)), Status::Busy);
    c.destroy_child(ctx, ch).unwrap();
    c.release_context(ctx).unwrap();
    let dev = b.d.device();
    assert_eq!(dev["contexts"].as_array().unwrap().len(), 1);
    b.d.assert_healthy();
}
