//! A vhost-user *frontend* for host tests and benchmarks.
//!
//! pinlease is a vhost-user backend that QEMU normally drives. [`TestFrontend`]
//! plays QEMU's part (and the guest driver's) over the real unix socket,
//! without a VM: it owns memfd-backed guest memory, lays split virtqueues out
//! in it, negotiates with the backend the way QEMU's vhost-user-base devices
//! do, and then submits descriptor chains, kicks and waits for used buffers.
//!
//! Guest memory layout of region 0 (at GPA 0, `mem_size` bytes):
//!
//! ```text
//! 0x0000          guard page (never used, so GPA 0 is never a valid ring/buffer)
//! 0x1000          queue 0 rings: desc table | avail | used      (page aligned)
//! ...             queue 1.. rings                                (page aligned each)
//! scratch         `scratch_size` bytes reused by every `request()`
//! data_start      bump allocator (`alloc`) up to `mem_size`
//! ```
//!
//! [`echo`] provides a minimal backend (copies request bytes back) to test
//! this frontend and to serve as the no-op baseline in benchmarks.

pub mod client;
pub mod echo;
mod vring;
mod watchdog;

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::io::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap,
    GuestMemoryRegion, GuestRegionMmap,
};

pub use self::echo::{spawn_echo_daemon, EchoDaemon, EchoStats};
pub use self::vring::{Desc, RingLayout, UsedElem};

/// Queue carrying driver-to-device requests (each answered in place).
pub const REQUEST_QUEUE: usize = 0;
/// Queue carrying device-to-driver events into buffers posted by the driver.
pub const EVENT_QUEUE: usize = 1;

const PAGE_SIZE: u64 = 4096;
/// Largest queue size allowed for split virtqueues.
const MAX_QUEUE_SIZE: u16 = 32768;

