//! Every opcode end to end against the real daemon binary, over its real
//! vhost-user socket: bytes are checked in guest memory, events are decoded
//! from queue 1, and state is read back through the admin socket.

mod common;

use common::*;
use pinlease::abi::*;
use pinlease::frontend::client::{Client, RegMrArgs};
use pinlease::frontend::TestFrontend;
use serde_json::json;

const P: u64 = PL_PAGE_SIZE;

/// Guest address of MR offset `off` for an MR over `pages` starting `fpo`
/// bytes into its first page (docs/abi.md §5.9).
fn mr_gpa(pages: &[u64], fpo: u32, off: u64) -> u64 {
    let pos = u64::from(fpo) + off;
    pages[(pos / P) as usize] + pos % P
}

/// Writes `data` at MR offset `off`, page by page, straight into guest memory.
fn write_mr(fe: &TestFrontend, pages: &[u64], fpo: u32, off: u64, data: &[u8]) {
    let mut done = 0usize;
    while done < data.len() {
        let gpa = mr_gpa(pages, fpo, off + done as u64);
        let n = ((P - gpa % P) as usize).min(data.len() - done);
        fe.write_mem(gpa, &data[done..done + n]).unwrap();
        done += n;
    }
}

/// Reads `len` bytes at MR offset `off` straight from guest memory.
fn read_mr(fe: &TestFrontend, pages: &[u64], fpo: u32, off: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let gpa = mr_gpa(pages, fpo, off + out.len() as u64);
        let n = ((P - gpa % P) as usize).min(len - out.len());
        out.extend(fe.read_mem(gpa, n).unwrap());
    }
    out
}

fn word_at(fe: &TestFrontend, gpa: u64) -> u64 {
    u64::from_le_bytes(fe.read_mem(gpa, 8).unwrap().try_into().unwrap())
}

fn dma(local: u64, local_offset: u64, remote: u64, remote_offset: u64, length: u64) -> PlDmaReq {
    PlDmaReq {
        local_key: local,
        local_offset,
        remote_key: remote,
        remote_offset,
        length,
    }
}

fn pat(key: u64, offset: u64, length: u64, pattern: u64, mode: u32) -> PlPatternReq {
    PlPatternReq {
        key,
        offset,
        length,
        pattern,
        mode,
        reserved: 0,
    }
}

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
fn export_import_alias_the_same_bytes() {
    let mut d = Daemon::start();
    let mut c = d.client();
    c.post_event_buffers(16).unwrap();
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
fn close_context_tears_down_mrs_leases_and_imports() {
    let mut d = Daemon::start();
    let mut c = d.client();
    c.post_event_buffers(16).unwrap();
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

#[test]
fn lease_break_with_revoke_policy_revokes_covered_mrs() {
    let mut d = Daemon::start();
    let mut c = d.client();
    c.post_event_buffers(16).unwrap();
    let ctx = c.create_context(7, "holder").unwrap();
    let f = file(100);
    let lease = c
        .lease_take(ctx, &lease_req(f, 0, 0, PL_POLICY_REVOKE))
        .unwrap();
    let pool = c.alloc_pages(6).unwrap();
    let r1 = c
        .reg_mr(
            ctx,
            &RegMrArgs {
                file: Some((f, 4 * P)),
                flags: PL_REG_LONGTERM,
                ..RegMrArgs::pages(PL_ACCESS_ALL, &pool[0..2])
            },
        )
        .unwrap();
    assert_eq!(r1.lease, lease, "registered under the covering lease");
    let other_file = c
        .reg_mr(
            ctx,
            &RegMrArgs {
                file: Some((file(101), 0)),
                ..RegMrArgs::pages(PL_ACCESS_ALL, &pool[2..3])
            },
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
    let mut c = d.client();
    c.post_event_buffers(16).unwrap();
    let ctx = c.create_context(7, "holder").unwrap();
    let other = c.create_context(8, "other").unwrap();
    let f = file(200);
    let pool = c.alloc_pages(8).unwrap();
    // An MR registered before the lease comes under it at LEASE_TAKE.
    let m = c
        .reg_mr(
            ctx,
            &RegMrArgs {
                file: Some((f, 0)),
                ..RegMrArgs::pages(PL_ACCESS_ALL, &pool[0..2])
            },
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
fn imports_of_imports_alias_and_die_with_the_root() {
    let mut d = Daemon::start();
    let mut c = d.client();
    c.post_event_buffers(16).unwrap();
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
fn lost_lease_counts_accesses_through_imports() {
    let mut d = Daemon::start();
    let mut c = d.client();
    c.post_event_buffers(16).unwrap();
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
            &RegMrArgs {
                file: Some((f, 0)),
                ..RegMrArgs::pages(PL_ACCESS_ALL, &pages)
            },
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
