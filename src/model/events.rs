//! Device-to-driver events, waiting for the driver to post buffers on the
//! event queue. The backlog is bounded: past it, events are dropped and the
//! next one delivered carries the count (PL_EVENT_F_DROPPED).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::abi::{PlEvent, PL_EVENT_FAULT_INJECTED, PL_EVENT_F_DROPPED, PL_EVENT_NEEDS_RESET};

/// Called (from any thread) when an event is queued, so the transport can
/// wake up and deliver it. Kept as a closure: the model knows no eventfds.
pub type Notify = Box<dyn Fn() + Send + Sync>;

/// What a fault plan decided for an event about to be queued (the
/// `event:KIND` fault point, docs/faults.md 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFate {
    Deliver,
    /// Discarded.
    Drop,
    /// Queued twice.
    Duplicate,
    /// Taken by the filter, which queues it later with `push_unfiltered`
    /// (delay).
    Held,
    /// Held here until the next event is queued, then queued after it (or
    /// alone by `release_reordered`).
    Reorder,
}

/// Decides the fate of an event (kind, ctx, args). Called before any lock
/// of the queue is taken, possibly with the device's writer lock held.
pub type Filter = Arc<dyn Fn(u16, u64, [u64; 4]) -> EventFate + Send + Sync>;

pub const DEFAULT_BACKLOG: usize = 4096;

#[derive(Default)]
struct Inner {
    queue: VecDeque<PlEvent>,
    next_seq: u64,
    dropped_pending: u32,
    /// Events a `reorder` fault holds until the next one is queued.
    reordered: Vec<(u16, u64, [u64; 4])>,
    dropped_total: u64,
    queued_total: u64,
    delivered_total: u64,
}

pub struct EventQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    notify: Mutex<Option<Notify>>,
    filter: Mutex<Option<Filter>>,
}

/// Counters for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventStats {
    pub queued: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub backlog: u64,
}

impl EventQueue {
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            inner: Mutex::new(Inner {
                next_seq: 1,
                ..Inner::default()
            }),
            capacity,
            notify: Mutex::new(None),
            filter: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_notify(&self, n: Notify) {
        *self.notify.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
    }

