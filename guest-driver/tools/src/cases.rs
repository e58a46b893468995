//! The guest test cases, in the order they run. Each returns Ok, Skip or
//! Fail with the values involved; the runner (ktap.rs) adds the pin balance
//! and kernel-log checks of the contract after every case.

use crate::dataloss::{
    dataloss_ext4_writeback_truncate, dataloss_hugetlbfs_punch_hole, dataloss_hugetlbfs_truncate,
    dataloss_memfd_punch_hole, dataloss_memfd_truncate, dataloss_xfs_punch_hole_no_lease,
    dataloss_xfs_truncate_no_lease, dataloss_xfs_truncate_revoke_lease,
    dataloss_xfs_truncate_timeout_lease,
};
use crate::dev::{format_event, parse_events, Dev, SysError, SysResult, EVENT_SIZE};
use crate::ktap::{Case, CaseCtx, CaseErr, CaseResult, Checks};
use crate::sys::{self, errno_name, Backing, Mapping};
use crate::uapi::*;
use crate::verdicts::{self, Expect, Mem, Row};
use crate::{ensure, fail, skip};
use pinlease::abi::{self, PL_ACCESS_ALL, PL_ACCESS_READ};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
pub(crate) const DEBUGFS_DIR: &str = "/sys/kernel/debug/pinlease/pinlease0";
pub const MODULE_PATH: &str = "/lib/pinlease/pinlease.ko";
pub const MODULE_NAME: &str = "pinlease";
/// The module's virtio driver (`.driver.name = KBUILD_MODNAME`).
pub const DRIVER_DIR: &str = "/sys/bus/virtio/drivers/pinlease";

macro_rules! case {
    ($f:ident) => {
        Case {
            name: stringify!($f),
            run: $f,
        }
    };
}
pub(crate) use case;

/// Every case, in run order.
pub fn all() -> Vec<Case> {
    vec![
        case!(query_device),
        case!(pin_anon_ok),
        case!(pin_memfd_ok),
        case!(pin_shared_writable_tmpfs),
        case!(pin_private_tmpfs),
        case!(pin_hugetlb_ok),
        case!(pin_shared_writable_hugetlbfs),
        case!(pin_private_hugetlbfs),
        case!(pin_private_file_xfs_ok),
        case!(pin_readonly_shared_file_xfs_ok),
        case!(pin_private_file_ext4),
        case!(pin_readonly_shared_file_ext4),
        case!(pin_shared_writable_ext4),
        case!(pin_shared_writable_xfs),
        case!(pin_fsdax_eopnotsupp),
        case!(pin_readonly_fsdax),
        case!(pin_shortterm_shared_writable_xfs_ok),
        case!(dma_write),
        case!(dma_read),
        case!(dma_compare_swap_both_outcomes),
        case!(dma_fetch_add),
        case!(dma_fill_verify_const),
        case!(dma_fill_verify_xor_detects_corruption),
        case!(dma_unaligned_mr_start_and_length),
        case!(bad_dma_unknown_op_einval),
        case!(bad_stale_key_estale),
        case!(bad_out_of_range_erange),
        case!(bad_reg_args_einval),
        case!(fdinfo_lists_mrs),
        case!(debugfs_tables_list_contexts_and_mrs),
        case!(events_whole_records_poll_empty_no_lease_revokes_yet),
        case!(events_mr_revoked_import_source_gone),
        case!(lifetime_event_fd_outlives_device_fd),
        case!(lifetime_export_fd_outlives_device_fd),
        case!(lifetime_import_aliases_source),
        case!(fork_child_holds_fd_and_writes),
        case!(scm_rights_sender_exits),
        case!(exit_with_mrs_registered),
        case!(sigkill_during_large_reg_mr),
        case!(lease_take_release_basic),
        case!(lease_survives_data_fd_close),
        case!(revoke_policy_truncate),
        case!(revoke_policy_punch_hole),
        case!(revoke_policy_xfs_io_truncate),
        case!(revoke_policy_collapse_range),
        case!(revoke_policy_insert_range),
        case!(revoke_policy_zero_range),
        case!(revoke_policy_reflink_onto_leased_file),
        case!(revoke_policy_xfs_io_fpunch),
        case!(revoke_policy_xfs_io_fcollapse),
        case!(revoke_policy_xfs_io_finsert),
        case!(revoke_policy_xfs_io_fzero),
        case!(revoke_policy_xfs_io_reflink),
        case!(revoke_policy_write),
        case!(revoke_policy_xfs_io_pwrite),
        case!(wait_policy_truncate_waits_for_release),
        case!(wait_policy_punch_hole_waits_for_release),
        case!(wait_policy_collapse_range_waits_for_release),
        case!(wait_policy_insert_range_waits_for_release),
        case!(wait_policy_zero_range_waits_for_release),
        case!(wait_policy_reflink_waits_for_release),
        case!(wait_policy_write_waits_for_release),
        case!(wait_policy_xfs_io_truncate),
        case!(wait_policy_xfs_io_fpunch),
        case!(wait_policy_xfs_io_fcollapse),
        case!(wait_policy_xfs_io_reflink),
        case!(timeout_policy_lease_lost),
        case!(timeout_policy_punch_hole_lease_lost),
        case!(timeout_policy_collapse_range_lease_lost),
        case!(timeout_policy_insert_range_lease_lost),
        case!(timeout_policy_zero_range_lease_lost),
        case!(timeout_policy_reflink_lease_lost),
        case!(timeout_policy_write_lease_lost),
        case!(timeout_policy_xfs_io_truncate),
        case!(timeout_policy_xfs_io_fpunch),
        case!(timeout_policy_xfs_io_fcollapse),
        case!(timeout_policy_xfs_io_reflink),
        case!(scrub_canaries_appear_in_registered_pages),
        case!(revoke_then_no_canary_in_fresh_memory),
        case!(timeout_lost_lease_scrub_reports_loss),
        case!(dataloss_memfd_truncate),
        case!(dataloss_memfd_punch_hole),
        case!(dataloss_hugetlbfs_truncate),
        case!(dataloss_hugetlbfs_punch_hole),
        case!(dataloss_xfs_truncate_no_lease),
        case!(dataloss_xfs_punch_hole_no_lease),
        case!(dataloss_xfs_truncate_timeout_lease),
        case!(dataloss_xfs_truncate_revoke_lease),
        case!(dataloss_ext4_writeback_truncate),
        case!(ext4_never_breaks_layout_leases),
        case!(holder_killed_while_breaker_waits),
        case!(concurrent_truncate_vs_reg_mr),
        case!(reg_mr_require_lease_param),
        case!(fault_pin_after_fails_reg_mr_and_unpins),
        case!(fault_pin_times_counts_down),
        case!(fault_lease_set_fails_lease_take),
        case!(fault_release_delay_ms_defers_context_release),
        case!(fault_drop_event_discards_next_events),
        case!(fault_params_refuse_bad_values),
        case!(fault_debugfs_file_lists_params_and_counts),
        case!(fsdax_shortterm_pin_under_lease),
        case!(fsdax_truncate_vs_pin_under_revoke_lease),
        case!(stress_many_contexts_all_cpus),
        case!(device_reset_with_live_mrs),
        case!(unbind_with_live_mrs_then_rebind),
        case!(module_unload_reload),
    ]
}

// ---- the contract's per-case checks ---------------------------------------------

/// Pin balance and kernel-log checks of guest-driver/README.md.
pub struct GuestChecks {
    kmsg: Option<sys::Kmsg>,
}

impl GuestChecks {
    pub fn new() -> GuestChecks {
        GuestChecks { kmsg: None }
    }
}

impl Default for GuestChecks {
    fn default() -> Self {
        GuestChecks::new()
    }
}

impl Checks for GuestChecks {
    fn before(&mut self, name: &str) {
        self.kmsg = Some(sys::Kmsg::open_at_end());
        sys::kmsg_write(&format!("pinlease-guest: case {name} start\n"));
    }

    fn after(&mut self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match sys::wait_pin_balance(Duration::from_secs(2)) {
            Ok(Ok(_)) => {}
            Ok(Err((a, r))) => problems.push(format!(
                "pin balance: nr_foll_pin_acquired {a} != nr_foll_pin_released {r} \
                 ({} pins outstanding) 2 s after the case",
                a as i64 - r as i64
            )),
            Err(e) => problems.push(format!("pin balance: {e}")),
        }
        match self.kmsg.as_mut() {
            Some(k) if k.available() => {
                let bad = sys::kmsg_bad_lines(&k.read_new());
                for l in bad.iter().take(20) {
                    problems.push(format!("kernel log: {l}"));
                }
                if bad.len() > 20 {
                    problems.push(format!("kernel log: ... {} more bad lines", bad.len() - 20));
                }
            }
            _ => problems.push("kernel log: /dev/kmsg could not be opened".to_string()),
        }
        sys::kmsg_write(&format!("pinlease-guest: case {name} end\n"));
        problems
    }
}

// ---- helpers ----------------------------------------------------------------------------

pub(crate) fn open() -> Result<Dev, CaseErr> {
    Dev::open_default().map_err(|e| CaseErr::Fail(e.to_string()))
}

/// Expects `r` to fail with `errno`; `what` names the operation.
pub(crate) fn expect_errno<T: std::fmt::Debug>(
    r: Result<T, SysError>,
    errno: i32,
    what: &str,
) -> CaseResult {
    match r {
        Ok(v) => fail!(
            "{what}: expected {} ({errno}), but it succeeded ({v:?})",
            errno_name(errno)
        ),
        Err(e) if e.errno == errno => Ok(()),
        Err(e) => fail!("{what}: expected {} ({errno}), got: {e}", errno_name(errno)),
    }
}

fn expect_errno_in<T: std::fmt::Debug>(
    r: Result<T, SysError>,
    errnos: &[i32],
    what: &str,
) -> Result<i32, CaseErr> {
    let names: Vec<&str> = errnos.iter().map(|&e| errno_name(e)).collect();
    match r {
        Ok(v) => fail!("{what}: expected one of {names:?}, but it succeeded ({v:?})"),
        Err(e) if errnos.contains(&e.errno) => Ok(e.errno),
        Err(e) => fail!("{what}: expected one of {names:?}, got: {e}"),
    }
}

pub(crate) fn need_feature(dev: &Dev, bit: u64, name: &str) -> CaseResult {
    let q = dev.query()?;
    if q.features & bit == 0 {
        skip!("device does not offer {name} (features {:#x})", q.features);
    }
    Ok(())
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 8)) as u8 ^ 0x5a
}

/// A file for a case on the filesystem mounted at `mnt`, which must be
/// `fstype` (SKIP otherwise). Removed on drop.
pub(crate) struct TestFile {
    pub(crate) path: String,
}

impl TestFile {
    pub(crate) fn on(mnt: &str, fstype: &str, name: &str) -> Result<TestFile, CaseErr> {
        match sys::mount_at(mnt) {
            Some(m) if m.fstype == fstype => {}
            Some(m) => skip!("{mnt} is {} ({}), not {fstype}", m.fstype, m.source),
            None => skip!("{mnt} is not mounted (no {fstype} disk in this guest)"),
        }
        let path = format!("{mnt}/pinlease-{name}.dat");
        let _ = std::fs::remove_file(&path);
        Ok(TestFile { path })
    }

    pub(crate) fn backing(&self, shared: bool) -> Backing {
        Backing::File {
            path: self.path.clone(),
            shared,
        }
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

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

/// The running kernel for diagnostics: `6.12` (or uname's release when it
/// does not parse).
pub(crate) fn kname() -> String {
    verdicts::running().map_or_else(verdicts::uname_release, |v| v.to_string())
}

/// The running kernel's version (uname(2)), or FAIL.
pub(crate) fn running_kver() -> Result<verdicts::Kver, CaseErr> {
    match verdicts::running() {
        Some(v) => Ok(v),
        None => fail!(
            "uname release {:?} has no MAJOR.MINOR: no verdict table entry",
            verdicts::uname_release()
        ),
    }
}

/// Where pin cases mount their own tmpfs.
pub(crate) const TMPFS_DIR: &str = "/mnt/pinlease-tmpfs";

/// SKIP unless the guest reserved huge pages.
pub(crate) fn need_hugepages() -> CaseResult {
    let n: u64 = sys::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if n == 0 {
        skip!("/proc/sys/vm/nr_hugepages is 0");
    }
    Ok(())
}

/// SKIP unless /mnt/dax is an FS-DAX mount.
fn need_fsdax() -> Result<String, CaseErr> {
    match sys::mount_at("/mnt/dax") {
        Some(m) if m.has_dax() => Ok(m.fstype),
        Some(m) => skip!("/mnt/dax is mounted without dax ({})", m.options.join(",")),
        None => skip!("/mnt/dax is not mounted (no pmem device)"),
    }
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
            let fstype = need_fsdax()?;
            let f = TestFile::on("/mnt/dax", &fstype, id)?;
            // Create the file, then make sure it really is DAX.
            drop(Mapping::new(&f.backing(true), len, false)?);
            match sys::file_is_dax(&f.path) {
                Some(true) => {}
                Some(false) => skip!("{} is not a DAX file (STATX_ATTR_DAX clear)", f.path),
                None => t.diag("statx does not report STATX_ATTR_DAX; assuming DAX from the mount"),
            }
            verdict(t, row, &f.backing(row.shared), len)
        }
    }
}

/// Two 64 KiB anonymous MRs (access ALL) in one context, a filled with
/// `pattern`, b with 0xEE.
struct Pair {
    dev: Dev,
    a: Mapping,
    b: Mapping,
    ka: u64,
    kb: u64,
}

const PAIR_LEN: usize = 64 * KIB;

fn pair() -> Result<Pair, CaseErr> {
    let dev = open()?;
    let a = Mapping::anon(PAIR_LEN)?;
    let b = Mapping::anon(PAIR_LEN)?;
    a.fill_with(0, PAIR_LEN, pattern);
    b.fill_with(0, PAIR_LEN, |_| 0xee);
    let ka = dev.reg_mr(a.addr(), PAIR_LEN as u64, PL_ACCESS_ALL, 0)?.key;
    let kb = dev.reg_mr(b.addr(), PAIR_LEN as u64, PL_ACCESS_ALL, 0)?.key;
    Ok(Pair { dev, a, b, ka, kb })
}

impl Pair {
    fn close(self) -> CaseResult {
        self.dev.dereg_mr(self.ka)?;
        self.dev.dereg_mr(self.kb)?;
        Ok(())
    }
}

/// Does `text` name handle `h` (as 0x-hex, bare hex or decimal)?
pub fn names_handle(text: &str, h: u64) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric()).any(|tok| {
        if tok.is_empty() {
            return false;
        }
        if let Some(hex) = tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X")) {
            return u64::from_str_radix(hex, 16) == Ok(h);
        }
        tok.parse::<u64>() == Ok(h) || (tok.len() >= 8 && u64::from_str_radix(tok, 16) == Ok(h))
    })
}

pub(crate) fn fdinfo(fd: i32) -> Result<String, CaseErr> {
    Ok(sys::read_to_string(&format!("/proc/self/fdinfo/{fd}"))?)
}

fn debugfs_table(name: &str) -> Result<String, CaseErr> {
    if sys::mount_at("/sys/kernel/debug").is_none() {
        skip!("debugfs is not mounted at /sys/kernel/debug");
    }
    Ok(sys::read_to_string(&format!("{DEBUGFS_DIR}/{name}"))?)
}

/// Polls an event fd for up to `timeout` and reads what is there.
fn read_events(fd: i32, timeout: Duration) -> Result<Vec<abi::PlEvent>, CaseErr> {
    let start = Instant::now();
    let mut out = Vec::new();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let rev = sys::poll_one(fd, libc::POLLIN, left.as_millis() as i32)?;
        if rev & libc::POLLIN == 0 {
            return Ok(out);
        }
        match sys::read_fd(fd, EVENT_SIZE * 16) {
            Ok(buf) => {
                ensure!(
                    buf.len() % EVENT_SIZE == 0,
                    "event fd read returned {} bytes, not whole {EVENT_SIZE}-byte records",
                    buf.len()
                );
                if buf.is_empty() {
                    return Ok(out);
                }
                out.extend(parse_events(&buf));
                return Ok(out);
            }
            Err(libc::EAGAIN) => {
                if start.elapsed() >= timeout {
                    return Ok(out);
                }
            }
            Err(e) => fail!("read(event fd {fd}) failed: {} ({e})", errno_name(e)),
        }
    }
}

// ---- device ---------------------------------------------------------------------------------

fn query_device(t: &mut CaseCtx) -> CaseResult {
    let d1 = open()?;
    let d2 = open()?;
    let q = d1.query()?;
    let q2 = d2.query()?;
    t.diag(format!(
        "abi {} page {} features {:#x} virtio_id {} ctx {:#x} limits: contexts {} mrs {} pages/mr {} leases {} children {}",
        q.abi_version, q.page_size, q.features, q.virtio_id, q.ctx, q.max_contexts, q.max_mrs,
        q.max_pages_per_mr, q.max_leases, q.max_children_per_context
    ));
    ensure!(
        q.abi_version == u32::from(abi::PL_ABI_VERSION),
        "abi_version {} != {}",
        q.abi_version,
        abi::PL_ABI_VERSION
    );
    ensure!(q.page_size == 4096, "page_size {} != 4096", q.page_size);
    ensure!(
        q.virtio_id == abi::PL_VIRTIO_ID_NATIVE || q.virtio_id == abi::PL_VIRTIO_ID_CARRIER,
        "virtio_id {} is neither PL_VIRTIO_ID_NATIVE ({}) nor PL_VIRTIO_ID_CARRIER ({})",
        q.virtio_id,
        abi::PL_VIRTIO_ID_NATIVE,
        abi::PL_VIRTIO_ID_CARRIER
    );
    ensure!(
        q.features & !abi::PL_FEATURES_ALL == 0,
        "unknown feature bits {:#x}",
        q.features
    );
    ensure!(
        q.max_contexts >= 1 && q.max_contexts <= abi::PL_MAX_CONTEXTS,
        "max_contexts {}",
        q.max_contexts
    );
    ensure!(
        q.max_mrs >= 1 && q.max_mrs <= abi::PL_MAX_MRS,
        "max_mrs {}",
        q.max_mrs
    );
    ensure!(
        q.max_pages_per_mr >= 1 && q.max_pages_per_mr <= abi::PL_MAX_PAGES_PER_MR,
        "max_pages_per_mr {}",
        q.max_pages_per_mr
    );
    ensure!(q.ctx != 0, "ctx handle is 0");
    ensure!(
        q2.ctx != 0 && q2.ctx != q.ctx,
        "two opens share ctx {:#x} / {:#x}",
        q.ctx,
        q2.ctx
    );
    ensure!(
        d1.query()?.ctx == q.ctx,
        "ctx of one fd changed between two QUERYs"
    );
    Ok(())
}

