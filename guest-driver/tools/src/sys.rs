//! System helpers for the guest tool: errno names, memory mappings of every
//! backing type, /proc and /dev/kmsg readers, fork/wait with timeouts,
//! SCM_RIGHTS and module load/unload.

use crate::dev::{SysError, SysResult};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The symbolic name of an errno value ("EFAULT").
pub fn errno_name(e: i32) -> &'static str {
    match e {
        0 => "0",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ESTALE => "ESTALE",
        libc::ECANCELED => "ECANCELED",
        libc::ENOTCONN => "ENOTCONN",
        libc::EHWPOISON => "EHWPOISON",
        _ => "E?",
    }
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

// ---- memory mappings ------------------------------------------------------------

/// What a test buffer is backed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    Anon,
    Memfd,
    /// Anonymous MAP_HUGETLB memory (2 MiB pages).
    Hugetlb,
    /// A hugetlbfs file: memfd_create(MFD_HUGETLB) (the default 2 MiB
    /// size), mapped MAP_SHARED (`shared`) or MAP_PRIVATE.
    MemfdHugetlb {
        shared: bool,
    },
    /// A file, mapped MAP_SHARED (`shared`) or MAP_PRIVATE.
    File {
        path: String,
        shared: bool,
    },
}

impl std::str::FromStr for Backing {
    type Err = String;
    fn from_str(s: &str) -> Result<Backing, String> {
        match s {
            "anon" => Ok(Backing::Anon),
            "memfd" => Ok(Backing::Memfd),
            "hugetlb" => Ok(Backing::Hugetlb),
            "memfd-hugetlb" | "memfd-hugetlb:shared" => Ok(Backing::MemfdHugetlb { shared: true }),
            "memfd-hugetlb:private" => Ok(Backing::MemfdHugetlb { shared: false }),
            _ => {
                let Some(rest) = s.strip_prefix("file:") else {
                    return Err(format!(
                        "unknown backing {s:?}: anon, memfd, hugetlb, memfd-hugetlb[:shared|private] \
                         or file:PATH[:shared|private]"
                    ));
                };
                let (path, shared) = if let Some(p) = rest.strip_suffix(":private") {
                    (p, false)
                } else if let Some(p) = rest.strip_suffix(":shared") {
                    (p, true)
                } else {
                    (rest, true)
                };
                if path.is_empty() {
                    return Err(format!("backing {s:?}: empty file path"));
                }
                Ok(Backing::File {
                    path: path.to_string(),
                    shared,
                })
            }
        }
    }
}

impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backing::Anon => write!(f, "anon"),
            Backing::Memfd => write!(f, "memfd"),
            Backing::Hugetlb => write!(f, "hugetlb"),
            Backing::MemfdHugetlb { shared } => write!(
                f,
                "memfd-hugetlb:{}",
                if *shared { "shared" } else { "private" }
            ),
            Backing::File { path, shared } => {
                write!(
                    f,
                    "file:{path}:{}",
                    if *shared { "shared" } else { "private" }
                )
            }
        }
    }
}

/// An mmap'ed buffer. All accesses go through volatile reads and writes:
/// the device changes the memory behind the compiler's back.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    _fd: Option<OwnedFd>,
    pub backing: Backing,
}

// SAFETY: the mapping is plain memory; accesses are volatile and callers
// coordinate who writes what (as with any shared buffer).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

pub const HUGE_2M: usize = 2 << 20;

