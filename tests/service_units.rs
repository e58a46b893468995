//! The daemon started the way services are: under systemd socket
//! activation (`systemd-socket-activate`, which passes listening sockets
//! as systemd does: LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), and the unit
//! files shipped in contrib/systemd: their ExecStart line run as written
//! (read from the file, so a broken unit fails here), and
//! `systemd-analyze verify` on them. systemd need not be the machine's
//! init: both tools work standalone (Debian's systemd package,
//! scripts/install-host-deps installs it). Like systemd with `Accept=no`,
//! systemd-socket-activate starts the daemon on the first connection to a
//! socket, so each test connects before it waits for the admin socket.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use pinlease_abi::*;
use pinlease_testkit::daemon::wait_for_path;
use pinlease_testkit::frontend::client::Client;
use pinlease_testkit::frontend::TestFrontend;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_pinlease");
const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd");
/// Where the service unit expects the binary (contrib/README.md says how
/// to install it there).
const INSTALLED_BIN: &str = "/usr/local/bin/pinlease";
const INSTANCE: &str = "guest1";

fn tool(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing (Debian package systemd; scripts/install-host-deps installs it)",
        p.display()
    );
    p
}

/// `KEY=` of a unit file (the first; the units have no repeated keys).
fn unit_value(unit: &str, key: &str) -> String {
    let path = Path::new(UNITS).join(unit);
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{} has no {key}=", path.display()))
        .trim()
        .to_string()
}

/// The unit specifiers the units use: %t (runtime directory), %i
/// (instance); any other is a test failure, so a new one gets handled here.
fn specifiers(s: &str, runtime: &Path) -> String {
    let out = s
        .replace("%t", runtime.to_str().unwrap())
        .replace("%i", INSTANCE);
    assert!(!out.contains('%'), "unhandled specifier in {s:?}");
    out
}

/// `systemd-socket-activate -l SOCKET... [--fdname=NAMES] ARGV`, stderr
/// into the daemon's log.
fn activate(
    dir: &Path,
    sockets: &[PathBuf],
    fdnames: Option<&str>,
    argv: &[String],
) -> std::process::Child {
    let mut cmd = Command::new(tool("systemd-socket-activate"));
    for s in sockets {
        cmd.arg("-l").arg(s);
    }
    if let Some(n) = fdnames {
        cmd.arg(format!("--fdname={n}"));
    }
    cmd.args(argv)
        .env_remove("PINLEASE_ADMIN_SOCKET")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap()
}

fn client(sock: &Path) -> Client {
    Client::new(TestFrontend::connect(sock, frontend_config(), T).unwrap())
}

/// Some requests that change the device, and what status then shows.
fn exercise(c: &mut Client, comm: &str) {
    let ctx = c.create_context(5, comm).unwrap();
    let (key, pages) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    assert_eq!(c.fetch_add(ctx, key, 8, 3).unwrap(), 0);
    assert_eq!(
        c.frontend().read_mem(pages[0] + 8, 8).unwrap(),
        3u64.to_le_bytes()
    );
}

#[test]
fn the_sockets_systemd_passes_are_served_one_frontend_each() {
    let dir = tempfile::tempdir().unwrap();
    let socks: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("act{i}.sock")))
        .collect();
    let admin = dir.path().join("admin.sock");
    let argv: Vec<String> = [BIN, "--log-level", "debug", "serve", "--admin-socket"]
        .iter()
        .map(|s| s.to_string())
        .chain([admin.to_str().unwrap().to_string()])
        .collect();
    // Adopted at once: a failing test kills it.
    let child = activate(dir.path(), &socks, Some("left:right"), &argv);
    let mut d = Daemon::adopt(BIN, child, dir);
    wait_for_path(&socks[1], "systemd-socket-activate's socket");
    // The first connection starts the daemon.
    let mut a = client(&socks[0]);
    wait_for_path(&admin, "admin socket");
    let mut b = client(&socks[1]);
    exercise(&mut a, "left-guest");
    b.nop().unwrap();
    let s = d.status();
    assert_eq!(s["frontends"][0]["socket"], json!("fd 3 (left)"));
    assert_eq!(s["frontends"][1]["socket"], json!("fd 4 (right)"));
    assert_eq!(
        s["frontends"][0]["status"]["contexts"][0]["comm"],
        json!("left-guest")
    );
    assert_eq!(s["frontends"][1]["status"]["contexts"], json!([]));
    drop((a, b));
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(T).code(), Some(0), "log:\n{}", d.log());
    for s in &socks {
        assert!(s.exists(), "{} is systemd's: it must stay", s.display());
    }
}

#[test]
fn socket_activation_and_a_socket_path_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("act.sock");
    let other = dir.path().join("other.sock");
    let argv: Vec<String> = [BIN, "serve", "--socket-path", other.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let child = activate(dir.path(), std::slice::from_ref(&sock), None, &argv);
    let mut d = Daemon::adopt(BIN, child, dir);
    wait_for_path(&sock, "systemd-socket-activate's socket");
    let _first = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let st = d.wait_exit(T);
    let log = d.log();
    assert!(!st.success(), "{log}");
    assert!(
        log.contains(&format!(
            "got --socket-path {} and LISTEN_FDS=1",
            other.display()
        )),
        "{log}"
    );
    assert!(!other.exists());
}

#[test]
fn the_service_units_exec_start_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    let listen = PathBuf::from(specifiers(
        &unit_value("pinlease@.socket", "ListenStream"),
        &runtime,
    ));
    // systemd creates the socket's directory (DirectoryMode=).
    std::fs::create_dir_all(listen.parent().unwrap()).unwrap();
    let exec = specifiers(&unit_value("pinlease@.service", "ExecStart"), &runtime);
    let mut argv: Vec<String> = exec.split_whitespace().map(String::from).collect();
    assert_eq!(argv[0], INSTALLED_BIN, "ExecStart runs {}", argv[0]);
    argv[0] = BIN.to_string();
    let admin_at = argv.iter().position(|a| a == "--admin-socket").unwrap();
    let admin = PathBuf::from(&argv[admin_at + 1]);
    let child = activate(dir.path(), std::slice::from_ref(&listen), None, &argv);
    let mut d = Daemon::adopt(BIN, child, dir);
    wait_for_path(&listen, "systemd-socket-activate's socket");
    let mut c = client(&listen);
    wait_for_path(&admin, "admin socket (the unit's --admin-socket)");
    exercise(&mut c, "unit-guest");
    let status = Command::new(BIN)
        .args(["status", "--admin-socket"])
        .arg(&admin)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("frontend: connected (connections served: 1)"),
        "{text}"
    );
    assert!(text.contains("unit-guest"), "{text}");
    drop(c);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(T).code(), Some(0), "log:\n{}", d.log());
    assert!(listen.exists(), "the socket unit's file must stay");
    assert!(!admin.exists(), "the daemon removes its admin socket");
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let dir = tempfile::tempdir().unwrap();
    for unit in ["pinlease@.socket", "pinlease@.service"] {
        let text = std::fs::read_to_string(Path::new(UNITS).join(unit)).unwrap();
        // verify checks that ExecStart's binary exists: the one built here.
        std::fs::write(dir.path().join(unit), text.replace(INSTALLED_BIN, BIN)).unwrap();
    }
    let out = Command::new(tool("systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(dir.path().join(format!("pinlease@{INSTANCE}.socket")))
        .arg(dir.path().join(format!("pinlease@{INSTANCE}.service")))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("pinlease@"),
        "systemd-analyze has remarks on the units:\n{said}"
    );
}