// ---- pin verdicts per backing type ---------------------------------------------------------

fn pin_anon_ok(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "anon-private-rw")
}

fn pin_memfd_ok(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "memfd-shared-rw")
}

fn pin_shared_writable_tmpfs(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "tmpfs-shared-rw")
}

fn pin_private_tmpfs(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "tmpfs-private-rw")
}

fn pin_hugetlb_ok(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "hugetlb-anon-rw")
}

fn pin_shared_writable_hugetlbfs(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "hugetlbfs-shared-rw")
}

fn pin_private_hugetlbfs(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "hugetlbfs-private-rw")
}

fn pin_private_file_xfs_ok(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "xfs-private-rw")
}

fn pin_readonly_shared_file_xfs_ok(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "xfs-shared-ro")
}

fn pin_private_file_ext4(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "ext4-private-rw")
}

fn pin_readonly_shared_file_ext4(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "ext4-shared-ro")
}

fn pin_shared_writable_ext4(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "ext4-shared-rw")
}

fn pin_shared_writable_xfs(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "xfs-shared-rw")
}

fn pin_fsdax_eopnotsupp(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "fsdax-shared-rw")
}

fn pin_readonly_fsdax(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "fsdax-shared-ro")
}

fn pin_shortterm_shared_writable_xfs_ok(t: &mut CaseCtx) -> CaseResult {
    pin_row(t, "xfs-shared-rw-shortterm")
}

// ---- device operations --------------------------------------------------------------------

fn dma_write(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let (loff, roff, len) = (100usize, 4000usize, 9000usize);
    p.dev
        .write(p.ka, loff as u64, p.kb, roff as u64, len as u64)?;
    if let Some((o, got, want)) = p.b.first_mismatch(roff, len, |i| pattern(i - roff + loff)) {
        fail!("after WRITE a[{loff}..] -> b[{roff}..] len {len}: b[{o}] = {got:#04x}, expected {want:#04x}");
    }
    for o in [roff - 1, roff + len] {
        ensure!(
            p.b.get_u8(o) == 0xee,
            "WRITE touched b[{o}] outside the range: {:#04x}",
            p.b.get_u8(o)
        );
    }
    // The whole MR, and a zero-length no-op.
    p.dev.write(p.ka, 0, p.kb, 0, PAIR_LEN as u64)?;
    if let Some((o, got, want)) = p.b.first_mismatch(0, PAIR_LEN, pattern) {
        fail!("after full WRITE: b[{o}] = {got:#04x}, expected {want:#04x}");
    }
    p.dev.write(p.ka, 0, p.kb, 0, 0)?;
    p.close()
}

fn dma_read(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    // READ copies remote (a) -> local (b).
    let (loff, roff, len) = (4095usize, 7usize, 12289usize);
    p.dev
        .read(p.kb, loff as u64, p.ka, roff as u64, len as u64)?;
    if let Some((o, got, want)) = p.b.first_mismatch(loff, len, |i| pattern(i - loff + roff)) {
        fail!("after READ a[{roff}..] -> b[{loff}..] len {len}: b[{o}] = {got:#04x}, expected {want:#04x}");
    }
    for o in [loff - 1, loff + len] {
        ensure!(
            p.b.get_u8(o) == 0xee,
            "READ touched b[{o}] outside the range: {:#04x}",
            p.b.get_u8(o)
        );
    }
    if let Some((o, got, want)) = p.a.first_mismatch(0, PAIR_LEN, pattern) {
        fail!("READ changed its source: a[{o}] = {got:#04x}, expected {want:#04x}");
    }
    p.close()
}

fn dma_compare_swap_both_outcomes(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    need_feature(&p.dev, abi::PL_FEATURE_ATOMICS, "ATOMICS")?;
    let off = 4096 + 64;
    p.b.set_u64(off, 0x1111_2222_3333_4444);
    let orig = p.dev.compare_swap(
        p.kb,
        off as u64,
        0x1111_2222_3333_4444,
        0xaaaa_bbbb_cccc_dddd,
    )?;
    ensure!(
        orig == 0x1111_2222_3333_4444,
        "CAS (match) returned original {orig:#x}"
    );
    let now = p.b.get_u64(off);
    ensure!(
        now == 0xaaaa_bbbb_cccc_dddd,
        "CAS (match) left {now:#x}, expected the swap value"
    );
    let orig = p
        .dev
        .compare_swap(p.kb, off as u64, 0x1111_2222_3333_4444, 0x5555)?;
    ensure!(
        orig == 0xaaaa_bbbb_cccc_dddd,
        "CAS (mismatch) returned original {orig:#x}"
    );
    let now = p.b.get_u64(off);
    ensure!(
        now == 0xaaaa_bbbb_cccc_dddd,
        "CAS (mismatch) changed the word to {now:#x}"
    );
    ensure!(
        p.b.get_u64(off - 8) == 0xeeee_eeee_eeee_eeee,
        "CAS touched the previous word"
    );
    ensure!(
        p.b.get_u64(off + 8) == 0xeeee_eeee_eeee_eeee,
        "CAS touched the next word"
    );
    expect_errno(
        p.dev.compare_swap(p.kb, off as u64 + 4, 0, 1),
        libc::EINVAL,
        "COMPARE_SWAP at a misaligned offset",
    )?;
    p.close()
}

fn dma_fetch_add(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    need_feature(&p.dev, abi::PL_FEATURE_ATOMICS, "ATOMICS")?;
    let off = PAIR_LEN - 8;
    p.b.set_u64(off, 0xffff_ffff_ffff_fff0);
    let orig = p.dev.fetch_add(p.kb, off as u64, 0x20)?;
    ensure!(
        orig == 0xffff_ffff_ffff_fff0,
        "FETCH_ADD returned original {orig:#x}"
    );
    let now = p.b.get_u64(off);
    ensure!(
        now == 0x10,
        "FETCH_ADD (wrapping) left {now:#x}, expected 0x10"
    );
    for i in 0..10u64 {
        let o = p.dev.fetch_add(p.kb, off as u64, 3)?;
        ensure!(
            o == 0x10 + 3 * i,
            "FETCH_ADD #{i} returned {o:#x}, expected {:#x}",
            0x10 + 3 * i
        );
    }
    ensure!(
        p.b.get_u64(off) == 0x10 + 30,
        "after 10 adds of 3: {:#x}",
        p.b.get_u64(off)
    );
    expect_errno(
        p.dev.fetch_add(p.kb, PAIR_LEN as u64, 1),
        libc::ERANGE,
        "FETCH_ADD past the MR end",
    )?;
    p.close()
}

fn dma_fill_verify_const(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    need_feature(&p.dev, abi::PL_FEATURE_PATTERN, "PATTERN")?;
    let pat = 0xa5a5_5a5a_0f0f_f0f0u64;
    p.dev
        .fill(p.kb, 0, PAIR_LEN as u64, pat, abi::PL_PATTERN_CONST)?;
    for o in (0..PAIR_LEN).step_by(8) {
        let w = p.b.get_u64(o);
        ensure!(
            w == pat,
            "after FILL const: word at {o} = {w:#x}, expected {pat:#x}"
        );
    }
    let v = p
        .dev
        .verify(p.kb, 0, PAIR_LEN as u64, pat, abi::PL_PATTERN_CONST)?;
    ensure!(
        v.mismatches == 0 && v.first_bad_offset == u64::MAX,
        "VERIFY of a filled MR: {v}"
    );
    let v = p
        .dev
        .verify(p.kb, 0, PAIR_LEN as u64, pat ^ 1, abi::PL_PATTERN_CONST)?;
    ensure!(
        v.mismatches == (PAIR_LEN / 8) as u64
            && v.first_bad_offset == 0
            && v.first_bad_value == pat,
        "VERIFY with the wrong pattern: {v}, expected {} mismatches from offset 0",
        PAIR_LEN / 8
    );
    p.close()
}

fn dma_fill_verify_xor_detects_corruption(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    need_feature(&p.dev, abi::PL_FEATURE_PATTERN, "PATTERN")?;
    let pat = 0x0123_4567_89ab_cdefu64;
    let (off, len) = (8usize, PAIR_LEN - 16);
    p.dev.fill(
        p.kb,
        off as u64,
        len as u64,
        pat,
        abi::PL_PATTERN_OFFSET_XOR,
    )?;
    for o in (off..off + len).step_by(8) {
        let w = p.b.get_u64(o);
        ensure!(
            w == pat ^ o as u64,
            "after FILL xor: word at {o} = {w:#x}, expected {:#x}",
            pat ^ o as u64
        );
    }
    ensure!(
        p.b.get_u64(0) == 0xeeee_eeee_eeee_eeee,
        "FILL touched word 0"
    );
    ensure!(
        p.b.get_u64(PAIR_LEN - 8) == 0xeeee_eeee_eeee_eeee,
        "FILL touched the last word"
    );
    let v = p.dev.verify(
        p.kb,
        off as u64,
        len as u64,
        pat,
        abi::PL_PATTERN_OFFSET_XOR,
    )?;
    ensure!(v.mismatches == 0, "VERIFY xor of a filled range: {v}");
    let bad_off = 3 * 4096 + 40;
    let bad = 0xdead_beef_dead_beefu64;
    p.b.set_u64(bad_off, bad);
    let v = p.dev.verify(
        p.kb,
        off as u64,
        len as u64,
        pat,
        abi::PL_PATTERN_OFFSET_XOR,
    )?;
    ensure!(
        v.mismatches == 1 && v.first_bad_offset == bad_off as u64 && v.first_bad_value == bad,
        "VERIFY after corrupting the word at {bad_off} with {bad:#x}: {v}"
    );
    let v = p.dev.verify(
        p.kb,
        off as u64,
        (bad_off - off) as u64,
        pat,
        abi::PL_PATTERN_OFFSET_XOR,
    )?;
    ensure!(
        v.mismatches == 0,
        "VERIFY of the range before the corruption: {v}"
    );
    p.close()
}

fn dma_unaligned_mr_start_and_length(t: &mut CaseCtx) -> CaseResult {
    // MRs that start and end inside pages: the module's page list and
    // first_page_offset must put MR offset 0 at the registered address.
    let dev = open()?;
    let a = Mapping::anon(4 * 4096)?;
    let b = Mapping::anon(4 * 4096)?;
    a.fill_with(0, a.len(), pattern);
    b.fill_with(0, b.len(), |_| 0xee);
    let (sa, la) = (100usize, 10_000usize);
    let (sb, lb) = (4095usize, 8193usize);
    let ra = dev.reg_mr(a.addr() + sa as u64, la as u64, PL_ACCESS_ALL, 0)?;
    let rb = dev.reg_mr(b.addr() + sb as u64, lb as u64, PL_ACCESS_ALL, 0)?;
    t.diag(format!(
        "MR a: +{sa} len {la} npages {}; MR b: +{sb} len {lb} npages {}",
        ra.npages, rb.npages
    ));
    ensure!(
        ra.npages == (sa + la).div_ceil(4096) as u32,
        "MR a npages {} != {}",
        ra.npages,
        (sa + la).div_ceil(4096)
    );
    ensure!(
        rb.npages == (sb + lb).div_ceil(4096) as u32,
        "MR b npages {} != {}",
        rb.npages,
        (sb + lb).div_ceil(4096)
    );
    dev.write(ra.key, 0, rb.key, 0, lb as u64)?;
    if let Some((o, got, want)) = b.first_mismatch(sb, lb, |i| pattern(i - sb + sa)) {
        fail!("WRITE between unaligned MRs: b byte {o} = {got:#04x}, expected {want:#04x} (a byte {})", o - sb + sa);
    }
    ensure!(
        b.get_u8(sb - 1) == 0xee && b.get_u8(sb + lb) == 0xee,
        "WRITE spilled outside MR b"
    );
    expect_errno(
        dev.write(ra.key, 0, rb.key, 1, lb as u64),
        libc::ERANGE,
        "WRITE one byte past MR b",
    )?;
    dev.dereg_mr(ra.key)?;
    dev.dereg_mr(rb.key)?;
    Ok(())
}

// ---- bad ioctls -------------------------------------------------------------------------------

fn bad_dma_unknown_op_einval(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    for op in [
        999u32,
        0xffff,
        0x1_0009,
        abi::Opcode::RegMr as u32,
        abi::Opcode::LeaseBreak as u32,
    ] {
        let mut d = PinleaseDma {
            op,
            local_key: p.ka,
            remote_key: p.kb,
            length: 8,
            ..Default::default()
        };
        expect_errno(
            p.dev.dma(&mut d),
            libc::EINVAL,
            &format!("DMA with op {op:#x}"),
        )?;
    }
    let mut d = PinleaseDma {
        op: abi::Opcode::Fill as u32,
        mode: 7,
        remote_key: p.kb,
        length: 8,
        ..Default::default()
    };
    expect_errno(p.dev.dma(&mut d), libc::EINVAL, "FILL with pattern mode 7")?;
    // Unknown ioctl number on the device fd.
    let rc = unsafe { libc::ioctl(p.dev.raw(), 0xB9FF_u32 as _, 0) };
    let e = sys::last_errno();
    ensure!(
        rc < 0 && e == libc::ENOTTY,
        "unknown ioctl 0xB9ff: rc {rc} errno {} (expected ENOTTY)",
        errno_name(e)
    );
    p.close()
}

fn bad_stale_key_estale(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let c = Mapping::anon(16 * KIB)?;
    let kc = p
        .dev
        .reg_mr(c.addr(), c.len() as u64, PL_ACCESS_ALL, 0)?
        .key;
    p.dev.dereg_mr(kc)?;
    expect_errno(
        p.dev.write(p.ka, 0, kc, 0, 8),
        libc::ESTALE,
        "WRITE to a deregistered remote key",
    )?;
    expect_errno(
        p.dev.write(kc, 0, p.kb, 0, 8),
        libc::ESTALE,
        "WRITE from a deregistered local key",
    )?;
    expect_errno(
        p.dev.dereg_mr(kc),
        libc::ESTALE,
        "DEREG_MR of a deregistered key",
    )?;
    // The slot is reused by the next registration with a new generation.
    let kd = p
        .dev
        .reg_mr(c.addr(), c.len() as u64, PL_ACCESS_ALL, 0)?
        .key;
    ensure!(kd != kc, "a new MR got the stale key {kc:#x} again");
    expect_errno(
        p.dev.write(p.ka, 0, kc, 0, 8),
        libc::ESTALE,
        "WRITE to the stale key after reuse",
    )?;
    p.dev.dereg_mr(kd)?;
    p.close()
}

fn bad_out_of_range_erange(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let l = PAIR_LEN as u64;
    expect_errno(
        p.dev.write(p.ka, 0, p.kb, l - 4, 8),
        libc::ERANGE,
        "WRITE past the remote MR end",
    )?;
    expect_errno(
        p.dev.write(p.ka, l - 4, p.kb, 0, 8),
        libc::ERANGE,
        "WRITE past the local MR end",
    )?;
    expect_errno(
        p.dev.read(p.ka, 0, p.kb, u64::MAX - 3, 8),
        libc::ERANGE,
        "READ with offset+length overflowing",
    )?;
    expect_errno(
        p.dev.write(p.ka, 0, p.kb, 0, l + 1),
        libc::ERANGE,
        "WRITE longer than the MR",
    )?;
    let q = p.dev.query()?;
    if q.features & abi::PL_FEATURE_PATTERN != 0 {
        expect_errno(
            p.dev.fill(p.kb, l - 8, 16, 0, 0),
            libc::ERANGE,
            "FILL past the MR end",
        )?;
        expect_errno(
            p.dev.verify(p.kb, l, 8, 0, 0),
            libc::ERANGE,
            "VERIFY at the MR end",
        )?;
    }
    ensure!(
        p.b.get_u64(PAIR_LEN - 8) == 0xeeee_eeee_eeee_eeee,
        "a refused op changed the MR"
    );
    p.close()
}

