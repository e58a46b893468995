//! Real QEMU against the real daemon: QEMU realizes the device on the
//! vhost-user socket (carrier mode: `vhost-user-gpio-pci`, stock QEMU
//! <= 10.1; native mode: `vhost-user-test-device-pci` with virtio id
//! `PL_VIRTIO_ID_NATIVE` when the QEMU has it, i.e. >= 10.2), the daemon
//! serves it, listens again after QEMU quits, and removes its sockets on
//! SIGTERM; two QEMUs at once on a `--socket-count 2` daemon, one per
//! socket; QEMU starting a socket-activated daemon (`systemd-socket-activate`)
//! by connecting.
//!
//! Every QEMU in `PINLEASE_TEST_QEMUS` (colon-separated paths; default
//! `qemu-system-x86_64` on PATH) is tried: scripts/test adds QEMU 11 from
//! the trixie rootfs, so both attachment modes run against a real QEMU.
//!
//! No guest kernel is booted (`-S`): realizing the device is what exercises
//! the vhost-user handshake (features, protocol features, GET_CONFIG, memory
//! table). The guest suite (guest-driver/vm/run) covers the rest.
//!
//! Signals, socket-path checks and the rest of the daemon's lifecycle
//! without QEMU are in daemon_lifecycle.rs.
//!
//! Needs qemu-system-x86_64 >= 10 (scripts/install-host-deps). Without it
//! these tests print why and pass, unless PINLEASE_REQUIRE_QEMU=1 (set by
//! .ci/run), where a missing QEMU fails them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, DaemonUnderTest};
use pinlease_abi::PL_VIRTIO_ID_NATIVE;
use pinlease_testkit::daemon::wait_for_path;
use serde_json::{json, Value};

fn require_qemu() -> bool {
    std::env::var("PINLEASE_REQUIRE_QEMU").as_deref() == Ok("1")
}

/// The QEMUs to test: PINLEASE_TEST_QEMUS, else the one on PATH.
fn test_qemus() -> Vec<String> {
    match std::env::var("PINLEASE_TEST_QEMUS") {
        Ok(v) if !v.trim().is_empty() => v.split(':').map(str::to_string).collect(),
        _ => vec!["qemu-system-x86_64".to_string()],
    }
}

fn qemu_available(qemu: &str) -> bool {
    let ok = Command::new(qemu)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if require_qemu() {
            panic!(
                "{qemu} does not run and PINLEASE_REQUIRE_QEMU=1: run scripts/install-host-deps"
            );
        }
        eprintln!("SKIP: {qemu} not found (scripts/install-host-deps installs it)");
    }
    ok
}

fn qemu_has_device(qemu: &str, name: &str) -> bool {
    Command::new(qemu)
        .args(["-device", "help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("\"{name}\"")))
        .unwrap_or(false)
}

/// QEMU closed its end of the QMP socket (it quits as asked).
fn closed_by_peer(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    )
}

struct Qemu {
    child: Child,
    qmp: PathBuf,
}

impl Qemu {
    fn start(qemu: &str, dir: &Path, sock: &Path, device: &str) -> Qemu {
        let qmp = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp);
        let child = Command::new(qemu)
            .args([
                "-machine",
                "q35",
                "-accel",
                "tcg",
                "-m",
                "256M",
                "-nodefaults",
                "-display",
                "none",
                "-S",
            ])
            .args([
                "-object",
                "memory-backend-memfd,id=mem,size=256M,share=on",
                "-numa",
                "node,memdev=mem",
            ])
            .arg("-chardev")
            .arg(format!("socket,id=vu,path={}", sock.display()))
            .args(["-device", &format!("{device},chardev=vu,id=pl")])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {qemu}: {e}"));
        wait_for_path(&qmp, "QMP socket");
        Qemu { child, qmp }
    }

    /// Sends QMP commands in one session; returns their replies.
    fn qmp(&self, cmds: &[Value]) -> Vec<Value> {
        let mut s = UnixStream::connect(&self.qmp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        let greeting = r.read_line(&mut line).unwrap();
        assert!(greeting > 0, "QEMU closed its QMP socket before greeting");
        let mut out = Vec::new();
        for c in std::iter::once(&json!({"execute": "qmp_capabilities"})).chain(cmds) {
            // One write per command: QEMU's JSON parser runs a command as
            // soon as its closing brace arrives, without waiting for the
            // newline, so after "quit" a second write (writeln! writes the
            // newline separately) can meet a closed socket (EPIPE; CI saw it).
            let quitting = c["execute"] == "quit";
            match s.write_all(format!("{c}\n").as_bytes()) {
                Err(e) if quitting && closed_by_peer(&e) => return out,
                sent => sent.unwrap_or_else(|e| panic!("QMP write of {c}: {e}")),
            }
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => return out, // QEMU closed (quit)
                    Err(e) if quitting && closed_by_peer(&e) => return out,
                    read => {
                        read.unwrap_or_else(|e| panic!("QMP reply to {c}: {e}"));
                    }
                }
                let v: Value = serde_json::from_str(&line).unwrap();
                if v.get("event").is_none() {
                    out.push(v);
                    break;
                }
            }
        }
        out
    }

    /// Quits QEMU and returns what it printed on stderr.
    fn quit(mut self) -> String {
        self.qmp(&[json!({"execute": "quit"})]);
        let t = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < Duration::from_secs(30), "QEMU did not quit");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        err
    }
}