/// Errors of the test frontend. Each names what was wrong and the value seen.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A configuration field has an unusable value.
    #[error("invalid frontend config: {field} = {value} ({why})")]
    BadConfig {
        /// Field name.
        field: &'static str,
        /// Value seen.
        value: String,
        /// What is required.
        why: &'static str,
    },
    /// The socket did not accept a connection before the deadline.
    #[error("could not connect to vhost-user socket {path:?} within {waited:?}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// How long we retried.
        waited: Duration,
        /// Last connect error.
        source: io::Error,
    },
    /// Setting up the connection (socket clone, watchdog thread) failed.
    #[error("vhost-user connection setup: {what} failed: {source}")]
    Socket {
        /// Which step.
        what: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// The backend did not answer a message within `msg_timeout`; the
    /// connection has been shut down.
    #[error("vhost-user {request}: no answer within {timeout:?}, connection shut down ({detail})")]
    MessageTimeout {
        /// Message name.
        request: &'static str,
        /// The deadline that passed.
        timeout: Duration,
        /// What the interrupted call reported.
        detail: String,
    },
    /// An earlier message timed out and the watchdog shut the connection down.
    #[error("vhost-user {request}: connection already shut down after an earlier message timeout")]
    ConnectionShutDown {
        /// Message name.
        request: &'static str,
    },
    /// Raw socket I/O of a message sent without the vhost crate failed.
    #[error("vhost-user {request}: socket I/O failed: {source}")]
    Io {
        /// Message name.
        request: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// The backend's reply does not follow the protocol.
    #[error("vhost-user {request}: bad reply: {what} = {value}")]
    BadReply {
        /// Message name.
        request: &'static str,
        /// Field.
        what: &'static str,
        /// Value seen.
        value: u64,
    },
    /// GET_CONFIG arguments outside the vhost-user config window (0x1000 bytes).
    #[error("GET_CONFIG offset {offset} len {len}: must be non-empty and end at or below 4096")]
    BadConfigRange {
        /// Offset.
        offset: u32,
        /// Length.
        len: u32,
    },
    /// The backend answered GET_CONFIG with an empty (error) reply.
    #[error("backend rejected GET_CONFIG offset {offset} len {len}")]
    ConfigRejected {
        /// Offset.
        offset: u32,
        /// Length.
        len: u32,
    },
    /// A vhost-user message failed (send, receive, or a NACK from the backend).
    #[error("vhost-user {request} failed: {source}")]
    Vhost {
        /// Message name, e.g. "SET_MEM_TABLE".
        request: &'static str,
        /// Error from the vhost crate.
        source: vhost::Error,
    },
    /// The backend does not offer a feature we require.
    #[error("backend does not offer {feature} (bit {bit}); it offered {offered:#x}")]
    MissingFeature {
        /// Feature name.
        feature: &'static str,
        /// Bit number.
        bit: u32,
        /// Whole feature word the backend offered.
        offered: u64,
    },
    /// A protocol feature needed by an operation was not negotiated.
    #[error("{operation} needs protocol feature {feature}, but only {acked:?} was negotiated")]
    ProtocolFeatureNotAcked {
        /// Operation attempted.
        operation: &'static str,
        /// Required feature name.
        feature: &'static str,
        /// What was negotiated.
        acked: VhostUserProtocolFeatures,
    },
    /// The backend supports fewer queues than configured.
    #[error("backend reports {backend} queues (GET_QUEUE_NUM) but config asks for {wanted}")]
    TooManyQueues {
        /// From GET_QUEUE_NUM.
        backend: u64,
        /// From FrontendConfig::num_queues.
        wanted: usize,
    },
    /// GET_CONFIG returned a different amount of data than asked for.
    #[error("GET_CONFIG(offset {offset}, len {len}) returned {got} bytes")]
    ConfigLength {
        /// Requested offset.
        offset: u32,
        /// Requested length.
        len: u32,
        /// Bytes returned.
        got: usize,
    },
    /// Creating or sizing a memfd failed.
    #[error("memfd for guest region at GPA {gpa:#x} ({size:#x} bytes): {op} failed: {source}")]
    Memfd {
        /// Region GPA.
        gpa: u64,
        /// Region size.
        size: u64,
        /// Step that failed.
        op: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// Mapping or arranging guest memory regions failed.
    #[error("guest memory region at GPA {gpa:#x} ({size:#x} bytes): {reason}")]
    Region {
        /// Region GPA.
        gpa: u64,
        /// Region size.
        size: u64,
        /// What went wrong.
        reason: String,
    },
    /// No guest memory region starts at this GPA.
    #[error("no guest memory region starts at GPA {gpa:#x}")]
    NoSuchRegion {
        /// GPA asked for.
        gpa: u64,
    },
    /// A guest memory access failed (address not backed, crosses a hole...).
    #[error("guest memory {op} at GPA {gpa:#x} len {len}: {source}")]
    Memory {
        /// What we were doing.
        op: &'static str,
        /// Address.
        gpa: u64,
        /// Length.
        len: u64,
        /// Error from vm-memory.
        source: GuestMemoryError,
    },
    /// The bump allocator cannot satisfy a request.
    #[error("guest allocator: cannot allocate {len} bytes aligned to {align}: {free} bytes left after alignment")]
    OutOfGuestMemory {
        /// Requested length.
        len: u64,
        /// Requested alignment.
        align: u64,
        /// Bytes left.
        free: u64,
    },
    /// Alignment is not a power of two.
    #[error("alignment {align} is not a power of two")]
    BadAlignment {
        /// Alignment asked for.
        align: u64,
    },
    /// Queue index out of range.
    #[error("queue {queue} does not exist (frontend has {num_queues} queues)")]
    NoSuchQueue {
        /// Queue asked for.
        queue: usize,
        /// Number of queues.
        num_queues: usize,
    },
    /// A chain with no descriptors was submitted.
    #[error("queue {queue}: cannot submit an empty descriptor chain")]
    EmptyChain {
        /// Queue.
        queue: usize,
    },
    /// Not enough free descriptors.
    #[error("queue {queue}: chain needs {needed} descriptors but only {free} are free")]
    QueueFull {
        /// Queue.
        queue: usize,
        /// Descriptors needed.
        needed: usize,
        /// Descriptors free.
        free: usize,
    },
    /// The device put an id into the used ring that is not an in-flight head.
    #[error(
        "queue {queue}: device returned used id {id}, which is not the head of an in-flight chain"
    )]
    BadUsedId {
        /// Queue.
        queue: usize,
        /// Id seen.
        id: u32,
    },
    /// The device moved used->idx further than the ring size.
    #[error("queue {queue}: used idx jumped to {used_idx} from {last_seen}, more than queue size {size}")]
    UsedIdxCorrupt {
        /// Queue.
        queue: usize,
        /// Index seen.
        used_idx: u16,
        /// Our last consumed index.
        last_seen: u16,
        /// Queue size.
        size: u16,
    },
    /// The device claims to have written more than the writable buffer.
    #[error("queue {queue}: device reported used len {len} for head {id}, but the writable buffer holds {cap} bytes")]
    UsedLenTooLarge {
        /// Queue.
        queue: usize,
        /// Head.
        id: u16,
        /// Length reported.
        len: u32,
        /// Buffer capacity.
        cap: u32,
    },
    /// An eventfd operation failed.
    #[error("queue {queue}: {op} failed: {source}")]
    Eventfd {
        /// Operation.
        op: &'static str,
        /// Queue.
        queue: usize,
        /// Underlying error.
        source: io::Error,
    },
    /// The device did not complete a request in time.
    #[error("queue {queue}: no used buffer for head {head} within {waited:?}")]
    Timeout {
        /// Queue.
        queue: usize,
        /// Head we waited for.
        head: u16,
        /// How long we waited.
        waited: Duration,
    },
    /// A request does not fit in the scratch area.
    #[error("request of {req} bytes + response of {resp} bytes needs {need} scratch bytes, scratch is {have}")]
    ScratchTooSmall {
        /// Request length.
        req: usize,
        /// Response capacity.
        resp: u32,
        /// Bytes needed.
        need: u64,
        /// Scratch size.
        have: u64,
    },
    /// A previous request timed out and its chain still owns the scratch area.
    #[error("scratch area still owned by timed-out request head {head} on queue 0")]
    ScratchBusy {
        /// Head of the timed-out request.
        head: u16,
    },
    /// The event queue returned a buffer we did not post via post_event_buffers.
    #[error("event queue returned head {id} which is not a posted event buffer")]
    UnknownEventBuffer {
        /// Head seen.
        id: u16,
    },
    /// The frontend was already disconnected.
    #[error("frontend already disconnected")]
    Disconnected,
    /// Error from the echo daemon.
    #[error("echo daemon: {0}")]
    Daemon(String),
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, FrontendError>;

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

    fn validate(&self) -> Result<()> {
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
    fn compute(cfg: &FrontendConfig) -> Result<Self> {
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
fn memfd_region(gpa: u64, size: u64) -> Result<GuestRegionMmap> {
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

fn region_info(region: &GuestRegionMmap) -> Result<VhostUserMemoryRegionInfo> {
    VhostUserMemoryRegionInfo::from_guest_region(region).map_err(|e| FrontendError::Region {
        gpa: region.start_addr().0,
        size: region.len(),
        reason: format!("cannot describe region for vhost-user: {e}"),
    })
}

fn connect_with_retry(socket: &Path, timeout: Duration) -> Result<UnixStream> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            // The daemon may not have created or started listening on the
            // socket yet: retry until the deadline. Anything else is fatal.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && start.elapsed() < timeout =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(FrontendError::Connect {
                    path: socket.to_owned(),
                    waited: start.elapsed(),
                    source,
                })
            }
        }
    }
}

