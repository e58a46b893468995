//! The C allocator's arenas: `pinlease serve` asks glibc's malloc for one
//! arena shared by all its threads (`M_ARENA_MAX` 1) unless the operator
//! set the arena limit in the environment.
//!
//! Why: glibc gives a thread that allocates while another thread holds the
//! arena it would use an arena of its own, up to 8 per core; each arena
//! keeps the pages it once used (it trims only its top), so the daemon's
//! resident heap is the sum of every arena's high-water mark, not its live
//! heap. Measured here under the soak's campaign workload (docs/soak.md,
//! "The daemon's heap"): 8 threads, 8 arenas; heaptrack counted at most
//! 0.51 MB live (0.20-0.25 MB between rounds) while `RssAnon` climbed from
//! 0.4 to 1.56 MB over 15 minutes as one arena after another met a new
//! high-water mark. One arena keeps one such mark instead of eight (next
//! paragraph for what that still leaves).
//!
//! What it costs: threads take one lock to allocate. The daemon's hot path
//! is one vring worker per frontend; the other threads (the vhost-user
//! message handler, the admin socket, the fault timer, the scrubber)
//! allocate rarely, so the lock is almost never contended.
//!
//! One arena is not enough on its own: glibc returns a freed page to the
//! kernel only from the top of the heap, so the heap stays at the highest
//! mark its live data and their fragmentation ever reached (measured: the
//! one arena's resident size 744 -> 844 kB over the soak's minutes 2-5 while
//! the live heap stayed at 0.2-0.25 MB between rounds). So the vring worker
//! also calls [`release_free_memory`] (`malloc_trim(0)`: every whole free
//! page of every arena back to the kernel) each time contexts have gone
//! (released, or dropped by a device reset; backend.rs): the memory of a
//! context's MRs, leases and children goes back with it, so the resident
//! heap follows the live heap whether or not other contexts stay open.
//! Not after every request: a trim walks the free lists, and pages given
//! back are faulted in again by the next allocations.
//!
//! Left alone when `MALLOC_ARENA_MAX` or a `GLIBC_TUNABLES` entry
//! `glibc.malloc.arena_max` is set: the operator's choice wins (glibc reads
//! both at its first allocation; `mallopt` afterwards would override them).

use std::ffi::OsStr;

/// Arenas the daemon asks for: one, shared by every thread.
pub const ARENA_MAX: i32 = 1;

/// The environment variable glibc reads for the arena limit.
pub const ARENA_MAX_ENV: &str = "MALLOC_ARENA_MAX";
/// glibc's tunables variable, and the arena limit's name in it.
pub const TUNABLES_ENV: &str = "GLIBC_TUNABLES";
pub const ARENA_MAX_TUNABLE: &str = "glibc.malloc.arena_max";

/// What [`limit_arenas`] decided (and did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArenaLimit {
    /// `mallopt(M_ARENA_MAX, n)` was called (and accepted).
    Set(i32),
    /// The environment sets the limit (the variable and its value, as
    /// seen); nothing was called.
    FromEnvironment {
        variable: &'static str,
        value: String,
    },
    /// `mallopt` refused the setting (glibc answered 0).
    Refused(i32),
    /// Not built against glibc: there is nothing to set.
    NotGlibc,
}

impl std::fmt::Display for ArenaLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArenaLimit::Set(n) => write!(f, "malloc: {n} arena(s) shared by all threads (M_ARENA_MAX {n})"),
            ArenaLimit::FromEnvironment { variable, value } => {
                write!(f, "malloc: arena limit left to the environment ({variable}={value})")
            }
            ArenaLimit::Refused(n) => write!(
                f,
                "malloc: mallopt(M_ARENA_MAX, {n}) refused; glibc's default arenas (up to 8 per core) stay"
            ),
            ArenaLimit::NotGlibc => write!(f, "malloc: not glibc, no arena limit to set"),
        }
    }
}

/// Who sets the arena limit, from the two environment variables glibc
/// reads: `Some((variable, value))` when the environment does, `None` when
/// the daemon should.
pub fn limit_in_environment(
    arena_max: Option<&OsStr>,
    tunables: Option<&OsStr>,
) -> Option<(&'static str, String)> {
    if let Some(v) = arena_max {
        return Some((ARENA_MAX_ENV, v.to_string_lossy().into_owned()));
    }
    let tunables = tunables?.to_string_lossy().into_owned();
    // GLIBC_TUNABLES=name=value:name=value...
    tunables
        .split(':')
        .find(|item| item.split('=').next() == Some(ARENA_MAX_TUNABLE))
        .map(|item| (TUNABLES_ENV, item.to_string()))
}

