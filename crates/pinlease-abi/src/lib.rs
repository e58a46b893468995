//! The pinlease wire ABI, Rust mirror.
//!
//! `docs/abi.md` is the written spec; `guest-driver/include/pinlease_abi.h`
//! is the C mirror the guest module includes. `tests/abi_layout.rs` compiles
//! the header with gcc and fails when any size or field offset differs from
//! the types here. Change all three together.
//!
//! Every multi-byte field is little-endian (virtio 1.x devices are LE; the
//! daemon only runs on x86_64/aarch64 hosts, both LE, so the `#[repr(C)]`
//! structs are read and written as they lie in memory). Every struct is
//! naturally aligned with explicit padding, so the C and Rust layouts cannot
//! drift through implicit padding.

use std::mem::size_of;

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

// ---- opcodes ----------------------------------------------------------------

/// Request opcodes. Values are ABI: never renumber.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Opcode {
    Nop = 0,
    QueryDevice = 1,
    CreateContext = 2,
    CloseContext = 3,
    ReleaseContext = 4,
    CreateChild = 5,
    DestroyChild = 6,
    RegMr = 7,
    DeregMr = 8,
    Write = 9,
    Read = 10,
    CompareSwap = 11,
    FetchAdd = 12,
    Fill = 13,
    Verify = 14,
    LeaseTake = 15,
    LeaseRelease = 16,
    LeaseBreak = 17,
    ExportMr = 18,
    ImportMr = 19,
}

impl Opcode {
    pub const ALL: [Opcode; 20] = [
        Opcode::Nop,
        Opcode::QueryDevice,
        Opcode::CreateContext,
        Opcode::CloseContext,
        Opcode::ReleaseContext,
        Opcode::CreateChild,
        Opcode::DestroyChild,
        Opcode::RegMr,
        Opcode::DeregMr,
        Opcode::Write,
        Opcode::Read,
        Opcode::CompareSwap,
        Opcode::FetchAdd,
        Opcode::Fill,
        Opcode::Verify,
        Opcode::LeaseTake,
        Opcode::LeaseRelease,
        Opcode::LeaseBreak,
        Opcode::ExportMr,
        Opcode::ImportMr,
    ];

    pub fn from_u16(v: u16) -> Option<Opcode> {
        Self::ALL.get(usize::from(v)).copied()
    }

    /// Size of the response body on success: fixed per opcode, so the
    /// device can refuse a too-small response buffer before acting.
    pub fn response_body_len(self) -> usize {
        match self {
            Opcode::Nop
            | Opcode::ReleaseContext
            | Opcode::DestroyChild
            | Opcode::DeregMr
            | Opcode::Write
            | Opcode::Read
            | Opcode::Fill
            | Opcode::LeaseRelease => 0,
            Opcode::QueryDevice => size_of::<PlQueryDeviceResp>(),
            Opcode::CreateContext | Opcode::CreateChild | Opcode::LeaseTake => {
                size_of::<PlHandleResp>()
            }
            Opcode::CloseContext => size_of::<PlCloseContextResp>(),
            Opcode::RegMr | Opcode::ImportMr => size_of::<PlRegMrResp>(),
            Opcode::CompareSwap | Opcode::FetchAdd => size_of::<PlAtomicResp>(),
            Opcode::Verify => size_of::<PlVerifyResp>(),
            Opcode::LeaseBreak => size_of::<PlLeaseBreakResp>(),
            Opcode::ExportMr => size_of::<PlExportMrResp>(),
        }
    }

    /// The name used in logs, status output and docs.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Nop => "NOP",
            Opcode::QueryDevice => "QUERY_DEVICE",
            Opcode::CreateContext => "CREATE_CONTEXT",
            Opcode::CloseContext => "CLOSE_CONTEXT",
            Opcode::ReleaseContext => "RELEASE_CONTEXT",
            Opcode::CreateChild => "CREATE_CHILD",
            Opcode::DestroyChild => "DESTROY_CHILD",
            Opcode::RegMr => "REG_MR",
            Opcode::DeregMr => "DEREG_MR",
            Opcode::Write => "WRITE",
            Opcode::Read => "READ",
            Opcode::CompareSwap => "COMPARE_SWAP",
            Opcode::FetchAdd => "FETCH_ADD",
            Opcode::Fill => "FILL",
            Opcode::Verify => "VERIFY",
            Opcode::LeaseTake => "LEASE_TAKE",
            Opcode::LeaseRelease => "LEASE_RELEASE",
            Opcode::LeaseBreak => "LEASE_BREAK",
            Opcode::ExportMr => "EXPORT_MR",
            Opcode::ImportMr => "IMPORT_MR",
        }
    }
}

