//! Tests of DMA, atomics, FILL and VERIFY: byte-exact through guest memory.

use crate::abi::*;
use crate::model::AtomicOp;

use crate::model::test_support::*;

// ---- DMA ------------------------------------------------------------------------------

#[test]
fn write_and_read_across_scattered_mrs_are_byte_exact() {
    device_and_ram!(dev, r; c);
    // Out-of-order, non-contiguous page lists, neither starting at offset 0.
    let a = Layout::new(vec![0x5000, 0x2000, 0x9000], 100, 3 * 4096 - 150);
    let b = Layout::new(vec![0x14000, 0xd000, 0x11000, 0x1e000], 3000, 13000);
    // Background in every page of both MRs, outside and inside the MRs.
    for &p in a.pages.iter().chain(&b.pages) {
        r.write(p, &[0xee; 4096]).unwrap();
    }
    let src = bytes(a.len as usize, 0x31);
    a.write(r, 0, &src);
    let ka = reg(&dev, c, &a, PL_ACCESS_READ | PL_ACCESS_WRITE);
    let kb = reg(&dev, c, &b, PL_ACCESS_READ | PL_ACCESS_WRITE);

    write(&dev, c, ka, 7, kb, 1234, 10000).unwrap();
    let got = b.all(r);
    for (o, &v) in got.iter().enumerate() {
        let want = if (1234..11234).contains(&o) {
            src[o - 1234 + 7]
        } else {
            0xee
        };
        assert_eq!(v, want, "MR b offset {o}");
    }
    // Bytes of b's pages outside the MR are untouched.
    let mut head = vec![0u8; 3000];
    r.read(b.pages[0], &mut head).unwrap();
    assert!(head.iter().all(|&x| x == 0xee));
    let mut tail = vec![0u8; 4096 - (3000 + 13000) % 4096];
    r.read(b.gpa(12999) + 1, &mut tail).unwrap();
    assert!(tail.iter().all(|&x| x == 0xee));

    // READ remote b -> local a.
    let mid = bytes(b.len as usize, 0x77);
    b.write(r, 0, &mid);
    read(&dev, c, ka, 0, kb, 500, 9000).unwrap();
    let got = a.all(r);
    for (o, &v) in got.iter().enumerate() {
        let want = if o < 9000 { mid[500 + o] } else { src[o] };
        assert_eq!(v, want, "MR a offset {o}");
    }
    let mut head = vec![0u8; 100];
    r.read(a.pages[0], &mut head).unwrap();
    assert!(head.iter().all(|&x| x == 0xee), "bytes before a's offset");

    let s = mr_status(&dev, kb).unwrap();
    assert_eq!((s.bytes_written, s.bytes_read), (10000, 9000));
}

#[test]
fn dma_across_contexts_and_within_one_mr() {
    device_and_ram!(dev, r; a, b);
    let la = Layout::new(vec![0x8000, 0x3000], 16, 6000);
    let lb = Layout::pages(vec![0x40000]);
    let ka = reg(&dev, a, &la, PL_ACCESS_ALL);
    let kb = reg(&dev, b, &lb, PL_ACCESS_READ | PL_ACCESS_WRITE);
    let data = bytes(6000, 9);
    la.write(r, 0, &data);
    // b writes its own MR into a's MR (remote key of another context).
    let from_b = bytes(4096, 0xa5);
    lb.write(r, 0, &from_b);
    write(&dev, b, kb, 96, ka, 4000, 1000).unwrap();
    assert_eq!(la.read(r, 4000, 1000), from_b[96..1096]);
    assert_eq!(la.read(r, 0, 4000), data[..4000]);
    assert_eq!(la.read(r, 5000, 1000), data[5000..]);
    // b reads a's MR into its own.
    read(&dev, b, kb, 0, ka, 0, 4096).unwrap();
    assert_eq!(lb.read(r, 0, 4000), data[..4000]);
    // Same MR as source and destination (non-overlapping ranges).
    la.write(r, 0, &data);
    write(&dev, a, ka, 0, ka, 3000, 2500).unwrap();
    assert_eq!(la.read(r, 3000, 2500), data[..2500]);
    assert_eq!(la.read(r, 0, 3000), data[..3000]);
    read(&dev, a, ka, 5600, ka, 10, 400).unwrap();
    assert_eq!(la.read(r, 5600, 400), la.read(r, 10, 400));
}

