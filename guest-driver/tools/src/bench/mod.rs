//! `pinlease-guest bench`: the guest side of the benchmark
//! (`guest-driver/vm/run --bench`, issue 11). Prints, for every figure of
//! `guest-driver/include/bench_figures.txt` that lists the pinlease,
//! memcpy or barepin side, one console line per side:
//!
//! ```text
//! PINLEASE-BENCH SIDE ID VALUE [KEY=VALUE ...]
//! ```
//!
//! VALUE is in the figure's unit: a rate (`n` operations over the sum of
//! their measured times) or the median of the measured times. Each figure
//! runs a warm-up of 0.2 x `--seconds`, then its loop until `--seconds`
//! have passed (setup between operations counts toward the loop's wall
//! time, not toward the figure). Details: `n=` operations measured, `bytes=`
//! per operation where it has bytes, `spread=` (p90 - p10) / median of the
//! operations' times in percent, and the figure's own (`via=`, `why=` ...).
//!
//! One file per concern: `figures.rs` the table (generated), `mr.rs`
//! registration figures, `dma.rs` device data operations and memcpy,
//! `barepin.rs` the module's bench_pin file, `events.rs`, `leases.rs`.
//! Progress goes to stderr; the exit status is 0 only when every selected
//! figure printed every guest side.

pub(crate) mod barepin;
mod dma;
mod events;
pub mod figures;
mod leases;
mod mr;

use crate::dev::{Dev, SysError};
use crate::ktap::CaseErr;
use crate::markers;
use figures::{Figure, Side};
use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

/// Why a figure or the whole bench could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    BarePin(#[from] barepin::BarePinError),
    #[error("{0}")]
    Setup(String),
    #[error("--only: {0:?} is not a figure id of bench_figures.txt")]
    UnknownFigure(String),
    #[error("--only: figure {id} has no pinlease, memcpy or barepin side (its sides: {sides})")]
    NotAGuestFigure { id: String, sides: String },
    #[error("--only: no figure id given")]
    EmptyOnly,
    #[error("--seconds {0}: must be a number > 0")]
    BadSeconds(f64),
    #[error("{what}: nothing within {within:?}")]
    Timeout { what: String, within: Duration },
    #[error("{what}: {got}, expected {want}")]
    Unexpected {
        what: String,
        got: String,
        want: String,
    },
}

impl From<CaseErr> for BenchError {
    /// The shared case helpers (cases::helpers) answer in KTAP terms.
    fn from(e: CaseErr) -> BenchError {
        match e {
            CaseErr::Skip(why) => BenchError::Setup(format!("cannot run: {why}")),
            CaseErr::Fail(why) => BenchError::Setup(why),
        }
    }
}

pub type BenchResult<T> = Result<T, BenchError>;

/// One MiB, in bytes.
pub const MIB_BYTES: u64 = 1 << 20;

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct Opts {
    pub seconds: f64,
    pub max_mib: u64,
    pub dev: String,
    /// The figures to measure (all of them when `--only` is not given).
    pub only: Vec<&'static Figure>,
}

/// The figures `--only ID,...` names, or every figure with a guest side
/// when `only` is None. Every id must be a figure with a guest side.
pub fn select(only: Option<&str>) -> BenchResult<Vec<&'static Figure>> {
    let Some(list) = only else {
        return Ok(figures::ALL
            .iter()
            .filter(|f| !f.guest_sides().is_empty())
            .collect());
    };
    let mut out: Vec<&'static Figure> = Vec::new();
    for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(f) = figures::ALL.iter().find(|f| f.id == id) else {
            return Err(BenchError::UnknownFigure(id.to_string()));
        };
        if f.guest_sides().is_empty() {
            let sides: Vec<&str> = f.sides.iter().map(|s| s.name()).collect();
            return Err(BenchError::NotAGuestFigure {
                id: id.to_string(),
                sides: sides.join(","),
            });
        }
        if !out.iter().any(|g| g.id == f.id) {
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err(BenchError::EmptyOnly);
    }
    Ok(out)
}

/// One `PINLEASE-BENCH` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub side: Side,
    pub figure: &'static Figure,
    pub value: f64,
    pub details: Vec<(&'static str, String)>,
}

impl Line {
    pub fn new(side: Side, figure: &'static Figure, value: f64) -> Line {
        Line {
            side,
            figure,
            value,
            details: Vec::new(),
        }
    }

    /// Adds `key=value`; the value must hold no whitespace (one token).
    pub fn detail(mut self, key: &'static str, value: impl fmt::Display) -> Line {
        let v = value.to_string();
        assert!(
            !v.is_empty() && !v.contains(char::is_whitespace),
            "detail {key}={v:?} is not one token"
        );
        self.details.push((key, v));
        self
    }

