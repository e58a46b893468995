//! Where the daemon listens: an inherited socket (`--fd`), several sockets
//! with a device each (`--socket-count`, two frontends at once, shown apart
//! by `pinlease status`), the refusals of every listening flag (each names
//! the flag and the value, and leaves no socket file behind), and
//! `--print-capabilities` in the form of QEMU's backend program
//! conventions.

mod common;

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::mr::dma;
use common::*;
use pinlease_abi::*;
use pinlease_testkit::daemon::{poll, wait_for_path};
use pinlease_testkit::frontend::client::Client;
use pinlease_testkit::frontend::TestFrontend;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_pinlease");

/// The fd number an inherited socket gets in the daemon.
const CHILD_FD: RawFd = 7;

/// `pinlease serve ARGS` with `fd` as the child's fd [`CHILD_FD`].
fn serve_with_fd(fd: Option<RawFd>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-level", "debug", "serve"])
        .args(args)
        .env_remove("PINLEASE_ADMIN_SOCKET")
        .stdin(Stdio::null());
    if let Some(fd) = fd {
        // SAFETY: between fork and exec only dup2 or fcntl runs, both
        // async-signal-safe. dup2 leaves the new fd without FD_CLOEXEC, so
        // the daemon gets it; but when the socket already IS fd CHILD_FD
        // (tests run in parallel, so fd numbers vary) dup2 does nothing and
        // the fd would close at exec: clear FD_CLOEXEC instead.
        unsafe {
            cmd.pre_exec(move || {
                let r = if fd == CHILD_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, CHILD_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The daemon refused: non-zero exit, and stderr's `pinlease:` line has
/// every piece of `names`.
#[track_caller]
fn refused(out: &Output, names: &[&str]) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "should fail: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("pinlease: ") || l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    for n in names {
        assert!(line.contains(n), "{n:?} not in {line:?}");
    }
    line.to_string()
}

#[test]
fn an_inherited_listening_socket_is_served_and_its_file_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inherited.sock");
    let admin = dir.path().join("admin.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let fd = CHILD_FD.to_string();
    let child = serve_with_fd(
        Some(listener.as_raw_fd()),
        &["--fd", &fd, "--admin-socket", admin.to_str().unwrap()],
    )
    .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
    .spawn()
    .unwrap();
    drop(listener); // the daemon's copy is the one that listens now
    wait_for_path(&admin, "admin socket");
    let mut d = Daemon::adopt(BIN, child, dir);
    let mut c = Client::new(TestFrontend::connect(&path, frontend_config(), T).unwrap());
    let ctx = c.create_context(1, "inherited").unwrap();
    let (key, pages) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    assert_eq!(c.fetch_add(ctx, key, 0, 9).unwrap(), 0);
    assert_eq!(
        c.frontend().read_mem(pages[0], 8).unwrap(),
        9u64.to_le_bytes()
    );
    let s = d.status();
    assert_eq!(s["frontends"][0]["socket"], json!(format!("fd {CHILD_FD}")));
    assert_eq!(s["connected"], json!(true));
    drop(c);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(T).code(), Some(0), "log:\n{}", d.log());
    assert!(
        path.exists(),
        "the inherited socket's file must not be removed"
    );
    assert!(!d.admin().exists(), "the admin socket is the daemon's own");
    assert!(
        d.log().contains("the inherited socket(s) stay"),
        "{}",
        d.log()
    );
}

#[test]
fn an_fd_that_is_not_a_listening_unix_stream_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.sock");
    let file = std::fs::File::create(dir.path().join("plain")).unwrap();
    let (connected, _peer) = UnixStream::pair().unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = CHILD_FD.to_string();
    for (what, inherited, names) in [
        (
            "a file",
            Some(file.as_raw_fd()),
            vec!["--fd 7", "not a socket"],
        ),
        (
            "a connected socket",
            Some(connected.as_raw_fd()),
            vec!["--fd 7", "not listening"],
        ),
        (
            "a TCP listener",
            Some(tcp.as_raw_fd()),
            vec!["--fd 7", "not a unix socket"],
        ),
        (
            "nothing",
            None,
            vec!["--fd 7", "not an open file descriptor"],
        ),
    ] {
        let out = serve_with_fd(
            inherited,
            &["--fd", &fd, "--admin-socket", admin.to_str().unwrap()],
        )
        .output()
        .unwrap();
        refused(&out, &names);
        assert!(!admin.exists(), "{what}: admin socket left behind");
    }
    let out = serve_with_fd(None, &["--fd", "-3"]).output().unwrap();
    refused(&out, &["--fd -3", "negative"]);
    let out = serve_with_fd(None, &["--fd", "three"]).output().unwrap();
    refused(&out, &["--fd", "three"]);
}

#[test]
fn bad_listening_flags_are_refused_and_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("vu.sock");
    let admin = dir.path().join("admin.sock");
    let b = base.to_str().unwrap();
    let a = admin.to_str().unwrap();
    let long = format!("{}/{}", dir.path().display(), "s".repeat(100));
    let long_base = &long[..107]; // fits alone, not with an index
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--admin-socket", a],
            vec!["exactly one of --socket-path, --fd", "none"],
        ),
        (
            vec!["--socket-path", b, "--fd", "3", "--admin-socket", a],
            vec!["--socket-path", "--fd 3"],
        ),
        (
            vec!["--socket-path", b, "--socket-count", "0"],
            vec!["--socket-count", "0"],
        ),
        (
            vec!["--socket-path", b, "--socket-count", "100000"],
            vec!["--socket-count", "100000"],
        ),
        (
            vec!["--fd", "3", "--socket-count", "2", "--admin-socket", a],
            vec!["--socket-count 2", "only with --socket-path"],
        ),
        (
            vec![
                "--socket-path",
                long_base,
                "--socket-count",
                "2",
                "--admin-socket",
                a,
            ],
            vec!["--socket-count 2", "longer than a unix socket path"],
        ),
    ];
    for (args, names) in cases {
        let out = serve_with_fd(None, &args).output().unwrap();
        refused(&out, &names);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    // One of the numbered paths is taken by a file: none is bound, and the
    // file is untouched.
    let taken = dir.path().join("vu.sock1");
    std::fs::write(&taken, b"keep").unwrap();
    let out = serve_with_fd(
        None,
        &[
            "--socket-path",
            b,
            "--socket-count",
            "3",
            "--admin-socket",
            a,
        ],
    )
    .output()
    .unwrap();
    refused(&out, &[taken.to_str().unwrap(), "not a socket"]);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec!["vu.sock1"]);
    assert_eq!(std::fs::read(&taken).unwrap(), b"keep");
}

