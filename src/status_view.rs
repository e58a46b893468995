//! Renders the admin socket's status reply as text tables for people;
//! `pinlease status --json` prints the reply itself.

use std::fmt::Write;

use serde_json::Value;

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(x) => x.to_string(),
    }
}

/// `MAJ:MIN ino N gen G`: `dev` is the guest kernel's `sb->s_dev`, whose
/// major number is the bits above the low 20 (include/linux/kdev_t.h).
fn file(v: &Value) -> String {
    match v.get("file") {
        Some(f) if !f.is_null() => {
            let dev = f.get("dev").and_then(Value::as_u64).unwrap_or(0);
            format!(
                "{}:{} ino {} gen {}",
                dev >> 20,
                dev & 0xfffff,
                s(f, "ino"),
                s(f, "generation")
            )
        }
        _ => "-".into(),
    }
}

/// How long before `now_ms` the Unix-ms time `key` of `v` was.
fn age(v: &Value, key: &str, now_ms: u64) -> String {
    match v.get(key).and_then(Value::as_u64) {
        Some(t) => format!("{:.1}s ago", now_ms.saturating_sub(t) as f64 / 1000.0),
        None => "-".into(),
    }
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

/// Text for a `status` reply: the device, then the fault plan.
pub fn render(reply: &Value) -> String {
    let mut out = render_device(reply);
    if let Some(f) = reply.get("faults").filter(|f| f.is_object()) {
        out.push('\n');
        out.push_str(&render_faults(f));
    }
    out
}

/// The FAULTS section: seed, rules with hits and fires, and the faults
/// injected by point class and action.
pub fn render_faults(f: &Value) -> String {
    let mut out = String::new();
    let rules = f
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "FAULTS (seed {}, {} rule(s))",
        s(f, "seed"),
        rules.len()
    );
    if !rules.is_empty() {
        table(
            &mut out,
            &[
                "ID", "POINT", "ACTION", "PARAMS", "PROB", "SKIP", "COUNT", "HITS", "FIRES",
            ],
            rules
                .iter()
                .map(|r| {
                    let params = s(r, "params");
                    vec![
                        s(r, "id"),
                        s(r, "point"),
                        s(r, "action"),
                        if params.is_empty() {
                            "-".into()
                        } else {
                            params
                        },
                        s(r, "probability"),
                        s(r, "skip"),
                        match r.get("count").and_then(Value::as_u64) {
                            Some(0) | None => "-".into(),
                            Some(n) => n.to_string(),
                        },
                        s(r, "hits"),
                        s(r, "fires"),
                    ]
                })
                .collect(),
        );
    }
    let injected = f
        .get("injected")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if injected.is_empty() {
        let _ = writeln!(out, "  injected: none");
    } else {
        let _ = writeln!(out, "  injected by point class x action:");
        for i in &injected {
            let _ = writeln!(
                out,
                "    {:<18} {:<16} {}",
                s(i, "class"),
                s(i, "action"),
                s(i, "count")
            );
        }
    }
    out
}

