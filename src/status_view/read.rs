//! Reading the admin socket's status reply back into the types the daemon
//! wrote it from (`crate::model::status`, `crate::faults::status`), so a
//! field the renderer names is checked by the compiler, and a reply that
//! does not match fails with serde's message naming the field.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::faults::FaultsStatus;
use crate::model::events::EventStats;
use crate::model::status::StatusSnapshot;

/// The `status` command's reply (`crate::admin::answer`).
#[derive(Debug, Clone, Deserialize)]
#[serde(bound(deserialize = "'de: 'static"))]
pub struct StatusReply {
    pub connected: bool,
    /// Frontends served so far.
    pub connections: u64,
    /// The current (or last) connection's device; None before the first.
    pub status: Option<StatusSnapshot>,
    pub faults: FaultsStatus,
}

impl StatusReply {
    /// Reads an owned copy of `reply`: the `&'static str` fields of the
    /// status cannot borrow from the caller's value (see `static_name`).
    pub fn from_json(reply: &Value) -> serde_json::Result<StatusReply> {
        StatusReply::deserialize(reply.clone())
    }
}

/// For the status's `&'static str` fields (states, kinds, policies,
/// reasons). serde's derive would borrow them from the input, which only
/// input that lives forever allows (hence `'de: 'static` on the types that
/// hold them, and reading from an owned `Value`, whose strings are owned).
/// The daemon takes these names from fixed tables, so a reader sees a
/// handful of distinct ones: each is leaked once and shared.
pub(crate) fn static_name<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    String::deserialize(d).map(intern)
}

/// `static_name` for an optional field.
pub(crate) fn optional_static_name<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<&'static str>, D::Error> {
    Option::<String>::deserialize(d).map(|n| n.map(intern))
}

fn intern(name: String) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = names.get(name.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.insert(leaked);
    leaked
}

/// `EventStats` (crate::model::events) derives only Serialize; these are
/// its fields, built into one by name so a renamed field does not compile.
pub(crate) fn event_stats<'de, D: Deserializer<'de>>(d: D) -> Result<EventStats, D::Error> {
    #[derive(Deserialize)]
    struct Fields {
        queued: u64,
        delivered: u64,
        dropped: u64,
        backlog: u64,
    }
    let f = Fields::deserialize(d)?;
    Ok(EventStats {
        queued: f.queued,
        delivered: f.delivered,
        dropped: f.dropped,
        backlog: f.backlog,
    })
}
