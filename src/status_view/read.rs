//! Reading the admin socket's status reply back into the types the daemon
//! wrote it from (`crate::model::status`, `crate::faults::status`), so a
//! field the renderer names is checked by the compiler, and a reply that
//! does not match fails with serde's message naming the field.

use serde::Deserialize;
use serde_json::Value;

use crate::faults::FaultsStatus;
use crate::model::status::StatusSnapshot;

/// One frontend slot of the reply (`crate::admin::status_reply`).
#[derive(Debug, Clone, Deserialize)]
pub struct FrontendReply {
    pub index: usize,
    /// The socket's path, or `fd N` for an inherited one.
    pub socket: String,
    pub connected: bool,
    /// Frontends this slot served so far.
    pub connections: u64,
    /// The slot's current (or last) connection's device; None before the
    /// first.
    pub status: Option<StatusSnapshot>,
}

/// The `status` command's reply (`crate::admin::status_reply`); the
/// top-level copies a one-socket daemon adds are not read back.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusReply {
    pub frontends: Vec<FrontendReply>,
    pub faults: FaultsStatus,
}

impl StatusReply {
    /// Reads `reply` (cloned: the typed reply owns its strings).
    pub fn from_json(reply: &Value) -> serde_json::Result<StatusReply> {
        StatusReply::deserialize(reply.clone())
    }
}
