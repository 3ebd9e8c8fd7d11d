//! The WebSocket port: MQTT over WebSocket (`/mqtt`) and the starling.v1
//! Protobuf protocol (`/ws`), both on the broker's one topic tree.

mod common;
use common::*;
use starling::wsproto::client::{Client as ProtoClient, ClientError};
use starling::wsproto::pb::{self, frame::Body};
use starling::wsproto::Inbound;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// rumqttc over WebSocket (`/mqtt`, subprotocol `mqtt`).
async fn mqtt_ws_v4(addr: SocketAddr, id: &str) -> v4::Client {
    let mut o = v4::MqttOptions::new(id, format!("ws://{addr}/mqtt"), addr.port());
    o.set_transport(rumqttc::Transport::Ws);
    v4::connect_with(o).await.0
}

async fn mqtt_ws_v5(addr: SocketAddr, id: &str) -> v5::Client {
    let mut o = v5::MqttOptions::new(id, format!("ws://{addr}/mqtt"), addr.port());
    o.set_transport(rumqttc::Transport::Ws);
    v5::connect_with(o).await.0
}

async fn proto(addr: SocketAddr, id: &str) -> ProtoClient {
    let connect = pb::Connect { client_id: id.into(), clean_start: true, ..Default::default() };
    within("starling.v1 connect", ProtoClient::connect(&ws_url(addr), connect)).await.unwrap().0
}

async fn proto_next_publish(c: &mut ProtoClient) -> pb::Publish {
    within("a Publish over /ws", c.next_publish()).await.unwrap()
}

