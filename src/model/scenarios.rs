//! The seeds' lifetime stories across the model: a context's two
//! lifetimes, handles never reused, revoke final under concurrent DMA,
//! export vs destroy, lookups racing destroys, races decided outside the
//! writer lock, and device reset (docs/design.md §6).
//!
//! Tests check statuses through `Reject::status` and the bytes the device
//! moved through real guest memory (`crate::guest_ram`), never only that a
//! call returned Ok.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::abi::*;
use crate::guest_ram::MmapRam;
use crate::model::lease::LeaseState;
use crate::model::status::hex;
use crate::model::table::Handle;
use crate::model::{AtomicOp, Device, Limits};

use crate::model::test_support::*;

// ---- two lifetimes ------------------------------------------------------------------

#[test]
fn child_keeps_the_context_struct_but_not_its_pins() {
    let dev = device(1);
    let c = ctx(&dev);
    let k1 = reg(&dev, c, &Layout::pages(run(0, 8)), PL_ACCESS_ALL);
    let k2 = reg(&dev, c, &Layout::pages(run(0x20000, 2)), PL_ACCESS_ALL);
    let chan = dev.create_child(c, PL_CHILD_EVENT_CHANNEL).unwrap();
    assert_eq!(dev.pin_totals(), (10, 10));
    dev.close_context(c).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0), "children never keep pins");
    assert_eq!(st(dev.mr(k1)), Status::Stale);
    assert_eq!(st(dev.mr(k2)), Status::Stale);

    assert_eq!(st(dev.release_context(c)), Status::Busy);
    let s = dev.status();
    assert!(s.mrs.is_empty(), "MRs gone from status");
    assert_eq!(s.contexts.len(), 1, "context struct still alive");
    assert_eq!(s.contexts[0].state, "closed");
    assert_eq!(s.contexts[0].mrs, 0);
    assert_eq!(s.contexts[0].children.len(), 1);
    assert_eq!(s.contexts[0].children[0].handle, hex(chan));
    assert_eq!(s.contexts[0].children[0].kind, "event-channel");
    assert_eq!(st(dev.release_context(c)), Status::Busy, "still busy");
    assert!(dev.context(c).is_ok());

    dev.destroy_child(c, chan).unwrap();
    assert_eq!(st(dev.destroy_child(c, chan)), Status::Stale);
    dev.release_context(c).unwrap();
    assert!(dev.status().contexts.is_empty());
    assert_eq!(st(dev.context(c)), Status::Stale);
    assert_eq!(st(dev.destroy_child(c, chan)), Status::Stale);
}

#[test]
fn release_of_open_context_with_a_child_closes_it_and_answers_ebusy() {
    let dev = device(1);
    let c = ctx(&dev);
    let l = Layout::pages(run(0, 3));
    reg(&dev, c, &l, PL_ACCESS_ALL);
    let chan = dev.create_child(c, PL_CHILD_EVENT_CHANNEL).unwrap();
    assert_eq!(st(dev.release_context(c)), Status::Busy);
    assert_eq!(dev.pin_totals(), (0, 0), "closed all the same");
    assert_eq!(st(dev.reg_mr(c, l.req(PL_ACCESS_ALL))), Status::Shutdown);
    assert_eq!(st(dev.close_context(c)), Status::Shutdown);
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_CONTEXT_TORN_DOWN, c, [1, 0, 3, 0])]
    );
    dev.destroy_child(c, chan).unwrap();
    dev.release_context(c).unwrap();
    assert!(dev.events.pop().is_none());
}