// ---- status codes -----------------------------------------------------------

/// Response status: 0 or a Linux errno value, so the module can return
/// `-status` to user space unchanged. Values are ABI.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Ok = 0,
    /// Access flags of the MR forbid the operation, or the object belongs
    /// to another context.
    Perm = 1,
    /// No such handle, key, lease or export (never existed).
    NoEnt = 2,
    /// Guest memory could not be read or written (region gone mid-copy).
    Io = 5,
    /// Request too large (page count or length over a limit).
    TooBig = 7,
    /// Context handle never issued (a stale one gets ESTALE).
    BadF = 9,
    /// A table is full.
    NoMem = 12,
    /// Address outside guest memory, or outside the MR.
    Fault = 14,
    /// Object in use (children alive, lease being broken, wait-policy refusal).
    Busy = 16,
    /// Malformed request: wrong size, bad flags, misaligned atomic.
    Inval = 22,
    /// Offset + length overflows or exceeds the MR.
    Range = 34,
    /// Unknown opcode.
    NoSys = 38,
    /// The context is closing or closed (hardware lifetime over).
    Shutdown = 108,
    /// Handle or key was valid once; the object is gone (generation mismatch).
    Stale = 116,
    /// The MR was revoked before or during the operation.
    Canceled = 125,
}

impl Status {
    pub const ALL: [Status; 15] = [
        Status::Ok,
        Status::Perm,
        Status::NoEnt,
        Status::Io,
        Status::TooBig,
        Status::BadF,
        Status::NoMem,
        Status::Fault,
        Status::Busy,
        Status::Inval,
        Status::Range,
        Status::NoSys,
        Status::Shutdown,
        Status::Stale,
        Status::Canceled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Perm => "EPERM",
            Status::NoEnt => "ENOENT",
            Status::Io => "EIO",
            Status::TooBig => "E2BIG",
            Status::BadF => "EBADF",
            Status::NoMem => "ENOMEM",
            Status::Fault => "EFAULT",
            Status::Busy => "EBUSY",
            Status::Inval => "EINVAL",
            Status::Range => "ERANGE",
            Status::NoSys => "ENOSYS",
            Status::Shutdown => "ESHUTDOWN",
            Status::Stale => "ESTALE",
            Status::Canceled => "ECANCELED",
        }
    }

    pub fn from_u32(v: u32) -> Option<Status> {
        Self::ALL.iter().copied().find(|s| *s as u32 == v)
    }
}

// ---- flags and enumerations ---------------------------------------------------

/// MR access: the device may read the MR (source of WRITE, target of READ's copy-out).
pub const PL_ACCESS_READ: u32 = 1 << 0;
/// MR access: the device may write the MR.
pub const PL_ACCESS_WRITE: u32 = 1 << 1;
/// MR access: the device may do atomics (COMPARE_SWAP, FETCH_ADD) on the MR.
pub const PL_ACCESS_ATOMIC: u32 = 1 << 2;
pub const PL_ACCESS_ALL: u32 = PL_ACCESS_READ | PL_ACCESS_WRITE | PL_ACCESS_ATOMIC;

/// REG_MR: the file identity fields are valid (the MR maps a file range).
pub const PL_REG_HAS_FILE: u32 = 1 << 0;
/// REG_MR: the driver pinned with FOLL_LONGTERM (informational, shown in status).
pub const PL_REG_LONGTERM: u32 = 1 << 1;
/// REG_MR: the device's scrubber may write canaries into the MR on its own
/// (`pinlease serve --scrub-period-ms`); needs `PL_ACCESS_WRITE`.
pub const PL_REG_SCRUB: u32 = 1 << 2;
pub const PL_REG_FLAGS_ALL: u32 = PL_REG_HAS_FILE | PL_REG_LONGTERM | PL_REG_SCRUB;

