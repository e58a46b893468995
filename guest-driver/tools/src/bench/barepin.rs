//! The module's bare pin: `/sys/kernel/debug/pinlease/bench_pin`
//! (guest-driver/module/pl_bench.c). A write of "ADDR LEN" pins that range
//! of this process with the calls REG_MR uses, timed in the kernel, and
//! unpins it; a read at offset 0 gives "pin_ns=N unpin_ns=N pages=N" of
//! the last write on the same open file.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

/// Where the module creates the file (debugfs mounted at /sys/kernel/debug).
pub const BENCH_PIN_PATH: &str = "/sys/kernel/debug/pinlease/bench_pin";

#[derive(Debug, thiserror::Error)]
pub enum BarePinError {
    #[error("open {BENCH_PIN_PATH}: {0} (pinlease.ko loaded, debugfs mounted, root?)")]
    Open(std::io::Error),
    #[error("write {command:?} to {BENCH_PIN_PATH}: {err}")]
    Write {
        command: String,
        err: std::io::Error,
    },
    #[error("write {command:?} to {BENCH_PIN_PATH}: {written} of {len} bytes taken")]
    ShortWrite {
        command: String,
        written: usize,
        len: usize,
    },
    #[error("read {BENCH_PIN_PATH}: {0}")]
    Read(std::io::Error),
    #[error("{BENCH_PIN_PATH} answered {0:?}, not \"pin_ns=N unpin_ns=N pages=N\"")]
    Parse(String),
    #[error("{BENCH_PIN_PATH} pinned {got} pages of a {bytes}-byte range, expected {want}")]
    Pages { got: u64, want: u64, bytes: u64 },
}

/// One bare pin's times, as the module measured them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinTimes {
    pub pin_ns: u64,
    pub unpin_ns: u64,
    pub pages: u64,
}

/// Parses the file's answer: `pin_ns=N unpin_ns=N pages=N`, any order,
/// each key once.
pub fn parse_times(text: &str) -> Result<PinTimes, BarePinError> {
    let bad = || BarePinError::Parse(text.to_string());
    let mut vals: [Option<u64>; 3] = [None; 3];
    for tok in text.split_whitespace() {
        let (k, v) = tok.split_once('=').ok_or_else(bad)?;
        let i = ["pin_ns", "unpin_ns", "pages"]
            .iter()
            .position(|n| *n == k)
            .ok_or_else(bad)?;
        if vals[i].is_some() {
            return Err(bad());
        }
        vals[i] = Some(v.parse().map_err(|_| bad())?);
    }
    match vals {
        [Some(pin_ns), Some(unpin_ns), Some(pages)] => Ok(PinTimes {
            pin_ns,
            unpin_ns,
            pages,
        }),
        _ => Err(bad()),
    }
}

/// An open of bench_pin (its results are this open's own).
pub struct BarePin {
    file: File,
}

impl BarePin {
    pub fn open() -> Result<BarePin, BarePinError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(BENCH_PIN_PATH)
            .map_err(BarePinError::Open)?;
        Ok(BarePin { file })
    }

    /// Pins and unpins `[addr, addr + bytes)` of this process (page
    /// aligned) in the kernel: the module's times.
    pub fn pin(&mut self, addr: u64, bytes: u64) -> Result<PinTimes, BarePinError> {
        let command = format!("{addr:#x} {bytes}");
        let written = self
            .file
            .write(command.as_bytes())
            .map_err(|err| BarePinError::Write {
                command: command.clone(),
                err,
            })?;
        if written != command.len() {
            let len = command.len();
            return Err(BarePinError::ShortWrite {
                command,
                written,
                len,
            });
        }
        let mut buf = [0u8; 128];
        let n = self.file.read_at(&mut buf, 0).map_err(BarePinError::Read)?;
        let t = parse_times(&String::from_utf8_lossy(&buf[..n]))?;
        let want = bytes / crate::sys::page_size() as u64;
        if t.pages != want {
            return Err(BarePinError::Pages {
                got: t.pages,
                want,
                bytes,
            });
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_path_is_a_module_wide_file_of_the_debugfs_root() {
        use crate::debugfs::{MODULE_WIDE, ROOT};
        assert_eq!(BENCH_PIN_PATH, format!("{ROOT}/{}", MODULE_WIDE[0]));
    }

    use super::*;

    #[test]
    fn the_module_answer_parses() {
        assert_eq!(
            parse_times("pin_ns=123 unpin_ns=45 pages=16384\n").unwrap(),
            PinTimes {
                pin_ns: 123,
                unpin_ns: 45,
                pages: 16384
            }
        );
        for bad in [
            "",
            "pin_ns=1 unpin_ns=2",
            "pin_ns=1 unpin_ns=2 pages=x",
            "pin_ns=1 pin_ns=1 pages=3",
            "pin_ns=1 unpin_ns=2 pages=3 extra=4",
            "pin_ns 1",
        ] {
            let e = parse_times(bad).unwrap_err();
            assert!(
                matches!(e, BarePinError::Parse(ref t) if t == bad),
                "{bad:?}"
            );
        }
    }
}
