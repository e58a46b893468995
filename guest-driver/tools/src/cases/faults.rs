//! Module fault points (docs/faults.md section 2): each parameter makes
//! its operation fail or its event vanish, bad values are refused, debugfs
//! `faults` lists the parameters and counts.

use crate::cases::helpers::{
    debugfs_table, expect_errno, fdinfo, names_handle, open, open_needing, pair, pins_held,
    wait_event, TestFile, KIB, LEASE_LEN, MODULE_PARAMS,
};
use crate::dev::{Dev, SysError};
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, Mapping};
use crate::uapi::*;
use crate::{ensure, fail, skip};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn param_path(name: &str) -> String {
    format!("{MODULE_PARAMS}/{name}")
}

/// A module parameter's value as the module reads it back.
fn param_get(name: &str) -> Result<i64, CaseErr> {
    let path = param_path(name);
    let v = sys::read_to_string(&path)?;
    v.trim()
        .parse()
        .map_err(|_| CaseErr::Fail(format!("{path} reads {v:?}, not an integer")))
}

/// Sets module parameters; puts back the values found on drop, so a failing
/// case leaves no fault armed for the rest of the suite.
struct FaultParams {
    saved: Vec<(String, String)>,
}

impl FaultParams {
    fn new() -> Result<FaultParams, CaseErr> {
        if !std::path::Path::new(&param_path("fault_pin_after")).exists() {
            skip!("{MODULE_PARAMS}/fault_pin_after does not exist (module without fault points)");
        }
        Ok(FaultParams { saved: Vec::new() })
    }

    fn set(&mut self, name: &str, value: i64) -> CaseResult {
        let path = param_path(name);
        if !self.saved.iter().any(|(n, _)| n == name) {
            let old = sys::read_to_string(&path)?;
            self.saved.push((name.to_string(), old.trim().to_string()));
        }
        sys::write_str(&path, &format!("{value}\n"))?;
        let back = param_get(name)?;
        ensure!(back == value, "{path}: wrote {value}, reads {back}");
        Ok(())
    }
}

impl Drop for FaultParams {
    fn drop(&mut self) {
        for (name, old) in self.saved.iter().rev() {
            let _ = sys::write_str(&param_path(name), &format!("{old}\n"));
        }
    }
}

/// The debugfs `faults` file as (key, value) pairs ("fired pin_after: 3").
fn faults_file() -> Result<Vec<(String, i64)>, CaseErr> {
    let text = debugfs_table("faults")?;
    let mut out = Vec::new();
    for l in text.lines() {
        let Some((k, v)) = l.rsplit_once(':') else {
            fail!("debugfs faults: line {l:?} is not `key: value`");
        };
        let Ok(v) = v.trim().parse::<i64>() else {
            fail!("debugfs faults: line {l:?}: value is not an integer");
        };
        out.push((k.trim().to_string(), v));
    }
    Ok(out)
}

fn fault_count(key: &str) -> Result<i64, CaseErr> {
    let all = faults_file()?;
    match all.iter().find(|(k, _)| k == key) {
        Some((_, v)) => Ok(*v),
        None => fail!("debugfs faults has no {key:?} line: {all:?}"),
    }
}

/// Kernel log lines containing `needle` among those logged since `k` opened.
fn kmsg_lines_with(k: &mut sys::Kmsg, needle: &str) -> Vec<String> {
    k.read_new()
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

const FAULT_MR_PAGES: usize = 16;

/// REG_MR of FAULT_MR_PAGES anonymous pages (long-term, access ALL).
fn reg_fault_mr(dev: &Dev, m: &Mapping) -> Result<PinleaseRegMr, SysError> {
    dev.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)
}

