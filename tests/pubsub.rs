//! Publish/subscribe end to end with rumqttc: QoS 0/1/2 both ways, wildcards,
//! retained messages, QoS downgrade, MQTT 3.1.1 and 5.0 clients on one tree.

mod common;
use common::*;

#[tokio::test]
async fn qos0_1_2_roundtrip_v4() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut sub = v4::connect(addr, "sub", true).await;
    let codes = sub.subscribe("room/+", v4::QoS::ExactlyOnce).await;
    assert_eq!(codes, vec![rumqttc::SubscribeReasonCode::Success(v4::QoS::ExactlyOnce)]);
    let publisher = v4::connect(addr, "pub", true).await;
    for (i, qos) in [v4::QoS::AtMostOnce, v4::QoS::AtLeastOnce, v4::QoS::ExactlyOnce].into_iter().enumerate() {
        publisher.client.publish("room/1", qos, false, format!("m{i}")).await.unwrap();
        let p = sub.next_publish().await;
        assert_eq!(p.topic, "room/1");
        assert_eq!(&p.payload[..], format!("m{i}").as_bytes());
        assert_eq!(p.qos, qos);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn qos_is_downgraded_to_the_subscription_maximum() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut sub = v4::connect(addr, "sub", true).await;
    sub.subscribe("t", v4::QoS::AtLeastOnce).await;
    let publisher = v4::connect(addr, "pub", true).await;
    publisher.client.publish("t", v4::QoS::ExactlyOnce, false, "x").await.unwrap();
    assert_eq!(sub.next_publish().await.qos, v4::QoS::AtLeastOnce);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn v4_and_v5_clients_share_one_tree() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut old = v4::connect(addr, "old", true).await;
    old.subscribe("mix/#", v4::QoS::AtLeastOnce).await;
    let mut new = v5::connect(addr, "new").await;
    new.subscribe("mix/#", v5::QoS::AtLeastOnce).await;
    new.client.publish("mix/a", v5::QoS::AtLeastOnce, false, "from5").await.unwrap();
    old.client.publish("mix/b", v4::QoS::AtLeastOnce, false, "from4").await.unwrap();
    let mut got_old = vec![old.next_publish().await.payload, old.next_publish().await.payload];
    let mut got_new = vec![new.next_publish().await.payload, new.next_publish().await.payload];
    got_old.sort();
    got_new.sort();
    assert_eq!(got_old, vec!["from4", "from5"]);
    assert_eq!(got_new, vec!["from4", "from5"]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn wildcards_and_dollar_topics() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut all = v4::connect(addr, "all", true).await;
    all.subscribe("#", v4::QoS::AtMostOnce).await;
    let mut sys = v4::connect(addr, "sys", true).await;
    sys.subscribe("$app/#", v4::QoS::AtMostOnce).await;
    let publisher = v4::connect(addr, "pub", true).await;
    // '#' must not see '$' topics ([MQTT-4.7.2-1]); publish one, then a
    // marker. ($SYS/ itself is the broker's: clients cannot publish there.)
    publisher.client.publish("$app/x", v4::QoS::AtMostOnce, false, "dollar").await.unwrap();
    publisher.client.publish("plain", v4::QoS::AtMostOnce, false, "marker").await.unwrap();
    assert_eq!(sys.next_publish().await.topic, "$app/x");
    assert_eq!(all.next_publish().await.topic, "plain", "'#' received a $ topic");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn retained_set_replace_clear() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut publisher = v4::connect(addr, "pub", true).await;
    publisher.publish_acked("r/1", true, "first").await;
    publisher.publish_acked("r/1", true, "second").await;
    publisher.publish_acked("r/2", true, "other").await;
    publisher.publish_acked("r/2", true, "").await;
    let mut probe = v4::connect(addr, "probe", true).await;
    probe.subscribe("r/1", v4::QoS::AtLeastOnce).await;
    let p = probe.next_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"second"[..], true));
    let mut sub = v4::connect(addr, "sub", true).await;
    sub.subscribe("r/#", v4::QoS::AtLeastOnce).await;
    let p = sub.next_publish().await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("r/1", &b"second"[..]));
    // r/2 was cleared: the next message is the live marker, not a retained r/2.
    publisher.client.publish("r/marker", v4::QoS::AtLeastOnce, false, "live").await.unwrap();
    let p = sub.next_publish().await;
    assert_eq!((p.topic.as_str(), p.retain), ("r/marker", false));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut sub = v4::connect(addr, "sub", true).await;
    sub.subscribe("a", v4::QoS::AtMostOnce).await;
    sub.subscribe("b", v4::QoS::AtMostOnce).await;
    sub.client.unsubscribe("a").await.unwrap();
    sub.next_matching("UNSUBACK", |p| matches!(p, v4::Incoming::UnsubAck(_)).then_some(())).await;
    let publisher = v4::connect(addr, "pub", true).await;
    publisher.client.publish("a", v4::QoS::AtMostOnce, false, "gone").await.unwrap();
    publisher.client.publish("b", v4::QoS::AtMostOnce, false, "marker").await.unwrap();
    assert_eq!(sub.next_publish().await.topic, "b");
    server.shutdown().await.unwrap();
}

/// A client need not wait for CONNACK ([MQTT-3.1.4], "Clients are permitted
/// to send further Control Packets immediately after sending a CONNECT"):
/// packets that arrive in the same read as CONNECT are answered at once, not
/// only when more input arrives.
#[tokio::test]
async fn packets_written_right_behind_connect_are_answered_without_more_input() {
    use starling::model::QoS;
    use starling::mqtt::encode::encode;
    use starling::mqtt::packet::{Packet, ProtocolVersion};
    let server = start_memory().await;
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut client = raw::Raw::open(server.mqtt_addr(), version).await;
        let mut bytes = bytes::BytesMut::new();
        encode(&Packet::Connect(Box::new(raw::connect_packet(version, "eager"))), version, &mut bytes);
        encode(&raw::subscribe_packet(1, "eager/#", QoS::AtLeastOnce), version, &mut bytes);
        client.send_bytes(&bytes).await;
        match within("CONNACK", client.recv()).await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, 0, "{version:?}"),
            other => panic!("{version:?}: expected CONNACK, got {other:?}"),
        }
        match within("SUBACK for the SUBSCRIBE sent with CONNECT", client.recv()).await {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.packet_id, 1, "{version:?}"),
            other => panic!("{version:?}: expected SUBACK, got {other:?}"),
        }
    }
    server.shutdown().await.unwrap();
}
