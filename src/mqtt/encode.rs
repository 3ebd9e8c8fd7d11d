//! MQTT 3.1.1 / 5.0 packet encoder.
//!
//! Owns: the wire format of every [`Packet`] for either protocol family, the
//! mapping of v5 reason codes to 3.1.1 return codes, dropping properties for
//! 3.1.1, the v5 short forms (PUBACK..PUBCOMP, DISCONNECT and AUTH without
//! reason code or properties), and [`encoded_len`], which the broker checks
//! against the peer's Maximum Packet Size before sending.
//!
//! Must never: allocate beyond one `buf.reserve` per packet (PUBLISH is the hot
//! path), decide *what* to send (choosing reason codes, stripping properties
//! the peer did not ask for, enforcing the peer's Maximum Packet Size or topic
//! alias limits is the broker's job), or do I/O.
//!
//! Each packet body is written once by a function generic over `Sink`: run
//! with a `Counter` it computes lengths arithmetically (payloads are only
//! measured, never copied), run with a `BytesMut` it writes. So lengths and
//! bytes cannot disagree.
//!
//! # Panics
//! `encode` and `encoded_len` panic if the packet cannot be represented at
//! all: a string or binary field longer than 65,535 bytes, or a remaining
//! length, property length or subscription identifier above 268,435,455.
//! Packets produced by `decode` never do; the broker must bound what it builds
//! itself (e.g. a PUBLISH whose alias was expanded) with `encoded_len` against
//! the peer's limit first.

use bytes::{BufMut, BytesMut};

use crate::model::reason;
use crate::mqtt::packet::{
    AckProperties, Auth, ConnAck, Connect, Disconnect, Packet, ProtocolVersion, PubResp, Publish, QoS, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, UserProperties,
};
use crate::mqtt::primitives::{prop, MAX_VARINT};

/// Appends the encoded packet to `buf`.
///
/// `version` selects the 3.1.1 (`V31`/`V311`) or 5.0 wire format; for 3.1.1
/// properties are dropped and reason codes mapped:
/// - CONNACK: see [`connack_return_code`];
/// - SUBACK: granted QoS 0..=2 kept, anything else becomes 0x80 (failure);
/// - UNSUBACK, PUBACK..PUBCOMP: no reason codes on the wire;
/// - DISCONNECT: empty body (3.1.1 only has client-to-server DISCONNECT; the
///   broker should just close instead of sending it);
/// - AUTH does not exist in 3.1.1 and must not be sent; it is written in the
///   5.0 format regardless.
///
/// CONNECT is written for `version` (`MQIsdp` level 3, `MQTT` level 4 or 5);
/// `Connect::protocol` is ignored. A PUBLISH with QoS 0 is sent with DUP=0
/// and a CONNACK with a failure code with session present 0, as the spec
/// requires ([MQTT-3.3.1-2], [MQTT-3.2.2-6]).
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    let remaining = body_len(packet, version);
    buf.reserve(1 + varint_len(remaining) + remaining);
    let start = buf.len();
    buf.put_u8(first_byte(packet));
    put_varint(buf, remaining);
    body(buf, packet, version);
    debug_assert_eq!(buf.len() - start, 1 + varint_len(remaining) + remaining);
}

/// Size of the encoded packet in bytes, fixed header included. Computed
/// arithmetically: nothing is copied or allocated.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let remaining = body_len(packet, version);
    1 + varint_len(remaining) + remaining
}