    /// `n=`, `spread=` and `bytes=` (when not 0) of a loop.
    pub fn stats(self, s: &Stats, bytes: u64) -> Line {
        let l = self.detail("n", s.n()).detail("spread", s.spread_text());
        if bytes > 0 {
            l.detail("bytes", bytes)
        } else {
            l
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            markers::BENCH,
            self.side,
            self.figure.id,
            format_value(self.value)
        )?;
        for (k, v) in &self.details {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// A figure's value: a plain decimal (no exponent), 3 decimals below 1000,
/// 1 above (the unit's precision is far coarser than the noise).
pub fn format_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The measured times of a loop's operations.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    times: Vec<Duration>,
}

impl Stats {
    pub fn from_times(times: Vec<Duration>) -> Stats {
        Stats { times }
    }

    pub fn n(&self) -> usize {
        self.times.len()
    }

    pub fn total(&self) -> Duration {
        self.times.iter().sum()
    }

    fn sorted_secs(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.times.iter().map(Duration::as_secs_f64).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median time in seconds (the mean of the middle two for an even
    /// count); 0 without operations.
    pub fn median_secs(&self) -> f64 {
        let v = self.sorted_secs();
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// `units` per operation over the sum of the operations' times, per
    /// second; 0 without time measured.
    pub fn rate(&self, units_per_op: f64) -> f64 {
        let secs = self.total().as_secs_f64();
        if secs > 0.0 {
            self.n() as f64 * units_per_op / secs
        } else {
            0.0
        }
    }

    /// The time at quantile `q` (0..=1), nearest rank.
    fn quantile_secs(&self, q: f64) -> f64 {
        let v = self.sorted_secs();
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i.min(v.len() - 1)]
    }

    /// (p90 - p10) / median, in percent: how much the operations' times
    /// vary (0 with fewer than 2 operations).
    pub fn spread_pct(&self) -> f64 {
        let med = self.median_secs();
        if self.n() < 2 || med <= 0.0 {
            return 0.0;
        }
        (self.quantile_secs(0.9) - self.quantile_secs(0.1)) / med * 100.0
    }

    pub fn spread_text(&self) -> String {
        format!("{:.0}%", self.spread_pct())
    }
}

/// How long a figure's loop runs.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub run: Duration,
}

impl Timing {
    /// `seconds` of loop after a warm-up of 0.2 x `seconds`.
    pub fn from_seconds(seconds: f64) -> BenchResult<Timing> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(BenchError::BadSeconds(seconds));
        }
        Ok(Timing {
            warmup: Duration::from_secs_f64(seconds * 0.2),
            run: Duration::from_secs_f64(seconds),
        })
    }
}

/// A loop's bounds besides its time: at least `min` operations measured,
/// at most `max` (one registration of 1 GiB may take seconds).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub min: usize,
    pub max: usize,
    /// Run the warm-up (off where one operation lasts a second: the
    /// lease-break-time).
    pub warmup: bool,
}

impl Bounds {
    pub const RATE: Bounds = Bounds {
        min: 1,
        max: usize::MAX,
        warmup: true,
    };
    /// Median of a few (REG of 64 MiB, of all the guest can get).
    pub const FEW: Bounds = Bounds {
        min: 3,
        max: 15,
        warmup: true,
    };
}

/// Runs `op` (which returns the time of what it measures) through the
/// warm-up, then until `timing.run` of wall time passed (and `bounds`).
pub fn run_loop(
    timing: &Timing,
    bounds: Bounds,
    mut op: impl FnMut() -> BenchResult<Duration>,
) -> BenchResult<Stats> {
    if bounds.warmup {
        let t0 = Instant::now();
        while t0.elapsed() < timing.warmup {
            op()?;
        }
    }
    let t0 = Instant::now();
    let mut times = Vec::new();
    while times.len() < bounds.min || (t0.elapsed() < timing.run && times.len() < bounds.max) {
        times.push(op()?);
    }
    Ok(Stats::from_times(times))
}

/// The time `f` takes.
pub fn timed<T>(f: impl FnOnce() -> BenchResult<T>) -> BenchResult<(T, Duration)> {
    let t0 = Instant::now();
    let v = f()?;
    Ok((v, t0.elapsed()))
}

/// What every figure's code gets.
pub struct Bench {
    pub timing: Timing,
    pub max_mib: u64,
    pub dev: String,
}

impl Bench {
    pub fn open(&self) -> BenchResult<Dev> {
        Ok(Dev::open(&self.dev)?)
    }
}

