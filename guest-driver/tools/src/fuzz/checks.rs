//! What must hold after a run, once every worker is gone (so every fd the
//! fuzzer opened is closed): the pins balance as before the run, the
//! kernel logged no Oops/WARN/BUG/hung task, the device still answers a
//! fresh open + REG_MR/DMA/DEREG_MR round trip, and no worker died of
//! anything but the driver's SIGKILL.

use crate::dev::Dev;
use crate::sys::{self, Kmsg, Mapping};
use pinlease_abi::PL_ACCESS_ALL;
use std::time::{Duration, Instant};

/// The hung-task detector's report ("INFO: task X blocked for more than N
/// seconds."), as init.sh's hung-task invariant and vm/invariants.py
/// match it.
pub const HUNG_TASK: &str = "blocked for more than";

/// One check's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, ok: bool, detail: String) -> Check {
        Check { name, ok, detail }
    }
}

/// Pins held (acquired - released in /proc/vmstat).
pub fn pins_held() -> Result<i64, String> {
    sys::pin_counters()
        .map(|(a, r)| a as i64 - r as i64)
        .map_err(|e| e.to_string())
}

/// Pins back at `before` within `settle` (`Opts::bound`).
pub fn pins(before: i64, settle: Duration) -> Check {
    let t0 = Instant::now();
    loop {
        match pins_held() {
            Err(e) => return Check::new("pins", false, e),
            Ok(now) if now == before => {
                return Check::new("pins", true, format!("{now} held, as before the run"))
            }
            Ok(now) if t0.elapsed() >= settle => {
                return Check::new(
                    "pins",
                    false,
                    format!(
                        "{now} pins held {settle:?} after the last fuzz fd closed, {before} \
                         before the run: {} leaked",
                        now - before
                    ),
                )
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The kernel-log lines of the run that mean trouble.
pub fn bad_log_lines(lines: &[String]) -> Vec<String> {
    let mut bad = sys::kmsg_bad_lines(lines);
    bad.extend(lines.iter().filter(|l| l.contains(HUNG_TASK)).cloned());
    bad
}

pub fn kernel_log(kmsg: &mut Kmsg) -> Check {
    if !kmsg.available() {
        return Check::new("kernel-log", false, "/dev/kmsg could not be opened".into());
    }
    let bad = bad_log_lines(&kmsg.read_new());
    match bad.first() {
        None => Check::new("kernel-log", true, "no Oops/WARN/BUG/hung task".into()),
        Some(first) => Check::new(
            "kernel-log",
            false,
            format!("{} bad line(s), first: {first}", bad.len()),
        ),
    }
}

/// A fresh context: two MRs over one buffer, a WRITE between them, the
/// bytes checked, both deregistered.
pub fn device(path: &str) -> Check {
    let r = (|| -> Result<String, String> {
        let e = |e: crate::dev::SysError| e.to_string();
        let d = Dev::open(path).map_err(e)?;
        let q = d.query().map_err(e)?;
        let m = Mapping::anon(8192).map_err(e)?;
        m.fill_with(0, 4096, |i| (i * 7 + 3) as u8);
        m.fill_with(4096, 4096, |_| 0);
        let a = d.reg_mr(m.addr(), 4096, PL_ACCESS_ALL, 0).map_err(e)?;
        let b = d
            .reg_mr(m.addr() + 4096, 4096, PL_ACCESS_ALL, 0)
            .map_err(e)?;
        d.write(a.key, 0, b.key, 0, 4096).map_err(e)?;
        let bad = (0..4096).find(|&i| m.get_u8(4096 + i) != (i * 7 + 3) as u8);
        d.dereg_mr(a.key).map_err(e)?;
        d.dereg_mr(b.key).map_err(e)?;
        match bad {
            Some(i) => Err(format!("WRITE succeeded but byte {i} differs")),
            None => Ok(format!(
                "ctx {:#x}: REG_MR x2, WRITE 4096 bytes, DEREG_MR x2",
                q.ctx
            )),
        }
    })();
    match r {
        Ok(d) => Check::new("device", true, d),
        Err(d) => Check::new("device", false, d),
    }
}

/// Workers that ended other than by exit 0 or the driver's SIGKILL.
pub fn workers(unexpected: &[String]) -> Check {
    match unexpected.first() {
        None => Check::new(
            "workers",
            true,
            "every worker exited 0 or by our SIGKILL".into(),
        ),
        Some(f) => Check::new(
            "workers",
            false,
            format!(
                "{} worker(s) ended unexpectedly, first: {f}",
                unexpected.len()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hung_tasks_and_warnings_are_bad_lines() {
        let lines: Vec<String> = [
            "pinlease: bound",
            "INFO: task fuzz:12 blocked for more than 10 seconds.",
            "WARNING: CPU: 0 PID: 1 at mm/gup.c:1 x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(bad_log_lines(&lines).len(), 2);
        assert!(workers(&[]).ok);
        assert!(!workers(&["slot 1: signal 11".into()]).ok);
    }
}
