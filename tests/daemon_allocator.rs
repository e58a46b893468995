//! The daemon's malloc arenas (src/allocator.rs, docs/soak.md): the real
//! daemon, busy on its vring worker and admin threads at once, runs every
//! thread on glibc's main arena; with `MALLOC_ARENA_MAX` or the
//! `glibc.malloc.arena_max` tunable set it leaves the limit to them, and
//! then its threads do get arenas of their own (which also shows that the
//! arena count read here sees arenas when there are some); and the freed
//! heap of a context goes back to the kernel when the context is released,
//! with another context still open.

mod common;

use std::thread;

use common::*;
use pinlease_abi::*;
use pinlease_testkit::daemon::Daemon;
use pinlease_testkit::frontend::client::{Client, RegMrArgs};

/// glibc's non-main arenas are heaps of HEAP_MAX_SIZE (64 MiB on 64-bit)
/// reserved at an address aligned to that size: an anonymous read-write
/// mapping starting on the boundary, the rest of the 64 MiB an anonymous
/// PROT_NONE mapping right after it (or all of it read-write).
const HEAP_MAX_SIZE: u64 = 64 << 20;

struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    anonymous: bool,
}

fn mappings(pid: u32) -> Vec<Mapping> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/maps: {e}"));
    maps.lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (start, end) = f[0].split_once('-').unwrap();
            Mapping {
                start: u64::from_str_radix(start, 16).unwrap(),
                end: u64::from_str_radix(end, 16).unwrap(),
                perms: f[1].to_string(),
                anonymous: f[4] == "0" && f.len() == 5,
            }
        })
        .collect()
}

/// The non-main malloc arenas of process `pid`.
fn arenas(pid: u32) -> usize {
    let maps = mappings(pid);
    maps.iter()
        .enumerate()
        .filter(|(i, m)| {
            if !(m.anonymous && m.perms.starts_with("rw") && m.start % HEAP_MAX_SIZE == 0) {
                return false;
            }
            let reserved_end = m.start + HEAP_MAX_SIZE;
            m.end == reserved_end
                || maps.get(i + 1).is_some_and(|n| {
                    n.anonymous
                        && n.perms.starts_with("---")
                        && n.start == m.end
                        && n.end == reserved_end
                })
        })
        .count()
}

/// Keeps the vring worker and the admin socket's client threads allocating
/// at the same time for a while. Returns the connected client: the vring
/// worker thread ends when the frontend goes.
fn busy(d: &Daemon) -> Client {
    let mut c = Client::new(d.frontend_with(frontend_config()).unwrap());
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..20 {
                    d.status();
                }
            });
        }
        let ctx = c.create_context(1, "arenas").unwrap();
        for ino in 0..50 {
            let (key, _) = c.alloc_mr(ctx, 2, PL_ACCESS_ALL).unwrap();
            c.lease_take(ctx, &lease_req(file(100 + ino), 0, 4096, PL_POLICY_REVOKE))
                .unwrap();
            c.dereg_mr(ctx, key).unwrap();
        }
    });
    c
}

fn start(launch: pinlease_testkit::daemon::Launch) -> Daemon {
    // Unsandboxed: the process started is the one that serves.
    launch
        .args(&["--sandbox", "none", "--seccomp", "none"])
        .start()
}

#[test]
fn every_thread_allocates_from_the_main_arena() {
    let d = start(
        launch()
            .env_remove("MALLOC_ARENA_MAX")
            .env_remove("GLIBC_TUNABLES"),
    );
    let _connected = busy(&d);
    let threads = std::fs::read_dir(format!("/proc/{}/task", d.pid()))
        .unwrap()
        .count();
    assert!(
        threads >= 5,
        "{threads} threads: the workload did not start the daemon's threads"
    );
    assert_eq!(
        arenas(d.pid()),
        0,
        "malloc arenas besides the main one in a daemon of {threads} threads; log:\n{}",
        d.log()
    );
    assert!(
        d.log()
            .contains("malloc: 1 arena(s) shared by all threads (M_ARENA_MAX 1)"),
        "{}",
        d.log()
    );
}

#[test]
fn an_arena_limit_in_the_environment_is_left_alone() {
    for (var, value, said) in [
        ("MALLOC_ARENA_MAX", "8", "MALLOC_ARENA_MAX=8"),
        (
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=8",
            "GLIBC_TUNABLES=glibc.malloc.arena_max=8",
        ),
    ] {
        let other = if var == "MALLOC_ARENA_MAX" {
            "GLIBC_TUNABLES"
        } else {
            "MALLOC_ARENA_MAX"
        };
        let d = start(launch().env(var, value).env_remove(other));
        let _connected = busy(&d);
        let log = d.log();
        assert!(
            log.contains(&format!(
                "malloc: arena limit left to the environment ({said})"
            )),
            "{var}={value}: {log}"
        );
        // glibc gives each new thread an arena of its own while fewer than
        // the limit exist: the serve loop, admin and signal threads at least.
        let n = arenas(d.pid());
        assert!(
            n >= 3,
            "{var}={value}: {n} arenas; the daemon did not leave the limit to it"
        );
    }
}

/// The daemon's RssAnon, kB.
fn rss_anon_kb(pid: u32) -> u64 {
    pinlease_testkit::proc_status::rss_anon_kb(Some(pid))
}

const TRIMMED: &str = "free heap pages returned to the kernel";

#[test]
fn the_heap_goes_back_to_the_kernel_when_a_context_goes() {
    let d = start(launch());
    let mut c = Client::new(d.frontend_with(frontend_config()).unwrap());
    let ctx = c.create_context(1, "trim").unwrap();
    // Stays open throughout: the trim does not wait for an idle device.
    let _other = c.create_context(2, "trim-other").unwrap();
    // MRs with long page lists, and leases: the tables and page lists grow
    // the heap by megabytes.
    let (_, pages) = c.alloc_mr(ctx, 64, PL_ACCESS_ALL).unwrap();
    for ino in 0..1500 {
        c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages))
            .unwrap();
        c.lease_take(ctx, &lease_req(file(1000 + ino), 0, 4096, PL_POLICY_REVOKE))
            .unwrap();
    }
    // CLOSE_CONTEXT frees the MRs and leases; the context itself stays
    // until RELEASE_CONTEXT, and so does the freed memory.
    c.close_context(ctx).unwrap();
    assert!(
        !d.log().contains(TRIMMED),
        "trimmed while no context had gone:\n{}",
        d.log()
    );
    let closed_kb = rss_anon_kb(d.pid());
    c.release_context(ctx).unwrap();
    poll_until(
        || {
            d.log()
                .contains("contexts 2 -> 1: free heap pages returned to the kernel: true")
        },
        "the trim after RELEASE_CONTEXT",
        &d,
    );
    let released_kb = rss_anon_kb(d.pid());
    assert!(
        released_kb + 1024 <= closed_kb,
        "RssAnon {closed_kb} kB after CLOSE_CONTEXT -> {released_kb} kB after RELEASE_CONTEXT: \
         less than 1 MiB went back"
    );
}

fn poll_until(f: impl Fn() -> bool, what: &str, d: &Daemon) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {what} within 10 s; log:\n{}",
            d.log()
        );
        thread::sleep(std::time::Duration::from_millis(20));
    }
}
