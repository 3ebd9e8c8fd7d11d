//! The JavaScript client of starling.v1 (web/starling-client.js) against the
//! real broker, with rumqttc on the MQTT side. Each test runs one scenario of
//! tests/js/starling_client_test.mjs in Node: the script prints a line per
//! step, the test checks it and answers on the script's stdin when it has done
//! its part. The test command installs web/ and tests/js dependencies.

mod common;
use common::node::NodeScript;
use common::*;
use tokio::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Where `protobufjs/minimal.js`, imported by web/starling_pb.js, comes from.
#[derive(Clone, Copy)]
enum Runtime {
    /// web/node_modules, as Node resolves it.
    NodeModules,
    /// web/vendor/, through web/importmap.json, as a browser loads it.
    Browser,
}

/// Runs one scenario of tests/js/starling_client_test.mjs against `server`.
fn start_node(server: &starling::server::Server, scenario: &str, runtime: Runtime) -> NodeScript {
    let node_args = match runtime {
        Runtime::Browser => vec!["--import".to_string(), format!("{ROOT}/tests/js/browser_imports.mjs")],
        Runtime::NodeModules => vec![],
    };
    let args = [format!("ws://{}/ws", server.ws_addr()), scenario.to_string()];
    NodeScript::start(&node_args, &format!("{ROOT}/tests/js/starling_client_test.mjs"), &args)
}

async fn publish_qos0(client: &mut v4::Client, topic: &str, payload: &str) {
    client.client.publish(topic, v4::QoS::AtMostOnce, false, payload.as_bytes().to_vec()).await.unwrap();
}

#[tokio::test]
async fn connect_subscribe_publish_and_refusals_between_js_and_mqtt() {
    let server = start_memory().await;
    let mut tcp = v4::connect(server.mqtt_addr(), "rust-side", true).await;
    tcp.subscribe("js/from-js/#", v4::QoS::AtLeastOnce).await;
    tcp.publish_acked("js/to-js/retained", true, "from rust").await;
    let mut node = start_node(&server, "interop", Runtime::NodeModules);

    // ConnAck fields: the id asked for, no earlier session, the heartbeat
    // lowered to mqtt.max_keep_alive_secs, the frame limit mqtt.max_packet_size.
    node.expect("CONNACK js-1 false 3600 1048576").await;
    let assigned = node.line().await;
    assert!(assigned.starts_with("ASSIGNED auto-"), "{assigned}");
    node.expect("SUBACK 1,0,143").await;
    node.expect("RETAINED js/to-js/retained from rust true").await;
    // QoS 1 to a subscriber: 0; retained with nobody subscribed: 0x10.
    node.expect("PUBACK 0").await;
    node.expect("PUBACK 16").await;
    node.expect("REFUSED 144 ERROR 144 HISTORY 131 OPEN true").await;
    node.expect("READY").await;

    let zero = tcp.next_publish().await;
    let one = tcp.next_publish().await;
    assert_eq!(
        (zero.topic.as_str(), &zero.payload[..], zero.qos),
        ("js/from-js/zero", &b"zero"[..], v4::QoS::AtMostOnce)
    );
    assert_eq!((one.topic.as_str(), &one.payload[..], one.qos), ("js/from-js/one", &b"one"[..], v4::QoS::AtLeastOnce));
    // What the JS client retained reaches a new MQTT subscription.
    tcp.subscribe("js/retained", v4::QoS::AtLeastOnce).await;
    let retained = tcp.next_publish().await;
    assert_eq!((retained.topic.as_str(), &retained.payload[..], retained.retain), ("js/retained", &b"kept"[..], true));

    publish_qos0(&mut tcp, "js/q0", "to js q0").await;
    tcp.publish_acked("js/to-js/one", false, "to js q1").await;
    node.expect("GOT js/q0 0 to js q0 false false | js/to-js/one 1 to js q1 false false").await;
    node.expect("UNSUBACK 0,17,143").await;
    node.finish().await;
    server.shutdown().await.unwrap();
}

async fn resume_with_queued_messages(runtime: Runtime) {
    let server = start_memory().await;
    let mut tcp = v4::connect(server.mqtt_addr(), "rust-pub", true).await;
    tcp.subscribe("from-js/resume", v4::QoS::AtLeastOnce).await;
    let mut node = start_node(&server, "resume", runtime);
    node.expect("READY").await;
    tcp.publish_acked("resume/a", false, "m1").await;
    // The script handled m1 and held its PubAck back, then disconnected.
    node.expect("AWAY resume/a m1").await;
    // Queued for the absent session.
    tcp.publish_acked("resume/b", false, "m2").await;
    tcp.publish_acked("resume/c", false, "m3").await;
    node.tell("BACK").await;
    // Resumed: m1 again (dup, same message id: dropped by the client), then the queue.
    node.expect("RESUMED true m2 m3 false false").await;
    node.expect("DEDUPED handled=m1,m2,m3 redelivered=1").await;

    // After a lost connection, automatic reconnect with the session; the QoS 1
    // publish made meanwhile is sent then.
    node.expect("RECONNECTED true true true 0").await;
    let offline = tcp.next_publish().await;
    assert_eq!((offline.topic.as_str(), &offline.payload[..]), ("from-js/resume", &b"while away"[..]));
    tcp.publish_acked("resume/d", false, "m4").await;
    node.expect("GOT resume/d m4").await;
    node.finish().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn resume_after_reconnect_delivers_queued_messages_once() {
    resume_with_queued_messages(Runtime::NodeModules).await;
}

/// The same with the modules a browser loads: web/vendor/ through web/importmap.json.
#[tokio::test]
async fn browser_module_graph_resumes_with_exact_message_ids() {
    resume_with_queued_messages(Runtime::Browser).await;
}

#[tokio::test]
async fn heartbeats_are_answered_and_silence_is_detected() {
    let server = start_memory().await;
    let mut node = start_node(&server, "heartbeat", Runtime::NodeModules);
    // Heartbeats keep an idle connection, and one that only sends, open past
    // 1.5 x 1 s; then a server that never answers is given up on and reconnected to.
    node.expect("HEARTBEATS 1 true true").await;
    node.expect("LIVENESS no answer to heartbeats true 2").await;
    node.finish().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn refused_connects_takeover_and_will() {
    let server = start_memory().await;
    let mut tcp = v4::connect(server.mqtt_addr(), "will-watcher", true).await;
    tcp.subscribe("will/#", v4::QoS::AtLeastOnce).await;
    let mut node = start_node(&server, "refusals", Runtime::NodeModules);
    // A will with a wildcard: ConnAck 0x90; a wrong path: the upgrade fails.
    node.expect("CONNECT-REFUSED 144 true true").await;
    // Another connection with the same client id: Disconnect 0x8E, do not reconnect.
    node.expect("TAKEN-OVER 142 false false false").await;
    node.expect("TOO-LARGE 149").await;
    node.expect("WILL").await;
    // Disconnect{0x04} publishes the will (and the refused one was never published).
    let will = tcp.next_publish().await;
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("will/js", &b"gone"[..]));
    node.finish().await;
    server.shutdown().await.unwrap();
}

/// web/starling_pb.js and web/vendor/ are what `npm run gen` and `npm run vendor` make.
#[tokio::test]
async fn generated_and_vendored_modules_are_current() {
    let check = Command::new("node").arg(format!("{ROOT}/web/tools/vendor.mjs")).arg("--check").status();
    let status = within("web/tools/vendor.mjs --check", check).await.expect("node runs");
    assert!(status.success(), "web/ is out of date: run `npm run gen` and `npm run vendor` in web/");
}
