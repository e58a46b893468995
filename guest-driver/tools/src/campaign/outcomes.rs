//! What a campaign case's operations did (successes, failures by errno,
//! events by kind) and whether faults were in play during it: the line
//! every case prints and the rule that fails a case only without faults.

use crate::cases::helpers::{DEBUGFS_DIR, MODULE_PARAMS};
use crate::dev::{event_kind_name, SysResult};
use crate::fail;
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, errno_name};
use pinlease_abi as abi;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Per operation: successes and failures by errno; events by kind.
#[derive(Default)]
pub(super) struct Outcomes {
    pub(super) ops: BTreeMap<&'static str, (u32, BTreeMap<i32, u32>)>,
    pub(super) events: BTreeMap<&'static str, u32>,
    pub(super) first_errors: Vec<String>,
}

impl Outcomes {
    /// Counts `r` under `op`; the value if it succeeded.
    pub(super) fn rec<T>(&mut self, op: &'static str, r: SysResult<T>) -> Option<T> {
        let e = self.ops.entry(op).or_default();
        match r {
            Ok(v) => {
                e.0 += 1;
                Some(v)
            }
            Err(err) => {
                *e.1.entry(err.errno).or_default() += 1;
                if self.first_errors.len() < 5 {
                    self.first_errors.push(err.to_string());
                }
                None
            }
        }
    }

    pub(super) fn failures(&self) -> u32 {
        self.ops.values().flat_map(|(_, e)| e.values()).sum()
    }

    /// `outcomes: REG_MR ok=12 EIO=1, ...; events: MR_REVOKED=1`
    pub(super) fn line(&self) -> String {
        let ops: Vec<String> = self
            .ops
            .iter()
            .map(|(op, (ok, errs))| {
                let mut s = format!("{op} ok={ok}");
                for (e, n) in errs {
                    s.push_str(&format!(" {}={n}", errno_name(*e)));
                }
                s
            })
            .collect();
        let evs: Vec<String> = self
            .events
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        format!(
            "outcomes: {}; events: {}",
            if ops.is_empty() {
                "none".to_string()
            } else {
                ops.join(", ")
            },
            if evs.is_empty() {
                "none".to_string()
            } else {
                evs.join(" ")
            }
        )
    }
}

/// Set once any campaign case saw a fault: later cases of the run are
/// lenient too (a device left in NEEDS_RESET by a lost event says nothing).
static FAULTS_SEEN: AtomicBool = AtomicBool::new(false);

/// Module parameters (docs/faults.md section 2) whose non-default value
/// means a campaign configured the module: (name, default).
const FAULT_PARAMS: &[(&str, &str)] = &[
    ("fault_pin_after", "-1"),
    ("fault_lease_set", "0"),
    ("fault_release_delay_ms", "0"),
    ("fault_drop_event", "0"),
    ("req_timeout_ms", "30000"),
];

/// Kernel log lines of the module that only faults produce.
const FAULT_LOG: &[&str] = &["fault injected", "resetting the device", "not answered in"];

/// Evidence that faults were in play during a case.
pub(super) struct FaultWatch {
    kmsg: sys::Kmsg,
    device0: String,
    faults0: String,
    seen: Option<String>,
}

