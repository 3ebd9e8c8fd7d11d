//! Tests for `decode` and `encode` by example: one unit test per
//! malformed-input rule, and the encoder's details. The round-trip
//! properties are in `codec_props.rs`.

use bytes::{BufMut, Bytes, BytesMut};

use super::{decode, DecodeError};
use crate::model::reason;
use crate::mqtt::encode::encoded_len;
use crate::mqtt::packet::*;

use super::codec_props::encoded;
use ProtocolVersion::{V31, V311, V5};

// ---------------------------------------------------------------- helpers

/// A packet with the given first byte and body, remaining length computed.
fn raw(first: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u8(first);
    let mut n = body.len();
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        buf.put_u8(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    buf.put_slice(body);
    buf
}

/// A length-prefixed string or binary field.
fn s(v: &[u8]) -> Vec<u8> {
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v);
    out
}

fn dec(first: u8, body: &[u8], version: Option<ProtocolVersion>) -> Result<Option<Packet>, DecodeError> {
    decode(&mut raw(first, body), version, usize::MAX)
}

fn err(first: u8, body: &[u8], version: Option<ProtocolVersion>) -> DecodeError {
    dec(first, body, version).expect_err("must be rejected")
}

fn ok(first: u8, body: &[u8], version: Option<ProtocolVersion>) -> Packet {
    dec(first, body, version).expect("must decode").expect("complete")
}

/// CONNECT body: protocol name, level, flags, keep alive 60, then `rest`
/// (properties for v5, then payload).
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut b = s(name);
    b.push(level);
    b.push(flags);
    b.extend_from_slice(&[0, 60]);
    b.extend_from_slice(rest);
    b
}

/// v5 CONNECT with the given property block (without its length) and client id "c".
fn v5_connect_with_props(props: &[u8]) -> Vec<u8> {
    let mut rest = vec![props.len() as u8];
    rest.extend_from_slice(props);
    rest.extend(s(b"c"));
    connect_body(b"MQTT", 5, 0x02, &rest)
}

/// v5 PUBLISH QoS 0 to "t" with the given property block.
fn v5_publish_with_props(props: &[u8]) -> Vec<u8> {
    let mut b = s(b"t");
    b.push(props.len() as u8);
    b.extend_from_slice(props);
    b.extend_from_slice(b"payload");
    b
}

// ---------------------------------------------------------------- fixed header

#[test]
fn remaining_length_longer_than_four_bytes_is_malformed() {
    let mut buf = BytesMut::from(&[0xC0, 0x80, 0x80, 0x80, 0x80][..]);
    let e = decode(&mut buf, Some(V5), usize::MAX).unwrap_err();
    assert_eq!(e, DecodeError::VarIntTooLong);
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    // Three continuation bytes may still be followed by a last one.
    let mut buf = BytesMut::from(&[0xC0, 0x80, 0x80, 0x80][..]);
    assert_eq!(decode(&mut buf, Some(V5), usize::MAX), Ok(None));
}

#[test]
fn non_minimal_remaining_length_is_malformed() {
    let mut buf = BytesMut::from(&[0xC0, 0x80, 0x00][..]);
    assert_eq!(decode(&mut buf, Some(V311), usize::MAX), Err(DecodeError::VarIntNotMinimal));
}

#[test]
fn lying_remaining_length_is_rejected_after_the_fixed_header() {
    // PUBLISH announcing 200 MB, limit 1 MB: only the 5 header bytes arrive.
    let mut header = raw(0x30, &[]);
    header.truncate(1);
    let mut n = 200_000_000usize;
    while n > 0 {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        header.put_u8(if n > 0 { b | 0x80 } else { b });
    }
    assert_eq!(header.len(), 5);
    let e = decode(&mut header, Some(V5), 1024 * 1024).unwrap_err();
    assert_eq!(e, DecodeError::PacketTooLarge { size: 200_000_005, max: 1024 * 1024 });
    assert_eq!(e.reason_code(), reason::PACKET_TOO_LARGE);
}

