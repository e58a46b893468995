//! The buffers a worker process registers: one reserved address range
//! (the arena) cut into slots, each mapped as anonymous, read-only
//! anonymous, memfd, or file-backed (shared or private) memory, remapped
//! and mprotect'ed while MRs may cover it, plus a scratch page followed by
//! a PROT_NONE guard page for ioctl arguments that straddle into it.
//!
//! "Unmapping" a slot maps a PROT_NONE range over it with MAP_FIXED: the
//! old mapping goes exactly as with munmap (registered pages stay pinned),
//! but the addresses never return to the allocator, so a stale address the
//! fuzzer registers later can never be the fuzzer's own heap (which a DMA
//! would then overwrite).

use super::prng::Prng;
use super::values::PAGE;
use crate::dev::{SysError, SysResult};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Pages per slot (256 KiB: DMAs over several slots stay quick under TCG).
pub const SLOT_PAGES: u64 = 64;
pub const SLOTS: u64 = 16;
pub const SLOT_LEN: u64 = SLOT_PAGES * PAGE;
const ARENA_LEN: u64 = SLOTS * SLOT_LEN;
/// Files of the arena's file-backed slots are named with this prefix.
pub const FILE_PREFIX: &str = "pinlease-fuzz-";

/// Where a worker's buffers are: plain numbers, copied into forked
/// children and argument builders (nothing here is dereferenced by Rust).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemView {
    pub base: u64,
    /// A read-write page right before `guard`.
    pub scratch: u64,
    /// A PROT_NONE page.
    pub guard: u64,
    /// Regular-file fds (file slots' file, memfd) for LEASE_TAKE.
    pub data_fds: [RawFd; 2],
    /// /dev/null: an fd that is neither the module's nor a regular file.
    pub null_fd: RawFd,
}

impl MemView {
    /// Address of slot `i` (any i: wraps).
    pub fn slot(&self, i: u64) -> u64 {
        self.base + (i % SLOTS) * SLOT_LEN
    }

    pub fn arena_len(&self) -> u64 {
        ARENA_LEN
    }
}

/// The mapping kinds of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Anon,
    AnonReadonly,
    Memfd,
    FileShared,
    FilePrivate,
    /// PROT_NONE: "unmapped".
    Gone,
}

const KINDS: [Kind; 6] = [
    Kind::Anon,
    Kind::AnonReadonly,
    Kind::Memfd,
    Kind::FileShared,
    Kind::FilePrivate,
    Kind::Gone,
];

/// A worker's arena, its files and its fds.
pub struct Arena {
    pub view: MemView,
    file: OwnedFd,
    memfd: OwnedFd,
    _null: OwnedFd,
    pub file_path: String,
}

fn mmap_fixed(addr: u64, len: u64, prot: i32, flags: i32, fd: RawFd, off: u64) -> SysResult<()> {
    // SAFETY: MAP_FIXED only inside the arena this process reserved, which
    // Rust never uses for its own objects.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            prot,
            flags | libc::MAP_FIXED,
            fd,
            off as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(SysError::last(format!(
            "mmap(MAP_FIXED {addr:#x}, {len}, prot {prot:#x}, flags {flags:#x}, fd {fd})"
        )));
    }
    Ok(())
}

/// The directory for the file-backed slots: XFS when the guest has it
/// (layout leases and their breaks), else /tmp.
pub fn file_dir() -> &'static str {
    match crate::sys::mount_at("/mnt/xfs") {
        Some(m) if m.fstype == "xfs" => "/mnt/xfs",
        _ => "/tmp",
    }
}

