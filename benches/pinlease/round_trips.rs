//! Section 1: NOP round trips through the daemon, the echo daemon and an
//! in-process server.

use std::path::Path;

use pinlease::model::Limits;
use pinlease::server::{serve, ServeLoopConfig, ServerState};
use pinlease_testkit::daemon::Daemon;
use pinlease_testkit::frontend::{spawn_echo_daemon, FrontendConfig, TestFrontend};

use crate::machine::Mode;
use crate::measure::{measure, measure_interleaved, one_each, PerOp, Rate};
use crate::prebuilt::{nop_request, Pipeline, Prebuilt};
use crate::report::{fmt_rate, fmt_us, Report};
use crate::{client, MIB, REPS, REPS_RT, TIMEOUT};

/// This file's section of the report.
const SECTION: &str = "1";

pub(crate) fn bench_round_trips(rep: &mut Report, daemon: &Daemon, dir: &Path, mode: Mode) {
    eprintln!("1. NOP round trips{}", mode.name(""));
    // The real daemon, a child process.
    let mut c = client(daemon, 64 * MIB);
    let nop = Prebuilt::new(c.frontend_mut(), &nop_request(), 16);
    let nop_cpu = PerOp::measure(daemon.pid(), 5000, || nop.ok(c.frontend_mut(), 16));

    // The echo daemon (threads of this process).
    let echo_sock = dir.join(if mode.one_cpu {
        "echo1.sock"
    } else {
        "echo.sock"
    });
    let echo = spawn_echo_daemon(&echo_sock).expect("echo daemon");
    let mut efe = TestFrontend::connect(&echo_sock, FrontendConfig::default(), TIMEOUT)
        .expect("connecting to the echo daemon");
    let enop = Prebuilt::new(&mut efe, &nop_request(), 16);

    // pinlease::server::serve in a thread of this process, like the echo
    // daemon: shows whether the process boundary matters.
    let in_sock = dir.join(if mode.one_cpu {
        "inproc1.sock"
    } else {
        "inproc.sock"
    });
    let state = ServerState::new().expect("server state");
    let sockets = pinlease::listen::open(&pinlease::listen::SocketSpec::Path(in_sock.clone()))
        .expect("the in-process daemon's socket");
    let cfg = ServeLoopConfig {
        admin_socket: None,
        limits: Limits::default(),
        max_connections: Some(1),
        scrub_period: None,
        socket_group: None,
        // A filter would confine the whole benchmark process.
        seccomp: pinlease::seccomp::SeccompMode::None,
        sandboxed: false,
    };
    let bound = pinlease::server::bind(&cfg, sockets).expect("binding the in-process socket");
    let server = std::thread::spawn(move || serve(&cfg, bound, state));
    let mut ifo = TestFrontend::connect(&in_sock, FrontendConfig::default(), TIMEOUT)
        .expect("connecting to the in-process daemon");
    let inop = Prebuilt::new(&mut ifo, &nop_request(), 16);

    // The three contenders take turns, one repetition each per round.
    let fe = c.frontend_mut();
    let r = measure_interleaved(
        REPS_RT,
        &mut [
            &mut one_each(|| nop.ok(fe, 16)),
            &mut one_each(|| assert_eq!(enop.round_trip(&mut efe), 16)),
            &mut one_each(|| inop.ok(&mut ifo, 16)),
        ],
    );
    let (pl, echo_raw, in_raw) = (&r[0], &r[1], &r[2]);
    let s = SECTION;
    rep.row(
        s,
        mode.name("NOP, pinlease daemon (child process), 1 in flight"),
        fmt_rate(pl.median),
        format!("{:.2} x echo", pl.median / echo_raw.median),
        format!(
            "{} per round trip; spread {}",
            fmt_us(1.0 / pl.median),
            pl.spread()
        ),
    );
    rep.row(
        s,
        mode.name("echo daemon (threads of the bench), same loop, 1 in flight"),
        fmt_rate(echo_raw.median),
        "1.00",
        format!(
            "{} per round trip; spread {}",
            fmt_us(1.0 / echo_raw.median),
            echo_raw.spread()
        ),
    );
    rate_row(
        rep,
        mode.name("NOP, pinlease `serve` in a thread of the bench, 1 in flight"),
        in_raw,
        (echo_raw, "echo"),
    );
    rep.row(
        s,
        mode.name("  NOP, where the time goes (5000 round trips, child daemon)"),
        fmt_us(nop_cpu.wall),
        "",
        format!(
            "{}; neither process on a CPU for {}",
            nop_cpu.describe(),
            fmt_us(nop_cpu.wall - nop_cpu.daemon - nop_cpu.bench)
        ),
    );
    if mode.full {
        let r = measure_interleaved(
            REPS_RT,
            &mut [
                &mut one_each(|| {
                    assert_eq!(fe.request(&nop_request(), 16).expect("NOP").len(), 16);
                }),
                &mut one_each(|| {
                    assert_eq!(efe.request(&nop_request(), 16).expect("echo").len(), 16);
                }),
            ],
        );
        let (pl_req, echo_req) = (&r[0], &r[1]);
        let mut pipe = Pipeline::new(fe, &nop_request(), 16, 4);
        let mut epipe = Pipeline::new(&mut efe, &nop_request(), 16, 4);
        let r = measure_interleaved(
            REPS_RT,
            &mut [
                &mut one_each(|| pipe.complete_one(fe, 16)),
                &mut one_each(|| epipe.complete_one(&mut efe, 16)),
            ],
        );
        let (pl_pipe, echo_pipe) = (&r[0], &r[1]);
        pipe.drain(fe);
        epipe.drain(&mut efe);
        let pl_client = measure(REPS, || {
            c.nop().expect("NOP");
            1
        });
        against_echo_row(
            rep,
            mode.name("NOP via TestFrontend::request (pinlease / echo)"),
            (pl_req, echo_req),
            "request() re-writes and zeroes the buffers and allocates the answer",
        );
        rate_row(
            rep,
            mode.name("NOP via Client::nop (typed client, tag checked)"),
            &pl_client,
            (pl, "raw NOP"),
        );
        against_echo_row(
            rep,
            mode.name("NOP, 4 in flight (pinlease / echo)"),
            (pl_pipe, echo_pipe),
            "throughput, not latency",
        );
    }
    drop(c);
    drop(efe);
    drop(echo);
    drop(ifo);
    let _ = server.join();
}

/// A row of `r`: its rate, the ratio to `base` (named), its spread.
fn rate_row(rep: &mut Report, what: String, r: &Rate, (base, base_name): (&Rate, &str)) {
    rep.row(
        SECTION,
        what,
        fmt_rate(r.median),
        format!("{:.2} x {base_name}", r.median / base.median),
        format!("spread {}", r.spread()),
    );
}

/// A row of pinlease against echo: both rates and their ratio.
fn against_echo_row(rep: &mut Report, what: String, (pl, echo): (&Rate, &Rate), note: &str) {
    rep.row(
        SECTION,
        what,
        format!("{} / {}", fmt_rate(pl.median), fmt_rate(echo.median)),
        format!("{:.2} x echo", pl.median / echo.median),
        note,
    );
}
