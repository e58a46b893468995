//! Benchmarks of the pinlease daemon (DESIGN.md §8): figures and ratios
//! measured in one run, printed, never asserted. Targets are reported as
//! PASS/MISS and the process always exits 0.
//!
//! `cargo bench --bench pinlease` (about 2.5 minutes on 2 vCPUs);
//! what each row means is in docs/benchmarks.md.
//!
//! Every daemon figure goes through the real `pinlease serve` binary (a
//! child process) over its vhost-user socket, driven by
//! [`TestFrontend`]. Setup uses the typed [`Client`]; the timed loops send
//! requests that were written into guest memory once ("prebuilt chains":
//! `submit_chain`, kick, wait for the used element), so what is timed is the
//! virtqueue round trip and the daemon, not the frontend re-encoding a
//! 512 KiB page list. The echo baseline runs on exactly the same loop.

use std::collections::HashMap;
use std::hint::black_box;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinlease::abi::*;
use pinlease::frontend::client::{encode_request, Client, RegMrArgs};
use pinlease::frontend::{spawn_echo_daemon, Desc, FrontendConfig, TestFrontend, REQUEST_QUEUE};
use pinlease::guest_ram::MmapRam;
use pinlease::model::context::Context;
use pinlease::model::lease::{Lease, LeaseState, LeaseTable, Policy};
use pinlease::model::{Device, DmaDir, Limits, RegMr};
use pinlease::server::{serve, ServeConfig, ServerState};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// Timing discipline: warm up, then `reps` repetitions of at least `REP`
/// each; the median repetition is reported.
const WARMUP: Duration = Duration::from_millis(200);
const REP: Duration = Duration::from_millis(500);
const REPS: usize = 3;
/// Round trips through the daemon are the noisiest figures (vCPU wake-ups).
const REPS_RT: usize = 5;
const REPS_MICRO: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(10);
const PAGE: u64 = PL_PAGE_SIZE;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

// ---- measurement ------------------------------------------------------------------

/// Units per second of each repetition, and their median.
struct Rate {
    median: f64,
    all: Vec<f64>,
}

impl Rate {
    fn spread(&self) -> String {
        let lo = self.all.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = self.all.iter().cloned().fold(0.0, f64::max);
        format!("{:.1}%", (hi - lo) / self.median * 100.0)
    }
}

/// Calls `f` (which does some work and returns how many units it did)
/// until `d` has passed; returns units per second.
fn run_for(f: &mut dyn FnMut() -> u64, d: Duration) -> f64 {
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

fn measure(reps: usize, mut f: impl FnMut() -> u64) -> Rate {
    run_for(&mut f, WARMUP);
    Rate::from((0..reps).map(|_| run_for(&mut f, REP)).collect::<Vec<_>>())
}

/// Like `measure` for several contenders that take turns: one repetition
/// of each per round, so a drift of the machine hits them alike.
fn measure_interleaved(reps: usize, fs: &mut [&mut dyn FnMut() -> u64]) -> Vec<Rate> {
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

// ---- output -------------------------------------------------------------------------

struct Row {
    section: &'static str,
    what: String,
    value: String,
    ratio: String,
    note: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    targets: Vec<(String, String, bool)>,
}

impl Report {
    fn row(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        value: impl Into<String>,
        ratio: impl Into<String>,
        note: impl Into<String>,
    ) {
        let r = Row {
            section,
            what: what.into(),
            value: value.into(),
            ratio: ratio.into(),
            note: note.into(),
        };
        eprintln!(
            "  [{}] {}: {} {} {}",
            r.section, r.what, r.value, r.ratio, r.note
        );
        self.rows.push(r);
    }

    fn target(&mut self, what: impl Into<String>, measured: impl Into<String>, met: bool) {
        self.targets.push((what.into(), measured.into(), met));
    }

    fn print(&self) {
        let mut out = String::new();
        out.push_str("\n| # | measurement | value | ratio | notes |\n");
        out.push_str("|---|---|---:|---:|---|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.section, r.what, r.value, r.ratio, r.note
            ));
        }
        out.push_str("\n| target | measured | result |\n|---|---|---|\n");
        for (what, measured, met) in &self.targets {
            out.push_str(&format!(
                "| {what} | {measured} | {} |\n",
                if *met { "PASS" } else { "MISS" }
            ));
        }
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.1} /s")
    }
}

fn fmt_gbs(bytes_per_s: f64) -> String {
    format!("{:.2} GB/s", bytes_per_s / 1e9)
}

fn fmt_us(seconds: f64) -> String {
    format!("{:.2} us", seconds * 1e6)
}

// ---- processes and /proc ------------------------------------------------------------

/// A `pinlease serve` child process; stopped with SIGTERM on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn spawn(dir: &Path, name: &str) -> Daemon {
        let socket = dir.join(name);
        let child = Command::new(env!("CARGO_BIN_EXE_pinlease"))
            .args(["--log-level", "warn", "serve", "--socket-path"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning the pinlease daemon");
        Daemon { child, socket }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn client(&self, mem_size: u64) -> Client {
        let cfg = FrontendConfig {
            mem_size,
            ..FrontendConfig::default()
        };
        Client::connect(&self.socket, cfg, TIMEOUT).expect("connecting to the pinlease daemon")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of our own child's pid, which we have not
        // reaped yet (so the pid cannot have been reused).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("pinlease daemon {} ignored SIGTERM; killing it", self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kB fields of /proc/<pid>/smaps_rollup, in bytes.
fn smaps(pid: &str) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb: u64 = v.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((k.to_string(), kb * 1024))
        })
        .collect()
}

/// CPUs online (not this thread's affinity mask, which `pin` narrows).
fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn machine() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let ncpu = online_cpus();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or("?".into(), |kb| format!("{} GiB", kb / (1024 * 1024)));
    vec![
        format!("cpus (nproc): {ncpu}"),
        format!("cpu model: {model}"),
        format!("kernel: {kernel}"),
        format!("memory: {mem}"),
    ]
}

// ---- prebuilt request chains --------------------------------------------------------

/// A request written into guest memory once, and its response buffer.
struct Prebuilt {
    req: u64,
    req_len: u32,
    resp: u64,
    resp_cap: u32,
}

