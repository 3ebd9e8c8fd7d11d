//! Round-trip properties of `decode` and `encode` over arbitrary valid
//! packets of every version: partial input, back-to-back packets, the size
//! limit, and decoding never panicking on arbitrary bytes. The examples,
//! one per malformed-input rule, are in `codec_tests.rs`.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

use super::{decode, DecodeError, AUTH_REASONS, DISCONNECT_REASONS, PUBACK_REASONS, PUBREL_REASONS};
use crate::mqtt::encode::{encode, encoded_len};
use crate::mqtt::packet::*;

use ProtocolVersion::{V31, V311, V5};

// ---------------------------------------------------------------- strategies

fn string() -> impl Strategy<Value = String> {
    // Multi-byte characters and a control character (allowed, only U+0000 isn't).
    "[a-zA-Z0-9/+# éß€😀\u{1}]{0,12}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn users() -> impl Strategy<Value = UserProperties> {
    vec((string(), string()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn pid() -> impl Strategy<Value = u16> {
    1u16..=u16::MAX
}

fn flag_byte() -> impl Strategy<Value = Option<u8>> {
    of(0u8..=1)
}

fn sub_id() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..=200, 1u32..=268_435_455]
}

fn ack_props(v5: bool) -> BoxedStrategy<AckProperties> {
    if !v5 {
        return Just(AckProperties::default()).boxed();
    }
    (of(string()), users())
        .prop_map(|(reason_string, user_properties)| AckProperties { reason_string, user_properties })
        .boxed()
}

fn connect_props(v5: bool) -> BoxedStrategy<ConnectProperties> {
    if !v5 {
        return Just(ConnectProperties::default()).boxed();
    }
    (
        of(any::<u32>()),
        of(1u16..),
        of(1u32..),
        of(any::<u16>()),
        flag_byte(),
        flag_byte(),
        users(),
        of(string()),
        of(binary()),
    )
        .prop_map(|(sei, rm, mps, tam, rri, rpi, user_properties, am, ad)| ConnectProperties {
            session_expiry_interval: sei,
            receive_maximum: rm,
            maximum_packet_size: mps,
            topic_alias_maximum: tam,
            request_response_information: rri,
            request_problem_information: rpi,
            user_properties,
            authentication_method: am,
            authentication_data: ad,
        })
        .boxed()
}

fn will(v5: bool) -> impl Strategy<Value = LastWill> {
    let props = if v5 {
        (of(any::<u32>()), flag_byte(), of(any::<u32>()), of(string()), of(string()), of(binary()), users())
            .prop_map(|(wdi, pfi, mei, ct, rt, cd, user_properties)| WillProperties {
                will_delay_interval: wdi,
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
            })
            .boxed()
    } else {
        Just(WillProperties::default()).boxed()
    };
    (string(), binary(), qos(), any::<bool>(), props).prop_map(|(topic, payload, qos, retain, properties)| LastWill {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

fn connect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    (any::<bool>(), any::<u16>(), string(), of(will(v5)), of(string()), of(binary()), connect_props(v5))
        .prop_map(move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
            // 3.1.1 forbids a password without a user name [MQTT-3.1.2-22].
            let password = if !v5 && username.is_none() { None } else { password };
            Packet::Connect(Box::new(Connect {
                protocol: version,
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties,
            }))
        })
        .boxed()
}

fn connack_props() -> impl Strategy<Value = ConnAckProperties> {
    (
        (of(any::<u32>()), of(1u16..), flag_byte(), flag_byte(), of(1u32..), of(string())),
        (of(any::<u16>()), of(string()), users(), flag_byte(), flag_byte(), flag_byte()),
        (of(any::<u16>()), of(string()), of(string()), of(string()), of(binary())),
    )
        .prop_map(|((sei, rm, mq, ra, mps, aci), (tam, rs, up, wsa, sia, ssa), (ska, ri, sr, am, ad))| {
            ConnAckProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_qos: mq,
                retain_available: ra,
                maximum_packet_size: mps,
                assigned_client_identifier: aci,
                topic_alias_maximum: tam,
                reason_string: rs,
                user_properties: up,
                wildcard_subscription_available: wsa,
                subscription_identifiers_available: sia,
                shared_subscription_available: ssa,
                server_keep_alive: ska,
                response_information: ri,
                server_reference: sr,
                authentication_method: am,
                authentication_data: ad,
            }
        })
}

fn connack(v5: bool) -> BoxedStrategy<Packet> {
    let (code, props) = if v5 {
        (any::<u8>().boxed(), connack_props().boxed())
    } else {
        // The codes 3.1.1 return codes map back to.
        (select(vec![0x00, 0x84, 0x85, 0x88, 0x86, 0x87]).boxed(), Just(ConnAckProperties::default()).boxed())
    };
    (any::<bool>(), code, props)
        .prop_map(|(sp, reason_code, properties)| {
            // Session present is only sent with success [MQTT-3.2.2-6].
            Packet::ConnAck(ConnAck { session_present: sp && reason_code == 0, reason_code, properties })
        })
        .boxed()
}

fn publish_props(v5: bool) -> BoxedStrategy<PublishProperties> {
    if !v5 {
        return Just(PublishProperties::default()).boxed();
    }
    (flag_byte(), of(any::<u32>()), of(1u16..), of(string()), of(binary()), users(), vec(sub_id(), 0..3), of(string()))
        .prop_map(|(pfi, mei, ta, rt, cd, user_properties, subscription_identifiers, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties,
            subscription_identifiers,
            content_type: ct,
        })
        .boxed()
}

fn publish(v5: bool) -> BoxedStrategy<Packet> {
    let payload = prop_oneof![4 => binary(), 1 => vec(any::<u8>(), 100..400).prop_map(Bytes::from)];
    (any::<bool>(), qos(), any::<bool>(), string(), pid(), payload, publish_props(v5))
        .prop_map(|(dup, qos, retain, topic, packet_id, payload, properties)| {
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { 0 } else { packet_id },
                payload,
                properties,
            })
        })
        .boxed()
}