#[test]
fn reserved_fixed_header_flags_are_malformed() {
    for (first, body) in [
        (0x41u8, &[0, 1][..]), // PUBACK
        (0x60, &[0, 1]),       // PUBREL needs 0b0010
        (0x63, &[0, 1]),
        (0x80, &[0, 1, 0, 1, b't', 0]), // SUBSCRIBE
        (0xA0, &[0, 1, 0, 1, b't']),    // UNSUBSCRIBE
        (0xC1, &[]),                    // PINGREQ
        (0xE2, &[]),                    // DISCONNECT
    ] {
        let e = err(first, body, Some(V311));
        assert!(matches!(e, DecodeError::InvalidFixedHeaderFlags { .. }), "{first:#x}: {e}");
        assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    }
    let e = err(0x12, &connect_body(b"MQTT", 4, 0x02, &s(b"c")), None);
    assert!(matches!(e, DecodeError::InvalidFixedHeaderFlags { packet: "CONNECT", flags: 2 }));
}

#[test]
fn reserved_packet_types_are_malformed() {
    assert_eq!(err(0x00, &[], Some(V5)), DecodeError::InvalidPacketType(0));
    assert_eq!(err(0xF0, &[], Some(V311)), DecodeError::InvalidPacketType(15));
    assert_eq!(err(0xF0, &[], Some(V31)), DecodeError::InvalidPacketType(15));
    assert_eq!(ok(0xF0, &[], Some(V5)), Packet::Auth(Auth::default()));
}

#[test]
fn connect_must_come_first_and_only_once() {
    let e = err(0xC0, &[], None);
    assert_eq!(e, DecodeError::ExpectedConnect("PINGREQ"));
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    let body = connect_body(b"MQTT", 4, 0x02, &s(b"c"));
    assert!(matches!(ok(0x10, &body, None), Packet::Connect(_)));
    assert_eq!(err(0x10, &body, Some(V311)), DecodeError::SecondConnect);
}

// ---------------------------------------------------------------- PUBLISH

#[test]
fn publish_qos_3_is_malformed() {
    let e = err(0x36, &[0, 1, b't', 0, 1], Some(V311));
    assert_eq!(e, DecodeError::PublishQoS3);
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    assert!(e.to_string().starts_with("[MQTT-3.3.1-4] PUBLISH with QoS 3"), "{e}");
}

#[test]
fn publish_qos_0_with_dup_is_malformed() {
    let e = err(0x38, &[0, 1, b't'], Some(V311));
    assert_eq!(e, DecodeError::DupWithQoS0);
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
}

#[test]
fn zero_packet_identifier_is_a_protocol_error() {
    let e = err(0x32, &[0, 1, b't', 0, 0], Some(V311));
    assert_eq!(e, DecodeError::ZeroPacketId("PUBLISH"));
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    assert_eq!(err(0x82, &[0, 0, 0, 1, b't', 0], Some(V311)), DecodeError::ZeroPacketId("SUBSCRIBE"));
    assert_eq!(err(0xA2, &[0, 0, 0, 1, b't'], Some(V311)), DecodeError::ZeroPacketId("UNSUBSCRIBE"));
    assert_eq!(err(0x82, &[0, 0, 0, 0, 1, b't', 0], Some(V5)), DecodeError::ZeroPacketId("SUBSCRIBE"));
    assert_eq!(err(0x40, &[0, 0], Some(V5)), DecodeError::ZeroPacketId("PUBACK"));
}

#[test]
fn v5_publish_may_have_an_empty_topic() {
    let mut body = s(b"");
    body.extend_from_slice(&[3, 0x23, 0, 7]); // topic alias 7
    body.extend_from_slice(b"x");
    let Packet::Publish(p) = ok(0x30, &body, Some(V5)) else { panic!() };
    assert_eq!(p.topic, "");
    assert_eq!(p.properties.topic_alias, Some(7));
    assert_eq!(&p.payload[..], b"x");
}

#[test]
fn topic_alias_zero_is_topic_alias_invalid() {
    let e = err(0x30, &v5_publish_with_props(&[0x23, 0, 0]), Some(V5));
    assert_eq!(e, DecodeError::TopicAliasZero);
    assert_eq!(e.reason_code(), reason::TOPIC_ALIAS_INVALID);
}