#[test]
fn child_handle_checks() {
    let dev = device_limited(|l| l.max_children_per_context = 2);
    let a = ctx(&dev);
    let b = ctx(&dev);
    assert_eq!(st(dev.create_child(a, PL_CHILD_MR_EXPORT)), Status::Inval);
    assert_eq!(st(dev.create_child(a, 0)), Status::Inval);
    assert_eq!(st(dev.create_child(a, 3)), Status::Inval);
    let ch = dev.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
    assert_eq!(
        st(dev.destroy_child(b, ch)),
        Status::Perm,
        "another context's child"
    );
    assert_eq!(st(dev.destroy_child(a, 0)), Status::NoEnt);
    assert_eq!(st(dev.destroy_child(a, ch + 1)), Status::NoEnt);
    // Per-context limit: event channels and exports together.
    let k = reg(&dev, a, &Layout::pages(run(0, 1)), PL_ACCESS_ALL);
    let ex = dev.export_mr(a, k).unwrap().export;
    assert_eq!(
        st(dev.create_child(a, PL_CHILD_EVENT_CHANNEL)),
        Status::NoMem
    );
    let k2 = reg(&dev, a, &Layout::pages(run(0x1000, 1)), PL_ACCESS_ALL);
    assert_eq!(st(dev.export_mr(a, k2)), Status::NoMem);
    assert_eq!(
        dev.export_mr(a, k).unwrap().export,
        ex,
        "re-export needs no new child"
    );
    // Another context is not affected by a's limit.
    dev.create_child(b, PL_CHILD_EVENT_CHANNEL).unwrap();
    dev.destroy_child(a, ch).unwrap();
    assert_eq!(st(dev.destroy_child(a, ch)), Status::Stale);
    dev.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
}

// ---- handles never reused ---------------------------------------------------------

#[test]
fn keys_are_never_reused_and_old_keys_are_stale_everywhere() {
    let dev = device_limited(|l| l.max_mrs = 1);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let l = Layout::pages(run(0x3000, 1));
    let old = reg(&dev, a, &l, PL_ACCESS_ALL);
    dev.dereg_mr(a, old).unwrap();
    let new = reg(&dev, a, &l, PL_ACCESS_ALL);
    assert_eq!(old as u32, new as u32, "same slot");
    assert_ne!(old, new, "different key");
    let r = ram(&dev);
    l.set_word(r.as_ref().as_ref(), 0, 77);

    assert_eq!(st(dev.mr(old)), Status::Stale);
    assert_eq!(
        st(write(&dev, a, old, 0, new, 8, 8)),
        Status::Stale,
        "stale local"
    );
    assert_eq!(
        st(write(&dev, a, new, 0, old, 8, 8)),
        Status::Stale,
        "stale remote"
    );
    assert_eq!(st(read(&dev, a, new, 0, old, 8, 8)), Status::Stale);
    assert_eq!(
        st(write(&dev, b, new, 0, old, 8, 8)),
        Status::Perm,
        "new is a's"
    );
    assert_eq!(
        st(dev.atomic(b, AtomicOp::FetchAdd, &atomic(old, 0, 1, 0))),
        Status::Stale
    );
    assert_eq!(
        st(dev.atomic(b, AtomicOp::CompareSwap, &atomic(old, 0, 77, 1))),
        Status::Stale
    );
    assert_eq!(
        st(dev.fill(b, &pattern(old, 0, 8, 5, PL_PATTERN_CONST))),
        Status::Stale
    );
    assert_eq!(
        st(dev.verify(b, &pattern(old, 0, 8, 5, PL_PATTERN_CONST))),
        Status::Stale
    );
    assert_eq!(st(dev.export_mr(a, old)), Status::Stale);
    assert_eq!(st(dev.dereg_mr(a, old)), Status::Stale);
    assert_eq!(
        l.word(r.as_ref().as_ref(), 0),
        77,
        "no stale access touched the page"
    );
    // The new key works.
    assert_eq!(
        dev.atomic(b, AtomicOp::FetchAdd, &atomic(new, 0, 1, 0))
            .unwrap(),
        77
    );
    assert_eq!(l.word(r.as_ref().as_ref(), 0), 78);
}

// ---- revoke ------------------------------------------------------------------------------

/// What the DMA thread of a revoke test saw: (started after the revoke
/// returned, status) for each attempt.
type Attempts = Vec<(bool, Status)>;

