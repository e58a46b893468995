//! Processes: fork, SCM_RIGHTS fd passing, exit and SIGKILL with MRs
//! registered, many contexts on all CPUs.

use crate::cases::helpers::{open, open_needing, KIB, MIB};
use crate::dev::{Dev, SysError};
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, errno_name, Backing, Mapping};
use crate::uapi::*;
use crate::{ensure, fail, skip};
use pinlease_abi::{self as abi, PL_ACCESS_ALL, PL_ACCESS_READ};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

pub(super) fn fork_child_holds_fd_and_writes(t: &mut CaseCtx) -> CaseResult {
    let dev = open_needing(abi::PL_FEATURE_PATTERN, "PATTERN")?;
    let m = Mapping::anon(64 * KIB)?;
    m.fill_with(0, m.len(), |_| 0);
    let k = dev.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0)?.key;
    let (rd, wr) = sys::pipe()?;
    let pat = 0x4242_4242_1234_5678u64;
    let pid = sys::fork_child(|| {
        // The child does the device write; the parent has closed its fd by
        // then, so the child's exit is the last close.
        std::thread::sleep(Duration::from_millis(50));
        let res = dev.fill(k, 0, 64 * KIB as u64, pat, abi::PL_PATTERN_CONST);
        let errno = res.err().map_or(0, |e| e.errno) as u8;
        let child_sees = u8::from(m.get_u64(0) == pat);
        let _ = sys::write_all(wr.as_raw_fd(), &[errno, child_sees]);
        0
    })?;
    drop(wr);
    drop(dev);
    let msg = sys::read_exact_timeout(rd.as_raw_fd(), 2, Duration::from_secs(30));
    let exit = sys::wait_timeout(pid, Duration::from_secs(30))?;
    let Some(exit) = exit else {
        let st = sys::proc_stack(pid);
        sys::kill(pid, libc::SIGKILL);
        let _ = sys::wait_timeout(pid, Duration::from_secs(10));
        fail!("child holding the fd did not exit within 30 s ({st})");
    };
    let msg = msg?;
    ensure!(exit == sys::Exit::Code(0), "child: {exit}");
    ensure!(
        msg[0] == 0,
        "child's FILL through the inherited fd failed: {} ({})",
        errno_name(msg[0].into()),
        msg[0]
    );
    t.diag(format!(
        "child sees the pattern in its own copy of the buffer: {}",
        if msg[1] == 1 {
            "yes"
        } else {
            "no (fork copied the pinned pages for the child)"
        }
    ));
    let mut bad = 0;
    let mut first = None;
    for o in (0..m.len()).step_by(8) {
        let w = m.get_u64(o);
        if w != pat {
            bad += 1;
            first.get_or_insert((o, w));
        }
    }
    if let Some((o, w)) = first {
        fail!(
            "parent does not see the child's device write: {bad} of {} words differ, first at {o}: {w:#x} (expected {pat:#x})",
            m.len() / 8
        );
    }
    Ok(())
}

/// A forked child's exit code for its body's result: 0, or 1 after
/// writing the error to `report` (the parent's end reads it).
fn child_exit(r: Result<(), SysError>, report: RawFd) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            let _ = sys::write_all(report, e.to_string().as_bytes());
            1
        }
    }
}

