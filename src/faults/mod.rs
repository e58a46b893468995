//! Daemon fault injection (docs/faults.md section 1): fault plans, per-rule
//! random streams, and the engine that decides at each fault point which
//! rules fire and applies the model-level actions. The completion-level
//! actions (drop, duplicate, delay, reorder, withhold) are the transport's
//! (`crate::backend`). No vhost or virtio types here.

pub mod engine;
pub mod load;
pub mod plan;
pub mod rng;
pub mod status;

pub use engine::{Effect, FaultEngine, Firing};
pub use load::{LoadError, PlanFile};
pub use plan::{parse_plan, Action, Plan, PlanError, Point, RuleSpec};
pub use status::{FaultsStatus, InjectedStatus, RuleStatus};