impl Mapping {
    /// Maps `len` bytes of `backing`, readable and writable unless
    /// `readonly`. File backings are created/extended to `len` bytes and
    /// filled with `(offset / 8) as u64` words first, so the pages exist.
    pub fn new(backing: &Backing, len: usize, readonly: bool) -> SysResult<Mapping> {
        let (fd, flags) = match backing {
            Backing::Anon => (None, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS),
            Backing::Hugetlb => (
                None,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            ),
            Backing::Memfd => {
                let name = CString::new("pinlease-guest").unwrap();
                // SAFETY: memfd_create with a valid name.
                let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
                if fd < 0 {
                    return Err(SysError::last("memfd_create(pinlease-guest)"));
                }
                // SAFETY: fresh fd from memfd_create.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                ftruncate(&fd, len as u64, "memfd")?;
                (Some(fd), libc::MAP_SHARED)
            }
            Backing::MemfdHugetlb { shared } => {
                let name = CString::new("pinlease-guest-hugetlb").unwrap();
                // SAFETY: memfd_create with a valid name.
                let fd = unsafe {
                    libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_HUGETLB)
                };
                if fd < 0 {
                    return Err(SysError::last("memfd_create(MFD_HUGETLB)"));
                }
                // SAFETY: fresh fd from memfd_create.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                ftruncate(&fd, len as u64, "hugetlbfs memfd")?;
                let flags = if *shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
                (Some(fd), flags)
            }
            Backing::File { path, shared } => {
                let fd = open_file(path, readonly, len)?;
                (
                    Some(fd),
                    if *shared {
                        libc::MAP_SHARED
                    } else {
                        libc::MAP_PRIVATE
                    },
                )
            }
        };
        Mapping::map(fd, len, readonly, flags, backing.clone())
    }

    /// mmap(2) of `len` bytes of `fd` (None: anonymous); the mapping keeps
    /// the descriptor.
    fn map(
        fd: Option<OwnedFd>,
        len: usize,
        readonly: bool,
        flags: i32,
        backing: Backing,
    ) -> SysResult<Mapping> {
        let prot = if readonly {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        let raw = fd.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: a fresh mapping chosen by the kernel; fd (if any) is open.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, raw, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(SysError::last(format!(
                "mmap(len={len}, prot={prot:#x}, flags={flags:#x}, backing={backing})"
            )));
        }
        Ok(Mapping {
            ptr: ptr as *mut u8,
            len,
            _fd: fd,
            backing,
        })
    }

    /// A MAP_SHARED mapping of `len` bytes of an open file (memfd, ...),
    /// through a dup of `fd` (the mapping keeps its own descriptor).
    pub fn of_fd(fd: RawFd, len: usize, readonly: bool) -> SysResult<Mapping> {
        // SAFETY: F_DUPFD_CLOEXEC of a descriptor the caller holds open.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(SysError::last(format!("dup(fd {fd})")));
        }
        // SAFETY: fresh fd from fcntl.
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        let backing = Backing::File {
            path: format!("/proc/self/fd/{fd}"),
            shared: true,
        };
        Mapping::map(Some(dup), len, readonly, libc::MAP_SHARED, backing)
    }

    pub fn anon(len: usize) -> SysResult<Mapping> {
        Mapping::new(&Backing::Anon, len, false)
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// The file descriptor of a memfd or file backing (None: anonymous).
    pub fn fd(&self) -> Option<RawFd> {
        self._fd.as_ref().map(|f| f.as_raw_fd())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, off: usize, n: usize) {
        assert!(
            off.checked_add(n).is_some_and(|e| e <= self.len),
            "access [{off}, +{n}) outside mapping of {} bytes",
            self.len
        );
    }

    pub fn get_u8(&self, off: usize) -> u8 {
        self.check(off, 1);
        // SAFETY: in bounds of a live mapping.
        unsafe { std::ptr::read_volatile(self.ptr.add(off)) }
    }

    pub fn set_u8(&self, off: usize, v: u8) {
        self.check(off, 1);
        // SAFETY: in bounds of a live, writable mapping.
        unsafe { std::ptr::write_volatile(self.ptr.add(off), v) }
    }

    pub fn get_u64(&self, off: usize) -> u64 {
        self.check(off, 8);
        assert_eq!(off % 8, 0, "unaligned u64 read at {off}");
        // SAFETY: in bounds, aligned (mappings are page-aligned).
        u64::from_le(unsafe { std::ptr::read_volatile(self.ptr.add(off) as *const u64) })
    }

    pub fn set_u64(&self, off: usize, v: u64) {
        self.check(off, 8);
        assert_eq!(off % 8, 0, "unaligned u64 write at {off}");
        // SAFETY: in bounds, aligned, writable.
        unsafe { std::ptr::write_volatile(self.ptr.add(off) as *mut u64, v.to_le()) }
    }

    /// Fills `[off, off+len)` with bytes `f(i)` where i is the offset.
    pub fn fill_with(&self, off: usize, len: usize, f: impl Fn(usize) -> u8) {
        self.check(off, len);
        for i in off..off + len {
            // SAFETY: bounds checked above.
            unsafe { std::ptr::write_volatile(self.ptr.add(i), f(i)) }
        }
    }

    /// Touches every page (write fault) so the memory is populated.
    pub fn touch(&self) {
        let step = page_size();
        let mut o = 0;
        while o < self.len {
            self.set_u8(o, self.get_u8(o));
            o += step;
        }
    }

    /// Calls `f(offset, word)` for every aligned little-endian u64 of the
    /// mapping (volatile reads; the mapping must be readable).
    pub fn for_each_u64(&self, mut f: impl FnMut(usize, u64)) {
        let words = self.len / 8;
        let p = self.ptr as *const u64;
        for i in 0..words {
            // SAFETY: in bounds of a live mapping, aligned (page-aligned base).
            let w = u64::from_le(unsafe { std::ptr::read_volatile(p.add(i)) });
            f(i * 8, w);
        }
    }

    pub fn bytes(&self, off: usize, len: usize) -> Vec<u8> {
        self.check(off, len);
        (off..off + len)
            // SAFETY: bounds checked above.
            .map(|i| unsafe { std::ptr::read_volatile(self.ptr.add(i)) })
            .collect()
    }

    /// The first offset in `[off, off+len)` where the byte is not `f(i)`:
    /// (offset, found, expected).
    pub fn first_mismatch(
        &self,
        off: usize,
        len: usize,
        f: impl Fn(usize) -> u8,
    ) -> Option<(usize, u8, u8)> {
        self.check(off, len);
        (off..off + len).find_map(|i| {
            let got = self.get_u8(i);
            let want = f(i);
            (got != want).then_some((i, got, want))
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what mmap returned.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

fn ftruncate(fd: &OwnedFd, len: u64, what: &str) -> SysResult<()> {
    // SAFETY: ftruncate on an open fd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
        return Err(SysError::last(format!("ftruncate({what}, {len})")));
    }
    Ok(())
}

fn open_file(path: &str, readonly: bool, len: usize) -> SysResult<OwnedFd> {
    let c =
        CString::new(path).map_err(|_| SysError::new(format!("path {path:?}"), libc::EINVAL))?;
    // Create and fill read-write first, so a read-only mapping has data.
    // SAFETY: open with a valid path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(SysError::last(format!("open({path}, O_RDWR|O_CREAT)")));
    }
    // SAFETY: fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into a zeroed stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(SysError::last(format!("fstat({path})")));
    }
    if (st.st_size as u64) < len as u64 {
        let data: Vec<u8> = (0..len)
            .flat_map(|i| ((i / 8) as u64).to_le_bytes()[i % 8..i % 8 + 1].to_vec())
            .collect();
        let mut done = 0;
        while done < len {
            // SAFETY: writing from a live buffer.
            let n = unsafe {
                libc::pwrite(
                    fd.as_raw_fd(),
                    data[done..].as_ptr() as *const libc::c_void,
                    len - done,
                    done as libc::off_t,
                )
            };
            if n <= 0 {
                return Err(SysError::last(format!(
                    "pwrite({path}, {} bytes at {done})",
                    len - done
                )));
            }
            done += n as usize;
        }
        // SAFETY: fsync on an open fd (allocates blocks for DAX too).
        unsafe { libc::fsync(fd.as_raw_fd()) };
    }
    if readonly {
        let fd2 = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd2 < 0 {
            return Err(SysError::last(format!("open({path}, O_RDONLY)")));
        }
        // SAFETY: fresh fd.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd2) });
    }
    Ok(fd)
}

/// STATX_ATTR_DAX of a file (None when statx fails).
pub fn file_is_dax(path: &str) -> Option<bool> {
    let c = CString::new(path).ok()?;
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx into a zeroed buffer.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    };
    if rc < 0 {
        return None;
    }
    const STATX_ATTR_DAX: u64 = 0x0020_0000;
    if stx.stx_attributes_mask & STATX_ATTR_DAX == 0 {
        return None;
    }
    Some(stx.stx_attributes & STATX_ATTR_DAX != 0)
}

