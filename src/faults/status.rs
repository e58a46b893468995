//! The fault plan as `pinlease status` and `pinlease inject list` show it
//! (the reply's `"faults"`): written by the engine, read by
//! `crate::status_view`, so both sides name the same fields.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultsStatus {
    pub seed: u64,
    pub rules: Vec<RuleStatus>,
    /// Faults injected so far, by point class and action.
    pub injected: Vec<InjectedStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub id: u32,
    /// As in the plan file: `request:REG_MR:before`.
    pub point: String,
    pub action: String,
    /// The action's parameter (`ENOMEM`, `200ms`); empty when it has none.
    pub params: String,
    pub probability: f64,
    pub skip: u64,
    /// 0: unlimited.
    pub count: u64,
    pub hits: u64,
    pub fires: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InjectedStatus {
    /// A point class name (`pinlease_abi::FAULT_CLASSES`).
    pub class: String,
    pub action: String,
    pub count: u64,
}
