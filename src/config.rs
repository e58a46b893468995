//! `pinlease serve`'s command line as a configuration: the clap arguments
//! ([`ServeArgs`]) and their conversion into what the daemon runs with
//! ([`ServeConfig`]), so every refusal can be tested without starting a
//! daemon.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::faults::{LoadError, Plan};
use crate::listen::{self, ActivatedFd, SocketSpec, MAX_SOCKET_COUNT};
use crate::model::events::DEFAULT_BACKLOG;
use crate::model::Limits;
use crate::sandbox::SandboxMode;
use crate::seccomp::SeccompMode;

/// Longest canary scrubber period `--scrub-period-ms` accepts (an hour).
pub const MAX_SCRUB_PERIOD_MS: u64 = 3_600_000;

// No doc comment here: the `serve` subcommand's help is its variant's.
#[derive(Parser, Debug, Clone, PartialEq)]
pub struct ServeArgs {
    /// vhost-user socket to listen on (QEMU's chardev path). Exactly one
    /// of --socket-path, --fd and socket activation (LISTEN_FDS).
    #[arg(long, value_name = "PATH")]
    pub socket_path: Option<PathBuf>,
    /// Serve an inherited, already listening unix socket (a file
    /// descriptor number); its file is not removed on exit.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub fd: Option<RawFd>,
    /// With --socket-path PATH: listen on PATH0 .. PATH{N-1}, one guest
    /// each, each with its own device state (at most 64). Under socket
    /// activation there is one frontend per passed socket.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=MAX_SOCKET_COUNT as i64))]
    pub socket_count: Option<u32>,
    /// Print the backend's capabilities as JSON (QEMU's vhost-user
    /// "backend program conventions") and exit; other arguments are ignored.
    #[arg(long)]
    pub print_capabilities: bool,
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
    /// Confinement once the sockets are open (docs/security.md). Default:
    /// the strictest that works here: namespace, else (as root) chroot;
    /// the daemon stops if neither is allowed.
    #[arg(long, value_enum, value_name = "MODE", env = "PINLEASE_SANDBOX")]
    pub sandbox: Option<SandboxMode>,
    /// What a system call outside the allow-list does (docs/security.md).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SeccompMode::Kill,
          env = "PINLEASE_SECCOMP")]
    pub seccomp: SeccompMode,
    /// Group (name or number) of the vhost-user socket, made mode 0660, so
    /// a frontend running as another user in GROUP can connect.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// The sockets systemd passed (`listen::take_activation_from_env`);
    /// not a flag.
    #[arg(skip)]
    pub activation: Option<Vec<ActivatedFd>>,
}

/// What the serve loop (`crate::server::serve`) runs with.
#[derive(Debug, Clone)]
pub struct ServeLoopConfig {
    pub admin_socket: Option<PathBuf>,
    pub limits: Limits,
    /// Serve this many connections, then exit (tests); None: until signalled.
    pub max_connections: Option<u64>,
    /// Canary scrubber period (docs/abi.md §5.9.1); None: no scrubber.
    pub scrub_period: Option<Duration>,
    /// `--socket-group`, resolved: the vhost-user socket's gid (mode 0660).
    pub socket_group: Option<u32>,
    pub seccomp: SeccompMode,
    /// Set once the daemon is in a sandbox: the seccomp filter then leaves
    /// out opening files by path.
    pub sandboxed: bool,
}

/// Everything `pinlease serve` runs with: the serve loop's configuration
/// and the fault plan, which outlives connections.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the listening sockets come from (`crate::listen::open`).
    pub sockets: SocketSpec,
    pub serve_loop: ServeLoopConfig,
    /// `--faults` with `--fault-seed` applied; no rules without `--faults`.
    pub faults: Plan,
    pub abort_report: Option<PathBuf>,
    /// `--sandbox`; None: the strictest that works.
    pub sandbox: Option<SandboxMode>,
}

/// A `pinlease serve` argument that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--scrub-period-ms {value}: out of range (0 = off, at most {MAX_SCRUB_PERIOD_MS})")]
    ScrubPeriod { value: u64 },
    #[error("exactly one of --socket-path, --fd and socket activation (LISTEN_FDS) says where to listen; got {given}")]
    SocketSource { given: String },
    #[error("--socket-count {value}: {what}")]
    SocketCount { value: u32, what: String },
    /// `--faults`: the error names the file.
    #[error(transparent)]
    Faults(#[from] LoadError),
    #[error("--socket-group {value}: {why}")]
    SocketGroup { value: String, why: String },
}

