//! Request decoding and response encoding: the bytes of a request chain to
//! a typed call on the device model, and its result back to bytes.
//!
//! Everything here comes from the guest and is hostile (docs/design.md §7):
//! sizes, reserved fields and enumerations are checked strictly, every
//! refusal gets a status, a counter and a rate-limited log line, and nothing
//! panics.

use std::mem::size_of;

use log::{info, warn};

use crate::abi::*;
use crate::faults::{Effect, FaultEngine, Point};
use crate::model::counters::BadInput;
use crate::model::mr::FileRange;
use crate::model::{AtomicOp, Device, DmaDir, RegMr, Reject};
use crate::ratelimit::RateLimit;

static BAD_INPUT_LOG: RateLimit = RateLimit::new(20);
static REJECT_LOG: RateLimit = RateLimit::new(20);

/// Logs and counts malformed input that never reached the model.
pub fn report_bad_input(dev: &Device, kind: BadInput, detail: &str) {
    dev.counters.bad_input(kind);
    if let Some(suppressed) = BAD_INPUT_LOG.allow() {
        if suppressed > 0 {
            warn!(
                "bad input: {} ({detail}); {suppressed} similar lines suppressed",
                kind.name()
            );
        } else {
            warn!("bad input: {} ({detail})", kind.name());
        }
    }
}

struct Failure {
    status: Status,
    why: String,
    bad_input: Option<BadInput>,
}

impl From<Reject> for Failure {
    fn from(r: Reject) -> Self {
        Failure {
            bad_input: (r.status == Status::Inval).then_some(BadInput::BadField),
            status: r.status,
            why: r.why,
        }
    }
}

fn malformed(kind: BadInput, why: String) -> Failure {
    let status = match kind {
        BadInput::UnknownOpcode => Status::NoSys,
        BadInput::OversizedRequest => Status::TooBig,
        _ => Status::Inval,
    };
    Failure {
        status,
        why,
        bad_input: Some(kind),
    }
}

/// The body of a request: exactly one `T`, nothing after it.
fn body<T: Wire>(op: Opcode, b: &[u8]) -> Result<T, Failure> {
    let want = size_of::<T>();
    if b.len() < want {
        return Err(malformed(
            BadInput::ShortRequest,
            format!("{} body is {} bytes, needs {want}", op.name(), b.len()),
        ));
    }
    if b.len() > want {
        return Err(malformed(
            BadInput::OversizedRequest,
            format!("{} body is {} bytes, expects {want}", op.name(), b.len()),
        ));
    }
    T::read_from(b).ok_or_else(|| malformed(BadInput::ShortRequest, "short body".into()))
}

fn no_body(op: Opcode, b: &[u8]) -> Result<(), Failure> {
    if !b.is_empty() {
        return Err(malformed(
            BadInput::OversizedRequest,
            format!("{} takes no body, got {} bytes", op.name(), b.len()),
        ));
    }
    Ok(())
}

fn no_ctx(op: Opcode, ctx: u64) -> Result<(), Failure> {
    if ctx != 0 {
        return Err(malformed(
            BadInput::BadField,
            format!("{} takes no context, header ctx is {ctx:#x}", op.name()),
        ));
    }
    Ok(())
}

/// A request's reserved field, which must be 0.
fn no_reserved(reserved: u32) -> Result<(), Failure> {
    if reserved != 0 {
        return Err(malformed(
            BadInput::BadField,
            "reserved field is not 0".into(),
        ));
    }
    Ok(())
}

fn resp<T: Wire>(v: T) -> Vec<u8> {
    v.as_bytes().to_vec()
}

fn decode_reg_mr(b: &[u8]) -> Result<RegMr, Failure> {
    let fixed = size_of::<PlRegMrReq>();
    if b.len() < fixed {
        return Err(malformed(
            BadInput::ShortRequest,
            format!("REG_MR body is {} bytes, needs at least {fixed}", b.len()),
        ));
    }
    let r = PlRegMrReq::read_from(b)
        .ok_or_else(|| malformed(BadInput::ShortRequest, "short REG_MR".into()))?;
    let list = &b[fixed..];
    let want = (r.npages as usize).saturating_mul(8);
    if list.len() != want {
        return Err(malformed(
            if list.len() < want {
                BadInput::ShortRequest
            } else {
                BadInput::OversizedRequest
            },
            format!(
                "REG_MR npages {} needs a {want}-byte page list, got {} bytes",
                r.npages,
                list.len()
            ),
        ));
    }
    let has_file = r.flags & PL_REG_HAS_FILE != 0;
    if !has_file && (r.file != PlFileId::default() || r.file_offset != 0) {
        return Err(malformed(
            BadInput::BadField,
            "file identity given without PL_REG_HAS_FILE".into(),
        ));
    }
    if r.file.reserved != 0 {
        return Err(malformed(
            BadInput::BadField,
            format!("file identity reserved field is {:#x}", r.file.reserved),
        ));
    }
    let pages = list
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Ok(RegMr {
        access: r.access,
        flags: r.flags,
        first_page_offset: r.first_page_offset,
        length: r.length,
        file: has_file.then_some(FileRange {
            file: r.file,
            offset: r.file_offset,
        }),
        pages,
    })
}

