//! Memory mappings of every backing type the cases register (anonymous,
//! memfd, hugetlb, files), with byte access for fills and checks.

use crate::dev::{SysError, SysResult};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

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

    /// Populates every page by writing `byte` at its start, never reading
    /// first, as a program's memset does: the first fault of each range is
    /// a write, so the kernel backs it with transparent huge pages where its
    /// THP setting allows. [`Mapping::touch`] reads first, which maps the
    /// (huge) zero page, and a write to the huge zero page only gets 4 KiB
    /// pages: the benchmark's two sides must not differ in that.
    pub fn populate_writing(&self, byte: u8) {
        let step = page_size();
        let mut o = 0;
        while o < self.len {
            self.set_u8(o, byte);
            o += step;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{fork_child, wait_timeout, Exit};
    use std::time::Duration;

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
}
