//! A verbs MR of a shared XFS mapping while another process truncates the
//! file, under each of pinlease_ib.ko's `mr_lease` policies:
//!
//! - `none`: no lease; the truncate returns at once, the pins stay, RDMA
//!   READ still reads the pages the file no longer owns.
//! - `revoke`: the truncate returns at once, the MR is revoked and unpinned
//!   by then, RDMA on it completes with an access error.
//! - `wait`: the truncate blocks until ibv_dereg_mr.
//! - `timeout`: the truncate returns after lease-break-time, the lease is
//!   lost, the pins stay until ibv_dereg_mr and RDMA still works.
//!
//! The holder is `pl-verbs-check hold` (mod.rs [`Holder`]); the lease is
//! pinlease.ko's row in debugfs `leases` with the holder's pid.

use crate::cases::helpers::{
    kname, pins_held, reap_breaker, running_kver, spawn_breaker, BreakTime, Breaker, TestFile,
    LEASE_LEN, SNAPSHOT_WAIT,
};
use crate::cases::verbs::{
    field, file_content, fnv1a, lease_hold_as, lease_row_of, lease_rows_of, wait_lease_row_state,
    wait_no_lease_row, HoldAs, Holder, IbDriver,
};
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, Exit};
use crate::{ensure, fail};
use std::time::{Duration, Instant};

/// The MR's pages (the file's length).
const PAGES: i64 = (LEASE_LEN / 4096) as i64;

/// A holder of a file MR under one policy. Fields drop in order: the
/// holder (closing its verbs fd) before the file and the driver.
struct Held {
    h: Holder,
    file: TestFile,
    how: HoldAs,
    content_fnv: u64,
    _ib: IbDriver,
}

/// Loads the driver with `mr_lease` = `policy`, writes the XFS file
/// `name`, starts the holder on it (registered as lease_hold_as() says
/// for this kernel) and checks a first RDMA READ returns the file's bytes.
fn hold(t: &mut CaseCtx, policy: &str, name: &str) -> Result<Held, CaseErr> {
    let kver = running_kver()?;
    let ib = IbDriver::with_policy(policy)?;
    let file = TestFile::on("/mnt/xfs", "xfs", name)?;
    let content = file_content();
    std::fs::write(&file.path, &content)
        .map_err(|e| CaseErr::Fail(format!("write {}: {e}", file.path)))?;
    let how = lease_hold_as(kver)?;
    let mut h = match Holder::spawn(&ib.dev, &file.path, how)? {
        Ok(h) => h,
        Err(line) => fail!(
            "ibv_reg_mr of {} ({how}) with mr_lease={policy} on {kver}: {line}",
            file.path
        ),
    };
    t.diag(format!(
        "{}: {how}, mr_lease={policy}, holder pid {}: {}",
        file.path,
        h.pid(),
        h.ready
    ));
    let acquired: i64 = field(&h.ready, "pins_acquired")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    ensure!(
        acquired >= PAGES,
        "ibv_reg_mr of {PAGES} pages: pins acquired +{acquired}"
    );
    let content_fnv = fnv1a(&content);
    let (st, fnv) = h.read()?;
    ensure!(
        st == "IBV_WC_SUCCESS" && fnv == content_fnv,
        "RDMA READ of the file MR before the truncate: {st}, fnv1a {fnv:#x} (the file's: {content_fnv:#x})"
    );
    Ok(Held {
        h,
        file,
        how,
        content_fnv,
        _ib: ib,
    })
}

/// The file's size now.
fn file_len(path: &str) -> Result<u64, CaseErr> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| CaseErr::Fail(format!("stat {path}: {e}")))
}

/// Truncates the file to 0 from a child and waits for it (up to 30 s):
/// how long it took.
fn truncate(path: &str) -> Result<Duration, CaseErr> {
    let t0 = Instant::now();
    let pid = spawn_breaker(Breaker::Truncate, path)?;
    let exit = reap_breaker(pid, Duration::from_secs(30), "truncate")?;
    let took = t0.elapsed();
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    Ok(took)
}

