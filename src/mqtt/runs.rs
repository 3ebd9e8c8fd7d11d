//! Runs of plain QoS 0 PUBLISH packets: a client's consecutive messages to
//! one topic that arrived in one read are published together
//! ([`Client::publish_run`]), so the broker routes them in one pass and
//! each subscriber's session is locked once for the run
//! (docs/performance.md, "Routing runs").
//!
//! Owns: recognising a run in the read buffer (a peek at the next packet's
//! header, pure, so it is unit-tested), taking it, and answering its
//! results as the one-by-one path would.
//! Must never: take a packet that the one-by-one path would treat
//! differently (QoS 1/2, retain, properties, another topic), or change the
//! order of a client's packets.

use super::decode::decode;
use super::packet::{Packet, ProtocolVersion, Publish};
use super::primitives::parse_varint;
use crate::broker::Message;
use crate::client::{Client, Published};
use crate::model::{reason, CloseReason, QoS};
use crate::topic::TopicName;
use bytes::BytesMut;

/// Messages in one run at most: enough to amortise each subscriber's lock
/// and cache misses, few enough that a run's routing stays a short turn.
pub const RUN_MAX: usize = 32;

/// A publish the run path may take: QoS 0, no retain, no properties (so no
/// topic alias, expiry or high priority), a topic in the packet.
pub fn is_plain(publish: &Publish) -> bool {
    publish.qos == QoS::AtMostOnce
        && !publish.retain
        && !publish.topic.is_empty()
        && publish.properties == Default::default()
}

/// Whether the next packet in `buf` is whole and is a plain QoS 0 PUBLISH
/// (no DUP, no retain, no MQTT 5 properties) to exactly `topic`, within
/// `max_packet` bytes. Reads headers only; consumes nothing.
pub fn next_is_plain_publish_to(buf: &[u8], v5: bool, topic: &str, max_packet: usize) -> bool {
    if buf.first() != Some(&0x30) {
        return false;
    }
    let Ok(Some((remaining, len_bytes))) = parse_varint(&buf[1..]) else { return false };
    let (remaining, header) = (remaining as usize, 1 + len_bytes);
    if header + remaining > buf.len() || header + remaining > max_packet {
        return false;
    }
    let body = &buf[header..header + remaining];
    let Some(name_len) = body.get(..2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
        return false;
    };
    if body.get(2..2 + name_len) != Some(topic.as_bytes()) {
        return false;
    }
    // MQTT 5: a properties length of zero (one byte) must follow.
    !v5 || body.get(2 + name_len) == Some(&0)
}

/// Takes `first` and the plain publishes to its topic that follow it in
/// `buf`, up to [`RUN_MAX`].
pub fn take_run(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet: usize,
    first: Publish,
) -> Result<Vec<Publish>, CloseReason> {
    let mut run = vec![first];
    while run.len() < RUN_MAX && next_is_plain_publish_to(buf, version.is_v5(), &run[0].topic, max_packet) {
        match decode(buf, Some(version), max_packet) {
            Ok(Some(Packet::Publish(publish))) if is_plain(&publish) => run.push(publish),
            // The peek saw a whole plain PUBLISH: the decoder cannot
            // disagree unless one of them is wrong.
            other => {
                tracing::error!(?other, "a PUBLISH the run peek accepted decoded differently");
                return Err(CloseReason::violation(reason::MALFORMED_PACKET, "malformed PUBLISH"));
            }
        }
    }
    Ok(run)
}

/// Publishes a run and answers it as QoS 0 publishes are answered one by
/// one: nothing to a client, except that an MQTT 5 client whose message its
/// topic class refused is disconnected with the reason (0x96, 0x95), and
/// the messages after that one are not published.
pub async fn publish_run(client: &mut Client, run: Vec<Publish>, v5: bool) -> Result<(), CloseReason> {
    let topic =
        TopicName::new(&run[0].topic).map_err(|e| CloseReason::violation(reason::TOPIC_NAME_INVALID, e.to_string()))?;
    let mut messages: Vec<Message> =
        run.into_iter().map(|p| Message::new(topic.clone(), p.payload, QoS::AtMostOnce, false)).collect();
    while !messages.is_empty() {
        let (results, rest) = client.publish_run(messages).await;
        for published in results {
            answer_at_most_once(client, published, v5)?;
        }
        messages = rest;
    }
    Ok(())
}