fn comm(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

/// What the transport does with a request's completion, as fault rules
/// decided (docs/faults.md 1.3); the default is "write it now, once".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completion {
    /// Never put the chain in the used ring.
    pub drop: bool,
    /// Put the chain in the used ring twice.
    pub duplicate: bool,
    /// Hold the completion this long (0: not held).
    pub delay_ms: u64,
    /// Hold it until the next completion is written, then write it after.
    pub reorder: bool,
}

/// A handled request: the response bytes and what to do with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub response: Vec<u8>,
    pub completion: Completion,
}

/// Folds fired faults' effects into `c`; returns the status they force
/// (fail: its status; needs-reset: EIO).
fn fold_effects(effects: &[Effect], c: &mut Completion) -> Option<Status> {
    let mut status = None;
    for e in effects {
        match *e {
            Effect::None => {}
            Effect::Fail(s) => status = Some(s),
            Effect::NeedsReset => status = Some(Status::Io),
            Effect::Delay(ms) => c.delay_ms += ms,
            Effect::Drop | Effect::Withhold(0) => c.drop = true,
            Effect::Withhold(ms) => c.delay_ms += ms,
            Effect::Duplicate => c.duplicate = true,
            Effect::Reorder => c.reorder = true,
        }
    }
    status
}

fn injected(status: Status, point: &str) -> Failure {
    Failure {
        status,
        why: format!("fault injected at {point}"),
        bad_input: None,
    }
}

/// The MR a request names, for revoke-mr (docs/faults.md 1.3): read
/// leniently, since the before point comes before the body is checked.
fn named_mr(op: Opcode, b: &[u8]) -> Option<u64> {
    match op {
        Opcode::DeregMr | Opcode::ExportMr => PlHandleReq::read_from(b).map(|r| r.handle),
        Opcode::Write | Opcode::Read => PlDmaReq::read_from(b).map(|r| r.local_key),
        Opcode::CompareSwap | Opcode::FetchAdd => PlAtomicReq::read_from(b).map(|r| r.key),
        Opcode::Fill | Opcode::Verify => PlPatternReq::read_from(b).map(|r| r.key),
        _ => None,
    }
}

/// The request's fault-plan context inside `dispatch`: the engine (if
/// any) and the completion being decided.
struct Faults<'a> {
    engine: Option<&'a FaultEngine>,
    completion: Completion,
    /// A fault at a point inside `dispatch` decided the answer: the model
    /// did not act, so `request:OP:after` is not hit.
    decided: bool,
}

impl Faults<'_> {
    /// Hits `point`; Err when a fired fault decides the answer.
    fn at(&mut self, dev: &Device, point: Point, ctx: u64) -> Result<(), Failure> {
        let Some(engine) = self.engine else {
            return Ok(());
        };
        let effects = engine.at(dev, point, ctx, None);
        match fold_effects(&effects, &mut self.completion) {
            Some(s) => {
                self.decided = true;
                Err(injected(s, &point.to_string()))
            }
            None => Ok(()),
        }
    }

    /// Hits `Point::ContextTeardown` when `ctx` is an open context.
    fn at_teardown(&mut self, dev: &Device, ctx: u64) -> Result<(), Failure> {
        if dev.context(ctx).is_ok_and(|c| !c.is_closed()) {
            self.at(dev, Point::ContextTeardown, ctx)?;
        }
        Ok(())
    }
}

