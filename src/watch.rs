//! `pinlease status --watch SECONDS`: ask again every period until
//! interrupted, as watch(1) would, without needing watch(1) (and so that
//! `--json` gives one object per line, which scripts can follow).

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shortest `--watch` period: each frame is a round trip on the admin
/// socket and a status walk of the device; 10 per second is plenty to
/// watch pins come and go and keeps the daemon's admin thread idle.
pub const MIN_PERIOD_SECS: f64 = 0.1;
/// Longest `--watch` period (a day): anything longer is a typo.
pub const MAX_PERIOD_SECS: f64 = 86_400.0;

/// clap's value parser for `--watch`: seconds, fractions allowed. clap
/// puts the flag and the value in front of the message.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || !(MIN_PERIOD_SECS..=MAX_PERIOD_SECS).contains(&secs) {
        return Err(format!(
            "{s} seconds is out of range ({MIN_PERIOD_SECS} to {MAX_PERIOD_SECS})"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// How frames are laid out on the output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// One frame per line, no header (`--json`: JSON lines).
    Lines,
    /// A terminal: clear the screen, header, frame (each replaces the last).
    Screen,
    /// A pipe or file: header, frame, blank line (frames follow each other).
    Log,
}

impl Layout {
    pub fn for_stdout(json: bool) -> Layout {
        match (json, std::io::stdout().is_terminal()) {
            (true, _) => Layout::Lines,
            (false, true) => Layout::Screen,
            (false, false) => Layout::Log,
        }
    }
}

/// The time of day in UTC, HH:MM:SS (no time zone database needed).
fn utc_time_of_day(now: SystemTime) -> String {
    let s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Writes one frame.
pub fn write_frame(
    out: &mut impl Write,
    layout: Layout,
    title: &str,
    period: Duration,
    now: SystemTime,
    frame: &str,
) -> std::io::Result<()> {
    let header = format!(
        "Every {}s: {title}    {} UTC",
        period.as_secs_f64(),
        utc_time_of_day(now)
    );
    match layout {
        Layout::Lines => write!(out, "{frame}")?,
        // ESC[H ESC[2J: cursor home, clear screen.
        Layout::Screen => write!(out, "\x1b[H\x1b[2J{header}\n\n{frame}")?,
        Layout::Log => write!(out, "{header}\n{frame}\n")?,
    }
    out.flush()
}

/// Calls `frame` every `period` and writes what it returns to stdout,
/// until `frame` fails (that error is returned: the daemon went away) or
/// stdout is closed (a reader such as `head` is done: not an error).
pub fn run<E: From<std::io::Error>>(
    title: &str,
    period: Duration,
    json: bool,
    frame: impl FnMut() -> Result<String, E>,
) -> Result<(), E> {
    run_to(
        &mut std::io::stdout().lock(),
        Layout::for_stdout(json),
        title,
        period,
        frame,
    )
}

fn run_to<E: From<std::io::Error>>(
    out: &mut impl Write,
    layout: Layout,
    title: &str,
    period: Duration,
    mut frame: impl FnMut() -> Result<String, E>,
) -> Result<(), E> {
    loop {
        let text = frame()?;
        match write_frame(out, layout, title, period, SystemTime::now(), &text) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_in_range_parse_with_fractions() {
        assert_eq!(parse_period("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_period("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_period("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_period("86400"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn bad_periods_are_refused_naming_the_value() {
        for bad in ["0", "0.05", "-1", "86401", "nan", "inf", "abc", "", "2s"] {
            let e = parse_period(bad).expect_err(bad);
            assert!(e.contains(bad), "{bad:?}: {e}");
        }
    }

    #[test]
    fn time_of_day_is_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 13 * 3600 + 5 * 60 + 9);
        assert_eq!(utc_time_of_day(t), "13:05:09");
    }

    #[derive(Debug)]
    struct Gone(String);
    impl From<std::io::Error> for Gone {
        fn from(e: std::io::Error) -> Self {
            Gone(e.to_string())
        }
    }

    fn frames(layout: Layout, n: usize) -> (String, Gone) {
        let mut out = Vec::new();
        let mut calls = 0;
        let err = run_to(&mut out, layout, "t", Duration::from_millis(1), || {
            calls += 1;
            if calls > n {
                Err(Gone(format!("daemon gone after {n}")))
            } else {
                Ok(format!("frame {calls}\n"))
            }
        })
        .unwrap_err();
        (String::from_utf8(out).unwrap(), err)
    }

    #[test]
    fn json_lines_are_frames_only_and_the_first_failure_ends_the_watch() {
        let (out, err) = frames(Layout::Lines, 3);
        assert_eq!(out, "frame 1\nframe 2\nframe 3\n");
        assert_eq!(err.0, "daemon gone after 3");
    }

    #[test]
    fn log_layout_heads_each_frame_and_screen_clears_first() {
        let (out, _) = frames(Layout::Log, 2);
        let heads = out
            .lines()
            .filter(|l| l.starts_with("Every 0.001s: t"))
            .count();
        assert_eq!(heads, 2, "{out}");
        assert!(out.contains("frame 2\n\n"), "{out}");
        let (out, _) = frames(Layout::Screen, 2);
        assert_eq!(out.matches("\x1b[H\x1b[2J").count(), 2, "{out:?}");
    }

    /// A writer whose reader went away.
    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_stdout_ends_the_watch_quietly() {
        let r: Result<(), Gone> = run_to(
            &mut ClosedPipe,
            Layout::Lines,
            "t",
            Duration::from_millis(1),
            || Ok("x\n".into()),
        );
        assert!(r.is_ok());
    }
}