/// Runs repeated 1 MiB WRITEs `src -> dst` on a thread, calls `revoke` once
/// some have completed, then checks that after `revoke` returned no DMA
/// changed a byte of `dst` (the source is rewritten meanwhile), and that
/// in-flight and later attempts ended with ECANCELED, never anything else.
fn revoke_under_dma(
    dev: &Arc<Device>,
    c: Handle,
    src: (Handle, &Layout),
    dst: (Handle, &Layout),
    revoke: impl FnOnce(),
) -> Attempts {
    let r = ram(dev);
    let (ks, ls) = src;
    let (kd, ld) = dst;
    ls.write(r.as_ref().as_ref(), 0, &bytes(ls.len as usize, 0x5c));
    let revoked = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));
    let t = {
        let (dev, revoked, stop, ok, after) = (
            dev.clone(),
            revoked.clone(),
            stop.clone(),
            ok.clone(),
            after.clone(),
        );
        let len = ld.len;
        thread::spawn(move || {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let post = revoked.load(Ordering::SeqCst);
                let s = match write(&dev, c, ks, 0, kd, 0, len) {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        Status::Ok
                    }
                    Err(e) => e.status,
                };
                if post {
                    after.fetch_add(1, Ordering::SeqCst);
                }
                seen.push((post, s));
            }
            seen
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "DMA thread made no progress");
        thread::yield_now();
    }
    revoke();
    revoked.store(true, Ordering::SeqCst);
    let snapshot = ld.all(r.as_ref().as_ref());
    // New source bytes: any copy from now on would show in dst.
    ls.write(r.as_ref().as_ref(), 0, &bytes(ls.len as usize, 0xa3));
    let deadline = Instant::now() + Duration::from_millis(300);
    while after.load(Ordering::SeqCst) < 50 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::SeqCst);
    let seen = t.join().unwrap();
    assert!(
        ld.all(r.as_ref().as_ref()) == snapshot,
        "a DMA wrote into the MR after its revoke returned"
    );
    assert!(
        seen.iter().filter(|(post, _)| *post).count() > 0,
        "no attempt after revoke"
    );
    for (i, (post, s)) in seen.iter().enumerate() {
        assert!(
            *s == Status::Ok || *s == Status::Canceled,
            "attempt {i}: {s:?} (in-flight DMA must end with ECANCELED)"
        );
        if *post {
            assert_eq!(*s, Status::Canceled, "attempt {i} started after the revoke");
        }
    }
    let first_cancel = seen
        .iter()
        .position(|(_, s)| *s == Status::Canceled)
        .unwrap();
    assert!(
        seen[first_cancel..]
            .iter()
            .all(|(_, s)| *s == Status::Canceled),
        "an attempt succeeded after one was canceled"
    );
    seen
}

#[test]
fn lease_break_revoke_is_final_under_concurrent_dma() {
    let dev = device(4);
    let c = ctx(&dev);
    // 1 MiB each; the target's page list is reversed (4 KiB runs).
    let ls = Layout::pages(run(0, 256));
    let mut tp = run(2 * MIB as u64, 256);
    tp.reverse();
    let ld = Layout::pages(tp);
    let ks = reg(&dev, c, &ls, PL_ACCESS_READ);
    let lease = take(&dev, c, file(9), 0, 0, PL_POLICY_REVOKE);
    let resp = reg_file(&dev, c, &ld, PL_ACCESS_WRITE, file(9), 0);
    assert_eq!(resp.lease, lease);
    let kd = resp.key;
    let d2 = dev.clone();
    revoke_under_dma(&dev, c, (ks, &ls), (kd, &ld), || {
        let b = brk(&d2, file(9), 0, 4096);
        assert_eq!(
            (b.leases, b.leases_held, b.mrs_revoked, b.pages_unpinned),
            (1, 0, 1, 256)
        );
    });
    assert_eq!(dev.pin_totals(), (256, 256), "only the source stays pinned");
    assert_eq!(
        event_summary(&dev),
        vec![
            (
                PL_EVENT_MR_REVOKED,
                c,
                [kd, PL_REVOKE_LEASE_BREAK, 256, lease]
            ),
            (
                PL_EVENT_LEASE_BROKEN,
                c,
                [lease, PL_BREAK_TRUNCATE.into(), PL_POLICY_REVOKE.into(), 1]
            ),
        ]
    );
}