#[tokio::test]
async fn every_transport_reaches_every_other() {
    let server = start_memory().await;
    let (tcp, ws) = (server.mqtt_addr(), server.ws_addr());
    let mut over_tcp = v4::connect(tcp, "tcp", true).await;
    over_tcp.subscribe("x/#", v4::QoS::AtLeastOnce).await;
    let mut over_ws4 = mqtt_ws_v4(ws, "ws4").await;
    over_ws4.subscribe("x/#", v4::QoS::AtLeastOnce).await;
    let mut over_ws5 = mqtt_ws_v5(ws, "ws5").await;
    over_ws5.subscribe("x/#", v5::QoS::AtLeastOnce).await;
    let mut over_proto = proto(ws, "proto").await;
    let ack = over_proto.subscribe(1, &[("x/#", 1)]).await.unwrap();
    assert_eq!(ack.results, vec![pb::SubscribeResult { code: 1 }]);

    over_tcp.publish_acked("x/tcp", false, "from tcp").await;
    over_ws4.publish_acked("x/ws4", false, "from ws4").await;
    over_ws5.publish_acked("x/ws5", false, "from ws5").await;
    over_proto.publish("x/proto", "from proto", 1, 9).await.unwrap();
    // The PubAck for our QoS 1 publish arrives among the deliveries.
    let mut proto_got = Vec::new();
    let mut proto_acked = false;
    while proto_got.len() < 4 || !proto_acked {
        match within("proto frames", over_proto.recv()).await.unwrap() {
            Inbound::Frame(Body::Publish(p)) => {
                assert!(p.message_id > 0 && p.timestamp_ms > 0);
                proto_got.push(String::from_utf8(p.payload.to_vec()).unwrap());
                over_proto.ack(p.packet_id).await.unwrap();
            }
            Inbound::Frame(Body::PubAck(a)) => {
                assert_eq!((a.packet_id, a.reason_code), (9, 0));
                proto_acked = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected = ["from proto", "from tcp", "from ws4", "from ws5"];
    proto_got.sort();
    assert_eq!(proto_got, expected);
    for client in [&mut over_tcp, &mut over_ws4] {
        let mut got: Vec<String> = Vec::new();
        for _ in 0..4 {
            got.push(String::from_utf8(client.next_publish().await.payload.to_vec()).unwrap());
        }
        got.sort();
        assert_eq!(got, expected);
    }
    let mut got: Vec<String> = Vec::new();
    for _ in 0..4 {
        got.push(String::from_utf8(over_ws5.next_publish().await.payload.to_vec()).unwrap());
    }
    got.sort();
    assert_eq!(got, expected);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn heartbeat_is_answered() {
    let server = start_memory().await;
    let mut c = proto(server.ws_addr(), "hb").await;
    c.heartbeat().await.unwrap();
    assert_eq!(within("heartbeat reply", c.recv()).await.unwrap(), Inbound::Heartbeat);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn silent_client_is_disconnected_and_its_will_fires() {
    let server = start_memory().await;
    let mut watcher = v4::connect(server.mqtt_addr(), "watcher", true).await;
    watcher.subscribe("wills/#", v4::QoS::AtLeastOnce).await;
    let connect = pb::Connect {
        client_id: "quiet".into(),
        clean_start: true,
        heartbeat_secs: 1,
        will: Some(pb::Publish { topic: "wills/quiet".into(), payload: "gone".into(), qos: 1, ..Default::default() }),
        ..Default::default()
    };
    let (mut c, ack) = ProtoClient::connect(&ws_url(server.ws_addr()), connect).await.unwrap();
    assert_eq!(ack.heartbeat_secs, 1);
    // Say nothing: after 1.5 s the broker gives up on us.
    match within("liveness disconnect", c.recv()).await.unwrap() {
        Inbound::Frame(Body::Disconnect(d)) => assert_eq!(d.reason_code, 0x8D),
        other => panic!("expected Disconnect, got {other:?}"),
    }
    assert!(matches!(within("close", c.recv()).await, Err(ClientError::Closed) | Err(ClientError::WebSocket(_))));
    assert_eq!(watcher.next_publish().await.payload, "gone");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn resume_delivers_queued_and_unacked_messages_with_stable_ids() {
    let server = start_memory().await;
    let url = ws_url(server.ws_addr());
    let persistent = |clean| pb::Connect {
        client_id: "phone".into(),
        clean_start: clean,
        session_expiry_secs: 300,
        ..Default::default()
    };
    let (mut c, ack) = ProtoClient::connect(&url, persistent(true)).await.unwrap();
    assert!(!ack.session_present);
    c.subscribe(1, &[("chat/room1", 1)]).await.unwrap();
    let mut publisher = v4::connect(server.mqtt_addr(), "pub", true).await;
    publisher.publish_acked("chat/room1", false, "before").await;
    // Receive it but do not acknowledge, then drop the connection.
    let unacked = proto_next_publish(&mut c).await;
    drop(c);
    wait_until("the session to be offline", || server.broker().session("phone").is_some_and(|s| !s.is_connected()))
        .await;
    for text in ["one", "two", "three"] {
        publisher.publish_acked("chat/room1", false, text).await;
    }
    let (mut c, ack) = ProtoClient::connect(&url, persistent(false)).await.unwrap();
    assert!(ack.session_present);
    let again = proto_next_publish(&mut c).await;
    assert!(again.dup);
    assert_eq!((again.message_id, &again.payload), (unacked.message_id, &unacked.payload), "same message, same id");
    c.ack(again.packet_id).await.unwrap();
    let mut last_id = again.message_id;
    for text in ["one", "two", "three"] {
        let p = proto_next_publish(&mut c).await;
        assert_eq!(p.payload, text);
        assert!(p.message_id > last_id, "message ids increase per topic");
        last_id = p.message_id;
        c.ack(p.packet_id).await.unwrap();
    }
    c.disconnect().await.unwrap();
    server.shutdown().await.unwrap();
}

/// A client that dedupes by message_id sees each message once even when the
/// broker redelivers after a reconnect.
#[tokio::test]
async fn duplicates_are_detectable_by_message_id() {
    let server = start_memory().await;
    let url = ws_url(server.ws_addr());
    let connect = |clean| pb::Connect {
        client_id: "dedupe".into(),
        clean_start: clean,
        session_expiry_secs: 60,
        ..Default::default()
    };
    let (mut c, _) = ProtoClient::connect(&url, connect(true)).await.unwrap();
    c.subscribe(1, &[("feed", 1)]).await.unwrap();
    let mut publisher = v4::connect(server.mqtt_addr(), "pub", true).await;
    publisher.publish_acked("feed", false, "a").await;
    publisher.publish_acked("feed", false, "b").await;
    let mut seen = std::collections::BTreeMap::new();
    let first = proto_next_publish(&mut c).await;
    seen.insert(first.message_id, first.payload.clone());
    drop(c); // "a" was never acknowledged
    wait_until("offline", || server.broker().session("dedupe").is_some_and(|s| !s.is_connected())).await;
    let (mut c, _) = ProtoClient::connect(&url, connect(false)).await.unwrap();
    let mut deliveries = 0;
    while seen.len() < 2 {
        let p = proto_next_publish(&mut c).await;
        deliveries += 1;
        seen.insert(p.message_id, p.payload.clone());
        c.ack(p.packet_id).await.unwrap();
    }
    assert_eq!(deliveries, 2, "a again (duplicate) and b");
    assert_eq!(seen.values().cloned().collect::<Vec<_>>(), vec!["a", "b"]);
    server.shutdown().await.unwrap();
}

async fn expect_error_and_close(c: &mut ProtoClient, code: u32) {
    match within("Error frame", c.recv()).await.unwrap() {
        Inbound::Frame(Body::Error(e)) => assert_eq!(e.code, code, "{}", e.message),
        other => panic!("expected Error, got {other:?}"),
    }
    assert!(within("close", c.recv()).await.is_err());
}

#[tokio::test]
async fn malformed_and_text_frames_get_an_error_and_a_close() {
    let server = start_memory().await;
    let mut bystander = proto(server.ws_addr(), "bystander").await;
    bystander.subscribe(1, &[("ok", 0)]).await.unwrap();

    let mut bad = proto(server.ws_addr(), "bad").await;
    bad.send_raw(vec![0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
    expect_error_and_close(&mut bad, 0x81).await;

    let mut also_bad = proto(server.ws_addr(), "bad2").await;
    also_bad.send_raw(vec![0x07]).await.unwrap(); // one byte that is not a heartbeat
    expect_error_and_close(&mut also_bad, 0x82).await;

    let mut publisher = v4::connect(server.mqtt_addr(), "pub", true).await;
    publisher.publish_acked("ok", false, "still here").await;
    assert_eq!(proto_next_publish(&mut bystander).await.payload, "still here");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_frame_is_refused() {
    let mut config = memory_config();
    config.mqtt.max_packet_size = 1024;
    let server = start(config).await;
    let mut c = proto(server.ws_addr(), "big").await;
    c.publish("big", vec![0u8; 4096], 0, 0).await.unwrap();
    expect_error_and_close(&mut c, 0x95).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_topic_is_refused_without_closing() {
    let server = start_memory().await;
    let mut c = proto(server.ws_addr(), "typo").await;
    c.publish("bad/+/topic", "x", 1, 5).await.unwrap();
    match within("PubAck", c.recv()).await.unwrap() {
        Inbound::Frame(Body::PubAck(a)) => assert_eq!((a.packet_id, a.reason_code), (5, 0x90)),
        other => panic!("expected PubAck, got {other:?}"),
    }
    let ack = c.subscribe(2, &[("a/#/b", 0), ("a/+", 1)]).await.unwrap();
    assert_eq!(ack.results.iter().map(|r| r.code).collect::<Vec<_>>(), vec![0x8F, 1]);
    server.shutdown().await.unwrap();
}

/// Sends a raw HTTP request to the WebSocket port and returns the response.
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    within("HTTP response", s.read_to_string(&mut out)).await.unwrap();
    out
}

fn upgrade(path: &str, protocol: Option<&str>) -> String {
    let proto = protocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
    )
}

#[tokio::test]
async fn unknown_paths_and_subprotocols_get_clear_http_errors() {
    let server = start_memory().await;
    let addr = server.ws_addr();
    let r = http(addr, &upgrade("/nope", Some("mqtt"))).await;
    assert!(r.starts_with("HTTP/1.1 404") && r.contains("no such path: /nope"), "{r}");
    let r = http(addr, &upgrade("/mqtt", None)).await;
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("subprotocol") && r.contains("mqtt"), "{r}");
    let r = http(addr, &upgrade("/ws", Some("mqtt"))).await;
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("starling.v1"), "{r}");
    let r = http(addr, "GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 426") && r.contains("WebSocket"), "{r}");
    let r = http(addr, "BLAH\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // The accepted subprotocols do upgrade.
    let r = http_upgrade_status(addr, &upgrade("/mqtt", Some("mqttv3.1"))).await;
    assert!(r.starts_with("HTTP/1.1 101") && r.contains("Sec-WebSocket-Protocol: mqttv3.1"), "{r}");
    server.shutdown().await.unwrap();
}

/// Reads only the response head (an accepted upgrade keeps the socket open).
async fn http_upgrade_status(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    within("101 response head", async {
        while !buf.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.unwrap();
            buf.push(byte[0]);
        }
    })
    .await;
    String::from_utf8(buf).unwrap()
}

/// Two publishers on one topic, routed in parallel on a multi-threaded
/// runtime: every subscriber still sees the topic's ids in increasing order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_increase_per_topic_across_publishers() {
    const EACH: usize = 300;
    let server = start_memory().await;
    let mut c = proto(server.ws_addr(), "orderly").await;
    c.subscribe(1, &[("room/ordered", 0)]).await.unwrap();
    let mut publishers = Vec::new();
    for n in 0..2 {
        let addr = server.mqtt_addr();
        publishers.push(tokio::spawn(async move {
            let mut p = v4::connect(addr, &format!("pub{n}"), true).await;
            for i in 0..EACH {
                p.client.publish("room/ordered", v4::QoS::AtMostOnce, false, format!("{n}-{i}")).await.unwrap();
            }
            p.publish_acked("room/ordered", false, "done").await;
        }));
    }
    let mut last = 0;
    for _ in 0..2 * (EACH + 1) {
        let p = proto_next_publish(&mut c).await;
        assert!(p.message_id > last, "id {} after {}", p.message_id, last);
        last = p.message_id;
    }
    for p in publishers {
        p.await.unwrap();
    }
    server.shutdown().await.unwrap();
}

/// Text messages are not part of either WebSocket protocol: on `/ws` the
/// client gets `Error` 0x82 and a close, on `/mqtt` the connection closes
/// ([MQTT-6.0.0-1]); a bystander is unaffected.
#[tokio::test]
async fn text_messages_are_refused_on_both_paths() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let server = start_memory().await;
    let mut bystander = proto(server.ws_addr(), "bystander").await;
    bystander.subscribe(1, &[("ok", 0)]).await.unwrap();
    for (path, subprotocol) in [("/ws", "starling.v1"), ("/mqtt", "mqtt")] {
        let mut request = format!("ws://{}{path}", server.ws_addr()).into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", subprotocol.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        if path == "/ws" {
            let connect =
                Body::Connect(pb::Connect { client_id: "texty".into(), clean_start: true, ..Default::default() });
            ws.send(WsMessage::Binary(starling::wsproto::encode(connect))).await.unwrap();
        } else {
            let mut out = bytes::BytesMut::new();
            let connect = raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V5, "texty-mqtt");
            starling::mqtt::encode::encode(
                &starling::mqtt::packet::Packet::Connect(Box::new(connect)),
                starling::mqtt::packet::ProtocolVersion::V5,
                &mut out,
            );
            ws.send(WsMessage::Binary(out.freeze())).await.unwrap();
        }
        // The ConnAck / CONNACK.
        assert!(matches!(within("connack", ws.next()).await, Some(Ok(WsMessage::Binary(_)))));
        ws.send(WsMessage::Text("hello".into())).await.unwrap();
        let mut error_code = None;
        within("the server to close", async {
            while let Some(Ok(message)) = ws.next().await {
                if let WsMessage::Binary(data) = message {
                    if let Ok(Inbound::Frame(Body::Error(e))) = starling::wsproto::decode(&data) {
                        error_code = Some(e.code);
                    }
                }
            }
        })
        .await;
        if path == "/ws" {
            assert_eq!(error_code, Some(0x82), "{path}");
        }
    }
    let mut publisher = v4::connect(server.mqtt_addr(), "pub", true).await;
    publisher.publish_acked("ok", false, "still here").await;
    assert_eq!(proto_next_publish(&mut bystander).await.payload, "still here");
    server.shutdown().await.unwrap();
}

/// A client that sends its HTTP upgrade request one byte at a time, slower
/// than the connect timeout (slowloris), is closed after it.
#[tokio::test]
async fn a_slow_upgrade_request_is_closed_at_the_connect_timeout() {
    let mut config = memory_config();
    config.mqtt.connect_timeout_secs = 1;
    let server = start(config).await;
    let mut s = tokio::net::TcpStream::connect(server.ws_addr()).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    // Never finishes the head: the broker closes.
    let mut rest = Vec::new();
    within("the broker to close a slow upgrade", s.read_to_end(&mut rest)).await.ok();
    let mut ok = proto(server.ws_addr(), "patient").await;
    ok.heartbeat().await.unwrap();
    server.shutdown().await.unwrap();
}

/// A session subscribed at QoS 2 over MQTT and resumed over starling.v1 gets
/// its QoS 2 messages as QoS 1, and each `PubAck` completes one: more than a
/// window's worth (max_inflight 100) all arrive.
#[tokio::test]
async fn qos2_deliveries_resume_over_starling_v1() {
    use starling::mqtt::packet::{Packet, ProtocolVersion::V5, PubResp, QoS};
    let server = start_memory().await;
    let m = server.mqtt_addr();
    let mut connect = raw::connect_packet(V5, "dual");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(300);
    let (mut c, _) = raw::Raw::connect_with(m, connect).await;
    c.send(&raw::subscribe_packet(1, "q2/#", QoS::ExactlyOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.disconnect().await;
    let mut publisher = raw::Raw::connected(m, V5, "q2-publisher").await;
    for id in 1..=150u16 {
        publisher.send(&Packet::Publish(raw::publish_packet("q2/x", QoS::ExactlyOnce, id, &format!("m{id}")))).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
        let rel = PubResp { packet_id: id, reason_code: 0, properties: Default::default() };
        publisher.send(&Packet::PubRel(rel)).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));
    }
    let connect =
        pb::Connect { client_id: "dual".into(), clean_start: false, session_expiry_secs: 300, ..Default::default() };
    let (mut app, ack) =
        within("starling.v1 connect", ProtoClient::connect(&format!("ws://{}/ws", server.ws_addr()), connect))
            .await
            .unwrap();
    assert!(ack.session_present);
    let mut got = Vec::new();
    while got.len() < 150 {
        let p = proto_next_publish(&mut app).await;
        assert_eq!(p.qos, 1);
        app.ack(p.packet_id).await.unwrap();
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    assert_eq!(got, (1..=150).map(|i| format!("m{i}")).collect::<Vec<_>>());
    server.shutdown().await.unwrap();
}
