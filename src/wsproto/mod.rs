//! The starling.v1 WebSocket-Protobuf protocol (`proto/starling.proto`,
//! specified in `docs/protocol.md`).
//!
//! Owns: the generated message types ([`pb`]), the framing rule (one binary
//! WebSocket message = one heartbeat byte or one `Frame`), the server-side
//! [`connection`] and a small [`client`] used by tests and the load tool.
//! Must never: keep session or routing state; like MQTT, it drives the broker
//! core through `Broker` and `Session`.

pub mod client;
pub mod connection;

/// Types generated from `proto/starling.proto` by prost.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/starling.v1.rs"));
}

use bytes::Bytes;
use prost::Message as _;

/// The WebSocket subprotocol of starling.v1 on `/ws`.
pub const SUBPROTOCOL: &str = "starling.v1";

/// The one-byte heartbeat message.
pub const HEARTBEAT: u8 = 0x00;

/// What one binary WebSocket message carries.
// One value per frame, handled at once and never stored: boxing the frame
// would cost an allocation per message to save stack space nobody keeps.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Heartbeat,
    Frame(pb::frame::Body),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("a frame must carry one body (Frame.body is empty)")]
    Empty,
    #[error("a one-byte message must be the heartbeat 0x00, got 0x{0:02X}")]
    BadHeartbeat(u8),
}

/// Decodes one binary WebSocket message.
pub fn decode(data: &[u8]) -> Result<Inbound, FrameError> {
    match data {
        [HEARTBEAT] => Ok(Inbound::Heartbeat),
        [other] => Err(FrameError::BadHeartbeat(*other)),
        _ => {
            let frame = pb::Frame::decode(data).map_err(|e| FrameError::Malformed(e.to_string()))?;
            frame.body.map(Inbound::Frame).ok_or(FrameError::Empty)
        }
    }
}

/// Encodes a frame as the payload of one binary WebSocket message.
pub fn encode(body: pb::frame::Body) -> Bytes {
    Bytes::from(pb::Frame { body: Some(body) }.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_never_collide_with_the_heartbeat() {
        let bodies = vec![
            pb::frame::Body::Connect(pb::Connect { client_id: "a".into(), heartbeat_secs: 20, ..Default::default() }),
            pb::frame::Body::Publish(pb::Publish {
                topic: "t".into(),
                payload: Bytes::from_static(b"x"),
                qos: 1,
                packet_id: 7,
                ..Default::default()
            }),
            // The smallest frame with a body still takes two bytes.
            pb::frame::Body::PubAck(pb::PubAck::default()),
        ];
        for body in bodies {
            let bytes = encode(body.clone());
            assert!(bytes.len() >= 2);
            assert_eq!(decode(&bytes), Ok(Inbound::Frame(body)));
        }
        assert_eq!(decode(&[0]), Ok(Inbound::Heartbeat));
        assert_eq!(decode(&[7]), Err(FrameError::BadHeartbeat(7)));
        assert!(matches!(decode(&[0xFF, 0xFF, 0xFF]), Err(FrameError::Malformed(_))));
        assert_eq!(decode(&[]), Err(FrameError::Empty));
    }
}
