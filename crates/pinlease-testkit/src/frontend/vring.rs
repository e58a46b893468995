//! Driver (guest) side of a split virtqueue that lives in the test frontend's
//! guest memory.
//!
//! This is what a guest kernel's virtio driver does: it owns the descriptor
//! table and the avail ring, and consumes the used ring. The layout and the
//! memory ordering follow the virtio 1.x split-ring rules exactly, because the
//! point of the test frontend is to exercise a real device implementation.

use std::collections::VecDeque;
use std::io;
use std::num::Wrapping;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{FrontendError, Result};

/// Descriptor continues via the `next` field.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor is device-writable (otherwise device-readable).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor points at an indirect descriptor table.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Set by the device in `used.flags` when it does not want kicks.
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;
/// Set by the driver in `avail.flags` when it does not want interrupts
/// (Linux's virtqueue_disable_cb() without EVENT_IDX).
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Size of one split-ring descriptor.
pub const DESC_SIZE: u64 = 16;

/// One buffer of a descriptor chain, as a test wants to describe it.
///
/// Nothing about it is validated: tests use it to hand a device GPAs outside
/// guest memory, zero lengths or the wrong direction on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Guest physical address of the buffer.
    pub addr: u64,
    /// Length of the buffer in bytes.
    pub len: u32,
    /// `true` for a device-writable buffer (VIRTQ_DESC_F_WRITE).
    pub writable: bool,
}

impl Desc {
    /// A device-readable buffer (driver to device).
    pub fn readable(addr: u64, len: u32) -> Self {
        Desc {
            addr,
            len,
            writable: false,
        }
    }

    /// A device-writable buffer (device to driver).
    pub fn writable(addr: u64, len: u32) -> Self {
        Desc {
            addr,
            len,
            writable: true,
        }
    }

    fn flags(&self) -> u16 {
        if self.writable {
            VIRTQ_DESC_F_WRITE
        } else {
            0
        }
    }
}

/// One element the device put into the used ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedElem {
    /// Head descriptor index of the completed chain.
    pub id: u16,
    /// Number of bytes the device says it wrote into the chain.
    pub len: u32,
}

/// Guest physical addresses of one queue's three ring parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Queue size (number of descriptors), a power of two.
    pub size: u16,
    /// Descriptor table (16-byte aligned, 16 * size bytes).
    pub desc: u64,
    /// Avail ring (2-byte aligned, 6 + 2 * size bytes).
    pub avail: u64,
    /// Used ring (4-byte aligned, 6 + 8 * size bytes).
    pub used: u64,
}

impl RingLayout {
    /// Lay out a ring of `size` entries starting at `base` (which must be
    /// 16-byte aligned; callers pass page-aligned bases).
    pub fn new(base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + DESC_SIZE * n;
        // flags + idx + ring[n] + used_event
        let avail_end = avail + 4 + 2 * n + 2;
        let used = align_up(avail_end, 4);
        RingLayout {
            size,
            desc,
            avail,
            used,
        }
    }

    /// First byte after the used ring.
    pub fn end(&self) -> u64 {
        // flags + idx + ring[n] (8 bytes each) + avail_event
        self.used + 4 + 8 * u64::from(self.size) + 2
    }
}

/// Round `v` up to a multiple of `align` (a power of two).
pub(crate) fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

/// Driver state of one split virtqueue.
pub(crate) struct DriverQueue {
    index: usize,
    layout: RingLayout,
    pub(crate) kick: EventFd,
    pub(crate) call: EventFd,
    /// Free descriptor indices (used as a stack).
    free: Vec<u16>,
    /// Our own copy of each descriptor's `next` field: when a chain comes
    /// back we walk this, never the table in guest memory, which the device
    /// could have scribbled on.
    next: Vec<u16>,
    /// Number of descriptors of the chain headed by each index; 0 when that
    /// index is not the head of an in-flight chain.
    chain_len: Vec<u16>,
    /// Shadow of avail->idx (we are its only writer).
    avail_idx: Wrapping<u16>,
    /// Next used ring slot we have not consumed yet.
    last_used: Wrapping<u16>,
    /// Used elements already taken from the ring but not yet returned to
    /// the caller (e.g. consumed by `request()` while it looked for its own).
    stash: VecDeque<UsedElem>,
    in_flight: usize,
}

