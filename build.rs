//! Generates the Rust types of the WebSocket-Protobuf protocol from
//! proto/starling.proto. protoc comes vendored (protoc-bin-vendored), so the
//! build needs no system protoc.

fn main() {
    println!("cargo:rerun-if-changed=proto/starling.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc is available for this platform");
    prost_build::Config::new()
        .protoc_executable(protoc)
        // Payloads as bytes::Bytes: shared, not copied, on the way to subscribers.
        .bytes(["."])
        .compile_protos(&["proto/starling.proto"], &["proto"])
        .expect("proto/starling.proto compiles");
}
