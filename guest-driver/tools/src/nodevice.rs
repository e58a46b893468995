//! `pinlease-guest nodevice`: pinlease.ko in a guest without a pinlease
//! device. Loads, checks that nothing appeared, unloads, does it again, and
//! checks the kernel log; KTAP like the suite (same per-case checks). Run by
//! `guest-driver/vm/run --no-device`, whose /init does not load the module.

use crate::cases::helpers::{
    bound_virtio_devices, delete_module_retrying, DRIVER_DIR, MODULE_NAME,
};
use crate::dev::SysError;
use crate::ktap::{Case, CaseCtx, CaseErr, CaseResult};
use crate::sys;
use crate::{ensure, fail};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::debugfs::{MODULE_WIDE, ROOT as DEBUGFS_ROOT};

/// The module file the checks load (set by `run`).
static MODULE: Mutex<String> = Mutex::new(String::new());

fn module_path() -> String {
    MODULE.lock().map(|g| g.clone()).unwrap_or_default()
}

/// The checks, in run order; each builds on the state the previous left.
pub fn all() -> Vec<Case> {
    vec![
        Case {
            name: "nodevice_insmod",
            run: nodevice_insmod,
        },
        Case {
            name: "nodevice_no_device_nodes",
            run: nodevice_no_device_nodes,
        },
        Case {
            name: "nodevice_debugfs_lists_no_device",
            run: nodevice_debugfs_lists_no_device,
        },
        Case {
            name: "nodevice_rmmod",
            run: nodevice_rmmod,
        },
        Case {
            name: "nodevice_insmod_rmmod_again",
            run: nodevice_insmod_rmmod_again,
        },
        Case {
            name: "nodevice_kernel_log_clean",
            run: nodevice_kernel_log_clean,
        },
    ]
}

/// Sets the module file for `all()`'s cases.
pub fn set_module(path: &str) {
    if let Ok(mut g) = MODULE.lock() {
        *g = path.to_string();
    }
}