fn bad_reg_args_einval(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    let m = Mapping::anon(16 * KIB)?;
    let base = PinleaseRegMr {
        addr: m.addr(),
        length: m.len() as u64,
        access: PL_ACCESS_ALL,
        ..Default::default()
    };
    let tries: [(&str, PinleaseRegMr); 4] = [
        (
            "reserved != 0",
            PinleaseRegMr {
                reserved: 1,
                ..base
            },
        ),
        (
            "unknown pin flag",
            PinleaseRegMr {
                flags: 1 << 7,
                ..base
            },
        ),
        ("access 0", PinleaseRegMr { access: 0, ..base }),
        (
            "unknown access bit",
            PinleaseRegMr {
                access: 1 << 9,
                ..base
            },
        ),
    ];
    for (what, mut r) in tries {
        let res = dev.reg_mr_raw(&mut r).map(|_| r.key);
        expect_errno(res, libc::EINVAL, &format!("REG_MR with {what}"))?;
    }
    let mut r = PinleaseRegMr { length: 0, ..base };
    let e = expect_errno_in(
        dev.reg_mr_raw(&mut r).map(|_| r.key),
        &[libc::EINVAL],
        "REG_MR of length 0",
    )?;
    t.diag(format!("length 0: {}", errno_name(e)));
    // Unmapped memory: the pin itself fails.
    let addr = m.addr();
    drop(m);
    let mut r = PinleaseRegMr { addr, ..base };
    let e = expect_errno_in(
        dev.reg_mr_raw(&mut r).map(|_| r.key),
        &[libc::EFAULT, libc::ENOMEM],
        "REG_MR of unmapped memory",
    )?;
    t.diag(format!("unmapped memory: {}", errno_name(e)));
    Ok(())
}

// ---- fdinfo, debugfs ---------------------------------------------------------------------------

fn fdinfo_lists_mrs(t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let ctx = p.dev.query()?.ctx;
    let text = fdinfo(p.dev.raw())?;
    let mr_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("mr:"))
        .collect();
    let show = || text.replace('\n', " | ");
    ensure!(
        names_handle(&text, ctx),
        "fdinfo does not name ctx {ctx:#x}: {}",
        show()
    );
    for k in [p.ka, p.kb] {
        let line = mr_lines.iter().find(|l| l.contains(&format!("key={k:#x}")));
        let Some(line) = line else {
            fail!("fdinfo has no 'mr: key={k:#x}' line: {}", show());
        };
        ensure!(
            line.contains(&format!("pages={}", PAIR_LEN / 4096)),
            "fdinfo line for {k:#x} lacks pages={}: {line}",
            PAIR_LEN / 4096
        );
    }
    ensure!(
        mr_lines.len() == 2,
        "fdinfo lists {} MRs, expected 2: {}",
        mr_lines.len(),
        show()
    );
    t.diag(format!("fdinfo: {}", show()));
    p.dev.dereg_mr(p.ka)?;
    let text = fdinfo(p.dev.raw())?;
    ensure!(
        !text.contains(&format!("key={:#x}", p.ka)),
        "fdinfo still lists deregistered key {:#x}: {}",
        p.ka,
        text.replace('\n', " | ")
    );
    p.dev.dereg_mr(p.kb)?;
    let text = fdinfo(p.dev.raw())?;
    let n = text
        .lines()
        .filter(|l| l.trim_start().starts_with("mr:"))
        .count();
    ensure!(n == 0, "fdinfo lists {n} MRs after deregistering all");
    Ok(())
}

fn debugfs_tables_list_contexts_and_mrs(t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let ctx = p.dev.query()?.ctx;
    let contexts = debugfs_table("contexts")?;
    let mrs = debugfs_table("mrs")?;
    ensure!(
        names_handle(&contexts, ctx),
        "debugfs contexts does not name ctx {ctx:#x}:\n{contexts}"
    );
    for k in [p.ka, p.kb] {
        ensure!(
            names_handle(&mrs, k),
            "debugfs mrs does not name key {k:#x}:\n{mrs}"
        );
    }
    t.diag(format!("contexts:\n{contexts}"));
    t.diag(format!("mrs:\n{mrs}"));
    let (ka, kb) = (p.ka, p.kb);
    drop(p);
    let start = Instant::now();
    loop {
        let contexts = debugfs_table("contexts")?;
        let mrs = debugfs_table("mrs")?;
        let stale_mr = names_handle(&mrs, ka) || names_handle(&mrs, kb);
        if !stale_mr && !names_handle(&contexts, ctx) {
            break;
        }
        if start.elapsed() > Duration::from_secs(2) {
            fail!("2 s after close, debugfs still lists ctx {ctx:#x} or its MRs:\ncontexts:\n{contexts}\nmrs:\n{mrs}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

// ---- events -------------------------------------------------------------------------------------

fn events_whole_records_poll_empty_no_lease_revokes_yet(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    let efd = dev.event_fd()?;
    let fd = efd.as_raw_fd();
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    ensure!(
        fl >= 0 && fl & libc::FD_CLOEXEC != 0,
        "event fd is not O_CLOEXEC (F_GETFD {fl})"
    );
    sys::set_nonblock(fd)?;
    let rev = sys::poll_one(fd, libc::POLLIN, 0)?;
    ensure!(
        rev & libc::POLLIN == 0,
        "empty channel polls readable (revents {rev:#x})"
    );
    let rev = sys::poll_one(fd, libc::POLLIN, 200)?;
    ensure!(
        rev == 0,
        "empty channel: poll with 200 ms timeout returned revents {rev:#x}"
    );
    match sys::read_fd(fd, EVENT_SIZE) {
        Err(libc::EAGAIN) => {}
        Ok(b) => fail!(
            "nonblocking read of an empty channel returned {} bytes",
            b.len()
        ),
        Err(e) => fail!(
            "nonblocking read of an empty channel: {} ({e}), expected EAGAIN",
            errno_name(e)
        ),
    }
    // A context's close sends CONTEXT_TORN_DOWN to it: the one event we can
    // cause without leases. It must arrive as whole 56-byte records.
    let m = Mapping::anon(16 * KIB)?;
    let r = dev.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)?;
    let ctx = dev.query()?.ctx;
    drop(dev);
    let rev = sys::poll_one(fd, libc::POLLIN, 2000)?;
    if rev & libc::POLLIN == 0 {
        t.diag(format!(
            "no event within 2 s after closing the device fd (revents {rev:#x}); \
             CONTEXT_TORN_DOWN not delivered to the event fd"
        ));
        return Ok(());
    }
    // A short buffer must not return a partial record.
    match sys::read_fd(fd, EVENT_SIZE - 1) {
        Ok(b) if b.is_empty() => {}
        Ok(b) => fail!(
            "read with a {}-byte buffer returned {} bytes (partial record)",
            EVENT_SIZE - 1,
            b.len()
        ),
        Err(e) => t.diag(format!(
            "read with a {}-byte buffer: {} (ok)",
            EVENT_SIZE - 1,
            errno_name(e)
        )),
    }
    let buf = match sys::read_fd(fd, EVENT_SIZE * 3 + 10) {
        Ok(b) => b,
        Err(e) => fail!("read after POLLIN: {} ({e})", errno_name(e)),
    };
    ensure!(
        !buf.is_empty() && buf.len() % EVENT_SIZE == 0,
        "event read returned {} bytes: not whole {EVENT_SIZE}-byte records",
        buf.len()
    );
    let evs = parse_events(&buf);
    for e in &evs {
        t.diag(format_event(e));
    }
    let td = evs
        .iter()
        .find(|e| e.kind == abi::PL_EVENT_CONTEXT_TORN_DOWN);
    let Some(td) = td else {
        fail!("events after close contain no CONTEXT_TORN_DOWN");
    };
    ensure!(
        td.ctx == ctx,
        "CONTEXT_TORN_DOWN ctx {:#x} != {ctx:#x}",
        td.ctx
    );
    ensure!(
        td.args[0] == 1 && td.args[2] == u64::from(r.npages),
        "CONTEXT_TORN_DOWN args {:?}: expected 1 MR destroyed, {} pages unpinned",
        td.args,
        r.npages
    );
    Ok(())
}

fn events_mr_revoked_import_source_gone(t: &mut CaseCtx) -> CaseResult {
    let a = open()?;
    need_feature(&a, abi::PL_FEATURE_EXPORT, "EXPORT")?;
    let b = open()?;
    let bctx = b.query()?.ctx;
    let mx = Mapping::anon(16 * KIB)?;
    let kx = a.reg_mr(mx.addr(), mx.len() as u64, PL_ACCESS_ALL, 0)?.key;
    let exp = a.export_mr(kx)?;
    let ky = b.import_mr(exp.as_raw_fd(), PL_ACCESS_ALL)?;
    let efd = b.event_fd()?;
    sys::set_nonblock(efd.as_raw_fd())?;
    a.dereg_mr(kx)?;
    let evs = read_events(efd.as_raw_fd(), Duration::from_secs(2))?;
    for e in &evs {
        t.diag(format_event(e));
    }
    let hit = evs
        .iter()
        .find(|e| e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == ky);
    let Some(e) = hit else {
        fail!("no MR_REVOKED for imported key {ky:#x} within 2 s after its source was deregistered ({} other events)", evs.len());
    };
    ensure!(
        e.ctx == bctx,
        "MR_REVOKED ctx {:#x} != importer ctx {bctx:#x}",
        e.ctx
    );
    ensure!(
        e.args[1] == abi::PL_REVOKE_SOURCE_GONE,
        "MR_REVOKED reason {} != SOURCE_GONE ({})",
        e.args[1],
        abi::PL_REVOKE_SOURCE_GONE
    );
    ensure!(
        e.args[2] == 0,
        "MR_REVOKED of an import reports {} pages",
        e.args[2]
    );
    let ml = Mapping::anon(4096)?;
    let kl = b.reg_mr(ml.addr(), 4096, PL_ACCESS_ALL, 0)?.key;
    let e = expect_errno_in(
        b.write(kl, 0, ky, 0, 8),
        &[libc::ECANCELED, libc::ESTALE],
        "WRITE to a revoked import",
    )?;
    t.diag(format!("WRITE to the revoked import: {}", errno_name(e)));
    drop(exp);
    Ok(())
}

// ---- lifetimes -------------------------------------------------------------------------------------

fn lifetime_event_fd_outlives_device_fd(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    let ctx = dev.query()?.ctx;
    let m = Mapping::anon(128 * KIB)?;
    let r1 = dev.reg_mr(m.addr(), 64 * KIB as u64, PL_ACCESS_ALL, 0)?;
    let r2 = dev.reg_mr(
        m.addr() + 64 * KIB as u64,
        64 * KIB as u64,
        PL_ACCESS_ALL,
        0,
    )?;
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

fn lifetime_export_fd_outlives_device_fd(t: &mut CaseCtx) -> CaseResult {
    let a = open()?;
    need_feature(&a, abi::PL_FEATURE_EXPORT, "EXPORT")?;
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

fn lifetime_import_aliases_source(_t: &mut CaseCtx) -> CaseResult {
    let a = open()?;
    need_feature(&a, abi::PL_FEATURE_EXPORT, "EXPORT")?;
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

// ---- processes --------------------------------------------------------------------------------------

fn fork_child_holds_fd_and_writes(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_PATTERN, "PATTERN")?;
    let m = Mapping::anon(64 * KIB)?;
    m.fill_with(0, m.len(), |_| 0);
    let k = dev.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)?.key;
    let (rd, wr) = sys::pipe()?;
    let pat = 0x4242_4242_1234_5678u64;
    let pid = sys::fork_child(|| {
        // The child does the device write; the parent has closed its fd by
        // then, so the child's exit is the last close.
        std::thread::sleep(Duration::from_millis(50));
        let res = dev.fill(k, 0, 64 * KIB as u64, pat, abi::PL_PATTERN_CONST);
        let errno = res.err().map_or(0, |e| e.errno) as u8;
        let child_sees = u8::from(m.get_u64(0) == pat);
        let _ = sys::write_all(wr.as_raw_fd(), &[errno, child_sees]);
        0
    })?;
    drop(wr);
    drop(dev);
    let msg = sys::read_exact_timeout(rd.as_raw_fd(), 2, Duration::from_secs(30));
    let exit = sys::wait_timeout(pid, Duration::from_secs(30))?;
    let Some(exit) = exit else {
        let st = sys::proc_stack(pid);
        sys::kill(pid, libc::SIGKILL);
        let _ = sys::wait_timeout(pid, Duration::from_secs(10));
        fail!("child holding the fd did not exit within 30 s ({st})");
    };
    let msg = msg?;
    ensure!(exit == sys::Exit::Code(0), "child: {exit}");
    ensure!(
        msg[0] == 0,
        "child's FILL through the inherited fd failed: {} ({})",
        errno_name(msg[0].into()),
        msg[0]
    );
    t.diag(format!(
        "child sees the pattern in its own copy of the buffer: {}",
        if msg[1] == 1 {
            "yes"
        } else {
            "no (fork copied the pinned pages for the child)"
        }
    ));
    let mut bad = 0;
    let mut first = None;
    for o in (0..m.len()).step_by(8) {
        let w = m.get_u64(o);
        if w != pat {
            bad += 1;
            first.get_or_insert((o, w));
        }
    }
    if let Some((o, w)) = first {
        fail!(
            "parent does not see the child's device write: {bad} of {} words differ, first at {o}: {w:#x} (expected {pat:#x})",
            m.len() / 8
        );
    }
    Ok(())
}

fn scm_rights_sender_exits(t: &mut CaseCtx) -> CaseResult {
    let (s_parent, s_child) = sys::socketpair()?;
    let pat = 0x5c5c_0000_1111_2222u64;
    let len = 64 * KIB;
    let pid = sys::fork_child(|| {
        let run = || -> Result<(), SysError> {
            let dev = Dev::open_default()?;
            let m = Mapping::anon(len)?;
            for o in (0..len).step_by(8) {
                m.set_u64(o, pat ^ o as u64);
            }
            let k = dev.reg_mr(m.addr(), len as u64, PL_ACCESS_ALL, 0)?.key;
            sys::send_fd(s_child.as_raw_fd(), dev.raw(), &k.to_le_bytes())?;
            // Exit with the fd and the mapping still here: the receiver's
            // reference keeps the context; the pins keep the pages.
            std::mem::forget(m);
            std::mem::forget(dev);
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                let _ = sys::write_all(s_child.as_raw_fd(), e.to_string().as_bytes());
                1
            }
        }
    })?;
    drop(s_child);
    let ready = sys::poll_one(s_parent.as_raw_fd(), libc::POLLIN, 30_000)?;
    let exit = sys::wait_timeout(pid, Duration::from_secs(30))?;
    ensure!(
        ready & libc::POLLIN != 0,
        "nothing from the sender within 30 s"
    );
    let (data, fd) = sys::recv_fd(s_parent.as_raw_fd(), 512)?;
    ensure!(
        exit == Some(sys::Exit::Code(0)),
        "sender: {exit:?}: {}",
        String::from_utf8_lossy(&data)
    );
    let Some(fd) = fd else {
        fail!(
            "no fd arrived; sender said {:?}",
            String::from_utf8_lossy(&data)
        );
    };
    ensure!(
        data.len() == 8,
        "sender sent {} bytes, not a key",
        data.len()
    );
    let k = u64::from_le_bytes(data[..8].try_into().unwrap());
    let dev = Dev::from_fd(fd, "/dev/pinlease0 (received)");
    let q = dev.query()?;
    t.diag(format!("received ctx {:#x}, key {k:#x}", q.ctx));
    if q.features & abi::PL_FEATURE_PATTERN != 0 {
        let v = dev.verify(k, 0, len as u64, pat, abi::PL_PATTERN_OFFSET_XOR)?;
        ensure!(v.mismatches == 0, "VERIFY of the exited sender's MR: {v}");
        dev.fill(k, 0, len as u64, 7, abi::PL_PATTERN_CONST)?;
        let v = dev.verify(k, 0, len as u64, 7, abi::PL_PATTERN_CONST)?;
        ensure!(
            v.mismatches == 0,
            "VERIFY after FILL of the exited sender's MR: {v}"
        );
    }
    // Registering the receiver's own memory in the sender's context.
    let m = Mapping::anon(16 * KIB)?;
    match dev.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0) {
        Ok(r) => {
            t.diag(format!(
                "receiver registered its own memory in the received context: key {:#x}",
                r.key
            ));
            dev.write(r.key, 0, k, 0, 8)?;
            dev.dereg_mr(r.key)?;
        }
        Err(e) => t.diag(format!(
            "receiver's own REG_MR in the received context refused: {e}"
        )),
    }
    dev.dereg_mr(k)?;
    drop(dev);
    Ok(())
}

fn exit_with_mrs_registered(t: &mut CaseCtx) -> CaseResult {
    let (rd, wr) = sys::pipe()?;
    let pid = sys::fork_child(|| {
        let run = || -> Result<(), SysError> {
            let dev = Dev::open_default()?;
            let a = Mapping::anon(MIB)?;
            let b = Mapping::new(&Backing::Memfd, 256 * KIB, false)?;
            dev.reg_mr(a.addr(), a.len() as u64, PL_ACCESS_ALL, 0)?;
            dev.reg_mr(b.addr(), b.len() as u64, PL_ACCESS_ALL, 0)?;
            dev.reg_mr(
                a.addr(),
                64 * KIB as u64,
                PL_ACCESS_READ,
                PINLEASE_PIN_SHORTTERM,
            )?;
            let efd = dev.event_fd()?;
            std::mem::forget(efd);
            std::mem::forget((dev, a, b));
            Ok(())
        };
        let rc = match run() {
            Ok(()) => 0,
            Err(e) => {
                let _ = sys::write_all(wr.as_raw_fd(), e.to_string().as_bytes());
                1
            }
        };
        // Exit with everything live: exit_mmap and the fds' release race.
        unsafe { libc::_exit(rc) }
    })?;
    drop(wr);
    let exit = sys::wait_timeout(pid, Duration::from_secs(60))?;
    let Some(exit) = exit else {
        let st = sys::proc_stack(pid);
        sys::kill(pid, libc::SIGKILL);
        fail!("child exiting with MRs registered did not finish within 60 s ({st})");
    };
    let msg = sys::read_fd(rd.as_raw_fd(), 512).unwrap_or_default();
    ensure!(
        exit == sys::Exit::Code(0),
        "child: {exit}: {}",
        String::from_utf8_lossy(&msg)
    );
    t.diag("child exited with 3 MRs and an event fd open");
    Ok(())
}

fn sigkill_during_large_reg_mr(t: &mut CaseCtx) -> CaseResult {
    let avail = sys::meminfo_kb("MemAvailable").unwrap_or(0) as usize * KIB;
    let len = (256 * MIB).min(avail / 3) & !(2 * MIB - 1);
    if len < 16 * MIB {
        skip!(
            "MemAvailable {} KiB is too little for a large REG_MR",
            avail / KIB
        );
    }
    let (rd, wr) = sys::pipe()?;
    let pid = sys::fork_child(|| {
        let run = || -> Result<(), SysError> {
            let dev = Dev::open_default()?;
            let m = Mapping::anon(len)?;
            sys::write_all(wr.as_raw_fd(), b"r")?;
            // The pin faults in every page: slow enough to be killed inside.
            let r = dev.reg_mr(m.addr(), len as u64, PL_ACCESS_ALL, 0)?;
            sys::write_all(
                wr.as_raw_fd(),
                format!("registered {} pages", r.npages).as_bytes(),
            )?;
            std::thread::sleep(Duration::from_secs(60));
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                let _ = sys::write_all(wr.as_raw_fd(), e.to_string().as_bytes());
                1
            }
        }
    })?;
    drop(wr);
    let ready = sys::read_exact_timeout(rd.as_raw_fd(), 1, Duration::from_secs(30));
    if ready.is_ok() {
        std::thread::sleep(Duration::from_millis(150));
    }
    let t0 = Instant::now();
    sys::kill(pid, libc::SIGKILL);
    let exit = sys::wait_timeout(pid, Duration::from_secs(60))?;
    let Some(exit) = exit else {
        fail!(
            "child SIGKILLed during REG_MR of {} MiB is still there after 60 s ({})",
            len / MIB,
            sys::proc_stack(pid)
        );
    };
    let msg = sys::read_fd(rd.as_raw_fd(), 512).unwrap_or_default();
    let msg = String::from_utf8_lossy(&msg);
    t.diag(format!(
        "REG_MR of {} MiB: child ended by {exit} {} ms after SIGKILL; killed inside REG_MR: {}{}",
        len / MIB,
        t0.elapsed().as_millis(),
        if msg.is_empty() { "yes" } else { "no" },
        if msg.is_empty() {
            String::new()
        } else {
            format!(" (child said {msg:?})")
        }
    ));
    ready?;
    ensure!(
        exit == sys::Exit::Signal(libc::SIGKILL),
        "child: {exit}, expected SIGKILL"
    );
    Ok(())
}

fn stress_many_contexts_all_cpus(t: &mut CaseCtx) -> CaseResult {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = (cpus * 2).min(16);
    let ctx_per_thread = 2;
    let duration = Duration::from_secs(4);
    let have_pattern = {
        let d = open()?;
        d.query()?.features & abi::PL_FEATURE_PATTERN != 0
    };
    let results: Vec<Result<u64, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|ti| {
                std::thread::Builder::new()
                    .name(format!("stress-{ti}"))
                    .spawn_scoped(s, move || -> Result<u64, String> {
                        let e = |e: SysError| format!("thread {ti}: {e}");
                        let devs: Vec<Dev> = (0..ctx_per_thread)
                            .map(|_| Dev::open_default())
                            .collect::<Result<_, _>>()
                            .map_err(e)?;
                        let len = 32 * KIB;
                        let maps: Vec<Mapping> = (0..ctx_per_thread)
                            .map(|_| Mapping::anon(len))
                            .collect::<Result<_, _>>()
                            .map_err(e)?;
                        let start = Instant::now();
                        let mut iters = 0u64;
                        while start.elapsed() < duration || iters == 0 {
                            let mut keys = Vec::new();
                            for (d, m) in devs.iter().zip(&maps) {
                                keys.push(
                                    d.reg_mr(m.addr(), len as u64, PL_ACCESS_ALL, 0)
                                        .map_err(e)?
                                        .key,
                                );
                            }
                            let pat = (ti as u64) << 32 | iters;
                            maps[0].fill_with(0, len, |i| (i as u64 ^ pat) as u8);
                            // Context 0 writes its MR into context 1's MR.
                            devs[0]
                                .write(keys[0], 0, keys[1], 0, len as u64)
                                .map_err(e)?;
                            if let Some((o, g, w)) =
                                maps[1].first_mismatch(0, len, |i| (i as u64 ^ pat) as u8)
                            {
                                return Err(format!(
                                    "thread {ti} iter {iters}: byte {o} = {g:#x}, expected {w:#x}"
                                ));
                            }
                            if have_pattern {
                                devs[1]
                                    .fill(keys[0], 0, len as u64, pat, abi::PL_PATTERN_OFFSET_XOR)
                                    .map_err(e)?;
                                let v = devs[0]
                                    .verify(keys[0], 0, len as u64, pat, abi::PL_PATTERN_OFFSET_XOR)
                                    .map_err(e)?;
                                if v.mismatches != 0 {
                                    return Err(format!("thread {ti} iter {iters}: VERIFY {v}"));
                                }
                            }
                            for (d, k) in devs.iter().zip(&keys) {
                                d.dereg_mr(*k).map_err(e)?;
                            }
                            iters += 1;
                        }
                        Ok(iters)
                    })
                    .expect("spawn stress thread")
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("thread panicked".to_string()))
            })
            .collect()
    });
    let mut total = 0;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(n) => total += n,
            Err(e) => errors.push(e),
        }
    }
    t.diag(format!(
        "{threads} threads x {ctx_per_thread} contexts on {cpus} CPUs for {} s: {total} iterations",
        duration.as_secs()
    ));
    ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}

