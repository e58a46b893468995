//! Two DEREG_MRs of one key at once: the fuzzer's second finding
//! (docs/guest-fuzz.md, "Findings").

use crate::cases::helpers::{fdinfo, open, pins_held};
use crate::dev::Dev;
use crate::fail;
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::Mapping;
use pinlease_abi::PL_ACCESS_ALL;
use std::sync::Barrier;

const ROUNDS: u32 = 300;

/// Two threads deregister the same MR at once, ROUNDS times. Exactly one
/// may succeed; after both, the MR must be gone from the module too (no
/// `mr:` line in fdinfo, its pin released). Before the fix, the thread that
/// took the MR out of the context's table put it back when the device
/// answered ESTALE (the other thread's DEREG_MR, sent for a key the module
/// no longer listed, had destroyed it on the device): a zombie MR holding
/// its pins until the fd closed, whose slot made a later REG_MR fail with
/// EBUSY ("cannot track it").
pub(super) fn dereg_mr_twice_at_once(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    let m = Mapping::anon(4096)?;
    m.touch();
    let pins0 = pins_held()?;
    let both = Barrier::new(2);
    let (mut ok_err, mut both_ok) = (0u32, 0u32);
    for round in 0..ROUNDS {
        let key = dev.reg_mr(m.addr(), 4096, PL_ACCESS_ALL, 0)?.key;
        let dereg = |d: &Dev| {
            both.wait();
            d.dereg_mr(key)
        };
        let (a, b) = std::thread::scope(|s| {
            let other = s.spawn(|| dereg(&dev));
            let mine = dereg(&dev);
            (mine, other.join().expect("dereg thread"))
        });
        match (a.is_ok(), b.is_ok()) {
            (true, true) => both_ok += 1,
            (false, false) => {
                fail!("round {round}: both DEREG_MRs of {key:#x} failed: {a:?} {b:?}")
            }
            _ => ok_err += 1,
        }
        let info = fdinfo(dev.raw())?;
        if let Some(l) = info.lines().find(|l| l.starts_with("mr:")) {
            fail!(
                "round {round}: after DEREG_MR x2 of {key:#x} ({a:?}, {b:?}) the module still \
                 lists {l:?}"
            );
        }
    }
    let held = pins_held()?;
    t.diag(format!(
        "{ROUNDS} rounds: one ok one failed {ok_err}, both ok {both_ok}; pins held {held} (before {pins0})"
    ));
    if both_ok > 0 {
        fail!("{both_ok} rounds where both DEREG_MRs of one key succeeded");
    }
    if held != pins0 {
        fail!(
            "{} pins still held after every MR was deregistered",
            held - pins0
        );
    }
    Ok(())
}
