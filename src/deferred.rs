//! Completions and events a fault rule holds back (delay, reorder,
//! withhold: docs/faults.md 1.3), kept with their due times so the vhost
//! worker never sleeps: a timer thread signals an eventfd the worker polls
//! (like the "events pending" one) when something comes due, and the worker
//! writes it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::event::EventNotifier;

/// How long a `reorder` waits for a later completion (event) before it is
/// written alone.
pub const REORDER_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A request chain's used-ring entry.
    Completion { head: u16, len: u32 },
    /// A delayed event, queued (unfiltered) when due.
    Event { kind: u16, ctx: u64, args: [u64; 4] },
    /// Reordered events wait in the event queue; this releases them alone.
    ReleaseReorderedEvents,
}

#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub due: Instant,
    pub item: Item,
    /// A reordered completion: also written right after the next one.
    pub reorder: bool,
}

struct Shared {
    items: Mutex<Vec<Held>>,
    changed: Condvar,
    stop: AtomicBool,
    wake: EventNotifier,
}

pub struct Deferred {
    shared: Arc<Shared>,
    timer: Option<JoinHandle<()>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Held>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn timer(s: &Shared) {
    let mut g = s.lock();
    while !s.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        g = match g.iter().map(|h| h.due).min() {
            None => s.changed.wait(g).unwrap_or_else(|e| e.into_inner()),
            Some(due) if due <= now => {
                // A full eventfd counter already means "due": nothing lost.
                let _ = s.wake.notify();
                // The worker takes what is due and tells us; re-check soon
                // anyway in case it was busy.
                s.changed
                    .wait_timeout(g, Duration::from_millis(20))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            Some(due) => {
                s.changed
                    .wait_timeout(g, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

impl Deferred {
    /// Starts the timer thread; it signals `wake` when something is due.
    pub fn new(wake: EventNotifier) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            items: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            wake,
        });
        let s = shared.clone();
        let t = std::thread::Builder::new()
            .name("fault-timer".into())
            .spawn(move || timer(&s))?;
        Ok(Deferred {
            shared,
            timer: Some(t),
        })
    }

    /// Holds `item` for `after`.
    pub fn hold(&self, item: Item, after: Duration, reorder: bool) {
        self.shared.lock().push(Held {
            due: Instant::now() + after,
            item,
            reorder,
        });
        self.shared.changed.notify_all();
    }

    /// Takes everything due now, oldest due first.
    pub fn take_due(&self) -> Vec<Held> {
        let now = Instant::now();
        let mut g = self.shared.lock();
        let (mut due, keep): (Vec<Held>, Vec<Held>) = g.drain(..).partition(|h| h.due <= now);
        *g = keep;
        drop(g);
        self.shared.changed.notify_all();
        due.sort_by_key(|h| h.due);
        due
    }

    /// Takes the reordered completions, to write after the one just written.
    pub fn take_reordered(&self) -> Vec<(u16, u32)> {
        let mut g = self.shared.lock();
        let mut out = Vec::new();
        g.retain(|h| match (h.reorder, h.item) {
            (true, Item::Completion { head, len }) => {
                out.push((head, len));
                false
            }
            _ => true,
        });
        out
    }

    /// Forgets everything held (device reset).
    pub fn clear(&self) -> usize {
        let n = std::mem::take(&mut *self.shared.lock()).len();
        self.shared.changed.notify_all();
        n
    }

    /// Nothing held (tests check a drain left nothing behind).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.shared.lock().is_empty()
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::event::{new_event_consumer_and_notifier, EventFlag};

    #[test]
    fn due_items_signal_and_come_out_in_order() {
        let (consumer, notifier) = new_event_consumer_and_notifier(EventFlag::empty()).unwrap();
        let d = Deferred::new(notifier).unwrap();
        let t0 = Instant::now();
        d.hold(
            Item::Completion { head: 2, len: 16 },
            Duration::from_millis(60),
            false,
        );
        d.hold(
            Item::Completion { head: 1, len: 16 },
            Duration::from_millis(30),
            false,
        );
        d.hold(
            Item::Completion { head: 3, len: 16 },
            Duration::from_secs(60),
            true,
        );
        assert!(d.take_due().is_empty());
        let mut heads = Vec::new();
        while heads.len() < 2 {
            consumer.consume().unwrap(); // blocks until the timer signals
            for h in d.take_due() {
                if let Item::Completion { head, .. } = h.item {
                    heads.push(head);
                }
            }
        }
        assert_eq!(heads, vec![1, 2]);
        assert!(t0.elapsed() >= Duration::from_millis(60));
        assert_eq!(d.take_reordered(), vec![(3, 16)]);
        d.hold(Item::ReleaseReorderedEvents, Duration::from_secs(60), false);
        assert_eq!(d.clear(), 1);
        assert!(d.is_empty());
    }
}