// ---- reset, module reload -----------------------------------------------------------------------

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
    loop {
        match sys::delete_module(MODULE_NAME) {
            Ok(()) => break,
            Err(e)
                if (e.errno == libc::EBUSY
                    || e.errno == libc::EAGAIN
                    || e.errno == libc::EWOULDBLOCK)
                    && start.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => fail!(
                "{e} (refcnt {})",
                sys::read_to_string(&format!("/sys/module/{MODULE_NAME}/refcnt"))
                    .unwrap_or_default()
                    .trim()
            ),
        }
    }
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

fn device_reset_with_live_mrs(t: &mut CaseCtx) -> CaseResult {
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
    let r = dev.reg_mr(m.addr(), 128 * KIB as u64, PL_ACCESS_ALL, 0)?;
    let r2 = dev.reg_mr(
        m.addr() + 128 * KIB as u64,
        128 * KIB as u64,
        PL_ACCESS_ALL,
        0,
    )?;
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

/// The virtio devices (`virtioN`) bound to the pinlease driver.
pub fn bound_virtio_devices() -> SysResult<Vec<String>> {
    let rd = std::fs::read_dir(DRIVER_DIR).map_err(|e| {
        SysError::new(
            format!("read_dir {DRIVER_DIR}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })?;
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("virtio") && n[6..].chars().all(|c| c.is_ascii_digit()))
        .collect();
    v.sort();
    Ok(v)
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

fn unbind_with_live_mrs_then_rebind(t: &mut CaseCtx) -> CaseResult {
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

fn module_unload_reload(t: &mut CaseCtx) -> CaseResult {
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

/// Fds a case leaves open would keep the module busy; this returns the
/// number of open fds of this process (for diagnostics).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

// ---- layout leases ---------------------------------------------------------------------------

pub(crate) const LEASE_LEN: usize = 64 * KIB;
/// How long a case waits for the runner to take a status snapshot.
pub(crate) const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// The `lease:` line of `text` (fdinfo) naming `lease`.
pub(crate) fn lease_line(text: &str, lease: u64) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with("lease:") && names_handle(l, lease))
        .map(str::to_string)
}

/// The value of `key=` in a `lease:` line.
pub(crate) fn line_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// The lease's state in `fd`'s fdinfo, or None when it is not listed.
pub(crate) fn lease_state(fd: i32, lease: u64) -> Result<Option<String>, CaseErr> {
    let text = fdinfo(fd)?;
    Ok(lease_line(&text, lease).and_then(|l| line_field(&l, "state").map(str::to_string)))
}

/// Polls fdinfo until the lease is in `state` (up to `timeout`).
pub(crate) fn wait_lease_state(fd: i32, lease: u64, state: &str, timeout: Duration) -> CaseResult {
    let start = Instant::now();
    loop {
        let s = lease_state(fd, lease)?;
        if s.as_deref() == Some(state) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            fail!(
                "lease {lease:#x}: fdinfo state {s:?} after {timeout:?}, expected {state}: {}",
                fdinfo(fd)?.replace('\n', " | ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads events until one matches `pred` or `timeout` passes; all read.
pub(crate) fn wait_event(
    t: &mut CaseCtx,
    fd: i32,
    timeout: Duration,
    pred: impl Fn(&abi::PlEvent) -> bool,
) -> Result<(Option<abi::PlEvent>, Vec<abi::PlEvent>), CaseErr> {
    let start = Instant::now();
    let mut all = Vec::new();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        let evs = read_events(fd, left.min(Duration::from_millis(200)))?;
        for e in &evs {
            t.diag(format!("event: {}", format_event(e)));
        }
        all.extend(evs);
        if let Some(e) = all.iter().find(|e| pred(e)) {
            return Ok((Some(*e), all));
        }
        if start.elapsed() >= timeout {
            return Ok((None, all));
        }
    }
}

/// What the breaker child does to the file.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Breaker {
    Truncate,
    PunchHole,
    XfsIoTruncate,
    /// fallocate(FALLOC_FL_COLLAPSE_RANGE, 0, 4096)
    CollapseRange,
    /// fallocate(FALLOC_FL_INSERT_RANGE, 0, 4096)
    InsertRange,
    /// fallocate(FALLOC_FL_ZERO_RANGE, 0, LEASE_LEN)
    ZeroRange,
    /// FICLONERANGE of `<path>.src` onto the leased file, LEASE_LEN at 0
    Reflink,
    /// `xfs_io -c <cmd> <path>`; "SRC" in the command is `<path>.src`
    XfsIo(&'static str),
    /// pwrite(2) of one byte at offset 0 (XFS's write path: BREAK_WRITE)
    Write,
}

/// Source file of the Reflink breakers.
fn reflink_src(path: &str) -> String {
    format!("{path}.src")
}

/// fallocate(2) on `path` from a child: 0 or the errno.
fn child_fallocate(c: &std::ffi::CStr, mode: i32, off: i64, len: i64) -> i32 {
    // SAFETY: open/fallocate/close on a valid path and our own fd.
    unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return sys::last_errno();
        }
        let rc = libc::fallocate(fd, mode, off, len);
        let e = sys::last_errno();
        libc::close(fd);
        if rc < 0 {
            return e;
        }
    }
    0
}

/// struct file_clone_range (linux/fs.h).
#[repr(C)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// FICLONERANGE = _IOW(0x94, 13, struct file_clone_range)
const FICLONERANGE: libc::c_ulong = 0x4020_940d;

/// Forks a child that breaks the layout lease of `path`: exit 0 when the
/// operation returned, else the errno (or xfs_io's exit code).
pub(crate) fn spawn_breaker(how: Breaker, path: &str) -> Result<libc::pid_t, CaseErr> {
    let p = path.to_string();
    let pid = sys::fork_child(move || {
        let c = std::ffi::CString::new(p.clone()).unwrap();
        match how {
            Breaker::Truncate => {
                // SAFETY: truncate(2) with a valid path.
                if unsafe { libc::truncate(c.as_ptr(), 0) } < 0 {
                    return sys::last_errno();
                }
                0
            }
            Breaker::PunchHole => {
                // SAFETY: open/fallocate with a valid path and our own fd.
                unsafe {
                    let fd = libc::open(c.as_ptr(), libc::O_RDWR);
                    if fd < 0 {
                        return sys::last_errno();
                    }
                    let rc = libc::fallocate(
                        fd,
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        0,
                        LEASE_LEN as i64,
                    );
                    if rc < 0 {
                        return sys::last_errno();
                    }
                    libc::close(fd);
                }
                0
            }
            Breaker::XfsIoTruncate => xfs_io_child("truncate 0", &p),
            Breaker::XfsIo(cmd) => xfs_io_child(cmd, &p),
            Breaker::CollapseRange => child_fallocate(&c, libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4096),
            Breaker::InsertRange => child_fallocate(&c, libc::FALLOC_FL_INSERT_RANGE, 0, 4096),
            Breaker::ZeroRange => {
                child_fallocate(&c, libc::FALLOC_FL_ZERO_RANGE, 0, LEASE_LEN as i64)
            }
            Breaker::Reflink => {
                let src = std::ffi::CString::new(reflink_src(&p)).unwrap();
                // SAFETY: open/ioctl/close with valid paths and our own fds.
                unsafe {
                    let sfd = libc::open(src.as_ptr(), libc::O_RDONLY);
                    if sfd < 0 {
                        return sys::last_errno();
                    }
                    let dfd = libc::open(c.as_ptr(), libc::O_RDWR);
                    if dfd < 0 {
                        return sys::last_errno();
                    }
                    let mut r = FileCloneRange {
                        src_fd: sfd.into(),
                        src_offset: 0,
                        src_length: LEASE_LEN as u64,
                        dest_offset: 0,
                    };
                    if libc::ioctl(dfd, FICLONERANGE as _, &mut r) < 0 {
                        return sys::last_errno();
                    }
                    libc::close(dfd);
                    libc::close(sfd);
                }
                0
            }
            Breaker::Write => {
                // SAFETY: open/pwrite/close with a valid path and buffer.
                unsafe {
                    let fd = libc::open(c.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return sys::last_errno();
                    }
                    let b = [0x77u8];
                    if libc::pwrite(fd, b.as_ptr().cast(), 1, 0) != 1 {
                        return sys::last_errno();
                    }
                    libc::close(fd);
                }
                0
            }
        }
    })?;
    Ok(pid)
}

/// Runs `xfs_io -c cmd path` ("SRC" in cmd: the reflink source) with its
/// output captured (it must not reach the KTAP stream): its exit code, 124
/// when it printed to stderr (xfs_io exits 0 after many failed commands),
/// 127 when it cannot be run.
fn xfs_io_child(cmd: &str, path: &str) -> i32 {
    let cmd = cmd.replace("SRC", &reflink_src(path));
    match std::process::Command::new("xfs_io")
        .args(["-c", &cmd, path])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.code() == Some(0) && !o.stderr.is_empty() => 124,
        Ok(o) => o.status.code().unwrap_or(125),
        Err(_) => 127,
    }
}

/// Waits for the breaker; fails (killing it) if it does not end in time.
pub(crate) fn reap_breaker(
    pid: libc::pid_t,
    timeout: Duration,
    what: &str,
) -> Result<Exit, CaseErr> {
    match sys::wait_timeout(pid, timeout)? {
        Some(e) => Ok(e),
        None => {
            let st = sys::proc_stack(pid);
            sys::kill(pid, libc::SIGKILL);
            let _ = sys::wait_timeout(pid, Duration::from_secs(10));
            fail!("{what}: breaker still blocked after {timeout:?} ({st})");
        }
    }
}

use crate::sys::Exit;

/// Pins held now (acquired - released).
pub(crate) fn pins_held() -> Result<i64, CaseErr> {
    let (a, r) = sys::pin_counters()?;
    Ok(a as i64 - r as i64)
}

/// A lease holder: device fd, event fd, a 64 KiB shared file mapping
/// registered short-term writable, a local anonymous MR, and a lease.
struct Holder {
    dev: Dev,
    ev: std::os::fd::OwnedFd,
    file: TestFile,
    map: Mapping,
    key: u64,
    local: Mapping,
    lkey: u64,
    lease: u64,
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
fn holder_flags(
    t: &mut CaseCtx,
    mnt: &str,
    fstype: &str,
    name: &str,
    policy: u32,
    extra_flags: u32,
) -> Result<Option<Holder>, CaseErr> {
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
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

fn lease_take_release_basic(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
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

fn lease_survives_data_fd_close(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
    let file = TestFile::on("/mnt/xfs", "xfs", "lease-fdclose")?;
    drop(Mapping::new(&file.backing(true), LEASE_LEN, false)?);
    let data = std::fs::File::open(&file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.path)))?;
    let lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
    drop(data);
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

fn revoke_with(t: &mut CaseCtx, how: Breaker, name: &str) -> CaseResult {
    let Some(h) = holder(t, "/mnt/xfs", "xfs", name, abi::PL_POLICY_REVOKE)? else {
        fail!("no lease on XFS");
    };
    let _src = prepare_breaker(t, how, &h.file.path)?;
    let held0 = pins_held()?;
    // The device's lease table while the lease is held, for the runner's
    // status-<name>-held.json (docs/scenarios.md shows these).
    sys::snapshot(&format!("{name}-held"), SNAPSHOT_WAIT);
    let pid = spawn_breaker(how, &h.file.path)?;
    let t0 = Instant::now();
    let exit = reap_breaker(pid, Duration::from_secs(30), &format!("{how:?}"))?;
    t.diag(format!("{how:?} returned after {:?}: {exit}", t0.elapsed()));
    ensure!(exit == Exit::Code(0), "{how:?} child: {exit}");
    let key = h.key;
    let (hit, _) = wait_event(t, h.ev.as_raw_fd(), Duration::from_secs(5), |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == key
    })?;
    let Some(e) = hit else {
        fail!("no MR_REVOKED for MR {key:#x} within 5 s after {how:?}");
    };
    ensure!(
        e.args[1] == abi::PL_REVOKE_LEASE_BREAK,
        "MR_REVOKED reason {} != LEASE_BREAK",
        e.args[1]
    );
    expect_errno(
        h.dev.write(h.lkey, 0, h.key, 0, 4096),
        libc::ECANCELED,
        "device WRITE into the revoked MR",
    )?;
    let held1 = pins_held()?;
    t.diag(format!(
        "pins held: {held0} before the break, {held1} after (MR of {} pages)",
        LEASE_LEN / 4096
    ));
    ensure!(
        held0 - held1 == (LEASE_LEN / 4096) as i64,
        "the break released {} pins, expected {}",
        held0 - held1,
        LEASE_LEN / 4096
    );
    let st = lease_state(h.dev.raw(), h.lease)?;
    ensure!(
        st.as_deref() == Some("revoked"),
        "lease state {st:?} after the break"
    );
    sys::snapshot(&format!("{name}-revoked"), SNAPSHOT_WAIT);
    let line = lease_line(&fdinfo(h.dev.raw())?, h.lease).unwrap_or_default();
    ensure!(
        line_field(&line, "breaks") == Some("1") && line_field(&line, "mrs_revoked") == Some("1"),
        "lease after {how:?}: {line}"
    );
    check_breaker_effect(how, &h.file.path)?;
    t.diag(format!(
        "finding: {} XFS breaks the layout lease on {how:?} (the module reports PL_BREAK_OTHER): {line}", kname(),
    ));
    h.dev.dereg_mr(h.key)?;
    h.dev.lease_release(h.lease)?;
    h.dev.dereg_mr(h.lkey)?;
    drop(h.local);
    drop(h.map);
    Ok(())
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

fn revoke_policy_collapse_range(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::CollapseRange, "revoke-collapse")
}

fn revoke_policy_insert_range(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::InsertRange, "revoke-insert")
}

fn revoke_policy_zero_range(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::ZeroRange, "revoke-zero")
}

fn revoke_policy_reflink_onto_leased_file(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::Reflink, "revoke-reflink")
}

fn revoke_policy_xfs_io_fpunch(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::XfsIo("fpunch 0 65536"), "revoke-xfsio-fpunch")
}

fn revoke_policy_xfs_io_fcollapse(t: &mut CaseCtx) -> CaseResult {
    revoke_with(
        t,
        Breaker::XfsIo("fcollapse 0 4096"),
        "revoke-xfsio-fcollapse",
    )
}

fn revoke_policy_xfs_io_finsert(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::XfsIo("finsert 0 4096"), "revoke-xfsio-finsert")
}

fn revoke_policy_xfs_io_fzero(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::XfsIo("fzero 0 65536"), "revoke-xfsio-fzero")
}

