//! KTAP version 1 runner: fixed case order, panics caught, and after every
//! case the contract's checks (pin balance, kernel log).

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// Why a case did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseErr {
    Skip(String),
    Fail(String),
}

impl<E: std::error::Error> From<E> for CaseErr {
    fn from(e: E) -> CaseErr {
        CaseErr::Fail(e.to_string())
    }
}

pub type CaseResult = Result<(), CaseErr>;

/// Fails the case with a formatted reason.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { return Err($crate::ktap::CaseErr::Fail(format!($($arg)*))) };
}

/// Skips the case with a formatted reason.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => { return Err($crate::ktap::CaseErr::Skip(format!($($arg)*))) };
}

/// Case functions that each run one shared body with fixed arguments:
/// `VIS fn NAME => BODY(ARGS);` defines `VIS fn NAME(t) -> CaseResult`
/// returning `BODY(t, ARGS)`.
#[macro_export]
macro_rules! case_fns {
    ($($(#[$meta:meta])* $vis:vis fn $name:ident => $body:ident($($arg:expr),* $(,)?);)*) => {$(
        $(#[$meta])*
        $vis fn $name(t: &mut $crate::ktap::CaseCtx) -> $crate::ktap::CaseResult {
            $body(t, $($arg),*)
        }
    )*};
}

/// Fails the case unless `cond`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond { $crate::fail!($($arg)*); }
    };
}

/// What a case can tell the runner besides its result.
#[derive(Default, Debug)]
pub struct CaseCtx {
    pub diags: Vec<String>,
}

impl CaseCtx {
    /// A "# " diagnostic line, printed with the case's result.
    pub fn diag(&mut self, s: impl Into<String>) {
        self.diags.push(s.into());
    }
}

pub type CaseFn = fn(&mut CaseCtx) -> CaseResult;

pub struct Case {
    pub name: &'static str,
    pub run: CaseFn,
}

/// Checks run around every case (the contract's pin balance and kernel log
/// checks in the guest; fakes in host tests).
pub trait Checks {
    /// Called before the case runs (e.g. save the kernel log position).
    fn before(&mut self, name: &str);
    /// Problems found after the case; empty when all is well.
    fn after(&mut self, name: &str) -> Vec<String>;
}

/// Glob with `*` and `?`; a pattern list separated by ',' or whitespace
/// matches if any element does. Empty matches everything.
pub fn glob_match_any(patterns: &str, name: &str) -> bool {
    let mut any = false;
    for p in patterns.split(|c: char| c == ',' || c.is_whitespace()) {
        if p.is_empty() {
            continue;
        }
        any = true;
        if glob_match(p, name) {
            return true;
        }
    }
    !any
}

/// Whether the pattern list names `name` exactly (an element equal to it,
/// no wildcard involved).
pub fn names_exactly(patterns: &str, name: &str) -> bool {
    patterns
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|p| p == name)
}

/// The cases `patterns` selects, in run order: the `cases` its globs
/// match, then the `opt_in` cases it names exactly (a glob never selects
/// an opt-in case: they may crash the kernel under test).
pub fn select<'a>(patterns: &str, cases: &'a [Case], opt_in: &'a [Case]) -> Vec<&'a Case> {
    cases
        .iter()
        .filter(|c| glob_match_any(patterns, c.name))
        .chain(opt_in.iter().filter(|c| names_exactly(patterns, c.name)))
        .collect()
}

pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// KTAP forbids '#' in names and newlines anywhere on a result line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " | ")
}

static PANIC_MSG: Mutex<Option<String>> = Mutex::new(None);

/// Installs a panic hook that records the message (printed as a KTAP
/// diagnostic by the runner) instead of writing to stderr.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .map(|n| format!(" (thread {n})"))
            .unwrap_or_default();
        let text = format!("panic{thread}: {msg}{loc}");
        if let Ok(mut g) = PANIC_MSG.lock() {
            match g.as_mut() {
                Some(prev) => {
                    prev.push_str("; ");
                    prev.push_str(&text);
                }
                None => *g = Some(text),
            }
        }
    }));
}

