//! Verified senders (issue 27, item 1): a delivered message says who sent
//! it, as the broker authenticated them, and no client can post as another.
//! starling.v1 deliveries and history replies carry `Publish.sender` and
//! `sender_client_id`; in a class with `[identity] stamp_sender` (the
//! shipped chat class) MQTT 5 deliveries carry the user properties `sender`
//! and `sender_client_id`, replacing any the publisher set; the broker's
//! reserved keys (`$starling/...`) never come from a client.

mod common;

use bytes::Bytes;
use common::wire::{Door, Wire};
use common::*;
use starling::mqtt::packet::{Packet, Publish, PublishProperties, QoS};
use starling::server::Server;
use starling::wsproto::client::Client as ProtoClient;
use starling::wsproto::pb::{self, frame::Body};
use starling::wsproto::Inbound;

async fn proto(server: &Server, id: &str, token: &str) -> ProtoClient {
    let connect = pb::Connect { client_id: id.into(), clean_start: true, token: token.into(), ..Default::default() };
    let url = format!("ws://{}/ws", server.ws_addr());
    within("starling.v1 connect", ProtoClient::connect(&url, connect)).await.unwrap().0
}

async fn proto_publish(c: &mut ProtoClient) -> pb::Publish {
    within("a starling.v1 publish", async {
        loop {
            if let Inbound::Frame(Body::Publish(p)) = c.recv().await.expect("connection open") {
                return p;
            }
        }
    })
    .await
}

/// A QoS 1 MQTT 5 publish carrying `properties`, acknowledged.
async fn publish_with(wire: &mut Wire, topic: &str, payload: &str, properties: &[(&str, &str)]) {
    let user_properties = properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    wire.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: 1,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: PublishProperties { user_properties, ..Default::default() },
    }))
    .await;
    loop {
        match wire.recv().await {
            Some(Packet::PubAck(ack)) => return assert!(ack.reason_code < 0x80, "{ack:?}"),
            Some(Packet::Publish(_)) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

fn props(publish: &Publish) -> Vec<(String, String)> {
    publish.properties.user_properties.clone()
}

#[tokio::test]
async fn deliveries_say_who_sent_them_and_nobody_can_post_as_another() {
    let server = start(with_jwt(with_classes(memory_config()))).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let alice = token(json!({"sub": "alice"}));
    let bob = token(json!({"sub": "bob"}));
    let mut mqtt5 = Wire::accepted(Door::Tcp5, m, w, "reader-5", Some(""), Some(&bob)).await;
    let mut mqtt3 = Wire::accepted(Door::Ws311, m, w, "reader-3", Some(""), Some(&bob)).await;
    let mut app = proto(&server, "reader-v1", &bob).await;
    for filter in ["chat/lobby", "plain/t"] {
        assert_eq!(mqtt5.subscribe(filter, QoS::AtLeastOnce).await, 1);
        assert_eq!(mqtt3.subscribe(filter, QoS::AtLeastOnce).await, 1);
        let ack = app.subscribe(1, &[(filter, 1)]).await.unwrap();
        assert_eq!(ack.results[0].code, 1);
    }

    // Alice claims to be bob, in every way a client could.
    let forged = [
        ("sender", "bob"),
        ("sender_client_id", "bob-phone"),
        ("$starling/sender", "bob"),
        ("$starling/sender_client_id", "bob-phone"),
        ("mood", "happy"),
    ];
    let mut publisher = Wire::accepted(Door::Tcp5, m, w, "alice-phone", Some(""), Some(&alice)).await;
    publish_with(&mut publisher, "chat/lobby", "hello", &forged).await;
    // The chat class stamps the verified sender, in place of the claims.
    let got = mqtt5.expect_publish().await;
    let mut got_props = props(&got);
    got_props.sort();
    assert_eq!(
        got_props,
        [("mood", "happy"), ("sender", "alice"), ("sender_client_id", "alice-phone")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(mqtt3.expect_publish().await.payload, "hello");
    let p = proto_publish(&mut app).await;
    assert_eq!((p.sender.as_str(), p.sender_client_id.as_str()), ("alice", "alice-phone"));

    // A topic of no class: MQTT 5 gets the publisher's own properties (less
    // the reserved keys); starling.v1 still says who sent it.
    publish_with(&mut publisher, "plain/t", "plain", &forged).await;
    let got = mqtt5.expect_publish().await;
    assert!(props(&got).iter().all(|(k, _)| !k.starts_with("$starling/")), "{:?}", props(&got));
    assert!(props(&got).contains(&("mood".to_string(), "happy".to_string())));
    assert_eq!(mqtt3.expect_publish().await.payload, "plain");
    let p = proto_publish(&mut app).await;
    assert_eq!((p.sender.as_str(), p.sender_client_id.as_str()), ("alice", "alice-phone"));

    // A starling.v1 publisher cannot set the fields either; anonymous is "".
    let mut carol = proto(&server, "carol-v1", &token(json!({"sub": "carol"}))).await;
    carol
        .send(Body::Publish(pb::Publish {
            topic: "chat/lobby".into(),
            payload: Bytes::from_static(b"from carol"),
            qos: 0,
            sender: "alice".into(),
            sender_client_id: "alice-phone".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let p = proto_publish(&mut app).await;
    assert_eq!(
        (p.sender.as_str(), p.sender_client_id.as_str(), &p.payload[..]),
        ("carol", "carol-v1", &b"from carol"[..])
    );
    let got = mqtt5.expect_publish().await;
    assert!(props(&got).contains(&("sender".to_string(), "carol".to_string())));
    let mut anonymous = Wire::accepted(Door::Tcp5, m, w, "nobody", None, None).await;
    publish_with(&mut anonymous, "chat/lobby", "anon", &[]).await;
    let p = proto_publish(&mut app).await;
    assert_eq!((p.sender.as_str(), p.sender_client_id.as_str()), ("", "nobody"));

    // History replies carry the sender too (read back from the store).
    app.send(Body::HistoryRequest(pb::HistoryRequest {
        request_id: 7,
        topic: "chat/lobby".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let history = within("the history reply", async {
        loop {
            if let Inbound::Frame(Body::HistoryReply(r)) = app.recv().await.unwrap() {
                return r;
            }
        }
    })
    .await;
    let senders: Vec<(&str, &str)> =
        history.messages.iter().map(|p| (p.sender.as_str(), p.sender_client_id.as_str())).collect();
    assert_eq!(senders, [("alice", "alice-phone"), ("carol", "carol-v1"), ("", "nobody")]);
    server.shutdown().await.unwrap();
}
