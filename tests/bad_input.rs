//! Hostile and broken clients: each gets a clear reason and a close; other
//! clients and stored messages are untouched.

mod common;
use common::raw::{subscribe_packet, Raw};
use common::*;
use starling::mqtt::packet::*;
use tokio::io::AsyncReadExt;

/// A well-behaved subscriber that must keep working while others misbehave.
async fn bystander(addr: std::net::SocketAddr) -> v4::Client {
    let mut c = v4::connect(addr, "bystander", true).await;
    c.subscribe("still/#", v4::QoS::AtLeastOnce).await;
    c
}

async fn assert_still_works(addr: std::net::SocketAddr, bystander: &mut v4::Client, n: usize) {
    let mut p = v4::connect(addr, &format!("checker{n}"), true).await;
    p.publish_acked("still/ok", false, format!("{n}")).await;
    assert_eq!(bystander.next_publish().await.payload, format!("{n}"));
}

#[tokio::test]
async fn invalid_filters_get_failure_codes_and_the_connection_stays() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    for (version, expected) in [(ProtocolVersion::V311, 0x80), (ProtocolVersion::V5, 0x8F)] {
        let mut raw = Raw::connected(addr, version, "raw").await;
        raw.send(&subscribe_packet(1, "a/#/b", QoS::AtMostOnce)).await;
        match raw.recv().await {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.reason_codes, vec![expected]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
        raw.send(&subscribe_packet(2, "a/+", QoS::AtLeastOnce)).await;
        match raw.recv().await {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.reason_codes, vec![1]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_packet_closes_only_that_connection() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut watcher = bystander(addr).await;
    let mut raw = Raw::connected(addr, ProtocolVersion::V5, "bad").await;
    // PUBLISH with QoS 3 ([MQTT-3.3.1-4]).
    raw.send_bytes(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]).await;
    let d = raw.until_closed().await.expect("DISCONNECT before close");
    assert_eq!(d.reason_code, 0x81);
    assert_still_works(addr, &mut watcher, 1).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn lying_remaining_length_is_refused_without_buffering() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut watcher = bystander(addr).await;
    let mut raw = Raw::connected(addr, ProtocolVersion::V5, "liar").await;
    // PUBLISH announcing 200 MB, then nothing: the broker must not wait for it.
    raw.send_bytes(&[0x30, 0x80, 0x80, 0xE4, 0x5F]).await;
    let d = raw.until_closed().await.expect("DISCONNECT before close");
    assert_eq!(d.reason_code, 0x95);
    assert_still_works(addr, &mut watcher, 2).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_packet_is_refused() {
    let mut config = memory_config();
    config.mqtt.max_packet_size = 1024;
    let server = start(config).await;
    let addr = server.mqtt_addr();
    let mut raw = Raw::connected(addr, ProtocolVersion::V311, "big").await;
    raw.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "big".into(),
        packet_id: 0,
        payload: vec![0u8; 4096].into(),
        properties: Default::default(),
    }))
    .await;
    // 3.1.1 has no DISCONNECT from the server: the connection just closes.
    assert_eq!(raw.until_closed().await, None);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connect_that_never_comes_times_out() {
    let mut config = memory_config();
    config.mqtt.connect_timeout_secs = 1;
    let server = start(config).await;
    let mut stream = tokio::net::TcpStream::connect(server.mqtt_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    // Silence from us; the broker closes (read returns 0) well within WAIT.
    let n = within("connect timeout close", stream.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_1() {
    let server = start_memory().await;
    let mut raw = Raw::open(server.mqtt_addr(), ProtocolVersion::V311).await;
    // CONNECT "MQTT" level 6.
    raw.send_bytes(&[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x1E, 0x00, 0x01, b'x']).await;
    match raw.recv().await {
        // The codec maps 3.1.1 return code 1 back to 0x84.
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, 0x84),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert_eq!(raw.recv().await, None);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn first_packet_not_connect_is_closed() {
    let server = start_memory().await;
    let mut raw = Raw::open(server.mqtt_addr(), ProtocolVersion::V311).await;
    raw.send(&Packet::PingReq).await;
    assert_eq!(raw.recv().await, None);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_loses_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(sled_config(dir.path())).await;
    let addr = server.mqtt_addr();
    let mut p = v4::connect(addr, "keeper", true).await;
    p.publish_acked("kept/retained", true, "precious").await;
    let mut raw = Raw::connected(addr, ProtocolVersion::V5, "vandal").await;
    raw.send_bytes(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]).await;
    raw.until_closed().await;
    let mut sub = v4::connect(addr, "reader", true).await;
    sub.subscribe("kept/#", v4::QoS::AtLeastOnce).await;
    assert_eq!(sub.next_publish().await.payload, "precious");
    server.shutdown().await.unwrap();
}