impl Prebuilt {
    fn new(fe: &mut TestFrontend, req: &[u8], resp_cap: u32) -> Prebuilt {
        let gpa = fe
            .alloc(req.len() as u64, PAGE)
            .expect("guest memory for a request");
        fe.write_mem(gpa, req).expect("writing a request");
        let resp = fe
            .alloc(u64::from(resp_cap), 64)
            .expect("guest memory for a response");
        Prebuilt {
            req: gpa,
            req_len: req.len() as u32,
            resp,
            resp_cap,
        }
    }

    fn submit(&self, fe: &mut TestFrontend) -> u16 {
        fe.submit_chain(
            REQUEST_QUEUE,
            &[
                Desc::readable(self.req, self.req_len),
                Desc::writable(self.resp, self.resp_cap),
            ],
        )
        .expect("submitting a chain")
    }

    /// One request in flight: submit, kick, wait. Returns the used length.
    fn round_trip(&self, fe: &mut TestFrontend) -> u32 {
        let head = self.submit(fe);
        fe.kick_if_needed(REQUEST_QUEUE).expect("kick");
        let used = fe
            .wait_used(REQUEST_QUEUE, TIMEOUT)
            .expect("waiting for the used ring")
            .expect("the device did not answer in time");
        assert_eq!(used.id, head, "only one chain was in flight");
        used.len
    }

    fn status(&self, fe: &TestFrontend) -> u32 {
        fe.memory()
            .read_obj::<u32>(GuestAddress(self.resp))
            .expect("reading a response")
    }

    /// A round trip that must succeed with a response of `len` bytes.
    fn ok(&self, fe: &mut TestFrontend, len: u32) {
        let n = self.round_trip(fe);
        let s = self.status(fe);
        assert!(
            n == len && s == 0,
            "request failed: used length {n} (expected {len}), status {s}"
        );
    }
}

fn nop_request() -> Vec<u8> {
    encode_request(Opcode::Nop as u16, 0, 1, &[])
}

/// `depth` copies of a request kept in flight: each completion is answered
/// by resubmitting the same chain. Returns a closure doing one completion.
struct Pipeline {
    chains: Vec<Prebuilt>,
    by_head: HashMap<u16, usize>,
}

impl Pipeline {
    fn new(fe: &mut TestFrontend, req: &[u8], resp_cap: u32, depth: usize) -> Pipeline {
        let chains: Vec<Prebuilt> = (0..depth)
            .map(|_| Prebuilt::new(fe, req, resp_cap))
            .collect();
        let mut by_head = HashMap::new();
        for (i, c) in chains.iter().enumerate() {
            by_head.insert(c.submit(fe), i);
        }
        fe.kick(REQUEST_QUEUE).expect("kick");
        Pipeline { chains, by_head }
    }

    fn complete_one(&mut self, fe: &mut TestFrontend, len: u32) {
        let used = fe
            .wait_used(REQUEST_QUEUE, TIMEOUT)
            .expect("waiting for the used ring")
            .expect("the device did not answer in time");
        let i = self.by_head.remove(&used.id).expect("a head we submitted");
        let c = &self.chains[i];
        assert!(
            used.len == len && c.status(fe) == 0,
            "pipelined request failed"
        );
        let head = c.submit(fe);
        self.by_head.insert(head, i);
        fe.kick_if_needed(REQUEST_QUEUE).expect("kick");
    }

    fn drain(mut self, fe: &mut TestFrontend) {
        while !self.by_head.is_empty() {
            let used = fe
                .wait_used(REQUEST_QUEUE, TIMEOUT)
                .expect("waiting for the used ring")
                .expect("the device did not answer in time");
            self.by_head.remove(&used.id);
        }
    }
}

// ---- CPU accounting -----------------------------------------------------------------

/// On-CPU time of every thread of `pid` so far, from the scheduler
/// (/proc/<pid>/task/*/schedstat, first field, in ns).
fn cpu_ns(pid: u32) -> u64 {
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
struct PerOp {
    wall: f64,
    daemon: f64,
    bench: f64,
}

impl PerOp {
    fn measure(daemon_pid: u32, n: u32, mut f: impl FnMut()) -> PerOp {
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

    fn describe(&self) -> String {
        format!(
            "wall {}, daemon on-CPU {}, frontend on-CPU {}",
            fmt_us(self.wall),
            fmt_us(self.daemon),
            fmt_us(self.bench)
        )
    }
}

// ---- scheduling modes ---------------------------------------------------------------

/// Sections 1-3 run twice: with the scheduler's own placement, and with
/// the frontend and every daemon thread on one CPU. On this kind of VM a
/// wake-up of another, idle vCPU costs tens of microseconds, and whether
/// the two ends of a round trip share a CPU changes from second to second;
/// on one CPU a round trip is two context switches and the figures show
/// what the software costs.
#[derive(Clone, Copy)]
struct Mode {
    one_cpu: bool,
    /// Everything (the default-scheduling pass), or only the rows that feed
    /// the targets and their breakdowns (the one-CPU pass).
    full: bool,
}

impl Mode {
    fn name(&self, what: impl std::fmt::Display) -> String {
        if self.one_cpu {
            format!("[1 CPU] {what}")
        } else {
            what.to_string()
        }
    }

    fn target(&self, what: &str) -> String {
        if self.one_cpu {
            format!("{what} [1 CPU]")
        } else {
            format!("{what} [default scheduling]")
        }
    }
}

fn set_affinity(tid: libc::pid_t, cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data, zeroed then filled with CPU_SET;
    // sched_setaffinity reads it and keeps no pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "sched_setaffinity({tid}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Puts this thread and every thread of `daemon_pid` on CPU 0 (threads the
/// daemon starts later inherit it), or back on all CPUs.
fn pin(daemon_pid: u32, one_cpu: bool) {
    let all: Vec<usize> = (0..online_cpus()).collect();
    let cpus: &[usize] = if one_cpu { &[0] } else { &all };
    set_affinity(0, cpus);
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{daemon_pid}/task")) {
        for t in tasks.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
                set_affinity(tid, cpus);
            }
        }
    }
}

// ---- 1. round trips -----------------------------------------------------------------