const GET_CONFIG_CODE: u32 = 24;
const HDR_VERSION_1: u32 = 0x1;
const HDR_REPLY: u32 = 0x4;
const VHOST_USER_CONFIG_WINDOW: u64 = 0x1000;

/// The vhost-user connection: the vhost crate's frontend plus what we need
/// to bound every call in time and to send GET_CONFIG ourselves.
struct Control {
    fe: Frontend,
    /// Clone of the connection, for the raw GET_CONFIG.
    sock: UnixStream,
    wd: watchdog::Watchdog,
    timeout: Duration,
}

impl Control {
    fn check_alive(&self, request: &'static str) -> Result<()> {
        if self.wd.tripped() {
            Err(FrontendError::ConnectionShutDown { request })
        } else {
            Ok(())
        }
    }

    /// Run one vhost crate call under the message deadline.
    fn call<T>(
        &mut self,
        request: &'static str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T> {
        self.check_alive(request)?;
        self.wd.arm(self.timeout);
        let r = f(&mut self.fe);
        let tripped = self.wd.disarm();
        r.map_err(|source| {
            if tripped {
                FrontendError::MessageTimeout {
                    request,
                    timeout: self.timeout,
                    detail: source.to_string(),
                }
            } else {
                FrontendError::Vhost { request, source }
            }
        })
    }

