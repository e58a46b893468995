//! Device identity, config space, queues and limits.

use std::mem::size_of;

use crate::{PlRegMrReq, PlReqHdr};

/// Config space magic: the bytes `P I N L` read as a little-endian u32.
/// The module binds the carrier device (virtio id 41) only when it sees it.
pub const PL_MAGIC: u32 = 0x4c4e_4950;
/// Version of this ABI; bumped on any incompatible change.
pub const PL_ABI_VERSION: u16 = 1;
/// Virtio device id of native mode: 6 (`VIRTIO_ID_IOMEM`, "ioMemory"), an
/// id with no device type specified, no QEMU device and no Linux driver;
/// 42, which the spec reserves for RDMA, makes QEMU abort (docs/abi.md 2.1).
pub const PL_VIRTIO_ID_NATIVE: u32 = 6;
/// Virtio id of vhost-user-gpio-pci, the carrier on QEMU <= 10.1.
pub const PL_VIRTIO_ID_CARRIER: u32 = 41;

/// Queue 0: requests (readable request, writable response, one chain).
pub const PL_QUEUE_REQUEST: u16 = 0;
/// Queue 1: device-to-driver events (the driver posts writable buffers).
pub const PL_QUEUE_EVENT: u16 = 1;
pub const PL_NUM_QUEUES: usize = 2;
pub const PL_QUEUE_SIZE: u16 = 256;

/// Page size the device uses for page lists and pin accounting.
pub const PL_PAGE_SIZE: u64 = 4096;

/// 8-byte config space: fits the GPIO carrier's config size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlConfig {
    pub magic: u32,
    pub abi_version: u16,
    pub reserved: u16,
}

// ---- limits --------------------------------------------------------------------

pub const PL_MAX_CONTEXTS: u32 = 1024;
pub const PL_MAX_MRS: u32 = 1 << 16;
pub const PL_MAX_PAGES_PER_MR: u32 = 1 << 20;
pub const PL_MAX_LEASES: u32 = 1 << 21;
pub const PL_MAX_CHILDREN_PER_CONTEXT: u32 = 256;
/// Largest request: a REG_MR with the maximum page list.
pub const PL_MAX_REQUEST_BYTES: u32 =
    (size_of::<PlReqHdr>() + size_of::<PlRegMrReq>() + 8 * PL_MAX_PAGES_PER_MR as usize) as u32;
