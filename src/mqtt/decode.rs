//! MQTT 3.1.1 / 5.0 packet decoder (server side).
//!
//! Owns: turning bytes read from the wire into [`Packet`]s, and every check the
//! specification classifies as a *Malformed Packet* or as a *Protocol Error*
//! that can be decided from the packet alone: fixed-header flags, reserved
//! bits, Variable Byte Integers, packet identifier 0, UTF-8 string rules, which
//! v5 properties may appear in which packet and how often, property values,
//! and v5 reason codes of the packets a client sends. Every failure is a
//! [`DecodeError`]; [`DecodeError::reason_code`] is the v5 reason code the
//! broker puts in the CONNACK or DISCONNECT it sends before closing.
//!
//! Must never: panic on any input; buffer (or wait for) more than
//! `max_packet_size` bytes on the word of an announced remaining length; do
//! I/O; know about sessions, topic aliases in force, subscriptions or
//! authorisation. Topic name and filter syntax (wildcards, empty topics, shared
//! subscriptions, `$` topics) is checked by the broker (`crate::topic`), and so
//! is every rule that depends on connection state or direction (a client
//! sending CONNACK, SUBACK or PINGRESP; a Subscription Identifier in a PUBLISH
//! from a client; an empty v5 topic without a Topic Alias; a DISCONNECT session
//! expiry after a CONNECT with expiry 0; client identifier rules).
//!
//! Server-to-client packets (CONNACK, SUBACK, UNSUBACK, PINGRESP) decode too,
//! so the codec round-trips and a client can reuse it; for 3.1.1 their return
//! codes are mapped to v5 reason codes.
//!
//! Messages cite normative statements (`[MQTT-x.y.z-n]`) or sections (`§x.y`)
//! of MQTT 5.0 unless marked 3.1.1; the same rules apply to 3.1.1 unless
//! noted.

use bytes::{Buf, Bytes, BytesMut};

use crate::model::reason;
use crate::mqtt::packet::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties, Disconnect, LastWill,
    Packet, ProtocolVersion, PubResp, Publish, PublishProperties, QoS, SubAck, Subscribe, SubscribeFilter,
    SubscribeProperties, SubscriptionOptions, UnsubAck, Unsubscribe, UserProperties, WillProperties,
};

pub use super::primitives::DecodeError;
pub(crate) use super::primitives::{parse_varint, prop};
use super::reader::{user_property, Reader};

/// v5 reason codes a PUBACK or PUBREC may carry (§3.4.2.1, §3.5.2.1).
pub(crate) const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// v5 reason codes a PUBREL or PUBCOMP may carry (§3.6.2.1, §3.7.2.1).
pub(crate) const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
/// v5 reason codes a DISCONNECT may carry, either direction (§3.14.2.1).
pub(crate) const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
/// v5 reason codes an AUTH may carry (§3.15.2.1): success, continue
/// authentication, re-authenticate (0x19, not in `reason`).
pub(crate) const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

type Result<T> = std::result::Result<T, DecodeError>;

/// Decodes one packet from the front of `buf` and advances it.
///
/// `Ok(None)`: not enough bytes yet; `buf` is untouched. `version` is `None`
/// before CONNECT has been decoded: then the only acceptable packet is CONNECT
/// (anything else is `ExpectedConnect`) and the CONNECT itself carries the
/// version; once it is `Some`, a CONNECT is `SecondConnect`.
///
/// `max_packet_size` bounds the whole packet, fixed header included. As soon
/// as the fixed header is complete an announced size above it is
/// `PacketTooLarge`, without waiting for the body. Invalid first bytes are
/// reported as soon as they arrive.
///
/// On `Err` the connection must be closed; `buf` may or may not have been
/// advanced past the offending packet. Payloads and binary fields share
/// `buf`'s allocation (zero copy), so a retained payload keeps its read chunk
/// alive.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
) -> std::result::Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, version)?;
    let Some((remaining, len_bytes)) = parse_varint(&buf[1..])? else {
        return Ok(None);
    };
    let size = 1 + len_bytes + remaining as usize;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge { size, max: max_packet_size });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(1 + len_bytes);
    decode_body(first, frame, version).map(Some)
}

/// Name of a control packet type, for error messages.
fn packet_name(ptype: u8) -> &'static str {
    match ptype {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        15 => "AUTH",
        _ => "reserved packet type",
    }
}

