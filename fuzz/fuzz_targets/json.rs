//! Fuzz target `json`: see `zero_logs::fuzzing::json` for the input layout and the
//! properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zero_logs::fuzzing::json(data));
