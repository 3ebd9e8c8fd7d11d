//! The canary (`[monitor]`) and `starling probe`: the canary probes every
//! listener, notices one that stops answering (readiness, metrics, one
//! alert per change of state to a webhook) and its recovery; `starling
//! probe` checks starling on each transport and Mosquitto, and names the
//! step that failed.

mod common;

use common::hook::Hook;
use common::process::BrokerProcess;
use common::*;
use std::net::SocketAddr;
use std::process::Command;

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || match ureq::get(&url).timeout(WAIT).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
        Err(e) => panic!("GET {url}: {e}"),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_canary_notices_a_listener_that_stops_answering_and_its_recovery() {
    let mut hook = Hook::start().await;
    let mut config = memory_config();
    config.monitor.interval_secs = 1;
    config.monitor.timeout_ms = 2000;
    config.monitor.threshold_ms = 1000;
    config.monitor.alert_webhook = Some(hook.url("/alerts"));
    // Each listener takes two connections: two clients fill the MQTT/TCP one.
    config.mqtt.max_connections = 2;
    let server = start(config).await;
    let admin = server.admin_addr();

    // Every listener answers.
    wait_until("three canary results", || server_canary(&server).len() == 3).await;
    let results = server_canary(&server);
    let mut listeners: Vec<&str> = results.iter().map(|r| r.listener).collect();
    listeners.sort();
    assert_eq!(listeners, ["mqtt", "ws-mqtt", "ws-proto"]);
    assert!(results.iter().all(|r| r.ok && r.rtt_ms.is_some()), "{results:?}");
    assert_eq!(get(admin, "/readyz").await.0, 200);
    assert!(hook.try_next().is_none(), "no alert while everything is fine");

    // The MQTT/TCP listener is full: its probe cannot get in.
    let hogs = within("two connections holding the listener", async {
        let mut hogs = Vec::new();
        while hogs.len() < 2 {
            // A canary probe may hold a slot for a moment: try again.
            if let Some(hog) = hog(server.mqtt_addr(), hogs.len()).await {
                hogs.push(hog);
            }
        }
        hogs
    })
    .await;
    let alert = hook.next().await;
    assert_eq!(alert.path, "/alerts");
    let alert = alert.json();
    assert_eq!((alert["listener"].as_str(), alert["state"].as_str()), (Some("mqtt"), Some("failing")), "{alert}");
    assert_eq!(alert["previous"], "ok");
    assert!(alert["error"].as_str().unwrap().starts_with("connect failed"), "{alert}");
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("canary_failing") && body.contains("mqtt: connect failed"), "{body}");
    let (_, metrics) = get(admin, "/metrics").await;
    assert!(metrics.contains(r#"starling_canary_up{listener="mqtt"} 0"#), "{metrics}");
    assert!(metrics.contains(r#"starling_canary_up{listener="ws-proto"} 1"#), "{metrics}");
    let (_, stats) = get(admin, "/api/v1/stats").await;
    assert!(stats.contains(r#""state":"failing""#), "{stats}");

    // Room again: recovered, one more alert; nothing in between.
    drop(hogs);
    let alert = hook.next().await.json();
    assert_eq!((alert["listener"].as_str(), alert["state"].as_str()), (Some("mqtt"), Some("ok")), "{alert}");
    assert_eq!(alert["previous"], "failing");
    wait_until("ready again", || server_canary(&server).iter().all(|r| r.ok)).await;
    assert_eq!(get(admin, "/readyz").await.0, 200);
    assert!(hook.try_next().is_none(), "one alert per change of state");
    server.shutdown().await.unwrap();
}

/// An admitted MQTT connection, or `None` when the listener turned it away.
async fn hog(addr: SocketAddr, n: usize) -> Option<tokio::net::TcpStream> {
    use starling::mqtt::packet::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let connect = Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 0,
        client_id: format!("hog-{n}"),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    let mut out = bytes::BytesMut::new();
    starling::mqtt::encode::encode(&Packet::Connect(Box::new(connect)), ProtocolVersion::V311, &mut out);
    stream.write_all(&out).await.ok()?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.ok()?;
    (connack == [0x20, 2, 0, 0]).then_some(stream)
}

fn server_canary(server: &starling::server::Server) -> Vec<starling::monitor::CanaryResult> {
    server.canary().results()
}

/// Runs `starling probe ARGS` to completion: exit code and stdout.
async fn probe(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_starling")).arg("probe").args(&args).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn probe_gets_through_starling_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    for (transport, addr) in [("mqtt", broker.addr), ("ws-mqtt", broker.ws_addr), ("ws-proto", broker.ws_addr)] {
        let (code, out) = probe(&[&addr.to_string(), "--transport", transport, "--json", "--timeout", "5s"]).await;
        assert_eq!(code, 0, "{transport}: {out}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!((report["ok"].as_bool(), report["transport"].as_str()), (Some(true), Some(transport)));
        assert!(report["rtt_ms"].as_f64().unwrap() > 0.0);
    }
    let (code, out) = probe(&[&broker.addr.to_string()]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("ok: mqtt ") && out.contains(" round trip "), "{out}");
    broker.kill_9().await;
}

#[tokio::test]
async fn probe_names_the_step_that_failed() {
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (code, out) = probe(&[&closed.to_string(), "--json"]).await;
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["ok"].as_bool(), report["step"].as_str()), (Some(false), Some("connect")), "{report}");
    // A broker that refuses anonymous clients: refused at connect, with the code.
    let mut config = memory_config();
    config.auth.allow_anonymous = Some(false);
    let server = start(config).await;
    let (code, out) = probe(&[&server.mqtt_addr().to_string()]).await;
    assert_eq!(code, 1);
    assert!(out.starts_with("failed: mqtt") && out.contains("connect failed: refused, CONNACK code"), "{out}");
    // Bad arguments: exit 2 with a message.
    let (code, _) = probe(&[&closed.to_string(), "--timeout", "soon"]).await;
    assert_eq!(code, 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn probe_gets_through_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\n")).unwrap();
    let mut mosquitto = tokio::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .kill_on_drop(true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto runs (the test command installs it)");
    let addr = format!("127.0.0.1:{port}");
    // Mosquitto takes a moment to listen: probe until it answers (bounded).
    let mut last = String::new();
    let got_through = within("mosquitto to answer the probe", async {
        loop {
            let (code, out) = probe(&[&addr, "--json", "--timeout", "2s"]).await;
            if code == 0 {
                return out;
            }
            last = out;
            tokio::task::yield_now().await;
        }
    })
    .await;
    let report: serde_json::Value = serde_json::from_str(&got_through).unwrap_or_else(|_| panic!("{last}"));
    assert_eq!(report["ok"], true);
    mosquitto.start_kill().unwrap();
}