/// Checks packet type and fixed-header flags (§2.1.2, §2.1.3, §3.3.1) and
/// that CONNECT comes first and only once.
fn check_first_byte(first: u8, version: Option<ProtocolVersion>) -> Result<()> {
    let ptype = first >> 4;
    let flags = first & 0x0F;
    let v5 = version.is_some_and(ProtocolVersion::is_v5);
    // AUTH (15) is reserved in 3.1.1; before CONNECT we don't know yet, and
    // only CONNECT is acceptable anyway.
    if ptype == 0 || (ptype == 15 && version.is_some() && !v5) {
        return Err(DecodeError::InvalidPacketType(ptype));
    }
    match (version, ptype) {
        (None, 1) => {}
        (None, _) => return Err(DecodeError::ExpectedConnect(packet_name(ptype))),
        (Some(_), 1) => return Err(DecodeError::SecondConnect),
        (Some(_), _) => {}
    }
    if ptype == 3 {
        let qos = (flags >> 1) & 0x03;
        if qos == 3 {
            return Err(DecodeError::PublishQoS3);
        }
        if qos == 0 && flags & 0x08 != 0 {
            return Err(DecodeError::DupWithQoS0);
        }
        return Ok(());
    }
    let expected = if matches!(ptype, 6 | 8 | 10) { 0b0010 } else { 0 };
    if flags != expected {
        return Err(DecodeError::InvalidFixedHeaderFlags { packet: packet_name(ptype), flags });
    }
    Ok(())
}