#[test]
fn repeated_subscription_identifiers_and_user_properties_are_fine() {
    let mut props = vec![0x0B, 0x01, 0x0B, 0xFF, 0x01];
    for _ in 0..2 {
        props.push(0x26);
        props.extend(s(b"k"));
        props.extend(s(b"v"));
    }
    let Packet::Publish(p) = ok(0x30, &v5_publish_with_props(&props), Some(V5)) else { panic!() };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 255]);
    assert_eq!(p.properties.user_properties.len(), 2);
}

#[test]
fn subscription_identifier_zero_is_a_protocol_error() {
    let e = err(0x30, &v5_publish_with_props(&[0x0B, 0x00]), Some(V5));
    assert_eq!(e, DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 });
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    let e = err(0x82, &[0, 1, 2, 0x0B, 0x00, 0, 1, b't', 0], Some(V5));
    assert_eq!(e, DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 });
}

// ---------------------------------------------------------------- properties

#[test]
fn property_not_allowed_in_packet_is_a_protocol_error() {
    // Topic alias in CONNECT.
    let e = err(0x10, &v5_connect_with_props(&[0x23, 0, 1]), None);
    assert_eq!(e, DecodeError::PropertyNotAllowed { packet: "CONNECT", id: 0x23 });
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    // Session expiry interval in PUBLISH.
    let e = err(0x30, &v5_publish_with_props(&[0x11, 0, 0, 0, 1]), Some(V5));
    assert_eq!(e, DecodeError::PropertyNotAllowed { packet: "PUBLISH", id: 0x11 });
    // Reason string in SUBSCRIBE.
    let mut body = vec![0, 1, 4, 0x1F, 0, 1, b'x'];
    body.extend(s(b"t"));
    body.push(0);
    let e = err(0x82, &body, Some(V5));
    assert_eq!(e, DecodeError::PropertyNotAllowed { packet: "SUBSCRIBE", id: 0x1F });
}

#[test]
fn duplicate_single_valued_property_is_a_protocol_error() {
    let e = err(0x10, &v5_connect_with_props(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2]), None);
    assert_eq!(e, DecodeError::DuplicateProperty { packet: "CONNECT", id: 0x11 });
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    // Subscription identifier may repeat in PUBLISH but not in SUBSCRIBE.
    let mut body = vec![0, 1, 4, 0x0B, 1, 0x0B, 2];
    body.extend(s(b"t"));
    body.push(0);
    assert_eq!(err(0x82, &body, Some(V5)), DecodeError::DuplicateProperty { packet: "SUBSCRIBE", id: 0x0B });
}

#[test]
fn zero_receive_maximum_and_maximum_packet_size_are_protocol_errors() {
    let e = err(0x10, &v5_connect_with_props(&[0x21, 0, 0]), None);
    assert_eq!(e, DecodeError::InvalidPropertyValue { id: 0x21, value: 0 });
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    let e = err(0x10, &v5_connect_with_props(&[0x27, 0, 0, 0, 0]), None);
    assert_eq!(e, DecodeError::InvalidPropertyValue { id: 0x27, value: 0 });
}

#[test]
fn boolean_property_other_than_0_or_1_is_a_protocol_error() {
    let e = err(0x10, &v5_connect_with_props(&[0x17, 2]), None);
    assert_eq!(e, DecodeError::InvalidPropertyValue { id: 0x17, value: 2 });
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
}

#[test]
fn unknown_property_is_malformed() {
    let e = err(0x10, &v5_connect_with_props(&[0x7F, 0]), None);
    assert_eq!(e, DecodeError::UnknownProperty(0x7F));
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
}

