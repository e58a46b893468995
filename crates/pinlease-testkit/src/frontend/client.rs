//! A typed client of the pinlease wire ABI over a [`TestFrontend`].
//!
//! One method per opcode: each builds the request bytes from the
//! [`pinlease_abi`] types, sends them on queue 0 with [`TestFrontend::request`]
//! (a readable request descriptor and a writable response descriptor sized
//! for exactly the opcode's response), and decodes [`PlRespHdr`] and the
//! body. Every request carries a fresh tag (1, 2, 3, ...) and the echoed tag
//! is checked.
//!
//! Errors keep three things apart: the device said no
//! ([`ClientError::Status`]), the transport failed
//! ([`ClientError::Frontend`]), or the device answered something the ABI does
//! not allow ([`ClientError::BadResponse`]).
//!
//! For bad-input tests, [`Client::raw`] and [`Client::raw_hdr`] send any
//! header and body and return the raw answer; [`Client::frontend_mut`] gives
//! the frontend itself for hand-made descriptor chains.
//!
//! ```no_run
//! # use pinlease_testkit::frontend::{client::Client, FrontendConfig};
//! # use pinlease_abi::*;
//! # use std::{path::Path, time::Duration};
//! let mut c = Client::connect(Path::new("/tmp/vu.sock"), FrontendConfig::default(),
//!                             Duration::from_secs(5)).unwrap();
//! let ctx = c.create_context(42, "bench").unwrap();
//! let (src, src_pages) = c.alloc_mr(ctx, 4, PL_ACCESS_ALL).unwrap();
//! let (dst, _) = c.alloc_mr(ctx, 4, PL_ACCESS_ALL).unwrap();
//! c.frontend().write_mem(src_pages[0], b"hello").unwrap();
//! c.write(ctx, &PlDmaReq { local_key: src, remote_key: dst, length: 5, ..Default::default() })
//!     .unwrap();
//! ```

use std::mem::size_of;
use std::path::Path;
use std::time::Duration;

use pinlease_abi::*;

use super::{FrontendConfig, FrontendError, TestFrontend};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The device answered with a non-OK status.
    #[error("{} answered {} ({})", .1.name(), .0.name(), *.0 as u32)]
    Status(Status, Opcode),
    /// The frontend (vhost-user transport, guest memory, timeout) failed.
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// The device's answer breaks the ABI: too short, wrong tag, wrong body
    /// length, unknown status value.
    #[error("bad response to opcode {opcode}: {what}")]
    BadResponse {
        /// Opcode of the request (raw value: unknown opcodes can be sent).
        opcode: u16,
        /// What was wrong, with the values seen and expected.
        what: String,
    },
}

impl ClientError {
    /// The device's status when the device said no, else None.
    pub fn status(&self) -> Option<Status> {
        match self {
            ClientError::Status(s, _) => Some(*s),
            _ => None,
        }
    }
}

/// Result type of the client.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Arguments of REG_MR. `pages` is the guest-physical page list.
///
/// When `file` is `Some((id, file_offset))`, `PL_REG_HAS_FILE` is added to
/// `flags` and the file fields are filled; otherwise they are sent as 0 (use
/// [`Client::raw`] to send inconsistent combinations).
#[derive(Debug, Clone, Copy)]
pub struct RegMrArgs<'a> {
    /// `PL_ACCESS_*` bits.
    pub access: u32,
    /// `PL_REG_*` flags (`PL_REG_HAS_FILE` is added when `file` is set).
    pub flags: u32,
    /// Where the MR starts in the first page.
    pub first_page_offset: u32,
    /// MR length in bytes.
    pub length: u64,
    /// File identity and the file offset of MR offset 0.
    pub file: Option<(PlFileId, u64)>,
    /// Page addresses, 4096-aligned; `npages` is `pages.len()`.
    pub pages: &'a [u64],
}

