//! No reader left behind: a subscriber that stops reading while a burst
//! arrives gets the whole burst once it reads again, and every later message,
//! over MQTT/TCP, MQTT/WebSocket (3.1.1 and 5) and starling.v1, at QoS 0, 1
//! and 2. The burst is larger than one write's budget (1 MiB), so the writer
//! must come back to the outbox after a write completes at once, without a
//! new message to wake it (issue 23: the lost wake-up).

mod common;
use common::wire::{Door, Wire, MQTT_DOORS};
use common::*;
use starling::mqtt::packet::{Packet, PubResp, Publish, QoS};
use starling::wsproto::client::Client as ProtoClient;
use starling::wsproto::pb;
use std::net::SocketAddr;

/// 900 messages of 16 KiB: 14.4 MB, inside the default queue limits
/// (1,000 messages, 16 MiB) and several times one write's budget.
const BURST: usize = 900;
const SIZE: usize = 16 * 1024;
/// Read as they arrive before the pause.
const WARM_UP: usize = 100;

fn payload(i: usize) -> String {
    let head = format!("m{i:05}:");
    head.clone() + &"x".repeat(SIZE - head.len())
}

fn index_of(payload: &[u8]) -> usize {
    std::str::from_utf8(&payload[1..6]).unwrap().parse().unwrap()
}

fn qos_of(n: u8) -> QoS {
    QoS::from_u8(n).unwrap()
}

/// Publishes `count` messages at `qos` on `topic` (QoS 2 with the whole
/// PUBREC/PUBREL/PUBCOMP exchange), returning once the broker has routed all.
async fn publish_burst(publisher: &mut Wire, topic: &str, qos: QoS, retain: bool, range: std::ops::Range<usize>) {
    for (n, i) in range.enumerate() {
        let packet_id = (n % 60_000 + 1) as u16;
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic: topic.replace('*', &i.to_string()),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
            payload: payload(i).into(),
            properties: Default::default(),
        };
        publisher.send(&Packet::Publish(publish)).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match publisher.recv().await {
                Some(Packet::PubAck(ack)) => assert!(ack.reason_code < 0x80, "PUBACK {ack:?}"),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match publisher.recv().await {
                    Some(Packet::PubRec(rec)) => assert!(rec.reason_code < 0x80, "PUBREC {rec:?}"),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                let rel = PubResp { packet_id, reason_code: 0, properties: Default::default() };
                publisher.send(&Packet::PubRel(rel)).await;
                assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));
            }
        }
    }
    // Everything sent before the PINGRESP has been handled, so routed.
    publisher.ping_barrier().await;
}

/// Reads publishes (acknowledging QoS 1 and 2 as a client does) until
/// `count` arrived; returns their indexes in arrival order.
async fn read_mqtt(subscriber: &mut Wire, count: usize) -> Vec<usize> {
    let mut got = Vec::new();
    while got.len() < count {
        match subscriber.recv().await {
            Some(Packet::Publish(p)) => {
                got.push(index_of(&p.payload));
                let ack = PubResp { packet_id: p.packet_id, reason_code: 0, properties: Default::default() };
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => subscriber.send(&Packet::PubAck(ack)).await,
                    QoS::ExactlyOnce => subscriber.send(&Packet::PubRec(ack)).await,
                }
            }
            Some(Packet::PubRel(rel)) => {
                let comp = PubResp { packet_id: rel.packet_id, reason_code: 0, properties: Default::default() };
                subscriber.send(&Packet::PubComp(comp)).await;
            }
            other => panic!("{:?}: after {} deliveries expected PUBLISH, got {other:?}", subscriber.door, got.len()),
        }
    }
    got
}

/// Completes the QoS 2 exchanges still open (PUBREL → PUBCOMP), then a
/// PINGRESP with nothing but those before it: nothing else was pending.
async fn settle(subscriber: &mut Wire) {
    subscriber.send(&Packet::PingReq).await;
    loop {
        match subscriber.recv().await {
            Some(Packet::PingResp) => return,
            Some(Packet::PubRel(rel)) => {
                let comp = PubResp { packet_id: rel.packet_id, reason_code: 0, properties: Default::default() };
                subscriber.send(&Packet::PubComp(comp)).await;
            }
            other => {
                panic!("{:?}: expected PINGRESP and nothing but PUBRELs before it, got {other:?}", subscriber.door)
            }
        }
    }
}

async fn read_proto(subscriber: &mut ProtoClient, count: usize) -> Vec<usize> {
    let mut got = Vec::new();
    while got.len() < count {
        let p = within("a Publish over /ws", subscriber.next_publish()).await.unwrap();
        if p.qos > 0 {
            subscriber.ack(p.packet_id).await.unwrap();
        }
        got.push(index_of(&p.payload));
    }
    got
}

