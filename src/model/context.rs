//! Device contexts. Their children (event channels, MR exports) are in
//! `child`, above the MRs an export holds.
//!
//! A context has two lifetimes (docs/design.md §6, seed 000). Its hardware
//! lifetime ends at CLOSE_CONTEXT (the guest closed the device fd): MRs are
//! destroyed, pins dropped, leases released, and every later request on it
//! gets ESHUTDOWN. Its object lifetime ends at RELEASE_CONTEXT, which the
//! device refuses while a child is alive: children hold the context struct
//! (an `Arc`), never its pins.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::SystemTime;

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