pub(in crate::cases) fn verbs_no_lease_truncate_keeps_pins(t: &mut CaseCtx) -> CaseResult {
    let mut v = hold(t, "none", "verbs-no-lease-truncate")?;
    let pid = v.h.pid();
    let rows = lease_rows_of(pid)?;
    ensure!(
        rows.is_empty(),
        "mr_lease=none, yet debugfs leases has a row of pid {pid}: {}",
        rows[0].line
    );
    let held0 = pins_held()?;
    let took = truncate(&v.file.path)?;
    let held1 = pins_held()?;
    t.diag(format!(
        "truncate returned after {took:?}; pins held {held0} -> {held1}; size now {}",
        file_len(&v.file.path)?
    ));
    ensure!(
        took < Duration::from_secs(5),
        "truncate without a lease took {took:?}"
    );
    ensure!(
        held1 == held0,
        "the truncate changed the pins: {held0} -> {held1}"
    );
    ensure!(file_len(&v.file.path)? == 0, "file not truncated");
    let (st, fnv) = v.h.read()?;
    ensure!(
        st == "IBV_WC_SUCCESS" && fnv == v.content_fnv,
        "RDMA READ after the truncate: {st}, fnv1a {fnv:#x} (the old content's: {:#x})",
        v.content_fnv
    );
    t.diag(format!(
        "RDMA READ after the truncate: {st}, the {LEASE_LEN} bytes the file had before it (fnv1a {fnv:#x}): the device reads pages the 0-byte file no longer owns"
    ));
    if v.how.mr_writable {
        let st = v.h.write(0xc3)?;
        ensure!(
            st == "IBV_WC_SUCCESS",
            "RDMA WRITE after the truncate: {st}"
        );
        let (st, fnv) = v.h.read()?;
        let want = fnv1a(&vec![0xc3u8; LEASE_LEN]);
        ensure!(
            st == "IBV_WC_SUCCESS" && fnv == want,
            "RDMA READ after the WRITE: {st}, fnv1a {fnv:#x} (the WRITE's: {want:#x})"
        );
        // The file grows back to its length: does it hold the bytes?
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&v.file.path)
            .map_err(|e| CaseErr::Fail(format!("open {}: {e}", v.file.path)))?;
        f.set_len(LEASE_LEN as u64)
            .map_err(|e| CaseErr::Fail(format!("extend {}: {e}", v.file.path)))?;
        drop(f);
        let data = std::fs::read(&v.file.path)
            .map_err(|e| CaseErr::Fail(format!("read {}: {e}", v.file.path)))?;
        let in_file = data.iter().filter(|&&b| b == 0xc3).count();
        t.diag(format!(
            "RDMA WRITE of {LEASE_LEN} bytes 0xc3 after the truncate: {st}; read back by RDMA READ; the file, extended to {LEASE_LEN} again, holds {in_file} of them: lost"
        ));
        ensure!(
            in_file == 0,
            "{in_file} bytes of the WRITE after the truncate are in the file"
        );
    }
    v.h.dereg()?;
    let held2 = pins_held()?;
    ensure!(
        held1 - held2 == PAGES,
        "ibv_dereg_mr released {} pins, expected {PAGES}",
        held1 - held2
    );
    t.diag(format!(
        "finding: {} without a lease (mr_lease=none): the truncate does not wait for the MR, its {PAGES} pins stay until ibv_dereg_mr, verbs still reach the orphaned pages",
        kname()
    ));
    v.h.exit()
}