/// Scrub canaries: the word at MR offset `o` of a `PL_REG_SCRUB` MR is
/// `pl_scrub_seed(key) ^ o`, with `pl_scrub_seed(key) =
/// PL_SCRUB_SEED_MAGIC ^ rotl64(key, 32)`: the high half is
/// `0x53435242 ^ slot` (the key's slot), the low half `generation ^ o`.
pub const PL_SCRUB_SEED_MAGIC: u64 = 0x5343_5242_0000_0000;

/// The scrub canary seed of the MR with key `key` (docs/abi.md §5.9.1).
pub const fn pl_scrub_seed(key: u64) -> u64 {
    PL_SCRUB_SEED_MAGIC ^ key.rotate_left(32)
}

/// CREATE_CHILD kinds.
pub const PL_CHILD_EVENT_CHANNEL: u32 = 1;
/// Export handles are made by EXPORT_MR, never by CREATE_CHILD, but share
/// the child handle space and are destroyed with DESTROY_CHILD.
pub const PL_CHILD_MR_EXPORT: u32 = 2;

/// Lease policies, applied when the lease is broken.
pub const PL_POLICY_REVOKE: u32 = 1;
pub const PL_POLICY_WAIT: u32 = 2;
pub const PL_POLICY_TIMEOUT: u32 = 3;

/// LEASE_RELEASE reasons.
pub const PL_RELEASE_HOLDER: u32 = 0;
/// The kernel removed the lease (lease-break-time ran out) while pins remain.
pub const PL_RELEASE_LOST: u32 = 1;

/// LEASE_BREAK reasons (what the guest kernel was doing).
pub const PL_BREAK_TRUNCATE: u32 = 1;
pub const PL_BREAK_PUNCH_HOLE: u32 = 2;
pub const PL_BREAK_COLLAPSE_RANGE: u32 = 3;
pub const PL_BREAK_INSERT_RANGE: u32 = 4;
pub const PL_BREAK_ZERO_RANGE: u32 = 5;
pub const PL_BREAK_REFLINK: u32 = 6;
pub const PL_BREAK_WRITE: u32 = 7;
pub const PL_BREAK_OTHER: u32 = 8;
/// A spurious break raised by the device's fault plan (docs/faults.md), not
/// by the guest kernel.
pub const PL_BREAK_INJECTED: u32 = 9;

/// FILL / VERIFY pattern modes.
/// Every 8-byte word holds `pattern`.
pub const PL_PATTERN_CONST: u32 = 0;
/// Word at MR offset `o` (o multiple of 8) holds `pattern ^ o`: catches
/// data landing in the wrong page, not only wrong bytes.
pub const PL_PATTERN_OFFSET_XOR: u32 = 1;

/// Device feature bits reported by QUERY_DEVICE.
pub const PL_FEATURE_EXPORT: u64 = 1 << 0;
pub const PL_FEATURE_LEASES: u64 = 1 << 1;
pub const PL_FEATURE_ATOMICS: u64 = 1 << 2;
pub const PL_FEATURE_PATTERN: u64 = 1 << 3;
pub const PL_FEATURES_ALL: u64 =
    PL_FEATURE_EXPORT | PL_FEATURE_LEASES | PL_FEATURE_ATOMICS | PL_FEATURE_PATTERN;

/// Event types (queue 1).
pub const PL_EVENT_MR_REVOKED: u16 = 1;
pub const PL_EVENT_LEASE_BROKEN: u16 = 2;
pub const PL_EVENT_LEASE_LOST: u16 = 3;
pub const PL_EVENT_CONTEXT_TORN_DOWN: u16 = 4;
pub const PL_EVENT_FAULT_INJECTED: u16 = 5;
pub const PL_EVENT_DEVICE_ERROR: u16 = 6;
/// The scrubber wrote into an MR under a LOST lease (once per lease).
pub const PL_EVENT_SCRUB_LOST_ACCESS: u16 = 7;
/// The device needs a reset (virtio DEVICE_NEEDS_RESET, raised by the fault
/// plan): every request is answered EIO until the driver resets the device.
pub const PL_EVENT_NEEDS_RESET: u16 = 8;

/// Event flag: events were dropped before this one (no buffer was posted
/// and the device's backlog was full); `dropped` counts them.
pub const PL_EVENT_F_DROPPED: u16 = 1 << 0;

