//! The pin and truncate scenarios through the RDMA core (`verbs_*`):
//! `ibv_reg_mr` on `pinlease_ib0` (pinlease_ib.ko, docs/rdma.md) as an
//! unmodified verbs program does it, run by `pl-verbs-check` (its `verdict`
//! and `hold` subcommands, guest-driver/provider/tests/pl_verbs_check.c).
//! The suite does not load pinlease_ib.ko by itself (its reload cases rmmod
//! pinlease.ko, which pinlease_ib.ko holds): each case loads it through
//! [`IbDriver`] and unloads it again.
//!
//! - `verdicts`: what ibv_reg_mr answers per backing and access, judged by
//!   the ib_umem_get() rule in verdicts.rs.
//! - `truncate`: a file MR under pinlease_ib.ko's `mr_lease` policy (none,
//!   revoke, wait, timeout) while another process truncates the file.
//!
//! Here: the driver guard, the `hold` process and its line protocol, and
//! the debugfs lease row of a holder.

pub(super) mod truncate;
pub(super) mod verdicts;

use crate::cases::helpers::{debugfs_table, pattern, LEASE_LEN};
use crate::ktap::{CaseErr, CaseResult};
use crate::sys;
use crate::verdicts::{Expect, Kver, Mem, VerbsRow};
use crate::{ensure, fail, skip};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Where the guest image installs pinlease_ib.ko (guest-driver/vm/ibdriver.py).
pub const IB_MODULE_PATH: &str = "/lib/pinlease/pinlease_ib.ko";
/// The module's name (delete_module, /sys/module).
pub const IB_MODULE_NAME: &str = "pinlease_ib";
/// The verbs test program in the guest image.
pub const VERBS_CHECK: &str = "/bin/pl-verbs-check";
/// pinlease_ib.ko's lease policy for file MRs, read at each ibv_reg_mr.
pub const MR_LEASE_PARAM: &str = "/sys/module/pinlease_ib/parameters/mr_lease";
/// The ib devices' names start with this (pinlease_ib_abi.h).
const IB_NAME_PREFIX: &str = "pinlease_ib";

/// pinlease_ib.ko loaded (by this guard or before it), its `mr_lease`
/// parameter set; on drop `mr_lease` goes back to `none` and the module is
/// removed if this guard loaded it.
pub struct IbDriver {
    /// The ib device the cases open (`pinlease_ib0`).
    pub dev: String,
    loaded_here: bool,
}

