//! The stray-write scanner (`pinlease-guest stray-scan`, docs/faults.md
//! section 3.2 invariant `stray-writes`): fresh anonymous memory, zeroed by
//! the kernel and never written by the guest, is scanned for the daemon
//! scrubber's canary words (docs/abi.md section 5.9.1). A canary there means
//! the device wrote pages nobody had pinned.
//!
//! The recognition is pure (`canary_at`, `scan`) so the host tests can feed
//! it canaries built with `pl_scrub_seed`, zeroes and random words.

use crate::dev::SysError;
use crate::markers;
use crate::sys::{self, Mapping};
use pinlease_abi as abi;
use std::time::{Duration, Instant};

/// High half of every canary before the slot is XORed in ("SCRB").
pub const SCRUB_MAGIC_HI: u32 = (abi::PL_SCRUB_SEED_MAGIC >> 32) as u32;

/// A word names an MR slot below this (the device's table has
/// `PL_MAX_MRS` slots), so its high half lies within `SCRUB_MAGIC_HI ^
/// [0, SLOT_LIMIT)`: a random high half does so with probability 2^-16.
pub const SLOT_LIMIT: u32 = abi::PL_MAX_MRS;

const PAGE: usize = 4096;

/// What a canary word says about the MR that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Canary {
    /// Byte offset of the word in the scanned memory.
    pub offset: usize,
    pub word: u64,
    /// The key's slot index (bits 0-31 of the MR key).
    pub slot: u32,
    /// Low half of the word: the key's generation XOR the MR offset.
    pub gen_xor_off: u32,
}

/// The slot a word names if it looks like a canary on its own: its high
/// half is `SCRUB_MAGIC_HI ^ slot` with `slot < SLOT_LIMIT`. Zero never
/// does (its slot would be `SCRUB_MAGIC_HI`).
pub fn canary_slot(w: u64) -> Option<u32> {
    let slot = ((w >> 32) as u32) ^ SCRUB_MAGIC_HI;
    (slot < SLOT_LIMIT).then_some(slot)
}

/// Whether `x` is `o ^ (o + 8)` for some multiple of 8 `o`: the low-half
/// difference of two consecutive canaries of one MR (same key, MR offsets
/// `o` and `o + 8`): a run of ones starting at bit 3.
pub fn is_offset_step(x: u32) -> bool {
    x & 7 == 0 && x != 0 && {
        let y = x >> 3;
        y & (y + 1) == 0
    }
}

/// Whether `a` (at some offset) and `b` (8 bytes further) are two
/// consecutive canaries of one MR: same high half naming a small slot, low
/// halves one MR-offset step apart. Random pairs pass with probability
/// below 2^-40; a lone canary-looking word is not enough.
pub fn consecutive_canaries(a: u64, b: u64) -> bool {
    canary_slot(a).is_some() && a >> 32 == b >> 32 && is_offset_step(a as u32 ^ b as u32)
}

/// The little-endian u64 at byte offset `8 * i + shift` of memory read as
/// aligned words by `word` (`shift` in 0..8; `i + 1 < n` when shift > 0).
fn shifted(word: &impl Fn(usize) -> u64, i: usize, shift: usize) -> u64 {
    if shift == 0 {
        word(i)
    } else {
        (word(i) >> (8 * shift)) | (word(i + 1) << (64 - 8 * shift))
    }
}

/// Whether the canary-looking word at byte offset `p` is a canary: a whole
/// word inside one page of the scanned memory (its pages are physically
/// unrelated) whose neighbour 8 bytes before or after, in the same page,
/// continues its MR's sequence.
fn canary_at(word: &impl Fn(usize) -> u64, n: usize, p: usize) -> Option<u64> {
    let end = 8 * n;
    let page = p / PAGE * PAGE;
    if p + 8 > end || p + 8 > page + PAGE {
        return None;
    }
    let at = |q: usize| {
        let (i, s) = (q / 8, q % 8);
        if s > 0 && i + 1 >= n {
            None
        } else {
            Some(shifted(word, i, s))
        }
    };
    let w = at(p)?;
    canary_slot(w)?;
    let next = p + 16 <= (page + PAGE).min(end);
    let prev = p >= page + 8;
    let ok = (next && at(p + 8).is_some_and(|b| consecutive_canaries(w, b)))
        || (prev && at(p - 8).is_some_and(|a| consecutive_canaries(a, w)));
    ok.then_some(w)
}

