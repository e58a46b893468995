//! What the guest cases share: opening the device, errno expectations,
//! feature and environment SKIPs, test files, two-MR fixtures, fdinfo,
//! debugfs and event reading, pin counters, the module's paths. The
//! public surface the campaign (`crate::campaign`) and data-loss (dataloss.rs)
//! cases use too; layout-lease helpers are in `leases` (re-exported).

mod leases;
pub use leases::*;

use crate::dev::{format_event, parse_events, Dev, SysError, SysResult, EVENT_SIZE};
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, errno_name, Backing, Mapping};
use crate::uapi::PinleaseRegMr;
use crate::verdicts::{self};
use crate::{ensure, fail, skip};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::time::{Duration, Instant};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

/// The debugfs directory of the first (only) pinlease device.
pub const DEBUGFS_DIR: &str = "/sys/kernel/debug/pinlease/pinlease0";
/// Where the guest image installs the module.
pub const MODULE_PATH: &str = "/lib/pinlease/pinlease.ko";
/// The module's name (delete_module, /sys/module).
pub const MODULE_NAME: &str = "pinlease";
/// The module's virtio driver (`.driver.name = KBUILD_MODNAME`).
pub const DRIVER_DIR: &str = "/sys/bus/virtio/drivers/pinlease";
/// The module's parameters (fault points, require_lease, req_timeout_ms).
pub const MODULE_PARAMS: &str = "/sys/module/pinlease/parameters";
/// How long a case waits for the scrubber's canaries (the runner's default
/// period is 20 ms; a round may take longer under TCG).
pub const SCRUB_WAIT: Duration = Duration::from_secs(10);

/// Opens `/dev/pinlease0`: a new device context, or FAIL naming the error.
pub fn open() -> Result<Dev, CaseErr> {
    Dev::open_default().map_err(|e| CaseErr::Fail(e.to_string()))
}

/// Expects `r` to fail with `errno`; `what` names the operation.
pub fn expect_errno<T: std::fmt::Debug>(
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

/// Expects `r` to fail with one of `errnos`: the errno it failed with.
pub fn expect_errno_in<T: std::fmt::Debug>(
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

/// SKIP unless the device offers feature `bit` (`name` for the message).
pub fn need_feature(dev: &Dev, bit: u64, name: &str) -> CaseResult {
    let q = dev.query()?;
    if q.features & bit == 0 {
        skip!("device does not offer {name} (features {:#x})", q.features);
    }
    Ok(())
}

/// The test pattern's byte at offset `i` (not periodic in a page).
pub fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 8)) as u8 ^ 0x5a
}

/// A file for a case on the filesystem mounted at `mnt`, which must be
/// `fstype` (SKIP otherwise). Removed on drop.
pub struct TestFile {
    pub path: String,
}

impl TestFile {
    pub fn on(mnt: &str, fstype: &str, name: &str) -> Result<TestFile, CaseErr> {
        match sys::mount_at(mnt) {
            Some(m) if m.fstype == fstype => {}
            Some(m) => skip!("{mnt} is {} ({}), not {fstype}", m.fstype, m.source),
            None => skip!("{mnt} is not mounted (no {fstype} disk in this guest)"),
        }
        let path = format!("{mnt}/pinlease-{name}.dat");
        let _ = std::fs::remove_file(&path);
        Ok(TestFile { path })
    }

