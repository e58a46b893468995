//! `/dev/pinleaseN` and its child fds: thin, checked wrappers around the
//! ioctls of pinlease_uapi.h. Every error names the ioctl, the errno and the
//! argument values.

use crate::sys::{errno_name, last_errno};
use crate::uapi::*;
use pinlease_abi as abi;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const DEFAULT_DEV: &str = "/dev/pinlease0";

/// A failed system call or ioctl: what was called, with which values, and
/// the errno.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysError {
    pub what: String,
    pub errno: i32,
}

impl SysError {
    pub fn new(what: impl Into<String>, errno: i32) -> SysError {
        SysError {
            what: what.into(),
            errno,
        }
    }
    pub fn last(what: impl Into<String>) -> SysError {
        SysError::new(what, last_errno())
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.errno).to_string();
        let text = text.split(" (os error").next().unwrap_or("");
        write!(
            f,
            "{} failed: {} (errno {}: {})",
            self.what,
            errno_name(self.errno),
            self.errno,
            text
        )
    }
}

impl std::error::Error for SysError {}

pub type SysResult<T> = Result<T, SysError>;

/// One open of the device: one device context.
#[derive(Debug)]
pub struct Dev {
    fd: OwnedFd,
    path: String,
}

pub fn op_name(op: u32) -> String {
    match u16::try_from(op).ok().and_then(abi::Opcode::from_u16) {
        Some(o) => o.name().to_string(),
        None => format!("op {op}"),
    }
}

