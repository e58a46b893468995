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
mod config;
mod control;
pub mod echo;
mod error;
mod vring;
mod watchdog;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VringConfigData};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use self::config::{memfd_region, region_info};
pub use self::config::{FrontendConfig, MemoryLayout};
use self::control::{connect_with_retry, Control, VHOST_USER_CONFIG_WINDOW};
pub use self::echo::{spawn_echo_daemon, EchoDaemon, EchoStats};
pub use self::error::{FrontendError, Result};
pub use self::vring::{Desc, RingLayout, UsedElem, VRING_AVAIL_F_NO_INTERRUPT};

/// Queue carrying driver-to-device requests (each answered in place).
pub const REQUEST_QUEUE: usize = 0;
/// Queue carrying device-to-driver events into buffers posted by the driver.
pub const EVENT_QUEUE: usize = 1;

const PAGE_SIZE: u64 = 4096;

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

    /// Set `avail.flags` of `queue` (0, or [`vring::VRING_AVAIL_F_NO_INTERRUPT`]
    /// to ask the device for no interrupts while the caller polls).
    pub fn set_avail_flags(&self, queue: usize, flags: u16) -> Result<()> {
        self.check_connected()?;
        self.queue(queue)?.set_avail_flags(&self.mem, flags)
    }

    /// Whether the device signalled `queue`'s call eventfd since the last
    /// look or wait (drains it, never waits).
    pub fn take_call(&self, queue: usize) -> Result<bool> {
        self.check_connected()?;
        self.queue(queue)?.take_call()
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
