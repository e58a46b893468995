//! The campaign cases (`campaign_*`): the workload fault-injection runs
//! drive (docs/faults.md section 3). Under a fault plan any request may
//! fail with any status, completions may be dropped (the module then resets
//! the device and later ioctls return -EIO), events may be lost, duplicated
//! or delayed, MRs revoked and leases broken at any time. So these cases do
//! their operations, count the outcomes (one `outcomes:` diagnostic line per
//! case), bound every wait, always tear down, and FAIL only on what no plan
//! allows:
//!
//! - data that a successful device READ/WRITE/FILL/atomic left wrong in a
//!   buffer only the case writes (a failed request proves nothing: a fault
//!   "after" the model acted reports failure with the effect in place);
//! - a canary of another MR in a scrub MR's pages;
//! - the module still listing a context after its fds are closed (or its
//!   process killed), past the bound;
//! - a breaker (truncate, punch) still blocked past its bound after the
//!   lease was released and the device fd closed;
//! - canaries in fresh memory (`campaign_stray_scan`);
//! - and, when no fault was in play during the case (no FAULT_INJECTED or
//!   NEEDS_RESET event, no module reset, timeout or fault log line, no
//!   change in debugfs `faults`, module fault parameters at their
//!   defaults), any failed operation: the plain suite run holds them to
//!   full success.

use crate::cases::{
    case, spawn_breaker, BreakTime, Breaker, DEBUGFS_DIR, LEASE_LEN, MODULE_PARAMS,
};
use crate::dev::{event_kind_name, parse_events, Dev, SysResult, EVENT_SIZE};
use crate::ktap::{Case, CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, errno_name, Backing, Exit, Mapping};
use crate::uapi::*;
use crate::{fail, skip, stray};
use pinlease::abi::{self, PL_ACCESS_ALL};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const KIB: usize = 1024;
/// The module's default `req_timeout_ms` (docs/faults.md section 2).
const DEFAULT_REQ_TIMEOUT_MS: u64 = 30_000;

/// The campaign cases, in run order (the stray scan last: it checks what
/// the others may have left behind).
pub fn all() -> Vec<Case> {
    vec![
        case!(campaign_mr_churn),
        case!(campaign_lease_revoke),
        case!(campaign_lease_wait),
        case!(campaign_lease_timeout),
        case!(campaign_process_death),
        case!(campaign_stray_scan),
    ]
}

// ---- outcomes ---------------------------------------------------------------------------

/// Per operation: successes and failures by errno; events by kind.
#[derive(Default)]
struct Outcomes {
    ops: BTreeMap<&'static str, (u32, BTreeMap<i32, u32>)>,
    events: BTreeMap<&'static str, u32>,
    first_errors: Vec<String>,
}

impl Outcomes {
    /// Counts `r` under `op`; the value if it succeeded.
    fn rec<T>(&mut self, op: &'static str, r: SysResult<T>) -> Option<T> {
        let e = self.ops.entry(op).or_default();
        match r {
            Ok(v) => {
                e.0 += 1;
                Some(v)
            }
            Err(err) => {
                *e.1.entry(err.errno).or_default() += 1;
                if self.first_errors.len() < 5 {
                    self.first_errors.push(err.to_string());
                }
                None
            }
        }
    }

    fn failures(&self) -> u32 {
        self.ops.values().flat_map(|(_, e)| e.values()).sum()
    }

    /// `outcomes: REG_MR ok=12 EIO=1, ...; events: MR_REVOKED=1`
    fn line(&self) -> String {
        let ops: Vec<String> = self
            .ops
            .iter()
            .map(|(op, (ok, errs))| {
                let mut s = format!("{op} ok={ok}");
                for (e, n) in errs {
                    s.push_str(&format!(" {}={n}", errno_name(*e)));
                }
                s
            })
            .collect();
        let evs: Vec<String> = self
            .events
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        format!(
            "outcomes: {}; events: {}",
            if ops.is_empty() {
                "none".to_string()
            } else {
                ops.join(", ")
            },
            if evs.is_empty() {
                "none".to_string()
            } else {
                evs.join(" ")
            }
        )
    }
}

// ---- were faults in play? ---------------------------------------------------------------

/// Set once any campaign case saw a fault: later cases of the run are
/// lenient too (a device left in NEEDS_RESET by a lost event says nothing).
static FAULTS_SEEN: AtomicBool = AtomicBool::new(false);

/// Module parameters (docs/faults.md section 2) whose non-default value
/// means a campaign configured the module: (name, default).
const FAULT_PARAMS: &[(&str, &str)] = &[
    ("fault_pin_after", "-1"),
    ("fault_lease_set", "0"),
    ("fault_release_delay_ms", "0"),
    ("fault_drop_event", "0"),
    ("req_timeout_ms", "30000"),
];

