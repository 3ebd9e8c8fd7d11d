//! MQTT 5 features end to end: subscription options, subscription
//! identifiers, topic aliases, message expiry, property pass-through, the
//! client's Maximum Packet Size, shared subscriptions, PUBACK reason codes and
//! graceful shutdown. rumqttc v5 where it can, raw packets where it cannot.

mod common;
use bytes::Bytes;
use common::raw::{connect_packet, publish_packet, subscribe_packet, Raw};
use common::*;
use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode, Filter, PubAckReason, PublishProperties, RetainForwardRule, SubscribeProperties,
};
use starling::mqtt::packet::{Packet, ProtocolVersion, QoS};
use std::time::Duration;

/// Subscribes with explicit options and waits for the SUBACK.
async fn subscribe_filter(client: &mut v5::Client, filter: Filter) {
    client.client.subscribe_many(vec![filter]).await.unwrap();
    client.suback().await;
}

async fn subscribe_with_id(client: &mut v5::Client, filter: &str, id: usize) {
    let props = SubscribeProperties { id: Some(id), user_properties: Vec::new() };
    client.client.subscribe_with_properties(filter, v5::QoS::AtLeastOnce, props).await.unwrap();
    client.suback().await;
}

/// QoS 1 publish with properties; returns the PUBACK reason once it arrives.
async fn publish_props_acked(
    client: &mut v5::Client,
    topic: &str,
    payload: &'static str,
    props: PublishProperties,
) -> PubAckReason {
    client.client.publish_with_properties(topic, v5::QoS::AtLeastOnce, false, payload, props).await.unwrap();
    client
        .next_matching("PUBACK", |p| match p {
            v5::Packet::PubAck(ack) => Some(ack.reason),
            _ => None,
        })
        .await
}

fn topic_of(p: &v5::Publish) -> &str {
    std::str::from_utf8(&p.topic).unwrap()
}

// ---- subscription options -------------------------------------------------------

#[tokio::test]
async fn no_local_skips_own_messages() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut me = v5::connect(addr, "me").await;
    let mut f = Filter::new("nl/t", v5::QoS::AtLeastOnce);
    f.nolocal = true;
    subscribe_filter(&mut me, f).await;
    me.client.publish("nl/t", v5::QoS::AtLeastOnce, false, "own").await.unwrap();
    // Routed once acknowledged; an own copy must not show up before or after the PUBACK.
    me.next_matching("PUBACK", |p| match p {
        v5::Packet::PubAck(_) => Some(()),
        v5::Packet::Publish(p) => panic!("no-local subscriber received its own message {p:?}"),
        _ => None,
    })
    .await;
    let mut other = v5::connect(addr, "other").await;
    other.publish_acked("nl/t", false, "marker").await;
    assert_eq!(me.next_publish().await.payload, "marker", "no-local subscriber received its own message");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag_on_live_messages() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut keep = v5::connect(addr, "keep").await;
    let mut f = Filter::new("rap/t", v5::QoS::AtLeastOnce);
    f.preserve_retain = true;
    subscribe_filter(&mut keep, f).await;
    let mut plain = v5::connect(addr, "plain").await;
    subscribe_filter(&mut plain, Filter::new("rap/t", v5::QoS::AtLeastOnce)).await;
    let mut publisher = v5::connect(addr, "pub").await;
    publisher.publish_acked("rap/t", true, "retained").await;
    publisher.publish_acked("rap/t", false, "not retained").await;
    let (a, b) = (keep.next_publish().await, keep.next_publish().await);
    assert_eq!(
        (&a.payload[..], a.retain, &b.payload[..], b.retain),
        (&b"retained"[..], true, &b"not retained"[..], false)
    );
    let (a, b) = (plain.next_publish().await, plain.next_publish().await);
    assert_eq!(
        (&a.payload[..], a.retain, &b.payload[..], b.retain),
        (&b"retained"[..], false, &b"not retained"[..], false)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn retain_handling_0_1_2() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut publisher = v5::connect(addr, "pub").await;
    publisher.publish_acked("rh/t", true, "kept").await;
    let filter = |rule| {
        let mut f = Filter::new("rh/t", v5::QoS::AtLeastOnce);
        f.retain_forward_rule = rule;
        f
    };
    let is_kept = |p: &v5::Publish| (&p.payload[..], p.retain) == (&b"kept"[..], true);

    // 0: on every subscribe.
    let mut c0 = v5::connect(addr, "c0").await;
    for _ in 0..2 {
        subscribe_filter(&mut c0, filter(RetainForwardRule::OnEverySubscribe)).await;
        assert!(is_kept(&c0.next_publish().await));
    }
    // 1: only when the subscription is new.
    let mut c1 = v5::connect(addr, "c1").await;
    subscribe_filter(&mut c1, filter(RetainForwardRule::OnNewSubscribe)).await;
    assert!(is_kept(&c1.next_publish().await));
    subscribe_filter(&mut c1, filter(RetainForwardRule::OnNewSubscribe)).await;
    // 2: never.
    let mut c2 = v5::connect(addr, "c2").await;
    subscribe_filter(&mut c2, filter(RetainForwardRule::Never)).await;

    publisher.publish_acked("rh/t", false, "marker").await;
    assert_eq!(c1.next_publish().await.payload, "marker", "retained sent again on re-subscribe (handling 1)");
    assert_eq!(c2.next_publish().await.payload, "marker", "retained sent with retain handling 2");
    server.shutdown().await.unwrap();
}

