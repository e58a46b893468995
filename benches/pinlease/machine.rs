//! The machine the bench runs on: /proc figures, CPUs, and the
//! scheduling modes sections 1-3 run in.

use std::collections::HashMap;

/// kB fields of /proc/<pid>/smaps_rollup, in bytes.
pub(crate) fn smaps(pid: &str) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb: u64 = v.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((k.to_string(), kb * 1024))
        })
        .collect()
}

/// CPUs online (not this thread's affinity mask, which `pin` narrows).
pub(crate) fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

pub(crate) fn machine() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let ncpu = online_cpus();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or("?".into(), |kb| format!("{} GiB", kb / (1024 * 1024)));
    vec![
        format!("cpus (nproc): {ncpu}"),
        format!("cpu model: {model}"),
        format!("kernel: {kernel}"),
        format!("memory: {mem}"),
    ]
}

/// Sections 1-3 run twice: with the scheduler's own placement, and with
/// the frontend and every daemon thread on one CPU. On this kind of VM a
/// wake-up of another, idle vCPU costs tens of microseconds, and whether
/// the two ends of a round trip share a CPU changes from second to second;
/// on one CPU a round trip is two context switches and the figures show
/// what the software costs.
#[derive(Clone, Copy)]
pub(crate) struct Mode {
    pub(crate) one_cpu: bool,
    /// Everything (the default-scheduling pass), or only the rows that feed
    /// the targets and their breakdowns (the one-CPU pass).
    pub(crate) full: bool,
}

impl Mode {
    pub(crate) fn name(&self, what: impl std::fmt::Display) -> String {
        if self.one_cpu {
            format!("[1 CPU] {what}")
        } else {
            what.to_string()
        }
    }

    pub(crate) fn target(&self, what: &str) -> String {
        if self.one_cpu {
            format!("{what} [1 CPU]")
        } else {
            format!("{what} [default scheduling]")
        }
    }
}

pub(crate) fn set_affinity(tid: libc::pid_t, cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data, zeroed then filled with CPU_SET;
    // sched_setaffinity reads it and keeps no pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "sched_setaffinity({tid}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Puts this thread and every thread of `daemon_pid` on CPU 0 (threads the
/// daemon starts later inherit it), or back on all CPUs.
pub(crate) fn pin(daemon_pid: u32, one_cpu: bool) {
    let all: Vec<usize> = (0..online_cpus()).collect();
    let cpus: &[usize] = if one_cpu { &[0] } else { &all };
    set_affinity(0, cpus);
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{daemon_pid}/task")) {
        for t in tasks.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
                set_affinity(tid, cpus);
            }
        }
    }
}