fn take_panic_msg() -> Option<String> {
    PANIC_MSG.lock().ok().and_then(|mut g| g.take())
}

/// Reports a case that runs for long (a hang in the kernel shows up as
/// nothing at all on the console otherwise): after `after`, prints the
/// case name and the kernel stacks of this process's threads to stderr
/// (stdout is locked by the runner), then every `after` again.
type WatchState = (
    Mutex<Option<(String, std::time::Instant)>>,
    std::sync::Condvar,
);

struct Watchdog {
    state: std::sync::Arc<WatchState>,
}

impl Watchdog {
    fn start(after: std::time::Duration) -> Watchdog {
        let state: std::sync::Arc<WatchState> =
            std::sync::Arc::new((Mutex::new(None), std::sync::Condvar::new()));
        let st = state.clone();
        let _ = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let (lock, cv) = &*st;
                let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (ng, _) = cv.wait_timeout(g, after).unwrap_or_else(|e| e.into_inner());
                    g = ng;
                    if let Some((name, start)) = g.as_ref() {
                        if start.elapsed() >= after {
                            eprintln!(
                                "# watchdog: case {name} still running after {} s",
                                start.elapsed().as_secs()
                            );
                            for s in task_stacks() {
                                eprintln!("# watchdog: {s}");
                            }
                        }
                    }
                }
            });
        Watchdog { state }
    }

    fn set(&self, case: Option<&str>) {
        let (lock, cv) = &*self.state;
        if let Ok(mut g) = lock.lock() {
            *g = case.map(|c| (c.to_string(), std::time::Instant::now()));
        }
        cv.notify_all();
    }
}

fn task_stacks() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            let stack = std::fs::read_to_string(p.join("stack")).unwrap_or_default();
            format!(
                "task {} ({}): {}",
                e.file_name().to_string_lossy(),
                comm.trim(),
                stack.replace('\n', " | ")
            )
        })
        .collect()
}

/// Summary of a run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub pass: usize,
    pub skip: usize,
    pub fail: usize,
}

impl Summary {
    pub fn all_passed(&self) -> bool {
        self.fail == 0
    }
}

