//! Watching the broker: the admin listener (`[http] bind`: who may call it,
//! `/healthz`, `/readyz`, and `/metrics` after known traffic, checked by
//! Prometheus's own `promtool`) and the `$SYS/broker/...` topics.

mod common;

use common::*;
use std::net::SocketAddr;

/// GET `path` on the admin listener: status and body.
async fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let key = key.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut request = ureq::get(&url).timeout(WAIT);
        if let Some(key) = key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        match request.call() {
            Ok(response) => (response.status(), response.into_string().unwrap()),
            Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap()),
            Err(e) => panic!("GET {url}: {e}"),
        }
    })
    .await
    .unwrap()
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn health_and_readiness_answer_loopback_without_keys() {
    let server = start_memory().await;
    let (status, body) = get(server.admin_addr(), "/healthz", None).await;
    assert_eq!((status, json(&body)["status"].as_str()), (200, Some("ok")));
    let (status, body) = get(server.admin_addr(), "/readyz", None).await;
    assert_eq!((status, json(&body)["status"].as_str()), (200, Some("ready")));
    let (status, body) = get(server.admin_addr(), "/nope", None).await;
    assert_eq!((status, json(&body)["code"].as_str()), (404, Some("not_found")));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_keys_configured_every_route_wants_one() {
    let mut config = memory_config();
    config.http.api_keys = vec!["s3cret-admin-key".into()];
    let server = start(config).await;
    let addr = server.admin_addr();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = get(addr, path, None).await;
        assert_eq!((status, json(&body)["code"].as_str()), (401, Some("unauthorized")), "{path} without a key");
        let (status, _) = get(addr, path, Some("wrong")).await;
        assert_eq!(status, 401, "{path} with a wrong key");
        let (status, _) = get(addr, path, Some("s3cret-admin-key")).await;
        assert_eq!(status, 200, "{path} with the key");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_count_known_traffic_and_pass_promtool() {
    let server = start_memory().await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(v4::connect(server.mqtt_addr(), &format!("metrics-{i}"), true).await);
    }
    clients[0].publish_acked("metrics/a", true, "one").await;
    clients[0].publish_acked("metrics/b", true, "two").await;
    let (status, text) = get(server.admin_addr(), "/metrics", None).await;
    assert_eq!(status, 200);
    for line in [
        "starling_clients_connected 3",
        r#"starling_sessions{state="online"} 3"#,
        "starling_retained_messages 2",
        "starling_auth_failures_total 0",
        r#"starling_messages_received_total{qos="1",transport="mqtt"} 2"#,
        r#"starling_connects_total{transport="mqtt"} 3"#,
        r#"starling_connects_refused_total{reason="bad_credentials"} 0"#,
        "starling_store_up 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
    // Prometheus's own checker (the test command installs it).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("promtool runs (the test command installs Debian's prometheus package)");
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A client gone is counted out.
    clients.pop().unwrap().client.disconnect().await.unwrap();
    wait_until("the disconnect", || server.broker().connected_count() == 2).await;
    let (_, text) = get(server.admin_addr(), "/metrics", None).await;
    assert!(text.lines().any(|l| l == "starling_clients_connected 2"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sys_topics_carry_mosquittos_names_and_hash_does_not_match_them() {
    let mut config = memory_config();
    config.sys.interval_secs = 1;
    // $SYS is readable only where a rule says so.
    config.acl.push(starling::config::AclRule {
        user: "*".into(),
        client: "sys-watcher".into(),
        action: starling::config::AclAction::Subscribe,
        topic: "$SYS/#".into(),
        permission: starling::config::Permission::Allow,
    });
    let server = start(config).await;
    let mut everything = v4::connect(server.mqtt_addr(), "hash", true).await;
    everything.subscribe("#", v4::QoS::AtMostOnce).await;
    let mut watcher = v4::connect(server.mqtt_addr(), "sys-watcher", true).await;
    watcher.subscribe("$SYS/broker/#", v4::QoS::AtMostOnce).await;
    // Retained: the latest values arrive at once (then every second).
    let mut seen = std::collections::HashMap::new();
    within("the $SYS topics", async {
        while seen.len() < 25 {
            let p = watcher.next_publish().await;
            seen.insert(p.topic.clone(), String::from_utf8(p.payload.to_vec()).unwrap());
        }
    })
    .await;
    assert!(seen["$SYS/broker/version"].starts_with("starling "), "{seen:?}");
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"), "{seen:?}");
    for name in [
        "clients/connected",
        "clients/total",
        "messages/received",
        "messages/sent",
        "subscriptions/count",
        "load/messages/received/1min",
        "load/bytes/sent/15min",
        "load/connections/5min",
    ] {
        let value = &seen[&format!("$SYS/broker/{name}")];
        if name.starts_with("load/") {
            assert!(value.parse::<f64>().is_ok(), "$SYS/broker/{name} = {value:?}");
            continue;
        }
        let value = &seen[&format!("$SYS/broker/{name}")];
        assert!(value.parse::<u64>().is_ok(), "$SYS/broker/{name} = {value:?}");
    }
    // An update after both subscribed, then a marker: "#" gets the marker
    // and nothing from $SYS before it.
    let before = seen["$SYS/broker/uptime"].clone();
    within("a $SYS update", async {
        loop {
            let p = watcher.next_publish().await;
            if p.topic == "$SYS/broker/uptime" && String::from_utf8_lossy(&p.payload) != before {
                return;
            }
        }
    })
    .await;
    watcher.publish_acked("plain/marker", false, "m").await;
    let first = everything.next_publish().await;
    assert_eq!(first.topic, "plain/marker", "a filter starting with # matched a $SYS topic");
    server.shutdown().await.unwrap();
}

/// docs/grafana/starling.json is built on the names `/metrics` exports:
/// every `starling_*` name the dashboard queries is in the output of a
/// broker with a bridge, the canary, the push webhook and some traffic.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../docs/grafana/starling.json")).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "starling");
    let text = dashboard.to_string();
    let mut wanted: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("starling_"))
        .map(|w| w.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count").to_string())
        .collect();
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() > 20, "{wanted:?}");

    let mut config = memory_config();
    config.monitor.interval_secs = 1;
    config.push.webhook = Some("http://127.0.0.1:9/push".into());
    config.push.secret = "a-secret-of-sixteen-chars".into();
    config.bridge = starling::config::Config::from_toml(
        "[[bridge]]\nname = \"up\"\naddress = \"127.0.0.1:1\"\n[[bridge.topics]]\nfilter = \"b/#\"\ndirection = \"out\"\n",
        "test bridge",
    )
    .unwrap()
    .bridge;
    let server = start(config).await;
    // Traffic, a disconnect, and a drop (QoS 0 for an offline session).
    let mut offline = v4::connect(server.mqtt_addr(), "offline", false).await;
    offline.subscribe("g/#", v4::QoS::AtMostOnce).await;
    offline.disconnect().await;
    let mut c = v4::connect(server.mqtt_addr(), "grafana", true).await;
    c.publish_acked("g/x", false, "1").await;
    wait_until("the canary's first round", || server.canary().results().len() == 3).await;
    let (_, metrics) = get(server.admin_addr(), "/metrics", None).await;
    for name in &wanted {
        assert!(metrics.contains(&format!("# TYPE {name} ")), "the dashboard queries {name}, not exported:\n{metrics}");
    }
    server.shutdown().await.unwrap();
}