pub(super) fn scm_rights_sender_exits(t: &mut CaseCtx) -> CaseResult {
    let (s_parent, s_child) = sys::socketpair()?;
    let pat = 0x5c5c_0000_1111_2222u64;
    let len = 64 * KIB;
    let pid = sys::fork_child(|| {
        let run = || -> Result<(), SysError> {
            let dev = Dev::open_default()?;
            let m = Mapping::anon(len)?;
            for o in (0..len).step_by(8) {
                m.set_u64(o, pat ^ o as u64);
            }
            let k = dev.reg_mr(m.addr(), len as u64, PL_ACCESS_ALL, 0)?.key;
            sys::send_fd(s_child.as_raw_fd(), dev.raw(), &k.to_le_bytes())?;
            // Exit with the fd and the mapping still here: the receiver's
            // reference keeps the context; the pins keep the pages.
            std::mem::forget(m);
            std::mem::forget(dev);
            Ok(())
        };
        child_exit(run(), s_child.as_raw_fd())
    })?;
    drop(s_child);
    let ready = sys::poll_one(s_parent.as_raw_fd(), libc::POLLIN, 30_000)?;
    let exit = sys::wait_timeout(pid, Duration::from_secs(30))?;
    ensure!(
        ready & libc::POLLIN != 0,
        "nothing from the sender within 30 s"
    );
    let (data, fd) = sys::recv_fd(s_parent.as_raw_fd(), 512)?;
    ensure!(
        exit == Some(sys::Exit::Code(0)),
        "sender: {exit:?}: {}",
        String::from_utf8_lossy(&data)
    );
    let Some(fd) = fd else {
        fail!(
            "no fd arrived; sender said {:?}",
            String::from_utf8_lossy(&data)
        );
    };
    ensure!(
        data.len() == 8,
        "sender sent {} bytes, not a key",
        data.len()
    );
    let k = u64::from_le_bytes(data[..8].try_into().unwrap());
    let dev = Dev::from_fd(fd, "/dev/pinlease0 (received)");
    let q = dev.query()?;
    t.diag(format!("received ctx {:#x}, key {k:#x}", q.ctx));
    if q.features & abi::PL_FEATURE_PATTERN != 0 {
        let v = dev.verify(k, 0, len as u64, pat, abi::PL_PATTERN_OFFSET_XOR)?;
        ensure!(v.mismatches == 0, "VERIFY of the exited sender's MR: {v}");
        dev.fill(k, 0, len as u64, 7, abi::PL_PATTERN_CONST)?;
        let v = dev.verify(k, 0, len as u64, 7, abi::PL_PATTERN_CONST)?;
        ensure!(
            v.mismatches == 0,
            "VERIFY after FILL of the exited sender's MR: {v}"
        );
    }
    // Registering the receiver's own memory in the sender's context.
    let m = Mapping::anon(16 * KIB)?;
    match dev.reg_mr(m.addr(), m.len() as u64, PL_ACCESS_ALL, 0) {
        Ok(r) => {
            t.diag(format!(
                "receiver registered its own memory in the received context: key {:#x}",
                r.key
            ));
            dev.write(r.key, 0, k, 0, 8)?;
            dev.dereg_mr(r.key)?;
        }
        Err(e) => t.diag(format!(
            "receiver's own REG_MR in the received context refused: {e}"
        )),
    }
    dev.dereg_mr(k)?;
    drop(dev);
    Ok(())
}

pub(super) fn exit_with_mrs_registered(t: &mut CaseCtx) -> CaseResult {
    let (rd, wr) = sys::pipe()?;
    let pid = sys::fork_child(|| {
        let run = || -> Result<(), SysError> {
            let dev = Dev::open_default()?;
            let a = Mapping::anon(MIB)?;
            let b = Mapping::new(&Backing::Memfd, 256 * KIB, false)?;
            dev.reg_mr(a.addr(), a.len() as u64, PL_ACCESS_ALL, 0)?;
            dev.reg_mr(b.addr(), b.len() as u64, PL_ACCESS_ALL, 0)?;
            dev.reg_mr(
                a.addr(),
                64 * KIB as u64,
                PL_ACCESS_READ,
                PINLEASE_PIN_SHORTTERM,
            )?;
            let efd = dev.event_fd()?;
            std::mem::forget(efd);
            std::mem::forget((dev, a, b));
            Ok(())
        };
        let rc = child_exit(run(), wr.as_raw_fd());
        // Exit with everything live: exit_mmap and the fds' release race.
        unsafe { libc::_exit(rc) }
    })?;
    drop(wr);
    let exit = sys::wait_timeout(pid, Duration::from_secs(60))?;
    let Some(exit) = exit else {
        let st = sys::proc_stack(pid);
        sys::kill(pid, libc::SIGKILL);
        fail!("child exiting with MRs registered did not finish within 60 s ({st})");
    };
    let msg = sys::read_fd(rd.as_raw_fd(), 512).unwrap_or_default();
    ensure!(
        exit == sys::Exit::Code(0),
        "child: {exit}: {}",
        String::from_utf8_lossy(&msg)
    );
    t.diag("child exited with 3 MRs and an event fd open");
    Ok(())
}

