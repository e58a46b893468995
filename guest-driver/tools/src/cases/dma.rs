//! The device: QUERY and the data operations (`dma_*`: WRITE, READ,
//! atomics, FILL/VERIFY, unaligned MRs) between MRs of one context.

use crate::cases::helpers::{expect_errno, open, pair, pair_needing, pattern, PAIR_LEN};
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::Mapping;
use crate::{ensure, fail};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};

pub(super) fn query_device(t: &mut CaseCtx) -> CaseResult {
    let d1 = open()?;
    let d2 = open()?;
    let q = d1.query()?;
    let q2 = d2.query()?;
    t.diag(format!(
        "abi {} page {} features {:#x} virtio_id {} ctx {:#x} limits: contexts {} mrs {} pages/mr {} leases {} children {}",
        q.abi_version, q.page_size, q.features, q.virtio_id, q.ctx, q.max_contexts, q.max_mrs,
        q.max_pages_per_mr, q.max_leases, q.max_children_per_context
    ));
    ensure!(
        q.abi_version == u32::from(abi::PL_ABI_VERSION),
        "abi_version {} != {}",
        q.abi_version,
        abi::PL_ABI_VERSION
    );
    ensure!(q.page_size == 4096, "page_size {} != 4096", q.page_size);
    ensure!(
        q.virtio_id == abi::PL_VIRTIO_ID_NATIVE || q.virtio_id == abi::PL_VIRTIO_ID_CARRIER,
        "virtio_id {} is neither PL_VIRTIO_ID_NATIVE ({}) nor PL_VIRTIO_ID_CARRIER ({})",
        q.virtio_id,
        abi::PL_VIRTIO_ID_NATIVE,
        abi::PL_VIRTIO_ID_CARRIER
    );
    ensure!(
        q.features & !abi::PL_FEATURES_ALL == 0,
        "unknown feature bits {:#x}",
        q.features
    );
    ensure!(
        q.max_contexts >= 1 && q.max_contexts <= abi::PL_MAX_CONTEXTS,
        "max_contexts {}",
        q.max_contexts
    );
    ensure!(
        q.max_mrs >= 1 && q.max_mrs <= abi::PL_MAX_MRS,
        "max_mrs {}",
        q.max_mrs
    );
    ensure!(
        q.max_pages_per_mr >= 1 && q.max_pages_per_mr <= abi::PL_MAX_PAGES_PER_MR,
        "max_pages_per_mr {}",
        q.max_pages_per_mr
    );
    ensure!(q.ctx != 0, "ctx handle is 0");
    ensure!(
        q2.ctx != 0 && q2.ctx != q.ctx,
        "two opens share ctx {:#x} / {:#x}",
        q.ctx,
        q2.ctx
    );
    ensure!(
        d1.query()?.ctx == q.ctx,
        "ctx of one fd changed between two QUERYs"
    );
    Ok(())
}

/// After `op` copied a's pattern from `src` to b at `dst` (`len` bytes):
/// fails unless b holds it there and the byte either side is still 0xee.
fn expect_copied(b: &Mapping, dst: usize, src: usize, len: usize, op: &str) -> CaseResult {
    if let Some((o, got, want)) = b.first_mismatch(dst, len, |i| pattern(i - dst + src)) {
        fail!("after {op} a[{src}..] -> b[{dst}..] len {len}: b[{o}] = {got:#04x}, expected {want:#04x}");
    }
    for o in [dst - 1, dst + len] {
        ensure!(
            b.get_u8(o) == 0xee,
            "{op} touched b[{o}] outside the range: {:#04x}",
            b.get_u8(o)
        );
    }
    Ok(())
}

pub(super) fn dma_write(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let (loff, roff, len) = (100usize, 4000usize, 9000usize);
    p.dev
        .write(p.ka, loff as u64, p.kb, roff as u64, len as u64)?;
    expect_copied(&p.b, roff, loff, len, "WRITE")?;
    // The whole MR, and a zero-length no-op.
    p.dev.write(p.ka, 0, p.kb, 0, PAIR_LEN as u64)?;
    if let Some((o, got, want)) = p.b.first_mismatch(0, PAIR_LEN, pattern) {
        fail!("after full WRITE: b[{o}] = {got:#04x}, expected {want:#04x}");
    }
    p.dev.write(p.ka, 0, p.kb, 0, 0)?;
    p.close()
}

