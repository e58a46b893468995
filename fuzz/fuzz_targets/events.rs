#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pinlease_fuzz::events::run(data));
