//! Section 4: lease conflict checks in tables of 10^3 and 10^6 leases.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use pinlease::model::context::Context;
use pinlease::model::lease::{Lease, LeaseState, LeaseTable, Policy};
use pinlease_abi::*;

use crate::machine::smaps;
use crate::measure::{measure, Rate};
use crate::report::Report;
use crate::{KIB, MIB, PAGE, REPS_MICRO};

/// xorshift64*: reproducible and dependency-free.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(crate) fn file(i: u64) -> PlFileId {
    PlFileId::new(8, 1000 + i, 1)
}

pub(crate) const LEASE_LEN: u64 = 64 * KIB;
/// Files 0..WHOLE_FILE_LEASES also carry a whole-file lease (another holder).
pub(crate) const WHOLE_FILE_LEASES: u64 = 4;

/// `files` files with `per_file` adjacent 64 KiB leases each (taken round
/// robin over the files, as leases would arrive over time), plus whole-file
/// leases on a few files.
pub(crate) fn build_leases(
    files: u64,
    per_file: u64,
    holder: &Arc<Context>,
    other: &Arc<Context>,
) -> LeaseTable {
    let t = LeaseTable::default();
    let mut h = 0u64;
    let mut handle = || {
        h += 1;
        (1u64 << 32) | h
    };
    for k in 0..per_file {
        for f in 0..files {
            t.insert(Arc::new(Lease::new(
                handle(),
                file(f),
                k * LEASE_LEN,
                (k + 1) * LEASE_LEN,
                holder,
                1,
                Policy::Revoke,
            )));
        }
    }
    for f in 0..WHOLE_FILE_LEASES {
        t.insert(Arc::new(Lease::new(
            handle(),
            file(f),
            0,
            u64::MAX,
            other,
            2,
            Policy::Wait,
        )));
    }
    t
}

/// The REG_MR path's lookup (Device::covering_lease): the holder's ACTIVE
/// lease containing the range, stopping at the first.
pub(crate) fn covering(t: &LeaseTable, holder: u64, f: &PlFileId, off: u64, len: u64) -> bool {
    let mut found = false;
    t.for_each_overlapping(f, off, off + len, |l| {
        if l.holder == holder && l.state() == LeaseState::Active && l.covers(f, off, len) {
            found = true;
            return false;
        }
        true
    });
    found
}

/// Lookups timed in batches of this many.
const BATCH: usize = 256;

/// Lookups per second of `lookup` over the ranges in `ranges` in turn,
/// `ranges[i & 4095]` onwards (`i` goes on from one measure to the next).
fn measure_lookups(
    ranges: &[(PlFileId, u64)],
    i: &mut usize,
    mut lookup: impl FnMut(&PlFileId, u64),
) -> Rate {
    measure(REPS_MICRO, || {
        for _ in 0..BATCH {
            let (f, s) = &ranges[*i & 4095];
            *i += 1;
            lookup(f, *s);
        }
        BATCH as u64
    })
}

