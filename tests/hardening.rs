//! A careless or hostile client, or a failing disk, must not harm the broker
//! or other clients: acknowledgements never hide a failed write, refusals
//! over MQTT 3.1.1 are not disguised as success, session timers do not pile
//! up, settings cannot make the encoder panic.

mod common;

use common::wire::{Door, Wire};
use common::*;
use starling::config::Config;
use starling::mqtt::packet::{LastWill, Packet, Publish, QoS, WillProperties};
use starling::server::Server;
use starling::store::{MemoryStore, Store, StoreError, StoredDelivery, StoredMessage, StoredSession};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A memory store whose writes fail while `failing` is set (a full or broken disk).
struct FailingStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

impl FailingStore {
    fn new() -> FailingStore {
        FailingStore { inner: MemoryStore::new(), failing: AtomicBool::new(false) }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Io("injected: no space left on device".into()))
        } else {
            Ok(())
        }
    }
}

impl Store for FailingStore {
    fn load_retained(&self) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.load_retained()
    }
    fn set_retained(&self, topic: &str, message: Option<&StoredMessage>) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_retained(topic, message)
    }
    fn load_sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        self.inner.load_sessions()
    }
    fn save_session(&self, session: &StoredSession) -> Result<(), StoreError> {
        self.check()?;
        self.inner.save_session(session)
    }
    fn remove_session(&self, client_id: &str) -> Result<(), StoreError> {
        self.inner.remove_session(client_id)
    }
    fn push_delivery(&self, client_id: &str, delivery: &StoredDelivery) -> Result<(), StoreError> {
        self.check()?;
        self.inner.push_delivery(client_id, delivery)
    }
    fn remove_delivery(&self, client_id: &str, seq: u64) -> Result<(), StoreError> {
        self.inner.remove_delivery(client_id, seq)
    }
    fn load_deliveries(&self, client_id: &str, items: usize, bytes: usize) -> Result<Vec<StoredDelivery>, StoreError> {
        self.inner.load_deliveries(client_id, items, bytes)
    }
    fn append_history(&self, message: &StoredMessage, keep: usize, not_before_ms: u64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append_history(message, keep, not_before_ms)
    }
    fn load_history(
        &self,
        topic: &str,
        after_id: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.load_history(topic, after_id, limit, not_before_ms)
    }
    fn sweep_history(&self, not_before: &dyn Fn(&str) -> Option<u64>) -> Result<usize, StoreError> {
        self.inner.sweep_history(not_before)
    }
    fn history_topics(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.history_topics(prefix, limit)
    }
    fn push_queue_add(&self, seq: u64, event: &[u8]) -> Result<(), StoreError> {
        self.inner.push_queue_add(seq, event)
    }
    fn push_queue_remove(&self, seq: u64) -> Result<(), StoreError> {
        self.inner.push_queue_remove(seq)
    }
    fn push_queue_load(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.push_queue_load()
    }
    fn files_put(&self, key: &str, record: &[u8]) -> Result<(), StoreError> {
        self.inner.files_put(key, record)
    }
    fn files_remove(&self, key: &str) -> Result<(), StoreError> {
        self.inner.files_remove(key)
    }
    fn files_load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.files_load()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

fn publish(topic: &str, packet_id: u16, payload: Vec<u8>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: payload.into(),
        properties: Default::default(),
    })
}

