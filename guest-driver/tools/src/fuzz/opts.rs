//! The options of `pinlease-guest fuzz` and their parsers (clap calls
//! them; each error names the flag and the value it refused).

/// What a run does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opts {
    pub seconds: u64,
    pub seed: u64,
    pub threads: u32,
    pub procs: u32,
    pub dev: String,
    /// How long the module may take to let go once the run ends: a
    /// SIGKILLed worker's exit (a device request in flight), then the pins
    /// of closed contexts (deferred release).
    pub bound: std::time::Duration,
}

/// [`Opts::bound`] of the CLI (no fault plan: no dropped completion, no
/// deferred release).
pub const DEFAULT_BOUND: std::time::Duration = std::time::Duration::from_secs(15);

pub const MAX_SECONDS: u64 = 24 * 3600;
pub const MAX_THREADS: u32 = 64;
pub const MAX_PROCS: u32 = 64;

fn whole(flag: &str, s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let t = s.trim();
    let v = if let Some(h) = t.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        t.parse::<u64>()
    };
    match v {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{flag} {v}: must be from {lo} to {hi}")),
        Err(_) => Err(format!(
            "{flag} {s:?}: not a whole number from {lo} to {hi}"
        )),
    }
}

pub fn parse_seconds(s: &str) -> Result<u64, String> {
    whole("--seconds", s, 1, MAX_SECONDS)
}

/// Any u64, decimal or 0x hex.
pub fn parse_seed(s: &str) -> Result<u64, String> {
    whole("--seed", s, 0, u64::MAX)
}

pub fn parse_threads(s: &str) -> Result<u32, String> {
    whole("--threads", s, 1, MAX_THREADS as u64).map(|v| v as u32)
}

pub fn parse_procs(s: &str) -> Result<u32, String> {
    whole("--procs", s, 1, MAX_PROCS as u64).map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_values() {
        assert_eq!(parse_seconds("60"), Ok(60));
        assert_eq!(parse_seed("0"), Ok(0));
        assert_eq!(parse_seed("0xffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_threads("4"), Ok(4));
        assert_eq!(parse_procs("1"), Ok(1));
    }

    #[test]
    fn bad_values_name_the_flag_and_the_value() {
        for (r, flag, val) in [
            (parse_seconds("0"), "--seconds", "0"),
            (parse_seconds("-5"), "--seconds", "-5"),
            (parse_seconds("soon"), "--seconds", "soon"),
            (parse_seconds("1.5"), "--seconds", "1.5"),
            (parse_seconds("86401"), "--seconds", "86401"),
            (parse_seed("x12"), "--seed", "x12"),
            (parse_seed("-1"), "--seed", "-1"),
            (
                parse_seed("18446744073709551616"),
                "--seed",
                "18446744073709551616",
            ),
            (parse_threads("0").map(u64::from), "--threads", "0"),
            (parse_threads("65").map(u64::from), "--threads", "65"),
            (parse_procs("many").map(u64::from), "--procs", "many"),
        ] {
            let e = r.unwrap_err();
            assert!(e.contains(flag) && e.contains(val), "{e}");
        }
    }
}
