//! A worker process: its arena, its pool of fds and handles, and T threads
//! that each, until the deadline, do random ioctls with opens, dups,
//! closes (of fds other threads may be using), reads and polls of child
//! fds, mprotects and remaps of registered memory, truncates that break
//! leases, and forks of short-lived children (killed mid-way half the
//! time) that do ioctls on the inherited fds.

use super::args::{self, Arg, Call};
use super::counts::{Action, Counts, Target};
use super::exec::execute;
use super::handles::{Handles, Pool, MAX_FDS};
use super::ioctls;
use super::memory::{Arena, MemView};
use super::prng::{derive_seed, Prng};
use crate::uapi::*;
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Where a worker sits in the run (its threads' seeds derive from it).
#[derive(Clone, Debug)]
pub struct Spec {
    pub seed: u64,
    pub slot: u64,
    pub generation: u64,
    pub threads: u32,
    pub deadline: Instant,
    pub dev: String,
}

/// How long a worker's main thread waits for its threads after the
/// deadline (one may wait for a device request) before it exits, which
/// ends them.
const THREAD_GRACE: Duration = Duration::from_secs(3);

/// Runs a worker; its exit code (0, or 2 when the arena could not be set
/// up).
pub fn run(spec: &Spec, counts: &Counts) -> i32 {
    let mut p = Prng::new(derive_seed(
        spec.seed,
        &[spec.slot, spec.generation, u64::MAX],
    ));
    let tag = format!("{}-{}", spec.slot, std::process::id());
    let arena = match Arena::new(&mut p, &tag) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pinlease-guest fuzz: worker {}: {e}", spec.slot);
            return 2;
        }
    };
    let dev = CString::new(spec.dev.as_str()).unwrap_or_default();
    let pool = Pool::default();
    open_dev(&dev, &pool, counts);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..spec.threads {
            let seed = derive_seed(spec.seed, &[spec.slot, spec.generation, t as u64]);
            let (pool, arena, dev, done) = (&pool, &arena, &dev, &done);
            s.spawn(move || {
                let mut p = Prng::new(seed);
                while Instant::now() < spec.deadline {
                    step(&mut p, pool, arena, dev, counts);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let give_up = spec.deadline + THREAD_GRACE;
        while done.load(Ordering::SeqCst) < spec.threads as usize {
            if Instant::now() >= give_up {
                // A thread is stuck (in a lease break, a device request):
                // exiting ends it, and closes every fd.
                drop_files(&arena);
                // SAFETY: leaving the worker with its threads.
                unsafe { libc::_exit(0) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    0
}

fn drop_files(arena: &Arena) {
    let _ = std::fs::remove_file(&arena.file_path);
}

fn open_dev(dev: &CString, pool: &Pool, counts: &Counts) {
    counts.action(Action::Open);
    // SAFETY: open with a valid path.
    let fd = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd >= 0 {
        pool.add_fd(fd, Target::DevFd);
    }
}

/// One step of a thread: an ioctl most of the time, else another action.
fn step(p: &mut Prng, pool: &Pool, arena: &Arena, dev: &CString, counts: &Counts) {
    let r = p.below(1000);
    if pool.dev_fd_count() == 0 || (r < 15 && pool.fd_count() < MAX_FDS) {
        return open_dev(dev, pool, counts);
    }
    match r {
        15..=39 => {
            counts.action(Action::Close);
            if let Some(fd) = pool.take_fd(p.next_u64() as usize) {
                // SAFETY: an fd of the pool, taken out of it: nobody else
                // closes it (threads may still use the number: intended).
                unsafe { libc::close(fd) };
            }
        }
        40..=47 => {
            counts.action(Action::Dup);
            let kinds = [Target::DevFd, Target::EventFd, Target::ExportFd];
            if let Some((fd, kind)) = pool.fd_of(p.next_u64() as usize, &kinds) {
                // SAFETY: dup of an fd number (maybe closed meanwhile, or
                // reused for another kind: then the pool's kind is wrong,
                // which only makes that fd's ioctls "wrong fd" ones).
                let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                if d >= 0 {
                    pool.add_fd(d, kind);
                }
            }
        }
        48..=87 => read_child(p, pool, counts),
        88..=97 => {
            counts.action(Action::Poll);
            let kinds = [Target::EventFd, Target::ExportFd];
            if let Some((fd, _)) = pool.fd_of(p.next_u64() as usize, &kinds) {
                let _ = crate::sys::poll_one(fd, libc::POLLIN, p.below(3) as i32);
            }
        }
        98..=112 => {
            counts.action(Action::Mprotect);
            let _ = arena.mprotect(p);
        }
        113..=127 => {
            counts.action(Action::Remap);
            let _ = arena.remap(p);
        }
        128..=130 => breaker(p, &arena.view, counts),
        131..=133 => fork_child(p, pool.handles(), arena.view, counts),
        _ => {
            let h = pool.handles();
            let call = args::build(p, &h, &arena.view);
            let o = execute(&call, &arena.view);
            counts.ioctl(ioctls::slot(call.req), call.target, o.errno);
            if o.errno == 0 {
                absorb(pool, &call, o.ret, &o.out);
            }
        }
    }
}

/// Reads an event or export fd with a whole-record or a short buffer.
fn read_child(p: &mut Prng, pool: &Pool, counts: &Counts) {
    counts.action(Action::Read);
    let kinds = [Target::EventFd, Target::ExportFd];
    let Some((fd, _)) = pool.fd_of(p.next_u64() as usize, &kinds) else {
        return;
    };
    let mut buf = [0u8; 1024];
    let n = *p.pick(&[0usize, 1, 31, 32, 33, 64, 1024]);
    // Event fds are made nonblocking when they enter the pool.
    // SAFETY: reading at most n <= 1024 bytes into buf.
    unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, n) };
}

/// Adds what a successful ioctl created to the pool, retires what it ended.
fn absorb(pool: &Pool, c: &Call, ret: i64, out: &Arg) {
    match (c.req, out) {
        (PINLEASE_IOC_REG_MR, Arg::RegMr(r)) => pool.add_key(r.key),
        (PINLEASE_IOC_IMPORT_MR, Arg::Import(i)) => pool.add_key(i.key),
        (PINLEASE_IOC_DEREG_MR, Arg::U64(k)) => pool.retire_key(*k),
        (PINLEASE_IOC_LEASE_TAKE, Arg::LeaseTake(l)) => pool.add_lease(l.lease),
        (PINLEASE_IOC_LEASE_RELEASE, Arg::U64(l)) => pool.retire_lease(*l),
        (PINLEASE_IOC_EVENT_FD, _) if ret >= 0 => {
            // A read must never block a thread past the deadline.
            let _ = crate::sys::set_nonblock(ret as i32);
            pool.add_fd(ret as i32, Target::EventFd)
        }
        (PINLEASE_IOC_EXPORT_MR, _) if ret >= 0 => pool.add_fd(ret as i32, Target::ExportFd),
        _ => {}
    }
    // Another request number that returned an fd: do not leak it.
    if ioctls::slot(c.req) == ioctls::all().len() && ret > 2 {
        // SAFETY: an fd the kernel just returned to us.
        unsafe { libc::close(ret as i32) };
    }
}

/// Truncates or punches one of the worker's data files from a forked child
/// that keeps no other fd, waits 0-200 ms for it, then SIGKILLs it.
///
/// Not from a worker thread: a SIGKILLed thread that breaks a layout
/// lease its own process holds never exits. XFS's
/// xfs_break_leased_layouts() (6.1, 6.12 and 7.3 alike) ignores the error
/// of its waiting break_layout() and loops, a pending SIGKILL makes every
/// wait return at once, and a PL_POLICY_WAIT lease only goes with the
/// device fd's close, which waits for that very thread's exit
/// (docs/guest-fuzz.md, "Findings"). A breaker without device fds is
/// let go as soon as the worker releases the lease or exits.
fn breaker(p: &mut Prng, m: &MemView, counts: &Counts) {
    counts.action(Action::Truncate);
    let fd = m.data_fds[p.below(2) as usize];
    let mut cp = Prng::new(p.next_u64());
    let wait = Duration::from_millis(p.below(200));
    // SAFETY: fork; the child only makes raw syscalls and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return;
    }
    if pid == 0 {
        // SAFETY: the child's own fd table: keep only the data file.
        unsafe {
            libc::syscall(libc::SYS_close_range, 0u32, (fd - 1) as u32, 0u32);
            libc::syscall(libc::SYS_close_range, (fd + 1) as u32, u32::MAX, 0u32);
        }
        super::memory::break_file(fd, &mut cp);
        // SAFETY: leaving the child without the parent's cleanups.
        unsafe { libc::_exit(0) };
    }
    if let Ok(None) = crate::sys::wait_timeout(pid, wait) {
        counts.action(Action::KillChild);
        crate::sys::kill(pid, libc::SIGKILL);
        // Reaped now if it died; else it is left to init (it holds no
        // device fd, so it cannot keep the lease it waits on).
        let _ = crate::sys::wait_timeout(pid, Duration::ZERO);
    }
}

/// Forks a child that does up to 32 ioctls with the inherited fds and a
/// copy of the handles, closes some fds and exits; half the time it is
/// SIGKILLed after 0-3 ms. The child builds and runs calls without
/// allocating or locking (the parent is multithreaded).
fn fork_child(p: &mut Prng, h: Handles, m: MemView, counts: &Counts) {
    counts.action(Action::Fork);
    let mut cp = Prng::new(p.next_u64());
    let kill_after = p.chance(1, 2).then(|| Duration::from_micros(p.below(3000)));
    // SAFETY: fork; the child only runs the allocation-free loop below and
    // _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return;
    }
    if pid == 0 {
        let n = 1 + cp.below(32);
        for _ in 0..n {
            let c = args::build(&mut cp, &h, &m);
            let o = execute(&c, &m);
            counts.ioctl(ioctls::slot(c.req), c.target, o.errno);
            if cp.chance(1, 8) {
                let fds = h.dev_fds.as_slice();
                if !fds.is_empty() {
                    // SAFETY: the child's own copy of an inherited fd.
                    unsafe { libc::close(*cp.pick(fds)) };
                }
            }
        }
        // SAFETY: leaving the child without the parent's cleanups.
        unsafe { libc::_exit(0) };
    }
    if let Some(d) = kill_after {
        std::thread::sleep(d);
        counts.action(Action::KillChild);
        crate::sys::kill(pid, libc::SIGKILL);
    }
    // Bounded: a child stuck in a device request is killed.
    if let Ok(None) = crate::sys::wait_timeout(pid, Duration::from_secs(5)) {
        counts.action(Action::KillChild);
        crate::sys::kill(pid, libc::SIGKILL);
        let _ = crate::sys::wait_timeout(pid, Duration::from_secs(10));
    }
}
