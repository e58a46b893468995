//! The vhost-user glue: virtqueue chains in, model calls, responses and
//! events out. Everything vhost/virtio-specific lives here; the device model
//! sees bytes and a [`GuestRam`](crate::model::memory::GuestRam).

use std::io;
use std::mem::size_of;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use log::{debug, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
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
use crate::deferred::{Deferred, Item, REORDER_WAIT};
use crate::faults::{Effect, FaultEngine, Point};
use crate::guest_ram::MmapRam;
use crate::model::counters::BadInput;
use crate::model::events::EventFate;
use crate::model::Device;
use crate::protocol::{handle, report_bad_input, Completion};

type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;
type Chain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap<()>>>;

/// epoll data id of the "events pending" eventfd: 0..=num_queues are the
/// queues' and the exit event's.
pub const EVENTS_PENDING_ID: u16 = PL_NUM_QUEUES as u16 + 1;

/// epoll data id of the "held completions or events are due" eventfd.
pub const DEFERRED_DUE_ID: u16 = EVENTS_PENDING_ID + 1;

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
    faults: Arc<FaultEngine>,
    /// Completions and events held by fault rules; signalled on
    /// `deferred_due` when due.
    deferred: Arc<Deferred>,
    deferred_due: EventConsumer,
    /// The device's context count when the worker last looked: when it
    /// has gone down since, the allocator's free pages go back to the
    /// kernel ([`crate::allocator`]: once per context gone, not per
    /// request).
    contexts_seen: AtomicU32,
}

impl PinleaseBackend {
    /// A backend with no fault plan.
    pub fn new(device: Arc<Device>) -> io::Result<Self> {
        Self::with_faults(device, FaultEngine::new(&Default::default(), None))
    }

    pub fn with_faults(device: Arc<Device>, faults: Arc<FaultEngine>) -> io::Result<Self> {
        let (consumer, notifier) = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        let wake = notifier.try_clone()?;
        device.events.set_notify(Box::new(move || {
            // A full eventfd counter already means "pending": nothing lost.
            let _ = wake.notify();
        }));
        let (due_consumer, due_notifier) = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        let deferred = Arc::new(Deferred::new(due_notifier)?);
        Self::install_event_filter(&device, &faults, &deferred);
        Ok(PinleaseBackend {
            device,
            events_pending: (consumer, notifier),
            mem: Mutex::new(None),
            faults,
            deferred,
            deferred_due: due_consumer,
            contexts_seen: AtomicU32::new(0),
        })
    }

    /// The `event:KIND` fault point: every event the model queues passes
    /// the plan. Revokes and breaks fired here wait for the worker
    /// (`run_pending`): the model may hold its writer lock while queueing.
    fn install_event_filter(
        device: &Arc<Device>,
        faults: &Arc<FaultEngine>,
        deferred: &Arc<Deferred>,
    ) {
        let dev = Arc::downgrade(device);
        let faults = faults.clone();
        let deferred = Arc::downgrade(deferred);
        device.events.set_filter(Arc::new(move |kind, ctx, args| {
            let (Some(dev), Some(deferred)) = (dev.upgrade(), deferred.upgrade()) else {
                return EventFate::Deliver;
            };
            let effects: Vec<Effect> = faults
                .hit(Point::Event(Some(kind)))
                .iter()
                .map(|f| faults.fire(&dev, f, ctx, None, true))
                .collect();
            // One fate per event: drop beats delay beats reorder beats
            // duplicate.
            if effects.contains(&Effect::Drop) {
                return EventFate::Drop;
            }
            let delay = effects.iter().find_map(|e| match e {
                Effect::Delay(ms) => Some(*ms),
                _ => None,
            });
            if let Some(ms) = delay {
                deferred.hold(
                    Item::Event { kind, ctx, args },
                    std::time::Duration::from_millis(ms),
                    false,
                );
                return EventFate::Held;
            }
            if effects.contains(&Effect::Reorder) {
                deferred.hold(Item::ReleaseReorderedEvents, REORDER_WAIT, false);
                return EventFate::Reorder;
            }
            if effects.contains(&Effect::Duplicate) {
                return EventFate::Duplicate;
            }
            EventFate::Deliver
        }));
    }