/// Runs `cases` (already filtered, in order), printing KTAP to `out`.
pub fn run(cases: &[&Case], checks: &mut dyn Checks, out: &mut dyn Write) -> Summary {
    let mut sum = Summary::default();
    let watchdog = Watchdog::start(std::time::Duration::from_secs(60));
    let _ = writeln!(out, "KTAP version 1");
    let _ = writeln!(out, "1..{}", cases.len());
    let _ = out.flush();
    for (i, case) in cases.iter().enumerate() {
        let n = i + 1;
        // Announced first, so the host can name the case a kernel crash hit
        // (guest-driver/vm/console.py, KTAP_RUNNING).
        let _ = writeln!(
            out,
            "# running {n} {}",
            one_line(&case.name.replace('#', "_"))
        );
        let _ = out.flush();
        checks.before(case.name);
        watchdog.set(Some(case.name));
        let mut ctx = CaseCtx::default();
        let _ = take_panic_msg();
        let res = catch_unwind(AssertUnwindSafe(|| (case.run)(&mut ctx)));
        let mut res = match res {
            Ok(r) => r,
            Err(payload) => {
                let msg = take_panic_msg().unwrap_or_else(|| {
                    payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".to_string())
                });
                Err(CaseErr::Fail(format!("case panicked: {msg}")))
            }
        };
        // Panics of helper threads that the case turned into errors.
        if let Some(m) = take_panic_msg() {
            ctx.diag(m);
        }
        watchdog.set(None);
        let problems = checks.after(case.name);
        if !problems.is_empty() {
            let joined = problems.join("; ");
            res = match res {
                Ok(()) | Err(CaseErr::Skip(_)) => Err(CaseErr::Fail(joined)),
                Err(CaseErr::Fail(r)) => Err(CaseErr::Fail(format!("{r}; {joined}"))),
            };
        }
        for d in &ctx.diags {
            for l in d.lines() {
                let _ = writeln!(out, "# {}: {}", case.name, l);
            }
        }
        let name = one_line(&case.name.replace('#', "_"));
        match res {
            Ok(()) => {
                sum.pass += 1;
                let _ = writeln!(out, "ok {n} {name}");
            }
            Err(CaseErr::Skip(r)) => {
                sum.skip += 1;
                let _ = writeln!(out, "ok {n} {name} # SKIP {}", one_line(&r));
            }
            Err(CaseErr::Fail(r)) => {
                sum.fail += 1;
                for l in r.lines() {
                    let _ = writeln!(out, "# {}: {}", case.name, l);
                }
                let mut short = one_line(&r);
                if short.len() > 300 {
                    let mut cut = 300;
                    while !short.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    short.truncate(cut);
                    short.push_str("...");
                }
                // Never let the reason read as a KTAP directive.
                let up = short.to_ascii_uppercase();
                if up.starts_with("SKIP") || up.starts_with("TODO") {
                    short.insert_str(0, "FAIL: ");
                }
                let _ = writeln!(out, "not ok {n} {name} # {short}");
            }
        }
        let _ = out.flush();
    }
    let _ = writeln!(
        out,
        "# pinlease-guest: pass:{} fail:{} skip:{} total:{}",
        sum.pass,
        sum.fail,
        sum.skip,
        cases.len()
    );
    let _ = out.flush();
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(_: &mut CaseCtx) -> CaseResult {
        Ok(())
    }

    #[test]
    fn opt_in_cases_run_only_when_named_exactly() {
        let cases = [
            Case {
                name: "a_one",
                run: noop,
            },
            Case {
                name: "b_two",
                run: noop,
            },
        ];
        let opt = [Case {
            name: "a_crash",
            run: noop,
        }];
        let names =
            |p: &str| -> Vec<&str> { select(p, &cases, &opt).iter().map(|c| c.name).collect() };
        assert_eq!(names("*"), ["a_one", "b_two"]);
        assert_eq!(names(""), ["a_one", "b_two"]);
        assert_eq!(names("a_*"), ["a_one"]);
        assert_eq!(names("a_crash"), ["a_crash"]);
        assert_eq!(names("*,a_crash"), ["a_one", "b_two", "a_crash"]);
        assert_eq!(names("a_cras?"), Vec::<&str>::new());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("pin_*", "pin_anon"));
        assert!(!glob_match("pin_*", "dma_write"));
        assert!(glob_match("*_xfs*", "pin_shared_writable_xfs"));
        assert!(glob_match("dma_?ead", "dma_read"));
        assert!(!glob_match("dma_?ead", "dma_reads"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
        assert!(glob_match_any("", "x"), "empty list means all");
        assert!(glob_match_any("  ", "x"));
        assert!(glob_match_any("dma_*,pin_anon", "pin_anon"));
        assert!(glob_match_any("dma_* pin_anon", "dma_read"));
        assert!(!glob_match_any("dma_*,pin_anon", "pin_memfd"));
        assert!(names_exactly("dma_*,pin_anon", "pin_anon"));
        assert!(names_exactly("x pin_anon", "pin_anon"));
        assert!(!names_exactly("pin_*", "pin_anon"));
        assert!(!names_exactly("*", "pin_anon"));
    }

    struct FakeChecks {
        log: Vec<String>,
        fail_after: &'static str,
    }

    impl Checks for FakeChecks {
        fn before(&mut self, name: &str) {
            self.log.push(format!("before {name}"));
        }
        fn after(&mut self, name: &str) -> Vec<String> {
            self.log.push(format!("after {name}"));
            if name == self.fail_after {
                vec!["pin balance: acquired 10 released 8".to_string()]
            } else {
                Vec::new()
            }
        }
    }

    fn c_ok(t: &mut CaseCtx) -> CaseResult {
        t.diag("a note");
        Ok(())
    }
    fn c_skip(_: &mut CaseCtx) -> CaseResult {
        crate::skip!("no hugepages (nr_hugepages {})", 0)
    }
    fn c_fail(_: &mut CaseCtx) -> CaseResult {
        crate::ensure!(1 + 1 == 3, "expected {} got {}\nsecond line", 3, 2);
        Ok(())
    }
    fn c_panic(_: &mut CaseCtx) -> CaseResult {
        let v: Vec<u8> = Vec::new();
        let _ = v[3];
        Ok(())
    }
    fn c_leak(_: &mut CaseCtx) -> CaseResult {
        Ok(())
    }
    fn c_skip_word(_: &mut CaseCtx) -> CaseResult {
        crate::fail!("SKIPPED nothing")
    }
    fn c_err(_: &mut CaseCtx) -> CaseResult {
        Err(crate::dev::SysError::new(
            "PINLEASE_IOC_DMA(op=WRITE)",
            libc::ERANGE,
        ))?;
        Ok(())
    }

    #[test]
    fn ktap_output() {
        install_panic_hook();
        let cases = [
            Case {
                name: "ok_case",
                run: c_ok,
            },
            Case {
                name: "skip_case",
                run: c_skip,
            },
            Case {
                name: "fail_case",
                run: c_fail,
            },
            Case {
                name: "panic_case",
                run: c_panic,
            },
            Case {
                name: "leak_case",
                run: c_leak,
            },
            Case {
                name: "skip_word",
                run: c_skip_word,
            },
            Case {
                name: "err_case",
                run: c_err,
            },
        ];
        let refs: Vec<&Case> = cases.iter().collect();
        let mut checks = FakeChecks {
            log: Vec::new(),
            fail_after: "leak_case",
        };
        let mut out = Vec::new();
        let sum = run(&refs, &mut checks, &mut out);
        let _ = std::panic::take_hook();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "KTAP version 1");
        assert_eq!(lines[1], "1..7");
        for want in [
            "# ok_case: a note",
            "ok 1 ok_case",
            "ok 2 skip_case # SKIP no hugepages (nr_hugepages 0)",
            "not ok 3 fail_case # expected 3 got 2 | second line",
            "# fail_case: second line",
            "not ok 5 leak_case # pin balance: acquired 10 released 8",
            "not ok 6 skip_word # FAIL: SKIPPED nothing",
        ] {
            assert!(lines.contains(&want), "{want:?} missing from:\n{text}");
        }
        let p = lines
            .iter()
            .find(|l| {
                l.starts_with("not ok 4 panic_case # case panicked: panic")
                    && l.contains("index out of bounds")
            })
            .copied();
        assert!(p.is_some(), "{text}");
        assert!(
            lines.iter().any(|l| l.starts_with(
                "not ok 7 err_case # PINLEASE_IOC_DMA(op=WRITE) failed: ERANGE (errno 34"
            )),
            "{text}"
        );
        // Diagnostics come before their result line; results are in order.
        let ok1 = lines.iter().position(|l| *l == "ok 1 ok_case").unwrap();
        let note = lines
            .iter()
            .position(|l| *l == "# ok_case: a note")
            .unwrap();
        assert!(note < ok1);
        // Each case is announced before anything else of it.
        let run1 = lines
            .iter()
            .position(|l| *l == "# running 1 ok_case")
            .unwrap();
        assert!(run1 < note, "{text}");
        let run3 = lines.iter().position(|l| *l == "# running 3 fail_case");
        assert!(run3.is_some_and(|r| r > ok1), "{text}");
        let nums: Vec<usize> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("ok ").or_else(|| l.strip_prefix("not ok ")))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(nums, (1..=7).collect::<Vec<_>>());
        assert_eq!(
            sum,
            Summary {
                pass: 1,
                skip: 1,
                fail: 5
            }
        );
        assert!(!sum.all_passed());
        assert_eq!(
            checks.log.len(),
            14,
            "checks run around every case, panics included"
        );
        assert!(lines
            .last()
            .unwrap()
            .starts_with("# pinlease-guest: pass:1 fail:5 skip:1"));
    }

    #[test]
    fn empty_run() {
        let mut checks = FakeChecks {
            log: Vec::new(),
            fail_after: "",
        };
        let mut out = Vec::new();
        let sum = run(&[], &mut checks, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("KTAP version 1\n1..0\n"));
        assert!(sum.all_passed());
    }
}
