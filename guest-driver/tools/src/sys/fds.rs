//! Fds: non-blocking mode, poll, reads and writes with timeouts, pipes,
//! socketpairs and SCM_RIGHTS fd passing.

use super::errno::last_errno;
use crate::dev::{SysError, SysResult};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

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

/// A control buffer with room for one fd's SCM_RIGHTS message (u64s:
/// aligned for cmsghdr).
fn cmsg_buf() -> Vec<u64> {
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    vec![0u64; space.div_ceil(8)]
}

/// A msghdr of one `iov` and the control buffer `cbuf` (from `cmsg_buf`);
/// both must outlive its use.
fn one_fd_msghdr(iov: &mut libc::iovec, cbuf: &mut [u64]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    msg
}

/// Sends `data` with one fd attached (SCM_RIGHTS).
pub fn send_fd(sock: RawFd, fd: RawFd, data: &[u8]) -> SysResult<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = cmsg_buf();
    let msg = one_fd_msghdr(&mut iov, &mut cbuf);
    // SAFETY: msg points at live buffers; CMSG macros stay inside cbuf.
    unsafe {
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
    let mut cbuf = cmsg_buf();
    let mut msg = one_fd_msghdr(&mut iov, &mut cbuf);
    // SAFETY: recvmsg into live buffers; CMSG macros stay inside cbuf.
    unsafe {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

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