fn bench_round_trips(rep: &mut Report, daemon: &Daemon, dir: &Path, mode: Mode) {
    eprintln!("1. NOP round trips{}", mode.name(""));
    // The real daemon, a child process.
    let mut c = daemon.client(64 * MIB);
    let nop = Prebuilt::new(c.frontend_mut(), &nop_request(), 16);
    let nop_cpu = PerOp::measure(daemon.pid(), 5000, || nop.ok(c.frontend_mut(), 16));

    // The echo daemon (threads of this process).
    let echo_sock = dir.join(if mode.one_cpu {
        "echo1.sock"
    } else {
        "echo.sock"
    });
    let echo = spawn_echo_daemon(&echo_sock).expect("echo daemon");
    let mut efe = TestFrontend::connect(&echo_sock, FrontendConfig::default(), TIMEOUT)
        .expect("connecting to the echo daemon");
    let enop = Prebuilt::new(&mut efe, &nop_request(), 16);

    // pinlease::server::serve in a thread of this process, like the echo
    // daemon: shows whether the process boundary matters.
    let in_sock = dir.join(if mode.one_cpu {
        "inproc1.sock"
    } else {
        "inproc.sock"
    });
    let state = ServerState::new().expect("server state");
    let cfg = ServeConfig {
        socket_path: in_sock.clone(),
        admin_socket: None,
        limits: Limits::default(),
        max_connections: Some(1),
        scrub_period: None,
    };
    let server = std::thread::spawn(move || serve(&cfg, state));
    let mut ifo = TestFrontend::connect(&in_sock, FrontendConfig::default(), TIMEOUT)
        .expect("connecting to the in-process daemon");
    let inop = Prebuilt::new(&mut ifo, &nop_request(), 16);

    // The three contenders take turns, one repetition each per round.
    let fe = c.frontend_mut();
    let r = measure_interleaved(
        REPS_RT,
        &mut [
            &mut || {
                nop.ok(fe, 16);
                1
            },
            &mut || {
                assert_eq!(enop.round_trip(&mut efe), 16);
                1
            },
            &mut || {
                inop.ok(&mut ifo, 16);
                1
            },
        ],
    );
    let (pl, echo_raw, in_raw) = (&r[0], &r[1], &r[2]);
    let s = "1";
    rep.row(
        s,
        mode.name("NOP, pinlease daemon (child process), 1 in flight"),
        fmt_rate(pl.median),
        format!("{:.2} x echo", pl.median / echo_raw.median),
        format!(
            "{} per round trip; spread {}",
            fmt_us(1.0 / pl.median),
            pl.spread()
        ),
    );
    rep.row(
        s,
        mode.name("echo daemon (threads of the bench), same loop, 1 in flight"),
        fmt_rate(echo_raw.median),
        "1.00",
        format!(
            "{} per round trip; spread {}",
            fmt_us(1.0 / echo_raw.median),
            echo_raw.spread()
        ),
    );
    rep.row(
        s,
        mode.name("NOP, pinlease `serve` in a thread of the bench, 1 in flight"),
        fmt_rate(in_raw.median),
        format!("{:.2} x echo", in_raw.median / echo_raw.median),
        format!("spread {}", in_raw.spread()),
    );
    rep.row(
        s,
        mode.name("  NOP, where the time goes (5000 round trips, child daemon)"),
        fmt_us(nop_cpu.wall),
        "",
        format!(
            "{}; neither process on a CPU for {}",
            nop_cpu.describe(),
            fmt_us(nop_cpu.wall - nop_cpu.daemon - nop_cpu.bench)
        ),
    );
    if mode.full {
        let r = measure_interleaved(
            REPS_RT,
            &mut [
                &mut || {
                    assert_eq!(fe.request(&nop_request(), 16).expect("NOP").len(), 16);
                    1
                },
                &mut || {
                    assert_eq!(efe.request(&nop_request(), 16).expect("echo").len(), 16);
                    1
                },
            ],
        );
        let (pl_req, echo_req) = (&r[0], &r[1]);
        let mut pipe = Pipeline::new(fe, &nop_request(), 16, 4);
        let mut epipe = Pipeline::new(&mut efe, &nop_request(), 16, 4);
        let r = measure_interleaved(
            REPS_RT,
            &mut [
                &mut || {
                    pipe.complete_one(fe, 16);
                    1
                },
                &mut || {
                    epipe.complete_one(&mut efe, 16);
                    1
                },
            ],
        );
        let (pl_pipe, echo_pipe) = (&r[0], &r[1]);
        pipe.drain(fe);
        epipe.drain(&mut efe);
        let pl_client = measure(REPS, || {
            c.nop().expect("NOP");
            1
        });
        rep.row(
            s,
            mode.name("NOP via TestFrontend::request (pinlease / echo)"),
            format!(
                "{} / {}",
                fmt_rate(pl_req.median),
                fmt_rate(echo_req.median)
            ),
            format!("{:.2} x echo", pl_req.median / echo_req.median),
            "request() re-writes and zeroes the buffers and allocates the answer",
        );
        rep.row(
            s,
            mode.name("NOP via Client::nop (typed client, tag checked)"),
            fmt_rate(pl_client.median),
            format!("{:.2} x raw NOP", pl_client.median / pl.median),
            format!("spread {}", pl_client.spread()),
        );
        rep.row(
            s,
            mode.name("NOP, 4 in flight (pinlease / echo)"),
            format!(
                "{} / {}",
                fmt_rate(pl_pipe.median),
                fmt_rate(echo_pipe.median)
            ),
            format!("{:.2} x echo", pl_pipe.median / echo_pipe.median),
            "throughput, not latency",
        );
    }
    drop(c);
    drop(efe);
    drop(echo);
    drop(ifo);
    let _ = server.join();
}

// ---- 2. REG_MR + DEREG_MR -----------------------------------------------------------

