//! `pinlease serve`'s command line as a configuration: the clap arguments
//! ([`ServeArgs`]) and their conversion into what the daemon runs with
//! ([`ServeConfig`]), so every refusal can be tested without starting a
//! daemon.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::faults::{LoadError, Plan};
use crate::model::events::DEFAULT_BACKLOG;
use crate::model::Limits;

/// Longest canary scrubber period `--scrub-period-ms` accepts (an hour).
pub const MAX_SCRUB_PERIOD_MS: u64 = 3_600_000;

// No doc comment here: the `serve` subcommand's help is its variant's.
#[derive(Parser, Debug, Clone, PartialEq)]
pub struct ServeArgs {
    /// vhost-user socket to listen on (QEMU's chardev path).
    #[arg(long)]
    pub socket_path: PathBuf,
    /// Admin socket for `pinlease status` (created mode 0600).
    #[arg(long, env = "PINLEASE_ADMIN_SOCKET", hide_env_values = true)]
    pub admin_socket: Option<PathBuf>,
    /// Exit after serving this many frontends (default: never).
    #[arg(long)]
    pub max_connections: Option<u64>,
    /// Event backlog kept while the driver posts no event buffers.
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    pub event_backlog: usize,
    /// Canary scrubber period in milliseconds: every period the device
    /// verifies and rewrites canaries in each PL_REG_SCRUB MR
    /// (docs/abi.md 5.9.1). 0 = off (the default); at most 3600000.
    #[arg(long, default_value_t = 0, value_name = "MS", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SCRUB_PERIOD_MS))]
    pub scrub_period_ms: u64,
    /// Fault plan (TOML, docs/faults.md 1.1); invalid plans stop the
    /// daemon before it listens.
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Seed of the fault plan's random streams (overrides the file's).
    #[arg(long, value_name = "N")]
    pub fault_seed: Option<u64>,
    /// Where an `abort` fault writes the status JSON before aborting.
    #[arg(long, value_name = "PATH")]
    pub abort_report: Option<PathBuf>,
}

/// What the serve loop (`crate::server::serve`) runs with.
#[derive(Debug, Clone)]
pub struct ServeLoopConfig {
    pub socket_path: PathBuf,
    pub admin_socket: Option<PathBuf>,
    pub limits: Limits,
    /// Serve this many connections, then exit (tests); None: until signalled.
    pub max_connections: Option<u64>,
    /// Canary scrubber period (docs/abi.md §5.9.1); None: no scrubber.
    pub scrub_period: Option<Duration>,
}

/// Everything `pinlease serve` runs with: the serve loop's configuration
/// and the fault plan, which outlives connections.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub serve_loop: ServeLoopConfig,
    /// `--faults` with `--fault-seed` applied; no rules without `--faults`.
    pub faults: Plan,
    pub abort_report: Option<PathBuf>,
}

/// A `pinlease serve` argument that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--scrub-period-ms {value}: out of range (0 = off, at most {MAX_SCRUB_PERIOD_MS})")]
    ScrubPeriod { value: u64 },
    /// `--faults`: the error names the file.
    #[error(transparent)]
    Faults(#[from] LoadError),
}