/// The 3.1.1 CONNACK return code (§3.2.2.3 of 3.1.1) closest to a v5 reason
/// code:
/// - 0x00 → 0 accepted;
/// - 0x84 unsupported protocol version → 1;
/// - 0x85 client identifier not valid → 2;
/// - "try later or elsewhere" failures (0x88 server unavailable, 0x89 busy,
///   0x8B shutting down, 0x97 quota exceeded, 0x9C use another server, 0x9D
///   server moved, 0x9F connection rate exceeded) → 3 server unavailable;
/// - 0x86 bad user name or password, 0x8C bad authentication method → 4;
/// - every other failure (0x87 not authorized, 0x8A banned, 0x80 unspecified,
///   malformed, protocol error, …) → 5 not authorized, the answer that does
///   not invite the client to retry in a loop.
pub fn connack_return_code(reason_code: u8) -> u8 {
    match reason_code {
        reason::SUCCESS => 0,
        reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        reason::CLIENT_IDENTIFIER_NOT_VALID => 2,
        reason::SERVER_UNAVAILABLE
        | reason::SERVER_BUSY
        | reason::SERVER_SHUTTING_DOWN
        | reason::QUOTA_EXCEEDED
        | reason::USE_ANOTHER_SERVER
        | reason::SERVER_MOVED
        | reason::CONNECTION_RATE_EXCEEDED => 3,
        reason::BAD_USER_NAME_OR_PASSWORD | reason::BAD_AUTHENTICATION_METHOD => 4,
        _ => 5,
    }
}

/// Byte sink the body writers are generic over: a real buffer or a counter.
trait Sink {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn slice(&mut self, s: &[u8]);
}

impl Sink for BytesMut {
    fn u8(&mut self, v: u8) {
        self.put_u8(v);
    }
    fn u16(&mut self, v: u16) {
        self.put_u16(v);
    }
    fn u32(&mut self, v: u32) {
        self.put_u32(v);
    }
    fn slice(&mut self, s: &[u8]) {
        self.put_slice(s);
    }
}

/// Counts bytes instead of writing them.
#[derive(Default)]
struct Counter(usize);

impl Sink for Counter {
    fn u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn slice(&mut self, s: &[u8]) {
        self.0 += s.len();
    }
}

fn body_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let mut c = Counter::default();
    body(&mut c, packet, version);
    c.0
}

/// Number of bytes of `v` as a Variable Byte Integer.
fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Variable Byte Integer (§1.5.5).
fn put_varint<S: Sink>(s: &mut S, v: usize) {
    assert!(v <= MAX_VARINT as usize, "MQTT variable byte integer {v} exceeds 268435455");
    let mut v = v;
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        s.u8(b);
        if v == 0 {
            break;
        }
    }
}

/// Binary Data (§1.5.6).
fn put_binary<S: Sink>(s: &mut S, b: &[u8]) {
    let len = u16::try_from(b.len()).expect("MQTT string or binary field longer than 65535 bytes");
    s.u16(len);
    s.slice(b);
}

/// UTF-8 Encoded String (§1.5.4).
fn put_str<S: Sink>(s: &mut S, v: &str) {
    put_binary(s, v.as_bytes());
}

/// Writes a property block: its Variable Byte Integer length, then the
/// properties written by `props` (run twice: once counting, once writing).
fn put_props<S: Sink, P: Props + ?Sized>(s: &mut S, p: &P) {
    let mut c = Counter::default();
    p.write(&mut c);
    put_varint(s, c.0);
    p.write(s);
}

/// A set of v5 properties that can write itself to any sink.
trait Props {
    fn write<S: Sink>(&self, s: &mut S);
}

// Typed single-property writers: nothing is written for `None`.
fn p_u8<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.u8(id);
        s.u8(v);
    }
}
fn p_u16<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.u8(id);
        s.u16(v);
    }
}
fn p_u32<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.u8(id);
        s.u32(v);
    }
}
fn p_str<S: Sink>(s: &mut S, id: u8, v: Option<&str>) {
    if let Some(v) = v {
        s.u8(id);
        put_str(s, v);
    }
}
fn p_bin<S: Sink>(s: &mut S, id: u8, v: Option<&[u8]>) {
    if let Some(v) = v {
        s.u8(id);
        put_binary(s, v);
    }
}
fn p_user<S: Sink>(s: &mut S, v: &UserProperties) {
    for (k, val) in v {
        s.u8(prop::USER_PROPERTY);
        put_str(s, k);
        put_str(s, val);
    }
}