fn attach_twice(qemu: &str, device: &str) {
    let d = Daemon::start();
    for round in 1..=2u64 {
        let q = Qemu::start(qemu, d.dir(), &d.sock(), device);
        let st = d.wait_connected(true);
        assert_eq!(st["connections"], json!(round), "{st}");
        // QEMU lists the realized device. (Its memory table reaches the
        // daemon only when a guest driver starts the device, so none here.)
        let replies = q.qmp(&[json!({"execute": "qom-get", "arguments": {"path": "/machine/peripheral/pl", "property": "type"}})]);
        assert_eq!(
            replies[1]["return"],
            json!(device.split(',').next().unwrap()),
            "{replies:?}"
        );
        let stderr = q.quit();
        assert!(
            !stderr.to_lowercase().contains("error"),
            "{qemu} reported an error with {device}:\n{stderr}\ndaemon log:\n{}",
            d.log()
        );
        // The daemon listens again: not connected, and the next round connects.
        d.wait_connected(false);
        assert!(d.sock().exists(), "socket vanished after QEMU exit");
    }
    assert!(d.log().contains("listening again"), "{}", d.log());
}

#[test]
fn carrier_mode_every_qemu_realizes_gpio_carrier_and_daemon_listens_again() {
    for qemu in test_qemus() {
        if !qemu_available(&qemu) {
            continue;
        }
        assert!(
            qemu_has_device(&qemu, "vhost-user-gpio-pci"),
            "{qemu} lacks vhost-user-gpio-pci"
        );
        attach_twice(&qemu, "vhost-user-gpio-pci");
    }
}

#[test]
fn native_mode_on_every_qemu_that_offers_the_generic_device() {
    let mut ran = 0;
    for qemu in test_qemus() {
        if !qemu_available(&qemu) {
            continue;
        }
        if !qemu_has_device(&qemu, "vhost-user-test-device-pci") {
            eprintln!(
                "SKIP: {qemu} has no vhost-user-test-device-pci (native mode needs QEMU >= 10.2)"
            );
            continue;
        }
        attach_twice(
            &qemu,
            &format!(
                "vhost-user-test-device-pci,virtio-id={PL_VIRTIO_ID_NATIVE},num_vqs=2,config_size=8"
            ),
        );
        ran += 1;
    }
    if ran == 0 && require_qemu() && std::env::var("PINLEASE_TEST_QEMUS").is_ok() {
        panic!(
            "no QEMU in PINLEASE_TEST_QEMUS offers vhost-user-test-device-pci: native mode untested"
        );
    }
}

/// The first QEMU of `PINLEASE_TEST_QEMUS` that runs, if any.
fn first_qemu() -> Option<String> {
    test_qemus().into_iter().find(|q| qemu_available(q))
}

#[test]
fn two_qemus_at_once_on_a_daemon_with_two_sockets() {
    let Some(qemu) = first_qemu() else { return };
    let d = common::launch().socket_count(2).start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let qs: Vec<Qemu> = (0..2u32)
        .map(|i| {
            Qemu::start(
                &qemu,
                dirs[i as usize].path(),
                &d.sock_at(i),
                "vhost-user-gpio-pci",
            )
        })
        .collect();
    let frontends = |s: &Value| {
        let f = s["frontends"].as_array().unwrap().clone();
        f.iter()
            .map(|x| (x["connected"].clone(), x["connections"].clone()))
            .collect::<Vec<_>>()
    };
    pinlease_testkit::daemon::poll(common::T, || {
        let s = d.status();
        match frontends(&s) == vec![(json!(true), json!(1)); 2] {
            true => Ok(()),
            false => Err(s),
        }
    })
    .unwrap_or_else(|s| panic!("both QEMUs never connected at once: {s}\n{}", d.log()));
    for q in qs {
        let stderr = q.quit();
        assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
    }
    pinlease_testkit::daemon::poll(common::T, || {
        let s = d.status();
        match frontends(&s) == vec![(json!(false), json!(1)); 2] {
            true => Ok(()),
            false => Err(s),
        }
    })
    .unwrap_or_else(|s| panic!("the QEMUs' frontends never ended: {s}"));
}

#[test]
fn qemu_attaches_to_a_socket_activated_daemon() {
    let Some(qemu) = first_qemu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("activated.sock");
    let admin = dir.path().join("admin.sock");
    let child = Command::new("/usr/bin/systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .args([
            env!("CARGO_BIN_EXE_pinlease"),
            "--log-level",
            "debug",
            "serve",
            "--admin-socket",
        ])
        .arg(&admin)
        .env_remove("PINLEASE_ADMIN_SOCKET")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd; scripts/install-host-deps)");
    let mut d = Daemon::adopt(env!("CARGO_BIN_EXE_pinlease"), child, dir);
    wait_for_path(&sock, "systemd-socket-activate's socket");
    // QEMU's connection starts the daemon, as systemd would.
    let q = Qemu::start(&qemu, d.dir(), &sock, "vhost-user-gpio-pci");
    wait_for_path(&admin, "admin socket");
    let st = d.wait_connected(true);
    assert_eq!(st["frontends"][0]["socket"], json!("fd 3"), "{st}");
    let stderr = q.quit();
    assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
    d.wait_connected(false);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(common::T).code(), Some(0), "log:\n{}", d.log());
    assert!(
        sock.exists(),
        "the activated socket's file is systemd's: it stays"
    );
}