/// MR_REVOKED reasons.
pub const PL_REVOKE_LEASE_BREAK: u64 = 1;
pub const PL_REVOKE_MEMORY_MAP: u64 = 2;
pub const PL_REVOKE_CONTEXT_CLOSE: u64 = 3;
pub const PL_REVOKE_SOURCE_GONE: u64 = 4;
/// Revoked by the device's fault plan (docs/faults.md).
pub const PL_REVOKE_INJECTED: u64 = 5;

// ---- request and response layouts --------------------------------------------

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

// ---- limits --------------------------------------------------------------------

pub const PL_MAX_CONTEXTS: u32 = 1024;
pub const PL_MAX_MRS: u32 = 1 << 16;
pub const PL_MAX_PAGES_PER_MR: u32 = 1 << 20;
pub const PL_MAX_LEASES: u32 = 1 << 21;
pub const PL_MAX_CHILDREN_PER_CONTEXT: u32 = 256;
/// Largest request: a REG_MR with the maximum page list.
pub const PL_MAX_REQUEST_BYTES: u32 =
    (size_of::<PlReqHdr>() + size_of::<PlRegMrReq>() + 8 * PL_MAX_PAGES_PER_MR as usize) as u32;

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

/// Field offsets and sizes of every ABI struct, for the layout test and for
/// `pinlease abi-layout`. One line per field: `struct field offset size`, and
/// one per struct: `struct - 0 size`.
pub fn layout_table() -> Vec<(&'static str, &'static str, usize, usize)> {
    use std::mem::offset_of;
    macro_rules! rows {
        ($v:ident; $($t:ident { $($f:ident),* })*) => {
            $(
                $v.push((stringify!($t), "-", 0, size_of::<$t>()));
                $(
                    $v.push((stringify!($t), stringify!($f), offset_of!($t, $f), field_size(|s: &$t| &s.$f)));
                )*
            )*
        };
    }
    fn field_size<S, F>(_f: fn(&S) -> &F) -> usize {
        size_of::<F>()
    }
    let mut v = Vec::new();
    rows!(v;
        PlConfig { magic, abi_version, reserved }
        PlReqHdr { opcode, flags, reserved, ctx, tag }
        PlRespHdr { status, len, tag }
        PlFileId { dev, ino, generation, reserved }
        PlQueryDeviceResp { abi_version, page_size, features, max_contexts, max_mrs, max_pages_per_mr, max_leases, max_children_per_context, max_request_bytes }
        PlCreateContextReq { pid, reserved, comm }
        PlHandleResp { handle }
        PlCloseContextResp { mrs_destroyed, leases_released, pages_unpinned }
        PlCreateChildReq { kind, reserved }
        PlHandleReq { handle }
        PlRegMrReq { access, flags, npages, first_page_offset, length, file, file_offset }
        PlRegMrResp { key, lease }
        PlDmaReq { local_key, local_offset, remote_key, remote_offset, length }
        PlAtomicReq { key, offset, operand, swap }
        PlAtomicResp { original }
        PlPatternReq { key, offset, length, pattern, mode, reserved }
        PlVerifyResp { mismatches, first_bad_offset, first_bad_value }
        PlLeaseTakeReq { file, start, length, policy, owner_pid }
        PlLeaseReleaseReq { lease, reason, reserved }
        PlLeaseBreakReq { file, start, length, reason, reserved }
        PlLeaseBreakResp { leases, leases_held, mrs_revoked, reserved, pages_unpinned }
        PlExportMrResp { export, refs, reserved }
        PlImportMrReq { export, access, reserved }
        PlEvent { kind, flags, dropped, ctx, seq, args }
    );
    v
}