pub(super) fn sigkill_during_large_reg_mr(t: &mut CaseCtx) -> CaseResult {
    let avail = sys::meminfo_kb("MemAvailable").unwrap_or(0) as usize * KIB;
    let len = (256 * MIB).min(avail / 3) & !(2 * MIB - 1);
    if len < 16 * MIB {
        skip!(
            "MemAvailable {} KiB is too little for a large REG_MR",
            avail / KIB
        );
    }
    let (rd, wr) = sys::pipe()?;
    let pid = sys::fork_child(|| {
        let run = || -> Result<(), SysError> {
            let dev = Dev::open_default()?;
            let m = Mapping::anon(len)?;
            sys::write_all(wr.as_raw_fd(), b"r")?;
            // The pin faults in every page: slow enough to be killed inside.
            let r = dev.reg_mr(m.addr(), len as u64, PL_ACCESS_ALL, 0)?;
            sys::write_all(
                wr.as_raw_fd(),
                format!("registered {} pages", r.npages).as_bytes(),
            )?;
            std::thread::sleep(Duration::from_secs(60));
            Ok(())
        };
        child_exit(run(), wr.as_raw_fd())
    })?;
    drop(wr);
    let ready = sys::read_exact_timeout(rd.as_raw_fd(), 1, Duration::from_secs(30));
    if ready.is_ok() {
        std::thread::sleep(Duration::from_millis(150));
    }
    let t0 = Instant::now();
    sys::kill(pid, libc::SIGKILL);
    let exit = sys::wait_timeout(pid, Duration::from_secs(60))?;
    let Some(exit) = exit else {
        fail!(
            "child SIGKILLed during REG_MR of {} MiB is still there after 60 s ({})",
            len / MIB,
            sys::proc_stack(pid)
        );
    };
    let msg = sys::read_fd(rd.as_raw_fd(), 512).unwrap_or_default();
    let msg = String::from_utf8_lossy(&msg);
    t.diag(format!(
        "REG_MR of {} MiB: child ended by {exit} {} ms after SIGKILL; killed inside REG_MR: {}{}",
        len / MIB,
        t0.elapsed().as_millis(),
        if msg.is_empty() { "yes" } else { "no" },
        if msg.is_empty() {
            String::new()
        } else {
            format!(" (child said {msg:?})")
        }
    ));
    ready?;
    ensure!(
        exit == sys::Exit::Signal(libc::SIGKILL),
        "child: {exit}, expected SIGKILL"
    );
    Ok(())
}

pub(super) fn stress_many_contexts_all_cpus(t: &mut CaseCtx) -> CaseResult {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = (cpus * 2).min(16);
    let ctx_per_thread = 2;
    let duration = Duration::from_secs(4);
    let have_pattern = {
        let d = open()?;
        d.query()?.features & abi::PL_FEATURE_PATTERN != 0
    };
    let results: Vec<Result<u64, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|ti| {
                std::thread::Builder::new()
                    .name(format!("stress-{ti}"))
                    .spawn_scoped(s, move || -> Result<u64, String> {
                        let e = |e: SysError| format!("thread {ti}: {e}");
                        let devs: Vec<Dev> = (0..ctx_per_thread)
                            .map(|_| Dev::open_default())
                            .collect::<Result<_, _>>()
                            .map_err(e)?;
                        let len = 32 * KIB;
                        let maps: Vec<Mapping> = (0..ctx_per_thread)
                            .map(|_| Mapping::anon(len))
                            .collect::<Result<_, _>>()
                            .map_err(e)?;
                        let start = Instant::now();
                        let mut iters = 0u64;
                        while start.elapsed() < duration || iters == 0 {
                            let mut keys = Vec::new();
                            for (d, m) in devs.iter().zip(&maps) {
                                keys.push(
                                    d.reg_mr(m.addr(), len as u64, PL_ACCESS_ALL, 0)
                                        .map_err(e)?
                                        .key,
                                );
                            }
                            let pat = (ti as u64) << 32 | iters;
                            maps[0].fill_with(0, len, |i| (i as u64 ^ pat) as u8);
                            // Context 0 writes its MR into context 1's MR.
                            devs[0]
                                .write(keys[0], 0, keys[1], 0, len as u64)
                                .map_err(e)?;
                            if let Some((o, g, w)) =
                                maps[1].first_mismatch(0, len, |i| (i as u64 ^ pat) as u8)
                            {
                                return Err(format!(
                                    "thread {ti} iter {iters}: byte {o} = {g:#x}, expected {w:#x}"
                                ));
                            }
                            if have_pattern {
                                devs[1]
                                    .fill(keys[0], 0, len as u64, pat, abi::PL_PATTERN_OFFSET_XOR)
                                    .map_err(e)?;
                                let v = devs[0]
                                    .verify(keys[0], 0, len as u64, pat, abi::PL_PATTERN_OFFSET_XOR)
                                    .map_err(e)?;
                                if v.mismatches != 0 {
                                    return Err(format!("thread {ti} iter {iters}: VERIFY {v}"));
                                }
                            }
                            for (d, k) in devs.iter().zip(&keys) {
                                d.dereg_mr(*k).map_err(e)?;
                            }
                            iters += 1;
                        }
                        Ok(iters)
                    })
                    .expect("spawn stress thread")
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("thread panicked".to_string()))
            })
            .collect()
    });
    let mut total = 0;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(n) => total += n,
            Err(e) => errors.push(e),
        }
    }
    t.diag(format!(
        "{threads} threads x {ctx_per_thread} contexts on {cpus} CPUs for {} s: {total} iterations",
        duration.as_secs()
    ));
    ensure!(errors.is_empty(), "{}", errors.join("; "));
    Ok(())
}
