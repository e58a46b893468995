//! Shared harness of the end-to-end daemon tests: spawns the real
//! `pinlease serve` binary in a temporary directory, connects the test
//! frontend through the typed client, reads status back through the admin
//! socket and the `pinlease status` CLI, and kills the daemon in Drop (so a
//! failing test never leaves one behind).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pinlease::abi::*;
use pinlease::frontend::client::{Client, ClientError};
use pinlease::frontend::{FrontendConfig, TestFrontend};
use serde_json::{json, Value};

/// How long anything may take before a test gives up.
pub const T: Duration = Duration::from_secs(10);
/// How long to wait for something that must NOT happen (an event that
/// should not arrive).
pub const QUIET: Duration = Duration::from_millis(200);

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
}

pub fn wait_for_path(path: &Path, what: &str) {
    let t = Instant::now();
    while !path.exists() {
        assert!(t.elapsed() < T, "{what} {} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Daemon {
    /// `pinlease serve` with both sockets in a fresh tempdir.
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    /// Like `start`, with extra `serve` arguments.
    pub fn start_with(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pinlease"))
            .args(["--log-level", "debug", "serve", "--socket-path"])
            .arg(dir.path().join("vu.sock"))
            .arg("--admin-socket")
            .arg(dir.path().join("admin.sock"))
            .args(extra)
            .env_remove("PINLEASE_ADMIN_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            dir,
        };
        wait_for_path(&d.admin(), "admin socket");
        wait_for_path(&d.sock(), "vhost-user socket");
        d
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("vu.sock")
    }

    pub fn admin(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// A frontend connected to the daemon (16 MiB of guest memory).
    pub fn frontend(&self) -> TestFrontend {
        TestFrontend::connect(&self.sock(), frontend_config(), T).unwrap()
    }

    /// A typed client connected to the daemon.
    pub fn client(&self) -> Client {
        Client::new(self.frontend())
    }

    /// The admin socket's `status` reply.
    pub fn status(&self) -> Value {
        pinlease::admin::request(&self.admin(), &json!({"cmd": "status"}))
            .unwrap_or_else(|e| panic!("admin status: {e}\ndaemon log:\n{}", self.log()))
    }

    /// `status.status` of the admin reply: the device snapshot.
    pub fn device(&self) -> Value {
        let s = self.status();
        assert!(
            !s["status"].is_null(),
            "no device state in status reply {s}"
        );
        s["status"].clone()
    }

    /// `pinlease status [--json]` against this daemon.
    pub fn status_cli(&self, json: bool) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pinlease"));
        c.args(["status", "--admin-socket"]).arg(self.admin());
        if json {
            c.arg("--json");
        }
        c.env_remove("PINLEASE_ADMIN_SOCKET").output().unwrap()
    }

    /// `pinlease status --json`, parsed.
    pub fn status_json(&self) -> Value {
        let out = self.status_cli(true);
        assert!(
            out.status.success(),
            "pinlease status --json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `counters.bad_input_total` as `pinlease status --json` shows it.
    pub fn bad_input_total(&self) -> u64 {
        self.status_json()["status"]["counters"]["bad_input_total"]
            .as_u64()
            .expect("counters.bad_input_total")
    }

    /// `counters.bad_input.<kind>` as `pinlease status --json` shows it (0
    /// when absent).
    pub fn bad_input(&self, kind: &str) -> u64 {
        self.status_json()["status"]["counters"]["bad_input"][kind]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until the admin socket reports `connected == want`.
    pub fn wait_connected(&self, want: bool) -> Value {
        let t = Instant::now();
        loop {
            let s = self.status();
            if s["connected"] == json!(want) {
                return s;
            }
            assert!(
                t.elapsed() < T,
                "daemon never reported connected={want}; last {s}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `connections` reaches `n` and the daemon is connected.
    pub fn wait_connection(&self, n: u64) {
        let t = Instant::now();
        loop {
            let s = self.status();
            if s["connections"] == json!(n) && s["connected"] == json!(true) {
                return;
            }
            assert!(t.elapsed() < T, "connection {n} never seen; last {s}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the daemon process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// Waits for the daemon to exit on its own; returns its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return st;
            }
            assert!(
                t.elapsed() < within,
                "daemon still running after {within:?}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({}, {sig})", self.pid());
    }

    /// End-of-test checks: the process is alive and never panicked.
    pub fn assert_healthy(&mut self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "daemon panicked:\n{log}");
        assert!(self.alive(), "daemon died; log:\n{log}");
        // And it still answers on the admin socket.
        let s = self.status();
        assert_eq!(s["ok"], json!(true));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn frontend_config() -> FrontendConfig {
    FrontendConfig {
        mem_size: 16 << 20,
        request_timeout: T,
        ..FrontendConfig::default()
    }
}

/// The status a failed client call carries; panics on anything else.
#[track_caller]
pub fn status_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Status {
    match r {
        Err(ClientError::Status(s, _)) => s,
        other => panic!("expected a device status, got {other:?}"),
    }
}

/// A file identity for lease tests.
pub fn file(ino: u64) -> PlFileId {
    PlFileId {
        dev: 0x803,
        ino,
        generation: 7,
        reserved: 0,
    }
}

pub fn lease_req(f: PlFileId, start: u64, length: u64, policy: u32) -> PlLeaseTakeReq {
    PlLeaseTakeReq {
        file: f,
        start,
        length,
        policy,
        owner_pid: 4242,
    }
}

pub fn break_req(f: PlFileId, start: u64, length: u64, reason: u32) -> PlLeaseBreakReq {
    PlLeaseBreakReq {
        file: f,
        start,
        length,
        reason,
        reserved: 0,
    }
}

/// Deterministic bytes for DMA checks.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(131)
                .wrapping_add(u32::from(seed) * 17) as u8
                ^ 0xa5
        })
        .collect()
}

/// Reads the next event or fails with what was expected.
#[track_caller]
pub fn expect_event(c: &mut Client, what: &str) -> PlEvent {
    match c.next_event(T) {
        Ok(Some(e)) => e,
        other => panic!("expected event {what}, got {other:?}"),
    }
}

/// Asserts no event arrives within QUIET.
#[track_caller]
pub fn expect_no_event(c: &mut Client) {
    match c.next_event(QUIET) {
        Ok(None) => {}
        other => panic!("expected no event, got {other:?}"),
    }
}

/// Finds the JSON object in `arr` whose `field` equals the hex form of `h`.
pub fn find_by_handle<'a>(arr: &'a Value, field: &str, h: u64) -> Option<&'a Value> {
    let want = format!("{h:#x}");
    arr.as_array()?
        .iter()
        .find(|v| v[field].as_str() == Some(want.as_str()))
}
