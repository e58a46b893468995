//! Rust mirror of `guest-driver/include/pinlease_uapi.h`: the ioctls of
//! `/dev/pinleaseN` and of the child fds they create.
//!
//! `tests/uapi_layout.rs` compiles the header with gcc and fails when a
//! struct size, field offset, field size, `PINLEASE_*` constant or ioctl
//! number differs from this file, or when either side has a name the other
//! lacks. Change both together.

use std::mem::{offset_of, size_of};

pub const PINLEASE_IOC_MAGIC: u32 = 0xB9;

/// PINLEASE_IOC_QUERY: the device's limits and this fd's context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinleaseQuery {
    pub abi_version: u32,
    pub page_size: u32,
    /// `PL_FEATURE_*`.
    pub features: u64,
    pub max_contexts: u32,
    pub max_mrs: u32,
    pub max_pages_per_mr: u32,
    pub max_leases: u32,
    pub max_children_per_context: u32,
    /// `PL_VIRTIO_ID_NATIVE` or `PL_VIRTIO_ID_CARRIER`.
    pub virtio_id: u32,
    /// This fd's device context handle.
    pub ctx: u64,
}

/// Short-term pin (no FOLL_LONGTERM); default is a long-term pin.
pub const PINLEASE_PIN_SHORTTERM: u32 = 1 << 0;
/// Pin without FOLL_WRITE (the device then may only read the MR).
pub const PINLEASE_PIN_READONLY: u32 = 1 << 1;
pub const PINLEASE_PIN_FLAGS_ALL: u32 = PINLEASE_PIN_SHORTTERM | PINLEASE_PIN_READONLY;
/// Let the device's canary scrubber write this MR (`PL_REG_SCRUB`,
/// docs/abi.md §5.9.1); needs `PL_ACCESS_WRITE`.
pub const PINLEASE_REG_SCRUB: u32 = 1 << 2;
/// Every `PinleaseRegMr::flags` bit.
pub const PINLEASE_REG_FLAGS_ALL: u32 = PINLEASE_PIN_FLAGS_ALL | PINLEASE_REG_SCRUB;

/// PINLEASE_IOC_REG_MR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinleaseRegMr {
    pub addr: u64,
    pub length: u64,
    /// `PL_ACCESS_*`.
    pub access: u32,
    /// `PINLEASE_PIN_*`, `PINLEASE_REG_SCRUB`.
    pub flags: u32,
    /// out: MR key.
    pub key: u64,
    /// out: covering lease, or 0.
    pub lease: u64,
    /// out: pages pinned.
    pub npages: u32,
    pub reserved: u32,
}

/// PINLEASE_IOC_DMA: one device operation between MRs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinleaseDma {
    pub op: u32,
    /// `PL_PATTERN_*` for FILL/VERIFY.
    pub mode: u32,
    pub local_key: u64,
    pub local_offset: u64,
    pub remote_key: u64,
    pub remote_offset: u64,
    pub length: u64,
    pub operand: u64,
    pub swap: u64,
    /// out: COMPARE_SWAP/FETCH_ADD: `result[0]` = original value;
    /// VERIFY: mismatches, first bad offset, first bad value.
    pub result: [u64; 3],
}

/// PINLEASE_IOC_IMPORT_MR: an MR of this context aliasing an export fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinleaseImportMr {
    pub export_fd: i32,
    pub access: u32,
    /// out.
    pub key: u64,
}

/// PINLEASE_IOC_LEASE_TAKE: an FL_LAYOUT lease on `data_fd`'s file, held
/// by the device fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinleaseLeaseTake {
    pub data_fd: i32,
    /// `PL_POLICY_*`.
    pub policy: u32,
    pub start: u64,
    /// 0: to EOF.
    pub length: u64,
    /// out: the lease handle.
    pub lease: u64,
}

// ---- ioctl numbers (asm-generic/ioctl.h encoding, as on x86 and arm64) -------

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZEBITS));
    (dir << IOC_DIRSHIFT)
        | (PINLEASE_IOC_MAGIC << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

pub const PINLEASE_IOC_QUERY: u32 = ioc(IOC_READ, 0x00, size_of::<PinleaseQuery>());
pub const PINLEASE_IOC_REG_MR: u32 = ioc(IOC_READ | IOC_WRITE, 0x01, size_of::<PinleaseRegMr>());
/// Argument: pointer to the u64 MR key.
pub const PINLEASE_IOC_DEREG_MR: u32 = ioc(IOC_WRITE, 0x02, size_of::<u64>());
pub const PINLEASE_IOC_DMA: u32 = ioc(IOC_READ | IOC_WRITE, 0x03, size_of::<PinleaseDma>());
/// Returns a new event-channel fd (O_CLOEXEC).
pub const PINLEASE_IOC_EVENT_FD: u32 = ioc(IOC_NONE, 0x04, 0);
/// Argument: pointer to the u64 MR key. Returns an export fd (O_CLOEXEC).
pub const PINLEASE_IOC_EXPORT_MR: u32 = ioc(IOC_WRITE, 0x05, size_of::<u64>());
pub const PINLEASE_IOC_IMPORT_MR: u32 =
    ioc(IOC_READ | IOC_WRITE, 0x06, size_of::<PinleaseImportMr>());

pub const PINLEASE_IOC_LEASE_TAKE: u32 =
    ioc(IOC_READ | IOC_WRITE, 0x07, size_of::<PinleaseLeaseTake>());
/// Argument: pointer to the u64 lease handle.
pub const PINLEASE_IOC_LEASE_RELEASE: u32 = ioc(IOC_WRITE, 0x08, size_of::<u64>());

/// Name of an ioctl request number of this UAPI, for error messages.
pub fn ioctl_name(req: u32) -> &'static str {
    match req {
        PINLEASE_IOC_QUERY => "PINLEASE_IOC_QUERY",
        PINLEASE_IOC_REG_MR => "PINLEASE_IOC_REG_MR",
        PINLEASE_IOC_DEREG_MR => "PINLEASE_IOC_DEREG_MR",
        PINLEASE_IOC_DMA => "PINLEASE_IOC_DMA",
        PINLEASE_IOC_EVENT_FD => "PINLEASE_IOC_EVENT_FD",
        PINLEASE_IOC_EXPORT_MR => "PINLEASE_IOC_EXPORT_MR",
        PINLEASE_IOC_IMPORT_MR => "PINLEASE_IOC_IMPORT_MR",
        PINLEASE_IOC_LEASE_TAKE => "PINLEASE_IOC_LEASE_TAKE",
        PINLEASE_IOC_LEASE_RELEASE => "PINLEASE_IOC_LEASE_RELEASE",
        _ => "unknown ioctl",
    }
}

