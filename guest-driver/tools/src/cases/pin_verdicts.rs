//! Pin verdicts per backing type (`pin_*`): each case registers one row
//! of the verdict table (verdicts.rs) and checks the kernel's answer
//! against the row's for the running kernel.

use crate::cases::helpers::{
    dax_file, expect_errno, need_hugepages, open, running_kver, TestFile, KIB, TMPFS_DIR,
};
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, errno_name, Backing, Mapping};
use crate::uapi::*;
use crate::verdicts::{self, Expect, Mem, Row};
use crate::{case_fns, ensure, skip};
use pinlease_abi::{self as abi, PL_ACCESS_ALL, PL_ACCESS_READ};

/// Registers `len` bytes of `backing` and checks the kernel's answer
/// against `row`'s for the running kernel (verdicts.rs): granted = pinned
/// pages and pin counters checked, an errno = it must fail with that errno
/// and pin nothing. Prints `verdict ROW RESULT expected EXPECTED`.
fn verdict(t: &mut CaseCtx, row: &Row, backing: &Backing, len: usize) -> CaseResult {
    let kver = running_kver()?;
    let want = row.expected(kver);
    let readonly = row.readonly;
    let mut flags = 0;
    if readonly {
        flags |= PINLEASE_PIN_READONLY;
    }
    if row.shortterm {
        flags |= PINLEASE_PIN_SHORTTERM;
    }
    let dev = open()?;
    let map = match Mapping::new(backing, len, readonly) {
        Ok(m) => m,
        Err(e)
            if matches!(backing, Backing::Hugetlb | Backing::MemfdHugetlb { .. })
                && e.errno == libc::ENOMEM =>
        {
            skip!("no free huge pages: {e}")
        }
        Err(e) => return Err(e.into()),
    };
    let access = if readonly {
        PL_ACCESS_READ
    } else {
        PL_ACCESS_ALL
    };
    let (a0, r0) = sys::pin_counters()?;
    let res = dev.reg_mr(map.addr(), len as u64, access, flags);
    let (a1, r1) = sys::pin_counters()?;
    let pinned = a1 - a0;
    let released = r1 - r0;
    t.diag(format!(
        "{backing} len={len} access={access:#x} flags={flags:#x}: {} (pins acquired +{pinned}, released +{released})",
        match &res {
            Ok(r) => format!("ok key={:#x} npages={} lease={:#x}", r.key, r.npages, r.lease),
            Err(e) => format!("{} ({})", errno_name(e.errno), e.errno),
        }
    ));
    let got = Expect::of(res.as_ref().map(|_| ()).map_err(|e| e.errno));
    t.diag(verdicts::verdict_line(row, got, want));
    ensure!(
        got == want,
        "{} on {kver} ({}): REG_MR {}, but the verdict table expects {} ({})",
        row.id,
        verdicts::uname_release(),
        got.word(),
        want.word(),
        row.rule
    );
    match want {
        Expect::Granted => {
            let r = res?;
            let want_pages = len.div_ceil(4096) as u32;
            ensure!(r.key != 0, "REG_MR returned key 0");
            ensure!(
                r.npages == want_pages,
                "REG_MR npages {} != {want_pages} for {len} bytes",
                r.npages
            );
            ensure!(
                r.lease == 0,
                "REG_MR lease {:#x} != 0 (no lease taken)",
                r.lease
            );
            ensure!(
                pinned - released == u64::from(want_pages),
                "nr_foll_pin_acquired grew by {pinned} and released by {released}: \
                 expected {want_pages} pins held"
            );
            if !readonly {
                // The device reaches the pinned pages: FILL then read back.
                let q = dev.query()?;
                if q.features & abi::PL_FEATURE_PATTERN != 0 {
                    dev.fill(
                        r.key,
                        0,
                        len as u64,
                        0x0123_4567_89ab_cdef,
                        abi::PL_PATTERN_OFFSET_XOR,
                    )?;
                    for o in (0..len).step_by(4096 + 8) {
                        let o = o & !7;
                        let got = map.get_u64(o);
                        let want = 0x0123_4567_89ab_cdef ^ o as u64;
                        ensure!(
                            got == want,
                            "after FILL: word at {o} is {got:#x}, expected {want:#x}"
                        );
                    }
                }
            }
            dev.dereg_mr(r.key)?;
        }
        Expect::Errno(errno) => {
            expect_errno(res, errno, &format!("REG_MR of {backing}"))?;
            ensure!(
                pinned == released,
                "failed REG_MR left pins: acquired +{pinned}, released +{released}"
            );
        }
    }
    drop(map);
    drop(dev);
    Ok(())
}