fn open_cloexec(path: &str, flags: i32) -> SysResult<OwnedFd> {
    let c =
        CString::new(path).map_err(|_| SysError::new(format!("path {path:?}"), libc::EINVAL))?;
    // SAFETY: open with a valid path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    if fd < 0 {
        return Err(SysError::last(format!("open({path})")));
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ftruncate(fd: RawFd, len: u64, what: &str) -> SysResult<()> {
    // SAFETY: ftruncate of an fd we hold.
    if unsafe { libc::ftruncate(fd, len as libc::off_t) } < 0 {
        return Err(SysError::last(format!("ftruncate({what}, {len})")));
    }
    Ok(())
}

impl Arena {
    /// Reserves the arena and maps every slot with a kind from `p`.
    pub fn new(p: &mut Prng, tag: &str) -> SysResult<Arena> {
        let total = ARENA_LEN + 2 * PAGE;
        // SAFETY: a fresh PROT_NONE reservation chosen by the kernel.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(SysError::last(format!("mmap of the {total}-byte arena")));
        }
        let base = base as u64;
        let scratch = base + ARENA_LEN;
        mmap_fixed(
            scratch,
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )?;
        let file_path = format!("{}/{FILE_PREFIX}{tag}", file_dir());
        let file = open_cloexec(&file_path, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC)?;
        ftruncate(file.as_raw_fd(), ARENA_LEN, &file_path)?;
        let name = CString::new("pinlease-fuzz").unwrap();
        // SAFETY: memfd_create with a valid name.
        let memfd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if memfd < 0 {
            return Err(SysError::last("memfd_create(pinlease-fuzz)"));
        }
        // SAFETY: fresh fd.
        let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
        ftruncate(memfd.as_raw_fd(), ARENA_LEN, "memfd")?;
        let null = open_cloexec("/dev/null", libc::O_RDWR)?;
        let arena = Arena {
            view: MemView {
                base,
                scratch,
                guard: scratch + PAGE,
                data_fds: [file.as_raw_fd(), memfd.as_raw_fd()],
                null_fd: null.as_raw_fd(),
            },
            file,
            memfd,
            _null: null,
            file_path,
        };
        for i in 0..SLOTS {
            // Start with memory that can be registered: no Gone slots yet.
            let kind = *p.pick(&KINDS[..KINDS.len() - 1]);
            arena.map_slot(i, kind)?;
        }
        Ok(arena)
    }

    fn map_slot(&self, i: u64, kind: Kind) -> SysResult<()> {
        let addr = self.view.slot(i);
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let off = (i % SLOTS) * SLOT_LEN;
        match kind {
            Kind::Anon => mmap_fixed(addr, SLOT_LEN, rw, anon, -1, 0),
            Kind::AnonReadonly => mmap_fixed(addr, SLOT_LEN, libc::PROT_READ, anon, -1, 0),
            Kind::Memfd => mmap_fixed(
                addr,
                SLOT_LEN,
                rw,
                libc::MAP_SHARED,
                self.memfd.as_raw_fd(),
                off,
            ),
            Kind::FileShared => mmap_fixed(
                addr,
                SLOT_LEN,
                rw,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                off,
            ),
            Kind::FilePrivate => mmap_fixed(
                addr,
                SLOT_LEN,
                rw,
                libc::MAP_PRIVATE,
                self.file.as_raw_fd(),
                off,
            ),
            Kind::Gone => mmap_fixed(addr, SLOT_LEN, libc::PROT_NONE, anon, -1, 0),
        }
    }

    /// Replaces a random slot's mapping by one of another kind (or by
    /// PROT_NONE: unmapped), whatever MRs cover it.
    pub fn remap(&self, p: &mut Prng) -> SysResult<()> {
        let i = p.below(SLOTS);
        self.map_slot(i, *p.pick(&KINDS))
    }

    /// mprotect of a random page range inside the arena.
    pub fn mprotect(&self, p: &mut Prng) -> SysResult<()> {
        let first = p.below(SLOTS * SLOT_PAGES);
        let n = 1 + p.below(2 * SLOT_PAGES).min(SLOTS * SLOT_PAGES - first - 1);
        let prot = *p.pick(&[
            libc::PROT_NONE,
            libc::PROT_READ,
            libc::PROT_READ | libc::PROT_WRITE,
        ]);
        let addr = self.view.base + first * PAGE;
        // SAFETY: mprotect inside the arena (Rust keeps nothing there).
        if unsafe { libc::mprotect(addr as *mut libc::c_void, (n * PAGE) as usize, prot) } < 0 {
            return Err(SysError::last(format!("mprotect({addr:#x}, {} pages)", n)));
        }
        Ok(())
    }
}

/// Shrinks, regrows or punches a hole in data file `fd`: what breaks
/// layout leases. Allocation-free (a forked child runs it); errors are
/// the point of fuzzing, so they are ignored.
pub fn break_file(fd: RawFd, p: &mut Prng) {
    // SAFETY: ftruncate/fallocate of an fd the caller holds.
    unsafe {
        match p.below(3) {
            0 => {
                libc::ftruncate(fd, (p.below(ARENA_LEN / PAGE) * PAGE) as libc::off_t);
            }
            1 => {
                libc::ftruncate(fd, ARENA_LEN as libc::off_t);
            }
            _ => {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (p.below(ARENA_LEN / PAGE) * PAGE) as libc::off_t,
                    (PAGE * (1 + p.below(SLOT_PAGES))) as libc::off_t,
                );
            }
        }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file_path);
        // SAFETY: the reservation of new(); nothing of Rust's lives in it.
        unsafe {
            libc::munmap(
                self.view.base as *mut libc::c_void,
                (ARENA_LEN + 2 * PAGE) as usize,
            )
        };
    }
}
