//! Registration figures: REG_MR + DEREG_MR pairs of one range
//! (`regdereg_Np`), REG_MR alone and DEREG_MR alone of one page (`reg_1p`,
//! `dereg_1p`), and one registration of 64 MiB or of all the guest can
//! get (`reg_64m`, `reg_max`) against the bare pin of the same range.

use super::barepin::BarePin;
use super::figures::{Figure, Side};
use super::{
    id_bytes, run_loop, timed, Bench, BenchError, BenchResult, Bounds, Line, Stats, MIB_BYTES,
};
use crate::dev::Dev;
use crate::sys::{self, Mapping};
use pinlease_abi::PL_ACCESS_ALL;
use std::time::{Duration, Instant};

/// MRs registered, then deregistered, per round of `reg_1p`/`dereg_1p`.
const ONE_PAGE_MRS: usize = 64;

/// What `reg_max` leaves the rest of the guest (the tool, the page arrays
/// and page lists, the kernel's own): MemAvailable minus this.
const HEADROOM_MIB: u64 = 64;

/// An anonymous buffer of `bytes`, every page faulted in by a write, as
/// ibv-bench's memset does (the same THP backing on both sides).
pub(super) fn touched(bytes: u64) -> BenchResult<Mapping> {
    let m = Mapping::anon(bytes as usize)?;
    m.populate_writing(TOUCH_BYTE);
    Ok(m)
}

/// The byte bench buffers are populated with (ibv-bench memsets 0x5a).
const TOUCH_BYTE: u8 = 0x5a;

fn size_of(f: &Figure) -> BenchResult<u64> {
    id_bytes(f.id).ok_or_else(|| BenchError::Setup(format!("figure {}: no size in its id", f.id)))
}

/// `regdereg_Np`: REG_MR + DEREG_MR of the same N pages, pairs per second.
pub(super) fn regdereg(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let bytes = size_of(f)?;
    let dev = b.open()?;
    let m = touched(bytes)?;
    let s = run_loop(&b.timing, Bounds::RATE, || {
        timed(|| {
            let r = dev.reg_mr(m.addr(), bytes, PL_ACCESS_ALL, 0)?;
            dev.dereg_mr(r.key)?;
            Ok(())
        })
        .map(|((), d)| d)
    })?;
    Ok(vec![Line::new(Side::Pinlease, f, s.rate(1.0))
        .stats(&s, bytes)
        .detail("median_us", us(s.median_secs()))])
}

fn us(secs: f64) -> String {
    format!("{:.1}", secs * 1e6)
}

/// Rounds of `ONE_PAGE_MRS` one-page MRs of one buffer: each registered,
/// then each deregistered; the REG times or the DEREG times.
fn one_page_rounds(b: &Bench, time_reg: bool) -> BenchResult<Stats> {
    let dev = b.open()?;
    let page = sys::page_size() as u64;
    let m = touched(page * ONE_PAGE_MRS as u64)?;
    let round = |times: &mut Vec<Duration>| -> BenchResult<()> {
        let mut keys = Vec::with_capacity(ONE_PAGE_MRS);
        for i in 0..ONE_PAGE_MRS as u64 {
            let (r, d) = timed(|| Ok(dev.reg_mr(m.addr() + i * page, page, PL_ACCESS_ALL, 0)?))?;
            keys.push(r.key);
            if time_reg {
                times.push(d);
            }
        }
        for k in keys {
            let ((), d) = timed(|| Ok(dev.dereg_mr(k)?))?;
            if !time_reg {
                times.push(d);
            }
        }
        Ok(())
    };
    // Warm-up and loop count whole rounds; the figure is per operation.
    let t0 = Instant::now();
    while t0.elapsed() < b.timing.warmup {
        round(&mut Vec::new())?;
    }
    let mut times = Vec::new();
    let no_warmup = Bounds {
        warmup: false,
        ..Bounds::RATE
    };
    run_loop(&b.timing, no_warmup, || {
        timed(|| round(&mut times)).map(|((), d)| d)
    })?;
    Ok(Stats::from_times(times))
}

/// `reg_1p`: the median time of one REG_MR of one page (us).
pub(super) fn reg_1p(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let s = one_page_rounds(b, true)?;
    Ok(vec![Line::new(Side::Pinlease, f, s.median_secs() * 1e6)
        .stats(&s, sys::page_size() as u64)
        .detail("mrs_per_round", ONE_PAGE_MRS)])
}

/// `dereg_1p`: the median time of one DEREG_MR of a one-page MR (us).
pub(super) fn dereg_1p(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let s = one_page_rounds(b, false)?;
    Ok(vec![Line::new(Side::Pinlease, f, s.median_secs() * 1e6)
        .stats(&s, sys::page_size() as u64)
        .detail("mrs_per_round", ONE_PAGE_MRS)])
}

/// How many bytes `reg_max` registers and what limited it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MaxSize {
    pub bytes: u64,
    pub limited_by: &'static str,
}

