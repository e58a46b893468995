//! [`GuestRam`] over vm-memory's mmap-backed guest memory: the one
//! implementation the daemon and the tests use.

use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::model::memory::{GuestRam, RamError};

/// A snapshot of the frontend's memory map. Holding it keeps every region
/// mapped (vm-memory regions are reference counted), so an access that
/// started before a map change never touches an unmapped address.
pub struct MmapRam {
    mem: GuestMemoryMmap<()>,
}

impl MmapRam {
    pub fn new(mem: GuestMemoryMmap<()>) -> Self {
        MmapRam { mem }
    }

    /// Host address of `[gpa, gpa + len)` when it lies inside one region.
    fn host_ptr(&self, gpa: u64, len: u64) -> Result<*mut u8, RamError> {
        match self.host_run(gpa, len) {
            Ok((p, n)) if n == len => Ok(p),
            _ => Err(RamError { gpa, len }),
        }
    }

    /// Host address of `gpa` and how many bytes from there, at most `len`,
    /// lie in the same region (a range may continue in an adjacent one).
    fn host_run(&self, gpa: u64, len: u64) -> Result<(*mut u8, u64), RamError> {
        let err = RamError { gpa, len };
        gpa.checked_add(len).ok_or(err)?;
        let region = self.mem.find_region(GuestAddress(gpa)).ok_or(err)?;
        let offset = gpa - region.start_addr().0;
        let n = len.min(region.len() - offset);
        // `get_host_address` bounds-checks the offset against the region.
        let p = region
            .get_host_address(vm_memory::MemoryRegionAddress(offset))
            .map_err(|_| err)?;
        Ok((p, n))
    }

    /// True when `[gpa, gpa + len)` is guest memory, possibly spanning
    /// adjacent regions.
    fn covered(&self, gpa: u64, len: u64) -> bool {
        let mut done = 0;
        while done < len {
            match self.host_run(gpa + done, len - done) {
                Ok((_, n)) => done += n,
                Err(_) => return false,
            }
        }
        true
    }

    /// Calls `f(host pointer, bytes done so far, n)` for each piece of
    /// `[gpa, gpa + len)` that lies in one region, in order; fails before
    /// calling `f` at all unless the whole range is guest memory.
    fn for_each_run(
        &self,
        gpa: u64,
        len: u64,
        mut f: impl FnMut(*mut u8, u64, u64),
    ) -> Result<(), RamError> {
        if !self.covered(gpa, len) {
            return Err(RamError { gpa, len });
        }
        let mut done = 0;
        while done < len {
            let (p, n) = self.host_run(gpa + done, len - done)?;
            f(p, done, n);
            done += n;
        }
        Ok(())
    }

    fn atomic_u64(&self, gpa: u64) -> Result<&AtomicU64, RamError> {
        if !gpa.is_multiple_of(8) {
            return Err(RamError { gpa, len: 8 });
        }
        let p = self.host_ptr(gpa, 8)?;
        // SAFETY: p is 8-byte aligned (gpa is, and regions are page aligned
        // in both guest-physical and host-virtual space), points at 8 mapped
        // bytes that live as long as self (the region's mapping is owned by
        // self.mem), and AtomicU64 has the layout of u64. Guest CPUs access
        // the same word with their own atomics, as with real device DMA.
        Ok(unsafe { &*(p as *const AtomicU64) })
    }
}

impl GuestRam for MmapRam {
    fn contains(&self, gpa: u64, len: u64) -> bool {
        self.covered(gpa, len)
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), RamError> {
        let out = buf.as_mut_ptr();
        self.for_each_run(gpa, buf.len() as u64, |p, at, n| {
            // SAFETY: [p, p + n) is mapped for self's lifetime (host_run
            // checked it lies in one region); out[at..at + n] is inside buf,
            // a distinct host buffer.
            unsafe { std::ptr::copy_nonoverlapping(p, out.add(at as usize), n as usize) }
        })
    }

    fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), RamError> {
        let src = buf.as_ptr();
        self.for_each_run(gpa, buf.len() as u64, |p, at, n| {
            // SAFETY: as in read; the destination is guest memory, never a
            // Rust reference, so the guest racing with us cannot break Rust
            // aliasing.
            unsafe { std::ptr::copy_nonoverlapping(src.add(at as usize), p, n as usize) }
        })
    }

    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), RamError> {
        if !self.covered(src, len) {
            return Err(RamError { gpa: src, len });
        }
        if !self.covered(dst, len) {
            return Err(RamError { gpa: dst, len });
        }
        let mut done = 0;
        while done < len {
            let (s, sn) = self.host_run(src + done, len - done)?;
            let (d, dn) = self.host_run(dst + done, len - done)?;
            let n = sn.min(dn);
            // SAFETY: both pieces are mapped for self's lifetime and lie in
            // one region each; ptr::copy allows overlap (two MRs may alias
            // the same guest page).
            unsafe { std::ptr::copy(s, d, n as usize) };
            done += n;
        }
        Ok(())
    }

    fn compare_swap_u64(&self, gpa: u64, expected: u64, new: u64) -> Result<u64, RamError> {
        let a = self.atomic_u64(gpa)?;
        let expected = expected.to_le();
        let new = new.to_le();
        Ok(
            match a.compare_exchange(expected, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(v) | Err(v) => u64::from_le(v),
            },
        )
    }

    fn fetch_add_u64(&self, gpa: u64, add: u64) -> Result<u64, RamError> {
        let a = self.atomic_u64(gpa)?;
        // Little-endian hosts only (see abi.rs), so native add is LE add.
        Ok(a.fetch_add(add, Ordering::SeqCst))
    }

    fn regions(&self) -> Vec<(u64, u64)> {
        self.mem
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect()
    }
}

#[cfg(test)]
pub(crate) fn test_ram(regions: &[(u64, usize)]) -> MmapRam {
    let ranges: Vec<(GuestAddress, usize)> =
        regions.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    MmapRam::new(GuestMemoryMmap::from_ranges(&ranges).expect("anonymous guest memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_outside_or_across_regions_fail() {
        let ram = test_ram(&[(0, 0x10000), (0x20000, 0x10000)]);
        assert!(ram.contains(0, 0x10000));
        assert!(
            !ram.contains(0xf000, 0x2000),
            "crosses into the hole after region 0"
        );
        assert!(!ram.contains(0x10000, 1), "hole between regions");
        assert!(!ram.contains(u64::MAX - 3, 8), "overflowing range");
        let mut b = [0u8; 16];
        assert_eq!(
            ram.read(0x30000, &mut b),
            Err(RamError {
                gpa: 0x30000,
                len: 16
            })
        );
        assert!(ram.write(0x2fff8, &b).is_err());
        assert!(ram.copy(0, 0x1fff0, 32).is_err());
    }

    #[test]
    fn accesses_split_at_the_seam_of_adjacent_regions() {
        let ram = test_ram(&[(0, 0x10000), (0x10000, 0x10000)]);
        assert!(ram.contains(0xf000, 0x2000));
        let data: Vec<u8> = (0..0x3000u32).map(|i| (i * 7) as u8).collect();
        ram.write(0xf800, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        ram.read(0xf800, &mut back).unwrap();
        assert_eq!(back, data);
        ram.copy(0xf800, 0x1000, 0x3000).unwrap();
        ram.copy(0x1000, 0xfc00, 0x3000).unwrap();
        ram.read(0xfc00, &mut back).unwrap();
        assert_eq!(back, data);
        assert!(ram.copy(0x1000, 0x1f000, 0x2000).is_err(), "past the end");
    }

    #[test]
    fn read_write_copy_and_atomics() {
        let ram = test_ram(&[(0, 0x10000)]);
        ram.write(0x100, b"pinlease").unwrap();
        ram.copy(0x100, 0x2000, 8).unwrap();
        let mut b = [0u8; 8];
        ram.read(0x2000, &mut b).unwrap();
        assert_eq!(&b, b"pinlease");
        ram.write(0x3000, &5u64.to_le_bytes()).unwrap();
        assert_eq!(ram.compare_swap_u64(0x3000, 4, 9).unwrap(), 5);
        assert_eq!(ram.compare_swap_u64(0x3000, 5, 9).unwrap(), 5);
        assert_eq!(ram.fetch_add_u64(0x3000, 3).unwrap(), 9);
        ram.read(0x3000, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 12);
        assert!(ram.fetch_add_u64(0x3004, 1).is_err(), "misaligned atomic");
    }
}