    pub fn set_filter(&self, f: Filter) {
        *self.filter.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    /// Queues an event of `kind` about context `ctx` with `args`, subject
    /// to the fault filter (FAULT_INJECTED and NEEDS_RESET never are).
    pub fn push(&self, kind: u16, ctx: u64, args: [u64; 4]) {
        let filter = if kind == PL_EVENT_FAULT_INJECTED || kind == PL_EVENT_NEEDS_RESET {
            None
        } else {
            self.filter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        match filter.map_or(EventFate::Deliver, |f| f(kind, ctx, args)) {
            EventFate::Deliver => self.push_unfiltered(kind, ctx, args),
            EventFate::Drop | EventFate::Held => {}
            EventFate::Duplicate => {
                self.push_unfiltered(kind, ctx, args);
                self.push_unfiltered(kind, ctx, args);
            }
            EventFate::Reorder => self.lock().reordered.push((kind, ctx, args)),
        }
    }

    /// Queues the events a `reorder` fault held, after whatever was queued
    /// since (or alone, when nothing came in time).
    pub fn release_reordered(&self) {
        let held = std::mem::take(&mut self.lock().reordered);
        for (kind, ctx, args) in held {
            self.enqueue(kind, ctx, args);
        }
        if !self.is_empty() {
            self.notify();
        }
    }

    /// Queues an event without consulting the fault filter (a delayed event
    /// coming due), then any reordered ones held before it.
    pub fn push_unfiltered(&self, kind: u16, ctx: u64, args: [u64; 4]) {
        let mut queued = self.enqueue(kind, ctx, args);
        let held = std::mem::take(&mut self.lock().reordered);
        for (kind, ctx, args) in held {
            queued |= self.enqueue(kind, ctx, args);
        }
        if queued {
            self.notify();
        }
    }

    fn notify(&self) {
        if let Some(n) = self
            .notify
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            n();
        }
    }

    /// Appends one event; false when the backlog is full (counted).
    fn enqueue(&self, kind: u16, ctx: u64, args: [u64; 4]) -> bool {
        {
            let mut g = self.lock();
            if g.queue.len() >= self.capacity {
                g.dropped_pending = g.dropped_pending.saturating_add(1);
                g.dropped_total += 1;
                return false;
            }
            let seq = g.next_seq;
            g.next_seq += 1;
            let (flags, dropped) = if g.dropped_pending > 0 {
                (PL_EVENT_F_DROPPED, std::mem::take(&mut g.dropped_pending))
            } else {
                (0, 0)
            };
            g.queue.push_back(PlEvent {
                kind,
                flags,
                dropped,
                ctx,
                seq,
                args,
            });
            g.queued_total += 1;
        }
        true
    }

    /// Takes the oldest event for delivery.
    pub fn pop(&self) -> Option<PlEvent> {
        let mut g = self.lock();
        let e = g.queue.pop_front();
        if e.is_some() {
            g.delivered_total += 1;
        }
        e
    }

    /// Puts back an event that could not be delivered (no buffer after all).
    pub fn unpop(&self, e: PlEvent) {
        let mut g = self.lock();
        g.delivered_total -= 1;
        g.queue.push_front(e);
    }

    /// Drops the backlog (device reset); dropped events are not counted
    /// as drops, which mean "the driver missed events it should see".
    pub fn clear(&self) {
        let mut g = self.lock();
        g.queue.clear();
        g.reordered.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.lock().queue.is_empty()
    }

    pub fn stats(&self) -> EventStats {
        let g = self.lock();
        EventStats {
            queued: g.queued_total,
            delivered: g.delivered_total,
            dropped: g.dropped_total,
            backlog: g.queue.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn sequence_numbers_and_drop_accounting() {
        let q = EventQueue::new(2);
        let notified = Arc::new(AtomicUsize::new(0));
        let n2 = notified.clone();
        q.set_notify(Box::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        }));
        q.push(1, 5, [1, 0, 0, 0]);
        q.push(1, 5, [2, 0, 0, 0]);
        q.push(1, 5, [3, 0, 0, 0]); // dropped: backlog full
        q.push(1, 5, [4, 0, 0, 0]); // dropped
        assert_eq!(notified.load(Ordering::SeqCst), 2);
        let a = q.pop().unwrap();
        let b = q.pop().unwrap();
        assert_eq!((a.seq, b.seq, a.flags), (1, 2, 0));
        q.push(2, 6, [5, 0, 0, 0]);
        let c = q.pop().unwrap();
        assert_eq!(
            (c.seq, c.flags, c.dropped, c.args[0]),
            (3, PL_EVENT_F_DROPPED, 2, 5)
        );
        assert!(q.pop().is_none());
        q.push(2, 6, [6, 0, 0, 0]);
        let d = q.pop().unwrap();
        q.unpop(d);
        assert_eq!(q.pop().unwrap().seq, 4);
        let s = q.stats();
        assert_eq!((s.queued, s.delivered, s.dropped, s.backlog), (4, 4, 2, 0));
    }

    #[test]
    fn filter_fates() {
        let q = EventQueue::new(16);
        // The fate is picked by args[0]; FAULT_INJECTED/NEEDS_RESET bypass.
        q.set_filter(Arc::new(|_, _, args| match args[0] {
            1 => EventFate::Drop,
            2 => EventFate::Duplicate,
            3 => EventFate::Reorder,
            4 => EventFate::Held,
            _ => EventFate::Deliver,
        }));
        q.push(1, 0, [1, 0, 0, 0]);
        q.push(PL_EVENT_FAULT_INJECTED, 0, [1, 0, 0, 0]);
        q.push(1, 0, [2, 0, 0, 0]);
        q.push(1, 0, [3, 0, 0, 0]);
        q.push(1, 0, [4, 0, 0, 0]);
        q.push(1, 0, [5, 0, 0, 0]);
        q.push(1, 0, [3, 1, 0, 0]);
        let got: Vec<u64> = std::iter::from_fn(|| q.pop()).map(|e| e.args[0]).collect();
        // Dropped 1 (the FAULT_INJECTED one passes), 2 twice, the reordered
        // 3 after 5, the held 4 nowhere, the last 3 still held.
        assert_eq!(got, vec![1, 2, 2, 5, 3]);
        q.release_reordered();
        assert_eq!(q.pop().map(|e| e.args), Some([3, 1, 0, 0]));
        q.push(1, 0, [3, 2, 0, 0]);
        q.clear();
        q.push(1, 0, [5, 0, 0, 0]);
        assert_eq!(
            q.pop().map(|e| e.args[0]),
            Some(5),
            "reset forgot the held one"
        );
        assert!(q.pop().is_none());
    }
}
