//! Fuzz target `spool_segment`: see `zero_logs::fuzzing::spool_segment` for the input layout and the
//! properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zero_logs::fuzzing::spool_segment(data));
