//! What the session's unit tests build: a session on a memory store, an
//! attachment, a delivery of a given size and QoS.

use super::{Attachment, Session};
use crate::broker::message::{Delivery, Message};
use crate::model::QoS;
use crate::topic::TopicName;
use std::sync::Arc;

/// A clean session (expiry 0) with room for 100 deliveries.
pub fn session() -> Session {
    session_with_expiry(0)
}

/// A session that expires `expiry_secs` after it disconnects (persistent
/// when above 0: its QoS 1/2 deliveries are stored).
pub fn session_with_expiry(expiry_secs: u32) -> Session {
    Session::new(Arc::from("c"), None, expiry_secs, 100, Arc::new(crate::store::MemoryStore::new()))
}

pub fn attachment() -> Attachment {
    Attachment {
        transport: crate::auth::Transport::MqttTcp,
        protocol: "3.1.1",
        peer: None,
        keep_alive_secs: 0,
        connected_at_ms: 0,
        identity: None,
    }
}

/// A delivery on topic `t` with `payload_bytes` of payload.
pub fn delivery(payload_bytes: usize, qos: QoS) -> Delivery {
    let message = Message::new(TopicName::new("t").unwrap(), bytes::Bytes::from(vec![0u8; payload_bytes]), qos, false);
    Delivery { message: Arc::new(message), qos, retain: false, subscription_ids: Default::default(), seq: None }
}
