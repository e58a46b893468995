//! `campaign_ioctl_fuzz`: a short `pinlease-guest fuzz` run inside the
//! suite, so every fault plan whose cases include it (the `campaign_*`
//! plans) fuzzes the ioctls while the daemon and the module inject faults.

use super::helpers::module_bound;
use super::outcomes::FaultWatch;
use crate::dev::DEFAULT_DEV;
use crate::fail;
use crate::fuzz::{self, opts::Opts};
use crate::ktap::{CaseCtx, CaseResult};

/// Seconds of fuzzing per run: enough for thousands of ioctls, several
/// worker kills and forks under TCG, short next to the campaign's cases.
const SECONDS: u64 = 5;

/// The seed: the fault run's (`FUZZ_SEED`, set by vm/run --faults via
/// run.conf), 0 in a plain suite run.
fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| fuzz::opts::parse_seed(&s).ok())
        .unwrap_or(0)
}

/// FAIL on a pin leak, a bad kernel log line or a worker that died of
/// something else than our SIGKILL, always; on a device that no longer
/// answers only when no fault was in play (a plan may reset it).
pub(super) fn campaign_ioctl_fuzz(t: &mut CaseCtx) -> CaseResult {
    let mut w = FaultWatch::start();
    let opts = Opts {
        seconds: SECONDS,
        seed: seed(),
        threads: 2,
        procs: 2,
        dev: DEFAULT_DEV.to_string(),
        // The plan's req_timeout_ms and fault_release_delay_ms included.
        bound: module_bound().max(fuzz::opts::DEFAULT_BOUND),
    };
    let r = match fuzz::run(&opts) {
        Ok(r) => r,
        Err(e) => fail!("pinlease-guest fuzz could not start: {e}"),
    };
    for l in r.lines() {
        t.diag(l);
    }
    let faults = w.in_play();
    if let Some(why) = &faults {
        t.diag(format!("faults in play: {why}"));
    }
    let fatal: Vec<String> = r
        .checks
        .iter()
        .filter(|c| !c.ok && (c.name != "device" || faults.is_none()))
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if !fatal.is_empty() {
        fail!(
            "fuzz seed {} failed: {} (reproduce: pinlease-guest fuzz --seconds {SECONDS} \
             --seed {} --threads 2 --procs 2)",
            opts.seed,
            fatal.join("; "),
            opts.seed
        );
    }
    Ok(())
}
