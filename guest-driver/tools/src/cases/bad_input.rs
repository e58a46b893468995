//! Bad ioctls (`bad_*`): unknown operations, stale keys, out-of-range
//! offsets and bad REG_MR arguments fail with the documented errno.

use crate::cases::helpers::{expect_errno, expect_errno_in, open, pair, KIB, PAIR_LEN};
use crate::ensure;
use crate::ktap::{CaseCtx, CaseResult};
use crate::sys::{self, errno_name, Mapping};
use crate::uapi::*;
use pinlease_abi::{self as abi, PL_ACCESS_ALL};

pub(super) fn bad_dma_unknown_op_einval(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    for op in [
        999u32,
        0xffff,
        0x1_0009,
        abi::Opcode::RegMr as u32,
        abi::Opcode::LeaseBreak as u32,
    ] {
        let mut d = PinleaseDma {
            op,
            local_key: p.ka,
            remote_key: p.kb,
            length: 8,
            ..Default::default()
        };
        expect_errno(
            p.dev.dma(&mut d),
            libc::EINVAL,
            &format!("DMA with op {op:#x}"),
        )?;
    }
    let mut d = PinleaseDma {
        op: abi::Opcode::Fill as u32,
        mode: 7,
        remote_key: p.kb,
        length: 8,
        ..Default::default()
    };
    expect_errno(p.dev.dma(&mut d), libc::EINVAL, "FILL with pattern mode 7")?;
    // Unknown ioctl number on the device fd.
    let rc = unsafe { libc::ioctl(p.dev.raw(), 0xB9FF_u32 as _, 0) };
    let e = sys::last_errno();
    ensure!(
        rc < 0 && e == libc::ENOTTY,
        "unknown ioctl 0xB9ff: rc {rc} errno {} (expected ENOTTY)",
        errno_name(e)
    );
    p.close()
}

pub(super) fn bad_stale_key_estale(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let c = Mapping::anon(16 * KIB)?;
    let kc = p
        .dev
        .reg_mr(c.addr(), c.len() as u64, PL_ACCESS_ALL, 0)?
        .key;
    p.dev.dereg_mr(kc)?;
    expect_errno(
        p.dev.write(p.ka, 0, kc, 0, 8),
        libc::ESTALE,
        "WRITE to a deregistered remote key",
    )?;
    expect_errno(
        p.dev.write(kc, 0, p.kb, 0, 8),
        libc::ESTALE,
        "WRITE from a deregistered local key",
    )?;
    expect_errno(
        p.dev.dereg_mr(kc),
        libc::ESTALE,
        "DEREG_MR of a deregistered key",
    )?;
    // The slot is reused by the next registration with a new generation.
    let kd = p
        .dev
        .reg_mr(c.addr(), c.len() as u64, PL_ACCESS_ALL, 0)?
        .key;
    ensure!(kd != kc, "a new MR got the stale key {kc:#x} again");
    expect_errno(
        p.dev.write(p.ka, 0, kc, 0, 8),
        libc::ESTALE,
        "WRITE to the stale key after reuse",
    )?;
    p.dev.dereg_mr(kd)?;
    p.close()
}

pub(super) fn bad_out_of_range_erange(_t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let l = PAIR_LEN as u64;
    expect_errno(
        p.dev.write(p.ka, 0, p.kb, l - 4, 8),
        libc::ERANGE,
        "WRITE past the remote MR end",
    )?;
    expect_errno(
        p.dev.write(p.ka, l - 4, p.kb, 0, 8),
        libc::ERANGE,
        "WRITE past the local MR end",
    )?;
    expect_errno(
        p.dev.read(p.ka, 0, p.kb, u64::MAX - 3, 8),
        libc::ERANGE,
        "READ with offset+length overflowing",
    )?;
    expect_errno(
        p.dev.write(p.ka, 0, p.kb, 0, l + 1),
        libc::ERANGE,
        "WRITE longer than the MR",
    )?;
    let q = p.dev.query()?;
    if q.features & abi::PL_FEATURE_PATTERN != 0 {
        expect_errno(
            p.dev.fill(p.kb, l - 8, 16, 0, 0),
            libc::ERANGE,
            "FILL past the MR end",
        )?;
        expect_errno(
            p.dev.verify(p.kb, l, 8, 0, 0),
            libc::ERANGE,
            "VERIFY at the MR end",
        )?;
    }
    ensure!(
        p.b.get_u64(PAIR_LEN - 8) == 0xeeee_eeee_eeee_eeee,
        "a refused op changed the MR"
    );
    p.close()
}

pub(super) fn bad_reg_args_einval(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    let m = Mapping::anon(16 * KIB)?;
    let base = PinleaseRegMr {
        addr: m.addr(),
        length: m.len() as u64,
        access: PL_ACCESS_ALL,
        ..Default::default()
    };
    let tries: [(&str, PinleaseRegMr); 4] = [
        (
            "reserved != 0",
            PinleaseRegMr {
                reserved: 1,
                ..base
            },
        ),
        (
            "unknown pin flag",
            PinleaseRegMr {
                flags: 1 << 7,
                ..base
            },
        ),
        ("access 0", PinleaseRegMr { access: 0, ..base }),
        (
            "unknown access bit",
            PinleaseRegMr {
                access: 1 << 9,
                ..base
            },
        ),
    ];
    for (what, mut r) in tries {
        let res = dev.reg_mr_raw(&mut r).map(|_| r.key);
        expect_errno(res, libc::EINVAL, &format!("REG_MR with {what}"))?;
    }
    let mut r = PinleaseRegMr { length: 0, ..base };
    let e = expect_errno_in(
        dev.reg_mr_raw(&mut r).map(|_| r.key),
        &[libc::EINVAL],
        "REG_MR of length 0",
    )?;
    t.diag(format!("length 0: {}", errno_name(e)));
    // Unmapped memory: the pin itself fails.
    let addr = m.addr();
    drop(m);
    let mut r = PinleaseRegMr { addr, ..base };
    let e = expect_errno_in(
        dev.reg_mr_raw(&mut r).map(|_| r.key),
        &[libc::EFAULT, libc::ENOMEM],
        "REG_MR of unmapped memory",
    )?;
    t.diag(format!("unmapped memory: {}", errno_name(e)));
    Ok(())
}