#[test]
fn dma_enforces_access_flags_ownership_and_ranges() {
    device_and_ram!(dev, r; a, b);
    let p = |i: u64| Layout::pages(vec![i * 0x1000]);
    let rw = reg(&dev, a, &p(1), PL_ACCESS_READ | PL_ACCESS_WRITE);
    let ro = reg(&dev, a, &p(2), PL_ACCESS_READ);
    let wo = reg(&dev, a, &p(3), PL_ACCESS_WRITE);
    let at = reg(&dev, a, &p(4), PL_ACCESS_ATOMIC);
    let other = reg(&dev, b, &p(5), PL_ACCESS_ALL);
    for i in 1..=5 {
        r.write(i * 0x1000, &[i as u8; 4096]).unwrap();
    }
    let perm = Status::Perm;
    // WRITE: the device reads local, writes remote.
    assert_eq!(
        st(write(&dev, a, wo, 0, rw, 0, 8)),
        perm,
        "local lacks READ"
    );
    assert_eq!(st(write(&dev, a, at, 0, rw, 0, 8)), perm);
    assert_eq!(
        st(write(&dev, a, rw, 0, ro, 0, 8)),
        perm,
        "remote lacks WRITE"
    );
    // READ: the device reads remote, writes local.
    assert_eq!(
        st(read(&dev, a, rw, 0, wo, 0, 8)),
        perm,
        "remote lacks READ"
    );
    assert_eq!(
        st(read(&dev, a, ro, 0, rw, 0, 8)),
        perm,
        "local lacks WRITE"
    );
    // local key must be the context's own.
    assert_eq!(st(write(&dev, a, other, 0, rw, 0, 8)), perm);
    assert_eq!(st(read(&dev, a, other, 0, rw, 0, 8)), perm);
    for i in 1..=5u64 {
        let mut pg = [0u8; 4096];
        r.read(i * 0x1000, &mut pg).unwrap();
        assert!(
            pg.iter().all(|&x| x == i as u8),
            "refused DMA touched page {i}"
        );
    }
    // Allowed directions.
    write(&dev, a, ro, 0, wo, 0, 16).unwrap();
    read(&dev, a, wo, 100, ro, 0, 16).unwrap();
    write(&dev, a, rw, 0, other, 0, 4096).unwrap();

    // Ranges.
    let range = Status::Range;
    assert_eq!(st(write(&dev, a, rw, 1, other, 0, 4096)), range);
    assert_eq!(st(write(&dev, a, rw, 0, other, 4095, 2)), range);
    assert_eq!(
        st(write(&dev, a, rw, 4097, other, 0, 0)),
        range,
        "offset past the end, length 0"
    );
    assert_eq!(st(write(&dev, a, rw, u64::MAX, other, 0, 1)), range);
    assert_eq!(st(write(&dev, a, rw, 0, other, u64::MAX, 1)), range);
    assert_eq!(st(write(&dev, a, rw, 1, other, 1, u64::MAX)), range);
    assert_eq!(st(read(&dev, a, rw, u64::MAX, other, 0, 2)), range);
    assert_eq!(st(read(&dev, a, rw, 0, other, 8, u64::MAX - 4)), range);
    write(&dev, a, rw, 4088, other, 0, 8).unwrap();
    // Zero length is a successful no-op, even at the very end; keys still checked.
    r.write(0x5000, &[0x42; 8]).unwrap();
    write(&dev, a, rw, 4096, other, 4096, 0).unwrap();
    read(&dev, a, rw, 0, other, 0, 0).unwrap();
    let mut w = [0u8; 8];
    r.read(0x5000, &mut w).unwrap();
    assert_eq!(w, [0x42; 8]);
    assert_eq!(st(write(&dev, a, rw, 0, 0, 0, 0)), Status::NoEnt);
    assert_eq!(st(write(&dev, a, rw, 0, other + 100, 0, 0)), Status::NoEnt);
}