// ---- subscription identifiers --------------------------------------------------------

#[tokio::test]
async fn overlapping_subscriptions_get_one_copy_with_both_identifiers() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut c = v5::connect(addr, "ids").await;
    subscribe_with_id(&mut c, "si/+", 1).await;
    subscribe_with_id(&mut c, "si/#", 2).await;
    let mut publisher = v5::connect(addr, "pub").await;
    publisher.publish_acked("si/x", false, "one").await;
    publisher.publish_acked("si/x", false, "two").await;
    let p = c.next_publish().await;
    assert_eq!(p.payload, "one");
    let mut ids = p.properties.expect("properties").subscription_identifiers;
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(c.next_publish().await.payload, "two", "second copy of the same message");
    server.shutdown().await.unwrap();
}

// ---- topic aliases ----------------------------------------------------------------------

#[tokio::test]
async fn inbound_topic_aliases_are_resolved_and_bounded() {
    let mut config = memory_config();
    config.mqtt.topic_alias_maximum = 2;
    let server = start(config).await;
    let addr = server.mqtt_addr();
    let mut sub = v5::connect(addr, "sub").await;
    sub.subscribe("ta/#", v5::QoS::AtMostOnce).await;
    let (mut raw, ack) = Raw::connect_with(addr, connect_packet(ProtocolVersion::V5, "aliaser")).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(2));
    let mut p = publish_packet("ta/x", QoS::AtMostOnce, 0, "first");
    p.properties.topic_alias = Some(1);
    raw.send(&Packet::Publish(p.clone())).await;
    p.topic.clear();
    p.payload = Bytes::from_static(b"second");
    raw.send(&Packet::Publish(p)).await;
    for payload in ["first", "second"] {
        let got = sub.next_publish().await;
        assert_eq!((topic_of(&got), &got.payload[..]), ("ta/x", payload.as_bytes()));
    }

    let mut p = publish_packet("ta/y", QoS::AtMostOnce, 0, "too far");
    p.properties.topic_alias = Some(3);
    raw.send(&Packet::Publish(p)).await;
    let d = raw.until_closed().await.expect("DISCONNECT before close");
    assert_eq!(d.reason_code, 0x94);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn outbound_topic_aliases_replace_repeated_topics() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut c = connect_packet(ProtocolVersion::V5, "short");
    c.properties.topic_alias_maximum = Some(5);
    let (mut raw, _) = Raw::connect_with(addr, c).await;
    raw.send(&subscribe_packet(1, "tao/#", QoS::AtMostOnce)).await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    let mut publisher = v5::connect(addr, "pub").await;
    for (topic, payload) in [("tao/a", "1"), ("tao/a", "2"), ("tao/b", "3"), ("tao/a", "4")] {
        publisher.publish_acked(topic, false, payload).await;
    }
    let expected = [("tao/a", 1, "1"), ("", 1, "2"), ("tao/b", 2, "3"), ("", 1, "4")];
    for (topic, alias, payload) in expected {
        let p = raw.expect_publish().await;
        assert_eq!(
            (p.topic.as_str(), p.properties.topic_alias, &p.payload[..]),
            (topic, Some(alias), payload.as_bytes())
        );
    }
    server.shutdown().await.unwrap();
}

