//! The fault engine: the current plan with its per-rule counters and
//! streams, matching rules at fault points, and firing them: the log line,
//! the counts, the FAULT_INJECTED event, then the model-level action
//! (docs/faults.md 1.3, "Every fired fault is, in this order...").
//!
//! One engine lives as long as the daemon; each connection's fresh device
//! is handed to it at every hit, so a plan and its counters carry across
//! reconnections.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use log::{error, warn};
use serde_json::json;

use crate::abi::{fault_action_name, fault_class_name, PL_EVENT_FAULT_INJECTED};
use crate::faults::plan::{Action, Plan, Point, RuleSpec};
use crate::faults::rng::RuleRng;
use crate::faults::status::{FaultsStatus, InjectedStatus, RuleStatus};
use crate::model::Device;

struct Rule {
    id: u32,
    spec: RuleSpec,
    rng: RuleRng,
    hits: u64,
    fires: u64,
}

struct State {
    seed: u64,
    rules: Vec<Rule>,
    next_id: u32,
    /// The stream of `pinlease inject now` (rule id 0).
    now_rng: RuleRng,
}

impl State {
    fn new(plan: &Plan) -> State {
        let rules: Vec<Rule> = plan
            .rules
            .iter()
            .enumerate()
            .map(|(i, spec)| Rule {
                id: i as u32 + 1,
                spec: spec.clone(),
                rng: RuleRng::new(plan.seed, i as u32 + 1),
                hits: 0,
                fires: 0,
            })
            .collect();
        State {
            seed: plan.seed,
            next_id: rules.len() as u32 + 1,
            rules,
            now_rng: RuleRng::new(plan.seed, 0),
        }
    }
}

/// A rule that fired at a hit: what to do, and a draw from the rule's
/// stream for choosing a target (revoke-mr, spurious-break).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firing {
    pub rule: u32,
    pub hit: Point,
    pub action: Action,
    pub choice: u64,
}

/// A model-level action fired where the writer lock may be held (at an
/// event point), applied later by `run_pending`.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Revoke(u64),
    Break(u64),
}

/// What a fired fault leaves for its caller to do with the completion (or
/// event) at hand; model-level actions are already applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    Fail(crate::abi::Status),
    Delay(u64),
    Drop,
    Duplicate,
    Reorder,
    Withhold(u64),
    /// The device entered NEEDS_RESET: answer EIO.
    NeedsReset,
}

