//! Device data operations, one in flight (PINLEASE_IOC_DMA): the cheapest
//! device round trip (`nop`), WRITE between two MRs (`write_4k_qd1`,
//! `write_1m_qd1`), FILL and VERIFY of 1 MiB; and the memcpy side: the
//! guest's own copy of the same bytes between two touched buffers.

use super::figures::{Figure, Side};
use super::{
    id_bytes, run_loop, timed, Bench, BenchError, BenchResult, Bounds, Line, Stats, MIB_BYTES,
};
use crate::dev::Dev;
use crate::sys::Mapping;
use pinlease_abi::{PL_ACCESS_ALL, PL_PATTERN_OFFSET_XOR};
use std::time::Duration;

/// The pattern FILL writes and VERIFY checks.
const PATTERN: u64 = 0x5eed_0fb0_0ca7_ed00;

/// Bytes copied per timed memcpy operation at least: small copies are
/// batched so the clock's own cost stays out of the figure.
const MEMCPY_MIN_BYTES_PER_OP: u64 = 64 << 10;

fn bytes_of(f: &Figure) -> BenchResult<u64> {
    id_bytes(f.id).ok_or_else(|| BenchError::Setup(format!("figure {}: no size in its id", f.id)))
}

/// An anonymous buffer of `bytes`, touched, registered on `dev`.
fn mr(dev: &Dev, bytes: u64) -> BenchResult<(Mapping, u64)> {
    let m = super::mr::touched(bytes)?;
    let key = dev.reg_mr(m.addr(), bytes, PL_ACCESS_ALL, 0)?.key;
    Ok((m, key))
}

fn mib_per_s(s: &Stats, bytes: u64) -> f64 {
    s.rate(bytes as f64) / MIB_BYTES as f64
}

/// `nop`: device round trips per second. The module has no NOP ioctl and
/// PINLEASE_IOC_QUERY answers from the module's copy of the limits without
/// asking the device (pl_fops.c), so the cheapest request that reaches the
/// device is measured: a FETCH_ADD of one 8-byte word of a one-page MR.
pub(super) fn nop(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let dev = b.open()?;
    let (_m, key) = mr(&dev, 4096)?;
    let s = run_loop(&b.timing, Bounds::RATE, || {
        timed(|| Ok(dev.fetch_add(key, 0, 1)?)).map(|(_, d)| d)
    })?;
    Ok(vec![Line::new(Side::Pinlease, f, s.rate(1.0))
        .stats(&s, 8)
        .detail("via", "FETCH_ADD_8_bytes")])
}

/// The guest's memcpy of `bytes` between two touched buffers: its stats,
/// each operation copying `bytes` x the returned count.
fn memcpy_stats(b: &Bench, bytes: u64) -> BenchResult<(Stats, u64)> {
    let src = Mapping::anon(bytes as usize)?;
    let dst = super::mr::touched(bytes)?;
    src.fill_with(0, bytes as usize, |i| (i * 7) as u8);
    let copies = MEMCPY_MIN_BYTES_PER_OP.div_ceil(bytes).max(1);
    let (s, d) = (src.addr() as *const u8, dst.addr() as *mut u8);
    let stats = run_loop(&b.timing, Bounds::RATE, || {
        timed(|| {
            for _ in 0..copies {
                // SAFETY: two live, distinct mappings of `bytes` bytes each;
                // black_box keeps the copies from being merged or elided.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        std::hint::black_box(s),
                        std::hint::black_box(d),
                        bytes as usize,
                    )
                };
            }
            Ok(())
        })
        .map(|((), t)| t)
    })?;
    if dst.get_u8(bytes as usize - 1) != src.get_u8(bytes as usize - 1) {
        return Err(BenchError::Unexpected {
            what: format!("memcpy of {bytes} bytes: the last byte"),
            got: dst.get_u8(bytes as usize - 1).to_string(),
            want: src.get_u8(bytes as usize - 1).to_string(),
        });
    }
    Ok((stats, copies))
}

/// The memcpy line of figure `f`: the same bytes per operation as its
/// device side.
fn memcpy_line(b: &Bench, f: &'static Figure, bytes: u64) -> BenchResult<Line> {
    let (s, copies) = memcpy_stats(b, bytes)?;
    Ok(Line::new(Side::Memcpy, f, mib_per_s(&s, bytes * copies))
        .stats(&s, bytes)
        .detail("copies_per_op", copies))
}

/// `write_*_qd1`: WRITE of the figure's size from one MR to another, one in
/// flight, MiB/s; and the guest's memcpy of the same size.
pub(super) fn write(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let bytes = bytes_of(f)?;
    let dev = b.open()?;
    let (_src, ks) = mr(&dev, bytes)?;
    let (_dst, kd) = mr(&dev, bytes)?;
    let s = run_loop(&b.timing, Bounds::RATE, || {
        timed(|| Ok(dev.write(ks, 0, kd, 0, bytes)?)).map(|((), d)| d)
    })?;
    Ok(vec![
        Line::new(Side::Pinlease, f, mib_per_s(&s, bytes))
            .stats(&s, bytes)
            .detail("median_us", format!("{:.1}", s.median_secs() * 1e6)),
        memcpy_line(b, f, bytes)?,
    ])
}

/// `fill_1m`: FILL of the whole MR with the offset-xor pattern, MiB/s; and
/// memcpy of the same size.
pub(super) fn fill(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let bytes = bytes_of(f)?;
    let dev = b.open()?;
    let (_m, key) = mr(&dev, bytes)?;
    let s = run_loop(&b.timing, Bounds::RATE, || {
        timed(|| Ok(dev.fill(key, 0, bytes, PATTERN, PL_PATTERN_OFFSET_XOR)?)).map(|((), d)| d)
    })?;
    Ok(vec![
        Line::new(Side::Pinlease, f, mib_per_s(&s, bytes)).stats(&s, bytes),
        memcpy_line(b, f, bytes)?,
    ])
}

/// `verify_1m`: VERIFY of the whole MR against what FILL wrote, MiB/s
/// (every answer must report no mismatch); and memcpy of the same size.
pub(super) fn verify(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let bytes = bytes_of(f)?;
    let dev = b.open()?;
    let (_m, key) = mr(&dev, bytes)?;
    dev.fill(key, 0, bytes, PATTERN, PL_PATTERN_OFFSET_XOR)?;
    let s = run_loop(&b.timing, Bounds::RATE, || {
        let (v, d) = timed(|| Ok(dev.verify(key, 0, bytes, PATTERN, PL_PATTERN_OFFSET_XOR)?))?;
        if v.mismatches != 0 {
            return Err(BenchError::Unexpected {
                what: format!("VERIFY of MR {key:#x} after FILL"),
                got: v.to_string(),
                want: "0 mismatches".into(),
            });
        }
        Ok::<Duration, BenchError>(d)
    })?;
    Ok(vec![
        Line::new(Side::Pinlease, f, mib_per_s(&s, bytes)).stats(&s, bytes),
        memcpy_line(b, f, bytes)?,
    ])
}
