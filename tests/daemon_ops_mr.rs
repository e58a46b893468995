//! Contexts, MRs and the data path end to end against the real daemon
//! binary, over its real vhost-user socket: QUERY_DEVICE, NOP, contexts,
//! WRITE/READ across scattered MRs, atomics, FILL/VERIFY, and the table
//! limits. Bytes are checked in guest memory and state is read back
//! through the admin socket.

mod common;

use common::mr::*;
use common::*;
use pinlease_abi::*;
use pinlease_testkit::frontend::client::RegMrArgs;
use serde_json::json;

#[test]
fn query_nop_and_context_lifecycle() {
    let mut d = Daemon::start();
    let mut c = d.client();
    c.nop().unwrap();
    let q = c.query().unwrap();
    assert_eq!(
        q,
        PlQueryDeviceResp {
            abi_version: u32::from(PL_ABI_VERSION),
            page_size: 4096,
            features: PL_FEATURES_ALL,
            max_contexts: PL_MAX_CONTEXTS,
            max_mrs: PL_MAX_MRS,
            max_pages_per_mr: PL_MAX_PAGES_PER_MR,
            max_leases: PL_MAX_LEASES,
            max_children_per_context: PL_MAX_CHILDREN_PER_CONTEXT,
            max_request_bytes: PL_MAX_REQUEST_BYTES,
        }
    );
    // Config space: magic and ABI version.
    let cfg = c.frontend_mut().get_config(0, 8).unwrap();
    assert_eq!(&cfg[..4], &PL_MAGIC.to_le_bytes());
    assert_eq!(&cfg[4..6], &PL_ABI_VERSION.to_le_bytes());

    c.post_event_buffers(8).unwrap();
    let a = c
        .create_context(1234, "fio-worker-with-a-long-name")
        .unwrap();
    let b = c.create_context(99, "b").unwrap();
    assert_ne!(a, 0);
    assert_ne!(a, b);
    let dev = d.device();
    let ca = find_by_handle(&dev["contexts"], "handle", a).expect("context a in status");
    assert_eq!(ca["pid"], json!(1234));
    assert_eq!(ca["comm"], json!("fio-worker-with-"), "comm is 16 bytes");
    assert_eq!(ca["state"], json!("open"));

    // An event channel keeps the context object alive: RELEASE closes it
    // (CONTEXT_TORN_DOWN) but answers EBUSY.
    let ch = c.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
    assert_eq!(status_of(c.release_context(a)), Status::Busy);
    let e = expect_event(&mut c, "CONTEXT_TORN_DOWN");
    assert_eq!(
        (e.kind, e.ctx, e.seq, e.flags, e.args),
        (PL_EVENT_CONTEXT_TORN_DOWN, a, 1, 0, [0, 0, 0, 0])
    );
    let dev = d.device();
    let ca = find_by_handle(&dev["contexts"], "handle", a).unwrap();
    assert_eq!(ca["state"], json!("closed"));
    assert_eq!(ca["children"][0]["kind"], json!("event-channel"));
    assert_eq!(ca["children"][0]["handle"], json!(format!("{ch:#x}")));
    // Closed: ESHUTDOWN for everything but DESTROY_CHILD and RELEASE.
    assert_eq!(status_of(c.close_context(a)), Status::Shutdown);
    assert_eq!(status_of(c.release_context(a)), Status::Busy);
    c.destroy_child(a, ch).unwrap();
    c.release_context(a).unwrap();
    expect_no_event(&mut c); // released twice, torn down once
    assert_eq!(status_of(c.release_context(a)), Status::Stale);
    assert_eq!(status_of(c.close_context(a)), Status::Stale);
    assert_eq!(status_of(c.destroy_child(b, ch)), Status::Stale);

    // CLOSE then RELEASE of a context without children.
    let r = c.close_context(b).unwrap();
    assert_eq!(r, PlCloseContextResp::default());
    let e = expect_event(&mut c, "CONTEXT_TORN_DOWN b");
    assert_eq!((e.kind, e.ctx, e.seq), (PL_EVENT_CONTEXT_TORN_DOWN, b, 2));
    c.release_context(b).unwrap();
    let dev = d.device();
    assert_eq!(dev["contexts"], json!([]));
    assert_eq!(
        dev["counters"]["requests"]["CREATE_CONTEXT"]["OK"],
        json!(2)
    );
    assert_eq!(
        dev["counters"]["requests"]["RELEASE_CONTEXT"]["EBUSY"],
        json!(2)
    );
    d.assert_healthy();
}

