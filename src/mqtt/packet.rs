//! MQTT control packets as plain data, one model for 3.1.1 and 5.0.
//!
//! Owns: the in-memory shape of every packet. A 3.1.1 packet is a 5.0 packet
//! whose properties are empty and whose reason codes are mapped by the encoder.
//! Must never: do I/O or know about sessions; validation of topic names and
//! filters happens in `crate::topic`, not here.

pub use crate::model::{LastWill, QoS, SubscriptionOptions, UserProperties, WillProperties};
use bytes::Bytes;

/// Protocol level announced in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3): treated like 3.1.1.
    V31,
    /// MQTT 3.1.1 (level 4).
    V311,
    /// MQTT 5.0 (level 5).
    V5,
}

impl ProtocolVersion {
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 only.
    Auth(Auth),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<LastWill>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<u8>,
    pub request_problem_information: Option<u8>,
    pub user_properties: UserProperties,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
}

/// CONNACK. `reason_code` is a v5 reason code; the encoder maps it to a
/// 3.1.1 return code for older clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub reason_code: u8,
    pub properties: ConnAckProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub maximum_packet_size: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifiers_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in MQTT 5 when a topic alias is used.
    pub topic: String,
    /// 0 for QoS 0.
    pub packet_id: u16,
    pub payload: Bytes,
    pub properties: PublishProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub topic_alias: Option<u16>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
    pub subscription_identifiers: Vec<u32>,
    pub content_type: Option<String>,
}

/// Properties shared by acknowledgements (PUBACK..PUBCOMP, SUBACK, UNSUBACK).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share this shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PubResp {
    pub packet_id: u16,
    pub reason_code: u8,
    pub properties: AckProperties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub filters: Vec<SubscribeFilter>,
    pub properties: SubscribeProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    pub subscription_identifier: Option<u32>,
    pub user_properties: UserProperties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    pub filter: String,
    pub options: SubscriptionOptions,
}

/// SUBACK. Reason codes are v5 codes; the encoder maps failures to 0x80 for 3.1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub reason_codes: Vec<u8>,
    pub properties: AckProperties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub filters: Vec<String>,
    pub user_properties: UserProperties,
}

/// UNSUBACK. 3.1.1 has no reason codes: the encoder omits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub reason_codes: Vec<u8>,
    pub properties: AckProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disconnect {
    pub reason_code: u8,
    pub properties: DisconnectProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    pub session_expiry_interval: Option<u32>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
    pub server_reference: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    pub reason_code: u8,
    pub properties: AuthProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
}
