//! The ONNX message types: `proto/onnx.proto` (the official schema, vendored with its
//! licence) compiled by `prost-build` into `$OUT_DIR/onnx.rs`, which `src/nas/onnx/proto.rs`
//! includes. `protoc` is the binary the `protoc-bin-vendored` crate ships, so no system
//! protobuf compiler is needed.

use std::path::Path;

pub fn generate(out_dir: &Path) {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .unwrap_or_else(|e| panic!("no vendored protoc for this platform: {e}"));
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.out_dir(out_dir);
    // The schema's comments are not Markdown: rustdoc would read their indented examples as
    // Rust doctests. `proto/onnx.proto` is the documentation.
    config.disable_comments(["."]);
    config
        .compile_protos(&["proto/onnx.proto"], &["proto"])
        .unwrap_or_else(|e| panic!("cannot compile proto/onnx.proto: {e}"));
}