    /// VHOST_USER_GET_CONFIG done by hand. vhost 0.18's
    /// `Frontend::get_config` waits for the full payload even when the
    /// backend answers with an empty error reply (size 0, no payload), so a
    /// rejected GET_CONFIG would block forever. Here the reply is read by
    /// its header's size field, so a rejection is an ordinary error.
    fn get_config_raw(&mut self, offset: u32, len: u32) -> Result<Vec<u8>> {
        const REQ: &str = "GET_CONFIG";
        let io_err = |tripped: bool, timeout: Duration, source: io::Error| {
            if tripped {
                FrontendError::MessageTimeout {
                    request: REQ,
                    timeout,
                    detail: source.to_string(),
                }
            } else {
                FrontendError::Io {
                    request: REQ,
                    source,
                }
            }
        };
        self.check_alive(REQ)?;
        let body_len = 12u32;
        let mut msg = Vec::with_capacity(24 + len as usize);
        for v in [
            GET_CONFIG_CODE,
            HDR_VERSION_1,
            body_len + len,
            offset,
            len,
            0,
        ] {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        msg.resize(24 + len as usize, 0);

        self.wd.arm(self.timeout);
        let r = (|| -> io::Result<([u8; 12], [u8; 12], Vec<u8>)> {
            (&self.sock).write_all(&msg)?;
            let mut hdr = [0u8; 12];
            (&self.sock).read_exact(&mut hdr)?;
            let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
            // Never trust a size beyond what the protocol allows: reading
            // that much would block on a misbehaving backend.
            if u64::from(size) > u64::from(body_len) + VHOST_USER_CONFIG_WINDOW || size < body_len {
                return Ok((hdr, [0; 12], Vec::new()));
            }
            let mut body = [0u8; 12];
            (&self.sock).read_exact(&mut body)?;
            let mut payload = vec![0u8; (size - body_len) as usize];
            (&self.sock).read_exact(&mut payload)?;
            Ok((hdr, body, payload))
        })();
        let tripped = self.wd.disarm();
        let (hdr, body, payload) = r.map_err(|e| io_err(tripped, self.timeout, e))?;

        let word =
            |b: &[u8; 12], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let bad = |what, value: u32| FrontendError::BadReply {
            request: REQ,
            what,
            value: u64::from(value),
        };
        if word(&hdr, 0) != GET_CONFIG_CODE {
            return Err(bad("request code", word(&hdr, 0)));
        }
        if word(&hdr, 4) & HDR_REPLY == 0 {
            return Err(bad("header flags (REPLY bit missing)", word(&hdr, 4)));
        }
        let size = word(&hdr, 8);
        if size < body_len || u64::from(size) > u64::from(body_len) + VHOST_USER_CONFIG_WINDOW {
            return Err(bad("header size", size));
        }
        let (r_offset, r_size) = (word(&body, 0), word(&body, 4));
        if r_size == 0 {
            return Err(FrontendError::ConfigRejected { offset, len });
        }
        if r_offset != offset {
            return Err(bad("config offset", r_offset));
        }
        if r_size != len || payload.len() != len as usize {
            return Err(FrontendError::ConfigLength {
                offset,
                len,
                got: payload.len(),
            });
        }
        Ok(payload)
    }
}

/// A request that timed out while its chain still points into the scratch area.
#[derive(Debug, Clone, Copy)]
struct PendingScratch {
    head: u16,
}

/// A vhost-user frontend plus guest driver, for tests without QEMU.
pub struct TestFrontend {
    ctl: Control,
    cfg: FrontendConfig,
    mem: GuestMemoryMmap,
    layout: MemoryLayout,
    queues: Vec<vring::DriverQueue>,
    acked_features: u64,
    acked_protocol: VhostUserProtocolFeatures,
    alloc_cursor: u64,
    /// Posted event buffers by head index: (gpa, size).
    event_bufs: HashMap<u16, (u64, u32)>,
    pending_scratch: Option<PendingScratch>,
    zeros: Vec<u8>,
    connected: bool,
}

impl TestFrontend {
    /// Connect to `socket` (retrying for up to `timeout` while it does not
    /// exist yet or refuses) and do the whole handshake as QEMU's
    /// vhost-user-base frontends do:
    /// GET_FEATURES, SET_FEATURES(VERSION_1 | PROTOCOL_FEATURES [| offered
    /// extra_features]), GET/SET_PROTOCOL_FEATURES (CONFIG,
    /// CONFIGURE_MEM_SLOTS, MQ, and REPLY_ACK if `cfg.reply_ack`, each only if
    /// offered), GET_QUEUE_NUM if MQ, SET_OWNER, SET_MEM_TABLE, then per
    /// queue SET_VRING_NUM/ADDR/BASE(0)/CALL/KICK/ENABLE(1).
    pub fn connect(socket: &Path, cfg: FrontendConfig, timeout: Duration) -> Result<Self> {
        cfg.validate()?;
        let layout = MemoryLayout::compute(&cfg)?;
        let region = memfd_region(0, cfg.mem_size)?;
        let mem =
            GuestMemoryMmap::from_regions(vec![region]).map_err(|e| FrontendError::Region {
                gpa: 0,
                size: cfg.mem_size,
                reason: e.to_string(),
            })?;
        let queues = layout
            .rings
            .iter()
            .enumerate()
            .map(|(i, r)| vring::DriverQueue::new(i, *r))
            .collect::<Result<Vec<_>>>()?;

        let stream = connect_with_retry(socket, timeout)?;
        let sock = stream.try_clone().map_err(|source| FrontendError::Socket {
            what: "clone socket",
            source,
        })?;
        let wd_sock = stream.try_clone().map_err(|source| FrontendError::Socket {
            what: "clone socket",
            source,
        })?;
        let wd = watchdog::Watchdog::new(wd_sock).map_err(|source| FrontendError::Socket {
            what: "spawn watchdog thread",
            source,
        })?;
        let ctl = Control {
            fe: Frontend::from_stream(stream, cfg.num_queues as u64),
            sock,
            wd,
            timeout: cfg.msg_timeout,
        };

        let mut this = TestFrontend {
            ctl,
            alloc_cursor: layout.data_start,
            cfg,
            mem,
            layout,
            queues,
            acked_features: 0,
            acked_protocol: VhostUserProtocolFeatures::empty(),
            event_bufs: HashMap::new(),
            pending_scratch: None,
            zeros: Vec::new(),
            connected: true,
        };
        this.handshake()?;
        Ok(this)
    }

    fn handshake(&mut self) -> Result<()> {
        let offered = self.ctl.call("GET_FEATURES", |fe| fe.get_features())?;
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        for (bit, feature) in [
            (VIRTIO_F_VERSION_1, "VIRTIO_F_VERSION_1"),
            (
                protocol_bit.trailing_zeros(),
                "VHOST_USER_F_PROTOCOL_FEATURES",
            ),
        ] {
            if offered & (1u64 << bit) == 0 {
                return Err(FrontendError::MissingFeature {
                    feature,
                    bit,
                    offered,
                });
            }
        }
        let ack = (1u64 << VIRTIO_F_VERSION_1) | protocol_bit | (self.cfg.extra_features & offered);
        self.ctl.call("SET_FEATURES", |fe| fe.set_features(ack))?;
        self.acked_features = ack;

        let offered_proto = self
            .ctl
            .call("GET_PROTOCOL_FEATURES", |fe| fe.get_protocol_features())?;
        let mut want = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::MQ;
        if self.cfg.reply_ack {
            want |= VhostUserProtocolFeatures::REPLY_ACK;
        }
        let acked = offered_proto & want;
        self.ctl.call("SET_PROTOCOL_FEATURES", |fe| {
            fe.set_protocol_features(acked)
        })?;
        self.acked_protocol = acked;
        if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // From now on every message that has no reply of its own gets an
            // explicit ack, so backend-side failures surface as errors here.
            self.ctl.fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if acked.contains(VhostUserProtocolFeatures::MQ) {
            let n = self.ctl.call("GET_QUEUE_NUM", |fe| fe.get_queue_num())?;
            if n < self.cfg.num_queues as u64 {
                return Err(FrontendError::TooManyQueues {
                    backend: n,
                    wanted: self.cfg.num_queues,
                });
            }
        }

        self.ctl.call("SET_OWNER", |fe| fe.set_owner())?;
        self.send_mem_table(None)?;

        for q in 0..self.queues.len() {
            self.setup_queue(q)?;
        }
        Ok(())
    }

