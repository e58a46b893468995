//! The `events` target: the device's event queue
//! (`pinlease::model::events::EventQueue`) and the bytes it hands the event
//! virtqueue (`PlEvent::as_bytes`, scattered over the driver's buffers as
//! the backend does).
//!
//! The input drives pushes (any kind, context and arguments, through a
//! fault filter whose fate the input picks: deliver, drop, duplicate,
//! held, reorder), releases of reordered events, deliveries (some failing
//! and put back), and resets. A reference queue written here predicts
//! every delivered event (sequence number, dropped flag and count) and the
//! counters. Every delivered event is encoded, split over buffers of the
//! sizes the input picks, put together and decoded twice: with
//! `PlEvent::read_from` and by the field offsets of docs/abi.md section 6;
//! both must give the event back. The backlog never exceeds its capacity.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pinlease::model::events::{EventFate, EventQueue, EventStats};
use pinlease_abi::*;

use crate::input::{Input, Program};

const FATES: [EventFate; 5] = [
    EventFate::Deliver,
    EventFate::Drop,
    EventFate::Duplicate,
    EventFate::Held,
    EventFate::Reorder,
];

/// The queue as docs/abi.md section 6 and the `EventQueue` docs describe it.
struct Model {
    capacity: usize,
    queue: VecDeque<PlEvent>,
    reordered: Vec<(u16, u64, [u64; 4])>,
    next_seq: u64,
    dropped_pending: u32,
    stats: EventStats,
    notified: usize,
}

impl Model {
    fn enqueue(&mut self, kind: u16, ctx: u64, args: [u64; 4]) -> bool {
        if self.queue.len() >= self.capacity {
            self.dropped_pending = self.dropped_pending.saturating_add(1);
            self.stats.dropped += 1;
            return false;
        }
        let (flags, dropped) = if self.dropped_pending > 0 {
            (
                PL_EVENT_F_DROPPED,
                std::mem::take(&mut self.dropped_pending),
            )
        } else {
            (0, 0)
        };
        self.queue.push_back(PlEvent {
            kind,
            flags,
            dropped,
            ctx,
            seq: self.next_seq,
            args,
        });
        self.next_seq += 1;
        self.stats.queued += 1;
        true
    }

    fn push_unfiltered(&mut self, kind: u16, ctx: u64, args: [u64; 4]) {
        let mut queued = self.enqueue(kind, ctx, args);
        for (k, c, a) in std::mem::take(&mut self.reordered) {
            queued |= self.enqueue(k, c, a);
        }
        if queued {
            self.notified += 1;
        }
    }

    fn push(&mut self, fate: EventFate, kind: u16, ctx: u64, args: [u64; 4]) {
        let fate = if kind == PL_EVENT_FAULT_INJECTED || kind == PL_EVENT_NEEDS_RESET {
            EventFate::Deliver
        } else {
            fate
        };
        match fate {
            EventFate::Deliver => self.push_unfiltered(kind, ctx, args),
            EventFate::Drop | EventFate::Held => {}
            EventFate::Duplicate => {
                self.push_unfiltered(kind, ctx, args);
                self.push_unfiltered(kind, ctx, args);
            }
            EventFate::Reorder => self.reordered.push((kind, ctx, args)),
        }
    }
}

/// Decodes an event by the offsets of docs/abi.md section 6.
fn decode_by_offsets(b: &[u8]) -> PlEvent {
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    PlEvent {
        kind: u16_at(0),
        flags: u16_at(2),
        dropped: u32_at(4),
        ctx: u64_at(8),
        seq: u64_at(16),
        args: [u64_at(24), u64_at(32), u64_at(40), u64_at(48)],
    }
}

/// The event's bytes as the driver reads them from buffers of `sizes`
/// (the backend's scatter: in order, each filled before the next).
fn through_buffers(ev: &PlEvent, sizes: &[usize]) -> Vec<u8> {
    let bytes = ev.as_bytes();
    let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0xee; n]).collect();
    let mut done = 0;
    for b in bufs.iter_mut() {
        let n = b.len().min(bytes.len() - done);
        b[..n].copy_from_slice(&bytes[done..done + n]);
        done += n;
    }
    assert_eq!(done, bytes.len(), "buffers hold the whole event");
    bufs.concat()
}

