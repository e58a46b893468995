//! A minimal vhost-user backend: queue 0 echoes each request's readable
//! bytes into its writable buffers; queue 1 (events) never produces
//! anything. It is the peer for the frontend's own tests and the no-op
//! baseline for benchmarks ("pinlease request rate vs. echo rate on the
//! same harness").

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use log::warn;
use vhost::vhost_user::{Listener, VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{
    ShutdownHandle, VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT,
};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard,
    GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::{FrontendError, Result};

/// Number of queues of the echo device.
pub const ECHO_NUM_QUEUES: usize = 2;
/// Maximum queue size of the echo device.
pub const ECHO_QUEUE_SIZE: usize = 256;
/// Largest total readable length of one chain the echo device accepts; a
/// longer chain is completed with len 0 instead of allocating without bound.
pub const ECHO_MAX_REQUEST: usize = 16 << 20;

/// The echo device's config space: a magic string followed by `i as u8`
/// at offset `i`, so tests can check offsets as well as contents.
pub fn echo_config_space() -> [u8; 64] {
    let mut c = [0u8; 64];
    for (i, b) in c.iter_mut().enumerate() {
        *b = i as u8;
    }
    c[..16].copy_from_slice(b"pinlease-echo\0\0\0");
    c
}

/// Counters the echo device keeps, shared with its [`EchoDaemon`] handle.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Request chains completed on queue 0 (including bad ones).
    pub requests: AtomicU64,
    /// Chains completed with len 0 because a descriptor was unusable.
    pub bad_chains: AtomicU64,
    /// Calls of handle_event (kicks and ring-enable notifications).
    pub events: AtomicU64,
}

/// The echo device itself.
pub struct EchoBackend {
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    event_idx: bool,
    stats: Arc<EchoStats>,
    /// Notifiers of the worker threads' exit events: vhost-user-backend only
    /// stops its vring worker threads through these.
    exit_notifiers: Arc<Mutex<Vec<EventNotifier>>>,
    /// Reused buffers so echoing does not allocate per request.
    buf: Vec<u8>,
    writable: Vec<(GuestAddress, u32)>,
}

impl EchoBackend {
    fn new(stats: Arc<EchoStats>, exit_notifiers: Arc<Mutex<Vec<EventNotifier>>>) -> Self {
        EchoBackend {
            mem: None,
            event_idx: false,
            stats,
            exit_notifiers,
            buf: Vec::new(),
            writable: Vec::new(),
        }
    }

    /// Echo one chain; returns the used length (0 for an unusable chain).
    fn echo_chain<M>(&mut self, mem: &GuestMemoryMmap, chain: DescriptorChain<M>) -> u32
    where
        M: std::ops::Deref,
        M::Target: vm_memory::GuestMemory,
    {
        self.buf.clear();
        self.writable.clear();
        let mut ok = true;
        for desc in chain {
            if desc.is_write_only() {
                self.writable.push((desc.addr(), desc.len()));
                continue;
            }
            let start = self.buf.len();
            let len = desc.len() as usize;
            if start + len > ECHO_MAX_REQUEST {
                ok = false;
                break;
            }
            self.buf.resize(start + len, 0);
            if mem.read_slice(&mut self.buf[start..], desc.addr()).is_err() {
                ok = false;
                break;
            }
        }
        if !ok {
            self.stats.bad_chains.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        let mut written = 0usize;
        for &(addr, len) in &self.writable {
            if written == self.buf.len() {
                break;
            }
            let n = (len as usize).min(self.buf.len() - written);
            if mem
                .write_slice(&self.buf[written..written + n], addr)
                .is_err()
            {
                self.stats.bad_chains.fetch_add(1, Ordering::Relaxed);
                return 0;
            }
            written += n;
        }
        written as u32
    }

    fn process_requests(&mut self, vring: &VringRwLock) -> io::Result<()> {
        // A kick can come before SET_MEM_TABLE; nothing to do then.
        let Some(atomic) = &self.mem else {
            return Ok(());
        };
        let mem: GuestMemoryLoadGuard<GuestMemoryMmap> = atomic.memory();
        loop {
            // Suppress kicks while draining; re-enable and re-check below so
            // a chain published in between is not missed.
            vring.disable_notification().map_err(io::Error::other)?;
            let mut completed = false;
            loop {
                let chain = vring
                    .get_mut()
                    .get_queue_mut()
                    .pop_descriptor_chain(mem.clone());
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let len = self.echo_chain(&mem, chain);
                vring.add_used(head, len).map_err(io::Error::other)?;
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                completed = true;
            }
            if completed && vring.needs_notification().map_err(io::Error::other)? {
                vring.signal_used_queue()?;
            }
            if !vring.enable_notification().map_err(io::Error::other)? {
                return Ok(());
            }
        }
    }
}

impl VhostUserBackendMut for EchoBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        ECHO_NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        ECHO_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1u64 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let space = echo_config_space();
        let start = offset as usize;
        match start.checked_add(size as usize) {
            Some(end) if end <= space.len() => space[start..end].to_vec(),
            // Wrong-sized answer: vhost turns it into an error reply.
            _ => Vec::new(),
        }
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) = match new_event_consumer_and_notifier(EventFlag::NONBLOCK) {
            Ok(pair) => pair,
            Err(e) => {
                warn!("echo backend: cannot create exit event: {e}");
                return None;
            }
        };
        let keep = match notifier.try_clone() {
            Ok(n) => n,
            Err(e) => {
                warn!("echo backend: cannot clone exit notifier: {e}");
                return None;
            }
        };
        match self.exit_notifiers.lock() {
            Ok(mut v) => v.push(keep),
            Err(_) => return None,
        }
        Some((consumer, notifier))
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        match device_event as usize {
            // Also called (with an empty queue) when a ring gets enabled;
            // process_requests simply finds nothing to do then.
            0 => match vrings.first() {
                Some(v) => self.process_requests(v),
                None => Ok(()),
            },
            // Events queue: the echo device never has an event to deliver,
            // so posted buffers stay posted (that is what timeout tests use).
            1 => Ok(()),
            other => {
                warn!("echo backend: unexpected device event {other}");
                Ok(())
            }
        }
    }
}

