//! Memory counters: pins (`nr_foll_pin_*` in /proc/vmstat), page frames
//! (/proc/self/pagemap) and /proc/meminfo.

use super::files::read_to_string;
use super::mapping::page_size;
use crate::dev::{SysError, SysResult};
use std::time::{Duration, Instant};

/// (nr_foll_pin_acquired, nr_foll_pin_released) of /proc/vmstat.
///
/// vmstat counters are per-CPU with a fold threshold: the totals lag by up
/// to tens of pins until the next fold. Writing /proc/sys/vm/stat_refresh
/// (root) folds them first, so the values are exact.
pub fn pin_counters() -> SysResult<(u64, u64)> {
    let _ = std::fs::write("/proc/sys/vm/stat_refresh", "1");
    let text = read_to_string("/proc/vmstat")?;
    parse_pin_counters(&text).ok_or_else(|| {
        SysError::new(
            "/proc/vmstat has no nr_foll_pin_acquired/nr_foll_pin_released",
            libc::ENOENT,
        )
    })
}

pub fn parse_pin_counters(vmstat: &str) -> Option<(u64, u64)> {
    let get = |name: &str| {
        vmstat.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
    };
    Some((get("nr_foll_pin_acquired")?, get("nr_foll_pin_released")?))
}

/// Waits up to `timeout` for acquired == released; returns the last values.
pub fn wait_pin_balance(timeout: Duration) -> SysResult<Result<(u64, u64), (u64, u64)>> {
    let start = Instant::now();
    loop {
        let (a, r) = pin_counters()?;
        if a == r {
            return Ok(Ok((a, r)));
        }
        if start.elapsed() >= timeout {
            return Ok(Err((a, r)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Page frame numbers of the `npages` pages from `addr` in this process
/// (/proc/self/pagemap, root only): 0 for a page not present.
pub fn pagemap_pfns(addr: u64, npages: usize) -> SysResult<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| SysError::new("open /proc/self/pagemap", e.raw_os_error().unwrap_or(0)))?;
    let mut buf = vec![0u8; npages * 8];
    let off = addr / page_size() as u64 * 8;
    f.read_exact_at(&mut buf, off).map_err(|e| {
        SysError::new(
            format!("read /proc/self/pagemap at {off:#x}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })?;
    Ok(buf
        .chunks_exact(8)
        .map(|c| {
            let e = u64::from_le_bytes(c.try_into().unwrap());
            // bit 63: present; bits 0-54: PFN (0 without CAP_SYS_ADMIN)
            if e >> 63 == 1 {
                e & ((1 << 55) - 1)
            } else {
                0
            }
        })
        .collect())
}

pub fn meminfo_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_counters_parse() {
        let v = "nr_free_pages 1\nnr_foll_pin_acquired 120\nnr_foll_pin_released 118\n";
        assert_eq!(parse_pin_counters(v), Some((120, 118)));
        assert_eq!(parse_pin_counters("nr_free_pages 1\n"), None);
    }
}