// ---- /proc, /sys ---------------------------------------------------------------------

pub fn read_to_string(path: &str) -> SysResult<String> {
    std::fs::read_to_string(path).map_err(|e| {
        SysError::new(
            format!("read {path}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })
}

pub fn write_str(path: &str, s: &str) -> SysResult<()> {
    std::fs::write(path, s).map_err(|e| {
        SysError::new(
            format!("write {s:?} to {path}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })
}

/// (nr_foll_pin_acquired, nr_foll_pin_released) of /proc/vmstat.
///
/// vmstat counters are per-CPU with a fold threshold: the totals lag by up
/// to tens of pins until the next fold. Writing /proc/sys/vm/stat_refresh
/// (root) folds them first, so the values are exact.
pub fn pin_counters() -> SysResult<(u64, u64)> {
    let _ = std::fs::write("/proc/sys/vm/stat_refresh", "1");
    let text = read_to_string("/proc/vmstat")?;
    parse_pin_counters(&text).ok_or_else(|| {
        SysError::new(
            "/proc/vmstat has no nr_foll_pin_acquired/nr_foll_pin_released",
            libc::ENOENT,
        )
    })
}

pub fn parse_pin_counters(vmstat: &str) -> Option<(u64, u64)> {
    let get = |name: &str| {
        vmstat.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
    };
    Some((get("nr_foll_pin_acquired")?, get("nr_foll_pin_released")?))
}

/// Waits up to `timeout` for acquired == released; returns the last values.
pub fn wait_pin_balance(timeout: Duration) -> SysResult<Result<(u64, u64), (u64, u64)>> {
    let start = Instant::now();
    loop {
        let (a, r) = pin_counters()?;
        if a == r {
            return Ok(Ok((a, r)));
        }
        if start.elapsed() >= timeout {
            return Ok(Err((a, r)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line of /proc/mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: Vec<String>,
}

pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 4).then(|| Mount {
                source: w[0].to_string(),
                target: w[1].replace("\\040", " "),
                fstype: w[2].to_string(),
                options: w[3].split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The mount at exactly `target` (the last one, as it hides the others).
pub fn mount_at(target: &str) -> Option<Mount> {
    let text = std::fs::read_to_string("/proc/mounts").ok()?;
    parse_mounts(&text)
        .into_iter()
        .rev()
        .find(|m| m.target == target)
}

impl Mount {
    pub fn has_dax(&self) -> bool {
        self.options.iter().any(|o| o == "dax" || o == "dax=always")
    }
}

/// Page frame numbers of the `npages` pages from `addr` in this process
/// (/proc/self/pagemap, root only): 0 for a page not present.
pub fn pagemap_pfns(addr: u64, npages: usize) -> SysResult<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| SysError::new("open /proc/self/pagemap", e.raw_os_error().unwrap_or(0)))?;
    let mut buf = vec![0u8; npages * 8];
    let off = addr / page_size() as u64 * 8;
    f.read_exact_at(&mut buf, off).map_err(|e| {
        SysError::new(
            format!("read /proc/self/pagemap at {off:#x}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })?;
    Ok(buf
        .chunks_exact(8)
        .map(|c| {
            let e = u64::from_le_bytes(c.try_into().unwrap());
            // bit 63: present; bits 0-54: PFN (0 without CAP_SYS_ADMIN)
            if e >> 63 == 1 {
                e & ((1 << 55) - 1)
            } else {
                0
            }
        })
        .collect())
}

pub fn meminfo_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

// ---- /dev/kmsg -------------------------------------------------------------------------

/// Reader of the kernel log from a saved position (nonblocking).
pub struct Kmsg {
    fd: Option<OwnedFd>,
}

/// Substrings of kernel log lines that fail a case.
pub const KMSG_BAD: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "general protection",
    "refcount_t",
];

impl Kmsg {
    /// Opens /dev/kmsg positioned at the end of the log.
    pub fn open_at_end() -> Kmsg {
        Kmsg::open(true)
    }

    /// Opens /dev/kmsg at the oldest record the kernel still holds.
    pub fn open_at_start() -> Kmsg {
        Kmsg::open(false)
    }

    fn open(at_end: bool) -> Kmsg {
        let path = CString::new("/dev/kmsg").unwrap();
        // SAFETY: open with a valid path.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Kmsg { fd: None };
        }
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if at_end {
            // SAFETY: lseek on an open fd.
            unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
        }
        Kmsg { fd: Some(fd) }
    }

    pub fn available(&self) -> bool {
        self.fd.is_some()
    }

    /// The messages logged since the last call (or since opening).
    pub fn read_new(&mut self) -> Vec<String> {
        let Some(fd) = &self.fd else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: reading into a live buffer.
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n < 0 {
                match last_errno() {
                    // Overwritten records: go on with the next one.
                    libc::EPIPE => continue,
                    libc::EINTR => continue,
                    _ => break,
                }
            }
            if n == 0 {
                break;
            }
            let rec = String::from_utf8_lossy(&buf[..n as usize]);
            out.push(kmsg_message(&rec).to_string());
        }
        out
    }
}

/// The message part of a /dev/kmsg record ("6,123,456,-;text\n KEY=v").
pub fn kmsg_message(rec: &str) -> &str {
    let first = rec.lines().next().unwrap_or("");
    match first.split_once(';') {
        Some((_, msg)) => msg,
        None => first,
    }
}

pub fn kmsg_bad_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| KMSG_BAD.iter().any(|b| l.contains(b)))
        .cloned()
        .collect()
}

/// Writes a line to the kernel log at KERN_DEBUG (so it never reaches the
/// console, where the suite's KTAP goes); ignored when not permitted.
pub fn kmsg_write(line: &str) {
    let line = format!("<7>{line}");
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

// ---- fds, poll -------------------------------------------------------------------------

pub fn set_nonblock(fd: RawFd) -> SysResult<()> {
    // SAFETY: fcntl on an fd.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(SysError::last(format!(
            "fcntl(fd {fd}, F_SETFL, O_NONBLOCK)"
        )));
    }
    Ok(())
}

/// poll() for `events` on one fd; returns revents (0 on timeout).
pub fn poll_one(fd: RawFd, events: i16, timeout_ms: i32) -> SysResult<i16> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: poll on one live pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if rc < 0 {
            if last_errno() == libc::EINTR {
                continue;
            }
            return Err(SysError::last(format!("poll(fd {fd}, events={events:#x})")));
        }
        return Ok(if rc == 0 { 0 } else { p.revents });
    }
}

/// read() into a buffer of `cap` bytes: Ok(bytes) or the errno.
pub fn read_fd(fd: RawFd, cap: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; cap];
    // SAFETY: reading into a live buffer of cap bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, cap) };
    if n < 0 {
        return Err(last_errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

// ---- processes -------------------------------------------------------------------------

/// Forks; the child runs `f` and `_exit`s with its return value (101 if it
/// panics). Returns the child's pid.
pub fn fork_child(f: impl FnOnce() -> i32) -> SysResult<libc::pid_t> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: fork; the child only runs `f` and then _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::last("fork()"));
    }
    if pid == 0 {
        let rc = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: leave the child without running the parent's cleanups.
        unsafe { libc::_exit(rc) };
    }
    Ok(pid)
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Waits for `pid` up to `timeout`; None if it is still running then.
pub fn wait_timeout(pid: libc::pid_t, timeout: Duration) -> SysResult<Option<Exit>> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc < 0 {
            if last_errno() == libc::EINTR {
                continue;
            }
            return Err(SysError::last(format!("waitpid({pid})")));
        }
        if rc == pid {
            return Ok(Some(if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                Exit::Code(libc::WEXITSTATUS(status))
            }));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn kill(pid: libc::pid_t, sig: i32) {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid, sig) };
}

/// The stack of a process as the kernel sees it (for hang diagnostics).
pub fn proc_stack(pid: libc::pid_t) -> String {
    let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, r)| r.chars().next().unwrap_or('?'))
        })
        .unwrap_or('?');
    format!("state {state}; stack: {}", stack.replace('\n', " | "))
}

