//! Generates the shoal.v1 messages and services into `OUT_DIR`.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so building needs no system package.

use std::path::PathBuf;

const PROTOS: [&str; 3] = [
    "shoal/v1/common.proto",
    "shoal/v1/migration.proto",
    "shoal/v1/work.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let include = protoc_bin_vendored::include_path()?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("shoal_descriptor.bin"))
        .compile_with_config(
            config,
            &PROTOS.map(PathBuf::from),
            &[PathBuf::from("."), include],
        )?;
    Ok(())
}
