//! Lease basics: take and release, a lease outliving the data fd, ext4
//! taking no layout leases, the holder killed while a breaker waits.

use crate::cases::helpers::{
    debugfs_table, expect_errno, fdinfo, lease_line, lease_state, lease_whole_file, line_field,
    names_handle, open_needing, reap_breaker, spawn_breaker, wait_lease_state, wait_mr_revoked,
    Breaker, TestFile, LEASE_LEN,
};
use crate::cases::leases::holder;
use crate::dev::{Dev, SysError};
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, errno_name, Backing, Exit, Mapping};
use crate::uapi::*;
use crate::{ensure, fail};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub(in crate::cases) fn lease_take_release_basic(t: &mut CaseCtx) -> CaseResult {
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    let file = TestFile::on("/mnt/xfs", "xfs", "lease-basic")?;
    let m = Mapping::new(&file.backing(true), LEASE_LEN, false)?;
    drop(m);
    let data = std::fs::File::open(&file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.path)))?;
    expect_errno(
        dev.lease_take(data.as_raw_fd(), 0, 0, 0),
        libc::EINVAL,
        "LEASE_TAKE policy 0",
    )?;
    expect_errno(
        dev.lease_take(-1, abi::PL_POLICY_REVOKE, 0, 0),
        libc::EBADF,
        "LEASE_TAKE fd -1",
    )?;
    let lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, LEASE_LEN as u64)?;
    ensure!(lease != 0, "LEASE_TAKE returned lease 0");
    let fi = fdinfo(dev.raw())?;
    let Some(line) = lease_line(&fi, lease) else {
        fail!(
            "fdinfo does not list lease {lease:#x}: {}",
            fi.replace('\n', " | ")
        );
    };
    t.diag(format!("fdinfo: {line}"));
    ensure!(
        line_field(&line, "state") == Some("active")
            && line_field(&line, "policy") == Some("revoke"),
        "fdinfo lease line: {line}"
    );
    let tab = debugfs_table("leases")?;
    ensure!(
        tab.lines().any(|l| names_handle(l, lease)),
        "debugfs leases does not list {lease:#x}: {}",
        tab.replace('\n', " | ")
    );
    dev.lease_release(lease)?;
    ensure!(
        lease_line(&fdinfo(dev.raw())?, lease).is_none(),
        "lease {lease:#x} still in fdinfo after LEASE_RELEASE"
    );
    ensure!(
        !debugfs_table("leases")?
            .lines()
            .any(|l| names_handle(l, lease)),
        "lease {lease:#x} still in debugfs after LEASE_RELEASE"
    );
    expect_errno(
        dev.lease_release(lease),
        libc::ENOENT,
        "second LEASE_RELEASE",
    )?;
    Ok(())
}

pub(in crate::cases) fn lease_survives_data_fd_close(t: &mut CaseCtx) -> CaseResult {
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    let file = TestFile::on("/mnt/xfs", "xfs", "lease-fdclose")?;
    drop(Mapping::new(&file.backing(true), LEASE_LEN, false)?);
    let lease = lease_whole_file(&dev, &file.path, abi::PL_POLICY_REVOKE)?;
    ensure!(
        lease_state(dev.raw(), lease)?.as_deref() == Some("active"),
        "lease {lease:#x} not active after the data fd's close"
    );
    let pid = spawn_breaker(Breaker::Truncate, &file.path)?;
    let exit = reap_breaker(pid, Duration::from_secs(30), "truncate")?;
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    wait_lease_state(dev.raw(), lease, "revoked", Duration::from_secs(5))?;
    let line = lease_line(&fdinfo(dev.raw())?, lease).unwrap_or_default();
    t.diag(format!("after truncate from another process: {line}"));
    ensure!(
        line_field(&line, "breaks") == Some("1"),
        "the truncate did not break the lease once: {line}"
    );
    dev.lease_release(lease)?;
    Ok(())
}

