//! Lifetimes (`lifetime_*`): event and export fds outliving the device
//! fd, imports aliasing their source (docs/design.md §6).

use crate::cases::helpers::{
    expect_errno, expect_errno_in, fdinfo, names_handle, open, open_needing, pattern, reg_halves,
    DEBUGFS_DIR, KIB,
};
use crate::dev::{format_event, parse_events, EVENT_SIZE};
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, errno_name, Mapping};
use crate::{ensure, fail};
use pinlease_abi::{self as abi, PL_ACCESS_ALL, PL_ACCESS_READ};
use std::os::fd::AsRawFd;
use std::time::Duration;

pub(super) fn lifetime_event_fd_outlives_device_fd(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    let ctx = dev.query()?.ctx;
    let m = Mapping::anon(128 * KIB)?;
    let (r1, r2) = reg_halves(&dev, &m)?;
    let efd = dev.event_fd()?;
    let fd = efd.as_raw_fd();
    sys::set_nonblock(fd)?;
    drop(dev);
    // The pins go with the device fd, not with the event fd.
    match sys::wait_pin_balance(Duration::from_secs(2))? {
        Ok(_) => {}
        Err((a, r)) => {
            fail!("device fd closed, event fd open: pins not dropped (acquired {a}, released {r})")
        }
    }
    // The event fd still polls and reads: whole records, EAGAIN or EOF.
    for round in 0..3 {
        let rev = sys::poll_one(fd, libc::POLLIN, 100)?;
        match sys::read_fd(fd, EVENT_SIZE * 4) {
            Ok(b) => {
                ensure!(b.len() % EVENT_SIZE == 0, "read returned {} bytes", b.len());
                for e in parse_events(&b) {
                    t.diag(format!(
                        "round {round} revents {rev:#x}: {}",
                        format_event(&e)
                    ));
                }
            }
            Err(libc::EAGAIN) => {}
            Err(e) => fail!(
                "read(event fd) after the device fd closed: {} ({e})",
                errno_name(e)
            ),
        }
    }
    let info = fdinfo(fd)?;
    t.diag(format!("event fd fdinfo: {}", info.replace('\n', " | ")));
    for k in [r1.key, r2.key] {
        ensure!(
            !info.contains(&format!("key={k:#x}")),
            "event fd fdinfo lists MR {k:#x} of the closed context"
        );
    }
    if sys::mount_at("/sys/kernel/debug").is_some() {
        if let Ok(mrs) = sys::read_to_string(&format!("{DEBUGFS_DIR}/mrs")) {
            for k in [r1.key, r2.key] {
                ensure!(
                    !names_handle(&mrs, k),
                    "debugfs mrs still lists {k:#x} of closed ctx {ctx:#x}:\n{mrs}"
                );
            }
        }
    }
    drop(efd);
    Ok(())
}

pub(super) fn lifetime_export_fd_outlives_device_fd(t: &mut CaseCtx) -> CaseResult {
    let a = open_needing(abi::PL_FEATURE_EXPORT, "EXPORT")?;
    let m = Mapping::anon(64 * KIB)?;
    let kx = a.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)?.key;
    let exp1 = a.export_mr(kx)?;
    let exp2 = a.export_mr(kx)?;
    ensure!(
        exp1.as_raw_fd() != exp2.as_raw_fd(),
        "second export returned the same fd number"
    );
    let fl = unsafe { libc::fcntl(exp1.as_raw_fd(), libc::F_GETFD) };
    ensure!(
        fl >= 0 && fl & libc::FD_CLOEXEC != 0,
        "export fd is not O_CLOEXEC (F_GETFD {fl})"
    );
    drop(a);
    match sys::wait_pin_balance(Duration::from_secs(2))? {
        Ok(_) => {}
        Err((ac, r)) => fail!(
            "device fd closed, export fds open: pins not dropped (acquired {ac}, released {r})"
        ),
    }
    let b = open()?;
    let res = b.import_mr(exp1.as_raw_fd(), PL_ACCESS_READ);
    let e = expect_errno_in(
        res,
        &[
            libc::ECANCELED,
            libc::ESTALE,
            libc::ENOENT,
            libc::ESHUTDOWN,
            libc::ENODEV,
        ],
        "IMPORT_MR of an export whose context was closed",
    )?;
    t.diag(format!(
        "import after the source context closed: {} (ABI: ECANCELED)",
        errno_name(e)
    ));
    t.diag(format!(
        "export fd fdinfo: {}",
        fdinfo(exp1.as_raw_fd())?.replace('\n', " | ")
    ));
    drop(exp1);
    drop(b);
    drop(exp2);
    Ok(())
}

pub(super) fn lifetime_import_aliases_source(_t: &mut CaseCtx) -> CaseResult {
    let a = open_needing(abi::PL_FEATURE_EXPORT, "EXPORT")?;
    let b = open()?;
    let mx = Mapping::anon(64 * KIB)?;
    mx.fill_with(0, mx.len(), |_| 0);
    let kx = a.reg_mr(mx.addr(), mx.len() as u64, PL_ACCESS_ALL, 0)?.key;
    let exp = a.export_mr(kx)?;
    let ky = b.import_mr(exp.as_raw_fd(), PL_ACCESS_ALL)?;
    ensure!(ky != kx, "import got the source's key {kx:#x}");
    let ml = Mapping::anon(16 * KIB)?;
    ml.fill_with(0, ml.len(), pattern);
    let kl = b.reg_mr(ml.addr(), ml.len() as u64, PL_ACCESS_ALL, 0)?.key;
    // WRITE through the import lands in the source's pages.
    b.write(kl, 0, ky, 512, 12 * KIB as u64)?;
    if let Some((o, got, want)) = mx.first_mismatch(512, 12 * KIB, |i| pattern(i - 512)) {
        fail!("WRITE through import {ky:#x}: source mapping byte {o} = {got:#04x}, expected {want:#04x}");
    }
    ensure!(
        mx.get_u8(511) == 0 && mx.get_u8(512 + 12 * KIB) == 0,
        "WRITE through the import spilled"
    );
    // And user-space writes to the source are seen through the import.
    mx.set_u64(32 * KIB, 0x7777_8888_9999_aaaa);
    b.read(kl, 0, ky, 32 * KIB as u64, 8)?;
    ensure!(
        ml.get_u64(0) == 0x7777_8888_9999_aaaa,
        "READ through the import got {:#x}",
        ml.get_u64(0)
    );
    // An import with access beyond what the import fd allows is refused.
    let kr = b.import_mr(exp.as_raw_fd(), PL_ACCESS_READ)?;
    expect_errno(
        b.write(kl, 0, kr, 0, 8),
        libc::EPERM,
        "WRITE to a read-only import",
    )?;
    b.dereg_mr(kr)?;
    b.dereg_mr(ky)?;
    drop(exp);
    drop(b);
    a.dereg_mr(kx)?;
    Ok(())
}