impl Props for crate::mqtt::packet::ConnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        p_u32(s, prop::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        p_u16(s, prop::RECEIVE_MAXIMUM, self.receive_maximum);
        p_u32(s, prop::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        p_u16(s, prop::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        p_u8(s, prop::REQUEST_RESPONSE_INFORMATION, self.request_response_information);
        p_u8(s, prop::REQUEST_PROBLEM_INFORMATION, self.request_problem_information);
        p_str(s, prop::AUTHENTICATION_METHOD, self.authentication_method.as_deref());
        p_bin(s, prop::AUTHENTICATION_DATA, self.authentication_data.as_deref());
        p_user(s, &self.user_properties);
    }
}

impl Props for crate::mqtt::packet::WillProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        p_u32(s, prop::WILL_DELAY_INTERVAL, self.will_delay_interval);
        p_u8(s, prop::PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        p_u32(s, prop::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        p_str(s, prop::CONTENT_TYPE, self.content_type.as_deref());
        p_str(s, prop::RESPONSE_TOPIC, self.response_topic.as_deref());
        p_bin(s, prop::CORRELATION_DATA, self.correlation_data.as_deref());
        p_user(s, &self.user_properties);
    }
}

impl Props for crate::mqtt::packet::ConnAckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        p_u32(s, prop::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        p_u16(s, prop::RECEIVE_MAXIMUM, self.receive_maximum);
        p_u8(s, prop::MAXIMUM_QOS, self.maximum_qos);
        p_u8(s, prop::RETAIN_AVAILABLE, self.retain_available);
        p_u32(s, prop::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        p_str(s, prop::ASSIGNED_CLIENT_IDENTIFIER, self.assigned_client_identifier.as_deref());
        p_u16(s, prop::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        p_str(s, prop::REASON_STRING, self.reason_string.as_deref());
        p_u8(s, prop::WILDCARD_SUBSCRIPTION_AVAILABLE, self.wildcard_subscription_available);
        p_u8(s, prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE, self.subscription_identifiers_available);
        p_u8(s, prop::SHARED_SUBSCRIPTION_AVAILABLE, self.shared_subscription_available);
        p_u16(s, prop::SERVER_KEEP_ALIVE, self.server_keep_alive);
        p_str(s, prop::RESPONSE_INFORMATION, self.response_information.as_deref());
        p_str(s, prop::SERVER_REFERENCE, self.server_reference.as_deref());
        p_str(s, prop::AUTHENTICATION_METHOD, self.authentication_method.as_deref());
        p_bin(s, prop::AUTHENTICATION_DATA, self.authentication_data.as_deref());
        p_user(s, &self.user_properties);
    }
}

impl Props for crate::mqtt::packet::PublishProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        p_u8(s, prop::PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        p_u32(s, prop::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        p_u16(s, prop::TOPIC_ALIAS, self.topic_alias);
        p_str(s, prop::RESPONSE_TOPIC, self.response_topic.as_deref());
        p_bin(s, prop::CORRELATION_DATA, self.correlation_data.as_deref());
        p_user(s, &self.user_properties);
        for &id in &self.subscription_identifiers {
            s.u8(prop::SUBSCRIPTION_IDENTIFIER);
            put_varint(s, id as usize);
        }
        p_str(s, prop::CONTENT_TYPE, self.content_type.as_deref());
    }
}

impl Props for AckProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        p_str(s, prop::REASON_STRING, self.reason_string.as_deref());
        p_user(s, &self.user_properties);
    }
}

impl Props for crate::mqtt::packet::SubscribeProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        if let Some(id) = self.subscription_identifier {
            s.u8(prop::SUBSCRIPTION_IDENTIFIER);
            put_varint(s, id as usize);
        }
        p_user(s, &self.user_properties);
    }
}

impl Props for UserProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        p_user(s, self);
    }
}

impl Props for crate::mqtt::packet::DisconnectProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        p_u32(s, prop::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        p_str(s, prop::REASON_STRING, self.reason_string.as_deref());
        p_str(s, prop::SERVER_REFERENCE, self.server_reference.as_deref());
        p_user(s, &self.user_properties);
    }
}

