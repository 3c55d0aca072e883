//! Fuzz target `grpc_ingest`: see `zero_logs::fuzzing::grpc_ingest` for the input layout and the
//! properties checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zero_logs::fuzzing::grpc_ingest(data));