pub(in crate::cases) fn ext4_never_breaks_layout_leases(t: &mut CaseCtx) -> CaseResult {
    let Some(h) = holder(t, "/mnt/ext4", "ext4", "ext4-lease", abi::PL_POLICY_REVOKE)? else {
        return Ok(());
    };
    let pid = spawn_breaker(Breaker::Truncate, &h.file.path)?;
    let exit = reap_breaker(pid, Duration::from_secs(30), "truncate on ext4")?;
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    let key = h.key;
    let (hit, all) = wait_mr_revoked(t, h.ev.as_raw_fd(), key, Duration::from_millis(500))?;
    ensure!(hit.is_none(), "ext4 truncate revoked MR {key:#x}");
    ensure!(
        !all.iter().any(|e| e.kind == abi::PL_EVENT_LEASE_BROKEN),
        "ext4 truncate broke a layout lease"
    );
    let line = lease_line(&fdinfo(h.dev.raw())?, h.lease).unwrap_or_default();
    t.diag(format!("after truncate on ext4: {line}"));
    ensure!(
        line_field(&line, "state") == Some("active") && line_field(&line, "breaks") == Some("0"),
        "lease after an ext4 truncate: {line}"
    );
    h.dev.write(h.lkey, 0, h.key, 0, 4096)?;
    t.diag("ext4 never calls break_layout(): the MR stays live after truncate".to_string());
    h.dev.dereg_mr(h.key)?;
    h.dev.lease_release(h.lease)?;
    h.dev.dereg_mr(h.lkey)?;
    Ok(())
}

pub(in crate::cases) fn holder_killed_while_breaker_waits(t: &mut CaseCtx) -> CaseResult {
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    drop(dev);
    let file = TestFile::on("/mnt/xfs", "xfs", "holder-killed")?;
    drop(Mapping::new(&file.backing(true), LEASE_LEN, false)?);
    let (rd, wr) = sys::pipe()?;
    let path = file.path.clone();
    let holder_pid = sys::fork_child(move || {
        let res = (|| -> Result<(Dev, Mapping, u64), SysError> {
            let dev = Dev::open_default()?;
            let map = Mapping::new(
                &Backing::File {
                    path: path.clone(),
                    shared: true,
                },
                LEASE_LEN,
                false,
            )?;
            let data = std::fs::File::open(&path).map_err(|_| SysError::new("open", libc::EIO))?;
            let lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_WAIT, 0, 0)?;
            drop(data);
            dev.reg_mr(
                map.addr(),
                LEASE_LEN as u64,
                PL_ACCESS_ALL,
                PINLEASE_PIN_SHORTTERM,
            )?;
            Ok((dev, map, lease))
        })();
        match res {
            Ok(keep) => {
                let _ = sys::write_all(wr.as_raw_fd(), &[0]);
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let _ = &keep;
                }
            }
            Err(e) => {
                let _ = sys::write_all(wr.as_raw_fd(), &[e.errno as u8]);
                1
            }
        }
    })?;
    let msg = sys::read_exact_timeout(rd.as_raw_fd(), 1, Duration::from_secs(30));
    let msg = match msg {
        Ok(m) => m,
        Err(e) => {
            sys::kill(holder_pid, libc::SIGKILL);
            let _ = sys::wait_timeout(holder_pid, Duration::from_secs(10));
            return Err(e.into());
        }
    };
    if msg[0] != 0 {
        let _ = sys::wait_timeout(holder_pid, Duration::from_secs(10));
        fail!("holder setup failed: {}", errno_name(msg[0].into()));
    }
    let pid = spawn_breaker(Breaker::Truncate, &file.path)?;
    std::thread::sleep(Duration::from_millis(1000));
    let still = sys::wait_timeout(pid, Duration::ZERO)?;
    t.diag(format!("breaker after 1 s: {}", sys::proc_stack(pid)));
    sys::kill(holder_pid, libc::SIGKILL);
    let hexit = sys::wait_timeout(holder_pid, Duration::from_secs(10))?;
    let t0 = Instant::now();
    let exit = reap_breaker(
        pid,
        Duration::from_secs(10),
        "truncate after the holder's death",
    )?;
    t.diag(format!(
        "holder: {hexit:?}; truncate returned {:?} after the kill: {exit}",
        t0.elapsed()
    ));
    ensure!(
        still.is_none(),
        "truncate did not wait for the holder: {still:?}"
    );
    ensure!(
        hexit == Some(Exit::Signal(libc::SIGKILL)),
        "holder: {hexit:?}"
    );
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    Ok(())
}