#[test]
fn property_block_overrunning_the_packet_is_malformed() {
    // Property length 9 with only 5 bytes of properties and a client id left.
    let mut rest = vec![9, 0x11, 0, 0, 0, 1];
    rest.extend(s(b"c"));
    let e = err(0x10, &connect_body(b"MQTT", 5, 0x02, &rest), None);
    assert_eq!(e, DecodeError::UnexpectedEof("CONNECT"));
    // A property value running past the end of its block.
    let e = err(0x10, &v5_connect_with_props(&[0x11, 0, 0]), None);
    assert_eq!(e, DecodeError::UnexpectedEof("CONNECT"));
}

#[test]
fn property_varint_subscription_identifier_is_decoded() {
    // 268,435,455 = FF FF FF 7F.
    let Packet::Publish(p) = ok(0x30, &v5_publish_with_props(&[0x0B, 0xFF, 0xFF, 0xFF, 0x7F]), Some(V5)) else {
        panic!()
    };
    assert_eq!(p.properties.subscription_identifiers, vec![268_435_455]);
    let e = err(0x30, &v5_publish_with_props(&[0x0B, 0x80, 0x00]), Some(V5));
    assert_eq!(e, DecodeError::VarIntNotMinimal);
}

// ---------------------------------------------------------------- SUBSCRIBE / UNSUBSCRIBE

#[test]
fn subscribe_and_unsubscribe_without_filters_are_protocol_errors() {
    let e = err(0x82, &[0, 1], Some(V311));
    assert_eq!(e, DecodeError::NoTopicFilters("SUBSCRIBE"));
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    assert_eq!(err(0x82, &[0, 1, 0], Some(V5)), DecodeError::NoTopicFilters("SUBSCRIBE"));
    assert_eq!(err(0xA2, &[0, 1], Some(V311)), DecodeError::NoTopicFilters("UNSUBSCRIBE"));
    assert_eq!(err(0xA2, &[0, 1, 0], Some(V5)), DecodeError::NoTopicFilters("UNSUBSCRIBE"));
}

fn subscribe_with_options(v5: bool, options: u8) -> Vec<u8> {
    let mut body = vec![0, 1];
    if v5 {
        body.push(0);
    }
    body.extend(s(b"t"));
    body.push(options);
    body
}

#[test]
fn v5_subscription_options_rules() {
    let e = err(0x82, &subscribe_with_options(true, 0b0100_0000), Some(V5));
    assert_eq!(e, DecodeError::SubscriptionOptionsReserved(0b0100_0000));
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    let e = err(0x82, &subscribe_with_options(true, 0b0011_0000), Some(V5));
    assert_eq!(e, DecodeError::RetainHandling3);
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    let e = err(0x82, &subscribe_with_options(true, 0b0000_0011), Some(V5));
    assert_eq!(e, DecodeError::SubscriptionQoS3 { v5: true });
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    let Packet::Subscribe(sub) = ok(0x82, &subscribe_with_options(true, 0b0010_1110), Some(V5)) else { panic!() };
    assert_eq!(
        sub.filters[0].options,
        SubscriptionOptions { qos: QoS::ExactlyOnce, no_local: true, retain_as_published: true, retain_handling: 2 }
    );
}

#[test]
fn v311_subscription_options_rules() {
    let e = err(0x82, &subscribe_with_options(false, 3), Some(V311));
    assert_eq!(e, DecodeError::SubscriptionQoS3 { v5: false });
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    let e = err(0x82, &subscribe_with_options(false, 0b0000_0100), Some(V311));
    assert_eq!(e, DecodeError::SubscriptionOptionsReserved(0b0000_0100));
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
}

// ---------------------------------------------------------------- CONNECT

#[test]
fn protocol_name_and_level_select_the_version() {
    for (name, level, version) in [(&b"MQTT"[..], 4, V311), (b"MQTT", 5, V5), (b"MQIsdp", 3, V31)] {
        let rest = if version == V5 { [&[0u8][..], &s(b"c")].concat() } else { s(b"c") };
        let Packet::Connect(c) = ok(0x10, &connect_body(name, level, 0x02, &rest), None) else { panic!() };
        assert_eq!(c.protocol, version);
        assert_eq!(c.client_id, "c");
    }
}

