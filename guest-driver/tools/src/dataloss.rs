//! The seeds' data loss, live: a long-term pinned shared mapping of a file,
//! the file truncated or hole-punched under it, then the device WRITEs
//! into the MR. The bytes go to pages the file no longer owns.
//!
//! Each case maps a file (memfd, a hugetlbfs memfd, or an XFS file) and
//! registers two long-term MRs on it: a data MR the device WRITEs into
//! after the cut, and a scrub MR (`PINLEASE_REG_SCRUB`) into which the
//! daemon's scrubber keeps writing canaries (docs/abi.md §5.9.1). After the
//! cut and the WRITE the case counts where the bytes went:
//!
//! - in the file: the file read back with pread(2) (the device's words at
//!   their offsets; the scrubber's canaries found by stray.rs's scan);
//! - in orphaned pages: the MRs read back by the device (DMA READ into a
//!   local MR): the device's words, and the canaries the scan finds there;
//! - the file's pages now (pagemap of a fresh mapping) against the MR's
//!   pages before the cut: none in common.
//!
//! and prints one machine-readable line,
//! `dataloss SUBJECT written=N in_file=N orphaned=N canaries_orphaned=N
//! canaries_in_file=N mr_pages_in_file=N`, plus the same in words.
//!
//! Where the verdict table (verdicts.rs) says the kernel refuses the
//! long-term pin (XFS on 6.5 and later: EFAULT), the case SKIPs with the
//! reason; an answer other than the table's FAILs.

use crate::cases::helpers::{
    expect_errno, lease_state, lease_whole_file, need_feature, need_hugepages, open, pins_held,
    reap_breaker, running_kver, spawn_breaker, wait_event, wait_lease_state, BreakTime, Breaker,
    TestFile, KIB, SCRUB_WAIT, SNAPSHOT_WAIT,
};
use crate::dev::{Dev, SysError};
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::stray;
use crate::sys::{self, Backing, Exit, Mapping};
use crate::uapi::*;
use crate::verdicts::{self, Expect};
use crate::{case_fns, ensure, fail, skip};
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Each MR: 8 pages.
const MR_LEN: usize = 32 * KIB;
const PAGE: usize = 4096;

/// The word the device writes at MR offset `o` ("DEVWROTE" ^ offset):
/// never zero, never a canary, never the file's own content.
pub fn device_word(o: usize) -> u64 {
    u64::from_le_bytes(*b"DEVWROTE") ^ o as u64
}

/// The device's word of a second WRITE ("DEVWROT2" ^ offset).
pub fn device_word2(o: usize) -> u64 {
    u64::from_le_bytes(*b"DEVWROT2") ^ o as u64
}

/// Bytes of `data` (from file offset 0, the MR at offset 0) holding the
/// second WRITE's word at their offset.
fn device2_bytes_in(data: &[u8]) -> usize {
    data.chunks_exact(8)
        .enumerate()
        .filter(|(i, c)| {
            8 * i < MR_LEN && u64::from_le_bytes((*c).try_into().unwrap()) == device_word2(8 * i)
        })
        .count()
        * 8
}

/// Bytes of `data` (starting at file offset `base`) that hold the device's
/// word for MR offset `file offset - mr_off`, counted in whole words.
pub fn device_bytes_in(data: &[u8], base: usize, mr_off: usize) -> usize {
    let mut n = 0;
    for (i, c) in data.chunks_exact(8).enumerate() {
        let off = base + 8 * i;
        if off < mr_off || off >= mr_off + MR_LEN {
            continue;
        }
        if u64::from_le_bytes(c.try_into().unwrap()) == device_word(off - mr_off) {
            n += 8;
        }
    }
    n
}

/// Canary words stray.rs's scanner finds in `data`.
pub fn canaries_in(data: &[u8]) -> usize {
    let n = data.len() / 8;
    stray::scan(
        |i| u64::from_le_bytes(data[8 * i..8 * i + 8].try_into().unwrap()),
        n,
        0,
    )
    .canaries
}

/// What is cut out of the file under the MRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// ftruncate/truncate to 0.
    Truncate,
    /// fallocate(PUNCH_HOLE | KEEP_SIZE) over the whole file.
    PunchHole,
}

/// Which file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// memfd_create(): shmem, no layout leases at all.
    Memfd,
    /// memfd_create(MFD_HUGETLB): hugetlbfs, no layout leases at all.
    Hugetlbfs,
    /// A file on /mnt/xfs (layout leases: see `Lease`).
    Xfs,
}