impl Dev {
    pub fn open(path: &str) -> SysResult<Dev> {
        let c = std::ffi::CString::new(path).expect("device path without NUL");
        // SAFETY: plain open(2) of a NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(SysError::last(format!("open({path}, O_RDWR)")));
        }
        // SAFETY: fd was just returned by open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Dev {
            fd,
            path: path.to_string(),
        })
    }

    pub fn open_default() -> SysResult<Dev> {
        Dev::open(DEFAULT_DEV)
    }

    /// Wraps an fd received from elsewhere (SCM_RIGHTS).
    pub fn from_fd(fd: OwnedFd, path: &str) -> Dev {
        Dev {
            fd,
            path: path.to_string(),
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    fn ioctl<T>(&self, req: u32, arg: *mut T, args: impl FnOnce() -> String) -> SysResult<i32> {
        // SAFETY: `arg` points to a live, correctly sized value for `req`
        // (or is null for argument-less ioctls).
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), req as _, arg) };
        if rc < 0 {
            let errno = last_errno();
            return Err(SysError::new(
                format!(
                    "{}({}) on {} (fd {})",
                    ioctl_name(req),
                    args(),
                    self.path,
                    self.fd.as_raw_fd()
                ),
                errno,
            ));
        }
        Ok(rc)
    }

    pub fn query(&self) -> SysResult<PinleaseQuery> {
        let mut q = PinleaseQuery::default();
        self.ioctl(PINLEASE_IOC_QUERY, &mut q, String::new)?;
        Ok(q)
    }

    /// Registers `[addr, addr + length)`; returns the filled-in struct.
    pub fn reg_mr(
        &self,
        addr: u64,
        length: u64,
        access: u32,
        flags: u32,
    ) -> SysResult<PinleaseRegMr> {
        let mut r = PinleaseRegMr {
            addr,
            length,
            access,
            flags,
            ..Default::default()
        };
        self.reg_mr_raw(&mut r)?;
        Ok(r)
    }

    pub fn reg_mr_raw(&self, r: &mut PinleaseRegMr) -> SysResult<()> {
        let shown = *r;
        self.ioctl(PINLEASE_IOC_REG_MR, r, || {
            format!(
                "addr={:#x} length={} access={:#x} flags={:#x} reserved={}",
                shown.addr, shown.length, shown.access, shown.flags, shown.reserved
            )
        })?;
        Ok(())
    }

    pub fn dereg_mr(&self, key: u64) -> SysResult<()> {
        let mut k = key;
        self.ioctl(PINLEASE_IOC_DEREG_MR, &mut k, || format!("key={key:#x}"))?;
        Ok(())
    }

    pub fn dma(&self, d: &mut PinleaseDma) -> SysResult<()> {
        let s = *d;
        self.ioctl(PINLEASE_IOC_DMA, d, || {
            format!(
                "op={} mode={} local_key={:#x} local_offset={} remote_key={:#x} \
                 remote_offset={} length={} operand={:#x} swap={:#x}",
                op_name(s.op),
                s.mode,
                s.local_key,
                s.local_offset,
                s.remote_key,
                s.remote_offset,
                s.length,
                s.operand,
                s.swap
            )
        })?;
        Ok(())
    }

    fn copy(&self, op: u16, lkey: u64, loff: u64, rkey: u64, roff: u64, len: u64) -> SysResult<()> {
        self.dma(&mut PinleaseDma {
            op: op.into(),
            local_key: lkey,
            local_offset: loff,
            remote_key: rkey,
            remote_offset: roff,
            length: len,
            ..Default::default()
        })
    }

    /// WRITE: local MR -> remote MR.
    pub fn write(&self, lkey: u64, loff: u64, rkey: u64, roff: u64, len: u64) -> SysResult<()> {
        self.copy(abi::Opcode::Write as u16, lkey, loff, rkey, roff, len)
    }

    /// READ: remote MR -> local MR.
    pub fn read(&self, lkey: u64, loff: u64, rkey: u64, roff: u64, len: u64) -> SysResult<()> {
        self.copy(abi::Opcode::Read as u16, lkey, loff, rkey, roff, len)
    }

    /// An atomic on the word at `off` of `key`: returns its original value.
    fn atomic(
        &self,
        op: abi::Opcode,
        key: u64,
        off: u64,
        operand: u64,
        swap: u64,
    ) -> SysResult<u64> {
        let mut d = PinleaseDma {
            op: op as u32,
            remote_key: key,
            remote_offset: off,
            length: 8,
            operand,
            swap,
            ..Default::default()
        };
        self.dma(&mut d)?;
        Ok(d.result[0])
    }

    /// COMPARE_SWAP: returns the word's original value.
    pub fn compare_swap(&self, key: u64, off: u64, expect: u64, swap: u64) -> SysResult<u64> {
        self.atomic(abi::Opcode::CompareSwap, key, off, expect, swap)
    }

    /// FETCH_ADD: returns the word's original value.
    pub fn fetch_add(&self, key: u64, off: u64, add: u64) -> SysResult<u64> {
        self.atomic(abi::Opcode::FetchAdd, key, off, add, 0)
    }

    /// A pattern op (FILL, VERIFY) over `[off, off + len)` of `key`.
    fn pattern(
        &self,
        op: abi::Opcode,
        key: u64,
        off: u64,
        len: u64,
        pattern: u64,
        mode: u32,
    ) -> SysResult<PinleaseDma> {
        let mut d = PinleaseDma {
            op: op as u32,
            mode,
            remote_key: key,
            remote_offset: off,
            length: len,
            operand: pattern,
            ..Default::default()
        };
        self.dma(&mut d)?;
        Ok(d)
    }

    pub fn fill(&self, key: u64, off: u64, len: u64, pattern: u64, mode: u32) -> SysResult<()> {
        self.pattern(abi::Opcode::Fill, key, off, len, pattern, mode)?;
        Ok(())
    }

    /// VERIFY: (mismatches, first bad offset, first bad value).
    pub fn verify(
        &self,
        key: u64,
        off: u64,
        len: u64,
        pattern: u64,
        mode: u32,
    ) -> SysResult<Verify> {
        let d = self.pattern(abi::Opcode::Verify, key, off, len, pattern, mode)?;
        Ok(Verify {
            mismatches: d.result[0],
            first_bad_offset: d.result[1],
            first_bad_value: d.result[2],
        })
    }

    fn fd_ioctl(&self, req: u32, arg: Option<u64>) -> SysResult<OwnedFd> {
        let rc = match arg {
            Some(key) => {
                let mut k = key;
                self.ioctl(req, &mut k, || format!("key={key:#x}"))?
            }
            None => self.ioctl(req, std::ptr::null_mut::<u8>(), String::new)?,
        };
        // SAFETY: the ioctl returned a new fd that we now own.
        Ok(unsafe { OwnedFd::from_raw_fd(rc) })
    }

    /// A new event-channel fd for this context.
    pub fn event_fd(&self) -> SysResult<OwnedFd> {
        self.fd_ioctl(PINLEASE_IOC_EVENT_FD, None)
    }

    /// An export fd for one of this context's MRs.
    pub fn export_mr(&self, key: u64) -> SysResult<OwnedFd> {
        self.fd_ioctl(PINLEASE_IOC_EXPORT_MR, Some(key))
    }

    /// Imports an export fd (of any context) as an MR of this context.
    pub fn import_mr(&self, export_fd: RawFd, access: u32) -> SysResult<u64> {
        let mut m = PinleaseImportMr {
            export_fd,
            access,
            key: 0,
        };
        self.ioctl(PINLEASE_IOC_IMPORT_MR, &mut m, || {
            format!("export_fd={export_fd} access={access:#x}")
        })?;
        Ok(m.key)
    }

    /// Takes a layout lease on `data_fd`'s file; returns the lease handle.
    pub fn lease_take(
        &self,
        data_fd: RawFd,
        policy: u32,
        start: u64,
        length: u64,
    ) -> SysResult<u64> {
        let mut a = PinleaseLeaseTake {
            data_fd,
            policy,
            start,
            length,
            lease: 0,
        };
        self.ioctl(PINLEASE_IOC_LEASE_TAKE, &mut a, || {
            format!("data_fd={data_fd} policy={policy} start={start} length={length}")
        })?;
        Ok(a.lease)
    }

    /// Releases a lease of this fd.
    pub fn lease_release(&self, lease: u64) -> SysResult<()> {
        let mut h = lease;
        self.ioctl(PINLEASE_IOC_LEASE_RELEASE, &mut h, || {
            format!("lease={lease:#x}")
        })?;
        Ok(())
    }
}