#[test]
fn write_and_read_across_scattered_mrs() {
    let mut d = Daemon::start();
    let mut c = d.client();
    let ctx1 = c.create_context(1, "one").unwrap();
    let ctx2 = c.create_context(2, "two").unwrap();
    let pool = c.alloc_pages(16).unwrap();

    // A: 4 scattered pages, starting 100 bytes in, ending 50 bytes early.
    let a_pages = [pool[5], pool[1], pool[9], pool[3]];
    let a_len = 4 * P - 150;
    let a = c
        .reg_mr(
            ctx1,
            &RegMrArgs {
                access: PL_ACCESS_READ,
                flags: PL_REG_LONGTERM,
                first_page_offset: 100,
                length: a_len,
                file: None,
                pages: &a_pages,
            },
        )
        .unwrap();
    assert_eq!(a.lease, 0);
    // B: 5 pages in reverse-ish order, owned by another context (remote
    // keys may name any context's MR).
    let b_pages = [pool[11], pool[0], pool[7], pool[2], pool[8]];
    let b = c
        .reg_mr(ctx2, &RegMrArgs::pages(PL_ACCESS_ALL, &b_pages))
        .unwrap()
        .key;
    // L: local target of READ, write-only.
    let l_pages = [pool[14], pool[12], pool[13]];
    let l = c
        .reg_mr(ctx1, &RegMrArgs::pages(PL_ACCESS_WRITE, &l_pages))
        .unwrap()
        .key;

    let data = pattern(a_len as usize, 3);
    write_mr(c.frontend(), &a_pages, 100, 0, &data);

    // WRITE A[1000..13000) -> B[3000..15000): crosses pages on both sides.
    c.write(ctx1, &dma(a.key, 1000, b, 3000, 12000)).unwrap();
    let fe = c.frontend();
    assert_eq!(read_mr(fe, &b_pages, 0, 3000, 12000), data[1000..13000]);
    assert!(read_mr(fe, &b_pages, 0, 0, 3000).iter().all(|&x| x == 0));
    assert!(read_mr(fe, &b_pages, 0, 15000, 5 * P as usize - 15000)
        .iter()
        .all(|&x| x == 0));
    for spare in [4, 6, 10, 15] {
        assert!(
            fe.read_mem(pool[spare], P as usize)
                .unwrap()
                .iter()
                .all(|&x| x == 0),
            "page {spare} is in no MR and must be untouched"
        );
    }

    // READ B[3000..15000) -> L[10..12010).
    c.read(ctx1, &dma(l, 10, b, 3000, 12000)).unwrap();
    assert_eq!(
        read_mr(c.frontend(), &l_pages, 0, 10, 12000),
        data[1000..13000]
    );

    // The last byte of A, in its last page.
    c.write(ctx1, &dma(a.key, a_len - 1, b, 0, 1)).unwrap();
    assert_eq!(
        c.frontend().read_mem(b_pages[0], 1).unwrap(),
        [data[a_len as usize - 1]]
    );

    // A page listed twice: two MR offsets alias one guest page.
    let dup = c
        .reg_mr(ctx1, &RegMrArgs::pages(PL_ACCESS_ALL, &[pool[4], pool[4]]))
        .unwrap()
        .key;
    c.write(ctx1, &dma(a.key, 0, dup, 16, 64)).unwrap();
    c.read(ctx1, &dma(l, 0, dup, P + 16, 64)).unwrap();
    assert_eq!(read_mr(c.frontend(), &l_pages, 0, 0, 64), data[..64]);

    // length 0 is a no-op that still checks keys.
    c.write(ctx1, &dma(a.key, 0, b, 0, 0)).unwrap();
    assert_eq!(
        status_of(c.write(ctx1, &dma(a.key, 0, 0xdead_0000_0001, 0, 0))),
        Status::NoEnt
    );
    // Access, ownership and range checks.
    assert_eq!(
        status_of(c.write(ctx1, &dma(l, 0, b, 0, 8))),
        Status::Perm,
        "local L is not readable"
    );
    assert_eq!(
        status_of(c.write(ctx1, &dma(a.key, 0, a.key, 8, 8))),
        Status::Perm,
        "remote A is not writable"
    );
    assert_eq!(
        status_of(c.write(ctx1, &dma(b, 0, a.key, 0, 8))),
        Status::Perm,
        "local key of another context"
    );
    assert_eq!(
        status_of(c.write(ctx1, &dma(a.key, a_len - 7, b, 0, 8))),
        Status::Range
    );
    assert_eq!(
        status_of(c.write(ctx1, &dma(a.key, u64::MAX, b, 0, 2))),
        Status::Range
    );
    assert_eq!(
        status_of(c.read(ctx1, &dma(l, 0, b, 5 * P - 4, 8))),
        Status::Range
    );

    let dev = d.device();
    assert_eq!(dev["counters"]["bytes_written"], json!(24000 + 1 + 128));
    assert_eq!(dev["counters"]["bytes_read"], json!(24000 + 1 + 128));
    let mb = find_by_handle(&dev["mrs"], "key", b).unwrap();
    assert_eq!(mb["bytes_written"], json!(12001));
    assert_eq!(mb["bytes_read"], json!(12000));
    assert_eq!(mb["context"], json!(format!("{ctx2:#x}")));
    let ma = find_by_handle(&dev["mrs"], "key", a.key).unwrap();
    assert_eq!(
        (
            ma["pages"].clone(),
            ma["length"].clone(),
            ma["access"].clone()
        ),
        (json!(4), json!(a_len), json!("r--"))
    );
    assert_eq!(ma["longterm"], json!(true));
    // 4 + 5 + 3 distinct pages plus pool[4] once, with 2 pins on it.
    assert_eq!(dev["pinned_pages"], json!(13));
    assert_eq!(dev["pins"], json!(14));
    assert_eq!(dev["counters"]["requests"]["WRITE"]["EPERM"], json!(3));
    d.assert_healthy();
}