fn decode_body(first: u8, body: Bytes, version: Option<ProtocolVersion>) -> Result<Packet> {
    let ptype = first >> 4;
    let flags = first & 0x0F;
    let v5 = version.is_some_and(ProtocolVersion::is_v5);
    let mut r = Reader { buf: body, packet: packet_name(ptype) };
    let packet = match ptype {
        1 => Packet::Connect(Box::new(connect(&mut r)?)),
        2 => Packet::ConnAck(connack(&mut r, v5)?),
        3 => Packet::Publish(publish(&mut r, flags, v5)?),
        4 => Packet::PubAck(pub_resp(&mut r, v5, PUBACK_REASONS)?),
        5 => Packet::PubRec(pub_resp(&mut r, v5, PUBACK_REASONS)?),
        6 => Packet::PubRel(pub_resp(&mut r, v5, PUBREL_REASONS)?),
        7 => Packet::PubComp(pub_resp(&mut r, v5, PUBREL_REASONS)?),
        8 => Packet::Subscribe(subscribe(&mut r, v5)?),
        9 => Packet::SubAck(suback(&mut r, v5)?),
        10 => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        11 => Packet::UnsubAck(unsuback(&mut r, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(disconnect(&mut r, v5)?),
        15 => Packet::Auth(auth(&mut r)?),
        _ => return Err(DecodeError::InvalidPacketType(ptype)),
    };
    r.finish()?;
    Ok(packet)
}

/// CONNECT (§3.1). The version comes from the packet itself.
fn connect(r: &mut Reader) -> Result<Connect> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolVersion { level }),
        _ => return Err(DecodeError::InvalidProtocolName(String::from_utf8_lossy(&name).into_owned())),
    };
    let v5 = protocol.is_v5();

    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFieldsWithoutWill);
    }
    let Some(will_qos) = QoS::from_u8(will_qos) else {
        return Err(DecodeError::InvalidWillQoS);
    };
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16()?;
    let properties = if v5 { connect_properties(r)? } else { ConnectProperties::default() };

    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 { will_properties(r)? } else { WillProperties::default() };
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(LastWill { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if username_flag { Some(r.string()?) } else { None };
    let password = if password_flag { Some(r.binary()?) } else { None };
    Ok(Connect { protocol, clean_start, keep_alive, client_id, will, username, password, properties })
}

fn connect_properties(r: &mut Reader) -> Result<ConnectProperties> {
    let mut p = ConnectProperties::default();
    r.properties(|id, r| match id {
        prop::SESSION_EXPIRY_INTERVAL => {
            let v = r.u32()?;
            r.set(&mut p.session_expiry_interval, id, v)
        }
        prop::RECEIVE_MAXIMUM => {
            let v = r.nonzero_u16(id)?;
            r.set(&mut p.receive_maximum, id, v)
        }
        prop::MAXIMUM_PACKET_SIZE => {
            let v = r.nonzero_u32(id)?;
            r.set(&mut p.maximum_packet_size, id, v)
        }
        prop::TOPIC_ALIAS_MAXIMUM => {
            let v = r.u16()?;
            r.set(&mut p.topic_alias_maximum, id, v)
        }
        prop::REQUEST_RESPONSE_INFORMATION => {
            let v = r.bool_byte(id)?;
            r.set(&mut p.request_response_information, id, v)
        }
        prop::REQUEST_PROBLEM_INFORMATION => {
            let v = r.bool_byte(id)?;
            r.set(&mut p.request_problem_information, id, v)
        }
        prop::AUTHENTICATION_METHOD => {
            let v = r.string()?;
            r.set(&mut p.authentication_method, id, v)
        }
        prop::AUTHENTICATION_DATA => {
            let v = r.binary()?;
            r.set(&mut p.authentication_data, id, v)
        }
        _ => user_property(r, id, &mut p.user_properties),
    })?;
    Ok(p)
}

fn will_properties(r: &mut Reader) -> Result<WillProperties> {
    let mut p = WillProperties::default();
    r.properties(|id, r| match id {
        prop::WILL_DELAY_INTERVAL => {
            let v = r.u32()?;
            r.set(&mut p.will_delay_interval, id, v)
        }
        prop::PAYLOAD_FORMAT_INDICATOR => {
            let v = r.bool_byte(id)?;
            r.set(&mut p.payload_format_indicator, id, v)
        }
        prop::MESSAGE_EXPIRY_INTERVAL => {
            let v = r.u32()?;
            r.set(&mut p.message_expiry_interval, id, v)
        }
        prop::CONTENT_TYPE => {
            let v = r.string()?;
            r.set(&mut p.content_type, id, v)
        }
        prop::RESPONSE_TOPIC => {
            let v = r.string()?;
            r.set(&mut p.response_topic, id, v)
        }
        prop::CORRELATION_DATA => {
            let v = r.binary()?;
            r.set(&mut p.correlation_data, id, v)
        }
        _ => user_property(r, id, &mut p.user_properties),
    })?;
    Ok(p)
}

/// CONNACK (§3.2). 3.1.1 return codes 1..=5 become the matching v5 codes.
fn connack(r: &mut Reader, v5: bool) -> Result<ConnAck> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ConnAckReservedFlags(flags));
    }
    let code = r.u8()?;
    let reason_code = if v5 {
        code
    } else {
        match code {
            0 => reason::SUCCESS,
            1 => reason::UNSUPPORTED_PROTOCOL_VERSION,
            2 => reason::CLIENT_IDENTIFIER_NOT_VALID,
            3 => reason::SERVER_UNAVAILABLE,
            4 => reason::BAD_USER_NAME_OR_PASSWORD,
            5 => reason::NOT_AUTHORIZED,
            _ => return Err(DecodeError::InvalidReasonCode { packet: r.packet, code }),
        }
    };
    let mut p = ConnAckProperties::default();
    if v5 {
        r.properties(|id, r| match id {
            prop::SESSION_EXPIRY_INTERVAL => {
                let v = r.u32()?;
                r.set(&mut p.session_expiry_interval, id, v)
            }
            prop::RECEIVE_MAXIMUM => {
                let v = r.nonzero_u16(id)?;
                r.set(&mut p.receive_maximum, id, v)
            }
            prop::MAXIMUM_QOS => {
                let v = r.bool_byte(id)?;
                r.set(&mut p.maximum_qos, id, v)
            }
            prop::RETAIN_AVAILABLE => {
                let v = r.bool_byte(id)?;
                r.set(&mut p.retain_available, id, v)
            }
            prop::MAXIMUM_PACKET_SIZE => {
                let v = r.nonzero_u32(id)?;
                r.set(&mut p.maximum_packet_size, id, v)
            }
            prop::ASSIGNED_CLIENT_IDENTIFIER => {
                let v = r.string()?;
                r.set(&mut p.assigned_client_identifier, id, v)
            }
            prop::TOPIC_ALIAS_MAXIMUM => {
                let v = r.u16()?;
                r.set(&mut p.topic_alias_maximum, id, v)
            }
            prop::REASON_STRING => {
                let v = r.string()?;
                r.set(&mut p.reason_string, id, v)
            }
            prop::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                let v = r.bool_byte(id)?;
                r.set(&mut p.wildcard_subscription_available, id, v)
            }
            prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                let v = r.bool_byte(id)?;
                r.set(&mut p.subscription_identifiers_available, id, v)
            }
            prop::SHARED_SUBSCRIPTION_AVAILABLE => {
                let v = r.bool_byte(id)?;
                r.set(&mut p.shared_subscription_available, id, v)
            }
            prop::SERVER_KEEP_ALIVE => {
                let v = r.u16()?;
                r.set(&mut p.server_keep_alive, id, v)
            }
            prop::RESPONSE_INFORMATION => {
                let v = r.string()?;
                r.set(&mut p.response_information, id, v)
            }
            prop::SERVER_REFERENCE => {
                let v = r.string()?;
                r.set(&mut p.server_reference, id, v)
            }
            prop::AUTHENTICATION_METHOD => {
                let v = r.string()?;
                r.set(&mut p.authentication_method, id, v)
            }
            prop::AUTHENTICATION_DATA => {
                let v = r.binary()?;
                r.set(&mut p.authentication_data, id, v)
            }
            _ => user_property(r, id, &mut p.user_properties),
        })?;
    }
    Ok(ConnAck { session_present: flags & 0x01 != 0, reason_code, properties: p })
}

