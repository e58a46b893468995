//! `ServerState`: what the serve loops (`server`), the admin socket
//! (`admin`) and the signal handler share: one [`FrontendSlot`] per
//! listening socket (its current device, connection counts and the
//! running vhost-user daemon's handle), the fault plan and the stop
//! request. Its own module so that `server` (which starts the admin
//! socket) and `admin` (which reads the state) do not import each other.
//!
//! The fault plan is one for the whole daemon, shared by every slot: a
//! rule's hits and fires count over all frontends, `pinlease inject`
//! changes it for all of them, and an `abort` ends the process (and with
//! it every guest's device) whichever frontend it fired on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vhost_user_backend::ShutdownHandle;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};
use crate::faults::FaultEngine;
use crate::model::Device;

/// One listening socket's frontend: served one connection at a time, each
/// with a fresh device, independently of the other slots.
pub struct FrontendSlot {
    /// Position among the daemon's sockets (`PATH{index}` with
    /// `--socket-count`).
    pub index: usize,
    /// The socket's path, or `fd N` for an inherited one.
    pub socket: String,
    /// The device of the current (or last) connection.
    pub device: Mutex<Option<Arc<Device>>>,
    pub connected: AtomicBool,
    pub connections: AtomicU64,
    /// The running vhost-user daemon's handle, while a frontend is served.
    pub(crate) shutdown: Mutex<Option<ShutdownHandle>>,
}

impl FrontendSlot {
    fn new(index: usize, socket: String) -> FrontendSlot {
        FrontendSlot {
            index,
            socket,
            device: Mutex::new(None),
            connected: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            shutdown: Mutex::new(None),
        }
    }

    pub fn current_device(&self) -> Option<Arc<Device>> {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Disconnects the frontend, if one is connected.
    fn disconnect(&self) {
        if let Some(h) = self
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            h.shutdown();
        }
    }
}

/// What the admin socket and signal handler share with the serve loops.
pub struct ServerState {
    /// One per listening socket, in socket order; never empty.
    pub frontends: Vec<FrontendSlot>,
    /// The fault plan: outlives connections (each gets a fresh device) and
    /// is shared by every frontend (see the module doc).
    pub faults: Arc<FaultEngine>,
    stop: AtomicBool,
    /// `--max-connections` reached: no slot accepts another frontend.
    accepting_done: AtomicBool,
    /// Wakes the serve loops' wait for a connection when a stop (or the
    /// end of accepting) is asked; an eventfd stays readable once written,
    /// so one write wakes every loop.
    pub(crate) stop_fd: EventFd,
}

impl ServerState {
    /// State with no fault plan and one frontend slot (tests).
    pub fn new() -> Result<Arc<Self>> {
        Self::with_faults(
            FaultEngine::new(&Default::default(), None),
            vec!["-".into()],
        )
    }

    /// State for the listening sockets named `sockets` (one slot each).
    pub fn with_faults(faults: Arc<FaultEngine>, sockets: Vec<String>) -> Result<Arc<Self>> {
        assert!(
            !sockets.is_empty(),
            "a daemon listens on one socket at least"
        );
        Ok(Arc::new(ServerState {
            frontends: sockets
                .into_iter()
                .enumerate()
                .map(|(i, s)| FrontendSlot::new(i, s))
                .collect(),
            faults,
            stop: AtomicBool::new(false),
            accepting_done: AtomicBool::new(false),
            stop_fd: EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Io {
                what: "eventfd for the stop signal".into(),
                source: e,
            })?,
        }))
    }

    /// Frontends served so far, over every slot.
    pub fn connections(&self) -> u64 {
        self.frontends
            .iter()
            .map(|f| f.connections.load(Ordering::SeqCst))
            .sum()
    }

    /// Asks the serve loops to stop: disconnects every connected frontend
    /// and wakes the listeners.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
        for f in &self.frontends {
            f.disconnect();
        }
    }

    /// No slot accepts another frontend; connected ones are served to
    /// their end (`--max-connections`).
    pub(crate) fn stop_accepting(&self) {
        self.accepting_done.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn accepting(&self) -> bool {
        !self.stopping() && !self.accepting_done.load(Ordering::SeqCst)
    }
}