    fn host_addr(&self, gpa: u64) -> Result<u64> {
        self.mem
            .get_host_address(GuestAddress(gpa))
            .map(|p| p as u64)
            .map_err(|source| FrontendError::Memory {
                op: "translate to host address",
                gpa,
                len: 0,
                source,
            })
    }

    fn setup_queue(&mut self, q: usize) -> Result<()> {
        let r = *self.queues[q].layout();
        self.ctl
            .call("SET_VRING_NUM", |fe| fe.set_vring_num(q, r.size))?;
        // vhost-user addresses are the frontend's own virtual addresses; the
        // backend translates them through the SET_MEM_TABLE regions.
        let config = VringConfigData {
            queue_max_size: r.size,
            queue_size: r.size,
            flags: 0,
            desc_table_addr: self.host_addr(r.desc)?,
            used_ring_addr: self.host_addr(r.used)?,
            avail_ring_addr: self.host_addr(r.avail)?,
            log_addr: None,
        };
        self.ctl
            .call("SET_VRING_ADDR", |fe| fe.set_vring_addr(q, &config))?;
        self.ctl
            .call("SET_VRING_BASE", |fe| fe.set_vring_base(q, 0))?;
        self.ctl.call("SET_VRING_CALL", |fe| {
            fe.set_vring_call(q, &self.queues[q].call)
        })?;
        self.ctl.call("SET_VRING_KICK", |fe| {
            fe.set_vring_kick(q, &self.queues[q].kick)
        })?;
        self.ctl
            .call("SET_VRING_ENABLE", |fe| fe.set_vring_enable(q, true))?;
        Ok(())
    }

    fn send_mem_table(&mut self, only: Option<&[u64]>) -> Result<()> {
        let mut infos = Vec::new();
        for region in self.mem.iter() {
            if only.is_some_and(|gpas| !gpas.contains(&region.start_addr().0)) {
                continue;
            }
            infos.push(region_info(region)?);
        }
        if let Some(gpas) = only {
            for &gpa in gpas {
                if !infos.iter().any(|i| i.guest_phys_addr == gpa) {
                    return Err(FrontendError::NoSuchRegion { gpa });
                }
            }
        }
        self.ctl
            .call("SET_MEM_TABLE", |fe| fe.set_mem_table(&infos))?;
        Ok(())
    }

    fn check_connected(&self) -> Result<()> {
        if self.connected {
            Ok(())
        } else {
            Err(FrontendError::Disconnected)
        }
    }

    /// Guest memory and one queue, borrowed together (the queue writes into
    /// the memory).
    fn mem_and_queue(
        &mut self,
        queue: usize,
    ) -> Result<(&GuestMemoryMmap, &mut vring::DriverQueue)> {
        let num_queues = self.queues.len();
        let q = self
            .queues
            .get_mut(queue)
            .ok_or(FrontendError::NoSuchQueue { queue, num_queues })?;
        Ok((&self.mem, q))
    }

    fn queue(&self, queue: usize) -> Result<&vring::DriverQueue> {
        self.queues.get(queue).ok_or(FrontendError::NoSuchQueue {
            queue,
            num_queues: self.queues.len(),
        })
    }

    fn require_proto(
        &self,
        operation: &'static str,
        feature: &'static str,
        f: VhostUserProtocolFeatures,
    ) -> Result<()> {
        if self.acked_protocol.contains(f) {
            Ok(())
        } else {
            Err(FrontendError::ProtocolFeatureNotAcked {
                operation,
                feature,
                acked: self.acked_protocol,
            })
        }
    }

    /// Virtio feature bits acked in SET_FEATURES.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Protocol features acked in SET_PROTOCOL_FEATURES.
    pub fn acked_protocol_features(&self) -> VhostUserProtocolFeatures {
        self.acked_protocol
    }

    /// The configuration this frontend was built with.
    pub fn config(&self) -> &FrontendConfig {
        &self.cfg
    }

    /// Where rings, scratch and data area live in guest memory.
    pub fn layout(&self) -> &MemoryLayout {
        &self.layout
    }

    /// The raw vhost-user frontend, for protocol-level tests that need to
    /// send messages this type does not wrap. Calls made through it are not
    /// covered by the `msg_timeout` watchdog (and vhost 0.18 retries EAGAIN
    /// forever, so a silent backend blocks them), and they can desynchronise
    /// the state kept here; that is the caller's business.
    pub fn vhost(&mut self) -> &mut Frontend {
        &mut self.ctl.fe
    }