#[test]
fn unsupported_protocol_levels() {
    for (name, level) in [(&b"MQTT"[..], 3), (b"MQTT", 6), (b"MQTT", 0), (b"MQIsdp", 4)] {
        let e = err(0x10, &connect_body(name, level, 0x02, &s(b"c")), None);
        assert_eq!(e, DecodeError::UnsupportedProtocolVersion { level });
        assert_eq!(e.reason_code(), reason::UNSUPPORTED_PROTOCOL_VERSION);
    }
    let e = err(0x10, &connect_body(b"MQTX", 4, 0x02, &s(b"c")), None);
    assert_eq!(e, DecodeError::InvalidProtocolName("MQTX".into()));
}

#[test]
fn connect_reserved_flag_is_malformed() {
    let e = err(0x10, &connect_body(b"MQTT", 4, 0x03, &s(b"c")), None);
    assert_eq!(e, DecodeError::ConnectReservedFlag);
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
}

#[test]
fn will_qos_and_retain_require_the_will_flag() {
    for flags in [0x02 | 0x08, 0x02 | 0x10, 0x02 | 0x20] {
        let e = err(0x10, &connect_body(b"MQTT", 4, flags, &s(b"c")), None);
        assert_eq!(e, DecodeError::WillFieldsWithoutWill, "{flags:#x}");
        assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    }
    let mut rest = s(b"c");
    rest.extend(s(b"wt"));
    rest.extend(s(b"wp"));
    let e = err(0x10, &connect_body(b"MQTT", 4, 0x02 | 0x04 | 0x18, &rest), None);
    assert_eq!(e, DecodeError::InvalidWillQoS);
    let Packet::Connect(c) = ok(0x10, &connect_body(b"MQTT", 4, 0x02 | 0x04 | 0x10 | 0x20, &rest), None) else {
        panic!()
    };
    let w = c.will.unwrap();
    assert_eq!((w.topic.as_str(), &w.payload[..], w.qos, w.retain), ("wt", &b"wp"[..], QoS::ExactlyOnce, true));
}

#[test]
fn password_without_username() {
    let mut rest = s(b"c");
    rest.extend(s(b"pw"));
    for (name, level) in [(&b"MQTT"[..], 4), (b"MQIsdp", 3)] {
        let e = err(0x10, &connect_body(name, level, 0x02 | 0x40, &rest), None);
        assert_eq!(e, DecodeError::PasswordWithoutUsername);
        assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    }
    // Allowed in v5.
    let v5_rest = [&[0u8][..], &rest].concat();
    let Packet::Connect(c) = ok(0x10, &connect_body(b"MQTT", 5, 0x02 | 0x40, &v5_rest), None) else { panic!() };
    assert_eq!((c.username, c.password.as_deref()), (None, Some(&b"pw"[..])));
}

#[test]
fn strings_must_be_utf8_without_nul() {
    for (bad, expected) in [
        (&b"\xFF"[..], DecodeError::InvalidUtf8),
        (b"\xED\xA0\x80", DecodeError::InvalidUtf8), // UTF-16 surrogate U+D800
        (b"\xC0\x80", DecodeError::InvalidUtf8),     // overlong NUL
        (b"a\0b", DecodeError::NullCharacter),
    ] {
        let e = err(0x10, &connect_body(b"MQTT", 4, 0x02, &s(bad)), None);
        assert_eq!(e, expected);
        assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    }
    // Also in a PUBLISH topic and a user property.
    assert_eq!(err(0x30, &s(b"a\0"), Some(V311)), DecodeError::NullCharacter);
    let mut props = vec![0x26];
    props.extend(s(b"k"));
    props.extend(s(b"\xFF"));
    assert_eq!(err(0x30, &v5_publish_with_props(&props), Some(V5)), DecodeError::InvalidUtf8);
}

