//! The `pinlease` command line around a running daemon: `status --watch`
//! (frames until the daemon goes away, bad periods refused before any
//! request) and `generate` (man pages and completions, bad input).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn pinlease() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pinlease"));
    c.env_remove("PINLEASE_ADMIN_SOCKET");
    c
}

#[test]
fn status_watch_json_prints_one_reply_per_line_until_the_daemon_stops() {
    let mut d = Daemon::start();
    let mut watch = pinlease()
        .args(["status", "--json", "--watch", "0.1", "--admin-socket"])
        .arg(d.admin())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // A frontend connecting between frames shows up in a later frame.
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["ok"], json!(true), "{first}");
    let _frontend = d.frontend();
    d.wait_connection(1);
    let mut seen_connected = false;
    for _ in 0..50 {
        let line = lines.next().expect("watch ended early").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        if v["connected"] == json!(true) {
            seen_connected = true;
            break;
        }
    }
    assert!(seen_connected, "no frame showed the frontend connected");
    d.signal(libc::SIGTERM);
    d.wait_exit(T);
    // The watch's next request fails: it ends non-zero naming the socket.
    let status = watch.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "stderr {stderr}");
    let admin = d.admin();
    assert!(
        stderr.contains(&*admin.to_string_lossy()),
        "stderr should name {}: {stderr}",
        admin.display()
    );
}

#[test]
fn status_watch_tables_are_headed_when_piped() {
    let d = Daemon::start();
    let mut watch = pinlease()
        .args(["status", "--watch", "0.1", "--admin-socket"])
        .arg(d.admin())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let heads = lines
        .map(|l| l.unwrap())
        .filter(|l| l.starts_with("Every 0.1s: pinlease status --admin-socket"))
        .take(2)
        .count();
    watch.kill().unwrap();
    watch.wait().unwrap();
    assert_eq!(heads, 2);
}

#[test]
fn status_watch_refuses_bad_periods_naming_flag_and_value() {
    let d = Daemon::start();
    for bad in ["0", "-1", "abc", "100000"] {
        let out = pinlease()
            .args(["status", "--admin-socket"])
            .arg(d.admin())
            .arg(format!("--watch={bad}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--watch") && stderr.contains(bad),
            "{bad}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{bad}: printed a frame");
    }
}

#[test]
fn generate_refuses_an_unknown_shell_and_a_missing_directory() {
    let out = pinlease()
        .args(["generate", "completions", "tcsh"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tcsh"), "{stderr}");
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("man1");
    let out = pinlease()
        .args(["--log-level", "off", "generate", "man"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&*missing.to_string_lossy()), "{stderr}");
    assert!(!missing.exists());
}

#[test]
fn generated_bash_completion_is_valid_bash() {
    let out = pinlease()
        .args(["generate", "completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &out.stdout).unwrap();
    // bash -n parses without running; then sourcing must register it.
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "bash -n {0} && source {0} && complete -p pinlease",
            tmp.path().display()
        ))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