pub(in crate::cases) fn verbs_revoke_policy_truncate(t: &mut CaseCtx) -> CaseResult {
    let mut v = hold(t, "revoke", "verbs-revoke-truncate")?;
    let pid = v.h.pid();
    let row = lease_row_of(pid)?;
    t.diag(format!("debugfs leases: {}", row.line));
    ensure!(
        row.policy == "revoke" && row.state == "active",
        "lease of the MR: {}",
        row.line
    );
    sys::snapshot("verbs-revoke-truncate-held", SNAPSHOT_WAIT);
    let held0 = pins_held()?;
    let took = truncate(&v.file.path)?;
    // By the time the truncate returned, the pins were released.
    let held1 = pins_held()?;
    t.diag(format!(
        "truncate returned after {took:?}; pins held {held0} -> {held1} (MR of {PAGES} pages)"
    ));
    ensure!(
        held0 - held1 == PAGES,
        "the truncate released {} pins, expected the MR's {PAGES}",
        held0 - held1
    );
    let row = wait_lease_row_state(pid, "revoked", Duration::from_secs(2))?;
    t.diag(format!("debugfs leases: {}", row.line));
    ensure!(file_len(&v.file.path)? == 0, "file not truncated");
    // Every work request on the revoked MR is tried, the wrong statuses
    // reported together after the MR is gone.
    let mut wrong = Vec::new();
    let mut statuses = Vec::new();
    let mut expect = |what: &str, st: String, want: &str| {
        if st != want {
            wrong.push(format!("{what}: {st}, expected {want}"));
        }
        statuses.push(format!("{what} {st}"));
    };
    expect(
        "RDMA READ of it (remote)",
        v.h.read()?.0,
        "IBV_WC_REM_ACCESS_ERR",
    );
    expect(
        "RDMA WRITE out of it (local)",
        v.h.write_out()?.0,
        "IBV_WC_LOC_PROT_ERR",
    );
    if v.how.mr_writable {
        expect(
            "RDMA WRITE into it (remote)",
            v.h.write(0x5a)?,
            "IBV_WC_REM_ACCESS_ERR",
        );
    }
    t.diag(format!("on the revoked MR: {}", statuses.join(", ")));
    sys::snapshot("verbs-revoke-truncate-revoked", SNAPSHOT_WAIT);
    let l = v.h.dereg()?;
    let held2 = pins_held()?;
    ensure!(
        held2 == held1,
        "ibv_dereg_mr of the revoked MR changed the pins: {held1} -> {held2}"
    );
    wait_no_lease_row(pid, Duration::from_secs(2))?;
    t.diag(format!(
        "finding: {} XFS breaks the verbs MR's layout lease on truncate; revoke: MR revoked and unpinned before the truncate returned ({took:?}), {l}, lease row gone",
        kname()
    ));
    v.h.exit()?;
    ensure!(
        wrong.is_empty(),
        "work requests on the revoked MR: {}",
        wrong.join("; ")
    );
    Ok(())
}

pub(in crate::cases) fn verbs_wait_policy_truncate_waits_for_dereg(t: &mut CaseCtx) -> CaseResult {
    let mut v = hold(t, "wait", "verbs-wait-truncate")?;
    let pid = v.h.pid();
    let row = lease_row_of(pid)?;
    t.diag(format!("debugfs leases: {}", row.line));
    ensure!(
        row.policy == "wait" && row.state == "active",
        "lease of the MR: {}",
        row.line
    );
    let held0 = pins_held()?;
    let t0 = Instant::now();
    let breaker = spawn_breaker(Breaker::Truncate, &v.file.path)?;
    let row = match wait_lease_row_state(pid, "breaking", Duration::from_secs(5)) {
        Ok(r) => r,
        Err(e) => {
            let _ = reap_breaker(breaker, Duration::from_secs(1), "truncate");
            return Err(e);
        }
    };
    let breaking_after = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1).saturating_sub(t0.elapsed()));
    if let Some(exit) = sys::wait_timeout(breaker, Duration::ZERO)? {
        fail!(
            "the truncate did not wait for ibv_dereg_mr: it ended ({exit}) after {:?}",
            t0.elapsed()
        );
    }
    t.diag(format!(
        "lease breaking {breaking_after:?} after the truncate started ({}); truncate still blocked after {:?}: {}",
        row.line,
        t0.elapsed(),
        sys::proc_stack(breaker)
    ));
    // The holder decides: the MR is still there for the device.
    let (st, fnv) = v.h.read()?;
    ensure!(
        st == "IBV_WC_SUCCESS" && fnv == v.content_fnv,
        "RDMA READ while the truncate waits: {st}, fnv1a {fnv:#x}"
    );
    ensure!(
        pins_held()? == held0,
        "pins changed while the truncate waits"
    );
    sys::snapshot("verbs-wait-truncate-breaking", SNAPSHOT_WAIT);
    let t1 = Instant::now();
    let l = v.h.dereg()?;
    let exit = reap_breaker(
        breaker,
        Duration::from_secs(10),
        "truncate after ibv_dereg_mr",
    )?;
    t.diag(format!(
        "RDMA READ while it waits: {st}; {l}; the truncate returned {:?} after ibv_dereg_mr ({:?} after it started): {exit}",
        t1.elapsed(),
        t0.elapsed()
    ));
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    let held1 = pins_held()?;
    ensure!(
        held0 - held1 == PAGES,
        "ibv_dereg_mr released {} pins, expected {PAGES}",
        held0 - held1
    );
    wait_no_lease_row(pid, Duration::from_secs(2))?;
    ensure!(file_len(&v.file.path)? == 0, "file not truncated");
    t.diag(format!(
        "finding: {} XFS breaks the verbs MR's layout lease on truncate; wait: the truncate sleeps until ibv_dereg_mr",
        kname()
    ));
    v.h.exit()
}

