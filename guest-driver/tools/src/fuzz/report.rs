//! The run's summary, as console marker lines (guest-driver/include/
//! console_markers.sh): one `PINLEASE-FUZZ-IOCTL` line per ioctl with its
//! calls by result errno, one `PINLEASE-FUZZ-CHECK` line per check, and
//! the `PINLEASE-FUZZ` line with the totals and the verdict.

use super::checks::Check;
use super::counts::{Action, Snapshot, Target, ERRNO_SLOTS};
use super::ioctls;
use super::opts::Opts;
use crate::markers;
use crate::sys::errno_name;

/// A finished run.
#[derive(Clone, Debug)]
pub struct Report {
    pub opts: Opts,
    pub elapsed_s: f64,
    pub counts: Snapshot,
    pub checks: Vec<Check>,
}

fn errno_label(e: usize) -> String {
    match e {
        0 => "ok".to_string(),
        e if e == ERRNO_SLOTS - 1 => format!("E{e}+"),
        e => match errno_name(e as i32) {
            "E?" => format!("E{e}"),
            n => n.to_string(),
        },
    }
}

impl Report {
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (slot, errs) in self.counts.ioctl.iter().enumerate() {
            let calls: u64 = errs.iter().sum();
            let mut l = format!(
                "{} name={} calls={calls}",
                markers::FUZZ_IOCTL,
                ioctls::slot_name(slot)
            );
            for (e, n) in errs.iter().enumerate().filter(|(_, n)| **n > 0) {
                l.push_str(&format!(" {}={n}", errno_label(e)));
            }
            out.push(l);
        }
        for c in &self.checks {
            out.push(format!(
                "{} name={} verdict={} detail={}",
                markers::FUZZ_CHECK,
                c.name,
                if c.ok { "ok" } else { "failed" },
                c.detail.replace(char::is_whitespace, "_")
            ));
        }
        let total = self.counts.ioctls_total();
        let mut l = format!(
            "{} seed={} seconds={} threads={} procs={} elapsed_s={:.1} ioctls={total} \
             ioctls_ok={} ioctls_per_s={:.0}",
            markers::FUZZ,
            self.opts.seed,
            self.opts.seconds,
            self.opts.threads,
            self.opts.procs,
            self.elapsed_s,
            self.counts.ioctls_ok(),
            total as f64 / self.elapsed_s.max(0.001)
        );
        for t in Target::ALL {
            l.push_str(&format!(
                " {}={}",
                t.name(),
                self.counts.target.get(t as usize).copied().unwrap_or(0)
            ));
        }
        for a in Action::ALL {
            l.push_str(&format!(" {}={}", a.name(), self.counts.action(a)));
        }
        let failed = self.failed();
        if failed.is_empty() {
            l.push_str(" verdict=ok");
        } else {
            l.push_str(&format!(" verdict=failed failed={}", failed.join(",")));
        }
        out.push(l);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_counts_checks_and_verdict() {
        let mut ioctl = vec![vec![0u64; ERRNO_SLOTS]; ioctls::slots()];
        ioctl[1][0] = 5;
        ioctl[1][libc::EFAULT as usize] = 2;
        ioctl[ioctls::slots() - 1][libc::ENOTTY as usize] = 3;
        let r = Report {
            opts: Opts {
                seconds: 2,
                seed: 7,
                threads: 2,
                procs: 3,
                dev: "/dev/pinlease0".into(),
                bound: crate::fuzz::opts::DEFAULT_BOUND,
            },
            elapsed_s: 2.0,
            counts: Snapshot {
                ioctl,
                target: vec![10, 0, 0, 0, 0],
                action: vec![1; Action::ALL.len()],
            },
            checks: vec![
                Check {
                    name: "pins",
                    ok: false,
                    detail: "3 leaked".into(),
                },
                Check {
                    name: "device",
                    ok: true,
                    detail: "fine".into(),
                },
            ],
        };
        let l = r.lines();
        let (io, ck, fz) = (markers::FUZZ_IOCTL, markers::FUZZ_CHECK, markers::FUZZ);
        assert!(l.contains(&format!("{io} name=REG_MR calls=7 ok=5 EFAULT=2")));
        assert!(l.contains(&format!("{io} name=OTHER calls=3 ENOTTY=3")));
        assert!(l.contains(&format!("{ck} name=pins verdict=failed detail=3_leaked")));
        let last = l.last().unwrap();
        assert!(last.starts_with(&format!("{fz} seed=7 seconds=2 threads=2 procs=3")));
        assert!(last.contains(" ioctls=10 ioctls_ok=5 ioctls_per_s=5 dev_fd=10"));
        assert!(last.contains(" kill_worker=1"));
        assert!(last.ends_with(" verdict=failed failed=pins"), "{last}");
        assert_eq!(
            errno_label(ERRNO_SLOTS - 1),
            format!("E{}+", ERRNO_SLOTS - 1)
        );
    }
}