// ---- message expiry ----------------------------------------------------------------------

#[tokio::test]
async fn message_expiry_interval_is_forwarded() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut sub = v5::connect(addr, "sub").await;
    sub.subscribe("exp/t", v5::QoS::AtLeastOnce).await;
    let mut publisher = v5::connect(addr, "pub").await;
    let props = PublishProperties { message_expiry_interval: Some(100), ..Default::default() };
    publish_props_acked(&mut publisher, "exp/t", "fresh", props).await;
    let p = sub.next_publish().await;
    let left = p.properties.and_then(|p| p.message_expiry_interval).expect("message expiry interval");
    assert!(left > 0 && left <= 100, "remaining expiry {left}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_message_is_not_delivered_to_a_returning_session() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let options = |clean_start| {
        let mut o = v5::options(addr, "returning");
        o.set_session_expiry_interval(Some(60));
        o.set_clean_start(clean_start);
        o
    };
    let (mut sub, _) = v5::connect_with(options(true)).await;
    sub.subscribe("exp/q", v5::QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = v5::connect(addr, "pub").await;
    let short = PublishProperties { message_expiry_interval: Some(1), ..Default::default() };
    publish_props_acked(&mut publisher, "exp/q", "short-lived", short).await;
    publish_props_acked(&mut publisher, "exp/q", "durable", PublishProperties::default()).await;
    let_time_pass(Duration::from_secs(2)).await;

    let (mut sub, ack) = v5::connect_with(options(false)).await;
    assert!(ack.session_present);
    let p = sub.next_publish().await;
    assert_eq!(p.payload, "durable", "expired message delivered");
    assert_eq!(p.properties.and_then(|p| p.message_expiry_interval), None);
    server.shutdown().await.unwrap();
}

// ---- properties ----------------------------------------------------------------------------

#[tokio::test]
async fn message_properties_pass_through_unchanged() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut sub = v5::connect(addr, "sub").await;
    sub.subscribe("props/t", v5::QoS::AtLeastOnce).await;
    let mut publisher = v5::connect(addr, "pub").await;
    let user_properties: Vec<(String, String)> =
        [("k", "v1"), ("other", "x"), ("k", "v2")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr\xff")),
        user_properties: user_properties.clone(),
        ..Default::default()
    };
    publish_props_acked(&mut publisher, "props/t", "{}", sent.clone()).await;
    let got = sub.next_publish().await.properties.expect("properties");
    assert_eq!(got.payload_format_indicator, sent.payload_format_indicator);
    assert_eq!(got.content_type, sent.content_type);
    assert_eq!(got.response_topic, sent.response_topic);
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(got.user_properties, user_properties, "user properties must keep order and duplicates");
    server.shutdown().await.unwrap();
}

// ---- the client's Maximum Packet Size ---------------------------------------------------------

#[tokio::test]
async fn deliveries_larger_than_the_client_maximum_packet_size_are_dropped() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut o = v5::options(addr, "small");
    o.set_max_packet_size(Some(200));
    let (mut small, _) = v5::connect_with(o).await;
    small.subscribe("mps/t", v5::QoS::AtLeastOnce).await;
    let mut publisher = v5::connect(addr, "pub").await;
    publisher.publish_acked("mps/t", false, vec![b'x'; 1000]).await;
    publisher.publish_acked("mps/t", false, "marker").await;
    assert_eq!(small.next_publish().await.payload, "marker");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropped_oversized_delivery_does_not_use_up_a_topic_alias() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut c = connect_packet(ProtocolVersion::V5, "small");
    c.properties.topic_alias_maximum = Some(5);
    c.properties.maximum_packet_size = Some(200);
    let (mut raw, _) = Raw::connect_with(addr, c).await;
    raw.send(&subscribe_packet(1, "mps/t", QoS::AtMostOnce)).await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    let mut publisher = v5::connect(addr, "pub").await;
    publisher.publish_acked("mps/t", false, vec![b'x'; 1000]).await;
    publisher.publish_acked("mps/t", false, "small").await;
    let p = raw.expect_publish().await;
    // The client never saw the big one, so this PUBLISH must carry the topic itself.
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("mps/t", &b"small"[..]), "{p:?}");
    server.shutdown().await.unwrap();
}

