//! Renders the admin socket's status reply as text tables for people;
//! `pinlease status --json` prints the reply itself. The reply is read
//! typed first ([`read`]), so the tables name fields the compiler checks.

pub mod read;

#[cfg(test)]
mod tests;

use std::fmt::Write;

use serde::Deserialize;
use serde_json::Value;

use crate::faults::FaultsStatus;
use crate::model::status::{
    ChildStatus, ContextStatus, CounterStatus, FileStatus, LeaseStatus, MrStatus, StatusSnapshot,
};
pub use read::{FrontendReply, StatusReply};

/// An absent value, as the tables show it.
const NONE: &str = "-";

fn or_none<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| NONE.into(), |v| v.to_string())
}

/// A number as the JSON reply writes it (`1.0`, `0.25`), for the plan's
/// probabilities.
fn json_number(x: f64) -> String {
    Value::from(x).to_string()
}

/// `MAJ:MIN ino N gen G`: `dev` is the guest kernel's `sb->s_dev`, whose
/// major number is the bits above the low 20 (include/linux/kdev_t.h).
fn file(f: Option<&FileStatus>) -> String {
    match f {
        Some(f) => format!(
            "{}:{} ino {} gen {}",
            f.dev >> 20,
            f.dev & 0xfffff,
            f.ino,
            f.generation
        ),
        None => NONE.into(),
    }
}

/// How long before `now_ms` the Unix-ms time `t` was.
fn age(t: u64, now_ms: u64) -> String {
    format!("{:.1}s ago", now_ms.saturating_sub(t) as f64 / 1000.0)
}

fn table(out: &mut String, header: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |out: &mut String, cells: Vec<String>| {
        let l: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        let _ = writeln!(out, "  {}", l.join("  ").trim_end());
    };
    line(out, header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(out, r);
    }
}

/// Text for a `status` reply as the admin socket sent it; a reply this
/// client cannot read gives one line saying why.
pub fn render(reply: &Value) -> String {
    match StatusReply::from_json(reply) {
        Ok(r) => render_reply(&r),
        Err(e) => format!("status reply cannot be read: {e}\n"),
    }
}

/// Text for a `status` reply: each frontend's device, then the fault plan.
/// A daemon with several sockets shows each frontend under a heading
/// naming its index and socket.
pub fn render_reply(reply: &StatusReply) -> String {
    let mut out = String::new();
    let several = reply.frontends.len() > 1;
    for f in &reply.frontends {
        if several {
            let _ = writeln!(out, "=== FRONTEND {} ({}) ===", f.index, f.socket);
        }
        out.push_str(&render_device(f));
        out.push('\n');
    }
    out.push_str(&render_faults(&reply.faults));
    out
}

/// Reads the `faults` of a `status` or `fault-list` reply.
pub fn read_faults(faults: &Value) -> serde_json::Result<FaultsStatus> {
    FaultsStatus::deserialize(faults)
}

/// The FAULTS section: seed, rules with hits and fires, and the faults
/// injected by point class and action.
pub fn render_faults(f: &FaultsStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "FAULTS (seed {}, {} rule(s))", f.seed, f.rules.len());
    if !f.rules.is_empty() {
        table(
            &mut out,
            &[
                "ID", "POINT", "ACTION", "PARAMS", "PROB", "SKIP", "COUNT", "HITS", "FIRES",
            ],
            f.rules
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.point.clone(),
                        r.action.clone(),
                        or_none(Some(&r.params).filter(|p| !p.is_empty())),
                        json_number(r.probability),
                        r.skip.to_string(),
                        or_none(Some(r.count).filter(|&n| n > 0)),
                        r.hits.to_string(),
                        r.fires.to_string(),
                    ]
                })
                .collect(),
        );
    }
    if f.injected.is_empty() {
        let _ = writeln!(out, "  injected: none");
    } else {
        let _ = writeln!(out, "  injected by point class x action:");
        for i in &f.injected {
            let _ = writeln!(out, "    {:<18} {:<16} {}", i.class, i.action, i.count);
        }
    }
    out
}

fn render_device(reply: &FrontendReply) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "frontend: {} (connections served: {})",
        if reply.connected {
            "connected"
        } else {
            "not connected"
        },
        reply.connections
    );
    let Some(st) = &reply.status else {
        let _ = writeln!(out, "no device state yet (no frontend has connected)");
        return out;
    };
    if !reply.connected {
        let _ = writeln!(out, "showing the state the last frontend left behind");
    }
    render_totals(&mut out, st);
    render_contexts(&mut out, &st.contexts);
    render_mrs(&mut out, &st.mrs);
    render_leases(&mut out, &st.leases, st.taken_at_unix_ms);
    render_counters(&mut out, &st.counters);
    out
}

/// Guest memory, pins, and whether the device needs a reset.
fn render_totals(out: &mut String, st: &StatusSnapshot) {
    let regions: Vec<String> = st
        .memory_regions
        .iter()
        .map(|r| format!("{}+{}MiB", r.gpa, r.size >> 20))
        .collect();
    if st.needs_reset {
        let _ = writeln!(
            out,
            "device NEEDS RESET (fault injected): requests answered EIO"
        );
    }
    let _ = writeln!(
        out,
        "guest memory: {}   pinned pages: {}   pins: {}",
        if regions.is_empty() {
            "none".into()
        } else {
            regions.join(" ")
        },
        st.pinned_pages,
        st.pins
    );
}

