//! The two scenarios of the Eclipse paho MQTT 5 interoperability suite
//! (`client_test5.py`) that starling used to fail, replayed packet for packet
//! by blocking clients against the real binary:
//! - `test_request_response`: the responder subscribes and, without waiting
//!   for its SUBACK, the requester publishes on another connection; the
//!   request must arrive, with its response topic and correlation data.
//! - `test_flow_control2`: a client breaks receive maximum with QoS 2
//!   publishes and answers each PUBREC with PUBREL as it reads; it must read
//!   the DISCONNECT 0x93 that says why, not a reset or a broken pipe.
//!
//! Plus a harsher form of the first: the SUBSCRIBE and the PUBLISH written
//! back to back, microseconds apart, 200 times.
//!
//! The real binary, because the order in which tasks run is a property of
//! the runtime `starling serve` builds (`starling::server::runtime`), not of
//! a test's runtime. Blocking sockets, because the scenarios need two writes
//! on two sockets a few microseconds apart.
//!
//! What is promised, and so tested: events that one poll of the kernel
//! returns are handled in the order the kernel returned them. The ordering
//! tests run the broker with one worker thread, where that promise is the
//! whole story: before the fix (Tokio ran the task woken last first) 198 of
//! 200 back-to-back publishes were missed there. The kernel does not always
//! make two writes microseconds apart readable in the order they were
//! written, so the back-to-back test allows a few misses (see the test). With more workers, two events microseconds apart on
//! different connections could in principle be handled in parallel by two
//! threads and race; docs/architecture.md ("Order across connections") has
//! what was measured.

mod common;

use bytes::{Bytes, BytesMut};
use common::process::BrokerProcess;
use common::WAIT;
use starling::mqtt::decode::decode;
use starling::mqtt::encode::encode;
use starling::mqtt::packet::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A blocking MQTT 5 client that sees every packet, in order.
struct BlockingClient {
    stream: TcpStream,
    buf: BytesMut,
}

fn frame(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(packet, ProtocolVersion::V5, &mut out);
    out.to_vec()
}

impl BlockingClient {
    fn connect(addr: SocketAddr, client_id: &str) -> BlockingClient {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut client = BlockingClient { stream, buf: BytesMut::new() };
        client.send(&Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.to_string(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        })));
        match client.recv() {
            Some(Packet::ConnAck(ack)) if ack.reason_code == 0 => client,
            other => panic!("expected a successful CONNACK, got {other:?}"),
        }
    }

    /// Writes one packet; a write error (reset, broken pipe) fails the test.
    fn send(&mut self, packet: &Packet) {
        self.send_bytes(&frame(packet));
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            panic!("write failed: {e} (the broker reset the connection)");
        }
    }

    /// The next packet, or `None` at an orderly close (FIN). A reset fails the test.
    fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = decode(&mut self.buf, Some(ProtocolVersion::V5), usize::MAX).unwrap() {
                return Some(packet);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read failed: {e} (a reset, or nothing within the wait bound)"),
            }
        }
    }

    fn subscribe(&mut self, packet_id: u16, filter: &str, options: SubscriptionOptions) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![SubscribeFilter { filter: filter.to_string(), options }],
            properties: Default::default(),
        }));
    }
}

fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &'static str, properties: PublishProperties) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_string(),
        packet_id,
        payload: Bytes::from_static(payload.as_bytes()),
        properties,
    })
}

/// paho's `test_request_response`, `rounds` times on fresh connections.
fn request_response(addr: SocketAddr, rounds: u16) {
    let topic = "client_test5/TopicA";
    let no_local = SubscriptionOptions { qos: QoS::ExactlyOnce, no_local: true, ..Default::default() };
    for round in 1..=rounds {
        let mut requester = BlockingClient::connect(addr, "myclientid");
        let mut responder = BlockingClient::connect(addr, "myclientid2");
        requester.subscribe(1, topic, no_local);
        assert!(matches!(requester.recv(), Some(Packet::SubAck(_))), "round {round}: the requester's SUBACK");
        // The responder's SUBACK is not waited for (the suite waits on the
        // requester's callback, which already holds one).
        responder.subscribe(1, topic, no_local);
        let request = PublishProperties {
            response_topic: Some(topic.to_string()),
            correlation_data: Some(Bytes::from_static(b"334")),
            ..Default::default()
        };
        requester.send(&publish(topic, QoS::AtLeastOnce, 2, "request", request));
        let received = loop {
            match responder.recv() {
                Some(Packet::SubAck(_)) => {}
                Some(Packet::Publish(p)) if p.payload.as_ref() == b"request" => break p,
                other => panic!("round {round}: the responder expected the request, got {other:?}"),
            }
        };
        assert_eq!(received.properties.response_topic.as_deref(), Some(topic), "round {round}");
        assert_eq!(received.properties.correlation_data.as_deref(), Some(&b"334"[..]), "round {round}");
        responder.send(&Packet::PubAck(PubResp { packet_id: received.packet_id, ..Default::default() }));
        let reply = PublishProperties { response_topic: None, ..received.properties.clone() };
        responder.send(&publish(topic, QoS::AtLeastOnce, 2, "response", reply));
        loop {
            match requester.recv() {
                Some(Packet::PubAck(_)) => {}
                Some(Packet::Publish(p)) if p.payload.as_ref() == b"response" => break,
                other => panic!("round {round}: the requester expected the response, got {other:?}"),
            }
        }
        requester.send(&Packet::Disconnect(Default::default()));
        responder.send(&Packet::Disconnect(Default::default()));
    }
}