fn revoke_policy_xfs_io_reflink(t: &mut CaseCtx) -> CaseResult {
    revoke_with(
        t,
        Breaker::XfsIo("reflink SRC 0 0 65536"),
        "revoke-xfsio-reflink",
    )
}

fn revoke_policy_write(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::Write, "revoke-write")
}

fn revoke_policy_xfs_io_pwrite(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::XfsIo("pwrite 0 4096"), "revoke-xfsio-pwrite")
}

fn revoke_policy_truncate(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::Truncate, "revoke-truncate")
}

fn revoke_policy_punch_hole(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::PunchHole, "revoke-punch")
}

fn revoke_policy_xfs_io_truncate(t: &mut CaseCtx) -> CaseResult {
    revoke_with(t, Breaker::XfsIoTruncate, "revoke-xfsio")
}

fn wait_policy_truncate_waits_for_release(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, Breaker::Truncate, "wait-truncate")
}

fn wait_policy_collapse_range_waits_for_release(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, Breaker::CollapseRange, "wait-collapse")
}

fn wait_policy_punch_hole_waits_for_release(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, Breaker::PunchHole, "wait-punch")
}

fn wait_policy_insert_range_waits_for_release(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, Breaker::InsertRange, "wait-insert")
}

fn wait_policy_zero_range_waits_for_release(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, Breaker::ZeroRange, "wait-zero")
}

fn wait_policy_reflink_waits_for_release(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, Breaker::Reflink, "wait-reflink")
}

fn wait_policy_write_waits_for_release(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, Breaker::Write, "wait-write")
}

// The triggers issue 4 names for xfs_io (truncate, fpunch, fcollapse,
// reflink) under the wait and timeout policies; revoke has its own above.
const XFS_IO_FPUNCH: Breaker = Breaker::XfsIo("fpunch 0 65536");
const XFS_IO_FCOLLAPSE: Breaker = Breaker::XfsIo("fcollapse 0 4096");
const XFS_IO_REFLINK: Breaker = Breaker::XfsIo("reflink SRC 0 0 65536");

fn wait_policy_xfs_io_truncate(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, Breaker::XfsIoTruncate, "wait-xfsio-truncate")
}

fn wait_policy_xfs_io_fpunch(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, XFS_IO_FPUNCH, "wait-xfsio-fpunch")
}

fn wait_policy_xfs_io_fcollapse(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, XFS_IO_FCOLLAPSE, "wait-xfsio-fcollapse")
}

fn wait_policy_xfs_io_reflink(t: &mut CaseCtx) -> CaseResult {
    wait_with(t, XFS_IO_REFLINK, "wait-xfsio-reflink")
}

fn timeout_policy_xfs_io_truncate(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, Breaker::XfsIoTruncate, "timeout-xfsio-truncate")
}

fn timeout_policy_xfs_io_fpunch(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, XFS_IO_FPUNCH, "timeout-xfsio-fpunch")
}

fn timeout_policy_xfs_io_fcollapse(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, XFS_IO_FCOLLAPSE, "timeout-xfsio-fcollapse")
}

fn timeout_policy_xfs_io_reflink(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, XFS_IO_REFLINK, "timeout-xfsio-reflink")
}

fn wait_with(t: &mut CaseCtx, how: Breaker, name: &str) -> CaseResult {
    let Some(h) = holder(t, "/mnt/xfs", "xfs", name, abi::PL_POLICY_WAIT)? else {
        fail!("no lease on XFS");
    };
    let _src = prepare_breaker(t, how, &h.file.path)?;
    let t0 = Instant::now();
    let pid = spawn_breaker(how, &h.file.path)?;
    let lease = h.lease;
    let (hit, _) = wait_event(t, h.ev.as_raw_fd(), Duration::from_secs(5), |e| {
        e.kind == abi::PL_EVENT_LEASE_BROKEN && e.args[0] == lease
    })?;
    let broken_after = t0.elapsed();
    if hit.is_none() {
        // Did the kernel break the lease at all? If the breaker returned
        // and the lease is still active, that is what 6.12 does.
        if let Some(exit) = sys::wait_timeout(pid, Duration::ZERO)? {
            let st = lease_state(h.dev.raw(), lease)?;
            if st.as_deref() == Some("active") {
                t.diag(format!(
                    "finding: {} XFS does not break the layout lease on {how:?}: it returned after {:?} ({exit}), lease still active", kname(),
                    t0.elapsed()
                ));
                h.dev.write(h.lkey, 0, h.key, 0, 4096)?;
                h.dev.dereg_mr(h.key)?;
                h.dev.lease_release(lease)?;
                h.dev.dereg_mr(h.lkey)?;
                return Ok(());
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    let still = sys::wait_timeout(pid, Duration::ZERO)?;
    if still.is_some() || hit.is_none() {
        let _ = reap_breaker(pid, Duration::from_secs(1), &format!("{how:?}"));
    }
    ensure!(
        hit.is_some(),
        "no LEASE_BROKEN for lease {lease:#x} within 5 s of {how:?}"
    );
    ensure!(
        still.is_none(),
        "{how:?} did not wait for the holder: {:?}",
        still
    );
    let blocked = t0.elapsed();
    t.diag(format!(
        "LEASE_BROKEN {broken_after:?} after {how:?} started; breaker still blocked after {blocked:?}: {}",
        sys::proc_stack(pid)
    ));
    let st = lease_state(h.dev.raw(), lease)?;
    ensure!(
        st.as_deref() == Some("breaking"),
        "lease state {st:?} while the breaker waits"
    );
    // The device still reaches the MR: the holder decides.
    h.dev.write(h.lkey, 0, h.key, 0, 4096)?;
    h.dev.dereg_mr(h.key)?;
    ensure!(
        sys::wait_timeout(pid, Duration::from_millis(300))?.is_none(),
        "{how:?} went on before LEASE_RELEASE"
    );
    h.dev.lease_release(lease)?;
    let t1 = Instant::now();
    let exit = reap_breaker(
        pid,
        Duration::from_secs(10),
        &format!("{how:?} after LEASE_RELEASE"),
    )?;
    t.diag(format!(
        "{how:?} returned {:?} after LEASE_RELEASE ({:?} after it started): {exit}",
        t1.elapsed(),
        t0.elapsed()
    ));
    ensure!(exit == Exit::Code(0), "{how:?} child: {exit}");
    check_breaker_effect(how, &h.file.path)?;
    t.diag(format!(
        "finding: {} XFS breaks the layout lease on {how:?}; with the wait policy the breaker sleeps until LEASE_RELEASE", kname(),
    ));
    h.dev.dereg_mr(h.lkey)?;
    Ok(())
}

/// Sets /proc/sys/fs/lease-break-time, restoring the old value on drop.
pub(crate) struct BreakTime(String);

impl BreakTime {
    pub(crate) fn set(secs: u32) -> Result<BreakTime, CaseErr> {
        let old = sys::read_to_string("/proc/sys/fs/lease-break-time")?;
        sys::write_str("/proc/sys/fs/lease-break-time", &format!("{secs}\n"))?;
        Ok(BreakTime(old))
    }
}

impl Drop for BreakTime {
    fn drop(&mut self) {
        let _ = sys::write_str("/proc/sys/fs/lease-break-time", &self.0);
    }
}

fn timeout_policy_lease_lost(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, Breaker::Truncate, "timeout-truncate")
}

fn timeout_policy_punch_hole_lease_lost(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, Breaker::PunchHole, "timeout-punch")
}

fn timeout_policy_collapse_range_lease_lost(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, Breaker::CollapseRange, "timeout-collapse")
}

fn timeout_policy_insert_range_lease_lost(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, Breaker::InsertRange, "timeout-insert")
}

fn timeout_policy_zero_range_lease_lost(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, Breaker::ZeroRange, "timeout-zero")
}

fn timeout_policy_reflink_lease_lost(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, Breaker::Reflink, "timeout-reflink")
}

fn timeout_policy_write_lease_lost(t: &mut CaseCtx) -> CaseResult {
    timeout_with(t, Breaker::Write, "timeout-write")
}

/// The timeout policy under `how`, lease-break-time 1 s: the breaker goes on
/// after about 1 s, the lease goes LOST, the MR stays pinned and the device
/// still writes it (a lost access, in the `{name}-lost` snapshot), pins
/// balance after DEREG_MR.
fn timeout_with(t: &mut CaseCtx, how: Breaker, name: &str) -> CaseResult {
    let _bt = BreakTime::set(1)?;
    let Some(h) = holder(t, "/mnt/xfs", "xfs", name, abi::PL_POLICY_TIMEOUT)? else {
        fail!("no lease on XFS");
    };
    let _src = prepare_breaker(t, how, &h.file.path)?;
    let held0 = pins_held()?;
    let lease = h.lease;
    let t0 = Instant::now();
    let pid = spawn_breaker(how, &h.file.path)?;
    let exit = reap_breaker(pid, Duration::from_secs(30), &format!("{how:?}"))?;
    let took = t0.elapsed();
    t.diag(format!(
        "{how:?} returned after {took:?} (lease-break-time 1 s): {exit}"
    ));
    ensure!(exit == Exit::Code(0), "{how:?} child: {exit}");
    if took < Duration::from_millis(700) {
        // Returned at once: did the kernel break the lease at all?
        let (_, all) = wait_event(t, h.ev.as_raw_fd(), Duration::from_millis(500), |e| {
            e.args[0] == lease
        })?;
        let st = lease_state(h.dev.raw(), lease)?;
        ensure!(
            st.as_deref() == Some("active") && !all.iter().any(|e| e.args[0] == lease),
            "{how:?} did not wait for lease-break-time (1 s): {took:?}, lease state {st:?}"
        );
        t.diag(format!(
            "finding: {} XFS does not break the layout lease on {how:?}: returned after {took:?}, lease still active", kname(),
        ));
        h.dev.write(h.lkey, 0, h.key, 0, 4096)?;
        h.dev.dereg_mr(h.key)?;
        h.dev.lease_release(lease)?;
        h.dev.dereg_mr(h.lkey)?;
        return Ok(());
    }
    wait_lease_state(h.dev.raw(), lease, "lost", Duration::from_secs(5))?;
    let lost_after = t0.elapsed();
    let (lost, all) = wait_event(t, h.ev.as_raw_fd(), Duration::from_secs(5), |e| {
        e.kind == abi::PL_EVENT_LEASE_LOST && e.args[0] == lease
    })?;
    ensure!(
        all.iter()
            .any(|e| e.kind == abi::PL_EVENT_LEASE_BROKEN && e.args[0] == lease),
        "no LEASE_BROKEN for lease {lease:#x}"
    );
    ensure!(lost.is_some(), "no LEASE_LOST for lease {lease:#x}");
    ensure!(
        pins_held()? == held0,
        "pins changed while the lease timed out: {} -> {}",
        held0,
        pins_held()?
    );
    // Before the device WRITE: a write(2) leaves the pages in the file.
    check_breaker_effect(how, &h.file.path)?;
    // The device still writes the pages (for the removing triggers, pages
    // the file no longer owns).
    h.dev.write(h.lkey, 0, h.key, 0, 4096)?;
    // The device's table with the lost access counted: status-<name>-lost.
    sys::snapshot(&format!("{name}-lost"), SNAPSHOT_WAIT);
    let tab = debugfs_table("leases")?;
    let row = tab.lines().find(|l| names_handle(l, lease)).unwrap_or("");
    t.diag(format!("debugfs leases: {row}"));
    ensure!(
        row.contains("lost"),
        "debugfs leases row for {lease:#x}: {row:?}"
    );
    h.dev.dereg_mr(h.key)?;
    let held1 = pins_held()?;
    ensure!(
        held1 == held0 - (LEASE_LEN / 4096) as i64,
        "DEREG_MR of the LOST lease's MR did not release its pins: {held0} -> {held1}"
    );
    t.diag(format!(
        "finding: {} XFS breaks the layout lease on {how:?}; {how:?} went on after {took:?}, lease state lost {lost_after:?} after the start, MR pinned until DEREG_MR (pins {held0} -> {held1})", kname(),
    ));
    h.dev.lease_release(lease)?;
    h.dev.dereg_mr(h.lkey)?;
    Ok(())
}

fn ext4_never_breaks_layout_leases(t: &mut CaseCtx) -> CaseResult {
    let Some(h) = holder(t, "/mnt/ext4", "ext4", "ext4-lease", abi::PL_POLICY_REVOKE)? else {
        return Ok(());
    };
    let pid = spawn_breaker(Breaker::Truncate, &h.file.path)?;
    let exit = reap_breaker(pid, Duration::from_secs(30), "truncate on ext4")?;
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    let key = h.key;
    let (hit, all) = wait_event(t, h.ev.as_raw_fd(), Duration::from_millis(500), |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == key
    })?;
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