pub(super) fn fault_pin_after_fails_reg_mr_and_unpins(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let dev = open()?;
    let m = Mapping::anon(FAULT_MR_PAGES * 4096)?;
    m.touch();
    let small = Mapping::anon(4 * 4096)?;
    let held0 = pins_held()?;
    let fired0 = fault_count("fired pin_after")?;
    let mut k = sys::Kmsg::open_at_end();
    for (n, after) in [0i64, 5, FAULT_MR_PAGES as i64 - 1].into_iter().enumerate() {
        fp.set("fault_pin_times", 1)?;
        fp.set("fault_pin_after", after)?;
        expect_errno(
            reg_fault_mr(&dev, &m),
            libc::EFAULT,
            &format!("REG_MR of {FAULT_MR_PAGES} pages with fault_pin_after={after}"),
        )?;
        let fired = fault_count("fired pin_after")?;
        ensure!(
            fired == fired0 + n as i64 + 1,
            "fired pin_after {fired} after {} faults (was {fired0})",
            n + 1
        );
        let held = pins_held()?;
        ensure!(
            held == held0,
            "fault_pin_after={after}: {} pins left behind by the failed REG_MR",
            held - held0
        );
        let logged = kmsg_lines_with(&mut k, &format!("fault injected: pin_after {after} pages"));
        ensure!(
            logged.len() == 1,
            "fault_pin_after={after}: {} kernel log lines \"fault injected: pin_after {after} pages\"",
            logged.len()
        );
        t.diag(format!("logged: {}", logged[0]));
        let left = param_get("fault_pin_times")?;
        ensure!(
            left == 0,
            "fault_pin_times reads {left} after its one REG_MR"
        );
        // The count is used up: the same REG_MR works now.
        let r = reg_fault_mr(&dev, &m)?;
        ensure!(
            r.npages as usize == FAULT_MR_PAGES,
            "REG_MR after the fault pinned {} pages",
            r.npages
        );
        dev.dereg_mr(r.key)?;
    }
    // A REG_MR with no more pages than fault_pin_after never gets there and
    // does not use up fault_pin_times.
    fp.set("fault_pin_times", 1)?;
    fp.set("fault_pin_after", 4)?;
    let r = dev.reg_mr(small.addr(), small.len() as u64, PL_ACCESS_ALL, 0)?;
    dev.dereg_mr(r.key)?;
    ensure!(
        param_get("fault_pin_times")? == 1,
        "a 4-page REG_MR under fault_pin_after=4 used up fault_pin_times"
    );
    expect_errno(
        reg_fault_mr(&dev, &m),
        libc::EFAULT,
        "the next 16-page REG_MR under fault_pin_after=4",
    )?;
    ensure!(pins_held()? == held0, "pins did not balance");
    Ok(())
}