#[test]
fn truncated_and_trailing_bytes_are_malformed() {
    // Username flag set but no username.
    let e = err(0x10, &connect_body(b"MQTT", 4, 0x82, &s(b"c")), None);
    assert_eq!(e, DecodeError::UnexpectedEof("CONNECT"));
    let mut rest = s(b"c");
    rest.push(0);
    let e = err(0x10, &connect_body(b"MQTT", 4, 0x02, &rest), None);
    assert_eq!(e, DecodeError::TrailingBytes { packet: "CONNECT", extra: 1 });
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    assert_eq!(err(0xC0, &[0], Some(V5)), DecodeError::TrailingBytes { packet: "PINGREQ", extra: 1 });
    assert_eq!(err(0x40, &[0, 1, 0], Some(V311)), DecodeError::TrailingBytes { packet: "PUBACK", extra: 1 });
    assert_eq!(err(0x40, &[0], Some(V5)), DecodeError::UnexpectedEof("PUBACK"));
}

// ---------------------------------------------------------------- acks, DISCONNECT, AUTH

#[test]
fn v5_short_forms() {
    let expected = PubResp { packet_id: 7, ..PubResp::default() };
    assert_eq!(ok(0x40, &[0, 7], Some(V5)), Packet::PubAck(expected.clone()));
    assert_eq!(ok(0x62, &[0, 7], Some(V5)), Packet::PubRel(expected));
    let Packet::PubRec(r) = ok(0x50, &[0, 7, 0x10], Some(V5)) else { panic!() };
    assert_eq!((r.reason_code, r.properties), (0x10, AckProperties::default()));
    assert_eq!(ok(0xE0, &[], Some(V5)), Packet::Disconnect(Disconnect::default()));
    let Packet::Disconnect(d) = ok(0xE0, &[0x04], Some(V5)) else { panic!() };
    assert_eq!(d.reason_code, reason::DISCONNECT_WITH_WILL);

    // And the encoder produces them.
    assert_eq!(&encoded(&Packet::PubAck(PubResp { packet_id: 7, ..PubResp::default() }), V5)[..], &[0x40, 2, 0, 7]);
    assert_eq!(&encoded(&Packet::Disconnect(Disconnect::default()), V5)[..], &[0xE0, 0]);
    assert_eq!(&encoded(&Packet::Auth(Auth::default()), V5)[..], &[0xF0, 0]);
    let d = Disconnect { reason_code: reason::SERVER_SHUTTING_DOWN, ..Disconnect::default() };
    // Property length written even when empty (rumqttc 0.25 needs it).
    assert_eq!(&encoded(&Packet::Disconnect(d), V5)[..], &[0xE0, 2, 0x8B, 0]);
}

#[test]
fn v5_invalid_reason_codes_are_protocol_errors() {
    let e = err(0x40, &[0, 1, 0x05], Some(V5));
    assert_eq!(e, DecodeError::InvalidReasonCode { packet: "PUBACK", code: 0x05 });
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    assert_eq!(err(0x62, &[0, 1, 0x10], Some(V5)), DecodeError::InvalidReasonCode { packet: "PUBREL", code: 0x10 });
    assert_eq!(err(0xE0, &[0x01], Some(V5)), DecodeError::InvalidReasonCode { packet: "DISCONNECT", code: 0x01 });
    assert_eq!(err(0xF0, &[0x01, 0], Some(V5)), DecodeError::InvalidReasonCode { packet: "AUTH", code: 0x01 });
}

#[test]
fn v311_disconnect_and_acks_have_no_body() {
    assert_eq!(ok(0xE0, &[], Some(V311)), Packet::Disconnect(Disconnect::default()));
    assert_eq!(err(0xE0, &[0], Some(V311)), DecodeError::TrailingBytes { packet: "DISCONNECT", extra: 1 });
    // Encoding for 3.1.1 drops reason code and properties.
    let resp = PubResp {
        packet_id: 9,
        reason_code: reason::NO_MATCHING_SUBSCRIBERS,
        properties: AckProperties { reason_string: Some("x".into()), user_properties: vec![] },
    };
    assert_eq!(&encoded(&Packet::PubAck(resp), V311)[..], &[0x40, 2, 0, 9]);
    let d = Disconnect { reason_code: reason::SERVER_SHUTTING_DOWN, ..Disconnect::default() };
    assert_eq!(&encoded(&Packet::Disconnect(d), V311)[..], &[0xE0, 0]);
    let ua = UnsubAck { packet_id: 3, reason_codes: vec![0, 0x11], properties: AckProperties::default() };
    assert_eq!(&encoded(&Packet::UnsubAck(ua), V311)[..], &[0xB0, 2, 0, 3]);
}

