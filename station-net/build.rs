//! Compiles `proto/` with protox (pure Rust: no `protoc` on the machine).

use std::path::PathBuf;

// Shared with the crate's tests (see `src/lib.rs`), which run it.
#[path = "build/paths.rs"]
mod paths;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = paths::proto_root(|name| std::env::var(name))?;
    let file = root.join("numbersstation/v1/station.proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile([&file], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("numbersstation_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Small per-stream buffers: see src/codec.rs.
        .codec_path("crate::codec::SmallCodec")
        // Keep the frequent `Number` variant small: channels and buffers of
        // `ServerMessage`s are sized by the largest variant.
        .boxed(".numbersstation.v1.ServerMessage.kind.attached")
        .compile_fds(descriptors)?;
    Ok(())
}