/// Sets the arena limit to [`ARENA_MAX`] unless the environment sets it.
/// Call before the daemon starts any thread: a thread's arena is picked at
/// its first allocation and kept.
pub fn limit_arenas() -> ArenaLimit {
    let arena_max = std::env::var_os(ARENA_MAX_ENV);
    let tunables = std::env::var_os(TUNABLES_ENV);
    if let Some((variable, value)) = limit_in_environment(arena_max.as_deref(), tunables.as_deref())
    {
        return ArenaLimit::FromEnvironment { variable, value };
    }
    set_arena_max(ARENA_MAX)
}

/// Gives every whole free page of the allocator's arenas back to the
/// kernel (`malloc_trim(0)`). True when glibc released some.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's
    // own free lists under the arenas' locks.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(n: i32) -> ArenaLimit {
    // SAFETY: mallopt only sets an allocator parameter; it takes no
    // pointers.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
    if ok == 1 {
        ArenaLimit::Set(n)
    } else {
        ArenaLimit::Refused(n)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: i32) -> ArenaLimit {
    ArenaLimit::NotGlibc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn the_daemon_sets_the_limit_when_the_environment_does_not() {
        assert_eq!(limit_in_environment(None, None), None);
        assert_eq!(
            limit_in_environment(None, os("glibc.malloc.tcache_count=0")),
            None
        );
        // A tunable whose name only starts like the arena limit's.
        assert_eq!(
            limit_in_environment(None, os("glibc.malloc.arena_max_x=2")),
            None
        );
        assert_eq!(limit_in_environment(None, os("")), None);
    }

    #[test]
    fn malloc_arena_max_in_the_environment_wins() {
        assert_eq!(
            limit_in_environment(os("4"), None),
            Some(("MALLOC_ARENA_MAX", "4".to_string()))
        );
        // Even a value glibc would ignore: the operator's to fix, and the
        // log line shows it as seen.
        assert_eq!(
            limit_in_environment(os("lots"), os("glibc.malloc.arena_max=2")),
            Some(("MALLOC_ARENA_MAX", "lots".to_string()))
        );
    }

    #[test]
    fn the_arena_max_tunable_wins() {
        assert_eq!(
            limit_in_environment(
                None,
                os("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=3:glibc.malloc.trim_threshold=1")
            ),
            Some(("GLIBC_TUNABLES", "glibc.malloc.arena_max=3".to_string()))
        );
    }

    /// Set in the child process the test below runs itself in.
    const TRIM_CHILD_ENV: &str = "PINLEASE_ALLOCATOR_TRIM_CHILD";

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_pages_go_back_to_the_kernel() {
        // RssAnon is the whole process's: measured in a child process of
        // this test binary running only this test, where no other test
        // allocates meanwhile.
        if std::env::var_os(TRIM_CHILD_ENV).is_none() {
            let name = "allocator::tests::freed_heap_pages_go_back_to_the_kernel";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1", "--nocapture"])
                .env(TRIM_CHILD_ENV, "1")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "the child run failed:\n{said}");
            assert!(said.contains("1 passed"), "the child ran no test:\n{said}");
            return;
        }
        fn resident_kb() -> u64 {
            pinlease_testkit::proc_status::rss_anon_kb(None)
        }
        // 4 MiB in 4 KiB blocks (below the mmap threshold: heap pages),
        // touched; then seven of every eight freed, the eighth kept, so the
        // free runs sit between live blocks where glibc's own trimming of
        // the heap's top cannot reach them: 3.5 MiB freed, still resident.
        let mut blocks: Vec<Vec<u8>> = (0..1024).map(|_| vec![1u8; 4096]).collect();
        let mut kept = Vec::new();
        for (i, b) in blocks.drain(..).enumerate() {
            if i % 8 == 7 {
                kept.push(b);
            }
        }
        let before = resident_kb();
        assert!(
            release_free_memory(),
            "malloc_trim released nothing after 3.5 MiB were freed"
        );
        let after = resident_kb();
        assert!(
            after + 2048 <= before,
            "RssAnon {before} kB -> {after} kB: less than 2 MiB of the 3.5 MiB freed went back"
        );
        drop(kept);
    }

    #[test]
    fn every_outcome_says_what_it_did() {
        let lines = [
            ArenaLimit::Set(1).to_string(),
            ArenaLimit::FromEnvironment {
                variable: ARENA_MAX_ENV,
                value: "4".into(),
            }
            .to_string(),
            ArenaLimit::Refused(1).to_string(),
        ];
        assert!(lines[0].contains("M_ARENA_MAX 1"), "{}", lines[0]);
        assert!(lines[1].contains("MALLOC_ARENA_MAX=4"), "{}", lines[1]);
        assert!(lines[2].contains("refused"), "{}", lines[2]);
    }
}
