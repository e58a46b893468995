use std::sync::atomic::AtomicBool;

use super::*;
use crate::model::context::Context;
use crate::model::lease::Policy;

fn file(ino: u64) -> PlFileId {
    PlFileId::new(8, ino, 1)
}

fn lease(h: Handle, f: PlFileId, start: u64, end: u64, ctx: &Arc<Context>) -> Arc<Lease> {
    Arc::new(Lease::new(h, f, start, end, ctx, 1, Policy::Revoke))
}

fn handles(v: Vec<Arc<Lease>>) -> Vec<Handle> {
    v.iter().map(|l| l.handle).collect()
}

#[test]
fn overlap_lookup_finds_exactly_the_overlapping_leases() {
    let ctx = Arc::new(Context::new(1, 1, "t".into()));
    let t = LeaseTable::default();
    t.insert(lease(1, file(1), 0, 4096, &ctx));
    t.insert(lease(2, file(1), 4096, 8192, &ctx));
    t.insert(lease(3, file(1), 100_000, u64::MAX, &ctx));
    t.insert(lease(4, file(2), 0, 4096, &ctx));
    assert_eq!(handles(t.overlapping(&file(1), 0, 1)), vec![1]);
    assert_eq!(handles(t.overlapping(&file(1), 4095, 4097)), vec![1, 2]);
    assert_eq!(
        handles(t.overlapping(&file(1), 8192, 100_000)),
        Vec::<u64>::new()
    );
    assert_eq!(handles(t.overlapping(&file(1), 200_000, 200_001)), vec![3]);
    assert_eq!(handles(t.overlapping(&file(1), 0, u64::MAX)), vec![1, 2, 3]);
    assert_eq!(
        handles(t.overlapping(&file(3), 0, u64::MAX)),
        Vec::<u64>::new()
    );
    assert_eq!(
        handles(t.overlapping(&file(1), 5, 5)),
        Vec::<u64>::new(),
        "empty range"
    );
    let other_gen = PlFileId {
        generation: 2,
        ..file(2)
    };
    assert!(
        t.overlapping(&other_gen, 0, 10).is_empty(),
        "recycled inode is another file"
    );
    assert_eq!(t.remove(3).map(|l| l.handle), Some(3));
    assert!(t.overlapping(&file(1), 200_000, 200_001).is_empty());
    assert!(t.remove(3).is_none());
    assert_eq!(t.len(), 3);
}

#[test]
fn long_lease_removed_shrinks_the_scan_window_again() {
    let ctx = Arc::new(Context::new(1, 1, "t".into()));
    let t = LeaseTable::default();
    for i in 0..1000u64 {
        t.insert(lease(i + 1, file(1), i * 4096, (i + 1) * 4096, &ctx));
    }
    t.insert(lease(5000, file(1), 0, u64::MAX, &ctx));
    let mut visited = 0;
    t.for_each_overlapping(&file(1), 999 * 4096, 999 * 4096 + 1, |_| {
        visited += 1;
        true
    });
    assert_eq!(visited, 2);
    t.remove(5000);
    let n = t.for_each_overlapping(&file(1), 500 * 4096, 500 * 4096 + 1, |_| true);
    assert_eq!(n, 1);
    // A long bounded lease widens the window; removing it narrows it.
    t.insert(lease(6000, file(1), 0, 1000 * 4096, &ctx));
    let f = &file(1);
    assert_eq!(
        t.for_each_overlapping(f, 999 * 4096, 999 * 4096 + 1, |_| true),
        2
    );
    assert_eq!(t.max_len(f), 1000 * 4096);
    t.remove(6000);
    assert_eq!(t.max_len(f), 4096);
}

#[test]
fn a_stale_handle_never_reaches_its_slots_next_lease() {
    let ctx = Arc::new(Context::new(1, 1, "t".into()));
    let t = LeaseTable::default();
    let old = (1u64 << 32) | 7;
    let new = (3u64 << 32) | 7;
    t.insert(lease(old, file(1), 0, 4096, &ctx));
    assert_eq!(t.remove(old).map(|l| l.handle), Some(old));
    t.insert(lease(new, file(2), 0, 4096, &ctx));
    assert!(t.get(old).is_none(), "same slot, older generation");
    assert!(t.remove(old).is_none());
    assert_eq!(t.get(new).map(|l| l.handle), Some(new));
    assert!(t.overlapping(&file(1), 0, 4096).is_empty());
    assert_eq!(handles(t.overlapping(&file(2), 0, 4096)), vec![new]);
    assert_eq!(t.len(), 1);
}