pub(super) fn fault_pin_times_counts_down(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let dev = open()?;
    let m = Mapping::anon(FAULT_MR_PAGES * 4096)?;
    let held0 = pins_held()?;
    let fired0 = fault_count("fired pin_after")?;
    fp.set("fault_pin_after", 1)?;
    fp.set("fault_pin_times", 3)?;
    for left in [2, 1, 0] {
        expect_errno(
            reg_fault_mr(&dev, &m),
            libc::EFAULT,
            "REG_MR under fault_pin_times",
        )?;
        let v = param_get("fault_pin_times")?;
        ensure!(
            v == left,
            "fault_pin_times reads {v} after a fault, expected {left}"
        );
    }
    let r = reg_fault_mr(&dev, &m)?;
    dev.dereg_mr(r.key)?;
    // -1: every REG_MR, and it stays -1.
    fp.set("fault_pin_times", -1)?;
    for _ in 0..3 {
        expect_errno(
            reg_fault_mr(&dev, &m),
            libc::EFAULT,
            "REG_MR under fault_pin_times=-1",
        )?;
    }
    let v = param_get("fault_pin_times")?;
    ensure!(v == -1, "fault_pin_times=-1 reads {v} after three faults");
    fp.set("fault_pin_after", -1)?;
    let r = reg_fault_mr(&dev, &m)?;
    dev.dereg_mr(r.key)?;
    let fired = fault_count("fired pin_after")? - fired0;
    t.diag(format!("fired pin_after +{fired}"));
    ensure!(fired == 6, "fired pin_after went up by {fired}, expected 6");
    // Racing REG_MRs take the countdown exactly: 4 threads x 8 REG_MRs
    // against fault_pin_times=10 fail exactly 10 times.
    const THREADS: usize = 4;
    const EACH: usize = 8;
    const TIMES: i64 = 10;
    fp.set("fault_pin_after", 3)?;
    fp.set("fault_pin_times", TIMES)?;
    let results: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| -> Result<usize, String> {
                    let d = Dev::open_default().map_err(|e| e.to_string())?;
                    let m = Mapping::anon(FAULT_MR_PAGES * 4096).map_err(|e| e.to_string())?;
                    let mut faults = 0;
                    for _ in 0..EACH {
                        match reg_fault_mr(&d, &m) {
                            Ok(r) => d.dereg_mr(r.key).map_err(|e| e.to_string())?,
                            Err(e) if e.errno == libc::EFAULT => faults += 1,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    Ok(faults)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut faults = 0;
    for r in results {
        match r {
            Ok(n) => faults += n as i64,
            Err(e) => fail!("racing REG_MR: {e}"),
        }
    }
    t.diag(format!(
        "{THREADS} threads x {EACH} REG_MRs, fault_pin_times={TIMES}: {faults} failed EFAULT"
    ));
    ensure!(
        faults == TIMES,
        "{faults} racing REG_MRs failed, fault_pin_times was {TIMES}"
    );
    let v = param_get("fault_pin_times")?;
    ensure!(v == 0, "fault_pin_times reads {v} after the race");
    let fired = fault_count("fired pin_after")? - fired0;
    ensure!(
        fired == 6 + TIMES,
        "fired pin_after went up by {fired}, expected {}",
        6 + TIMES
    );
    ensure!(pins_held()? == held0, "pins did not balance");
    Ok(())
}

pub(super) fn fault_lease_set_fails_lease_take(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    let ctx = dev.query()?.ctx;
    let file = TestFile::on("/mnt/xfs", "xfs", "fault-lease-set")?;
    let map = Mapping::new(&file.backing(true), LEASE_LEN, false)?;
    map.touch();
    drop(map);
    let data = std::fs::File::open(&file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.path)))?;
    let fired0 = fault_count("fired lease_set")?;
    fp.set("fault_lease_set", 2)?;
    for left in [1, 0] {
        expect_errno(
            dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0),
            libc::EAGAIN,
            "LEASE_TAKE under fault_lease_set",
        )?;
        let v = param_get("fault_lease_set")?;
        ensure!(v == left, "fault_lease_set reads {v}, expected {left}");
    }
    let fired = fault_count("fired lease_set")? - fired0;
    ensure!(fired == 2, "fired lease_set went up by {fired}, expected 2");
    let leases = debugfs_table("leases")?;
    ensure!(
        !leases.lines().skip(1).any(|l| names_handle(l, ctx)),
        "debugfs leases lists a lease of ctx {ctx:#x} after failed LEASE_TAKEs:\n{leases}"
    );
    let fdi = fdinfo(dev.raw())?;
    ensure!(
        fdi.lines().any(|l| l == "leases:\t0"),
        "fdinfo after failed LEASE_TAKEs: {}",
        fdi.replace('\n', " | ")
    );
    // Nothing is left on the inode either: the retry gets the lease.
    let lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
    let leases = debugfs_table("leases")?;
    ensure!(
        leases.lines().skip(1).any(|l| names_handle(l, lease)),
        "debugfs leases does not list the retried lease {lease:#x}:\n{leases}"
    );
    t.diag(format!("retry: lease {lease:#x}"));
    dev.lease_release(lease)?;
    Ok(())
}

