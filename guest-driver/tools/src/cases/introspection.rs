//! Introspection: the MRs a context lists in its fdinfo and the debugfs
//! contexts and mrs tables.

use crate::cases::helpers::{debugfs_table, fdinfo, names_handle, pair, PAIR_LEN};
use crate::ktap::{CaseCtx, CaseResult};
use crate::{ensure, fail};
use std::time::{Duration, Instant};

pub(super) fn fdinfo_lists_mrs(t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let ctx = p.dev.query()?.ctx;
    let text = fdinfo(p.dev.raw())?;
    let mr_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("mr:"))
        .collect();
    let show = || text.replace('\n', " | ");
    ensure!(
        names_handle(&text, ctx),
        "fdinfo does not name ctx {ctx:#x}: {}",
        show()
    );
    for k in [p.ka, p.kb] {
        let line = mr_lines.iter().find(|l| l.contains(&format!("key={k:#x}")));
        let Some(line) = line else {
            fail!("fdinfo has no 'mr: key={k:#x}' line: {}", show());
        };
        ensure!(
            line.contains(&format!("pages={}", PAIR_LEN / 4096)),
            "fdinfo line for {k:#x} lacks pages={}: {line}",
            PAIR_LEN / 4096
        );
    }
    ensure!(
        mr_lines.len() == 2,
        "fdinfo lists {} MRs, expected 2: {}",
        mr_lines.len(),
        show()
    );
    t.diag(format!("fdinfo: {}", show()));
    p.dev.dereg_mr(p.ka)?;
    let text = fdinfo(p.dev.raw())?;
    ensure!(
        !text.contains(&format!("key={:#x}", p.ka)),
        "fdinfo still lists deregistered key {:#x}: {}",
        p.ka,
        text.replace('\n', " | ")
    );
    p.dev.dereg_mr(p.kb)?;
    let text = fdinfo(p.dev.raw())?;
    let n = text
        .lines()
        .filter(|l| l.trim_start().starts_with("mr:"))
        .count();
    ensure!(n == 0, "fdinfo lists {n} MRs after deregistering all");
    Ok(())
}

pub(super) fn debugfs_tables_list_contexts_and_mrs(t: &mut CaseCtx) -> CaseResult {
    let p = pair()?;
    let ctx = p.dev.query()?.ctx;
    let contexts = debugfs_table("contexts")?;
    let mrs = debugfs_table("mrs")?;
    ensure!(
        names_handle(&contexts, ctx),
        "debugfs contexts does not name ctx {ctx:#x}:\n{contexts}"
    );
    for k in [p.ka, p.kb] {
        ensure!(
            names_handle(&mrs, k),
            "debugfs mrs does not name key {k:#x}:\n{mrs}"
        );
    }
    t.diag(format!("contexts:\n{contexts}"));
    t.diag(format!("mrs:\n{mrs}"));
    let (ka, kb) = (p.ka, p.kb);
    drop(p);
    let start = Instant::now();
    loop {
        let contexts = debugfs_table("contexts")?;
        let mrs = debugfs_table("mrs")?;
        let stale_mr = names_handle(&mrs, ka) || names_handle(&mrs, kb);
        if !stale_mr && !names_handle(&contexts, ctx) {
            break;
        }
        if start.elapsed() > Duration::from_secs(2) {
            fail!("2 s after close, debugfs still lists ctx {ctx:#x} or its MRs:\ncontexts:\n{contexts}\nmrs:\n{mrs}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Writes `command` to a fresh open of bench_pin; the errno it fails with.
fn bench_pin_errno(f: &mut std::fs::File, command: &str) -> Result<i32, String> {
    use std::io::Write;
    match f.write(command.as_bytes()) {
        Ok(n) => Err(format!("bench_pin took {command:?} ({n} bytes)")),
        Err(e) => Ok(e.raw_os_error().unwrap_or(0)),
    }
}

/// The module-wide debugfs `bench_pin` (the guest benchmark's bare pin):
/// nothing to read before a pin, every malformed command refused with
/// EINVAL, and a pin that fails half-way (the range's second page is not
/// mapped) answers the pin's error with nothing left pinned.
pub(super) fn debugfs_bench_pin_refuses_bad_input(t: &mut CaseCtx) -> CaseResult {
    use crate::sys::Mapping;
    use std::io::Read;
    let path = crate::bench::barepin::BENCH_PIN_PATH;
    let open = || {
        std::fs::File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| crate::ktap::CaseErr::Fail(format!("open {path}: {e}")))
    };
    let mut f = open()?;
    let mut buf = [0u8; 128];
    match f.read(&mut buf) {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
        other => fail!("read of {path} before any pin: {other:?}, expected ENODATA"),
    }
    let m = Mapping::anon(2 * 4096)?;
    m.touch();
    let a = m.addr();
    let long = format!("{a:#x} 4096{}", " ".repeat(200));
    for command in [
        "garbage".to_string(),
        format!("{a:#x}"),
        format!("{a:#x} 4096 4096"),
        format!("{:#x} 4096", a + 1),
        format!("{a:#x} 4097"),
        format!("{a:#x} 0"),
        format!("{a:#x} {}", 5u64 << 30),
        "0xfffffffffffff000 8192".to_string(),
        long,
    ] {
        let errno = bench_pin_errno(&mut f, &command).map_err(crate::ktap::CaseErr::Fail)?;
        ensure!(
            errno == libc::EINVAL,
            "bench_pin {:?}: errno {errno}, expected EINVAL ({})",
            command.chars().take(40).collect::<String>(),
            libc::EINVAL
        );
    }
    // Half mapped: the first page pins, the second faults.
    let half = Mapping::anon(2 * 4096)?;
    half.touch();
    // SAFETY: unmapping the second page of our own mapping; `half` is not
    // read there again (Mapping's drop unmaps the range, a no-op for it).
    unsafe { libc::munmap((half.addr() + 4096) as *mut libc::c_void, 4096) };
    let errno = bench_pin_errno(&mut f, &format!("{:#x} 8192", half.addr()))
        .map_err(crate::ktap::CaseErr::Fail)?;
    t.diag(format!("pin over an unmapped page: errno {errno}"));
    ensure!(
        errno == libc::EFAULT,
        "pin over an unmapped page: errno {errno}, expected EFAULT"
    );
    match crate::sys::wait_pin_balance(Duration::from_secs(2)) {
        Ok(Ok(_)) => {}
        Ok(Err((acq, rel))) => {
            fail!("after the failed pin: nr_foll_pin_acquired {acq} != released {rel}")
        }
        Err(e) => fail!("pin counters: {e}"),
    }
    // A good pin after all that, and its times read back.
    let mut f = open()?;
    let mut pin = crate::bench::barepin::BarePin::open()
        .map_err(|e| crate::ktap::CaseErr::Fail(e.to_string()))?;
    let times = pin
        .pin(a, 8192)
        .map_err(|e| crate::ktap::CaseErr::Fail(e.to_string()))?;
    t.diag(format!("pin of 2 pages: {times:?}"));
    match f.read(&mut buf) {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        other => fail!("another open's read after this one's pin: {other:?}, expected ENODATA (results are per open)"),
    }
}