impl Subject {
    fn row(self) -> &'static str {
        match self {
            Subject::Memfd => "memfd-shared-rw",
            Subject::Hugetlbfs => "hugetlbfs-shared-rw",
            Subject::Xfs => "xfs-shared-rw",
        }
    }

    /// File length and where the two MRs start in it: memfd/XFS: one
    /// 64 KiB file, data MR pages 0-7, scrub MR pages 8-15; hugetlbfs: two
    /// 2 MiB pages, each MR at the start of one.
    fn layout(self) -> (usize, usize, usize) {
        match self {
            Subject::Memfd | Subject::Xfs => (2 * MR_LEN, 0, MR_LEN),
            Subject::Hugetlbfs => (2 * sys::HUGE_2M, 0, sys::HUGE_2M),
        }
    }
}

/// Layout lease on the XFS file, taken by the device context before the
/// MRs are registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    None,
    Revoke,
    Timeout,
}

/// The file under the MRs.
struct Target {
    map: Mapping,
    /// For XFS: the file (removed on drop); memfds need none.
    file: Option<TestFile>,
}

impl Target {
    fn new(subject: Subject, name: &str) -> Result<Target, CaseErr> {
        let (len, _, _) = subject.layout();
        let (map, file) = match subject {
            Subject::Memfd => (Mapping::new(&Backing::Memfd, len, false)?, None),
            Subject::Hugetlbfs => {
                need_hugepages()?;
                match Mapping::new(&Backing::MemfdHugetlb { shared: true }, len, false) {
                    Ok(m) => (m, None),
                    Err(e) if e.errno == libc::ENOMEM => skip!("no free huge pages: {e}"),
                    Err(e) => return Err(e.into()),
                }
            }
            Subject::Xfs => {
                let f = TestFile::on("/mnt/xfs", "xfs", name)?;
                (Mapping::new(&f.backing(true), len, false)?, Some(f))
            }
        };
        // The file's own content, written through the mapping (page_mkwrite
        // for XFS): "FILEDATA" ^ offset, so no device word matches it.
        let base = u64::from_le_bytes(*b"FILEDATA");
        for o in (0..len).step_by(8) {
            map.set_u64(o, base ^ o as u64);
        }
        Ok(Target { map, file })
    }

    /// A descriptor of the file, for pread/ftruncate/fallocate.
    fn fd(&self) -> Result<FileFd, CaseErr> {
        match &self.file {
            Some(f) => {
                let h = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&f.path)
                    .map_err(|e| CaseErr::Fail(format!("open {}: {e}", f.path)))?;
                Ok(FileFd::Owned(h))
            }
            None => match self.map.fd() {
                Some(fd) => Ok(FileFd::Borrowed(fd)),
                None => fail!("memfd mapping without a descriptor"),
            },
        }
    }
}

enum FileFd {
    Owned(std::fs::File),
    Borrowed(RawFd),
}

impl FileFd {
    fn raw(&self) -> RawFd {
        match self {
            FileFd::Owned(f) => f.as_raw_fd(),
            FileFd::Borrowed(fd) => *fd,
        }
    }
}

fn fsize(fd: RawFd) -> Result<u64, CaseErr> {
    // SAFETY: fstat into a zeroed buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(SysError::last("fstat").into());
    }
    Ok(st.st_size as u64)
}

/// pread(2) of up to `len` bytes from offset 0 (fewer past EOF).
fn read_file(fd: RawFd, len: usize) -> Result<Vec<u8>, CaseErr> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        // SAFETY: reading into a live buffer.
        let n = unsafe {
            libc::pread(
                fd,
                buf[done..].as_mut_ptr().cast(),
                len - done,
                done as libc::off_t,
            )
        };
        if n < 0 {
            return Err(SysError::last(format!("pread({len} bytes at {done})")).into());
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    buf.truncate(done);
    Ok(buf)
}

/// Cuts in this process (memfds, where nothing can block).
fn cut_here(fd: RawFd, cut: Cut, len: usize) -> Result<(), CaseErr> {
    // SAFETY: ftruncate/fallocate on an open descriptor.
    let rc = unsafe {
        match cut {
            Cut::Truncate => libc::ftruncate(fd, 0),
            Cut::PunchHole => libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                len as libc::off_t,
            ),
        }
    };
    if rc < 0 {
        return Err(SysError::last(format!("{cut:?} of the file")).into());
    }
    Ok(())
}