/// Polls debugfs contexts until `ctx` is gone; how long that took.
fn wait_context_gone(ctx: u64, timeout: Duration) -> Result<Duration, CaseErr> {
    let start = Instant::now();
    loop {
        let contexts = debugfs_table("contexts")?;
        if !contexts.lines().skip(1).any(|l| names_handle(l, ctx)) {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            fail!("ctx {ctx:#x} still in debugfs contexts {timeout:?} after close:\n{contexts}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn fault_release_delay_ms_defers_context_release(t: &mut CaseCtx) -> CaseResult {
    const DELAY_MS: i64 = 1500;
    let mut fp = FaultParams::new()?;
    let held0 = pins_held()?;
    let fired0 = fault_count("fired release_delay")?;
    fp.set("fault_release_delay_ms", DELAY_MS)?;
    let dev = open()?;
    let ctx = dev.query()?.ctx;
    let m = Mapping::anon(FAULT_MR_PAGES * 4096)?;
    let r = reg_fault_mr(&dev, &m)?;
    let closed = Instant::now();
    drop(dev);
    // The close unpinned at once; only the context's release waits.
    ensure!(
        pins_held()? == held0,
        "pins of MR {:#x} held after close",
        r.key
    );
    let contexts = debugfs_table("contexts")?;
    let line = contexts
        .lines()
        .skip(1)
        .find(|l| names_handle(l, ctx))
        .map(str::to_string);
    let Some(line) = line else {
        fail!("ctx {ctx:#x} already gone from debugfs contexts right after close:\n{contexts}");
    };
    ensure!(
        line.split_whitespace().nth(3) == Some("closed"),
        "ctx {ctx:#x} during the release delay: {line:?}, expected state closed"
    );
    wait_context_gone(ctx, Duration::from_millis(DELAY_MS as u64 + 5000))?;
    let since_close = closed.elapsed();
    t.diag(format!(
        "ctx {ctx:#x} left debugfs contexts {} ms after close (delay {DELAY_MS} ms)",
        since_close.as_millis()
    ));
    ensure!(
        since_close >= Duration::from_millis(DELAY_MS as u64 - 100),
        "ctx {ctx:#x} gone {} ms after close, before the {DELAY_MS} ms delay",
        since_close.as_millis()
    );
    let fired = fault_count("fired release_delay")? - fired0;
    ensure!(
        fired == 1,
        "fired release_delay went up by {fired}, expected 1"
    );
    // Off again: the next close releases at once.
    fp.set("fault_release_delay_ms", 0)?;
    let dev = open()?;
    let ctx = dev.query()?.ctx;
    drop(dev);
    let gone = wait_context_gone(ctx, Duration::from_secs(2))?;
    t.diag(format!(
        "without the delay: gone after {} ms",
        gone.as_millis()
    ));
    ensure!(pins_held()? == held0, "pins did not balance");
    Ok(())
}

pub(super) fn fault_drop_event_discards_next_events(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let a = open_needing(abi::PL_FEATURE_EXPORT, "EXPORT")?;
    let b = open()?;
    let efd = b.event_fd()?;
    sys::set_nonblock(efd.as_raw_fd())?;
    let mx = Mapping::anon(16 * KIB)?;
    // An import whose source goes away: MR_REVOKED(SOURCE_GONE) to b.
    let revoke_import = || -> Result<u64, CaseErr> {
        let kx = a.reg_mr(mx.addr(), mx.len() as u64, PL_ACCESS_ALL, 0)?.key;
        let exp = a.export_mr(kx)?;
        let ky = b.import_mr(exp.as_raw_fd(), PL_ACCESS_ALL)?;
        drop(exp);
        a.dereg_mr(kx)?;
        Ok(ky)
    };
    let fired0 = fault_count("fired drop_event")?;
    let dropped0 = fault_count("dropped mr_revoked")?;
    fp.set("fault_drop_event", 1)?;
    let ky = revoke_import()?;
    let (hit, all) = wait_event(t, efd.as_raw_fd(), Duration::from_secs(1), |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == ky
    })?;
    ensure!(
        hit.is_none(),
        "MR_REVOKED of import {ky:#x} delivered under fault_drop_event=1 ({} events)",
        all.len()
    );
    let fired = fault_count("fired drop_event")? - fired0;
    let dropped = fault_count("dropped mr_revoked")? - dropped0;
    ensure!(
        fired == 1 && dropped == 1,
        "after one dropped MR_REVOKED: fired drop_event +{fired}, dropped mr_revoked +{dropped}"
    );
    let v = param_get("fault_drop_event")?;
    ensure!(v == 0, "fault_drop_event reads {v} after its one drop");
    // The revoked import is still the module's to free: DEREG_MR works.
    match b.dereg_mr(ky) {
        Ok(()) => t.diag(format!("DEREG_MR of the revoked import {ky:#x}: ok")),
        Err(e) => t.diag(format!("DEREG_MR of the revoked import {ky:#x}: {e}")),
    }
    // The count is used up: the next one arrives.
    let ky = revoke_import()?;
    let (hit, _) = wait_event(t, efd.as_raw_fd(), Duration::from_secs(2), |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == ky
    })?;
    ensure!(
        hit.is_some(),
        "MR_REVOKED of import {ky:#x} not delivered within 2 s with fault_drop_event=0"
    );
    let fired = fault_count("fired drop_event")? - fired0;
    ensure!(
        fired == 1,
        "fired drop_event +{fired} after a delivered event"
    );
    Ok(())
}

pub(super) fn fault_params_refuse_bad_values(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let bad: &[(&str, &str)] = &[
        ("req_timeout_ms", "0"),
        ("req_timeout_ms", "-1"),
        ("req_timeout_ms", "3600001"),
        ("req_timeout_ms", "soon"),
        ("req_timeout_ms", ""),
        ("fault_pin_after", "-2"),
        ("fault_pin_times", "-2"),
        ("fault_lease_set", "-1"),
        ("fault_release_delay_ms", "-1"),
        ("fault_release_delay_ms", "60001"),
        ("fault_drop_event", "-1"),
        ("fault_drop_event", "1x"),
        ("req_poll_us", "-1"),
        ("req_poll_us", "1001"),
        ("req_poll_us", "fast"),
    ];
    for (name, v) in bad {
        let before = param_get(name)?;
        expect_errno(
            sys::write_str(&param_path(name), &format!("{v}\n")),
            libc::EINVAL,
            &format!("{name}={v:?}"),
        )?;
        let after = param_get(name)?;
        ensure!(
            after == before,
            "{name} reads {after} after the refused {v:?} (was {before})"
        );
    }
    ensure!(
        param_get("req_timeout_ms")? == 30000,
        "req_timeout_ms default is not 30000"
    );
    // The bounds themselves are accepted.
    fp.set("req_timeout_ms", 1)?;
    fp.set("req_timeout_ms", 3_600_000)?;
    fp.set("req_timeout_ms", 5000)?;
    fp.set("fault_release_delay_ms", 60000)?;
    fp.set("fault_release_delay_ms", 0)?;
    ensure!(
        param_get("req_poll_us")? == 50,
        "req_poll_us default is not 50"
    );
    fp.set("req_poll_us", 1000)?;
    fp.set("req_poll_us", 0)?;
    // A device that answers in time is not timed out by a short limit.
    fp.set("req_timeout_ms", 2000)?;
    let timeouts0 = device_counter("timeouts")?;
    let p = pair()?;
    p.dev.write(p.ka, 0, p.kb, 0, 4096)?;
    p.close()?;
    let timeouts = device_counter("timeouts")?;
    ensure!(
        timeouts == timeouts0,
        "timeouts {timeouts0} -> {timeouts} with req_timeout_ms=2000 and a live device"
    );
    t.diag(format!("{} bad values refused with EINVAL", bad.len()));
    Ok(())
}

/// A counter of debugfs `device` ("timeouts: 0").
fn device_counter(key: &str) -> Result<i64, CaseErr> {
    let text = debugfs_table("device")?;
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok());
    match v {
        Some(v) => Ok(v),
        None => fail!("debugfs device has no {key:?} counter:\n{text}"),
    }
}