    /// VHOST_USER_GET_CONFIG: read `len` bytes of device config space at
    /// `offset`. A backend that rejects the request (empty reply) gives
    /// [`FrontendError::ConfigRejected`]; the connection stays usable.
    pub fn get_config(&mut self, offset: u32, len: u32) -> Result<Vec<u8>> {
        self.check_connected()?;
        self.require_proto("GET_CONFIG", "CONFIG", VhostUserProtocolFeatures::CONFIG)?;
        if len == 0 || u64::from(offset) + u64::from(len) > VHOST_USER_CONFIG_WINDOW {
            return Err(FrontendError::BadConfigRange { offset, len });
        }
        self.ctl.get_config_raw(offset, len)
    }

    /// Guest memory, for direct reads/writes by tests.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Write `data` at `gpa`.
    pub fn write_mem(&self, gpa: u64, data: &[u8]) -> Result<()> {
        self.mem
            .write_slice(data, GuestAddress(gpa))
            .map_err(|source| FrontendError::Memory {
                op: "write",
                gpa,
                len: data.len() as u64,
                source,
            })
    }

    /// Read `len` bytes at `gpa`.
    pub fn read_mem(&self, gpa: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.mem
            .read_slice(&mut buf, GuestAddress(gpa))
            .map_err(|source| FrontendError::Memory {
                op: "read",
                gpa,
                len: len as u64,
                source,
            })?;
        Ok(buf)
    }

    fn zero_mem(&mut self, gpa: u64, len: usize) -> Result<()> {
        if self.zeros.len() < len {
            self.zeros.resize(len, 0);
        }
        self.mem
            .write_slice(&self.zeros[..len], GuestAddress(gpa))
            .map_err(|source| FrontendError::Memory {
                op: "zero",
                gpa,
                len: len as u64,
                source,
            })
    }

    /// Bump-allocate `len` bytes from the data area (after rings and scratch).
    /// `align` must be a power of two (4096 gives page-aligned buffers).
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<u64> {
        if align == 0 || !align.is_power_of_two() {
            return Err(FrontendError::BadAlignment { align });
        }
        let end = self.layout.data_end;
        let start = self
            .alloc_cursor
            .checked_add(align - 1)
            .map(|v| v & !(align - 1));
        match start.and_then(|s| s.checked_add(len).map(|e| (s, e))) {
            Some((s, e)) if e <= end => {
                self.alloc_cursor = e;
                Ok(s)
            }
            _ => Err(FrontendError::OutOfGuestMemory {
                len,
                align,
                free: end.saturating_sub(start.unwrap_or(end)),
            }),
        }
    }

    /// Free everything `alloc` handed out. Buffers still posted to the
    /// device (e.g. event buffers) are not tracked: do not reset while the
    /// device may still write into them.
    pub fn reset_alloc(&mut self) {
        self.alloc_cursor = self.layout.data_start;
    }

    /// Put an arbitrary chain into the avail ring of `queue` without any
    /// validation of addresses, lengths or directions, and return its head.
    /// Does not kick.
    pub fn submit_chain(&mut self, queue: usize, descs: &[Desc]) -> Result<u16> {
        self.check_connected()?;
        let (mem, q) = self.mem_and_queue(queue)?;
        q.submit(mem, descs)
    }

    /// Like `submit_chain`, but the chain is written as an indirect table
    /// (allocated from the data area, so it is never reused until
    /// `reset_alloc`) referenced by a single VIRTQ_DESC_F_INDIRECT
    /// descriptor. The device must support indirect descriptors.
    pub fn submit_indirect_chain(&mut self, queue: usize, descs: &[Desc]) -> Result<u16> {
        self.check_connected()?;
        self.queue(queue)?;
        let table = self.alloc(vring::DESC_SIZE * descs.len().max(1) as u64, 16)?;
        let mem = &self.mem;
        let q = &mut self.queues[queue];
        q.submit_indirect(mem, table, descs)
    }

    /// Notify the device of new buffers on `queue` (unconditionally).
    pub fn kick(&self, queue: usize) -> Result<()> {
        self.check_connected()?;
        self.queue(queue)?.kick()
    }

