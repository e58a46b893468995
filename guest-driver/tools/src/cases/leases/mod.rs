//! Layout leases: the cases of each lease policy (revoke, wait, timeout)
//! under each breaker, the basics, the truncate-vs-REG_MR race and the
//! require_lease parameter; here the lease holder fixture and the breaker
//! set-up and checks they share.

pub(super) mod basic;
pub(super) mod killed_breaker;
pub(super) mod require_lease;
pub(super) mod revoke;
pub(super) mod timeout;
pub(super) mod truncate_race;
pub(super) mod wait;

use crate::cases::helpers::{
    open_needing, reflink_src, Breaker, FileCloneRange, TestFile, FICLONERANGE, LEASE_LEN,
};
use crate::dev::Dev;
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, errno_name, Mapping};
use crate::uapi::*;
use crate::{ensure, fail, skip};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;

/// A lease holder: device fd, event fd, a 64 KiB shared file mapping
/// registered short-term writable, a local anonymous MR, and a lease.
pub(super) struct Holder {
    pub(super) dev: Dev,
    pub(super) ev: std::os::fd::OwnedFd,
    pub(super) file: TestFile,
    pub(super) map: Mapping,
    pub(super) key: u64,
    pub(super) local: Mapping,
    pub(super) lkey: u64,
    pub(super) lease: u64,
}

fn holder(
    t: &mut CaseCtx,
    mnt: &str,
    fstype: &str,
    name: &str,
    policy: u32,
) -> Result<Option<Holder>, CaseErr> {
    holder_flags(t, mnt, fstype, name, policy, 0)
}

