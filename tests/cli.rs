//! The `starling` binary: configuration errors at start-up and graceful
//! shutdown on SIGTERM.

mod common;
use common::process::BrokerProcess;
use common::*;
use std::process::Command;

fn starling(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_starling")).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn bad_config_names_the_file_and_every_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "[mqtt]\nreceive_maximum = 0\n[session]\nmax_queued_messages = 0\n")
        .unwrap();
    let out = starling(dir.path(), &["serve", "--config", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("mqtt.receive_maximum") && err.contains("session.max_queued_messages"), "{err}");
}

#[test]
fn unknown_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("typo.toml"), "[storage]\ndatadir = \"x\"\n").unwrap();
    let out = starling(dir.path(), &["serve", "--config", "typo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.toml") && err.contains("datadir"), "{err}");
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = starling(dir.path(), &["serve", "--config", "nope.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}

#[tokio::test]
async fn sigterm_disconnects_clients_with_0x8b_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path()).await;
    let mut client = v5::connect(broker.addr, "stay").await;
    let pid = broker.child.id().unwrap().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let disconnect = client.disconnected().await.expect("DISCONNECT from the broker");
    assert_eq!(disconnect.reason_code, rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::ServerShuttingDown);
    let status = within("broker exit", broker.child.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
}
