//! Errors of the test frontend.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use vhost::vhost_user::VhostUserProtocolFeatures;
use vm_memory::GuestMemoryError;

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
