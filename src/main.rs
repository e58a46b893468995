//! `pinlease`: the daemon (`serve`) and its admin clients (`status`,
//! `inject`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use log::error;

use pinlease::model::Limits;
use pinlease::server::{install_signal_handlers, serve, ServeConfig, ServerState};

#[derive(Parser, Debug)]
#[command(
    name = "pinlease",
    version,
    about = "RDMA-like vhost-user device for testing long-term page pins, truncate and layout leases"
)]
struct Cli {
    /// Log verbosity.
    #[arg(long, value_enum, default_value_t = LogLevel::Info, global = true)]
    log_level: LogLevel,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the device on a vhost-user socket, one frontend at a time,
    /// until SIGINT or SIGTERM.
    Serve {
        /// vhost-user socket to listen on (QEMU's chardev path).
        #[arg(long)]
        socket_path: PathBuf,
        /// Admin socket for `pinlease status` (created mode 0600).
        #[arg(long, env = "PINLEASE_ADMIN_SOCKET")]
        admin_socket: Option<PathBuf>,
        /// Exit after serving this many frontends (default: never).
        #[arg(long)]
        max_connections: Option<u64>,
        /// Event backlog kept while the driver posts no event buffers.
        #[arg(long, default_value_t = pinlease::model::events::DEFAULT_BACKLOG)]
        event_backlog: usize,
        /// Canary scrubber period in milliseconds: every period the device
        /// verifies and rewrites canaries in each PL_REG_SCRUB MR
        /// (docs/abi.md 5.9.1). 0 = off (the default); at most 3600000.
        #[arg(long, default_value_t = 0, value_name = "MS", allow_negative_numbers = true,
              value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
        scrub_period_ms: u64,
        /// Fault plan (TOML, docs/faults.md 1.1); invalid plans stop the
        /// daemon before it listens.
        #[arg(long, value_name = "FILE")]
        faults: Option<PathBuf>,
        /// Seed of the fault plan's random streams (overrides the file's).
        #[arg(long, value_name = "N")]
        fault_seed: Option<u64>,
        /// Where an `abort` fault writes the status JSON before aborting.
        #[arg(long, value_name = "PATH")]
        abort_report: Option<PathBuf>,
    },
    /// Change a running daemon's fault plan (docs/faults.md 1.4).
    Inject {
        /// The daemon's admin socket.
        #[arg(long, env = "PINLEASE_ADMIN_SOCKET")]
        admin_socket: PathBuf,
        #[command(subcommand)]
        op: InjectOp,
    },
    /// Show contexts, MRs, the lease table and counters of a running daemon.
    Status {
        /// The daemon's admin socket.
        #[arg(long, env = "PINLEASE_ADMIN_SOCKET")]
        admin_socket: PathBuf,
        /// Print the daemon's JSON reply instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum InjectOp {
    /// Append a rule; prints its id.
    Add {
        #[arg(long)]
        point: String,
        #[arg(long)]
        action: String,
        /// fail: a PL_S_ name without the prefix (EIO, ENOMEM, ...).
        #[arg(long)]
        status: Option<String>,
        /// delay, withhold: milliseconds.
        #[arg(long)]
        ms: Option<u64>,
        #[arg(long)]
        probability: Option<f64>,
        #[arg(long)]
        skip: Option<u64>,
        #[arg(long)]
        count: Option<u64>,
    },
    /// Show the plan and what it injected.
    List,
    /// Remove rule ID, or every rule.
    Clear { id: Option<u32> },
    /// Replace every rule (and the seed) with a plan file's.
    Load { file: PathBuf },
    /// Fire one fault now.
    Now {
        #[arg(long, value_parser = ["revoke-mr", "spurious-break", "needs-reset", "abort"])]
        action: String,
    },
}

fn read_plan(path: &std::path::Path) -> pinlease::error::Result<String> {
    std::fs::read_to_string(path).map_err(|e| pinlease::error::Error::Io {
        what: format!("reading fault plan {}", path.display()),
        source: e,
    })
}

fn inject(admin_socket: &std::path::Path, op: InjectOp) -> pinlease::error::Result<()> {
    use serde_json::{json, Map, Value};
    let req = match op {
        InjectOp::Add {
            point,
            action,
            status,
            ms,
            probability,
            skip,
            count,
        } => {
            let mut rule = Map::new();
            rule.insert("point".into(), json!(point));
            rule.insert("action".into(), json!(action));
            let optional = [
                ("status", status.map(Value::from)),
                ("ms", ms.map(Value::from)),
                ("probability", probability.map(Value::from)),
                ("skip", skip.map(Value::from)),
                ("count", count.map(Value::from)),
            ];
            for (k, v) in optional {
                if let Some(v) = v {
                    rule.insert(k.into(), v);
                }
            }
            json!({"cmd": "fault-add", "rule": rule})
        }
        InjectOp::List => json!({"cmd": "fault-list"}),
        InjectOp::Clear { id } => json!({"cmd": "fault-clear", "id": id}),
        InjectOp::Load { file } => {
            let text = read_plan(&file)?;
            // Checked here too, so the error names the file.
            pinlease::faults::parse_plan(&text).map_err(|e| pinlease::error::Error::FaultPlan {
                path: file.clone(),
                msg: e.0,
            })?;
            json!({"cmd": "fault-load", "plan": text})
        }
        InjectOp::Now { action } => json!({"cmd": "fault-now", "action": action}),
    };
    let reply = pinlease::admin::request(admin_socket, &req)?;
    match req["cmd"].as_str() {
        Some("fault-add") => println!("rule {}", reply["id"]),
        Some("fault-list") => print!("{}", pinlease::status_view::render_faults(&reply["faults"])),
        Some("fault-clear") => println!("cleared {} rule(s)", reply["cleared"]),
        Some("fault-load") => println!("loaded {} rule(s), seed {}", reply["rules"], reply["seed"]),
        _ => println!("fault injected"),
    }
    Ok(())
}

fn run(cli: Cli) -> pinlease::error::Result<()> {
    match cli.command {
        Command::Serve {
            socket_path,
            admin_socket,
            max_connections,
            event_backlog,
            scrub_period_ms,
            faults,
            fault_seed,
            abort_report,
        } => {
            let mut plan = match &faults {
                Some(path) => pinlease::faults::parse_plan(&read_plan(path)?).map_err(|e| {
                    pinlease::error::Error::FaultPlan {
                        path: path.clone(),
                        msg: e.0,
                    }
                })?,
                None => pinlease::faults::Plan::default(),
            };
            if let Some(seed) = fault_seed {
                plan.seed = seed;
            }
            if !plan.rules.is_empty() {
                log::info!(
                    "fault plan: seed {}, {} rule(s)",
                    plan.seed,
                    plan.rules.len()
                );
            }
            let state =
                ServerState::with_faults(pinlease::faults::FaultEngine::new(&plan, abort_report))?;
            install_signal_handlers(state.clone())?;
            let cfg = ServeConfig {
                socket_path,
                admin_socket,
                limits: Limits {
                    event_backlog,
                    ..Limits::default()
                },
                max_connections,
                scrub_period: (scrub_period_ms > 0)
                    .then(|| std::time::Duration::from_millis(scrub_period_ms)),
            };
            serve(&cfg, Arc::clone(&state))
        }
        Command::Inject { admin_socket, op } => inject(&admin_socket, op),
        Command::Status { admin_socket, json } => {
            let reply =
                pinlease::admin::request(&admin_socket, &serde_json::json!({"cmd": "status"}))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reply).unwrap_or_default()
                );
            } else {
                print!("{}", pinlease::status_view::render(&reply));
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level.into())
        .format_timestamp_millis()
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("pinlease: {e}");
            ExitCode::FAILURE
        }
    }
}
