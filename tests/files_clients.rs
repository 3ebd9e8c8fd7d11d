//! Real tus clients against `/files/` (docs/files.md): tus-js-client in Node
//! resuming a 50 MB upload after the broker was SIGKILLed and restarted, the
//! JavaScript helper (web/starling-files.js) uploading instantly the second
//! time, tus-js-client seeing limits and terminating, and tuspy from PyPI.
//! The test command installs Node's packages and tuspy (in target/pyenv).

mod common;

use common::node::NodeScript;
use common::process::{free_port, BrokerProcess};
use common::*;
use sha2::Digest;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `len` pseudo-random bytes written to `path`; their sha256 (hex).
fn write_file(path: &Path, len: usize) -> String {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ starling::clock::now_ms();
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    std::fs::write(path, &bytes).unwrap();
    sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn script(args: &[String]) -> NodeScript {
    NodeScript::start(&[], &format!("{ROOT}/tests/js/tus_upload_test.mjs"), args)
}

#[tokio::test]
async fn tus_js_client_resumes_a_50_mb_upload_after_the_broker_was_killed() {
    let dir = tempfile::tempdir().unwrap();
    let size = 50 * 1024 * 1024;
    let file = dir.path().join("big.bin");
    let sha = write_file(&file, size);
    // The broker comes back on the same WebSocket port: the client's upload
    // URL must still lead to it.
    let ws = format!("127.0.0.1:{}", free_port());
    let listeners = ["--mqtt-bind", "127.0.0.1:0", "--ws-bind", &ws, "--http-bind", "127.0.0.1:0"];
    let broker = BrokerProcess::start_with_listeners(dir.path(), &[], &listeners).await;
    let mut node = script(&["resume".into(), format!("http://{ws}"), file.display().to_string()]);
    node.expect("HALFWAY").await;
    broker.kill_9().await;
    let _broker = BrokerProcess::start_with_listeners(dir.path(), &[], &listeners).await;

    let uploaded = node.line().await;
    let parts: Vec<&str> = uploaded.split(' ').collect();
    assert_eq!(parts[0], "UPLOADED", "{uploaded}");
    let sent: f64 = parts[2].parse().unwrap();
    eprintln!("tus-js-client sent {sent} bytes for {size} (a SIGKILL in between)");
    assert!(sent >= size as f64, "{uploaded}");
    // Resumed where the broker's durable offset was, not from the start.
    assert!(sent < 1.2 * size as f64, "sent {sent} bytes for a {size}-byte file");
    node.expect(&format!("DOWNLOADED {sha}")).await;
    node.finish().await;
}

#[tokio::test]
async fn the_javascript_helper_sends_a_file_once_and_the_second_time_is_instant() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cat.jpg");
    let sha = write_file(&file, 3 * 1024 * 1024 + 17);
    let server = start_memory().await;
    let mut node = script(&["instant".into(), format!("http://{}", server.ws_addr()), file.display().to_string()]);
    // The first time: created, then tus-js-client HEADs and PATCHes.
    node.expect(&format!("FIRST instant=false methods=POST,HEAD,PATCH sha256={sha}")).await;
    // The second time: complete at creation; tus-js-client only HEADs.
    node.expect(&format!("SECOND instant=true methods=POST,HEAD sha256={sha}")).await;
    node.finish().await;
}

#[tokio::test]
async fn tus_js_client_is_refused_over_the_size_limit_and_terminates_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    write_file(&file, 20_000);
    let mut config = memory_config();
    config.files.max_file_bytes = 10_000;
    config.files.user_quota_bytes = 10_000;
    let server = start(config).await;
    let mut node = script(&["refused".into(), format!("http://{}", server.ws_addr()), file.display().to_string()]);
    node.expect("REFUSED 413").await;
    node.expect("TERMINATED 404").await;
    node.finish().await;
}

#[tokio::test]
async fn tuspy_uploads_resumes_and_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("voice.ogg");
    let sha = write_file(&file, 2 * 1024 * 1024 + 5);
    let server = start_memory().await;
    let python = format!("{ROOT}/target/pyenv/bin/python");
    let out = within(
        "the tuspy script",
        tokio::process::Command::new(&python)
            .arg(format!("{ROOT}/tests/py/tuspy_upload.py"))
            .arg(format!("http://{}/files/", server.ws_addr()))
            .arg(&file)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot run {python} (the test command installs tuspy there): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tuspy failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "PAUSED 1048576", "{stdout}");
    assert_eq!(lines[1], "RESUMED 1048576", "{stdout}");
    assert_eq!(lines[2], format!("DOWNLOADED {sha}"), "{stdout}");
}
