//! `ServerState`: what the serve loop (`server`), the admin socket
//! (`admin`) and the signal handler share: the current device, connection
//! counts, the fault plan and the stop request. Its own module so that
//! `server` (which starts the admin socket) and `admin` (which reads the
//! state) do not import each other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vhost_user_backend::ShutdownHandle;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};
use crate::faults::FaultEngine;
use crate::model::Device;

/// What the admin socket and signal handler share with the serve loop.
pub struct ServerState {
    /// The device of the current (or last) connection.
    pub device: Mutex<Option<Arc<Device>>>,
    pub connected: AtomicBool,
    pub connections: AtomicU64,
    /// The fault plan: outlives connections (each gets a fresh device).
    pub faults: Arc<FaultEngine>,
    /// The running vhost-user daemon's handle, while a frontend is served.
    pub(crate) shutdown: Mutex<Option<ShutdownHandle>>,
    stop: AtomicBool,
    /// Wakes the serve loop's wait for a connection when a stop is asked.
    pub(crate) stop_fd: EventFd,
}

impl ServerState {
    /// State with no fault plan.
    pub fn new() -> Result<Arc<Self>> {
        Self::with_faults(FaultEngine::new(&Default::default(), None))
    }

    pub fn with_faults(faults: Arc<FaultEngine>) -> Result<Arc<Self>> {
        Ok(Arc::new(ServerState {
            device: Mutex::new(None),
            connected: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            faults,
            shutdown: Mutex::new(None),
            stop: AtomicBool::new(false),
            stop_fd: EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Io {
                what: "eventfd for the stop signal".into(),
                source: e,
            })?,
        }))
    }

    pub fn current_device(&self) -> Option<Arc<Device>> {
        self.device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the serve loop to stop: disconnects the frontend if one is
    /// connected and wakes the listener.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
        if let Some(h) = self
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            h.shutdown();
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