fn bench_reg_dereg(rep: &mut Report, c: &mut Client, daemon_pid: u32, ctx: u64, mode: Mode) {
    eprintln!("2. REG_MR + DEREG_MR pairs{}", mode.name(""));
    let nop = Prebuilt::new(c.frontend_mut(), &nop_request(), 16);
    let nop_cpu = PerOp::measure(daemon_pid, 3000, || nop.ok(c.frontend_mut(), 16));
    for npages in [1usize, 256, 65_536] {
        let pages = c.alloc_pages(npages).expect("guest pages");
        let body = RegMrArgs::pages(PL_ACCESS_ALL, &pages).body();
        let fe = c.frontend_mut();
        let reg = Prebuilt::new(fe, &encode_request(Opcode::RegMr as u16, ctx, 1, &body), 32);
        let dereg = Prebuilt::new(
            fe,
            &encode_request(
                Opcode::DeregMr as u16,
                ctx,
                2,
                PlHandleReq { handle: 0 }.as_bytes(),
            ),
            16,
        );
        let key_at = GuestAddress(reg.resp + 16);
        // Pairs and NOPs take turns, so the ratio compares like with like.
        let rates = {
            let fe = &mut *fe;
            let cell = std::cell::RefCell::new(fe);
            measure_interleaved(
                REPS_RT,
                &mut [
                    &mut || {
                        nop.ok(&mut cell.borrow_mut(), 16);
                        1
                    },
                    &mut || {
                        let mut fe = cell.borrow_mut();
                        reg.ok(&mut fe, 32);
                        let key: u64 = fe.memory().read_obj(key_at).expect("key");
                        fe.write_mem(dereg.req + 24, &key.to_le_bytes())
                            .expect("key into DEREG_MR");
                        dereg.ok(&mut fe, 16);
                        1
                    },
                ],
            )
        };
        let (n, r) = (&rates[0], &rates[1]);
        // The two halves apart: REG_MR alone (the MRs pile up), then
        // DEREG_MR of all of them, with the daemon's CPU time.
        let mut keys = Vec::new();
        let n_reg = if npages > 1000 { 100 } else { 2000 };
        let reg_op = PerOp::measure(daemon_pid, n_reg, || {
            reg.ok(fe, 32);
            keys.push(fe.memory().read_obj::<u64>(key_at).expect("key"));
        });
        let mut it = keys.iter();
        let dereg_op = PerOp::measure(daemon_pid, n_reg, || {
            let k = it.next().expect("a key per DEREG_MR");
            fe.write_mem(dereg.req + 24, &k.to_le_bytes())
                .expect("key into DEREG_MR");
            dereg.ok(fe, 16);
        });
        // A pair is two requests: the target compares the per-request rate,
        // pairs/s / (NOP/s / 2); pairs/s / NOP/s is printed beside it.
        let raw = r.median / n.median;
        let ratio = 2.0 * raw;
        let beyond = |op: &PerOp| {
            let extra = op.daemon - nop_cpu.daemon;
            if npages > 1 {
                format!(
                    "; daemon on-CPU beyond a NOP's: {} = {:.1} ns/page",
                    fmt_us(extra),
                    extra * 1e9 / npages as f64
                )
            } else {
                format!("; daemon on-CPU beyond a NOP's: {}", fmt_us(extra))
            }
        };
        rep.row(
            "2",
            mode.name(format!("REG_MR+DEREG_MR pair, {npages} page(s)")),
            format!("{} pairs", fmt_rate(r.median)),
            format!(
                "{ratio:.3} x NOP per request (pairs/s / (NOP/s / 2)); pairs/s / NOP/s {raw:.3}"
            ),
            format!(
                "pair {}; NOP taking turns with it {} ({}); spread {}",
                fmt_us(1.0 / r.median),
                fmt_rate(n.median),
                fmt_us(1.0 / n.median),
                r.spread()
            ),
        );
        rep.row(
            "2",
            mode.name(format!("  REG_MR alone, {npages} page(s) ({n_reg} runs)")),
            fmt_us(reg_op.wall),
            "",
            format!("{}{}", reg_op.describe(), beyond(&reg_op)),
        );
        rep.row(
            "2",
            mode.name(format!("  DEREG_MR alone, {npages} page(s) ({n_reg} runs)")),
            fmt_us(dereg_op.wall),
            "",
            format!("{}{}", dereg_op.describe(), beyond(&dereg_op)),
        );
        if npages == 1 {
            rep.target(
                mode.target("REG_MR+DEREG_MR (1 page) >= 0.8 x NOP, judged per request: pairs/s / (NOP/s / 2)"),
                format!("{ratio:.3} x (pairs/s / NOP/s = {raw:.3}, not the judged ratio)"),
                ratio >= 0.8,
            );
        }
    }
    if mode.full {
        // The model alone (Device::reg_mr + dereg_mr in this process, no
        // transport), for the per-page cost without any round trip.
        let model = Device::new(Limits::default());
        model.set_memory(Box::new(MmapRam::new(c.frontend().memory().clone())));
        let mctx = model.create_context(1, "bench").expect("model context");
        for npages in [1u64, 256, 65_536] {
            let pages: Vec<u64> = (0..npages).map(|i| (16 + i) * PAGE).collect();
            let r = measure(REPS, || {
                let key = model
                    .reg_mr(
                        mctx,
                        RegMr {
                            access: PL_ACCESS_ALL,
                            flags: 0,
                            first_page_offset: 0,
                            length: npages * PAGE,
                            file: None,
                            pages: pages.clone(),
                        },
                    )
                    .expect("model REG_MR")
                    .key;
                model.dereg_mr(mctx, key).expect("model DEREG_MR");
                1
            });
            rep.row(
                "2",
                format!("  model only: Device::reg_mr+dereg_mr, {npages} page(s), no transport"),
                format!("{} pairs", fmt_rate(r.median)),
                "",
                format!(
                    "{} per pair = {:.1} ns/page; spread {}",
                    fmt_us(1.0 / r.median),
                    1e9 / r.median / npages as f64,
                    r.spread()
                ),
            );
        }
    }
}

// ---- 3. WRITE bandwidth -------------------------------------------------------------

/// A page-aligned heap buffer (a plain `Vec` of 1 MiB comes from mmap at
/// 16 bytes past a page boundary, which slows memcpy down).
struct Aligned {
    buf: Vec<u8>,
    off: usize,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Aligned {
        let buf = vec![fill; len + PAGE as usize];
        let off = buf.as_ptr().align_offset(PAGE as usize);
        Aligned { buf, off }
    }

    fn ptr(&mut self) -> *mut u8 {
        self.buf[self.off..].as_mut_ptr()
    }
}

/// memcpy rates of the default pass, bytes/s, by length: the faster of
/// heap and memfd memcpy.
type Memcpy = HashMap<u64, f64>;