impl Props for crate::mqtt::packet::AuthProperties {
    fn write<S: Sink>(&self, s: &mut S) {
        p_str(s, prop::AUTHENTICATION_METHOD, self.authentication_method.as_deref());
        p_bin(s, prop::AUTHENTICATION_DATA, self.authentication_data.as_deref());
        p_str(s, prop::REASON_STRING, self.reason_string.as_deref());
        p_user(s, &self.user_properties);
    }
}

/// Packet type and flags (§2.1.2, §2.1.3).
fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => {
            let qos = p.qos as u8;
            let dup = p.dup && p.qos != QoS::AtMostOnce;
            0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(p.retain)
        }
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

/// Variable header and payload.
fn body<S: Sink>(s: &mut S, packet: &Packet, version: ProtocolVersion) {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => connect(s, c, version),
        Packet::ConnAck(c) => connack(s, c, v5),
        Packet::Publish(p) => publish(s, p, v5),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => pub_resp(s, r, v5),
        Packet::Subscribe(sub) => subscribe(s, sub, v5),
        Packet::SubAck(a) => suback(s, a, v5),
        Packet::Unsubscribe(u) => unsubscribe(s, u, v5),
        Packet::UnsubAck(a) => unsuback(s, a, v5),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => disconnect(s, d, v5),
        Packet::Auth(a) => auth(s, a),
    }
}

fn connect<S: Sink>(s: &mut S, c: &Connect, version: ProtocolVersion) {
    let (name, level) = match version {
        ProtocolVersion::V31 => ("MQIsdp", 3),
        ProtocolVersion::V311 => ("MQTT", 4),
        ProtocolVersion::V5 => ("MQTT", 5),
    };
    put_str(s, name);
    s.u8(level);
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    s.u8(flags);
    s.u16(c.keep_alive);
    if version.is_v5() {
        put_props(s, &c.properties);
    }
    put_str(s, &c.client_id);
    if let Some(w) = &c.will {
        if version.is_v5() {
            put_props(s, &w.properties);
        }
        put_str(s, &w.topic);
        put_binary(s, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(s, u);
    }
    if let Some(p) = &c.password {
        put_binary(s, p);
    }
}

fn connack<S: Sink>(s: &mut S, c: &ConnAck, v5: bool) {
    // [MQTT-3.2.2-6]: session present is 0 whenever the connection is refused.
    s.u8(u8::from(c.session_present && c.reason_code == reason::SUCCESS));
    if v5 {
        s.u8(c.reason_code);
        put_props(s, &c.properties);
    } else {
        s.u8(connack_return_code(c.reason_code));
    }
}

fn publish<S: Sink>(s: &mut S, p: &Publish, v5: bool) {
    publish_body(s, &PublishRef::of(p), v5);
}

fn publish_body<S: Sink>(s: &mut S, p: &PublishRef<'_>, v5: bool) {
    put_str(s, p.topic);
    if p.qos != QoS::AtMostOnce {
        s.u16(p.packet_id);
    }
    if v5 {
        put_props(s, p.properties);
    }
    s.slice(p.payload);
}

/// A PUBLISH given by reference: what the delivery hot path encodes from a
/// shared message without building an owned [`Publish`] (no topic copy).
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty when an MQTT 5 topic alias stands for it.
    pub topic: &'a str,
    pub packet_id: u16,
    pub payload: &'a [u8],
    pub properties: &'a crate::mqtt::packet::PublishProperties,
}

