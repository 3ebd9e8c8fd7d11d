//! Runs: a client's back-to-back QoS 0 messages to one topic are routed
//! together (src/broker/run.rs, src/mqtt/runs.rs). What every subscriber
//! sees must be what it sees when they are routed one by one: each message
//! once, in order, one copy per client however many of its subscriptions
//! match, shared groups served message by message, no_local honoured; and a
//! run ends at the first packet it may not take. Over both MQTT doors and
//! both versions.

mod common;
use bytes::Bytes;
use common::wire::{Wire, MQTT_DOORS};
use common::*;
use starling::model::SubscriptionOptions;
use starling::mqtt::packet::*;

const N: usize = 100;

fn plain(topic: &str, payload: String) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic.into(),
        packet_id: 0,
        payload: Bytes::from(payload),
        properties: Default::default(),
    })
}

async fn subscribe_with(wire: &mut Wire, filter: &str, options: SubscriptionOptions) {
    wire.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter { filter: filter.into(), options }],
        properties: Default::default(),
    }))
    .await;
    match wire.recv().await {
        Some(Packet::SubAck(ack)) => assert!(ack.reason_codes[0] < 0x80, "{:?}: {filter}: {ack:?}", wire.door),
        other => panic!("{:?}: expected SUBACK, got {other:?}", wire.door),
    }
}

/// Payloads of the PUBLISH packets received until `end` (a QoS 1 barrier
/// message, published after the run).
async fn payloads_until_end(wire: &mut Wire) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let p = wire.expect_publish().await;
        let payload = String::from_utf8(p.payload.to_vec()).unwrap();
        if payload == "end" {
            return got;
        }
        got.push(payload);
    }
}

#[tokio::test]
async fn a_run_reaches_every_subscriber_as_single_messages_would() {
    let server = start_memory().await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    for door in MQTT_DOORS {
        let topic = format!("runs/{door:?}/t");
        // Two overlapping subscriptions: one copy of each message.
        let mut overlap = Wire::accepted(door, m, w, &format!("overlap-{door:?}"), None, None).await;
        overlap.subscribe(&format!("runs/{door:?}/#"), QoS::AtMostOnce).await;
        overlap.subscribe(&topic, QoS::AtMostOnce).await;
        // A shared group of two: each message to one of them.
        let mut member0 = Wire::accepted(door, m, w, &format!("member0-{door:?}"), None, None).await;
        let mut member1 = Wire::accepted(door, m, w, &format!("member1-{door:?}"), None, None).await;
        member0.subscribe(&format!("$share/g/{topic}"), QoS::AtMostOnce).await;
        member1.subscribe(&format!("$share/g/{topic}"), QoS::AtMostOnce).await;
        let mut publisher = Wire::accepted(door, m, w, &format!("pub-{door:?}"), None, None).await;
        if door.v5() {
            // Its own messages must not come back to it.
            subscribe_with(&mut publisher, &topic, SubscriptionOptions { no_local: true, ..Default::default() }).await;
        }

        // N plain messages with a retained one in the middle, which ends
        // one run (the retain flag) and is followed by the next.
        let mut expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        expected.insert(N / 2, "r".into());
        let packets: Vec<Packet> = expected
            .iter()
            .map(|payload| match plain(&topic, payload.clone()) {
                Packet::Publish(p) if payload == "r" => Packet::Publish(Publish { retain: true, ..p }),
                other => other,
            })
            .collect();
        publisher.send_all(&packets).await;
        publisher
            .send(&Packet::Publish(Publish {
                qos: QoS::AtLeastOnce,
                packet_id: 7,
                ..match plain(&topic, "end".into()) {
                    Packet::Publish(p) => p,
                    _ => unreachable!(),
                }
            }))
            .await;
        match publisher.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, 7),
            other => panic!("{door:?}: expected the PUBACK and nothing of its own before it, got {other:?}"),
        }
        publisher.ping_barrier().await;

        assert_eq!(payloads_until_end(&mut overlap).await, expected, "{door:?}: one copy each, in order");
        // The group: every message once between the two, each member's in
        // the order they were sent.
        let (mut got0, mut got1) = (Vec::new(), Vec::new());
        while got0.len() + got1.len() < expected.len() + 1 {
            tokio::select! {
                p = member0.expect_publish() => got0.push(String::from_utf8(p.payload.to_vec()).unwrap()),
                p = member1.expect_publish() => got1.push(String::from_utf8(p.payload.to_vec()).unwrap()),
            }
        }
        for got in [&got0, &got1] {
            let positions: Vec<usize> =
                got.iter().filter(|p| *p != "end").map(|p| expected.iter().position(|e| e == p).unwrap()).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{door:?}: a member got {got:?}");
        }
        let mut all: Vec<&String> = got0.iter().chain(&got1).filter(|p| *p != "end").collect();
        all.sort_by_key(|p| expected.iter().position(|e| e == *p).unwrap());
        assert_eq!(all, expected.iter().collect::<Vec<_>>(), "{door:?}: the group, between its members");
        member0.ping_barrier().await;
        member1.ping_barrier().await;
    }
    server.shutdown().await.unwrap();
}