/// After a failing write, MQTT 5 gets PUBACK 0x80 and MQTT 3.1.1 a closed
/// connection without PUBACK; a bystander keeps receiving.
#[tokio::test]
async fn a_failed_store_write_is_never_acknowledged_as_success() {
    let store = Arc::new(FailingStore::new());
    let server = Server::start_with_store(memory_config(), store.clone()).await.unwrap();
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    // An offline persistent subscriber: its QoS 1 copies must be stored.
    let mut persistent = raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V311, "phone");
    persistent.clean_start = false;
    let (mut phone, _) = raw::Raw::connect_with(m, persistent).await;
    phone.send(&raw::subscribe_packet(1, "inbox/#", QoS::AtLeastOnce)).await;
    assert!(matches!(phone.recv().await, Some(Packet::SubAck(_))));
    phone.disconnect().await;
    let mut bystander = Wire::accepted(Door::Tcp5, m, w, "bystander", None, None).await;
    assert_eq!(bystander.subscribe("inbox/#", QoS::AtMostOnce).await, 0);

    store.failing.store(true, Ordering::SeqCst);
    let mut v5 = Wire::accepted(Door::Tcp5, m, w, "pub5", None, None).await;
    assert_eq!(v5.publish("inbox/a", QoS::AtLeastOnce, false, "lost?").await, Some(0x80));
    let mut v3 = Wire::accepted(Door::Tcp311, m, w, "pub3", None, None).await;
    v3.send(&publish("inbox/b", 7, b"lost?".to_vec())).await;
    assert!(v3.recv().await.is_none(), "3.1.1: closed without a PUBACK, so the client sends it again");
    // The bystander got both (delivery is not the store's business) and is still served.
    assert_eq!(bystander.expect_publish().await.payload, "lost?");
    assert_eq!(bystander.expect_publish().await.payload, "lost?");
    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(v5.publish("inbox/c", QoS::AtLeastOnce, false, "kept").await, Some(0x00));
    assert_eq!(bystander.expect_publish().await.payload, "kept");
    server.shutdown().await.unwrap();
}

/// A QoS 1 publish refused by its topic class: MQTT 5 PUBACK 0x97, MQTT
/// 3.1.1 closed (a plain PUBACK would say "accepted").
#[tokio::test]
async fn class_refusals_over_mqtt_311_close_the_connection() {
    let server = start(with_classes(memory_config())).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let big = vec![b'x'; 20_000]; // chat rooms take at most 16 KiB
    let mut v5 = Wire::accepted(Door::Tcp5, m, w, "c5", None, None).await;
    v5.send(&publish("chat/lobby", 3, big.clone())).await;
    match v5.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, 0x97),
        other => panic!("expected PUBACK 0x97, got {other:?}"),
    }
    v5.ping_barrier().await;
    let mut v3 = Wire::accepted(Door::Ws311, m, w, "c3", None, None).await;
    v3.send(&publish("chat/lobby", 4, big)).await;
    assert!(v3.recv().await.is_none());
    server.shutdown().await.unwrap();
}

/// Reconnecting cancels the will-delay and session-expiry timers of the
/// previous disconnect: they do not pile up (each held its will's payload
/// for as long as the delay, up to decades).
#[tokio::test]
async fn reconnecting_cancels_session_timers() {
    let server = start_memory().await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let mut connect = raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V5, "flaky");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    connect.will = Some(LastWill {
        topic: "status/flaky".into(),
        payload: vec![0u8; 60_000].into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties { will_delay_interval: Some(3600), ..Default::default() },
    });
    for _ in 0..20 {
        let (mut c, ack) = raw::Raw::connect_with(m, connect.clone()).await;
        assert_eq!(ack.reason_code, 0);
        c.ping_barrier().await;
        drop(c); // no DISCONNECT: the will is armed, the session starts expiring
        wait_until("the broker to see the connection end", || {
            server.broker().session("flaky").is_some_and(|s| !s.is_connected())
        })
        .await;
        assert!(server.broker().pending_timers() <= 2, "{} timers pending", server.broker().pending_timers());
    }
    let mut last = Wire::accepted(Door::Tcp5, m, w, "other", None, None).await;
    last.ping_barrier().await;
    let (mut c, _) = raw::Raw::connect_with(m, connect).await;
    c.ping_barrier().await;
    wait_until("the timers to be cancelled", || server.broker().pending_timers() == 0).await;
    server.shutdown().await.unwrap();
}