/// The gid of GROUP (a group name, or a number).
pub fn resolve_group(group: &str) -> Result<u32, ConfigError> {
    let err = |why: String| ConfigError::SocketGroup {
        value: group.to_string(),
        why,
    };
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group).map_err(|_| err("contains a NUL byte".into()))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: group is plain data the call fills in.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the sizes given.
    let r = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if r != 0 {
        return Err(err(format!(
            "looking it up: {}",
            std::io::Error::from_raw_os_error(r)
        )));
    }
    if found.is_null() {
        return Err(err("no such group".into()));
    }
    Ok(grp.gr_gid)
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
        let sockets = socket_spec(&args)?;
        if let (Some(group), SocketSpec::Fd(_) | SocketSpec::Activated(_)) =
            (&args.socket_group, &sockets)
        {
            // The daemon did not create an inherited socket's file (it
            // may have none): whoever made it sets its group (systemd:
            // SocketGroup= and SocketMode=).
            return Err(ConfigError::SocketGroup {
                value: group.clone(),
                why: "only applies to sockets the daemon binds (--socket-path); \
                      set the group where an inherited socket is made"
                    .into(),
            });
        }
        let socket_group = args
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?;
        let faults = Plan::load(args.faults.as_deref(), args.fault_seed)?;
        Ok(ServeConfig {
            sockets,
            serve_loop: ServeLoopConfig {
                admin_socket: args.admin_socket,
                limits: Limits {
                    event_backlog: args.event_backlog,
                    ..Limits::default()
                },
                max_connections: args.max_connections,
                scrub_period: (args.scrub_period_ms > 0)
                    .then(|| Duration::from_millis(args.scrub_period_ms)),
                socket_group,
                seccomp: args.seccomp,
                sandboxed: false,
            },
            faults,
            abort_report: args.abort_report,
            sandbox: args.sandbox,
        })
    }
}

