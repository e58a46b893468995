//! Deadline for vhost-user control messages.
//!
//! The vhost crate's socket reads retry EAGAIN forever
//! (`Endpoint::recv_into_iovec_all` treats `SocketRetry` as "try again"), so
//! SO_RCVTIMEO cannot bound a call: a backend that never answers would hang
//! the test. Instead, a watchdog thread shuts the socket down when a call
//! overruns its deadline; the blocked recv then returns EOF and the call
//! fails. The connection is dead afterwards, which is the right outcome for
//! a backend that stopped answering.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    deadline: Option<Instant>,
    tripped: bool,
    quit: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is still a
        // plain value we can keep using.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Watch `sock` (a clone of the vhost-user connection).
    pub(crate) fn new(sock: UnixStream) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vhost-user-watchdog".into())
            .spawn(move || {
                let mut st = s.lock();
                loop {
                    if st.quit {
                        return;
                    }
                    match st.deadline {
                        None => {
                            st = s.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                let _ = sock.shutdown(Shutdown::Both);
                                st.tripped = true;
                                st.deadline = None;
                            } else {
                                st =
                                    s.cv.wait_timeout(st, d - now)
                                        .map(|(g, _)| g)
                                        .unwrap_or_else(|e| e.into_inner().0);
                            }
                        }
                    }
                }
            })?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// Start a deadline `timeout` from now.
    pub(crate) fn arm(&self, timeout: Duration) {
        let mut st = self.shared.lock();
        // A timeout too large for Instant means "no deadline".
        st.deadline = Instant::now().checked_add(timeout);
        self.shared.cv.notify_one();
    }

    /// Cancel the deadline; returns whether it had already fired.
    pub(crate) fn disarm(&self) -> bool {
        let mut st = self.shared.lock();
        st.deadline = None;
        st.tripped
    }

    /// Whether the watchdog ever shut the socket down.
    pub(crate) fn tripped(&self) -> bool {
        self.shared.lock().tripped
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.quit = true;
            self.shared.cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