pub fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SysError::last("pipe2()"));
    }
    // SAFETY: fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn write_all(fd: RawFd, data: &[u8]) -> SysResult<()> {
    let mut done = 0;
    while done < data.len() {
        // SAFETY: writing from a live buffer.
        let n = unsafe {
            libc::write(
                fd,
                data[done..].as_ptr() as *const libc::c_void,
                data.len() - done,
            )
        };
        if n < 0 {
            if last_errno() == libc::EINTR {
                continue;
            }
            return Err(SysError::last(format!("write(fd {fd})")));
        }
        done += n as usize;
    }
    Ok(())
}

/// Reads exactly `n` bytes, waiting up to `timeout`.
pub fn read_exact_timeout(fd: RawFd, n: usize, timeout: Duration) -> SysResult<Vec<u8>> {
    let start = Instant::now();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(SysError::new(
                format!("read {n} bytes from fd {fd} (got {})", out.len()),
                libc::ETIMEDOUT,
            ));
        }
        if poll_one(
            fd,
            libc::POLLIN,
            left.as_millis().min(i32::MAX as u128) as i32,
        )? == 0
        {
            continue;
        }
        let chunk =
            read_fd(fd, n - out.len()).map_err(|e| SysError::new(format!("read(fd {fd})"), e))?;
        if chunk.is_empty() {
            return Err(SysError::new(
                format!("read {n} bytes from fd {fd}: EOF after {}", out.len()),
                libc::EPIPE,
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub fn socketpair() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair into a 2-element array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(SysError::last("socketpair(AF_UNIX)"));
    }
    // SAFETY: fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `data` with one fd attached (SCM_RIGHTS).
pub fn send_fd(sock: RawFd, fd: RawFd, data: &[u8]) -> SysResult<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: building a msghdr over live buffers; CMSG macros stay inside cbuf.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        if libc::sendmsg(sock, &msg, 0) < 0 {
            return Err(SysError::last(format!("sendmsg(SCM_RIGHTS fd {fd})")));
        }
    }
    Ok(())
}