#[test]
fn max_packet_size_leaves_room_to_encode_deliveries() {
    let err = Config::from_toml("[mqtt]\nmax_packet_size = 268435460\n", "x.toml").unwrap_err().to_string();
    assert!(err.contains("mqtt.max_packet_size") && err.contains("267386884"), "{err}");
    assert!(Config::from_toml("[mqtt]\nmax_packet_size = 267386884\n", "x.toml").is_ok());
}

/// A TCP connection from a chosen loopback source address.
async fn connect_from(source: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// CONNECT (3.1.1, keep-alive 30) on `stream`; whether a CONNACK came back.
async fn mqtt_connects(mut stream: tokio::net::TcpStream, id: &str) -> (bool, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = bytes::BytesMut::new();
    let connect = raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V311, id);
    starling::mqtt::encode::encode(
        &Packet::Connect(Box::new(connect)),
        starling::mqtt::packet::ProtocolVersion::V311,
        &mut out,
    );
    if stream.write_all(&out).await.is_err() {
        return (false, stream);
    }
    let mut ack = [0u8; 4];
    let ok = matches!(within("CONNACK or close", stream.read(&mut ack)).await, Ok(4) if ack[0] == 0x20);
    (ok, stream)
}

#[tokio::test]
async fn connections_per_ip_are_limited_and_other_ips_are_not() {
    let mut config = memory_config();
    config.mqtt.max_connections_per_ip = 3;
    config.mqtt.connects_per_ip_per_sec = 0;
    config.mqtt.limit_loopback_peers = true;
    let server = start(config).await;
    let m = server.mqtt_addr();
    let mut open = Vec::new();
    for i in 0..3 {
        let (ok, s) = mqtt_connects(connect_from("127.0.0.1", m).await, &format!("a{i}")).await;
        assert!(ok, "connection {i} from 127.0.0.1");
        open.push(s);
    }
    let (ok, _) = mqtt_connects(connect_from("127.0.0.1", m).await, "a3").await;
    assert!(!ok, "a fourth connection from the same address is closed at accept");
    let (ok, _bystander) = mqtt_connects(connect_from("127.0.0.2", m).await, "b0").await;
    assert!(ok, "another address is not affected");
    drop(open.pop());
    wait_until("the slot to be given back", || server.broker().session("a2").is_none_or(|s| !s.is_connected())).await;
    let (ok, _) = mqtt_connects(connect_from("127.0.0.1", m).await, "a4").await;
    assert!(ok, "a freed slot can be used again");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connect_rate_per_ip_is_limited() {
    let mut config = memory_config();
    config.mqtt.max_connections_per_ip = 0;
    config.mqtt.connects_per_ip_per_sec = 5;
    config.mqtt.limit_loopback_peers = true;
    let server = start(config).await;
    let m = server.mqtt_addr();
    let mut accepted = 0;
    let mut kept = Vec::new();
    for i in 0..20 {
        let (ok, s) = mqtt_connects(connect_from("127.0.0.3", m).await, &format!("r{i}")).await;
        accepted += usize::from(ok);
        kept.push(s);
    }
    assert!((5..20).contains(&accepted), "{accepted} of 20 accepted in a burst with a rate of 5/s");
    let (ok, _) = mqtt_connects(connect_from("127.0.0.4", m).await, "other").await;
    assert!(ok, "another address is not affected");
    server.shutdown().await.unwrap();
}

/// Keep-alive 0 does not mean forever: closed after `idle_timeout_secs` of silence.
#[tokio::test]
async fn keep_alive_zero_still_times_out() {
    let mut config = memory_config();
    config.mqtt.idle_timeout_secs = 1;
    let server = start(config).await;
    let mut connect = raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V5, "silent");
    connect.keep_alive = 0;
    let (mut c, ack) = raw::Raw::connect_with(server.mqtt_addr(), connect).await;
    assert_eq!(ack.reason_code, 0);
    assert_eq!(c.until_closed().await.map(|d| d.reason_code), Some(0x8D));
    server.shutdown().await.unwrap();
}