impl<'a> PublishRef<'a> {
    pub fn of(p: &'a Publish) -> PublishRef<'a> {
        PublishRef {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: &p.topic,
            packet_id: p.packet_id,
            payload: &p.payload,
            properties: &p.properties,
        }
    }
}

/// Encodes a PUBLISH from borrowed parts; same bytes as [`encode`] of the
/// equivalent [`Publish`].
pub fn encode_publish(p: &PublishRef<'_>, version: ProtocolVersion, buf: &mut BytesMut) {
    let v5 = version == ProtocolVersion::V5;
    let remaining = publish_body_len(p, v5);
    buf.reserve(1 + varint_len(remaining) + remaining);
    let dup = p.dup && p.qos != QoS::AtMostOnce;
    buf.put_u8(0x30 | (u8::from(dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain));
    put_varint(buf, remaining);
    publish_body(buf, p, v5);
}

/// Size of [`encode_publish`]'s output, computed without encoding.
pub fn publish_len(p: &PublishRef<'_>, version: ProtocolVersion) -> usize {
    let remaining = publish_body_len(p, version == ProtocolVersion::V5);
    1 + varint_len(remaining) + remaining
}

fn publish_body_len(p: &PublishRef<'_>, v5: bool) -> usize {
    let mut c = Counter::default();
    publish_body(&mut c, p, v5);
    c.0
}

fn ack_props_empty(p: &AckProperties) -> bool {
    p.reason_string.is_none() && p.user_properties.is_empty()
}

fn pub_resp<S: Sink>(s: &mut S, r: &PubResp, v5: bool) {
    s.u16(r.packet_id);
    if !v5 {
        return;
    }
    // Short forms (§3.4.2.1): omit what is implied.
    let no_props = ack_props_empty(&r.properties);
    if r.reason_code == reason::SUCCESS && no_props {
        return;
    }
    s.u8(r.reason_code);
    if !no_props {
        put_props(s, &r.properties);
    }
}

fn subscription_options(o: &SubscriptionOptions, v5: bool) -> u8 {
    let qos = o.qos as u8;
    if !v5 {
        return qos;
    }
    qos | (u8::from(o.no_local) << 2) | (u8::from(o.retain_as_published) << 3) | ((o.retain_handling & 0x03) << 4)
}

fn subscribe<S: Sink>(s: &mut S, sub: &Subscribe, v5: bool) {
    s.u16(sub.packet_id);
    if v5 {
        put_props(s, &sub.properties);
    }
    for f in &sub.filters {
        put_str(s, &f.filter);
        s.u8(subscription_options(&f.options, v5));
    }
}

fn suback<S: Sink>(s: &mut S, a: &SubAck, v5: bool) {
    s.u16(a.packet_id);
    if v5 {
        put_props(s, &a.properties);
        s.slice(&a.reason_codes);
    } else {
        for &code in &a.reason_codes {
            s.u8(if code <= reason::GRANTED_QOS_2 { code } else { reason::UNSPECIFIED_ERROR });
        }
    }
}

fn unsubscribe<S: Sink>(s: &mut S, u: &Unsubscribe, v5: bool) {
    s.u16(u.packet_id);
    if v5 {
        put_props(s, &u.user_properties);
    }
    for f in &u.filters {
        put_str(s, f);
    }
}

fn unsuback<S: Sink>(s: &mut S, a: &UnsubAck, v5: bool) {
    s.u16(a.packet_id);
    if v5 {
        put_props(s, &a.properties);
        s.slice(&a.reason_codes);
    }
}

fn disconnect<S: Sink>(s: &mut S, d: &Disconnect, v5: bool) {
    if !v5 {
        return;
    }
    let p = &d.properties;
    let no_props = p.session_expiry_interval.is_none()
        && p.reason_string.is_none()
        && p.server_reference.is_none()
        && p.user_properties.is_empty();
    // Short form (§3.14.2.1): remaining length 0 for a normal disconnect.
    // Otherwise the property length is always written, even when zero: the
    // spec allows dropping it, but some clients (rumqttc 0.25) then wait
    // for bytes that never come instead of reading the reason code.
    if d.reason_code == reason::NORMAL_DISCONNECTION && no_props {
        return;
    }
    s.u8(d.reason_code);
    put_props(s, p);
}

fn auth<S: Sink>(s: &mut S, a: &Auth) {
    let p = &a.properties;
    let no_props = p.authentication_method.is_none()
        && p.authentication_data.is_none()
        && p.reason_string.is_none()
        && p.user_properties.is_empty();
    // §3.15.2.1: only the all-default AUTH may drop reason code and
    // property length; otherwise both are written.
    if a.reason_code == reason::SUCCESS && no_props {
        return;
    }
    s.u8(a.reason_code);
    put_props(s, p);
}