// ---- shared subscriptions -------------------------------------------------------------------

#[tokio::test]
async fn shared_subscription_round_robins_and_normal_subscribers_see_all() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut v5_members = Vec::new();
    for id in ["a", "b"] {
        let mut m = v5::connect(addr, id).await;
        m.subscribe("$share/g/jobs", v5::QoS::AtLeastOnce).await;
        m.subscribe("mark", v5::QoS::AtLeastOnce).await;
        v5_members.push(m);
    }
    let mut v4_member = v4::connect(addr, "c", true).await;
    v4_member.subscribe("$share/g/jobs", v4::QoS::AtLeastOnce).await;
    v4_member.subscribe("mark", v4::QoS::AtLeastOnce).await;
    let mut all = v5::connect(addr, "all").await;
    all.subscribe("jobs", v5::QoS::AtLeastOnce).await;

    let mut publisher = v5::connect(addr, "pub").await;
    for i in 0..6 {
        publisher.publish_acked("jobs", false, format!("j{i}")).await;
    }
    publisher.publish_acked("mark", false, "end").await;

    let mut seen = Vec::new();
    for m in &mut v5_members {
        let mut jobs = Vec::new();
        loop {
            let p = m.next_publish().await;
            if topic_of(&p) == "mark" {
                break;
            }
            jobs.push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
        assert_eq!(jobs.len(), 2, "member got {jobs:?}");
        seen.extend(jobs);
    }
    let mut jobs = Vec::new();
    loop {
        let p = v4_member.next_publish().await;
        if p.topic == "mark" {
            break;
        }
        jobs.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    assert_eq!(jobs.len(), 2, "v4 member got {jobs:?}");
    seen.extend(jobs);
    seen.sort();
    assert_eq!(seen, ["j0", "j1", "j2", "j3", "j4", "j5"]);
    for i in 0..6 {
        assert_eq!(all.next_publish().await.payload, format!("j{i}"));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let server = start_memory().await;
    let mut c = v5::connect(server.mqtt_addr(), "c").await;
    let mut f = Filter::new("$share/g/jobs", v5::QoS::AtLeastOnce);
    f.nolocal = true;
    c.client.subscribe_many(vec![f]).await.unwrap();
    let d = c.disconnected().await.expect("DISCONNECT");
    assert_eq!(d.reason_code, DisconnectReasonCode::ProtocolError);
    server.shutdown().await.unwrap();
}

// ---- acknowledgements and shutdown -------------------------------------------------------------

#[tokio::test]
async fn puback_reports_no_matching_subscribers() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut c = v5::connect(addr, "c").await;
    let reason = publish_props_acked(&mut c, "nobody/home", "x", PublishProperties::default()).await;
    assert_eq!(reason, PubAckReason::NoMatchingSubscribers);
    let mut sub = v5::connect(addr, "sub").await;
    sub.subscribe("somebody/home", v5::QoS::AtLeastOnce).await;
    let reason = publish_props_acked(&mut c, "somebody/home", "x", PublishProperties::default()).await;
    assert_eq!(reason, PubAckReason::Success);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_sends_server_shutting_down() {
    let server = start_memory().await;
    let mut c = v5::connect(server.mqtt_addr(), "c").await;
    let (d, stopped) = tokio::join!(c.disconnected(), within("shutdown", server.shutdown()));
    stopped.unwrap();
    assert_eq!(d.expect("DISCONNECT").reason_code, DisconnectReasonCode::ServerShuttingDown);
}
