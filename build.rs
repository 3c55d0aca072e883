//! Generates the native gRPC API (`zerologs.v1`) from `proto/`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable protobuf is the client's fault: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::proto::StrictProstCodec")
        .compile_protos(&["proto/zerologs/v1/logs.proto"], &["proto"])?;
    Ok(())
}
