//! Shared harness of the end-to-end daemon tests: starts the real
//! `pinlease serve` binary through the test kit's launcher
//! ([`pinlease_testkit::daemon`]) with the tests' defaults, connects the test
//! frontend through the typed client, reads status back through the admin
//! socket and the `pinlease status` CLI, and has the small builders and
//! checks the test files share.

#![allow(dead_code)]

pub mod bad_input;
pub mod mr;

use std::process::{Command, Output};
use std::time::Duration;

use pinlease_abi::*;
use pinlease_testkit::daemon::{poll, Launch};
use pinlease_testkit::frontend::client::{Client, ClientError};
use pinlease_testkit::frontend::{FrontendConfig, TestFrontend};
use serde_json::{json, Value};

pub use pinlease_testkit::daemon::Daemon;

/// How long anything may take before a test gives up.
pub const T: Duration = Duration::from_secs(10);
/// How long to wait for something that must NOT happen (an event that
/// should not arrive).
pub const QUIET: Duration = Duration::from_millis(200);

/// The launcher of this package's daemon binary, with the tests' defaults.
pub fn launch() -> Launch {
    Launch::new(env!("CARGO_BIN_EXE_pinlease"))
}

/// How the daemon's tests start the daemon and look at it: through its
/// admin socket (with the `pinlease` crate's client, which the test kit
/// cannot use) and its `status` CLI. A trait only because [`Daemon`] is the
/// test kit's type; `use common::*` brings it into scope.
pub trait DaemonUnderTest {
    /// `pinlease serve` with both sockets in a fresh tempdir.
    fn start() -> Daemon;
    /// Like `start`, with extra `serve` arguments.
    fn start_with(extra: &[&str]) -> Daemon;
    /// A frontend connected to the daemon (16 MiB of guest memory).
    fn frontend(&self) -> TestFrontend;
    /// A typed client connected to the daemon.
    fn client(&self) -> Client;
    /// A typed client with `buffers` event buffers posted on queue 1.
    fn client_with_events(&self, buffers: usize) -> Client;
    /// The admin socket's `status` reply.
    fn status(&self) -> Value;
    /// `status.status` of the admin reply: the device snapshot.
    fn device(&self) -> Value;
    /// `pinlease status [--json]` against this daemon.
    fn status_cli(&self, json: bool) -> Output;
    /// `pinlease status --json`, parsed.
    fn status_json(&self) -> Value;
    /// `counters.bad_input_total` as `pinlease status --json` shows it.
    fn bad_input_total(&self) -> u64;
    /// `counters.bad_input.<kind>` as `pinlease status --json` shows it (0
    /// when absent).
    fn bad_input(&self, kind: &str) -> u64;
    /// Waits until the admin socket reports `connected == want`.
    fn wait_connected(&self, want: bool) -> Value;
    /// Waits until `connections` reaches `n` and the daemon is connected.
    fn wait_connection(&self, n: u64);
    /// End-of-test checks: the process is alive and never panicked.
    fn assert_healthy(&mut self);
}

impl DaemonUnderTest for Daemon {
    fn start() -> Daemon {
        launch().start()
    }

    fn start_with(extra: &[&str]) -> Daemon {
        launch().args(extra).start()
    }

    fn frontend(&self) -> TestFrontend {
        self.frontend_with(frontend_config()).unwrap()
    }

    fn client(&self) -> Client {
        Client::new(self.frontend())
    }

    fn client_with_events(&self, buffers: usize) -> Client {
        let mut c = self.client();
        c.post_event_buffers(buffers).unwrap();
        c
    }

    fn status(&self) -> Value {
        pinlease::admin::request(&self.admin(), &json!({"cmd": "status"}))
            .unwrap_or_else(|e| panic!("admin status: {e}\ndaemon log:\n{}", self.log()))
    }

    fn device(&self) -> Value {
        let s = self.status();
        assert!(
            !s["status"].is_null(),
            "no device state in status reply {s}"
        );
        s["status"].clone()
    }

    fn status_cli(&self, json: bool) -> Output {
        let mut c = Command::new(self.bin());
        c.args(["status", "--admin-socket"]).arg(self.admin());
        if json {
            c.arg("--json");
        }
        c.env_remove("PINLEASE_ADMIN_SOCKET").output().unwrap()
    }

    fn status_json(&self) -> Value {
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

    fn bad_input_total(&self) -> u64 {
        self.status_json()["status"]["counters"]["bad_input_total"]
            .as_u64()
            .expect("counters.bad_input_total")
    }

    fn bad_input(&self, kind: &str) -> u64 {
        self.status_json()["status"]["counters"]["bad_input"][kind]
            .as_u64()
            .unwrap_or(0)
    }

    fn wait_connected(&self, want: bool) -> Value {
        poll(T, || {
            let s = self.status();
            if s["connected"] == json!(want) {
                Ok(s)
            } else {
                Err(s)
            }
        })
        .unwrap_or_else(|s| {
            panic!(
                "daemon never reported connected={want}; last {s}\nlog:\n{}",
                self.log()
            )
        })
    }

    fn wait_connection(&self, n: u64) {
        poll(T, || {
            let s = self.status();
            if s["connections"] == json!(n) && s["connected"] == json!(true) {
                Ok(())
            } else {
                Err(s)
            }
        })
        .unwrap_or_else(|s| panic!("connection {n} never seen; last {s}"))
    }

    fn assert_healthy(&mut self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "daemon panicked:\n{log}");
        assert!(self.alive(), "daemon died; log:\n{log}");
        // And it still answers on the admin socket.
        let s = self.status();
        assert_eq!(s["ok"], json!(true));
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
    PlFileId::new(0x803, ino, 7)
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