/// PUBLISH (§3.3). Flags were checked by `check_first_byte`. The topic is
/// not validated here (it may be empty in v5 when a topic alias is used).
fn publish(r: &mut Reader, flags: u8, v5: bool) -> Result<Publish> {
    let dup = flags & 0x08 != 0;
    let retain = flags & 0x01 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::PublishQoS3)?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { r.packet_id()? };
    let mut p = PublishProperties::default();
    if v5 {
        r.properties(|id, r| match id {
            prop::PAYLOAD_FORMAT_INDICATOR => {
                let v = r.bool_byte(id)?;
                r.set(&mut p.payload_format_indicator, id, v)
            }
            prop::MESSAGE_EXPIRY_INTERVAL => {
                let v = r.u32()?;
                r.set(&mut p.message_expiry_interval, id, v)
            }
            prop::TOPIC_ALIAS => {
                let v = r.u16()?;
                if v == 0 {
                    return Err(DecodeError::TopicAliasZero);
                }
                r.set(&mut p.topic_alias, id, v)
            }
            prop::RESPONSE_TOPIC => {
                let v = r.string()?;
                r.set(&mut p.response_topic, id, v)
            }
            prop::CORRELATION_DATA => {
                let v = r.binary()?;
                r.set(&mut p.correlation_data, id, v)
            }
            prop::SUBSCRIPTION_IDENTIFIER => {
                let v = r.subscription_identifier()?;
                p.subscription_identifiers.push(v);
                Ok(())
            }
            prop::CONTENT_TYPE => {
                let v = r.string()?;
                r.set(&mut p.content_type, id, v)
            }
            _ => user_property(r, id, &mut p.user_properties),
        })?;
    }
    let payload = r.rest();
    Ok(Publish { dup, qos, retain, topic, packet_id, payload, properties: p })
}

/// Reason string + user properties, as in every acknowledgement.
fn ack_properties(r: &mut Reader) -> Result<AckProperties> {
    let mut p = AckProperties::default();
    r.properties(|id, r| match id {
        prop::REASON_STRING => {
            let v = r.string()?;
            r.set(&mut p.reason_string, id, v)
        }
        _ => user_property(r, id, &mut p.user_properties),
    })?;
    Ok(p)
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4-§3.7). In v5 the reason code and the
/// property length may each be omitted (remaining length 2 or 3).
fn pub_resp(r: &mut Reader, v5: bool, allowed: &[u8]) -> Result<PubResp> {
    let packet_id = r.packet_id()?;
    let mut resp = PubResp { packet_id, ..PubResp::default() };
    if v5 && !r.is_empty() {
        resp.reason_code = reason_code(r, allowed)?;
        if !r.is_empty() {
            resp.properties = ack_properties(r)?;
        }
    }
    Ok(resp)
}

fn reason_code(r: &mut Reader, allowed: &[u8]) -> Result<u8> {
    let code = r.u8()?;
    if !allowed.contains(&code) {
        return Err(DecodeError::InvalidReasonCode { packet: r.packet, code });
    }
    Ok(code)
}

/// SUBSCRIBE (§3.8).
fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe> {
    let packet_id = r.packet_id()?;
    let mut properties = SubscribeProperties::default();
    if v5 {
        r.properties(|id, r| match id {
            prop::SUBSCRIPTION_IDENTIFIER => {
                let v = r.subscription_identifier()?;
                r.set(&mut properties.subscription_identifier, id, v)
            }
            _ => user_property(r, id, &mut properties.user_properties),
        })?;
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = subscription_options(r.u8()?, v5)?;
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters(r.packet));
    }
    Ok(Subscribe { packet_id, filters, properties })
}