    pub fn backing(&self, shared: bool) -> Backing {
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

/// The running kernel for diagnostics: `6.12` (or uname's release when it
/// does not parse).
pub fn kname() -> String {
    verdicts::running().map_or_else(verdicts::uname_release, |v| v.to_string())
}

/// The running kernel's version (uname(2)), or FAIL.
pub fn running_kver() -> Result<verdicts::Kver, CaseErr> {
    match verdicts::running() {
        Some(v) => Ok(v),
        None => fail!(
            "uname release {:?} has no MAJOR.MINOR: no verdict table entry",
            verdicts::uname_release()
        ),
    }
}

/// Where pin cases mount their own tmpfs.
pub const TMPFS_DIR: &str = "/mnt/pinlease-tmpfs";

/// SKIP unless the guest reserved huge pages.
pub fn need_hugepages() -> CaseResult {
    let n: u64 = sys::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if n == 0 {
        skip!("/proc/sys/vm/nr_hugepages is 0");
    }
    Ok(())
}

/// SKIP unless /mnt/dax is an FS-DAX mount: its filesystem type.
fn need_fsdax() -> Result<String, CaseErr> {
    match sys::mount_at("/mnt/dax") {
        Some(m) if m.has_dax() => Ok(m.fstype),
        Some(m) => skip!("/mnt/dax is mounted without dax ({})", m.options.join(",")),
        None => skip!("/mnt/dax is not mounted (no pmem device)"),
    }
}

/// A file of `len` bytes on /mnt/dax (an FS-DAX mount) that statx says is
/// DAX, named after `name`; SKIP otherwise.
pub fn dax_file(t: &mut CaseCtx, name: &str, len: usize) -> Result<TestFile, CaseErr> {
    let fstype = need_fsdax()?;
    let f = TestFile::on("/mnt/dax", &fstype, name)?;
    // Create the file, then make sure it really is DAX.
    drop(Mapping::new(&f.backing(true), len, false)?);
    match sys::file_is_dax(&f.path) {
        Some(true) => {}
        Some(false) => skip!("{} is not a DAX file (STATX_ATTR_DAX clear)", f.path),
        None => t.diag("statx does not report STATX_ATTR_DAX; assuming DAX from the mount"),
    }
    Ok(f)
}

/// Two 64 KiB anonymous MRs (access ALL) in one context, a filled with
/// `pattern`, b with 0xEE.
pub struct Pair {
    pub dev: Dev,
    pub a: Mapping,
    pub b: Mapping,
    pub ka: u64,
    pub kb: u64,
}

pub const PAIR_LEN: usize = 64 * KIB;

pub fn pair() -> Result<Pair, CaseErr> {
    let dev = open()?;
    let a = Mapping::anon(PAIR_LEN)?;
    let b = Mapping::anon(PAIR_LEN)?;
    a.fill_with(0, PAIR_LEN, pattern);
    b.fill_with(0, PAIR_LEN, |_| 0xee);
    let ka = dev.reg_mr(a.addr(), PAIR_LEN as u64, PL_ACCESS_ALL, 0)?.key;
    let kb = dev.reg_mr(b.addr(), PAIR_LEN as u64, PL_ACCESS_ALL, 0)?.key;
    Ok(Pair { dev, a, b, ka, kb })
}

/// `open()` of a device that offers feature `bit` (named `name`); skips
/// otherwise.
pub fn open_needing(bit: u64, name: &str) -> Result<Dev, CaseErr> {
    let dev = open()?;
    need_feature(&dev, bit, name)?;
    Ok(dev)
}

/// `pair()` on a device that offers feature `bit` (named `name`); skips
/// otherwise.
pub fn pair_needing(bit: u64, name: &str) -> Result<Pair, CaseErr> {
    let p = pair()?;
    need_feature(&p.dev, bit, name)?;
    Ok(p)
}

impl Pair {
    /// Deregisters both MRs (errors name the key).
    pub fn close(self) -> CaseResult {
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

/// The fdinfo text of this process's fd `fd`.
pub fn fdinfo(fd: i32) -> Result<String, CaseErr> {
    Ok(sys::read_to_string(&format!("/proc/self/fdinfo/{fd}"))?)
}

/// The device's debugfs file `name`; SKIP without debugfs.
pub fn debugfs_table(name: &str) -> Result<String, CaseErr> {
    if sys::mount_at("/sys/kernel/debug").is_none() {
        skip!("debugfs is not mounted at /sys/kernel/debug");
    }
    Ok(sys::read_to_string(&format!("{DEBUGFS_DIR}/{name}"))?)
}

/// Polls an event fd for up to `timeout` and reads what is there.
pub fn read_events(fd: i32, timeout: Duration) -> Result<Vec<abi::PlEvent>, CaseErr> {
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

/// `wait_event` for the MR_REVOKED of MR `key`: (that event if it came
/// within `timeout`, every event read).
pub fn wait_mr_revoked(
    t: &mut CaseCtx,
    fd: i32,
    key: u64,
    timeout: Duration,
) -> Result<(Option<abi::PlEvent>, Vec<abi::PlEvent>), CaseErr> {
    wait_event(t, fd, timeout, |e| {
        e.kind == abi::PL_EVENT_MR_REVOKED && e.args[0] == key
    })
}

/// Reads events until one matches `pred` or `timeout` passes; all read.
pub fn wait_event(
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

/// Pins held now (acquired - released).
pub fn pins_held() -> Result<i64, CaseErr> {
    let (a, r) = sys::pin_counters()?;
    Ok(a as i64 - r as i64)
}

/// Registers the two halves of `m` as two MRs (read-write, long-term).
pub fn reg_halves(dev: &Dev, m: &Mapping) -> SysResult<(PinleaseRegMr, PinleaseRegMr)> {
    let half = (m.len() / 2) as u64;
    let lo = dev.reg_mr(m.addr(), half, PL_ACCESS_ALL, 0)?;
    let hi = dev.reg_mr(m.addr() + half, half, PL_ACCESS_ALL, 0)?;
    Ok((lo, hi))
}

/// rmmod of the module, retried every `every` for up to `within` while it
/// answers EAGAIN (EWOULDBLOCK) or EBUSY: a module still initialising,
/// going, or briefly referenced. Any other answer fails, with the refcnt.
pub fn delete_module_retrying(within: Duration, every: Duration) -> CaseResult {
    let start = Instant::now();
    loop {
        match sys::delete_module(MODULE_NAME) {
            Ok(()) => return Ok(()),
            Err(e)
                if (e.errno == libc::EBUSY || e.errno == libc::EAGAIN)
                    && start.elapsed() < within =>
            {
                std::thread::sleep(every);
            }
            Err(e) => fail!(
                "{e} (refcnt {})",
                sys::read_to_string(&format!("/sys/module/{MODULE_NAME}/refcnt"))
                    .unwrap_or_default()
                    .trim()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
