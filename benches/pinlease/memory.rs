//! Section 5: the daemon's memory per pinned page.

use std::collections::HashMap;

use pinlease_abi::*;
use pinlease_testkit::frontend::client::{Client, RegMrArgs};

use crate::machine::smaps;
use crate::report::Report;
use crate::{client, spawn_daemon, MIB, PAGE};

pub(crate) fn bench_memory(rep: &mut Report) {
    eprintln!("5. daemon memory per pinned page");
    const MRS: u64 = 16;
    const PAGES: u64 = 65_536;
    let daemon = spawn_daemon();
    // 4 GiB of distinct guest pages: a memfd is backed lazily and REG_MR
    // never touches the pages, so this costs page-table entries only.
    let mut c = client(&daemon, MRS * PAGES * PAGE + 64 * MIB);
    let ctx = c.create_context(1, "bench-mem").expect("CREATE_CONTEXT");
    let base = c
        .frontend_mut()
        .alloc(MRS * PAGES * PAGE, PAGE)
        .expect("guest pages");
    let pages =
        |i: u64| -> Vec<u64> { (0..PAGES).map(|j| base + (i * PAGES + j) * PAGE).collect() };
    let pid = daemon.pid().to_string();
    // Warm up the request path (gather buffer, page-list decode) once.
    for _ in 0..2 {
        let k = c
            .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages(0)))
            .expect("REG_MR")
            .key;
        c.dereg_mr(ctx, k).expect("DEREG_MR");
    }
    let m0 = smaps(&pid);
    let mut keys = Vec::new();
    let reg = |c: &mut Client, keys: &mut Vec<u64>, range: std::ops::Range<u64>| {
        for i in range {
            keys.push(
                c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages(i)))
                    .expect("REG_MR")
                    .key,
            );
        }
    };
    reg(&mut c, &mut keys, 0..MRS / 2);
    let m8 = smaps(&pid);
    reg(&mut c, &mut keys, MRS / 2..MRS);
    let m16 = smaps(&pid);
    for k in keys.drain(..) {
        c.dereg_mr(ctx, k).expect("DEREG_MR");
    }
    let m_after = smaps(&pid);
    // Register the same 16 MRs again: if Anonymous does not grow, what
    // DEREG_MR left behind is memory the allocator keeps for reuse (and
    // pin-counter chunks, which are never freed), not a leak.
    for i in 0..MRS {
        keys.push(
            c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages(i)))
                .expect("REG_MR")
                .key,
        );
    }
    let m_again = smaps(&pid);
    for k in keys {
        c.dereg_mr(ctx, k).expect("DEREG_MR");
    }
    let get = |m: &HashMap<String, u64>, k: &str| *m.get(k).unwrap_or(&0) as f64;
    let total_pages = (MRS * PAGES) as f64;
    let anon_total = (get(&m16, "Anonymous") - get(&m0, "Anonymous")) / total_pages;
    let anon_marginal = (get(&m16, "Anonymous") - get(&m8, "Anonymous")) / (total_pages / 2.0);
    let dirty_total = (get(&m16, "Private_Dirty") - get(&m0, "Private_Dirty")) / total_pages;
    let rss_total = (get(&m16, "Rss") - get(&m0, "Rss")) / total_pages;
    // The model's own structures: 8 bytes per page-list entry (Box<[u64]>)
    // plus a u16 pin counter per distinct page, allocated in 16 MiB chunks
    // (4096 counters = 8 KiB) on first use.
    let chunks = (MRS * PAGES).div_ceil(4096);
    let structural = (8.0 * total_pages + chunks as f64 * 8192.0) / total_pages;
    rep.row(
        "5",
        format!("daemon Anonymous memory per pinned page ({MRS} MRs x {PAGES} distinct pages)"),
        format!("{anon_total:.2} B/page"),
        format!("{:.2} x structural", anon_total / structural),
        format!(
            "+{:.1} MiB for {} pages; Private_Dirty {dirty_total:.2} B/page, Rss {rss_total:.2} B/page (Rss includes guest pages the daemon read)",
            (get(&m16, "Anonymous") - get(&m0, "Anonymous")) / MIB as f64,
            MRS * PAGES
        ),
    );
    rep.row(
        "5",
        "marginal: MRs 9-16 only",
        format!("{anon_marginal:.2} B/page"),
        "",
        format!(
            "after DEREG_MR of all 16: Anonymous {:+.1} MiB vs before; registering the 16 again: {:+.1} MiB more",
            (get(&m_after, "Anonymous") - get(&m0, "Anonymous")) / MIB as f64,
            (get(&m_again, "Anonymous") - get(&m_after, "Anonymous")) / MIB as f64
        ),
    );
    rep.row(
        "5",
        "model structural cost",
        format!("{structural:.2} B/page"),
        "",
        "8 B page-list entry + 2 B u16 pin counter (8 KiB chunk per 4096 pages)",
    );
    rep.target(
        "< 16 bytes of daemon memory per pinned page (Anonymous)",
        format!("{anon_total:.2} B/page"),
        anon_total < 16.0,
    );
    drop(c);
    drop(daemon);
}