pub(super) fn dma_read(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    // READ copies remote (a) -> local (b).
    let (loff, roff, len) = (4095usize, 7usize, 12289usize);
    p.dev
        .read(p.kb, loff as u64, p.ka, roff as u64, len as u64)?;
    expect_copied(&p.b, loff, roff, len, "READ")?;
    if let Some((o, got, want)) = p.a.first_mismatch(0, PAIR_LEN, pattern) {
        fail!("READ changed its source: a[{o}] = {got:#04x}, expected {want:#04x}");
    }
    p.close()
}

pub(super) fn dma_compare_swap_both_outcomes(_t: &mut CaseCtx) -> CaseResult {
    let p = pair_needing(abi::PL_FEATURE_ATOMICS, "ATOMICS")?;
    let off = 4096 + 64;
    p.b.set_u64(off, 0x1111_2222_3333_4444);
    let orig = p.dev.compare_swap(
        p.kb,
        off as u64,
        0x1111_2222_3333_4444,
        0xaaaa_bbbb_cccc_dddd,
    )?;
    ensure!(
        orig == 0x1111_2222_3333_4444,
        "CAS (match) returned original {orig:#x}"
    );
    let now = p.b.get_u64(off);
    ensure!(
        now == 0xaaaa_bbbb_cccc_dddd,
        "CAS (match) left {now:#x}, expected the swap value"
    );
    let orig = p
        .dev
        .compare_swap(p.kb, off as u64, 0x1111_2222_3333_4444, 0x5555)?;
    ensure!(
        orig == 0xaaaa_bbbb_cccc_dddd,
        "CAS (mismatch) returned original {orig:#x}"
    );
    let now = p.b.get_u64(off);
    ensure!(
        now == 0xaaaa_bbbb_cccc_dddd,
        "CAS (mismatch) changed the word to {now:#x}"
    );
    ensure!(
        p.b.get_u64(off - 8) == 0xeeee_eeee_eeee_eeee,
        "CAS touched the previous word"
    );
    ensure!(
        p.b.get_u64(off + 8) == 0xeeee_eeee_eeee_eeee,
        "CAS touched the next word"
    );
    expect_errno(
        p.dev.compare_swap(p.kb, off as u64 + 4, 0, 1),
        libc::EINVAL,
        "COMPARE_SWAP at a misaligned offset",
    )?;
    p.close()
}

pub(super) fn dma_fetch_add(_t: &mut CaseCtx) -> CaseResult {
    let p = pair_needing(abi::PL_FEATURE_ATOMICS, "ATOMICS")?;
    let off = PAIR_LEN - 8;
    p.b.set_u64(off, 0xffff_ffff_ffff_fff0);
    let orig = p.dev.fetch_add(p.kb, off as u64, 0x20)?;
    ensure!(
        orig == 0xffff_ffff_ffff_fff0,
        "FETCH_ADD returned original {orig:#x}"
    );
    let now = p.b.get_u64(off);
    ensure!(
        now == 0x10,
        "FETCH_ADD (wrapping) left {now:#x}, expected 0x10"
    );
    for i in 0..10u64 {
        let o = p.dev.fetch_add(p.kb, off as u64, 3)?;
        ensure!(
            o == 0x10 + 3 * i,
            "FETCH_ADD #{i} returned {o:#x}, expected {:#x}",
            0x10 + 3 * i
        );
    }
    ensure!(
        p.b.get_u64(off) == 0x10 + 30,
        "after 10 adds of 3: {:#x}",
        p.b.get_u64(off)
    );
    expect_errno(
        p.dev.fetch_add(p.kb, PAIR_LEN as u64, 1),
        libc::ERANGE,
        "FETCH_ADD past the MR end",
    )?;
    p.close()
}

pub(super) fn dma_fill_verify_const(_t: &mut CaseCtx) -> CaseResult {
    let p = pair_needing(abi::PL_FEATURE_PATTERN, "PATTERN")?;
    let pat = 0xa5a5_5a5a_0f0f_f0f0u64;
    p.dev
        .fill(p.kb, 0, PAIR_LEN as u64, pat, abi::PL_PATTERN_CONST)?;
    for o in (0..PAIR_LEN).step_by(8) {
        let w = p.b.get_u64(o);
        ensure!(
            w == pat,
            "after FILL const: word at {o} = {w:#x}, expected {pat:#x}"
        );
    }
    let v = p
        .dev
        .verify(p.kb, 0, PAIR_LEN as u64, pat, abi::PL_PATTERN_CONST)?;
    ensure!(
        v.mismatches == 0 && v.first_bad_offset == u64::MAX,
        "VERIFY of a filled MR: {v}"
    );
    let v = p
        .dev
        .verify(p.kb, 0, PAIR_LEN as u64, pat ^ 1, abi::PL_PATTERN_CONST)?;
    ensure!(
        v.mismatches == (PAIR_LEN / 8) as u64
            && v.first_bad_offset == 0
            && v.first_bad_value == pat,
        "VERIFY with the wrong pattern: {v}, expected {} mismatches from offset 0",
        PAIR_LEN / 8
    );
    p.close()
}