fn bench_write(
    rep: &mut Report,
    c: &mut Client,
    daemon_pid: u32,
    ctx: u64,
    mode: Mode,
    memcpy: &mut Memcpy,
) {
    eprintln!("3. WRITE bandwidth and memcpy{}", mode.name(""));
    let mr_len = MIB;
    let npages = (mr_len / PAGE) as usize;
    let src_pages = c.alloc_pages(npages).expect("guest pages");
    let dst_pages = c.alloc_pages(npages).expect("guest pages");
    let src = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_READ, &src_pages))
        .expect("source MR")
        .key;
    let dst = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_WRITE, &dst_pages))
        .expect("destination MR")
        .key;
    let fe = c.frontend_mut();
    // Touch both MRs so no page fault is timed.
    fe.write_mem(src_pages[0], &vec![0x5a; mr_len as usize])
        .expect("fill source");
    fe.write_mem(dst_pages[0], &vec![0; mr_len as usize])
        .expect("fill destination");
    let host = |gpa: u64| {
        fe.memory()
            .get_host_address(GuestAddress(gpa))
            .expect("host address of guest memory")
    };
    let (gsrc, gdst) = (host(src_pages[0]), host(dst_pages[0]));
    let mut heap_src = Aligned::new(mr_len as usize, 0x5a);
    let mut heap_dst = Aligned::new(mr_len as usize, 0);

    // The daemon's WRITE code (Device::dma) called directly in this
    // process, on the same guest pages: the copy without the transport.
    let model = Device::new(Limits::default());
    model.set_memory(Box::new(MmapRam::new(fe.memory().clone())));
    let mctx = model.create_context(1, "bench").expect("model context");
    let mr = |access, pages: &[u64]| {
        model
            .reg_mr(
                mctx,
                RegMr {
                    access,
                    flags: 0,
                    first_page_offset: 0,
                    length: mr_len,
                    file: None,
                    pages: pages.to_vec(),
                },
            )
            .expect("model REG_MR")
            .key
    };
    let (msrc, mdst) = (
        mr(PL_ACCESS_READ, &src_pages),
        mr(PL_ACCESS_WRITE, &dst_pages),
    );
    let nop = Prebuilt::new(fe, &nop_request(), 16);

    for len in [4 * KIB, MIB] {
        let req = PlDmaReq {
            local_key: src,
            local_offset: 0,
            remote_key: dst,
            remote_offset: 0,
            length: len,
        };
        let w = Prebuilt::new(
            fe,
            &encode_request(Opcode::Write as u16, ctx, 1, req.as_bytes()),
            16,
        );
        // WRITEs and NOPs take turns.
        let rates = {
            let cell = std::cell::RefCell::new(&mut *fe);
            measure_interleaved(
                REPS_RT,
                &mut [
                    &mut || {
                        nop.ok(&mut cell.borrow_mut(), 16);
                        1
                    },
                    &mut || {
                        w.ok(&mut cell.borrow_mut(), 16);
                        len
                    },
                ],
            )
        };
        let (n, write) = (&rates[0], &rates[1]);
        let nop_cpu = PerOp::measure(daemon_pid, 2000, || nop.ok(fe, 16));
        let cpu = PerOp::measure(daemon_pid, 2000, || w.ok(fe, 16));
        // memcpy of the same size, batched to about 1 MiB per call so the
        // clock is not read every 4 KiB.
        let batch = (MIB / len).max(1);
        let copy = |s: *const u8, d: *mut u8, piece: u64| {
            measure(REPS_MICRO, || {
                for _ in 0..batch {
                    let mut off = 0;
                    while off < len {
                        let n = piece.min(len - off) as usize;
                        // SAFETY: s and d point at mr_len >= len valid
                        // bytes each (heap buffers alive for the whole
                        // function, or guest memory mapped while the
                        // frontend lives), and the two ranges do not
                        // overlap.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                black_box(s.add(off as usize)),
                                black_box(d.add(off as usize)),
                                n,
                            )
                        };
                        off += n as u64;
                    }
                }
                black_box(d);
                batch * len
            })
        };
        if mode.full {
            let heap = copy(heap_src.ptr(), heap_dst.ptr(), len);
            let guest = copy(gsrc as *const u8, gdst, len);
            memcpy.insert(len, heap.median.max(guest.median));
            rep.row(
                "3",
                format!("memcpy {} heap -> heap (page aligned)", human(len)),
                fmt_gbs(heap.median),
                "",
                format!("spread {}", heap.spread()),
            );
            rep.row(
                "3",
                format!(
                    "memcpy {} guest memfd -> guest memfd (the MRs' pages)",
                    human(len)
                ),
                fmt_gbs(guest.median),
                "",
                format!("spread {}", guest.spread()),
            );
        }
        let best = memcpy.get(&len).copied().unwrap_or(f64::NAN);
        let ratio = write.median / best;
        rep.row(
            "3",
            mode.name(format!(
                "WRITE {} MR->MR, QD1 (1 in flight, latency-bound)",
                human(len)
            )),
            fmt_gbs(write.median),
            format!("{ratio:.3} x memcpy"),
            format!(
                "{} per WRITE; NOP taking turns with it {}; spread {}",
                fmt_us(len as f64 / write.median),
                fmt_us(1.0 / n.median),
                write.spread()
            ),
        );
        rep.row(
            "3",
            mode.name(format!(
                "  WRITE {}, where the time goes (2000 runs)",
                human(len)
            )),
            fmt_us(cpu.wall),
            "",
            format!(
                "{}; daemon on-CPU beyond a NOP's ({}): {}; memcpy of {} takes {}",
                cpu.describe(),
                fmt_us(nop_cpu.daemon),
                fmt_us(cpu.daemon - nop_cpu.daemon),
                human(len),
                fmt_us(len as f64 / best)
            ),
        );
        if mode.full {
            let mreq = PlDmaReq {
                local_key: msrc,
                remote_key: mdst,
                ..req
            };
            let direct = measure(REPS_MICRO, || {
                for _ in 0..batch {
                    model
                        .dma(mctx, DmaDir::Write, black_box(&mreq))
                        .expect("model WRITE");
                }
                batch * len
            });
            rep.row(
                "3",
                format!(
                    "  model only: Device::dma {} in this process, no transport",
                    human(len)
                ),
                fmt_gbs(direct.median),
                format!("{:.3} x memcpy", direct.median / best),
                format!(
                    "the daemon's copy code on the same guest pages; spread {}",
                    direct.spread()
                ),
            );
            if len == MIB {
                // DMA_CHUNK in src/model/device.rs (private there).
                let pieces = copy(gsrc as *const u8, gdst, 256 * KIB);
                rep.row(
                    "3",
                    "  memcpy 1 MiB in 256 KiB pieces, guest memfd (as Device::dma splits it)",
                    fmt_gbs(pieces.median),
                    format!("{:.3} x memcpy", pieces.median / best),
                    format!("spread {}", pieces.spread()),
                );
            }
        }
        // Bandwidth: `depth` WRITEs in flight (as ib_write_bw's tx depth);
        // 2 descriptors each, the queue has 256.
        let wreq = encode_request(Opcode::Write as u16, ctx, 1, req.as_bytes());
        let mut best_qd = (1, write.median);
        for depth in [8usize, 32] {
            let mut pipe = Pipeline::new(fe, &wreq, 16, depth);
            let piped = measure(REPS_RT, || {
                pipe.complete_one(fe, 16);
                len
            });
            pipe.drain(fe);
            if piped.median > best_qd.1 {
                best_qd = (depth, piped.median);
            }
            rep.row(
                "3",
                mode.name(format!("WRITE {} MR->MR, QD{depth}", human(len))),
                fmt_gbs(piped.median),
                format!("{:.3} x memcpy", piped.median / best),
                format!("{depth} in flight (bandwidth); spread {}", piped.spread()),
            );
        }
        if len == MIB {
            rep.target(
                mode.target("1 MiB WRITE >= 0.9 x memcpy (the faster of heap and memfd memcpy), judged on the best queue depth of 1, 8, 32"),
                format!(
                    "{:.3} x at QD{} ({} vs {}); QD1 {ratio:.3} x",
                    best_qd.1 / best,
                    best_qd.0,
                    fmt_gbs(best_qd.1),
                    fmt_gbs(best)
                ),
                best_qd.1 / best >= 0.9,
            );
        }
    }
    c.dereg_mr(ctx, src).expect("DEREG_MR");
    c.dereg_mr(ctx, dst).expect("DEREG_MR");
}