    /// Notify the device unless it set VRING_USED_F_NO_NOTIFY, like a guest
    /// driver does. Returns whether it kicked.
    pub fn kick_if_needed(&self, queue: usize) -> Result<bool> {
        self.check_connected()?;
        let q = self.queue(queue)?;
        if q.notify_needed(&self.mem)? {
            q.kick()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Free descriptors of `queue` (queue_size when nothing is in flight).
    pub fn free_descriptors(&self, queue: usize) -> Result<usize> {
        Ok(self.queue(queue)?.free_descriptors())
    }

    /// Chains submitted on `queue` and not yet returned via the used ring.
    pub fn in_flight(&self, queue: usize) -> Result<usize> {
        Ok(self.queue(queue)?.in_flight())
    }

    /// Wait up to `timeout` for the next used element of `queue`.
    /// `Ok(None)` means nothing arrived in time.
    pub fn wait_used(&mut self, queue: usize, timeout: Duration) -> Result<Option<UsedElem>> {
        self.check_connected()?;
        let (mem, q) = self.mem_and_queue(queue)?;
        q.wait_used(mem, timeout)
    }

    /// Take the next used element of `queue` if there is one, without waiting.
    pub fn poll_used(&mut self, queue: usize) -> Result<Option<UsedElem>> {
        self.check_connected()?;
        let (mem, q) = self.mem_and_queue(queue)?;
        q.pop_used(mem)
    }

    /// Send `req` on queue 0 as [readable req, writable resp_cap] using the
    /// scratch area, kick, wait up to `config().request_timeout`, and return
    /// the first `used.len` bytes of the response buffer.
    pub fn request(&mut self, req: &[u8], resp_cap: u32) -> Result<Vec<u8>> {
        let t = self.cfg.request_timeout;
        self.request_timeout(req, resp_cap, t)
    }

    /// `request` with an explicit timeout.
    pub fn request_timeout(
        &mut self,
        req: &[u8],
        resp_cap: u32,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        self.check_connected()?;
        self.queue(REQUEST_QUEUE)?;
        self.reclaim_scratch()?;

        let req_span = vring::align_up(req.len() as u64, PAGE_SIZE);
        let need = req_span + u64::from(resp_cap);
        if need > self.layout.scratch_size {
            return Err(FrontendError::ScratchTooSmall {
                req: req.len(),
                resp: resp_cap,
                need,
                have: self.layout.scratch_size,
            });
        }
        let req_gpa = self.layout.scratch;
        let resp_gpa = self.layout.scratch + req_span;
        self.write_mem(req_gpa, req)?;
        // Zero the response buffer so stale bytes from an earlier round trip
        // can never pass for a device's answer.
        self.zero_mem(resp_gpa, resp_cap as usize)?;

        let mut descs = [Desc::readable(0, 0); 2];
        let mut n = 0;
        if !req.is_empty() {
            descs[n] = Desc::readable(req_gpa, req.len() as u32);
            n += 1;
        }
        if resp_cap > 0 {
            descs[n] = Desc::writable(resp_gpa, resp_cap);
            n += 1;
        }
        let head = {
            let mem = &self.mem;
            self.queues[REQUEST_QUEUE].submit(mem, &descs[..n])?
        };
        self.kick_if_needed(REQUEST_QUEUE)?;

        let start = Instant::now();
        let used = loop {
            let remaining = timeout.saturating_sub(start.elapsed());
            let mem = &self.mem;
            let q = &mut self.queues[REQUEST_QUEUE];
            match q.wait_used_ring(mem, remaining)? {
                Some(e) if e.id == head => break e,
                // Someone else's chain (submitted with submit_chain): keep it
                // for their wait_used().
                Some(e) => q.push_stash(e),
                None => {
                    self.pending_scratch = Some(PendingScratch { head });
                    return Err(FrontendError::Timeout {
                        queue: REQUEST_QUEUE,
                        head,
                        waited: start.elapsed(),
                    });
                }
            }
        };
        if used.len > resp_cap {
            return Err(FrontendError::UsedLenTooLarge {
                queue: REQUEST_QUEUE,
                id: used.id,
                len: used.len,
                cap: resp_cap,
            });
        }
        self.read_mem(resp_gpa, used.len as usize)
    }

    /// If a timed-out request still owns the scratch area, see whether the
    /// device has finished with it meanwhile.
    fn reclaim_scratch(&mut self) -> Result<()> {
        let Some(p) = self.pending_scratch else {
            return Ok(());
        };
        let mem = &self.mem;
        let q = &mut self.queues[REQUEST_QUEUE];
        while let Some(e) = q.pop_used_ring(mem)? {
            if e.id == p.head {
                self.pending_scratch = None;
                return Ok(());
            }
            q.push_stash(e);
        }
        Err(FrontendError::ScratchBusy { head: p.head })
    }

    /// Post `n` device-writable buffers of `size` bytes on queue 1 (events),
    /// allocated from the data area, and kick.
    pub fn post_event_buffers(&mut self, n: usize, size: u32) -> Result<()> {
        self.check_connected()?;
        self.queue(EVENT_QUEUE)?;
        for _ in 0..n {
            let gpa = self.alloc(u64::from(size), 8)?;
            let head = {
                let mem = &self.mem;
                self.queues[EVENT_QUEUE].submit(mem, &[Desc::writable(gpa, size)])?
            };
            self.event_bufs.insert(head, (gpa, size));
        }
        self.kick(EVENT_QUEUE)
    }

    /// Wait up to `timeout` for the device to fill an event buffer; return
    /// the bytes it wrote (`used.len` of them) and re-post the buffer.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let Some(used) = self.wait_used(EVENT_QUEUE, timeout)? else {
            return Ok(None);
        };
        let (gpa, size) = self
            .event_bufs
            .remove(&used.id)
            .ok_or(FrontendError::UnknownEventBuffer { id: used.id })?;
        let data = if used.len <= size {
            Some(self.read_mem(gpa, used.len as usize)?)
        } else {
            None
        };
        // Re-post before reporting any error so the device never runs dry.
        self.zero_mem(gpa, size as usize)?;
        let head = {
            let mem = &self.mem;
            self.queues[EVENT_QUEUE].submit(mem, &[Desc::writable(gpa, size)])?
        };
        self.event_bufs.insert(head, (gpa, size));
        self.kick_if_needed(EVENT_QUEUE)?;
        match data {
            Some(d) => Ok(Some(d)),
            None => Err(FrontendError::UsedLenTooLarge {
                queue: EVENT_QUEUE,
                id: used.id,
                len: used.len,
                cap: size,
            }),
        }
    }