#[test]
fn v311_connack_return_codes_map_both_ways() {
    for (code, v5) in [(0u8, 0x00u8), (1, 0x84), (2, 0x85), (3, 0x88), (4, 0x86), (5, 0x87)] {
        let Packet::ConnAck(c) = ok(0x20, &[0, code], Some(V311)) else { panic!() };
        assert_eq!(c.reason_code, v5);
        let p = Packet::ConnAck(ConnAck { reason_code: v5, ..ConnAck::default() });
        assert_eq!(&encoded(&p, V311)[..], &[0x20, 2, 0, code]);
    }
    assert_eq!(err(0x20, &[0, 6], Some(V311)), DecodeError::InvalidReasonCode { packet: "CONNACK", code: 6 });
    assert_eq!(err(0x20, &[2, 0], Some(V311)), DecodeError::ConnAckReservedFlags(2));
    // Other v5 failures pick the closest 3.1.1 code.
    for (v5, code) in [(0x89u8, 3u8), (0x8B, 3), (0x9C, 3), (0x8C, 4), (0x8A, 5), (0x80, 5), (0x82, 5)] {
        let p = Packet::ConnAck(ConnAck { reason_code: v5, ..ConnAck::default() });
        assert_eq!(encoded(&p, V311)[3], code, "{v5:#x}");
    }
    // Session present is never sent with a failure.
    let p = Packet::ConnAck(ConnAck { session_present: true, reason_code: 0x87, ..ConnAck::default() });
    assert_eq!(&encoded(&p, V5)[..4], &[0x20, 3, 0, 0x87]);
}

#[test]
fn v311_suback_codes() {
    let Packet::SubAck(a) = ok(0x90, &[0, 1, 0, 1, 2, 0x80], Some(V311)) else { panic!() };
    assert_eq!(a.reason_codes, vec![0, 1, 2, 0x80]);
    assert_eq!(err(0x90, &[0, 1, 3], Some(V311)), DecodeError::InvalidReasonCode { packet: "SUBACK", code: 3 });
    let p = Packet::SubAck(SubAck {
        packet_id: 1,
        reason_codes: vec![1, reason::NOT_AUTHORIZED, reason::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED, 2],
        properties: AckProperties::default(),
    });
    assert_eq!(&encoded(&p, V311)[..], &[0x90, 6, 0, 1, 1, 0x80, 0x80, 2]);
}

// ---------------------------------------------------------------- encoder details

#[test]
fn v31_connect_is_mqisdp_level_3() {
    let c = Connect {
        protocol: V31,
        clean_start: true,
        keep_alive: 10,
        client_id: "id".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    let buf = encoded(&Packet::Connect(Box::new(c)), V31);
    assert_eq!(&buf[2..11], &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3]);
}

#[test]
fn publish_qos0_never_carries_dup() {
    let p = Publish {
        dup: true,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: "t".into(),
        packet_id: 5,
        payload: Bytes::from_static(b"x"),
        properties: PublishProperties::default(),
    };
    let buf = encoded(&Packet::Publish(p), V311);
    assert_eq!(&buf[..], &[0x31, 4, 0, 1, b't', b'x']);
}

#[test]
fn encoded_len_of_large_publish() {
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b".into(),
        packet_id: 1,
        payload: Bytes::from(vec![7u8; 3_000_000]),
        properties: PublishProperties { topic_alias: Some(1), ..PublishProperties::default() },
    });
    // 1 + 4-byte remaining length + (2+3) + 2 + (1 + 3) + payload.
    assert_eq!(encoded_len(&p, V5), 1 + 4 + 5 + 2 + 4 + 3_000_000);
    let mut buf = encoded(&p, V5);
    assert_eq!(buf.len(), encoded_len(&p, V5));
    assert_eq!(decode(&mut buf, Some(V5), usize::MAX), Ok(Some(p)));
}