fn pub_resp(v5: bool, allowed: &'static [u8]) -> BoxedStrategy<PubResp> {
    let code = if v5 { select(allowed).boxed() } else { Just(0u8).boxed() };
    (pid(), code, ack_props(v5))
        .prop_map(|(packet_id, reason_code, properties)| PubResp { packet_id, reason_code, properties })
        .boxed()
}

fn sub_options(v5: bool) -> BoxedStrategy<SubscriptionOptions> {
    if !v5 {
        return qos().prop_map(|qos| SubscriptionOptions { qos, ..SubscriptionOptions::default() }).boxed();
    }
    (qos(), any::<bool>(), any::<bool>(), 0u8..=2)
        .prop_map(|(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
            qos,
            no_local,
            retain_as_published,
            retain_handling,
        })
        .boxed()
}

fn subscribe(v5: bool) -> BoxedStrategy<Packet> {
    let props = if v5 {
        (of(sub_id()), users())
            .prop_map(|(subscription_identifier, user_properties)| SubscribeProperties {
                subscription_identifier,
                user_properties,
            })
            .boxed()
    } else {
        Just(SubscribeProperties::default()).boxed()
    };
    let filter = (string(), sub_options(v5)).prop_map(|(filter, options)| SubscribeFilter { filter, options });
    (pid(), vec(filter, 1..4), props)
        .prop_map(|(packet_id, filters, properties)| Packet::Subscribe(Subscribe { packet_id, filters, properties }))
        .boxed()
}

fn suback(v5: bool) -> BoxedStrategy<Packet> {
    let code = if v5 { any::<u8>().boxed() } else { select(vec![0u8, 1, 2, 0x80]).boxed() };
    (pid(), vec(code, 0..4), ack_props(v5))
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck { packet_id, reason_codes, properties })
        })
        .boxed()
}

fn unsubscribe(v5: bool) -> BoxedStrategy<Packet> {
    let users = if v5 { users().boxed() } else { Just(Vec::new()).boxed() };
    (pid(), vec(string(), 1..4), users)
        .prop_map(|(packet_id, filters, user_properties)| {
            Packet::Unsubscribe(Unsubscribe { packet_id, filters, user_properties })
        })
        .boxed()
}

fn unsuback(v5: bool) -> BoxedStrategy<Packet> {
    let codes = if v5 { vec(any::<u8>(), 0..4).boxed() } else { Just(Vec::new()).boxed() };
    (pid(), codes, ack_props(v5))
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck { packet_id, reason_codes, properties })
        })
        .boxed()
}