fn holder_killed_while_breaker_waits(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
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

// ---- concurrent truncate vs REG_MR -------------------------------------------------------------

/// How long the race runs.
const RACE_TIME: Duration = Duration::from_millis(1000);
/// How long the truncate may wait behind an active lease nobody broke
/// before the race case lets that lease go: a lease the kernel did break
/// is revoked by the module's work within milliseconds.
const UNBROKEN_WAIT: Duration = Duration::from_millis(200);

/// Is `breaker` waiting in `__break_lease()` while `lease` of `fd` has
/// never been broken (`breaks=0` in the fdinfo)?
fn breaker_waits_unbroken(fd: i32, lease: u64, breaker: libc::pid_t) -> Result<bool, CaseErr> {
    let unbroken = lease_line(&fdinfo(fd)?, lease)
        .and_then(|l| line_field(&l, "breaks").map(|b| b == "0"))
        .unwrap_or(false);
    Ok(unbroken && sys::proc_stack(breaker).contains("__break_lease"))
}

fn concurrent_truncate_vs_reg_mr(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
    let file = TestFile::on("/mnt/xfs", "xfs", "race")?;
    let map = Mapping::new(&file.backing(true), LEASE_LEN, false)?;
    let ev = dev.event_fd()?;
    sys::set_nonblock(ev.as_raw_fd())?;
    let data = std::fs::File::open(&file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.path)))?;
    let held0 = pins_held()?;
    // Forked before any thread exists: truncate to 0 and back, until told.
    let (stop_rd, stop_wr) = sys::pipe()?;
    let path = file.path.clone();
    let (rd_raw, wr_raw) = (stop_rd.as_raw_fd(), stop_wr.as_raw_fd());
    let truncer = sys::fork_child(move || {
        // SAFETY: the child's copy of the write end; the parent keeps its own.
        unsafe { libc::close(wr_raw) };
        let c = std::ffi::CString::new(path).unwrap();
        let mut n = 0;
        loop {
            for size in [0, LEASE_LEN as i64] {
                // SAFETY: truncate(2) with a valid path.
                if unsafe { libc::truncate(c.as_ptr(), size) } < 0 {
                    return sys::last_errno();
                }
            }
            n += 1;
            if sys::poll_one(rd_raw, libc::POLLIN, 0).unwrap_or(1) != 0 {
                // exit code: 0 when it looped at least once
                return if n > 0 { 0 } else { 99 };
            }
        }
    })?;
    drop(stop_rd);
    let deadline = Instant::now() + RACE_TIME;
    let addr = map.addr();
    let dev_ref = &dev;
    // Each racer: REG_MR of the whole mapping; every other one kept until
    // the end (a later break revokes it), the rest deregistered at once.
    let racer = move || -> Result<(Vec<u64>, u32, Vec<i32>), SysError> {
        let (mut kept, mut ok, mut errs) = (Vec::new(), 0u32, Vec::new());
        while Instant::now() < deadline {
            match dev_ref.reg_mr(
                addr,
                LEASE_LEN as u64,
                PL_ACCESS_ALL,
                PINLEASE_PIN_SHORTTERM,
            ) {
                Ok(r) => {
                    ok += 1;
                    if ok % 2 == 0 {
                        kept.push(r.key);
                    } else {
                        dev_ref.dereg_mr(r.key)?;
                    }
                }
                Err(e) => errs.push(e.errno),
            }
        }
        Ok((kept, ok, errs))
    };
    let mut leases = 0u32;
    let mut unbroken_waits = 0u32;
    let mut lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
    leases += 1;
    let results = std::thread::scope(|s| -> Result<_, CaseErr> {
        let r1 = s.spawn(racer);
        let r2 = s.spawn(racer);
        // The lease keeper: a revoked lease is released and taken again.
        // A lease taken between a revoke and the truncate's next look at
        // the inode is one the kernel (6.1, 6.12, 7.3) never breaks:
        // __break_lease() restarts and waits on it without calling
        // lm_break. The keeper lets such a lease go once the truncate has
        // sat behind it, unbroken, for UNBROKEN_WAIT, and counts it.
        let mut keeper = || -> CaseResult {
            let mut since: Option<Instant> = None;
            while Instant::now() < deadline {
                match lease_state(dev.raw(), lease)?.as_deref() {
                    Some("revoked") => {
                        dev.lease_release(lease)?;
                        lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
                        leases += 1;
                        since = None;
                    }
                    Some("active") if breaker_waits_unbroken(dev.raw(), lease, truncer)? => {
                        let t0 = *since.get_or_insert_with(Instant::now);
                        if t0.elapsed() >= UNBROKEN_WAIT {
                            unbroken_waits += 1;
                            dev.lease_release(lease)?;
                            lease =
                                dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
                            leases += 1;
                            since = None;
                        }
                    }
                    _ => since = None,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        };
        let kr = keeper();
        let a = r1
            .join()
            .map_err(|_| CaseErr::Fail("racer panicked".into()))?;
        let b = r2
            .join()
            .map_err(|_| CaseErr::Fail("racer panicked".into()))?;
        kr?;
        Ok((a?, b?))
    })?;
    drop(stop_wr);
    // The last lease goes first: the truncate loop may wait behind it,
    // unbroken (above).
    dev.lease_release(lease)?;
    let texit = reap_breaker(truncer, Duration::from_secs(30), "truncate loop")?;
    let (a, b) = results;
    let mut kept = a.0;
    kept.extend(b.0);
    let ok = a.1 + b.1;
    let mut errs = a.2;
    errs.extend(b.2);
    let evs = read_events(ev.as_raw_fd(), Duration::from_millis(300))?;
    let revoked = evs
        .iter()
        .filter(|e| e.kind == abi::PL_EVENT_MR_REVOKED && kept.contains(&e.args[0]))
        .count();
    let mut hist = std::collections::BTreeMap::new();
    for e in &errs {
        *hist.entry(errno_name(*e)).or_insert(0u32) += 1;
    }
    t.diag(format!(
        "{:?}: {ok} REG_MR ok ({} kept), failures {hist:?}, {revoked} kept MRs revoked by a break, {leases} leases taken; truncate loop: {texit}",
        RACE_TIME,
        kept.len()
    ));
    if unbroken_waits > 0 {
        t.diag(format!(
            "finding: {} {unbroken_waits} time(s) left the truncate waiting in __break_lease() on a lease taken while it waited, never broken (breaks=0, lm_break not called); the keeper released it after {UNBROKEN_WAIT:?}",
            crate::verdicts::uname_release()
        ));
    }
    ensure!(texit == Exit::Code(0), "truncate loop: {texit}");
    // A REG_MR racing a truncate pins pages beyond the new EOF: SIGBUS in
    // the fault, EFAULT from GUP. Nothing else is a clean answer.
    if let Some(e) = errs.iter().find(|&&e| e != libc::EFAULT) {
        fail!("REG_MR failed with {} during the race", errno_name(*e));
    }
    ensure!(ok > 0, "no REG_MR succeeded during the race");
    for k in &kept {
        dev.dereg_mr(*k)?;
    }
    let fi = fdinfo(dev.raw())?;
    ensure!(
        !fi.lines()
            .any(|l| l.starts_with("mr:") || l.starts_with("lease:")),
        "MRs or leases left after the race: {}",
        fi.replace('\n', " | ")
    );
    let held1 = pins_held()?;
    ensure!(
        held1 == held0,
        "pins held {held0} before the race, {held1} after"
    );
    drop(map);
    Ok(())
}

// ---- require_lease -----------------------------------------------------------------------------

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

fn reg_mr_require_lease_param(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
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

// ---- FS-DAX: short-term pins under a layout lease ----------------------------------------------

/// A file on /mnt/dax that is DAX, LEASE_LEN bytes, or a skip.
fn dax_file(t: &mut CaseCtx, name: &str) -> Result<TestFile, CaseErr> {
    match sys::mount_at("/mnt/dax") {
        Some(m) if m.has_dax() => {}
        Some(m) => skip!("/mnt/dax is mounted without dax ({})", m.options.join(",")),
        None => skip!("/mnt/dax is not mounted (no pmem device)"),
    }
    let fstype = sys::mount_at("/mnt/dax")
        .map(|m| m.fstype)
        .unwrap_or_default();
    let f = TestFile::on("/mnt/dax", &fstype, name)?;
    drop(Mapping::new(&f.backing(true), LEASE_LEN, false)?);
    match sys::file_is_dax(&f.path) {
        Some(true) => {}
        Some(false) => skip!("{} is not a DAX file (STATX_ATTR_DAX clear)", f.path),
        None => t.diag("statx does not report STATX_ATTR_DAX; assuming DAX from the mount"),
    }
    Ok(f)
}

fn fsdax_shortterm_pin_under_lease(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
    let f = dax_file(t, "dax-lease")?;
    let map = Mapping::new(&f.backing(true), LEASE_LEN, false)?;
    let data =
        std::fs::File::open(&f.path).map_err(|e| CaseErr::Fail(format!("open {}: {e}", f.path)))?;
    let lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
    drop(data);
    expect_errno(
        dev.reg_mr(map.addr(), LEASE_LEN as u64, PL_ACCESS_ALL, 0),
        libc::EOPNOTSUPP,
        "FOLL_LONGTERM REG_MR of FS-DAX under a lease",
    )?;
    let r = dev.reg_mr(
        map.addr(),
        LEASE_LEN as u64,
        PL_ACCESS_ALL,
        PINLEASE_PIN_SHORTTERM,
    )?;
    t.diag(format!(
        "FS-DAX: long-term pin EOPNOTSUPP; short-term pin under revoke lease {lease:#x}: MR {:#x} ({} pages), lease {:#x}",
        r.key, r.npages, r.lease
    ));
    let local = Mapping::anon(4096)?;
    local.fill_with(0, 4096, |i| (i % 251) as u8);
    let lkey = dev.reg_mr(local.addr(), 4096, PL_ACCESS_ALL, 0)?.key;
    dev.write(lkey, 0, r.key, 8192, 4096)?;
    if let Some((o, got, want)) = map.first_mismatch(8192, 4096, |i| ((i - 8192) % 251) as u8) {
        fail!("device WRITE into the DAX MR: byte {o} = {got:#04x}, expected {want:#04x}");
    }
    ensure!(
        lease_state(dev.raw(), lease)?.as_deref() == Some("active"),
        "lease not active after DMA into the DAX pages"
    );
    dev.dereg_mr(r.key)?;
    dev.dereg_mr(lkey)?;
    dev.lease_release(lease)?;
    Ok(())
}

fn fsdax_truncate_vs_pin_under_revoke_lease(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
    let f = dax_file(t, "dax-truncate")?;
    let map = Mapping::new(&f.backing(true), LEASE_LEN, false)?;
    let ev = dev.event_fd()?;
    sys::set_nonblock(ev.as_raw_fd())?;
    let data =
        std::fs::File::open(&f.path).map_err(|e| CaseErr::Fail(format!("open {}: {e}", f.path)))?;
    let lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
    drop(data);
    let held0 = pins_held()?;
    let r = dev.reg_mr(
        map.addr(),
        LEASE_LEN as u64,
        PL_ACCESS_ALL,
        PINLEASE_PIN_SHORTTERM,
    )?;
    let key = r.key;
    let npages = (LEASE_LEN / 4096) as i64;
    ensure!(
        pins_held()? == held0 + npages,
        "REG_MR did not pin {npages} pages"
    );
    let pid = spawn_breaker(Breaker::Truncate, &f.path)?;
    let (hit, _) = wait_event(t, ev.as_raw_fd(), Duration::from_secs(1), |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == key
    })?;
    if hit.is_some() {
        let _ = reap_breaker(pid, Duration::from_secs(30), "truncate");
        fail!("the DAX truncate revoked MR {key:#x} at once: 6.12 (our reference) waits for the pinned DAX pages in xfs_break_dax_layouts() before break_layout()");
    }
    // 6.12: xfs_break_layouts(BREAK_UNMAP) runs xfs_break_dax_layouts()
    // first, which waits (interruptibly) for the DAX pages' references
    // to drop; break_layout() is only reached after that.
    let still = sys::wait_timeout(pid, Duration::ZERO)?;
    let stack = sys::proc_stack(pid);
    t.diag(format!("truncate after 1 s: {stack}"));
    let line = lease_line(&fdinfo(dev.raw())?, lease).unwrap_or_default();
    ensure!(
        still.is_none(),
        "truncate neither revoked the MR nor waited: {still:?}"
    );
    ensure!(
        line_field(&line, "breaks") == Some("0") && line_field(&line, "state") == Some("active"),
        "lease while the truncate waits: {line}"
    );
    t.diag(format!("finding: on {} a truncate of a DAX file waits for the pinned DAX pages in xfs_break_dax_layouts() before break_layout(): the lease is not broken and the truncate blocks (interruptibly)", kname()));
    sys::kill(pid, libc::SIGKILL);
    let k = reap_breaker(pid, Duration::from_secs(10), "killed truncate")?;
    ensure!(k == Exit::Signal(libc::SIGKILL), "killed truncate: {k}");
    // The XFS write path breaks layout leases without the DAX wait.
    let w = spawn_breaker(Breaker::Write, &f.path)?;
    let wexit = reap_breaker(w, Duration::from_secs(30), "pwrite")?;
    ensure!(wexit == Exit::Code(0), "pwrite child: {wexit}");
    let (hit, _) = wait_event(t, ev.as_raw_fd(), Duration::from_secs(5), |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == key
    })?;
    ensure!(
        hit.is_some(),
        "a write(2) to the DAX file did not revoke MR {key:#x}"
    );
    t.diag(
        "a write(2) (BREAK_WRITE, no DAX wait) broke the lease: MR revoked, pins dropped"
            .to_string(),
    );
    let pid = spawn_breaker(Breaker::Truncate, &f.path)?;
    let truncate_exit = reap_breaker(pid, Duration::from_secs(30), "truncate after the revoke")?;
    ensure!(truncate_exit == Exit::Code(0), "truncate: {truncate_exit}");
    let held1 = pins_held()?;
    ensure!(
        held1 == held0,
        "pins held {held0} before REG_MR, {held1} after the revoke"
    );
    ensure!(
        lease_state(dev.raw(), lease)?.as_deref() == Some("revoked"),
        "lease not revoked"
    );
    ensure!(
        std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(1) == 0,
        "the truncate did not complete"
    );
    expect_errno(
        dev.read(key, 0, key, 0, 8),
        libc::ECANCELED,
        "device access to the revoked DAX MR",
    )?;
    dev.dereg_mr(key)?;
    dev.lease_release(lease)?;
    drop(map);
    Ok(())
}

// ---- the device's canary scrubber (docs/abi.md §5.9.1) ----------------------------------

/// How long a case waits for the scrubber's canaries (the runner's default
/// period is 20 ms; a round may take longer under TCG).
pub(crate) const SCRUB_WAIT: Duration = Duration::from_secs(10);
/// High half of every canary before the slot is XORed in ("SCRB").
const SCRUB_MAGIC_HI: u32 = (abi::PL_SCRUB_SEED_MAGIC >> 32) as u32;

/// Canary words of MR `key` at their own place in `m` (MR offset = mapping
/// offset: the MR starts at the mapping's start).
fn count_canaries(m: &Mapping, key: u64) -> usize {
    let seed = abi::pl_scrub_seed(key);
    let mut n = 0;
    m.for_each_u64(|off, w| {
        if w == seed ^ off as u64 {
            n += 1;
        }
    });
    n
}

