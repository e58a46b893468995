//! The vhost-user connection of a [`TestFrontend`](super::TestFrontend):
//! connecting, and every control message bounded in time.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::Frontend;

use super::{watchdog, FrontendError, Result};

pub(super) fn connect_with_retry(socket: &Path, timeout: Duration) -> Result<UnixStream> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            // The daemon may not have created or started listening on the
            // socket yet: retry until the deadline. Anything else is fatal.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && start.elapsed() < timeout =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(source) => {
                return Err(FrontendError::Connect {
                    path: socket.to_owned(),
                    waited: start.elapsed(),
                    source,
                })
            }
        }
    }
}

const GET_CONFIG_CODE: u32 = 24;
const HDR_VERSION_1: u32 = 0x1;
const HDR_REPLY: u32 = 0x4;
pub(super) const VHOST_USER_CONFIG_WINDOW: u64 = 0x1000;

/// The vhost-user connection: the vhost crate's frontend plus what we need
/// to bound every call in time and to send GET_CONFIG ourselves.
pub(super) struct Control {
    pub(super) fe: Frontend,
    /// Clone of the connection, for the raw GET_CONFIG.
    pub(super) sock: UnixStream,
    pub(super) wd: watchdog::Watchdog,
    pub(super) timeout: Duration,
}

impl Control {
    pub(super) fn check_alive(&self, request: &'static str) -> Result<()> {
        if self.wd.tripped() {
            Err(FrontendError::ConnectionShutDown { request })
        } else {
            Ok(())
        }
    }

    /// Run one vhost crate call under the message deadline.
    pub(super) fn call<T>(
        &mut self,
        request: &'static str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T> {
        self.check_alive(request)?;
        self.wd.arm(self.timeout);
        let r = f(&mut self.fe);
        let tripped = self.wd.disarm();
        r.map_err(|source| {
            if tripped {
                FrontendError::MessageTimeout {
                    request,
                    timeout: self.timeout,
                    detail: source.to_string(),
                }
            } else {
                FrontendError::Vhost { request, source }
            }
        })
    }

    /// VHOST_USER_GET_CONFIG done by hand. vhost 0.18's
    /// `Frontend::get_config` waits for the full payload even when the
    /// backend answers with an empty error reply (size 0, no payload), so a
    /// rejected GET_CONFIG would block forever. Here the reply is read by
    /// its header's size field, so a rejection is an ordinary error.
    pub(super) fn get_config_raw(&mut self, offset: u32, len: u32) -> Result<Vec<u8>> {
        const REQ: &str = "GET_CONFIG";
        let io_err = |tripped: bool, timeout: Duration, source: io::Error| {
            if tripped {
                FrontendError::MessageTimeout {
                    request: REQ,
                    timeout,
                    detail: source.to_string(),
                }
            } else {
                FrontendError::Io {
                    request: REQ,
                    source,
                }
            }
        };
        self.check_alive(REQ)?;
        let body_len = 12u32;
        let mut msg = Vec::with_capacity(24 + len as usize);
        for v in [
            GET_CONFIG_CODE,
            HDR_VERSION_1,
            body_len + len,
            offset,
            len,
            0,
        ] {
            msg.extend_from_slice(&v.to_le_bytes());
        }
        msg.resize(24 + len as usize, 0);

        self.wd.arm(self.timeout);
        let r = (|| -> io::Result<([u8; 12], [u8; 12], Vec<u8>)> {
            (&self.sock).write_all(&msg)?;
            let mut hdr = [0u8; 12];
            (&self.sock).read_exact(&mut hdr)?;
            let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
            // Never trust a size beyond what the protocol allows: reading
            // that much would block on a misbehaving backend.
            if u64::from(size) > u64::from(body_len) + VHOST_USER_CONFIG_WINDOW || size < body_len {
                return Ok((hdr, [0; 12], Vec::new()));
            }
            let mut body = [0u8; 12];
            (&self.sock).read_exact(&mut body)?;
            let mut payload = vec![0u8; (size - body_len) as usize];
            (&self.sock).read_exact(&mut payload)?;
            Ok((hdr, body, payload))
        })();
        let tripped = self.wd.disarm();
        let (hdr, body, payload) = r.map_err(|e| io_err(tripped, self.timeout, e))?;

        let word =
            |b: &[u8; 12], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let bad = |what, value: u32| FrontendError::BadReply {
            request: REQ,
            what,
            value: u64::from(value),
        };
        if word(&hdr, 0) != GET_CONFIG_CODE {
            return Err(bad("request code", word(&hdr, 0)));
        }
        if word(&hdr, 4) & HDR_REPLY == 0 {
            return Err(bad("header flags (REPLY bit missing)", word(&hdr, 4)));
        }
        let size = word(&hdr, 8);
        if size < body_len || u64::from(size) > u64::from(body_len) + VHOST_USER_CONFIG_WINDOW {
            return Err(bad("header size", size));
        }
        let (r_offset, r_size) = (word(&body, 0), word(&body, 4));
        if r_size == 0 {
            return Err(FrontendError::ConfigRejected { offset, len });
        }
        if r_offset != offset {
            return Err(bad("config offset", r_offset));
        }
        if r_size != len || payload.len() != len as usize {
            return Err(FrontendError::ConfigLength {
                offset,
                len,
                got: payload.len(),
            });
        }
        Ok(payload)
    }
}