pub(super) fn dma_fill_verify_xor_detects_corruption(_t: &mut CaseCtx) -> CaseResult {
    let p = pair_needing(abi::PL_FEATURE_PATTERN, "PATTERN")?;
    let pat = 0x0123_4567_89ab_cdefu64;
    let (off, len) = (8usize, PAIR_LEN - 16);
    p.dev.fill(
        p.kb,
        off as u64,
        len as u64,
        pat,
        abi::PL_PATTERN_OFFSET_XOR,
    )?;
    for o in (off..off + len).step_by(8) {
        let w = p.b.get_u64(o);
        ensure!(
            w == pat ^ o as u64,
            "after FILL xor: word at {o} = {w:#x}, expected {:#x}",
            pat ^ o as u64
        );
    }
    ensure!(
        p.b.get_u64(0) == 0xeeee_eeee_eeee_eeee,
        "FILL touched word 0"
    );
    ensure!(
        p.b.get_u64(PAIR_LEN - 8) == 0xeeee_eeee_eeee_eeee,
        "FILL touched the last word"
    );
    let verify_xor = |len: usize| {
        p.dev.verify(
            p.kb,
            off as u64,
            len as u64,
            pat,
            abi::PL_PATTERN_OFFSET_XOR,
        )
    };
    let v = verify_xor(len)?;
    ensure!(v.mismatches == 0, "VERIFY xor of a filled range: {v}");
    let bad_off = 3 * 4096 + 40;
    let bad = 0xdead_beef_dead_beefu64;
    p.b.set_u64(bad_off, bad);
    let v = verify_xor(len)?;
    ensure!(
        v.mismatches == 1 && v.first_bad_offset == bad_off as u64 && v.first_bad_value == bad,
        "VERIFY after corrupting the word at {bad_off} with {bad:#x}: {v}"
    );
    let v = verify_xor(bad_off - off)?;
    ensure!(
        v.mismatches == 0,
        "VERIFY of the range before the corruption: {v}"
    );
    p.close()
}

pub(super) fn dma_unaligned_mr_start_and_length(t: &mut CaseCtx) -> CaseResult {
    // MRs that start and end inside pages: the module's page list and
    // first_page_offset must put MR offset 0 at the registered address.
    let dev = open()?;
    let a = Mapping::anon(4 * 4096)?;
    let b = Mapping::anon(4 * 4096)?;
    a.fill_with(0, a.len(), pattern);
    b.fill_with(0, b.len(), |_| 0xee);
    let (sa, la) = (100usize, 10_000usize);
    let (sb, lb) = (4095usize, 8193usize);
    let ra = dev.reg_mr(a.addr() + sa as u64, la as u64, PL_ACCESS_ALL, 0)?;
    let rb = dev.reg_mr(b.addr() + sb as u64, lb as u64, PL_ACCESS_ALL, 0)?;
    t.diag(format!(
        "MR a: +{sa} len {la} npages {}; MR b: +{sb} len {lb} npages {}",
        ra.npages, rb.npages
    ));
    ensure!(
        ra.npages == (sa + la).div_ceil(4096) as u32,
        "MR a npages {} != {}",
        ra.npages,
        (sa + la).div_ceil(4096)
    );
    ensure!(
        rb.npages == (sb + lb).div_ceil(4096) as u32,
        "MR b npages {} != {}",
        rb.npages,
        (sb + lb).div_ceil(4096)
    );
    dev.write(ra.key, 0, rb.key, 0, lb as u64)?;
    if let Some((o, got, want)) = b.first_mismatch(sb, lb, |i| pattern(i - sb + sa)) {
        fail!("WRITE between unaligned MRs: b byte {o} = {got:#04x}, expected {want:#04x} (a byte {})", o - sb + sa);
    }
    ensure!(
        b.get_u8(sb - 1) == 0xee && b.get_u8(sb + lb) == 0xee,
        "WRITE spilled outside MR b"
    );
    expect_errno(
        dev.write(ra.key, 0, rb.key, 1, lb as u64),
        libc::ERANGE,
        "WRITE one byte past MR b",
    )?;
    dev.dereg_mr(ra.key)?;
    dev.dereg_mr(rb.key)?;
    Ok(())
}

