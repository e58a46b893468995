//! The device's canary scrubber (docs/abi.md §5.9.1): canaries in the
//! registered pages, none in fresh memory after a revoke, the loss a lost
//! lease reports.

use crate::cases::helpers::{
    expect_debugfs_lease_lost, expect_errno, fdinfo, lease_line, lease_state, line_field,
    names_handle, open, pattern, pins_held, read_events, reap_breaker, spawn_breaker, wait_event,
    wait_lease_state, wait_mr_revoked, BreakTime, Breaker, TestFile, KIB, LEASE_LEN, MIB,
    SCRUB_WAIT, SNAPSHOT_WAIT,
};
use crate::cases::leases::holder_flags;
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, Exit, Mapping};
use crate::uapi::*;
use crate::{ensure, fail, skip};
use pinlease_abi::{self as abi, PL_ACCESS_ALL, PL_ACCESS_READ};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// High half of every canary before the slot is XORed in ("SCRB").
const SCRUB_MAGIC_HI: u32 = (abi::PL_SCRUB_SEED_MAGIC >> 32) as u32;

/// Canary words of MR `key` at their own place in `m` (MR offset = mapping
/// offset: the MR starts at the mapping's start).
fn count_canaries(m: &Mapping, key: u64) -> usize {
    let seed = abi::pl_scrub_seed(key);
    let mut n = 0;
    m.for_each_u64(|off, w| {
        if w == seed ^ off as u64 {
            n += 1;
        }
    });
    n
}

