//! The module's require_lease parameter: REG_MR of a shared file mapping
//! without a lease is refused while it is set.

use crate::cases::helpers::{
    expect_errno, open, open_needing, pins_held, reap_breaker, spawn_breaker, wait_lease_state,
    Breaker, TestFile, LEASE_LEN,
};
use crate::dev::Dev;
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, Exit, Mapping};
use crate::uapi::*;
use crate::{ensure, skip};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;
use std::time::Duration;

const REQUIRE_LEASE: &str = "/sys/module/pinlease/parameters/require_lease";

/// Sets the module's require_lease parameter; resets it to N on drop.
struct RequireLease;

impl RequireLease {
    fn set() -> Result<RequireLease, CaseErr> {
        if !std::path::Path::new(REQUIRE_LEASE).exists() {
            skip!("{REQUIRE_LEASE} does not exist (module without require_lease)");
        }
        sys::write_str(REQUIRE_LEASE, "Y\n")?;
        Ok(RequireLease)
    }
}

impl Drop for RequireLease {
    fn drop(&mut self) {
        let _ = sys::write_str(REQUIRE_LEASE, "N\n");
    }
}

pub(in crate::cases) fn reg_mr_require_lease_param(t: &mut CaseCtx) -> CaseResult {
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    let file = TestFile::on("/mnt/xfs", "xfs", "require-lease")?;
    let map = Mapping::new(&file.backing(true), LEASE_LEN, false)?;
    map.touch();
    let data = std::fs::File::open(&file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.path)))?;
    let anon = Mapping::anon(LEASE_LEN)?;
    let reg = |d: &Dev, addr: u64, len: usize| {
        d.reg_mr(addr, len as u64, PL_ACCESS_ALL, PINLEASE_PIN_SHORTTERM)
    };
    let held0 = pins_held()?;
    {
        let _p = RequireLease::set()?;
        let v = sys::read_to_string(REQUIRE_LEASE)?;
        ensure!(v.trim() == "Y", "require_lease reads {v:?} after writing Y");
        expect_errno(
            reg(&dev, map.addr(), LEASE_LEN),
            libc::EPERM,
            "REG_MR of a file range without a lease",
        )?;
        // Anonymous memory is not affected (long-term too).
        let k = dev
            .reg_mr(anon.addr(), LEASE_LEN as u64, PL_ACCESS_ALL, 0)?
            .key;
        dev.dereg_mr(k)?;
        // A lease on the first page covers only the first page.
        let part = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 4096)?;
        expect_errno(
            reg(&dev, map.addr(), LEASE_LEN),
            libc::EPERM,
            "REG_MR of 64 KiB under a 4 KiB lease",
        )?;
        let r = reg(&dev, map.addr(), 4096)?;
        t.diag(format!(
            "4 KiB lease {part:#x}: REG_MR of its page ok, MR {:#x} lease {:#x}",
            r.key, r.lease
        ));
        dev.dereg_mr(r.key)?;
        // A lease to EOF covers all of it.
        let full = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
        let r = reg(&dev, map.addr(), LEASE_LEN)?;
        t.diag(format!(
            "lease {full:#x} to EOF: REG_MR ok, MR {:#x} reported under lease {:#x}",
            r.key, r.lease
        ));
        // Another context's lease is not this context's.
        let other = open()?;
        expect_errno(
            reg(&other, map.addr(), LEASE_LEN),
            libc::EPERM,
            "REG_MR by another context under this context's lease",
        )?;
        drop(other);
        // A revoked lease does not count: truncate breaks both leases.
        let pid = spawn_breaker(Breaker::Truncate, &file.path)?;
        let exit = reap_breaker(pid, Duration::from_secs(30), "truncate")?;
        ensure!(exit == Exit::Code(0), "truncate child: {exit}");
        wait_lease_state(dev.raw(), full, "revoked", Duration::from_secs(5))?;
        wait_lease_state(dev.raw(), part, "revoked", Duration::from_secs(5))?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file.path)
            .and_then(|f| f.set_len(LEASE_LEN as u64))
            .map_err(|e| CaseErr::Fail(format!("extend {}: {e}", file.path)))?;
        expect_errno(
            reg(&dev, map.addr(), LEASE_LEN),
            libc::EPERM,
            "REG_MR under revoked leases only",
        )?;
        dev.dereg_mr(r.key)?;
        dev.lease_release(full)?;
        dev.lease_release(part)?;
    }
    let v = sys::read_to_string(REQUIRE_LEASE)?;
    ensure!(v.trim() == "N", "require_lease reads {v:?} after the reset");
    let r = reg(&dev, map.addr(), LEASE_LEN)?;
    dev.dereg_mr(r.key)?;
    t.diag("require_lease=N again: REG_MR without a lease ok".to_string());
    ensure!(pins_held()? == held0, "pins did not balance");
    Ok(())
}
