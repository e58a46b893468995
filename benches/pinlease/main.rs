//! Benchmarks of the pinlease daemon (docs/design.md §8): figures and ratios
//! measured in one run, printed, never asserted. Targets are reported as
//! PASS/MISS and the process always exits 0.
//!
//! `cargo bench --bench pinlease` (about 2.5 minutes on 2 vCPUs);
//! what each row means is in docs/benchmarks.md.
//!
//! Every daemon figure goes through the real `pinlease serve` binary (a
//! child process started by `pinlease_testkit::daemon`) over its
//! vhost-user socket, driven by the test kit's `TestFrontend`. Setup uses
//! the typed `Client`; the timed loops send requests that were written into
//! guest memory once ("prebuilt chains": `submit_chain`, kick, wait for the
//! used element), so what is timed is the virtqueue round trip and the
//! daemon, not the frontend re-encoding a 512 KiB page list. The echo
//! baseline runs on exactly the same loop.
//!
//! One module per section (`round_trips`, `reg_dereg`, `write`, `leases`,
//! `memory`, `fault_plans`), and the shared parts: `measure` (timing), `report` (output),
//! `machine` (/proc, CPUs, scheduling modes), `prebuilt` (request chains).

mod fault_plans;
mod leases;
mod machine;
mod measure;
mod memory;
mod prebuilt;
mod reg_dereg;
mod report;
mod round_trips;
mod write;

use std::time::{Duration, Instant};

use pinlease_abi::PL_PAGE_SIZE;
use pinlease_testkit::daemon::{Daemon, Launch, Stop};
use pinlease_testkit::frontend::client::Client;
use pinlease_testkit::frontend::FrontendConfig;

use crate::machine::{machine, pin, Mode};
use crate::report::Report;
use crate::write::Memcpy;

/// Timing discipline: warm up, then `reps` repetitions of at least `REP`
/// each; the median repetition is reported.
pub(crate) const WARMUP: Duration = Duration::from_millis(200);
pub(crate) const REP: Duration = Duration::from_millis(500);
pub(crate) const REPS: usize = 3;
/// Round trips through the daemon are the noisiest figures (vCPU wake-ups).
pub(crate) const REPS_RT: usize = 5;
pub(crate) const REPS_MICRO: usize = 3;
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const PAGE: u64 = PL_PAGE_SIZE;
pub(crate) const KIB: u64 = 1024;
pub(crate) const MIB: u64 = 1024 * 1024;

/// How the bench starts a daemon: warnings only, to our stderr, and
/// stopped with SIGTERM as in production.
pub(crate) fn launch() -> Launch {
    Launch::new(env!("CARGO_BIN_EXE_pinlease"))
        .log_level("warn")
        .without_admin_socket()
        .stderr_inherited()
        .stop(Stop::Term)
}

/// The daemon under measurement.
pub(crate) fn spawn_daemon() -> Daemon {
    launch().start()
}

/// A client on a fresh connection (a fresh device) with `mem_size` bytes of
/// guest memory.
pub(crate) fn client(daemon: &Daemon, mem_size: u64) -> Client {
    let cfg = FrontendConfig {
        mem_size,
        ..FrontendConfig::default()
    };
    daemon
        .client_with(cfg)
        .expect("connecting to the pinlease daemon")
}

/// `PINLEASE_BENCH_ONLY=2,3` runs only those sections (1-6).
struct Sections(Option<Vec<u32>>);

impl Sections {
    fn from_env() -> Sections {
        Sections(
            std::env::var("PINLEASE_BENCH_ONLY")
                .ok()
                .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect()),
        )
    }

    fn has(&self, n: u32) -> bool {
        self.0.as_ref().is_none_or(|v| v.contains(&n))
    }
}

fn main() {
    // cargo passes `--bench`; there is nothing to configure.
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rep = Report::default();
    let daemon = spawn_daemon();
    eprintln!(
        "pinlease benchmarks: warm-up {WARMUP:?}, median of {REPS} (micro: {REPS_MICRO}) x {REP:?}"
    );

    let only = Sections::from_env();
    let mut memcpy = Memcpy::new();
    let plan_daemons = only
        .has(6)
        .then(|| fault_plans::fault_plan_daemons(dir.path()));
    for one_cpu in [false, true] {
        let mode = Mode {
            one_cpu,
            full: !one_cpu,
        };
        pin(daemon.pid(), one_cpu);
        if only.has(1) {
            round_trips::bench_round_trips(&mut rep, &daemon, dir.path(), mode);
        }
        if only.has(2) || only.has(3) {
            // A fresh connection (fresh device) with 512 MiB of guest
            // memory: a 65,536-page MR needs 256 MiB of distinct pages.
            let mut c = client(&daemon, 512 * MIB);
            let ctx = c.create_context(1, "bench").expect("CREATE_CONTEXT");
            if only.has(2) {
                reg_dereg::bench_reg_dereg(&mut rep, &mut c, daemon.pid(), ctx, mode);
            }
            if only.has(3) {
                write::bench_write(&mut rep, &mut c, daemon.pid(), ctx, mode, &mut memcpy);
            }
        }
        if let Some(d) = &plan_daemons {
            fault_plans::bench_fault_plans(&mut rep, d, mode);
        }
    }
    pin(daemon.pid(), false);
    if plan_daemons.is_some() {
        fault_plans::bench_engine_hits(&mut rep);
    }
    drop(plan_daemons);
    drop(daemon);
    if only.has(4) {
        leases::bench_leases(&mut rep);
    }
    if only.has(5) {
        memory::bench_memory(&mut rep);
    }

    println!(
        "\npinlease benchmarks ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    for l in machine() {
        println!("  {l}");
    }
    rep.print();
    println!("\nTargets are goals, not assertions: this run always exits 0.");
}