impl<'a> RegMrArgs<'a> {
    /// Whole pages, no file: offset 0, length `4096 * pages.len()`.
    pub fn pages(access: u32, pages: &'a [u64]) -> Self {
        RegMrArgs {
            access,
            flags: 0,
            first_page_offset: 0,
            length: PL_PAGE_SIZE * pages.len() as u64,
            file: None,
            pages,
        }
    }

    /// The same MR over file `f`, MR offset 0 at file offset `offset`.
    pub fn on_file(self, f: PlFileId, offset: u64) -> Self {
        RegMrArgs {
            file: Some((f, offset)),
            ..self
        }
    }

    /// The same MR with `PL_REG_*` flags `flags`.
    pub fn with_flags(self, flags: u32) -> Self {
        RegMrArgs { flags, ..self }
    }

    /// The request body: `PlRegMrReq` followed by the page list.
    pub fn body(&self) -> Vec<u8> {
        let (flags, file, file_offset) = match self.file {
            Some((f, off)) => (self.flags | PL_REG_HAS_FILE, f, off),
            None => (self.flags, PlFileId::default(), 0),
        };
        let r = PlRegMrReq {
            access: self.access,
            flags,
            npages: self.pages.len() as u32,
            first_page_offset: self.first_page_offset,
            length: self.length,
            file,
            file_offset,
        };
        let mut b = Vec::with_capacity(size_of::<PlRegMrReq>() + 8 * self.pages.len());
        b.extend_from_slice(r.as_bytes());
        for p in self.pages {
            b.extend_from_slice(&p.to_le_bytes());
        }
        b
    }
}

/// Request bytes: a [`PlReqHdr`] (flags and reserved 0) followed by `body`.
pub fn encode_request(opcode: u16, ctx: u64, tag: u64, body: &[u8]) -> Vec<u8> {
    encode_request_hdr(
        &PlReqHdr {
            opcode,
            ctx,
            tag,
            ..Default::default()
        },
        body,
    )
}

/// Request bytes with a caller-made header (to set `flags`/`reserved`).
pub fn encode_request_hdr(hdr: &PlReqHdr, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(size_of::<PlReqHdr>() + body.len());
    v.extend_from_slice(hdr.as_bytes());
    v.extend_from_slice(body);
    v
}

/// Decodes one event as the device wrote it into an event buffer (exactly
/// `sizeof(struct pl_event)` = 56 bytes).
pub fn decode_event(bytes: &[u8]) -> Result<PlEvent> {
    if bytes.len() != size_of::<PlEvent>() {
        return Err(ClientError::BadResponse {
            opcode: u16::MAX,
            what: format!(
                "event buffer used length {} (an event is {} bytes)",
                bytes.len(),
                size_of::<PlEvent>()
            ),
        });
    }
    PlEvent::read_from(bytes).ok_or_else(|| ClientError::BadResponse {
        opcode: u16::MAX,
        what: "short event".into(),
    })
}

/// A typed pinlease driver over a connected [`TestFrontend`].
pub struct Client {
    fe: TestFrontend,
    next_tag: u64,
}

impl Client {
    /// Wraps a connected frontend.
    pub fn new(fe: TestFrontend) -> Self {
        Client { fe, next_tag: 1 }
    }

    /// [`TestFrontend::connect`] then [`Client::new`].
    pub fn connect(socket: &Path, cfg: FrontendConfig, timeout: Duration) -> Result<Self> {
        Ok(Self::new(TestFrontend::connect(socket, cfg, timeout)?))
    }

    /// The frontend, for guest memory access (`read_mem`, `write_mem`, ...).
    pub fn frontend(&self) -> &TestFrontend {
        &self.fe
    }

    /// The frontend, for chains, memory-map changes, allocation.
    pub fn frontend_mut(&mut self) -> &mut TestFrontend {
        &mut self.fe
    }

    /// Gives the frontend back (e.g. to `disconnect()` it).
    pub fn into_frontend(self) -> TestFrontend {
        self.fe
    }

    /// The tag the most recent request was sent with (0 before the first).
    pub fn last_tag(&self) -> u64 {
        self.next_tag - 1
    }