fn child(ch: &ChildStatus) -> String {
    match &ch.mr {
        Some(mr) => format!(
            "{} {} of {mr} refs {}",
            ch.handle,
            ch.kind,
            or_none(ch.refs)
        ),
        None => format!("{} {}", ch.handle, ch.kind),
    }
}

fn render_contexts(out: &mut String, contexts: &[ContextStatus]) {
    let _ = writeln!(out, "\ncontexts ({})", contexts.len());
    table(
        out,
        &[
            "HANDLE", "PID", "COMM", "STATE", "MRS", "LEASES", "CHILDREN",
        ],
        contexts
            .iter()
            .map(|c| {
                let children: Vec<String> = c.children.iter().map(child).collect();
                vec![
                    c.handle.clone(),
                    c.pid.to_string(),
                    c.comm.clone(),
                    c.state.to_string(),
                    c.mrs.to_string(),
                    c.leases.to_string(),
                    if children.is_empty() {
                        NONE.into()
                    } else {
                        children.join(", ")
                    },
                ]
            })
            .collect(),
    );
}

/// An MR's state with why it was revoked and what it imports.
fn mr_state(m: &MrStatus) -> String {
    let mut state = m.state.to_string();
    if let Some(r) = &m.revoke_reason {
        state = format!("{state} ({r})");
    }
    if let Some(src) = &m.imported_from {
        state = format!("{state}, import of {src}");
    }
    state
}

fn render_mrs(out: &mut String, mrs: &[MrStatus]) {
    let _ = writeln!(out, "\nmemory regions ({})", mrs.len());
    table(
        out,
        &[
            "KEY",
            "CONTEXT",
            "PAGES",
            "LENGTH",
            "ACCESS",
            "STATE",
            "FILE",
            "FILE-OFFSET",
            "LEASE",
            "SCRUB(ROUNDS/WORDS/MISMATCHES)",
        ],
        mrs.iter()
            .map(|m| {
                vec![
                    m.key.clone(),
                    m.context.clone(),
                    m.pages.to_string(),
                    m.length.to_string(),
                    m.access.clone(),
                    mr_state(m),
                    file(m.file.as_ref()),
                    or_none(m.file_offset),
                    or_none(m.lease.as_ref()),
                    or_none(m.scrub.as_ref().map(|sc| {
                        format!("{}/{}/{}", sc.rounds, sc.canaries_written, sc.mismatches)
                    })),
                ]
            })
            .collect(),
    );
}

fn render_leases(out: &mut String, leases: &[LeaseStatus], now_ms: u64) {
    let _ = writeln!(out, "\nlayout leases ({})", leases.len());
    table(
        out,
        &[
            "LEASE",
            "FILE",
            "RANGE",
            "HOLDER",
            "PID",
            "POLICY",
            "STATE",
            "SINCE",
            "MRS",
            "PAGES",
            "LOST-ACCESSES",
        ],
        leases
            .iter()
            .map(|l| {
                vec![
                    l.handle.clone(),
                    file(Some(&l.file)),
                    format!(
                        "{}..{}",
                        l.start,
                        l.end.map_or_else(|| "EOF".into(), |e| e.to_string())
                    ),
                    l.holder.clone(),
                    l.owner_pid.to_string(),
                    l.policy.to_string(),
                    l.state.to_string(),
                    age(l.since_unix_ms, now_ms),
                    l.mrs.to_string(),
                    l.pinned_pages.to_string(),
                    match l.scrub_lost_accesses {
                        0 => l.lost_accesses.to_string(),
                        n => format!("{} (scrub {n})", l.lost_accesses),
                    },
                ]
            })
            .collect(),
    );
}

/// `label value` pairs, two spaces apart, as the counter lines show them.
fn counts<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let parts: Vec<String> = pairs.into_iter().map(|(l, v)| format!("{l} {v}")).collect();
    parts.join("  ")
}

fn render_counters(out: &mut String, c: &CounterStatus) {
    let _ = writeln!(out, "\ncounters");
    let totals = [
        ("bytes read", c.bytes_read),
        ("bytes written", c.bytes_written),
        ("revokes", c.revokes),
        ("lost accesses", c.lost_accesses),
        ("memory map updates", c.memory_map_updates),
        ("device resets", c.device_resets),
    ];
    let _ = writeln!(out, "  {}", counts(totals));
    let sc = &c.scrub;
    let scrub = [
        ("rounds", sc.rounds),
        ("MR passes", sc.mr_passes),
        ("canaries written", sc.canaries_written),
        ("mismatches", sc.mismatches),
        ("lost accesses", sc.lost_accesses),
    ];
    let _ = writeln!(
        out,
        "  scrubber {}  {}",
        if sc.period_ms == 0 {
            "off".to_string()
        } else {
            format!("every {} ms", sc.period_ms)
        },
        counts(scrub)
    );
    let ev = &c.events;
    let events = [
        ("queued", ev.queued),
        ("delivered", ev.delivered),
        ("dropped", ev.dropped),
        ("backlog", ev.backlog),
    ];
    let _ = writeln!(out, "  events {}", counts(events));
    let _ = writeln!(out, "  bad input rejected: {}", c.bad_input_total);
    for (k, v) in &c.bad_input {
        let _ = writeln!(out, "    {k}: {v}");
    }
    let _ = writeln!(out, "  requests by opcode and status:");
    for (op, by) in &c.requests {
        let by_status = counts(by.iter().map(|(k, v)| (k.as_str(), *v)));
        let _ = writeln!(out, "    {op:<16} {by_status}");
    }
}
