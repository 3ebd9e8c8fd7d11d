//! `starling fuzz`: a mutation fuzzer for every parser a client or an
//! operator can feed: the MQTT decoder (3.1.1 and 5, CONNECT included), the
//! starling.v1 frame decoder, the HTTP request-head parser, topic names and
//! filters, the configuration and topic-class loaders, and the tus headers
//! of the files endpoint.
//!
//! Owns: seed inputs (valid packets, frames, heads, files made here), a
//! deterministic mutator (bit flips, interesting bytes, insertions,
//! deletions, duplications, splices, length-field tampering), and the
//! property every target must hold: no panic, whatever the input; decoded
//! MQTT packets and frames re-encode without panicking.
//! Must never: touch the network or the disk (but for `--write-corpus`).
//! This fuzzer is not coverage-guided; it runs anywhere in seconds and is in
//! the test command. The coverage-guided one (libFuzzer through cargo-fuzz)
//! lives in `fuzz/` and calls [`check`]; docs/security.md says what each ran
//! and found.

use crate::config::{Config, BUNDLED_CONFIG};
use crate::mqtt::packet::*;
use bytes::{Bytes, BytesMut};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Every target, by name.
pub const TARGETS: &[&str] = &["mqtt", "starling-v1", "http-head", "topic", "config", "classes", "tus"];

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub target: String,
    pub inputs: u64,
    /// Inputs that made a target panic (hex), at most a few.
    pub crashes: Vec<String>,
}

/// Runs `target` on `inputs` mutated inputs from `seed`.
pub fn run(target: &str, inputs: u64, seed: u64) -> Result<Report, String> {
    let seeds =
        seeds(target).ok_or_else(|| format!("unknown fuzz target {target:?}; one of {}", TARGETS.join(", ")))?;
    let mut rng = Rng(seed | 1);
    let mut crashes = Vec::new();
    let mut input = Vec::new();
    for _ in 0..inputs {
        input.clear();
        let base = &seeds[rng.below(seeds.len())];
        input.extend_from_slice(base);
        for _ in 0..=rng.below(4) {
            mutate(&mut input, &seeds, &mut rng);
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| check(target, &input)));
        if outcome.is_err() && crashes.len() < 8 {
            crashes.push(hex(&input));
        }
    }
    Ok(Report { target: target.to_string(), inputs, crashes })
}

/// The property: parsing never panics (and what parses, encodes again).
/// The coverage-guided targets in `fuzz/` call this too, so both fuzzers
/// hold every parser to the same property. Panics on an unknown target.
pub fn check(target: &str, input: &[u8]) {
    match target {
        "mqtt" => {
            for version in [None, Some(ProtocolVersion::V311), Some(ProtocolVersion::V5)] {
                let mut buf = BytesMut::from(input);
                while let Ok(Some(packet)) = crate::mqtt::decode::decode(&mut buf, version, 1 << 20) {
                    let mut out = BytesMut::new();
                    crate::mqtt::encode::encode(&packet, version.unwrap_or(ProtocolVersion::V5), &mut out);
                }
            }
        }
        "starling-v1" => {
            if let Ok(crate::wsproto::Inbound::Frame(body)) = crate::wsproto::decode(input) {
                let _ = crate::wsproto::encode(body);
            }
        }
        "http-head" => {
            let mut buf = BytesMut::from(input);
            if let Ok(Some(request)) = crate::net::http::parse_head(&mut buf) {
                let _ = crate::net::http::check_upgrade(&request, &["mqtt", "starling.v1"]);
                let _ = crate::net::http::check_origin(&request, &[]);
            }
        }
        "topic" => {
            let text = String::from_utf8_lossy(input);
            let _ = crate::topic::TopicName::new(&text);
            if let Ok(parsed) = crate::topic::parse_subscription(&text) {
                let _ = crate::auth::acl::covers(parsed.filter.as_ref(), "a/b/c");
                let _ = crate::auth::acl::overlaps(parsed.filter.as_ref(), "#");
            }
        }
        "config" => {
            if let Ok(text) = std::str::from_utf8(input) {
                let _ = Config::from_toml(text, "fuzz.toml");
            }
        }
        "classes" => {
            if let Ok(text) = std::str::from_utf8(input) {
                let _ = crate::classes::ClassSet::from_sources(&[("fuzz.toml".to_string(), text.to_string())]);
            }
        }
        "tus" => {
            // One header value a line: every parser of `files::tus` reads each.
            use crate::files::tus;
            for line in String::from_utf8_lossy(input).lines() {
                if let Ok(pairs) = tus::parse_metadata(line) {
                    let _ = tus::claimed_sha256(&pairs);
                    let name = tus::metadata_text(&pairs, "filename");
                    let mime = tus::safe_content_type(tus::metadata_text(&pairs, "filetype").as_deref());
                    let _ = tus::content_disposition(name.as_deref(), tus::shown_inline(&mime));
                }
                let _ = tus::parse_checksum(line);
                for length in [0, 1, 1000, u64::MAX] {
                    let _ = tus::parse_range(Some(line), length);
                }
                let _ = tus::content_disposition(Some(line), false);
                let _ = tus::valid_id(line);
            }
        }
        _ => panic!("unknown fuzz target {target:?}; one of {}", TARGETS.join(", ")),
    }
}