pub struct FaultEngine {
    state: Mutex<State>,
    /// Faults fired, by (point class, action code).
    injected: Mutex<BTreeMap<(u32, u32), u64>>,
    pending: Mutex<Vec<Pending>>,
    abort_report: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultEngine {
    pub fn new(plan: &Plan, abort_report: Option<PathBuf>) -> Arc<Self> {
        Arc::new(FaultEngine {
            state: Mutex::new(State::new(plan)),
            injected: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(Vec::new()),
            abort_report,
        })
    }

    /// Replaces every rule and the seed (`inject load`); counters restart.
    pub fn load(&self, plan: &Plan) {
        *lock(&self.state) = State::new(plan);
    }

    /// Appends a rule (`inject add`); returns its id.
    pub fn add(&self, spec: RuleSpec) -> u32 {
        let mut st = lock(&self.state);
        let id = st.next_id;
        st.next_id += 1;
        let rng = RuleRng::new(st.seed, id);
        st.rules.push(Rule {
            id,
            spec,
            rng,
            hits: 0,
            fires: 0,
        });
        id
    }

    /// The id the next `add` gets.
    pub fn next_id(&self) -> u32 {
        lock(&self.state).next_id
    }

    /// Removes rule `id`, or every rule; returns how many went.
    pub fn clear(&self, id: Option<u32>) -> Result<usize, String> {
        let mut st = lock(&self.state);
        match id {
            None => Ok(std::mem::take(&mut st.rules).len()),
            Some(id) => {
                let before = st.rules.len();
                st.rules.retain(|r| r.id != id);
                if st.rules.len() == before {
                    let ids: Vec<String> = st.rules.iter().map(|r| r.id.to_string()).collect();
                    return Err(format!(
                        "no rule with id {id} (rules: {})",
                        if ids.is_empty() {
                            "none".into()
                        } else {
                            ids.join(", ")
                        }
                    ));
                }
                Ok(1)
            }
        }
    }

    /// Counts a hit of every matching rule and returns those that fire, in
    /// id order, up to the first that decides the request's fate.
    pub fn hit(&self, hit: Point) -> Vec<Firing> {
        let mut st = lock(&self.state);
        let mut out = Vec::new();
        for r in st.rules.iter_mut() {
            if !r.spec.point.matches(hit) {
                continue;
            }
            r.hits += 1;
            if r.hits <= r.spec.skip || (r.spec.count != 0 && r.fires >= r.spec.count) {
                continue;
            }
            // next_f64 < 1 always, so probability 1 always fires.
            if r.rng.next_f64() >= r.spec.probability {
                continue;
            }
            r.fires += 1;
            out.push(Firing {
                rule: r.id,
                hit,
                action: r.spec.action,
                choice: r.rng.next_u64(),
            });
            if r.spec.action.is_final() {
                break;
            }
        }
        out
    }

    /// `pinlease inject now`: fires `action` once at the runtime point.
    pub fn now(&self, dev: &Device, action: Action) -> Effect {
        let choice = lock(&self.state).now_rng.next_u64();
        self.fire(
            dev,
            &Firing {
                rule: 0,
                hit: Point::Runtime,
                action,
                choice,
            },
            0,
            None,
            false,
        )
    }

    /// Hits `point` and fires what matches; returns the effects left for
    /// the caller, in rule order.
    pub fn at(&self, dev: &Device, hit: Point, ctx: u64, named_mr: Option<u64>) -> Vec<Effect> {
        self.hit(hit)
            .iter()
            .map(|f| self.fire(dev, f, ctx, named_mr, false))
            .collect()
    }

    /// Fires one rule: log, count, FAULT_INJECTED, apply. `ctx` is the
    /// context concerned (0: none), `named_mr` the MR the request names.
    /// With `defer`, revokes and breaks (which take the device's writer
    /// lock) wait for `run_pending`.
    pub fn fire(
        &self,
        dev: &Device,
        f: &Firing,
        ctx: u64,
        named_mr: Option<u64>,
        defer: bool,
    ) -> Effect {
        let mut ctx = ctx;
        let mut target = String::new();
        let detail = match f.action {
            Action::Fail(s) => s as u64,
            Action::Delay(ms) | Action::Withhold(ms) => ms,
            Action::RevokeMr => {
                let live = dev.live_mr_keys();
                let key = named_mr.filter(|k| live.contains(k)).or_else(|| {
                    (!live.is_empty()).then(|| live[(f.choice % live.len() as u64) as usize])
                });
                match key {
                    Some(k) => {
                        if let Ok(mr) = dev.mr(k) {
                            ctx = mr.ctx;
                        }
                        target = format!(" MR {k:#x}");
                        k
                    }
                    None => {
                        target = " (no live MR)".into();
                        0
                    }
                }
            }
            Action::SpuriousBreak => {
                let active = dev.active_leases();
                if active.is_empty() {
                    target = " (no active lease)".into();
                    0
                } else {
                    let (h, holder) = active[(f.choice % active.len() as u64) as usize];
                    ctx = holder;
                    target = format!(" lease {h:#x}");
                    h
                }
            }
            _ => 0,
        };
        let params = f.action.params();
        warn!(
            "fault injected: rule {} {} {}{}{} ctx {ctx:#x}{target}",
            f.rule,
            f.hit,
            f.action.name(),
            if params.is_empty() { "" } else { " " },
            params
        );
        *lock(&self.injected)
            .entry((f.hit.class(), f.action.code()))
            .or_default() += 1;
        dev.events.push(
            PL_EVENT_FAULT_INJECTED,
            ctx,
            [
                f.hit.code(),
                u64::from(f.action.code()),
                u64::from(f.rule),
                detail,
            ],
        );
        match f.action {
            Action::Fail(s) => Effect::Fail(s),
            Action::Delay(ms) => Effect::Delay(ms),
            Action::Drop => Effect::Drop,
            Action::Duplicate => Effect::Duplicate,
            Action::Reorder => Effect::Reorder,
            Action::Withhold(ms) => Effect::Withhold(ms),
            Action::RevokeMr | Action::SpuriousBreak => {
                if detail != 0 {
                    let p = if f.action == Action::RevokeMr {
                        Pending::Revoke(detail)
                    } else {
                        Pending::Break(detail)
                    };
                    if defer {
                        lock(&self.pending).push(p);
                    } else {
                        Self::apply(dev, p);
                    }
                }
                Effect::None
            }
            Action::NeedsReset => {
                dev.enter_needs_reset(f.rule);
                Effect::NeedsReset
            }
            Action::Abort => self.abort(dev, f),
        }
    }

    fn apply(dev: &Device, p: Pending) {
        match p {
            Pending::Revoke(k) => {
                dev.revoke_injected(k);
            }
            Pending::Break(h) => {
                dev.break_lease_injected(h);
            }
        }
    }

    /// Applies the revokes and breaks fired at event points (called by the
    /// transport's worker, which holds no device lock).
    pub fn run_pending(&self, dev: &Device) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        for p in pending {
            Self::apply(dev, p);
        }
    }