/// Constants shared with the C header, checked by the layout test.
pub fn constant_table() -> Vec<(&'static str, u64)> {
    let mut v: Vec<(&'static str, u64)> = vec![
        ("PL_MAGIC", PL_MAGIC.into()),
        ("PL_ABI_VERSION", PL_ABI_VERSION.into()),
        ("PL_VIRTIO_ID_NATIVE", PL_VIRTIO_ID_NATIVE.into()),
        ("PL_VIRTIO_ID_CARRIER", PL_VIRTIO_ID_CARRIER.into()),
        ("PL_QUEUE_REQUEST", PL_QUEUE_REQUEST.into()),
        ("PL_QUEUE_EVENT", PL_QUEUE_EVENT.into()),
        ("PL_PAGE_SIZE", PL_PAGE_SIZE),
        ("PL_NUM_QUEUES", PL_NUM_QUEUES as u64),
        ("PL_QUEUE_SIZE", PL_QUEUE_SIZE.into()),
        ("PL_ACCESS_ALL", PL_ACCESS_ALL.into()),
        ("PL_REG_FLAGS_ALL", PL_REG_FLAGS_ALL.into()),
        ("PL_FEATURES_ALL", PL_FEATURES_ALL),
        ("PL_ACCESS_READ", PL_ACCESS_READ.into()),
        ("PL_ACCESS_WRITE", PL_ACCESS_WRITE.into()),
        ("PL_ACCESS_ATOMIC", PL_ACCESS_ATOMIC.into()),
        ("PL_REG_HAS_FILE", PL_REG_HAS_FILE.into()),
        ("PL_REG_LONGTERM", PL_REG_LONGTERM.into()),
        ("PL_REG_SCRUB", PL_REG_SCRUB.into()),
        ("PL_SCRUB_SEED_MAGIC", PL_SCRUB_SEED_MAGIC),
        ("PL_CHILD_EVENT_CHANNEL", PL_CHILD_EVENT_CHANNEL.into()),
        ("PL_CHILD_MR_EXPORT", PL_CHILD_MR_EXPORT.into()),
        ("PL_POLICY_REVOKE", PL_POLICY_REVOKE.into()),
        ("PL_POLICY_WAIT", PL_POLICY_WAIT.into()),
        ("PL_POLICY_TIMEOUT", PL_POLICY_TIMEOUT.into()),
        ("PL_RELEASE_HOLDER", PL_RELEASE_HOLDER.into()),
        ("PL_RELEASE_LOST", PL_RELEASE_LOST.into()),
        ("PL_BREAK_TRUNCATE", PL_BREAK_TRUNCATE.into()),
        ("PL_BREAK_PUNCH_HOLE", PL_BREAK_PUNCH_HOLE.into()),
        ("PL_BREAK_COLLAPSE_RANGE", PL_BREAK_COLLAPSE_RANGE.into()),
        ("PL_BREAK_INSERT_RANGE", PL_BREAK_INSERT_RANGE.into()),
        ("PL_BREAK_ZERO_RANGE", PL_BREAK_ZERO_RANGE.into()),
        ("PL_BREAK_REFLINK", PL_BREAK_REFLINK.into()),
        ("PL_BREAK_WRITE", PL_BREAK_WRITE.into()),
        ("PL_BREAK_OTHER", PL_BREAK_OTHER.into()),
        ("PL_BREAK_INJECTED", PL_BREAK_INJECTED.into()),
        ("PL_PATTERN_CONST", PL_PATTERN_CONST.into()),
        ("PL_PATTERN_OFFSET_XOR", PL_PATTERN_OFFSET_XOR.into()),
        ("PL_FEATURE_EXPORT", PL_FEATURE_EXPORT),
        ("PL_FEATURE_LEASES", PL_FEATURE_LEASES),
        ("PL_FEATURE_ATOMICS", PL_FEATURE_ATOMICS),
        ("PL_FEATURE_PATTERN", PL_FEATURE_PATTERN),
        ("PL_EVENT_MR_REVOKED", PL_EVENT_MR_REVOKED.into()),
        ("PL_EVENT_LEASE_BROKEN", PL_EVENT_LEASE_BROKEN.into()),
        ("PL_EVENT_LEASE_LOST", PL_EVENT_LEASE_LOST.into()),
        (
            "PL_EVENT_CONTEXT_TORN_DOWN",
            PL_EVENT_CONTEXT_TORN_DOWN.into(),
        ),
        ("PL_EVENT_FAULT_INJECTED", PL_EVENT_FAULT_INJECTED.into()),
        ("PL_EVENT_DEVICE_ERROR", PL_EVENT_DEVICE_ERROR.into()),
        (
            "PL_EVENT_SCRUB_LOST_ACCESS",
            PL_EVENT_SCRUB_LOST_ACCESS.into(),
        ),
        ("PL_EVENT_NEEDS_RESET", PL_EVENT_NEEDS_RESET.into()),
        ("PL_EVENT_F_DROPPED", PL_EVENT_F_DROPPED.into()),
        ("PL_REVOKE_LEASE_BREAK", PL_REVOKE_LEASE_BREAK),
        ("PL_REVOKE_MEMORY_MAP", PL_REVOKE_MEMORY_MAP),
        ("PL_REVOKE_CONTEXT_CLOSE", PL_REVOKE_CONTEXT_CLOSE),
        ("PL_REVOKE_SOURCE_GONE", PL_REVOKE_SOURCE_GONE),
        ("PL_REVOKE_INJECTED", PL_REVOKE_INJECTED),
        ("PL_MAX_CONTEXTS", PL_MAX_CONTEXTS.into()),
        ("PL_MAX_MRS", PL_MAX_MRS.into()),
        ("PL_MAX_PAGES_PER_MR", PL_MAX_PAGES_PER_MR.into()),
        ("PL_MAX_LEASES", PL_MAX_LEASES.into()),
        (
            "PL_MAX_CHILDREN_PER_CONTEXT",
            PL_MAX_CHILDREN_PER_CONTEXT.into(),
        ),
        ("PL_MAX_REQUEST_BYTES", PL_MAX_REQUEST_BYTES.into()),
    ];
    for op in Opcode::ALL {
        v.push((op_const_name(op), op as u64));
    }
    for s in Status::ALL {
        v.push((status_const_name(s), s as u64));
    }
    v
}

