//! What a [`TestFrontend`](super::TestFrontend) is asked to build, where
//! it puts things in guest memory, and the memfd-backed guest regions.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::unix::io::FromRawFd;
use std::time::Duration;

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryRegion, GuestRegionMmap};

use super::{vring, FrontendError, Result, RingLayout, PAGE_SIZE};

/// Largest queue size allowed for split virtqueues.
const MAX_QUEUE_SIZE: u16 = 32768;

/// Configuration of a [`TestFrontend`].
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Size of guest memory region 0 (at GPA 0). Multiple of 4096.
    pub mem_size: u64,
    /// Number of virtqueues to set up (queue 0 = requests, 1 = events).
    pub num_queues: usize,
    /// Size of every queue; power of two, 1..=32768.
    pub queue_size: u16,
    /// Negotiate REPLY_ACK (if offered) and ask for an ack on every message.
    pub reply_ack: bool,
    /// Device-specific feature bits to ack if the backend offers them, on
    /// top of VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES.
    pub extra_features: u64,
    /// Bytes reserved for `request()` buffers (request + response, each
    /// page aligned). Multiple of 4096.
    pub scratch_size: u64,
    /// How long `request()` waits for the device.
    pub request_timeout: Duration,
    /// Socket read/write timeout for vhost-user messages, so a backend that
    /// never replies makes the call fail instead of hanging the test.
    pub msg_timeout: Duration,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            mem_size: 64 << 20,
            num_queues: 2,
            queue_size: 256,
            reply_ack: true,
            extra_features: 0,
            scratch_size: 1 << 20,
            request_timeout: Duration::from_secs(5),
            msg_timeout: Duration::from_secs(10),
        }
    }
}

impl FrontendConfig {
    fn bad(field: &'static str, value: impl ToString, why: &'static str) -> FrontendError {
        FrontendError::BadConfig {
            field,
            value: value.to_string(),
            why,
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.mem_size == 0 || !self.mem_size.is_multiple_of(PAGE_SIZE) {
            return Err(Self::bad(
                "mem_size",
                self.mem_size,
                "must be a non-zero multiple of 4096",
            ));
        }
        if usize::try_from(self.mem_size).is_err() {
            return Err(Self::bad("mem_size", self.mem_size, "must fit in usize"));
        }
        if self.num_queues == 0 || self.num_queues > 256 {
            return Err(Self::bad("num_queues", self.num_queues, "must be 1..=256"));
        }
        if self.queue_size == 0
            || !self.queue_size.is_power_of_two()
            || self.queue_size > MAX_QUEUE_SIZE
        {
            return Err(Self::bad(
                "queue_size",
                self.queue_size,
                "must be a power of two in 1..=32768",
            ));
        }
        if !self.scratch_size.is_multiple_of(PAGE_SIZE) {
            return Err(Self::bad(
                "scratch_size",
                self.scratch_size,
                "must be a multiple of 4096",
            ));
        }
        Ok(())
    }
}

/// Where things live in guest memory region 0.
#[derive(Debug, Clone)]
pub struct MemoryLayout {
    /// Ring addresses of each queue.
    pub rings: Vec<RingLayout>,
    /// GPA of the scratch area used by `request()`.
    pub scratch: u64,
    /// Size of the scratch area.
    pub scratch_size: u64,
    /// First GPA of the bump allocator's data area.
    pub data_start: u64,
    /// End (exclusive) of the data area = end of region 0.
    pub data_end: u64,
}

impl MemoryLayout {
    pub(super) fn compute(cfg: &FrontendConfig) -> Result<Self> {
        let mut cursor = PAGE_SIZE; // skip the guard page
        let mut rings = Vec::with_capacity(cfg.num_queues);
        for _ in 0..cfg.num_queues {
            let r = RingLayout::new(cursor, cfg.queue_size);
            cursor = vring::align_up(r.end(), PAGE_SIZE);
            rings.push(r);
        }
        let scratch = cursor;
        let data_start = scratch + cfg.scratch_size;
        if data_start > cfg.mem_size {
            return Err(FrontendConfig::bad(
                "mem_size",
                cfg.mem_size,
                "too small for the rings and the scratch area",
            ));
        }
        Ok(MemoryLayout {
            rings,
            scratch,
            scratch_size: cfg.scratch_size,
            data_start,
            data_end: cfg.mem_size,
        })
    }
}

/// Create a memfd of `size` bytes and map it MAP_SHARED as a guest region at `gpa`.
pub(super) fn memfd_region(gpa: u64, size: u64) -> Result<GuestRegionMmap> {
    let name: &CStr = c"pinlease-guest-mem";
    let memfd_err = |op, source| FrontendError::Memfd {
        gpa,
        size,
        op,
        source,
    };
    // SAFETY: `name` is a valid NUL-terminated string; memfd_create does not
    // keep the pointer. The result is checked before use.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(memfd_err("memfd_create", io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this fd and nothing else owns it, so
    // File may take sole ownership (and close it on drop).
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(|e| memfd_err("ftruncate", e))?;
    let len = usize::try_from(size).map_err(|_| FrontendError::Region {
        gpa,
        size,
        reason: "size does not fit in usize".into(),
    })?;
    GuestRegionMmap::from_range(GuestAddress(gpa), len, Some(FileOffset::new(file, 0))).map_err(
        |e| FrontendError::Region {
            gpa,
            size,
            reason: format!("mmap failed: {e}"),
        },
    )
}

pub(super) fn region_info(region: &GuestRegionMmap) -> Result<VhostUserMemoryRegionInfo> {
    VhostUserMemoryRegionInfo::from_guest_region(region).map_err(|e| FrontendError::Region {
        gpa: region.start_addr().0,
        size: region.len(),
        reason: format!("cannot describe region for vhost-user: {e}"),
    })
}