/// How a QoS 0 publish (alone or in a run) is answered: it has no
/// acknowledgement, so MQTT 5 clients learn of a class refusal from a
/// DISCONNECT (0x96 rate too high, 0x95 too large); 3.1.1 has no way to say
/// it, so the message is dropped and logged. A denied QoS 0 publish is
/// dropped and counted (like Mosquitto): the connection stays.
pub(super) fn answer_at_most_once(client: &Client, published: Published, v5: bool) -> Result<(), CloseReason> {
    match published {
        Published::Refused(refusal) if v5 => Err(CloseReason::violation(refusal.reason_code(), refusal.text())),
        Published::Refused(refusal) => {
            tracing::debug!(client_id = %client.client_id(), ?refusal, "publish refused by its topic class");
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::encode::encode;
    use crate::mqtt::packet::PublishProperties;

    fn publish(topic: &str, qos: QoS, retain: bool, properties: PublishProperties) -> Publish {
        Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { 1 },
            payload: bytes::Bytes::from_static(b"payload"),
            properties,
        }
    }

    fn wire(p: Publish, version: ProtocolVersion) -> BytesMut {
        let mut out = BytesMut::new();
        encode(&Packet::Publish(p), version, &mut out);
        out
    }

    /// The peek says yes exactly when the packet is one the run may take,
    /// checked against the real decoder.
    #[test]
    fn the_peek_agrees_with_the_decoder() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let v5 = version.is_v5();
            let alias = PublishProperties { topic_alias: Some(1), ..Default::default() };
            let cases = [
                (publish("room/1", QoS::AtMostOnce, false, Default::default()), true),
                (publish("room/2", QoS::AtMostOnce, false, Default::default()), false),
                (publish("room/1", QoS::AtLeastOnce, false, Default::default()), false),
                (publish("room/1", QoS::AtMostOnce, true, Default::default()), false),
                (publish("room/1/x", QoS::AtMostOnce, false, Default::default()), false),
                (publish("room/", QoS::AtMostOnce, false, Default::default()), false),
            ];
            for (p, expected) in cases {
                let bytes = wire(p.clone(), version);
                assert_eq!(next_is_plain_publish_to(&bytes, v5, "room/1", 1 << 20), expected, "{p:?} {version:?}");
                // Cut short, or over the packet limit: never.
                assert!(!next_is_plain_publish_to(&bytes[..bytes.len() - 1], v5, "room/1", 1 << 20));
                assert!(!next_is_plain_publish_to(&bytes, v5, "room/1", bytes.len() - 1));
                if expected {
                    let decoded = decode(&mut bytes.clone(), Some(version), 1 << 20).unwrap().unwrap();
                    assert!(matches!(decoded, Packet::Publish(ref d) if is_plain(d)), "{decoded:?}");
                }
            }
            if v5 {
                let bytes = wire(publish("room/1", QoS::AtMostOnce, false, alias), version);
                assert!(!next_is_plain_publish_to(&bytes, v5, "room/1", 1 << 20), "properties present");
            }
        }
    }

    #[test]
    fn a_run_stops_at_the_first_packet_it_may_not_take_and_at_its_size() {
        let version = ProtocolVersion::V5;
        let plain = || publish("room/1", QoS::AtMostOnce, false, Default::default());
        let mut buf = BytesMut::new();
        for _ in 0..3 {
            buf.extend_from_slice(&wire(plain(), version));
        }
        buf.extend_from_slice(&wire(publish("room/1", QoS::AtLeastOnce, false, Default::default()), version));
        buf.extend_from_slice(&wire(plain(), version));
        let run = take_run(&mut buf, version, 1 << 20, plain()).unwrap();
        assert_eq!(run.len(), 4, "the first and the three that follow");
        assert!(
            matches!(decode(&mut buf, Some(version), 1 << 20), Ok(Some(Packet::Publish(p))) if p.qos == QoS::AtLeastOnce)
        );

        let mut buf = BytesMut::new();
        for _ in 0..RUN_MAX + 5 {
            buf.extend_from_slice(&wire(plain(), version));
        }
        assert_eq!(take_run(&mut buf, version, 1 << 20, plain()).unwrap().len(), RUN_MAX);
    }
}