/// Receives up to `cap` bytes and one fd (SCM_RIGHTS).
pub fn recv_fd(sock: RawFd, cap: usize) -> SysResult<(Vec<u8>, Option<OwnedFd>)> {
    let mut data = vec![0u8; cap];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: cap,
    };
    // SAFETY: pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: recvmsg into live buffers; CMSG macros stay inside cbuf.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(SysError::last("recvmsg(SCM_RIGHTS)"));
        }
        data.truncate(n as usize);
        let c = libc::CMSG_FIRSTHDR(&msg);
        let fd = if !c.is_null()
            && (*c).cmsg_level == libc::SOL_SOCKET
            && (*c).cmsg_type == libc::SCM_RIGHTS
        {
            Some(OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(c) as *const RawFd,
            )))
        } else {
            None
        };
        Ok((data, fd))
    }
}

// ---- modules ---------------------------------------------------------------------------

pub fn delete_module(name: &str) -> SysResult<()> {
    let c = CString::new(name).unwrap();
    // SAFETY: delete_module with a valid name.
    if unsafe { libc::syscall(libc::SYS_delete_module, c.as_ptr(), libc::O_NONBLOCK) } < 0 {
        return Err(SysError::last(format!("delete_module({name}, O_NONBLOCK)")));
    }
    Ok(())
}