#[test]
fn memory_map_change_revoke_is_final_under_concurrent_dma() {
    let full = two_region_map((0, 2 * MIB), (4 * MIB as u64, MIB));
    let dev = Arc::new(Device::new(Limits::default()));
    dev.set_memory(Box::new(MmapRam::new(full.clone())));
    let c = ctx(&dev);
    let ls = Layout::pages(run(0, 256));
    let ld = Layout::pages(run(4 * MIB as u64, 256));
    let ks = reg(&dev, c, &ls, PL_ACCESS_READ);
    let kd = reg(&dev, c, &ld, PL_ACCESS_WRITE);
    let old = ram(&dev);
    let d2 = dev.clone();
    let f2 = full.clone();
    // `revoke_under_dma` reads through the map current when it starts,
    // which keeps the removed region mapped for the final comparison.
    revoke_under_dma(&dev, c, (ks, &ls), (kd, &ld), || {
        assert_eq!(
            d2.set_memory(Box::new(without_region(&f2, 4 * MIB as u64, MIB))),
            1
        );
    });
    drop(old);
    assert!(dev.mr(ks).unwrap().is_live());
    assert_eq!(dev.pin_totals(), (256, 256));
    assert_eq!(
        event_summary(&dev),
        vec![(PL_EVENT_MR_REVOKED, c, [kd, PL_REVOKE_MEMORY_MAP, 256, 0])]
    );
}

#[test]
fn revoked_mr_stays_visible_refuses_access_and_dereg_does_not_double_unpin() {
    device_and_ram!(dev, r; a, b);
    // The revoked MR shares its first page with a live one.
    let lv = Layout::pages(vec![0x1000]);
    let live = reg(&dev, a, &lv, PL_ACCESS_ALL);
    let lr = Layout::pages(vec![0x1000, 0x2000, 0x3000]);
    let lease = take(&dev, a, file(1), 0, 3 * 4096, PL_POLICY_REVOKE);
    let k = reg_file(&dev, a, &lr, PL_ACCESS_ALL, file(1), 0).key;
    let mine = reg(&dev, b, &Layout::pages(vec![0x9000]), PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (4, 5));
    lr.set_word(r, 8192, 5);
    let resp = brk(&dev, file(1), 0, 0);
    assert_eq!((resp.mrs_revoked, resp.pages_unpinned), (1, 3));
    assert_eq!(
        dev.pin_totals(),
        (2, 2),
        "shared page keeps the live MR's pin"
    );
    assert_eq!(lease_state(&dev, lease), LeaseState::Revoked);
    assert_eq!(lease_status(&dev, lease).unwrap().state, "revoked");

    let s = mr_status(&dev, k).expect("revoked MR stays in status");
    assert_eq!(
        (&*s.state, s.revoke_reason.as_deref()),
        ("revoked", Some("lease-break"))
    );
    let c = Status::Canceled;
    assert_eq!(st(write(&dev, a, k, 0, live, 0, 8)), c);
    assert_eq!(st(write(&dev, a, live, 0, k, 0, 8)), c);
    assert_eq!(st(read(&dev, a, live, 0, k, 0, 0)), c, "even zero length");
    assert_eq!(st(write(&dev, b, mine, 0, k, 0, 8)), c);
    assert_eq!(
        st(dev.atomic(b, AtomicOp::FetchAdd, &atomic(k, 8192, 1, 0))),
        c
    );
    assert_eq!(st(dev.fill(b, &pattern(k, 0, 8, 1, PL_PATTERN_CONST))), c);
    assert_eq!(st(dev.verify(b, &pattern(k, 0, 8, 1, PL_PATTERN_CONST))), c);
    assert_eq!(st(dev.export_mr(a, k)), c);
    assert_eq!(lr.word(r, 8192), 5);

    let revokes = || dev.counters.revokes.load(Ordering::Relaxed);
    assert_eq!(revokes(), 1);
    dev.dereg_mr(a, k).unwrap();
    assert_eq!(
        dev.pin_totals(),
        (2, 2),
        "dereg of a revoked MR unpins nothing"
    );
    assert_eq!(revokes(), 1, "and does not revoke it again");
    assert_eq!(st(dev.mr(k)), Status::Stale);
    assert!(mr_status(&dev, k).is_none());
    assert!(dev
        .events
        .pop()
        .is_some_and(|e| e.kind == PL_EVENT_MR_REVOKED));
    assert!(dev
        .events
        .pop()
        .is_some_and(|e| e.kind == PL_EVENT_LEASE_BROKEN));
    assert!(dev.events.pop().is_none(), "no event for the dereg");
    dev.dereg_mr(a, live).unwrap();
    dev.dereg_mr(b, mine).unwrap();
    assert_eq!(dev.pin_totals(), (0, 0));
}

