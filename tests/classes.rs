//! Topic classes end to end (issue 5): history kept, trimmed, fetched and
//! surviving a restart; rate limits and payload limits enforced and reported;
//! 2,000 danmaku viewers with a slow one; sampling and priorities;
//! conflation; retained TTLs; class selection; viewer counts; bad class files.
//! Over MQTT (3.1.1 and 5) and starling.v1 alike where the behaviour exists
//! in both.

mod common;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::*;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, PubAckReason, PublishProperties};
use starling::bench::load::{self, Target, Transport};
use starling::mqtt::packet::{self as mp, ProtocolVersion};
use starling::server::Server;
use starling::store::{SledStore, Store, HISTORY_TRIM_EVERY};
use starling::topic::TopicName;
use starling::wsproto::client::Client as ProtoClient;
use starling::wsproto::pb::{self, frame::Body};
use starling::wsproto::Inbound;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The 2,000-viewer test takes this for writing; tests whose outcome depends
/// on timing (token buckets, sampling windows) take it for reading, so they
/// never run while that test keeps both cores busy.
static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

// ---- helpers -------------------------------------------------------------------

/// A topics directory holding `files` (name, contents).
fn class_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// The shipped topics/*.toml copied next to `extra` files.
fn shipped_plus(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = class_dir(extra);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("topics");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn classes_in(mut config: starling::config::Config, dir: &Path) -> starling::config::Config {
    config.classes.dir = dir.to_path_buf();
    config
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

async fn proto(addr: SocketAddr, id: &str) -> ProtoClient {
    let connect = pb::Connect { client_id: id.into(), clean_start: true, ..Default::default() };
    within("starling.v1 connect", ProtoClient::connect(&ws_url(addr), connect)).await.unwrap().0
}

/// A persistent starling.v1 session (5 minutes).
async fn proto_persistent(addr: SocketAddr, id: &str, clean: bool) -> (ProtoClient, pb::ConnAck) {
    let connect =
        pb::Connect { client_id: id.into(), clean_start: clean, session_expiry_secs: 300, ..Default::default() };
    within("starling.v1 connect", ProtoClient::connect(&ws_url(addr), connect)).await.unwrap()
}

async fn proto_recv(c: &mut ProtoClient) -> Inbound {
    within("a starling.v1 frame", c.recv()).await.unwrap()
}

async fn proto_next_publish(c: &mut ProtoClient) -> pb::Publish {
    within("a Publish over /ws", c.next_publish()).await.unwrap()
}

async fn proto_subscribe(c: &mut ProtoClient, filter: &str, qos: u32) {
    let ack = within("SubAck", c.subscribe(1, &[(filter, qos)])).await.unwrap();
    assert!(ack.results.iter().all(|r| r.code < 0x80), "{ack:?}");
}

/// Publishes with `high_priority` set; QoS 1 waits for the PubAck and returns its code.
async fn proto_publish(c: &mut ProtoClient, topic: &str, payload: &str, qos: u32, high_priority: bool) -> Option<u32> {
    let packet_id = u32::from(qos > 0) * 7;
    let publish = pb::Publish {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        packet_id,
        high_priority,
        ..Default::default()
    };
    c.send(Body::Publish(publish)).await.unwrap();
    if qos == 0 {
        return None;
    }
    loop {
        match proto_recv(c).await {
            Inbound::Frame(Body::PubAck(a)) if a.packet_id == packet_id => return Some(a.reason_code),
            Inbound::Frame(Body::Publish(_)) | Inbound::Heartbeat => {}
            other => panic!("expected PubAck, got {other:?}"),
        }
    }
}

/// Barrier and liveness check: sends a heartbeat and returns every frame that
/// arrived before its echo (which proves the connection is still open).
async fn proto_frames_until_heartbeat(c: &mut ProtoClient) -> Vec<Body> {
    c.heartbeat().await.unwrap();
    let mut frames = Vec::new();
    loop {
        match proto_recv(c).await {
            Inbound::Heartbeat => return frames,
            Inbound::Frame(body) => frames.push(body),
        }
    }
}

async fn proto_history(c: &mut ProtoClient, request_id: u32, topic: &str, after: u64, limit: u32) -> pb::HistoryReply {
    let request =
        pb::HistoryRequest { request_id, topic: topic.into(), after_message_id: after, limit, ..Default::default() };
    c.send(Body::HistoryRequest(request)).await.unwrap();
    loop {
        match proto_recv(c).await {
            Inbound::Frame(Body::HistoryReply(r)) if r.request_id == request_id => return r,
            Inbound::Frame(Body::Publish(_)) | Inbound::Heartbeat => {}
            other => panic!("expected HistoryReply, got {other:?}"),
        }
    }
}

fn text(payload: &[u8]) -> String {
    String::from_utf8(payload.to_vec()).unwrap()
}

/// `GET path` on the WebSocket port: status and JSON body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    within("HTTP response", s.read_to_string(&mut out)).await.unwrap();
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad response {out:?}"));
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_else(|| panic!("no body in {out:?}"));
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}")))
}

/// A v5 publish carrying the user property priority=high.
async fn v5_publish_high(c: &v5::Client, topic: &str, payload: impl Into<Bytes>) {
    let properties =
        PublishProperties { user_properties: vec![("priority".into(), "high".into())], ..Default::default() };
    c.client.publish_with_properties(topic, v5::QoS::AtMostOnce, false, payload.into(), properties).await.unwrap();
}

/// Publishes at QoS 1 and returns the PUBACK's reason (unlike
/// `publish_acked`, which only waits for it).
async fn v5_publish_qos1(c: &mut v5::Client, topic: &str, payload: impl Into<Bytes>) -> PubAckReason {
    c.client.publish(topic, v5::QoS::AtLeastOnce, false, payload.into()).await.unwrap();
    v5_next_puback(c).await
}

async fn v5_next_puback(c: &mut v5::Client) -> PubAckReason {
    let mut set_aside = Vec::new();
    let reason = c
        .next_matching("PUBACK", |p| match p {
            v5::Packet::PubAck(a) => Some(a.reason),
            other => {
                set_aside.push(other.clone());
                None
            }
        })
        .await;
    c.backlog.extend(set_aside);
    reason
}

/// Next PUBLISH payload of a v5 client as text.
async fn v5_next_text(c: &mut v5::Client) -> String {
    text(&c.next_publish().await.payload)
}

/// How many a token bucket of `rate` per second and `burst` lets through
/// in `elapsed`: the burst, plus what refilled meanwhile (normally nothing:
/// the tests send their bursts in a few milliseconds).
fn bucket_allows(burst: usize, rate: f64, elapsed: std::time::Duration) -> usize {
    burst + (rate * elapsed.as_secs_f64()).floor() as usize
}

/// VmRSS of this process (the broker runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// ---- history ---------------------------------------------------------------------

const ROOM_CLASS: &str = r#"
name = "room"
patterns = ["room/{id}"]
default_qos = 1
max_qos = 1

[persistence]
mode = "history"
history_messages = 5
"#;
const KEEP: usize = 5;