pub fn finit_module(path: &str) -> SysResult<()> {
    let f = std::fs::File::open(path).map_err(|e| {
        SysError::new(
            format!("open {path}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })?;
    let params = CString::new("").unwrap();
    // SAFETY: finit_module on an open file with empty params.
    if unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) } < 0 {
        return Err(SysError::last(format!("finit_module({path})")));
    }
    Ok(())
}

pub fn module_loaded(name: &str) -> bool {
    std::path::Path::new(&format!("/sys/module/{name}")).exists()
}

/// Waits for a path to exist.
pub fn wait_path(path: &str, timeout: Duration) -> bool {
    wait_path_state(path, true, timeout)
}

/// Waits for a path to disappear (a device node after unbind or rmmod).
pub fn wait_path_gone(path: &str, timeout: Duration) -> bool {
    wait_path_state(path, false, timeout)
}

/// Polls every 20 ms until `path` exists (or not, per `present`); false
/// once `timeout` passed without that.
fn wait_path_state(path: &str, present: bool, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if std::path::Path::new(path).exists() == present {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The line `guest-driver/vm/run` answers a snapshot request with.
pub const HOST_ACK: &str = "PINLEASE-HOST-ACK";

/// Asks the VM runner for a `pinlease status --json` snapshot named `name`
/// (it writes `status-<name>.json` in its output directory): prints
/// `# PINLEASE-SNAPSHOT <name>` on stdout (the console, as a KTAP
/// diagnostic) and waits up to `timeout` for the runner's answer on stdin,
/// so the snapshot shows the device as the caller has it now. Returns
/// whether the runner answered; without a runner (a guest booted by hand)
/// it gives up after `timeout` and the caller goes on.
pub fn snapshot(name: &str, timeout: Duration) -> bool {
    use std::io::Write;
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_name {
        eprintln!("snapshot name {name:?}: use 1-64 of [A-Za-z0-9_.-]");
        return false;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "# PINLEASE-SNAPSHOT {name}");
    let _ = out.flush();
    drop(out);
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n <= 0 {
            if n < 0 && last_errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        let mut b = [0u8; 1];
        // SAFETY: reads one byte into a valid one-byte buffer.
        if unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) } != 1 {
            return false;
        }
        if b[0] == b'\n' {
            if String::from_utf8_lossy(&line).trim_end_matches('\r') == HOST_ACK {
                return true;
            }
            line.clear();
        } else {
            line.push(b[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_counters_parse() {
        let v = "nr_free_pages 1\nnr_foll_pin_acquired 120\nnr_foll_pin_released 118\n";
        assert_eq!(parse_pin_counters(v), Some((120, 118)));
        assert_eq!(parse_pin_counters("nr_free_pages 1\n"), None);
    }

    #[test]
    fn mounts_parse_and_dax() {
        let m = parse_mounts(
            "/dev/vda /mnt/xfs xfs rw,relatime,attr2 0 0\n\
             /dev/pmem0 /mnt/dax xfs rw,relatime,attr2,dax=always 0 0\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].fstype, "xfs");
        assert!(!m[0].has_dax());
        assert!(m[1].has_dax());
        assert_eq!(m[1].target, "/mnt/dax");
    }

    #[test]
    fn kmsg_records() {
        assert_eq!(
            kmsg_message("4,1234,5678,-;WARNING: CPU: 0 PID: 1\n SUBSYSTEM=x\n"),
            "WARNING: CPU: 0 PID: 1"
        );
        let lines = vec![
            "pinlease: bound".to_string(),
            "refcount_t: underflow; use-after-free.".to_string(),
            "general protection fault, probably for non-canonical address".to_string(),
        ];
        assert_eq!(kmsg_bad_lines(&lines).len(), 2);
    }

    #[test]
    fn backing_parse() {
        assert_eq!("anon".parse::<Backing>(), Ok(Backing::Anon));
        assert_eq!(
            "file:/mnt/xfs/a:private".parse::<Backing>(),
            Ok(Backing::File {
                path: "/mnt/xfs/a".into(),
                shared: false
            })
        );
        assert_eq!(
            "file:/mnt/xfs/a".parse::<Backing>(),
            Ok(Backing::File {
                path: "/mnt/xfs/a".into(),
                shared: true
            })
        );
        assert!("file:".parse::<Backing>().is_err());
        assert!("tmpfs".parse::<Backing>().is_err());
    }

    #[test]
    fn mapping_roundtrip_and_fork() {
        let m = Mapping::anon(8192).unwrap();
        m.set_u64(8, 0x1122334455667788);
        assert_eq!(m.get_u8(8), 0x88);
        m.fill_with(100, 10, |i| i as u8);
        assert_eq!(m.first_mismatch(100, 10, |i| i as u8), None);
        assert_eq!(m.first_mismatch(100, 10, |_| 0), Some((100, 100, 0)));
        let pid = fork_child(|| 7).unwrap();
        assert_eq!(
            wait_timeout(pid, Duration::from_secs(5)).unwrap(),
            Some(Exit::Code(7))
        );
    }

    #[test]
    fn scm_rights_roundtrip() {
        let (a, b) = socketpair().unwrap();
        let (r, w) = pipe().unwrap();
        send_fd(a.as_raw_fd(), w.as_raw_fd(), b"key").unwrap();
        let (data, fd) = recv_fd(b.as_raw_fd(), 16).unwrap();
        assert_eq!(data, b"key");
        let fd = fd.expect("an fd arrives");
        write_all(fd.as_raw_fd(), b"x").unwrap();
        assert_eq!(
            read_exact_timeout(r.as_raw_fd(), 1, Duration::from_secs(1)).unwrap(),
            b"x"
        );
    }
}

// ---- mounts a case makes ----------------------------------------------------------------

/// A tmpfs mounted by a case at `dir` (created if missing); unmounted
/// (lazily, so a leftover mapping cannot keep it) and the directory
/// removed on drop.
#[derive(Debug)]
pub struct TmpfsMount {
    pub dir: String,
}

impl TmpfsMount {
    pub fn new(dir: &str, size: &str) -> SysResult<TmpfsMount> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SysError::new(format!("mkdir {dir}"), e.raw_os_error().unwrap_or(0)))?;
        let c = |s: &str| CString::new(s).unwrap();
        let (src, target, fstype, opts) =
            (c("tmpfs"), c(dir), c("tmpfs"), c(&format!("size={size}")));
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                opts.as_ptr() as *const libc::c_void,
            )
        };
        if rc < 0 {
            return Err(SysError::last(format!(
                "mount -t tmpfs -o size={size} tmpfs {dir}"
            )));
        }
        Ok(TmpfsMount {
            dir: dir.to_string(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.dir.as_str()) {
            // SAFETY: umount2 with a valid path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
