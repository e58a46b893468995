//! `pinlease-guest fuzz` refuses bad flags before it starts anything:
//! exit 2, the flag and the value named on stderr, no worker forked and
//! no data file left behind.

use std::process::Command;

fn fuzz(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pinlease-guest"))
        .arg("fuzz")
        .args(args)
        .output()
        .expect("run pinlease-guest");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fuzz_files() -> usize {
    std::fs::read_dir("/tmp")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(pinlease_guest::fuzz::memory::FILE_PREFIX)
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn bad_flags_are_refused_naming_flag_and_value() {
    let before = fuzz_files();
    for (args, flag, value) in [
        (vec!["--seconds", "0", "--seed", "1"], "--seconds", "0"),
        (vec!["--seconds", "-5", "--seed", "1"], "--seconds", "-5"),
        (vec!["--seconds", "abc", "--seed", "1"], "--seconds", "abc"),
        (vec!["--seconds", "2.5", "--seed", "1"], "--seconds", "2.5"),
        (
            vec!["--seconds", "10", "--seed", "garbage"],
            "--seed",
            "garbage",
        ),
        (vec!["--seconds", "10", "--seed", "-3"], "--seed", "-3"),
        (
            vec!["--seconds", "10", "--seed", "1", "--threads", "0"],
            "--threads",
            "0",
        ),
        (
            vec!["--seconds", "10", "--seed", "1", "--procs", "x"],
            "--procs",
            "x",
        ),
    ] {
        let (rc, err) = fuzz(&args);
        assert_eq!(rc, 2, "{args:?}: {err}");
        assert!(
            err.contains(flag) && err.contains(value),
            "{args:?}: stderr does not name {flag} {value}: {err}"
        );
    }
    let (rc, err) = fuzz(&["--seed", "1"]);
    assert_eq!(rc, 2, "missing --seconds: {err}");
    assert!(err.contains("--seconds"), "{err}");
    assert_eq!(fuzz_files(), before, "a refused run left a data file");
}

#[test]
fn no_device_is_a_setup_error_before_any_worker() {
    let (rc, err) = fuzz(&[
        "--seconds",
        "1",
        "--seed",
        "1",
        "--dev",
        "/nonexistent/pinlease9",
    ]);
    assert_eq!(rc, 2, "{err}");
    assert!(
        err.contains("/nonexistent/pinlease9"),
        "stderr does not name the device: {err}"
    );
}