// ---- export vs destroy -------------------------------------------------------------

#[test]
fn concurrent_export_and_destroy_never_yield_two_live_exports() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 10_000;
    let dev = device(1);
    let a = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    // (handle, holders): the export the threads hold references to now.
    let held = Arc::new(Mutex::new((0u64, 0usize)));
    let distinct = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (dev, held, distinct, start) =
                (dev.clone(), held.clone(), distinct.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    let e = dev.export_mr(a, k).expect("export");
                    assert!(e.refs >= 1);
                    {
                        let mut h = held.lock().unwrap();
                        if h.1 > 0 {
                            assert_eq!(
                                h.0, e.export,
                                "two different exports of one MR alive at once"
                            );
                        }
                        *h = (e.export, h.1 + 1);
                    }
                    distinct.lock().unwrap().insert(e.export);
                    {
                        let mut h = held.lock().unwrap();
                        h.1 -= 1;
                    }
                    dev.destroy_child(a, e.export).expect("destroy");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        dev.status().contexts[0].children.is_empty(),
        "no export left"
    );
    assert!(dev.children.is_empty());
    assert!(
        distinct.lock().unwrap().len() > 1,
        "exports were destroyed and remade"
    );
    // And the machinery still works.
    let e = dev.export_mr(a, k).unwrap();
    assert_eq!(e.refs, 1);
    dev.destroy_child(a, e.export).unwrap();
    dev.release_context(a).unwrap();
}

// ---- lookups racing destroys ------------------------------------------------------------

#[test]
fn lookups_racing_dereg_never_resurrect_the_mr() {
    const READERS: usize = 3;
    let dev = device(1);
    let r = ram(&dev);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let target = Layout::pages(vec![0x10000]);
    let locals: Vec<(Handle, Layout)> = (0..READERS as u64)
        .map(|i| {
            let l = Layout::pages(vec![0x20000 + i * 0x1000]);
            l.write(r.as_ref().as_ref(), 0, &[0x10 + i as u8; 4096]);
            (reg(&dev, b, &l, PL_ACCESS_READ), l)
        })
        .collect();
    for round in 0..40 {
        let k = reg(&dev, a, &target, PL_ACCESS_WRITE);
        let gone = Arc::new(AtomicBool::new(false));
        let tries = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = locals
            .iter()
            .map(|(lk, _)| {
                let (dev, gone, tries, lk) = (dev.clone(), gone.clone(), tries.clone(), *lk);
                thread::spawn(move || {
                    let mut after = 0;
                    let mut ok_before = 0;
                    while after < 200 {
                        let post = gone.load(Ordering::SeqCst);
                        let found = dev.mr(k);
                        let copied = write(&dev, b, lk, 0, k, 0, 4096);
                        tries.fetch_add(1, Ordering::SeqCst);
                        if post {
                            assert_eq!(st(found), Status::Stale, "lookup after dereg");
                            assert_eq!(st(copied), Status::Stale, "DMA after dereg");
                            after += 1;
                        } else {
                            // Racing the dereg: found or stale, copied or
                            // canceled/stale, never anything else.
                            if let Err(e) = copied {
                                assert!(
                                    matches!(e.status, Status::Stale | Status::Canceled),
                                    "{e}"
                                );
                            } else {
                                ok_before += 1;
                            }
                        }
                    }
                    ok_before
                })
            })
            .collect();
        while tries.load(Ordering::SeqCst) < 3 * round % 50 {
            thread::yield_now();
        }
        dev.dereg_mr(a, k).unwrap();
        gone.store(true, Ordering::SeqCst);
        // Clear the page: any copy from now on would show.
        r.write(0x10000, &[0; 4096]).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        let mut page = [0u8; 4096];
        r.read(0x10000, &mut page).unwrap();
        assert!(
            page.iter().all(|&x| x == 0),
            "round {round}: a DMA landed after dereg returned"
        );
        assert_eq!(st(dev.mr(k)), Status::Stale);
    }
    assert_eq!(dev.pin_totals(), (READERS as u64, READERS as u64));
}

