//! `--sandbox`, `--seccomp` and `--socket-group` on the real daemon: what
//! the sandboxed process looks like from outside (namespaces, root,
//! capabilities, seccomp), that it still serves a frontend and its admin
//! socket, that its supervisor cleans up, forwards stops and passes on a
//! planned abort, an unprivileged daemon with `--socket-group`, and the
//! flags' bad input.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use pinlease_abi::*;
use pinlease_testkit::daemon::wait_for_path;
use serde_json::json;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The supervisor's one child: the sandboxed daemon. Call it once the
/// admin socket answered: the socket files exist before the sandbox is
/// entered, the admin thread only after it and after the filter.
fn sandboxed_pid(supervisor: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).unwrap();
    let pids: Vec<u32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        pids.len(),
        1,
        "supervisor {supervisor} children: {children:?}"
    );
    pids[0]
}

/// A field of /proc/PID/status.
fn proc_status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn ns(pid: &str, which: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{which}"))
        .unwrap()
        .display()
        .to_string()
}

#[track_caller]
fn assert_confined(pid: u32) {
    for set in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(proc_status(pid, set), "0000000000000000", "{set} of {pid}");
    }
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(proc_status(pid, "Seccomp"), "2", "a seccomp filter");
}

/// One request round trip: the sandboxed daemon serves.
fn serves(d: &Daemon) {
    let mut c = d.client();
    let ctx = c.create_context(1, "sandboxed").unwrap();
    c.alloc_mr(ctx, 2, PL_ACCESS_ALL).unwrap();
    assert_eq!(d.device()["mrs"].as_array().unwrap().len(), 1);
}

#[test]
fn the_default_is_the_namespace_sandbox_with_no_capabilities_and_seccomp_kill() {
    let mut d = Daemon::start();
    assert_eq!(d.status()["ok"], json!(true));
    let pid = sandboxed_pid(d.pid());
    assert_confined(pid);
    for which in ["mnt", "pid", "net", "ipc", "uts"] {
        assert_ne!(
            ns(&pid.to_string(), which),
            ns("self", which),
            "{which} namespace"
        );
    }
    // Its root is the empty tmpfs: nothing in it.
    let root = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .count();
    assert_eq!(root, 0, "entries in the sandbox's root");
    serves(&d);
    let log = d.log();
    assert!(log.contains("sandbox: namespace"), "{log}");
    assert!(log.contains("seccomp: kill ("), "{log}");
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(T);
    assert_eq!(st.code(), Some(0), "{st:?}\n{}", d.log());
    // The supervisor removed the socket files the daemon could not reach.
    assert!(!d.sock().exists() && !d.admin().exists());
}

#[test]
fn chroot_mode_runs_in_an_empty_directory_the_supervisor_removes() {
    if !is_root() {
        // chroot(2) needs CAP_SYS_CHROOT: unprivileged_refusals covers this.
        return;
    }
    let mut d = Daemon::start_with(&["--sandbox", "chroot"]);
    assert_eq!(d.status()["ok"], json!(true));
    let pid = sandboxed_pid(d.pid());
    assert_confined(pid);
    assert_eq!(ns(&pid.to_string(), "mnt"), ns("self", "mnt"));
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert!(
        root.display().to_string().contains("pinlease-chroot."),
        "{root:?}"
    );
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    assert_eq!(
        std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o555
    );
    serves(&d);
    d.signal(libc::SIGINT);
    assert_eq!(d.wait_exit(T).code(), Some(0), "{}", d.log());
    assert!(!root.exists(), "{root:?} left behind");
    assert!(!d.sock().exists() && !d.admin().exists());
}

#[test]
fn none_mode_has_no_supervisor_but_the_filter() {
    let mut d = Daemon::start_with(&["--sandbox", "none", "--seccomp", "log"]);
    assert_eq!(d.status()["ok"], json!(true));
    let pid = d.pid();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    assert_eq!(children.trim(), "", "no supervisor: the daemon itself");
    assert_eq!(proc_status(pid, "Seccomp"), "2");
    serves(&d);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(T).code(), Some(0));
    assert!(!d.sock().exists() && !d.admin().exists());
}

#[test]
fn a_planned_abort_in_the_sandbox_leaves_its_report_and_ends_with_sigabrt() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("abort-report.json");
    let mut d = Daemon::start_with(&["--abort-report", report.to_str().unwrap()]);
    let mut c = d.client();
    c.create_context(7, "before the abort").unwrap();
    let out = Command::new(d.bin())
        .args(["inject", "--admin-socket"])
        .arg(d.admin())
        .args(["now", "--action", "abort"])
        .output()
        .unwrap();
    // The daemon may die before it answers: its end is what is checked.
    let _ = out;
    let st = d.wait_exit(T);
    assert_eq!(st.signal(), Some(libc::SIGABRT), "{st:?}\n{}", d.log());
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["connected"], json!(true));
    assert_eq!(r["status"]["contexts"].as_array().unwrap().len(), 1, "{r}");
    assert!(!d.sock().exists() && !d.admin().exists());
}

