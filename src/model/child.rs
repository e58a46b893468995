//! A context's children: event channels and MR exports. A child holds its
//! context's struct (an `Arc`), never its pins, so RELEASE_CONTEXT waits
//! for the last child (docs/design.md §6, seed 000).

use std::sync::Arc;
use std::time::SystemTime;

use crate::model::context::Context;
use crate::model::mr::Export;
use crate::model::table::Handle;

pub enum ChildKind {
    EventChannel,
    Export(Arc<Export>),
}

impl ChildKind {
    pub fn name(&self) -> &'static str {
        match self {
            ChildKind::EventChannel => "event-channel",
            ChildKind::Export(_) => "mr-export",
        }
    }
}

pub struct Child {
    pub handle: Handle,
    /// Strong: a child keeps its context's struct alive (not its pins).
    pub context: Arc<Context>,
    pub kind: ChildKind,
    pub created: SystemTime,
}
