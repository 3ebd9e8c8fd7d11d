//! The neutral vocabulary every layer shares: quality of service,
//! subscription options, wills, reason codes ([`reason`]) and why a
//! connection ended ([`close`]).
//!
//! Owns: plain data types with no behaviour tied to a wire format. MQTT's
//! codec, starling.v1, the broker core and the store all speak these; each
//! transport maps them to its own wire codes in one place.
//! Must never: depend on a transport, the broker or the store.

pub mod close;
pub mod reason;

pub use close::{CloseReason, WillAction};

use bytes::Bytes;

pub type UserProperties = Vec<(String, String)>;

/// Client ids of bridges' local sessions start with this; network clients
/// cannot use it (they would take a bridge's session over).
pub const BRIDGE_CLIENT_ID_PREFIX: &str = "$bridge/";

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    pub will_delay_interval: Option<u32>,
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained on subscribe, 1: only if the subscription is new, 2: never.
    pub retain_handling: u8,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions { qos: QoS::AtMostOnce, no_local: false, retain_as_published: false, retain_handling: 0 }
    }
}