/// The `timeouts:` and `resets:` lines of debugfs `device`.
fn device_counters() -> String {
    std::fs::read_to_string(format!("{DEBUGFS_DIR}/device"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("timeouts:") || l.starts_with("resets:"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn debugfs_faults() -> String {
    std::fs::read_to_string(format!("{DEBUGFS_DIR}/faults")).unwrap_or_default()
}

pub(super) fn param(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("{MODULE_PARAMS}/{name}"))
        .ok()
        .map(|s| s.trim().to_string())
}

impl FaultWatch {
    pub(super) fn start() -> FaultWatch {
        FaultWatch {
            kmsg: sys::Kmsg::open_at_end(),
            device0: device_counters(),
            faults0: debugfs_faults(),
            seen: None,
        }
    }

    pub(super) fn note(&mut self, why: String) {
        if self.seen.is_none() {
            self.seen = Some(why);
        }
    }

    pub(super) fn event(&mut self, e: &abi::PlEvent) {
        if e.kind == abi::PL_EVENT_FAULT_INJECTED || e.kind == abi::PL_EVENT_NEEDS_RESET {
            self.note(format!(
                "{} event (args {:#x} {:#x})",
                event_kind_name(e.kind),
                e.args[0],
                e.args[1]
            ));
        }
    }

    /// Why faults count as in play (None: a plain run).
    pub(super) fn in_play(&mut self) -> Option<String> {
        for l in self.kmsg.read_new() {
            let msg = sys::kmsg_message(&l);
            if FAULT_LOG.iter().any(|f| msg.contains(f)) {
                self.note(format!("kernel log: {msg}"));
            }
        }
        let dev = device_counters();
        if dev != self.device0 {
            self.note(format!("debugfs device: {} -> {dev}", self.device0));
        }
        if debugfs_faults() != self.faults0 {
            self.note("debugfs faults changed".to_string());
        }
        for (name, default) in FAULT_PARAMS {
            if let Some(v) = param(name) {
                if v != *default {
                    self.note(format!("module parameter {name}={v}"));
                }
            }
        }
        if self.seen.is_some() {
            FAULTS_SEEN.store(true, Ordering::Relaxed);
        } else if FAULTS_SEEN.load(Ordering::Relaxed) {
            self.seen = Some("an earlier campaign case saw faults".to_string());
        }
        self.seen.clone()
    }

    /// The end of a case: the outcome line, and FAIL if an operation
    /// failed while no fault was in play.
    pub(super) fn finish(&mut self, t: &mut CaseCtx, o: &Outcomes) -> CaseResult {
        t.diag(o.line());
        match self.in_play() {
            Some(why) => {
                t.diag(format!("faults in play: {why}"));
                Ok(())
            }
            None if o.failures() > 0 => fail!(
                "{} operation(s) failed with no fault injected: {}",
                o.failures(),
                o.first_errors.join("; ")
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::SysError;
    use crate::ktap::CaseErr;

    #[test]
    fn outcome_line_counts_by_errno() {
        let mut o = Outcomes::default();
        assert_eq!(o.rec("REG_MR", Ok::<u32, SysError>(1)), Some(1));
        o.rec("REG_MR", Ok::<(), SysError>(()));
        o.rec::<()>("REG_MR", Err(SysError::new("x", libc::EIO)));
        o.rec::<()>("DMA_READ", Err(SysError::new("y", libc::ESTALE)));
        o.rec::<()>("DMA_READ", Err(SysError::new("y", libc::ESTALE)));
        o.events.insert("MR_REVOKED", 2);
        assert_eq!(o.failures(), 3);
        assert_eq!(
            o.line(),
            "outcomes: DMA_READ ok=0 ESTALE=2, REG_MR ok=2 EIO=1; events: MR_REVOKED=2"
        );
        assert_eq!(o.first_errors.len(), 3);
        assert_eq!(Outcomes::default().line(), "outcomes: none; events: none");
    }

    /// The only test that touches FAULTS_SEEN (sticky for the process):
    /// the strict half runs first.
    #[test]
    fn failures_fail_the_case_only_without_faults() {
        let mut o = Outcomes::default();
        o.rec::<()>(
            "REG_MR",
            Err(SysError::new("PINLEASE_IOC_REG_MR(addr=0x1000)", libc::EIO)),
        );
        let mut t = CaseCtx::default();
        let mut w = FaultWatch::start();
        match w.finish(&mut t, &o) {
            Err(CaseErr::Fail(m)) => {
                assert!(
                    m.contains("1 operation(s) failed with no fault injected"),
                    "{m}"
                );
                assert!(m.contains("PINLEASE_IOC_REG_MR(addr=0x1000)"), "{m}");
            }
            r => panic!("a failure without faults must fail the case: {r:?}"),
        }
        assert_eq!(t.diags, vec!["outcomes: REG_MR ok=0 EIO=1; events: none"]);
        assert!(FaultWatch::start()
            .finish(&mut t, &Outcomes::default())
            .is_ok());

        let mut t = CaseCtx::default();
        let mut w = FaultWatch::start();
        w.event(&abi::PlEvent {
            kind: abi::PL_EVENT_MR_REVOKED,
            ..Default::default()
        });
        assert!(
            w.finish(&mut t, &o).is_err(),
            "MR_REVOKED is no fault evidence"
        );
        let mut w = FaultWatch::start();
        w.event(&abi::PlEvent {
            kind: abi::PL_EVENT_FAULT_INJECTED,
            args: [0x1_0004, 1, 0, 5],
            ..Default::default()
        });
        assert_eq!(w.finish(&mut t, &o), Ok(()));
        assert!(
            t.diags
                .iter()
                .any(|d| d.starts_with("faults in play: FAULT_INJECTED event")),
            "{:?}",
            t.diags
        );
        // Later cases of the run stay lenient.
        let mut w = FaultWatch::start();
        assert_eq!(w.finish(&mut t, &o), Ok(()));
        assert!(t
            .diags
            .last()
            .unwrap()
            .contains("an earlier campaign case saw faults"));
    }
}