/// Polls `m[off..off + len]` until every word is a canary of MR `key` at
/// its MR offset: how long it took, or the count seen last.
fn wait_scrubbed(m: &Mapping, off: usize, key: u64) -> Result<Duration, usize> {
    let seed = abi::pl_scrub_seed(key);
    let t0 = Instant::now();
    loop {
        let n = (0..MR_LEN / 8)
            .filter(|&i| m.get_u64(off + 8 * i) == seed ^ (8 * i) as u64)
            .count();
        if n == MR_LEN / 8 {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= SCRUB_WAIT {
            return Err(n);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A local anonymous MR for the device to WRITE from or READ into.
struct Local {
    map: Mapping,
    key: u64,
}

fn local(dev: &Dev, fill: impl Fn(usize) -> u64) -> Result<Local, CaseErr> {
    let map = Mapping::anon(MR_LEN)?;
    for o in (0..MR_LEN).step_by(8) {
        map.set_u64(o, fill(o));
    }
    let key = dev.reg_mr(map.addr(), MR_LEN as u64, PL_ACCESS_ALL, 0)?.key;
    Ok(Local { map, key })
}

/// What the case measured.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loss {
    /// Bytes the device WROTE into the data MR after the cut (0: refused).
    pub written: usize,
    /// Of those, bytes the file holds now.
    pub in_file: usize,
    /// Bytes of the device's words in the data MR's pages, READ back by the
    /// device: pages the file no longer owns.
    pub orphaned: usize,
    /// Canary words in the scrub MR's pages (READ back by the device).
    pub canaries_orphaned: usize,
    /// Canary words in the file read back.
    pub canaries_in_file: usize,
    /// The file's pages now that are the MRs' pinned pages.
    pub mr_pages_in_file: usize,
}

impl Loss {
    /// The machine-readable diagnostic.
    pub fn line(&self, subject: &str) -> String {
        format!(
            "dataloss {subject} written={} in_file={} orphaned={} canaries_orphaned={} \
             canaries_in_file={} mr_pages_in_file={}",
            self.written,
            self.in_file,
            self.orphaned,
            self.canaries_orphaned,
            self.canaries_in_file,
            self.mr_pages_in_file
        )
    }
}

/// The `dataloss` line's SUBJECT: `memfd-truncate`, `xfs-punch-hole-timeout`.
pub fn subject_id(subject: Subject, cut: Cut, lease: Lease) -> String {
    let s = match subject {
        Subject::Memfd => "memfd",
        Subject::Hugetlbfs => "hugetlbfs",
        Subject::Xfs => "xfs",
    };
    let c = match cut {
        Cut::Truncate => "truncate",
        Cut::PunchHole => "punch-hole",
    };
    let l = match lease {
        Lease::None => "",
        Lease::Revoke => "-revoke",
        Lease::Timeout => "-timeout",
    };
    format!("{s}-{c}{l}")
}

fn loss(t: &mut CaseCtx, subject: Subject, cut: Cut, lease: Lease) -> CaseResult {
    let id = subject_id(subject, cut, lease);
    let kver = running_kver()?;
    let row = verdicts::row(subject.row());
    let (flen, data_off, scrub_off) = subject.layout();
    let target = Target::new(subject, &format!("dataloss-{id}"))?;
    let map = &target.map;
    let dev = open()?;
    let mut ev = None;
    let mut lease_h = 0;
    let _bt = if lease == Lease::Timeout {
        Some(BreakTime::set(1)?)
    } else {
        None
    };
    if lease != Lease::None {
        need_feature(&dev, abi::PL_FEATURE_LEASES, "LEASES")?;
        let e = dev.event_fd()?;
        sys::set_nonblock(e.as_raw_fd())?;
        ev = Some(e);
        let path = &target.file.as_ref().expect("leases only on XFS").path;
        let policy = match lease {
            Lease::Revoke => abi::PL_POLICY_REVOKE,
            _ => abi::PL_POLICY_TIMEOUT,
        };
        lease_h = lease_whole_file(&dev, path, policy)?;
        t.diag(format!(
            "{path}: lease {lease_h:#x} policy {policy} on the whole file"
        ));
    }
    // The data MR: long-term (flags 0), as an RDMA driver registers.
    let (a0, r0) = sys::pin_counters()?;
    let res = dev.reg_mr(
        map.addr() + data_off as u64,
        MR_LEN as u64,
        PL_ACCESS_ALL,
        0,
    );
    let (a1, r1) = sys::pin_counters()?;
    let pins = format!(" (pins +{}/-{})", a1 - a0, r1 - r0);
    let data = long_term_mr(t, res, &map.backing, row, kver, &pins, || {
        if lease_h != 0 {
            dev.lease_release(lease_h)?;
        }
        Ok(())
    })?;
    let scrub = dev.reg_mr(
        map.addr() + scrub_off as u64,
        MR_LEN as u64,
        PL_ACCESS_ALL,
        PINLEASE_REG_SCRUB,
    )?;
    if lease != Lease::None {
        ensure!(
            data.lease == lease_h && scrub.lease == lease_h,
            "MRs {:#x}/{:#x} under leases {:#x}/{:#x}, expected {lease_h:#x}",
            data.key,
            scrub.key,
            data.lease,
            scrub.lease
        );
    }
    t.diag(format!(
        "data MR {:#x} at file offset {data_off:#x}, scrub MR {:#x} at {scrub_off:#x}, {} pages each, pinned long-term",
        data.key, scrub.key, data.npages
    ));
    let scrubbing = match wait_scrubbed(map, scrub_off, scrub.key) {
        Ok(took) => {
            t.diag(format!(
                "the scrubber filled scrub MR {:#x} with canaries ({took:?}): they are the file's pages now",
                scrub.key
            ));
            true
        }
        Err(0) => {
            t.diag(format!(
                "no canary in scrub MR {:#x} within {SCRUB_WAIT:?}: the daemon's scrubber is off \
                 (guest-driver/vm/run --scrub-period-ms 0?); canaries not counted",
                scrub.key
            ));
            false
        }
        Err(n) => fail!(
            "only {n} of {} words of scrub MR {:#x} are canaries after {SCRUB_WAIT:?}",
            MR_LEN / 8,
            scrub.key
        ),
    };
    // The MRs' pages before the cut.
    let mut mr_pfns = std::collections::HashSet::new();
    for off in [data_off, scrub_off] {
        for p in sys::pagemap_pfns(map.addr() + off as u64, MR_LEN / PAGE)? {
            ensure!(p != 0, "pagemap: an MR page is not present (not root?)");
            mr_pfns.insert(p);
        }
    }
    let held0 = pins_held()?;

    // The cut. XFS: from a child (under a lease it waits); memfd: here.
    let t0 = Instant::now();
    match &target.file {
        Some(f) => {
            let how = match cut {
                Cut::Truncate => Breaker::Truncate,
                Cut::PunchHole => Breaker::PunchHole,
            };
            let pid = spawn_breaker(how, &f.path)?;
            let exit = reap_breaker(pid, Duration::from_secs(30), &format!("{cut:?}"))?;
            ensure!(exit == Exit::Code(0), "{cut:?} child: {exit}");
        }
        None => {
            let fd = target.fd()?;
            cut_here(fd.raw(), cut, flen)?;
        }
    }
    let took = t0.elapsed();
    t.diag(format!("{cut:?} of the whole file returned after {took:?}"));

    // The lease's side.
    if let Some(e) = &ev {
        match lease {
            Lease::Revoke => {
                let mut all = Vec::new();
                let t1 = Instant::now();
                let revoked = |all: &Vec<abi::PlEvent>, k: u64| {
                    all.iter().any(|x: &abi::PlEvent| {
                        x.kind == abi::PL_EVENT_MR_REVOKED && x.args[0] == k
                    })
                };
                while !(revoked(&all, data.key) && revoked(&all, scrub.key))
                    && t1.elapsed() < Duration::from_secs(5)
                {
                    let (_, evs) = wait_event(t, e.as_raw_fd(), Duration::from_millis(500), |x| {
                        x.kind == abi::PL_EVENT_MR_REVOKED
                    })?;
                    all.extend(evs);
                }
                for k in [data.key, scrub.key] {
                    ensure!(
                        all.iter().any(|x| x.kind == abi::PL_EVENT_MR_REVOKED
                            && x.args[0] == k
                            && x.args[1] == abi::PL_REVOKE_LEASE_BREAK),
                        "no MR_REVOKED(LEASE_BREAK) for MR {k:#x} after the {cut:?}"
                    );
                }
                let held1 = pins_held()?;
                t.diag(format!(
                    "both MRs revoked before the {cut:?} went on: pins {held0} -> {held1}"
                ));
                ensure!(
                    held0 - held1 == (2 * MR_LEN / PAGE) as i64,
                    "the break released {} pins, expected {}",
                    held0 - held1,
                    2 * MR_LEN / PAGE
                );
            }
            Lease::Timeout => {
                ensure!(
                    took >= Duration::from_millis(700),
                    "{cut:?} did not wait for lease-break-time (1 s): {took:?}"
                );
                wait_lease_state(dev.raw(), lease_h, "lost", Duration::from_secs(5))?;
                let st = lease_state(dev.raw(), lease_h)?;
                t.diag(format!(
                    "lease {lease_h:#x} {} after lease-break-time: the kernel removed it, the MRs stay pinned (pins {held0} -> {})",
                    st.as_deref().unwrap_or("gone"),
                    pins_held()?
                ));
                ensure!(
                    pins_held()? == held0,
                    "pins changed while the lease timed out"
                );
            }
            Lease::None => {}
        }
    }

    // The device WRITEs into the data MR.
    let src = local(&dev, device_word)?;
    let wr = dev.write(src.key, 0, data.key, 0, MR_LEN as u64);
    let written = match (&wr, lease) {
        (Ok(()), Lease::Revoke) => {
            fail!("device WRITE into the revoked MR {:#x} succeeded", data.key)
        }
        (Err(_), Lease::Revoke) => {
            expect_errno(wr, libc::ECANCELED, "device WRITE into the revoked MR")?;
            t.diag(format!(
                "device WRITE into revoked MR {:#x}: ECANCELED (nothing written)",
                data.key
            ));
            0
        }
        (Ok(()), _) => MR_LEN,
        (Err(e), _) => fail!(
            "device WRITE into MR {:#x} after the {cut:?}: {e}",
            data.key
        ),
    };
    // A few scrub periods (20 ms in suite runs) over the orphaned pages.
    std::thread::sleep(Duration::from_millis(200));
    if lease == Lease::Timeout {
        // The device's table: lease lost, its accesses counted.
        sys::snapshot(&format!("dataloss-{id}"), SNAPSHOT_WAIT);
    }

    // Where the bytes are.
    let fd = target.fd()?;
    let size = fsize(fd.raw())?;
    let content = read_file(fd.raw(), flen)?;
    let mut l = Loss {
        written,
        in_file: device_bytes_in(&content, 0, data_off),
        canaries_in_file: canaries_in(&content),
        ..Loss::default()
    };
    let dst = local(&dev, |_| 0)?;
    let canary_dst = local(&dev, |_| 0)?;
    let reads = (
        dev.read(dst.key, 0, data.key, 0, MR_LEN as u64),
        dev.read(canary_dst.key, 0, scrub.key, 0, MR_LEN as u64),
    );
    match (reads, lease) {
        ((Ok(()), Ok(())), Lease::Revoke) => fail!("device READ of the revoked MRs succeeded"),
        ((r1, r2), Lease::Revoke) => {
            expect_errno(r1, libc::ECANCELED, "device READ of the revoked data MR")?;
            expect_errno(r2, libc::ECANCELED, "device READ of the revoked scrub MR")?;
        }
        ((r1, r2), _) => {
            r1?;
            r2?;
            let b = dst.map.bytes(0, MR_LEN);
            l.orphaned = device_bytes_in(&b, 0, 0);
            l.canaries_orphaned = stray::scan_mapping(&canary_dst.map, 0).canaries;
        }
    }
    // The file's pages now, against the MRs' pinned pages.
    let file_pages = if size == 0 {
        0
    } else {
        let m = Mapping::of_fd(fd.raw(), size as usize, true)?;
        let mut sum = 0u64;
        for o in (0..m.len()).step_by(PAGE) {
            sum = sum.wrapping_add(u64::from(m.get_u8(o)));
        }
        std::hint::black_box(sum);
        let pfns = sys::pagemap_pfns(m.addr(), m.len() / PAGE)?;
        l.mr_pages_in_file = pfns.iter().filter(|p| mr_pfns.contains(p)).count();
        pfns.iter().filter(|&&p| p != 0).count()
    };
    t.diag(l.line(&id));
    t.diag(format!(
        "{kver}: the device wrote {} bytes into MR {:#x} after the {cut:?}; the file ({size} bytes now) \
         holds {} of them; {} are in the MR's {} pinned pages, which the file no longer owns \
         (device READ); the scrubber's canaries: {} words in the scrub MR's orphaned pages, {} in the file; \
         of the file's {file_pages} resident pages, {} are the MRs' pages",
        l.written,
        data.key,
        l.in_file,
        l.orphaned,
        MR_LEN / PAGE,
        l.canaries_orphaned,
        l.canaries_in_file,
        l.mr_pages_in_file
    ));

    // The verdict on the loss.
    ensure!(
        l.in_file == 0,
        "{} of the device's bytes are in the file after the {cut:?}",
        l.in_file
    );
    ensure!(
        l.canaries_in_file == 0,
        "{} canary words in the file after the {cut:?}",
        l.canaries_in_file
    );
    ensure!(
        l.mr_pages_in_file == 0,
        "{} of the file's pages are still the MRs' pages",
        l.mr_pages_in_file
    );
    match cut {
        Cut::Truncate => ensure!(size == 0, "file size {size} after the truncate"),
        Cut::PunchHole => ensure!(
            size == flen as u64 && content.iter().all(|&b| b == 0),
            "after the hole punch: size {size}, expected {flen} bytes of zeros"
        ),
    }
    if lease == Lease::Revoke {
        t.diag(format!(
            "nothing lost: the revoke policy unpinned both MRs before the {cut:?} went on, the device's WRITE failed"
        ));
    } else {
        ensure!(
            l.written == MR_LEN && l.orphaned == MR_LEN,
            "the device wrote {} bytes, {} found in the MR's pages: expected {MR_LEN} and {MR_LEN}",
            l.written,
            l.orphaned
        );
        if scrubbing {
            ensure!(
                l.canaries_orphaned == MR_LEN / 8,
                "{} canary words in the scrub MR's pages, expected {}",
                l.canaries_orphaned,
                MR_LEN / 8
            );
        }
        t.diag(format!(
            "lost: {} bytes the device wrote went to pages the file no longer owns{}",
            l.orphaned,
            if lease == Lease::Timeout {
                " (lease LOST: the kernel timed it out, the pins stayed)"
            } else {
                " (no lease: nothing told the MR's owner)"
            }
        ));
    }

    // Teardown: both MRs unpinned, lease released, local MRs gone.
    dev.dereg_mr(data.key)?;
    dev.dereg_mr(scrub.key)?;
    if lease_h != 0 {
        dev.lease_release(lease_h)?;
    }
    for k in [src.key, dst.key, canary_dst.key] {
        dev.dereg_mr(k)?;
    }
    let held = pins_held()?;
    ensure!(
        held == held0 - (2 * MR_LEN / PAGE) as i64,
        "pins held {held} after DEREG_MR (were {held0} with both MRs pinned)"
    );
    drop(fd);
    drop(dev);
    drop(target);
    Ok(())
}

case_fns! {
    pub(crate) fn dataloss_memfd_truncate => loss(Subject::Memfd, Cut::Truncate, Lease::None);
    pub(crate) fn dataloss_memfd_punch_hole => loss(Subject::Memfd, Cut::PunchHole, Lease::None);
    pub(crate) fn dataloss_hugetlbfs_truncate =>
        loss(Subject::Hugetlbfs, Cut::Truncate, Lease::None);
    pub(crate) fn dataloss_hugetlbfs_punch_hole =>
        loss(Subject::Hugetlbfs, Cut::PunchHole, Lease::None);
    pub(crate) fn dataloss_xfs_truncate_no_lease => loss(Subject::Xfs, Cut::Truncate, Lease::None);
    pub(crate) fn dataloss_xfs_punch_hole_no_lease =>
        loss(Subject::Xfs, Cut::PunchHole, Lease::None);
    pub(crate) fn dataloss_xfs_truncate_timeout_lease =>
        loss(Subject::Xfs, Cut::Truncate, Lease::Timeout);
    pub(crate) fn dataloss_xfs_truncate_revoke_lease =>
        loss(Subject::Xfs, Cut::Truncate, Lease::Revoke);
}

/// The long-term REG_MR's answer `res` against the verdict table's for
/// `row` on `kver` (diagnosed with `detail`): another answer fails; the
/// refusal the table expects skips, after `before_skip` undoes the set-up:
/// no loss possible. Else the MR.
fn long_term_mr(
    t: &mut CaseCtx,
    res: Result<PinleaseRegMr, SysError>,
    backing: &Backing,
    row: &verdicts::Row,
    kver: verdicts::Kver,
    detail: &str,
    before_skip: impl FnOnce() -> CaseResult,
) -> Result<PinleaseRegMr, CaseErr> {
    let want = row.expected(kver);
    let got = Expect::of(res.as_ref().map(|_| ()).map_err(|e| e.errno));
    t.diag(format!(
        "long-term REG_MR of {backing} ({}): {} expected {} on {kver}{detail}",
        row.id,
        got.word(),
        want.word()
    ));
    ensure!(
        got == want,
        "{} on {kver}: the long-term REG_MR was {}, but the verdict table expects {} ({})",
        row.id,
        got.word(),
        want.word(),
        row.rule
    );
    if let Expect::Errno(e) = want {
        expect_errno(res, e, "long-term REG_MR")?;
        before_skip()?;
        skip!(
            "{kver} refuses the long-term pin ({}, {}): no loss possible",
            got.word(),
            row.source
        );
    }
    Ok(res?)
}

/// `O_DIRECT` read of up to `len` bytes of `path` from offset 0: what the
/// disk holds, past the page cache.
fn read_direct(path: &str, len: usize) -> Result<Vec<u8>, CaseErr> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| CaseErr::Fail(format!("open {path} O_DIRECT: {e}")))?;
    // Page-aligned buffer: an anonymous mapping.
    let buf = Mapping::anon(len)?;
    // SAFETY: reading into a live mapping of `len` bytes.
    let n = unsafe { libc::pread(f.as_raw_fd(), buf.addr() as *mut libc::c_void, len, 0) };
    if n < 0 {
        return Err(SysError::last(format!("pread O_DIRECT {path}")).into());
    }
    Ok(buf.bytes(0, n as usize))
}

fn fsync(fd: RawFd, what: &str) -> CaseResult {
    // SAFETY: fsync on an open descriptor.
    if unsafe { libc::fsync(fd) } < 0 {
        return Err(SysError::last(format!("fsync {what}")).into());
    }
    Ok(())
}

/// The writeback side on ext4 (opt-in: runs only when named): a long-term
/// pinned shared ext4 mapping, written back clean; the device WRITEs into
/// the pinned pages (no fault, no page_mkwrite: the kernel does not know);
/// the file is truncated; DEREG_MR unpins with
/// `unpin_user_pages_dirty_lock()`, dirtying pages the file no longer
/// owns; then fsync and sync. Prints where the device's bytes were at each
/// step (page cache, disk) and what the kernel said.
pub(crate) fn dataloss_ext4_writeback_truncate(t: &mut CaseCtx) -> CaseResult {
    let kver = running_kver()?;
    let row = verdicts::row("ext4-shared-rw");
    let f = TestFile::on("/mnt/ext4", "ext4", "dataloss-ext4-writeback")?;
    let flen = 2 * MR_LEN;
    let map = Mapping::new(&f.backing(true), flen, false)?;
    let base = u64::from_le_bytes(*b"FILEDATA");
    for o in (0..flen).step_by(8) {
        map.set_u64(o, base ^ o as u64);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", f.path)))?;
    let fd = file.as_raw_fd();
    fsync(fd, &f.path)?;
    let dev = open()?;
    let res = dev.reg_mr(map.addr(), MR_LEN as u64, PL_ACCESS_ALL, 0);
    let key = long_term_mr(t, res, &map.backing, row, kver, "", || Ok(()))?.key;
    // 1. The pin's write fault (FOLL_WRITE on a clean page: page_mkwrite)
    //    left the pages dirty: the device's first WRITE reaches the disk.
    let src = local(&dev, device_word)?;
    dev.write(src.key, 0, key, 0, MR_LEN as u64)?;
    fsync(fd, &f.path)?;
    let disk1 = device_bytes_in(&read_direct(&f.path, flen)?, 0, 0);
    // 2. Written back, the pages are clean; the device's second WRITE
    //    dirties nothing the kernel can see.
    let src2 = local(&dev, device_word2)?;
    dev.write(src2.key, 0, key, 0, MR_LEN as u64)?;
    let cache2 = device2_bytes_in(&read_file(fd, flen)?);
    fsync(fd, &f.path)?;
    let disk2 = device2_bytes_in(&read_direct(&f.path, flen)?);
    t.diag(format!(
        "WRITE 1 ({MR_LEN} bytes) then fsync: {disk1} on disk (the pin's write fault dirtied the pages); \
         WRITE 2 ({MR_LEN} bytes) then fsync: read(2) sees {cache2} (page cache), the disk {disk2} (O_DIRECT): \
         written back clean, the device's stores dirtied nothing"
    ));
    // 3. Truncate with the pages pinned: ext4 breaks no layout lease.
    cut_here(fd, Cut::Truncate, flen)?;
    t.diag(format!(
        "truncated to 0 with the MR pinned (ext4 never calls break_layout()); size now {}",
        fsize(fd)?
    ));
    // 4. Unpin: unpin_user_pages_dirty_lock() dirties pages no file owns.
    let t0 = Instant::now();
    dev.dereg_mr(key)?;
    t.diag(format!(
        "DEREG_MR: unpin_user_pages_dirty_lock() dirtied the {} orphaned pages ({:?})",
        MR_LEN / PAGE,
        t0.elapsed()
    ));
    dev.dereg_mr(src.key)?;
    dev.dereg_mr(src2.key)?;
    // 5. Writeback.
    fsync(fd, &f.path)?;
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: ftruncate on an open descriptor.
    if unsafe { libc::ftruncate(fd, flen as libc::off_t) } < 0 {
        return Err(SysError::last("extend the file again").into());
    }
    let back = read_file(fd, flen)?;
    let disk3 = read_direct(&f.path, flen)?;
    let in_file = device_bytes_in(&back, 0, 0) + device2_bytes_in(&back);
    let on_disk = device_bytes_in(&disk3, 0, 0) + device2_bytes_in(&disk3);
    let nonzero = back.iter().filter(|&&b| b != 0).count();
    t.diag(format!(
        "after fsync+sync, extended to {flen} again: {in_file} device bytes in the file, \
         {on_disk} on disk, {nonzero} non-zero bytes"
    ));
    t.diag(format!(
        "dataloss ext4-writeback-truncate written={} on_disk_write1={disk1} in_page_cache_write2={cache2} \
         on_disk_write2={disk2} in_file={in_file} on_disk={on_disk}",
        2 * MR_LEN
    ));
    ensure!(
        disk1 == MR_LEN && cache2 == MR_LEN,
        "WRITE 1 on disk {disk1}, WRITE 2 in the page cache {cache2}: expected {MR_LEN} each"
    );
    ensure!(
        in_file == 0 && on_disk == 0 && nonzero == 0,
        "the device's bytes came back into the truncated file"
    );
    t.diag(format!(
        "{kver}: no WARNING/BUG in the kernel log (checked after the case); WRITE 2's {MR_LEN} bytes \
         never reached the disk while the file owned the pages ({disk2} did), and are gone with the truncate"
    ));
    drop(map);
    drop(dev);
    Ok(())
}

/// Cases that run only when `--cases` names them exactly: those that may
/// WARN or crash the kernel they test (a crash ends the whole run). None
/// today: `dataloss_ext4_writeback_truncate` left 6.1's kernel log clean
/// (docs/scenarios.md), so it runs by default.
pub fn opt_in() -> Vec<crate::ktap::Case> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u64]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn device_words_are_counted_at_their_offset_only() {
        let d = words(&[device_word(0), device_word(8), device_word(0), 0]);
        // Word 2 holds the word of offset 0: not where it belongs.
        assert_eq!(device_bytes_in(&d, 0, 0), 16);
        // The data MR at file offset 8: word 1 would need device_word(0).
        assert_eq!(device_bytes_in(&d, 0, 8), 0);
        assert_eq!(device_bytes_in(&words(&[device_word(0)]), 8, 8), 8);
        // Outside the MR's range.
        assert_eq!(device_bytes_in(&words(&[device_word(0)]), MR_LEN, 0), 0);
    }

    #[test]
    fn device_and_file_words_are_no_canaries() {
        let n = MR_LEN / 8;
        let dev: Vec<u64> = (0..n).map(|i| device_word(8 * i)).collect();
        let file: Vec<u64> = (0..n)
            .map(|i| u64::from_le_bytes(*b"FILEDATA") ^ (8 * i) as u64)
            .collect();
        assert_eq!(canaries_in(&words(&dev)), 0);
        assert_eq!(canaries_in(&words(&file)), 0);
        assert!(dev.iter().all(|&w| w != 0));
        let key = 0x0000_0002_0000_0003_u64;
        let can: Vec<u64> = (0..n)
            .map(|i| abi::pl_scrub_seed(key) ^ (8 * i) as u64)
            .collect();
        assert_eq!(canaries_in(&words(&can)), n);
    }

    #[test]
    fn subject_ids_and_line() {
        assert_eq!(
            subject_id(Subject::Memfd, Cut::Truncate, Lease::None),
            "memfd-truncate"
        );
        assert_eq!(
            subject_id(Subject::Xfs, Cut::PunchHole, Lease::Timeout),
            "xfs-punch-hole-timeout"
        );
        let l = Loss {
            written: 32768,
            orphaned: 32768,
            canaries_orphaned: 4096,
            ..Loss::default()
        };
        assert_eq!(
            l.line("memfd-truncate"),
            "dataloss memfd-truncate written=32768 in_file=0 orphaned=32768 \
             canaries_orphaned=4096 canaries_in_file=0 mr_pages_in_file=0"
        );
    }

    #[test]
    fn xfs_is_refused_after_6_5_and_shmem_never() {
        use crate::verdicts::Kver;
        let x = verdicts::row(Subject::Xfs.row());
        assert_eq!(x.expected(Kver::new(6, 1)), Expect::Granted);
        assert_eq!(x.expected(Kver::new(6, 12)), Expect::Errno(libc::EFAULT));
        for s in [Subject::Memfd, Subject::Hugetlbfs] {
            for v in [Kver::new(6, 1), Kver::new(6, 12), Kver::new(7, 3)] {
                assert_eq!(verdicts::row(s.row()).expected(v), Expect::Granted);
            }
        }
    }
}