/// A subscriber that stops reading is closed after `write_timeout_secs`;
/// its write buffer stays bounded meanwhile, and a reading subscriber of the
/// same topic receives everything.
#[tokio::test]
async fn a_reader_that_stops_reading_is_closed_and_others_keep_receiving() {
    let mut config = memory_config();
    config.mqtt.write_timeout_secs = 1;
    let server = start(config).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let mut stalled = raw::Raw::connected(m, starling::mqtt::packet::ProtocolVersion::V311, "stalled").await;
    stalled.send(&raw::subscribe_packet(1, "big/#", QoS::AtMostOnce)).await;
    assert!(matches!(stalled.recv().await, Some(Packet::SubAck(_))));
    let mut reader = Wire::accepted(Door::Tcp5, m, w, "reader", None, None).await;
    assert_eq!(reader.subscribe("big/#", QoS::AtMostOnce).await, 0);
    let mut publisher = Wire::accepted(Door::Tcp5, m, w, "publisher", None, None).await;
    let payload = "x".repeat(900_000);
    for i in 0..40 {
        publisher.publish(&format!("big/{i}"), QoS::AtMostOnce, false, &payload).await;
        // The reader keeps up; `stalled` never reads again.
        assert_eq!(reader.expect_publish().await.topic, format!("big/{i}"));
    }
    wait_until("the stalled reader to be closed", || {
        server.broker().session("stalled").is_none_or(|s| !s.is_connected())
    })
    .await;
    publisher.publish("big/after", QoS::AtMostOnce, false, "small").await;
    assert_eq!(reader.expect_publish().await.payload, "small");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sessions_are_capped_and_a_bystander_keeps_its_own() {
    let mut config = memory_config();
    config.session.max_sessions = 3;
    let server = start(config).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let mut keep = Vec::new();
    for i in 0..3 {
        keep.push(Wire::accepted(Door::Tcp5, m, w, &format!("s{i}"), None, None).await);
    }
    let (_, ack) = Wire::connect(Door::Tcp5, m, w, "one-too-many", None, None).await;
    assert_eq!(ack.reason_code, 0x97);
    let (_, ack) = Wire::connect(Door::Tcp311, m, w, "one-too-many", None, None).await;
    assert_eq!(ack.reason_code, 0x88, "3.1.1 return code 3 (server unavailable) reads back as 0x88");
    // An existing session's client is not a new session: it can take it over.
    Wire::accepted(Door::Tcp5, m, w, "s0", None, None).await.ping_barrier().await;
    keep[1].ping_barrier().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn session_expiry_is_capped_even_for_mqtt_311_and_at_disconnect() {
    let mut config = memory_config();
    config.session.max_session_expiry_secs = 60;
    let server = start(config).await;
    let m = server.mqtt_addr();
    let mut connect = raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V5, "v5");
    connect.properties.session_expiry_interval = Some(u32::MAX);
    let (c, ack) = raw::Raw::connect_with(m, connect).await;
    assert_eq!(ack.properties.session_expiry_interval, Some(60), "CONNACK tells the client the cap");
    c.disconnect().await;
    assert_eq!(server.broker().session("v5").unwrap().expiry_secs(), 60);
    let mut connect = raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V311, "v3");
    connect.clean_start = false;
    let (c, _) = raw::Raw::connect_with(m, connect).await;
    c.disconnect().await;
    assert_eq!(server.broker().session("v3").unwrap().expiry_secs(), 60, "3.1.1 'never' is capped");
    // Raising it at DISCONNECT is capped too.
    let mut connect = raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V5, "raise");
    connect.properties.session_expiry_interval = Some(10);
    let (mut c, _) = raw::Raw::connect_with(m, connect).await;
    let mut bye = starling::mqtt::packet::Disconnect::default();
    bye.properties.session_expiry_interval = Some(1_000_000);
    c.send(&Packet::Disconnect(bye)).await;
    c.until_closed().await;
    wait_until("the disconnect", || server.broker().session("raise").is_some_and(|s| !s.is_connected())).await;
    assert_eq!(server.broker().session("raise").unwrap().expiry_secs(), 60);
    server.shutdown().await.unwrap();
}