    /// The fd to register with the epoll handler under [`DEFERRED_DUE_ID`].
    pub fn deferred_due_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.deferred_due.as_raw_fd()
    }

    /// Device reset: the device, held completions and pending fault
    /// actions are all forgotten (and NEEDS_RESET cleared).
    fn reset(&self) -> usize {
        let held = self.deferred.clear();
        self.faults.forget_pending();
        if held > 0 {
            debug!("device reset: {held} held completion(s)/event(s) forgotten");
        }
        let dropped = self.device.reset();
        self.trim_after_contexts_went();
        dropped
    }

    /// Called by the worker after each batch and after a reset: when
    /// contexts have gone since the last call (released, or dropped by a
    /// reset), returns the allocator's free pages to the kernel
    /// (docs/soak.md).
    fn trim_after_contexts_went(&self) {
        let now = self.device.live_contexts();
        let before = self.contexts_seen.swap(now, Ordering::Relaxed);
        if now < before {
            let released = crate::allocator::release_free_memory();
            debug!(
                "contexts {before} -> {now}: free heap pages returned to the kernel: {released}"
            );
        }
    }

    /// Puts `head` in the used ring, then any reordered completions after it.
    fn complete(&self, vring: &VringRwLock, head: u16, len: u32) {
        if let Err(e) = vring.add_used(head, len) {
            warn!("request queue: add_used({head}) failed: {e}");
        }
        for (h, l) in self.deferred.take_reordered() {
            if let Err(e) = vring.add_used(h, l) {
                warn!("request queue: add_used({h}) (reordered) failed: {e}");
            }
        }
    }

    /// Writes (or holds) one request's completion as the fault plan said.
    fn finish(&self, vring: &VringRwLock, head: u16, len: u32, c: Completion) {
        let copies = if c.duplicate { 2 } else { 1 };
        if c.drop {
            debug!("request chain {head}: completion dropped by a fault rule");
        } else if c.delay_ms > 0 {
            for _ in 0..copies {
                self.deferred.hold(
                    Item::Completion { head, len },
                    std::time::Duration::from_millis(c.delay_ms),
                    false,
                );
            }
        } else if c.reorder {
            for _ in 0..copies {
                self.deferred
                    .hold(Item::Completion { head, len }, REORDER_WAIT, true);
            }
        } else {
            self.complete(vring, head, len);
            if c.duplicate {
                self.complete(vring, head, len);
            }
        }
    }

    /// Writes what came due: completions (each followed by any reordered
    /// ones), delayed events, and reordered events that waited long enough.
    fn write_due(&self, vrings: &[VringRwLock]) -> io::Result<()> {
        let _ = self.deferred_due.consume();
        let req_vring = &vrings[usize::from(PL_QUEUE_REQUEST)];
        let mut wrote = false;
        for h in self.deferred.take_due() {
            match h.item {
                Item::Completion { head, len } if h.reorder => {
                    if let Err(e) = req_vring.add_used(head, len) {
                        warn!("request queue: add_used({head}) (reordered) failed: {e}");
                    }
                    wrote = true;
                }
                Item::Completion { head, len } => {
                    self.complete(req_vring, head, len);
                    wrote = true;
                }
                Item::Event { kind, ctx, args } => {
                    self.device.events.push_unfiltered(kind, ctx, args)
                }
                Item::ReleaseReorderedEvents => self.device.events.release_reordered(),
            }
        }
        if wrote {
            let mem = self.mem.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Self::signal_used(req_vring, mem.as_ref())?;
        }
        self.flush_events(&vrings[usize::from(PL_QUEUE_EVENT)])
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

    /// Answers one request chain; returns the used length and what to do
    /// with the completion.
    fn process_request(&self, chain: Chain) -> (u32, Completion) {
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
                return (0, Completion::default());
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
            return (0, Completion::default());
        }
        let handled = handle(&self.device, Some(&self.faults), &req, cap);
        let used = match Self::scatter(&mem, &writable, &handled.response) {
            Ok(n) => n,
            Err(why) => {
                report_bad_input(&self.device, BadInput::BadAddress, &why);
                self.device_error(BadInput::BadAddress);
                0
            }
        };
        (used, handled.completion)
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

    /// Signals `vring`'s call eventfd unless the driver asked for no
    /// interrupts (`VRING_AVAIL_F_NO_INTERRUPT` in `avail.flags`, virtio 1.x
    /// 2.7.7.2; virtio-queue 0.18 leaves this check to the device).
    ///
    /// Why: pinlease.ko sets the flag while a submitter polls the used ring
    /// for its answer (its `req_poll_us`); the interrupt it would get anyway
    /// costs the guest a legacy INTx round trip through QEMU (the device has
    /// no MSI-X, docs/benchmarks.md) for an answer already taken.
    ///
    /// `mem` is the guest memory the caller already holds (None: signal).
    fn signal_used(vring: &VringRwLock, mem: Option<&Mem>) -> io::Result<()> {
        if mem.is_some_and(|m| Self::interrupt_suppressed(vring, m)) {
            return Ok(());
        }
        vring.signal_used_queue()
    }

    /// Whether the driver's `avail.flags` has `VRING_AVAIL_F_NO_INTERRUPT`.
    /// An unreadable ring counts as "no": signal, as without the check.
    fn interrupt_suppressed(vring: &VringRwLock, mem: &Mem) -> bool {
        let flags_gpa = {
            let v = vring.get_ref();
            if !v.get_queue().ready() {
                // A stopped queue's ring addresses are 0 after a reset.
                return false;
            }
            GuestAddress(v.get_queue().avail_ring())
        };
        // The used idx written by add_used() must be visible before the
        // flag is read: pairs with the driver's "clear the flag; full
        // barrier; look at the used idx" (Linux virtqueue_enable_cb()), so
        // one of the two sides sees the other's write and no answer waits
        // for an interrupt that was never sent.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        match mem
            .memory()
            .load::<u16>(flags_gpa, std::sync::atomic::Ordering::Acquire)
        {
            Ok(f) => u32::from(u16::from_le(f)) & VRING_AVAIL_F_NO_INTERRUPT != 0,
            Err(_) => false,
        }
    }

    fn process_requests(&self, vring: &VringRwLock) -> io::Result<()> {
        let Some(mem) = self.mem.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        // No kicks while the queue is being drained: requests the driver
        // posts meanwhile are found by the next pass, and a kick each would
        // cost both sides a syscall (and the daemon an epoll wake-up).
        set_kicks(vring, false);
        loop {
            // The vring's lock is held for this statement only: the error
            // arm below takes it again (holding it across a `match` on it
            // deadlocked the worker when a stopped queue answered
            // QueueNotReady).
            let polled = vring
                .get_mut()
                .get_queue_mut()
                .iter(mem.memory())
                .map(|it| it.collect::<Vec<Chain>>());
            let chains = match polled {
                Ok(chains) => chains,
                Err(e) => {
                    // Kicks back on: the next one retries.
                    set_kicks(vring, true);
                    report_bad_input(
                        &self.device,
                        BadInput::BadChain,
                        &format!("request queue: {e}"),
                    );
                    return Ok(());
                }
            };
            if chains.is_empty() {
                // Kicks back on, then a last look at the ring: true means a
                // request was posted before the driver could see them on.
                if set_kicks(vring, true) {
                    set_kicks(vring, false);
                    continue;
                }
                break;
            }
            for chain in chains {
                let head = chain.head_index();
                let (used, completion) = self.process_request(chain);
                self.finish(vring, head, used, completion);
            }
            Self::signal_used(vring, Some(&mem))?;
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
            Self::signal_used(vring, Some(&mem))?;
        }
        Ok(())
    }
}

