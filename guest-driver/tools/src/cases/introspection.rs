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