/// paho's `test_flow_control2`: the number of unreleased QoS 2 publishes
/// goes one past the broker's receive maximum.
fn flow_control2(addr: SocketAddr) {
    let mut client = BlockingClient::connect(addr, "myclientid");
    let receive_maximum = 100; // starling's default, announced in CONNACK
    for id in 1..=receive_maximum + 1 {
        client.send(&publish("client_test5/TopicA", QoS::ExactlyOnce, id, "message", Default::default()));
    }
    // The suite's receiver answers each PUBREC with PUBREL while it reads;
    // the broker must let those writes land until the client has read why.
    let mut pubrecs = 0;
    let reason = loop {
        match client.recv() {
            Some(Packet::PubRec(rec)) => {
                pubrecs += 1;
                client.send(&Packet::PubRel(PubResp { packet_id: rec.packet_id, ..Default::default() }));
            }
            Some(Packet::PubComp(_)) => {}
            Some(Packet::Disconnect(d)) => break d.reason_code,
            other => panic!("expected PUBREC or DISCONNECT, got {other:?} after {pubrecs} PUBRECs"),
        }
    };
    assert_eq!(reason, 0x93, "receive maximum exceeded");
    assert_eq!(pubrecs, receive_maximum);
    assert!(client.recv().is_none(), "an orderly close after the DISCONNECT");
}

/// How many of `tries` publishes, written microseconds after another
/// connection's SUBSCRIBE to their topic, the subscriber missed.
fn back_to_back_misses(addr: SocketAddr, tries: u16) -> u32 {
    let mut requester = BlockingClient::connect(addr, "order-requester");
    let mut responder = BlockingClient::connect(addr, "order-responder");
    let mut misses = 0;
    for i in 1..=tries {
        let topic = format!("order/{i}");
        let racing = frame(&publish(&topic, QoS::AtMostOnce, 0, "racing", Default::default()));
        responder.subscribe(i, &topic, Default::default());
        requester.send_bytes(&racing);
        // Once the subscription is certainly in place, a marker on the same
        // topic from the same requester: it is routed after the racing one, so
        // reading up to it tells whether the racing one was delivered (it may
        // even come before the SUBACK).
        let mut delivered = false;
        loop {
            match responder.recv() {
                Some(Packet::SubAck(ack)) if ack.packet_id == i => break,
                Some(Packet::Publish(p)) if p.payload.as_ref() == b"racing" => delivered = true,
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
        requester.send(&publish(&topic, QoS::AtMostOnce, 0, "marker", Default::default()));
        loop {
            match responder.recv() {
                Some(Packet::Publish(p)) if p.payload.as_ref() == b"racing" => delivered = true,
                Some(Packet::Publish(p)) if p.payload.as_ref() == b"marker" => break,
                other => panic!("expected the racing publish or the marker, got {other:?}"),
            }
        }
        misses += u32::from(!delivered);
    }
    misses
}

/// One worker thread: events are handled one at a time, in the order the
/// runtime takes them from the kernel (see the module comment).
const ONE_WORKER: &[(&str, &str)] = &[("TOKIO_WORKER_THREADS", "1")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_request_response_passes_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(dir.path(), ONE_WORKER).await;
    let addr = broker.addr;
    tokio::task::spawn_blocking(move || request_response(addr, 100)).await.unwrap();
    broker.kill_9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_flow_control2_reads_the_reason_not_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    let addr = broker.addr;
    for _ in 0..20 {
        tokio::task::spawn_blocking(move || flow_control2(addr)).await.unwrap();
    }
    broker.kill_9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_written_first_sees_a_publish_written_right_after() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_env(dir.path(), ONE_WORKER).await;
    let addr = broker.addr;
    let tries = 200;
    let misses = tokio::task::spawn_blocking(move || back_to_back_misses(addr, tries)).await.unwrap();
    // Before the fix 198 of 200 were missed here. After it, most runs miss
    // none, but about one in eight (debug build, this 2-vCPU machine, alone
    // or in the suite) misses 4 to 37 in a burst: the later write can become
    // readable before the earlier one (the kernel, not the broker, orders
    // readiness; see docs/architecture.md, "Order across connections").
    // What the fix promises is asserted: the kernel's order is kept for
    // nearly all, which the LIFO order it replaced never did.
    eprintln!("{misses} of {tries} back-to-back publishes missed");
    assert!(
        misses < u32::from(tries) / 4,
        "{misses} of {tries} publishes written right after another connection's SUBSCRIBE were missed"
    );
    broker.kill_9().await;
}