fn slot(s: &Value, i: usize) -> &Value {
    &s["frontends"][i]
}

/// Waits until frontend `i` reports `connected == want`.
fn wait_slot(d: &Daemon, i: usize, want: bool) -> Value {
    poll(T, || {
        let s = d.status();
        if slot(&s, i)["connected"] == json!(want) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .unwrap_or_else(|s| panic!("frontend {i} never connected={want}: {s}"))
}

#[test]
fn two_frontends_at_once_each_with_its_own_device() {
    let mut d = launch().socket_count(2).start();
    assert!(!d.sock().exists(), "with --socket-count only PATH0.. exist");
    let s = d.status();
    let sockets: Vec<Value> = (0..2).map(|i| slot(&s, i)["socket"].clone()).collect();
    let want: Vec<Value> = (0..2)
        .map(|i| json!(d.sock_at(i).to_str().unwrap()))
        .collect();
    assert_eq!(sockets, want);
    assert!(
        s.get("connected").is_none(),
        "no top-level copy with 2: {s}"
    );

    let mut a = Client::new(d.frontend_at(0, frontend_config()).unwrap());
    let mut b = Client::new(d.frontend_at(1, frontend_config()).unwrap());
    // A moves data between two MRs; B takes a lease and registers 3 MRs.
    let actx = a.create_context(10, "guest-a").unwrap();
    let (k1, p1) = a.alloc_mr(actx, 2, PL_ACCESS_ALL).unwrap();
    let (k2, p2) = a.alloc_mr(actx, 2, PL_ACCESS_ALL).unwrap();
    let bctx = b.create_context(20, "guest-b").unwrap();
    b.lease_take(bctx, &lease_req(file(3), 0, 0, PL_POLICY_REVOKE))
        .unwrap();
    for _ in 0..3 {
        b.alloc_mr(bctx, 1, PL_ACCESS_ALL).unwrap();
    }
    let data = pattern(8192, 4);
    a.frontend().write_mem(p1[0], &data).unwrap();
    a.write(actx, &dma(k1, 0, k2, 0, 8192)).unwrap();
    assert_eq!(a.frontend().read_mem(p2[0], 8192).unwrap(), data);

    let s = d.status();
    let (da, db) = (&slot(&s, 0)["status"], &slot(&s, 1)["status"]);
    assert_eq!(da["contexts"][0]["comm"], json!("guest-a"));
    assert_eq!(db["contexts"][0]["comm"], json!("guest-b"));
    assert_eq!(da["mrs"].as_array().unwrap().len(), 2);
    assert_eq!(db["mrs"].as_array().unwrap().len(), 3);
    assert_eq!(da["leases"], json!([]));
    assert_eq!(db["leases"].as_array().unwrap().len(), 1);
    assert_eq!(da["counters"]["bytes_written"], json!(8192));
    assert_eq!(db["counters"]["bytes_written"], json!(0));
    for i in 0..2 {
        assert_eq!(
            (
                slot(&s, i)["connected"].clone(),
                slot(&s, i)["index"].clone()
            ),
            (json!(true), json!(i))
        );
    }
    let text = String::from_utf8(d.status_cli(false).stdout).unwrap();
    for (i, comm) in [(0, "guest-a"), (1, "guest-b")] {
        let head = format!("=== FRONTEND {i} ({}) ===", d.sock_at(i).display());
        let at = text
            .find(&head)
            .unwrap_or_else(|| panic!("{head} not in\n{text}"));
        assert!(text[at..].contains(comm), "{text}");
    }

    // A goes away; B goes on, and A's slot takes a new frontend with a
    // fresh device.
    drop(a);
    wait_slot(&d, 0, false);
    let (k, pages) = b.alloc_mr(bctx, 1, PL_ACCESS_ALL).unwrap();
    assert_eq!(b.fetch_add(bctx, k, 0, 7).unwrap(), 0);
    assert_eq!(
        b.frontend().read_mem(pages[0], 8).unwrap(),
        7u64.to_le_bytes()
    );
    let mut a2 = Client::new(d.frontend_at(0, frontend_config()).unwrap());
    a2.nop().unwrap();
    let s = wait_slot(&d, 0, true);
    assert_eq!(slot(&s, 0)["connections"], json!(2));
    assert_eq!(slot(&s, 0)["status"]["contexts"], json!([]));
    assert_eq!(slot(&s, 1)["connections"], json!(1));
    assert_eq!(slot(&s, 1)["status"]["mrs"].as_array().unwrap().len(), 4);

    // inject now needs the frontend named, and hits only that one.
    let inject = |args: &[&str]| {
        Command::new(BIN)
            .args(["inject", "--admin-socket"])
            .arg(d.admin())
            .args(["now", "--action", "needs-reset"])
            .args(args)
            .env_remove("PINLEASE_ADMIN_SOCKET")
            .output()
            .unwrap()
    };
    refused(&inject(&[]), &["2 frontends", "frontend"]);
    assert!(inject(&["--frontend", "1"]).status.success());
    let s = d.status();
    assert_eq!(slot(&s, 1)["status"]["needs_reset"], json!(true));
    assert_eq!(slot(&s, 0)["status"]["needs_reset"], json!(false));
    a2.nop().unwrap();

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(T).code(), Some(0), "log:\n{}", d.log());
    assert!(
        !d.sock_at(0).exists() && !d.sock_at(1).exists(),
        "sockets removed"
    );
}

#[test]
fn socket_group_applies_to_every_numbered_socket() {
    // gid 0 exists everywhere; what matters is that each socket the daemon
    // binds gets the group and mode 0660, not only the first.
    let mut d = launch()
        .socket_count(2)
        .args(&["--socket-group", "0"])
        .start();
    for i in 0..2 {
        let m = std::fs::metadata(d.sock_at(i)).unwrap();
        assert_eq!(
            (m.mode() & 0o777, m.gid()),
            (0o660, 0),
            "socket {i}: mode {:o} gid {}",
            m.mode(),
            m.gid()
        );
    }
    let a = std::fs::metadata(d.admin()).unwrap();
    assert_eq!(a.mode() & 0o777, 0o600, "the admin socket stays 0600");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(T).code(), Some(0), "log:\n{}", d.log());
}