// ---- races decided outside the writer lock ----------------------------------------------------
//
// These tests order two requests deterministically: the test holds an MR's
// gate (or export lock), so a first request parks inside the writer lock;
// later requests are started one by one and the test waits until each is
// asleep on a futex (from /proc) before going on.

/// Waits until thread `tid` of this process sleeps in the futex syscall.
fn wait_blocked(tid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sys =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
        let nr = sys
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<i64>().ok());
        if nr == Some(libc::SYS_futex) {
            return;
        }
        assert!(Instant::now() < deadline, "thread {tid} never blocked");
        thread::yield_now();
    }
}

/// Runs `f` on `dev` on a new thread and returns once that thread is
/// blocked on a lock.
fn spawn_until_blocked<T: Send + 'static>(
    dev: &Arc<Device>,
    f: impl FnOnce(&Device) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dev.clone();
    let t = thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        f(&d)
    });
    wait_blocked(rx.recv().unwrap());
    t
}

fn status_of<T>(r: crate::model::device::Result<T>) -> std::result::Result<T, Status> {
    r.map_err(|e| e.status)
}

#[test]
fn second_of_two_racing_deregs_is_estale() {
    let dev = device(1);
    let a = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let mr = dev.mr(k).unwrap();
    let inside = mr.gate.enter().unwrap();
    let first = spawn_until_blocked(&dev, move |d| status_of(d.dereg_mr(a, k)));
    assert!(!mr.is_live(), "first dereg is revoking, waiting for us");
    let second = spawn_until_blocked(&dev, move |d| status_of(d.dereg_mr(a, k)));
    drop(inside);
    assert_eq!(first.join().unwrap(), Ok(()));
    assert_eq!(second.join().unwrap(), Err(Status::Stale));
}

#[test]
fn second_of_two_racing_export_destroys_is_estale() {
    let dev = device(1);
    let a = ctx(&dev);
    let k = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let e = dev.export_mr(a, k).unwrap().export;
    let export = match &dev.children.get(e).unwrap().kind {
        crate::model::child::ChildKind::Export(x) => x.clone(),
        _ => unreachable!(),
    };
    let mr = dev.mr(k).unwrap();
    let lock = mr.export.lock().unwrap();
    let first = spawn_until_blocked(&dev, move |d| status_of(d.destroy_child(a, e)));
    let second = spawn_until_blocked(&dev, move |d| status_of(d.destroy_child(a, e)));
    drop(lock);
    assert_eq!(first.join().unwrap(), Ok(()));
    let second = second.join().unwrap();
    assert_eq!(export.refs(), 0, "references must not go below zero");
    assert_eq!(second, Err(Status::Stale));
}

#[test]
fn reg_mr_racing_a_memory_map_change_leaves_no_live_mr_outside_the_map() {
    let r2 = (4 * MIB as u64, MIB);
    let full = two_region_map((0, MIB), r2);
    let dev = Arc::new(Device::new(Limits::default()));
    dev.set_memory(Box::new(MmapRam::new(full.clone())));
    let a = ctx(&dev);
    let blocker = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let mr = dev.mr(blocker).unwrap();
    let inside = mr.gate.enter().unwrap();
    // 1. A DEREG_MR parks inside the writer lock, waiting for our gate.
    let holder = spawn_until_blocked(&dev, move |d| status_of(d.dereg_mr(a, blocker)));
    // 2. A map change without region 2 queues on the writer lock.
    let smaller = without_region(&full, r2.0, r2.1);
    let change = spawn_until_blocked(&dev, move |d| d.set_memory(Box::new(smaller)));
    // 3. A REG_MR in region 2 checks its pages (old map), then queues.
    let regd = spawn_until_blocked(&dev, move |d| {
        status_of(d.reg_mr(a, Layout::pages(vec![r2.0]).req(PL_ACCESS_ALL)))
    });
    drop(inside);
    assert_eq!(holder.join().unwrap(), Ok(()));
    change.join().unwrap();
    match regd.join().unwrap() {
        Err(s) => assert_eq!(s, Status::Fault),
        Ok(resp) => {
            let ok = dev.mr(resp.key).unwrap();
            let mem = ram(&dev);
            assert!(
                !ok.is_live() || mem.contains(r2.0, PAGE),
                "live MR {:#x} over page {:#x}, which is outside the memory map \
                 (DMA on it answers {:?}, not ECANCELED)",
                resp.key,
                r2.0,
                dev.fill(a, &pattern(resp.key, 0, 8, 1, PL_PATTERN_CONST))
                    .map_err(|e| e.status)
            );
        }
    }
}

