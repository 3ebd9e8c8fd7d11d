//! The application message as it travels through the broker.
//!
//! Owns: [`Message`] (shared by `Arc` between every subscriber it reaches, so
//! the payload is never copied per subscriber), [`Delivery`] (one subscriber's
//! view of it: granted QoS, retain flag, subscription ids) and conversions to
//! and from the stored form. Must never: know about transports or packets.

use crate::model::{QoS, UserProperties};
use crate::store::StoredMessage;
use crate::topic::TopicName;
use bytes::Bytes;
use std::num::NonZeroU64;
use std::sync::Arc;
use thin_vec::ThinVec;

/// Reserved user property keys under which the stored form of a message
/// keeps its verified sender (user name, client id). A client never sets
/// them: the client core drops any a publisher sends.
pub const SENDER_KEY: &str = "$starling/sender";
pub const SENDER_CLIENT_ID_KEY: &str = "$starling/sender_client_id";

/// Whether a user property key is one of the broker's own (`$starling/...`).
pub fn is_reserved_property(key: &str) -> bool {
    key.starts_with("$starling/")
}

/// MQTT 5 properties that travel with a message from publisher to subscribers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Assigned by [`crate::broker::Broker::publish`]: unique on this broker
    /// and increasing (so increasing per topic), also across restarts. The
    /// same message delivered twice carries the same id.
    pub id: u64,
    /// When the broker accepted the message (Unix ms), set with `id`.
    pub timestamp_ms: u64,
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Absolute expiry in Unix milliseconds (MQTT 5 Message Expiry Interval).
    pub expires_at_ms: Option<u64>,
    pub properties: MessageProperties,
    /// Client id of the publisher, for the MQTT 5 No Local option. `None` for
    /// messages the broker itself originates.
    pub publisher: Option<Arc<str>>,
    /// The publisher's user name as the broker authenticated it (`None`:
    /// anonymous, or the broker's own): the verified sender that
    /// starling.v1 deliveries carry and a class with `stamp_sender` adds to
    /// MQTT 5 deliveries. Never taken from the publisher.
    pub sender: Option<Arc<str>>,
    /// Who is rate limited for it: the authenticated user (`user:NAME`) or,
    /// for anonymous clients, the source address (`ip:ADDR`), so a new client
    /// id does not get a fresh allowance. `None`: the publisher's client id
    /// (bridges, the broker's own messages).
    pub rate_key: Option<Arc<str>>,
    /// Encoded forms shared by every subscriber that receives the message
    /// unchanged ("encode once, write many"). Filled by transports on first
    /// use; opaque to the broker.
    pub wire: WireCache,
    /// How subscriber outboxes treat this message (from its topic class).
    pub handling: Handling,
}

/// What a topic class decides for each of its messages in subscriber outboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handling {
    pub policy: crate::classes::OutboxPolicy,
    /// The class's outbox capacity, if it sets one.
    pub capacity: Option<usize>,
    /// Never sampled, never discarded to make room.
    pub high_priority: bool,
    /// The topic class's index + 1; 0: no class (drop counters by class).
    pub class: u16,
}

/// Lazily encoded frames of one message, one slot per wire format.
#[derive(Debug, Clone, Default)]
pub struct WireCache {
    slots: [std::sync::OnceLock<Bytes>; WireCache::SLOTS],
}

impl WireCache {
    pub const SLOTS: usize = 2;

    /// The frame in `slot`, encoding it with `encode` the first time.
    pub fn get_or_encode(&self, slot: usize, encode: impl FnOnce() -> Bytes) -> &Bytes {
        self.slots[slot].get_or_init(encode)
    }
}

/// Every cache is equal: it is derived from the message, not part of it.
impl PartialEq for WireCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for WireCache {}

impl Message {
    /// A message as a transport decoded it; `id` and `timestamp_ms` are
    /// filled in by the broker when it is published.
    pub fn new(topic: TopicName, payload: bytes::Bytes, qos: QoS, retain: bool) -> Message {
        Message {
            id: 0,
            timestamp_ms: 0,
            topic,
            payload,
            qos,
            retain,
            expires_at_ms: None,
            properties: MessageProperties::default(),
            publisher: None,
            sender: None,
            rate_key: None,
            wire: WireCache::default(),
            handling: Handling::default(),
        }
    }