/// The seed inputs of `target` (valid inputs made here), or `None` for an
/// unknown target; `starling fuzz --write-corpus` writes them out for the
/// coverage-guided fuzzer.
pub fn seeds(target: &str) -> Option<Vec<Vec<u8>>> {
    Some(match target {
        "mqtt" => mqtt_seeds(),
        "starling-v1" => proto_seeds(),
        "http-head" => vec![
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8083\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: starling.v1\r\nOrigin: http://127.0.0.1:8083\r\n\r\n".to_vec(),
            b"GET /api/v1/history?topic=chat%2Flobby&limit=5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n".to_vec(),
            b"POST / HTTP/1.0\r\n\r\n".to_vec(),
        ],
        "topic" => ["a/b/c", "a/+/c", "#", "+/+", "$SYS/broker/uptime", "$share/g/a/#", "a//b", "/", "\u{1F600}/x"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        "config" => vec![
            BUNDLED_CONFIG.as_bytes().to_vec(),
            b"[auth]\nchain = [\"jwt\"]\n[auth.jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[[acl]]\naction = \"all\"\ntopic = \"dm/%u/#\"\npermission = \"allow\"\n".to_vec(),
        ],
        "classes" => {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topics");
            let mut files: Vec<Vec<u8>> = ["chat.toml", "danmaku.toml", "location.toml"]
                .iter()
                .filter_map(|f| std::fs::read(dir.join(f)).ok())
                .collect();
            files.push(b"name = \"x\"\npatterns = [\"x/{a}\"]\n".to_vec());
            files
        }
        "tus" => vec![
            b"filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential,filetype aW1hZ2UvcG5n".to_vec(),
            b"sha256 n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=,private dHJ1ZQ==".to_vec(),
            b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=\nsha256 n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=".to_vec(),
            b"bytes=0-499\nbytes=-500\nbytes=9500-\nbytes=0-0,-1".to_vec(),
            "0123456789abcdef0123456789abcdef\ncaf\u{e9} \"x\".png".as_bytes().to_vec(),
        ],
        _ => return None,
    })
}

fn mqtt_seeds() -> Vec<Vec<u8>> {
    let mut packets = vec![
        Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V5,
            clean_start: false,
            keep_alive: 30,
            client_id: "c".into(),
            will: Some(LastWill {
                topic: "w".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: WillProperties { will_delay_interval: Some(5), ..Default::default() },
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"p")),
            properties: ConnectProperties { session_expiry_interval: Some(60), ..Default::default() },
        })),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "a/b".into(),
            packet_id: 7,
            payload: Bytes::from_static(b"payload"),
            properties: PublishProperties {
                topic_alias: Some(1),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            },
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![SubscribeFilter { filter: "a/+/#".into(), options: Default::default() }],
            properties: Default::default(),
        }),
        Packet::Unsubscribe(Unsubscribe { packet_id: 4, filters: vec!["a/#".into()], user_properties: vec![] }),
        Packet::PubAck(PubResp { packet_id: 9, reason_code: 0x10, properties: Default::default() }),
        Packet::PingReq,
        Packet::Disconnect(Disconnect { reason_code: 0x04, properties: Default::default() }),
    ];
    let mut out = Vec::new();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for packet in &mut packets {
            if let Packet::Connect(c) = packet {
                c.protocol = version;
            }
            let mut buf = BytesMut::new();
            crate::mqtt::encode::encode(packet, version, &mut buf);
            out.push(buf.to_vec());
        }
    }
    out
}

fn proto_seeds() -> Vec<Vec<u8>> {
    use crate::wsproto::pb::{self, frame::Body};
    let bodies = vec![
        Body::Connect(pb::Connect {
            client_id: "c".into(),
            token: "t".into(),
            heartbeat_secs: 20,
            ..Default::default()
        }),
        Body::Publish(pb::Publish {
            topic: "chat/x".into(),
            payload: Bytes::from_static(b"hi"),
            qos: 1,
            packet_id: 2,
            high_priority: true,
            ..Default::default()
        }),
        Body::Subscribe(pb::Subscribe {
            request_id: 1,
            filters: vec![pb::SubscribeFilter { filter: "a/#".into(), qos: Some(1) }],
        }),
        Body::HistoryRequest(pb::HistoryRequest {
            request_id: 4,
            topic: "chat/x".into(),
            after_message_id: 9,
            limit: 3,
            before_message_id: 0,
        }),
        Body::PubAck(pb::PubAck { packet_id: 2, reason_code: 0 }),
    ];
    let mut out: Vec<Vec<u8>> = bodies.into_iter().map(|b| crate::wsproto::encode(b).to_vec()).collect();
    out.push(vec![0]);
    out
}

/// xorshift64*: deterministic, so a reported crash can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u8] = &[0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, b'/', b'+', b'#', b'$', 0xC0, 0x0A];

fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
    let len = input.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(8);
            for _ in 0..n {
                input.insert(i.min(input.len()), rng.next() as u8);
            }
        }
        3 if len > 1 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            input.drain(start..end);
        }
        4 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(32)).min(len);
            let chunk = input[start..end].to_vec();
            let at = rng.below(input.len() + 1);
            input.splice(at..at, chunk);
        }
        5 => {
            let other = &seeds[rng.below(seeds.len())];
            if !other.is_empty() {
                let start = rng.below(other.len());
                let at = rng.below(input.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[start..]);
            }
        }
        6 if len > 1 => {
            // Tamper with what is likely a length: a varint or a 16-bit field.
            let i = 1 + rng.below(len - 1);
            input[i] = [0x00, 0x7F, 0x80, 0xFF][rng.below(4)];
        }
        _ => input.truncate(rng.below(len + 1)),
    }
    input.truncate(1 << 16);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_target_runs_and_an_unknown_one_is_named() {
        for target in super::TARGETS {
            let report = super::run(target, 200, 1).unwrap();
            assert_eq!(report.inputs, 200);
        }
        assert!(super::run("nope", 1, 1).unwrap_err().contains("mqtt"));
    }
}