/// An offline session's queue is bounded in bytes as well as in messages.
#[tokio::test]
async fn queued_bytes_are_capped_per_session() {
    let mut config = memory_config();
    config.session.max_queued_bytes = 100_000;
    let server = start(config).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let mut connect = raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V311, "offline");
    connect.clean_start = false;
    let (mut c, _) = raw::Raw::connect_with(m, connect).await;
    c.send(&raw::subscribe_packet(1, "bulk/#", QoS::AtLeastOnce)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.disconnect().await;
    let mut online = Wire::accepted(Door::Tcp5, m, w, "online", None, None).await;
    assert_eq!(online.subscribe("bulk/#", QoS::AtMostOnce).await, 0);
    let mut publisher = Wire::accepted(Door::Tcp5, m, w, "publisher", None, None).await;
    let payload = "y".repeat(10_000);
    for i in 0..30 {
        publisher.publish(&format!("bulk/{i}"), QoS::AtLeastOnce, false, &payload).await;
        assert_eq!(online.expect_publish().await.topic, format!("bulk/{i}"));
    }
    let session = server.broker().session("offline").unwrap();
    assert!(session.queued_len() <= 10, "{} queued", session.queued_len());
    assert!(session.queued_bytes() <= 100_000, "{} bytes queued", session.queued_bytes());
    server.shutdown().await.unwrap();
}

/// One SUBSCRIBE with more filters than a client may hold: the first are
/// granted, the rest refused with 0x97; the session is saved once; others
/// keep receiving.
#[tokio::test]
async fn subscriptions_per_client_are_capped() {
    let mut config = memory_config();
    config.session.max_subscriptions_per_client = 100;
    let server = start(config).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let mut bystander = Wire::accepted(Door::Tcp5, m, w, "bystander", None, None).await;
    assert_eq!(bystander.subscribe("news", QoS::AtMostOnce).await, 0);
    for door in [Door::Tcp5, Door::Tcp311] {
        let mut greedy = Wire::accepted(door, m, w, "greedy", None, None).await;
        let filters: Vec<_> = (0..300)
            .map(|i| starling::mqtt::packet::SubscribeFilter {
                filter: format!("many/{i}/#"),
                options: Default::default(),
            })
            .collect();
        greedy
            .send(&Packet::Subscribe(starling::mqtt::packet::Subscribe {
                packet_id: 9,
                filters,
                properties: Default::default(),
            }))
            .await;
        let codes = match greedy.recv().await {
            Some(Packet::SubAck(ack)) => ack.reason_codes,
            other => panic!("expected SUBACK, got {other:?}"),
        };
        let refused = if door.v5() { 0x97 } else { 0x80 };
        assert!(codes[..100].iter().all(|c| *c == 0), "{door:?}");
        assert!(codes[100..].iter().all(|c| *c == refused), "{door:?}");
    }
    let mut publisher = Wire::accepted(Door::Tcp5, m, w, "publisher", None, None).await;
    publisher.publish("news", QoS::AtMostOnce, false, "still here").await;
    assert_eq!(bystander.expect_publish().await.payload, "still here");
    server.shutdown().await.unwrap();
}