/// Result of one pass over the memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Aligned words read.
    pub words: usize,
    /// Aligned words that were not zero (anything there is a stray write:
    /// the memory was zeroed by the kernel and never written).
    pub nonzero: usize,
    /// Canary words found (at any byte alignment).
    pub canaries: usize,
    /// The first `keep` canaries, by offset.
    pub hits: Vec<Canary>,
}

/// Scans `n` aligned little-endian words (`word(i)` reads word `i`; byte
/// offset 0 is page-aligned) for canaries at every byte alignment: an MR
/// whose `first_page_offset` is not a multiple of 8 writes its words
/// across ours. Zero words cost one read; only around non-zero ones are
/// the eight alignments tried.
pub fn scan(word: impl Fn(usize) -> u64, n: usize, keep: usize) -> Scan {
    let mut s = Scan {
        words: n,
        ..Scan::default()
    };
    let mut cur = if n > 0 { word(0) } else { 0 };
    for i in 0..n {
        let next = if i + 1 < n { word(i + 1) } else { 0 };
        if cur != 0 {
            s.nonzero += 1;
        }
        // A word at 8i + shift covers words i and i + 1; the one at 8i
        // (shift 0) only word i. Look when any word it covers is not zero.
        for shift in 0..8 {
            if cur == 0 && (shift == 0 || next == 0) {
                continue;
            }
            if let Some(w) = canary_at(&word, n, 8 * i + shift) {
                s.canaries += 1;
                if s.hits.len() < keep {
                    s.hits.push(Canary {
                        offset: 8 * i + shift,
                        word: w,
                        slot: canary_slot(w).unwrap_or(u32::MAX),
                        gen_xor_off: w as u32,
                    });
                }
            }
        }
        cur = next;
    }
    s
}

/// What `stray-scan` found over all its passes.
#[derive(Clone, Debug, Default)]
pub struct StrayReport {
    pub bytes: usize,
    pub words: usize,
    pub passes: usize,
    /// Most canaries any one pass saw (written memory keeps them, so the
    /// last pass sees all the earlier ones did).
    pub canaries: usize,
    pub nonzero: usize,
    /// Up to `KEEP` canaries with their guest virtual address.
    pub hits: Vec<(u64, Canary)>,
    pub elapsed: Duration,
}

/// Canaries a report lists in full.
pub const KEEP: usize = 10;

/// Maps `percent`% of MemAvailable as fresh anonymous memory, touches every
/// page, and scans it again and again for `duration` (at least one pass).
pub fn run(percent: u32, duration: Duration) -> Result<StrayReport, String> {
    if percent == 0 || percent > 90 {
        return Err(format!("--mem-percent {percent}: must be 1..=90"));
    }
    let avail_kb = sys::meminfo_kb("MemAvailable")
        .ok_or("/proc/meminfo has no MemAvailable line (is /proc mounted?)")?;
    let len = (avail_kb as usize * 1024 / 100 * percent as usize) / PAGE * PAGE;
    if len < PAGE {
        return Err(format!(
            "{percent}% of MemAvailable ({avail_kb} kB) is less than a page"
        ));
    }
    let map = Mapping::anon(len).map_err(|e: SysError| e.to_string())?;
    map.touch();
    let t0 = Instant::now();
    let mut r = StrayReport {
        bytes: len,
        ..StrayReport::default()
    };
    loop {
        let s = scan_mapping(&map, KEEP);
        r.passes += 1;
        r.words = s.words;
        r.nonzero = r.nonzero.max(s.nonzero);
        if s.canaries > r.canaries {
            r.canaries = s.canaries;
            r.hits = s
                .hits
                .iter()
                .map(|c| (map.addr() + c.offset as u64, *c))
                .collect();
        }
        if t0.elapsed() >= duration {
            break;
        }
    }
    r.elapsed = t0.elapsed();
    Ok(r)
}

