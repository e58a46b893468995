//! The guest-memory interface the device model works through.
//!
//! The model never sees vm-memory or vhost types: the vhost-user glue hands
//! it an implementation of [`GuestRam`] for the memory map the frontend set
//! (see `crate::guest_ram`), and hands it a new one on every map change.

use std::fmt;

/// Why a guest-memory access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamError {
    /// First guest-physical address of the access.
    pub gpa: u64,
    /// Length of the access in bytes.
    pub len: u64,
}

impl fmt::Display for RamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest memory access [{:#x}, +{:#x}) is outside the guest memory map",
            self.gpa, self.len
        )
    }
}

impl std::error::Error for RamError {}

/// Guest-physical memory as the device sees it: bounds-checked against the
/// current memory map on every access.
///
/// Guest memory is shared with a running guest, so the device's accesses
/// race with the guest's CPUs exactly as real DMA does; implementations move
/// bytes with raw copies and never hand out Rust references into it.
pub trait GuestRam: Send + Sync {
    /// True when `[gpa, gpa + len)` is guest memory (it may span adjacent
    /// regions: every access below splits at region boundaries).
    fn contains(&self, gpa: u64, len: u64) -> bool;
    /// Copies guest memory into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), RamError>;
    /// Copies `buf` into guest memory.
    fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), RamError>;
    /// Copies `len` bytes from `src` to `dst`, both in guest memory; the
    /// ranges may overlap (memmove semantics).
    fn copy(&self, src: u64, dst: u64, len: u64) -> Result<(), RamError>;
    /// Atomic compare-and-swap of the little-endian u64 at 8-byte aligned
    /// `gpa`; returns the value seen before.
    fn compare_swap_u64(&self, gpa: u64, expected: u64, new: u64) -> Result<u64, RamError>;
    /// Atomic fetch-and-add of the little-endian u64 at 8-byte aligned `gpa`;
    /// returns the value seen before.
    fn fetch_add_u64(&self, gpa: u64, add: u64) -> Result<u64, RamError>;
    /// The mapped regions as (guest-physical start, length), for status.
    fn regions(&self) -> Vec<(u64, u64)>;
}