/// `holder` with extra REG_MR flags for the file MR (PINLEASE_REG_SCRUB).
pub(super) fn holder_flags(
    t: &mut CaseCtx,
    mnt: &str,
    fstype: &str,
    name: &str,
    policy: u32,
    extra_flags: u32,
) -> Result<Option<Holder>, CaseErr> {
    let dev = open_needing(abi::PL_FEATURE_LEASES, "LEASES")?;
    let file = TestFile::on(mnt, fstype, name)?;
    // Written before the lease: an XFS write breaks layout leases too.
    let map = Mapping::new(&file.backing(true), LEASE_LEN, false)?;
    map.touch();
    let ev = dev.event_fd()?;
    sys::set_nonblock(ev.as_raw_fd())?;
    let data = std::fs::File::open(&file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.path)))?;
    let lease = match dev.lease_take(data.as_raw_fd(), policy, 0, 0) {
        Ok(l) => l,
        Err(e) if fstype != "xfs" => {
            // The kernel's verdict on FL_LAYOUT there is the finding.
            t.diag(format!(
                "LEASE_TAKE on {fstype} refused by the kernel: {e}: {fstype} takes no layout leases"
            ));
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    drop(data);
    let r = dev.reg_mr(
        map.addr(),
        LEASE_LEN as u64,
        PL_ACCESS_ALL,
        PINLEASE_PIN_SHORTTERM | extra_flags,
    )?;
    t.diag(format!(
        "{}: lease {lease:#x} policy {policy}, MR {:#x} ({} pages) under lease {:#x}",
        file.path, r.key, r.npages, r.lease
    ));
    let local = Mapping::anon(4096)?;
    local.fill_with(0, 4096, |_| 0xa5);
    let lkey = dev.reg_mr(local.addr(), 4096, PL_ACCESS_ALL, 0)?.key;
    Ok(Some(Holder {
        dev,
        ev,
        file,
        map,
        key: r.key,
        local,
        lkey,
        lease,
    }))
}

/// A file removed on drop.
struct Scratch(String);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a breaker needs before it runs: xfs_io on PATH; for reflink, the
/// source file (LEASE_LEN bytes of 0x5c) and a check that the filesystem
/// clones at all.
fn prepare_breaker(t: &mut CaseCtx, how: Breaker, path: &str) -> Result<Option<Scratch>, CaseErr> {
    let xfs_io = matches!(how, Breaker::XfsIoTruncate | Breaker::XfsIo(_));
    if xfs_io
        && std::process::Command::new("xfs_io")
            .arg("-V")
            .output()
            .is_err()
    {
        skip!("xfs_io is not on PATH");
    }
    let reflink = match how {
        Breaker::Reflink => true,
        Breaker::XfsIo(cmd) => cmd.contains("SRC"),
        _ => false,
    };
    if !reflink {
        return Ok(None);
    }
    let src = Scratch(reflink_src(path));
    std::fs::write(&src.0, vec![0x5cu8; LEASE_LEN])
        .map_err(|e| CaseErr::Fail(format!("write {}: {e}", src.0)))?;
    // Does this filesystem reflink? Clone onto a scratch file first.
    let probe = Scratch(format!("{path}.probe"));
    let s =
        std::fs::File::open(&src.0).map_err(|e| CaseErr::Fail(format!("open {}: {e}", src.0)))?;
    let d = std::fs::File::create(&probe.0)
        .map_err(|e| CaseErr::Fail(format!("create {}: {e}", probe.0)))?;
    let mut r = FileCloneRange {
        src_fd: s.as_raw_fd().into(),
        src_offset: 0,
        src_length: 0,
        dest_offset: 0,
    };
    // SAFETY: FICLONERANGE on our own fds with a valid struct.
    if unsafe { libc::ioctl(d.as_raw_fd(), FICLONERANGE as _, &mut r) } < 0 {
        let e = sys::last_errno();
        if e == libc::EOPNOTSUPP || e == libc::EXDEV || e == libc::EINVAL {
            skip!(
                "{path}: the filesystem does not reflink ({})",
                errno_name(e)
            );
        }
        fail!("FICLONERANGE probe: {}", errno_name(e));
    }
    t.diag(format!("{}: reflink works (probe clone)", src.0));
    Ok(Some(src))
}

/// Checks that the breaker did what it says to the file.
fn check_breaker_effect(how: Breaker, path: &str) -> CaseResult {
    let data = std::fs::read(path).map_err(|e| CaseErr::Fail(format!("read {path}: {e}")))?;
    let (want_len, want_byte): (usize, Option<u8>) = match how {
        Breaker::Truncate | Breaker::XfsIoTruncate => (0, None),
        Breaker::CollapseRange => (LEASE_LEN - 4096, None),
        Breaker::InsertRange => (LEASE_LEN + 4096, None),
        Breaker::ZeroRange => (LEASE_LEN, Some(0)),
        Breaker::Reflink => (LEASE_LEN, Some(0x5c)),
        Breaker::XfsIo(cmd) if cmd.starts_with("fcollapse") => (LEASE_LEN - 4096, None),
        Breaker::XfsIo(cmd) if cmd.starts_with("finsert") => (LEASE_LEN + 4096, None),
        Breaker::XfsIo(cmd) if cmd.starts_with("fzero") => (LEASE_LEN, Some(0)),
        // A hole over the whole file: same size, reads back as zeros.
        Breaker::XfsIo(cmd) if cmd.starts_with("fpunch") => (LEASE_LEN, Some(0)),
        Breaker::XfsIo(cmd) if cmd.starts_with("reflink") => (LEASE_LEN, Some(0x5c)),
        Breaker::Write | Breaker::XfsIo("pwrite 0 4096") => (LEASE_LEN, None),
        _ => return Ok(()),
    };
    ensure!(
        data.len() == want_len,
        "{how:?}: file size {} after it, expected {want_len}",
        data.len()
    );
    if let Some(b) = want_byte {
        if let Some(i) = data.iter().position(|&x| x != b) {
            fail!("{how:?}: byte {i} is {:#04x}, expected {b:#04x}", data[i]);
        }
    }
    // pwrite(2) writes 0x77 at 0; xfs_io's pwrite its default 0xcd pattern.
    let written: Option<(usize, u8)> = match how {
        Breaker::Write => Some((1, 0x77)),
        Breaker::XfsIo("pwrite 0 4096") => Some((4096, 0xcd)),
        _ => None,
    };
    if let Some((n, b)) = written {
        if let Some(i) = data[..n].iter().position(|&x| x != b) {
            fail!("{how:?}: byte {i} is {:#04x}, expected {b:#04x}", data[i]);
        }
    }
    Ok(())
}

// The triggers issue 4 names for xfs_io (truncate, fpunch, fcollapse,
// reflink) under the wait and timeout policies; revoke has its own (revoke.rs).
const XFS_IO_FPUNCH: Breaker = Breaker::XfsIo("fpunch 0 65536");

const XFS_IO_FCOLLAPSE: Breaker = Breaker::XfsIo("fcollapse 0 4096");

const XFS_IO_REFLINK: Breaker = Breaker::XfsIo("reflink SRC 0 0 65536");