/// One pass of `scan` over a mapping (volatile reads: the device writes
/// behind the compiler's back).
pub fn scan_mapping(map: &Mapping, keep: usize) -> Scan {
    scan(|i| map.get_u64(8 * i), map.len() / 8, keep)
}

impl StrayReport {
    /// The machine-readable line, then one line per listed canary.
    pub fn lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "{} words={} canaries={}",
            markers::STRAY,
            self.words,
            self.canaries
        )];
        for (addr, c) in &self.hits {
            v.push(format!(
                "{} addr={addr:#x} word={:#018x} slot={:#x} gen^off={:#010x}",
                markers::STRAY_HIT,
                c.word,
                c.slot,
                c.gen_xor_off
            ));
        }
        v
    }

    /// A one-line summary for humans (and KTAP diagnostics).
    pub fn summary(&self) -> String {
        format!(
            "{} MiB of fresh anonymous memory, {} pass(es) in {:.1} s: {} canary word(s), \
             {} non-zero word(s) at most in one pass",
            self.bytes >> 20,
            self.passes,
            self.elapsed.as_secs_f64(),
            self.canaries,
            self.nonzero
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Canaries of MR `key` for MR offsets [o0, o0 + 8*count), written as
    /// the scrubber does: at byte `at + (o - o0)` of `mem`, little-endian.
    fn put_canaries(mem: &mut [u8], at: usize, key: u64, o0: u64, count: usize) {
        let seed = abi::pl_scrub_seed(key);
        for k in 0..count {
            let o = o0 + 8 * k as u64;
            let p = at + 8 * k;
            mem[p..p + 8].copy_from_slice(&(seed ^ o).to_le_bytes());
        }
    }

    fn scan_bytes(mem: &[u8], keep: usize) -> Scan {
        assert_eq!(mem.len() % 8, 0);
        scan(
            |i| u64::from_le_bytes(mem[8 * i..8 * i + 8].try_into().unwrap()),
            mem.len() / 8,
            keep,
        )
    }

    /// xorshift64*: a fixed stream of random words.
    fn random_words(n: usize, mut x: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * n);
        for _ in 0..n {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out
    }

    #[test]
    fn canary_words_decode_to_their_slot() {
        let key = 0x0000_0007_0000_002a_u64; // generation 7, slot 42
        let w = abi::pl_scrub_seed(key) ^ 0x1230;
        assert_eq!(canary_slot(w), Some(42));
        assert_eq!(w as u32, 7 ^ 0x1230, "low half = generation ^ offset");
        assert_eq!(canary_slot(0), None, "zero names no slot");
        assert_eq!(canary_slot(u64::MAX), None);
        let big = abi::pl_scrub_seed(0x1_0000_0000 | u64::from(SLOT_LIMIT));
        assert_eq!(
            canary_slot(big),
            None,
            "slot {SLOT_LIMIT} is beyond the table"
        );
    }

    #[test]
    fn offset_steps() {
        for o in (0u32..1 << 20).step_by(8) {
            assert!(is_offset_step(o ^ (o + 8)), "o={o:#x}");
        }
        for x in [0u32, 8 | 32, 4, 0x18 | 0x100, 0xffff_fff0, 1] {
            assert!(!is_offset_step(x), "{x:#x}");
        }
    }

    #[test]
    fn finds_a_page_of_canaries() {
        let mut mem = vec![0u8; 4 * PAGE];
        let key = 0x0000_0003_0000_0011_u64;
        // MR offset 8192 lands on page 1 of the scanned memory (first page
        // offset 0: the word sits where its MR offset would).
        put_canaries(&mut mem, PAGE, key, 8192, PAGE / 8);
        let s = scan_bytes(&mem, 10);
        assert_eq!(s.words, 4 * PAGE / 8);
        assert_eq!(s.nonzero, PAGE / 8);
        assert_eq!(s.canaries, PAGE / 8);
        assert_eq!(s.hits.len(), 10);
        let c = s.hits[0];
        assert_eq!(c.offset, PAGE);
        assert_eq!(c.slot, 0x11);
        assert_eq!(c.gen_xor_off, 3 ^ 8192);
        assert_eq!(s.hits[1].gen_xor_off, 3 ^ (8192 + 8));
    }

    #[test]
    fn finds_canaries_at_odd_alignment_and_page_edges() {
        let mut mem = vec![0u8; 3 * PAGE];
        let key = 0x0000_0001_0000_0002_u64;
        // An MR with first_page_offset 3: its words straddle ours.
        put_canaries(&mut mem, PAGE + 3, key, 0, 4);
        // Two canaries in the last 16 bytes of page 2, ending the memory.
        put_canaries(&mut mem, 3 * PAGE - 16, key, 4080, 2);
        let s = scan_bytes(&mem, 100);
        let offs: Vec<usize> = s.hits.iter().map(|c| c.offset).collect();
        assert_eq!(
            offs,
            vec![
                PAGE + 3,
                PAGE + 11,
                PAGE + 19,
                PAGE + 27,
                3 * PAGE - 16,
                3 * PAGE - 8
            ]
        );
        assert!(s.hits.iter().all(|c| c.slot == 2));
        assert_eq!(s.canaries, 6);
    }

    #[test]
    fn a_run_split_by_a_page_boundary_is_found_on_both_sides() {
        let mut mem = vec![0u8; 2 * PAGE];
        let key = 0x0000_0009_0000_0005_u64;
        put_canaries(&mut mem, PAGE - 16, key, 4080, 4);
        let s = scan_bytes(&mem, 10);
        assert_eq!(s.canaries, 4, "{:?}", s.hits);
    }

    #[test]
    fn ignores_zero_memory() {
        let mem = vec![0u8; 8 * PAGE];
        let s = scan_bytes(&mem, 10);
        assert_eq!(
            s,
            Scan {
                words: 8 * PAGE / 8,
                ..Scan::default()
            }
        );
    }

    #[test]
    fn ignores_random_words() {
        // 4 MiB of random words: about 8 of them name a small slot on their
        // own, none has a neighbour continuing its sequence.
        let mem = random_words(1 << 19, 0x9e37_79b9_7f4a_7c15);
        let s = scan_bytes(&mem, 10);
        assert_eq!(s.canaries, 0, "{:?}", s.hits);
        assert_eq!(s.nonzero, 1 << 19);
        let lone = mem
            .chunks_exact(8)
            .filter(|c| canary_slot(u64::from_le_bytes((*c).try_into().unwrap())).is_some())
            .count();
        assert!(lone > 0, "the random words include canary-looking ones");
    }

    #[test]
    fn a_lone_canary_word_is_not_enough() {
        let mut mem = vec![0u8; PAGE];
        put_canaries(&mut mem, 64, 0x0000_0001_0000_0001, 64, 1);
        assert_eq!(scan_bytes(&mem, 10).canaries, 0);
        assert_eq!(scan_bytes(&mem, 10).nonzero, 1);
    }

    #[test]
    fn canaries_among_random_words_are_found() {
        let mut mem = random_words(2 * PAGE / 8, 42);
        put_canaries(&mut mem, 512, 0x0000_0004_0000_0100, 512, 8);
        let s = scan_bytes(&mem, 10);
        assert_eq!(s.canaries, 8, "{:?}", s.hits);
        assert!(s.hits.iter().all(|c| c.slot == 0x100));
    }

    #[test]
    fn report_lines() {
        let r = StrayReport {
            words: 100,
            canaries: 2,
            hits: vec![(
                0x7f00_0000_1000,
                Canary {
                    offset: 0,
                    word: 0x5343_5243_0000_0003,
                    slot: 1,
                    gen_xor_off: 3,
                },
            )],
            ..StrayReport::default()
        };
        let l = r.lines();
        assert_eq!(l[0], format!("{} words=100 canaries=2", markers::STRAY));
        assert_eq!(
            l[1],
            format!(
                "{} addr=0x7f0000001000 word=0x5343524300000003 slot=0x1 gen^off=0x00000003",
                markers::STRAY_HIT
            )
        );
    }

    #[test]
    fn bad_percent_is_refused() {
        assert!(run(0, Duration::ZERO)
            .unwrap_err()
            .contains("--mem-percent 0"));
        assert!(run(91, Duration::ZERO)
            .unwrap_err()
            .contains("--mem-percent 91"));
    }
}
