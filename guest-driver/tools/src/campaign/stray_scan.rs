//! `campaign_stray_scan`: fresh memory scanned for the scrubber's
//! canaries after the other cases.

use super::helpers::{drain, open_ctx};
use super::outcomes::{FaultWatch, Outcomes};
use crate::cases::helpers::{KIB, SCRUB_WAIT};
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::Mapping;
use crate::uapi::*;
use crate::{fail, skip, stray};
use pinlease_abi::PL_ACCESS_ALL;
use std::time::{Duration, Instant};

/// Positive control (the scrubber runs and the scanner recognises its
/// words), then `stray::run` over fresh memory: FAIL on any canary there.
pub(super) fn campaign_stray_scan(t: &mut CaseCtx) -> CaseResult {
    let mut w = FaultWatch::start();
    let mut o = Outcomes::default();
    if let Some(c) = open_ctx(&mut o) {
        let m = Mapping::anon(16 * KIB)?;
        m.touch();
        let reg = o.rec(
            "REG_MR_SCRUB",
            c.dev
                .reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, PINLEASE_REG_SCRUB),
        );
        if let Some(r) = reg {
            let words = m.len() / 8;
            let t0 = Instant::now();
            let mut s = stray::scan_mapping(&m, 1);
            while s.canaries < words && t0.elapsed() < SCRUB_WAIT {
                std::thread::sleep(Duration::from_millis(20));
                s = stray::scan_mapping(&m, 1);
            }
            let in_play = w.in_play();
            match (s.canaries, in_play) {
                (n, _) if n == words => {
                    let slot = s.hits.first().map_or(u32::MAX, |h| h.slot);
                    if slot != r.key as u32 {
                        fail!(
                            "the scanner decoded slot {slot:#x} from MR {:#x}'s canaries",
                            r.key
                        );
                    }
                    t.diag(format!(
                        "control: the scanner recognises all {words} canaries of scrub MR {:#x} \
                         after {:?}",
                        r.key,
                        t0.elapsed()
                    ));
                }
                (0, None) => skip!(
                    "no canary in scrub MR {:#x} within {SCRUB_WAIT:?}: the daemon's scrubber \
                     is off (guest-driver/vm/run --scrub-period-ms 0?)",
                    r.key
                ),
                (n, None) => fail!(
                    "the scanner recognised {n} of {words} words of scrub MR {:#x} after \
                     {SCRUB_WAIT:?}",
                    r.key
                ),
                (n, Some(why)) => t.diag(format!(
                    "control: {n} of {words} canaries of MR {:#x} (faults in play: {why})",
                    r.key
                )),
            }
            o.rec("DEREG_MR", c.dev.dereg_mr(r.key));
        }
        drain(c.ev.as_ref(), &mut o, &mut w);
    }
    let r = stray::run(30, Duration::from_secs(2)).map_err(CaseErr::Fail)?;
    t.diag(r.summary());
    for l in r.lines() {
        t.diag(l);
    }
    if r.canaries > 0 {
        fail!(
            "{} scrubber canary word(s) in fresh memory: the device wrote pages nobody had \
             pinned (first: {})",
            r.canaries,
            r.lines().get(1).cloned().unwrap_or_default()
        );
    }
    w.finish(t, &o)
}
