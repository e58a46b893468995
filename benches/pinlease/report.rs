//! The rows the bench prints, and how figures are formatted.

use std::io::Write as _;

pub(crate) struct Row {
    pub(crate) section: &'static str,
    pub(crate) what: String,
    pub(crate) value: String,
    pub(crate) ratio: String,
    pub(crate) note: String,
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) targets: Vec<(String, String, bool)>,
}

impl Report {
    pub(crate) fn row(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        value: impl Into<String>,
        ratio: impl Into<String>,
        note: impl Into<String>,
    ) {
        let r = Row {
            section,
            what: what.into(),
            value: value.into(),
            ratio: ratio.into(),
            note: note.into(),
        };
        eprintln!(
            "  [{}] {}: {} {} {}",
            r.section, r.what, r.value, r.ratio, r.note
        );
        self.rows.push(r);
    }

    pub(crate) fn target(
        &mut self,
        what: impl Into<String>,
        measured: impl Into<String>,
        met: bool,
    ) {
        self.targets.push((what.into(), measured.into(), met));
    }

    pub(crate) fn print(&self) {
        let mut out = String::new();
        out.push_str("\n| # | measurement | value | ratio | notes |\n");
        out.push_str("|---|---|---:|---:|---|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.section, r.what, r.value, r.ratio, r.note
            ));
        }
        out.push_str("\n| target | measured | result |\n|---|---|---|\n");
        for (what, measured, met) in &self.targets {
            out.push_str(&format!(
                "| {what} | {measured} | {} |\n",
                if *met { "PASS" } else { "MISS" }
            ));
        }
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

pub(crate) fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.1} /s")
    }
}

pub(crate) fn fmt_gbs(bytes_per_s: f64) -> String {
    format!("{:.2} GB/s", bytes_per_s / 1e9)
}

pub(crate) fn fmt_us(seconds: f64) -> String {
    format!("{:.2} us", seconds * 1e6)
}