#[test]
fn atomics_on_guest_words() {
    let mut d = Daemon::start();
    let mut c = d.client();
    let ctx = c.create_context(1, "atomics").unwrap();
    let other = c.create_context(2, "other").unwrap();
    let pool = c.alloc_pages(4).unwrap();
    let pages = [pool[2], pool[0]];
    let key = c
        .reg_mr(other, &RegMrArgs::pages(PL_ACCESS_ALL, &pages))
        .unwrap()
        .key;
    let word = pages[1] + 8; // MR offset 4096 + 8
    c.frontend().write_mem(word, &5u64.to_le_bytes()).unwrap();

    // Another context's MR is fine for atomics (remote-key semantics).
    assert_eq!(c.compare_swap(ctx, key, P + 8, 4, 9).unwrap(), 5);
    assert_eq!(word_at(c.frontend(), word), 5, "failed compare: unchanged");
    assert_eq!(c.compare_swap(ctx, key, P + 8, 5, 9).unwrap(), 5);
    assert_eq!(word_at(c.frontend(), word), 9);
    assert_eq!(c.fetch_add(ctx, key, P + 8, u64::MAX).unwrap(), 9);
    assert_eq!(word_at(c.frontend(), word), 8, "wrapping add");
    assert_eq!(c.fetch_add(ctx, key, 2 * P - 8, 0x0102).unwrap(), 0);
    assert_eq!(
        c.frontend().read_mem(pages[1] + P - 8, 8).unwrap(),
        [2, 1, 0, 0, 0, 0, 0, 0],
        "little-endian in guest memory"
    );
    assert_eq!(word_at(c.frontend(), pages[0]), 0, "page 0 untouched");

    assert_eq!(
        status_of(c.fetch_add(ctx, key, 4, 1)),
        Status::Inval,
        "misaligned"
    );
    assert_eq!(status_of(c.fetch_add(ctx, key, 2 * P, 1)), Status::Range);
    assert_eq!(
        status_of(c.compare_swap(ctx, key, u64::MAX - 7, 0, 1)),
        Status::Range
    );
    let rw = c
        .reg_mr(
            ctx,
            &RegMrArgs::pages(PL_ACCESS_READ | PL_ACCESS_WRITE, &[pool[3]]),
        )
        .unwrap()
        .key;
    assert_eq!(status_of(c.fetch_add(ctx, rw, 0, 1)), Status::Perm);
    // An MR starting 4 bytes into its page: offset 0 is a misaligned word.
    let odd = c
        .reg_mr(
            ctx,
            &RegMrArgs {
                access: PL_ACCESS_ATOMIC,
                flags: 0,
                first_page_offset: 4,
                length: 64,
                file: None,
                pages: &[pool[1]],
            },
        )
        .unwrap()
        .key;
    assert_eq!(status_of(c.fetch_add(ctx, odd, 0, 1)), Status::Inval);
    assert_eq!(status_of(c.fetch_add(ctx, odd, 8, 1)), Status::Inval);
    // Starting 8 bytes in: MR offset 0 is the page's second word.
    let even = c
        .reg_mr(
            ctx,
            &RegMrArgs {
                access: PL_ACCESS_ATOMIC,
                flags: 0,
                first_page_offset: 8,
                length: 64,
                file: None,
                pages: &[pool[1]],
            },
        )
        .unwrap()
        .key;
    assert_eq!(c.fetch_add(ctx, even, 0, 3).unwrap(), 0);
    assert_eq!(word_at(c.frontend(), pool[1] + 8), 3);
    assert_eq!(word_at(c.frontend(), pool[1]), 0);
    // FETCH_ADD with a non-zero swap field.
    let req = PlAtomicReq {
        key,
        offset: 0,
        operand: 1,
        swap: 1,
    };
    let (h, body) = c
        .raw(Opcode::FetchAdd as u16, ctx, req.as_bytes(), 24)
        .unwrap();
    assert_eq!(
        (h.status, h.len, h.tag),
        (Status::Inval as u32, 0, c.last_tag())
    );
    assert!(body.is_empty());
    assert_eq!(word_at(c.frontend(), pages[0]), 0, "refused: nothing added");
    d.assert_healthy();
}