    fn take_tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    // ---- raw access ------------------------------------------------------------

    /// Sends `opcode` (any value) on `ctx` with `body`, a response buffer of
    /// `resp_cap` bytes and a fresh tag ([`Client::last_tag`]); returns the
    /// response header and body bytes as the device wrote them. Neither the
    /// tag nor the status is checked. A used length below 16 ("no response",
    /// docs/abi.md §2.4) is a [`ClientError::BadResponse`].
    pub fn raw(
        &mut self,
        opcode: u16,
        ctx: u64,
        body: &[u8],
        resp_cap: u32,
    ) -> Result<(PlRespHdr, Vec<u8>)> {
        let hdr = PlReqHdr {
            opcode,
            ctx,
            ..Default::default()
        };
        self.raw_hdr(hdr, body, resp_cap)
    }

    /// Like [`Client::raw`] with a caller-made header; its `tag` is replaced
    /// by a fresh one.
    pub fn raw_hdr(
        &mut self,
        mut hdr: PlReqHdr,
        body: &[u8],
        resp_cap: u32,
    ) -> Result<(PlRespHdr, Vec<u8>)> {
        hdr.tag = self.take_tag();
        let req = encode_request_hdr(&hdr, body);
        let resp = self.fe.request(&req, resp_cap)?;
        let Some(rh) = PlRespHdr::read_from(&resp) else {
            return Err(ClientError::BadResponse {
                opcode: hdr.opcode,
                what: format!("used length {} is below the 16-byte header", resp.len()),
            });
        };
        Ok((rh, resp[size_of::<PlRespHdr>()..].to_vec()))
    }

    /// Sends a well-formed request and checks the answer: tag echoed, header
    /// alone on error, exactly `op.response_body_len()` body bytes on OK.
    /// Returns the body.
    fn call(&mut self, op: Opcode, ctx: u64, body: &[u8]) -> Result<Vec<u8>> {
        let want = op.response_body_len();
        let cap = (size_of::<PlRespHdr>() + want) as u32;
        let (h, b) = self.raw(op as u16, ctx, body, cap)?;
        let bad = |what: String| ClientError::BadResponse {
            opcode: op as u16,
            what,
        };
        let tag = self.last_tag();
        if h.tag != tag {
            return Err(bad(format!("tag {:#x}, request had {tag:#x}", h.tag)));
        }
        let status = Status::from_u32(h.status)
            .ok_or_else(|| bad(format!("unknown status {}", h.status)))?;
        if status != Status::Ok {
            if h.len != 0 || !b.is_empty() {
                return Err(bad(format!(
                    "error {} with len {} and {} body bytes (must be header alone)",
                    status.name(),
                    h.len,
                    b.len()
                )));
            }
            return Err(ClientError::Status(status, op));
        }
        if h.len as usize != want || b.len() != want {
            return Err(bad(format!(
                "OK with len {} and {} body bytes, {} has a {want}-byte body",
                h.len,
                b.len(),
                op.name()
            )));
        }
        Ok(b)
    }

    fn call_typed<T: Wire>(&mut self, op: Opcode, ctx: u64, body: &[u8]) -> Result<T> {
        let b = self.call(op, ctx, body)?;
        T::read_from(&b).ok_or_else(|| ClientError::BadResponse {
            opcode: op as u16,
            what: format!("body of {} bytes, need {}", b.len(), size_of::<T>()),
        })
    }

    fn call_empty(&mut self, op: Opcode, ctx: u64, body: &[u8]) -> Result<()> {
        self.call(op, ctx, body).map(|_| ())
    }

    // ---- opcodes -------------------------------------------------------------------

    /// NOP: a round trip that does nothing.
    pub fn nop(&mut self) -> Result<()> {
        self.call_empty(Opcode::Nop, 0, &[])
    }

    /// QUERY_DEVICE: ABI version, features, limits.
    pub fn query(&mut self) -> Result<PlQueryDeviceResp> {
        self.call_typed(Opcode::QueryDevice, 0, &[])
    }