pub(in crate::cases) fn verbs_timeout_policy_truncate_lease_lost(t: &mut CaseCtx) -> CaseResult {
    let _bt = BreakTime::set(1)?;
    let mut v = hold(t, "timeout", "verbs-timeout-truncate")?;
    let pid = v.h.pid();
    let row = lease_row_of(pid)?;
    t.diag(format!("debugfs leases: {}", row.line));
    ensure!(
        row.policy == "timeout" && row.state == "active",
        "lease of the MR: {}",
        row.line
    );
    let held0 = pins_held()?;
    let took = truncate(&v.file.path)?;
    ensure!(
        took >= Duration::from_millis(700),
        "the truncate did not wait for lease-break-time (1 s): {took:?}"
    );
    let row = wait_lease_row_state(pid, "lost", Duration::from_secs(5))?;
    let held1 = pins_held()?;
    t.diag(format!(
        "truncate returned after {took:?} (lease-break-time 1 s); {}; pins held {held0} -> {held1}",
        row.line
    ));
    ensure!(
        held1 == held0,
        "pins changed while the lease timed out: {held0} -> {held1}"
    );
    ensure!(file_len(&v.file.path)? == 0, "file not truncated");
    let (st, fnv) = v.h.read()?;
    ensure!(
        st == "IBV_WC_SUCCESS" && fnv == v.content_fnv,
        "RDMA READ of the LOST lease's MR: {st}, fnv1a {fnv:#x} (the old content's: {:#x})",
        v.content_fnv
    );
    let mut did = format!("RDMA READ {st} (the {LEASE_LEN} bytes the file had)");
    if v.how.mr_writable {
        let st = v.h.write(0xa7)?;
        ensure!(
            st == "IBV_WC_SUCCESS",
            "RDMA WRITE into the LOST lease's MR: {st}"
        );
        did.push_str(&format!(", RDMA WRITE {st}"));
    }
    t.diag(format!("on the LOST lease's MR: {did}"));
    // The device's table with the lost accesses counted.
    sys::snapshot("verbs-timeout-truncate-lost", SNAPSHOT_WAIT);
    let l = v.h.dereg()?;
    let held2 = pins_held()?;
    ensure!(
        held1 - held2 == PAGES,
        "ibv_dereg_mr of the LOST lease's MR released {} pins, expected {PAGES}",
        held1 - held2
    );
    wait_no_lease_row(pid, Duration::from_secs(2))?;
    t.diag(format!(
        "finding: {} XFS breaks the verbs MR's layout lease on truncate; timeout: the truncate went on after {took:?}, lease lost, MR pinned until ibv_dereg_mr ({l}; pins {held1} -> {held2})",
        kname()
    ));
    v.h.exit()
}