type Measure = fn(&Bench, &'static Figure) -> BenchResult<Vec<Line>>;

/// Which code measures each figure with a guest side: one entry per such
/// figure of bench_figures.txt (a unit test checks the pairing).
const PLAN: &[(&Figure, Measure)] = &[
    (&figures::NOP, dma::nop),
    (&figures::REGDEREG_1P, mr::regdereg),
    (&figures::REGDEREG_256P, mr::regdereg),
    (&figures::REGDEREG_65536P, mr::regdereg),
    (&figures::REG_1P, mr::reg_1p),
    (&figures::DEREG_1P, mr::dereg_1p),
    (&figures::REG_64M, mr::reg_big),
    (&figures::REG_MAX, mr::reg_big),
    (&figures::WRITE_4K_QD1, dma::write),
    (&figures::WRITE_1M_QD1, dma::write),
    (&figures::FILL_1M, dma::fill),
    (&figures::VERIFY_1M, dma::verify),
    (&figures::EVENTS, events::events),
    (&figures::LEASE_PAIR, leases::lease_pair),
    (&figures::TRUNCATE_REVOKE, leases::truncate),
    (&figures::TRUNCATE_WAIT, leases::truncate),
    (&figures::TRUNCATE_TIMEOUT, leases::truncate),
];

fn plan_for(f: &Figure) -> Option<Measure> {
    PLAN.iter().find(|(g, _)| g.id == f.id).map(|(_, m)| *m)
}

/// The byte count in a figure id (`write_4k_qd1`: 4096, `fill_1m`:
/// 1 MiB) or its page count (`regdereg_256p`: 256 pages of 4 KiB), in bytes.
pub fn id_bytes(id: &str) -> Option<u64> {
    id.split('_').find_map(|tok| {
        let (num, mult) = if let Some(n) = tok.strip_suffix('k') {
            (n, 1u64 << 10)
        } else if let Some(n) = tok.strip_suffix('m') {
            (n, 1 << 20)
        } else if let Some(n) = tok.strip_suffix('p') {
            (n, 4096)
        } else {
            return None;
        };
        num.parse::<u64>().ok().map(|n| n * mult)
    })
}

/// Checks that `lines` are exactly the guest sides of `f`, each once.
fn check_lines(f: &Figure, lines: &[Line]) -> BenchResult<()> {
    let got: Vec<Side> = lines.iter().map(|l| l.side).collect();
    let want = f.guest_sides();
    if got != want || lines.iter().any(|l| l.figure.id != f.id) {
        return Err(BenchError::Unexpected {
            what: format!("figure {}: the lines measured", f.id),
            got: format!("{got:?}"),
            want: format!("{want:?}"),
        });
    }
    Ok(())
}

/// Measures the selected figures in the table's order, printing each
/// figure's lines as soon as they are measured; the figures that failed,
/// each with its reason.
pub fn run(opts: &Opts, out: &mut impl Write) -> Vec<(&'static str, BenchError)> {
    let bench = match Timing::from_seconds(opts.seconds) {
        Ok(timing) => Bench {
            timing,
            max_mib: opts.max_mib,
            dev: opts.dev.clone(),
        },
        Err(e) => return vec![("*", e)],
    };
    let mut failed = Vec::new();
    for f in figures::ALL
        .iter()
        .filter(|f| opts.only.iter().any(|g| g.id == f.id))
    {
        let Some(measure) = plan_for(f) else {
            failed.push((
                f.id,
                BenchError::Setup("no code measures it (bench::PLAN)".into()),
            ));
            continue;
        };
        eprintln!("pinlease-guest bench: {} ...", f.id);
        let t0 = Instant::now();
        let res = measure(&bench, f).and_then(|lines| check_lines(f, &lines).map(|()| lines));
        match res {
            Ok(lines) => {
                for l in &lines {
                    // The console is the only channel: a lost line is a
                    // missing figure, which the runner reports.
                    let _ = writeln!(out, "{l}");
                }
                let _ = out.flush();
                eprintln!(
                    "pinlease-guest bench: {} done in {:.1} s",
                    f.id,
                    t0.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                eprintln!("pinlease-guest bench: {}: {e}", f.id);
                failed.push((f.id, e));
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_figure_has_one_measure() {
        for f in figures::ALL {
            let n = PLAN.iter().filter(|(g, _)| g.id == f.id).count();
            let want = usize::from(!f.guest_sides().is_empty());
            assert_eq!(n, want, "figure {}: {n} PLAN entries", f.id);
        }
    }

    #[test]
    fn lines_have_the_contract_format() {
        let s = Stats::from_times(vec![Duration::from_micros(100); 4]);
        let l = Line::new(Side::Pinlease, &figures::REGDEREG_1P, 2827.25)
            .stats(&s, 4096)
            .detail("via", "ioctl");
        assert_eq!(
            l.to_string(),
            format!(
                "{} pinlease regdereg_1p 2827.2 n=4 spread=0% bytes=4096 via=ioctl",
                markers::BENCH
            )
        );
        let l = Line::new(Side::Barepin, &figures::REG_64M, 1.5).stats(&s, 0);
        assert_eq!(
            l.to_string(),
            format!("{} barepin reg_64m 1.500 n=4 spread=0%", markers::BENCH)
        );
        assert_eq!(format_value(0.0001), "0.000");
        assert_eq!(format_value(1e9), "1000000000.0");
    }

    #[test]
    #[should_panic(expected = "not one token")]
    fn a_detail_with_a_space_is_refused() {
        let _ = Line::new(Side::Memcpy, &figures::FILL_1M, 1.0).detail("why", "two words");
    }

    #[test]
    fn median_rate_and_spread() {
        let ms =
            |v: &[u64]| Stats::from_times(v.iter().map(|&m| Duration::from_millis(m)).collect());
        let s = ms(&[30, 10, 20]);
        assert_eq!(s.median_secs(), 0.020);
        // 3 ops in 60 ms: 50 ops/s; 4096 bytes each: 204800 B/s
        assert!((s.rate(1.0) - 50.0).abs() < 1e-9);
        assert!((s.rate(4096.0) - 204_800.0).abs() < 1e-6);
        let s = ms(&[10, 40, 20, 30]);
        assert_eq!(s.median_secs(), 0.025);
        // p10 = 10 ms, p90 = 40 ms (nearest rank of 4): 30 / 25 = 120 %
        assert!((s.spread_pct() - 120.0).abs() < 1e-9);
        assert_eq!(s.spread_text(), "120%");
        let empty = Stats::default();
        assert_eq!((empty.median_secs(), empty.rate(1.0)), (0.0, 0.0));
        assert_eq!(ms(&[5]).spread_pct(), 0.0);
    }

    #[test]
    fn only_selects_and_names_bad_ids() {
        let all = select(None).unwrap();
        assert!(all.iter().all(|f| !f.guest_sides().is_empty()));
        assert_eq!(
            all.len(),
            figures::ALL
                .iter()
                .filter(|f| !f.guest_sides().is_empty())
                .count()
        );
        let some = select(Some("reg_max, nop,reg_max")).unwrap();
        let ids: Vec<&str> = some.iter().map(|f| f.id).collect();
        assert_eq!(ids, ["reg_max", "nop"]);
        let e = select(Some("nop,regdereg_2p")).unwrap_err();
        assert!(matches!(&e, BenchError::UnknownFigure(id) if id == "regdereg_2p"));
        assert!(e.to_string().contains("\"regdereg_2p\""), "{e}");
        assert!(matches!(select(Some(" , ")), Err(BenchError::EmptyOnly)));
    }

    #[test]
    fn loop_bounds() {
        let t = Timing {
            warmup: Duration::ZERO,
            run: Duration::ZERO,
        };
        let mut calls = 0;
        let s = run_loop(&t, Bounds::FEW, || {
            calls += 1;
            Ok(Duration::from_millis(1))
        })
        .unwrap();
        assert_eq!((s.n(), calls), (3, 3));
        assert!(Timing::from_seconds(0.0).is_err());
        assert!(Timing::from_seconds(f64::NAN).is_err());
        assert_eq!(
            Timing::from_seconds(3.0).unwrap().warmup,
            Duration::from_millis(600)
        );
    }

    #[test]
    fn sizes_in_ids() {
        assert_eq!(id_bytes("regdereg_65536p"), Some(65536 * 4096));
        assert_eq!(id_bytes("write_4k_qd1"), Some(4096));
        assert_eq!(id_bytes("fill_1m"), Some(1 << 20));
        assert_eq!(id_bytes("reg_64m"), Some(64 << 20));
        assert_eq!(id_bytes("reg_max"), None);
        assert_eq!(id_bytes("events"), None);
    }

    #[test]
    fn lines_must_match_the_figure_sides() {
        let l = |s| Line::new(s, &figures::WRITE_4K_QD1, 1.0);
        assert!(check_lines(
            &figures::WRITE_4K_QD1,
            &[l(Side::Pinlease), l(Side::Memcpy)]
        )
        .is_ok());
        assert!(check_lines(&figures::WRITE_4K_QD1, &[l(Side::Pinlease)]).is_err());
        assert!(check_lines(&figures::NOP, &[l(Side::Pinlease)]).is_err());
    }
}