    /// Bytes the message pins wherever it is held (payload and topic): what
    /// the queue and retained quotas and the write budget count.
    pub fn footprint(&self) -> usize {
        self.payload.len() + self.topic.as_str().len()
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Seconds left before expiry, rounded up, for the outgoing Message Expiry
    /// Interval ([MQTT-3.3.2-6]: the receiver sees the remaining lifetime).
    pub fn remaining_expiry_secs(&self, now_ms: u64) -> Option<u32> {
        self.expires_at_ms.map(|at| (at.saturating_sub(now_ms).div_ceil(1000)).min(u32::MAX as u64) as u32)
    }

    pub fn to_stored(&self) -> StoredMessage {
        StoredMessage {
            id: self.id,
            timestamp_ms: self.timestamp_ms,
            topic: self.topic.as_str().to_string(),
            payload: self.payload.to_vec(),
            qos: self.qos,
            retain: self.retain,
            expires_at_ms: self.expires_at_ms,
            payload_format_indicator: self.properties.payload_format_indicator,
            content_type: self.properties.content_type.clone(),
            response_topic: self.properties.response_topic.clone(),
            correlation_data: self.properties.correlation_data.as_ref().map(|b| b.to_vec()),
            user_properties: self.stored_user_properties(),
        }
    }

    /// The user properties as stored (and sent to other nodes): the
    /// publisher's, then the verified sender under reserved keys, so a
    /// message read back or routed elsewhere still says who sent it.
    fn stored_user_properties(&self) -> UserProperties {
        let mut properties = self.properties.user_properties.clone();
        if let Some(user) = &self.sender {
            properties.push((SENDER_KEY.to_string(), user.to_string()));
        }
        if let Some(client_id) = &self.publisher {
            properties.push((SENDER_CLIENT_ID_KEY.to_string(), client_id.to_string()));
        }
        properties
    }

    /// Rebuilds a message read from the store. A topic that no longer
    /// validates means the record is corrupt: the caller skips it and logs.
    pub fn from_stored(mut stored: StoredMessage) -> Result<Message, crate::topic::TopicError> {
        let (mut sender, mut publisher) = (None, None);
        stored.user_properties.retain(|(key, value)| match key.as_str() {
            SENDER_KEY => {
                sender = Some(Arc::from(value.as_str()));
                false
            }
            SENDER_CLIENT_ID_KEY => {
                publisher = Some(Arc::from(value.as_str()));
                false
            }
            _ => true,
        });
        Ok(Message {
            id: stored.id,
            timestamp_ms: stored.timestamp_ms,
            topic: TopicName::new(&stored.topic)?,
            payload: Bytes::from(stored.payload),
            qos: stored.qos,
            retain: stored.retain,
            expires_at_ms: stored.expires_at_ms,
            properties: MessageProperties {
                payload_format_indicator: stored.payload_format_indicator,
                content_type: stored.content_type,
                response_topic: stored.response_topic,
                correlation_data: stored.correlation_data.map(Bytes::from),
                user_properties: stored.user_properties,
            },
            publisher,
            sender,
            rate_key: None,
            wire: WireCache::default(),
            handling: Handling::default(),
        })
    }
}

impl super::outbox::OutboxItem for Delivery {
    fn policy(&self) -> crate::classes::OutboxPolicy {
        self.message.handling.policy
    }
    fn capacity(&self) -> Option<usize> {
        self.message.handling.capacity
    }
    fn high_priority(&self) -> bool {
        self.message.handling.high_priority
    }
    fn conflates_with(&self, other: &Self) -> bool {
        self.message.topic == other.message.topic
    }
    fn size(&self) -> usize {
        self.message.footprint()
    }
}

/// One subscriber's copy of a message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(publish QoS, subscription QoS).
    pub qos: QoS,
    /// Retain flag as sent (retain-as-published applied; always set for
    /// retained messages sent because of a new subscription).
    pub retain: bool,
    /// A `ThinVec` (one word; no allocation when empty, as almost always):
    /// a delivery is copied into every subscriber's outbox ring, and at
    /// fan-out those rings' cache misses are the broker's largest cost
    /// (docs/performance.md). 32 bytes a delivery instead of 56.
    pub subscription_ids: ThinVec<u32>,
    /// Key of the stored copy when the session is persistent and QoS > 0
    /// (from 1, so `None` costs no extra word).
    pub seq: Option<NonZeroU64>,
}