/// Turns the driver's kicks of `vring` on or off (`VRING_USED_F_NO_NOTIFY`)
/// if its queue is ready, in one hold of the vring's lock; returns, when
/// turning them on, whether chains were posted meanwhile. A queue the
/// frontend stopped is left alone: after a reset its used ring address is
/// 0, and the flag would be written into guest memory there.
fn set_kicks(vring: &VringRwLock, on: bool) -> bool {
    let mut v = vring.get_mut();
    if !v.get_queue().ready() {
        return false;
    }
    if on {
        // An error means the used ring is not in guest memory, which
        // add_used logs for each request.
        v.enable_notification().unwrap_or(false)
    } else {
        let _ = v.disable_notification();
        false
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
        // The memory-map fault point. A delay holds this vhost-user message
        // (the frontend's thread), never the request worker.
        for e in self.faults.at(&self.device, Point::MemoryMap, 0, None) {
            if let Effect::Delay(ms) = e {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
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
            let n = self.reset();
            debug!("request queue stopped: device reset ({n} context(s) dropped)");
        }
        Ok(())
    }

    fn reset_device(&self) {
        let n = self.reset();
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
                self.faults.run_pending(&self.device);
                let flushed = self.flush_events(&vrings[usize::from(PL_QUEUE_EVENT)]);
                self.trim_after_contexts_went();
                flushed
            }
            d if d == PL_QUEUE_EVENT => self.flush_events(&vrings[usize::from(PL_QUEUE_EVENT)]),
            EVENTS_PENDING_ID => {
                let _ = self.events_pending.0.consume();
                self.faults.run_pending(&self.device);
                self.flush_events(&vrings[usize::from(PL_QUEUE_EVENT)])
            }
            DEFERRED_DUE_ID => self.write_due(vrings),
            other => Err(io::Error::other(format!("unknown device event {other}"))),
        }
    }
}
