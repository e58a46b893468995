//! `pinlease`: the vhost-user daemon of the pinlease device, and its admin
//! clients.
//!
//! ```text
//! pinlease serve --socket-path /tmp/pl.sock --admin-socket /tmp/pl.admin \
//!     [--scrub-period-ms MS] [--faults PLAN.toml [--fault-seed N]] [--max-connections N]
//! pinlease serve --socket-path /tmp/pl.sock --socket-count 2 ...  # /tmp/pl.sock0, /tmp/pl.sock1
//! pinlease serve --fd 3 ...         # an inherited listening socket; or systemd's LISTEN_FDS
//! pinlease --print-capabilities     # QEMU's vhost-user backend program conventions
//! qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on \
//!     -numa node,memdev=mem -chardev socket,id=pl,path=/tmp/pl.sock \
//!     -device vhost-user-gpio-pci,chardev=pl        # carrier mode, QEMU <= 10.1
//! pinlease status --admin-socket /tmp/pl.admin [--json]
//! pinlease inject --admin-socket /tmp/pl.admin add|list|clear|load|now ...  # docs/faults.md 1.4
//! pinlease status --admin-socket /tmp/pl.admin --watch 2     # redraw every 2 s
//! pinlease generate man DIR | pinlease generate completions bash|zsh|fish|...
//! ```
//!
//! This file only parses the command line and dispatches: `serve`'s flags
//! become a configuration in `config.rs` (`TryFrom<ServeArgs>`, tested
//! without a daemon), the fault plan is loaded by `faults::load`, the
//! listening sockets are opened by `listen.rs`, the serve loops are
//! `server.rs`, the admin protocol `admin.rs` and the status tables
//! `status_view.rs`; `cli_docs.rs` generates the man pages and shell
//! completions from these clap definitions (contrib/, checked by a test).
//! The library's crate doc (src/lib.rs) maps the rest.

mod cli_docs;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use log::error;

use pinlease::config::{ConfigError, ServeArgs, ServeConfig};
use pinlease::faults::{FaultEngine, LoadError, PlanFile};
use pinlease::listen::{self, ListenError};
use pinlease::server::{install_signal_handlers, serve, ServerState};
use pinlease::status_view::{read_faults, render_faults, render_reply, StatusReply};

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
    /// Print the backend's capabilities as JSON (QEMU's vhost-user "backend
    /// program conventions") and exit.
    #[arg(long)]
    print_capabilities: bool,
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Serve the device on vhost-user sockets, one frontend at a time on
    /// each, until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Change a running daemon's fault plan (docs/faults.md 1.4).
    Inject {
        /// The daemon's admin socket.
        #[arg(long, env = "PINLEASE_ADMIN_SOCKET", hide_env_values = true)]
        admin_socket: PathBuf,
        #[command(subcommand)]
        op: InjectOp,
    },
    /// Show contexts, MRs, the lease table and counters of a running daemon.
    Status {
        /// The daemon's admin socket.
        #[arg(long, env = "PINLEASE_ADMIN_SOCKET", hide_env_values = true)]
        admin_socket: PathBuf,
        /// Print the daemon's JSON reply instead of tables (with --watch:
        /// one compact JSON object per line).
        #[arg(long)]
        json: bool,
        /// Ask again every SECONDS (0.1 to 86400, fractions allowed) until
        /// interrupted or the daemon stops answering; on a terminal each
        /// reply replaces the last, as watch(1) does.
        #[arg(long, value_name = "SECONDS", value_parser = watch::parse_period)]
        watch: Option<Duration>,
    },
    /// Write the man pages or print shell completions, generated from
    /// this command line's own definition.
    Generate {
        #[command(subcommand)]
        what: cli_docs::Generate,
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
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
            pinlease::faults::Action::RUNTIME.map(pinlease::faults::Action::name)))]
        action: String,
        /// The frontend (slot index) whose device it hits; needed when the
        /// daemon serves several sockets.
        #[arg(long, value_name = "INDEX")]
        frontend: Option<u64>,
    },
}

fn inject(admin_socket: &Path, op: InjectOp) -> Result<(), CliError> {
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
            // Checked here too, so the error names the file.
            let text = PlanFile::read(&file)?.text;
            json!({"cmd": "fault-load", "plan": text})
        }
        InjectOp::Now { action, frontend } => {
            json!({"cmd": "fault-now", "action": action, "frontend": frontend})
        }
    };
    let reply = pinlease::admin::request(admin_socket, &req)?;
    match req["cmd"].as_str() {
        Some("fault-add") => println!("rule {}", reply["id"]),
        Some("fault-list") => print!("{}", render_faults(&read_faults(&reply["faults"])?)),
        Some("fault-clear") => println!("cleared {} rule(s)", reply["cleared"]),
        Some("fault-load") => println!("loaded {} rule(s), seed {}", reply["rules"], reply["seed"]),
        _ => println!("fault injected"),
    }
    Ok(())
}

