//! A node cut off from NATS, seen from its clients (issue 25, item 5). The
//! NATS server is paused with SIGSTOP: the node's connections to it stay
//! open and nothing answers, as in a partition. The node must keep serving
//! its clients and say what it can promise: keep-alive is answered while
//! QoS 1/2 publishes wait for JetStream, each of those gets its refusal by
//! its own deadline (none hangs behind another), `/readyz` turns 503 and
//! `starling_cluster_connected` 0 within 10 s, later publishes are
//! acknowledged on the node's own durability, and it is ready again soon
//! after NATS is back. MQTT 5, MQTT 3.1.1 and starling.v1.

mod common;

use common::http::request;
use common::nats::{node_config, NatsServer};
use common::wire::{Door, Wire};
use common::*;
use starling::mqtt::packet::{Packet, Publish, PublishProperties, QoS};
use starling::server::Server;
use starling::wsproto::client::Client as ProtoClient;
use starling::wsproto::pb::{self, frame::Body};
use starling::wsproto::Inbound;
use std::time::Duration;

/// The JetStream deadline for the test: short, so the test is.
const ACK_TIMEOUT_MS: u64 = 3_000;

fn publish(topic: &str, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: format!("message {packet_id}").into(),
        properties: PublishProperties::default(),
    })
}

async fn readyz(server: &Server) -> u16 {
    request(server.admin_addr(), "GET", "/readyz", &[("Connection", "close")], b"").await.status
}

async fn connected_metric(server: &Server) -> String {
    let metrics = request(server.admin_addr(), "GET", "/metrics", &[("Connection", "close")], b"").await;
    metrics.text().lines().find(|l| l.starts_with("starling_cluster_connected ")).unwrap_or("").to_string()
}

#[tokio::test]
async fn a_node_cut_off_from_nats_answers_pings_and_every_publish_and_says_it_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let mut config = node_config(&nats, "n1");
    config.cluster.as_mut().unwrap().ack_timeout_ms = ACK_TIMEOUT_MS;
    let n1 = start(config).await;
    let cluster = n1.cluster().unwrap().clone();
    wait_until("JetStream to be ready", || cluster.durable.is_ready() && cluster.is_connected()).await;
    let (m, w) = (n1.mqtt_addr(), n1.ws_addr());
    let mut v5 = Wire::accepted(Door::Tcp5, m, w, "pub-5", None, None).await;
    let mut v3 = Wire::accepted(Door::Tcp311, m, w, "pub-3", None, None).await;
    let connect = pb::Connect { client_id: "pub-v1".into(), clean_start: true, ..Default::default() };
    let (mut app, _) =
        within("starling.v1 connect", ProtoClient::connect(&format!("ws://{w}/ws"), connect)).await.unwrap();
    // Connected: a QoS 1 publish is held by JetStream, then acknowledged.
    assert_eq!(v5.publish("t/a", QoS::AtLeastOnce, false, "before").await, Some(0x10));
    assert_eq!(readyz(&n1).await, 200);

    nats.pause();
    // Three publishes and a PINGREQ at once: the PINGRESP comes first,
    // then each publish its own refusal (0x80) once JetStream's deadline
    // passed: the three within one deadline, not one after another.
    v5.send_all(&[publish("t/a", 1), publish("t/a", 2), publish("t/a", 3), Packet::PingReq]).await;
    v3.send_all(&[publish("t/a", 1), Packet::PingReq]).await;
    app.publish("t/a", "from starling.v1", 1, 1).await.unwrap();
    app.publish("t/a", "from starling.v1", 1, 2).await.unwrap();
    app.heartbeat().await.unwrap();
    let answers = within_for(Duration::from_millis(ACK_TIMEOUT_MS * 2 + 1_500), "the answers", async {
        let mut answers = Vec::new();
        while answers.len() < 4 {
            match v5.recv().await.expect("the MQTT 5 connection stays open") {
                Packet::PingResp => answers.push("pong".to_string()),
                Packet::PubAck(ack) => answers.push(format!("{}:{:#x}", ack.packet_id, ack.reason_code)),
                other => panic!("unexpected {other:?}"),
            }
        }
        answers
    })
    .await;
    assert_eq!(answers, ["pong", "1:0x80", "2:0x80", "3:0x80"]);
    // MQTT 3.1.1 cannot say "not held" in a PUBACK: the connection closes
    // (the client sends it again), after its PINGRESP.
    assert_eq!(within("3.1.1 PINGRESP", v3.recv()).await, Some(Packet::PingResp));
    within_for(Duration::from_millis(ACK_TIMEOUT_MS * 2), "the 3.1.1 close", v3.until_closed()).await;
    let mut v1_answers = Vec::new();
    within_for(Duration::from_millis(ACK_TIMEOUT_MS * 2), "the starling.v1 answers", async {
        while v1_answers.len() < 3 {
            match app.recv().await.expect("the starling.v1 connection stays open") {
                Inbound::Heartbeat => v1_answers.push("beat".to_string()),
                Inbound::Frame(Body::PubAck(ack)) => {
                    v1_answers.push(format!("{}:{:#x}", ack.packet_id, ack.reason_code))
                }
                Inbound::Frame(_) => {}
            }
        }
    })
    .await;
    assert_eq!(v1_answers, ["beat", "1:0x80", "2:0x80"]);

    // The node notices within 10 s and says so.
    wait_until_for(Duration::from_secs(10), "the node to notice it is cut off", || !cluster.is_connected()).await;
    assert_eq!(readyz(&n1).await, 503);
    assert_eq!(connected_metric(&n1).await, "starling_cluster_connected 0");
    // Its own clients are still served: acknowledged on its own durability.
    assert_eq!(v5.publish("t/a", QoS::AtLeastOnce, false, "while cut off").await, Some(0x10));

    nats.resume();
    wait_until_for(Duration::from_secs(30), "the node to be ready again", || cluster.is_connected()).await;
    wait_for("/readyz 200", || async { readyz(&n1).await == 200 }).await;
    assert_eq!(connected_metric(&n1).await, "starling_cluster_connected 1");
    n1.shutdown().await.unwrap();
}
