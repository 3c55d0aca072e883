//! Fuzz target `otlp_json`: see `zero_logs::fuzzing::otlp_json` for the input layout and the
//! properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zero_logs::fuzzing::otlp_json(data));
