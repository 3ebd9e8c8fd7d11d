//! The operators' API on the admin listener (`/api/v1/...`): every endpoint
//! with good, unauthorized and bad input, over real clients of every
//! transport; QoS 1 publishes durable when answered (a SIGKILL right after
//! loses nothing); labelled metrics after known drops; docs/openapi.yaml
//! validated and matched against the routes.

mod common;

use common::process::BrokerProcess;
use common::*;
use serde_json::{json, Value};
use starling::wsproto::client::Client as ProtoClient;
use starling::wsproto::pb;
use std::net::SocketAddr;

const KEY: &str = "an-admin-key-for-the-tests";

/// One request to the admin listener: status and body (JSON, or null when empty).
async fn call(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let url = format!("http://{addr}{path}");
    let (method, key) = (method.to_string(), key.map(str::to_string));
    tokio::task::spawn_blocking(move || {
        let mut request = ureq::request(&method, &url).timeout(WAIT);
        if let Some(key) = key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let (status, text) = match result {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{method} {url}: {e}"),
        };
        // JSON, or the text itself (`/metrics`), or null when empty.
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    })
    .await
    .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    call(addr, "GET", path, None, None).await
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    call(addr, "POST", path, None, Some(body)).await
}

async fn delete(addr: SocketAddr, path: &str) -> (u16, Value) {
    call(addr, "DELETE", path, None, None).await
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

async fn proto(server: &starling::server::Server, id: &str) -> ProtoClient {
    let connect = pb::Connect { client_id: id.into(), clean_start: true, ..Default::default() };
    let url = format!("ws://{}/ws", server.ws_addr());
    within("starling.v1 connect", ProtoClient::connect(&url, connect)).await.unwrap().0
}

async fn mqtt_ws(server: &starling::server::Server, id: &str) -> v4::Client {
    let addr = server.ws_addr();
    let mut o = v4::MqttOptions::new(id, format!("ws://{addr}/mqtt"), addr.port());
    o.set_transport(rumqttc::Transport::Ws);
    v4::connect_with(o).await.0
}

#[tokio::test]
async fn publish_reaches_every_transport_with_its_properties() {
    let server = start_memory().await;
    let admin = server.admin_addr();
    let mut tcp = v5::connect(server.mqtt_addr(), "sub-tcp").await;
    tcp.subscribe("notices/#", v5::QoS::AtLeastOnce).await;
    let mut ws = mqtt_ws(&server, "sub-ws").await;
    ws.subscribe("notices/#", v4::QoS::AtLeastOnce).await;
    let mut v1 = proto(&server, "sub-v1").await;
    v1.subscribe(1, &[("notices/#", 1)]).await.unwrap();

    let (status, body) = post(
        admin,
        "/api/v1/publish",
        json!({
            "topic": "notices/all", "payload": "maintenance at 02:00", "qos": 1,
            "properties": {
                "content_type": "text/plain", "response_topic": "notices/replies",
                "user_properties": {"source": "ops"}, "message_expiry_secs": 60
            }
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id: u64 = body["message_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(body["deliveries"], 3);

    let p = within("the MQTT 5 delivery", tcp.next_publish()).await;
    assert_eq!((p.topic.as_ref(), p.payload.as_ref()), (&b"notices/all"[..], &b"maintenance at 02:00"[..]));
    let props = p.properties.expect("MQTT 5 properties");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("notices/replies"));
    assert_eq!(props.user_properties, vec![("source".to_string(), "ops".to_string())]);
    assert!(props.message_expiry_interval.is_some_and(|s| s <= 60));
    assert_eq!(within("the MQTT/WS delivery", ws.next_publish()).await.payload.as_ref(), b"maintenance at 02:00");
    let got = within("the starling.v1 delivery", v1.next_publish()).await.unwrap();
    assert_eq!((got.message_id, got.payload.as_ref()), (id, &b"maintenance at 02:00"[..]));

    // base64, retained: read back through the API, then cleared.
    let (status, _) = post(
        admin,
        "/api/v1/publish",
        json!({"topic": "notices/binary", "payload": "AAEC/w==", "encoding": "base64", "retain": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(within("the binary delivery", tcp.next_publish()).await.payload.as_ref(), [0u8, 1, 2, 255]);
    let (status, body) = get(admin, "/api/v1/retained/notices/binary").await;
    assert_eq!((status, body["payload"].as_str(), body["encoding"].as_str()), (200, Some("AAEC/w=="), Some("base64")));
    let (status, body) = get(admin, "/api/v1/topics?prefix=notices/").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([{"topic": "notices/binary", "retained": true, "history": false}]));
    assert_eq!(delete(admin, "/api/v1/retained/notices/binary").await.0, 204);
    assert_eq!(code(&get(admin, "/api/v1/retained/notices/binary").await.1), "not_found");
    assert_eq!(delete(admin, "/api/v1/retained/notices/binary").await.0, 404);
    assert_eq!(server.broker().retained_count(), 0);

    // A batch: each message its own result, in order.
    let (status, body) = post(
        admin,
        "/api/v1/publish/batch",
        json!([
            {"topic": "notices/gift", "payload": "rose", "qos": 1},
            {"topic": "notices/#", "payload": "bad"},
            {"topic": "notices/gift", "payload": "car", "qos": 0}
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert!(results[0]["message_id"].is_string() && results[2]["message_id"].is_string(), "{body}");
    assert_eq!(results[1]["error"]["code"], "bad_request");
    for want in ["rose", "car"] {
        assert_eq!(within("a batch delivery", tcp.next_publish()).await.payload.as_ref(), want.as_bytes());
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_a_named_error_and_nothing_published() {
    let mut config = memory_config();
    config.mqtt.max_packet_size = 1024;
    let server = start(config).await;
    let admin = server.admin_addr();
    let mut watcher = v4::connect(server.mqtt_addr(), "watcher", true).await;
    watcher.subscribe("#", v4::QoS::AtMostOnce).await;
    for (body, status, code_wanted) in [
        (json!({"topic": "a/+", "payload": "x"}), 400, "bad_request"),
        (json!({"topic": "", "payload": "x"}), 400, "bad_request"),
        (json!({"topic": "$SYS/broker/uptime", "payload": "x"}), 403, "reserved_topic"),
        (json!({"topic": "a", "payload": "x", "qos": 3}), 400, "bad_request"),
        (json!({"topic": "a", "payload": "not base64!", "encoding": "base64"}), 400, "bad_request"),
        (json!({"topic": "a", "payload": "x".repeat(2000)}), 413, "payload_too_large"),
        (json!({"topic": "a", "payload": "x", "colour": "red"}), 422, "bad_request"),
        (json!({"topic": "a", "payload": "x", "properties": {"response_topic": "r/#"}}), 400, "bad_request"),
        (json!(["not", "an", "object"]), 422, "bad_request"),
    ] {
        let (got, answer) = post(admin, "/api/v1/publish", body.clone()).await;
        assert_eq!((got, code(&answer)), (status, code_wanted), "{body}: {answer}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"topic": "a", "payload": "x"})).collect();
    assert_eq!(post(admin, "/api/v1/publish/batch", Value::Array(too_many)).await.0, 413);
    for (method, path, status) in [
        ("GET", "/api/v1/clients?page=0", 400),
        ("GET", "/api/v1/clients?limit=5000", 400),
        ("GET", "/api/v1/clients?colour=red", 400),
        ("GET", "/api/v1/clients/nobody", 404),
        ("DELETE", "/api/v1/clients/nobody", 404),
        ("GET", "/api/v1/retained/a/%23", 400),
        ("GET", "/api/v1/subscriptions?limit=0", 400),
        ("PUT", "/api/v1/publish", 405),
        ("GET", "/api/v1/publish", 405),
        ("GET", "/api/v1/nothing-here", 404),
    ] {
        let (got, answer) = call(admin, method, path, None, None).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(answer["code"].is_string() && answer["message"].is_string(), "{method} {path}: {answer}");
    }
    // Malformed JSON is named as such.
    let raw = tokio::task::spawn_blocking(move || {
        match ureq::post(&format!("http://{admin}/api/v1/publish"))
            .set("Content-Type", "application/json")
            .send_string("{\"topic\": ")
        {
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            other => panic!("expected an error status, got {other:?}"),
        }
    })
    .await
    .unwrap();
    assert_eq!(raw.0, 400, "{}", raw.1);
    // Nothing reached the subscriber; it is still connected.
    watcher.publish_acked("still/here", false, "ok").await;
    assert_eq!(within("the marker", watcher.next_publish()).await.topic, "still/here");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_keys_configured_the_api_wants_one() {
    let mut config = memory_config();
    config.http.api_keys = vec![KEY.into()];
    let server = start(config).await;
    let admin = server.admin_addr();
    for (method, path) in [
        ("GET", "/api/v1/clients"),
        ("GET", "/api/v1/clients/x"),
        ("DELETE", "/api/v1/clients/x"),
        ("GET", "/api/v1/subscriptions"),
        ("GET", "/api/v1/topics"),
        ("GET", "/api/v1/retained/a"),
        ("DELETE", "/api/v1/retained/a"),
        ("GET", "/api/v1/bridges"),
        ("GET", "/api/v1/stats"),
        ("POST", "/api/v1/publish"),
        ("POST", "/api/v1/publish/batch"),
    ] {
        let body = (method == "POST").then(|| json!({"topic": "a", "payload": "x"}));
        let (status, answer) = call(admin, method, path, None, body.clone()).await;
        assert_eq!((status, code(&answer)), (401, "unauthorized"), "{method} {path}");
        assert_eq!(call(admin, method, path, Some("wrong"), body.clone()).await.0, 401, "{method} {path}");
        assert_ne!(call(admin, method, path, Some(KEY), body).await.0, 401, "{method} {path} with the key");
    }
    // The status page's files are public; its data is not.
    let page =
        tokio::task::spawn_blocking(move || ureq::get(&format!("http://{admin}/")).call().unwrap().into_string())
            .await
            .unwrap()
            .unwrap();
    assert!(page.contains("/status/status.js"), "{page}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn clients_are_listed_inspected_and_closed_on_every_transport() {
    let server = start_memory().await;
    let admin = server.admin_addr();
    let mut options = v5::options(server.mqtt_addr(), "c-tcp");
    options.set_keep_alive(std::time::Duration::from_secs(30));
    let mut tcp = v5::connect_with(options).await.0;
    tcp.subscribe("rooms/+/chat", v5::QoS::AtLeastOnce).await;
    let mut ws = mqtt_ws(&server, "c-ws").await;
    ws.subscribe("rooms/1/chat", v4::QoS::AtMostOnce).await;
    let mut v1 = proto(&server, "c-v1").await;
    v1.subscribe(1, &[("rooms/#", 0)]).await.unwrap();
    // An offline persistent session.
    let mut off = v4::connect(server.mqtt_addr(), "c-off", false).await;
    off.subscribe("rooms/2/chat", v4::QoS::AtLeastOnce).await;
    off.disconnect().await;
    wait_until("c-off offline", || server.broker().connected_count() == 3).await;

    let (status, body) = get(admin, "/api/v1/clients").await;
    assert_eq!((status, body["meta"]["count"].as_u64()), (200, Some(4)), "{body}");
    let ids = |body: &Value| {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["client_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&body), ["c-off", "c-tcp", "c-v1", "c-ws"]);
    assert_eq!(ids(&get(admin, "/api/v1/clients?transport=ws-proto").await.1), ["c-v1"]);
    assert_eq!(ids(&get(admin, "/api/v1/clients?transport=ws-mqtt").await.1), ["c-ws"]);
    assert_eq!(ids(&get(admin, "/api/v1/clients?client_id_prefix=c-t").await.1), ["c-tcp"]);
    assert_eq!(ids(&get(admin, "/api/v1/clients?connected=false").await.1), ["c-off"]);
    let (_, page2) = get(admin, "/api/v1/clients?limit=3&page=2").await;
    assert_eq!((ids(&page2), page2["meta"]["count"].as_u64()), (vec!["c-ws".to_string()], Some(4)));

    let (status, c) = get(admin, "/api/v1/clients/c-tcp").await;
    assert_eq!(status, 200);
    assert_eq!((c["transport"].as_str(), c["protocol"].as_str()), (Some("mqtt"), Some("5")), "{c}");
    assert_eq!((c["connected"].as_bool(), c["keep_alive_secs"].as_u64()), (Some(true), Some(30)));
    assert!(c["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{c}");
    assert_eq!(c["subscriptions"][0]["filter"], "rooms/+/chat");
    assert_eq!(c["subscriptions"][0]["qos"], 1);
    let (_, c) = get(admin, "/api/v1/clients/c-v1").await;
    assert_eq!((c["transport"].as_str(), c["protocol"].as_str()), (Some("ws-proto"), Some("starling.v1")));
    let (_, c) = get(admin, "/api/v1/clients/c-off").await;
    assert_eq!((c["connected"].as_bool(), c["transport"].is_null()), (Some(false), true), "{c}");

    let (_, subs) = get(admin, "/api/v1/subscriptions?filter=rooms/1/chat").await;
    assert_eq!(
        subs["data"],
        json!([{"client_id": "c-ws", "filter": "rooms/1/chat", "qos": 0, "no_local": false,
        "retain_as_published": false, "retain_handling": 0, "identifier": null}])
    );
    let (_, subs) = get(admin, "/api/v1/subscriptions?client_id=c-off").await;
    assert_eq!(subs["meta"]["count"], 1);
    assert_eq!(get(admin, "/api/v1/subscriptions").await.1["meta"]["count"], 4);

    // Close: MQTT 5 hears 0x98; starling.v1 and MQTT/WS are closed.
    assert_eq!(delete(admin, "/api/v1/clients/c-tcp").await.0, 204);
    let reason = within("the DISCONNECT", tcp.disconnected()).await.expect("a DISCONNECT").reason_code;
    assert_eq!(reason, rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::AdministrativeAction);
    assert_eq!(delete(admin, "/api/v1/clients/c-v1").await.0, 204);
    within("the starling.v1 close", async { while v1.recv().await.is_ok() {} }).await;
    assert_eq!(delete(admin, "/api/v1/clients/c-ws?discard_session=true").await.0, 204);
    within("the MQTT/WS close", ws.closed()).await;
    wait_until("c-ws discarded", || server.broker().session("c-ws").is_none()).await;
    // An offline session needs discard_session.
    let (status, answer) = delete(admin, "/api/v1/clients/c-off").await;
    assert_eq!((status, code(&answer)), (409, "not_connected"));
    assert_eq!(delete(admin, "/api/v1/clients/c-off?discard_session=true").await.0, 204);
    assert_eq!(get(admin, "/api/v1/clients/c-off").await.0, 404);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn topics_list_history_and_retained_and_bridges_report_their_state() {
    let mut config = with_classes(memory_config());
    config.bridge = starling::config::Config::from_toml(
        "[[bridge]]\nname = \"upstream\"\naddress = \"127.0.0.1:1\"\n\
         [[bridge.topics]]\nfilter = \"up/#\"\ndirection = \"out\"\nqos = 1\n",
        "test bridge",
    )
    .unwrap()
    .bridge;
    let server = start(config).await;
    let admin = server.admin_addr();
    let mut c = v4::connect(server.mqtt_addr(), "writer", true).await;
    c.publish_acked("chat/lobby", false, "hello").await;
    c.publish_acked("fleet/paris/car-1/location", false, "48.85,2.35").await;
    let (_, body) = get(admin, "/api/v1/topics").await;
    let topics = body["data"].as_array().unwrap();
    assert!(topics.contains(&json!({"topic": "chat/lobby", "retained": false, "history": true})), "{body}");
    assert!(topics.contains(&json!({"topic": "fleet/paris/car-1/location", "retained": true, "history": false})));
    assert_eq!(get(admin, "/api/v1/topics?prefix=fleet/&limit=1").await.1["data"].as_array().unwrap().len(), 1);

    let (status, body) = get(admin, "/api/v1/bridges").await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["data"][0]["name"].as_str(), body["data"][0]["connected"].as_bool()),
        (Some("upstream"), Some(false))
    );
    assert_eq!(body["data"][0]["address"], "127.0.0.1:1");
    wait_until("the bridge's connection error", || server.bridges()[0].last_error.is_some()).await;
    let (_, body) = get(admin, "/api/v1/bridges").await;
    assert!(body["data"][0]["last_error"].is_string(), "{body}");
    let (_, text) = call(admin, "GET", "/metrics", None, None).await.into_text();
    assert!(text.contains("starling_bridge_up{bridge=\"upstream\"} 0"), "{text}");

    let (status, stats) = get(admin, "/api/v1/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["connections"]["by_transport"]["mqtt"], 1, "{stats}");
    assert!(stats["top_topics"].is_array() && stats["uptime_secs"].is_u64(), "{stats}");
    assert_eq!(stats["bridges"][0]["name"], "upstream");
    server.shutdown().await.unwrap();
}

trait IntoText {
    fn into_text(self) -> (u16, String);
}
impl IntoText for (u16, Value) {
    fn into_text(self) -> (u16, String) {
        (self.0, self.1.as_str().map(str::to_string).unwrap_or_default())
    }
}

#[tokio::test]
async fn an_answered_qos1_publish_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    let mut sub = v4::connect(broker.addr, "durable-sub", false).await;
    sub.subscribe("orders/#", v4::QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let (status, body) =
        post(broker.admin_addr, "/api/v1/publish", json!({"topic": "orders/7", "payload": "paid", "qos": 1})).await;
    assert_eq!(status, 200, "{body}");
    // Answered: on disk. No shutdown path runs.
    broker.kill_9().await;
    let broker = BrokerProcess::start(dir.path()).await;
    let mut sub = v4::connect(broker.addr, "durable-sub", false).await;
    let p = within("the queued message after the crash", sub.next_publish()).await;
    assert_eq!((p.topic.as_str(), p.payload.as_ref()), ("orders/7", &b"paid"[..]));
    broker.kill_9().await;
}

#[tokio::test]
async fn drops_are_counted_by_class_and_reason_and_limits_by_name() {
    let mut config = with_classes(memory_config());
    config.session.max_queued_messages = 2;
    let server = start(config).await;
    let admin = server.admin_addr();
    // Offline persistent sessions queue QoS 1: a map (conflated) and a plain one (queue, full at 2).
    let mut map = v4::connect(server.mqtt_addr(), "map", false).await;
    map.subscribe("fleet/+/+/location", v4::QoS::AtLeastOnce).await;
    map.disconnect().await;
    let mut plain = v4::connect(server.mqtt_addr(), "plain", false).await;
    plain.subscribe("jobs/#", v4::QoS::AtLeastOnce).await;
    plain.disconnect().await;
    let mut publisher = v4::connect(server.mqtt_addr(), "publisher", true).await;
    for position in ["1,1", "1,2", "1,3"] {
        publisher.publish_acked("fleet/paris/car-1/location", false, position).await;
    }
    for job in ["a", "b", "c", "d"] {
        publisher.publish_acked("jobs/new", false, job).await;
    }
    let (_, text) = call(admin, "GET", "/metrics", None, None).await.into_text();
    for line in [
        r#"starling_deliveries_dropped_total{class="location",reason="conflated"} 2"#,
        r#"starling_deliveries_dropped_total{class="none",reason="queue_full"} 2"#,
        r#"starling_limit_hits_total{limit="queued_messages"} 2"#,
        r#"starling_sessions{state="offline"} 2"#,
        r#"starling_queued_messages 3"#,
        r#"starling_messages_received_total{qos="1",transport="mqtt"} 7"#,
        r#"starling_disconnects_total{reason="client_disconnect"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
    assert!(text.contains("starling_delivery_latency_seconds_bucket"), "{text}");
    // The persistent sessions' copies were flushed before each acknowledgement.
    let flushes = text.lines().find_map(|l| l.strip_prefix("starling_store_commit_batch_size_count ")).unwrap();
    assert!(flushes.parse::<u64>().unwrap() > 0, "{text}");
    server.shutdown().await.unwrap();
}

/// docs/openapi.yaml is valid OpenAPI 3 (checked by swagger-parser in
/// tests/js/validate_openapi.mjs) and describes exactly the routes the
/// listener serves: each described operation is routed (not the 404/405
/// fallback), and each route is described.
#[tokio::test]
async fn openapi_document_is_valid_and_matches_the_routes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut script = node::NodeScript::start(
        &[],
        &format!("{root}/tests/js/validate_openapi.mjs"),
        &[format!("{root}/docs/openapi.yaml")],
    );
    let out = script.line().await;
    script.finish().await;
    let operations: Vec<(String, String)> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut described: Vec<(String, String)> = operations.iter().map(|(m, p)| (m.to_uppercase(), p.clone())).collect();
    described.sort();
    let mut routed: Vec<(String, String)> =
        starling::admin::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    routed.sort();
    assert_eq!(described, routed, "docs/openapi.yaml and admin::ROUTES differ");

    let server = start_memory().await;
    for (method, path) in &described {
        let concrete = path.replace("{client_id}", "nobody").replace("{topic}", "some/topic");
        let body = (method == "POST").then(|| json!({}));
        let (status, answer) = call(server.admin_addr(), method, &concrete, None, body).await;
        let fallback = answer["message"] == "no such endpoint" || status == 405;
        assert!(!fallback, "{method} {path} is described but not routed ({status} {answer})");
    }
    server.shutdown().await.unwrap();
}

/// Guessing API keys costs the guesser time (issue 24, item 2): wrong keys
/// from one address start a login cooldown for it, during which even the
/// right key is refused; other addresses are not touched.
#[tokio::test]
async fn wrong_api_keys_start_a_cooldown_for_the_address() {
    let mut config = memory_config();
    config.http.api_keys = vec![KEY.into()];
    config.auth.max_failed_logins = 3;
    config.auth.login_cooldown_secs = 1;
    config.mqtt.limit_loopback_peers = true; // this test's peer is 127.0.0.1
    let server = start(config).await;
    let addr = server.admin_addr();
    assert_eq!(call(addr, "GET", "/api/v1/stats", Some(KEY), None).await.0, 200);
    for guess in ["guess-1", "guess-2", "guess-3"] {
        assert_eq!(call(addr, "GET", "/api/v1/stats", Some(guess), None).await.0, 401);
    }
    assert_eq!(call(addr, "GET", "/api/v1/stats", Some(KEY), None).await.0, 401, "cooling down");
    assert_eq!(server.broker().security().cooldown_counts().0, 1);
    wait_for("the cooldown to end", || async { call(addr, "GET", "/api/v1/stats", Some(KEY), None).await.0 == 200 })
        .await;
    server.shutdown().await.unwrap();
}