#[test]
fn reg_mr_racing_lease_release_does_not_report_a_released_lease() {
    let dev = device(1);
    let a = ctx(&dev);
    let f = file(1);
    let lease = take(&dev, a, f, 0, 0, PL_POLICY_REVOKE);
    let blocker = reg(&dev, a, &Layout::pages(vec![0x1000]), PL_ACCESS_ALL);
    let mr = dev.mr(blocker).unwrap();
    let inside = mr.gate.enter().unwrap();
    let holder = spawn_until_blocked(&dev, move |d| status_of(d.dereg_mr(a, blocker)));
    let release = spawn_until_blocked(&dev, move |d| {
        status_of(d.lease_release(a, &release_req(lease, PL_RELEASE_HOLDER)))
    });
    let regd = spawn_until_blocked(&dev, move |d| {
        status_of(d.reg_mr(a, Layout::pages(vec![0x2000]).req_file(PL_ACCESS_ALL, f, 0)))
    });
    drop(inside);
    assert_eq!(holder.join().unwrap(), Ok(()));
    assert_eq!(release.join().unwrap(), Ok(()));
    let resp = regd.join().unwrap().unwrap();
    assert_eq!(st(dev.lease(lease)), Status::Stale);
    assert_eq!(
        resp.lease, 0,
        "REG_MR reported lease {:#x}, released before the MR existed",
        resp.lease
    );
    assert_eq!(mr_status(&dev, resp.key).unwrap().lease, None);
}

// ---- device reset ---------------------------------------------------------

#[test]
fn device_reset_forgets_every_context_child_mr_and_lease() {
    let dev = device(4);
    let a = ctx(&dev);
    let b = ctx(&dev);
    let la = Layout::pages(run(0x10000, 4));
    let lb = Layout::pages(run(0x20000, 2));
    let ka = reg_file(&dev, a, &la, PL_ACCESS_ALL, file(1), 0).key;
    let kb = reg(&dev, b, &lb, PL_ACCESS_ALL);
    let lease = take(&dev, a, file(1), 0, 0, PL_POLICY_REVOKE);
    let chan = dev.create_child(a, PL_CHILD_EVENT_CHANNEL).unwrap();
    let export = dev.export_mr(b, kb).unwrap().export;
    assert_eq!(dev.pin_totals(), (6, 6));

    assert_eq!(dev.reset(), 2);

    assert_eq!(dev.pin_totals(), (0, 0), "pins survive a reset");
    let s = dev.status();
    assert!(
        s.contexts.is_empty() && s.mrs.is_empty() && s.leases.is_empty(),
        "{s:?}"
    );
    assert!(
        events(&dev).is_empty(),
        "events about a reset device were kept"
    );
    assert_eq!(s.counters.device_resets, 1);
    // Every old handle is stale now, and the device works again.
    assert_eq!(st(dev.close_context(a)), Status::Stale);
    assert_eq!(st(dev.mr(ka)), Status::Stale);
    assert_eq!(st(dev.lease(lease)), Status::Stale);
    let c = ctx(&dev);
    assert_eq!(st(dev.destroy_child(c, chan)), Status::Stale);
    assert_eq!(
        st(dev.import_mr(c, &import_req(export, PL_ACCESS_READ))),
        Status::Stale
    );
    let k = reg(&dev, c, &la, PL_ACCESS_ALL);
    assert_eq!(dev.pin_totals(), (4, 4));
    assert_ne!(k, ka);
}
