//! Request, response and event layouts, and the [`Wire`] trait that reads
//! and writes them as bytes.

use std::mem::size_of;

use crate::PlConfig;

/// Every request starts with this header, in the readable part of a chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlReqHdr {
    pub opcode: u16,
    pub flags: u16,
    /// Must be 0: reserved for future use (the device rejects non-zero).
    pub reserved: u32,
    /// Context handle the request acts on (0 where none applies).
    pub ctx: u64,
    /// Driver's cookie, echoed in the response.
    pub tag: u64,
}

/// Every response starts with this header, in the writable part of a chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlRespHdr {
    /// `Status` value.
    pub status: u32,
    /// Bytes of opcode-specific body that follow the header.
    pub len: u32,
    pub tag: u64,
}

/// Identity of a file in the guest: enough to tell two files apart and to
/// tell a recycled inode number from the old file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlFileId {
    pub dev: u64,
    pub ino: u64,
    pub generation: u32,
    pub reserved: u32,
}

impl PlFileId {
    /// A file identity (`reserved` zero, as the device requires).
    pub const fn new(dev: u64, ino: u64, generation: u32) -> Self {
        PlFileId {
            dev,
            ino,
            generation,
            reserved: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlQueryDeviceResp {
    pub abi_version: u32,
    pub page_size: u32,
    pub features: u64,
    pub max_contexts: u32,
    pub max_mrs: u32,
    pub max_pages_per_mr: u32,
    pub max_leases: u32,
    pub max_children_per_context: u32,
    pub max_request_bytes: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlCreateContextReq {
    /// Guest pid of the opener, for display only.
    pub pid: u32,
    pub reserved: u32,
    /// Guest comm of the opener, NUL-padded, for display only.
    pub comm: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlHandleResp {
    pub handle: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlCloseContextResp {
    pub mrs_destroyed: u32,
    pub leases_released: u32,
    pub pages_unpinned: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlCreateChildReq {
    pub kind: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlHandleReq {
    pub handle: u64,
}

/// REG_MR: followed by `npages` u64 guest-physical page addresses, each
/// page-aligned. The MR covers `length` bytes starting `first_page_offset`
/// bytes into the first page.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlRegMrReq {
    pub access: u32,
    pub flags: u32,
    pub npages: u32,
    pub first_page_offset: u32,
    pub length: u64,
    pub file: PlFileId,
    pub file_offset: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlRegMrResp {
    pub key: u64,
    /// The lease of the same holder covering the file range, or 0.
    pub lease: u64,
}

/// WRITE moves `length` bytes local -> remote; READ moves remote -> local.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlDmaReq {
    pub local_key: u64,
    pub local_offset: u64,
    pub remote_key: u64,
    pub remote_offset: u64,
    pub length: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlAtomicReq {
    pub key: u64,
    /// 8-byte aligned offset in the MR.
    pub offset: u64,
    /// COMPARE_SWAP: expected value; FETCH_ADD: addend.
    pub operand: u64,
    /// COMPARE_SWAP: new value; FETCH_ADD: 0.
    pub swap: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlAtomicResp {
    pub original: u64,
}

/// FILL / VERIFY: `offset` and `length` are multiples of 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlPatternReq {
    pub key: u64,
    pub offset: u64,
    pub length: u64,
    pub pattern: u64,
    pub mode: u32,
    pub reserved: u32,
}

impl PlPatternReq {
    /// FILL/VERIFY of `length` bytes at `offset` of MR `key` with `pattern`
    /// in `mode` (`PL_PATTERN_*`), `reserved` zero.
    pub const fn new(key: u64, offset: u64, length: u64, pattern: u64, mode: u32) -> Self {
        PlPatternReq {
            key,
            offset,
            length,
            pattern,
            mode,
            reserved: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlVerifyResp {
    pub mismatches: u64,
    /// MR offset of the first mismatching word, or u64::MAX.
    pub first_bad_offset: u64,
    pub first_bad_value: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlLeaseTakeReq {
    pub file: PlFileId,
    pub start: u64,
    /// 0 means "to the end of the file" (u64::MAX - start).
    pub length: u64,
    pub policy: u32,
    /// Guest pid of the process that took the lease, for display.
    pub owner_pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlLeaseReleaseReq {
    pub lease: u64,
    pub reason: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlLeaseBreakReq {
    pub file: PlFileId,
    pub start: u64,
    /// 0 means "to the end of the file".
    pub length: u64,
    pub reason: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlLeaseBreakResp {
    /// Leases that overlapped the range.
    pub leases: u32,
    /// Of those, leases still held (wait/timeout policy): non-zero tells
    /// the module to let the breaker wait. The status is OK either way.
    pub leases_held: u32,
    pub mrs_revoked: u32,
    pub reserved: u32,
    pub pages_unpinned: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlExportMrResp {
    pub export: u64,
    /// References the export holds after this call (1 when newly created).
    pub refs: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlImportMrReq {
    pub export: u64,
    pub access: u32,
    pub reserved: u32,
}

/// One event, written by the device into a buffer the driver posted on
/// queue 1. Fixed size; the meaning of `args` depends on `kind`:
/// - MR_REVOKED: [mr key, reason (PL_REVOKE_*), pages, lease or 0]
/// - LEASE_BROKEN: [lease, break reason (PL_BREAK_*), policy, MRs in range]
/// - LEASE_LOST: [lease, MRs still pinned, pages still pinned, 0]
/// - CONTEXT_TORN_DOWN: [MRs destroyed, leases released, pages unpinned, 0]
/// - FAULT_INJECTED: [fault point, action, rule id, 0]
/// - DEVICE_ERROR: [status, opcode, 0, 0]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlEvent {
    pub kind: u16,
    pub flags: u16,
    /// Events dropped before this one (with PL_EVENT_F_DROPPED).
    pub dropped: u32,
    /// Context the event concerns (0 for device-wide events).
    pub ctx: u64,
    /// Device-wide sequence number of delivered-or-queued events, from 1,
    /// without gaps: dropped events take no number, so loss is told only
    /// by PL_EVENT_F_DROPPED and `dropped`.
    pub seq: u64,
    pub args: [u64; 4],
}

/// Marks a plain-old-data ABI struct: every bit pattern is a valid value and
/// there is no padding the compiler could add behind our back.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs of integers (or arrays of them)
/// whose size equals the sum of their fields' sizes.
pub unsafe trait Wire: Copy + Default {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: Wire types are repr(C) POD without padding (trait contract).
        unsafe { std::slice::from_raw_parts(self as *const Self as *const u8, size_of::<Self>()) }
    }

    /// Reads a value from the start of `bytes`; None when too short.
    fn read_from(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        let mut v = Self::default();
        // SAFETY: any bit pattern is a valid Self (trait contract), the
        // source holds at least size_of::<Self>() bytes, and the regions
        // cannot overlap (v is a fresh local).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                &mut v as *mut Self as *mut u8,
                size_of::<Self>(),
            )
        };
        Some(v)
    }
}

macro_rules! wire {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: repr(C), integer fields only, laid out without padding;
            // tests/abi_layout.rs checks every size and offset against C.
            unsafe impl Wire for $t {}
        )*
    };
}

wire!(
    PlConfig,
    PlReqHdr,
    PlRespHdr,
    PlFileId,
    PlQueryDeviceResp,
    PlCreateContextReq,
    PlHandleResp,
    PlCloseContextResp,
    PlCreateChildReq,
    PlHandleReq,
    PlRegMrReq,
    PlRegMrResp,
    PlDmaReq,
    PlAtomicReq,
    PlAtomicResp,
    PlPatternReq,
    PlVerifyResp,
    PlLeaseTakeReq,
    PlLeaseReleaseReq,
    PlLeaseBreakReq,
    PlLeaseBreakResp,
    PlExportMrResp,
    PlImportMrReq,
    PlEvent,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_short_buffer_is_none() {
        let hdr = PlReqHdr {
            opcode: 7,
            ctx: 9,
            tag: 3,
            ..Default::default()
        };
        let b = hdr.as_bytes();
        assert_eq!(PlReqHdr::read_from(b), Some(hdr));
        assert_eq!(PlReqHdr::read_from(&b[..b.len() - 1]), None);
    }
}