/// Sets up `row`'s memory (a file named after the row on its filesystem,
/// a tmpfs mounted for it) and runs `verdict`.
fn pin_row(t: &mut CaseCtx, id: &str) -> CaseResult {
    let row = verdicts::row(id);
    let len = 256 * KIB;
    match row.mem {
        Mem::Anon => verdict(t, row, &Backing::Anon, len),
        Mem::Memfd => verdict(t, row, &Backing::Memfd, len),
        Mem::AnonHugetlb => {
            need_hugepages()?;
            verdict(t, row, &Backing::Hugetlb, sys::HUGE_2M)
        }
        Mem::Hugetlbfs => {
            need_hugepages()?;
            let b = Backing::MemfdHugetlb { shared: row.shared };
            verdict(t, row, &b, sys::HUGE_2M)
        }
        Mem::Tmpfs => {
            let _mnt = sys::TmpfsMount::new(TMPFS_DIR, "8m")?;
            let f = TestFile::on(TMPFS_DIR, "tmpfs", id)?;
            verdict(t, row, &f.backing(row.shared), len)
        }
        Mem::Xfs => {
            let f = TestFile::on("/mnt/xfs", "xfs", id)?;
            verdict(t, row, &f.backing(row.shared), len)
        }
        Mem::Ext4 => {
            let f = TestFile::on("/mnt/ext4", "ext4", id)?;
            verdict(t, row, &f.backing(row.shared), len)
        }
        Mem::FsDax => {
            let f = dax_file(t, id, len)?;
            verdict(t, row, &f.backing(row.shared), len)
        }
    }
}

case_fns! {
    pub(super) fn pin_anon_ok => pin_row("anon-private-rw");
    pub(super) fn pin_memfd_ok => pin_row("memfd-shared-rw");
    pub(super) fn pin_shared_writable_tmpfs => pin_row("tmpfs-shared-rw");
    pub(super) fn pin_private_tmpfs => pin_row("tmpfs-private-rw");
    pub(super) fn pin_hugetlb_ok => pin_row("hugetlb-anon-rw");
    pub(super) fn pin_shared_writable_hugetlbfs => pin_row("hugetlbfs-shared-rw");
    pub(super) fn pin_private_hugetlbfs => pin_row("hugetlbfs-private-rw");
    pub(super) fn pin_private_file_xfs_ok => pin_row("xfs-private-rw");
    pub(super) fn pin_readonly_shared_file_xfs_ok => pin_row("xfs-shared-ro");
    pub(super) fn pin_private_file_ext4 => pin_row("ext4-private-rw");
    pub(super) fn pin_readonly_shared_file_ext4 => pin_row("ext4-shared-ro");
    pub(super) fn pin_shared_writable_ext4 => pin_row("ext4-shared-rw");
    pub(super) fn pin_shared_writable_xfs => pin_row("xfs-shared-rw");
    pub(super) fn pin_fsdax_eopnotsupp => pin_row("fsdax-shared-rw");
    pub(super) fn pin_readonly_fsdax => pin_row("fsdax-shared-ro");
    pub(super) fn pin_shortterm_shared_writable_xfs_ok => pin_row("xfs-shared-rw-shortterm");
}
