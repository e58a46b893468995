//! pinlease-guest: drive /dev/pinleaseN by hand, or run the KTAP suite.

use clap::{Parser, Subcommand};
use pinlease_abi::{self as abi, PL_ACCESS_ALL, PL_ACCESS_READ};
use pinlease_guest::dev::{format_event, parse_events, Dev, SysError, EVENT_SIZE};
use pinlease_guest::sys::{self, Backing, Mapping};
use pinlease_guest::uapi::*;
use pinlease_guest::{bench, campaign, cases, fuzz, ktap, stray};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "pinlease-guest",
    version,
    about = "Drive the pinlease device (/dev/pinleaseN) and run its KTAP test suite",
    after_help = "Keys are per device context, and every invocation opens a new context \
                  (a new open of the device): an MR dies with the invocation that registered \
                  it unless `reg --hold SECONDS` keeps the fd open. Other contexts may name it \
                  as a remote key (write/read REMOTE_KEY, fill, verify); a LOCAL_KEY must be \
                  this context's, so `write`/`read` accept `new` to register a fresh local \
                  buffer. Numbers accept 0x.. hex and K/M/G suffixes."
)]
struct Cli {
    /// Device node.
    #[arg(long, default_value = pinlease_guest::dev::DEFAULT_DEV, global = true)]
    dev: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the device's limits and this fd's context (PINLEASE_IOC_QUERY).
    Query,
    /// Register (pin) a buffer and print its key.
    Reg {
        /// Length in bytes (K/M/G suffixes allowed).
        #[arg(long, value_parser = parse_num)]
        len: u64,
        /// anon, memfd, hugetlb or file:PATH[:shared|private].
        #[arg(long, default_value = "anon")]
        backing: Backing,
        /// Short-term pin (no FOLL_LONGTERM).
        #[arg(long)]
        shortterm: bool,
        /// Read-only mapping and pin (no FOLL_WRITE); access READ.
        #[arg(long)]
        readonly: bool,
        /// PINLEASE_REG_SCRUB: the device's scrubber (`pinlease serve
        /// --scrub-period-ms`) writes canaries into the MR (not with --readonly).
        #[arg(long)]
        scrub: bool,
        /// Keep the fd (and so the MR) for this many seconds, then exit.
        #[arg(long, default_value_t = 0)]
        hold: u64,
        /// While holding, print the context's events.
        #[arg(long)]
        events: bool,
    },
    /// Deregister an MR of this context (only useful to see the errors:
    /// an MR of another process's context answers EPERM).
    Dereg {
        #[arg(value_parser = parse_num)]
        key: u64,
    },
    /// WRITE: copy LEN bytes local MR -> remote MR.
    Write(CopyArgs),
    /// READ: copy LEN bytes remote MR -> local MR (hexdump with `new`).
    Read(CopyArgs),
    /// FILL words of an MR with PATTERN (any context's key).
    Fill(PatternArgs),
    /// VERIFY words of an MR against PATTERN (any context's key).
    Verify(PatternArgs),
    /// Print events of a fresh context's event channel.
    Events {
        /// Stop after this many events.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Print the debugfs tables (contexts, mrs, leases) of the device.
    Status,
    /// One process: two MRs, a WRITE between them, the bytes checked and printed.
    Demo,
    /// Run the KTAP test suite.
    Suite {
        /// Glob(s) of case names ('*', '?'; several separated by ',' or spaces).
        /// Opt-in cases (listed after `--list`'s cases) run only when named
        /// exactly.
        #[arg(long, default_value = "*")]
        cases: String,
        /// List the case names instead of running them.
        #[arg(long)]
        list: bool,
    },
    /// Ask guest-driver/vm/run for a `pinlease status --json` snapshot now
    /// (written as status-NAME.json in its --out directory); waits for the
    /// runner's answer, giving up after --timeout seconds without one.
    Snapshot {
        /// 1-64 characters of [A-Za-z0-9_.-].
        name: String,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// The guest benchmark: one `PINLEASE-BENCH SIDE ID VALUE [KEY=VALUE ...]`
    /// line per figure of bench_figures.txt and side (pinlease, memcpy,
    /// barepin); progress on stderr; exit 0 when every figure printed, 1
    /// with the reasons on stderr otherwise, 2 on bad arguments.
    Bench {
        /// Seconds per timed loop (after a warm-up of 0.2 x this).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Size of the reg_max figure in MiB (less when the guest or the
        /// device cannot pin that much: its line says why).
        #[arg(long, default_value_t = 1024)]
        max_mib: u64,
        /// Only these figure ids (comma separated).
        #[arg(long)]
        only: Option<String>,
    },
    /// Scan fresh anonymous memory (zeroed by the kernel, never written) for
    /// the device scrubber's canary words: one there means the device wrote
    /// pages nobody had pinned. Prints `PINLEASE-STRAY words=N canaries=C`
    /// and up to 10 `PINLEASE-STRAY-HIT` lines; exit 0 when C is 0, 1 when
    /// canaries were found, 2 on a setup error.
    StrayScan {
        /// Share of MemAvailable to allocate and scan (1-90).
        #[arg(long, default_value_t = 50)]
        mem_percent: u32,
        /// Keep scanning for this many seconds (at least one pass).
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// Random and edge-valued ioctls (all of the UAPI's) at the device and
    /// its child fds from PROCS processes x THREADS threads, with forks,
    /// closes and SIGKILLs in between; then checks pins, the kernel log,
    /// the device and the workers. Prints PINLEASE-FUZZ* lines; exit 0 when
    /// every check holds, 1 naming the failed ones, 2 on bad arguments or
    /// no device.
    Fuzz {
        /// How long to fuzz (1-86400).
        #[arg(long, value_parser = fuzz::opts::parse_seconds, allow_hyphen_values = true)]
        seconds: u64,
        /// Seed (decimal or 0x hex): every thread's sequence follows from it.
        #[arg(long, value_parser = fuzz::opts::parse_seed, allow_hyphen_values = true)]
        seed: u64,
        /// Threads per worker process (1-64).
        #[arg(long, default_value = "4", value_parser = fuzz::opts::parse_threads, allow_hyphen_values = true)]
        threads: u32,
        /// Worker processes (1-64).
        #[arg(long, default_value = "3", value_parser = fuzz::opts::parse_procs, allow_hyphen_values = true)]
        procs: u32,
    },
    /// In a guest WITHOUT a pinlease device: load pinlease.ko, check that no
    /// device, node or debugfs entry appears, unload, load and unload again,
    /// check the kernel log; KTAP like `suite` (exit 0 only if all ok). The
    /// module must not be loaded beforehand. Used by `vm/run --no-device`.
    Nodevice {
        /// The module file to load.
        #[arg(long, default_value = pinlease_guest::cases::helpers::MODULE_PATH)]
        module: String,
        /// List the check names instead of running them.
        #[arg(long)]
        list: bool,
    },
}

#[derive(clap::Args)]
struct CopyArgs {
    /// A key of this context, or `new` to register a fresh local buffer.
    local_key: String,
    #[arg(value_parser = parse_num)]
    local_offset: u64,
    #[arg(value_parser = parse_num)]
    remote_key: u64,
    #[arg(value_parser = parse_num)]
    remote_offset: u64,
    #[arg(value_parser = parse_num)]
    len: u64,
    /// Byte the fresh local buffer is filled with (`new` only).
    #[arg(long, value_parser = parse_num, default_value = "0xa5")]
    byte: u64,
}

#[derive(clap::Args)]
struct PatternArgs {
    #[arg(value_parser = parse_num)]
    key: u64,
    #[arg(value_parser = parse_num)]
    offset: u64,
    #[arg(value_parser = parse_num)]
    len: u64,
    #[arg(value_parser = parse_num)]
    pattern: u64,
    /// Word at offset o holds pattern ^ o (PL_PATTERN_OFFSET_XOR).
    #[arg(long)]
    xor: bool,
}

/// Decimal or 0x hex, with an optional K/M/G (binary) suffix.
fn parse_num(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let v = if let Some(h) = num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        num.parse()
    }
    .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    v.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} overflows 64 bits"))
}

type CliResult = Result<(), String>;

fn err(e: SysError) -> String {
    e.to_string()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Suite { cases, list } => return suite(&cases, list),
        Cmd::Nodevice { module, list } => return nodevice(&module, list),
        Cmd::Fuzz {
            seconds,
            seed,
            threads,
            procs,
        } => {
            return fuzz_cmd(fuzz::opts::Opts {
                seconds,
                seed,
                threads,
                procs,
                dev: cli.dev,
                bound: fuzz::opts::DEFAULT_BOUND,
            })
        }
        Cmd::Snapshot { name, timeout } => {
            return if pinlease_guest::sys::snapshot(&name, Duration::from_secs(timeout)) {
                ExitCode::SUCCESS
            } else {
                eprintln!("pinlease-guest snapshot {name}: no answer from the runner");
                ExitCode::FAILURE
            };
        }
        Cmd::StrayScan {
            mem_percent,
            seconds,
        } => return stray_scan(mem_percent, seconds),
        Cmd::Bench {
            seconds,
            max_mib,
            only,
        } => return bench(&cli.dev, seconds, max_mib, only.as_deref()),
        Cmd::Query => query(&cli.dev),
        Cmd::Reg {
            len,
            backing,
            shortterm,
            readonly,
            scrub,
            hold,
            events,
        } => reg(
            &cli.dev, len, &backing, shortterm, readonly, scrub, hold, events,
        ),
        Cmd::Dereg { key } => Dev::open(&cli.dev)
            .and_then(|d| d.dereg_mr(key))
            .map(|()| println!("deregistered {key:#x}"))
            .map_err(err),
        Cmd::Write(a) => copy(&cli.dev, true, &a),
        Cmd::Read(a) => copy(&cli.dev, false, &a),
        Cmd::Fill(a) => pattern_cmd(&cli.dev, true, &a),
        Cmd::Verify(a) => pattern_cmd(&cli.dev, false, &a),
        Cmd::Events { count, timeout } => events(&cli.dev, count, timeout),
        Cmd::Status => status(),
        Cmd::Demo => demo(&cli.dev),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinlease-guest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn suite(glob: &str, list: bool) -> ExitCode {
    let mut all = cases::all();
    all.extend(campaign::all());
    let opt_in = pinlease_guest::dataloss::opt_in();
    let selected = ktap::select(glob, &all, &opt_in);
    if list {
        for c in &selected {
            println!("{}", c.name);
        }
        for c in opt_in.iter().filter(|c| !ktap::names_exactly(glob, c.name)) {
            println!("# opt-in, runs only when named exactly: {}", c.name);
        }
        return if selected.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    ktap::install_panic_hook();
    // A test-suite process must not die of SIGPIPE on a closed console.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut checks = cases::GuestChecks::new();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let sum = ktap::run(&selected, &mut checks, &mut out);
    drop(out);
    if selected.is_empty() {
        println!("# no case matches {glob:?} (pinlease-guest suite --list shows them)");
        return ExitCode::FAILURE;
    }
    if sum.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn nodevice(module: &str, list: bool) -> ExitCode {
    if list {
        for c in pinlease_guest::nodevice::all() {
            println!("{}", c.name);
        }
        return ExitCode::SUCCESS;
    }
    ktap::install_panic_hook();
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if pinlease_guest::nodevice::run(module, &mut out) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fuzz_cmd(opts: fuzz::opts::Opts) -> ExitCode {
    // SAFETY: setting a signal disposition (the console may go away).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    match fuzz::run(&opts) {
        Ok(r) => {
            for l in r.lines() {
                println!("{l}");
            }
            let failed = r.failed();
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("pinlease-guest fuzz: failed: {}", failed.join(", "));
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("pinlease-guest fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

fn stray_scan(percent: u32, seconds: f64) -> ExitCode {
    if !(seconds.is_finite() && seconds >= 0.0) {
        eprintln!("pinlease-guest stray-scan: --seconds {seconds}: must be a number >= 0");
        return ExitCode::from(2);
    }
    match stray::run(percent, Duration::from_secs_f64(seconds)) {
        Ok(r) => {
            for l in r.lines() {
                println!("{l}");
            }
            eprintln!("pinlease-guest stray-scan: {}", r.summary());
            if r.canaries == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("pinlease-guest stray-scan: {e}");
            ExitCode::from(2)
        }
    }
}

fn bench(dev: &str, seconds: f64, max_mib: u64, only: Option<&str>) -> ExitCode {
    let selected = match bench::select(only) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pinlease-guest bench: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = bench::Opts {
        seconds,
        max_mib,
        dev: dev.to_string(),
        only: selected,
    };
    // A benchmark on the console must not die of SIGPIPE.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let stdout = std::io::stdout();
    let failed = bench::run(&opts, &mut stdout.lock());
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for (id, e) in &failed {
        eprintln!("pinlease-guest bench: FAILED {id}: {e}");
    }
    eprintln!(
        "pinlease-guest bench: {} figure(s) not measured: {}",
        failed.len(),
        failed
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>()
            .join(",")
    );
    ExitCode::FAILURE
}

fn query(path: &str) -> CliResult {
    let d = Dev::open(path).map_err(err)?;
    let q = d.query().map_err(err)?;
    let feats: Vec<&str> = [
        (abi::PL_FEATURE_EXPORT, "export"),
        (abi::PL_FEATURE_LEASES, "leases"),
        (abi::PL_FEATURE_ATOMICS, "atomics"),
        (abi::PL_FEATURE_PATTERN, "pattern"),
    ]
    .iter()
    .filter(|(b, _)| q.features & b != 0)
    .map(|(_, n)| *n)
    .collect();
    println!("device:                   {path}");
    println!("abi_version:              {}", q.abi_version);
    println!("page_size:                {}", q.page_size);
    println!(
        "features:                 {:#x} ({})",
        q.features,
        feats.join(" ")
    );
    println!("max_contexts:             {}", q.max_contexts);
    println!("max_mrs:                  {}", q.max_mrs);
    println!("max_pages_per_mr:         {}", q.max_pages_per_mr);
    println!("max_leases:               {}", q.max_leases);
    println!("max_children_per_context: {}", q.max_children_per_context);
    println!(
        "virtio_id:                {} ({})",
        q.virtio_id,
        match q.virtio_id {
            abi::PL_VIRTIO_ID_NATIVE => "native",
            abi::PL_VIRTIO_ID_CARRIER => "carrier",
            _ => "?",
        }
    );
    println!("ctx:                      {:#x}", q.ctx);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn reg(
    path: &str,
    len: u64,
    backing: &Backing,
    shortterm: bool,
    readonly: bool,
    scrub: bool,
    hold: u64,
    show_events: bool,
) -> CliResult {
    let d = Dev::open(path).map_err(err)?;
    let m = Mapping::new(backing, len as usize, readonly).map_err(err)?;
    let mut flags = 0;
    if shortterm {
        flags |= PINLEASE_PIN_SHORTTERM;
    }
    if readonly {
        flags |= PINLEASE_PIN_READONLY;
    }
    if scrub {
        flags |= PINLEASE_REG_SCRUB;
    }
    let access = if readonly {
        PL_ACCESS_READ
    } else {
        PL_ACCESS_ALL
    };
    let efd = if show_events {
        Some(d.event_fd().map_err(err)?)
    } else {
        None
    };
    let r = d.reg_mr(m.addr(), len, access, flags).map_err(err)?;
    let ctx = d.query().map_err(err)?.ctx;
    println!(
        "key={:#x} npages={} lease={:#x} ctx={ctx:#x} addr={:#x} len={len} backing={backing} access={access:#x} flags={flags:#x} pid={}",
        r.key,
        r.npages,
        r.lease,
        m.addr(),
        std::process::id()
    );
    if hold > 0 {
        println!("holding the fd for {hold} s (the MR dies when this process exits)");
        let end = Instant::now() + Duration::from_secs(hold);
        while Instant::now() < end {
            let left = end.saturating_duration_since(Instant::now());
            match &efd {
                Some(e) => {
                    let ms = left.as_millis().min(1000) as i32;
                    if sys::poll_one(e.as_raw_fd(), libc::POLLIN, ms).map_err(err)? & libc::POLLIN
                        != 0
                    {
                        if let Ok(buf) = sys::read_fd(e.as_raw_fd(), EVENT_SIZE * 16) {
                            for ev in parse_events(&buf) {
                                println!("{}", format_event(&ev));
                            }
                        }
                    }
                }
                None => std::thread::sleep(left.min(Duration::from_secs(1))),
            }
        }
    }
    Ok(())
}

fn copy(path: &str, write: bool, a: &CopyArgs) -> CliResult {
    let d = Dev::open(path).map_err(err)?;
    let name = if write { "WRITE" } else { "READ" };
    let (lkey, local) = if a.local_key == "new" {
        let len = (a.local_offset + a.len).max(1);
        let m = Mapping::anon(len as usize).map_err(err)?;
        m.fill_with(0, len as usize, |_| a.byte as u8);
        let k = d.reg_mr(m.addr(), len, PL_ACCESS_ALL, 0).map_err(err)?.key;
        println!(
            "local: new MR key={k:#x} len={len} filled with {:#04x}",
            a.byte as u8
        );
        (k, Some(m))
    } else {
        (parse_num(&a.local_key)?, None)
    };
    if write {
        d.write(lkey, a.local_offset, a.remote_key, a.remote_offset, a.len)
    } else {
        d.read(lkey, a.local_offset, a.remote_key, a.remote_offset, a.len)
    }
    .map_err(err)?;
    println!(
        "{name} ok: local {lkey:#x}+{} {} remote {:#x}+{}, {} bytes",
        a.local_offset,
        if write { "->" } else { "<-" },
        a.remote_key,
        a.remote_offset,
        a.len
    );
    if let (false, Some(m)) = (write, &local) {
        hexdump(
            &m.bytes(a.local_offset as usize, a.len.min(4096) as usize),
            a.remote_offset,
        );
    }
    Ok(())
}

fn hexdump(b: &[u8], base: u64) {
    for (i, chunk) in b.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|x| format!("{x:02x}")).collect();
        let txt: String = chunk
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    c as char
                } else {
                    '.'
                }
            })
            .collect();
        println!("{:08x}  {:<47}  {txt}", base + 16 * i as u64, hex.join(" "));
    }
}

fn pattern_cmd(path: &str, fill: bool, a: &PatternArgs) -> CliResult {
    let d = Dev::open(path).map_err(err)?;
    let mode = if a.xor {
        abi::PL_PATTERN_OFFSET_XOR
    } else {
        abi::PL_PATTERN_CONST
    };
    if fill {
        d.fill(a.key, a.offset, a.len, a.pattern, mode)
            .map_err(err)?;
        println!(
            "FILL ok: key {:#x} [{}, +{}) pattern {:#x} mode {mode}",
            a.key, a.offset, a.len, a.pattern
        );
        Ok(())
    } else {
        let v = d
            .verify(a.key, a.offset, a.len, a.pattern, mode)
            .map_err(err)?;
        println!(
            "VERIFY key {:#x} [{}, +{}) pattern {:#x} mode {mode}: {v}",
            a.key, a.offset, a.len, a.pattern
        );
        if v.mismatches == 0 {
            Ok(())
        } else {
            Err(format!("{} mismatching words", v.mismatches))
        }
    }
}

fn events(path: &str, count: usize, timeout: u64) -> CliResult {
    let d = Dev::open(path).map_err(err)?;
    let ctx = d.query().map_err(err)?.ctx;
    let e = d.event_fd().map_err(err)?;
    println!("waiting for {count} event(s) of ctx {ctx:#x} for up to {timeout} s");
    let end = Instant::now() + Duration::from_secs(timeout);
    let mut seen = 0;
    while seen < count {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timed out after {timeout} s with {seen} event(s)"));
        }
        let rev = sys::poll_one(
            e.as_raw_fd(),
            libc::POLLIN,
            left.as_millis().min(i32::MAX as u128) as i32,
        )
        .map_err(err)?;
        if rev & libc::POLLIN == 0 {
            continue;
        }
        let buf = sys::read_fd(e.as_raw_fd(), EVENT_SIZE * 16)
            .map_err(|en| SysError::new("read(event fd)", en).to_string())?;
        if buf.len() % EVENT_SIZE != 0 {
            return Err(format!(
                "event fd returned {} bytes: not whole records",
                buf.len()
            ));
        }
        for ev in parse_events(&buf) {
            println!("{}", format_event(&ev));
            seen += 1;
        }
    }
    Ok(())
}

fn status() -> CliResult {
    let dir = pinlease_guest::debugfs::ROOT;
    let names = pinlease_guest::debugfs::device_dirs()
        .map_err(|e| format!("{dir}: {e} (is debugfs mounted?)"))?;
    for d in names {
        for t in ["contexts", "mrs", "leases"] {
            let p = d.join(t);
            println!("==> {} <==", p.display());
            match std::fs::read_to_string(&p) {
                Ok(s) => print!("{s}"),
                Err(e) => println!("({e})"),
            }
        }
    }
    Ok(())
}

fn demo(path: &str) -> CliResult {
    let d = Dev::open(path).map_err(err)?;
    let q = d.query().map_err(err)?;
    println!(
        "opened {path}: ctx {:#x}, virtio id {}, features {:#x}",
        q.ctx, q.virtio_id, q.features
    );
    let len = 8192usize;
    let a = Mapping::anon(len).map_err(err)?;
    let b = Mapping::anon(len).map_err(err)?;
    let msg = b"hello from the pinlease device: these bytes crossed a page boundary";
    let off = 4096 - 20;
    a.fill_with(0, len, |_| 0);
    b.fill_with(0, len, |_| b'.');
    for (i, &c) in msg.iter().enumerate() {
        a.set_u8(off + i, c);
    }
    let ra = d
        .reg_mr(a.addr(), len as u64, PL_ACCESS_ALL, 0)
        .map_err(err)?;
    let rb = d
        .reg_mr(b.addr(), len as u64, PL_ACCESS_ALL, 0)
        .map_err(err)?;
    println!(
        "MR A: key {:#x} ({} pages), MR B: key {:#x} ({} pages)",
        ra.key, ra.npages, rb.key, rb.npages
    );
    d.write(ra.key, off as u64, rb.key, 100, msg.len() as u64)
        .map_err(err)?;
    println!("WRITE A+{off} -> B+100, {} bytes", msg.len());
    let got = b.bytes(100, msg.len());
    println!("B+100 now reads: {:?}", String::from_utf8_lossy(&got));
    hexdump(&b.bytes(96, msg.len() + 8), 96);
    if got != msg {
        return Err("the bytes in B differ from what A held".to_string());
    }
    if b.get_u8(99) != b'.' || b.get_u8(100 + msg.len()) != b'.' {
        return Err("WRITE touched bytes outside the range".to_string());
    }
    d.dereg_mr(ra.key).map_err(err)?;
    d.dereg_mr(rb.key).map_err(err)?;
    println!("demo ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_num("4096"), Ok(4096));
        assert_eq!(parse_num("0x1000"), Ok(4096));
        assert_eq!(parse_num("4K"), Ok(4096));
        assert_eq!(parse_num("2m"), Ok(2 << 20));
        assert!(parse_num("zz").is_err());
        assert!(parse_num("0xffffffffffffffffG").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "pinlease-guest",
            "reg",
            "--len",
            "64K",
            "--backing",
            "file:/mnt/xfs/f:private",
            "--hold",
            "5",
        ])
        .unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Reg {
                len: 65536,
                hold: 5,
                ..
            }
        ));
        let c = Cli::try_parse_from([
            "pinlease-guest",
            "write",
            "new",
            "0",
            "0x100000002",
            "8",
            "16",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Cmd::Write(_)));
        let c =
            Cli::try_parse_from(["pinlease-guest", "suite", "--cases", "dma_*", "--list"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Suite { list: true, .. }));
        let c = Cli::try_parse_from(["pinlease-guest", "stray-scan"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::StrayScan { mem_percent: 50, seconds } if seconds == 2.0
        ));
        let c = Cli::try_parse_from([
            "pinlease-guest",
            "stray-scan",
            "--mem-percent",
            "10",
            "--seconds",
            "0.5",
        ])
        .unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::StrayScan { mem_percent: 10, seconds } if seconds == 0.5
        ));
        assert!(
            Cli::try_parse_from(["pinlease-guest", "stray-scan", "--mem-percent", "x"]).is_err()
        );
        let c = Cli::try_parse_from(["pinlease-guest", "bench"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Bench { seconds, max_mib: 1024, only: None } if seconds == 3.0
        ));
        let c = Cli::try_parse_from([
            "pinlease-guest",
            "bench",
            "--seconds",
            "1",
            "--max-mib",
            "256",
            "--only",
            "nop,reg_max",
        ])
        .unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Bench { seconds, max_mib: 256, only: Some(ref o) } if seconds == 1.0 && o == "nop,reg_max"
        ));
        let c = Cli::try_parse_from(["pinlease-guest", "nodevice"]).unwrap();
        assert!(
            matches!(c.cmd, Cmd::Nodevice { ref module, list: false } if module == "/lib/pinlease/pinlease.ko")
        );
    }
}