/// Polls `m` until it holds `want` canary words of `key`: how long it took,
/// or None after `timeout` (with the count seen last).
fn wait_canaries(
    m: &Mapping,
    key: u64,
    want: usize,
    timeout: Duration,
) -> Result<Result<Duration, usize>, CaseErr> {
    let t0 = Instant::now();
    loop {
        let n = count_canaries(m, key);
        if n >= want {
            return Ok(Ok(t0.elapsed()));
        }
        if t0.elapsed() >= timeout {
            return Ok(Err(n));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a whole MR of canaries; SKIP when none came at all (the
/// daemon's scrubber is off), FAIL when only some did.
fn need_canaries(t: &mut CaseCtx, m: &Mapping, key: u64, what: &str) -> CaseResult {
    let words = m.len() / 8;
    match wait_canaries(m, key, words, SCRUB_WAIT)? {
        Ok(took) => {
            t.diag(format!(
                "{what}: all {words} words of MR {key:#x} are canaries {took:?} after the wait began"
            ));
            Ok(())
        }
        Err(0) => skip!(
            "no canary of MR {key:#x} within {SCRUB_WAIT:?}: the daemon's scrubber is off \
             (guest-driver/vm/run --scrub-period-ms 0?)"
        ),
        Err(n) => fail!(
            "{what}: only {n} of {words} words are canaries of MR {key:#x} after {SCRUB_WAIT:?}"
        ),
    }
}

/// The (slot, generation ^ offset) halves of a canary word, checked
/// against the key and MR offset `o` (docs/abi.md §5.9.1 table).
fn decode_canary(w: u64, key: u64, o: u64) -> Result<String, CaseErr> {
    let slot = ((w >> 32) as u32) ^ SCRUB_MAGIC_HI;
    let gen = (w as u32) ^ (o as u32);
    ensure!(
        slot == key as u32 && gen == (key >> 32) as u32,
        "word {w:#018x} at MR offset {o:#x}: slot {slot:#x} generation {gen:#x}, \
         but MR {key:#x} has slot {:#x} generation {:#x}",
        key as u32,
        key >> 32
    );
    Ok(format!(
        "{w:#018x} @{o:#x} -> slot {slot:#x} gen {gen:#x} offset {o:#x}"
    ))
}

/// The `flags=` of MR `key`'s `mr:` line in fdinfo.
fn fdinfo_mr_flags(fd: i32, key: u64) -> Result<u32, CaseErr> {
    let fi = fdinfo(fd)?;
    let Some(line) = fi
        .lines()
        .find(|l| l.starts_with("mr:") && names_handle(l, key))
    else {
        fail!("fdinfo lists no MR {key:#x}: {}", fi.replace('\n', " | "));
    };
    let f = line_field(line, "flags").unwrap_or("");
    match u32::from_str_radix(f.trim_start_matches("0x"), 16) {
        Ok(v) => Ok(v),
        Err(_) => fail!("fdinfo MR line without flags=: {line}"),
    }
}

pub(super) fn scrub_canaries_appear_in_registered_pages(t: &mut CaseCtx) -> CaseResult {
    let dev = open()?;
    let len = 64 * KIB;
    let m = Mapping::anon(len)?;
    m.fill_with(0, len, pattern);
    let base = PinleaseRegMr {
        addr: m.addr(),
        length: len as u64,
        ..Default::default()
    };
    // The device scrubs only what it may write.
    let mut ro = PinleaseRegMr {
        access: PL_ACCESS_READ,
        flags: PINLEASE_REG_SCRUB,
        ..base
    };
    expect_errno(
        dev.reg_mr_raw(&mut ro).map(|_| ro.key),
        libc::EINVAL,
        "REG_MR PINLEASE_REG_SCRUB with access READ only",
    )?;
    let r = dev.reg_mr(m.addr(), len as u64, PL_ACCESS_ALL, PINLEASE_REG_SCRUB)?;
    let key = r.key;
    let flags = fdinfo_mr_flags(dev.raw(), key)?;
    ensure!(
        flags & abi::PL_REG_SCRUB != 0,
        "fdinfo flags {flags:#x} of MR {key:#x} lack PL_REG_SCRUB"
    );
    t.diag(format!(
        "MR {key:#x}: {len} bytes of anonymous memory, {} pages, fdinfo flags {flags:#x}, seed {:#018x}",
        r.npages,
        abi::pl_scrub_seed(key)
    ));
    need_canaries(t, &m, key, "anon MR")?;
    for o in [0, 8, 4096 + 24, (len / 2) as u64, (len - 8) as u64] {
        let w = m.get_u64(o as usize);
        t.diag(format!("canary {}", decode_canary(w, key, o)?));
    }
    // The guest overwrites two words; the next rounds count the mismatches
    // and write the canaries back.
    m.set_u64(0, 0);
    m.set_u64(4096 + 16, 0x1234_5678);
    let t0 = Instant::now();
    let seed = abi::pl_scrub_seed(key);
    loop {
        if m.get_u64(0) == seed && m.get_u64(4096 + 16) == seed ^ (4096 + 16) {
            break;
        }
        ensure!(
            t0.elapsed() < SCRUB_WAIT,
            "the scrubber did not rewrite overwritten words within {SCRUB_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.diag(format!(
        "two words the guest overwrote were canaries again after {:?}",
        t0.elapsed()
    ));
    // Deregistered: the scrubber never touches those pages again.
    dev.dereg_mr(key)?;
    m.fill_with(0, len, |_| 0);
    std::thread::sleep(Duration::from_millis(500));
    let n = count_canaries(&m, key);
    ensure!(
        n == 0,
        "{n} canary words of MR {key:#x} reappeared in its pages after DEREG_MR"
    );
    t.diag("no canary in the MR's pages 500 ms after DEREG_MR");
    Ok(())
}

/// One place a canary-looking word was found.
struct StrayHit {
    what: String,
    off: usize,
    word: u64,
}

/// Fresh memory the guest scans for stray canaries.
struct Fresh {
    what: String,
    map: Mapping,
}

/// Scans `fresh` for canaries of MR `key` (length `len`, first page offset
/// 0: a canary sits where its MR offset would, docs/abi.md §5.9.1) and for
/// words naming any MR slot below 65536; returns (key hits, other-slot hits).
fn scan_stray(fresh: &[Fresh], key: u64, len: u64) -> (Vec<StrayHit>, Vec<StrayHit>) {
    let seed = abi::pl_scrub_seed(key);
    let mut hits = Vec::new();
    let mut other = Vec::new();
    for f in fresh {
        let base = f.map.addr() as usize;
        f.map.for_each_u64(|off, w| {
            if (w >> 32) as u32 ^ SCRUB_MAGIC_HI >= 0x1_0000 {
                return;
            }
            let o = w ^ seed;
            let hit = StrayHit {
                what: f.what.clone(),
                off,
                word: w,
            };
            if o < len && o.is_multiple_of(8) && o % 4096 == ((base + off) % 4096) as u64 {
                hits.push(hit);
            } else if other.len() < 64 {
                other.push(hit);
            }
        });
    }
    (hits, other)
}

pub(super) fn revoke_then_no_canary_in_fresh_memory(t: &mut CaseCtx) -> CaseResult {
    let Some(h) = holder_flags(
        t,
        "/mnt/xfs",
        "xfs",
        "scrub-revoke",
        abi::PL_POLICY_REVOKE,
        PINLEASE_REG_SCRUB,
    )?
    else {
        fail!("no lease on XFS");
    };
    let key = h.key;
    need_canaries(t, &h.map, key, "MAP_SHARED XFS file MR")?;
    t.diag(format!(
        "file page cache holds canary {}",
        decode_canary(h.map.get_u64(8), key, 8)?
    ));
    // The MR's physical pages, to tell whether fresh memory reuses them.
    let mr_pages = LEASE_LEN / 4096;
    let freed: std::collections::HashSet<u64> = sys::pagemap_pfns(h.map.addr(), mr_pages)?
        .into_iter()
        .filter(|&p| p != 0)
        .collect();
    let held0 = pins_held()?;
    let pid = spawn_breaker(Breaker::Truncate, &h.file.path)?;
    let t0 = Instant::now();
    let exit = reap_breaker(pid, Duration::from_secs(30), "truncate")?;
    t.diag(format!(
        "truncate returned after {:?}: {exit}",
        t0.elapsed()
    ));
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    let (hit, _) = wait_mr_revoked(t, h.ev.as_raw_fd(), key, Duration::from_secs(5))?;
    let Some(e) = hit else {
        fail!("no MR_REVOKED for MR {key:#x} within 5 s after the truncate");
    };
    ensure!(
        e.args[1] == abi::PL_REVOKE_LEASE_BREAK && e.args[3] == h.lease,
        "MR_REVOKED reason {} lease {:#x}, expected LEASE_BREAK and {:#x}",
        e.args[1],
        e.args[3],
        h.lease
    );
    ensure!(
        lease_state(h.dev.raw(), h.lease)?.as_deref() == Some("revoked"),
        "lease {:#x} not revoked after the truncate",
        h.lease
    );
    let held1 = pins_held()?;
    ensure!(
        held0 - held1 == mr_pages as i64,
        "the break released {} pins, expected {mr_pages}",
        held0 - held1
    );
    // The old mapping lies beyond EOF now (SIGBUS): never touched again.

    // Fresh memory, allocated after the revoke returned: anonymous chunks
    // over a good share of free memory, then page cache of a new file.
    let avail = sys::meminfo_kb("MemAvailable").unwrap_or(0) as usize * 1024;
    const CHUNK: usize = 8 * MIB;
    let budget = (avail / 2).clamp(2 * CHUNK, 160 * MIB);
    let mut fresh = Vec::new();
    let mut reused = std::collections::HashSet::new();
    let mut anon = 0;
    while anon + CHUNK <= budget {
        let m = Mapping::anon(CHUNK)?;
        m.touch();
        for p in sys::pagemap_pfns(m.addr(), CHUNK / 4096)? {
            if freed.contains(&p) {
                reused.insert(p);
            }
        }
        fresh.push(Fresh {
            what: format!("anon chunk {}", fresh.len()),
            map: m,
        });
        anon += CHUNK;
    }
    let pc_file = TestFile::on("/mnt/xfs", "xfs", "scrub-fresh")?;
    let pc_len = 16 * MIB;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&pc_file.path)
            .map_err(|e| CaseErr::Fail(format!("create {}: {e}", pc_file.path)))?;
        let buf = vec![0x11u8; MIB];
        for _ in 0..pc_len / MIB {
            f.write_all(&buf)
                .map_err(|e| CaseErr::Fail(format!("write {}: {e}", pc_file.path)))?;
        }
    }
    let pc = Mapping::new(&pc_file.backing(true), pc_len, true)?;
    let mut sum = 0u64;
    pc.for_each_u64(|_, w| sum = sum.wrapping_add(w));
    for p in sys::pagemap_pfns(pc.addr(), pc_len / 4096)? {
        if freed.contains(&p) {
            reused.insert(p);
        }
    }
    fresh.push(Fresh {
        what: "page cache of a new XFS file".to_string(),
        map: pc,
    });
    let bytes: usize = fresh.iter().map(|f| f.map.len()).sum();
    t.diag(format!(
        "fresh memory: {} MiB anonymous in {} chunks + {} MiB page cache = {} pages \
         (MemAvailable was {} MiB); {} of the MR's {} freed pages are among them (pagemap)",
        anon / MIB,
        anon / CHUNK,
        pc_len / MIB,
        bytes / 4096,
        avail / MIB,
        reused.len(),
        freed.len()
    ));
    // Several scrub periods (20 ms in suite runs): at least 3 passes and 1 s.
    let t0 = Instant::now();
    let mut passes = 0u64;
    while passes < 3 || t0.elapsed() < Duration::from_secs(1) {
        let (hits, other) = scan_stray(&fresh, key, LEASE_LEN as u64);
        passes += 1;
        for o in other.iter().take(4) {
            t.diag(format!(
                "word {:#018x} at {}+{:#x} names MR slot {:#x} (not MR {key:#x})",
                o.word,
                o.what,
                o.off,
                (o.word >> 32) as u32 ^ SCRUB_MAGIC_HI
            ));
        }
        if let Some(x) = hits.first() {
            fail!(
                "pass {passes}: {} canary words of revoked MR {key:#x} in fresh memory, \
                 first {:#018x} at {}+{:#x} (MR offset {:#x})",
                hits.len(),
                x.word,
                x.what,
                x.off,
                x.word ^ abi::pl_scrub_seed(key)
            );
        }
        if passes >= 50 {
            break;
        }
    }
    let words = (bytes / 8) as u64 * passes;
    t.diag(format!(
        "scanned {} MiB ({} words, {} pages) {passes} times over {:?}: {words} words read, \
         0 canary words of revoked MR {key:#x}",
        bytes / MIB,
        bytes / 8,
        bytes / 4096,
        t0.elapsed()
    ));
    drop(fresh);
    // The truncated file: empty, and zeros (no canary) once extended again.
    let meta = std::fs::metadata(&h.file.path)
        .map_err(|e| CaseErr::Fail(format!("stat {}: {e}", h.file.path)))?;
    ensure!(
        meta.len() == 0,
        "truncated file has size {} after the truncate",
        meta.len()
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&h.file.path)
        .map_err(|e| CaseErr::Fail(format!("open {}: {e}", h.file.path)))?;
    f.set_len(LEASE_LEN as u64)
        .map_err(|e| CaseErr::Fail(format!("extend {}: {e}", h.file.path)))?;
    drop(f);
    let data = std::fs::read(&h.file.path)
        .map_err(|e| CaseErr::Fail(format!("read {}: {e}", h.file.path)))?;
    ensure!(
        data.len() == LEASE_LEN && data.iter().all(|&b| b == 0),
        "the truncated file, extended to {LEASE_LEN}, does not read back as zeros"
    );
    t.diag(format!(
        "{}: size 0 after the truncate; extended to {LEASE_LEN} it reads zeros (no canary)",
        h.file.path
    ));
    h.dev.dereg_mr(key)?;
    h.dev.lease_release(h.lease)?;
    h.dev.dereg_mr(h.lkey)?;
    Ok(())
}

pub(super) fn timeout_lost_lease_scrub_reports_loss(t: &mut CaseCtx) -> CaseResult {
    let _bt = BreakTime::set(1)?;
    let Some(h) = holder_flags(
        t,
        "/mnt/xfs",
        "xfs",
        "scrub-lost",
        abi::PL_POLICY_TIMEOUT,
        PINLEASE_REG_SCRUB,
    )?
    else {
        fail!("no lease on XFS");
    };
    let (key, lease) = (h.key, h.lease);
    let ctx = h.dev.query()?.ctx;
    need_canaries(t, &h.map, key, "MAP_SHARED XFS file MR")?;
    let held0 = pins_held()?;
    let t0 = Instant::now();
    let pid = spawn_breaker(Breaker::Truncate, &h.file.path)?;
    let exit = reap_breaker(pid, Duration::from_secs(30), "truncate")?;
    let took = t0.elapsed();
    t.diag(format!("truncate returned after {took:?}: {exit}"));
    ensure!(exit == Exit::Code(0), "truncate child: {exit}");
    ensure!(
        took >= Duration::from_millis(700),
        "truncate did not wait for lease-break-time (1 s): {took:?}"
    );
    wait_lease_state(h.dev.raw(), lease, "lost", Duration::from_secs(5))?;
    let (hit, all) = wait_event(t, h.ev.as_raw_fd(), Duration::from_secs(5), |e| {
        e.kind == abi::PL_EVENT_SCRUB_LOST_ACCESS && e.args[0] == lease
    })?;
    let Some(e) = hit else {
        fail!("no SCRUB_LOST_ACCESS for lease {lease:#x} within 5 s after it was LOST");
    };
    let npages = (LEASE_LEN / 4096) as u64;
    ensure!(
        e.ctx == ctx && e.args[1] == key && e.args[2] == npages && e.args[3] == 0,
        "SCRUB_LOST_ACCESS ctx {:#x} args {:#x?}: expected ctx {ctx:#x}, MR {key:#x}, {npages} pages",
        e.ctx,
        e.args
    );
    let lost = all
        .iter()
        .find(|x| x.kind == abi::PL_EVENT_LEASE_LOST && x.args[0] == lease);
    ensure!(
        all.iter()
            .any(|x| x.kind == abi::PL_EVENT_LEASE_BROKEN && x.args[0] == lease),
        "no LEASE_BROKEN for lease {lease:#x}"
    );
    let Some(lost) = lost else {
        fail!("no LEASE_LOST for lease {lease:#x} before SCRUB_LOST_ACCESS");
    };
    ensure!(
        lost.seq < e.seq,
        "SCRUB_LOST_ACCESS (seq {}) before LEASE_LOST (seq {})",
        e.seq,
        lost.seq
    );
    // Once per lease: later passes are counted, not announced again.
    let more = read_events(h.ev.as_raw_fd(), Duration::from_millis(300))?;
    ensure!(
        !more
            .iter()
            .any(|x| x.kind == abi::PL_EVENT_SCRUB_LOST_ACCESS && x.args[0] == lease),
        "a second SCRUB_LOST_ACCESS for lease {lease:#x}"
    );
    // The pages the file no longer owns still get canaries: read them back
    // through the device (one more lost access).
    h.local.fill_with(0, 4096, |_| 0);
    h.dev.read(h.lkey, 0, key, 0, 4096)?;
    let seed = abi::pl_scrub_seed(key);
    let n = (0..512)
        .filter(|&i| h.local.get_u64(i * 8) == seed ^ (i as u64 * 8))
        .count();
    ensure!(
        n == 512,
        "only {n} of 512 words of the LOST MR's first page are canaries"
    );
    t.diag(format!(
        "LOST MR {key:#x}: its first page (no longer the file's) holds 512 canary words, read by DMA"
    ));
    let line = lease_line(&fdinfo(h.dev.raw())?, lease).unwrap_or_default();
    t.diag(format!("fdinfo: {line}"));
    ensure!(
        line_field(&line, "state") == Some("lost") && line_field(&line, "kernel") == Some("gone"),
        "fdinfo lease line: {line}"
    );
    expect_debugfs_lease_lost(t, lease)?;
    // The runner records status-scrub-lost.{json,txt}: the lease's
    // lost_accesses / scrub_lost_accesses.
    sys::snapshot("scrub-lost", SNAPSHOT_WAIT);
    ensure!(
        pins_held()? == held0,
        "pins changed while the lease was LOST: {held0} -> {}",
        pins_held()?
    );
    h.dev.dereg_mr(key)?;
    ensure!(
        pins_held()? == held0 - npages as i64,
        "DEREG_MR of the LOST lease's MR did not release its pins"
    );
    h.dev.lease_release(lease)?;
    h.dev.dereg_mr(h.lkey)?;
    Ok(())
}