fn human(len: u64) -> String {
    if len >= MIB {
        format!("{} MiB", len / MIB)
    } else {
        format!("{} KiB", len / KIB)
    }
}

// ---- 4. lease conflict checks -------------------------------------------------------

/// xorshift64*: reproducible and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn file(i: u64) -> PlFileId {
    PlFileId {
        dev: 8,
        ino: 1000 + i,
        generation: 1,
        reserved: 0,
    }
}

const LEASE_LEN: u64 = 64 * KIB;
/// Files 0..WHOLE_FILE_LEASES also carry a whole-file lease (another holder).
const WHOLE_FILE_LEASES: u64 = 4;

/// `files` files with `per_file` adjacent 64 KiB leases each (taken round
/// robin over the files, as leases would arrive over time), plus whole-file
/// leases on a few files.
fn build_leases(
    files: u64,
    per_file: u64,
    holder: &Arc<Context>,
    other: &Arc<Context>,
) -> LeaseTable {
    let t = LeaseTable::default();
    let mut h = 0u64;
    let mut handle = || {
        h += 1;
        (1u64 << 32) | h
    };
    for k in 0..per_file {
        for f in 0..files {
            t.insert(Arc::new(Lease::new(
                handle(),
                file(f),
                k * LEASE_LEN,
                (k + 1) * LEASE_LEN,
                holder,
                1,
                Policy::Revoke,
            )));
        }
    }
    for f in 0..WHOLE_FILE_LEASES {
        t.insert(Arc::new(Lease::new(
            handle(),
            file(f),
            0,
            u64::MAX,
            other,
            2,
            Policy::Wait,
        )));
    }
    t
}

/// The REG_MR path's lookup (Device::covering_lease): the holder's ACTIVE
/// lease containing the range, stopping at the first.
fn covering(t: &LeaseTable, holder: u64, f: &PlFileId, off: u64, len: u64) -> bool {
    let mut found = false;
    t.for_each_overlapping(f, off, off + len, |l| {
        if l.holder == holder && l.state() == LeaseState::Active && l.covers(f, off, len) {
            found = true;
            return false;
        }
        true
    });
    found
}

