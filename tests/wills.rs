//! A will is a publish (issue 24, item 1): it passes exactly the checks a
//! PUBLISH passes (the ACL and the topic class's roles, high priority
//! included) at CONNECT, where a will the client may not publish refuses
//! the connection (MQTT 5 CONNACK 0x87, 3.1.1 return code 5, starling.v1
//! ConnAck 0x87), and again when it is published, under the rules in force
//! then.

mod common;
use common::wire::{Door, Wire, MQTT_DOORS};
use common::*;
use starling::config::{AclAction, AclRule, Config, Permission};
use starling::mqtt::packet::{Connect, LastWill, Packet, QoS, WillProperties};
use starling::server::Server;
use starling::wsproto::client::{Client as ProtoClient, ClientError};
use starling::wsproto::pb;

fn will(topic: &str) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: "gone".into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    }
}

/// CONNECT with `will`; the CONNACK's code (3.1.1 return codes read as v5).
async fn connect_with_will(server: &Server, door: Door, client_id: &str, will: LastWill) -> (Wire, u8) {
    let mut wire = Wire::open(door, server.mqtt_addr(), server.ws_addr()).await;
    let connect = Connect {
        protocol: door.version(),
        clean_start: true,
        keep_alive: 30,
        client_id: client_id.into(),
        will: Some(will),
        username: None,
        password: None,
        properties: Default::default(),
    };
    wire.send(&Packet::Connect(Box::new(connect))).await;
    match wire.recv().await {
        Some(Packet::ConnAck(ack)) => (wire, ack.reason_code),
        other => panic!("{door:?}: expected CONNACK, got {other:?}"),
    }
}

async fn proto_connect_with_will(server: &Server, client_id: &str, topic: &str) -> Result<ProtoClient, ClientError> {
    let will = pb::Publish { topic: topic.into(), payload: b"gone".to_vec().into(), ..Default::default() };
    let connect =
        pb::Connect { client_id: client_id.into(), clean_start: true, will: Some(will), ..Default::default() };
    within("starling.v1 connect", ProtoClient::connect(&format!("ws://{}/ws", server.ws_addr()), connect))
        .await
        .map(|(client, _)| client)
}

/// `live/{room}/gift` is high priority by pattern, and only the `server`
/// role may publish high priority (topics/danmaku.toml): an anonymous
/// client's PUBLISH there is refused with 0x87, and so is its will.
#[tokio::test]
async fn a_will_the_client_may_not_publish_refuses_the_connect_on_every_transport() {
    let server = start(with_classes(memory_config())).await;
    for door in MQTT_DOORS {
        let (_, code) = connect_with_will(&server, door, &format!("gifter-{door:?}"), will("live/r1/gift")).await;
        assert_eq!(code, 0x87, "{door:?}: a will on a gift topic");
        let (wire, code) = connect_with_will(&server, door, &format!("viewer-{door:?}"), will("live/r1/danmaku")).await;
        assert_eq!(code, 0, "{door:?}: a will on a comment topic is a comment anyone may post");
        drop(wire);
    }
    match proto_connect_with_will(&server, "gifter-v1", "live/r1/gift").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, 0x87),
        Err(e) => panic!("starling.v1: expected a refusal, got {e}"),
        Ok(_) => panic!("starling.v1: a will on a gift topic was accepted"),
    }
    assert!(proto_connect_with_will(&server, "viewer-v1", "live/r1/danmaku").await.is_ok());
    server.shutdown().await.unwrap();
}

fn deny_alerts(mut config: Config) -> Config {
    config.acl.push(AclRule {
        user: "*".into(),
        client: "*".into(),
        action: AclAction::Publish,
        topic: "alerts/#".into(),
        permission: Permission::Deny,
    });
    config
}

/// The rules change after CONNECT (a SIGHUP reload): the will is checked
/// again when it is published, and not published where the client may no
/// longer publish.
#[tokio::test]
async fn a_will_is_checked_again_when_it_is_published() {
    let config = memory_config();
    let server = start(config.clone()).await;
    let mut watcher = v4::connect(server.mqtt_addr(), "watcher", true).await;
    watcher.subscribe("alerts/#", v4::QoS::AtMostOnce).await;
    watcher.subscribe("marker", v4::QoS::AtMostOnce).await;
    let (mqtt, code) = connect_with_will(&server, Door::Tcp5, "leaver-mqtt", will("alerts/mqtt")).await;
    assert_eq!(code, 0);
    let app = proto_connect_with_will(&server, "leaver-v1", "alerts/v1").await.expect("accepted before the reload");
    server.reload(&deny_alerts(config)).unwrap();
    // Both connections end without a goodbye: their wills are due now.
    drop(mqtt);
    drop(app);
    wait_until("both sessions ended", || {
        server.broker().session("leaver-mqtt").is_none() && server.broker().session("leaver-v1").is_none()
    })
    .await;
    let mut marker = v4::connect(server.mqtt_addr(), "marker", true).await;
    marker.publish_acked("marker", false, "after the wills").await;
    let p = watcher.next_publish().await;
    assert_eq!(p.topic, "marker", "a will was published on {} although the rules now deny it", p.topic);
    server.shutdown().await.unwrap();
}