    /// CREATE_CONTEXT with guest `pid` and `comm` (truncated to 16 bytes,
    /// NUL-padded). Returns the context handle.
    pub fn create_context(&mut self, pid: u32, comm: &str) -> Result<u64> {
        let mut r = PlCreateContextReq {
            pid,
            ..Default::default()
        };
        let n = comm.len().min(16);
        r.comm[..n].copy_from_slice(&comm.as_bytes()[..n]);
        let h: PlHandleResp = self.call_typed(Opcode::CreateContext, 0, r.as_bytes())?;
        Ok(h.handle)
    }

    /// CLOSE_CONTEXT: ends the hardware lifetime; returns the totals.
    pub fn close_context(&mut self, ctx: u64) -> Result<PlCloseContextResp> {
        self.call_typed(Opcode::CloseContext, ctx, &[])
    }

    /// RELEASE_CONTEXT: ends the object lifetime (EBUSY while children live).
    pub fn release_context(&mut self, ctx: u64) -> Result<()> {
        self.call_empty(Opcode::ReleaseContext, ctx, &[])
    }

    /// CREATE_CHILD of `kind` (`PL_CHILD_EVENT_CHANNEL`). Returns the child.
    pub fn create_child(&mut self, ctx: u64, kind: u32) -> Result<u64> {
        let r = PlCreateChildReq { kind, reserved: 0 };
        let h: PlHandleResp = self.call_typed(Opcode::CreateChild, ctx, r.as_bytes())?;
        Ok(h.handle)
    }

    /// DESTROY_CHILD: destroys an event channel or drops one export reference.
    pub fn destroy_child(&mut self, ctx: u64, child: u64) -> Result<()> {
        let r = PlHandleReq { handle: child };
        self.call_empty(Opcode::DestroyChild, ctx, r.as_bytes())
    }

    /// REG_MR. Returns the key and the covering lease (or 0).
    pub fn reg_mr(&mut self, ctx: u64, args: &RegMrArgs<'_>) -> Result<PlRegMrResp> {
        let body = args.body();
        self.call_typed(Opcode::RegMr, ctx, &body)
    }

    /// DEREG_MR: destroys an MR of `ctx` (live or revoked).
    pub fn dereg_mr(&mut self, ctx: u64, key: u64) -> Result<()> {
        let r = PlHandleReq { handle: key };
        self.call_empty(Opcode::DeregMr, ctx, r.as_bytes())
    }

    /// WRITE: copies `length` bytes local -> remote.
    pub fn write(&mut self, ctx: u64, req: &PlDmaReq) -> Result<()> {
        self.call_empty(Opcode::Write, ctx, req.as_bytes())
    }

    /// READ: copies `length` bytes remote -> local.
    pub fn read(&mut self, ctx: u64, req: &PlDmaReq) -> Result<()> {
        self.call_empty(Opcode::Read, ctx, req.as_bytes())
    }

    /// COMPARE_SWAP of the word at MR `offset`: stores `new` if it holds
    /// `expected`. Returns the value before.
    pub fn compare_swap(
        &mut self,
        ctx: u64,
        key: u64,
        offset: u64,
        expected: u64,
        new: u64,
    ) -> Result<u64> {
        let r = PlAtomicReq {
            key,
            offset,
            operand: expected,
            swap: new,
        };
        let a: PlAtomicResp = self.call_typed(Opcode::CompareSwap, ctx, r.as_bytes())?;
        Ok(a.original)
    }

    /// FETCH_ADD of `add` (wrapping) to the word at MR `offset`. Returns the
    /// value before.
    pub fn fetch_add(&mut self, ctx: u64, key: u64, offset: u64, add: u64) -> Result<u64> {
        let r = PlAtomicReq {
            key,
            offset,
            operand: add,
            swap: 0,
        };
        let a: PlAtomicResp = self.call_typed(Opcode::FetchAdd, ctx, r.as_bytes())?;
        Ok(a.original)
    }