/// Where to listen, from --socket-path, --socket-count, --fd and the
/// socket-activation fds: exactly one source.
fn socket_spec(args: &ServeArgs) -> Result<SocketSpec, ConfigError> {
    let mut given = Vec::new();
    if let Some(p) = &args.socket_path {
        given.push(format!("--socket-path {}", p.display()));
    }
    if let Some(fd) = args.fd {
        given.push(format!("--fd {fd}"));
    }
    if let Some(a) = &args.activation {
        given.push(format!("LISTEN_FDS={}", a.len()));
    }
    if given.len() != 1 {
        return Err(ConfigError::SocketSource {
            given: if given.is_empty() {
                "none".into()
            } else {
                given.join(" and ")
            },
        });
    }
    let count_err = |value, what: String| ConfigError::SocketCount { value, what };
    if let Some(n) = args.socket_count {
        if n == 0 || n > MAX_SOCKET_COUNT {
            return Err(count_err(
                n,
                format!("out of range (1 to {MAX_SOCKET_COUNT})"),
            ));
        }
    }
    match (
        &args.socket_path,
        args.fd,
        &args.activation,
        args.socket_count,
    ) {
        (Some(p), _, _, None) => Ok(SocketSpec::Path(p.clone())),
        (Some(base), _, _, Some(count)) => {
            let spec = SocketSpec::Numbered {
                base: base.clone(),
                count,
            };
            if let Some(long) = spec.paths().into_iter().find(|p| !listen::path_fits(p)) {
                return Err(count_err(
                    count,
                    format!(
                        "socket {} is {} bytes, longer than a unix socket path can be ({})",
                        long.display(),
                        long.as_os_str().len(),
                        listen::MAX_SOCKET_PATH_BYTES
                    ),
                ));
            }
            Ok(spec)
        }
        (_, Some(fd), _, Some(n)) => Err(count_err(
            n,
            format!("only with --socket-path (--fd {fd} passes one socket)"),
        )),
        (_, Some(fd), _, None) => Ok(SocketSpec::Fd(fd)),
        (_, _, Some(fds), n) => match n {
            Some(n) if n as usize != fds.len() => Err(count_err(
                n,
                format!(
                    "socket activation passed {} socket(s): one frontend each",
                    fds.len()
                ),
            )),
            _ => Ok(SocketSpec::Activated(fds.clone())),
        },
        (None, None, None, _) => unreachable!("exactly one source was checked above"),
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
        assert_eq!(c.sockets, SocketSpec::Path("/run/vu.sock".into()));
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
        // Whoever runs the tests may have the variables set.
        if std::env::var_os("PINLEASE_SANDBOX").is_none() {
            assert_eq!(c.sandbox, None, "the default is the strictest that works");
        }
        if std::env::var_os("PINLEASE_SECCOMP").is_none() {
            assert_eq!(c.serve_loop.seccomp, SeccompMode::Kill);
        }
        assert_eq!(c.serve_loop.socket_group, None);
    }

    #[test]
    fn sandbox_seccomp_and_socket_group_flags() {
        for (v, want) in [
            ("namespace", SandboxMode::Namespace),
            ("chroot", SandboxMode::Chroot),
            ("none", SandboxMode::None),
        ] {
            assert_eq!(config(&["--sandbox", v]).unwrap().sandbox, Some(want));
        }
        for (v, want) in [
            ("kill", SeccompMode::Kill),
            ("log", SeccompMode::Log),
            ("trap", SeccompMode::Trap),
            ("none", SeccompMode::None),
        ] {
            assert_eq!(config(&["--seccomp", v]).unwrap().serve_loop.seccomp, want);
        }
        // root's group exists everywhere, as name and number.
        for v in ["root", "0"] {
            assert_eq!(
                config(&["--socket-group", v])
                    .unwrap()
                    .serve_loop
                    .socket_group,
                Some(0)
            );
        }
    }

    #[test]
    fn bad_sandbox_seccomp_or_socket_group_is_refused_naming_flag_and_value() {
        for (flag, v) in [
            ("--sandbox", "jail"),
            ("--seccomp", "allow"),
            ("--seccomp", "KILL "),
        ] {
            let e = parse(&[&format!("{flag}={v}")]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidValue, "{flag} {v}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(flag) && msg.contains(&format!("'{v}'")),
                "{msg}"
            );
        }
        let e = config(&["--socket-group", "no-such-group-pl"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--socket-group no-such-group-pl: no such group"
        );
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

    fn bare(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        ServeArgs::try_parse_from(["serve"].iter().chain(args))
    }

    fn activated(n: i32) -> Option<Vec<ActivatedFd>> {
        Some(
            (0..n)
                .map(|i| ActivatedFd {
                    fd: 3 + i,
                    name: None,
                })
                .collect(),
        )
    }

    #[test]
    fn each_socket_source() {
        let c = ServeConfig::try_from(bare(&["--fd", "5"]).unwrap()).unwrap();
        assert_eq!(c.sockets, SocketSpec::Fd(5));
        let c = config(&["--socket-count", "3"]).unwrap();
        assert_eq!(
            c.sockets,
            SocketSpec::Numbered {
                base: "/run/vu.sock".into(),
                count: 3
            }
        );
        for count in [None, Some(2)] {
            let mut args = bare(&[]).unwrap();
            args.activation = activated(2);
            args.socket_count = count;
            let c = ServeConfig::try_from(args).unwrap();
            assert_eq!(c.sockets, SocketSpec::Activated(activated(2).unwrap()));
        }
    }

    #[test]
    fn not_exactly_one_socket_source_is_refused() {
        let refused = |args: ServeArgs| ServeConfig::try_from(args).unwrap_err().to_string();
        let prefix = "exactly one of --socket-path, --fd and socket activation (LISTEN_FDS) says where to listen; got ";
        assert_eq!(refused(bare(&[]).unwrap()), format!("{prefix}none"));
        assert_eq!(
            refused(parse(&["--fd", "3"]).unwrap()),
            format!("{prefix}--socket-path /run/vu.sock and --fd 3")
        );
        let mut args = bare(&["--fd", "4"]).unwrap();
        args.activation = activated(1);
        assert_eq!(refused(args), format!("{prefix}--fd 4 and LISTEN_FDS=1"));
    }

    #[test]
    fn socket_group_with_an_inherited_socket_is_refused() {
        let msg = "--socket-group root: only applies to sockets the daemon binds \
                   (--socket-path); set the group where an inherited socket is made";
        let refused = |args: ServeArgs| ServeConfig::try_from(args).unwrap_err().to_string();
        assert_eq!(
            refused(bare(&["--fd", "5", "--socket-group", "root"]).unwrap()),
            msg
        );
        let mut args = bare(&["--socket-group", "root"]).unwrap();
        args.activation = activated(2);
        assert_eq!(refused(args), msg);
        // With numbered sockets the daemon binds every one: accepted.
        let c = config(&["--socket-count", "2", "--socket-group", "0"]).unwrap();
        assert_eq!(c.serve_loop.socket_group, Some(0));
    }

    #[test]
    fn bad_socket_counts_are_refused() {
        for v in ["0", "65", "-1", "many", "4294967296"] {
            let e = parse(&[&format!("--socket-count={v}")]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{v}: {e}");
            assert!(
                e.to_string().contains(v) && e.to_string().contains("--socket-count"),
                "{e}"
            );
        }
        let refused = |args: ServeArgs| ServeConfig::try_from(args).unwrap_err().to_string();
        let mut args = parse(&[]).unwrap();
        args.socket_count = Some(0);
        assert_eq!(refused(args), "--socket-count 0: out of range (1 to 64)");
        assert_eq!(
            refused(bare(&["--fd", "3", "--socket-count", "2"]).unwrap()),
            "--socket-count 2: only with --socket-path (--fd 3 passes one socket)"
        );
        let mut args = bare(&["--socket-count", "3"]).unwrap();
        args.activation = activated(2);
        assert_eq!(
            refused(args),
            "--socket-count 3: socket activation passed 2 socket(s): one frontend each"
        );
        // 106 bytes fit; with a two-digit index they do not.
        let base = format!("/tmp/{}", "p".repeat(101));
        assert!(config(&[]).is_ok());
        let ok = bare(&["--socket-path", &base, "--socket-count", "10"]).unwrap();
        assert!(ServeConfig::try_from(ok).is_ok());
        let long = bare(&["--socket-path", &base, "--socket-count", "11"]).unwrap();
        assert_eq!(
            refused(long),
            format!(
                "--socket-count 11: socket {base}10 is 108 bytes, longer than a unix socket path can be (107)"
            )
        );
    }

    #[test]
    fn print_capabilities_needs_no_socket() {
        let args = bare(&["--print-capabilities"]).unwrap();
        assert!(args.print_capabilities);
    }
}