impl IbDriver {
    /// Loads pinlease_ib.ko if it is not loaded (`modprobe ib_uverbs`, then
    /// finit_module of IB_MODULE_PATH) and waits for its ib device. SKIPs
    /// when the module or pl-verbs-check is not in the image or the
    /// kernel has no ib_uverbs.
    pub fn load() -> Result<IbDriver, CaseErr> {
        if !std::path::Path::new(VERBS_CHECK).exists() {
            skip!("{VERBS_CHECK} is not in the guest image");
        }
        let mut loaded_here = false;
        if !sys::module_loaded(IB_MODULE_NAME) {
            if !std::path::Path::new(IB_MODULE_PATH).exists() {
                skip!("{IB_MODULE_PATH} is not in the guest image (kernel without CONFIG_INFINIBAND_USER_MEM?)");
            }
            let out = Command::new("modprobe")
                .arg("ib_uverbs")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| CaseErr::Fail(format!("running modprobe ib_uverbs: {e}")))?;
            if !out.status.success() {
                skip!(
                    "modprobe ib_uverbs failed ({}): the kernel has no ib_uverbs: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            match sys::finit_module(IB_MODULE_PATH) {
                Ok(()) => loaded_here = true,
                Err(e) if e.errno == libc::EEXIST => {}
                Err(e) => fail!("{e}"),
            }
        }
        // From here on the guard exists, so a failure still unloads.
        let mut guard = IbDriver {
            dev: String::new(),
            loaded_here,
        };
        let start = Instant::now();
        loop {
            if let Some(d) = ib_device() {
                guard.dev = d;
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "no {IB_NAME_PREFIX}* in /sys/class/infiniband 10 s after loading {IB_MODULE_NAME}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(guard)
    }

    /// Loads the driver (see load) and sets `mr_lease` to `policy`; SKIPs
    /// when the module has no such parameter (a pinlease_ib.ko without
    /// layout leases for verbs MRs) unless the policy is `none`, which is
    /// what such a module does.
    pub fn with_policy(policy: &str) -> Result<IbDriver, CaseErr> {
        let guard = IbDriver::load()?;
        if !std::path::Path::new(MR_LEASE_PARAM).exists() {
            if policy == "none" {
                return Ok(guard);
            }
            skip!(
                "{MR_LEASE_PARAM} does not exist: this pinlease_ib.ko takes no leases on verbs MRs"
            );
        }
        sys::write_str(MR_LEASE_PARAM, policy)?;
        let now = sys::read_to_string(MR_LEASE_PARAM)?;
        ensure!(
            now.trim() == policy,
            "{MR_LEASE_PARAM} reads {:?} after writing {policy:?}",
            now.trim()
        );
        Ok(guard)
    }
}

impl Drop for IbDriver {
    fn drop(&mut self) {
        if std::path::Path::new(MR_LEASE_PARAM).exists() {
            let _ = sys::write_str(MR_LEASE_PARAM, "none");
        }
        if !self.loaded_here {
            return;
        }
        // The verbs fds are closed by now, but ib_uverbs may still be
        // dropping its last reference: retry EBUSY/EAGAIN for a while.
        let start = Instant::now();
        while let Err(e) = sys::delete_module(IB_MODULE_NAME) {
            if !(e.errno == libc::EBUSY || e.errno == libc::EAGAIN)
                || start.elapsed() > Duration::from_secs(5)
            {
                eprintln!("verbs cases: {e}: {IB_MODULE_NAME} stays loaded");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The first pinlease ib device in /sys/class/infiniband.
fn ib_device() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/infiniband")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(IB_NAME_PREFIX))
        .collect();
    names.sort();
    names.into_iter().next()
}

/// 64-bit FNV-1a, as pl-verbs-check's `fnv1a=` answers.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The content the cases write into their files: LEASE_LEN bytes of the
/// suite's test pattern.
pub fn file_content() -> Vec<u8> {
    (0..LEASE_LEN).map(pattern).collect()
}

/// `word` or `word=value` fields of a pl-verbs-check answer line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// A `pl-verbs-check hold` process: it registered a file MR and answers
/// one line per command (pl_verbs_check.c, cmd_hold()).
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// The `ready ...` line.
    pub ready: String,
}

/// How long one answer of the holder may take.
const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// How a holder maps its file and registers it: `shared|private`, mapping
/// `ro|rw`, access `ro|rw` (pl-verbs-check's words).
#[derive(Clone, Copy, Debug)]
pub struct HoldAs {
    pub shared: bool,
    pub map_writable: bool,
    pub mr_writable: bool,
}

impl HoldAs {
    fn words(self) -> [&'static str; 3] {
        let rw = |b: bool| if b { "rw" } else { "ro" };
        [
            if self.shared { "shared" } else { "private" },
            rw(self.map_writable),
            rw(self.mr_writable),
        ]
    }
}

impl std::fmt::Display for HoldAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [s, m, a] = self.words();
        write!(f, "{s} mapping {m}, MR access {a}")
    }
}

impl Holder {
    /// Starts `pl-verbs-check hold DEV PATH ...` and waits for its first
    /// line: Ok(Ok(holder)) after `ready`, Ok(Err(line)) when it answered
    /// `error ...` (the registration failed: the kernel's answer).
    pub fn spawn(dev: &str, path: &str, how: HoldAs) -> Result<Result<Holder, String>, CaseErr> {
        let [s, m, a] = how.words();
        let mut child = Command::new(VERBS_CHECK)
            .args(["hold", dev, path, s, m, a])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| CaseErr::Fail(format!("spawning {VERBS_CHECK} hold: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("verbs-holder".into())
            .spawn(move || {
                for l in BufReader::new(stdout).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| CaseErr::Fail(format!("reader thread: {e}")))?;
        let mut h = Holder {
            child,
            stdin,
            lines: rx,
            ready: String::new(),
        };
        let first = h.answer("start")?;
        if first.starts_with("ready ") {
            h.ready = first;
            Ok(Ok(h))
        } else if first.starts_with("error ") {
            Ok(Err(first))
        } else {
            fail!("{VERBS_CHECK} hold {path}: unexpected first line {first:?}")
        }
    }

    /// The holder's pid: the registering process of its MR (and lease).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line the holder prints; `what` names the command for errors.
    fn answer(&mut self, what: &str) -> Result<String, CaseErr> {
        match self.lines.recv_timeout(ANSWER_WAIT) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => fail!(
                "{VERBS_CHECK} hold: no answer to {what:?} within {ANSWER_WAIT:?} ({})",
                sys::proc_stack(self.pid())
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let st = self.child.wait().map(|s| s.to_string());
                fail!("{VERBS_CHECK} hold: gone before answering {what:?} ({st:?})")
            }
        }
    }

    /// Sends one command and returns the answer line; it must start with
    /// the command's first word.
    pub fn cmd(&mut self, cmd: &str) -> Result<String, CaseErr> {
        let Some(stdin) = self.stdin.as_mut() else {
            fail!("{VERBS_CHECK} hold: stdin already closed");
        };
        writeln!(stdin, "{cmd}")
            .and_then(|_| stdin.flush())
            .map_err(|e| CaseErr::Fail(format!("{VERBS_CHECK} hold: writing {cmd:?}: {e}")))?;
        let l = self.answer(cmd)?;
        let word = cmd.split_whitespace().next().unwrap_or("");
        ensure!(
            l.split_whitespace().next() == Some(word),
            "{VERBS_CHECK} hold: {cmd:?} answered {l:?}"
        );
        Ok(l)
    }

    /// `read`: (completion status name, fnv1a of the bytes read).
    pub fn read(&mut self) -> Result<(String, u64), CaseErr> {
        let l = self.cmd("read")?;
        Ok((status_of(&l)?, fnv_of(&l)?))
    }

    /// `write XX`: the completion status name.
    pub fn write(&mut self, byte: u8) -> Result<String, CaseErr> {
        let l = self.cmd(&format!("write {byte:02x}"))?;
        status_of(&l)
    }

    /// `write-out`: (completion status name, fnv1a of what arrived).
    pub fn write_out(&mut self) -> Result<(String, u64), CaseErr> {
        let l = self.cmd("write-out")?;
        Ok((status_of(&l)?, fnv_of(&l)?))
    }

    /// `dereg`: fails unless ibv_dereg_mr succeeded; the answer line.
    pub fn dereg(&mut self) -> Result<String, CaseErr> {
        let l = self.cmd("dereg")?;
        ensure!(l.starts_with("dereg ok"), "ibv_dereg_mr: {l}");
        Ok(l)
    }

    /// `exit`: everything closed, the process ended with exit code 0.
    pub fn exit(mut self) -> CaseResult {
        let l = self.cmd("exit")?;
        ensure!(l == "exit ok", "exit: {l}");
        self.stdin = None;
        let st = self
            .child
            .wait()
            .map_err(|e| CaseErr::Fail(format!("waiting for {VERBS_CHECK} hold: {e}")))?;
        ensure!(st.success(), "{VERBS_CHECK} hold ended with {st}");
        Ok(())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing the verbs fd deregisters (and releases a lease).
        self.stdin = None;
        if matches!(self.child.try_wait(), Ok(None)) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn status_of(line: &str) -> Result<String, CaseErr> {
    match field(line, "status") {
        Some(s) => Ok(s.to_string()),
        None => fail!("no status= in {line:?}"),
    }
}

fn fnv_of(line: &str) -> Result<u64, CaseErr> {
    field(line, "fnv1a")
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| CaseErr::Fail(format!("no fnv1a= in {line:?}")))
}

/// One row of debugfs `leases` (pl_debugfs.c: ctx lease pid policy state
/// kernel file start end): the fields the cases judge, and the row.
#[derive(Clone, Debug)]
pub struct LeaseRow {
    pub policy: String,
    pub state: String,
    pub line: String,
}

/// The debugfs lease rows of process `pid`.
pub fn lease_rows_of(pid: i32) -> Result<Vec<LeaseRow>, CaseErr> {
    Ok(debugfs_table("leases")?
        .lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 5 && w[2].parse() == Ok(pid)).then(|| LeaseRow {
                policy: w[3].to_string(),
                state: w[4].to_string(),
                line: l.split_whitespace().collect::<Vec<_>>().join(" "),
            })
        })
        .collect())
}

/// The one lease row of `pid`; fails when there is none or more.
pub fn lease_row_of(pid: i32) -> Result<LeaseRow, CaseErr> {
    let rows = lease_rows_of(pid)?;
    match rows.as_slice() {
        [r] => Ok(r.clone()),
        _ => fail!(
            "debugfs leases: {} rows of pid {pid}, expected 1: {}",
            rows.len(),
            debugfs_table("leases")?.replace('\n', " | ")
        ),
    }
}

/// Polls the lease row of `pid` until its state is `state` (up to
/// `timeout`); the row.
pub fn wait_lease_row_state(pid: i32, state: &str, timeout: Duration) -> Result<LeaseRow, CaseErr> {
    let start = Instant::now();
    loop {
        let r = lease_row_of(pid)?;
        if r.state == state {
            return Ok(r);
        }
        if start.elapsed() >= timeout {
            fail!(
                "debugfs lease of pid {pid}: state {} after {timeout:?}, expected {state}: {}",
                r.state,
                r.line
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until `pid` has no lease row (up to `timeout`).
pub fn wait_no_lease_row(pid: i32, timeout: Duration) -> CaseResult {
    let start = Instant::now();
    loop {
        let rows = lease_rows_of(pid)?;
        if rows.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            fail!(
                "debugfs lease of pid {pid} still there {timeout:?} later: {}",
                rows[0].line
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How the lease cases register their XFS file on kernel `v`: a shared
/// read-write mapping, the MR writable where the verbs rule says the
/// kernel grants that (6.1: no writable_file_mapping_allowed()), else
/// read-only (6.12, 7.3: ib_umem_get() pins it without FOLL_WRITE).
pub fn lease_hold_as(v: Kver) -> Result<HoldAs, CaseErr> {
    for mr_writable in [true, false] {
        let row = VerbsRow {
            id: "lease-case",
            mem: Mem::Xfs,
            shared: true,
            map_writable: true,
            mr_writable,
            reg_mr_row: None,
        };
        if row.expected(v) == Expect::Granted {
            return Ok(HoldAs {
                shared: true,
                map_writable: true,
                mr_writable,
            });
        }
    }
    fail!("the verbs rule grants no MR of a shared XFS mapping on {v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn answer_fields() {
        let l = "read status=IBV_WC_SUCCESS len=65536 fnv1a=0x1234abcd";
        assert_eq!(field(l, "status"), Some("IBV_WC_SUCCESS"));
        assert_eq!(fnv_of(l), Ok(0x1234_abcd));
        assert!(fnv_of("read status=X").is_err());
    }

    /// IB_NAME_PREFIX is the C header's PINLEASE_IB_NAME_PREFIX (the
    /// driver names its devices with it, the provider matches by it).
    #[test]
    fn ib_name_prefix_is_the_headers() {
        let h = include_str!("../../../../include/pinlease_ib_abi.h");
        let want = format!("#define PINLEASE_IB_NAME_PREFIX \"{IB_NAME_PREFIX}\"");
        assert!(
            h.lines().any(|l| l.trim() == want),
            "pinlease_ib_abi.h has no line {want:?}"
        );
    }

    #[test]
    fn lease_cases_register_writable_only_on_6_1() {
        let v61 = lease_hold_as(Kver::new(6, 1)).unwrap();
        assert!(v61.mr_writable && v61.shared && v61.map_writable);
        for v in [Kver::new(6, 12), Kver::new(7, 3)] {
            let h = lease_hold_as(v).unwrap();
            assert!(!h.mr_writable && h.shared && h.map_writable, "{v}");
        }
    }
}