#[test]
fn many_files_and_pages_grow_the_indexes_and_all_is_ordered() {
    let ctx = Arc::new(Context::new(1, 1, "t".into()));
    let t = LeaseTable::default();
    // Past FIRST_BUCKETS files and past one page of slots, inserted in an
    // order unlike the sorted one.
    let n = 5 * SLOT_PAGE as u64;
    for i in (0..n).rev() {
        let ino = i % 700;
        let k = i / 700;
        t.insert(lease(i + 1, file(ino), k * 4096, (k + 1) * 4096, &ctx));
    }
    assert_eq!(t.len() as u64, n);
    assert_eq!(t.files.load(Ordering::Acquire), 700);
    assert!(t.by_file.load().buckets.len() >= 700);
    for i in 0..n {
        let (ino, k) = (i % 700, i / 700);
        let got = handles(t.overlapping(&file(ino), k * 4096, k * 4096 + 1));
        assert_eq!(got, vec![i + 1], "lease {i} after the table grew");
    }
    let all = t.all();
    assert_eq!(all.len() as u64, n);
    assert!(all
        .windows(2)
        .all(|w| (file_key(&w[0].file), w[0].start) < (file_key(&w[1].file), w[1].start)));
    for i in 0..n {
        assert!(t.remove(i + 1).is_some());
    }
    assert!(t.is_empty());
    assert_eq!(t.files.load(Ordering::Acquire), 0);
    assert!(t.all().is_empty());
}

#[test]
fn same_length_leases_keep_the_window_until_the_last_goes() {
    let ctx = Arc::new(Context::new(1, 1, "t".into()));
    let t = LeaseTable::default();
    t.insert(lease(1, file(1), 0, 8192, &ctx));
    t.insert(lease(2, file(1), 8192, 16384, &ctx));
    t.insert(lease(3, file(1), 16384, 20480, &ctx));
    t.remove(1);
    assert_eq!(
        handles(t.overlapping(&file(1), 16000, 16001)),
        vec![2],
        "lease 2 (8 KiB) still found from 8 KiB after its start"
    );
    t.remove(2);
    assert_eq!(handles(t.overlapping(&file(1), 16384, 16385)), vec![3]);
}

#[test]
fn readers_during_writes_see_each_stable_lease_and_only_real_ones() {
    let ctx = Arc::new(Context::new(1, 1, "t".into()));
    let t = Arc::new(LeaseTable::default());
    // Stable leases on even inos; churn on odd ones and on the same files.
    for i in 0..200u64 {
        t.insert(lease(
            i + 1,
            file(i % 20 * 2),
            i * 4096,
            (i + 1) * 4096,
            &ctx,
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Acquire) || rounds == 0 {
                for i in 0..200u64 {
                    let f = file(i % 20 * 2);
                    let got = t.overlapping(&f, i * 4096, i * 4096 + 1);
                    assert!(
                        got.iter().any(|l| l.handle == i + 1),
                        "stable lease {} missing",
                        i + 1
                    );
                    assert!(got.iter().all(|l| l.overlaps(i * 4096, i * 4096 + 1)));
                }
                rounds += 1;
            }
            rounds
        })
    };
    for round in 0..300u64 {
        for j in 0..50u64 {
            let h = ((round + 2) << 32) | (1000 + j);
            let f = file(j % 40);
            t.insert(lease(h, f, j * 4096, u64::MAX, &ctx));
        }
        for j in 0..50u64 {
            assert!(t.remove(((round + 2) << 32) | (1000 + j)).is_some());
        }
    }
    stop.store(true, Ordering::Release);
    assert!(reader.join().expect("reader thread") > 0);
    assert_eq!(t.len(), 200);
}