fn disconnect(v5: bool) -> BoxedStrategy<Packet> {
    if !v5 {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    let props =
        (of(any::<u32>()), of(string()), users(), of(string())).prop_map(|(sei, rs, up, sr)| DisconnectProperties {
            session_expiry_interval: sei,
            reason_string: rs,
            user_properties: up,
            server_reference: sr,
        });
    let props = prop_oneof![Just(DisconnectProperties::default()), props];
    (select(DISCONNECT_REASONS), props)
        .prop_map(|(reason_code, properties)| Packet::Disconnect(Disconnect { reason_code, properties }))
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    let props = (of(string()), of(binary()), of(string()), users()).prop_map(|(am, ad, rs, up)| AuthProperties {
        authentication_method: am,
        authentication_data: ad,
        reason_string: rs,
        user_properties: up,
    });
    let props = prop_oneof![Just(AuthProperties::default()), props];
    (select(AUTH_REASONS), props)
        .prop_map(|(reason_code, properties)| Packet::Auth(Auth { reason_code, properties }))
        .boxed()
}

/// Any valid packet for `version`. For 3.1.1 properties are empty and reason
/// codes are ones 3.1.1 can represent.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let common = prop_oneof![
        1 => connect(version),
        1 => connack(v5),
        3 => publish(v5),
        1 => pub_resp(v5, PUBACK_REASONS).prop_map(Packet::PubAck),
        1 => pub_resp(v5, PUBACK_REASONS).prop_map(Packet::PubRec),
        1 => pub_resp(v5, PUBREL_REASONS).prop_map(Packet::PubRel),
        1 => pub_resp(v5, PUBREL_REASONS).prop_map(Packet::PubComp),
        1 => subscribe(v5),
        1 => suback(v5),
        1 => unsubscribe(v5),
        1 => unsuback(v5),
        1 => Just(Packet::PingReq),
        1 => Just(Packet::PingResp),
        1 => disconnect(v5),
    ];
    if v5 {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn any_version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V31), Just(V311), Just(V5)]
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    any_version().prop_flat_map(|v| (Just(v), packet(v)))
}

/// The `version` argument `decode` gets for `p` on a `v` connection.
fn state(p: &Packet, v: ProtocolVersion) -> Option<ProtocolVersion> {
    if matches!(p, Packet::Connect(_)) {
        None
    } else {
        Some(v)
    }
}

pub(super) fn encoded(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf);
    buf
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip((v, p) in versioned_packet()) {
        let mut buf = encoded(&p, v);
        prop_assert_eq!(buf.len(), encoded_len(&p, v));
        let got = decode(&mut buf, state(&p, v), usize::MAX);
        prop_assert_eq!(got, Ok(Some(p)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_prefix_is_incomplete((v, p) in versioned_packet()) {
        let full = encoded(&p, v);
        for n in 0..full.len() {
            let mut buf = BytesMut::from(&full[..n]);
            prop_assert_eq!(decode(&mut buf, state(&p, v), usize::MAX), Ok(None));
            prop_assert_eq!(&buf[..], &full[..n]);
        }
    }

    #[test]
    fn size_limit_is_inclusive((v, p) in versioned_packet()) {
        let full = encoded(&p, v);
        let mut buf = full.clone();
        prop_assert_eq!(decode(&mut buf, state(&p, v), full.len()), Ok(Some(p.clone())));
        let mut buf = full.clone();
        let err = decode(&mut buf, state(&p, v), full.len() - 1).unwrap_err();
        prop_assert_eq!(err, DecodeError::PacketTooLarge { size: full.len(), max: full.len() - 1 });
    }

    #[test]
    fn back_to_back(
        (v, a, b) in any_version().prop_flat_map(|v| (Just(v), packet(v), packet(v)))
            .prop_filter("CONNECT only comes first", |(_, _, b)| !matches!(b, Packet::Connect(_)))
    ) {
        let mut buf = encoded(&a, v);
        encode(&b, v, &mut buf);
        // Plus the first byte of a third packet, which must wait for more.
        buf.put_u8(0xC0);
        prop_assert_eq!(decode(&mut buf, state(&a, v), usize::MAX), Ok(Some(a)));
        prop_assert_eq!(decode(&mut buf, Some(v), usize::MAX), Ok(Some(b)));
        prop_assert_eq!(decode(&mut buf, Some(v), usize::MAX), Ok(None));
        prop_assert_eq!(&buf[..], &[0xC0][..]);
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..300),
        version in of(any_version()),
        max in prop_oneof![Just(usize::MAX), 0usize..400],
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut buf, version, max) {}
    }

    #[test]
    fn mutated_packets_never_panic(
        (v, p) in versioned_packet(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        truncate in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encoded(&p, v).to_vec();
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let keep = truncate.index(bytes.len() + 1);
        for input in [&bytes[..], &bytes[..keep]] {
            for state in [None, Some(v)] {
                let mut buf = BytesMut::from(input);
                while let Ok(Some(_)) = decode(&mut buf, state, usize::MAX) {}
            }
        }
    }
}
