//! Device contexts and their children (event channels, MR exports).
//!
//! A context has two lifetimes (DESIGN.md §6, seed 000). Its hardware
//! lifetime ends at CLOSE_CONTEXT (the guest closed the device fd): MRs are
//! destroyed, pins dropped, leases released, and every later request on it
//! gets ESHUTDOWN. Its object lifetime ends at RELEASE_CONTEXT, which the
//! device refuses while a child is alive: children hold the context struct
//! (an `Arc`), never its pins.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::model::mr::Mr;
use crate::model::table::Handle;

/// The hardware part of a context, under the context's own lock.
#[derive(Default)]
pub struct Hardware {
    pub closed: bool,
    pub mrs: BTreeSet<Handle>,
    pub leases: BTreeSet<Handle>,
    pub children: BTreeSet<Handle>,
}

pub struct Context {
    pub handle: Handle,
    pub pid: u32,
    pub comm: String,
    pub created: SystemTime,
    pub hw: Mutex<Hardware>,
}

impl Context {
    pub fn new(handle: Handle, pid: u32, comm: String) -> Self {
        Context {
            handle,
            pid,
            comm,
            created: SystemTime::now(),
            hw: Mutex::new(Hardware::default()),
        }
    }

    pub fn hw(&self) -> std::sync::MutexGuard<'_, Hardware> {
        self.hw.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_closed(&self) -> bool {
        self.hw().closed
    }
}

/// An MR export: unique per MR while it lives. It holds the MR strongly;
/// the MR points back weakly (`Mr::export`) and EXPORT_MR upgrades that
/// pointer only while `refs` is non-zero, under the MR's export lock, so
/// two exports of one MR can never coexist.
pub struct Export {
    pub handle: Handle,
    pub mr: Arc<Mr>,
    /// EXPORT_MR calls not yet matched by a DESTROY_CHILD.
    pub refs: AtomicU32,
}

impl Export {
    pub fn refs(&self) -> u32 {
        self.refs.load(Ordering::Acquire)
    }
}

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