/// VERIFY's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verify {
    pub mismatches: u64,
    pub first_bad_offset: u64,
    pub first_bad_value: u64,
}

impl fmt::Display for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mismatches == 0 {
            write!(
                f,
                "0 mismatches (first_bad_offset={:#x})",
                self.first_bad_offset
            )
        } else {
            write!(
                f,
                "{} mismatches, first at offset {} value {:#018x}",
                self.mismatches, self.first_bad_offset, self.first_bad_value
            )
        }
    }
}

/// Decodes whole `struct pl_event` records (56 bytes each).
pub fn parse_events(buf: &[u8]) -> Vec<abi::PlEvent> {
    buf.chunks_exact(EVENT_SIZE)
        .map(|c| {
            let u16_at = |o: usize| u16::from_le_bytes([c[o], c[o + 1]]);
            let u32_at = |o: usize| u32::from_le_bytes(c[o..o + 4].try_into().unwrap());
            let u64_at = |o: usize| u64::from_le_bytes(c[o..o + 8].try_into().unwrap());
            abi::PlEvent {
                kind: u16_at(0),
                flags: u16_at(2),
                dropped: u32_at(4),
                ctx: u64_at(8),
                seq: u64_at(16),
                args: [u64_at(24), u64_at(32), u64_at(40), u64_at(48)],
            }
        })
        .collect()
}

pub const EVENT_SIZE: usize = std::mem::size_of::<abi::PlEvent>();

/// The ABI's name of an event kind (`MR_REVOKED`), `UNKNOWN` for a kind
/// the ABI lacks.
pub fn event_kind_name(kind: u16) -> &'static str {
    abi::event_kind_name(kind).unwrap_or("UNKNOWN")
}

pub fn format_event(e: &abi::PlEvent) -> String {
    format!(
        "event seq={} kind={}({}) flags={:#x} dropped={} ctx={:#x} args=[{:#x}, {:#x}, {:#x}, {:#x}]",
        e.seq,
        event_kind_name(e.kind),
        e.kind,
        e.flags,
        e.dropped,
        e.ctx,
        e.args[0],
        e.args[1],
        e.args[2],
        e.args[3]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_records_decode() {
        let mut buf = vec![0u8; EVENT_SIZE * 2 + 3];
        buf[0] = 1; // kind MR_REVOKED
        buf[8] = 0x11; // ctx
        buf[16] = 7; // seq
        buf[24..32].copy_from_slice(&0xabcdu64.to_le_bytes());
        buf[56] = 4;
        let ev = parse_events(&buf);
        assert_eq!(EVENT_SIZE, 56);
        assert_eq!(ev.len(), 2, "trailing partial record is not decoded");
        assert_eq!(ev[0].kind, abi::PL_EVENT_MR_REVOKED);
        assert_eq!(ev[0].ctx, 0x11);
        assert_eq!(ev[0].seq, 7);
        assert_eq!(ev[0].args[0], 0xabcd);
        assert_eq!(ev[1].kind, abi::PL_EVENT_CONTEXT_TORN_DOWN);
        assert!(format_event(&ev[0]).contains("MR_REVOKED"));
    }

    #[test]
    fn errors_name_the_errno() {
        let e = SysError::new("PINLEASE_IOC_REG_MR(addr=0x1000)", libc::EFAULT);
        let s = e.to_string();
        assert!(s.contains("PINLEASE_IOC_REG_MR(addr=0x1000)"), "{s}");
        assert!(s.contains("EFAULT (errno 14"), "{s}");
    }
}
