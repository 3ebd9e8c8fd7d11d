//! Generates the Rust types of the WebSocket-Protobuf protocol from
//! proto/starling.proto. protoc comes vendored (protoc-bin-vendored), so the
//! build needs no system protoc. Also records the git commit the binary is
//! built from (`starling --version`; "unknown" outside a git checkout).

fn main() {
    git_commit();
    println!("cargo:rerun-if-changed=proto/starling.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc is available for this platform");
    prost_build::Config::new()
        .protoc_executable(protoc)
        // Payloads as bytes::Bytes: shared, not copied, on the way to subscribers.
        .bytes(["."])
        .compile_protos(&["proto/starling.proto"], &["proto"])
        .expect("proto/starling.proto compiles");
}

/// Sets STARLING_GIT_COMMIT, and builds again when HEAD moves.
fn git_commit() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STARLING_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{reference}");
        }
    }
}
