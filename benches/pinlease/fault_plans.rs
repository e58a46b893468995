//! Section 6: the fault engine's cost per request. NOP round trips through
//! three daemons taking turns: one started without `--faults`, one with an
//! empty plan, one with 10 rules whose points a NOP never hits; and, in
//! this process, the engine's walk of its rules at the two points a NOP
//! hits, which the round trips cannot resolve. A daemon always has an
//! engine (`inject add` can give it rules at run time): without `--faults`
//! its rule list is empty, so the first two daemons run the same code and
//! their ratio shows the noise of the round trips.

use std::path::Path;

use std::hint::black_box;

use pinlease::faults::{parse_plan, FaultEngine, Point};
use pinlease_abi::Opcode;
use pinlease_testkit::daemon::Daemon;

use crate::machine::{pin, Mode};
use crate::measure::{measure_interleaved, one_each, Rate};
use crate::prebuilt::{nop_request, Prebuilt};
use crate::report::{fmt_rate, fmt_us, Report};
use crate::{client, launch, MIB, REPS_MICRO, REPS_RT};

/// This file's section of the report.
const SECTION: &str = "6";

/// Ten rules at points a NOP round trip never hits (other opcodes, events,
/// the memory map, teardown, lease breaks), each with an action valid
/// there (docs/faults.md 1.2, 1.3). The engine still walks all ten on
/// every point a NOP hits (`request:NOP:before` and `:after`).
pub(crate) const NEVER_MATCHING_PLAN: &str = r#"seed = 1

[[rule]]
point = "request:REG_MR:before"
action = "fail"
status = "ENOMEM"

[[rule]]
point = "request:DEREG_MR:after"
action = "fail"
status = "EIO"

[[rule]]
point = "request:WRITE:before"
action = "delay"
ms = 5

[[rule]]
point = "request:READ:after"
action = "duplicate"

[[rule]]
point = "request:FILL:before"
action = "drop"

[[rule]]
point = "event:MR_REVOKED"
action = "drop"

[[rule]]
point = "event:LEASE_BROKEN"
action = "reorder"

[[rule]]
point = "memory-map"
action = "delay"
ms = 1

[[rule]]
point = "context-teardown"
action = "fail"
status = "EBUSY"

[[rule]]
point = "lease-break"
action = "withhold"
ms = 10
"#;

/// The two points a NOP request hits (before and after it runs).
const NOP_POINTS: [Point; 2] = [
    Point::Request {
        op: Some(Opcode::Nop),
        after: false,
    },
    Point::Request {
        op: Some(Opcode::Nop),
        after: true,
    },
];

/// Checks that the plan parses into 10 rules none of which matches a
/// point a NOP hits, so the row measures walking rules, not firing them.
fn check_never_matching_plan() {
    let plan = parse_plan(NEVER_MATCHING_PLAN).expect("the 10-rule plan parses");
    assert_eq!(plan.rules.len(), 10, "the plan has 10 rules");
    for nop in NOP_POINTS {
        for r in &plan.rules {
            assert!(!r.point.matches(nop), "rule at {} matches {nop}", r.point);
        }
    }
}

/// Starts the three daemons; `dir` holds the plan files.
pub(crate) fn fault_plan_daemons(dir: &Path) -> [Daemon; 3] {
    check_never_matching_plan();
    let empty = dir.join("empty-plan.toml");
    let ten = dir.join("ten-rules-plan.toml");
    std::fs::write(&empty, "").expect("writing the empty plan");
    std::fs::write(&ten, NEVER_MATCHING_PLAN).expect("writing the 10-rule plan");
    let with_plan = |p: &Path| {
        launch()
            .args(&[std::ffi::OsStr::new("--faults"), p.as_os_str()])
            .start()
    };
    [launch().start(), with_plan(&empty), with_plan(&ten)]
}

/// Requests' worth of `FaultEngine::hit` (both NOP points) per second, an
/// engine with the empty plan and one with the 10 rules taking turns.
fn engine_hits() -> Vec<Rate> {
    let engine = |text: &str| FaultEngine::new(&parse_plan(text).expect("bench plan"), None);
    let (empty, ten) = (engine(""), engine(NEVER_MATCHING_PLAN));
    let per_batch = 1024u64;
    let requests = |e: &FaultEngine| {
        for _ in 0..per_batch {
            for p in NOP_POINTS {
                black_box(e.hit(black_box(p)));
            }
        }
        per_batch
    };
    measure_interleaved(
        REPS_MICRO,
        &mut [&mut || requests(&empty), &mut || requests(&ten)],
    )
}

pub(crate) fn bench_fault_plans(rep: &mut Report, daemons: &[Daemon; 3], mode: Mode) {
    eprintln!("6. fault engine cost per request{}", mode.name(""));
    for d in daemons {
        pin(d.pid(), mode.one_cpu);
    }
    let mut clients: Vec<_> = daemons.iter().map(|d| client(d, 64 * MIB)).collect();
    let nops: Vec<Prebuilt> = clients
        .iter_mut()
        .map(|c| Prebuilt::new(c.frontend_mut(), &nop_request(), 16))
        .collect();
    let [none, empty, ten] = clients.as_mut_slice() else {
        unreachable!("three daemons")
    };
    let r = measure_interleaved(
        REPS_RT,
        &mut [
            &mut one_each(|| nops[0].ok(none.frontend_mut(), 16)),
            &mut one_each(|| nops[1].ok(empty.frontend_mut(), 16)),
            &mut one_each(|| nops[2].ok(ten.frontend_mut(), 16)),
        ],
    );
    let base = &r[0];
    for (rate, what) in r.iter().zip([
        "NOP, daemon without --faults",
        "NOP, daemon with an empty --faults plan",
        "NOP, daemon with 10 rules that never match a NOP",
    ]) {
        rep.row(
            SECTION,
            mode.name(what),
            fmt_rate(rate.median),
            format!("{:.3} x no plan", rate.median / base.median),
            format!(
                "{} per round trip ({:+.2} us vs no plan); spread {}",
                fmt_us(1.0 / rate.median),
                (1.0 / rate.median - 1.0 / base.median) * 1e6,
                rate.spread()
            ),
        );
    }
}

/// The engine alone, once: it runs in this process, whatever the mode.
pub(crate) fn bench_engine_hits(rep: &mut Report) {
    let r = engine_hits();
    for (rate, what) in r
        .iter()
        .zip(["empty plan", "10 rules that never match a NOP"])
    {
        rep.row(
            SECTION,
            format!("  engine only: FaultEngine::hit at both NOP points, {what}"),
            format!("{:.0} ns", 1e9 / rate.median),
            "",
            format!(
                "per request, in this process (the daemon calls it when started with --faults); spread {}",
                rate.spread()
            ),
        );
    }
}