fn dispatch(
    dev: &Device,
    op: Opcode,
    hdr: &PlReqHdr,
    b: &[u8],
    faults: &mut Faults<'_>,
) -> Result<Vec<u8>, Failure> {
    let ctx = hdr.ctx;
    Ok(match op {
        Opcode::Nop => {
            no_body(op, b)?;
            Vec::new()
        }
        Opcode::QueryDevice => {
            no_ctx(op, ctx)?;
            no_body(op, b)?;
            resp(dev.query())
        }
        Opcode::CreateContext => {
            no_ctx(op, ctx)?;
            let r: PlCreateContextReq = body(op, b)?;
            no_reserved(r.reserved)?;
            resp(PlHandleResp {
                handle: dev.create_context(r.pid, &comm(&r.comm))?,
            })
        }
        Opcode::CloseContext => {
            no_body(op, b)?;
            faults.at_teardown(dev, ctx)?;
            resp(dev.close_context(ctx)?)
        }
        Opcode::ReleaseContext => {
            no_body(op, b)?;
            faults.at_teardown(dev, ctx)?;
            dev.release_context(ctx)?;
            Vec::new()
        }
        Opcode::CreateChild => {
            let r: PlCreateChildReq = body(op, b)?;
            no_reserved(r.reserved)?;
            resp(PlHandleResp {
                handle: dev.create_child(ctx, r.kind)?,
            })
        }
        Opcode::DestroyChild => {
            let r: PlHandleReq = body(op, b)?;
            dev.destroy_child(ctx, r.handle)?;
            Vec::new()
        }
        Opcode::RegMr => resp(dev.reg_mr(ctx, decode_reg_mr(b)?)?),
        Opcode::DeregMr => {
            let r: PlHandleReq = body(op, b)?;
            dev.dereg_mr(ctx, r.handle)?;
            Vec::new()
        }
        Opcode::Write | Opcode::Read => {
            let r: PlDmaReq = body(op, b)?;
            let dir = if op == Opcode::Write {
                DmaDir::Write
            } else {
                DmaDir::Read
            };
            dev.dma(ctx, dir, &r)?;
            Vec::new()
        }
        Opcode::CompareSwap | Opcode::FetchAdd => {
            let r: PlAtomicReq = body(op, b)?;
            let a = if op == Opcode::CompareSwap {
                AtomicOp::CompareSwap
            } else {
                AtomicOp::FetchAdd
            };
            resp(PlAtomicResp {
                original: dev.atomic(ctx, a, &r)?,
            })
        }
        Opcode::Fill => {
            let r: PlPatternReq = body(op, b)?;
            dev.fill(ctx, &r)?;
            Vec::new()
        }
        Opcode::Verify => {
            let r: PlPatternReq = body(op, b)?;
            resp(dev.verify(ctx, &r)?)
        }
        Opcode::LeaseTake => {
            let r: PlLeaseTakeReq = body(op, b)?;
            resp(PlHandleResp {
                handle: dev.lease_take(ctx, &r)?,
            })
        }
        Opcode::LeaseRelease => {
            let r: PlLeaseReleaseReq = body(op, b)?;
            dev.lease_release(ctx, &r)?;
            Vec::new()
        }
        Opcode::LeaseBreak => {
            no_ctx(op, ctx)?;
            let r: PlLeaseBreakReq = body(op, b)?;
            if dev.break_hits_active(&r) {
                faults.at(dev, Point::LeaseBreak, 0)?;
            }
            resp(dev.lease_break(&r)?)
        }
        Opcode::ExportMr => {
            let r: PlHandleReq = body(op, b)?;
            resp(dev.export_mr(ctx, r.handle)?)
        }
        Opcode::ImportMr => {
            let r: PlImportMrReq = body(op, b)?;
            resp(dev.import_mr(ctx, &r)?)
        }
    })
}

/// Runs `dispatch`, turning a panic (a daemon bug) into EIO: a panic that
/// unwound out of the vhost worker thread would stop the queue and hang the
/// guest, and QEMU 10.0 cannot reconnect (docs/design.md §3). The model's locks
/// shrug off poisoning, so the next request is served normally.
fn dispatch_guarded(
    dev: &Device,
    op: Opcode,
    hdr: &PlReqHdr,
    body: &[u8],
    faults: &mut Faults<'_>,
) -> Result<Vec<u8>, Failure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dispatch(dev, op, hdr, body, faults)
    }))
    .unwrap_or_else(|_| {
        log::error!(
            "BUG: {} ctx {:#x} panicked in the daemon; answered EIO",
            op.name(),
            hdr.ctx
        );
        Err(Failure {
            status: Status::Io,
            why: "daemon bug: request handler panicked".into(),
            bad_input: None,
        })
    })
}

/// Handles one request. `req` holds the chain's readable bytes. The
/// response (header, then body when the status is OK) goes into the chain's
/// writable part, which has room for `resp_cap` bytes: when the body does
/// not fit, the answer is the header alone with EINVAL, so the guest learns
/// its buffer was too small instead of reading a truncated body.
///
/// Under a fault plan (`engine`) it hits `request:OP:before` before the
/// model acts and `request:OP:after` once the response is ready (and the
/// context-teardown and lease-break points on the way), and says what to
/// do with the completion. A device in NEEDS_RESET answers EIO to all.
pub fn handle(dev: &Device, engine: Option<&FaultEngine>, req: &[u8], resp_cap: usize) -> Handled {
    let mut faults = Faults {
        engine,
        completion: Completion::default(),
        decided: false,
    };
    let response = handle_inner(dev, &mut faults, req, resp_cap);
    Handled {
        response,
        completion: faults.completion,
    }
}