impl DriverQueue {
    pub(crate) fn new(index: usize, layout: RingLayout) -> Result<Self> {
        // Non-blocking like QEMU's event notifiers: we drain the call eventfd
        // after poll() and must not block if someone else already drained it.
        let mk = |what: &'static str| {
            EventFd::new(EFD_NONBLOCK).map_err(|source| FrontendError::Eventfd {
                op: what,
                queue: index,
                source,
            })
        };
        let size = layout.size as usize;
        Ok(DriverQueue {
            index,
            layout,
            kick: mk("create kick eventfd")?,
            call: mk("create call eventfd")?,
            // Reversed so that descriptor 0 is handed out first.
            free: (0..layout.size).rev().collect(),
            next: vec![0; size],
            chain_len: vec![0; size],
            avail_idx: Wrapping(0),
            last_used: Wrapping(0),
            stash: VecDeque::new(),
            in_flight: 0,
        })
    }

    pub(crate) fn layout(&self) -> &RingLayout {
        &self.layout
    }

    pub(crate) fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub(crate) fn avail_idx(&self) -> u16 {
        self.avail_idx.0
    }

    /// Put a chain made of `descs` into the avail ring and publish it.
    pub(crate) fn submit(&mut self, mem: &GuestMemoryMmap, descs: &[Desc]) -> Result<u16> {
        self.submit_entries(mem, descs.len(), |i| {
            (descs[i].addr, descs[i].len, descs[i].flags())
        })
    }

    /// Write `descs` as an indirect table at `table` and publish a one-entry
    /// chain pointing at it.
    pub(crate) fn submit_indirect(
        &mut self,
        mem: &GuestMemoryMmap,
        table: u64,
        descs: &[Desc],
    ) -> Result<u16> {
        if descs.is_empty() {
            return Err(FrontendError::EmptyChain { queue: self.index });
        }
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let flags = d.flags() | if last { 0 } else { VIRTQ_DESC_F_NEXT };
            let next = if last { 0 } else { (i + 1) as u16 };
            let gpa = table + DESC_SIZE * i as u64;
            write_desc(mem, gpa, d.addr, d.len, flags, next)?;
        }
        let table_len = (DESC_SIZE * descs.len() as u64) as u32;
        self.submit_entries(mem, 1, |_| (table, table_len, VIRTQ_DESC_F_INDIRECT))
    }

    /// Common part of chain submission: take `n` free descriptors, fill
    /// them from `entry(i) -> (addr, len, flags-without-NEXT)`, link them and
    /// make the head available.
    fn submit_entries<F>(&mut self, mem: &GuestMemoryMmap, n: usize, entry: F) -> Result<u16>
    where
        F: Fn(usize) -> (u64, u32, u16),
    {
        if n == 0 {
            return Err(FrontendError::EmptyChain { queue: self.index });
        }
        if n > self.free.len() {
            return Err(FrontendError::QueueFull {
                queue: self.index,
                needed: n,
                free: self.free.len(),
            });
        }
        let start = self.free.len() - n;
        // The chain is ids[0] -> ids[1] -> ... ; they stay on the free list
        // until every guest-memory write succeeded, so an error leaks nothing.
        let ids = &self.free[start..];
        for i in 0..n {
            let id = ids[n - 1 - i];
            let (addr, len, mut flags) = entry(i);
            let next = if i + 1 < n {
                flags |= VIRTQ_DESC_F_NEXT;
                ids[n - 2 - i]
            } else {
                0
            };
            let gpa = self.layout.desc + DESC_SIZE * u64::from(id);
            write_desc(mem, gpa, addr, len, flags, next)?;
            self.next[id as usize] = next;
        }
        let head = ids[n - 1];
        let slot = u64::from(self.avail_idx.0 % self.layout.size);
        let ring_gpa = self.layout.avail + 4 + 2 * slot;
        mem.write_obj(head.to_le(), GuestAddress(ring_gpa))
            .map_err(|source| FrontendError::Memory {
                op: "write avail ring entry",
                gpa: ring_gpa,
                len: 2,
                source,
            })?;
        self.free.truncate(start);
        self.chain_len[head as usize] = n as u16;
        self.in_flight += 1;

        // The ring entry and the descriptors must be visible before the
        // device can observe the new index (virtio 1.x 2.7.13: "the driver
        // MUST perform a suitable memory barrier before the idx update").
        fence(Ordering::Release);
        self.avail_idx += Wrapping(1);
        let idx_gpa = self.layout.avail + 2;
        mem.store(
            self.avail_idx.0.to_le(),
            GuestAddress(idx_gpa),
            Ordering::Release,
        )
        .map_err(|source| FrontendError::Memory {
            op: "publish avail idx",
            gpa: idx_gpa,
            len: 2,
            source,
        })?;
        Ok(head)
    }

    /// Whether the device wants a kick now (it has not set
    /// VRING_USED_F_NO_NOTIFY), as a guest driver checks before notifying.
    pub(crate) fn notify_needed(&self, mem: &GuestMemoryMmap) -> Result<bool> {
        // Pairs with the device's "clear NO_NOTIFY; full fence; re-read avail
        // idx" in enable_notification(): one of the two sides must see the
        // other's write, so a kick is never lost.
        fence(Ordering::SeqCst);
        let gpa = self.layout.used;
        let flags: u16 = mem
            .load(GuestAddress(gpa), Ordering::Acquire)
            .map_err(|source| FrontendError::Memory {
                op: "read used flags",
                gpa,
                len: 2,
                source,
            })?;
        Ok(u16::from_le(flags) & VRING_USED_F_NO_NOTIFY == 0)
    }

    /// Writes `avail.flags` as a driver does to ask for (0) or against
    /// ([`VRING_AVAIL_F_NO_INTERRUPT`]) interrupts, then a full barrier
    /// (the driver's half of the flag/used-idx handshake).
    pub(crate) fn set_avail_flags(&self, mem: &GuestMemoryMmap, flags: u16) -> Result<()> {
        let gpa = self.layout.avail;
        mem.store(flags.to_le(), GuestAddress(gpa), Ordering::Release)
            .map_err(|source| FrontendError::Memory {
                op: "write avail flags",
                gpa,
                len: 2,
                source,
            })?;
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Whether the device signalled the call eventfd since the last look
    /// (drains it; does not wait).
    pub(crate) fn take_call(&self) -> Result<bool> {
        match self.call.read() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(source) => Err(FrontendError::Eventfd {
                op: "read call eventfd",
                queue: self.index,
                source,
            }),
        }
    }

    pub(crate) fn kick(&self) -> Result<()> {
        self.kick.write(1).map_err(|source| FrontendError::Eventfd {
            op: "write kick eventfd",
            queue: self.index,
            source,
        })
    }

    pub(crate) fn push_stash(&mut self, elem: UsedElem) {
        self.stash.push_back(elem);
    }

    /// Take the next used element, stashed ones first.
    pub(crate) fn pop_used(&mut self, mem: &GuestMemoryMmap) -> Result<Option<UsedElem>> {
        if let Some(e) = self.stash.pop_front() {
            return Ok(Some(e));
        }
        self.pop_used_ring(mem)
    }

    /// Take the next element straight from the used ring and put its
    /// descriptors back on the free list.
    pub(crate) fn pop_used_ring(&mut self, mem: &GuestMemoryMmap) -> Result<Option<UsedElem>> {
        let idx_gpa = self.layout.used + 2;
        // Acquire: the element the index covers must be read after the index.
        let used_idx: u16 =
            mem.load(GuestAddress(idx_gpa), Ordering::Acquire)
                .map_err(|source| FrontendError::Memory {
                    op: "read used idx",
                    gpa: idx_gpa,
                    len: 2,
                    source,
                })?;
        let used_idx = Wrapping(u16::from_le(used_idx));
        if used_idx == self.last_used {
            return Ok(None);
        }
        let pending = (used_idx - self.last_used).0;
        if pending > self.layout.size {
            return Err(FrontendError::UsedIdxCorrupt {
                queue: self.index,
                used_idx: used_idx.0,
                last_seen: self.last_used.0,
                size: self.layout.size,
            });
        }
        let slot = u64::from(self.last_used.0 % self.layout.size);
        let elem_gpa = self.layout.used + 4 + 8 * slot;
        let mut raw = [0u8; 8];
        mem.read_slice(&mut raw, GuestAddress(elem_gpa))
            .map_err(|source| FrontendError::Memory {
                op: "read used element",
                gpa: elem_gpa,
                len: 8,
                source,
            })?;
        self.last_used += Wrapping(1);
        let id = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let len = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        if id >= u32::from(self.layout.size) || self.chain_len[id as usize] == 0 {
            return Err(FrontendError::BadUsedId {
                queue: self.index,
                id,
            });
        }
        let head = id as u16;
        let mut cur = head;
        for _ in 0..self.chain_len[head as usize] {
            self.free.push(cur);
            cur = self.next[cur as usize];
        }
        self.chain_len[head as usize] = 0;
        self.in_flight -= 1;
        Ok(Some(UsedElem { id: head, len }))
    }

    /// Wait for the next used element, stashed ones first.
    pub(crate) fn wait_used(
        &mut self,
        mem: &GuestMemoryMmap,
        timeout: Duration,
    ) -> Result<Option<UsedElem>> {
        if let Some(e) = self.stash.pop_front() {
            return Ok(Some(e));
        }
        self.wait_used_ring(mem, timeout)
    }

    /// Wait on the call eventfd for the next element of the used ring.
    ///
    /// The ring is always checked before sleeping and after every wake-up,
    /// and the eventfd is drained before the re-check, so a call that was
    /// signalled before we started waiting, or one call covering several
    /// used elements, is never lost nor waited for twice.
    pub(crate) fn wait_used_ring(
        &mut self,
        mem: &GuestMemoryMmap,
        timeout: Duration,
    ) -> Result<Option<UsedElem>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(e) = self.pop_used_ring(mem)? {
                return Ok(Some(e));
            }
            let remaining = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    Some(d - now)
                }
                // Timeout so large it overflows Instant: wait forever.
                None => None,
            };
            let readable = poll_readable(self.call.as_raw_fd(), remaining).map_err(|source| {
                FrontendError::Eventfd {
                    op: "poll call eventfd",
                    queue: self.index,
                    source,
                }
            })?;
            if readable {
                match self.call.read() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(source) => {
                        return Err(FrontendError::Eventfd {
                            op: "read call eventfd",
                            queue: self.index,
                            source,
                        })
                    }
                }
            }
        }
    }
}

fn write_desc(
    mem: &GuestMemoryMmap,
    gpa: u64,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) -> Result<()> {
    let mut raw = [0u8; DESC_SIZE as usize];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(gpa))
        .map_err(|source| FrontendError::Memory {
            op: "write descriptor",
            gpa,
            len: DESC_SIZE,
            source,
        })
}

/// poll(2) one fd for POLLIN. `None` waits forever. Returns whether it is
/// readable; EINTR counts as "not yet" so the caller re-checks its deadline.
pub(crate) fn poll_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let ms: libc::c_int = match timeout {
        // Round up so a sub-millisecond remainder does not become a 0 ms
        // poll, which would spin until the deadline.
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
        None => -1,
    };
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid, exclusively borrowed pollfd array of length 1
    // for the duration of the call; poll does not retain the pointer.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0 && pfd.revents & libc::POLLIN != 0)
}
