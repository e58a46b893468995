//! The event fd (`events_*`): whole records, poll, and MR_REVOKED when an
//! import's source goes away.

use crate::cases::helpers::{expect_errno_in, open, open_needing, read_events, KIB};
use crate::dev::{format_event, parse_events, EVENT_SIZE};
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, errno_name, Mapping};
use crate::{ensure, fail};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;
use std::time::Duration;

pub(super) fn events_whole_records_poll_empty_no_lease_revokes_yet(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    let efd = dev.event_fd()?;
    let fd = efd.as_raw_fd();
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    ensure!(
        fl >= 0 && fl & libc::FD_CLOEXEC != 0,
        "event fd is not O_CLOEXEC (F_GETFD {fl})"
    );
    sys::set_nonblock(fd)?;
    let rev = sys::poll_one(fd, libc::POLLIN, 0)?;
    ensure!(
        rev & libc::POLLIN == 0,
        "empty channel polls readable (revents {rev:#x})"
    );
    let rev = sys::poll_one(fd, libc::POLLIN, 200)?;
    ensure!(
        rev == 0,
        "empty channel: poll with 200 ms timeout returned revents {rev:#x}"
    );
    match sys::read_fd(fd, EVENT_SIZE) {
        Err(libc::EAGAIN) => {}
        Ok(b) => fail!(
            "nonblocking read of an empty channel returned {} bytes",
            b.len()
        ),
        Err(e) => fail!(
            "nonblocking read of an empty channel: {} ({e}), expected EAGAIN",
            errno_name(e)
        ),
    }
    // A context's close sends CONTEXT_TORN_DOWN to it: the one event we can
    // cause without leases. It must arrive as whole 56-byte records.
    let m = Mapping::anon(16 * KIB)?;
    let r = dev.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)?;
    let ctx = dev.query()?.ctx;
    drop(dev);
    let rev = sys::poll_one(fd, libc::POLLIN, 2000)?;
    if rev & libc::POLLIN == 0 {
        t.diag(format!(
            "no event within 2 s after closing the device fd (revents {rev:#x}); \
             CONTEXT_TORN_DOWN not delivered to the event fd"
        ));
        return Ok(());
    }
    // A short buffer must not return a partial record.
    match sys::read_fd(fd, EVENT_SIZE - 1) {
        Ok(b) if b.is_empty() => {}
        Ok(b) => fail!(
            "read with a {}-byte buffer returned {} bytes (partial record)",
            EVENT_SIZE - 1,
            b.len()
        ),
        Err(e) => t.diag(format!(
            "read with a {}-byte buffer: {} (ok)",
            EVENT_SIZE - 1,
            errno_name(e)
        )),
    }
    let buf = match sys::read_fd(fd, EVENT_SIZE * 3 + 10) {
        Ok(b) => b,
        Err(e) => fail!("read after POLLIN: {} ({e})", errno_name(e)),
    };
    ensure!(
        !buf.is_empty() && buf.len() % EVENT_SIZE == 0,
        "event read returned {} bytes: not whole {EVENT_SIZE}-byte records",
        buf.len()
    );
    let evs = parse_events(&buf);
    for e in &evs {
        t.diag(format_event(e));
    }
    let td = evs
        .iter()
        .find(|e| e.kind == abi::PL_EVENT_CONTEXT_TORN_DOWN);
    let Some(td) = td else {
        fail!("events after close contain no CONTEXT_TORN_DOWN");
    };
    ensure!(
        td.ctx == ctx,
        "CONTEXT_TORN_DOWN ctx {:#x} != {ctx:#x}",
        td.ctx
    );
    ensure!(
        td.args[0] == 1 && td.args[2] == u64::from(r.npages),
        "CONTEXT_TORN_DOWN args {:?}: expected 1 MR destroyed, {} pages unpinned",
        td.args,
        r.npages
    );
    Ok(())
}

pub(super) fn events_mr_revoked_import_source_gone(t: &mut CaseCtx) -> CaseResult {
    let a = open_needing(abi::PL_FEATURE_EXPORT, "EXPORT")?;
    let b = open()?;
    let bctx = b.query()?.ctx;
    let mx = Mapping::anon(16 * KIB)?;
    let kx = a.reg_mr(mx.addr(), mx.len() as u64, PL_ACCESS_ALL, 0)?.key;
    let exp = a.export_mr(kx)?;
    let ky = b.import_mr(exp.as_raw_fd(), PL_ACCESS_ALL)?;
    let efd = b.event_fd()?;
    sys::set_nonblock(efd.as_raw_fd())?;
    a.dereg_mr(kx)?;
    let evs = read_events(efd.as_raw_fd(), Duration::from_secs(2))?;
    for e in &evs {
        t.diag(format_event(e));
    }
    let hit = evs
        .iter()
        .find(|e| e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == ky);
    let Some(e) = hit else {
        fail!("no MR_REVOKED for imported key {ky:#x} within 2 s after its source was deregistered ({} other events)", evs.len());
    };
    ensure!(
        e.ctx == bctx,
        "MR_REVOKED ctx {:#x} != importer ctx {bctx:#x}",
        e.ctx
    );
    ensure!(
        e.args[1] == abi::PL_REVOKE_SOURCE_GONE,
        "MR_REVOKED reason {} != SOURCE_GONE ({})",
        e.args[1],
        abi::PL_REVOKE_SOURCE_GONE
    );
    ensure!(
        e.args[2] == 0,
        "MR_REVOKED of an import reports {} pages",
        e.args[2]
    );
    let ml = Mapping::anon(4096)?;
    let kl = b.reg_mr(ml.addr(), 4096, PL_ACCESS_ALL, 0)?.key;
    let e = expect_errno_in(
        b.write(kl, 0, ky, 0, 8),
        &[libc::ECANCELED, libc::ESTALE],
        "WRITE to a revoked import",
    )?;
    t.diag(format!("WRITE to the revoked import: {}", errno_name(e)));
    drop(exp);
    Ok(())
}
