//! pinlease.ko's debugfs directory: one directory per device (`pinleaseN`,
//! its tables) and the module-wide files, there with or without a device.

use std::path::PathBuf;

/// Where the module puts its debugfs entries.
pub const ROOT: &str = "/sys/kernel/debug/pinlease";

/// Module-wide files in [`ROOT`] (`module/pl_bench.c`'s `bench_pin`).
pub const MODULE_WIDE: [&str; 1] = ["bench_pin"];

/// The per-device directories in [`ROOT`], sorted; module-wide files are
/// not among them.
pub fn device_dirs() -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(ROOT)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}