pub(crate) fn bench_leases(rep: &mut Report) {
    eprintln!("4. lease conflict checks");
    let holder = Arc::new(Context::new((1 << 32) | 1, 1, "bench".into()));
    let other = Arc::new(Context::new((1 << 32) | 2, 2, "other".into()));
    let me = std::process::id().to_string();
    for (files, per_file) in [(100u64, 10u64), (1000, 1000)] {
        let n = files * per_file;
        let before = smaps(&me);
        let t0 = Instant::now();
        let t = build_leases(files, per_file, &holder, &other);
        let build = t0.elapsed();
        let after = smaps(&me);
        let anon = after.get("Anonymous").unwrap_or(&0) - before.get("Anonymous").unwrap_or(&0);
        assert_eq!(t.len() as u64, n + WHOLE_FILE_LEASES);

        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n);
        let span = per_file * LEASE_LEN;
        // Random 64 KiB ranges (4 KiB aligned) on random files.
        let random: Vec<(PlFileId, u64)> = (0..4096)
            .map(|_| (file(rng.below(files)), rng.below(span / PAGE) * PAGE))
            .collect();
        // Random 64 KiB ranges on the files that have a whole-file lease.
        let worst: Vec<(PlFileId, u64)> = (0..4096)
            .map(|_| {
                (
                    file(rng.below(WHOLE_FILE_LEASES)),
                    rng.below(span / PAGE) * PAGE,
                )
            })
            .collect();
        // 16 KiB inside one 64 KiB lease of the holder, random files.
        let inside: Vec<(PlFileId, u64)> = (0..4096)
            .map(|_| {
                let k = rng.below(per_file);
                let off = k * LEASE_LEN + rng.below((LEASE_LEN - 16 * KIB) / PAGE + 1) * PAGE;
                (file(rng.below(files)), off)
            })
            .collect();

        let mut i = 0usize;
        let mut found = 0usize;
        let visit = |f: &PlFileId, s: u64| t.for_each_overlapping(f, s, s + LEASE_LEN, |_| true);
        let vec_rate = measure_lookups(&random, &mut i, |f, s| {
            found += t.overlapping(f, s, s + LEASE_LEN).len();
        });
        let visit_rate = measure_lookups(&random, &mut i, |f, s| found += visit(f, s));
        let worst_rate = measure_lookups(&worst, &mut i, |f, s| found += visit(f, s));
        let mut hits = 0u64;
        let mut tries = 0u64;
        let cover_rate = measure_lookups(&inside, &mut i, |f, s| {
            tries += 1;
            hits += u64::from(covering(&t, holder.handle, f, s, 16 * KIB));
        });
        black_box(found);
        let average = |ranges: &[(PlFileId, u64)]| {
            ranges.iter().map(|(f, s)| visit(f, *s)).sum::<usize>() as f64 / ranges.len() as f64
        };
        let avg_visited = average(&random);
        let avg_worst = average(&worst);
        let label = if n >= 1_000_000 { "10^6" } else { "10^3" };
        let ns = |r: &Rate| format!("{:.0} ns", 1e9 / r.median);
        rep.row(
            "4",
            format!("{label} leases ({files} files x {per_file} + {WHOLE_FILE_LEASES} whole-file): overlapping(), random 64 KiB range"),
            ns(&vec_rate),
            "",
            format!("{avg_visited:.2} leases returned on average; Vec allocated per call; spread {}", vec_rate.spread()),
        );
        rep.row(
            "4",
            format!("{label}: for_each_overlapping(), random 64 KiB range"),
            ns(&visit_rate),
            "",
            format!("spread {}", visit_rate.spread()),
        );
        rep.row(
            "4",
            format!("{label}: for_each_overlapping() on a file with a whole-file lease"),
            ns(&worst_rate),
            "",
            format!(
                "{avg_worst:.1} leases overlap on average (leases to EOF are kept apart and do not widen the scan window); spread {}",
                worst_rate.spread()
            ),
        );
        rep.row(
            "4",
            format!("{label}: REG_MR path, covering lease found (16 KiB inside a lease)"),
            ns(&cover_rate),
            "",
            format!(
                "found in {:.1}% of lookups; spread {}",
                hits as f64 / tries.max(1) as f64 * 100.0,
                cover_rate.spread()
            ),
        );
        if n >= 1_000_000 {
            rep.row(
                "4",
                "10^6 leases: table build (LeaseTable::insert one by one)",
                format!("{:.2} s", build.as_secs_f64()),
                "",
                format!(
                    "{:.2} us per insert; Anonymous memory +{:.0} MiB = {:.0} bytes per lease",
                    build.as_secs_f64() * 1e6 / n as f64,
                    anon as f64 / MIB as f64,
                    anon as f64 / n as f64
                ),
            );
            let (insert, remove) = insert_remove(&t, files, per_file, n, &holder);
            rep.row(
                "4",
                "10^6 leases: one insert into the full table",
                format!("{:.2} us", insert.median),
                "",
                format!(
                    "{CHURN} new 64 KiB leases, round robin over the {files} files, timed together, then removed; median of {REPS_MICRO} rounds ({}); spread {}",
                    us_list(&insert),
                    insert.spread()
                ),
            );
            rep.row(
                "4",
                "10^6 leases: one remove from the full table",
                format!("{:.2} us", remove.median),
                "",
                format!(
                    "the same {CHURN} leases; rounds {}; spread {}",
                    us_list(&remove),
                    remove.spread()
                ),
            );
            rep.target(
                "lease insert into a table of 10^6 leases < 2 us",
                format!("{:.2} us (remove {:.2} us)", insert.median, remove.median),
                insert.median < 2.0,
            );
            let slowest = [&vec_rate, &visit_rate, &cover_rate]
                .iter()
                .map(|r| 1e9 / r.median)
                .fold(0.0, f64::max);
            rep.target(
                "conflict check at 10^6 leases < 1 us (random ranges; slowest of overlapping/for_each/REG_MR path)",
                format!(
                    "{slowest:.0} ns (whole-file-lease file: {:.0} ns)",
                    1e9 / worst_rate.median
                ),
                slowest < 1000.0,
            );
            drop(t);
            lease_map_parts(rep, files, per_file, &random);
        }
    }
}

/// Leases inserted (then removed) per repetition of [`insert_remove`].
const CHURN: u64 = 20_000;

