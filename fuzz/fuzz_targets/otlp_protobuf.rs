//! Fuzz target `otlp_protobuf`: see `zero_logs::fuzzing::otlp_protobuf` for the input layout and the
//! properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zero_logs::fuzzing::otlp_protobuf(data));