fn bench_leases(rep: &mut Report) {
    eprintln!("4. lease conflict checks");
    let holder = Arc::new(Context::new((1 << 32) | 1, 1, "bench".into()));
    let other = Arc::new(Context::new((1 << 32) | 2, 2, "other".into()));
    let me = std::process::id().to_string();
    const BATCH: usize = 256;
    for (files, per_file) in [(100u64, 10u64), (1000, 1000)] {
        let n = files * per_file;
        let before = smaps(&me);
        let t0 = Instant::now();
        let t = build_leases(files, per_file, &holder, &other);
        let build = t0.elapsed();
        let after = smaps(&me);
        let anon = after.get("Anonymous").unwrap_or(&0) - before.get("Anonymous").unwrap_or(&0);
        assert_eq!(t.len() as u64, n + WHOLE_FILE_LEASES);

        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n);
        let span = per_file * LEASE_LEN;
        // Random 64 KiB ranges (4 KiB aligned) on random files.
        let random: Vec<(PlFileId, u64)> = (0..4096)
            .map(|_| (file(rng.below(files)), rng.below(span / PAGE) * PAGE))
            .collect();
        // Random 64 KiB ranges on the files that have a whole-file lease.
        let worst: Vec<(PlFileId, u64)> = (0..4096)
            .map(|_| {
                (
                    file(rng.below(WHOLE_FILE_LEASES)),
                    rng.below(span / PAGE) * PAGE,
                )
            })
            .collect();
        // 16 KiB inside one 64 KiB lease of the holder, random files.
        let inside: Vec<(PlFileId, u64)> = (0..4096)
            .map(|_| {
                let k = rng.below(per_file);
                let off = k * LEASE_LEN + rng.below((LEASE_LEN - 16 * KIB) / PAGE + 1) * PAGE;
                (file(rng.below(files)), off)
            })
            .collect();

        let mut i = 0usize;
        let mut found = 0usize;
        let vec_rate = measure(REPS_MICRO, || {
            for _ in 0..BATCH {
                let (f, s) = &random[i & 4095];
                i += 1;
                found += t.overlapping(f, *s, *s + LEASE_LEN).len();
            }
            BATCH as u64
        });
        let visit_rate = measure(REPS_MICRO, || {
            for _ in 0..BATCH {
                let (f, s) = &random[i & 4095];
                i += 1;
                found += t.for_each_overlapping(f, *s, *s + LEASE_LEN, |_| true);
            }
            BATCH as u64
        });
        let worst_rate = measure(REPS_MICRO, || {
            for _ in 0..BATCH {
                let (f, s) = &worst[i & 4095];
                i += 1;
                found += t.for_each_overlapping(f, *s, *s + LEASE_LEN, |_| true);
            }
            BATCH as u64
        });
        let mut hits = 0u64;
        let mut tries = 0u64;
        let cover_rate = measure(REPS_MICRO, || {
            for _ in 0..BATCH {
                let (f, s) = &inside[i & 4095];
                i += 1;
                tries += 1;
                hits += u64::from(covering(&t, holder.handle, f, *s, 16 * KIB));
            }
            BATCH as u64
        });
        black_box(found);
        let avg_visited = random
            .iter()
            .map(|(f, s)| t.for_each_overlapping(f, *s, *s + LEASE_LEN, |_| true))
            .sum::<usize>() as f64
            / random.len() as f64;
        let avg_worst = worst
            .iter()
            .map(|(f, s)| t.for_each_overlapping(f, *s, *s + LEASE_LEN, |_| true))
            .sum::<usize>() as f64
            / worst.len() as f64;
        let label = if n >= 1_000_000 { "10^6" } else { "10^3" };
        let ns = |r: &Rate| format!("{:.0} ns", 1e9 / r.median);
        rep.row(
            "4",
            format!("{label} leases ({files} files x {per_file} + {WHOLE_FILE_LEASES} whole-file): overlapping(), random 64 KiB range"),
            ns(&vec_rate),
            "",
            format!("{avg_visited:.2} leases returned on average; Vec allocated per call; spread {}", vec_rate.spread()),
        );
        rep.row(
            "4",
            format!("{label}: for_each_overlapping(), random 64 KiB range"),
            ns(&visit_rate),
            "",
            format!("spread {}", visit_rate.spread()),
        );
        rep.row(
            "4",
            format!("{label}: for_each_overlapping() on a file with a whole-file lease"),
            ns(&worst_rate),
            "",
            format!(
                "{avg_worst:.1} leases overlap on average (leases to EOF are kept apart and do not widen the scan window); spread {}",
                worst_rate.spread()
            ),
        );
        rep.row(
            "4",
            format!("{label}: REG_MR path, covering lease found (16 KiB inside a lease)"),
            ns(&cover_rate),
            "",
            format!(
                "found in {:.1}% of lookups; spread {}",
                hits as f64 / tries.max(1) as f64 * 100.0,
                cover_rate.spread()
            ),
        );
        if n >= 1_000_000 {
            rep.row(
                "4",
                "10^6 leases: table build (LeaseTable::insert one by one)",
                format!("{:.2} s", build.as_secs_f64()),
                "",
                format!(
                    "{:.2} us per insert; Anonymous memory +{:.0} MiB = {:.0} bytes per lease",
                    build.as_secs_f64() * 1e6 / n as f64,
                    anon as f64 / MIB as f64,
                    anon as f64 / n as f64
                ),
            );
            let slowest = [&vec_rate, &visit_rate, &cover_rate]
                .iter()
                .map(|r| 1e9 / r.median)
                .fold(0.0, f64::max);
            rep.target(
                "conflict check at 10^6 leases < 1 us (random ranges; slowest of overlapping/for_each/REG_MR path)",
                format!(
                    "{slowest:.0} ns (whole-file-lease file: {:.0} ns)",
                    1e9 / worst_rate.median
                ),
                slowest < 1000.0,
            );
            drop(t);
            lease_map_parts(rep, files, per_file, &random);
        }
    }
}

/// What one conflict check is made of. The lease table keeps, per file
/// (an imbl::HashMap of files), imbl::OrdMaps keyed (start, handle); a
/// check probes the file, then calls range() on its bounded leases and on
/// its leases to EOF, and imbl positions both a forward and a backward
/// cursor for every range(). Here one file's keys go into a bare
/// imbl::OrdMap and a std BTreeMap, and each step is timed alone.
fn lease_map_parts(rep: &mut Report, files: u64, per_file: u64, random: &[(PlFileId, u64)]) {
    let fk = |f: &PlFileId| (f.dev, f.ino, f.generation);
    let probe: imbl::HashMap<(u64, u64, u32), u64> =
        (0..files).map(|f| (fk(&file(f)), f)).collect();
    let keys = (0..per_file).map(|k| (k * LEASE_LEN, (1u64 << 32) | (k * files + 1)));
    let im: imbl::OrdMap<(u64, u64), u64> = keys.clone().map(|k| (k, 0u64)).collect();
    let bt: std::collections::BTreeMap<(u64, u64), u64> = keys.map(|k| (k, 0u64)).collect();
    const BATCH: usize = 256;
    let mut i = 0usize;
    let mut found = 0usize;
    let hm_get = measure(REPS_MICRO, || {
        for _ in 0..BATCH {
            let (f, _) = &random[i & 4095];
            i += 1;
            found += usize::from(probe.get(&fk(f)).is_some());
        }
        BATCH as u64
    });
    let mut timed_range = |range_of: &dyn Fn(u64) -> usize| {
        measure(REPS_MICRO, || {
            for _ in 0..BATCH {
                let (_, s) = &random[i & 4095];
                i += 1;
                found += range_of(*s);
            }
            BATCH as u64
        })
    };
    let lo = |s: u64| s.saturating_sub(LEASE_LEN);
    let im_next =
        timed_range(&|s| usize::from(im.range((lo(s), 0)..(s + LEASE_LEN, 0)).next().is_some()));
    let bt_next =
        timed_range(&|s| usize::from(bt.range((lo(s), 0)..(s + LEASE_LEN, 0)).next().is_some()));
    black_box(found);
    let ns = |r: &Rate| format!("{:.0} ns", 1e9 / r.median);
    rep.row(
        "4",
        format!("  parts: one imbl::HashMap get, {files} files"),
        ns(&hm_get),
        "",
        format!("the file probe of a check; spread {}", hm_get.spread()),
    );
    rep.row(
        "4",
        format!("  parts: one imbl::OrdMap range().next(), {per_file} keys (one file's leases)"),
        ns(&im_next),
        "",
        format!(
            "a check does 2 range() calls (bounded, to EOF); spread {}",
            im_next.spread()
        ),
    );
    rep.row(
        "4",
        "  parts: one std BTreeMap range().next(), same keys",
        ns(&bt_next),
        format!("{:.2} x imbl", im_next.median / bt_next.median),
        format!("spread {}", bt_next.spread()),
    );
}