/// Polls `m` until it holds `want` canary words of `key`: how long it took,
/// or None after `timeout` (with the count seen last).
fn wait_canaries(
    m: &Mapping,
    key: u64,
    want: usize,
    timeout: Duration,
) -> Result<Result<Duration, usize>, CaseErr> {
    let t0 = Instant::now();
    loop {
        let n = count_canaries(m, key);
        if n >= want {
            return Ok(Ok(t0.elapsed()));
        }
        if t0.elapsed() >= timeout {
            return Ok(Err(n));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a whole MR of canaries; SKIP when none came at all (the
/// daemon's scrubber is off), FAIL when only some did.
fn need_canaries(t: &mut CaseCtx, m: &Mapping, key: u64, what: &str) -> CaseResult {
    let words = m.len() / 8;
    match wait_canaries(m, key, words, SCRUB_WAIT)? {
        Ok(took) => {
            t.diag(format!(
                "{what}: all {words} words of MR {key:#x} are canaries {took:?} after the wait began"
            ));
            Ok(())
        }
        Err(0) => skip!(
            "no canary of MR {key:#x} within {SCRUB_WAIT:?}: the daemon's scrubber is off \
             (guest-driver/vm/run --scrub-period-ms 0?)"
        ),
        Err(n) => fail!(
            "{what}: only {n} of {words} words are canaries of MR {key:#x} after {SCRUB_WAIT:?}"
        ),
    }
}

/// The (slot, generation ^ offset) halves of a canary word, checked
/// against the key and MR offset `o` (docs/abi.md §5.9.1 table).
fn decode_canary(w: u64, key: u64, o: u64) -> Result<String, CaseErr> {
    let slot = ((w >> 32) as u32) ^ SCRUB_MAGIC_HI;
    let gen = (w as u32) ^ (o as u32);
    ensure!(
        slot == key as u32 && gen == (key >> 32) as u32,
        "word {w:#018x} at MR offset {o:#x}: slot {slot:#x} generation {gen:#x}, \
         but MR {key:#x} has slot {:#x} generation {:#x}",
        key as u32,
        key >> 32
    );
    Ok(format!(
        "{w:#018x} @{o:#x} -> slot {slot:#x} gen {gen:#x} offset {o:#x}"
    ))
}

/// The `flags=` of MR `key`'s `mr:` line in fdinfo.
fn fdinfo_mr_flags(fd: i32, key: u64) -> Result<u32, CaseErr> {
    let fi = fdinfo(fd)?;
    let Some(line) = fi
        .lines()
        .find(|l| l.starts_with("mr:") && names_handle(l, key))
    else {
        fail!("fdinfo lists no MR {key:#x}: {}", fi.replace('\n', " | "));
    };
    let f = line_field(line, "flags").unwrap_or("");
    match u32::from_str_radix(f.trim_start_matches("0x"), 16) {
        Ok(v) => Ok(v),
        Err(_) => fail!("fdinfo MR line without flags=: {line}"),
    }
}

fn scrub_canaries_appear_in_registered_pages(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    let len = 64 * KIB;
    let m = Mapping::anon(len)?;
    m.fill_with(0, len, pattern);
    let base = PinleaseRegMr {
        addr: m.addr(),
        length: len as u64,
        ..Default::default()
    };
    // The device scrubs only what it may write.
    let mut ro = PinleaseRegMr {
        access: PL_ACCESS_READ,
        flags: PINLEASE_REG_SCRUB,
        ..base
    };
    expect_errno(
        dev.reg_mr_raw(&mut ro).map(|_| ro.key),
        libc::EINVAL,
        "REG_MR PINLEASE_REG_SCRUB with access READ only",
    )?;
    let r = dev.reg_mr(m.addr(), len as u64, PL_ACCESS_ALL, PINLEASE_REG_SCRUB)?;
    let key = r.key;
    let flags = fdinfo_mr_flags(dev.raw(), key)?;
    ensure!(
        flags & abi::PL_REG_SCRUB != 0,
        "fdinfo flags {flags:#x} of MR {key:#x} lack PL_REG_SCRUB"
    );
    t.diag(format!(
        "MR {key:#x}: {len} bytes of anonymous memory, {} pages, fdinfo flags {flags:#x}, seed {:#018x}",
        r.npages,
        abi::pl_scrub_seed(key)
    ));
    need_canaries(t, &m, key, "anon MR")?;
    for o in [0, 8, 4096 + 24, (len / 2) as u64, (len - 8) as u64] {
        let w = m.get_u64(o as usize);
        t.diag(format!("canary {}", decode_canary(w, key, o)?));
    }
    // The guest overwrites two words; the next rounds count the mismatches
    // and write the canaries back.
    m.set_u64(0, 0);
    m.set_u64(4096 + 16, 0x1234_5678);
    let t0 = Instant::now();
    let seed = abi::pl_scrub_seed(key);
    loop {
        if m.get_u64(0) == seed && m.get_u64(4096 + 16) == seed ^ (4096 + 16) {
            break;
        }
        ensure!(
            t0.elapsed() < SCRUB_WAIT,
            "the scrubber did not rewrite overwritten words within {SCRUB_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.diag(format!(
        "two words the guest overwrote were canaries again after {:?}",
        t0.elapsed()
    ));
    // Deregistered: the scrubber never touches those pages again.
    dev.dereg_mr(key)?;
    m.fill_with(0, len, |_| 0);
    std::thread::sleep(Duration::from_millis(500));
    let n = count_canaries(&m, key);
    ensure!(
        n == 0,
        "{n} canary words of MR {key:#x} reappeared in its pages after DEREG_MR"
    );
    t.diag("no canary in the MR's pages 500 ms after DEREG_MR");
    Ok(())
}

/// One place a canary-looking word was found.
struct StrayHit {
    what: String,
    off: usize,
    word: u64,
}

/// Fresh memory the guest scans for stray canaries.
struct Fresh {
    what: String,
    map: Mapping,
}

/// Scans `fresh` for canaries of MR `key` (length `len`, first page offset
/// 0: a canary sits where its MR offset would, docs/abi.md §5.9.1) and for
/// words naming any MR slot below 65536; returns (key hits, other-slot hits).
fn scan_stray(fresh: &[Fresh], key: u64, len: u64) -> (Vec<StrayHit>, Vec<StrayHit>) {
    let seed = abi::pl_scrub_seed(key);
    let mut hits = Vec::new();
    let mut other = Vec::new();
    for f in fresh {
        let base = f.map.addr() as usize;
        f.map.for_each_u64(|off, w| {
            if (w >> 32) as u32 ^ SCRUB_MAGIC_HI >= 0x1_0000 {
                return;
            }
            let o = w ^ seed;
            let hit = StrayHit {
                what: f.what.clone(),
                off,
                word: w,
            };
            if o < len && o.is_multiple_of(8) && o % 4096 == ((base + off) % 4096) as u64 {
                hits.push(hit);
            } else if other.len() < 64 {
                other.push(hit);
            }
        });
    }
    (hits, other)
}

fn revoke_then_no_canary_in_fresh_memory(t: &mut CaseCtx) -> CaseResult {
    let Some(h) = holder_flags(
        t,
        "/mnt/xfs",
        "xfs",
        "scrub-revoke",
        abi::PL_POLICY_REVOKE,
        PINLEASE_REG_SCRUB,
    )?
    else {
        fail!("no lease on XFS");
    };
    let key = h.key;
    need_canaries(t, &h.map, key, "MAP_SHARED XFS file MR")?;
    t.diag(format!(
        "file page cache holds canary {}",
        decode_canary(h.map.get_u64(8), key, 8)?
    ));
    // The MR's physical pages, to tell whether fresh memory reuses them.
    let mr_pages = LEASE_LEN / 4096;
    let freed: std::collections::HashSet<u64> = sys::pagemap_pfns(h.map.addr(), mr_pages)?
        .into_iter()
        .filter(|&p| p != 0)
        .collect();
    let held0 = pins_held()?;
    let pid = spawn_breaker(Breaker::Truncate, &h.file.path)?;
    let t0 = Instant::now();
    let exit = reap_breaker(pid, Duration::from_secs(30), "truncate")?;
    t.diag(format!(
        "truncate returned after {:?}: {exit}",
        t0.elapsed()
    ));
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    let (hit, _) = wait_event(t, h.ev.as_raw_fd(), Duration::from_secs(5), |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == key
    })?;
    let Some(e) = hit else {
        fail!("no MR_REVOKED for MR {key:#x} within 5 s after the truncate");
    };
    ensure!(
        e.args[1] == abi::PL_REVOKE_LEASE_BREAK && e.args[3] == h.lease,
        "MR_REVOKED reason {} lease {:#x}, expected LEASE_BREAK and {:#x}",
        e.args[1],
        e.args[3],
        h.lease
    );
    ensure!(
        lease_state(h.dev.raw(), h.lease)?.as_deref() == Some("revoked"),
        "lease {:#x} not revoked after the truncate",
        h.lease
    );
    let held1 = pins_held()?;
    ensure!(
        held0 - held1 == mr_pages as i64,
        "the break released {} pins, expected {mr_pages}",
        held0 - held1
    );
    // The old mapping lies beyond EOF now (SIGBUS): never touched again.

    // Fresh memory, allocated after the revoke returned: anonymous chunks
    // over a good share of free memory, then page cache of a new file.
    let avail = sys::meminfo_kb("MemAvailable").unwrap_or(0) as usize * 1024;
    const CHUNK: usize = 8 * MIB;
    let budget = (avail / 2).clamp(2 * CHUNK, 160 * MIB);
    let mut fresh = Vec::new();
    let mut reused = std::collections::HashSet::new();
    let mut anon = 0;
    while anon + CHUNK <= budget {
        let m = Mapping::anon(CHUNK)?;
        m.touch();
        for p in sys::pagemap_pfns(m.addr(), CHUNK / 4096)? {
            if freed.contains(&p) {
                reused.insert(p);
            }
        }
        fresh.push(Fresh {
            what: format!("anon chunk {}", fresh.len()),
            map: m,
        });
        anon += CHUNK;
    }
    let pc_file = TestFile::on("/mnt/xfs", "xfs", "scrub-fresh")?;
    let pc_len = 16 * MIB;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&pc_file.path)
            .map_err(|e| CaseErr::Fail(format!("create {}: {e}", pc_file.path)))?;
        let buf = vec![0x11u8; MIB];
        for _ in 0..pc_len / MIB {
            f.write_all(&buf)
                .map_err(|e| CaseErr::Fail(format!("write {}: {e}", pc_file.path)))?;
        }
    }
    let pc = Mapping::new(&pc_file.backing(true), pc_len, true)?;
    let mut sum = 0u64;
    pc.for_each_u64(|_, w| sum = sum.wrapping_add(w));
    for p in sys::pagemap_pfns(pc.addr(), pc_len / 4096)? {
        if freed.contains(&p) {
            reused.insert(p);
        }
    }
    fresh.push(Fresh {
        what: "page cache of a new XFS file".to_string(),
        map: pc,
    });
    let bytes: usize = fresh.iter().map(|f| f.map.len()).sum();
    t.diag(format!(
        "fresh memory: {} MiB anonymous in {} chunks + {} MiB page cache = {} pages \
         (MemAvailable was {} MiB); {} of the MR's {} freed pages are among them (pagemap)",
        anon / MIB,
        anon / CHUNK,
        pc_len / MIB,
        bytes / 4096,
        avail / MIB,
        reused.len(),
        freed.len()
    ));
    // Several scrub periods (20 ms in suite runs): at least 3 passes and 1 s.
    let t0 = Instant::now();
    let mut passes = 0u64;
    while passes < 3 || t0.elapsed() < Duration::from_secs(1) {
        let (hits, other) = scan_stray(&fresh, key, LEASE_LEN as u64);
        passes += 1;
        for o in other.iter().take(4) {
            t.diag(format!(
                "word {:#018x} at {}+{:#x} names MR slot {:#x} (not MR {key:#x})",
                o.word,
                o.what,
                o.off,
                (o.word >> 32) as u32 ^ SCRUB_MAGIC_HI
            ));
        }
        if let Some(x) = hits.first() {
            fail!(
                "pass {passes}: {} canary words of revoked MR {key:#x} in fresh memory, \
                 first {:#018x} at {}+{:#x} (MR offset {:#x})",
                hits.len(),
                x.word,
                x.what,
                x.off,
                x.word ^ abi::pl_scrub_seed(key)
            );
        }
        if passes >= 50 {
            break;
        }
    }
    let words = (bytes / 8) as u64 * passes;
    t.diag(format!(
        "scanned {} MiB ({} words, {} pages) {passes} times over {:?}: {words} words read, \
         0 canary words of revoked MR {key:#x}",
        bytes / MIB,
        bytes / 8,
        bytes / 4096,
        t0.elapsed()
    ));
    drop(fresh);
    // The truncated file: empty, and zeros (no canary) once extended again.
    let meta = std::fs::metadata(&h.file.path)
        .map_err(|e| CaseErr::Fail(format!("stat {}: {e}", h.file.path)))?;
    ensure!(
        meta.len() == 0,
        "truncated file has size {} after the truncate",
        meta.len()
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&h.file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", h.file.path)))?;
    f.set_len(LEASE_LEN as u64)
        .map_err(|e| CaseErr::Fail(format!("extend {}: {e}", h.file.path)))?;
    drop(f);
    let data = std::fs::read(&h.file.path)
        .map_err(|e| CaseErr::Fail(format!("read {}: {e}", h.file.path)))?;
    ensure!(
        data.len() == LEASE_LEN && data.iter().all(|&b| b == 0),
        "the truncated file, extended to {LEASE_LEN}, does not read back as zeros"
    );
    t.diag(format!(
        "{}: size 0 after the truncate; extended to {LEASE_LEN} it reads zeros (no canary)",
        h.file.path
    ));
    h.dev.dereg_mr(key)?;
    h.dev.lease_release(h.lease)?;
    h.dev.dereg_mr(h.lkey)?;
    Ok(())
}

fn timeout_lost_lease_scrub_reports_loss(t: &mut CaseCtx) -> CaseResult {
    let _bt = BreakTime::set(1)?;
    let Some(h) = holder_flags(
        t,
        "/mnt/xfs",
        "xfs",
        "scrub-lost",
        abi::PL_POLICY_TIMEOUT,
        PINLEASE_REG_SCRUB,
    )?
    else {
        fail!("no lease on XFS");
    };
    let (key, lease) = (h.key, h.lease);
    let ctx = h.dev.query()?.ctx;
    need_canaries(t, &h.map, key, "MAP_SHARED XFS file MR")?;
    let held0 = pins_held()?;
    let t0 = Instant::now();
    let pid = spawn_breaker(Breaker::Truncate, &h.file.path)?;
    let exit = reap_breaker(pid, Duration::from_secs(30), "truncate")?;
    let took = t0.elapsed();
    t.diag(format!("truncate returned after {took:?}: {exit}"));
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    ensure!(
        took >= Duration::from_millis(700),
        "truncate did not wait for lease-break-time (1 s): {took:?}"
    );
    wait_lease_state(h.dev.raw(), lease, "lost", Duration::from_secs(5))?;
    let (hit, all) = wait_event(t, h.ev.as_raw_fd(), Duration::from_secs(5), |e| {
        e.kind == abi::PL_EVENT_SCRUB_LOST_ACCESS && e.args[0] == lease
    })?;
    let Some(e) = hit else {
        fail!("no SCRUB_LOST_ACCESS for lease {lease:#x} within 5 s after it was LOST");
    };
    let npages = (LEASE_LEN / 4096) as u64;
    ensure!(
        e.ctx == ctx && e.args[1] == key && e.args[2] == npages && e.args[3] == 0,
        "SCRUB_LOST_ACCESS ctx {:#x} args {:#x?}: expected ctx {ctx:#x}, MR {key:#x}, {npages} pages",
        e.ctx,
        e.args
    );
    let lost = all
        .iter()
        .find(|x| x.kind == abi::PL_EVENT_LEASE_LOST && x.args[0] == lease);
    ensure!(
        all.iter()
            .any(|x| x.kind == abi::PL_EVENT_LEASE_BROKEN && x.args[0] == lease),
        "no LEASE_BROKEN for lease {lease:#x}"
    );
    let Some(lost) = lost else {
        fail!("no LEASE_LOST for lease {lease:#x} before SCRUB_LOST_ACCESS");
    };
    ensure!(
        lost.seq < e.seq,
        "SCRUB_LOST_ACCESS (seq {}) before LEASE_LOST (seq {})",
        e.seq,
        lost.seq
    );
    // Once per lease: later passes are counted, not announced again.
    let more = read_events(h.ev.as_raw_fd(), Duration::from_millis(300))?;
    ensure!(
        !more
            .iter()
            .any(|x| x.kind == abi::PL_EVENT_SCRUB_LOST_ACCESS && x.args[0] == lease),
        "a second SCRUB_LOST_ACCESS for lease {lease:#x}"
    );
    // The pages the file no longer owns still get canaries: read them back
    // through the device (one more lost access).
    h.local.fill_with(0, 4096, |_| 0);
    h.dev.read(h.lkey, 0, key, 0, 4096)?;
    let seed = abi::pl_scrub_seed(key);
    let n = (0..512)
        .filter(|&i| h.local.get_u64(i * 8) == seed ^ (i as u64 * 8))
        .count();
    ensure!(
        n == 512,
        "only {n} of 512 words of the LOST MR's first page are canaries"
    );
    t.diag(format!(
        "LOST MR {key:#x}: its first page (no longer the file's) holds 512 canary words, read by DMA"
    ));
    let line = lease_line(&fdinfo(h.dev.raw())?, lease).unwrap_or_default();
    t.diag(format!("fdinfo: {line}"));
    ensure!(
        line_field(&line, "state") == Some("lost") && line_field(&line, "kernel") == Some("gone"),
        "fdinfo lease line: {line}"
    );
    let tab = debugfs_table("leases")?;
    let row = tab.lines().find(|l| names_handle(l, lease)).unwrap_or("");
    t.diag(format!("debugfs leases: {row}"));
    ensure!(
        row.contains("lost"),
        "debugfs leases row for {lease:#x}: {row:?}"
    );
    // The runner records status-scrub-lost.{json,txt}: the lease's
    // lost_accesses / scrub_lost_accesses.
    sys::snapshot("scrub-lost", SNAPSHOT_WAIT);
    ensure!(
        pins_held()? == held0,
        "pins changed while the lease was LOST: {held0} -> {}",
        pins_held()?
    );
    h.dev.dereg_mr(key)?;
    ensure!(
        pins_held()? == held0 - npages as i64,
        "DEREG_MR of the LOST lease's MR did not release its pins"
    );
    h.dev.lease_release(lease)?;
    h.dev.dereg_mr(h.lkey)?;
    Ok(())
}

// ---- module fault points (docs/faults.md section 2) -------------------------------------------

pub(crate) const MODULE_PARAMS: &str = "/sys/module/pinlease/parameters";

fn param_path(name: &str) -> String {
    format!("{MODULE_PARAMS}/{name}")
}

/// A module parameter's value as the module reads it back.
fn param_get(name: &str) -> Result<i64, CaseErr> {
    let path = param_path(name);
    let v = sys::read_to_string(&path)?;
    v.trim()
        .parse()
        .map_err(|_| CaseErr::Fail(format!("{path} reads {v:?}, not an integer")))
}

/// Sets module parameters; puts back the values found on drop, so a failing
/// case leaves no fault armed for the rest of the suite.
struct FaultParams {
    saved: Vec<(String, String)>,
}

impl FaultParams {
    fn new() -> Result<FaultParams, CaseErr> {
        if !std::path::Path::new(&param_path("fault_pin_after")).exists() {
            skip!("{MODULE_PARAMS}/fault_pin_after does not exist (module without fault points)");
        }
        Ok(FaultParams { saved: Vec::new() })
    }

    fn set(&mut self, name: &str, value: i64) -> CaseResult {
        let path = param_path(name);
        if !self.saved.iter().any(|(n, _)| n == name) {
            let old = sys::read_to_string(&path)?;
            self.saved.push((name.to_string(), old.trim().to_string()));
        }
        sys::write_str(&path, &format!("{value}\n"))?;
        let back = param_get(name)?;
        ensure!(back == value, "{path}: wrote {value}, reads {back}");
        Ok(())
    }
}

impl Drop for FaultParams {
    fn drop(&mut self) {
        for (name, old) in self.saved.iter().rev() {
            let _ = sys::write_str(&param_path(name), &format!("{old}\n"));
        }
    }
}

/// The debugfs `faults` file as (key, value) pairs ("fired pin_after: 3").
fn faults_file() -> Result<Vec<(String, i64)>, CaseErr> {
    let text = debugfs_table("faults")?;
    let mut out = Vec::new();
    for l in text.lines() {
        let Some((k, v)) = l.rsplit_once(':') else {
            fail!("debugfs faults: line {l:?} is not `key: value`");
        };
        let Ok(v) = v.trim().parse::<i64>() else {
            fail!("debugfs faults: line {l:?}: value is not an integer");
        };
        out.push((k.trim().to_string(), v));
    }
    Ok(out)
}

fn fault_count(key: &str) -> Result<i64, CaseErr> {
    let all = faults_file()?;
    match all.iter().find(|(k, _)| k == key) {
        Some((_, v)) => Ok(*v),
        None => fail!("debugfs faults has no {key:?} line: {all:?}"),
    }
}

/// Kernel log lines containing `needle` among those logged since `k` opened.
fn kmsg_lines_with(k: &mut sys::Kmsg, needle: &str) -> Vec<String> {
    k.read_new()
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

const FAULT_MR_PAGES: usize = 16;

/// REG_MR of FAULT_MR_PAGES anonymous pages (long-term, access ALL).
fn reg_fault_mr(dev: &Dev, m: &Mapping) -> Result<PinleaseRegMr, SysError> {
    dev.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)
}

fn fault_pin_after_fails_reg_mr_and_unpins(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let dev = open()?;
    let m = Mapping::anon(FAULT_MR_PAGES * 4096)?;
    m.touch();
    let small = Mapping::anon(4 * 4096)?;
    let held0 = pins_held()?;
    let fired0 = fault_count("fired pin_after")?;
    let mut k = sys::Kmsg::open_at_end();
    for (n, after) in [0i64, 5, FAULT_MR_PAGES as i64 - 1].into_iter().enumerate() {
        fp.set("fault_pin_times", 1)?;
        fp.set("fault_pin_after", after)?;
        expect_errno(
            reg_fault_mr(&dev, &m),
            libc::EFAULT,
            &format!("REG_MR of {FAULT_MR_PAGES} pages with fault_pin_after={after}"),
        )?;
        let fired = fault_count("fired pin_after")?;
        ensure!(
            fired == fired0 + n as i64 + 1,
            "fired pin_after {fired} after {} faults (was {fired0})",
            n + 1
        );
        let held = pins_held()?;
        ensure!(
            held == held0,
            "fault_pin_after={after}: {} pins left behind by the failed REG_MR",
            held - held0
        );
        let logged = kmsg_lines_with(&mut k, &format!("fault injected: pin_after {after} pages"));
        ensure!(
            logged.len() == 1,
            "fault_pin_after={after}: {} kernel log lines \"fault injected: pin_after {after} pages\"",
            logged.len()
        );
        t.diag(format!("logged: {}", logged[0]));
        let left = param_get("fault_pin_times")?;
        ensure!(
            left == 0,
            "fault_pin_times reads {left} after its one REG_MR"
        );
        // The count is used up: the same REG_MR works now.
        let r = reg_fault_mr(&dev, &m)?;
        ensure!(
            r.npages as usize == FAULT_MR_PAGES,
            "REG_MR after the fault pinned {} pages",
            r.npages
        );
        dev.dereg_mr(r.key)?;
    }
    // A REG_MR with no more pages than fault_pin_after never gets there and
    // does not use up fault_pin_times.
    fp.set("fault_pin_times", 1)?;
    fp.set("fault_pin_after", 4)?;
    let r = dev.reg_mr(small.addr(), small.len() as u64, PL_ACCESS_ALL, 0)?;
    dev.dereg_mr(r.key)?;
    ensure!(
        param_get("fault_pin_times")? == 1,
        "a 4-page REG_MR under fault_pin_after=4 used up fault_pin_times"
    );
    expect_errno(
        reg_fault_mr(&dev, &m),
        libc::EFAULT,
        "the next 16-page REG_MR under fault_pin_after=4",
    )?;
    ensure!(pins_held()? == held0, "pins did not balance");
    Ok(())
}

fn fault_pin_times_counts_down(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let dev = open()?;
    let m = Mapping::anon(FAULT_MR_PAGES * 4096)?;
    let held0 = pins_held()?;
    let fired0 = fault_count("fired pin_after")?;
    fp.set("fault_pin_after", 1)?;
    fp.set("fault_pin_times", 3)?;
    for left in [2, 1, 0] {
        expect_errno(
            reg_fault_mr(&dev, &m),
            libc::EFAULT,
            "REG_MR under fault_pin_times",
        )?;
        let v = param_get("fault_pin_times")?;
        ensure!(
            v == left,
            "fault_pin_times reads {v} after a fault, expected {left}"
        );
    }
    let r = reg_fault_mr(&dev, &m)?;
    dev.dereg_mr(r.key)?;
    // -1: every REG_MR, and it stays -1.
    fp.set("fault_pin_times", -1)?;
    for _ in 0..3 {
        expect_errno(
            reg_fault_mr(&dev, &m),
            libc::EFAULT,
            "REG_MR under fault_pin_times=-1",
        )?;
    }
    let v = param_get("fault_pin_times")?;
    ensure!(v == -1, "fault_pin_times=-1 reads {v} after three faults");
    fp.set("fault_pin_after", -1)?;
    let r = reg_fault_mr(&dev, &m)?;
    dev.dereg_mr(r.key)?;
    let fired = fault_count("fired pin_after")? - fired0;
    t.diag(format!("fired pin_after +{fired}"));
    ensure!(fired == 6, "fired pin_after went up by {fired}, expected 6");
    // Racing REG_MRs take the countdown exactly: 4 threads x 8 REG_MRs
    // against fault_pin_times=10 fail exactly 10 times.
    const THREADS: usize = 4;
    const EACH: usize = 8;
    const TIMES: i64 = 10;
    fp.set("fault_pin_after", 3)?;
    fp.set("fault_pin_times", TIMES)?;
    let results: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| -> Result<usize, String> {
                    let d = Dev::open_default().map_err(|e| e.to_string())?;
                    let m = Mapping::anon(FAULT_MR_PAGES * 4096).map_err(|e| e.to_string())?;
                    let mut faults = 0;
                    for _ in 0..EACH {
                        match reg_fault_mr(&d, &m) {
                            Ok(r) => d.dereg_mr(r.key).map_err(|e| e.to_string())?,
                            Err(e) if e.errno == libc::EFAULT => faults += 1,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    Ok(faults)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut faults = 0;
    for r in results {
        match r {
            Ok(n) => faults += n as i64,
            Err(e) => fail!("racing REG_MR: {e}"),
        }
    }
    t.diag(format!(
        "{THREADS} threads x {EACH} REG_MRs, fault_pin_times={TIMES}: {faults} failed EFAULT"
    ));
    ensure!(
        faults == TIMES,
        "{faults} racing REG_MRs failed, fault_pin_times was {TIMES}"
    );
    let v = param_get("fault_pin_times")?;
    ensure!(v == 0, "fault_pin_times reads {v} after the race");
    let fired = fault_count("fired pin_after")? - fired0;
    ensure!(
        fired == 6 + TIMES,
        "fired pin_after went up by {fired}, expected {}",
        6 + TIMES
    );
    ensure!(pins_held()? == held0, "pins did not balance");
    Ok(())
}

fn fault_lease_set_fails_lease_take(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let dev = open()?;
    need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
    let ctx = dev.query()?.ctx;
    let file = TestFile::on("/mnt/xfs", "xfs", "fault-lease-set")?;
    let map = Mapping::new(&file.backing(true), LEASE_LEN, false)?;
    map.touch();
    drop(map);
    let data = std::fs::File::open(&file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", file.path)))?;
    let fired0 = fault_count("fired lease_set")?;
    fp.set("fault_lease_set", 2)?;
    for left in [1, 0] {
        expect_errno(
            dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0),
            libc::EAGAIN,
            "LEASE_TAKE under fault_lease_set",
        )?;
        let v = param_get("fault_lease_set")?;
        ensure!(v == left, "fault_lease_set reads {v}, expected {left}");
    }
    let fired = fault_count("fired lease_set")? - fired0;
    ensure!(fired == 2, "fired lease_set went up by {fired}, expected 2");
    let leases = debugfs_table("leases")?;
    ensure!(
        !leases.lines().skip(1).any(|l| names_handle(l, ctx)),
        "debugfs leases lists a lease of ctx {ctx:#x} after failed LEASE_TAKEs:\n{leases}"
    );
    let fdi = fdinfo(dev.raw())?;
    ensure!(
        fdi.lines().any(|l| l == "leases:\t0"),
        "fdinfo after failed LEASE_TAKEs: {}",
        fdi.replace('\n', " | ")
    );
    // Nothing is left on the inode either: the retry gets the lease.
    let lease = dev.lease_take(data.as_raw_fd(), abi::PL_POLICY_REVOKE, 0, 0)?;
    let leases = debugfs_table("leases")?;
    ensure!(
        leases.lines().skip(1).any(|l| names_handle(l, lease)),
        "debugfs leases does not list the retried lease {lease:#x}:\n{leases}"
    );
    t.diag(format!("retry: lease {lease:#x}"));
    dev.lease_release(lease)?;
    Ok(())
}

/// Polls debugfs contexts until `ctx` is gone; how long that took.
fn wait_context_gone(ctx: u64, timeout: Duration) -> Result<Duration, CaseErr> {
    let start = Instant::now();
    loop {
        let contexts = debugfs_table("contexts")?;
        if !contexts.lines().skip(1).any(|l| names_handle(l, ctx)) {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            fail!("ctx {ctx:#x} still in debugfs contexts {timeout:?} after close:\n{contexts}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fault_release_delay_ms_defers_context_release(t: &mut CaseCtx) -> CaseResult {
    const DELAY_MS: i64 = 1500;
    let mut fp = FaultParams::new()?;
    let held0 = pins_held()?;
    let fired0 = fault_count("fired release_delay")?;
    fp.set("fault_release_delay_ms", DELAY_MS)?;
    let dev = open()?;
    let ctx = dev.query()?.ctx;
    let m = Mapping::anon(FAULT_MR_PAGES * 4096)?;
    let r = reg_fault_mr(&dev, &m)?;
    let closed = Instant::now();
    drop(dev);
    // The close unpinned at once; only the context's release waits.
    ensure!(
        pins_held()? == held0,
        "pins of MR {:#x} held after close",
        r.key
    );
    let contexts = debugfs_table("contexts")?;
    let line = contexts
        .lines()
        .skip(1)
        .find(|l| names_handle(l, ctx))
        .map(str::to_string);
    let Some(line) = line else {
        fail!("ctx {ctx:#x} already gone from debugfs contexts right after close:\n{contexts}");
    };
    ensure!(
        line.split_whitespace().nth(3) == Some("closed"),
        "ctx {ctx:#x} during the release delay: {line:?}, expected state closed"
    );
    wait_context_gone(ctx, Duration::from_millis(DELAY_MS as u64 + 5000))?;
    let since_close = closed.elapsed();
    t.diag(format!(
        "ctx {ctx:#x} left debugfs contexts {} ms after close (delay {DELAY_MS} ms)",
        since_close.as_millis()
    ));
    ensure!(
        since_close >= Duration::from_millis(DELAY_MS as u64 - 100),
        "ctx {ctx:#x} gone {} ms after close, before the {DELAY_MS} ms delay",
        since_close.as_millis()
    );
    let fired = fault_count("fired release_delay")? - fired0;
    ensure!(
        fired == 1,
        "fired release_delay went up by {fired}, expected 1"
    );
    // Off again: the next close releases at once.
    fp.set("fault_release_delay_ms", 0)?;
    let dev = open()?;
    let ctx = dev.query()?.ctx;
    drop(dev);
    let gone = wait_context_gone(ctx, Duration::from_secs(2))?;
    t.diag(format!(
        "without the delay: gone after {} ms",
        gone.as_millis()
    ));
    ensure!(pins_held()? == held0, "pins did not balance");
    Ok(())
}

fn fault_drop_event_discards_next_events(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let a = open()?;
    need_feature(&a, abi::PL_FEATURE_EXPORT, "EXPORT")?;
    let b = open()?;
    let efd = b.event_fd()?;
    sys::set_nonblock(efd.as_raw_fd())?;
    let mx = Mapping::anon(16 * KIB)?;
    // An import whose source goes away: MR_REVOKED(SOURCE_GONE) to b.
    let revoke_import = || -> Result<u64, CaseErr> {
        let kx = a.reg_mr(mx.addr(), mx.len() as u64, PL_ACCESS_ALL, 0)?.key;
        let exp = a.export_mr(kx)?;
        let ky = b.import_mr(exp.as_raw_fd(), PL_ACCESS_ALL)?;
        drop(exp);
        a.dereg_mr(kx)?;
        Ok(ky)
    };
    let fired0 = fault_count("fired drop_event")?;
    let dropped0 = fault_count("dropped mr_revoked")?;
    fp.set("fault_drop_event", 1)?;
    let ky = revoke_import()?;
    let (hit, all) = wait_event(t, efd.as_raw_fd(), Duration::from_secs(1), |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == ky
    })?;
    ensure!(
        hit.is_none(),
        "MR_REVOKED of import {ky:#x} delivered under fault_drop_event=1 ({} events)",
        all.len()
    );
    let fired = fault_count("fired drop_event")? - fired0;
    let dropped = fault_count("dropped mr_revoked")? - dropped0;
    ensure!(
        fired == 1 && dropped == 1,
        "after one dropped MR_REVOKED: fired drop_event +{fired}, dropped mr_revoked +{dropped}"
    );
    let v = param_get("fault_drop_event")?;
    ensure!(v == 0, "fault_drop_event reads {v} after its one drop");
    // The revoked import is still the module's to free: DEREG_MR works.
    match b.dereg_mr(ky) {
        Ok(()) => t.diag(format!("DEREG_MR of the revoked import {ky:#x}: ok")),
        Err(e) => t.diag(format!("DEREG_MR of the revoked import {ky:#x}: {e}")),
    }
    // The count is used up: the next one arrives.
    let ky = revoke_import()?;
    let (hit, _) = wait_event(t, efd.as_raw_fd(), Duration::from_secs(2), |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == ky
    })?;
    ensure!(
        hit.is_some(),
        "MR_REVOKED of import {ky:#x} not delivered within 2 s with fault_drop_event=0"
    );
    let fired = fault_count("fired drop_event")? - fired0;
    ensure!(
        fired == 1,
        "fired drop_event +{fired} after a delivered event"
    );
    Ok(())
}

fn fault_params_refuse_bad_values(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let bad: &[(&str, &str)] = &[
        ("req_timeout_ms", "0"),
        ("req_timeout_ms", "-1"),
        ("req_timeout_ms", "3600001"),
        ("req_timeout_ms", "soon"),
        ("req_timeout_ms", ""),
        ("fault_pin_after", "-2"),
        ("fault_pin_times", "-2"),
        ("fault_lease_set", "-1"),
        ("fault_release_delay_ms", "-1"),
        ("fault_release_delay_ms", "60001"),
        ("fault_drop_event", "-1"),
        ("fault_drop_event", "1x"),
    ];
    for (name, v) in bad {
        let before = param_get(name)?;
        expect_errno(
            sys::write_str(&param_path(name), &format!("{v}\n")),
            libc::EINVAL,
            &format!("{name}={v:?}"),
        )?;
        let after = param_get(name)?;
        ensure!(
            after == before,
            "{name} reads {after} after the refused {v:?} (was {before})"
        );
    }
    ensure!(
        param_get("req_timeout_ms")? == 30000,
        "req_timeout_ms default is not 30000"
    );
    // The bounds themselves are accepted.
    fp.set("req_timeout_ms", 1)?;
    fp.set("req_timeout_ms", 3_600_000)?;
    fp.set("req_timeout_ms", 5000)?;
    fp.set("fault_release_delay_ms", 60000)?;
    fp.set("fault_release_delay_ms", 0)?;
    // A device that answers in time is not timed out by a short limit.
    fp.set("req_timeout_ms", 2000)?;
    let timeouts0 = device_counter("timeouts")?;
    let p = pair()?;
    p.dev.write(p.ka, 0, p.kb, 0, 4096)?;
    p.close()?;
    let timeouts = device_counter("timeouts")?;
    ensure!(
        timeouts == timeouts0,
        "timeouts {timeouts0} -> {timeouts} with req_timeout_ms=2000 and a live device"
    );
    t.diag(format!("{} bad values refused with EINVAL", bad.len()));
    Ok(())
}

/// A counter of debugfs `device` ("timeouts: 0").
fn device_counter(key: &str) -> Result<i64, CaseErr> {
    let text = debugfs_table("device")?;
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok());
    match v {
        Some(v) => Ok(v),
        None => fail!("debugfs device has no {key:?} counter:\n{text}"),
    }
}

fn fault_debugfs_file_lists_params_and_counts(t: &mut CaseCtx) -> CaseResult {
    let mut fp = FaultParams::new()?;
    let params = [
        "fault_pin_after",
        "fault_pin_times",
        "fault_lease_set",
        "fault_release_delay_ms",
        "fault_drop_event",
        "req_timeout_ms",
    ];
    let check = |all: &[(String, i64)]| -> CaseResult {
        for p in params {
            let want = param_get(p)?;
            let key = format!("param {p}");
            match all.iter().find(|(k, _)| *k == key) {
                Some((_, v)) if *v == want => {}
                Some((_, v)) => fail!("debugfs faults: {key}: {v}, the parameter reads {want}"),
                None => fail!("debugfs faults has no {key:?} line"),
            }
        }
        Ok(())
    };
    let all = faults_file()?;
    check(&all)?;
    let mut keys: Vec<String> = [
        "fired pin_after",
        "fired lease_set",
        "fired release_delay",
        "fired drop_event",
        "dropped mr_revoked",
        "dropped needs_reset",
        "dropped other",
        "device fault_injected fail",
        "device fault_injected needs_reset",
        "device fault_injected abort",
        "device fault_injected other",
        "device needs_reset",
        "detected broken_queue",
        "detected bad_tag",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.retain(|k| !all.iter().any(|(a, _)| a == k));
    ensure!(keys.is_empty(), "debugfs faults lacks {keys:?}");
    for (k, v) in &all {
        ensure!(*v >= -1, "debugfs faults: {k}: {v}");
        if !k.starts_with("param ") {
            ensure!(*v >= 0, "debugfs faults: counter {k} is {v}");
        }
    }
    // The file follows the parameters.
    fp.set("fault_pin_after", 9)?;
    fp.set("fault_pin_times", 0)?;
    fp.set("fault_drop_event", 3)?;
    fp.set("req_timeout_ms", 12345)?;
    check(&faults_file()?)?;
    drop(fp);
    let all = faults_file()?;
    check(&all)?;
    for (p, v) in [
        ("fault_pin_after", -1),
        ("fault_drop_event", 0),
        ("req_timeout_ms", 30000),
    ] {
        ensure!(param_get(p)? == v, "{p} not restored to {v}");
    }
    t.diag(format!("{} lines", all.len()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_and_plain() {
        let cases = all();
        assert!(cases.len() >= 25, "only {} cases", cases.len());
        let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
        for n in &names {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "case name {n:?}"
            );
            for bad in sys::KMSG_BAD {
                assert!(
                    !n.contains(bad),
                    "case name {n:?} would trip the kernel-log check"
                );
            }
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "duplicate case names");
    }

    #[test]
    fn handles_are_found_in_text() {
        let h = 0x0000_0003_0000_0011u64;
        assert!(names_handle("ctx 0x300000011 pid 5", h));
        assert!(names_handle("key=0x0000000300000011", h));
        assert!(names_handle("ctx=12884901905", h));
        assert!(names_handle("300000011 x", h));
        assert!(!names_handle("ctx 0x300000012", h));
        assert!(!names_handle("", h));
    }
}
