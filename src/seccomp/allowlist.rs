//! The system calls `pinlease serve` makes once its filter is on, by
//! group, each with why it is needed. Found with `--seccomp log` over the
//! host tests, the whole guest suite and the CI campaign (docs/security.md
//! says how to find a missing one: audit type=1326 lines in the kernel
//! log name the call by number).
//!
//! Everything done once before the filter (binding sockets, entering the
//! sandbox, spawning the signal and admin threads' sockets) is not here.

use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// One allowed system call; `arg0`: the values its first argument may
/// take (empty: any).
#[derive(Debug, Clone, Copy)]
pub struct AllowEntry {
    pub nr: i64,
    pub name: &'static str,
    pub arg0: &'static [u64],
}

impl AllowEntry {
    /// seccompiler's rules for this call: none (= unconditional) or one
    /// rule per allowed first argument.
    pub fn rule(&self) -> Result<Vec<SeccompRule>, BackendError> {
        self.arg0
            .iter()
            .map(|&v| {
                SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    v,
                )?])
            })
            .collect()
    }
}

macro_rules! allow {
    ($($name:ident $(= [$($arg:expr),*])?),* $(,)?) => {
        [$(AllowEntry {
            nr: libc::$name,
            name: stringify!($name),
            arg0: &[$($($arg as u64),*)?],
        }),*]
    };
}

/// The allow-list. `fs_open`: the daemon is not sandboxed (the list is the
/// same; whether opening works is `super::install`'s second filter).
pub fn allowed_syscalls(fs_open: bool) -> Vec<AllowEntry> {
    let mut list = Vec::new();
    // Memory: the allocator (brk, mmap arenas, madvise when freeing),
    // thread stacks and their guard pages (mprotect), guest memory regions
    // mapped from the frontend's fds and unmapped on SET_MEM_TABLE/reset.
    list.extend(allow![
        SYS_brk,
        SYS_mmap,
        SYS_munmap,
        SYS_mremap,
        SYS_mprotect,
        SYS_madvise
    ]);
    // Threads: the vhost-user backend, vring workers, scrubber, fault
    // timer and admin clients are spawned per connection (clone3, or
    // clone where glibc falls back), set up by glibc (set_robust_list,
    // rseq) and synchronised with futexes; sched_yield from spin loops in
    // the standard library and crossbeam-style waits.
    list.extend(allow![
        SYS_clone,
        SYS_clone3,
        SYS_set_robust_list,
        SYS_rseq,
        SYS_futex,
        SYS_sched_yield,
        SYS_sched_getaffinity,
        SYS_exit,
        SYS_exit_group,
        SYS_gettid,
        SYS_getpid,
    ]);
    // Signals: every Rust thread sets up an alternate stack for its stack
    // overflow handler (sigaltstack) and glibc blocks signals around thread
    // creation (rt_sigprocmask); signal-hook's handler returns through
    // rt_sigreturn; abort(3) after an `abort` fault raises SIGABRT
    // (tgkill) after resetting its action (rt_sigaction).
    list.extend(allow![
        SYS_sigaltstack,
        SYS_rt_sigprocmask,
        SYS_rt_sigaction,
        SYS_rt_sigreturn,
        SYS_tgkill,
    ]);
    // File descriptors the daemon already holds: the listening sockets
    // (accept4), the frontend's connection (recvmsg with SCM_RIGHTS for
    // memory and eventfds, sendmsg for replies), eventfds (kick, call,
    // the stop and event notifiers: read/write), the admin clients
    // (read, write, timeouts through setsockopt, peer credentials through
    // getsockopt, try_clone through fcntl F_DUPFD_CLOEXEC), logging to
    // stderr (write), closing what a connection leaves (close), and
    // shutdown(2) waking the admin thread's accept at exit.
    list.extend(allow![
        SYS_accept4,
        SYS_recvmsg,
        SYS_sendmsg,
        SYS_recvfrom,
        SYS_sendto,
        SYS_read,
        SYS_write,
        SYS_readv,
        SYS_writev,
        SYS_close,
        SYS_fcntl,
        SYS_getsockopt,
        SYS_setsockopt,
        SYS_shutdown,
        SYS_eventfd2,
        SYS_fstat,
        SYS_newfstatat,
        SYS_statx,
        SYS_lseek,
    ]);
    // Waiting: the serve loop polls the listener and the stop eventfd
    // (poll/ppoll); each vring worker has an epoll set (epoll_create1,
    // epoll_ctl, epoll_wait/epoll_pwait); the scrubber and fault timer
    // sleep on condition variables with timeouts (futex, clock_gettime
    // where the vDSO is not used, clock_nanosleep/nanosleep).
    list.extend(allow![
        SYS_ppoll,
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_pwait,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
    ]);
    #[cfg(target_arch = "x86_64")]
    list.extend(allow![SYS_poll, SYS_epoll_wait]);
    // Identity: the admin socket compares each peer's uid with the
    // daemon's (geteuid).
    list.extend(allow![SYS_geteuid, SYS_getuid]);
    // Hash map seeds of the standard library, once per thread.
    list.extend(allow![SYS_getrandom]);
    // Thread names (pthread_setname_np on the calling thread) only.
    list.extend(allow![SYS_prctl = [libc::PR_SET_NAME]]);
    // The `abort` fault turns core dumps off before abort(3).
    list.extend(allow![SYS_prlimit64]);
    #[cfg(target_arch = "x86_64")]
    list.extend(allow![SYS_setrlimit]);
    // Removing the socket files at exit: the vhost-user listener and the
    // admin socket unlink their paths when dropped. Inside a sandbox the
    // paths do not exist (an empty, read-only root) and the call fails
    // harmlessly; the supervisor outside removes them (sandbox/supervisor.rs).
    list.extend(allow![SYS_unlinkat]);
    #[cfg(target_arch = "x86_64")]
    list.extend(allow![SYS_unlink]);
    // Opening by path: --sandbox none writes its abort report by path;
    // glibc's malloc reads /proc/sys/vm/overcommit_memory once (and does
    // without it). In a sandbox a second filter answers these ENOENT
    // (`super::no_open_program`), so nothing is ever opened there.
    let _ = fs_open;
    list.extend(allow![SYS_openat]);
    #[cfg(target_arch = "x86_64")]
    list.extend(allow![SYS_open]);
    list
}