fn op_const_name(op: Opcode) -> &'static str {
    match op {
        Opcode::Nop => "PL_OP_NOP",
        Opcode::QueryDevice => "PL_OP_QUERY_DEVICE",
        Opcode::CreateContext => "PL_OP_CREATE_CONTEXT",
        Opcode::CloseContext => "PL_OP_CLOSE_CONTEXT",
        Opcode::ReleaseContext => "PL_OP_RELEASE_CONTEXT",
        Opcode::CreateChild => "PL_OP_CREATE_CHILD",
        Opcode::DestroyChild => "PL_OP_DESTROY_CHILD",
        Opcode::RegMr => "PL_OP_REG_MR",
        Opcode::DeregMr => "PL_OP_DEREG_MR",
        Opcode::Write => "PL_OP_WRITE",
        Opcode::Read => "PL_OP_READ",
        Opcode::CompareSwap => "PL_OP_COMPARE_SWAP",
        Opcode::FetchAdd => "PL_OP_FETCH_ADD",
        Opcode::Fill => "PL_OP_FILL",
        Opcode::Verify => "PL_OP_VERIFY",
        Opcode::LeaseTake => "PL_OP_LEASE_TAKE",
        Opcode::LeaseRelease => "PL_OP_LEASE_RELEASE",
        Opcode::LeaseBreak => "PL_OP_LEASE_BREAK",
        Opcode::ExportMr => "PL_OP_EXPORT_MR",
        Opcode::ImportMr => "PL_OP_IMPORT_MR",
    }
}

fn status_const_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "PL_S_OK",
        Status::Perm => "PL_S_EPERM",
        Status::NoEnt => "PL_S_ENOENT",
        Status::Io => "PL_S_EIO",
        Status::TooBig => "PL_S_E2BIG",
        Status::BadF => "PL_S_EBADF",
        Status::NoMem => "PL_S_ENOMEM",
        Status::Fault => "PL_S_EFAULT",
        Status::Busy => "PL_S_EBUSY",
        Status::Inval => "PL_S_EINVAL",
        Status::Range => "PL_S_ERANGE",
        Status::NoSys => "PL_S_ENOSYS",
        Status::Shutdown => "PL_S_ESHUTDOWN",
        Status::Stale => "PL_S_ESTALE",
        Status::Canceled => "PL_S_ECANCELED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip_and_unknown_is_none() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_u16(op as u16), Some(op));
        }
        assert_eq!(Opcode::from_u16(Opcode::ALL.len() as u16), None);
        assert_eq!(Opcode::from_u16(u16::MAX), None);
    }

    #[test]
    fn wire_structs_have_no_implicit_padding() {
        // Sum of field sizes equals the struct size for every struct.
        let table = layout_table();
        let mut structs: Vec<&str> = table.iter().map(|r| r.0).collect();
        structs.dedup();
        for s in structs {
            let total = table.iter().find(|r| r.0 == s && r.1 == "-").unwrap().3;
            let fields: usize = table
                .iter()
                .filter(|r| r.0 == s && r.1 != "-")
                .map(|r| r.3)
                .sum();
            assert_eq!(fields, total, "{s}: fields {fields} bytes, struct {total}");
        }
    }

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