/// Issue 12: an MR that starts 1031 bytes into its first page (not a
/// multiple of 8), over pages that are not adjacent in guest memory, so
/// words straddle page boundaries the device must split its copy at. FILL,
/// VERIFY, WRITE and READ against the bytes the CPU sees; atomics refused
/// (no 8-aligned word in such an MR, docs/abi.md 5.12).
pub(super) fn dma_odd_offset_over_scattered_pages(t: &mut CaseCtx) -> CaseResult {
    const FPO: usize = 1031;
    const PAGES: usize = 4;
    let dev = open()?;
    let m = Mapping::anon(PAGES * 4096)?;
    // Touched last page first: the page allocator then tends to hand out
    // frames in the other direction, so no page follows its predecessor.
    for i in (0..PAGES).rev() {
        m.set_u8(i * 4096, 0x5c);
    }
    let pfns = crate::sys::pagemap_pfns(m.addr(), PAGES)?;
    let splits = pfns.windows(2).filter(|w| w[1] != w[0] + 1).count();
    t.diag(format!(
        "pfns {pfns:x?}: {splits} of {} page boundaries split",
        PAGES - 1
    ));
    if splits == 0 {
        crate::skip!("the {PAGES} pages came out adjacent ({pfns:x?}): nothing straddles a split");
    }
    m.fill_with(0, m.len(), |i| (i as u8).wrapping_mul(7) ^ 0x5c);
    let len = PAGES * 4096 - FPO;
    let r = dev.reg_mr(m.addr() + FPO as u64, len as u64, PL_ACCESS_ALL, 0)?;
    let byte = |o: usize| m.get_u8(FPO + o);
    let p = 0x0123_4567_89ab_cdefu64;
    for mode in [abi::PL_PATTERN_CONST, abi::PL_PATTERN_OFFSET_XOR] {
        let (off, n) = (8usize, len / 8 * 8 - 8);
        dev.fill(r.key, off as u64, n as u64, p, mode)?;
        for o in off..off + n {
            let w = if mode == abi::PL_PATTERN_OFFSET_XOR {
                p ^ (o as u64 & !7)
            } else {
                p
            };
            let want = w.to_le_bytes()[o & 7];
            ensure!(
                byte(o) == want,
                "mode {mode}: after FILL {off}+{n}, MR byte {o} = {:#04x}, expected {want:#04x}",
                byte(o)
            );
        }
        let v = dev.verify(r.key, off as u64, n as u64, p, mode)?;
        ensure!(
            v.mismatches == 0 && v.first_bad_offset == u64::MAX,
            "mode {mode}: VERIFY right after FILL: {v}"
        );
    }
    // A flipped byte of the word straddling the first page boundary (MR
    // offset 4096 - 1031 = 3065 is in the word at 3064).
    m.set_u8(FPO + 3066, !byte(3066));
    let v = dev.verify(
        r.key,
        8,
        (len / 8 * 8 - 8) as u64,
        p,
        abi::PL_PATTERN_OFFSET_XOR,
    )?;
    ensure!(
        v.mismatches == 1 && v.first_bad_offset == 3064,
        "VERIFY after flipping MR byte 3066: {v}, expected 1 mismatch at 3064"
    );
    // WRITE into it from a plain MR and READ out of it into that MR: every
    // copy crosses the split page boundaries.
    let other = Mapping::anon(PAGES * 4096)?;
    other.fill_with(0, other.len(), |i| (i as u8).wrapping_mul(13) ^ 0xa7);
    let ro = dev.reg_mr(other.addr(), other.len() as u64, PL_ACCESS_ALL, 0)?;
    let n = len - 13;
    dev.write(ro.key, 5, r.key, 13, n as u64)?;
    for o in 13..len {
        let want = other.get_u8(o - 13 + 5);
        ensure!(
            byte(o) == want,
            "WRITE plain[5..] -> MR[13..]: MR byte {o} = {:#04x}, expected {want:#04x}",
            byte(o)
        );
    }
    let snapshot: Vec<u8> = (0..len).map(byte).collect();
    dev.read(ro.key, 0, r.key, 1, (len - 1) as u64)?;
    if let Some((o, got, want)) = other.first_mismatch(0, len - 1, |i| snapshot[i + 1]) {
        fail!("READ MR[1..] -> plain[0..]: plain byte {o} = {got:#04x}, expected {want:#04x}");
    }
    dev.dereg_mr(ro.key)?;
    expect_errno(
        dev.fetch_add(r.key, 8, 1),
        libc::EINVAL,
        "FETCH_ADD in an MR at +1031",
    )?;
    expect_errno(
        dev.compare_swap(r.key, 8, 0, 1),
        libc::EINVAL,
        "COMPARE_SWAP in an MR at +1031",
    )?;
    dev.dereg_mr(r.key)?;
    Ok(())
}