/// Kernel log lines of the module that only faults produce.
const FAULT_LOG: &[&str] = &["fault injected", "resetting the device", "not answered in"];

/// Evidence that faults were in play during a case.
struct FaultWatch {
    kmsg: sys::Kmsg,
    device0: String,
    faults0: String,
    seen: Option<String>,
}

/// The `timeouts:` and `resets:` lines of debugfs `device`.
fn device_counters() -> String {
    std::fs::read_to_string(format!("{DEBUGFS_DIR}/device"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("timeouts:") || l.starts_with("resets:"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn debugfs_faults() -> String {
    std::fs::read_to_string(format!("{DEBUGFS_DIR}/faults")).unwrap_or_default()
}

fn param(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("{MODULE_PARAMS}/{name}"))
        .ok()
        .map(|s| s.trim().to_string())
}

impl FaultWatch {
    fn start() -> FaultWatch {
        FaultWatch {
            kmsg: sys::Kmsg::open_at_end(),
            device0: device_counters(),
            faults0: debugfs_faults(),
            seen: None,
        }
    }

    fn note(&mut self, why: String) {
        if self.seen.is_none() {
            self.seen = Some(why);
        }
    }

    fn event(&mut self, e: &abi::PlEvent) {
        if e.kind == abi::PL_EVENT_FAULT_INJECTED || e.kind == abi::PL_EVENT_NEEDS_RESET {
            self.note(format!(
                "{} event (args {:#x} {:#x})",
                event_kind_name(e.kind),
                e.args[0],
                e.args[1]
            ));
        }
    }

    /// Why faults count as in play (None: a plain run).
    fn in_play(&mut self) -> Option<String> {
        for l in self.kmsg.read_new() {
            let msg = sys::kmsg_message(&l);
            if FAULT_LOG.iter().any(|f| msg.contains(f)) {
                self.note(format!("kernel log: {msg}"));
            }
        }
        let dev = device_counters();
        if dev != self.device0 {
            self.note(format!("debugfs device: {} -> {dev}", self.device0));
        }
        if debugfs_faults() != self.faults0 {
            self.note("debugfs faults changed".to_string());
        }
        for (name, default) in FAULT_PARAMS {
            if let Some(v) = param(name) {
                if v != *default {
                    self.note(format!("module parameter {name}={v}"));
                }
            }
        }
        if self.seen.is_some() {
            FAULTS_SEEN.store(true, Ordering::Relaxed);
        } else if FAULTS_SEEN.load(Ordering::Relaxed) {
            self.seen = Some("an earlier campaign case saw faults".to_string());
        }
        self.seen.clone()
    }

    /// The end of a case: the outcome line, and FAIL if an operation
    /// failed while no fault was in play.
    fn finish(&mut self, t: &mut CaseCtx, o: &Outcomes) -> CaseResult {
        t.diag(o.line());
        match self.in_play() {
            Some(why) => {
                t.diag(format!("faults in play: {why}"));
                Ok(())
            }
            None if o.failures() > 0 => fail!(
                "{} operation(s) failed with no fault injected: {}",
                o.failures(),
                o.first_errors.join("; ")
            ),
            None => Ok(()),
        }
    }
}

// ---- helpers ----------------------------------------------------------------------------

/// How long the module may take to answer or give up on a request (a
/// dropped completion resets the device after `req_timeout_ms`), plus the
/// deferred-release delay, plus slack for TCG.
fn module_bound() -> Duration {
    let ms = |n: &str| param(n).and_then(|v| v.parse::<u64>().ok());
    let req = ms("req_timeout_ms").unwrap_or(DEFAULT_REQ_TIMEOUT_MS);
    let delay = ms("fault_release_delay_ms").unwrap_or(0);
    Duration::from_millis(req + delay) + Duration::from_secs(5)
}

/// One device context of a case with its (nonblocking) event fd.
struct Ctx {
    dev: Dev,
    ev: Option<OwnedFd>,
    handle: Option<u64>,
}

fn open_ctx(o: &mut Outcomes) -> Option<Ctx> {
    let dev = o.rec("OPEN", Dev::open_default())?;
    let ev = o.rec("EVENT_FD", dev.event_fd());
    if let Some(e) = &ev {
        let _ = sys::set_nonblock(e.as_raw_fd());
    }
    let handle = o.rec("QUERY", dev.query()).map(|q| q.ctx);
    Some(Ctx { dev, ev, handle })
}

/// Reads what is queued on `ev` now (bounded: at most 64 reads).
fn drain(ev: Option<&OwnedFd>, o: &mut Outcomes, w: &mut FaultWatch) -> Vec<abi::PlEvent> {
    let mut out = Vec::new();
    let Some(ev) = ev else { return out };
    for _ in 0..64 {
        match sys::read_fd(ev.as_raw_fd(), EVENT_SIZE * 16) {
            Ok(buf) if !buf.is_empty() => {
                for e in parse_events(&buf) {
                    *o.events.entry(event_kind_name(e.kind)).or_default() += 1;
                    w.event(&e);
                    out.push(e);
                }
            }
            _ => break,
        }
    }
    out
}

/// Waits up to `timeout` for an event matching `pred` on `ev`.
fn wait_event(
    ev: Option<&OwnedFd>,
    o: &mut Outcomes,
    w: &mut FaultWatch,
    timeout: Duration,
    pred: impl Fn(&abi::PlEvent) -> bool,
) -> bool {
    let Some(fd) = ev else { return false };
    let t0 = Instant::now();
    loop {
        if drain(Some(fd), o, w).iter().any(&pred) {
            return true;
        }
        let left = timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return false;
        }
        let _ = sys::poll_one(
            fd.as_raw_fd(),
            libc::POLLIN,
            left.as_millis().min(200) as i32,
        );
    }
}

/// Waits until debugfs `contexts` lists none of `handles` and no row of
/// process `pid`; FAIL past `bound`.
fn wait_contexts_gone(handles: &[u64], pid: Option<i32>, bound: Duration) -> CaseResult {
    let path = format!("{DEBUGFS_DIR}/contexts");
    if !std::path::Path::new(&path).exists() {
        return Ok(());
    }
    let t0 = Instant::now();
    loop {
        let text = sys::read_to_string(&path)?;
        let left: Vec<&str> = text
            .lines()
            .skip(1)
            .filter(|l| {
                let mut f = l.split_whitespace();
                let ctx = f
                    .next()
                    .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok());
                let p = f.next().and_then(|p| p.parse::<i32>().ok());
                ctx.is_some_and(|c| c != 0 && handles.contains(&c)) || (pid.is_some() && p == pid)
            })
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if t0.elapsed() >= bound {
            fail!(
                "debugfs contexts still lists {} closed context(s) {bound:?} after their last \
                 close: {}",
                left.len(),
                left.join(" | ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Any canary-looking word in `m` (a scrub MR registered at the mapping's
/// start with key `key`) must be that MR's canary for its own offset.
fn check_own_canaries(m: &Mapping, key: u64) -> CaseResult {
    let seed = abi::pl_scrub_seed(key);
    let mut bad = None;
    m.for_each_u64(|off, w| {
        if bad.is_none() && stray::canary_slot(w).is_some() && w != seed ^ off as u64 {
            bad = Some((off, w));
        }
    });
    if let Some((off, w)) = bad {
        fail!(
            "scrub MR {key:#x}: word {w:#018x} at offset {off:#x} is a canary of slot {:#x}, \
             not this MR's ({:#018x}): the device wrote another MR's canary into these pages",
            stray::canary_slot(w).unwrap_or(0),
            seed ^ off as u64
        );
    }
    Ok(())
}

/// Data a case wrote with the CPU.
fn pat(seed: u64, i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9e37_79b9) ^ seed ^ (i as u64 >> 9)) as u8
}

/// FAIL unless `m[0..len]` holds `want(i)`.
fn check_bytes(m: &Mapping, len: usize, what: &str, want: impl Fn(usize) -> u8) -> CaseResult {
    if let Some((off, got, exp)) = m.first_mismatch(0, len, want) {
        fail!(
            "{what} succeeded but byte {off} is {got:#04x}, expected {exp:#04x}: the device \
             answered success for a transfer it did not do"
        );
    }
    Ok(())
}

// ---- campaign_mr_churn ------------------------------------------------------------------

const CHURN_LEN: usize = 64 * KIB;
const CHURN_CTXS: usize = 3;
const CHURN_ROUNDS: usize = 3;

/// The buffers of one context in one round.
struct ChurnBufs {
    a: Mapping,
    b: Mapping,
    ka: Option<u64>,
    kb: Option<u64>,
    scrub: Option<(Mapping, u64)>,
}

fn churn_bufs(c: &Ctx, round: usize, i: usize, o: &mut Outcomes) -> Result<ChurnBufs, CaseErr> {
    let a = Mapping::anon(CHURN_LEN)?;
    let b = Mapping::new(&Backing::Memfd, CHURN_LEN, false)?;
    let seed = (round * 16 + i) as u64;
    a.fill_with(0, CHURN_LEN, |x| pat(seed, x));
    b.fill_with(0, CHURN_LEN, |_| 0);
    let ka = o.rec(
        "REG_MR",
        c.dev.reg_mr(a.addr(), CHURN_LEN as u64, PL_ACCESS_ALL, 0),
    );
    let kb = o.rec(
        "REG_MR",
        c.dev.reg_mr(b.addr(), CHURN_LEN as u64, PL_ACCESS_ALL, 0),
    );
    // The scrubber's MR: hugetlb on the first round when there are huge
    // pages, else 16 KiB of anonymous memory; never written by the CPU.
    let huge = if round == 0 && i == 0 {
        Mapping::new(&Backing::Hugetlb, sys::HUGE_2M, false).ok()
    } else {
        None
    };
    let sm = match huge {
        Some(h) => h,
        None => Mapping::anon(16 * KIB)?,
    };
    sm.touch();
    let scrub = o
        .rec(
            "REG_MR_SCRUB",
            c.dev.reg_mr(
                sm.addr(),
                sm.len() as u64,
                PL_ACCESS_ALL,
                PINLEASE_REG_SCRUB,
            ),
        )
        .map(|r| (sm, r.key));
    Ok(ChurnBufs {
        a,
        b,
        ka: ka.map(|r| r.key),
        kb: kb.map(|r| r.key),
        scrub,
    })
}

/// WRITE, READ, atomics, FILL and VERIFY within one context, each result
/// checked when the device said it succeeded.
fn churn_dma(c: &Ctx, bufs: &ChurnBufs, round: usize, o: &mut Outcomes) -> CaseResult {
    let (Some(ka), Some(kb)) = (bufs.ka, bufs.kb) else {
        return Ok(());
    };
    let seed = (round * 16) as u64 + 7;
    let len = CHURN_LEN as u64;
    if o.rec("DMA_WRITE", c.dev.write(ka, 0, kb, 0, len)).is_some() {
        let a = bufs.a.bytes(0, CHURN_LEN);
        check_bytes(&bufs.b, CHURN_LEN, "WRITE a -> b", |x| a[x])?;
    }
    bufs.b.fill_with(0, CHURN_LEN, |x| pat(seed, x));
    if o.rec("DMA_READ", c.dev.read(ka, 0, kb, 0, len)).is_some() {
        check_bytes(&bufs.a, CHURN_LEN, "READ b -> a", |x| pat(seed, x))?;
    }
    // Atomics on words only this case writes: the expected original is
    // what the CPU reads now (a failed "after" fault may have applied one).
    let before = bufs.b.get_u64(64);
    if let Some(orig) = o.rec("FETCH_ADD", c.dev.fetch_add(kb, 64, 5)) {
        if orig != before || bufs.b.get_u64(64) != before.wrapping_add(5) {
            fail!(
                "FETCH_ADD succeeded: returned {orig:#x}, word now {:#x}; the word held {before:#x}",
                bufs.b.get_u64(64)
            );
        }
    }
    let before = bufs.b.get_u64(128);
    if let Some(orig) = o.rec(
        "COMPARE_SWAP",
        c.dev.compare_swap(kb, 128, before, 0x1111_2222),
    ) {
        if orig != before || bufs.b.get_u64(128) != 0x1111_2222 {
            fail!(
                "COMPARE_SWAP succeeded: returned {orig:#x}, word now {:#x}; the word held {before:#x}",
                bufs.b.get_u64(128)
            );
        }
    }
    let p = 0x0123_4567_89ab_cdef ^ seed;
    if o.rec(
        "FILL",
        c.dev.fill(kb, 0, len, p, abi::PL_PATTERN_OFFSET_XOR),
    )
    .is_some()
    {
        for off in (0..CHURN_LEN).step_by(8) {
            let w = bufs.b.get_u64(off);
            if w != p ^ off as u64 {
                fail!(
                    "FILL succeeded but the word at {off} is {w:#x}, expected {:#x}",
                    p ^ off as u64
                );
            }
        }
        if let Some(v) = o.rec(
            "VERIFY",
            c.dev.verify(kb, 0, len, p, abi::PL_PATTERN_OFFSET_XOR),
        ) {
            if v.mismatches != 0 {
                fail!("VERIFY after a successful FILL of the same pattern: {v}");
            }
        }
    }
    Ok(())
}

fn campaign_mr_churn(t: &mut CaseCtx) -> CaseResult {
    let mut w = FaultWatch::start();
    let mut o = Outcomes::default();
    let mut ctxs: Vec<Option<Ctx>> = (0..CHURN_CTXS).map(|_| open_ctx(&mut o)).collect();
    let mut handles: Vec<u64> = ctxs.iter().flatten().filter_map(|c| c.handle).collect();
    let res = (|| -> CaseResult {
        for round in 0..CHURN_ROUNDS {
            let mut bufs = Vec::new();
            for (i, c) in ctxs.iter().enumerate() {
                bufs.push(match c {
                    Some(c) => Some(churn_bufs(c, round, i, &mut o)?),
                    None => None,
                });
            }
            for (c, b) in ctxs.iter().zip(&bufs) {
                if let (Some(c), Some(b)) = (c, b) {
                    churn_dma(c, b, round, &mut o)?;
                }
            }
            // Export each context's b to the next context, which WRITEs its
            // own a into it through the import.
            for i in 0..CHURN_CTXS {
                let j = (i + 1) % CHURN_CTXS;
                let (Some(ci), Some(cj), Some(bi), Some(bj)) =
                    (&ctxs[i], &ctxs[j], &bufs[i], &bufs[j])
                else {
                    continue;
                };
                let (Some(kb), Some(ka_j)) = (bi.kb, bj.ka) else {
                    continue;
                };
                let Some(exp) = o.rec("EXPORT_MR", ci.dev.export_mr(kb)) else {
                    continue;
                };
                let imp = o.rec(
                    "IMPORT_MR",
                    cj.dev.import_mr(exp.as_raw_fd(), PL_ACCESS_ALL),
                );
                drop(exp);
                let Some(ki) = imp else { continue };
                if o.rec(
                    "DMA_WRITE_IMPORTED",
                    cj.dev.write(ka_j, 0, ki, 0, CHURN_LEN as u64),
                )
                .is_some()
                {
                    let a = bj.a.bytes(0, CHURN_LEN);
                    check_bytes(&bi.b, CHURN_LEN, "WRITE through an import", |x| a[x])?;
                }
                o.rec("DEREG_MR", cj.dev.dereg_mr(ki));
            }
            for (c, b) in ctxs.iter().zip(&bufs) {
                let (Some(c), Some(b)) = (c, b) else { continue };
                if let Some((m, key)) = &b.scrub {
                    check_own_canaries(m, *key)?;
                }
                drain(c.ev.as_ref(), &mut o, &mut w);
            }
            // Deregister in an order that changes every round; the scrub MR
            // of every other context stays for its context's close.
            for (i, (c, b)) in ctxs.iter().zip(&bufs).enumerate() {
                let (Some(c), Some(b)) = (c, b) else { continue };
                let mut keys = vec![b.ka, b.kb];
                if (i + round) % 2 == 0 {
                    keys.push(b.scrub.as_ref().map(|s| s.1));
                }
                let n = keys.len();
                keys.rotate_left(round % n);
                for k in keys.into_iter().flatten() {
                    o.rec("DEREG_MR", c.dev.dereg_mr(k));
                }
            }
            // Close one context (its remaining MRs die with it) and open a
            // fresh one; the buffers outlive the close.
            let victim = round % CHURN_CTXS;
            ctxs[victim] = None;
            drop(bufs);
            ctxs[victim] = open_ctx(&mut o);
            if let Some(h) = ctxs[victim].as_ref().and_then(|c| c.handle) {
                handles.push(h);
            }
        }
        Ok(())
    })();
    // Close the rest back to front.
    while let Some(c) = ctxs.pop() {
        drop(c);
    }
    res?;
    wait_contexts_gone(&handles, None, module_bound())?;
    w.finish(t, &o)
}

// ---- lease cases --------------------------------------------------------------------------

/// Kills and reaps a child that is still running (teardown on any path).
struct Child(libc::pid_t);

impl Child {
    /// Waits up to `timeout`; the exit, or None if it still runs.
    fn wait(&mut self, timeout: Duration) -> Result<Option<Exit>, CaseErr> {
        if self.0 <= 0 {
            return Ok(None);
        }
        let r = sys::wait_timeout(self.0, timeout)?;
        if r.is_some() {
            self.0 = 0;
        }
        Ok(r)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.0 > 0 {
            sys::kill(self.0, libc::SIGKILL);
            let _ = sys::wait_timeout(self.0, Duration::from_secs(10));
        }
    }
}

/// A file on /mnt/xfs (SKIP when that is not XFS), removed on drop.
struct XfsFile(String);

impl XfsFile {
    fn new(name: &str) -> Result<XfsFile, CaseErr> {
        match sys::mount_at("/mnt/xfs") {
            Some(m) if m.fstype == "xfs" => {}
            _ => skip!("/mnt/xfs is not an XFS mount in this guest"),
        }
        let p = format!("/mnt/xfs/pinlease-{name}.dat");
        let _ = std::fs::remove_file(&p);
        Ok(XfsFile(p))
    }
}

impl Drop for XfsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One lease's life under `policy`: LEASE_TAKE on an XFS file, a
/// short-term writable scrub MR of its shared mapping (6.12 allows that
/// pin; FOLL_LONGTERM of shared writable file pages is refused), a DMA
/// WRITE into it, a breaker child with a bounded wait, the events handled
/// (LEASE_BROKEN under `wait`: DEREG_MR and LEASE_RELEASE), release, close.
fn lease_life(t: &mut CaseCtx, policy: u32, how: Breaker, name: &str) -> CaseResult {
    let mut w = FaultWatch::start();
    let mut o = Outcomes::default();
    let file = XfsFile::new(name)?;
    let _bt = if policy == abi::PL_POLICY_TIMEOUT {
        Some(BreakTime::set(1)?)
    } else {
        None
    };
    // Written before the lease: an XFS write(2) breaks layout leases.
    let map = Mapping::new(
        &Backing::File {
            path: file.0.clone(),
            shared: true,
        },
        LEASE_LEN,
        false,
    )?;
    map.touch();
    let Some(c) = open_ctx(&mut o) else {
        return w.finish(t, &o);
    };
    let handles: Vec<u64> = c.handle.into_iter().collect();
    let data =
        std::fs::File::open(&file.0).map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.0)))?;
    let lease = o.rec(
        "LEASE_TAKE",
        c.dev.lease_take(data.as_raw_fd(), policy, 0, 0),
    );
    drop(data);
    let key = o
        .rec(
            "REG_MR_SCRUB",
            c.dev.reg_mr(
                map.addr(),
                LEASE_LEN as u64,
                PL_ACCESS_ALL,
                PINLEASE_PIN_SHORTTERM | PINLEASE_REG_SCRUB,
            ),
        )
        .map(|r| r.key);
    let local = Mapping::anon(4096)?;
    local.fill_with(0, 4096, |_| 0xa5);
    let lkey = o
        .rec("REG_MR", c.dev.reg_mr(local.addr(), 4096, PL_ACCESS_ALL, 0))
        .map(|r| r.key);
    if let (Some(k), Some(l)) = (key, lkey) {
        o.rec("DMA_WRITE", c.dev.write(l, 0, k, 0, 4096));
    }
    // Before the break: afterwards the mapping may lie beyond EOF.
    std::thread::sleep(Duration::from_millis(100));
    if let Some(k) = key {
        check_own_canaries(&map, k)?;
    }
    drop(map);
    let bound = module_bound();
    let t0 = Instant::now();
    let mut child = Child(spawn_breaker(how, &file.0)?);
    let mut released = false;
    if let Some(l) = lease {
        let broken = wait_event(c.ev.as_ref(), &mut o, &mut w, Duration::from_secs(5), |e| {
            e.kind == abi::PL_EVENT_LEASE_BROKEN && e.args[0] == l
        });
        t.diag(format!(
            "{how:?}: LEASE_BROKEN {} after {:?}",
            if broken { "seen" } else { "not seen" },
            t0.elapsed()
        ));
        if policy == abi::PL_POLICY_TIMEOUT {
            // The kernel times the lease out after lease-break-time (1 s).
            let lost = wait_event(c.ev.as_ref(), &mut o, &mut w, Duration::from_secs(5), |e| {
                e.kind == abi::PL_EVENT_LEASE_LOST && e.args[0] == l
            });
            t.diag(format!(
                "LEASE_LOST {}",
                if lost { "seen" } else { "not seen" }
            ));
        }
        // The holder lets go: its MR first, then the lease.
        if let Some(k) = key {
            o.rec("DEREG_MR", c.dev.dereg_mr(k));
        }
        released = o.rec("LEASE_RELEASE", c.dev.lease_release(l)).is_some();
    }
    let mut holder = Some(c);
    if lease.is_some() && !released {
        // LEASE_RELEASE failed: the device fd's close ends the lease.
        holder = None;
    }
    let exit = match child.wait(bound)? {
        Some(e) => Some(e),
        None => {
            // Still blocked after the release: the close must end it.
            holder = None;
            child.wait(bound)?
        }
    };
    let Some(exit) = exit else {
        let st = sys::proc_stack(child.0);
        fail!(
            "{how:?} of the leased file still blocked {:?} after it started (lease released: \
             {released}, device fd closed; bound {bound:?} each): {st}",
            t0.elapsed()
        );
    };
    t.diag(format!("{how:?} returned after {:?}: {exit}", t0.elapsed()));
    if exit != Exit::Code(0) {
        fail!("{how:?} of the leased file: {exit} (not a device operation: nothing may fail it)");
    }
    if let (Some(c), Some(l)) = (&holder, lkey) {
        o.rec("DEREG_MR", c.dev.dereg_mr(l));
        drain(c.ev.as_ref(), &mut o, &mut w);
    }
    drop(holder);
    drop(local);
    wait_contexts_gone(&handles, None, bound)?;
    w.finish(t, &o)
}

fn campaign_lease_revoke(t: &mut CaseCtx) -> CaseResult {
    lease_life(
        t,
        abi::PL_POLICY_REVOKE,
        Breaker::Truncate,
        "campaign-revoke",
    )
}

fn campaign_lease_wait(t: &mut CaseCtx) -> CaseResult {
    lease_life(t, abi::PL_POLICY_WAIT, Breaker::PunchHole, "campaign-wait")
}

fn campaign_lease_timeout(t: &mut CaseCtx) -> CaseResult {
    lease_life(
        t,
        abi::PL_POLICY_TIMEOUT,
        Breaker::PunchHole,
        "campaign-timeout",
    )
}

// ---- campaign_process_death -----------------------------------------------------------------

/// A child opens the device, registers MRs (one a scrub MR), takes a lease
/// on an XFS file when there is one, reports its context and goes on
/// churning MRs; it is SIGKILLed mid-way. Its context must leave debugfs
/// `contexts` within the module's bound.
fn campaign_process_death(t: &mut CaseCtx) -> CaseResult {
    let mut w = FaultWatch::start();
    let mut o = Outcomes::default();
    let file = XfsFile::new("campaign-death").ok();
    let path = file.as_ref().map(|f| f.0.clone());
    let (rd, wr) = sys::pipe()?;
    let (rd_raw, wr_raw) = (rd.as_raw_fd(), wr.as_raw_fd());
    let pid = sys::fork_child(move || {
        // SAFETY: the child's copy of the pipe's read end, unused here.
        unsafe { libc::close(rd_raw) };
        let Ok(dev) = Dev::open_default() else {
            return 1;
        };
        let ctx = dev.query().map(|q| q.ctx).unwrap_or(0);
        let _ = sys::write_all(wr_raw, &ctx.to_le_bytes());
        let m = Mapping::anon(256 * KIB).ok();
        if let Some(m) = &m {
            m.touch();
            let _ = dev.reg_mr(
                m.addr(),
                128 * KIB as u64,
                PL_ACCESS_ALL,
                PINLEASE_REG_SCRUB,
            );
        }
        if let Some(p) = &path {
            if let Ok(f) = std::fs::File::open(p) {
                let _ = dev.lease_take(f.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0);
            }
        }
        loop {
            if let Some(m) = &m {
                if let Ok(r) = dev.reg_mr(
                    m.addr() + 128 * KIB as u64,
                    64 * KIB as u64,
                    PL_ACCESS_ALL,
                    0,
                ) {
                    let _ = dev.fill(r.key, 0, 64 * KIB as u64, 0x42, abi::PL_PATTERN_CONST);
                    let _ = dev.dereg_mr(r.key);
                }
            }
        }
    })?;
    let mut child = Child(pid);
    drop(wr);
    // EOF (EPIPE) here: the child could not open the device.
    let ctx = o
        .rec(
            "CHILD_OPEN",
            sys::read_exact_timeout(rd.as_raw_fd(), 8, module_bound()),
        )
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    // Let it get going, then kill it mid-way.
    std::thread::sleep(Duration::from_millis(300));
    sys::kill(pid, libc::SIGKILL);
    let exit = child.wait(Duration::from_secs(10))?;
    let Some(exit) = exit else {
        fail!(
            "the SIGKILLed child is still there after 10 s: {}",
            sys::proc_stack(pid)
        );
    };
    t.diag(format!("child {pid} (ctx {ctx:#x}): {exit}"));
    let handles: Vec<u64> = [ctx].into_iter().filter(|h| *h != 0).collect();
    wait_contexts_gone(&handles, Some(pid), module_bound())?;
    drop(file);
    w.finish(t, &o)
}

// ---- campaign_stray_scan --------------------------------------------------------------------

/// How long the positive control waits for the scrubber's canaries.
const SCRUB_WAIT: Duration = Duration::from_secs(10);

/// Positive control (the scrubber runs and the scanner recognises its
/// words), then `stray::run` over fresh memory: FAIL on any canary there.
fn campaign_stray_scan(t: &mut CaseCtx) -> CaseResult {
    let mut w = FaultWatch::start();
    let mut o = Outcomes::default();
    if let Some(c) = open_ctx(&mut o) {
        let m = Mapping::anon(16 * KIB)?;
        m.touch();
        let reg = o.rec(
            "REG_MR_SCRUB",
            c.dev
                .reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, PINLEASE_REG_SCRUB),
        );
        if let Some(r) = reg {
            let words = m.len() / 8;
            let t0 = Instant::now();
            let mut s = stray::scan_mapping(&m, 1);
            while s.canaries < words && t0.elapsed() < SCRUB_WAIT {
                std::thread::sleep(Duration::from_millis(20));
                s = stray::scan_mapping(&m, 1);
            }
            let in_play = w.in_play();
            match (s.canaries, in_play) {
                (n, _) if n == words => {
                    let slot = s.hits.first().map_or(u32::MAX, |h| h.slot);
                    if slot != r.key as u32 {
                        fail!(
                            "the scanner decoded slot {slot:#x} from MR {:#x}'s canaries",
                            r.key
                        );
                    }
                    t.diag(format!(
                        "control: the scanner recognises all {words} canaries of scrub MR {:#x} \
                         after {:?}",
                        r.key,
                        t0.elapsed()
                    ));
                }
                (0, None) => skip!(
                    "no canary in scrub MR {:#x} within {SCRUB_WAIT:?}: the daemon's scrubber \
                     is off (guest-driver/vm/run --scrub-period-ms 0?)",
                    r.key
                ),
                (n, None) => fail!(
                    "the scanner recognised {n} of {words} words of scrub MR {:#x} after \
                     {SCRUB_WAIT:?}",
                    r.key
                ),
                (n, Some(why)) => t.diag(format!(
                    "control: {n} of {words} canaries of MR {:#x} (faults in play: {why})",
                    r.key
                )),
            }
            o.rec("DEREG_MR", c.dev.dereg_mr(r.key));
        }
        drain(c.ev.as_ref(), &mut o, &mut w);
    }
    let r = stray::run(30, Duration::from_secs(2)).map_err(CaseErr::Fail)?;
    t.diag(r.summary());
    for l in r.lines() {
        t.diag(l);
    }
    if r.canaries > 0 {
        fail!(
            "{} scrubber canary word(s) in fresh memory: the device wrote pages nobody had \
             pinned (first: {})",
            r.canaries,
            r.lines().get(1).cloned().unwrap_or_default()
        );
    }
    w.finish(t, &o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::SysError;

    #[test]
    fn outcome_line_counts_by_errno() {
        let mut o = Outcomes::default();
        assert_eq!(o.rec("REG_MR", Ok::<u32, SysError>(1)), Some(1));
        o.rec("REG_MR", Ok::<(), SysError>(()));
        o.rec::<()>("REG_MR", Err(SysError::new("x", libc::EIO)));
        o.rec::<()>("DMA_READ", Err(SysError::new("y", libc::ESTALE)));
        o.rec::<()>("DMA_READ", Err(SysError::new("y", libc::ESTALE)));
        o.events.insert("MR_REVOKED", 2);
        assert_eq!(o.failures(), 3);
        assert_eq!(
            o.line(),
            "outcomes: DMA_READ ok=0 ESTALE=2, REG_MR ok=2 EIO=1; events: MR_REVOKED=2"
        );
        assert_eq!(o.first_errors.len(), 3);
        assert_eq!(Outcomes::default().line(), "outcomes: none; events: none");
    }

    /// The only test that touches FAULTS_SEEN (sticky for the process):
    /// the strict half runs first.
    #[test]
    fn failures_fail_the_case_only_without_faults() {
        let mut o = Outcomes::default();
        o.rec::<()>(
            "REG_MR",
            Err(SysError::new("PINLEASE_IOC_REG_MR(addr=0x1000)", libc::EIO)),
        );
        let mut t = CaseCtx::default();
        let mut w = FaultWatch::start();
        match w.finish(&mut t, &o) {
            Err(CaseErr::Fail(m)) => {
                assert!(
                    m.contains("1 operation(s) failed with no fault injected"),
                    "{m}"
                );
                assert!(m.contains("PINLEASE_IOC_REG_MR(addr=0x1000)"), "{m}");
            }
            r => panic!("a failure without faults must fail the case: {r:?}"),
        }
        assert_eq!(t.diags, vec!["outcomes: REG_MR ok=0 EIO=1; events: none"]);
        assert!(FaultWatch::start()
            .finish(&mut t, &Outcomes::default())
            .is_ok());

        let mut t = CaseCtx::default();
        let mut w = FaultWatch::start();
        w.event(&abi::PlEvent {
            kind: abi::PL_EVENT_MR_REVOKED,
            ..Default::default()
        });
        assert!(
            w.finish(&mut t, &o).is_err(),
            "MR_REVOKED is no fault evidence"
        );
        let mut w = FaultWatch::start();
        w.event(&abi::PlEvent {
            kind: abi::PL_EVENT_FAULT_INJECTED,
            args: [0x1_0004, 1, 0, 5],
            ..Default::default()
        });
        assert_eq!(w.finish(&mut t, &o), Ok(()));
        assert!(
            t.diags
                .iter()
                .any(|d| d.starts_with("faults in play: FAULT_INJECTED event")),
            "{:?}",
            t.diags
        );
        // Later cases of the run stay lenient.
        let mut w = FaultWatch::start();
        assert_eq!(w.finish(&mut t, &o), Ok(()));
        assert!(t
            .diags
            .last()
            .unwrap()
            .contains("an earlier campaign case saw faults"));
    }

    #[test]
    fn campaign_cases_are_named_for_the_glob() {
        for c in all() {
            assert!(crate::ktap::glob_match("campaign_*", c.name), "{}", c.name);
        }
        assert_eq!(all().last().map(|c| c.name), Some("campaign_stray_scan"));
    }
}