/// A restart restores at most one queue's worth of a session's stored
/// messages (the rest stay on disk), instead of loading everything.
#[tokio::test]
async fn restore_loads_at_most_a_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sled_config(dir.path());
    config.session.max_queued_messages = 50;
    {
        // More stored deliveries than the queue holds (as a run with a larger
        // max_queued_messages would have left).
        let store = starling::store::SledStore::open(dir.path()).unwrap();
        store
            .save_session(&StoredSession {
                client_id: "big".into(),
                user: None,
                expiry_secs: 3600,
                disconnected_at_ms: Some(starling::clock::now_ms()),
                subscriptions: vec![],
            })
            .unwrap();
        for seq in 1..=500u64 {
            let message = StoredMessage {
                id: seq,
                timestamp_ms: 0,
                topic: "t".into(),
                payload: b"p".to_vec(),
                qos: QoS::AtLeastOnce,
                retain: false,
                expires_at_ms: None,
                payload_format_indicator: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: vec![],
            };
            store
                .push_delivery(
                    "big",
                    &StoredDelivery { seq, message, qos: QoS::AtLeastOnce, retain: false, subscription_ids: vec![] },
                )
                .unwrap();
        }
        store.flush().unwrap();
    }
    let server = start(config).await;
    assert_eq!(server.broker().session("big").unwrap().queued_len(), 50);
    server.shutdown().await.unwrap();
}

/// New retained topics beyond `[retained] max_messages` / `max_bytes` are
/// refused (MQTT 5 0x97, 3.1.1 closed); replacing and clearing still work.
#[tokio::test]
async fn retained_messages_are_capped() {
    let mut config = memory_config();
    config.retained.max_messages = 3;
    config.retained.max_bytes = 10_000;
    let server = start(config).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let mut p = Wire::accepted(Door::Tcp5, m, w, "p", None, None).await;
    for i in 0..3 {
        assert_eq!(p.publish(&format!("r/{i}"), QoS::AtLeastOnce, true, "v").await, Some(0x10));
    }
    assert_eq!(p.publish("r/3", QoS::AtLeastOnce, true, "v").await, Some(0x97), "a fourth topic");
    assert_eq!(p.publish("r/0", QoS::AtLeastOnce, true, "replaced").await, Some(0x10));
    assert_eq!(p.publish("r/1", QoS::AtLeastOnce, true, &"x".repeat(20_000)).await, Some(0x97), "too many bytes");
    assert_eq!(p.publish("r/2", QoS::AtLeastOnce, true, "").await, Some(0x10), "clearing");
    assert_eq!(p.publish("r/3", QoS::AtLeastOnce, true, "now fits").await, Some(0x10));
    assert_eq!(server.broker().retained_count(), 3);
    let mut v3 = Wire::accepted(Door::Tcp311, m, w, "v3", None, None).await;
    v3.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "r/4".into(),
        packet_id: 1,
        payload: "v".into(),
        properties: Default::default(),
    }))
    .await;
    assert!(v3.recv().await.is_none(), "3.1.1: closed, no PUBACK");
    p.ping_barrier().await;
    server.shutdown().await.unwrap();
}

/// The broker's own `$SYS` topics take no slot of the `[retained]` quota and
/// are never refused by it: with `max_messages = 3` and $SYS every second
/// (25 retained topics of its own), clients still get their three, and only
/// the clients' fourth counts as a limit hit (issue 23).
#[tokio::test]
async fn the_brokers_own_sys_topics_do_not_fill_the_retained_quota() {
    use starling::broker::stats::Limit;
    let mut config = memory_config();
    config.sys.interval_secs = 1;
    config.retained.max_messages = 3;
    config.retained.max_bytes = 10_000;
    let server = start(config).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    wait_until("the $SYS topics are retained", || server.broker().retained_count() > 3).await;
    let mut p = Wire::accepted(Door::Tcp5, m, w, "p", None, None).await;
    for i in 0..3 {
        assert_eq!(p.publish(&format!("r/{i}"), QoS::AtLeastOnce, true, "v").await, Some(0x10), "r/{i}");
    }
    assert_eq!(p.publish("r/3", QoS::AtLeastOnce, true, "v").await, Some(0x97), "a fourth client topic");
    // A later round of $SYS still updates (the uptime changes every second).
    let uptime = |server: &Server| {
        let topic = starling::topic::TopicName::new("$SYS/broker/uptime").unwrap();
        server.broker().retained_message(&topic).map(|m| m.payload.clone())
    };
    let first = uptime(&server);
    wait_until("$SYS/broker/uptime is updated", || uptime(&server) != first).await;
    let hits = server.broker().stats.limit_hits()[Limit::RetainedMessages as usize];
    assert_eq!(hits, 1, "only the client's fourth topic was refused");
    server.shutdown().await.unwrap();
}