    /// FILL: writes the pattern over the range.
    pub fn fill(&mut self, ctx: u64, req: &PlPatternReq) -> Result<()> {
        self.call_empty(Opcode::Fill, ctx, req.as_bytes())
    }

    /// VERIFY: compares the range with the pattern.
    pub fn verify(&mut self, ctx: u64, req: &PlPatternReq) -> Result<PlVerifyResp> {
        self.call_typed(Opcode::Verify, ctx, req.as_bytes())
    }

    /// LEASE_TAKE with `ctx` as holder. Returns the lease handle.
    pub fn lease_take(&mut self, ctx: u64, req: &PlLeaseTakeReq) -> Result<u64> {
        let h: PlHandleResp = self.call_typed(Opcode::LeaseTake, ctx, req.as_bytes())?;
        Ok(h.handle)
    }

    /// LEASE_RELEASE with `reason` (`PL_RELEASE_HOLDER` or `PL_RELEASE_LOST`).
    pub fn lease_release(&mut self, ctx: u64, lease: u64, reason: u32) -> Result<()> {
        let r = PlLeaseReleaseReq {
            lease,
            reason,
            reserved: 0,
        };
        self.call_empty(Opcode::LeaseRelease, ctx, r.as_bytes())
    }

    /// LEASE_BREAK (device-wide, `ctx` 0).
    pub fn lease_break(&mut self, req: &PlLeaseBreakReq) -> Result<PlLeaseBreakResp> {
        self.call_typed(Opcode::LeaseBreak, 0, req.as_bytes())
    }

    /// EXPORT_MR: the MR's export handle and its reference count.
    pub fn export_mr(&mut self, ctx: u64, key: u64) -> Result<PlExportMrResp> {
        let r = PlHandleReq { handle: key };
        self.call_typed(Opcode::ExportMr, ctx, r.as_bytes())
    }

    /// IMPORT_MR: a new MR in `ctx` aliasing the export's MR, with `access`.
    pub fn import_mr(&mut self, ctx: u64, export: u64, access: u32) -> Result<PlRegMrResp> {
        let r = PlImportMrReq {
            export,
            access,
            reserved: 0,
        };
        self.call_typed(Opcode::ImportMr, ctx, r.as_bytes())
    }

    // ---- helpers ---------------------------------------------------------------------

    /// Allocates `npages` fresh page-aligned guest pages (contiguous, zeroed
    /// only if never used before) from the frontend's data area and returns
    /// their addresses.
    pub fn alloc_pages(&mut self, npages: usize) -> Result<Vec<u64>> {
        let base = self.fe.alloc(PL_PAGE_SIZE * npages as u64, PL_PAGE_SIZE)?;
        Ok((0..npages as u64)
            .map(|i| base + i * PL_PAGE_SIZE)
            .collect())
    }

    /// Allocates `npages` guest pages and registers them as one whole-page
    /// MR (offset 0, length `4096 * npages`, no file) in `ctx`. Returns the
    /// key and the pages in MR order.
    pub fn alloc_mr(&mut self, ctx: u64, npages: usize, access: u32) -> Result<(u64, Vec<u64>)> {
        let pages = self.alloc_pages(npages)?;
        let r = self.reg_mr(ctx, &RegMrArgs::pages(access, &pages))?;
        Ok((r.key, pages))
    }

    /// Posts `n` event buffers of exactly one event (56 bytes) on queue 1.
    pub fn post_event_buffers(&mut self, n: usize) -> Result<()> {
        self.fe.post_event_buffers(n, size_of::<PlEvent>() as u32)?;
        Ok(())
    }

    /// Waits up to `timeout` for the next event and decodes it. `Ok(None)`:
    /// none arrived. An event buffer returned with a length other than 56
    /// (e.g. 0 for a too-small buffer) is a [`ClientError::BadResponse`].
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<PlEvent>> {
        match self.fe.next_event(timeout)? {
            None => Ok(None),
            Some(b) => decode_event(&b).map(Some),
        }
    }
}
