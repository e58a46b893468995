//! Timing discipline: repetitions, medians, and on-CPU time per operation.

use std::time::{Duration, Instant};

use crate::report::fmt_us;
use crate::{REP, WARMUP};

/// Units per second of each repetition, and their median.
pub(crate) struct Rate {
    pub(crate) median: f64,
    pub(crate) all: Vec<f64>,
}

impl Rate {
    pub(crate) fn spread(&self) -> String {
        let lo = self.all.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = self.all.iter().cloned().fold(0.0, f64::max);
        format!("{:.1}%", (hi - lo) / self.median * 100.0)
    }
}

/// Calls `f` (which does some work and returns how many units it did)
/// until `d` has passed; returns units per second.
pub(crate) fn run_for(f: &mut dyn FnMut() -> u64, d: Duration) -> f64 {
    let t0 = Instant::now();
    let mut units = 0u64;
    loop {
        units += f();
        let e = t0.elapsed();
        if e >= d {
            return units as f64 / e.as_secs_f64();
        }
    }
}

impl From<Vec<f64>> for Rate {
    fn from(all: Vec<f64>) -> Rate {
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Rate {
            median: sorted[sorted.len() / 2],
            all,
        }
    }
}

pub(crate) fn measure(reps: usize, mut f: impl FnMut() -> u64) -> Rate {
    run_for(&mut f, WARMUP);
    Rate::from((0..reps).map(|_| run_for(&mut f, REP)).collect::<Vec<_>>())
}

/// Like `measure` for several contenders that take turns: one repetition
/// of each per round, so a drift of the machine hits them alike.
pub(crate) fn measure_interleaved(reps: usize, fs: &mut [&mut dyn FnMut() -> u64]) -> Vec<Rate> {
    for f in fs.iter_mut() {
        run_for(*f, WARMUP);
    }
    let mut all = vec![Vec::new(); fs.len()];
    for _ in 0..reps {
        for (i, f) in fs.iter_mut().enumerate() {
            all[i].push(run_for(*f, REP));
        }
    }
    all.into_iter().map(Rate::from).collect()
}

/// `op` as a contender of [`measure_interleaved`] doing one operation a call.
pub(crate) fn one_each(mut op: impl FnMut()) -> impl FnMut() -> u64 {
    move || {
        op();
        1
    }
}

/// On-CPU time of every thread of `pid` so far, from the scheduler
/// (/proc/<pid>/task/*/schedstat, first field, in ns).
pub(crate) fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            s.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Wall time and on-CPU time of the daemon and of this process (the
/// frontend), per operation, over `n` runs of `f`.
pub(crate) struct PerOp {
    pub(crate) wall: f64,
    pub(crate) daemon: f64,
    pub(crate) bench: f64,
}

impl PerOp {
    pub(crate) fn measure(daemon_pid: u32, n: u32, mut f: impl FnMut()) -> PerOp {
        let me = std::process::id();
        let (d0, b0, t0) = (cpu_ns(daemon_pid), cpu_ns(me), Instant::now());
        for _ in 0..n {
            f();
        }
        let wall = t0.elapsed().as_secs_f64();
        let (d1, b1) = (cpu_ns(daemon_pid), cpu_ns(me));
        let n = f64::from(n);
        PerOp {
            wall: wall / n,
            daemon: (d1 - d0) as f64 / 1e9 / n,
            bench: (b1 - b0) as f64 / 1e9 / n,
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "wall {}, daemon on-CPU {}, frontend on-CPU {}",
            fmt_us(self.wall),
            fmt_us(self.daemon),
            fmt_us(self.bench)
        )
    }
}