#[test]
fn max_connections_counts_over_every_socket() {
    let mut d = launch()
        .socket_count(2)
        .args(&["--max-connections", "2"])
        .start();
    let a = d.frontend_at(0, frontend_config()).unwrap();
    let b = d.frontend_at(1, frontend_config()).unwrap();
    poll(T, || {
        match d.status()["frontends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["connected"] == json!(true))
        {
            true => Ok(()),
            false => Err(()),
        }
    })
    .expect("both frontends connected");
    drop(a);
    // One is still served: the daemon waits for it.
    poll(T, || {
        (d.status()["frontends"][0]["connected"] == json!(false))
            .then_some(())
            .ok_or(())
    })
    .unwrap();
    assert!(d.alive());
    drop(b);
    assert_eq!(d.wait_exit(T).code(), Some(0), "log:\n{}", d.log());
}

#[test]
fn print_capabilities_follows_the_backend_program_conventions() {
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for args in [
        &["--print-capabilities"][..],
        &["serve", "--print-capabilities"],
        // Other arguments are ignored (the convention).
        &[
            "serve",
            "--print-capabilities",
            "--fd",
            "99",
            "--socket-path",
            "/nonexistent/x",
        ],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let obj = v.as_object().unwrap();
        // VHostUserBackendCapabilities: "type" (a string) and "features" (a
        // list of strings), nothing else.
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["features", "type"]);
        assert_eq!(v["type"], json!(pinlease::capabilities::BACKEND_TYPE));
        let features: Vec<String> = v["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        assert_eq!(features, pinlease::capabilities::features());
        // Each feature is a flag `serve` takes.
        for f in &features {
            assert!(
                help.contains(&format!("--{f}")),
                "--{f} not in serve --help"
            );
        }
        assert!(features.iter().any(|f| f == "socket-count"), "{features:?}");
    }
    assert!(!Path::new("/nonexistent/x").exists());
}
