//! The web demo end to end: the broker serves the page and the modules it
//! loads on the WebSocket port, the page works in a real browser (headless
//! Chromium, driven by playwright-core from tests/js/browser_demo_test.mjs)
//! together with MQTT clients, and `starling simulate fleet` feeds its map.
//! The test command installs Chromium (Debian's `chromium`) and
//! playwright-core (tests/js/package.json).
//!
//! Screenshots go to `$CARGO_TARGET_TMPDIR/browser-demo/`; with
//! `UPDATE_DEMO_SCREENSHOT=1` the test also copies one to docs/demo.png.

mod common;

use common::node::NodeScript;
use common::*;
use sha2::Digest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One HTTP request on a fresh connection: status, headers (names lower-cased) and body.
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let reply = common::http::request(addr, method, path, &[], b"").await;
    (reply.status, reply.headers, reply.body)
}

#[tokio::test]
async fn the_page_and_its_modules_are_served_on_the_websocket_port() {
    let server = start(with_classes(memory_config())).await;
    let addr = server.ws_addr();

    let (status, headers, body) = http(addr, "GET", "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["content-length"], body.len().to_string());
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("<title>starling") && page.contains(r#"src="/web/demo/demo.js""#), "{page}");

    let (status, headers, body) = http(addr, "GET", "/web/starling-client.js").await;
    assert_eq!((status, headers["content-type"].as_str()), (200, "text/javascript; charset=utf-8"));
    assert_eq!(body, std::fs::read(format!("{ROOT}/web/starling-client.js")).unwrap(), "the file as it is in web/");

    // Nothing but the embedded files: no traversal, no listing, no other method.
    for path in ["/web/../Cargo.toml", "/web/", "/web/package.json", "/web/node_modules/long/index.js", "/favicon.ico"]
    {
        assert_eq!(http(addr, "GET", path).await.0, 404, "{path}");
    }
    assert_eq!(http(addr, "POST", "/").await.0, 405);
    // The WebSocket endpoints and the API are where they were.
    assert_eq!(http(addr, "GET", "/ws").await.0, 426);
    assert_eq!(http(addr, "GET", "/api/v1/viewers?topic=live/demo/danmaku").await.0, 200);
    server.shutdown().await.unwrap();
}

/// The browser script and its line protocol (see tests/js/browser_demo_test.mjs).
fn start_browser_script(url: &str, shots: &Path) -> NodeScript {
    let args = [url.to_string(), shots.display().to_string()];
    NodeScript::start(&[], &format!("{ROOT}/tests/js/browser_demo_test.mjs"), &args)
}

#[tokio::test]
async fn two_browsers_chat_watch_danmaku_and_see_vehicles_published_over_mqtt() {
    let server = start(with_classes(memory_config())).await;
    let mut mqtt = v4::connect(server.mqtt_addr(), "rust-side", true).await;
    mqtt.subscribe("chat/demo", v4::QoS::AtLeastOnce).await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-demo");
    std::fs::create_dir_all(&shots).unwrap();
    let mut browser = start_browser_script(&format!("http://{}/", server.ws_addr()), &shots);

    // Pages A and B connected over starling.v1; A's chat reaches B live...
    browser.expect("READY true true").await;
    browser.expect("CHAT LIVE ada:hello from A|ada:anyone watching the stream?").await;
    // ...and MQTT subscribers alike, as the demo's JSON.
    for text in ["hello from A", "anyone watching the stream?"] {
        let publish = mqtt.next_publish().await;
        let json: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap();
        assert_eq!((json["name"].as_str(), json["text"].as_str()), (Some("ada"), Some(text)));
    }

    // From MQTT: a chat message, and three vehicles in the map's format.
    mqtt.publish_acked("chat/demo", false, r#"{"name":"rust","text":"hello over MQTT"}"#).await;
    for (id, position) in
        [("car-1", r#"{"x":0.25,"y":0.5}"#), ("car-2", r#"{"x":0.75,"y":0.125}"#), ("car-3", r#"{"x":0,"y":1}"#)]
    {
        let topic = format!("fleet/demo/{id}/location");
        mqtt.client.publish(topic, v4::QoS::AtMostOnce, false, position.as_bytes().to_vec()).await.unwrap();
    }
    browser.tell("PUBLISHED").await;
    browser.expect("MAP LIVE 3").await;

    // Page C arrives late: the chat from history, the vehicles from retained messages.
    browser.expect("HISTORY ada:hello from A|ada:anyone watching the stream?|rust:hello over MQTT").await;
    browser.expect("CHAT LATE cy:joined late, read the history").await;
    browser.expect("MAP RETAINED 3").await;
    browser.expect("VIEWERS 3").await;
    assert_eq!(server.broker().viewer_count("live/demo/danmaku"), 3);

    // A danmaku from A over B's video; then a burst over the rate limit of
    // topics/danmaku.toml (burst 5, one already spent): at least 4 of 8 pass.
    browser.expect("DANMAKU first!").await;
    let rate = browser.line().await;
    assert!(
        ["refused=4 delivered=4 polite=true", "refused=3 delivered=5 polite=true"]
            .contains(&rate.trim_start_matches("RATE LIMITED ")),
        "{rate}"
    );

    // The page's simulator: 12 vehicles beside the 3 from MQTT.
    browser.expect("SIMULATED 15").await;
    browser.finish().await;
    if std::env::var_os("UPDATE_DEMO_SCREENSHOT").is_some() {
        std::fs::copy(shots.join("demo-a.png"), format!("{ROOT}/docs/demo.png")).unwrap();
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn simulate_fleet_publishes_every_vehicle_in_the_maps_format() {
    let server = start(with_classes(memory_config())).await;
    let mut watcher = v4::connect(server.mqtt_addr(), "fleet-watcher", true).await;
    watcher.subscribe("fleet/sim/+/location", v4::QoS::AtMostOnce).await;
    let broker = server.mqtt_addr().to_string();
    let simulator = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["simulate", "fleet", "--broker", &broker, "--city", "sim", "--vehicles", "5", "--rate", "10"])
        .args(["--duration", "1"])
        .kill_on_drop(true)
        .output();
    let simulator = tokio::spawn(simulator);

    let mut seen = BTreeMap::new();
    while seen.len() < 5 {
        let publish = watcher.next_publish().await;
        let vehicle = publish.topic.split('/').nth(2).unwrap().to_string();
        let json: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap();
        let (x, y) = (json["x"].as_f64().unwrap(), json["y"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y), "{json}");
        seen.insert(vehicle, (x, y));
    }
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["car-001", "car-002", "car-003", "car-004", "car-005"]);

    let output = within("the simulator to finish", simulator).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("simulating 5 vehicles on fleet/sim/+/location"), "{stdout}");
    let published: u64 = stdout.split("published ").nth(1).and_then(|s| s.split(' ').next()?.parse().ok()).unwrap();
    assert!(published >= 5, "{stdout}");
    server.shutdown().await.unwrap();
}

/// The admin listener's status page in headless Chromium
/// (tests/js/status_page_test.mjs): connections, live rates, the busiest
/// topic and the canary, all fed by `/api/v1/stats`.
#[tokio::test]
async fn the_status_page_shows_connections_rates_top_topics_and_the_canary() {
    let mut config = memory_config();
    config.monitor.interval_secs = 1;
    let server = start(config).await;
    let mut subscriber = v4::connect(server.mqtt_addr(), "status-sub", true).await;
    subscriber.subscribe("fleet/+/position", v4::QoS::AtMostOnce).await;
    let publisher = v4::connect(server.mqtt_addr(), "status-pub", true).await;
    // Steady traffic for the charts while the page runs (a load, not a wait).
    let traffic = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(5));
        loop {
            tick.tick().await;
            let _ = publisher.client.publish("fleet/car-7/position", v4::QoS::AtMostOnce, false, "1,2").await;
        }
    });
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&shots).unwrap();
    let url = format!("http://{}/", server.admin_addr());
    let args = [url, shots.display().to_string(), "2".into(), "fleet/car-7/position".into()];
    let mut page = NodeScript::start(&[], &format!("{ROOT}/tests/js/status_page_test.mjs"), &args);
    page.expect("READY").await;
    let connections: usize = page.line().await.strip_prefix("CONNECTIONS ").unwrap().parse().unwrap();
    assert!(connections >= 2);
    page.expect("TOPIC fleet/car-7/position").await;
    let rate: f64 = page.line().await.strip_prefix("RATE ").unwrap().parse().unwrap();
    assert!(rate > 0.0);
    let canary = page.line().await;
    assert!(canary.starts_with("CANARY ") && canary.contains("mqtt") && canary.contains("ok"), "{canary}");
    page.finish().await;
    traffic.abort();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_picture_dropped_into_the_chat_shows_for_everyone_and_the_second_upload_is_instant() {
    let server = start(with_classes(memory_config())).await;
    let mut mqtt = v4::connect(server.mqtt_addr(), "rust-side", true).await;
    mqtt.subscribe("chat/demo", v4::QoS::AtLeastOnce).await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-files");
    std::fs::create_dir_all(&shots).unwrap();
    let args = [format!("http://{}/", server.ws_addr()), shots.display().to_string()];
    let mut browser = NodeScript::start(&[], &format!("{ROOT}/tests/js/files_demo_test.mjs"), &args);

    // A drops a picture: uploaded over tus with a moving progress bar...
    browser.expect("UPLOADED noise.png instant=false progress=true error=none").await;
    // ...and B sees it as a thumbnail, live and again from history.
    browser.expect("THUMBNAIL ada:noise.png:image/png:true 600x400").await;
    browser.expect("HISTORY 600x400").await;
    // The same picture pasted again: instant, no body sent.
    browser.expect("UPLOADED AGAIN instant=true error=none").await;
    browser.expect("THUMBNAILS 600x400,600x400").await;
    browser.finish().await;

    // MQTT subscribers get the file message of docs/scenarios.md.
    let publish = mqtt.next_publish().await;
    let message: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap();
    assert_eq!((message["type"].as_str(), message["name"].as_str()), (Some("file"), Some("noise.png")));
    assert_eq!((message["mime"].as_str(), message["from"].as_str()), (Some("image/png"), Some("ada")));
    let id = message["id"].as_str().unwrap();
    let file = common::http::request(server.ws_addr(), "GET", &format!("/files/{id}"), &[], b"").await;
    assert_eq!(file.status, 200);
    assert_eq!(file.body.len() as u64, message["size"].as_u64().unwrap());
    let sha: String = sha2::Sha256::digest(&file.body).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(message["sha256"].as_str(), Some(sha.as_str()));
    if std::env::var_os("UPDATE_DEMO_SCREENSHOT").is_some() {
        std::fs::copy(shots.join("files-b.png"), format!("{ROOT}/docs/demo-files.png")).unwrap();
    }
    server.shutdown().await.unwrap();
}
