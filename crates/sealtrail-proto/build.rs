//! Compiles `proto/sealtrail/v1/*.proto` with protox (a protobuf compiler in Rust, so
//! building needs no `protoc`), generates prost messages and tonic client/server code,
//! and writes the file descriptor set that the server's reflection service offers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("sealtrail/v1/audit_log.proto");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("sealtrail").display()
    );
    let descriptors = protox::compile([&file], [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("sealtrail_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
