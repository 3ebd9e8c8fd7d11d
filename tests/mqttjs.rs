//! MQTT.js (the npm `mqtt` package, installed by the test command into
//! tests/js) over `/mqtt`, MQTT 3.1.1 and 5, talking to rumqttc over TCP
//! through the same broker.

mod common;
use common::*;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    within("a line from mqttjs", lines.next_line()).await.unwrap().expect("mqttjs ended early")
}

async fn run_mqttjs(version: &str) {
    let server = start_memory().await;
    let mut tcp = v4::connect(server.mqtt_addr(), "tcp-side", true).await;
    tcp.subscribe("js/from-js", v4::QoS::ExactlyOnce).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/mqttjs_interop.mjs");
    let mut node = Command::new("node")
        .arg(script)
        .arg(format!("ws://{}/mqtt", server.ws_addr()))
        .arg(version)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (the test command installs tests/js dependencies)");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();

    assert_eq!(next_line(&mut lines).await, "READY");
    // MQTT.js published at QoS 0, 1 and 2; all reach the TCP subscriber.
    let mut got: Vec<(String, v4::QoS)> = Vec::new();
    for _ in 0..3 {
        let p = tcp.next_publish().await;
        got.push((String::from_utf8(p.payload.to_vec()).unwrap(), p.qos));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("qos0".to_string(), v4::QoS::AtMostOnce),
            ("qos1".to_string(), v4::QoS::AtLeastOnce),
            ("qos2".to_string(), v4::QoS::ExactlyOnce)
        ]
    );
    tcp.publish_acked("js/to-js", false, "hello from rust").await;
    assert_eq!(next_line(&mut lines).await, "GOT js/to-js hello from rust");
    assert_eq!(next_line(&mut lines).await, format!("RETAINED js/retained/{version} kept"));
    let status = within("mqttjs exit", node.wait()).await.unwrap();
    assert!(status.success());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mqttjs_v311_over_websocket() {
    run_mqttjs("4").await;
}

#[tokio::test]
async fn mqttjs_v5_over_websocket() {
    run_mqttjs("5").await;
}

/// MQTT.js's browser bundle in headless Chromium (the test command installs
/// Debian's chromium and playwright-core), MQTT 3.1.1 and 5 over /mqtt.
#[tokio::test]
async fn mqttjs_in_a_browser() {
    // The page is about:blank (Origin "null"): a cross-origin page, which
    // the default websocket.allowed_origins refuses. Allow any page here.
    let mut config = memory_config();
    config.websocket.allowed_origins = vec!["*".into()];
    let server = start(config).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/mqttjs_browser.mjs");
    let out = within(
        "MQTT.js in Chromium",
        Command::new("node").arg(script).arg(format!("ws://{}/mqtt", server.ws_addr())).kill_on_drop(true).output(),
    )
    .await
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec!["OK 4 hello from a browser, v4", "OK 5 hello from a browser, v5"]
    );
    server.shutdown().await.unwrap();
}
