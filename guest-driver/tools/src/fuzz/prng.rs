//! The fuzzer's random numbers: SplitMix64, small and fully determined by
//! its seed (no crate: the guest tool stays on pinlease-abi + libc).

/// SplitMix64 (Steele, Lea, Flood 2014): one u64 of state, every seed
/// (0 included) gives a full-period sequence.
#[derive(Clone, Debug)]
pub struct Prng {
    state: u64,
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// Mixes a run seed with the numbers that place a thread in the run
/// (process slot, its generation after kills, thread index), so every
/// thread has its own sequence, the same on every run with that seed.
pub fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    let mut s = Prng::new(seed);
    let mut out = s.next_u64();
    for &p in parts {
        s = Prng::new(out ^ p.wrapping_mul(GOLDEN));
        out = s.next_u64();
    }
    out
}

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n is 0); Lemire's multiply-shift, whose
    /// bias is below 2^-32 for the small n the fuzzer asks for.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_other_seed_other_sequence() {
        let a: Vec<u64> = {
            let mut p = Prng::new(42);
            (0..64).map(|_| p.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut p = Prng::new(42);
            (0..64).map(|_| p.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut p = Prng::new(43);
            (0..64).map(|_| p.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        // SplitMix64's published first output for seed 0.
        assert_eq!(Prng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn below_stays_in_range_and_reaches_every_value() {
        let mut p = Prng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = p.below(10);
            assert!(v < 10);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(p.below(0), 0);
    }

    #[test]
    fn derived_seeds_differ_per_place() {
        let a = derive_seed(1, &[0, 0, 0]);
        assert_eq!(a, derive_seed(1, &[0, 0, 0]));
        assert_ne!(a, derive_seed(1, &[0, 0, 1]));
        assert_ne!(a, derive_seed(1, &[1, 0, 0]));
        assert_ne!(a, derive_seed(2, &[0, 0, 0]));
        assert_ne!(derive_seed(1, &[0, 1]), derive_seed(1, &[1, 0]));
    }
}
