//! What a worker process knows about: its fds (device, event, export),
//! fd numbers it closed, MR keys and lease handles (live and stale). The
//! threads share one [`Pool`]; each ioctl is built from a [`Handles`]
//! copy taken under the lock (so another thread may close the fd or
//! deregister the key before the ioctl runs: that is intended), and a
//! forked child uses the copy without any lock or allocation.

use super::counts::Target;
use std::os::fd::RawFd;
use std::sync::Mutex;

/// Up to N values, no allocation (Copy into forked children).
#[derive(Clone, Copy, Debug)]
pub struct Few<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> Default for Few<T, N> {
    fn default() -> Self {
        Few {
            items: [T::default(); N],
            len: 0,
        }
    }
}

impl<T: Copy + Default, const N: usize> Few<T, N> {
    /// The last (newest) N of `from`.
    pub fn newest(from: &[T]) -> Self {
        let mut f = Few::default();
        for v in from.iter().rev().take(N) {
            f.items[f.len] = *v;
            f.len += 1;
        }
        f
    }

    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }
}

/// A copy of the pool for building ioctls.
#[derive(Clone, Copy, Debug, Default)]
pub struct Handles {
    pub dev_fds: Few<RawFd, 8>,
    pub event_fds: Few<RawFd, 8>,
    pub export_fds: Few<RawFd, 8>,
    pub closed_fds: Few<RawFd, 8>,
    pub keys: Few<u64, 16>,
    pub stale_keys: Few<u64, 8>,
    pub leases: Few<u64, 8>,
    pub stale_leases: Few<u64, 8>,
}

/// Bounds: past them the oldest entry is dropped from the pool (the MR or
/// lease stays in the module until its fd closes).
const MAX_KEYS: usize = 64;
const MAX_STALE: usize = 32;
pub const MAX_FDS: usize = 48;

#[derive(Default)]
struct Inner {
    fds: Vec<(RawFd, Target)>,
    closed: Vec<RawFd>,
    keys: Vec<u64>,
    stale_keys: Vec<u64>,
    leases: Vec<u64>,
    stale_leases: Vec<u64>,
}

fn push_bounded<T>(v: &mut Vec<T>, x: T, max: usize) {
    if v.len() >= max {
        v.remove(0);
    }
    v.push(x);
}

fn retire<T: PartialEq + Copy>(live: &mut Vec<T>, stale: &mut Vec<T>, x: T) {
    live.retain(|&k| k != x);
    push_bounded(stale, x, MAX_STALE);
}

#[derive(Default)]
pub struct Pool {
    inner: Mutex<Inner>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking fuzz thread leaves plain data: go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn handles(&self) -> Handles {
        let g = self.lock();
        let of = |t: Target| -> Vec<RawFd> {
            g.fds
                .iter()
                .filter(|(_, k)| *k == t)
                .map(|(f, _)| *f)
                .collect()
        };
        Handles {
            dev_fds: Few::newest(&of(Target::DevFd)),
            event_fds: Few::newest(&of(Target::EventFd)),
            export_fds: Few::newest(&of(Target::ExportFd)),
            closed_fds: Few::newest(&g.closed),
            keys: Few::newest(&g.keys),
            stale_keys: Few::newest(&g.stale_keys),
            leases: Few::newest(&g.leases),
            stale_leases: Few::newest(&g.stale_leases),
        }
    }

    pub fn fd_count(&self) -> usize {
        self.lock().fds.len()
    }

    pub fn dev_fd_count(&self) -> usize {
        self.lock()
            .fds
            .iter()
            .filter(|(_, k)| *k == Target::DevFd)
            .count()
    }

    pub fn add_fd(&self, fd: RawFd, kind: Target) {
        let mut g = self.lock();
        g.closed.retain(|&c| c != fd);
        g.fds.push((fd, kind));
    }

    /// Takes fd number `nth` (modulo the count) out of the pool for the
    /// caller to close.
    pub fn take_fd(&self, nth: usize) -> Option<RawFd> {
        let mut g = self.lock();
        if g.fds.is_empty() {
            return None;
        }
        let i = nth % g.fds.len();
        let (fd, _) = g.fds.remove(i);
        push_bounded(&mut g.closed, fd, MAX_STALE);
        Some(fd)
    }

    /// A device or child fd of the pool (for dup, read, poll).
    pub fn fd_of(&self, nth: usize, kinds: &[Target]) -> Option<(RawFd, Target)> {
        let g = self.lock();
        let fds: Vec<(RawFd, Target)> = g
            .fds
            .iter()
            .filter(|(_, k)| kinds.contains(k))
            .copied()
            .collect();
        (!fds.is_empty()).then(|| fds[nth % fds.len()])
    }

    pub fn add_key(&self, key: u64) {
        push_bounded(&mut self.lock().keys, key, MAX_KEYS);
    }

    pub fn retire_key(&self, key: u64) {
        let mut g = self.lock();
        let g = &mut *g;
        retire(&mut g.keys, &mut g.stale_keys, key);
    }

    pub fn add_lease(&self, lease: u64) {
        push_bounded(&mut self.lock().leases, lease, MAX_KEYS);
    }

    pub fn retire_lease(&self, lease: u64) {
        let mut g = self.lock();
        let g = &mut *g;
        retire(&mut g.leases, &mut g.stale_leases, lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_tracks_and_retires() {
        let p = Pool::default();
        p.add_fd(10, Target::DevFd);
        p.add_fd(11, Target::EventFd);
        for k in 0..100 {
            p.add_key(k);
        }
        p.retire_key(99);
        p.add_lease(5);
        p.retire_lease(5);
        let h = p.handles();
        assert_eq!(h.dev_fds.as_slice(), &[10]);
        assert_eq!(h.event_fds.as_slice(), &[11]);
        assert_eq!(h.keys.as_slice().len(), 16);
        assert_eq!(h.keys.as_slice()[0], 98, "newest first");
        assert_eq!(h.stale_keys.as_slice(), &[99]);
        assert!(h.leases.as_slice().is_empty());
        assert_eq!(h.stale_leases.as_slice(), &[5]);
        assert_eq!(p.take_fd(0), Some(10));
        assert_eq!(p.handles().closed_fds.as_slice(), &[10]);
        assert_eq!(p.fd_count(), 1);
        p.add_fd(10, Target::ExportFd);
        assert!(p.handles().closed_fds.as_slice().is_empty());
    }
}
