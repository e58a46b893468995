//! Device reset, unbind/rebind with live MRs, module unload and reload.

use crate::cases::helpers::{
    bound_virtio_devices, delete_module_retrying, expect_errno, fdinfo, open, pattern, reg_halves,
    DEBUGFS_DIR, DRIVER_DIR, KIB, MODULE_NAME, MODULE_PATH,
};
use crate::dev::{format_event, parse_events, Dev, SysError, EVENT_SIZE};
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, errno_name, Backing, Mapping};
use crate::{ensure, fail, skip};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Opens the device and runs a QUERY, retrying up to `timeout`.
fn wait_device_usable(timeout: Duration) -> Result<Dev, SysError> {
    let start = Instant::now();
    loop {
        let r = Dev::open_default().and_then(|d| d.query().map(|_| d));
        match r {
            Ok(d) => return Ok(d),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn reload_module(t: &mut CaseCtx) -> CaseResult {
    let start = Instant::now();
    delete_module_retrying(Duration::from_secs(5), Duration::from_millis(50))?;
    t.diag(format!("rmmod took {} ms", start.elapsed().as_millis()));
    let gone = sys::wait_path_gone(crate::dev::DEFAULT_DEV, Duration::from_secs(2));
    ensure!(
        gone,
        "{} still exists 2 s after rmmod",
        crate::dev::DEFAULT_DEV
    );
    ensure!(
        !sys::module_loaded(MODULE_NAME),
        "/sys/module/{MODULE_NAME} still exists after rmmod"
    );
    sys::finit_module(MODULE_PATH)?;
    ensure!(
        sys::wait_path(crate::dev::DEFAULT_DEV, Duration::from_secs(10)),
        "{} did not come back within 10 s of insmod",
        crate::dev::DEFAULT_DEV
    );
    Ok(())
}

pub(super) fn device_reset_with_live_mrs(t: &mut CaseCtx) -> CaseResult {
    let reset = format!("{DEBUGFS_DIR}/reset");
    if sys::mount_at("/sys/kernel/debug").is_none() {
        skip!("debugfs is not mounted");
    }
    ensure!(
        std::path::Path::new(&reset).exists(),
        "{reset} does not exist"
    );
    let dev = open()?;
    let q = dev.query()?;
    let m = Mapping::anon(256 * KIB)?;
    let (r, r2) = reg_halves(&dev, &m)?;
    let efd = dev.event_fd()?;
    let exp = if q.features & abi::PL_FEATURE_EXPORT != 0 {
        Some(dev.export_mr(r.key)?)
    } else {
        None
    };
    sys::write_str(&reset, "1")?;
    // The pins were dropped by the reset, with the fd still open.
    match sys::wait_pin_balance(Duration::from_secs(2))? {
        Ok(_) => {}
        Err((a, rl)) => {
            fail!("after reset with the fd open: pins not dropped (acquired {a}, released {rl})")
        }
    }
    // Contract: every later ioctl of a dead context fails -ENODEV or -EIO.
    let dead = [libc::ENODEV, libc::EIO];
    let show = |r: Result<(), SysError>| match r {
        Ok(()) => "succeeded".to_string(),
        Err(e) => format!("{} ({})", errno_name(e.errno), e.errno),
    };
    let results = [
        ("WRITE", d_err(dev.write(r.key, 0, r2.key, 0, 8))),
        (
            "REG_MR",
            d_err(dev.reg_mr(m.addr(), 4096, PL_ACCESS_ALL, 0)),
        ),
        ("DEREG_MR", d_err(dev.dereg_mr(r.key))),
        ("EVENT_FD", d_err(dev.event_fd())),
        ("QUERY", d_err(dev.query())),
    ];
    let summary: Vec<String> = results
        .iter()
        .map(|(n, r)| format!("{n} {}", show(r.clone())))
        .collect();
    t.diag(format!("after reset: {}", summary.join(", ")));
    let wrong: Vec<&String> = results
        .iter()
        .zip(&summary)
        .filter(|((n, r), _)| *n != "QUERY" && !matches!(r, Err(e) if dead.contains(&e.errno)))
        .map(|(_, s)| s)
        .collect();
    if !wrong.is_empty() {
        t.diag("contract (guest-driver/README.md): ioctls of a reset context fail -ENODEV/-EIO");
    }
    let wrong_text = wrong
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let _ = sys::poll_one(efd.as_raw_fd(), libc::POLLIN, 0)?;
    drop(exp);
    drop(efd);
    drop(dev);
    drop(m);
    let d = match wait_device_usable(Duration::from_secs(5)) {
        Ok(d) => {
            t.diag("device usable again after reset without a module reload");
            d
        }
        Err(e) => {
            t.diag(format!(
                "device not usable 5 s after reset ({e}); reloading the module"
            ));
            if !std::path::Path::new(MODULE_PATH).exists() {
                fail!("device unusable after reset and {MODULE_PATH} is missing: {e}");
            }
            reload_module(t)?;
            wait_device_usable(Duration::from_secs(5))?
        }
    };
    let m = Mapping::anon(16 * KIB)?;
    let k = d.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)?.key;
    d.dereg_mr(k)?;
    ensure!(
        wrong_text.is_empty(),
        "after reset, expected ENODEV or EIO: {wrong_text}"
    );
    Ok(())
}

/// Drops the success value: only whether and how an ioctl failed matters.
fn d_err<T>(r: Result<T, SysError>) -> Result<(), SysError> {
    r.map(|_| ())
}

/// Rebinds the device on drop unless `bound` was set: a failing case must
/// not leave the rest of the suite without a device.
struct RebindGuard {
    name: String,
    bound: bool,
}

impl Drop for RebindGuard {
    fn drop(&mut self) {
        if !self.bound && !std::path::Path::new(&format!("{DRIVER_DIR}/{}", self.name)).exists() {
            let _ = sys::write_str(&format!("{DRIVER_DIR}/bind"), &self.name);
        }
    }
}

/// Closes an fd and reports close(2)'s result (OwnedFd's drop hides it).
fn close_checked(fd: std::os::fd::OwnedFd, what: &str) -> CaseResult {
    use std::os::fd::IntoRawFd;
    let raw = fd.into_raw_fd();
    // SAFETY: we own `raw` (just taken out of an OwnedFd) and close it once.
    if unsafe { libc::close(raw) } != 0 {
        fail!("{}", SysError::last(format!("close({what}, fd {raw})")));
    }
    Ok(())
}

pub(super) fn unbind_with_live_mrs_then_rebind(t: &mut CaseCtx) -> CaseResult {
    if !std::path::Path::new(DRIVER_DIR).is_dir() {
        fail!("{DRIVER_DIR} does not exist (is pinlease.ko loaded?)");
    }
    let bound = bound_virtio_devices()?;
    let name = match bound.as_slice() {
        [one] => one.clone(),
        [] => fail!("no virtioN device bound in {DRIVER_DIR}"),
        many => skip!(
            "{} devices bound ({many:?}): cannot tell which one is pinlease0",
            many.len()
        ),
    };
    let dev = open()?;
    let q = dev.query()?;
    let anon = Mapping::anon(128 * KIB)?;
    let mfd = Mapping::new(&Backing::Memfd, 64 * KIB, false)?;
    anon.fill_with(0, anon.len(), pattern);
    let ra = dev.reg_mr(anon.addr(), anon.len() as u64, PL_ACCESS_ALL, 0)?;
    let rm = dev.reg_mr(mfd.addr(), mfd.len() as u64, PL_ACCESS_ALL, 0)?;
    dev.write(ra.key, 0, rm.key, 0, 4096)?;
    let efd = dev.event_fd()?;
    sys::set_nonblock(efd.as_raw_fd())?;
    let (a0, r0) = sys::pin_counters()?;
    let held = a0 as i64 - r0 as i64;
    let want = i64::from(ra.npages + rm.npages);
    ensure!(
        held >= want,
        "before unbind: {held} pins outstanding, expected at least {want} (MRs {:#x} {:#x})",
        ra.key,
        rm.key
    );
    let before = fdinfo(dev.raw())?;
    ensure!(
        [ra.key, rm.key]
            .iter()
            .all(|k| before.contains(&format!("key={k:#x}"))),
        "fdinfo before unbind does not list both MRs:\n{before}"
    );

    let mut guard = RebindGuard {
        name: name.clone(),
        bound: false,
    };
    let t0 = Instant::now();
    sys::write_str(&format!("{DRIVER_DIR}/unbind"), &name)?;
    t.diag(format!(
        "unbound {name} (virtio_id {}, ctx {:#x}, MRs {:#x} anon {} pages, {:#x} memfd {} pages, \
         {held} pins held) in {} ms",
        q.virtio_id,
        q.ctx,
        ra.key,
        ra.npages,
        rm.key,
        rm.npages,
        t0.elapsed().as_millis()
    ));
    ensure!(
        !std::path::Path::new(&format!("{DRIVER_DIR}/{name}")).exists(),
        "{DRIVER_DIR}/{name} still exists after unbind"
    );

    // Pins dropped by remove(), with the device fd still open.
    if let Err((a, r)) = sys::wait_pin_balance(Duration::from_secs(2))? {
        fail!(
            "unbound with the device fd open: {} pins still held 2 s later \
             (nr_foll_pin_acquired {a}, nr_foll_pin_released {r})",
            a as i64 - r as i64
        );
    }

    // Every ioctl of the old fd: ENODEV (the device is gone, not reset).
    let m = Mapping::anon(4096)?;
    let results = [
        ("QUERY", d_err(dev.query())),
        (
            "REG_MR",
            d_err(dev.reg_mr(m.addr(), 4096, PL_ACCESS_ALL, 0)),
        ),
        ("WRITE", d_err(dev.write(ra.key, 0, rm.key, 0, 8))),
        ("DEREG_MR", d_err(dev.dereg_mr(ra.key))),
        ("EVENT_FD", d_err(dev.event_fd())),
    ];
    let shown: Vec<String> = results
        .iter()
        .map(|(n, r)| match r {
            Ok(()) => format!("{n} succeeded"),
            Err(e) => format!("{n} {}", errno_name(e.errno)),
        })
        .collect();
    t.diag(format!("old fd after unbind: {}", shown.join(", ")));
    let wrong: Vec<&String> = results
        .iter()
        .zip(&shown)
        .filter(|((_, r), _)| !matches!(r, Err(e) if e.errno == libc::ENODEV))
        .map(|(_, s)| s)
        .collect();
    ensure!(
        wrong.is_empty(),
        "after unbind, ioctls on the old fd must fail ENODEV: {wrong:?}"
    );
    drop(m);

    // fdinfo still works and shows no MRs.
    let info = fdinfo(dev.raw())?;
    t.diag(format!(
        "old fd fdinfo: {}",
        info.trim().replace('\n', " | ")
    ));
    ensure!(
        !info.contains("key="),
        "fdinfo of the unbound context still lists MRs:\n{info}"
    );
    ensure!(
        info.lines()
            .any(|l| l.starts_with("state:") && l.contains("removed")),
        "fdinfo of the unbound context does not say state removed:\n{info}"
    );

    // The event fd: POLLHUP, then EOF (queued events first, if any).
    let rev = sys::poll_one(efd.as_raw_fd(), libc::POLLIN, 1000)?;
    ensure!(
        rev & libc::POLLHUP != 0,
        "event fd after unbind: poll revents {rev:#x}, expected POLLHUP"
    );
    let mut eof = false;
    for _ in 0..64 {
        match sys::read_fd(efd.as_raw_fd(), EVENT_SIZE * 16) {
            Ok(b) if b.is_empty() => {
                eof = true;
                break;
            }
            Ok(b) => {
                ensure!(
                    b.len() % EVENT_SIZE == 0,
                    "event read returned {} bytes",
                    b.len()
                );
                for e in parse_events(&b) {
                    t.diag(format!("queued before EOF: {}", format_event(&e)));
                }
            }
            Err(e) => fail!(
                "read(event fd) after unbind: {} ({e}), expected EOF",
                errno_name(e)
            ),
        }
    }
    ensure!(eof, "event fd after unbind never read EOF");
    t.diag(format!("event fd: revents {rev:#x}, read EOF"));

    // The node, the debugfs dir: gone; a new open fails.
    let node_gone = sys::wait_path_gone(crate::dev::DEFAULT_DEV, Duration::from_secs(2));
    ensure!(
        node_gone,
        "{} still exists 2 s after unbind",
        crate::dev::DEFAULT_DEV
    );
    expect_errno(
        Dev::open_default(),
        libc::ENOENT,
        "open of /dev/pinlease0 after unbind",
    )?;
    if sys::mount_at("/sys/kernel/debug").is_some() {
        ensure!(
            !std::path::Path::new(DEBUGFS_DIR).exists(),
            "{DEBUGFS_DIR} still exists after unbind"
        );
    }

    close_checked(efd, "event fd")?;
    close_checked(dev.into_fd(), "unbound device fd")?;
    drop(anon);
    drop(mfd);

    // Bind again: a fresh device, fully usable.
    let t1 = Instant::now();
    sys::write_str(&format!("{DRIVER_DIR}/bind"), &name)?;
    guard.bound = true;
    ensure!(
        std::path::Path::new(&format!("{DRIVER_DIR}/{name}")).exists(),
        "{DRIVER_DIR}/{name} missing after bind"
    );
    ensure!(
        sys::wait_path(crate::dev::DEFAULT_DEV, Duration::from_secs(10)),
        "{} did not come back within 10 s of bind",
        crate::dev::DEFAULT_DEV
    );
    let d = wait_device_usable(Duration::from_secs(5))?;
    let q2 = d.query()?;
    t.diag(format!(
        "rebound {name} in {} ms: virtio_id {} ctx {:#x}",
        t1.elapsed().as_millis(),
        q2.virtio_id,
        q2.ctx
    ));
    let src = Mapping::anon(64 * KIB)?;
    let dst = Mapping::new(&Backing::Memfd, 64 * KIB, false)?;
    src.fill_with(0, src.len(), pattern);
    dst.fill_with(0, dst.len(), |_| 0xee);
    let ks = d
        .reg_mr(src.addr(), src.len() as u64, PL_ACCESS_ALL, 0)?
        .key;
    let kd = d
        .reg_mr(dst.addr(), dst.len() as u64, PL_ACCESS_ALL, 0)?
        .key;
    d.write(ks, 0, kd, 0, src.len() as u64)?;
    if let Some((o, g, w)) = dst.first_mismatch(0, dst.len(), pattern) {
        fail!("WRITE after rebind: byte {o} = {g:#x}, expected {w:#x}");
    }
    d.dereg_mr(ks)?;
    d.dereg_mr(kd)?;
    drop(d);
    Ok(())
}

pub(super) fn module_unload_reload(t: &mut CaseCtx) -> CaseResult {
    if !std::path::Path::new(MODULE_PATH).exists() {
        skip!("{MODULE_PATH} does not exist");
    }
    if !sys::module_loaded(MODULE_NAME) {
        skip!("module {MODULE_NAME} is not loaded (built in?)");
    }
    reload_module(t)?;
    let d = wait_device_usable(Duration::from_secs(5))?;
    let q = d.query()?;
    t.diag(format!(
        "after reload: virtio_id {} ctx {:#x}",
        q.virtio_id, q.ctx
    ));
    let m = Mapping::anon(64 * KIB)?;
    let k = d.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)?.key;
    let k2 = d.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)?.key;
    m.fill_with(0, m.len(), pattern);
    d.write(k, 0, k2, 0, 8)?;
    d.dereg_mr(k)?;
    d.dereg_mr(k2)?;
    Ok(())
}
