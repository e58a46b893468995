//! Host test kit of pinlease: what the daemon's tests, benchmarks and
//! examples use to drive it without QEMU. Not part of the daemon, and not
//! dependent on it (the daemon's tests depend on this crate).
//!
//! - [`frontend`]: a vhost-user frontend playing QEMU and the guest driver
//!   ([`frontend::TestFrontend`]), a typed client of the wire ABI
//!   ([`frontend::client::Client`]), and an echo backend as a no-op
//!   baseline ([`frontend::echo`]);
//! - [`daemon`]: the one launcher of a real `pinlease serve` child;
//! - [`c_header`]: reading the project's C headers to check them against
//!   their Rust mirrors (`pinlease_abi`, the guest tool's UAPI);
//! - [`proc_status`]: a process's `RssAnon` from `/proc/PID/status`.

pub mod c_header;
pub mod daemon;
pub mod frontend;
pub mod proc_status;