#[tokio::test]
async fn history_is_kept_trimmed_and_fetched_over_starling_v1_and_http() {
    let topics = class_dir(&[("room.toml", ROOM_CLASS)]);
    let server = start(classes_in(memory_config(), topics.path())).await;
    let mut publisher = v5::connect(server.mqtt_addr(), "writer").await;
    for i in 0..40 {
        publisher.publish_acked("room/a", false, format!("m{i}")).await;
    }
    let mut reader = proto(server.ws_addr(), "reader").await;

    // limit 0: the class's history_messages, the newest, oldest first.
    let all = proto_history(&mut reader, 1, "room/a", 0, 0).await;
    assert_eq!((all.reason_code, all.topic.as_str()), (0, "room/a"));
    let payloads: Vec<String> = all.messages.iter().map(|m| text(&m.payload)).collect();
    assert_eq!(payloads, ["m35", "m36", "m37", "m38", "m39"]);
    assert!(all.messages.windows(2).all(|w| w[0].message_id < w[1].message_id), "oldest first, ids increase");
    assert!(all.messages.iter().all(|m| m.topic == "room/a" && m.timestamp_ms > 0 && m.packet_id == 0));
    let ids: Vec<u64> = all.messages.iter().map(|m| m.message_id).collect();

    // A limit above the class's never returns more than it keeps.
    let many = proto_history(&mut reader, 2, "room/a", 0, 1000).await;
    assert_eq!(many.messages.len(), KEEP);
    // limit: the newest ones.
    let two = proto_history(&mut reader, 3, "room/a", 0, 2).await;
    assert_eq!(two.messages.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids[3..]);
    // after_message_id: only newer ones (a member catching up).
    let after = proto_history(&mut reader, 4, "room/a", ids[1], 0).await;
    assert_eq!(after.messages.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids[2..]);
    let both = proto_history(&mut reader, 5, "room/a", ids[1], 2).await;
    assert_eq!(both.messages.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids[3..]);
    let nothing_newer = proto_history(&mut reader, 6, "room/a", ids[4], 0).await;
    assert_eq!((nothing_newer.reason_code, nothing_newer.messages.len()), (0, 0));
    // A room nobody wrote to has an empty history, not an error.
    let empty = proto_history(&mut reader, 7, "room/quiet", 0, 0).await;
    assert_eq!((empty.reason_code, empty.messages.len()), (0, 0));
    // Topics whose class keeps no history (here: no class at all) say 0x83.
    let none = proto_history(&mut reader, 8, "plain/topic", 0, 0).await;
    assert_eq!((none.reason_code, none.messages.len()), (0x83, 0));
    let invalid = proto_history(&mut reader, 9, "room/+", 0, 0).await;
    assert_eq!(invalid.reason_code, 0x90);

    // The same over HTTP.
    let ws = server.ws_addr();
    let (status, body) = http_get(ws, "/api/v1/history?topic=room%2Fa").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topic"], "room/a");
    let http_ids: Vec<u64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(http_ids, ids);
    assert_eq!(body["messages"][0]["payload"], "m35");
    assert_eq!(body["messages"][0]["qos"], 1);
    let (status, body) = http_get(ws, &format!("/api/v1/history?topic=room/a&after={}&limit=2", ids[1])).await;
    assert_eq!(status, 200, "{body}");
    let payloads: Vec<&str> =
        body["messages"].as_array().unwrap().iter().map(|m| m["payload"].as_str().unwrap()).collect();
    assert_eq!(payloads, ["m38", "m39"]);
    let (status, body) = http_get(ws, "/api/v1/history?topic=room/a&limit=1000").await;
    assert_eq!((status, body["messages"].as_array().unwrap().len()), (200, KEEP));
    let (status, body) = http_get(ws, "/api/v1/history?topic=plain/topic").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("plain/topic"), "{body}");
    let (status, _) = http_get(ws, "/api/v1/history?topic=room/a&limit=many").await;
    assert_eq!(status, 400);
    let (status, _) = http_get(ws, "/api/v1/history").await;
    assert_eq!(status, 400);

    // A member joining live still gets new messages, and they enter the history.
    proto_subscribe(&mut reader, "room/a", 1).await;
    publisher.publish_acked("room/a", false, "live").await;
    let live = proto_next_publish(&mut reader).await;
    assert_eq!(live.payload, "live");
    reader.ack(live.packet_id).await.unwrap();
    let latest = proto_history(&mut reader, 10, "room/a", ids[4], 0).await;
    assert_eq!(latest.messages.iter().map(|m| m.message_id).collect::<Vec<_>>(), [live.message_id]);
    server.shutdown().await.unwrap();
}

/// The stored history of a topic stays within `keep + HISTORY_TRIM_EVERY`
/// (trimming is amortised), also when several rooms are written at once,
/// and what a graceful restart brings back is what was served before.
#[tokio::test]
async fn history_is_trimmed_in_the_store_and_survives_a_restart() {
    let topics = class_dir(&[("room.toml", ROOM_CLASS)]);
    let data = tempfile::tempdir().unwrap();
    let rooms = ["room/a", "room/b", "room/c"];
    let server = start(classes_in(sled_config(data.path()), topics.path())).await;
    let mut publisher = v5::connect(server.mqtt_addr(), "writer").await;
    // room/a alone, then room/b and room/c taking turns (as busy rooms do).
    for i in 0..60 {
        publisher.publish_acked("room/a", false, format!("a{i}")).await;
    }
    for i in 0..60 {
        publisher.publish_acked("room/b", false, format!("b{i}")).await;
        publisher.publish_acked("room/c", false, format!("c{i}")).await;
    }
    let mut reader = proto(server.ws_addr(), "reader").await;
    let mut before = Vec::new();
    for (n, room) in rooms.iter().enumerate() {
        let reply = proto_history(&mut reader, n as u32, room, 0, 0).await;
        let expected: Vec<String> = (55..60).map(|i| format!("{}{i}", &room[5..])).collect();
        assert_eq!(reply.messages.iter().map(|m| text(&m.payload)).collect::<Vec<_>>(), expected, "{room}");
        before.push(reply.messages);
    }
    drop(reader);
    publisher.disconnect().await;
    server.shutdown().await.unwrap();

    {
        let store = tokio::task::spawn_blocking({
            let dir = data.path().to_path_buf();
            move || SledStore::open(&dir).unwrap()
        })
        .await
        .unwrap();
        for room in rooms {
            let kept = store.load_history(room, 0, usize::MAX, 0).unwrap().len();
            let bound = KEEP + HISTORY_TRIM_EVERY as usize;
            assert!((KEEP..=bound).contains(&kept), "{room}: {kept} messages stored, at most {bound} allowed");
        }
    }

    let server = start(classes_in(sled_config(data.path()), topics.path())).await;
    let mut reader = proto(server.ws_addr(), "reader").await;
    for (n, room) in rooms.iter().enumerate() {
        let reply = proto_history(&mut reader, n as u32, room, 0, 0).await;
        assert_eq!(reply.messages, before[n], "{room} after the restart");
    }
    let (status, body) = http_get(server.ws_addr(), "/api/v1/history?topic=room/b").await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"][4]["payload"], "b59");
    // New messages get ids above the restored ones.
    let mut publisher = v5::connect(server.mqtt_addr(), "writer").await;
    publisher.publish_acked("room/a", false, "after restart").await;
    let newest = proto_history(&mut reader, 9, "room/a", before[0][4].message_id, 0).await;
    assert_eq!(newest.messages.iter().map(|m| text(&m.payload)).collect::<Vec<_>>(), ["after restart"]);
    server.shutdown().await.unwrap();
}