fn kind(input: &mut Input) -> u16 {
    let sel = input.u8();
    if sel < 0xf0 {
        let kinds = EVENT_KINDS;
        kinds[sel as usize % kinds.len()].0
    } else {
        input.u16()
    }
}

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let capacity = usize::from(input.u8() % 8);
    let q = EventQueue::new(capacity);
    let notified = Arc::new(AtomicUsize::new(0));
    let n2 = notified.clone();
    q.set_notify(Box::new(move || {
        n2.fetch_add(1, Ordering::SeqCst);
    }));
    let fate = Arc::new(Mutex::new(EventFate::Deliver));
    let f2 = fate.clone();
    q.set_filter(Arc::new(move |_, _, _| *f2.lock().unwrap()));
    let mut m = Model {
        capacity,
        queue: VecDeque::new(),
        reordered: Vec::new(),
        next_seq: 1,
        dropped_pending: 0,
        stats: EventStats::default(),
        notified: 0,
    };
    for _ in 0..256 {
        if input.is_empty() {
            break;
        }
        match input.u8() % 6 {
            0 | 1 => {
                let f = FATES[usize::from(input.u8()) % FATES.len()];
                let kind = kind(&mut input);
                let ctx = input.u64();
                let args = [input.u64(), input.u64(), input.u64(), input.u64()];
                *fate.lock().unwrap() = f;
                q.push(kind, ctx, args);
                m.push(f, kind, ctx, args);
            }
            2 => {
                q.release_reordered();
                for (k, c, a) in std::mem::take(&mut m.reordered) {
                    m.enqueue(k, c, a);
                }
                if !m.queue.is_empty() {
                    m.notified += 1;
                }
            }
            3 | 4 => {
                let got = q.pop();
                let want = m.queue.pop_front();
                assert_eq!(got, want, "delivered event");
                let Some(ev) = got else { continue };
                m.stats.delivered += 1;
                let sizes: Vec<usize> = (0..1 + input.u8() % 4)
                    .map(|_| usize::from(input.u8() % 64))
                    .chain([size_of_event()])
                    .collect();
                let bytes = through_buffers(&ev, &sizes);
                assert_eq!(PlEvent::read_from(&bytes), Some(ev), "read_from");
                assert_eq!(decode_by_offsets(&bytes), ev, "docs/abi.md offsets");
                assert_eq!(ev.flags & !PL_EVENT_F_DROPPED, 0, "unknown flags");
                assert_eq!(ev.flags != 0, ev.dropped != 0, "dropped flag and count");
                if input.u8() >= 0xe0 {
                    // No buffer after all: the backend puts it back.
                    q.unpop(ev);
                    m.queue.push_front(ev);
                    m.stats.delivered -= 1;
                }
            }
            _ => {
                q.clear();
                m.queue.clear();
                m.reordered.clear();
            }
        }
        m.stats.backlog = m.queue.len() as u64;
        let stats = q.stats();
        assert_eq!(stats, m.stats, "event counters");
        assert!(stats.backlog as usize <= capacity, "backlog over capacity");
        assert_eq!(q.is_empty(), m.queue.is_empty());
        assert_eq!(notified.load(Ordering::SeqCst), m.notified, "notifications");
    }
}

fn size_of_event() -> usize {
    std::mem::size_of::<PlEvent>()
}

/// Seeds: each event kind pushed and delivered; every fate; a full backlog
/// with drops reported on the next delivery.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let push = |p: &mut Program, fate: u8, kind_index: u8, ctx: u64| {
        p.u8(0).u8(fate).u8(kind_index).u64(ctx);
        for a in 1..=4u64 {
            p.u64(a * 0x1111 + ctx);
        }
    };
    let pop = |p: &mut Program| {
        p.u8(3).u8(0).u8(13).u8(0);
    };
    for (i, (_, name)) in EVENT_KINDS.iter().enumerate() {
        let mut p = Program::default();
        p.u8(4);
        push(&mut p, 0, i as u8, 0x1_0000_0001);
        pop(&mut p);
        out.push((format!("kind_{}", name.to_lowercase()), p.bytes));
    }
    let mut p = Program::default();
    p.u8(7);
    for fate in 0..5u8 {
        push(&mut p, fate, fate, u64::from(fate));
    }
    p.u8(2);
    for _ in 0..4 {
        pop(&mut p);
    }
    out.push(("every_fate".into(), p.bytes));
    let mut p = Program::default();
    p.u8(2);
    for k in 0..5u8 {
        push(&mut p, 0, k, 9);
    }
    pop(&mut p);
    pop(&mut p);
    push(&mut p, 0, 0, 9);
    pop(&mut p);
    p.u8(3).u8(0).u8(56).u8(0xff);
    p.u8(5);
    out.push(("backlog_full_drops_unpop_clear".into(), p.bytes));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs_clean() {
        for (_, s) in seeds() {
            run(&s);
        }
    }

    #[test]
    fn offsets_decoder_reads_a_known_event() {
        let ev = PlEvent {
            kind: PL_EVENT_LEASE_BROKEN,
            flags: PL_EVENT_F_DROPPED,
            dropped: 3,
            ctx: 0x1_0000_0002,
            seq: 77,
            args: [1, 2, 3, 4],
        };
        assert_eq!(decode_by_offsets(&through_buffers(&ev, &[1, 7, 100])), ev);
    }
}
