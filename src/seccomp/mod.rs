//! `--seccomp kill|log|trap|none`: the daemon's system-call allow-list
//! (`allowlist.rs`), compiled to BPF by rust-vmm's `seccompiler` and
//! installed on every thread (docs/security.md).
//!
//! The filter is installed once the sockets are open, the sandbox is
//! entered and the signal thread runs, with `SECCOMP_FILTER_FLAG_TSYNC`
//! so that thread gets it too; every thread started later (admin socket,
//! vhost-user backend, vring workers, scrubber, fault timer, admin
//! clients) inherits it from the thread that spawns it. One list serves every thread: the
//! threads share most of what they call (futexes, memory, logging), and a
//! list per role would mostly repeat that common part while the filter
//! could not follow a thread's role across `clone` anyway.

mod allowlist;

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

pub use allowlist::{allowed_syscalls, AllowEntry};

/// What happens to a system call outside the allow-list.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SeccompMode {
    /// The kernel kills the daemon (SIGSYS); the kernel log has the call.
    Kill,
    /// The call runs and the kernel logs it (audit type=1326): for finding
    /// what the list lacks.
    Log,
    /// The calling thread gets SIGSYS (its default action ends the daemon
    /// with a core dump, where allowed).
    Trap,
    /// No filter.
    None,
}

impl SeccompMode {
    pub fn name(self) -> &'static str {
        match self {
            SeccompMode::Kill => "kill",
            SeccompMode::Log => "log",
            SeccompMode::Trap => "trap",
            SeccompMode::None => "none",
        }
    }

    fn mismatch_action(self) -> Option<SeccompAction> {
        match self {
            SeccompMode::Kill => Some(SeccompAction::KillProcess),
            SeccompMode::Log => Some(SeccompAction::Log),
            SeccompMode::Trap => Some(SeccompAction::Trap),
            SeccompMode::None => None,
        }
    }
}

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: architecture {arch:?} is not supported by seccompiler: {source}")]
    Arch {
        arch: &'static str,
        source: seccompiler::BackendError,
    },
    #[error("seccomp: building the --seccomp {mode} filter: {source}")]
    Build {
        mode: &'static str,
        source: seccompiler::BackendError,
    },
    #[error("seccomp: installing the --seccomp {mode} filter: {source}")]
    Install {
        mode: &'static str,
        source: seccompiler::Error,
    },
}

/// The BPF program of MODE, or None for `--seccomp none`. `fs_open`: the
/// daemon is not sandboxed and may open files by path (its abort report);
/// in a sandbox opening is listed but answered ENOENT (`no_open_program`).
pub fn program(mode: SeccompMode, fs_open: bool) -> Result<Option<BpfProgram>, SeccompError> {
    let Some(mismatch) = mode.mismatch_action() else {
        return Ok(None);
    };
    let arch = std::env::consts::ARCH;
    let target =
        TargetArch::try_from(arch).map_err(|source| SeccompError::Arch { arch, source })?;
    let build = |source| SeccompError::Build {
        mode: mode.name(),
        source,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for entry in allowed_syscalls(fs_open) {
        let conditions = entry.rule().map_err(build)?;
        rules.entry(entry.nr).or_default().extend(conditions);
    }
    let filter =
        SeccompFilter::new(rules, mismatch, SeccompAction::Allow, target).map_err(build)?;
    let prog: BpfProgram = filter.try_into().map_err(build)?;
    Ok(Some(prog))
}

/// In a sandbox, opening a file by path fails with ENOENT, as the empty
/// root would answer anyway, instead of breaking the filter: glibc's malloc
/// reads /proc/sys/vm/overcommit_memory the first time it shrinks a
/// thread's heap and does without it when the open fails (found by
/// `--seccomp log`). A second filter, since one seccompiler filter has a
/// single action for its matches; the kernel takes the stricter answer,
/// so the allow-list's verdict on everything else stands.
fn no_open_program() -> Result<BpfProgram, SeccompError> {
    let arch = std::env::consts::ARCH;
    let target =
        TargetArch::try_from(arch).map_err(|source| SeccompError::Arch { arch, source })?;
    let build = |source| SeccompError::Build {
        mode: "errno-for-open",
        source,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_openat, vec![]);
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_open, vec![]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOENT as u32),
        target,
    )
    .map_err(build)?;
    filter.try_into().map_err(build)
}

/// Installs MODE's filter on every thread of the process (TSYNC). Also
/// sets no_new_privs, which seccomp needs without CAP_SYS_ADMIN.
pub fn install(mode: SeccompMode, fs_open: bool) -> Result<(), SeccompError> {
    let Some(prog) = program(mode, fs_open)? else {
        log::warn!("seccomp: none (no system-call filter)");
        return Ok(());
    };
    let install = |p: &BpfProgram| {
        seccompiler::apply_filter_all_threads(p).map_err(|source| SeccompError::Install {
            mode: mode.name(),
            source,
        })
    };
    // The ENOENT filter first: installing one calls prctl(PR_SET_NO_NEW_PRIVS),
    // which the allow-list (prctl for thread names only) would kill.
    if !fs_open {
        install(&no_open_program()?)?;
    }
    install(&prog)?;
    log::info!(
        "seccomp: {} ({} system calls allowed, {} BPF instructions)",
        mode.name(),
        allowed_syscalls(fs_open).len(),
        prog.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_builds_and_none_has_no_program() {
        for mode in [SeccompMode::Kill, SeccompMode::Log, SeccompMode::Trap] {
            for fs_open in [false, true] {
                let p = program(mode, fs_open).unwrap().expect("a program");
                assert!(p.len() > allowed_syscalls(fs_open).len(), "{mode:?}");
            }
        }
        assert!(program(SeccompMode::None, false).unwrap().is_none());
    }

    #[test]
    fn the_list_has_no_duplicates_and_opens_files_only_unsandboxed() {
        for fs_open in [false, true] {
            let list = allowed_syscalls(fs_open);
            let mut nrs: Vec<i64> = list.iter().map(|e| e.nr).collect();
            nrs.sort_unstable();
            nrs.dedup();
            assert_eq!(nrs.len(), list.len(), "a system call listed twice");
        }
        let has = |fs_open, nr| allowed_syscalls(fs_open).iter().any(|e| e.nr == nr);
        // Listed in both: in a sandbox the second filter answers ENOENT.
        assert!(has(false, libc::SYS_openat) && has(true, libc::SYS_openat));
        assert!(!no_open_program().unwrap().is_empty());
        for never in [
            libc::SYS_execve,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_socket,
        ] {
            assert!(!has(true, never), "{never} must stay outside the list");
        }
    }

    /// A filtered child process: an allowed call works, one outside the
    /// list kills it with SIGSYS under `kill`.
    #[test]
    fn kill_mode_kills_on_a_call_outside_the_list() {
        let prog = program(SeccompMode::Kill, false).unwrap().unwrap();
        // SAFETY: the child only makes raw system calls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            if seccompiler::apply_filter(&prog).is_err() {
                // SAFETY: _exit in the forked child.
                unsafe { libc::_exit(3) };
            }
            // SAFETY: getpid is allowed and has no preconditions.
            unsafe { libc::getpid() };
            // SAFETY: an invalid socket(2); the filter kills before it runs.
            unsafe { libc::socket(-1, -1, -1) };
            // SAFETY: _exit in the forked child.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: status is a valid int to write.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "wait status {status:#x}"
        );
    }
}