#[test]
fn atomics_compare_swap_fetch_add_and_checks() {
    device_and_ram!(dev, r; a, b);
    let l = Layout::new(vec![0x7000, 0x2000], 16, 8000);
    let k = reg(&dev, a, &l, PL_ACCESS_ATOMIC | PL_ACCESS_READ);
    let word = 4080; // the first word of the second page
    assert_eq!(l.gpa(word), 0x2000);
    l.set_word(r, word, 10);
    l.set_word(r, word - 8, 0xdead);

    // b may do atomics on a's MR: any context's key.
    let cs = |op, off, a1, s| dev.atomic(b, op, &atomic(k, off, a1, s));
    assert_eq!(
        cs(AtomicOp::CompareSwap, word, 10, 99).unwrap(),
        10,
        "success"
    );
    assert_eq!(l.word(r, word), 99);
    assert_eq!(
        cs(AtomicOp::CompareSwap, word, 10, 5).unwrap(),
        99,
        "failure returns the value seen"
    );
    assert_eq!(l.word(r, word), 99, "failure leaves the word");
    assert_eq!(cs(AtomicOp::FetchAdd, word, 3, 0).unwrap(), 99);
    assert_eq!(l.word(r, word), 102);
    l.set_word(r, word, u64::MAX);
    assert_eq!(cs(AtomicOp::FetchAdd, word, 2, 0).unwrap(), u64::MAX);
    assert_eq!(l.word(r, word), 1, "wrapping add");
    assert_eq!(l.word(r, word - 8), 0xdead, "neighbour untouched");
    assert_eq!(l.word(r, word + 8), 0);
    // Last word of the MR.
    assert_eq!(cs(AtomicOp::FetchAdd, 7992, 1, 0).unwrap(), 0);
    assert_eq!(l.word(r, 7992), 1);

    assert_eq!(
        st(cs(AtomicOp::FetchAdd, word + 4, 1, 0)),
        Status::Inval,
        "misaligned"
    );
    assert_eq!(st(cs(AtomicOp::CompareSwap, 1, 1, 0)), Status::Inval);
    assert_eq!(
        st(cs(AtomicOp::FetchAdd, word, 1, 1)),
        Status::Inval,
        "FETCH_ADD swap != 0"
    );
    assert_eq!(st(cs(AtomicOp::FetchAdd, 8000, 1, 0)), Status::Range);
    assert_eq!(
        st(cs(AtomicOp::FetchAdd, u64::MAX - 7, 1, 0)),
        Status::Range
    );
    assert_eq!(l.word(r, word), 1);

    let k2 = reg(
        &dev,
        a,
        &Layout::pages(vec![0x9000]),
        PL_ACCESS_READ | PL_ACCESS_WRITE,
    );
    assert_eq!(
        st(dev.atomic(a, AtomicOp::FetchAdd, &atomic(k2, 0, 1, 0))),
        Status::Perm
    );
    assert_eq!(
        st(dev.atomic(a, AtomicOp::CompareSwap, &atomic(k2, 0, 0, 1))),
        Status::Perm
    );
    assert_eq!(
        st(dev.atomic(a, AtomicOp::CompareSwap, &atomic(0, 0, 0, 1))),
        Status::NoEnt
    );
}

