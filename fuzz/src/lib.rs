//! The fuzz targets' logic (docs/fuzzing.md), as a library so `cargo test`
//! runs it on the seed corpus; `fuzz_targets/*.rs` hand libFuzzer's input
//! to it.

pub mod admin;
pub mod events;
pub mod fault_plan;
pub mod input;
pub mod requests;
pub mod seeds;

// Under scripts/fuzz's instrumentation the tests need libFuzzer's coverage
// callbacks, which libfuzzer-sys links only when the crate is used.
#[cfg(all(test, fuzzing))]
extern crate libfuzzer_sys;
