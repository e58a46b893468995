//! Running one [`Call`]: its argument's bytes where the call says, the
//! ioctl, and what the kernel wrote back. No allocation (forked children
//! of multithreaded workers run it too).

use super::args::{Arg, Call, Place};
use super::memory::MemView;
use super::prng::Prng;
use crate::uapi::*;
use std::mem::size_of;

/// What an ioctl returned.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The return value (a new fd for EVENT_FD and EXPORT_MR).
    pub ret: i64,
    /// 0 on success.
    pub errno: i32,
    /// The argument as the kernel left it (Aligned and Unaligned places
    /// only; otherwise the argument as sent).
    pub out: Arg,
}

const KERNEL_ADDR: u64 = 0xffff_8880_0000_1000;

#[repr(C, align(8))]
struct Buf([u8; 256]);

/// Writes `v` at `dst` (any alignment) and returns its size.
///
/// # Safety
/// `dst` must be valid for `size_of::<T>()` bytes of writes.
unsafe fn put<T: Copy>(dst: *mut u8, v: &T) -> usize {
    std::ptr::write_unaligned(dst as *mut T, *v);
    size_of::<T>()
}

/// # Safety
/// `src` must be valid for `size_of::<T>()` bytes of reads.
unsafe fn get<T: Copy>(src: *const u8) -> T {
    std::ptr::read_unaligned(src as *const T)
}

/// Writes the argument's bytes at `dst` (which has room for 64 bytes).
///
/// # Safety
/// `dst` must be valid for 64 bytes of writes.
unsafe fn write_arg(dst: *mut u8, arg: &Arg) {
    match arg {
        Arg::Value(_) => {}
        Arg::U64(v) => {
            put(dst, v);
        }
        Arg::Query(q) => {
            put(dst, q);
        }
        Arg::RegMr(r) => {
            put(dst, r);
        }
        Arg::Dma(d) => {
            put(dst, d);
        }
        Arg::Import(i) => {
            put(dst, i);
        }
        Arg::LeaseTake(l) => {
            put(dst, l);
        }
        Arg::Bytes(seed) => {
            let mut p = Prng::new(*seed);
            for i in 0..8 {
                put(dst.add(8 * i), &p.next_u64());
            }
        }
    }
}

/// # Safety
/// `src` must be valid for 64 bytes of reads.
unsafe fn read_arg(src: *const u8, arg: &Arg) -> Arg {
    match arg {
        Arg::Value(v) => Arg::Value(*v),
        Arg::U64(_) => Arg::U64(get(src)),
        Arg::Query(_) => Arg::Query(get(src)),
        Arg::RegMr(_) => Arg::RegMr(get(src)),
        Arg::Dma(_) => Arg::Dma(get(src)),
        Arg::Import(_) => Arg::Import(get(src)),
        Arg::LeaseTake(_) => Arg::LeaseTake(get(src)),
        Arg::Bytes(s) => Arg::Bytes(*s),
    }
}

/// Runs `c`. The scratch page of `m` is shared by the worker's threads:
/// what the kernel reads there may be another thread's bytes, which is
/// one more kind of bad input.
pub fn execute(c: &Call, m: &MemView) -> Outcome {
    const _: () = assert!(size_of::<PinleaseDma>() <= 96);
    let mut buf = Buf([0; 256]);
    let base = buf.0.as_mut_ptr();
    let ptr: u64 = match (c.arg, c.place) {
        (Arg::Value(v), _) => v,
        (_, Place::Aligned) => {
            // SAFETY: 256-byte buffer, 64 bytes written at its start.
            unsafe { write_arg(base, &c.arg) };
            base as u64
        }
        (_, Place::Unaligned(n)) => {
            // SAFETY: n < 8, so n + 64 < 256.
            let at = unsafe { base.add(n as usize) };
            // SAFETY: as above.
            unsafe { write_arg(at, &c.arg) };
            at as u64
        }
        (_, Place::Null) => 0,
        (_, Place::Guard) => m.guard,
        (_, Place::Kernel) => KERNEL_ADDR,
        (_, Place::Straddle) => {
            // Half a struct fits before the guard page: write what fits.
            let at = m.guard - 24;
            let mut tmp = Buf([0; 256]);
            // SAFETY: 256-byte buffer.
            unsafe { write_arg(tmp.0.as_mut_ptr(), &c.arg) };
            // SAFETY: the last 24 bytes of the worker's scratch page.
            unsafe { std::ptr::copy_nonoverlapping(tmp.0.as_ptr(), at as *mut u8, 24) };
            at
        }
    };
    // SAFETY: ioctl(2); the kernel checks every pointer it is given, and
    // the ones that point into this process point at our buffers.
    let ret = unsafe { libc::ioctl(c.fd, c.req as _, ptr) } as i64;
    let errno = if ret < 0 { crate::sys::last_errno() } else { 0 };
    let out = match c.place {
        // SAFETY: the same 64 bytes written above.
        Place::Aligned => unsafe { read_arg(base, &c.arg) },
        // SAFETY: as above.
        Place::Unaligned(n) => unsafe { read_arg(base.add(n as usize), &c.arg) },
        _ => c.arg,
    };
    Outcome { ret, errno, out }
}