    /// Create a new memfd region of `size` bytes at `gpa` and announce it
    /// with VHOST_USER_ADD_MEM_REG. It becomes part of `memory()` too.
    pub fn add_mem_region(&mut self, gpa: u64, size: u64) -> Result<()> {
        self.check_connected()?;
        self.require_proto(
            "ADD_MEM_REG",
            "CONFIGURE_MEM_SLOTS",
            VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS,
        )?;
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) || !gpa.is_multiple_of(PAGE_SIZE) {
            return Err(FrontendError::Region {
                gpa,
                size,
                reason: "GPA and size must be page aligned and size non-zero".into(),
            });
        }
        let region = std::sync::Arc::new(memfd_region(gpa, size)?);
        let new_mem =
            self.mem
                .insert_region(region.clone())
                .map_err(|e| FrontendError::Region {
                    gpa,
                    size,
                    reason: e.to_string(),
                })?;
        let info = region_info(&region)?;
        self.ctl
            .call("ADD_MEM_REG", |fe| fe.add_mem_region(&info))?;
        self.mem = new_mem;
        Ok(())
    }

    /// Announce removal of the region starting at `gpa` with
    /// VHOST_USER_REM_MEM_REG and drop it from `memory()`. Removing region 0
    /// is allowed (for negative tests) but then the rings are gone too.
    pub fn remove_mem_region(&mut self, gpa: u64) -> Result<()> {
        self.check_connected()?;
        self.require_proto(
            "REM_MEM_REG",
            "CONFIGURE_MEM_SLOTS",
            VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS,
        )?;
        let region = self
            .mem
            .iter()
            .find(|r| r.start_addr().0 == gpa)
            .ok_or(FrontendError::NoSuchRegion { gpa })?;
        let info = region_info(region)?;
        let size = region.len();
        self.ctl
            .call("REM_MEM_REG", |fe| fe.remove_mem_region(&info))?;
        let (new_mem, _) = self
            .mem
            .remove_region(GuestAddress(gpa), size)
            .map_err(|e| FrontendError::Region {
                gpa,
                size,
                reason: e.to_string(),
            })?;
        self.mem = new_mem;
        Ok(())
    }

    /// Re-send SET_MEM_TABLE with all current regions.
    pub fn set_mem_table_again(&mut self) -> Result<()> {
        self.check_connected()?;
        self.send_mem_table(None)
    }

    /// Send SET_MEM_TABLE with only the regions starting at `gpas` (the
    /// frontend's own view of memory is unchanged), to test how the backend
    /// copes with a shrinking or changing memory map.
    pub fn set_mem_table_subset(&mut self, gpas: &[u64]) -> Result<()> {
        self.check_connected()?;
        self.send_mem_table(Some(gpas))
    }

    /// Orderly disconnect: GET_VRING_BASE on each queue (which stops the
    /// rings in the backend), then close the socket. Returns each queue's
    /// vring base, i.e. the device's next avail index.
    pub fn disconnect(mut self) -> Result<Vec<u32>> {
        self.check_connected()?;
        let mut bases = Vec::with_capacity(self.queues.len());
        for q in 0..self.queues.len() {
            bases.push(self.ctl.call("GET_VRING_BASE", |fe| fe.get_vring_base(q))?);
        }
        self.connected = false;
        // Dropping self closes the socket.
        Ok(bases)
    }

    /// Device reset the way QEMU passes a guest driver's reset on: stop
    /// every queue (GET_VRING_BASE), forget the driver-side ring state (what
    /// was in flight is lost, as for a real driver), zero the rings and set
    /// them up again from index 0. The connection and memory map stay.
    pub fn reset_device(&mut self) -> Result<()> {
        self.check_connected()?;
        for q in 0..self.queues.len() {
            self.ctl.call("GET_VRING_BASE", |fe| fe.get_vring_base(q))?;
        }
        for q in 0..self.queues.len() {
            let r = *self.queues[q].layout();
            let n = usize::from(r.size);
            self.zero_mem(r.desc, 16 * n)?;
            self.zero_mem(r.avail, 6 + 2 * n)?;
            self.zero_mem(r.used, 6 + 8 * n)?;
            self.queues[q] = vring::DriverQueue::new(q, r)?;
            self.setup_queue(q)?;
        }
        self.pending_scratch = None;
        Ok(())
    }

    /// Our avail index of `queue` (number of chains ever published, mod 2^16).
    pub fn avail_idx(&self, queue: usize) -> Result<u16> {
        Ok(self.queue(queue)?.avail_idx())
    }
}

impl Drop for TestFrontend {
    fn drop(&mut self) {
        // Nothing to send: closing the socket (when `fe` drops) is what tells
        // the backend we are gone, and sending messages here could block on a
        // wedged backend for msg_timeout. Memory is unmapped and the memfds
        // and eventfds are closed by their own destructors.
        self.connected = false;
    }
}