async fn proto_subscriber(ws: SocketAddr, id: &str, filter: &str, qos: u8) -> ProtoClient {
    let connect = pb::Connect { client_id: id.into(), clean_start: true, ..Default::default() };
    let (mut c, _) =
        within("starling.v1 connect", ProtoClient::connect(&format!("ws://{ws}/ws"), connect)).await.unwrap();
    let ack = c.subscribe(1, &[(filter, u32::from(qos))]).await.unwrap();
    assert!(ack.results.iter().all(|r| r.code <= 2), "SubAck {ack:?}");
    c
}

fn expected(range: std::ops::Range<usize>) -> Vec<usize> {
    range.collect()
}

/// The writer never stalled with deliveries waiting (the broker's own guard).
fn no_stalls(server: &starling::server::Server) {
    assert_eq!(server.broker().stats.writer_stalls(), 0, "the stall guard saw a writer stop with deliveries waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_mqtt_reader_gets_the_whole_burst_and_what_follows() {
    let server = start_memory().await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    for door in MQTT_DOORS {
        for qos in 0..=2u8 {
            let topic = format!("burst/{door:?}/{qos}");
            let mut subscriber = Wire::accepted(door, m, w, &format!("paused-{door:?}-{qos}"), None, None).await;
            assert_eq!(subscriber.subscribe(&topic, qos_of(qos)).await, qos, "{door:?}");
            let mut publisher = Wire::accepted(Door::Tcp5, m, w, "burst-publisher", None, None).await;
            // A warm-up read while it arrives (the kernel's socket buffers
            // grow to a busy reader's size, as a phone's do before it pauses).
            publish_burst(&mut publisher, &topic, qos_of(qos), false, 0..WARM_UP).await;
            assert_eq!(read_mqtt(&mut subscriber, WARM_UP).await, expected(0..WARM_UP), "{door:?} QoS {qos}");
            // Then the subscriber reads nothing while the burst is routed:
            // its socket fills and the broker's writes block.
            publish_burst(&mut publisher, &topic, qos_of(qos), false, WARM_UP..BURST).await;
            assert_eq!(
                read_mqtt(&mut subscriber, BURST - WARM_UP).await,
                expected(WARM_UP..BURST),
                "{door:?} QoS {qos}"
            );
            // And a message published after the burst still arrives.
            publish_burst(&mut publisher, &topic, qos_of(qos), false, BURST..BURST + 1).await;
            assert_eq!(read_mqtt(&mut subscriber, 1).await, vec![BURST], "{door:?} QoS {qos}: the message after");
            settle(&mut subscriber).await;
        }
    }
    no_stalls(&server);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_starling_v1_reader_gets_the_whole_burst_and_what_follows() {
    let server = start_memory().await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    // starling.v1 delivers QoS 0 and 1 (a QoS 2 subscription is served at 1).
    for qos in 0..=2u8 {
        let topic = format!("burst/v1/{qos}");
        let mut subscriber = proto_subscriber(w, &format!("paused-v1-{qos}"), &topic, qos).await;
        let mut publisher = Wire::accepted(Door::Tcp5, m, w, "burst-publisher", None, None).await;
        publish_burst(&mut publisher, &topic, qos_of(qos), false, 0..WARM_UP).await;
        assert_eq!(read_proto(&mut subscriber, WARM_UP).await, expected(0..WARM_UP), "starling.v1 QoS {qos}");
        publish_burst(&mut publisher, &topic, qos_of(qos), false, WARM_UP..BURST).await;
        assert_eq!(
            read_proto(&mut subscriber, BURST - WARM_UP).await,
            expected(WARM_UP..BURST),
            "starling.v1 QoS {qos}"
        );
        publish_burst(&mut publisher, &topic, qos_of(qos), false, BURST..BURST + 1).await;
        assert_eq!(read_proto(&mut subscriber, 1).await, vec![BURST], "starling.v1 QoS {qos}: the message after");
    }
    no_stalls(&server);
    server.shutdown().await.unwrap();
}

/// No pause needed: retained messages larger in all than one write's budget,
/// delivered at SUBSCRIBE to a reader that reads all the time.
#[tokio::test]
async fn a_retained_backlog_larger_than_one_write_arrives_whole() {
    let server = start_memory().await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let mut publisher = Wire::accepted(Door::Tcp5, m, w, "retainer", None, None).await;
    publish_burst(&mut publisher, "ret/*", QoS::AtLeastOnce, true, 0..BURST).await;
    for door in [Door::Tcp311, Door::Ws5] {
        let mut subscriber = Wire::accepted(door, m, w, &format!("retained-{door:?}"), None, None).await;
        assert_eq!(subscriber.subscribe("ret/#", QoS::AtMostOnce).await, 0);
        let mut got = read_mqtt(&mut subscriber, BURST).await;
        got.sort_unstable();
        assert_eq!(got, expected(0..BURST), "{door:?}");
        subscriber.ping_barrier().await;
    }
    let mut app = proto_subscriber(w, "retained-v1", "ret/#", 0).await;
    let mut got = read_proto(&mut app, BURST).await;
    got.sort_unstable();
    assert_eq!(got, expected(0..BURST), "starling.v1");
    no_stalls(&server);
    server.shutdown().await.unwrap();
}
