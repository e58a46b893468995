//! `pinlease`: the daemon (`serve`) and its admin client (`status`).

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

fn run(cli: Cli) -> pinlease::error::Result<()> {
    match cli.command {
        Command::Serve {
            socket_path,
            admin_socket,
            max_connections,
            event_backlog,
            scrub_period_ms,
        } => {
            let state = ServerState::new()?;
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
