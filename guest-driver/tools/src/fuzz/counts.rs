//! The run's counters, in one MAP_SHARED anonymous mapping made before the
//! first fork: every thread of every worker process (and every short-lived
//! forked child) adds to it with atomics, and what a SIGKILLed process
//! counted stays counted. Nothing here allocates, so a child forked from a
//! multithreaded worker may count too.

use super::ioctls;
use crate::dev::{SysError, SysResult};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// errno values below this are counted by value; larger ones in the last
/// slot.
pub const ERRNO_SLOTS: usize = 160;
/// Room for the UAPI's ioctls plus the "other request number" slot
/// (`ioctls::tests` checks the UAPI fits).
pub const IOCTL_SLOTS: usize = 32;

/// What an ioctl was aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// An open of /dev/pinleaseN (or a dup of one).
    DevFd,
    /// A child fd of PINLEASE_IOC_EVENT_FD.
    EventFd,
    /// A child fd of PINLEASE_IOC_EXPORT_MR.
    ExportFd,
    /// A regular file, memfd or /dev/null: not the module's.
    OtherFd,
    /// A closed fd number or an fd edge value (-1, INT_MAX...).
    BadFd,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::DevFd,
        Target::EventFd,
        Target::ExportFd,
        Target::OtherFd,
        Target::BadFd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::DevFd => "dev_fd",
            Target::EventFd => "event_fd",
            Target::ExportFd => "export_fd",
            Target::OtherFd => "other_fd",
            Target::BadFd => "bad_fd",
        }
    }
}

/// What the fuzzer did between ioctls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// open() of the device (a new context).
    Open,
    /// dup() of a device or child fd.
    Dup,
    /// close() of a random fd of the pool (other threads may be using it).
    Close,
    /// read() of an event or export fd (short and whole-record buffers).
    Read,
    /// poll() of an event or export fd.
    Poll,
    /// mprotect() of part of a buffer (registered or not).
    Mprotect,
    /// A buffer unmapped (replaced by a fresh mapping of another kind) while
    /// MRs may cover it.
    Remap,
    /// ftruncate()/fallocate(PUNCH_HOLE) of a data file from a forked
    /// child: breaks leases.
    Truncate,
    /// fork() of a short-lived child that does ioctls on the inherited fds.
    Fork,
    /// SIGKILL of such a child (or of a truncating one) mid-way.
    KillChild,
    /// SIGKILL of a whole worker process by the driver (then a new one).
    KillWorker,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::Open,
        Action::Dup,
        Action::Close,
        Action::Read,
        Action::Poll,
        Action::Mprotect,
        Action::Remap,
        Action::Truncate,
        Action::Fork,
        Action::KillChild,
        Action::KillWorker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Open => "open",
            Action::Dup => "dup",
            Action::Close => "close",
            Action::Read => "read",
            Action::Poll => "poll",
            Action::Mprotect => "mprotect",
            Action::Remap => "remap",
            Action::Truncate => "truncate",
            Action::Fork => "fork",
            Action::KillChild => "kill_child",
            Action::KillWorker => "kill_worker",
        }
    }
}

#[repr(C)]
struct Table {
    ioctl: [[AtomicU64; ERRNO_SLOTS]; IOCTL_SLOTS],
    target: [AtomicU64; Target::ALL.len()],
    action: [AtomicU64; Action::ALL.len()],
}

/// The shared counters (the mapping lives as long as the process; forked
/// children share it).
pub struct Counts {
    table: *const Table,
}

// SAFETY: the table is atomics only.
unsafe impl Send for Counts {}
// SAFETY: as above.
unsafe impl Sync for Counts {}

impl Counts {
    pub fn new_shared() -> SysResult<Counts> {
        let len = std::mem::size_of::<Table>();
        // SAFETY: a fresh anonymous mapping; zero bytes are valid atomics.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(SysError::last(format!(
                "mmap of the {len}-byte counter table"
            )));
        }
        Ok(Counts {
            table: ptr as *const Table,
        })
    }

    fn t(&self) -> &Table {
        // SAFETY: mapped in new_shared() and never unmapped while self lives.
        unsafe { &*self.table }
    }

    /// One ioctl: its slot (`ioctls::slot`), its target and its errno (0:
    /// success).
    pub fn ioctl(&self, slot: usize, target: Target, errno: i32) {
        let e = (errno.max(0) as usize).min(ERRNO_SLOTS - 1);
        self.t().ioctl[slot.min(IOCTL_SLOTS - 1)][e].fetch_add(1, Relaxed);
        self.t().target[target as usize].fetch_add(1, Relaxed);
    }

    pub fn action(&self, a: Action) {
        self.t().action[a as usize].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let t = self.t();
        Snapshot {
            ioctl: (0..ioctls::slots())
                .map(|s| t.ioctl[s].iter().map(|c| c.load(Relaxed)).collect())
                .collect(),
            target: t.target.iter().map(|c| c.load(Relaxed)).collect(),
            action: t.action.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }
}

impl Drop for Counts {
    fn drop(&mut self) {
        // SAFETY: the mapping of new_shared(); no reference outlives self.
        unsafe {
            libc::munmap(
                self.table as *mut libc::c_void,
                std::mem::size_of::<Table>(),
            );
        }
    }
}

/// The counters' values, per ioctl slot x errno, per target, per action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub ioctl: Vec<Vec<u64>>,
    pub target: Vec<u64>,
    pub action: Vec<u64>,
}

impl Snapshot {
    pub fn ioctls_total(&self) -> u64 {
        self.ioctl.iter().flatten().sum()
    }

    /// Calls that succeeded, all ioctls together.
    pub fn ioctls_ok(&self) -> u64 {
        self.ioctl.iter().map(|e| e[0]).sum()
    }

    pub fn action(&self, a: Action) -> u64 {
        self.action.get(a as usize).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_fork() {
        let c = Counts::new_shared().unwrap();
        c.ioctl(0, Target::DevFd, 0);
        let pid = crate::sys::fork_child(|| {
            c.ioctl(0, Target::EventFd, libc::EINVAL);
            c.ioctl(1, Target::BadFd, 5000);
            c.action(Action::Close);
            0
        })
        .unwrap();
        let exit = crate::sys::wait_timeout(pid, std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(exit, Some(crate::sys::Exit::Code(0)));
        let s = c.snapshot();
        assert_eq!(s.ioctl[0][0], 1);
        assert_eq!(s.ioctl[0][libc::EINVAL as usize], 1);
        assert_eq!(s.ioctl[1][ERRNO_SLOTS - 1], 1);
        assert_eq!(s.target[Target::EventFd as usize], 1);
        assert_eq!(s.action(Action::Close), 1);
        assert_eq!(s.ioctls_total(), 3);
        assert_eq!(s.ioctls_ok(), 1);
    }
}