fn render_device(reply: &Value) -> String {
    let mut out = String::new();
    let connected = reply.get("connected") == Some(&Value::Bool(true));
    let _ = writeln!(
        out,
        "frontend: {} (connections served: {})",
        if connected {
            "connected"
        } else {
            "not connected"
        },
        s(reply, "connections")
    );
    let st = match reply.get("status") {
        Some(st) if !st.is_null() => st,
        _ => {
            let _ = writeln!(out, "no device state yet (no frontend has connected)");
            return out;
        }
    };
    if !connected {
        let _ = writeln!(out, "showing the state the last frontend left behind");
    }
    let arr = |k: &str| {
        st.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let now_ms = st
        .get("taken_at_unix_ms")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let regions: Vec<String> = arr("memory_regions")
        .iter()
        .map(|r| {
            format!(
                "{}+{}MiB",
                s(r, "gpa"),
                r.get("size").and_then(Value::as_u64).unwrap_or(0) >> 20
            )
        })
        .collect();
    if st.get("needs_reset") == Some(&Value::Bool(true)) {
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
        s(st, "pinned_pages"),
        s(st, "pins")
    );

    let contexts = arr("contexts");
    let _ = writeln!(out, "\ncontexts ({})", contexts.len());
    table(
        &mut out,
        &[
            "HANDLE", "PID", "COMM", "STATE", "MRS", "LEASES", "CHILDREN",
        ],
        contexts
            .iter()
            .map(|c| {
                let children: Vec<String> = c
                    .get("children")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|ch| match ch.get("mr") {
                                Some(mr) if !mr.is_null() => format!(
                                    "{} {} of {} refs {}",
                                    s(ch, "handle"),
                                    s(ch, "kind"),
                                    s(ch, "mr"),
                                    s(ch, "refs")
                                ),
                                _ => format!("{} {}", s(ch, "handle"), s(ch, "kind")),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                vec![
                    s(c, "handle"),
                    s(c, "pid"),
                    s(c, "comm"),
                    s(c, "state"),
                    s(c, "mrs"),
                    s(c, "leases"),
                    if children.is_empty() {
                        "-".into()
                    } else {
                        children.join(", ")
                    },
                ]
            })
            .collect(),
    );

    let mrs = arr("mrs");
    let _ = writeln!(out, "\nmemory regions ({})", mrs.len());
    table(
        &mut out,
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
                let state = match m.get("revoke_reason") {
                    Some(Value::String(r)) => format!("{} ({r})", s(m, "state")),
                    _ => s(m, "state"),
                };
                let state = match m.get("imported_from") {
                    Some(Value::String(src)) => format!("{state}, import of {src}"),
                    _ => state,
                };
                vec![
                    s(m, "key"),
                    s(m, "context"),
                    s(m, "pages"),
                    s(m, "length"),
                    s(m, "access"),
                    state,
                    file(m),
                    s(m, "file_offset"),
                    s(m, "lease"),
                    match m.get("scrub") {
                        Some(sc) if sc.is_object() => format!(
                            "{}/{}/{}",
                            s(sc, "rounds"),
                            s(sc, "canaries_written"),
                            s(sc, "mismatches")
                        ),
                        _ => "-".into(),
                    },
                ]
            })
            .collect(),
    );

    let leases = arr("leases");
    let _ = writeln!(out, "\nlayout leases ({})", leases.len());
    table(
        &mut out,
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
                let end = match l.get("end") {
                    Some(Value::Number(n)) => n.to_string(),
                    _ => "EOF".into(),
                };
                vec![
                    s(l, "handle"),
                    file(l),
                    format!("{}..{end}", s(l, "start")),
                    s(l, "holder"),
                    s(l, "owner_pid"),
                    s(l, "policy"),
                    s(l, "state"),
                    age(l, "since_unix_ms", now_ms),
                    s(l, "mrs"),
                    s(l, "pinned_pages"),
                    match l.get("scrub_lost_accesses").and_then(Value::as_u64) {
                        Some(n) if n > 0 => format!("{} (scrub {n})", s(l, "lost_accesses")),
                        _ => s(l, "lost_accesses"),
                    },
                ]
            })
            .collect(),
    );

    let c = st.get("counters").cloned().unwrap_or(Value::Null);
    let _ = writeln!(out, "\ncounters");
    let _ = writeln!(
        out,
        "  bytes read {}  bytes written {}  revokes {}  lost accesses {}  memory map updates {}  device resets {}",
        s(&c, "bytes_read"),
        s(&c, "bytes_written"),
        s(&c, "revokes"),
        s(&c, "lost_accesses"),
        s(&c, "memory_map_updates"),
        s(&c, "device_resets")
    );
    if let Some(sc) = c.get("scrub").filter(|v| v.is_object()) {
        let period = sc.get("period_ms").and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            out,
            "  scrubber {}  rounds {}  MR passes {}  canaries written {}  mismatches {}  lost accesses {}",
            if period == 0 {
                "off".to_string()
            } else {
                format!("every {period} ms")
            },
            s(sc, "rounds"),
            s(sc, "mr_passes"),
            s(sc, "canaries_written"),
            s(sc, "mismatches"),
            s(sc, "lost_accesses")
        );
    }
    if let Some(ev) = c.get("events") {
        let _ = writeln!(
            out,
            "  events queued {}  delivered {}  dropped {}  backlog {}",
            s(ev, "queued"),
            s(ev, "delivered"),
            s(ev, "dropped"),
            s(ev, "backlog")
        );
    }
    let _ = writeln!(out, "  bad input rejected: {}", s(&c, "bad_input_total"));
    if let Some(Value::Object(b)) = c.get("bad_input") {
        for (k, v) in b {
            let _ = writeln!(out, "    {k}: {v}");
        }
    }
    let _ = writeln!(out, "  requests by opcode and status:");
    if let Some(Value::Object(r)) = c.get("requests") {
        for (op, by) in r {
            let parts: Vec<String> = by
                .as_object()
                .map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect())
                .unwrap_or_default();
            let _ = writeln!(out, "    {op:<16} {}", parts.join("  "));
        }
    }
    out
}