/// Runs `pinlease serve` with ARGS in a fresh directory; its exit status,
/// stderr and what was left in the directory.
fn serve_refused(prefix: &[&str], args: &[&str]) -> (Option<i32>, String, usize) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(
        prefix
            .first()
            .copied()
            .unwrap_or(env!("CARGO_BIN_EXE_pinlease")),
    )
    .args(prefix.iter().skip(1))
    .args(if prefix.is_empty() {
        vec![]
    } else {
        vec![env!("CARGO_BIN_EXE_pinlease")]
    })
    .arg("serve")
    .arg("--socket-path")
    .arg(dir.path().join("vu.sock"))
    .arg("--admin-socket")
    .arg(dir.path().join("admin.sock"))
    .args(args)
    .stdin(Stdio::null())
    .output()
    .unwrap();
    let left = std::fs::read_dir(dir.path()).unwrap().count();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        left,
    )
}

#[test]
fn bad_sandbox_seccomp_and_socket_group_values_are_refused_before_listening() {
    for (args, names) in [
        (&["--sandbox", "jail"][..], ["--sandbox", "'jail'"]),
        (&["--seccomp", "allow"][..], ["--seccomp", "'allow'"]),
        (
            &["--socket-group", "no-such-group-pl"][..],
            ["--socket-group", "no-such-group-pl"],
        ),
    ] {
        let (code, err, left) = serve_refused(&[], args);
        assert!(matches!(code, Some(c) if c != 0), "{args:?}: {code:?}");
        for n in names {
            assert!(err.contains(n), "{args:?}: stderr should name {n}: {err}");
        }
        assert_eq!(left, 0, "{args:?}: files left behind");
    }
}

/// The nobody user's ids, and a second unprivileged user to connect as.
const NOBODY: &str = "65534";

fn as_nobody() -> Vec<&'static str> {
    vec![
        "setpriv",
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        "--",
    ]
}

#[test]
fn unprivileged_refusals() {
    if !is_root() {
        return; // switching to nobody needs root
    }
    // chroot needs CAP_SYS_CHROOT: refused naming the mode and the step.
    let (code, err, left) = serve_refused(&as_nobody(), &["--sandbox", "chroot"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--sandbox chroot: chroot("), "{err}");
    assert_eq!(left, 0, "nothing half-started: {err}");
    // A group nobody is not in cannot be given to the socket.
    let (code, err, left) = serve_refused(&as_nobody(), &["--socket-group", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--socket-group: chown to gid 0"), "{err}");
    assert_eq!(left, 0, "nothing half-started: {err}");
}

/// Can a process running as UID with supplementary GROUPS connect to PATH?
fn connects_as(uid: &str, groups: &str, path: &Path) -> bool {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", uid, "--regid", uid]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        cmd.args(["--groups", groups]);
    }
    let st = cmd
        .args([
            "/usr/bin/python3",
            "-c",
            "import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
        ])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    st.success()
}

/// The daemon as `nobody` with `--socket-group`, in each sandbox an
/// unprivileged user may have (namespace through a user namespace, and
/// none), served a real frontend.
#[test]
fn unprivileged_daemon_with_socket_group_serves_a_frontend() {
    if !is_root() {
        return; // switching users needs root
    }
    for mode in ["namespace", "none"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        std::os::unix::fs::chown(dir.path().join("daemon.log"), Some(65534), None).unwrap();
        let child = Command::new("setpriv")
            .args(as_nobody())
            .arg(env!("CARGO_BIN_EXE_pinlease"))
            .args(["--log-level", "debug", "serve", "--socket-path"])
            .arg(dir.path().join("vu.sock"))
            .arg("--admin-socket")
            .arg(dir.path().join("admin.sock"))
            .args(["--sandbox", mode, "--socket-group", NOBODY])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let path = dir.path().to_path_buf();
        let mut d = Daemon::adopt(env!("CARGO_BIN_EXE_pinlease"), child, dir);
        wait_for_path(&d.sock(), "vhost-user socket");
        let meta = std::fs::metadata(d.sock()).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777),
            (65534, 65534, 0o660),
            "{mode}"
        );
        // Another unprivileged user connects only as a member of the group.
        assert!(!connects_as("1", "", &d.sock()), "{mode}: not in the group");
        assert!(connects_as("1", NOBODY, &d.sock()), "{mode}: in the group");
        let mut c = d.client();
        let ctx = c.create_context(3, "unprivileged").unwrap();
        c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
        drop(c);
        let log = std::fs::read_to_string(path.join("daemon.log")).unwrap();
        assert!(log.contains(&format!("sandbox: {mode}")), "{log}");
        if mode == "namespace" {
            // Served a frontend: the sandbox is complete.
            let pid = sandboxed_pid(d.pid());
            assert_confined(pid);
            assert_ne!(ns(&pid.to_string(), "user"), ns("self", "user"));
        }
        d.signal(libc::SIGTERM);
        let st = d.wait_exit(T);
        assert_eq!(st.code(), Some(0), "{mode}: {st:?}\n{}", d.log());
        assert!(!d.sock().exists() && !d.admin().exists(), "{mode}");
    }
}