macro_rules! layout {
    ($out:ident, $c:literal, $t:ty, [$($f:ident),* $(,)?]) => {{
        $out.push(($c, "-", 0, size_of::<$t>()));
        $(
            $out.push(($c, stringify!($f), offset_of!($t, $f), {
                let v = <$t>::default();
                std::mem::size_of_val(&v.$f)
            }));
        )*
    }};
}

/// (C struct name, field or "-" for the struct itself, offset, size).
pub fn layout_table() -> Vec<(&'static str, &'static str, usize, usize)> {
    let mut out = Vec::new();
    layout!(
        out,
        "pinlease_query",
        PinleaseQuery,
        [
            abi_version,
            page_size,
            features,
            max_contexts,
            max_mrs,
            max_pages_per_mr,
            max_leases,
            max_children_per_context,
            virtio_id,
            ctx,
        ]
    );
    layout!(
        out,
        "pinlease_reg_mr",
        PinleaseRegMr,
        [addr, length, access, flags, key, lease, npages, reserved]
    );
    layout!(
        out,
        "pinlease_dma",
        PinleaseDma,
        [
            op,
            mode,
            local_key,
            local_offset,
            remote_key,
            remote_offset,
            length,
            operand,
            swap,
            result,
        ]
    );
    layout!(
        out,
        "pinlease_import_mr",
        PinleaseImportMr,
        [export_fd, access, key]
    );
    layout!(
        out,
        "pinlease_lease_take",
        PinleaseLeaseTake,
        [data_fd, policy, start, length, lease]
    );
    out
}

/// Every `PINLEASE_*` macro of the header with its value.
pub fn constant_table() -> Vec<(&'static str, u64)> {
    vec![
        ("PINLEASE_IOC_MAGIC", PINLEASE_IOC_MAGIC.into()),
        ("PINLEASE_PIN_SHORTTERM", PINLEASE_PIN_SHORTTERM.into()),
        ("PINLEASE_PIN_READONLY", PINLEASE_PIN_READONLY.into()),
        ("PINLEASE_PIN_FLAGS_ALL", PINLEASE_PIN_FLAGS_ALL.into()),
        ("PINLEASE_REG_SCRUB", PINLEASE_REG_SCRUB.into()),
        ("PINLEASE_REG_FLAGS_ALL", PINLEASE_REG_FLAGS_ALL.into()),
        ("PINLEASE_IOC_QUERY", PINLEASE_IOC_QUERY.into()),
        ("PINLEASE_IOC_REG_MR", PINLEASE_IOC_REG_MR.into()),
        ("PINLEASE_IOC_DEREG_MR", PINLEASE_IOC_DEREG_MR.into()),
        ("PINLEASE_IOC_DMA", PINLEASE_IOC_DMA.into()),
        ("PINLEASE_IOC_EVENT_FD", PINLEASE_IOC_EVENT_FD.into()),
        ("PINLEASE_IOC_EXPORT_MR", PINLEASE_IOC_EXPORT_MR.into()),
        ("PINLEASE_IOC_IMPORT_MR", PINLEASE_IOC_IMPORT_MR.into()),
        ("PINLEASE_IOC_LEASE_TAKE", PINLEASE_IOC_LEASE_TAKE.into()),
        (
            "PINLEASE_IOC_LEASE_RELEASE",
            PINLEASE_IOC_LEASE_RELEASE.into(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ioctl_numbers() {
        // _IOR(0xB9, 0, 48-byte struct) by hand.
        assert_eq!(size_of::<PinleaseQuery>(), 48);
        assert_eq!(PINLEASE_IOC_QUERY, (2 << 30) | (48 << 16) | (0xB9 << 8));
        assert_eq!(PINLEASE_IOC_EVENT_FD, 0xB904);
        assert_eq!(ioctl_name(PINLEASE_IOC_DMA), "PINLEASE_IOC_DMA");
    }
}
