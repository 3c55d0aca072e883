//! Fuzz target `codec`: see `zero_logs::fuzzing::codec_payload` for the input layout and the
//! properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zero_logs::fuzzing::codec_payload(data));
