//! Guest-side tool and test suite of pinlease: drives `/dev/pinleaseN`
//! (the guest module's ioctls, `guest-driver/include/pinlease_uapi.h`) and
//! prints KTAP. See `guest-driver/README.md` for the contract. It depends on
//! the wire ABI crate (`pinlease_abi`) only, never on the daemon.
//!
//! - [`cases`]: the suite, one file per concern (pin verdicts, DMA, bad
//!   input, events, lifetimes, processes, reset, leases per policy, the
//!   scrubber, module fault points, FS-DAX), the ordered `case!` registry
//!   and the per-case contract checks in `cases/mod.rs`, shared helpers in
//!   `cases/helpers/`;
//! - [`campaign`]: the fault campaign's workload cases, built on
//!   `cases::helpers` only;
//! - [`dataloss`]: the data-loss cases (what truncate does to pinned pages
//!   per kernel); [`verdicts`]: the per-kernel table of pin verdicts;
//! - [`nodevice`]: the checks run with the module not loaded;
//! - [`stray`]: the stray-canary scan (`pinlease-guest stray-scan`);
//! - [`fuzz`]: the ioctl fuzzer (`pinlease-guest fuzz`);
//! - [`bench`]: the guest benchmark (`pinlease-guest bench`), its figures
//!   generated from `guest-driver/include/bench_figures.txt`;
//! - [`ktap`]: KTAP output and the case runner;
//! - [`dev`]: `/dev/pinleaseN` and its ioctls, typed; [`uapi`]: the ioctl
//!   structs (mirror of `pinlease_uapi.h`, checked by tests/uapi_layout.rs);
//! - [`sys`]: the syscalls and /proc, /sys, /dev/kmsg readers the cases
//!   use, one file per concern;
//! - [`markers`]: the console markers the runner acts on (generated from
//!   `guest-driver/include/console_markers.sh`).

pub mod bench;
pub mod campaign;
pub mod cases;
pub mod dataloss;
pub mod debugfs;
pub mod dev;
pub mod fuzz;
pub mod ktap;
pub mod markers;
pub mod nodevice;
pub mod stray;
pub mod sys;
pub mod uapi;
pub mod verdicts;
