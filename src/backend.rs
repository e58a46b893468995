//! The vhost-user glue: virtqueue chains in, model calls, responses and
//! events out. Everything vhost/virtio-specific lives here; the device model
//! sees bytes and a [`GuestRam`](crate::model::memory::GuestRam).

use std::io;
use std::mem::size_of;
use std::sync::{Arc, Mutex};

use log::{debug, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard,
    GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::abi::{
    PlConfig, PlEvent, PlRespHdr, Wire, PL_ABI_VERSION, PL_MAGIC, PL_MAX_REQUEST_BYTES,
    PL_NUM_QUEUES, PL_QUEUE_EVENT, PL_QUEUE_REQUEST, PL_QUEUE_SIZE,
};
use crate::guest_ram::MmapRam;
use crate::model::counters::BadInput;
use crate::model::Device;
use crate::protocol::{handle_request, report_bad_input};

type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;
type Chain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap<()>>>;

/// epoll data id of the "events pending" eventfd: 0..=num_queues are the
/// queues' and the exit event's.
pub const EVENTS_PENDING_ID: u16 = PL_NUM_QUEUES as u16 + 1;

/// A request chain taken apart: the request bytes (all readable
/// descriptors, in order) and the writable buffers for the response.
struct SplitChain {
    request: Vec<u8>,
    writable: Vec<(GuestAddress, u32)>,
}

pub struct PinleaseBackend {
    device: Arc<Device>,
    /// Signalled by the model when it queues an event.
    events_pending: (EventConsumer, EventNotifier),
    mem: Mutex<Option<Mem>>,
}

impl PinleaseBackend {
    pub fn new(device: Arc<Device>) -> io::Result<Self> {
        let (consumer, notifier) = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        let wake = notifier.try_clone()?;
        device.events.set_notify(Box::new(move || {
            // A full eventfd counter already means "pending": nothing lost.
            let _ = wake.notify();
        }));
        Ok(PinleaseBackend {
            device,
            events_pending: (consumer, notifier),
            mem: Mutex::new(None),
        })
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The fd to register with the epoll handler under [`EVENTS_PENDING_ID`].
    pub fn events_pending_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.events_pending.0.as_raw_fd()
    }

    pub fn config() -> PlConfig {
        PlConfig {
            magic: PL_MAGIC,
            abi_version: PL_ABI_VERSION,
            reserved: 0,
        }
    }

    /// Splits a request chain into its readable bytes and its writable
    /// buffers, rejecting every malformed shape.
    fn gather(&self, chain: Chain) -> Result<SplitChain, (BadInput, String)> {
        let mem = chain.memory().clone();
        let mut req = Vec::new();
        let mut writable = Vec::new();
        let mut readable_total: u64 = 0;
        for desc in chain {
            let (addr, len) = (desc.addr(), desc.len());
            if desc.is_write_only() {
                writable.push((addr, len));
                continue;
            }
            if !writable.is_empty() {
                return Err((
                    BadInput::WrongDirection,
                    format!("readable descriptor at {:#x} after a writable one", addr.0),
                ));
            }
            readable_total += u64::from(len);
            if readable_total > u64::from(PL_MAX_REQUEST_BYTES) {
                return Err((
                    BadInput::OversizedRequest,
                    format!(
                        "readable part is over {readable_total} bytes, limit {PL_MAX_REQUEST_BYTES}"
                    ),
                ));
            }
            let start = req.len();
            req.resize(start + len as usize, 0);
            mem.read_slice(&mut req[start..], addr).map_err(|e| {
                (
                    BadInput::BadAddress,
                    format!("readable descriptor [{:#x}, +{len:#x}): {e}", addr.0),
                )
            })?;
        }
        if req.is_empty() {
            return Err((
                BadInput::WrongDirection,
                "chain has no readable request bytes".to_string(),
            ));
        }
        if writable.is_empty() {
            return Err((
                BadInput::NoResponseBuffer,
                "chain has no writable descriptor for the response".to_string(),
            ));
        }
        Ok(SplitChain {
            request: req,
            writable,
        })
    }

    /// Writes `bytes` across the writable buffers; returns bytes written.
    fn scatter(
        mem: &GuestMemoryMmap<()>,
        bufs: &[(GuestAddress, u32)],
        bytes: &[u8],
    ) -> Result<u32, String> {
        let mut done = 0usize;
        for &(addr, len) in bufs {
            if done == bytes.len() {
                break;
            }
            let n = (len as usize).min(bytes.len() - done);
            mem.write_slice(&bytes[done..done + n], addr)
                .map_err(|e| format!("writable descriptor [{:#x}, +{len:#x}): {e}", addr.0))?;
            done += n;
        }
        Ok(done as u32)
    }

    /// Answers one request chain; returns the used length.
    fn process_request(&self, chain: Chain) -> u32 {
        let mem = chain.memory().clone();
        let SplitChain {
            request: req,
            writable,
        } = match self.gather(chain) {
            Ok(v) => v,
            Err((kind, why)) => {
                report_bad_input(&self.device, kind, &why);
                // The chain could not be split safely (wrong direction, bad
                // address, no writable buffer), so no buffer in it can be
                // trusted for an answer: used length 0 means "no response"
                // to the driver (docs/abi.md), and the queue moves on; a
                // DEVICE_ERROR event says why.
                self.device_error(kind);
                return 0;
            }
        };
        let cap: usize = writable.iter().map(|&(_, l)| l as usize).sum();
        if cap < size_of::<PlRespHdr>() {
            report_bad_input(
                &self.device,
                BadInput::ShortResponse,
                &format!(
                    "writable part is {cap} bytes, a response header needs {}",
                    size_of::<PlRespHdr>()
                ),
            );
            self.device_error(BadInput::ShortResponse);
            return 0;
        }
        let resp = handle_request(&self.device, &req, cap);
        match Self::scatter(&mem, &writable, &resp) {
            Ok(n) => n,
            Err(why) => {
                report_bad_input(&self.device, BadInput::BadAddress, &why);
                self.device_error(BadInput::BadAddress);
                0
            }
        }
    }

    /// Tells the driver, by event, about a request chain it got no answer
    /// for: args [status, bad-input kind (docs/abi.md section 6), 0, 0].
    fn device_error(&self, kind: BadInput) {
        self.device.events.push(
            crate::abi::PL_EVENT_DEVICE_ERROR,
            0,
            [crate::abi::Status::Inval as u64, kind.wire(), 0, 0],
        );
    }

    fn process_requests(&self, vring: &VringRwLock) -> io::Result<()> {
        let Some(mem) = self.mem.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        loop {
            let chains: Vec<Chain> = match vring.get_mut().get_queue_mut().iter(mem.memory()) {
                Ok(it) => it.collect(),
                Err(e) => {
                    report_bad_input(
                        &self.device,
                        BadInput::BadChain,
                        &format!("request queue: {e}"),
                    );
                    return Ok(());
                }
            };
            if chains.is_empty() {
                break;
            }
            for chain in chains {
                let head = chain.head_index();
                let used = self.process_request(chain);
                if let Err(e) = vring.add_used(head, used) {
                    warn!("request queue: add_used({head}) failed: {e}");
                }
            }
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    /// Moves queued events into buffers the driver posted on queue 1.
    fn flush_events(&self, vring: &VringRwLock) -> io::Result<()> {
        let Some(mem) = self.mem.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        if !vring.get_ref().is_enabled() {
            return Ok(());
        }
        let mut delivered = false;
        while !self.device.events.is_empty() {
            let chain = match vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(mem.memory())
            {
                Some(c) => c,
                None => break, // no buffer posted: events wait in the backlog
            };
            let head = chain.head_index();
            let cmem = chain.memory().clone();
            let bufs: Vec<(GuestAddress, u32)> = chain
                .filter(|d| d.is_write_only())
                .map(|d| (d.addr(), d.len()))
                .collect();
            let cap: usize = bufs.iter().map(|&(_, l)| l as usize).sum();
            let used = if cap < size_of::<PlEvent>() {
                report_bad_input(
                    &self.device,
                    BadInput::ShortEventBuffer,
                    &format!(
                        "event buffer is {cap} bytes, an event needs {}",
                        size_of::<PlEvent>()
                    ),
                );
                0
            } else if let Some(ev) = self.device.events.pop() {
                match Self::scatter(&cmem, &bufs, ev.as_bytes()) {
                    Ok(n) => n,
                    Err(why) => {
                        report_bad_input(&self.device, BadInput::BadAddress, &why);
                        self.device.events.unpop(ev);
                        0
                    }
                }
            } else {
                0
            };
            if let Err(e) = vring.add_used(head, used) {
                warn!("event queue: add_used({head}) failed: {e}");
            }
            delivered = true;
        }
        if delivered {
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}

impl VhostUserBackend for PinleaseBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        PL_NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        // The carrier (vhost-user-gpio-pci) uses 256; native mode may ask
        // for less with vq_size.
        usize::from(PL_QUEUE_SIZE)
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = Self::config();
        let bytes = cfg.as_bytes();
        (offset..offset.saturating_add(size))
            .map(|i| bytes.get(i as usize).copied().unwrap_or(0))
            .collect()
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        let snapshot = (*mem.memory()).clone();
        let revoked = self.device.set_memory(Box::new(MmapRam::new(snapshot)));
        if revoked > 0 {
            warn!("memory map changed: {revoked} MR(s) lost pages and were revoked");
        }
        debug!("memory map updated");
        *self.mem.lock().unwrap_or_else(|e| e.into_inner()) = Some(mem);
        Ok(())
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // QEMU stops the queues (GET_VRING_BASE) when the guest resets the
        // device or the VM stops; the request queue stopping is the
        // device-reset point: a driver starting again finds a blank device.
        if queue_index == u32::from(PL_QUEUE_REQUEST) {
            let n = self.device.reset();
            debug!("request queue stopped: device reset ({n} context(s) dropped)");
        }
        Ok(())
    }

    fn reset_device(&self) {
        let n = self.device.reset();
        debug!("VHOST_USER_RESET_DEVICE: device reset ({n} context(s) dropped)");
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // vhost-user-backend 0.24's serve loop only returns to listening
        // once its worker threads have an exit event to be told by.
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!(
                "unexpected epoll events {evset:?}"
            )));
        }
        match device_event {
            d if d == PL_QUEUE_REQUEST => {
                // Also called when the ring is enabled, on an empty queue.
                self.process_requests(&vrings[usize::from(PL_QUEUE_REQUEST)])?;
                self.flush_events(&vrings[usize::from(PL_QUEUE_EVENT)])
            }
            d if d == PL_QUEUE_EVENT => self.flush_events(&vrings[usize::from(PL_QUEUE_EVENT)]),
            EVENTS_PENDING_ID => {
                let _ = self.events_pending.0.consume();
                self.flush_events(&vrings[usize::from(PL_QUEUE_EVENT)])
            }
            other => Err(io::Error::other(format!("unknown device event {other}"))),
        }
    }
}