/// Why a command failed; each names what was wrong and the value seen.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plan(#[from] LoadError),
    #[error(transparent)]
    Daemon(#[from] pinlease::error::Error),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Sandbox(#[from] pinlease::sandbox::SandboxError),
    #[error("the daemon's reply cannot be read: {0}")]
    Reply(#[from] serde_json::Error),
    #[error(transparent)]
    Generate(#[from] cli_docs::GenerateError),
    #[error("writing to standard output: {0}")]
    Stdout(#[from] std::io::Error),
}

fn print_capabilities() -> Result<(), CliError> {
    println!(
        "{}",
        serde_json::to_string_pretty(&pinlease::capabilities::capabilities())?
    );
    Ok(())
}

fn serve_daemon(mut args: ServeArgs) -> Result<(), CliError> {
    if args.print_capabilities {
        return print_capabilities();
    }
    // Before any thread starts: a thread's arena is picked at its first
    // allocation.
    match pinlease::allocator::limit_arenas() {
        limit @ pinlease::allocator::ArenaLimit::Refused(_) => log::warn!("{limit}"),
        limit => log::info!("{limit}"),
    }
    // Read (and removed) before any thread starts.
    args.activation = listen::take_activation_from_env()?;
    let cfg = ServeConfig::try_from(args)?;
    if !cfg.faults.rules.is_empty() {
        log::info!(
            "fault plan: seed {}, {} rule(s)",
            cfg.faults.seed,
            cfg.faults.rules.len()
        );
    }
    let held = pinlease::sandbox::hold_stop_signals().map_err(|e| pinlease::error::Error::Io {
        what: "blocking SIGINT/SIGTERM until their handlers are installed".into(),
        source: e,
    })?;
    // Every listening socket is open (or adopted) from here on, and
    // everything opened by path is opened before the sandbox.
    let sockets = listen::open(&cfg.sockets)?;
    let bound = pinlease::server::bind(&cfg.serve_loop, sockets)?;
    let supervision = pinlease::sandbox::Supervision {
        listening_fds: bound.fds(),
        socket_files: bound.socket_files(&cfg.serve_loop),
        abort_report: cfg.abort_report.clone(),
    };
    let mut cfg = cfg;
    match pinlease::sandbox::enter(cfg.sandbox, &supervision) {
        Ok(mode) => cfg.serve_loop.sandboxed = mode != pinlease::sandbox::SandboxMode::None,
        Err(e) => {
            drop(bound);
            for f in &supervision.socket_files {
                let _ = std::fs::remove_file(f);
            }
            return Err(e.into());
        }
    }
    let names = bound.names();
    let state = ServerState::with_faults(FaultEngine::new(&cfg.faults, cfg.abort_report), names)?;
    install_signal_handlers(state.clone())?;
    held.release();
    Ok(serve(&cfg.serve_loop, bound, Arc::clone(&state))?)
}

/// One `pinlease status` reply, as JSON (`pretty`: indented, else one
/// line) or as the tables.
fn status_text(admin_socket: &Path, json: bool, pretty: bool) -> Result<String, CliError> {
    let reply = pinlease::admin::request(admin_socket, &serde_json::json!({"cmd": "status"}))?;
    Ok(match (json, pretty) {
        (true, true) => format!("{}\n", serde_json::to_string_pretty(&reply)?),
        (true, false) => format!("{reply}\n"),
        (false, _) => render_reply(&StatusReply::from_json(&reply)?),
    })
}

fn status(admin_socket: &Path, json: bool, watch: Option<Duration>) -> Result<(), CliError> {
    match watch {
        None => {
            print!("{}", status_text(admin_socket, json, true)?);
            Ok(())
        }
        Some(period) => {
            let title = format!("pinlease status --admin-socket {}", admin_socket.display());
            watch::run(&title, period, json, || {
                status_text(admin_socket, json, false)
            })
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    if cli.print_capabilities {
        // The convention: other options and arguments are ignored.
        return print_capabilities();
    }
    match cli.command {
        Some(Command::Serve(args)) => serve_daemon(args),
        Some(Command::Inject { admin_socket, op }) => inject(&admin_socket, op),
        Some(Command::Status {
            admin_socket,
            json,
            watch,
        }) => status(&admin_socket, json, watch),
        Some(Command::Generate { what }) => Ok(cli_docs::generate(what, Cli::command())?),
        None => Cli::command()
            .error(
                clap::error::ErrorKind::MissingSubcommand,
                "a subcommand (serve, status, inject, generate) or --print-capabilities is required",
            )
            .exit(),
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
