//! `verbs_reg_mr_file_verdicts`: ibv_reg_mr of each verbs row's mapping
//! and access (verdicts.rs VERBS_ROWS) on pinlease_ib0, the kernel's
//! answer beside the verbs rule's and the suite's own REG_MR row's.

use crate::cases::helpers::{running_kver, TestFile, TMPFS_DIR};
use crate::cases::verbs::{field, file_content, IbDriver, VERBS_CHECK};
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys;
use crate::verdicts::{self, Expect, Mem, VerbsRow, VERBS_ROWS, VERBS_RULE_KERNELS};
use crate::{fail, skip};
use std::process::{Command, Stdio};

/// What one `pl-verbs-check verdict` printed: the answer and the pin
/// counters' deltas around ibv_reg_mr.
struct Measured {
    got: Expect,
    acquired: i64,
    released: i64,
}

/// Runs `pl-verbs-check verdict WHAT ...` for `row` on `dev`.
fn measure(dev: &str, what: &str, row: &VerbsRow) -> Result<Measured, CaseErr> {
    let rw = |b: bool| if b { "rw" } else { "ro" };
    let share = if row.shared { "shared" } else { "private" };
    let out = Command::new(VERBS_CHECK)
        .args([
            "verdict",
            what,
            share,
            rw(row.map_writable),
            rw(row.mr_writable),
            dev,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CaseErr::Fail(format!("running {VERBS_CHECK} verdict: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text
        .lines()
        .find_map(|l| l.strip_prefix("pl-verbs-check: verdict "))
    else {
        fail!(
            "{VERBS_CHECK} verdict {what} ({}): no verdict line: {}",
            out.status,
            text.replace('\n', " | ")
        );
    };
    let word = line.split_whitespace().next().unwrap_or("");
    let got = if word == "ok" {
        Expect::Granted
    } else {
        // pl-verbs-check prints strerrorname_np(): the names errno_name() knows
        match (1..200).find(|&e| sys::errno_name(e) == word) {
            Some(e) => Expect::Errno(e),
            None => fail!("{VERBS_CHECK} verdict {what}: unknown answer {line:?}"),
        }
    };
    let num = |k: &str| -> Result<i64, CaseErr> {
        field(line, k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| CaseErr::Fail(format!("no {k}= in {line:?}")))
    };
    Ok(Measured {
        got,
        acquired: num("pins_acquired")?,
        released: num("pins_released")?,
    })
}

/// A file for `row` on its filesystem with the cases' content; Err(Skip)
/// when the filesystem is not there.
fn row_file(row: &VerbsRow) -> Result<(TestFile, Option<sys::TmpfsMount>), CaseErr> {
    let (mnt, fstype, tmpfs) = match row.mem {
        Mem::Xfs => ("/mnt/xfs", "xfs", None),
        Mem::Ext4 => ("/mnt/ext4", "ext4", None),
        Mem::Tmpfs => (
            TMPFS_DIR,
            "tmpfs",
            Some(sys::TmpfsMount::new(TMPFS_DIR, "8m")?),
        ),
        other => fail!("{}: no file for {other:?}", row.id),
    };
    let f = TestFile::on(mnt, fstype, &format!("verbs-{}", row.id))?;
    std::fs::write(&f.path, file_content())
        .map_err(|e| CaseErr::Fail(format!("write {}: {e}", f.path)))?;
    Ok((f, tmpfs))
}

pub(in crate::cases) fn verbs_reg_mr_file_verdicts(t: &mut CaseCtx) -> CaseResult {
    let kver = running_kver()?;
    let ib = IbDriver::with_policy("none")?;
    let known = VERBS_RULE_KERNELS.contains(&kver);
    if !known {
        t.diag(format!(
            "{kver} ({}): not a kernel the verbs rule was read for ({:?}): the answers are reported, not judged",
            verdicts::uname_release(),
            VERBS_RULE_KERNELS.map(|v| v.to_string())
        ));
    }
    let mut wrong = Vec::new();
    let mut measured = 0;
    for row in VERBS_ROWS {
        // The file (and tmpfs) live until the row is measured.
        let (file, _tmpfs) = match row.mem {
            Mem::Anon | Mem::Memfd => (None, None),
            _ => match row_file(row) {
                Ok((f, m)) => (Some(f), m),
                Err(CaseErr::Skip(why)) => {
                    t.diag(format!("{}: not measured: {why}", row.id));
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let what = match (&file, row.mem) {
            (Some(f), _) => f.path.clone(),
            (None, Mem::Anon) => "anon".to_string(),
            (None, _) => "memfd".to_string(),
        };
        let m = measure(&ib.dev, &what, row)?;
        measured += 1;
        let want = row.expected(kver);
        let reg_mr = match row.reg_mr_row {
            Some(id) => format!(
                "REG_MR row {id}: {}",
                verdicts::row(id).expected(kver).word()
            ),
            None => "no REG_MR row".to_string(),
        };
        t.diag(format!(
            "verbs-verdict {} {} expected {} ({}; pins +{}/-{}; {reg_mr})",
            row.id,
            m.got.word(),
            want.word(),
            row.gup_flags(kver),
            m.acquired,
            m.released
        ));
        let pages = (crate::cases::helpers::LEASE_LEN / 4096) as i64;
        let pins_ok = match m.got {
            // pinned at ibv_reg_mr, all back by ibv_dereg_mr
            Expect::Granted => m.acquired >= pages,
            Expect::Errno(_) => m.acquired == m.released,
        };
        if !pins_ok {
            wrong.push(format!(
                "{}: {} with pins +{}/-{}",
                row.id,
                m.got.word(),
                m.acquired,
                m.released
            ));
        }
        if known && m.got != want {
            wrong.push(format!(
                "{}: ibv_reg_mr {}, the verbs rule expects {} on {kver} ({})",
                row.id,
                m.got.word(),
                want.word(),
                row.gup_flags(kver)
            ));
        }
    }
    if measured == 0 {
        skip!("no row could be measured");
    }
    if !wrong.is_empty() {
        fail!("{}", wrong.join("; "));
    }
    Ok(())
}
