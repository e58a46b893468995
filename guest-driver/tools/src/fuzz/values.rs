//! Edge values: the numbers at the borders of what the module checks
//! (zero, one, a page and its neighbours, the type's maxima, negative
//! numbers seen as unsigned, unaligned and huge lengths), mixed with valid
//! ones by the argument builders in `args.rs`.

use super::prng::Prng;

/// The page size the device accounts in (`PL_PAGE_SIZE`).
pub const PAGE: u64 = pinlease_abi::PL_PAGE_SIZE;

/// Edge values for a u64 field.
pub const U64_EDGES: [u64; 22] = [
    0,
    1,
    7,
    8,
    PAGE - 1,
    PAGE,
    PAGE + 1,
    2 * PAGE - 1,
    2 * PAGE,
    (1 << 20) * PAGE,
    ((1 << 20) + 1) * PAGE,
    u32::MAX as u64 - 1,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    i32::MAX as u64,
    i64::MAX as u64,
    i64::MIN as u64,
    u64::MAX - PAGE + 1,
    u64::MAX - 7,
    u64::MAX - 1,
    u64::MAX,
    // -PAGE seen unsigned, and a kernel address (x86-64 direct map).
    0xffff_8880_0000_0000,
];

/// Edge values for a u32 field.
pub const U32_EDGES: [u32; 12] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000 - 1,
];

/// Edge values for an fd field (`__s32`).
pub const FD_EDGES: [i32; 7] = [-1, -100, i32::MIN, i32::MAX, 0, 1, 1023];

/// A u64 edge value, or one near it (+-1..8).
pub fn edge_u64(p: &mut Prng) -> u64 {
    let v = *p.pick(&U64_EDGES);
    match p.below(4) {
        0 => v.wrapping_add(1 + p.below(8)),
        1 => v.wrapping_sub(1 + p.below(8)),
        _ => v,
    }
}

pub fn edge_u32(p: &mut Prng) -> u32 {
    *p.pick(&U32_EDGES)
}

/// Mostly small bit sets around `valid_bits`, sometimes any u32.
pub fn flags(p: &mut Prng, valid_bits: u32) -> u32 {
    match p.below(8) {
        0 => edge_u32(p),
        1 => valid_bits | (1 << p.below(32)),
        2 => p.next_u64() as u32,
        _ => (p.next_u64() as u32) & valid_bits,
    }
}

/// A length: mostly within `max` (page multiples or odd sizes), sometimes
/// an edge value.
pub fn length(p: &mut Prng, max: u64) -> u64 {
    match p.below(8) {
        0 | 1 => edge_u64(p),
        2 => (1 + p.below(max.max(1) / PAGE)) * PAGE,
        3 => 0,
        _ => 1 + p.below(max.max(1)),
    }
}

/// An offset into an object of `len` bytes: mostly inside it (8-aligned
/// half the time), sometimes at or past its end, sometimes an edge value.
pub fn offset(p: &mut Prng, len: u64) -> u64 {
    match p.below(10) {
        0 => edge_u64(p),
        1 => len,
        2 => len.wrapping_sub(1 + p.below(16)),
        3..=5 => p.below(len.max(1)) & !7,
        _ => p.below(len.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_produce_edges_and_valid_values() {
        let mut p = Prng::new(3);
        let lens: Vec<u64> = (0..2000).map(|_| length(&mut p, 64 * PAGE)).collect();
        assert!(lens.contains(&0));
        assert!(lens.contains(&u64::MAX));
        assert!(lens.iter().filter(|&&l| l > 0 && l <= 64 * PAGE).count() > 1000);
        let offs: Vec<u64> = (0..2000).map(|_| offset(&mut p, 4 * PAGE)).collect();
        assert!(offs.contains(&(4 * PAGE)));
        assert!(offs.iter().any(|o| o % 8 != 0 && *o < 4 * PAGE));
        let fl: Vec<u32> = (0..2000).map(|_| flags(&mut p, 0b111)).collect();
        assert!(fl.contains(&0));
        assert!(fl.iter().any(|f| f & !0b111 != 0));
    }
}
