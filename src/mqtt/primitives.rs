//! The MQTT codec's primitives: what the decoder, the field reader and the
//! encoder share, below all three.
//!
//! Owns: Variable Byte Integers (§1.5.5), the v5 property identifiers
//! (§2.2.2.2) and [`DecodeError`], every reason a packet cannot be decoded
//! with its v5 reason code. Must never: import the codec files above it
//! (`decode.rs`, `reader.rs`, `encode.rs`), so none of them imports another
//! back.

use crate::model::reason;

/// Largest value a Variable Byte Integer can hold (§1.5.5), hence the largest
/// remaining length.
pub(crate) const MAX_VARINT: u32 = 268_435_455;

/// v5 property identifiers (§2.2.2.2).
pub(crate) mod prop {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

    /// Whether `id` is a property identifier defined by MQTT 5.0 at all.
    pub fn is_known(id: u8) -> bool {
        matches!(id, 0x01..=0x03 | 0x08 | 0x09 | 0x0B | 0x11..=0x13 | 0x15..=0x1A | 0x1C | 0x1F)
            || matches!(id, 0x21..=0x2A)
    }
}

/// Why a packet could not be decoded. The Display text names the problem and,
/// where there is one, the normative clause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("§1.5.5 Variable Byte Integer longer than 4 bytes")]
    VarIntTooLong,
    #[error("[MQTT-1.5.5-1] Variable Byte Integer not encoded in the minimum number of bytes")]
    VarIntNotMinimal,
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("§2.1.2 reserved control packet type {0}")]
    InvalidPacketType(u8),
    #[error("[MQTT-2.1.3-1] {packet} with reserved fixed header flags {flags:#06b}")]
    InvalidFixedHeaderFlags { packet: &'static str, flags: u8 },
    #[error("[MQTT-3.1.0-1] first packet must be CONNECT, got {0}")]
    ExpectedConnect(&'static str),
    #[error("[MQTT-3.1.0-2] second CONNECT on the same connection")]
    SecondConnect,
    #[error("[MQTT-3.1.2-1] unknown protocol name {0:?}")]
    InvalidProtocolName(String),
    #[error("[MQTT-3.1.2-2] unsupported protocol level {level}")]
    UnsupportedProtocolVersion { level: u8 },
    #[error("[MQTT-3.1.2-3] CONNECT reserved flag is set")]
    ConnectReservedFlag,
    #[error("[MQTT-3.1.2-12] CONNECT with will QoS 3")]
    InvalidWillQoS,
    #[error("[MQTT-3.1.2-11] [MQTT-3.1.2-13] will QoS or will retain set without the will flag")]
    WillFieldsWithoutWill,
    #[error("[MQTT-3.1.2-22] (3.1.1) password flag set without the user name flag")]
    PasswordWithoutUsername,
    #[error("[MQTT-3.3.1-4] PUBLISH with QoS 3")]
    PublishQoS3,
    #[error("[MQTT-3.3.1-2] PUBLISH with QoS 0 and DUP set")]
    DupWithQoS0,
    #[error("[MQTT-2.2.1-3] {0} with packet identifier 0")]
    ZeroPacketId(&'static str),
    #[error("[MQTT-3.8.3-2] [MQTT-3.10.3-2] {0} without any topic filter")]
    NoTopicFilters(&'static str),
    #[error("[MQTT-3.8.3-5] subscription options {0:#010b} have reserved bits set")]
    SubscriptionOptionsReserved(u8),
    /// Malformed in 3.1.1 ([MQTT-3.8.3-4]), a Protocol Error in 5.0 (§3.8.3.1).
    #[error("SUBSCRIBE requesting QoS 3 (v5 §3.8.3.1; 3.1.1 [MQTT-3.8.3-4])")]
    SubscriptionQoS3 { v5: bool },
    #[error("§3.8.3.1 SUBSCRIBE with retain handling 3")]
    RetainHandling3,
    #[error("[MQTT-1.5.4-1] string is not valid UTF-8")]
    InvalidUtf8,
    #[error("[MQTT-1.5.4-2] string contains U+0000")]
    NullCharacter,
    #[error("{0} ends before its last field")]
    UnexpectedEof(&'static str),
    #[error("{packet} has {extra} unexpected bytes after its last field")]
    TrailingBytes { packet: &'static str, extra: usize },
    #[error("§2.2.2.2 unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    #[error("§2.2.2.2 property {id:#04x} is not allowed in {packet}")]
    PropertyNotAllowed { packet: &'static str, id: u8 },
    #[error("§2.2.2.2 property {id:#04x} appears more than once in {packet}")]
    DuplicateProperty { packet: &'static str, id: u8 },
    #[error("property {id:#04x} has invalid value {value}")]
    InvalidPropertyValue { id: u8, value: u32 },
    #[error("[MQTT-3.3.2-8] PUBLISH with topic alias 0")]
    TopicAliasZero,
    #[error("{packet} with invalid reason code {code:#04x}")]
    InvalidReasonCode { packet: &'static str, code: u8 },
    #[error("[MQTT-3.2.2-1] CONNACK acknowledge flags {0:#010b} have reserved bits set")]
    ConnAckReservedFlags(u8),
}

impl DecodeError {
    /// The v5 reason code to report this error with (CONNACK before the
    /// session exists, DISCONNECT after). 3.1.1 has no such codes: there the
    /// broker only closes the connection, except for
    /// `UnsupportedProtocolVersion` (CONNACK return code 1).
    ///
    /// `InvalidProtocolName` maps to 0x84 as well, the most useful answer to a
    /// client speaking something else; the spec also lets the server just close.
    pub fn reason_code(&self) -> u8 {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            UnsupportedProtocolVersion { .. } | InvalidProtocolName(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            TopicAliasZero => reason::TOPIC_ALIAS_INVALID,
            SubscriptionQoS3 { v5: false } => reason::MALFORMED_PACKET,
            ExpectedConnect(_)
            | SecondConnect
            | ZeroPacketId(_)
            | NoTopicFilters(_)
            | SubscriptionQoS3 { v5: true }
            | RetainHandling3
            | PropertyNotAllowed { .. }
            | DuplicateProperty { .. }
            | InvalidPropertyValue { .. }
            | InvalidReasonCode { .. } => reason::PROTOCOL_ERROR,
            VarIntTooLong
            | VarIntNotMinimal
            | InvalidPacketType(_)
            | InvalidFixedHeaderFlags { .. }
            | ConnectReservedFlag
            | InvalidWillQoS
            | WillFieldsWithoutWill
            | PasswordWithoutUsername
            | PublishQoS3
            | DupWithQoS0
            | SubscriptionOptionsReserved(_)
            | InvalidUtf8
            | NullCharacter
            | UnexpectedEof(_)
            | TrailingBytes { .. }
            | UnknownProperty(_)
            | ConnAckReservedFlags(_) => reason::MALFORMED_PACKET,
        }
    }
}

/// Parses a Variable Byte Integer from the front of `bytes` (§1.5.5).
/// `Ok(None)` if `bytes` ends before the last byte of the integer.
pub(crate) fn parse_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // A last byte of 0 after a continuation byte adds nothing.
            if i > 0 && b == 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::VarIntTooLong)
    } else {
        Ok(None)
    }
}