pub(super) fn fault_debugfs_file_lists_params_and_counts(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let params = [
        "fault_pin_after",
        "fault_pin_times",
        "fault_lease_set",
        "fault_release_delay_ms",
        "fault_drop_event",
        "req_timeout_ms",
    ];
    let check = |all: &[(String, i64)]| -> CaseResult {
        for p in params {
            let want = param_get(p)?;
            let key = format!("param {p}");
            match all.iter().find(|(k, _)| *k == key) {
                Some((_, v)) if *v == want => {}
                Some((_, v)) => fail!("debugfs faults: {key}: {v}, the parameter reads {want}"),
                None => fail!("debugfs faults has no {key:?} line"),
            }
        }
        Ok(())
    };
    let all = faults_file()?;
    check(&all)?;
    let mut keys: Vec<String> = [
        "fired pin_after",
        "fired lease_set",
        "fired release_delay",
        "fired drop_event",
        "dropped mr_revoked",
        "dropped needs_reset",
        "dropped other",
        "device fault_injected fail",
        "device fault_injected needs_reset",
        "device fault_injected abort",
        "device fault_injected other",
        "device needs_reset",
        "detected broken_queue",
        "detected bad_tag",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.retain(|k| !all.iter().any(|(a, _)| a == k));
    ensure!(keys.is_empty(), "debugfs faults lacks {keys:?}");
    for (k, v) in &all {
        ensure!(*v >= -1, "debugfs faults: {k}: {v}");
        if !k.starts_with("param ") {
            ensure!(*v >= 0, "debugfs faults: counter {k} is {v}");
        }
    }
    // The file follows the parameters.
    fp.set("fault_pin_after", 9)?;
    fp.set("fault_pin_times", 0)?;
    fp.set("fault_drop_event", 3)?;
    fp.set("req_timeout_ms", 12345)?;
    check(&faults_file()?)?;
    drop(fp);
    let all = faults_file()?;
    check(&all)?;
    for (p, v) in [
        ("fault_pin_after", -1),
        ("fault_drop_event", 0),
        ("req_timeout_ms", 30000),
    ] {
        ensure!(param_get(p)? == v, "{p} not restored to {v}");
    }
    t.diag(format!("{} lines", all.len()));
    Ok(())
}