    /// Forgets pending actions (device reset).
    pub fn forget_pending(&self) {
        lock(&self.pending).clear();
    }

    /// The `abort` action: the report, a one-line summary, abort(3).
    fn abort(&self, dev: &Device, f: &Firing) -> ! {
        let snap = dev.status();
        let mut states: BTreeMap<&str, u64> = BTreeMap::new();
        for l in &snap.leases {
            *states.entry(l.state.as_ref()).or_default() += 1;
        }
        let summary = format!(
            "abort by fault rule {} at {}: {} context(s), {} MR(s), {} pinned page(s), leases {}",
            f.rule,
            f.hit,
            snap.contexts.len(),
            snap.mrs.len(),
            snap.pinned_pages,
            if states.is_empty() {
                "none".to_string()
            } else {
                states
                    .iter()
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let report = self.abort_report.as_ref().map(|_| {
            let report = json!({
                "ok": true,
                "connected": true,
                "aborted_by": {"rule": f.rule, "point": f.hit.to_string()},
                "status": snap,
                "faults": self.status(),
            });
            serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
        });
        error!("{summary}");
        // In a sandbox the path is out of reach: the supervisor writes the
        // report and dies of SIGABRT; this does not return there.
        crate::sandbox::planned_abort(report.as_deref());
        if let (Some(path), Some(text)) = (&self.abort_report, report) {
            if let Err(e) = std::fs::write(path, text) {
                error!("abort report {}: {e}", path.display());
            }
        }
        // A planned abort is not a daemon bug: its record is the report
        // above, and a core file would only litter the runner's directory.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads a valid rlimit; failure only leaves the
        // core limit as it was.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        std::process::abort()
    }

    /// The plan and counts for `pinlease status` (`"faults"`).
    pub fn status(&self) -> FaultsStatus {
        let st = lock(&self.state);
        let rules = st
            .rules
            .iter()
            .map(|r| RuleStatus {
                id: r.id,
                point: r.spec.point.to_string(),
                action: r.spec.action.name().to_string(),
                params: r.spec.action.params(),
                probability: r.spec.probability,
                skip: r.spec.skip,
                count: r.spec.count,
                hits: r.hits,
                fires: r.fires,
            })
            .collect();
        let injected = lock(&self.injected)
            .iter()
            .map(|(&(class, action), &n)| InjectedStatus {
                class: fault_class_name(class).unwrap_or("unknown").to_string(),
                action: fault_action_name(action).unwrap_or("unknown").to_string(),
                count: n,
            })
            .collect();
        FaultsStatus {
            seed: st.seed,
            rules,
            injected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Opcode;
    use crate::faults::plan::parse_plan;

    fn fires(plan: &str, seed: u64, hits: usize) -> Vec<u32> {
        let mut p = parse_plan(plan).unwrap();
        p.seed = seed;
        let e = FaultEngine::new(&p, None);
        let hit = Point::Request {
            op: Some(Opcode::Nop),
            after: false,
        };
        (0..hits)
            .flat_map(|i| e.hit(hit).into_iter().map(move |f| i as u32 * 100 + f.rule))
            .collect()
    }

    const HALF: &str = "[[rule]]\npoint = \"request:NOP:before\"\naction = \"delay\"\nms = 1\nprobability = 0.5\n[[rule]]\npoint = \"request:*:before\"\naction = \"delay\"\nms = 2\nprobability = 0.3";

    #[test]
    fn same_seed_same_fires_other_seed_differs() {
        let a = fires(HALF, 7, 200);
        assert_eq!(a, fires(HALF, 7, 200));
        assert_ne!(a, fires(HALF, 8, 200));
        // Roughly the probabilities asked for (200 hits each).
        let r1 = a.iter().filter(|f| *f % 100 == 1).count();
        let r2 = a.iter().filter(|f| *f % 100 == 2).count();
        assert!((70..=130).contains(&r1), "rule 1 fired {r1} of 200");
        assert!((30..=90).contains(&r2), "rule 2 fired {r2} of 200");
    }

    #[test]
    fn skip_count_and_final_actions() {
        let plan = "[[rule]]\npoint = \"request:NOP:before\"\naction = \"drop\"\nskip = 2\ncount = 2\n[[rule]]\npoint = \"request:NOP:before\"\naction = \"delay\"\nms = 5";
        let p = parse_plan(plan).unwrap();
        let e = FaultEngine::new(&p, None);
        let hit = Point::Request {
            op: Some(Opcode::Nop),
            after: false,
        };
        let rules: Vec<Vec<u32>> = (0..5)
            .map(|_| e.hit(hit).iter().map(|f| f.rule).collect())
            .collect();
        // Hits 3 and 4 fire the drop, which ends the list: rule 2 is not hit.
        assert_eq!(rules, vec![vec![2], vec![2], vec![1], vec![1], vec![2]]);
        let s = e.status();
        assert_eq!(s.rules[0].hits, 5);
        assert_eq!(s.rules[0].fires, 2);
        assert_eq!(s.rules[1].hits, 3);
        assert_eq!(
            e.hit(Point::Request {
                op: Some(Opcode::Nop),
                after: true
            }),
            vec![]
        );
    }

    #[test]
    fn add_clear_load() {
        let e = FaultEngine::new(&Plan::default(), None);
        let spec = parse_plan("[[rule]]\npoint = \"event:*\"\naction = \"drop\"")
            .unwrap()
            .rules[0]
            .clone();
        assert_eq!(e.add(spec.clone()), 1);
        assert_eq!(e.add(spec.clone()), 2);
        assert_eq!(e.clear(Some(1)), Ok(1));
        let err = e.clear(Some(1)).unwrap_err();
        assert!(
            err.contains("no rule with id 1") && err.contains("rules: 2"),
            "{err}"
        );
        assert_eq!(e.add(spec), 3);
        assert_eq!(e.clear(None), Ok(2));
        e.load(&parse_plan("seed = 4\n[[rule]]\npoint = \"event:*\"\naction = \"drop\"").unwrap());
        let s = e.status();
        assert_eq!((s.seed, s.rules[0].id), (4, 1));
    }
}
