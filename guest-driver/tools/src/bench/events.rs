//! `events`: the device's events delivered to an event channel, per second.
//!
//! The cheapest way to make many events is one request: DEREG_MR of an MR
//! that `IMPORTS` MRs of the same context alias revokes every import, one
//! `PL_EVENT_MR_REVOKED` (reason SOURCE_GONE) each (docs/abi.md 5.10,
//! 5.18). A round registers one page, exports it, imports it `IMPORTS`
//! times (untimed), then times the DEREG_MR of the source until the last
//! of those events is read from the event fd; the imports are deregistered
//! and the export fd closed after it, untimed. What is counted: events
//! read (the device's event queue -> the module's event work -> the event
//! channel -> read(2)), over the timed part of the rounds.

use super::figures::{Figure, Side};
use super::{run_loop, Bench, BenchError, BenchResult, Bounds, Line};
use crate::dev::{parse_events, Dev, EVENT_SIZE};
use crate::sys::{self, Mapping};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Imports per round: the events one DEREG_MR makes. Below the module's
/// event-channel depth (PL_EVCH_DEPTH, 256), so none is dropped there.
const IMPORTS: usize = 128;

/// How long a round waits for its events.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// One round's result.
struct Round {
    /// From DEREG_MR of the source to the last event read.
    took: Duration,
    /// MR_REVOKED events of this round's imports read.
    events: usize,
    /// Events the device or module dropped meanwhile (PL_EVENT_F_DROPPED).
    dropped: u64,
}

fn round(dev: &Dev, ev: &OwnedFd, page: &Mapping) -> BenchResult<Round> {
    let src = dev.reg_mr(page.addr(), page.len() as u64, PL_ACCESS_ALL, 0)?;
    let export = dev.export_mr(src.key)?;
    let mut imports = Vec::with_capacity(IMPORTS);
    for _ in 0..IMPORTS {
        imports.push(dev.import_mr(export.as_raw_fd(), PL_ACCESS_ALL)?);
    }
    let t0 = Instant::now();
    dev.dereg_mr(src.key)?;
    let (mut events, mut dropped) = (0usize, 0u64);
    while events + (dropped as usize) < IMPORTS {
        let left = EVENT_WAIT.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return Err(BenchError::Timeout {
                what: format!(
                    "MR_REVOKED of {IMPORTS} imports of MR {:#x} ({events} read, {dropped} dropped)",
                    src.key
                ),
                within: EVENT_WAIT,
            });
        }
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        if sys::poll_one(ev.as_raw_fd(), libc::POLLIN, ms)? & libc::POLLIN == 0 {
            continue;
        }
        let buf = sys::read_fd(ev.as_raw_fd(), EVENT_SIZE * IMPORTS)
            .map_err(|e| crate::dev::SysError::new("read(event fd)", e))?;
        for e in parse_events(&buf) {
            if e.flags & abi::PL_EVENT_F_DROPPED != 0 {
                dropped += u64::from(e.dropped);
            }
            if e.kind == abi::PL_EVENT_MR_REVOKED
                && e.args[1] == abi::PL_REVOKE_SOURCE_GONE
                && imports.contains(&e.args[0])
            {
                events += 1;
            }
        }
    }
    let took = t0.elapsed();
    for k in imports {
        dev.dereg_mr(k)?;
    }
    drop(export);
    Ok(Round {
        took,
        events,
        dropped,
    })
}

pub(super) fn events(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let dev = b.open()?;
    let ev = dev.event_fd()?;
    let page = Mapping::anon(sys::page_size())?;
    page.touch();
    let mut rounds = Vec::new();
    let s = run_loop(&b.timing, Bounds::RATE, || {
        let r = round(&dev, &ev, &page)?;
        let took = r.took;
        rounds.push(r);
        Ok(took)
    })?;
    // The timed rounds are the last n (the warm-up's come first).
    let timed = &rounds[rounds.len() - s.n()..];
    let events: usize = timed.iter().map(|r| r.events).sum();
    let dropped: u64 = timed.iter().map(|r| r.dropped).sum();
    let rate = if s.total().is_zero() {
        0.0
    } else {
        events as f64 / s.total().as_secs_f64()
    };
    Ok(vec![Line::new(Side::Pinlease, f, rate)
        .detail("n", s.n())
        .detail("spread", s.spread_text())
        .detail("events_per_round", IMPORTS)
        .detail("dropped", dropped)
        .detail(
            "via",
            "DEREG_MR_of_an_imported_MR:MR_REVOKED_per_import",
        )])
}