/// Subscription options byte (§3.8.3.1); in 3.1.1 only the QoS bits exist.
fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions> {
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved != 0 {
        return Err(DecodeError::SubscriptionOptionsReserved(byte));
    }
    let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::SubscriptionQoS3 { v5 })?;
    let retain_handling = (byte >> 4) & 0x03;
    if retain_handling == 3 {
        return Err(DecodeError::RetainHandling3);
    }
    Ok(SubscriptionOptions { qos, no_local: byte & 0x04 != 0, retain_as_published: byte & 0x08 != 0, retain_handling })
}

/// SUBACK (§3.9). 3.1.1 return codes are 0, 1, 2 or 0x80, the same numbers
/// as the v5 codes they correspond to.
fn suback(r: &mut Reader, v5: bool) -> Result<SubAck> {
    let packet_id = r.packet_id()?;
    let properties = if v5 { ack_properties(r)? } else { AckProperties::default() };
    let reason_codes = r.rest().to_vec();
    if !v5 {
        if let Some(&code) = reason_codes.iter().find(|&&c| !matches!(c, 0 | 1 | 2 | 0x80)) {
            return Err(DecodeError::InvalidReasonCode { packet: r.packet, code });
        }
    }
    Ok(SubAck { packet_id, reason_codes, properties })
}

/// UNSUBSCRIBE (§3.10).
fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe> {
    let packet_id = r.packet_id()?;
    let mut user_properties = UserProperties::new();
    if v5 {
        r.properties(|id, r| user_property(r, id, &mut user_properties))?;
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters(r.packet));
    }
    Ok(Unsubscribe { packet_id, filters, user_properties })
}

/// UNSUBACK (§3.11). 3.1.1 has no payload.
fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck> {
    let packet_id = r.packet_id()?;
    let (properties, reason_codes) =
        if v5 { (ack_properties(r)?, r.rest().to_vec()) } else { (AckProperties::default(), Vec::new()) };
    Ok(UnsubAck { packet_id, reason_codes, properties })
}

/// DISCONNECT (§3.14). 3.1.1 has no body; in v5 remaining length 0 means
/// normal disconnection and 1 means no properties.
fn disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect> {
    let mut d = Disconnect::default();
    if v5 && !r.is_empty() {
        d.reason_code = reason_code(r, DISCONNECT_REASONS)?;
        if !r.is_empty() {
            let p = &mut d.properties;
            r.properties(|id, r| match id {
                prop::SESSION_EXPIRY_INTERVAL => {
                    let v = r.u32()?;
                    r.set(&mut p.session_expiry_interval, id, v)
                }
                prop::REASON_STRING => {
                    let v = r.string()?;
                    r.set(&mut p.reason_string, id, v)
                }
                prop::SERVER_REFERENCE => {
                    let v = r.string()?;
                    r.set(&mut p.server_reference, id, v)
                }
                _ => user_property(r, id, &mut p.user_properties),
            })?;
        }
    }
    Ok(d)
}

/// AUTH (§3.15, v5 only). Remaining length 0 means success without
/// properties; a lone reason code is accepted like DISCONNECT's.
fn auth(r: &mut Reader) -> Result<Auth> {
    let mut a = Auth::default();
    if !r.is_empty() {
        a.reason_code = reason_code(r, AUTH_REASONS)?;
        if !r.is_empty() {
            let p: &mut AuthProperties = &mut a.properties;
            r.properties(|id, r| match id {
                prop::AUTHENTICATION_METHOD => {
                    let v = r.string()?;
                    r.set(&mut p.authentication_method, id, v)
                }
                prop::AUTHENTICATION_DATA => {
                    let v = r.binary()?;
                    r.set(&mut p.authentication_data, id, v)
                }
                prop::REASON_STRING => {
                    let v = r.string()?;
                    r.set(&mut p.reason_string, id, v)
                }
                _ => user_property(r, id, &mut p.user_properties),
            })?;
        }
    }
    Ok(a)
}

#[cfg(test)]
#[path = "codec_props.rs"]
mod codec_props;
#[cfg(test)]
#[path = "codec_tests.rs"]
mod codec_tests;

impl From<DecodeError> for crate::model::CloseReason {
    fn from(e: DecodeError) -> Self {
        crate::model::CloseReason::Malformed { code: e.reason_code(), what: e.to_string() }
    }
}