/// Microseconds per `LeaseTable::insert` and per `remove` in `t` (which
/// holds `n` leases over `files` files of `per_file` each): `CHURN` new
/// leases after the existing ones, round robin over the files, inserted
/// and then removed, `REPS_MICRO` times after a warm-up round.
fn insert_remove(
    t: &LeaseTable,
    files: u64,
    per_file: u64,
    n: u64,
    holder: &Arc<Context>,
) -> (Rate, Rate) {
    let leases: Vec<Arc<Lease>> = (0..CHURN)
        .map(|i| {
            let k = per_file + i / files;
            Arc::new(Lease::new(
                (1u64 << 32) | (n + WHOLE_FILE_LEASES + 1 + i),
                file(i % files),
                k * LEASE_LEN,
                (k + 1) * LEASE_LEN,
                holder,
                1,
                Policy::Revoke,
            ))
        })
        .collect();
    let (mut ins, mut rem) = (Vec::new(), Vec::new());
    for round in 0..=REPS_MICRO {
        let t0 = Instant::now();
        for l in &leases {
            t.insert(l.clone());
        }
        let t1 = Instant::now();
        for l in &leases {
            black_box(t.remove(l.handle));
        }
        let t2 = Instant::now();
        assert_eq!(t.len() as u64, n + WHOLE_FILE_LEASES);
        if round > 0 {
            let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / CHURN as f64;
            ins.push(per(t1 - t0));
            rem.push(per(t2 - t1));
        }
    }
    (Rate::from(ins), Rate::from(rem))
}

/// The rounds of a [`insert_remove`] figure, in microseconds.
fn us_list(r: &Rate) -> String {
    let v: Vec<String> = r.all.iter().map(|us| format!("{us:.2}")).collect();
    format!("{} us", v.join(", "))
}

/// What one conflict check is made of. The lease table keeps, per file
/// (found by a keyed SipHash of the file into its own buckets),
/// imbl::OrdMaps keyed (start, handle); a check probes the file, then
/// walks its bounded leases from an open-ended range() (one cursor seek;
/// imbl seeks one more for an end bound) while they start before the
/// range's end, and its leases to EOF from the first. Here the file probe
/// is a std HashMap get (the same hash), one file's keys go into a bare
/// imbl::OrdMap and a std BTreeMap, and each step is timed alone.
pub(crate) fn lease_map_parts(
    rep: &mut Report,
    files: u64,
    per_file: u64,
    random: &[(PlFileId, u64)],
) {
    let fk = |f: &PlFileId| (f.dev, f.ino, f.generation);
    let probe: std::collections::HashMap<(u64, u64, u32), u64> =
        (0..files).map(|f| (fk(&file(f)), f)).collect();
    let keys = (0..per_file).map(|k| (k * LEASE_LEN, (1u64 << 32) | (k * files + 1)));
    let im: imbl::OrdMap<(u64, u64), u64> = keys.clone().map(|k| (k, 0u64)).collect();
    let bt: std::collections::BTreeMap<(u64, u64), u64> = keys.map(|k| (k, 0u64)).collect();
    let mut i = 0usize;
    let mut found = 0usize;
    let hm_get = measure_lookups(random, &mut i, |f, _| {
        found += usize::from(probe.contains_key(&fk(f)));
    });
    let mut timed_range = |range_of: &dyn Fn(u64) -> usize| {
        measure_lookups(random, &mut i, |_, s| found += range_of(s))
    };
    let lo = |s: u64| s.saturating_sub(LEASE_LEN);
    let im_next = timed_range(&|s| usize::from(im.range((lo(s), 0)..).next().is_some()));
    let bt_next = timed_range(&|s| usize::from(bt.range((lo(s), 0)..).next().is_some()));
    black_box(found);
    let ns = |r: &Rate| format!("{:.0} ns", 1e9 / r.median);
    rep.row(
        "4",
        format!("  parts: one std HashMap get, {files} files"),
        ns(&hm_get),
        "",
        format!("the file probe of a check; spread {}", hm_get.spread()),
    );
    rep.row(
        "4",
        format!(
            "  parts: one imbl::OrdMap range(from..).next(), {per_file} keys (one file's leases)"
        ),
        ns(&im_next),
        "",
        format!(
            "the seek of a check (open-ended range(): one cursor); spread {}",
            im_next.spread()
        ),
    );
    rep.row(
        "4",
        "  parts: one std BTreeMap range(from..).next(), same keys",
        ns(&bt_next),
        format!("{:.2} x imbl", im_next.median / bt_next.median),
        format!("spread {}", bt_next.spread()),
    );
}
