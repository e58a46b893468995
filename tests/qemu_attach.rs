//! Real QEMU against the real daemon: QEMU realizes the device on the
//! vhost-user socket (carrier mode: `vhost-user-gpio-pci`, stock QEMU
//! <= 10.1; native mode: `vhost-user-test-device-pci,virtio-id=42` when the
//! installed QEMU has it), the daemon serves it, listens again after QEMU
//! quits, and removes its sockets on SIGTERM.
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

use common::{wait_for_path, Daemon};
use serde_json::{json, Value};

fn qemu_available() -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("PINLEASE_REQUIRE_QEMU").as_deref() == Ok("1") {
            panic!("qemu-system-x86_64 not found and PINLEASE_REQUIRE_QEMU=1: run scripts/install-host-deps");
        }
        eprintln!("SKIP: qemu-system-x86_64 not found (scripts/install-host-deps installs it)");
    }
    ok
}

fn qemu_has_device(name: &str) -> bool {
    Command::new("qemu-system-x86_64")
        .args(["-device", "help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("\"{name}\"")))
        .unwrap_or(false)
}

struct Qemu {
    child: Child,
    qmp: PathBuf,
}

impl Qemu {
    fn start(dir: &Path, sock: &Path, device: &str) -> Qemu {
        let qmp = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp);
        let child = Command::new("qemu-system-x86_64")
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
            .expect("starting qemu-system-x86_64");
        wait_for_path(&qmp, "QMP socket");
        Qemu { child, qmp }
    }

    /// Sends QMP commands in one session; returns their replies.
    fn qmp(&self, cmds: &[Value]) -> Vec<Value> {
        let mut s = UnixStream::connect(&self.qmp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap(); // greeting
        let mut out = Vec::new();
        for c in std::iter::once(&json!({"execute": "qmp_capabilities"})).chain(cmds) {
            writeln!(s, "{c}").unwrap();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 {
                    return out; // QEMU closed (quit)
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

fn attach_twice(device: &str) {
    let d = Daemon::start();
    for round in 1..=2u64 {
        let q = Qemu::start(d.dir.path(), &d.sock(), device);
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
            "QEMU reported an error with {device}:\n{stderr}\ndaemon log:\n{}",
            d.log()
        );
        // The daemon listens again: not connected, and the next round connects.
        d.wait_connected(false);
        assert!(d.sock().exists(), "socket vanished after QEMU exit");
    }
    assert!(d.log().contains("listening again"), "{}", d.log());
}

#[test]
fn carrier_mode_stock_qemu_realizes_gpio_carrier_and_daemon_listens_again() {
    if !qemu_available() {
        return;
    }
    assert!(
        qemu_has_device("vhost-user-gpio-pci"),
        "this QEMU lacks vhost-user-gpio-pci"
    );
    attach_twice("vhost-user-gpio-pci");
}

#[test]
fn native_mode_when_qemu_offers_the_generic_device() {
    if !qemu_available() {
        return;
    }
    if !qemu_has_device("vhost-user-test-device-pci") {
        eprintln!(
            "SKIP: this QEMU has no vhost-user-test-device-pci (native mode needs QEMU >= 10.2)"
        );
        return;
    }
    attach_twice("vhost-user-test-device-pci,virtio-id=42,num_vqs=2,config_size=8");
}