impl TryFrom<ServeArgs> for ServeConfig {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        // clap refuses these too; checked again for arguments built in code.
        if args.scrub_period_ms > MAX_SCRUB_PERIOD_MS {
            return Err(ConfigError::ScrubPeriod {
                value: args.scrub_period_ms,
            });
        }
        let faults = Plan::load(args.faults.as_deref(), args.fault_seed)?;
        Ok(ServeConfig {
            serve_loop: ServeLoopConfig {
                socket_path: args.socket_path,
                admin_socket: args.admin_socket,
                limits: Limits {
                    event_backlog: args.event_backlog,
                    ..Limits::default()
                },
                max_connections: args.max_connections,
                scrub_period: (args.scrub_period_ms > 0)
                    .then(|| Duration::from_millis(args.scrub_period_ms)),
            },
            faults,
            abort_report: args.abort_report,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;

    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        ServeArgs::try_parse_from(
            ["serve", "--socket-path", "/run/vu.sock"]
                .iter()
                .chain(args),
        )
    }

    fn config(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        ServeConfig::try_from(parse(args).expect("arguments parse"))
    }

    fn limits(c: &ServeConfig) -> String {
        format!("{:?}", c.serve_loop.limits)
    }

    fn plan_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.serve_loop.socket_path, Path::new("/run/vu.sock"));
        // Whoever runs the tests may have the variable set.
        let env = std::env::var_os("PINLEASE_ADMIN_SOCKET").map(PathBuf::from);
        assert_eq!(c.serve_loop.admin_socket, env);
        // Limits has no PartialEq; its Debug text shows every field.
        assert_eq!(limits(&c), format!("{:?}", Limits::default()));
        assert_eq!(c.serve_loop.limits.event_backlog, DEFAULT_BACKLOG);
        assert_eq!(c.serve_loop.max_connections, None);
        assert_eq!(c.serve_loop.scrub_period, None);
        assert_eq!(c.faults, Plan::default());
        assert_eq!(c.abort_report, None);
    }

    #[test]
    fn each_flag() {
        let c = config(&[
            "--admin-socket",
            "/run/admin.sock",
            "--max-connections",
            "3",
            "--event-backlog",
            "17",
            "--scrub-period-ms",
            "250",
            "--abort-report",
            "/tmp/report.json",
        ])
        .unwrap();
        assert_eq!(
            c.serve_loop.admin_socket.as_deref(),
            Some(Path::new("/run/admin.sock"))
        );
        assert_eq!(c.serve_loop.max_connections, Some(3));
        let want = Limits {
            event_backlog: 17,
            ..Limits::default()
        };
        assert_eq!(limits(&c), format!("{want:?}"));
        assert_eq!(c.serve_loop.scrub_period, Some(Duration::from_millis(250)));
        assert_eq!(
            c.abort_report.as_deref(),
            Some(Path::new("/tmp/report.json"))
        );

        let c = config(&["--scrub-period-ms", &MAX_SCRUB_PERIOD_MS.to_string()]).unwrap();
        assert_eq!(
            c.serve_loop.scrub_period,
            Some(Duration::from_millis(MAX_SCRUB_PERIOD_MS))
        );
    }

    #[test]
    fn fault_plan_and_seed_override() {
        let f =
            plan_file("seed = 3\n[[rule]]\npoint = \"request:NOP:before\"\naction = \"drop\"\n");
        let path = f.path().to_str().unwrap();
        let c = config(&["--faults", path]).unwrap();
        assert_eq!((c.faults.seed, c.faults.rules.len()), (3, 1));
        let c = config(&["--faults", path, "--fault-seed", "11"]).unwrap();
        assert_eq!((c.faults.seed, c.faults.rules.len()), (11, 1));
        let c = config(&["--fault-seed", "9"]).unwrap();
        assert_eq!(
            c.faults,
            Plan {
                seed: 9,
                rules: vec![]
            }
        );
    }

    #[test]
    fn scrub_period_out_of_range_is_refused() {
        for v in ["3600001", "-1", "many"] {
            let e = parse(&["--scrub-period-ms", v]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{v}: {e}");
            assert!(
                e.to_string().contains(v) && e.to_string().contains("--scrub-period-ms"),
                "{e}"
            );
        }
        let mut args = parse(&[]).unwrap();
        args.scrub_period_ms = MAX_SCRUB_PERIOD_MS + 1;
        let e = ServeConfig::try_from(args).unwrap_err();
        assert!(
            matches!(e, ConfigError::ScrubPeriod { value } if value == MAX_SCRUB_PERIOD_MS + 1),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "--scrub-period-ms 3600001: out of range (0 = off, at most 3600000)"
        );
    }

    #[test]
    fn missing_or_invalid_fault_plan_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        let e = config(&["--faults", missing.to_str().unwrap()]).unwrap_err();
        assert!(
            matches!(e, ConfigError::Faults(LoadError::Read { ref path, .. }) if *path == missing),
            "{e:?}"
        );
        assert!(e.to_string().contains(missing.to_str().unwrap()), "{e}");

        let f = plan_file(
            "[[rule]]\npoint = \"request:REG_MR:before\"\naction = \"fail\"\nstatus = \"ENOPE\"\n",
        );
        let path = f.path().to_str().unwrap();
        let e = config(&["--faults", path, "--fault-seed", "4"]).unwrap_err();
        assert!(
            matches!(e, ConfigError::Faults(LoadError::Invalid { .. })),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "fault plan {path}: rule 1: key \"status\" = \"ENOPE\""
            )),
            "{msg}"
        );
    }

    #[test]
    fn bad_or_missing_values_are_refused_by_the_parser() {
        let e = ServeArgs::try_parse_from(["serve"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{e}");
        assert!(e.to_string().contains("--socket-path"), "{e}");
        for (flag, v) in [
            ("--max-connections", "-2"),
            ("--event-backlog", "lots"),
            ("--fault-seed", "-1"),
        ] {
            // Joined, so clap reads "-2" as the value, not as a flag.
            let e = parse(&[&format!("{flag}={v}")]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{flag} {v}: {e}");
            assert!(e.to_string().contains(flag), "{flag} {v}: {e}");
        }
    }
}