#[test]
fn fill_and_verify_patterns() {
    let mut d = Daemon::start();
    let mut c = d.client();
    let ctx = c.create_context(1, "pattern").unwrap();
    let pool = c.alloc_pages(6).unwrap();
    let pages = [pool[4], pool[0], pool[2]];
    let key = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages))
        .unwrap()
        .key;
    let k = 0xdead_beef_0000_0001u64;

    c.fill(ctx, &pat(key, 8, 8 * 1000, k, PL_PATTERN_CONST))
        .unwrap();
    let fe = c.frontend();
    assert_eq!(word_at(fe, pages[0]), 0, "offset 0 outside the range");
    assert_eq!(word_at(fe, pages[0] + 8), k);
    assert_eq!(word_at(fe, pages[1] + 8000 - P), k, "offset 8000");
    assert_eq!(word_at(fe, pages[1] + 8008 - P), 0, "offset 8008 outside");
    let v = c
        .verify(ctx, &pat(key, 8, 8 * 1000, k, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(
        v,
        PlVerifyResp {
            mismatches: 0,
            first_bad_offset: u64::MAX,
            first_bad_value: 0
        }
    );
    // Including offset 0 (still zero): exactly one mismatch there.
    let v = c
        .verify(ctx, &pat(key, 0, 8 * 1001, k, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(
        (v.mismatches, v.first_bad_offset, v.first_bad_value),
        (1, 0, 0)
    );

    // OFFSET_XOR over the whole MR: each word holds pattern ^ MR offset.
    let x = 0x5555_aaaa_0000_0000u64;
    c.fill(ctx, &pat(key, 0, 3 * P, x, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    let fe = c.frontend();
    for o in [0, 8, P - 8, P, P + 16, 2 * P, 3 * P - 8] {
        assert_eq!(
            word_at(fe, mr_gpa(&pages, 0, o)),
            x ^ o,
            "word at MR offset {o}"
        );
    }
    fe.write_mem(mr_gpa(&pages, 0, 5000), &7u64.to_le_bytes())
        .unwrap();
    fe.write_mem(mr_gpa(&pages, 0, 9000), &9u64.to_le_bytes())
        .unwrap();
    let v = c
        .verify(ctx, &pat(key, 0, 3 * P, x, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(
        (v.mismatches, v.first_bad_offset, v.first_bad_value),
        (2, 5000, 7)
    );
    // CONST over an OFFSET_XOR fill: every word but offset 0 differs.
    let v = c
        .verify(ctx, &pat(key, 0, 64, x, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!((v.mismatches, v.first_bad_offset), (7, 8));
    c.fill(ctx, &pat(key, 0, 0, x, PL_PATTERN_CONST)).unwrap();

    assert_eq!(
        status_of(c.fill(ctx, &pat(key, 4, 8, x, PL_PATTERN_CONST))),
        Status::Inval
    );
    assert_eq!(
        status_of(c.fill(ctx, &pat(key, 0, 12, x, PL_PATTERN_CONST))),
        Status::Inval
    );
    assert_eq!(status_of(c.fill(ctx, &pat(key, 0, 8, x, 2))), Status::Inval);
    assert_eq!(
        status_of(c.verify(ctx, &pat(key, 3 * P - 8, 16, x, PL_PATTERN_CONST))),
        Status::Range
    );
    let ro = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_READ, &[pool[5]]))
        .unwrap()
        .key;
    let wo = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_WRITE, &[pool[1]]))
        .unwrap()
        .key;
    assert_eq!(
        status_of(c.fill(ctx, &pat(ro, 0, 8, x, PL_PATTERN_CONST))),
        Status::Perm
    );
    assert_eq!(
        status_of(c.verify(ctx, &pat(wo, 0, 8, x, PL_PATTERN_CONST))),
        Status::Perm
    );
    assert_eq!(word_at(c.frontend(), pool[5]), 0);
    let dev = d.device();
    assert_eq!(dev["counters"]["requests"]["FILL"]["OK"], json!(3));
    assert_eq!(dev["counters"]["requests"]["VERIFY"]["OK"], json!(4));
    d.assert_healthy();
}

#[test]
fn table_limits_answer_enomem() {
    let mut d = Daemon::start();
    let mut c = d.client();
    let q = c.query().unwrap();
    let ctx = c.create_context(1, "limits").unwrap();
    let (key, _) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    for _ in 0..q.max_children_per_context - 1 {
        c.create_child(ctx, PL_CHILD_EVENT_CHANNEL).unwrap();
    }
    // The last slot goes to an export; then the context is full.
    let ex = c.export_mr(ctx, key).unwrap();
    assert_eq!(
        status_of(c.create_child(ctx, PL_CHILD_EVENT_CHANNEL)),
        Status::NoMem
    );
    let (key2, _) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    assert_eq!(status_of(c.export_mr(ctx, key2)), Status::NoMem);
    // Re-exporting needs no new child.
    assert_eq!(c.export_mr(ctx, key).unwrap().refs, 2);
    c.destroy_child(ctx, ex.export).unwrap();
    c.destroy_child(ctx, ex.export).unwrap();
    c.export_mr(ctx, key2).unwrap();

    // Contexts: closed but unreleased ones count.
    for i in 1..q.max_contexts {
        let h = c.create_context(i, "filler").unwrap();
        if i % 2 == 0 {
            c.close_context(h).unwrap();
        }
    }
    assert_eq!(
        status_of(c.create_context(0, "one too many")),
        Status::NoMem
    );
    let dev = d.device();
    assert_eq!(
        dev["contexts"].as_array().unwrap().len(),
        q.max_contexts as usize
    );
    assert_eq!(
        dev["counters"]["requests"]["CREATE_CONTEXT"]["ENOMEM"],
        json!(1)
    );
    assert_eq!(status_of(c.release_context(ctx)), Status::Busy);
    d.assert_healthy();
}

/// Issue 12: an MR whose first_page_offset is not a multiple of 8, over
/// pages that are not adjacent in guest memory, so every page boundary falls
/// inside a word. Every DMA op against a reference of the MR's bytes.
#[test]
fn every_dma_op_is_exact_on_an_odd_first_page_offset_over_scattered_pages() {
    const FPO: u32 = 1031;
    let mut d = Daemon::start();
    let mut c = d.client();
    let ctx = c.create_context(1, "odd-offset").unwrap();
    let pool = c.alloc_pages(9).unwrap();
    let pages = [pool[8], pool[6], pool[4], pool[2]];
    let len = 4 * P - u64::from(FPO);
    let key = c
        .reg_mr(
            ctx,
            &RegMrArgs {
                first_page_offset: FPO,
                length: len,
                ..RegMrArgs::pages(PL_ACCESS_ALL, &pages)
            },
        )
        .unwrap()
        .key;
    // A second MR, whole pages, as the other end of WRITE and READ.
    let (plain, plain_pages) = c.alloc_mr(ctx, 4, PL_ACCESS_ALL).unwrap();
    let mut state = pattern(len as usize, 3);
    write_mr(c.frontend(), &pages, FPO, 0, &state);

    // FILL and VERIFY, both modes, the range and the whole MR.
    let p = 0x0123_4567_89ab_cdef_u64;
    for mode in [PL_PATTERN_CONST, PL_PATTERN_OFFSET_XOR] {
        for (off, n) in [(8368, 3744), (8, len / 8 * 8 - 8)] {
            c.fill(ctx, &pat(key, off, n, p, mode)).unwrap();
            for o in off..off + n {
                let w = if mode == PL_PATTERN_OFFSET_XOR {
                    p ^ (o & !7)
                } else {
                    p
                };
                state[o as usize] = w.to_le_bytes()[(o & 7) as usize];
            }
            assert_eq!(
                read_mr(c.frontend(), &pages, FPO, 0, len as usize),
                state,
                "mode {mode}: MR bytes after FILL {off}+{n}"
            );
            let v = c.verify(ctx, &pat(key, off, n, p, mode)).unwrap();
            assert_eq!(
                (v.mismatches, v.first_bad_offset),
                (0, u64::MAX),
                "mode {mode}: VERIFY {off}+{n} right after its FILL"
            );
        }
    }
    // A flipped byte in the word straddling the first page boundary
    // (MR offset 4096 - 1031 = 3065, in the word at 3064).
    write_mr(c.frontend(), &pages, FPO, 3066, &[!state[3066]]);
    let v = c
        .verify(ctx, &pat(key, 8, len / 8 * 8 - 8, p, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!((v.mismatches, v.first_bad_offset), (1, 3064));
    write_mr(c.frontend(), &pages, FPO, 3066, &[state[3066]]);

    // WRITE into it and READ out of it, across every page boundary.
    let src = pattern(3 * P as usize, 9);
    write_mr(c.frontend(), &plain_pages, 0, 0, &src);
    c.write(ctx, &dma(plain, 5, key, 13, 3 * P - 100)).unwrap();
    state[13..13 + (3 * P - 100) as usize].copy_from_slice(&src[5..5 + (3 * P - 100) as usize]);
    assert_eq!(
        read_mr(c.frontend(), &pages, FPO, 0, len as usize),
        state,
        "after WRITE"
    );
    c.read(ctx, &dma(plain, 0, key, 1, 3 * P)).unwrap();
    assert_eq!(
        read_mr(c.frontend(), &plain_pages, 0, 0, 3 * P as usize),
        state[1..1 + 3 * P as usize],
        "READ out of the odd MR"
    );

    // Atomics need a word aligned in guest memory: offset + first_page_offset
    // is a multiple of 8 nowhere that offset is (docs/abi.md 5.12).
    assert_eq!(status_of(c.fetch_add(ctx, key, 8, 1)), Status::Inval);
    assert_eq!(status_of(c.compare_swap(ctx, key, 8, 0, 1)), Status::Inval);
    d.assert_healthy();
}