/// Class rate limits key on the user, or the source address when anonymous:
/// a new client id does not get a fresh allowance.
#[tokio::test]
async fn rate_limits_follow_the_sender_not_the_client_id() {
    let mut config = with_jwt(with_classes(memory_config()));
    config.mqtt.limit_loopback_peers = true; // this test's clients are all on 127.0.0.1
    let server = start(config).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    // live/{room}/danmaku: 2 a second, bursts of 5, per sender.
    let mut a = Wire::accepted(Door::Tcp5, m, w, "anon-a", None, None).await;
    let mut refused_at = None;
    for i in 0..8 {
        let code = a.publish("live/r/danmaku", QoS::AtLeastOnce, false, "hi").await;
        if code == Some(0x97) {
            refused_at = Some(i);
            break;
        }
    }
    assert!(refused_at.is_some_and(|i| i >= 5), "the burst of 5 passes, then refused: {refused_at:?}");
    drop(a);
    // Same address, new client id: still over the limit.
    let mut b = Wire::accepted(Door::Tcp5, m, w, "anon-b", None, None).await;
    assert_eq!(b.publish("live/r/danmaku", QoS::AtLeastOnce, false, "again").await, Some(0x97));
    // An authenticated user has a bucket of their own, whatever the address.
    let alice = token(json!({"sub": "alice"}));
    let mut c = Wire::accepted(Door::Tcp5, m, w, "alice-1", Some(""), Some(&alice)).await;
    assert_eq!(c.publish("live/r/danmaku", QoS::AtLeastOnce, false, "mine").await, Some(0x10));
    server.shutdown().await.unwrap();
}

/// A client that breaks receive maximum while it keeps sending still reads
/// the DISCONNECT 0x93 that says why (lingering close), instead of a reset
/// (paho's test_flow_control2).
#[tokio::test]
async fn the_reason_reaches_a_client_that_keeps_sending() {
    use starling::mqtt::packet::ProtocolVersion::V5;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_memory().await;
    let (c, ack) = raw::Raw::connect_with(server.mqtt_addr(), raw::connect_packet(V5, "flood")).await;
    assert_eq!(ack.reason_code, 0);
    let mut burst = bytes::BytesMut::new();
    for id in 1..=150u16 {
        // QoS 2 publishes never released: the 101st breaks receive maximum (100).
        let p = raw::publish_packet("flood/q2", QoS::ExactlyOnce, id, "x");
        starling::mqtt::encode::encode(&Packet::Publish(p), V5, &mut burst);
    }
    for _ in 0..400 {
        let p = raw::publish_packet("flood/q0", QoS::AtMostOnce, 0, &"y".repeat(1000));
        starling::mqtt::encode::encode(&Packet::Publish(p), V5, &mut burst);
    }
    let (mut read, mut write) = c.stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&burst).await;
        write
    });
    let mut buf = bytes::BytesMut::new();
    let mut reason = None;
    within("the DISCONNECT", async {
        loop {
            while let Ok(Some(p)) = starling::mqtt::decode::decode(&mut buf, Some(V5), usize::MAX) {
                if let Packet::Disconnect(d) = p {
                    reason = Some(d.reason_code);
                }
            }
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    drop(writer.await);
    assert_eq!(reason, Some(0x93));
    server.shutdown().await.unwrap();
}