/// `--max-mib` MiB, or less when the guest's MemAvailable (minus
/// `HEADROOM_MIB`) or the device's `max_pages_per_mr` is smaller: whole
/// MiB, at least one.
pub(super) fn max_size(
    max_mib: u64,
    mem_available_kib: Option<u64>,
    max_pages_per_mr: u64,
    page: u64,
) -> MaxSize {
    let mut size = MaxSize {
        bytes: max_mib * MIB_BYTES,
        limited_by: "max_mib",
    };
    if let Some(kib) = mem_available_kib {
        let avail = (kib / 1024).saturating_sub(HEADROOM_MIB) * MIB_BYTES;
        if avail < size.bytes {
            size = MaxSize {
                bytes: avail,
                limited_by: "mem_available",
            };
        }
    }
    let dev_max = max_pages_per_mr * page / MIB_BYTES * MIB_BYTES;
    if dev_max < size.bytes {
        size = MaxSize {
            bytes: dev_max,
            limited_by: "max_pages_per_mr",
        };
    }
    size.bytes = size.bytes.max(MIB_BYTES);
    size
}

/// `reg_64m`, `reg_max`: one REG_MR of the whole buffer (the median of a
/// few, DEREG_MR untimed) and the module's bare pin of the same range.
pub(super) fn reg_big(b: &Bench, f: &'static Figure) -> BenchResult<Vec<Line>> {
    let dev = b.open()?;
    let (bytes, limited_by) = match id_bytes(f.id) {
        Some(n) => (n, None),
        None => {
            let q = dev.query()?;
            let s = max_size(
                b.max_mib,
                sys::meminfo_kb("MemAvailable"),
                q.max_pages_per_mr.into(),
                sys::page_size() as u64,
            );
            (s.bytes, Some(s.limited_by))
        }
    };
    eprintln!(
        "pinlease-guest bench: {}: {} MiB{}",
        f.id,
        bytes / MIB_BYTES,
        limited_by.map_or(String::new(), |l| format!(" (limited by {l})"))
    );
    let m = touched(bytes)?;
    // How the buffer is backed decides what a pin costs (a THP folio is
    // pinned in one step): the lines say it.
    let thp = thp_mode(&std::fs::read_to_string(THP_ENABLED).unwrap_or_default());
    let anon_huge_kb = sys::meminfo_kb("AnonHugePages");
    let reg = reg_once_stats(b, &dev, &m, bytes)?;
    let mut pin = BarePin::open()?;
    let mut unpin_ns = Vec::new();
    let bare = run_loop(&b.timing, Bounds::FEW, || {
        let r = pin.pin(m.addr(), bytes)?;
        unpin_ns.push(r.unpin_ns);
        Ok(Duration::from_nanos(r.pin_ns))
    })?;
    unpin_ns.sort_unstable();
    let mut lines = vec![
        Line::new(Side::Pinlease, f, reg.median_secs() * 1e3).stats(&reg, bytes),
        Line::new(Side::Barepin, f, bare.median_secs() * 1e3)
            .stats(&bare, bytes)
            .detail(
                "unpin_ms",
                format!("{:.3}", unpin_ns[unpin_ns.len() / 2] as f64 / 1e6),
            )
            .detail("via", "debugfs_bench_pin"),
    ];
    for line in &mut lines {
        line.details.push(("thp", thp.clone()));
        if let Some(kb) = anon_huge_kb {
            line.details.push(("anon_huge_kb", kb.to_string()));
        }
    }
    if let Some(l) = limited_by {
        for line in &mut lines {
            line.details.push(("limited_by", l.to_string()));
            line.details.push(("requested_mib", b.max_mib.to_string()));
        }
    }
    Ok(lines)
}

const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// The selected THP mode in `text` ("always [madvise] never" -> "madvise");
/// "unknown" when none is bracketed (no THP in the kernel, file unreadable).
fn thp_mode(text: &str) -> String {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .unwrap_or("unknown")
        .to_string()
}

/// REG_MR of all of `m` timed, DEREG_MR after it untimed: a few times.
fn reg_once_stats(b: &Bench, dev: &Dev, m: &Mapping, bytes: u64) -> BenchResult<Stats> {
    run_loop(&b.timing, Bounds::FEW, || {
        let (r, d) = timed(|| Ok(dev.reg_mr(m.addr(), bytes, PL_ACCESS_ALL, 0)?))?;
        dev.dereg_mr(r.key)?;
        Ok(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thp_mode_is_the_bracketed_word() {
        assert_eq!(thp_mode("always [madvise] never\n"), "madvise");
        assert_eq!(thp_mode("[always] madvise never"), "always");
        assert_eq!(thp_mode("always madvise [never]"), "never");
        assert_eq!(thp_mode(""), "unknown");
        assert_eq!(thp_mode("always madvise never"), "unknown");
    }

    #[test]
    fn reg_max_takes_what_the_guest_can_give() {
        let page = 4096;
        let dev_pages = 1 << 20; // 4 GiB
        assert_eq!(
            max_size(1024, Some(4 << 20), dev_pages, page),
            MaxSize {
                bytes: 1024 * MIB_BYTES,
                limited_by: "max_mib"
            }
        );
        // 400 MiB available: 336 MiB after the headroom.
        assert_eq!(
            max_size(1024, Some(400 * 1024), dev_pages, page),
            MaxSize {
                bytes: 336 * MIB_BYTES,
                limited_by: "mem_available"
            }
        );
        assert_eq!(
            max_size(1024, None, 1 << 16, page),
            MaxSize {
                bytes: 256 * MIB_BYTES,
                limited_by: "max_pages_per_mr"
            }
        );
        assert_eq!(max_size(1024, Some(1024), dev_pages, page).bytes, MIB_BYTES);
    }
}