fn handle_inner(dev: &Device, faults: &mut Faults<'_>, req: &[u8], resp_cap: usize) -> Vec<u8> {
    let hdr_len = size_of::<PlReqHdr>();
    let Some(hdr) = PlReqHdr::read_from(req) else {
        report_bad_input(
            dev,
            BadInput::ShortRequest,
            &format!("request is {} bytes, header needs {hdr_len}", req.len()),
        );
        dev.counters.request(None, Status::Inval);
        return encode(Status::Inval, 0, &[]);
    };
    let op = Opcode::from_u16(hdr.opcode);
    if dev.needs_reset() {
        dev.refuse_needing_reset();
        dev.counters.request(op, Status::Io);
        return encode(Status::Io, hdr.tag, &[]);
    }
    let result = match op {
        None => Err(malformed(
            BadInput::UnknownOpcode,
            format!("opcode {}", hdr.opcode),
        )),
        Some(_) if hdr.flags != 0 || hdr.reserved != 0 => Err(malformed(
            BadInput::BadField,
            format!(
                "header flags {:#x} / reserved {:#x} must be 0",
                hdr.flags, hdr.reserved
            ),
        )),
        // Refuse before acting: an object created for a response that cannot
        // be delivered would leak, and the driver would think it failed.
        Some(op) if size_of::<PlRespHdr>() + op.response_body_len() > resp_cap => Err(malformed(
            BadInput::ShortResponse,
            format!(
                "response needs {} bytes, buffer has {resp_cap}",
                size_of::<PlRespHdr>() + op.response_body_len()
            ),
        )),
        Some(op) => {
            let b = &req[hdr_len..];
            let before = Point::Request {
                op: Some(op),
                after: false,
            };
            let forced = faults.engine.and_then(|e| {
                let effects = e.at(dev, before, hdr.ctx, named_mr(op, b));
                fold_effects(&effects, &mut faults.completion)
            });
            let result = match forced {
                Some(s) => Err(injected(s, &before.to_string())),
                // A dropped request has no effect either.
                None if faults.completion.drop => Err(injected(Status::Io, &before.to_string())),
                None => dispatch_guarded(dev, op, &hdr, b, faults),
            };
            let after = Point::Request {
                op: Some(op),
                after: true,
            };
            let named = match (&result, op) {
                (Ok(body), Opcode::RegMr | Opcode::ImportMr) => {
                    PlRegMrResp::read_from(body).map(|r| r.key)
                }
                _ => named_mr(op, b),
            };
            let forced = match faults.engine {
                Some(e) if forced.is_none() && !faults.completion.drop && !faults.decided => {
                    let effects = e.at(dev, after, hdr.ctx, named);
                    fold_effects(&effects, &mut faults.completion)
                }
                _ => None,
            };
            match forced {
                // The effect stays; the answer lies.
                Some(s) => Err(injected(s, &after.to_string())),
                None => result,
            }
        }
    };
    let (status, body) = match result {
        Ok(body) => {
            debug_assert_eq!(body.len(), op.map_or(0, |o| o.response_body_len()));
            (Status::Ok, body)
        }
        Err(f) => {
            let name = op.map_or("UNKNOWN", |o| o.name());
            match f.bad_input {
                Some(kind) => {
                    report_bad_input(dev, kind, &format!("{name} ctx {:#x}: {}", hdr.ctx, f.why))
                }
                None => {
                    if let Some(suppressed) = REJECT_LOG.allow() {
                        info!(
                            "{name} ctx {:#x} -> {}: {}{}",
                            hdr.ctx,
                            f.status.name(),
                            f.why,
                            if suppressed > 0 {
                                format!(" ({suppressed} similar lines suppressed)")
                            } else {
                                String::new()
                            }
                        );
                    }
                }
            }
            (f.status, Vec::new())
        }
    };
    dev.counters.request(op, status);
    encode(status, hdr.tag, &body)
}

fn encode(status: Status, tag: u64, body: &[u8]) -> Vec<u8> {
    let h = PlRespHdr {
        status: status as u32,
        len: body.len() as u32,
        tag,
    };
    let mut out = Vec::with_capacity(size_of::<PlRespHdr>() + body.len());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(body);
    out
}