#[test]
fn fill_and_verify_in_both_modes_find_corrupted_words() {
    device_and_ram!(dev, r; a);
    let l = Layout::new(vec![0xc000, 0x4000, 0x8000], 8, 3 * 4096 - 8);
    for &p in &l.pages {
        r.write(p, &[0x11; 4096]).unwrap();
    }
    let k = reg(&dev, a, &l, PL_ACCESS_READ | PL_ACCESS_WRITE);
    let clean = PlVerifyResp {
        mismatches: 0,
        first_bad_offset: u64::MAX,
        first_bad_value: 0,
    };

    // CONST over a middle range.
    let p = 0x0123_4567_89ab_cdef;
    dev.fill(a, &pattern(k, 16, 8192, p, PL_PATTERN_CONST))
        .unwrap();
    for o in (16..16 + 8192).step_by(8) {
        assert_eq!(l.word(r, o), p, "word at {o}");
    }
    assert_eq!(l.word(r, 8), 0x1111_1111_1111_1111, "before the range");
    assert_eq!(
        l.word(r, 16 + 8192),
        0x1111_1111_1111_1111,
        "after the range"
    );
    let mut first = [0u8; 8];
    r.read(0xc000, &mut first).unwrap();
    assert_eq!(first, [0x11; 8], "before the MR's first_page_offset");
    assert_eq!(
        dev.verify(a, &pattern(k, 16, 8192, p, PL_PATTERN_CONST))
            .unwrap(),
        clean
    );

    // OFFSET_XOR over the whole MR.
    let len = l.len; // 12280, a multiple of 8
    dev.fill(a, &pattern(k, 0, len, p, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    for o in (0..len).step_by(8) {
        assert_eq!(l.word(r, o), p ^ o, "word at {o}");
    }
    assert_eq!(
        dev.verify(a, &pattern(k, 0, len, p, PL_PATTERN_OFFSET_XOR))
            .unwrap(),
        clean
    );
    // The CONST view of an OFFSET_XOR fill mismatches everywhere but offset 0.
    let v = dev
        .verify(a, &pattern(k, 0, len, p, PL_PATTERN_CONST))
        .unwrap();
    assert_eq!(
        (v.mismatches, v.first_bad_offset, v.first_bad_value),
        (len / 8 - 1, 8, p ^ 8)
    );

    // Corrupt words by hand, as the guest CPU would.
    l.set_word(r, 8000, 0xbad);
    l.set_word(r, 4088, 0xbad2);
    let v = dev
        .verify(a, &pattern(k, 0, len, p, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(
        (v.mismatches, v.first_bad_offset, v.first_bad_value),
        (2, 4088, 0xbad2)
    );
    let v = dev
        .verify(a, &pattern(k, 4096, len - 4096, p, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(
        (v.mismatches, v.first_bad_offset, v.first_bad_value),
        (1, 8000, 0xbad)
    );
    assert_eq!(
        dev.verify(a, &pattern(k, 0, 0, p, PL_PATTERN_CONST))
            .unwrap(),
        clean,
        "length 0"
    );
    dev.fill(a, &pattern(k, len, 0, 7, PL_PATTERN_CONST))
        .unwrap();

    // Bad requests change nothing.
    let inval = Status::Inval;
    assert_eq!(
        st(dev.fill(a, &pattern(k, 0, 8, 1, 2))),
        inval,
        "unknown mode"
    );
    assert_eq!(st(dev.verify(a, &pattern(k, 0, 8, 1, 9))), inval);
    assert_eq!(
        st(dev.fill(a, &pattern(k, 4, 8, 1, PL_PATTERN_CONST))),
        inval
    );
    assert_eq!(
        st(dev.fill(a, &pattern(k, 0, 12, 1, PL_PATTERN_CONST))),
        inval
    );
    assert_eq!(
        st(dev.verify(a, &pattern(k, 0, 12, 1, PL_PATTERN_CONST))),
        inval
    );
    let mut reserved = pattern(k, 0, 8, 1, PL_PATTERN_CONST);
    reserved.reserved = 1;
    assert_eq!(st(dev.fill(a, &reserved)), inval);
    assert_eq!(
        st(dev.fill(a, &pattern(k, 8, len, 1, PL_PATTERN_CONST))),
        Status::Range
    );
    assert_eq!(
        st(dev.fill(a, &pattern(k, u64::MAX - 7, 16, 1, PL_PATTERN_CONST))),
        Status::Range
    );
    assert_eq!(
        st(dev.verify(a, &pattern(k, len, 8, 1, PL_PATTERN_CONST))),
        Status::Range
    );
    let ro = reg(&dev, a, &Layout::pages(vec![0x20000]), PL_ACCESS_READ);
    let wo = reg(&dev, a, &Layout::pages(vec![0x21000]), PL_ACCESS_WRITE);
    assert_eq!(
        st(dev.fill(a, &pattern(ro, 0, 8, 1, PL_PATTERN_CONST))),
        Status::Perm
    );
    assert_eq!(
        st(dev.verify(a, &pattern(wo, 0, 8, 1, PL_PATTERN_CONST))),
        Status::Perm
    );
    dev.fill(a, &pattern(wo, 0, 4096, 3, PL_PATTERN_CONST))
        .unwrap();
    let v = dev
        .verify(a, &pattern(k, 0, len, p, PL_PATTERN_OFFSET_XOR))
        .unwrap();
    assert_eq!(v.mismatches, 2, "refused requests wrote nothing");
}

/// Writes into `state` (the MR's expected bytes) what FILL of `range`
/// leaves: byte `o % 8` of the pattern word at `o & !7`.
fn fill_reference(state: &mut [u8], range: (u64, u64), p: u64, mode: u32) {
    for o in range.0..range.0 + range.1 {
        let w = o & !7;
        let word = if mode == PL_PATTERN_OFFSET_XOR {
            p ^ w
        } else {
            p
        };
        state[o as usize] = word.to_le_bytes()[(o & 7) as usize];
    }
}

#[test]
fn fill_and_verify_are_exact_when_words_straddle_scattered_pages() {
    // Issue 12's report, scaled to the test RAM: first_page_offset 1031 (not
    // a multiple of 8) over pages that are not adjacent, so every page
    // boundary falls inside a word.
    device_and_ram!(dev, r; a);
    let l = Layout::new(vec![0x8000, 0x6000, 0x4000, 0x2000], 1031, 4 * 4096 - 1031);
    let k = reg(&dev, a, &l, PL_ACCESS_READ | PL_ACCESS_WRITE);
    let p = 0x0123_4567_89ab_cdef;
    let whole = (8, l.len / 8 * 8 - 8);
    for mode in [PL_PATTERN_CONST, PL_PATTERN_OFFSET_XOR] {
        let mut state = bytes(l.len as usize, 0x5c);
        l.write(r, 0, &state);
        for range in [(8368, 3744), (0, 4096), whole] {
            dev.fill(a, &pattern(k, range.0, range.1, p, mode)).unwrap();
            fill_reference(&mut state, range, p, mode);
            assert_eq!(l.all(r), state, "mode {mode}: after FILL {range:?}");
            let v = dev
                .verify(a, &pattern(k, range.0, range.1, p, mode))
                .unwrap();
            assert_eq!(
                (v.mismatches, v.first_bad_offset),
                (0, u64::MAX),
                "mode {mode}: VERIFY {range:?} right after its FILL"
            );
        }
        // One byte of the word that straddles the first page boundary (MR
        // offset 4096 - 1031 = 3065 is in the word at 3064) flipped.
        let flipped = !state[3066];
        l.write(r, 3066, &[flipped]);
        let v = dev
            .verify(a, &pattern(k, whole.0, whole.1, p, mode))
            .unwrap();
        assert_eq!((v.mismatches, v.first_bad_offset), (1, 3064), "mode {mode}");
    }
}