/// Names in `dir` starting with `prefix` (none when `dir` is unreadable).
fn entries(dir: &str, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The virtio devices of the guest with their device ids ("virtio0=2").
fn virtio_devices() -> Vec<String> {
    entries("/sys/bus/virtio/devices", "virtio")
        .into_iter()
        .map(|d| {
            let id = sys::read_to_string(&format!("/sys/bus/virtio/devices/{d}/device"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            format!("{d}={id}")
        })
        .collect()
}

fn insmod(t: &mut CaseCtx) -> CaseResult {
    let path = module_path();
    ensure!(
        !sys::module_loaded(MODULE_NAME),
        "module {MODULE_NAME} is already loaded before insmod (/sys/module/{MODULE_NAME} exists)"
    );
    let t0 = Instant::now();
    sys::finit_module(&path)?;
    t.diag(format!("insmod {path}: {} ms", t0.elapsed().as_millis()));
    ensure!(
        sys::module_loaded(MODULE_NAME),
        "/sys/module/{MODULE_NAME} missing after insmod"
    );
    ensure!(
        Path::new(DRIVER_DIR).is_dir(),
        "{DRIVER_DIR} missing after insmod: the virtio driver is not registered"
    );
    Ok(())
}

/// No device bound, no misc device, no node.
fn check_no_device(t: &mut CaseCtx) -> CaseResult {
    let bound = bound_virtio_devices()?;
    ensure!(
        bound.is_empty(),
        "the pinlease driver bound {bound:?} in a guest without a pinlease device \
         (virtio devices: {:?})",
        virtio_devices()
    );
    let nodes = entries("/dev", "pinlease");
    ensure!(nodes.is_empty(), "/dev has {nodes:?} without a device");
    let misc = entries("/sys/class/misc", "pinlease");
    ensure!(
        misc.is_empty(),
        "/sys/class/misc has {misc:?} without a device"
    );
    match crate::dev::Dev::open_default() {
        Ok(_) => fail!(
            "open({}) succeeded without a device",
            crate::dev::DEFAULT_DEV
        ),
        Err(e) if e.errno == libc::ENOENT => {}
        Err(e) => fail!("{e}: expected ENOENT"),
    }
    t.diag(format!(
        "no device bound, no /dev/pinlease*; virtio devices: {}",
        virtio_devices().join(" ")
    ));
    Ok(())
}

fn check_debugfs_empty(t: &mut CaseCtx) -> CaseResult {
    ensure!(
        sys::mount_at("/sys/kernel/debug").is_some(),
        "debugfs is not mounted at /sys/kernel/debug"
    );
    ensure!(
        Path::new(DEBUGFS_ROOT).is_dir(),
        "{DEBUGFS_ROOT} does not exist with the module loaded"
    );
    let all = entries(DEBUGFS_ROOT, "");
    let per_device: Vec<&String> = all
        .iter()
        .filter(|e| !MODULE_WIDE.contains(&e.as_str()))
        .collect();
    ensure!(
        per_device.is_empty(),
        "{DEBUGFS_ROOT} lists {per_device:?} without a device (module-wide: {MODULE_WIDE:?})"
    );
    let missing: Vec<&str> = MODULE_WIDE
        .iter()
        .copied()
        .filter(|m| !all.iter().any(|e| e == m))
        .collect();
    ensure!(
        missing.is_empty(),
        "{DEBUGFS_ROOT} lacks the module-wide {missing:?} (lists {all:?})"
    );
    t.diag(format!(
        "{DEBUGFS_ROOT}/ has no device entries, only the module-wide {MODULE_WIDE:?}"
    ));
    Ok(())
}

fn rmmod(t: &mut CaseCtx) -> CaseResult {
    let t0 = Instant::now();
    // Only a module still initialising or going answers EAGAIN/EBUSY.
    delete_module_retrying(Duration::from_secs(2), Duration::from_millis(20))?;
    t.diag(format!(
        "rmmod {MODULE_NAME}: {} ms",
        t0.elapsed().as_millis()
    ));
    ensure!(
        !sys::module_loaded(MODULE_NAME),
        "/sys/module/{MODULE_NAME} still exists after rmmod"
    );
    for p in [DRIVER_DIR, DEBUGFS_ROOT] {
        ensure!(!Path::new(p).exists(), "{p} still exists after rmmod");
    }
    Ok(())
}

fn ensure_loaded() -> CaseResult {
    ensure!(
        sys::module_loaded(MODULE_NAME),
        "module {MODULE_NAME} is not loaded"
    );
    Ok(())
}

fn nodevice_insmod(t: &mut CaseCtx) -> CaseResult {
    insmod(t)
}

fn nodevice_no_device_nodes(t: &mut CaseCtx) -> CaseResult {
    ensure_loaded()?;
    check_no_device(t)
}

fn nodevice_debugfs_lists_no_device(t: &mut CaseCtx) -> CaseResult {
    ensure_loaded()?;
    check_debugfs_empty(t)
}

fn nodevice_rmmod(t: &mut CaseCtx) -> CaseResult {
    ensure_loaded()?;
    rmmod(t)
}

fn nodevice_insmod_rmmod_again(t: &mut CaseCtx) -> CaseResult {
    insmod(t)?;
    let checks = check_no_device(t).and_then(|()| check_debugfs_empty(t));
    // Unload even when a check failed: the module must go either way.
    let unloaded = rmmod(t);
    checks?;
    unloaded
}

/// The whole kernel log the kernel still holds, boot included.
fn nodevice_kernel_log_clean(t: &mut CaseCtx) -> CaseResult {
    let mut k = sys::Kmsg::open_at_start();
    if !k.available() {
        fail!("{}", SysError::last("open /dev/kmsg"));
    }
    let lines = k.read_new();
    ensure!(!lines.is_empty(), "/dev/kmsg read nothing");
    t.diag(format!("{} kernel log records since boot", lines.len()));
    for l in lines
        .iter()
        .filter(|l| l.starts_with("pinlease") && !l.starts_with("pinlease-guest:"))
    {
        t.diag(format!("module: {l}"));
    }
    let bad = sys::kmsg_bad_lines(&lines);
    if !bad.is_empty() {
        for l in &bad {
            t.diag(format!("kernel log: {l}"));
        }
        return Err(CaseErr::Fail(format!(
            "{} kernel log line(s) with {:?}: {}",
            bad.len(),
            sys::KMSG_BAD,
            bad[0]
        )));
    }
    Ok(())
}

/// Runs the checks with the suite's runner and per-case checks; true when
/// all passed.
pub fn run(module: &str, out: &mut dyn std::io::Write) -> bool {
    set_module(module);
    if !Path::new(module).is_file() {
        let _ = writeln!(out, "# nodevice: {module} does not exist");
    }
    let cases = all();
    let refs: Vec<&Case> = cases.iter().collect();
    let mut checks = crate::cases::GuestChecks::new();
    crate::ktap::run(&refs, &mut checks, out).all_passed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_unique() {
        let mut names: Vec<&str> = all().iter().map(|c| c.name).collect();
        assert_eq!(names.len(), 6);
        for n in &names {
            assert!(n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert!(n.starts_with("nodevice_"));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 6);
    }

    #[test]
    fn fails_without_the_module() {
        // On the host: the module file is missing, so the first load fails
        // and the run says not ok (it must be able to fail).
        set_module("/nonexistent/pinlease.ko");
        let mut ctx = CaseCtx::default();
        if !sys::module_loaded(MODULE_NAME) {
            assert!(nodevice_insmod(&mut ctx).is_err());
        }
    }
}