#[derive(Default)]
struct DaemonCtl {
    stop_requested: bool,
    shutdown: Option<ShutdownHandle>,
}

/// Handle to an echo daemon serving one vhost-user connection on a socket.
/// Dropping it stops the daemon.
pub struct EchoDaemon {
    socket: PathBuf,
    ctl: Arc<Mutex<DaemonCtl>>,
    stats: Arc<EchoStats>,
    thread: Option<JoinHandle<std::result::Result<(), String>>>,
}

/// Bind `socket` (replacing a stale file) and serve one vhost-user
/// connection with the echo backend in a background thread.
///
/// The socket is bound before this returns, so a frontend may connect right
/// away. Like `VhostUserDaemon::serve`, the daemon handles exactly one
/// connection and then exits; the socket file is removed once that
/// connection has been accepted.
pub fn spawn_echo_daemon(socket: &Path) -> Result<EchoDaemon> {
    let mut listener = Listener::new(socket, true)
        .map_err(|e| FrontendError::Daemon(format!("cannot listen on {socket:?}: {e}")))?;
    let stats = Arc::new(EchoStats::default());
    let exit_notifiers = Arc::new(Mutex::new(Vec::new()));
    let backend = Arc::new(RwLock::new(EchoBackend::new(
        stats.clone(),
        exit_notifiers.clone(),
    )));
    let mut daemon = VhostUserDaemon::new(
        "pinlease-echo".to_string(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| FrontendError::Daemon(format!("cannot create daemon: {e}")))?;

    let ctl = Arc::new(Mutex::new(DaemonCtl::default()));
    let thread_ctl = ctl.clone();
    let thread = std::thread::Builder::new()
        .name("pinlease-echo-serve".into())
        .spawn(move || {
            // This is VhostUserDaemon::serve() split open so that the handle
            // can shut the connection down (serve() keeps the daemon to
            // itself, so a test could not stop it while a frontend is
            // connected).
            let started = daemon.start(&mut listener);
            drop(listener);
            let result = started.map_err(|e| e.to_string()).and_then(|()| {
                if let Ok(mut c) = thread_ctl.lock() {
                    if c.stop_requested {
                        daemon.request_shutdown();
                    } else {
                        c.shutdown = daemon.shutdown_handle();
                    }
                }
                match daemon.wait() {
                    Ok(()) => Ok(()),
                    // Frontend hung up: the normal end of a session, which
                    // serve() also reports as success.
                    Err(vhost_user_backend::Error::HandleRequest(
                        vhost::vhost_user::Error::Disconnected
                        | vhost::vhost_user::Error::PartialMessage,
                    )) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            });
            // Stop the vring worker threads (serve() does the same through
            // the handler's send_exit_event()).
            if let Ok(v) = exit_notifiers.lock() {
                for n in v.iter() {
                    let _ = n.notify();
                }
            }
            result
        })
        .map_err(|e| FrontendError::Daemon(format!("cannot spawn thread: {e}")))?;

    Ok(EchoDaemon {
        socket: socket.to_owned(),
        ctl,
        stats,
        thread: Some(thread),
    })
}

impl EchoDaemon {
    /// Socket path the daemon listens on.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Counters of the echo device.
    pub fn stats(&self) -> &EchoStats {
        &self.stats
    }

    /// Requests echoed so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }

    fn request_stop(&self) {
        let handle = match self.ctl.lock() {
            Ok(mut c) => {
                c.stop_requested = true;
                c.shutdown.take()
            }
            Err(_) => None,
        };
        match handle {
            Some(h) => h.shutdown(),
            // Not connected yet: the serve thread sits in accept(). A
            // throwaway connection wakes it; it then sees stop_requested.
            // If it has already accepted the real frontend, this connection
            // just lingers in the backlog until the socket goes away.
            None => {
                let _ = UnixStream::connect(&self.socket);
            }
        }
    }

    /// Stop serving (closing the connection if a frontend is connected) and
    /// wait for the daemon thread.
    pub fn stop(mut self) -> Result<()> {
        self.request_stop();
        self.join_thread()
    }

    /// Wait until the frontend disconnects and the daemon exits by itself.
    pub fn wait(mut self) -> Result<()> {
        self.join_thread()
    }

    fn join_thread(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r.map_err(FrontendError::Daemon),
                Err(_) => Err(FrontendError::Daemon("serve thread panicked".into())),
            },
            None => Ok(()),
        }
    }
}

impl Drop for EchoDaemon {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.request_stop();
            let _ = self.join_thread();
        }
    }
}