// ---- rate limits -------------------------------------------------------------------

#[tokio::test]
async fn danmaku_rate_limit_disconnects_a_v5_qos0_sender_with_0x96() {
    let _timing = HEAVY.read().await;
    let server = start(with_classes(memory_config())).await;
    let addr = server.mqtt_addr();
    let mut viewer = v5::connect(addr, "viewer").await;
    viewer.subscribe("live/r1/danmaku", v5::QoS::AtMostOnce).await;
    let mut spammer = v5::connect(addr, "spammer").await;
    // Burst 5 at 2 a second: the sixth in a row is over the limit.
    let started = std::time::Instant::now();
    for i in 0..10 {
        spammer.client.publish("live/r1/danmaku", v5::QoS::AtMostOnce, false, format!("spam{i}")).await.unwrap();
    }
    let disconnect = spammer.disconnected().await.expect("a DISCONNECT before the close");
    let allowed = bucket_allows(5, 2.0, started.elapsed());
    assert_eq!(disconnect.reason_code, DisconnectReasonCode::MessageRateTooHigh);
    // The burst got through, nothing after it; other senders are not affected.
    let other = v5::connect(addr, "other").await;
    other.client.publish("live/r1/danmaku", v5::QoS::AtMostOnce, false, "hello").await.unwrap();
    let mut got = Vec::new();
    loop {
        let t = v5_next_text(&mut viewer).await;
        if t == "hello" {
            break;
        }
        got.push(t);
    }
    // The first refusal ends the connection: what came before it got through.
    assert!(got.len() >= 5 && got.len() <= allowed, "{got:?}");
    assert_eq!(got, (0..got.len()).map(|i| format!("spam{i}")).collect::<Vec<_>>());
    let (_shed, refused) = server.broker().class_counters();
    assert_eq!(refused, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn danmaku_rate_limit_is_an_error_frame_over_starling_v1_and_the_connection_stays() {
    let _timing = HEAVY.read().await;
    let server = start(with_classes(memory_config())).await;
    let mut viewer = proto(server.ws_addr(), "viewer").await;
    proto_subscribe(&mut viewer, "live/r1/danmaku", 0).await;
    let mut spammer = proto(server.ws_addr(), "spammer").await;
    let started = std::time::Instant::now();
    for i in 0..8 {
        spammer.publish("live/r1/danmaku", format!("spam{i}"), 0, 0).await.unwrap();
    }
    // QoS 1 over the limit: the PubAck says 0x96.
    spammer.publish("live/r1/danmaku", "spam-qos1", 1, 9).await.unwrap();
    let mut frames = proto_frames_until_heartbeat(&mut spammer).await;
    let allowed = bucket_allows(5, 2.0, started.elapsed());
    match frames.pop() {
        Some(Body::PubAck(ack)) => assert_eq!((ack.packet_id, ack.reason_code), (9, 0x96)),
        other => panic!("expected the PubAck last, got {other:?}"),
    }
    // One Error per refused QoS 0 publish; the heartbeat's echo shows the connection is open.
    let accepted = 8 - frames.len();
    assert!(accepted >= 5 && accepted <= allowed, "{} accepted of 8: {frames:?}", accepted);
    for frame in &frames {
        match frame {
            Body::Error(e) => {
                assert_eq!(e.code, 0x96, "{}", e.message);
                assert!(e.message.contains("rate"), "{}", e.message);
            }
            other => panic!("expected Error frames only, got {other:?}"),
        }
    }
    // The connection still works both ways.
    proto_subscribe(&mut spammer, "live/r1/danmaku", 0).await;
    let mut got = Vec::new();
    for _ in 0..accepted {
        got.push(text(&proto_next_publish(&mut viewer).await.payload));
    }
    assert_eq!(got[..5], (0..5).map(|i| format!("spam{i}")).collect::<Vec<_>>());
    let mut other = proto(server.ws_addr(), "other").await;
    other.publish("live/r1/danmaku", "hello", 0, 0).await.unwrap();
    assert_eq!(proto_next_publish(&mut viewer).await.payload, "hello", "nothing else from the spammer");
    assert_eq!(proto_next_publish(&mut spammer).await.payload, "hello", "the limited client still receives");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn chat_rate_limit_refuses_qos1_with_puback_0x97_while_others_flow() {
    let _timing = HEAVY.read().await;
    let server = start(with_classes(memory_config())).await;
    let addr = server.mqtt_addr();
    let mut member = v5::connect(addr, "member").await;
    member.subscribe("chat/lobby", v5::QoS::AtLeastOnce).await;
    let mut chatty = v5::connect(addr, "chatty").await;
    // 10 a second, burst 20: 40 at once cannot all pass.
    let started = std::time::Instant::now();
    for i in 0..40 {
        chatty.client.publish("chat/lobby", v5::QoS::AtLeastOnce, false, format!("c{i}")).await.unwrap();
    }
    let mut reasons = Vec::new();
    for _ in 0..40 {
        reasons.push(v5_next_puback(&mut chatty).await);
    }
    let allowed = bucket_allows(20, 10.0, started.elapsed());
    let accepted = reasons.iter().filter(|r| **r == PubAckReason::Success).count();
    let refused = reasons.iter().filter(|r| **r == PubAckReason::QuotaExceeded).count();
    assert_eq!(accepted + refused, 40, "{reasons:?}");
    assert!(accepted >= 20 && accepted <= allowed && refused >= 1, "{reasons:?}");
    assert_eq!(reasons[..20], [PubAckReason::Success; 20], "the burst passes");
    // Another member is not limited by chatty's bucket.
    let mut polite = v5::connect(addr, "polite").await;
    assert_eq!(v5_publish_qos1(&mut polite, "chat/lobby", "from polite").await, PubAckReason::Success);
    let mut got = Vec::new();
    loop {
        let t = v5_next_text(&mut member).await;
        if t == "from polite" {
            break;
        }
        got.push(t);
    }
    assert_eq!(got.len(), accepted, "exactly the accepted messages arrive: {got:?}");
    let expected: Vec<String> = reasons
        .iter()
        .enumerate()
        .filter(|(_, r)| **r == PubAckReason::Success)
        .map(|(i, _)| format!("c{i}"))
        .collect();
    assert_eq!(got, expected, "in order");
    // Refused is not disconnected: chatty still receives.
    chatty.subscribe("chat/lobby", v5::QoS::AtLeastOnce).await;
    polite.publish_acked("chat/lobby", false, "again").await;
    assert_eq!(v5_next_text(&mut chatty).await, "again");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn gifts_and_high_priority_messages_are_not_rate_limited() {
    let _timing = HEAVY.read().await;
    let server = start(with_jwt(with_classes(memory_config()))).await;
    let addr = server.mqtt_addr();
    let mut viewer = v5::connect(addr, "viewer").await;
    viewer.subscribe("live/r1/#", v5::QoS::AtMostOnce).await;
    let mut proto_viewer = proto(server.ws_addr(), "proto-viewer").await;
    proto_subscribe(&mut proto_viewer, "live/r1/#", 0).await;

    // live/{room}/gift is high priority by its class (published only by the
    // "server" role): 30 at once all pass.
    let mut gifts = v5::connect_token(addr, "gift-server", &token(json!({"sub": "app", "roles": ["server"]}))).await;
    for i in 0..30 {
        gifts.client.publish("live/r1/gift", v5::QoS::AtMostOnce, false, format!("gift{i}")).await.unwrap();
    }
    // A single message may ask for high priority too, over both protocols.
    for i in 0..10 {
        v5_publish_high(&gifts, "live/r1/danmaku", format!("notice{i}")).await;
    }
    let connect = pb::Connect {
        client_id: "app-server".into(),
        clean_start: true,
        token: token(json!({"sub": "app", "roles": ["server"]})),
        ..Default::default()
    };
    let mut app =
        within("starling.v1 connect", ProtoClient::connect(&ws_url(server.ws_addr()), connect)).await.unwrap().0;
    for i in 0..10 {
        proto_publish(&mut app, "live/r1/danmaku", &format!("tip{i}"), 0, true).await;
    }
    assert!(proto_frames_until_heartbeat(&mut app).await.is_empty(), "no Error for high-priority publishes");
    // Still connected: a QoS 1 publish is acknowledged (delivered at the class's QoS 0).
    gifts.publish_acked("live/r1/gift", false, "last gift").await;

    let mut expected: Vec<String> = (0..30).map(|i| format!("gift{i}")).collect();
    expected.extend((0..10).map(|i| format!("notice{i}")));
    expected.push("last gift".into());
    let mut from_mqtt = Vec::new();
    let mut from_proto = Vec::new();
    for _ in 0..expected.len() + 10 {
        from_mqtt.push(v5_next_text(&mut viewer).await);
        from_proto.push(text(&proto_next_publish(&mut proto_viewer).await.payload));
    }
    let mut all = expected.clone();
    all.extend((0..10).map(|i| format!("tip{i}")));
    all.sort();
    from_mqtt.sort();
    from_proto.sort();
    assert_eq!(from_mqtt, all);
    assert_eq!(from_proto, all);
    assert_eq!(server.broker().class_counters(), (0, 0), "nothing shed or refused");
    server.shutdown().await.unwrap();
}

// ---- maximum payload -------------------------------------------------------------------

#[tokio::test]
async fn danmaku_max_payload_is_0x95_over_mqtt5_and_starling_v1() {
    let server = start(with_classes(memory_config())).await;
    let addr = server.mqtt_addr();
    let mut viewer = v5::connect(addr, "viewer").await;
    viewer.subscribe("live/r1/danmaku", v5::QoS::AtMostOnce).await;

    let mut big = v5::connect(addr, "big-mqtt").await;
    big.client.publish("live/r1/danmaku", v5::QoS::AtMostOnce, false, vec![b'a'; 512]).await.unwrap();
    big.client.publish("live/r1/danmaku", v5::QoS::AtMostOnce, false, vec![b'b'; 513]).await.unwrap();
    let disconnect = big.disconnected().await.expect("a DISCONNECT before the close");
    assert_eq!(disconnect.reason_code, DisconnectReasonCode::PacketTooLarge);
    assert_eq!(viewer.next_publish().await.payload.len(), 512, "512 bytes is the limit, not over it");

    // QoS 1: the PUBACK refuses it (0x97, the closest PUBACK code), the connection stays.
    let mut big_qos1 = v5::connect(addr, "big-mqtt-qos1").await;
    assert_eq!(v5_publish_qos1(&mut big_qos1, "live/r1/danmaku", vec![b'c'; 600]).await, PubAckReason::QuotaExceeded);

    let mut c = proto(server.ws_addr(), "big-proto").await;
    c.publish("live/r1/danmaku", vec![b'd'; 513], 0, 0).await.unwrap();
    let frames = proto_frames_until_heartbeat(&mut c).await;
    match &frames[..] {
        [Body::Error(e)] => assert_eq!(e.code, 0x95, "{}", e.message),
        other => panic!("expected one Error frame, got {other:?}"),
    }
    assert_eq!(proto_publish(&mut c, "live/r1/danmaku", &"e".repeat(513), 1, false).await, Some(0x95));
    // The limit does not close the connection, and fitting messages still go out.
    c.publish("live/r1/danmaku", "fits", 0, 0).await.unwrap();
    assert!(proto_frames_until_heartbeat(&mut c).await.is_empty());
    assert_eq!(v5_next_text(&mut viewer).await, "fits", "nothing oversized arrived before it");
    let (_, refused) = server.broker().class_counters();
    assert_eq!(refused, 4);
    server.shutdown().await.unwrap();
}

// ---- 2,000 viewers and a slow one ---------------------------------------------------------

const SHOW_CLASS: &str = r#"
# Like the shipped danmaku class, without the rate limit and sampling, so
# that one publisher can push thousands of comments.
name = "show"
patterns = ["show/{room}/danmaku"]
default_qos = 0
max_qos = 0
max_payload_bytes = 1024

[outbox]
policy = "drop_oldest"
capacity = 256
"#;
const SHOW_CAPACITY: usize = 256;

/// Counts complete PUBLISH packets at the front of `buf`; returns (bytes, publishes).
fn count_publishes(buf: &[u8]) -> (usize, u64) {
    let (mut pos, mut publishes) = (0, 0);
    loop {
        let rest = &buf[pos..];
        if rest.len() < 2 {
            break;
        }
        let (mut len, mut used) = (0usize, 0);
        for (i, b) in rest[1..].iter().take(4).enumerate() {
            len |= usize::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                used = i + 1;
                break;
            }
        }
        if used == 0 || rest.len() < 1 + used + len {
            break;
        }
        if rest[0] >> 4 == 3 {
            publishes += 1;
        }
        pos += 1 + used + len;
    }
    (pos, publishes)
}

fn publish_packet(topic: &str, payload: Bytes) -> mp::Packet {
    mp::Packet::Publish(mp::Publish {
        dup: false,
        qos: mp::QoS::AtMostOnce,
        retain: false,
        topic: topic.into(),
        packet_id: 0,
        payload,
        properties: Default::default(),
    })
}

/// A viewer that reads as fast as it can and counts what arrives.
async fn fast_reader(mut stream: impl AsyncRead + Unpin, mine: Arc<AtomicU64>) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (bytes, publishes) = count_publishes(&buf);
        buf.advance(bytes);
        mine.fetch_add(publishes, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_viewers_and_a_stalled_one_memory_stays_bounded() {
    const FAST: usize = 1999;
    const BATCH: usize = 100;
    const PAYLOAD: usize = 400;
    const FILL_MESSAGES: usize = 96;
    const WARM_UP: usize = 500;
    const MIN_SENT: usize = 2000;
    let _alone = HEAVY.write().await;
    // Two sockets per viewer in this one process (client and broker side).
    let fds = starling::bench::stats::raise_fd_limit();
    assert!(fds >= 4 * FAST as u64 + 1000, "open-file limit {fds} is too low for 2,000 viewers");
    let topics = class_dir(&[("show.toml", SHOW_CLASS)]);
    let server = start(classes_in(memory_config(), topics.path())).await;
    let addr = server.mqtt_addr();
    let target = Target {
        addr,
        transport: Transport::Mqtt,
        version: ProtocolVersion::V311,
        keep_alive: 0,
        username: None,
        password: None,
        persistent: false,
        tls: None,
    };
    let topic = "show/big/danmaku";

    // The viewers, connected 64 at a time; each then reads on its own task.
    let connecting = std::time::Instant::now();
    let counts: Arc<Vec<Arc<AtomicU64>>> = Arc::new((0..FAST).map(|_| Arc::new(AtomicU64::new(0))).collect());
    let (ready, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut readers = tokio::task::JoinSet::new();
    for n in 0..FAST {
        let (target, gate, ready, failed, mine) =
            (target.clone(), gate.clone(), ready.clone(), failed.clone(), counts[n].clone());
        readers.spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let stream = async {
                let mut s = load::mqtt_connect(&target, None, &format!("viewer{n}")).await?;
                load::mqtt_subscribe(&mut s, ProtocolVersion::V311, topic, mp::QoS::AtMostOnce).await?;
                Ok::<_, String>(s)
            }
            .await;
            drop(permit);
            match stream {
                Ok(stream) => {
                    ready.fetch_add(1, Ordering::SeqCst);
                    fast_reader(stream, mine).await;
                }
                Err(e) => {
                    eprintln!("viewer{n}: {e}");
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    wait_until("2,000 viewers connected and subscribed", || {
        ready.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) == FAST
    })
    .await;
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    let connected_in = connecting.elapsed();

    // The slow one: a tiny receive buffer, subscribes, then never reads again.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    let mut out = BytesMut::new();
    let connect = mp::Connect { keep_alive: 0, ..raw::connect_packet(ProtocolVersion::V311, "slow") };
    starling::mqtt::encode::encode(&mp::Packet::Connect(Box::new(connect)), ProtocolVersion::V311, &mut out);
    slow.write_all(&out).await.unwrap();
    let mut connack = [0u8; 4];
    within("CONNACK", slow.read_exact(&mut connack)).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    for filter in [topic, "slow/fill"] {
        within("SUBACK", load::mqtt_subscribe(&mut slow, ProtocolVersion::V311, filter, mp::QoS::AtMostOnce))
            .await
            .unwrap();
    }
    let slow_session = server.broker().session("slow").expect("the slow viewer's session");
    assert_eq!(server.broker().session_count(), FAST + 1);

    // Loopback sockets buffer megabytes (the broker's send buffer grows to
    // tcp_wmem's maximum whatever the reader's receive buffer): fill the slow
    // viewer's socket first through a topic only it follows, so the room's
    // comments overflow its outbox within a few hundred.
    let mut publisher = load::mqtt_connect(&target, None, "publisher").await.unwrap();
    let fill = (0..FILL_MESSAGES).fold(BytesMut::new(), |mut out, _| {
        let publish = publish_packet("slow/fill", Bytes::from(vec![b'f'; 64 * 1024]));
        starling::mqtt::encode::encode(&publish, ProtocolVersion::V311, &mut out);
        out
    });
    publisher.write_all(&fill).await.unwrap();
    drop(fill);

    let started = std::time::Instant::now();
    let (mut sent, mut max_queued) = (0usize, 0usize);
    let (mut rss_warm, mut rss_peak) = (0, 0);
    // Batches small enough for every fast viewer's outbox; keep going until
    // the slow viewer has overflowed its outbox several times over.
    while sent < MIN_SENT || slow_session.dropped() < 4 * SHOW_CAPACITY as u64 {
        assert!(sent < 20_000, "the slow viewer never filled its outbox ({} dropped)", slow_session.dropped());
        let mut batch = BytesMut::new();
        for i in sent..sent + BATCH {
            let mut payload = BytesMut::with_capacity(PAYLOAD);
            payload.put_slice(format!("{i:08}").as_bytes());
            payload.resize(PAYLOAD, b'.');
            starling::mqtt::encode::encode(&publish_packet(topic, payload.freeze()), ProtocolVersion::V311, &mut batch);
        }
        publisher.write_all(&batch).await.unwrap();
        sent += BATCH;
        let expected = (FAST * sent) as u64;
        within("every fast viewer to receive every message so far", async {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                if counts.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>() >= expected {
                    return;
                }
            }
        })
        .await;
        let queued = slow_session.queued_len();
        assert!(queued <= SHOW_CAPACITY, "slow outbox {queued} > {SHOW_CAPACITY} after {sent} messages");
        max_queued = max_queued.max(queued);
        if sent == WARM_UP {
            rss_warm = rss_kib();
        }
        rss_peak = rss_peak.max(rss_kib());
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kib();
    for (n, c) in counts.iter().enumerate() {
        assert_eq!(c.load(Ordering::Relaxed), sent as u64, "viewer{n} missed messages");
    }
    assert_eq!(max_queued, SHOW_CAPACITY, "the slow outbox filled up to its capacity and no further");
    assert!(slow_session.dropped() >= 4 * SHOW_CAPACITY as u64);
    assert!(slow_session.is_connected(), "the slow viewer is kept, only its old comments go");
    eprintln!(
        "{FAST} viewers connected in {connected_in:?}; \
         {sent} messages to them in {elapsed:?}; slow viewer: {} queued, {} dropped; \
         RSS after {WARM_UP} messages {} MiB, peak {} MiB, at the end {} MiB",
        slow_session.queued_len(),
        slow_session.dropped(),
        rss_warm / 1024,
        rss_peak / 1024,
        rss_after / 1024
    );
    // Once every connection has had its share of traffic, more messages do
    // not cost more memory: the slow outbox holds at most 256 (shared)
    // messages and its connection's write buffer one drain batch.
    assert!(rss_peak < rss_warm + 48 * 1024, "RSS grew from {rss_warm} KiB to {rss_peak} KiB");
    assert!(rss_peak < 768 * 1024, "RSS {rss_peak} KiB");
    readers.abort_all();
    drop(slow);
    server.shutdown().await.unwrap();
}

// ---- sampling and priorities ------------------------------------------------------------

const BUSY_CLASS: &str = r#"
name = "busy"
patterns = ["busy/{room}"]
default_qos = 0
max_qos = 1

[outbox]
policy = "drop_oldest"
capacity = 10000

[sampling]
room_messages_per_sec = 50
per_viewer_per_sec = 10

[access]
# Anyone's per-message high-priority flag is honoured in this test class.
high_priority = ["*"]
"#;

#[tokio::test]
async fn busy_room_is_sampled_and_high_priority_messages_all_arrive() {
    const TICKS: usize = 20;
    const PER_TICK: usize = 20;
    let _timing = HEAVY.read().await;
    let topics = class_dir(&[("busy.toml", BUSY_CLASS)]);
    let server = start(classes_in(memory_config(), topics.path())).await;
    let addr = server.mqtt_addr();
    let mut mqtt_viewer = v5::connect(addr, "mqtt-viewer").await;
    mqtt_viewer.subscribe("busy/r", v5::QoS::AtMostOnce).await;
    let mut proto_viewer = proto(server.ws_addr(), "proto-viewer").await;
    proto_subscribe(&mut proto_viewer, "busy/r", 0).await;
    let publisher = v5::connect(addr, "publisher").await;
    let mut app = proto(server.ws_addr(), "app").await;

    // 400 normal messages at about 200 a second, with one high-priority
    // notice per tick; the app server adds tips (high priority, QoS 1).
    let t0 = starling::clock::now_ms();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut high = Vec::new();
    for t in 0..TICKS {
        tick.tick().await;
        for i in 0..PER_TICK {
            let n = t * PER_TICK + i;
            publisher.client.publish("busy/r", v5::QoS::AtMostOnce, false, format!("n{n}")).await.unwrap();
        }
        v5_publish_high(&publisher, "busy/r", format!("h{t}")).await;
        high.push(format!("h{t}"));
        if t % 4 == 0 {
            let tip = format!("tip{t}");
            let code = proto_publish(&mut app, "busy/r", &tip, 1, true).await;
            assert_eq!(code, Some(0), "{tip}");
            high.push(tip);
        }
    }
    // The marker: high priority too, from the publisher whose messages it follows.
    v5_publish_high(&publisher, "busy/r", "end").await;

    let mut mqtt_got = (Vec::new(), Vec::new());
    loop {
        let t = v5_next_text(&mut mqtt_viewer).await;
        match t.as_str() {
            "end" => break,
            _ if t.starts_with('n') => mqtt_got.0.push(t),
            _ => mqtt_got.1.push(t),
        }
    }
    let mut proto_got = (Vec::new(), Vec::new());
    loop {
        let t = text(&proto_next_publish(&mut proto_viewer).await.payload);
        match t.as_str() {
            "end" => break,
            _ if t.starts_with('n') => proto_got.0.push(t),
            _ => proto_got.1.push(t),
        }
    }
    let elapsed_ms = starling::clock::now_ms() - t0;

    let offered = (TICKS * PER_TICK) as u64;
    let (shed, refused) = server.broker().class_counters();
    let passed = mqtt_got.0.len();
    // The first window passes up to the room limit before the rate is known;
    // every later window at most per_viewer_per_sec.
    let bound = 50 + 10 * (elapsed_ms / 1000) as usize;
    assert!(passed <= bound, "{passed} normal messages in {elapsed_ms} ms, the sampler promises at most {bound}");
    assert!(passed >= 10 && shed > 0, "passed {passed}, shed {shed}");
    assert_eq!(shed + passed as u64, offered, "every normal message is either delivered or counted as shed");
    assert_eq!(refused, 0);
    // Sampling is per room: both viewers see the same messages, in order.
    assert_eq!(mqtt_got.0, proto_got.0);
    let numbers: Vec<usize> = mqtt_got.0.iter().map(|t| t[1..].parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    // High priority: never sampled, never shed.
    let (mut mqtt_high, mut proto_high) = (mqtt_got.1, proto_got.1);
    high.sort();
    mqtt_high.sort();
    proto_high.sort();
    assert_eq!(mqtt_high, high);
    assert_eq!(proto_high, high);
    server.shutdown().await.unwrap();
}

// ---- conflation ----------------------------------------------------------------------------

#[tokio::test]
async fn stalled_location_subscriber_resumes_with_only_the_newest_position_per_vehicle() {
    let server = start(with_classes(memory_config())).await;
    let (addr, ws) = (server.mqtt_addr(), server.ws_addr());
    let filter = "fleet/c1/+/location";
    let mut tracker = v4::connect(addr, "tracker", false).await;
    tracker.subscribe(filter, v4::QoS::AtLeastOnce).await;
    tracker.disconnect().await;
    let (mut ws_tracker, _) = proto_persistent(ws, "ws-tracker", true).await;
    proto_subscribe(&mut ws_tracker, filter, 1).await;
    ws_tracker.disconnect().await.unwrap();
    for id in ["tracker", "ws-tracker"] {
        wait_until("the tracker offline", || server.broker().session(id).is_some_and(|s| !s.is_connected())).await;
    }

    let vehicles = ["v1", "v2", "v3"];
    let mut fleet = v4::connect(addr, "fleet", true).await;
    for round in 0..20 {
        for v in vehicles {
            fleet.publish_acked(&format!("fleet/c1/{v}/location"), false, format!("{v}@{round}")).await;
        }
    }
    for id in ["tracker", "ws-tracker"] {
        assert_eq!(server.broker().session(id).unwrap().queued_len(), 3, "{id}: one pending message per vehicle");
    }
    let newest: Vec<String> = vehicles.iter().map(|v| format!("{v}@19")).collect();

    let (mut tracker, ack) = v4::connect_with({
        let mut o = v4::options(addr, "tracker");
        o.set_clean_session(false);
        o
    })
    .await;
    assert!(ack.session_present);
    let mut got: Vec<String> = Vec::new();
    for _ in 0..3 {
        let p = tracker.next_publish().await;
        assert_eq!(p.qos, v4::QoS::AtLeastOnce);
        got.push(text(&p.payload));
    }
    got.sort();
    assert_eq!(got, newest);

    let (mut ws_tracker, ack) = proto_persistent(ws, "ws-tracker", false).await;
    assert!(ack.session_present);
    let mut got: Vec<String> = Vec::new();
    for _ in 0..3 {
        let p = proto_next_publish(&mut ws_tracker).await;
        ws_tracker.ack(p.packet_id).await.unwrap();
        got.push(text(&p.payload));
    }
    got.sort();
    assert_eq!(got, newest);

    // Barrier: the next message is a new one; nothing else was pending.
    fleet.publish_acked("fleet/c1/v9/location", false, "marker").await;
    assert_eq!(tracker.next_publish().await.payload, "marker");
    assert_eq!(proto_next_publish(&mut ws_tracker).await.payload, "marker");
    // Positions are kept as retained: a new subscriber sees every vehicle at once.
    let mut map = v5::connect(addr, "map").await;
    map.subscribe(filter, v5::QoS::AtMostOnce).await;
    let mut current = Vec::new();
    for _ in 0..4 {
        let p = map.next_publish().await;
        assert!(p.retain);
        current.push(text(&p.payload));
    }
    current.sort();
    assert_eq!(current, ["marker", "v1@19", "v2@19", "v3@19"]);
    server.shutdown().await.unwrap();
}

// ---- retained TTL --------------------------------------------------------------------------

const SHORT_TTL_CLASS: &str = r#"
name = "vehicles"
patterns = ["fleet/{city}/{vehicle}/location"]
default_qos = 0
max_qos = 1

[persistence]
mode = "retained"
retained_ttl_secs = 1

[outbox]
policy = "conflate"
capacity = 100
"#;

#[tokio::test]
async fn a_vehicle_that_stops_reporting_disappears_after_the_ttl() {
    let topics = class_dir(&[("vehicles.toml", SHORT_TTL_CLASS)]);
    let server = start(classes_in(memory_config(), topics.path())).await;
    let (addr, ws) = (server.mqtt_addr(), server.ws_addr());
    let filter = "fleet/c1/+/location";
    let mut car = v5::connect(addr, "car").await;
    // Published without the retain flag: the class keeps it.
    car.publish_acked("fleet/c1/car1/location", false, "52.5,13.4").await;
    assert_eq!(server.broker().retained_count(), 1);
    let mut early = v5::connect(addr, "early").await;
    early.subscribe(filter, v5::QoS::AtMostOnce).await;
    let p = early.next_publish().await;
    assert!(p.retain);
    assert_eq!(p.payload, "52.5,13.4");
    let expiry = p.properties.as_ref().and_then(|p| p.message_expiry_interval);
    assert!(expiry.is_some_and(|s| s <= 1), "MQTT 5 sees the TTL as message expiry: {expiry:?}");
    let mut early_ws = proto(ws, "early-ws").await;
    proto_subscribe(&mut early_ws, filter, 0).await;
    let p = proto_next_publish(&mut early_ws).await;
    assert!(p.retain);
    assert_eq!(p.payload, "52.5,13.4");

    // The behaviour under test is time passing.
    let_time_pass(Duration::from_millis(1500)).await;

    let mut late = v5::connect(addr, "late").await;
    late.subscribe(filter, v5::QoS::AtMostOnce).await;
    late.subscribe("markers", v5::QoS::AtMostOnce).await;
    let mut late_ws = proto(ws, "late-ws").await;
    proto_subscribe(&mut late_ws, filter, 0).await;
    proto_subscribe(&mut late_ws, "markers", 0).await;
    car.publish_acked("markers", false, "marker").await;
    assert_eq!(late.next_publish().await.payload, "marker", "the expired position was not delivered");
    assert_eq!(proto_next_publish(&mut late_ws).await.payload, "marker", "the expired position was not delivered");
    wait_until("the sweeper to drop the expired position", || server.broker().retained_count() == 0).await;

    // A vehicle that reports again is back.
    car.publish_acked("fleet/c1/car1/location", false, "52.6,13.5").await;
    assert_eq!(late.next_publish().await.payload, "52.6,13.5");
    assert_eq!(server.broker().retained_count(), 1);
    server.shutdown().await.unwrap();
}

// ---- class selection -----------------------------------------------------------------------

const SUPPORT_CLASS: &str = r#"
# A help desk room: no history, small messages; more specific than chat/{room}.
name = "support"
patterns = ["chat/support"]
default_qos = 1
max_qos = 1
max_payload_bytes = 64

[persistence]
mode = "none"
"#;

#[tokio::test]
async fn the_most_specific_pattern_chooses_the_class_and_unmatched_topics_are_plain_mqtt() {
    let _timing = HEAVY.read().await;
    let topics = shipped_plus(&[("support.toml", SUPPORT_CLASS)]);
    let server = start(classes_in(memory_config(), topics.path())).await;
    let broker = server.broker();
    let class_of = |t: &str| broker.classes().classify(&TopicName::new(t).unwrap()).map(|c| c.class.name.clone());
    assert_eq!(class_of("chat/support").as_deref(), Some("support"));
    assert_eq!(class_of("chat/lobby").as_deref(), Some("chat"));
    assert_eq!(class_of("dm/ann/bob").as_deref(), Some("chat"));
    assert_eq!(class_of("live/r1/danmaku").as_deref(), Some("danmaku"));
    assert_eq!(class_of("fleet/c1/v1/location").as_deref(), Some("location"));
    assert_eq!(class_of("chat/a/b"), None);
    assert_eq!(class_of("chat"), None);
    assert_eq!(class_of("live/r1/danmaku/extra"), None);

    let addr = server.mqtt_addr();
    let mut member = v5::connect(addr, "member").await;
    assert_eq!(v5_publish_qos1(&mut member, "chat/support", "help").await, PubAckReason::NoMatchingSubscribers);
    assert_eq!(v5_publish_qos1(&mut member, "chat/lobby", "hi").await, PubAckReason::NoMatchingSubscribers);
    // History only where the chosen class keeps it.
    let mut c = proto(server.ws_addr(), "reader").await;
    let lobby = proto_history(&mut c, 1, "chat/lobby", 0, 0).await;
    assert_eq!(lobby.messages.iter().map(|m| text(&m.payload)).collect::<Vec<_>>(), ["hi"]);
    assert_eq!(proto_history(&mut c, 2, "chat/support", 0, 0).await.reason_code, 0x83);
    assert_eq!(proto_history(&mut c, 3, "chat/a/b", 0, 0).await.reason_code, 0x83);
    assert_eq!(http_get(server.ws_addr(), "/api/v1/history?topic=chat/support").await.0, 404);
    assert_eq!(http_get(server.ws_addr(), "/api/v1/history?topic=chat/lobby").await.0, 200);
    // The support class's payload limit applies there and only there.
    let long = "x".repeat(100);
    assert_eq!(v5_publish_qos1(&mut member, "chat/support", long.clone()).await, PubAckReason::QuotaExceeded);
    assert_eq!(v5_publish_qos1(&mut member, "chat/lobby", long.clone()).await, PubAckReason::NoMatchingSubscribers);
    assert_eq!(proto_publish(&mut c, "chat/support", &long, 1, false).await, Some(0x95));

    // chat/a/b matches no pattern: plain MQTT, no rate limit, QoS 2 kept,
    // while chat/{room} caps at QoS 1.
    let mut sub = v5::connect(addr, "sub").await;
    sub.subscribe("chat/#", v5::QoS::ExactlyOnce).await;
    let mut plain = v5::connect(addr, "plain").await;
    for i in 0..30 {
        plain.client.publish("chat/a/b", v5::QoS::AtLeastOnce, false, format!("p{i}")).await.unwrap();
    }
    for _ in 0..30 {
        assert_eq!(v5_next_puback(&mut plain).await, PubAckReason::Success, "plain topics have no rate limit");
    }
    for i in 0..30 {
        let p = sub.next_publish().await;
        assert_eq!((text(&p.payload), p.qos), (format!("p{i}"), v5::QoS::AtLeastOnce));
    }
    plain.client.publish("chat/a/b", v5::QoS::ExactlyOnce, false, "q2").await.unwrap();
    let p = sub.next_publish().await;
    assert_eq!((text(&p.payload), p.qos), ("q2".to_string(), v5::QoS::ExactlyOnce));
    plain.client.publish("chat/lobby", v5::QoS::ExactlyOnce, false, "capped").await.unwrap();
    let p = sub.next_publish().await;
    assert_eq!((text(&p.payload), p.qos), ("capped".to_string(), v5::QoS::AtLeastOnce));
    server.shutdown().await.unwrap();
}

// ---- viewer counts ---------------------------------------------------------------------------

async fn wait_for_count(watcher: &mut v5::Client, value: &str) {
    let what = format!("$SYS/viewers/live/r1/danmaku = {value:?}");
    watcher
        .next_matching(&what, |p| match p {
            v5::Packet::Publish(p) if p.topic == "$SYS/viewers/live/r1/danmaku" && p.payload == value => Some(()),
            _ => None,
        })
        .await;
}

#[tokio::test]
async fn live_room_viewer_counts_on_sys_topic_and_http() {
    let server = start(with_classes(memory_config())).await;
    let (addr, ws) = (server.mqtt_addr(), server.ws_addr());
    let mut watcher = v5::connect(addr, "watcher").await;
    watcher.subscribe("$SYS/viewers/live/r1/danmaku", v5::QoS::AtMostOnce).await;
    let mut a = v5::connect(addr, "a").await;
    a.subscribe("live/r1/danmaku", v5::QoS::AtMostOnce).await;
    let mut b = v4::connect(addr, "b", true).await;
    b.subscribe("live/r1/danmaku", v4::QoS::AtMostOnce).await;
    let mut c = proto(ws, "c").await;
    proto_subscribe(&mut c, "live/r1/danmaku", 0).await;
    // Other rooms, wildcards and the watcher itself are not counted.
    let mut elsewhere = v5::connect(addr, "elsewhere").await;
    elsewhere.subscribe("live/r2/danmaku", v5::QoS::AtMostOnce).await;
    elsewhere.subscribe("live/+/danmaku", v5::QoS::AtMostOnce).await;

    wait_for_count(&mut watcher, "3").await;
    let (status, body) = http_get(ws, "/api/v1/viewers?topic=live/r1/danmaku").await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({ "topic": "live/r1/danmaku", "viewers": 3 }));
    assert_eq!(http_get(ws, "/api/v1/viewers?topic=live%2Fr2%2Fdanmaku").await.1["viewers"], 1);
    // The count is retained: a late watcher gets it at once.
    let mut late = v5::connect(addr, "late").await;
    late.subscribe("$SYS/viewers/live/r1/danmaku", v5::QoS::AtMostOnce).await;
    let p = late.next_publish().await;
    assert!(p.retain);
    assert_eq!(p.payload, "3");

    // Leaving: an unsubscribe (starling.v1) and a disconnect (MQTT).
    c.send(Body::Unsubscribe(pb::Unsubscribe { request_id: 2, filters: vec!["live/r1/danmaku".into()] }))
        .await
        .unwrap();
    match proto_recv(&mut c).await {
        Inbound::Frame(Body::UnsubAck(ack)) => assert_eq!(ack.codes, [0]),
        other => panic!("expected UnsubAck, got {other:?}"),
    }
    wait_for_count(&mut watcher, "2").await;
    assert_eq!(http_get(ws, "/api/v1/viewers?topic=live/r1/danmaku").await.1["viewers"], 2);
    b.disconnect().await;
    wait_for_count(&mut watcher, "1").await;
    assert_eq!(server.broker().viewer_count("live/r1/danmaku"), 1);
    a.client.unsubscribe("live/r1/danmaku").await.unwrap();
    // The last viewer gone: the retained count is cleared (an empty payload).
    wait_for_count(&mut watcher, "").await;
    assert_eq!(http_get(ws, "/api/v1/viewers?topic=live/r1/danmaku").await.1["viewers"], 0);
    server.shutdown().await.unwrap();
}

// ---- bad class files -------------------------------------------------------------------------

const BAD_BURST: &str = r#"
name = "bad"
patterns = ["live/{room}/bad"]
[rate_limit]
messages_per_sec = 2
burst = 0
"#;

#[tokio::test]
async fn bad_class_files_stop_the_start_naming_file_and_key() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("bad.toml", BAD_BURST, &["rate_limit.burst"]),
        ("typo.toml", "name = \"t\"\npatterns = [\"t/{x}\"]\nmax_payload = 10\n", &["max_payload"]),
        ("wild.toml", "name = \"w\"\npatterns = [\"w/+/x\"]\n", &["patterns[0]"]),
        ("qos.toml", "name = \"q\"\npatterns = [\"q/{x}\"]\ndefault_qos = 2\nmax_qos = 1\n", &["default_qos"]),
        (
            "history.toml",
            "name = \"h\"\npatterns = [\"h/{x}\"]\n[persistence]\nmode = \"history\"\nretained_ttl_secs = 5\n",
            &["persistence.retained_ttl_secs"],
        ),
    ];
    for (file, contents, keys) in cases {
        let topics = class_dir(&[(file, contents)]);
        let error = match Server::start(classes_in(memory_config(), topics.path())).await {
            Ok(server) => {
                server.shutdown().await.unwrap();
                panic!("{file} was accepted");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains(file), "{file}: {error}");
        for key in *keys {
            assert!(error.contains(key), "{file}: {key} not named in {error}");
        }
    }
    // Two classes claiming the same topics are ambiguous: both files named.
    let topics = shipped_plus(&[("mine.toml", "name = \"mine\"\npatterns = [\"chat/{name}\"]\n")]);
    let error = match Server::start(classes_in(memory_config(), topics.path())).await {
        Ok(_) => panic!("an ambiguous pattern was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("mine.toml") && error.contains("chat.toml") && error.contains("patterns"), "{error}");
}

#[tokio::test]
async fn the_binary_exits_non_zero_on_a_bad_class_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("topics")).unwrap();
    std::fs::write(dir.path().join("topics").join("broken.toml"), BAD_BURST).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("serve")
        .args(common::process::EPHEMERAL_LISTENERS)
        .args(["--storage", "memory"])
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output();
    let out = within("the broker to refuse to start", run).await.unwrap();
    assert!(!out.status.success(), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml") && err.contains("rate_limit.burst"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "it must not start listening");
}

/// A starling.v1 subscription that does not state its QoS gets the class's
/// default: chat members get QoS 1 (acknowledged) deliveries without asking.
#[tokio::test]
async fn unstated_subscription_qos_takes_the_class_default() {
    let server = start(with_classes(memory_config())).await;
    let mut c = proto(server.ws_addr(), "member").await;
    let filters = ["chat/lobby", "live/r9/danmaku", "plain/topic", "chat/+"]
        .iter()
        .map(|f| pb::SubscribeFilter { filter: f.to_string(), qos: None })
        .collect();
    c.send(Body::Subscribe(pb::Subscribe { request_id: 7, filters })).await.unwrap();
    let ack = loop {
        if let Inbound::Frame(Body::SubAck(ack)) = proto_recv(&mut c).await {
            break ack;
        }
    };
    // chat: default 1; danmaku: 0; no class: 0; a wildcard filter has no single class: 0.
    assert_eq!(ack.results.iter().map(|r| r.code).collect::<Vec<_>>(), vec![1, 0, 0, 0]);
    server.shutdown().await.unwrap();
}
