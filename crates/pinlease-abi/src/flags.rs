//! Flags and enumerations carried in request, response and event fields.

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
