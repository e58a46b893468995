//! `pinlease-guest fuzz`: random and edge-valued ioctls at /dev/pinleaseN
//! and its child fds, from several processes and threads, with opens,
//! dups, closes, forks, kills, mprotects, remaps and truncates in between;
//! then the checks of `checks.rs`. docs/guest-fuzz.md describes it.
//!
//! - [`prng`]: the seeded generator (every thread's sequence follows from
//!   the run seed and its place in the run);
//! - [`ioctls`]: the ioctls, taken from the UAPI table; [`values`]: edge
//!   values; [`args`]: building a call (pure); [`exec`]: running it;
//! - [`memory`]: the registered buffers; [`handles`]: fds, keys, leases;
//! - [`worker`]: a worker process and its threads; this file: the driver
//!   that forks the workers, SIGKILLs and replaces them mid-run, and
//!   reaps them;
//! - [`counts`]: counters shared across processes; [`checks`]: the
//!   after-run checks; [`report`]: the marker lines; [`opts`]: the flags.

pub mod args;
pub mod checks;
pub mod counts;
pub mod exec;
pub mod handles;
pub mod ioctls;
pub mod memory;
pub mod opts;
pub mod prng;
pub mod report;
pub mod values;
pub mod worker;

use crate::dev::{Dev, SysError};
use crate::sys::{self, Exit, Kmsg};
use counts::{Action, Counts};
use opts::Opts;
use prng::{derive_seed, Prng};
use report::Report;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error("cannot open the device {path}: {source}")]
    Open { path: String, source: SysError },
    #[error("{0}")]
    Setup(SysError),
}

struct Worker {
    pid: libc::pid_t,
    generation: u64,
}

fn spawn(opts: &Opts, slot: u64, generation: u64, deadline: Instant, c: &Counts) -> Worker {
    let spec = worker::Spec {
        seed: opts.seed,
        slot,
        generation,
        threads: opts.threads,
        deadline,
        dev: opts.dev.clone(),
    };
    // The driver is single-threaded: forking it is safe.
    let pid = sys::fork_child(|| worker::run(&spec, c)).unwrap_or(-1);
    Worker { pid, generation }
}

/// Reaps `w` if it ended; an end other than exit 0 (or the SIGKILL the
/// driver sent, `killed`) is recorded in `unexpected`.
fn reap(w: &mut Worker, slot: u64, wait: Duration, killed: bool, unexpected: &mut Vec<String>) {
    if w.pid <= 0 {
        return;
    }
    match sys::wait_timeout(w.pid, wait) {
        Ok(Some(Exit::Code(0))) => w.pid = 0,
        Ok(Some(Exit::Signal(libc::SIGKILL))) if killed => w.pid = 0,
        Ok(Some(e)) => {
            unexpected.push(format!("worker {slot}.{}: {e}", w.generation));
            w.pid = 0;
        }
        Ok(None) => {}
        Err(e) => {
            unexpected.push(format!("worker {slot}.{}: {e}", w.generation));
            w.pid = 0;
        }
    }
}

/// Runs the fuzzer for `opts.seconds`, then the checks.
pub fn run(opts: &Opts) -> Result<Report, FuzzError> {
    // The device must be there before anything starts.
    drop(Dev::open(&opts.dev).map_err(|source| FuzzError::Open {
        path: opts.dev.clone(),
        source,
    })?);
    ioctls::all();
    let pins_before = checks::pins_held().unwrap_or(0);
    let mut kmsg = Kmsg::open_at_end();
    let counts = Counts::new_shared().map_err(FuzzError::Setup)?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(opts.seconds);
    let mut p = Prng::new(derive_seed(opts.seed, &[u64::MAX]));
    let mut workers: Vec<Worker> = (0..opts.procs as u64)
        .map(|s| spawn(opts, s, 0, deadline, &counts))
        .collect();
    let mut unexpected = Vec::new();
    // Mid-run: now and then SIGKILL a worker and start another in its slot.
    loop {
        let nap = Duration::from_millis(200 + p.below(800));
        if Instant::now() + nap >= deadline {
            break;
        }
        std::thread::sleep(nap);
        for (slot, w) in workers.iter_mut().enumerate() {
            reap(w, slot as u64, Duration::ZERO, false, &mut unexpected);
        }
        if p.chance(1, 2) {
            let slot = p.below(opts.procs as u64) as usize;
            let w = &mut workers[slot];
            if w.pid > 0 {
                sys::kill(w.pid, libc::SIGKILL);
                counts.action(Action::KillWorker);
                reap(w, slot as u64, opts.bound, true, &mut unexpected);
            }
            if w.pid == 0 {
                *w = spawn(opts, slot as u64, w.generation + 1, deadline, &counts);
            }
        }
    }
    for (slot, w) in workers.iter_mut().enumerate() {
        let left = (deadline + opts.bound).saturating_duration_since(Instant::now());
        reap(w, slot as u64, left, false, &mut unexpected);
        if w.pid > 0 {
            sys::kill(w.pid, libc::SIGKILL);
            reap(w, slot as u64, opts.bound, true, &mut unexpected);
        }
        if w.pid > 0 {
            unexpected.push(format!(
                "worker {slot}.{} still there after SIGKILL: {}",
                w.generation,
                task_stacks(w.pid)
            ));
        }
    }
    let elapsed_s = t0.elapsed().as_secs_f64();
    remove_files();
    let snapshot = counts.snapshot();
    let checks = vec![
        checks::pins(pins_before, opts.bound),
        checks::kernel_log(&mut kmsg),
        checks::device(&opts.dev),
        checks::workers(&unexpected),
    ];
    Ok(Report {
        opts: opts.clone(),
        elapsed_s,
        counts: snapshot,
        checks,
    })
}

/// Every thread of `pid` with its state and kernel stack: a SIGKILLed
/// process stays (a zombie leader) while one of its threads sleeps
/// uninterruptibly in the kernel.
fn task_stacks(pid: libc::pid_t) -> String {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return sys::proc_stack(pid);
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .map(|tid| {
            let dir = format!("/proc/{pid}/task/{tid}");
            let state = std::fs::read_to_string(format!("{dir}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")
                        .map(|(_, r)| r.chars().next().unwrap_or('?'))
                })
                .unwrap_or('?');
            let stack = std::fs::read_to_string(format!("{dir}/stack")).unwrap_or_default();
            format!("task {tid} state {state}: {}", stack.replace('\n', " | "))
        })
        .collect::<Vec<_>>()
        .join(" || ")
}

/// Files of SIGKILLed workers (a worker that ends removes its own).
fn remove_files() {
    let dir = memory::file_dir();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(memory::FILE_PREFIX)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