// ---- 5. daemon memory per pinned page -----------------------------------------------

fn bench_memory(rep: &mut Report, dir: &Path) {
    eprintln!("5. daemon memory per pinned page");
    const MRS: u64 = 16;
    const PAGES: u64 = 65_536;
    let daemon = Daemon::spawn(dir, "mem.sock");
    // 4 GiB of distinct guest pages: a memfd is backed lazily and REG_MR
    // never touches the pages, so this costs page-table entries only.
    let mut c = daemon.client(MRS * PAGES * PAGE + 64 * MIB);
    let ctx = c.create_context(1, "bench-mem").expect("CREATE_CONTEXT");
    let base = c
        .frontend_mut()
        .alloc(MRS * PAGES * PAGE, PAGE)
        .expect("guest pages");
    let pages =
        |i: u64| -> Vec<u64> { (0..PAGES).map(|j| base + (i * PAGES + j) * PAGE).collect() };
    let pid = daemon.pid().to_string();
    // Warm up the request path (gather buffer, page-list decode) once.
    for _ in 0..2 {
        let k = c
            .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages(0)))
            .expect("REG_MR")
            .key;
        c.dereg_mr(ctx, k).expect("DEREG_MR");
    }
    let m0 = smaps(&pid);
    let mut keys = Vec::new();
    let reg = |c: &mut Client, keys: &mut Vec<u64>, range: std::ops::Range<u64>| {
        for i in range {
            keys.push(
                c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages(i)))
                    .expect("REG_MR")
                    .key,
            );
        }
    };
    reg(&mut c, &mut keys, 0..MRS / 2);
    let m8 = smaps(&pid);
    reg(&mut c, &mut keys, MRS / 2..MRS);
    let m16 = smaps(&pid);
    for k in keys.drain(..) {
        c.dereg_mr(ctx, k).expect("DEREG_MR");
    }
    let m_after = smaps(&pid);
    // Register the same 16 MRs again: if Anonymous does not grow, what
    // DEREG_MR left behind is memory the allocator keeps for reuse (and
    // pin-counter chunks, which are never freed), not a leak.
    for i in 0..MRS {
        keys.push(
            c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages(i)))
                .expect("REG_MR")
                .key,
        );
    }
    let m_again = smaps(&pid);
    for k in keys {
        c.dereg_mr(ctx, k).expect("DEREG_MR");
    }
    let get = |m: &HashMap<String, u64>, k: &str| *m.get(k).unwrap_or(&0) as f64;
    let total_pages = (MRS * PAGES) as f64;
    let anon_total = (get(&m16, "Anonymous") - get(&m0, "Anonymous")) / total_pages;
    let anon_marginal = (get(&m16, "Anonymous") - get(&m8, "Anonymous")) / (total_pages / 2.0);
    let dirty_total = (get(&m16, "Private_Dirty") - get(&m0, "Private_Dirty")) / total_pages;
    let rss_total = (get(&m16, "Rss") - get(&m0, "Rss")) / total_pages;
    // The model's own structures: 8 bytes per page-list entry (Box<[u64]>)
    // plus a u16 pin counter per distinct page, allocated in 16 MiB chunks
    // (4096 counters = 8 KiB) on first use.
    let chunks = (MRS * PAGES).div_ceil(4096);
    let structural = (8.0 * total_pages + chunks as f64 * 8192.0) / total_pages;
    rep.row(
        "5",
        format!("daemon Anonymous memory per pinned page ({MRS} MRs x {PAGES} distinct pages)"),
        format!("{anon_total:.2} B/page"),
        format!("{:.2} x structural", anon_total / structural),
        format!(
            "+{:.1} MiB for {} pages; Private_Dirty {dirty_total:.2} B/page, Rss {rss_total:.2} B/page (Rss includes guest pages the daemon read)",
            (get(&m16, "Anonymous") - get(&m0, "Anonymous")) / MIB as f64,
            MRS * PAGES
        ),
    );
    rep.row(
        "5",
        "marginal: MRs 9-16 only",
        format!("{anon_marginal:.2} B/page"),
        "",
        format!(
            "after DEREG_MR of all 16: Anonymous {:+.1} MiB vs before; registering the 16 again: {:+.1} MiB more",
            (get(&m_after, "Anonymous") - get(&m0, "Anonymous")) / MIB as f64,
            (get(&m_again, "Anonymous") - get(&m_after, "Anonymous")) / MIB as f64
        ),
    );
    rep.row(
        "5",
        "model structural cost",
        format!("{structural:.2} B/page"),
        "",
        "8 B page-list entry + 2 B u16 pin counter (8 KiB chunk per 4096 pages)",
    );
    rep.target(
        "< 16 bytes of daemon memory per pinned page (Anonymous)",
        format!("{anon_total:.2} B/page"),
        anon_total < 16.0,
    );
    drop(c);
    drop(daemon);
}

// ---- main ---------------------------------------------------------------------------

/// `PINLEASE_BENCH_ONLY=2,3` runs only those sections.
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
    let daemon = Daemon::spawn(dir.path(), "pinlease.sock");
    eprintln!(
        "pinlease benchmarks: warm-up {WARMUP:?}, median of {REPS} (micro: {REPS_MICRO}) x {REP:?}"
    );

    let only = Sections::from_env();
    let mut memcpy = Memcpy::new();
    for one_cpu in [false, true] {
        let mode = Mode {
            one_cpu,
            full: !one_cpu,
        };
        pin(daemon.pid(), one_cpu);
        if only.has(1) {
            bench_round_trips(&mut rep, &daemon, dir.path(), mode);
        }
        if only.has(2) || only.has(3) {
            // A fresh connection (fresh device) with 512 MiB of guest
            // memory: a 65,536-page MR needs 256 MiB of distinct pages.
            let mut c = daemon.client(512 * MIB);
            let ctx = c.create_context(1, "bench").expect("CREATE_CONTEXT");
            if only.has(2) {
                bench_reg_dereg(&mut rep, &mut c, daemon.pid(), ctx, mode);
            }
            if only.has(3) {
                bench_write(&mut rep, &mut c, daemon.pid(), ctx, mode, &mut memcpy);
            }
        }
    }
    pin(daemon.pid(), false);
    drop(daemon);
    if only.has(4) {
        bench_leases(&mut rep);
    }
    if only.has(5) {
        bench_memory(&mut rep, dir.path());
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
