//! One MQTT connection, from CONNECT to close, over any byte stream: the MQTT
//! [`Edge`] of the client core.
//!
//! Owns: the connection's protocol state (version, topic aliases in both
//! directions, the client's Maximum Packet Size), decoding packets into
//! client-core calls and encoding deliveries and outcomes back into packets
//! (one place maps the core's outcomes to MQTT reason codes). Generic over
//! the stream so MQTT over TCP, TLS and WebSocket share this code.
//! Must never: decide policy (who may connect, publish, subscribe: that is
//! `crate::client`), route messages or keep session state. Reads and writes
//! go through `read_buf` / `write_buf`, so a partially received packet
//! survives a `select!` wake-up (cancel safety).

use crate::auth::Credentials;
use crate::broker::{Broker, Delivery, Message, MessageProperties, Outgoing, NEVER_EXPIRES};
use crate::client::lifecycle::{self, Door};
use crate::client::{self, AckToken, Client, ConnectInfo, Edge, Peer, Published, Received, Subscribed};
use crate::clock::now_ms;
use crate::model::reason;
use crate::model::CloseReason;
use crate::mqtt::decode::{decode, DecodeError};
use crate::mqtt::encode::{encode, encode_publish, publish_len, PublishRef};
use crate::mqtt::packet::*;
use crate::mqtt::runs;
use crate::topic::TopicName;
use bytes::BytesMut;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Smallest read we ask the kernel for; buffers start empty and the read
/// size grows (up to `MAX_READ_CHUNK`) only while reads keep filling it.
const READ_CHUNK: usize = 256;
/// Largest read: one read's worth of publishes is what a publisher routes
/// before it lets subscriber tasks run, so this also bounds how far a
/// publisher can run ahead of its subscribers' outboxes in one turn.
const MAX_READ_CHUNK: usize = 64 * 1024;
/// The largest packet MQTT can encode: a remaining length of 268,435,455
/// bytes plus the fixed header.
const MAX_ENCODABLE_PACKET: usize = 268_435_455 + 5;
/// A write buffer up to this size is kept between writes; larger ones are
/// given back, so a burst does not pin memory on a connection.
const SMALL_BUFFER: usize = 256;

/// A PUBLISH's bytes beyond its topic and payload, for reserving a batch's
/// write buffer: fixed header (5 at most), topic length (2), packet id (2),
/// and a little for MQTT 5 properties. An estimate: the buffer still grows
/// if a batch needs more.
const PUBLISH_OVERHEAD: usize = 16;

/// A byte stream an MQTT connection runs over (TCP, or a WebSocket seen as bytes).
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Ready when a read would find data (or end of stream), so an idle
    /// connection can wait without holding a read buffer. Streams that
    /// cannot tell are ready at once.
    fn poll_ready_to_read(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl ByteStream for tokio::net::TcpStream {
    fn poll_ready_to_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

/// Serves one client until the connection ends.
///
/// Not an `async fn` itself: an async fn's future keeps its arguments for
/// its whole life, next to the `Connection` they were moved into, and this
/// future is what every idle connection's task holds.
pub fn serve<S>(stream: S, peer: Peer, broker: Arc<Broker>) -> impl std::future::Future<Output = ()> + Send
where
    S: ByteStream,
{
    let max_packet = broker.config().mqtt.max_packet_size as usize;
    let conn = Connection {
        stream,
        peer: Some(Box::new(peer)),
        read_buf: BytesMut::new(),
        write_buf: BytesMut::new(),
        written: 0,
        version: ProtocolVersion::V311,
        read_chunk: READ_CHUNK,
        max_packet,
        state: Box::default(),
    };
    lifecycle::run(conn, broker)
}

/// The phases around the serve loop, as MQTT speaks them (the order and
/// the bounds are the client core's, `client::lifecycle`).
impl<S: ByteStream> Door for Connection<S> {
    type Connect = Box<Connect>;

    async fn read_connect(&mut self) -> Result<Option<Box<Connect>>, CloseReason> {
        Connection::read_connect(self).await.map(Some)
    }

    /// Nothing is sent before a CONNECT was read: the connection closes.
    async fn refuse_connect(&mut self, reason: &CloseReason) {
        tracing::debug!(peer = ?self.peer_addr(), %reason, "connection closed before CONNECT completed");
    }

    async fn admit(&mut self, broker: &Arc<Broker>, connect: Box<Connect>) -> Option<Client> {
        // Out of its box at once: the box (and the read buffer the packet's
        // bytes point into) must not live as long as the connection.
        let client = self.accept_connect(broker, *connect).await?;
        // Admitted: who the peer is now lives in the client and its session.
        self.peer = None;
        self.release_idle_read_buffer();
        Some(client)
    }

    async fn goodbye(&mut self, reason: &CloseReason) {
        if let (Some(code), true) = (reason.disconnect_code(), self.version.is_v5()) {
            self.send_now(Packet::Disconnect(Disconnect { reason_code: code, properties: Default::default() })).await;
        }
        let _ = self.stream.shutdown().await;
    }

    async fn linger(&mut self) {
        let mut scratch = vec![0u8; 4096];
        while let Ok(n) = self.stream.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    }
}

/// The MQTT side of one connection: the socket, its buffers, and the state
/// the spec scopes to one network connection.
struct Connection<S> {
    stream: S,
    /// Until the client is admitted (boxed and then dropped: every idle
    /// connection's task would otherwise carry it).
    peer: Option<Box<Peer>>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Bytes of `write_buf` already written (a flush in progress).
    written: usize,
    version: ProtocolVersion,
    /// Bytes asked for per read (adaptive, see `read_more`).
    read_chunk: usize,
    max_packet: usize,
    /// Boxed: empty maps and small numbers, but it would otherwise weigh on
    /// every idle connection's task.
    state: Box<ConnectionState>,
}

/// Per-connection protocol state that exists once CONNECT is accepted.
#[derive(Default)]
struct ConnectionState {
    /// Session expiry asked for at CONNECT; MQTT 5 forbids raising it from 0 at DISCONNECT.
    connect_expiry: u32,
    /// Topic aliases, boxed on first use: only MQTT 5 clients that use them
    /// have any, and this state is in every connection.
    aliases: Option<Box<TopicAliases>>,
    outbound_alias_max: u16,
    /// Client's Maximum Packet Size; larger deliveries are dropped ([MQTT-3.1.2-24]).
    client_max_packet: usize,
    /// The broker's topic alias maximum towards us.
    topic_alias_maximum: u16,
    receive_maximum: u16,
}

/// MQTT 5 topic aliases of one connection, in both directions. (The
/// process's hash keys: an empty map is 32 bytes, not 48.)
#[derive(Default)]
struct TopicAliases {
    /// Set by the client for topics it publishes to.
    inbound: HashMap<u16, String, crate::topic::ProcessKeys>,
    /// Assigned by us for topics sent to the client.
    outbound: HashMap<TopicName, u16, crate::topic::ProcessKeys>,
}

impl<S: ByteStream> Edge for Connection<S> {
    /// Enough to amortise the syscall, small enough that a thousand slow
    /// subscribers' write buffers stay a few megabytes in all (each holds at
    /// most one batch).
    const DRAIN_BATCH: usize = 256;

    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received, CloseReason>> {
        self.poll_read_more(cx)
    }

    async fn handle(&mut self, client: &mut Client) -> Result<(), CloseReason> {
        self.handle_buffered_packets(client).await
    }

    fn write_outgoing(&mut self, client: &mut Client, item: Outgoing) {
        self.write_delivery(client, item)
    }

    fn reserve(&mut self, items: usize, bytes: usize) {
        self.write_buf.reserve(bytes + items * PUBLISH_OVERHEAD);
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>> {
        self.poll_flush_writes(cx)
    }

    fn acknowledged(&mut self, client: &mut Client, token: AckToken, published: Published) -> Result<(), CloseReason> {
        self.answer_publish(client, token, published)
    }
}

impl<S> Connection<S>
where
    S: ByteStream,
{
    /// The peer's address, for logs before admission.
    fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.peer.as_ref().map(|p| p.addr)
    }

    // ---- CONNECT -----------------------------------------------------------

    async fn read_connect(&mut self) -> Result<Box<Connect>, CloseReason> {
        loop {
            match decode(&mut self.read_buf, None, self.max_packet) {
                Ok(Some(Packet::Connect(connect))) => return Ok(connect),
                Ok(Some(_)) => {
                    return Err(CloseReason::violation(
                        reason::PROTOCOL_ERROR,
                        "[MQTT-3.1.0-1] first packet must be CONNECT",
                    ))
                }
                Ok(None) => {}
                Err(e) => {
                    if matches!(e, DecodeError::UnsupportedProtocolVersion { .. }) {
                        // [MQTT-3.1.2-2]: answer with return code 0x01 in 3.1.1 format.
                        let ack = ConnAck { reason_code: reason::UNSUPPORTED_PROTOCOL_VERSION, ..Default::default() };
                        self.version = ProtocolVersion::V311;
                        self.send_now(Packet::ConnAck(ack)).await;
                    }
                    return Err(e.into());
                }
            }
            if let Received::Closed = self.read_more().await? {
                return Err(CloseReason::PeerClosed);
            }
        }
    }

    async fn refuse(&mut self, code: u8, why: &str) {
        tracing::debug!(peer = ?self.peer_addr(), code, why, "refusing CONNECT");
        let mut ack = ConnAck { reason_code: code, ..Default::default() };
        if self.version.is_v5() {
            ack.properties.reason_string = Some(why.to_string());
        }
        self.send_now(Packet::ConnAck(ack)).await;
        let _ = self.stream.shutdown().await;
    }

    async fn accept_connect(&mut self, broker: &Arc<Broker>, connect: Connect) -> Option<Client> {
        self.version = connect.protocol;
        let v5 = connect.protocol.is_v5();
        let cfg = &broker.config().mqtt;

        if connect.client_id.is_empty() && !connect.clean_start && !v5 {
            self.refuse(reason::CLIENT_IDENTIFIER_NOT_VALID, "[MQTT-3.1.3-8] empty client id needs clean session")
                .await;
            return None;
        }
        if connect.properties.authentication_method.is_some() {
            self.refuse(reason::BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported").await;
            return None;
        }
        let requested_expiry = if v5 {
            connect.properties.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            NEVER_EXPIRES
        };
        let info = ConnectInfo {
            client_id: connect.client_id,
            clean_start: connect.clean_start,
            session_expiry_secs: requested_expiry,
            receive_maximum: connect.properties.receive_maximum.unwrap_or(u16::MAX),
            keep_alive_secs: u32::from(connect.keep_alive),
            // MQTT 5 lets the server lower the keep-alive; 3.1.1 cannot be told.
            may_lower_keep_alive: v5,
            will: connect.will,
            credentials: Credentials { username: connect.username, password: connect.password },
            protocol: match connect.protocol {
                ProtocolVersion::V31 => "3.1",
                ProtocolVersion::V311 => "3.1.1",
                ProtocolVersion::V5 => "5",
            },
        };
        let peer = self.peer.as_deref().expect("the peer is known until admission");
        let admitted = match client::admit(broker, peer, info).await {
            Ok(admitted) => admitted,
            Err(refused) => {
                self.refuse(refused.code, &refused.why).await;
                return None;
            }
        };
        let mut ack =
            ConnAck { session_present: admitted.session_present, reason_code: reason::SUCCESS, ..Default::default() };
        if v5 {
            let p = &mut ack.properties;
            p.assigned_client_identifier = admitted.assigned_client_id.clone();
            p.receive_maximum = Some(cfg.receive_maximum);
            p.maximum_packet_size = Some(cfg.max_packet_size);
            p.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            if admitted.session_expiry_secs != requested_expiry {
                p.session_expiry_interval = Some(admitted.session_expiry_secs);
            }
            if admitted.keep_alive_secs != u32::from(connect.keep_alive) {
                p.server_keep_alive = Some(admitted.keep_alive_secs as u16);
            }
        }
        self.write(&Packet::ConnAck(ack));
        *self.state = ConnectionState {
            connect_expiry: requested_expiry,
            aliases: None,
            outbound_alias_max: if v5 { connect.properties.topic_alias_maximum.unwrap_or(0) } else { 0 },
            client_max_packet: connect.properties.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
            topic_alias_maximum: cfg.topic_alias_maximum,
            receive_maximum: cfg.receive_maximum,
        };
        let mut client = admitted.client;
        for item in admitted.resend {
            self.write_delivery(&mut client, item);
        }
        Some(client)
    }

    // ---- inbound -------------------------------------------------------------

    async fn handle_buffered_packets(&mut self, client: &mut Client) -> Result<(), CloseReason> {
        loop {
            let packet = match decode(&mut self.read_buf, Some(self.version), self.max_packet) {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(e) => return Err(e.into()),
            };
            match packet {
                // Plain QoS 0 messages to one topic, back to back: one run.
                Packet::Publish(publish)
                    if runs::is_plain(&publish)
                        && runs::next_is_plain_publish_to(
                            &self.read_buf,
                            self.version.is_v5(),
                            &publish.topic,
                            self.max_packet,
                        ) =>
                {
                    let run = runs::take_run(&mut self.read_buf, self.version, self.max_packet, publish)?;
                    // Boxed: the run's state stays out of every connection's task.
                    Box::pin(runs::publish_run(client, run, self.version.is_v5())).await?;
                }
                packet => self.handle_packet(client, packet).await?,
            }
            client.yield_if_routed_enough().await;
        }
        self.release_idle_read_buffer();
        Ok(())
    }

    /// Nothing partial left and traffic is light: hold no read buffer while
    /// waiting (the next read allocates `read_chunk` bytes).
    fn release_idle_read_buffer(&mut self) {
        if self.read_buf.is_empty() && (self.read_chunk == READ_CHUNK || self.read_buf.capacity() > MAX_READ_CHUNK) {
            self.read_buf = BytesMut::new();
        }
    }

    async fn handle_packet(&mut self, client: &mut Client, packet: Packet) -> Result<(), CloseReason> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(client, publish).await?,
            Packet::PubAck(ack) => {
                if !client.session().puback(ack.packet_id) {
                    tracing::debug!(client_id = %client.client_id(), packet_id = ack.packet_id, "PUBACK for unknown packet id");
                }
            }
            Packet::PubRec(rec) => {
                let known = client.session().pubrec(rec.packet_id, rec.reason_code);
                if rec.reason_code < 0x80 {
                    let code = if known { reason::SUCCESS } else { reason::PACKET_IDENTIFIER_NOT_FOUND };
                    self.write(&Packet::PubRel(ack(rec.packet_id, code)));
                }
            }
            Packet::PubComp(comp) => {
                client.session().pubcomp(comp.packet_id);
            }
            Packet::PubRel(rel) => {
                let code = if client.session().release_incoming_qos2(rel.packet_id) {
                    reason::SUCCESS
                } else {
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.write(&Packet::PubComp(ack(rel.packet_id, code)));
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(client, subscribe)?,
            Packet::Unsubscribe(unsubscribe) => {
                let reason_codes = unsubscribe.filters.iter().map(|f| client.unsubscribe(f).reason_code()).collect();
                self.write(&Packet::UnsubAck(UnsubAck {
                    packet_id: unsubscribe.packet_id,
                    reason_codes,
                    properties: Default::default(),
                }));
            }
            Packet::PingReq => self.write(&Packet::PingResp),
            Packet::Disconnect(disconnect) => {
                if let Some(expiry) = disconnect.properties.session_expiry_interval {
                    if self.state.connect_expiry == 0 && expiry != 0 {
                        return Err(CloseReason::violation(
                            reason::PROTOCOL_ERROR,
                            "[MQTT-3.14.2-2] session expiry set at DISCONNECT after 0 at CONNECT",
                        ));
                    }
                    client.session().set_expiry_secs(client.broker().capped_expiry(expiry));
                }
                return Err(if disconnect.reason_code == reason::DISCONNECT_WITH_WILL {
                    CloseReason::ClientDisconnectedWithWill
                } else {
                    CloseReason::ClientDisconnected
                });
            }
            Packet::Connect(_) => {
                return Err(CloseReason::violation(reason::PROTOCOL_ERROR, "[MQTT-3.1.0-2] second CONNECT"));
            }
            Packet::Auth(_) => {
                return Err(CloseReason::violation(reason::PROTOCOL_ERROR, "AUTH without enhanced authentication"));
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(CloseReason::violation(reason::PROTOCOL_ERROR, "server-to-client packet sent by a client"));
            }
        }
        Ok(())
    }

    async fn handle_publish(&mut self, client: &mut Client, publish: Publish) -> Result<(), CloseReason> {
        let topic = self.resolve_topic(&publish)?;
        let packet_id = publish.packet_id;
        if publish.qos == QoS::ExactlyOnce {
            if !client.session().begin_incoming_qos2(packet_id) {
                // A retransmission of a message we already took: acknowledge again, publish once.
                self.write(&Packet::PubRec(ack(packet_id, reason::SUCCESS)));
                return Ok(());
            }
            if client.session().incoming_qos2_len() > self.state.receive_maximum as usize {
                return Err(CloseReason::violation(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    "[MQTT-3.3.4-7] receive maximum exceeded",
                ));
            }
        }
        let props = publish.properties;
        let mut message = Message::new(topic, publish.payload, publish.qos, publish.retain);
        message.expires_at_ms = props.message_expiry_interval.map(|s| now_ms() + u64::from(s) * 1000);
        message.properties = MessageProperties {
            payload_format_indicator: props.payload_format_indicator,
            content_type: props.content_type,
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            user_properties: props.user_properties,
        };
        // A single message may ask for high priority (topic classes: never
        // sampled or shed); the client core honours it only for the class's roles.
        message.handling.high_priority =
            message.properties.user_properties.iter().any(|(k, v)| k == "priority" && v == "high");
        if publish.qos == QoS::AtMostOnce {
            let published = client.publish(message).await;
            return runs::answer_at_most_once(client, published, self.version.is_v5());
        }
        // In a cluster the answer may wait for JetStream: reading goes on
        // meanwhile, and `acknowledged` writes it (client/acks.rs).
        let token = AckToken { packet_id, qos: publish.qos };
        match client.publish_answered_later(message, token).await {
            Some(published) => self.answer_publish(client, token, published),
            None => Ok(()),
        }
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2) for a publish, now or once owed.
    fn answer_publish(
        &mut self,
        client: &mut Client,
        token: AckToken,
        published: Published,
    ) -> Result<(), CloseReason> {
        let AckToken { packet_id, qos } = token;
        if !self.version.is_v5() {
            // MQTT 3.1.1 acknowledgements carry no reason code: a PUBACK would
            // say "accepted". A message the store could not make durable, or
            // that its class refused, is answered by closing the connection
            // (the client sends it again later). An ACL denial is acknowledged
            // and dropped, like Mosquitto, so a client cannot loop on it.
            match published {
                Published::StoreFailed => {
                    return Err(CloseReason::PublishFailed {
                        code: reason::UNSPECIFIED_ERROR,
                        what: "the store could not make the message durable".into(),
                    })
                }
                Published::Refused(refusal) => {
                    return Err(CloseReason::PublishFailed { code: refusal.reason_code(), what: refusal.text().into() })
                }
                _ => {}
            }
        }
        let code = match published {
            // PUBACK/PUBREC cannot carry 0x96/0x95; 0x97 (quota exceeded) is the closest.
            Published::Refused(refusal) => {
                tracing::debug!(client_id = %client.client_id(), ?refusal, "publish refused by its topic class");
                reason::QUOTA_EXCEEDED
            }
            other => other.reason_code(),
        };
        if code >= 0x80 && qos == QoS::ExactlyOnce {
            // A failed PUBREC ends the QoS 2 exchange ([MQTT-4.3.3]).
            client.session().release_incoming_qos2(packet_id);
        }
        let reply = ack(packet_id, code);
        self.write(&if qos == QoS::AtLeastOnce { Packet::PubAck(reply) } else { Packet::PubRec(reply) });
        Ok(())
    }

    /// Applies MQTT 5 topic aliases and validates the topic name.
    fn resolve_topic(&mut self, publish: &Publish) -> Result<TopicName, CloseReason> {
        let mut topic = publish.topic.as_str();
        if let Some(alias) = publish.properties.topic_alias {
            let max = self.state.topic_alias_maximum;
            if alias == 0 || alias > max {
                return Err(CloseReason::violation(
                    reason::TOPIC_ALIAS_INVALID,
                    format!("[MQTT-3.3.2-9] topic alias {alias} outside 1..={max}"),
                ));
            }
            if topic.is_empty() {
                match self.state.aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
                    Some(t) => topic = t.as_str(),
                    None => {
                        return Err(CloseReason::violation(
                            reason::PROTOCOL_ERROR,
                            format!("topic alias {alias} used before it was set"),
                        ));
                    }
                }
            } else {
                self.state.aliases.get_or_insert_with(Default::default).inbound.insert(alias, topic.to_string());
            }
        }
        TopicName::new(topic).map_err(|e| CloseReason::violation(reason::TOPIC_NAME_INVALID, e.to_string()))
    }

    fn handle_subscribe(&mut self, client: &mut Client, subscribe: Subscribe) -> Result<(), CloseReason> {
        let identifier = subscribe.properties.subscription_identifier;
        if subscribe.filters.iter().any(|f| f.options.no_local && f.filter.starts_with("$share/")) {
            return Err(CloseReason::violation(
                reason::PROTOCOL_ERROR,
                "[MQTT-3.8.3-4] no local on a shared subscription",
            ));
        }
        // The encoder maps failures to 0x80 for 3.1.1 clients.
        let reason_codes = client
            .subscribe_all(subscribe.filters.into_iter().map(|f| (f.filter, f.options)), identifier)
            .iter()
            .map(Subscribed::reason_code)
            .collect();
        // SUBACK goes into the write buffer before the retained messages that
        // the subscription queued, so the client sees them in that order.
        self.write(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reason_codes,
            properties: Default::default(),
        }));
        Ok(())
    }

    // ---- outbound --------------------------------------------------------------

    fn write_delivery(&mut self, client: &mut Client, item: Outgoing) {
        let (packet_id, dup, delivery) = match item {
            Outgoing::PubRel { packet_id } => return self.write(&Packet::PubRel(ack(packet_id, reason::SUCCESS))),
            Outgoing::Publish { packet_id, dup, delivery } => (packet_id, dup, delivery),
        };
        let version = self.version;
        let m = &delivery.message;
        if packet_id == 0 && self.can_share_frame(&delivery) {
            // Encode once, write many: every subscriber of this protocol family
            // that takes the message unchanged copies one cached frame. A
            // message nobody else holds (point-to-point) skips the cache.
            let encode_into = |buf: &mut BytesMut, max_size: usize| {
                let properties = if version.is_v5() { message_properties(m) } else { PublishProperties::default() };
                let publish = PublishRef {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: m.topic.as_str(),
                    packet_id: 0,
                    payload: &m.payload,
                    properties: &properties,
                };
                if publish_len(&publish, version) <= max_size {
                    encode_publish(&publish, version, buf);
                }
            };
            let max_size = self.deliverable_size();
            if Arc::strong_count(m) <= 1 {
                // [MQTT-3.1.2-25]: a packet over the client's maximum is
                // discarded as if delivered (here: not encoded).
                encode_into(&mut self.write_buf, max_size);
            } else {
                // The cached frame is encoded whatever its size; its length
                // is the packet's, checked against this client's maximum.
                let frame = m.wire.get_or_encode(usize::from(version.is_v5()), || {
                    let mut buf = BytesMut::new();
                    encode_into(&mut buf, MAX_ENCODABLE_PACKET);
                    buf.freeze()
                });
                if frame.len() <= max_size {
                    self.write_buf.extend_from_slice(frame);
                }
            }
            return;
        }
        let mut properties = PublishProperties::default();
        let mut topic = m.topic.as_str();
        let mut new_alias = false;
        if version.is_v5() {
            properties = message_properties(m);
            properties.message_expiry_interval = m.remaining_expiry_secs(now_ms());
            properties.subscription_identifiers = delivery.subscription_ids.to_vec();
            let alias_max = self.state.outbound_alias_max as usize;
            if alias_max > 0 {
                let aliases = &mut self.state.aliases.get_or_insert_with(Default::default).outbound;
                if let Some(alias) = aliases.get(&m.topic) {
                    properties.topic_alias = Some(*alias);
                    topic = "";
                } else if aliases.len() < alias_max {
                    let alias = aliases.len() as u16 + 1;
                    aliases.insert(m.topic.clone(), alias);
                    properties.topic_alias = Some(alias);
                    new_alias = true;
                }
            }
        }
        let publish = PublishRef {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic,
            packet_id,
            payload: &m.payload,
            properties: &properties,
        };
        if publish_len(&publish, version) > self.deliverable_size() {
            // [MQTT-3.1.2-25]: discard as if delivered. An alias assigned just
            // now was never seen by the client, so it must not be used later.
            if let Some(aliases) = self.state.aliases.as_mut().filter(|_| new_alias) {
                aliases.outbound.remove(&m.topic);
            }
            if packet_id != 0 {
                client.session().discard_inflight(packet_id);
            }
            return;
        }
        encode_publish(&publish, version, &mut self.write_buf);
    }

    /// The largest PUBLISH this client can be sent: its Maximum Packet Size,
    /// and never more than the protocol can encode (a message that grew past
    /// it with per-subscriber properties is discarded, not a panic).
    fn deliverable_size(&self) -> usize {
        self.state.client_max_packet.min(MAX_ENCODABLE_PACKET)
    }

    /// Whether this delivery is byte-for-byte the same for every subscriber
    /// of this protocol family: QoS 0, no retain flag, no subscription ids,
    /// and (MQTT 5) no topic alias and no expiry countdown.
    fn can_share_frame(&self, delivery: &Delivery) -> bool {
        delivery.qos == QoS::AtMostOnce
            && !delivery.retain
            && delivery.subscription_ids.is_empty()
            && (!self.version.is_v5()
                || (self.state.outbound_alias_max == 0 && delivery.message.expires_at_ms.is_none()))
    }

    // ---- I/O ---------------------------------------------------------------------

    fn write(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.write_buf);
    }

    async fn flush_writes(&mut self) -> Result<(), CloseReason> {
        std::future::poll_fn(|cx| self.poll_flush_writes(cx)).await
    }

    /// Writes the pending bytes out; `written` keeps the progress across
    /// polls (cancel safe: the buffer is only cleared once all is written).
    fn poll_flush_writes(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>> {
        let io = |e: std::io::Error| CloseReason::Io(e.to_string());
        while self.written < self.write_buf.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.write_buf[self.written..])).map_err(io)?;
            if n == 0 {
                return Poll::Ready(Err(CloseReason::Io("the connection took no more bytes".into())));
            }
            self.written += n;
        }
        if self.write_buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.stream).poll_flush(cx)).map_err(io)?;
        self.written = 0;
        // Written out: give the buffer back unless it is small. A busy writer
        // pays one allocation per write; an idle connection holds nothing.
        if self.write_buf.capacity() > SMALL_BUFFER {
            self.write_buf = BytesMut::new();
        } else {
            self.write_buf.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Writes one packet immediately (used around connect and close).
    async fn send_now(&mut self, packet: Packet) {
        self.write(&packet);
        let _ = self.flush_writes().await;
    }

    /// Reads what the socket has into `read_buf`. Cancel safe: bytes are
    /// appended to the buffer only when a read completes.
    async fn read_more(&mut self) -> Result<Received, CloseReason> {
        std::future::poll_fn(|cx| self.poll_read_more(cx)).await
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received, CloseReason>> {
        if self.read_buf.capacity() == 0 {
            // Idle: wait for data before allocating the buffer to read it into.
            ready!(self.stream.poll_ready_to_read(cx)).map_err(|e| CloseReason::Io(e.to_string()))?;
        }
        let spare = self.read_buf.capacity() - self.read_buf.len();
        if spare < self.read_chunk {
            self.read_buf.reserve(self.read_chunk);
        }
        let spare = self.read_buf.capacity() - self.read_buf.len();
        let read = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf));
        Poll::Ready(match read {
            Ok(0) => Ok(Received::Closed),
            Ok(n) => {
                // Grow the read while the socket keeps filling it; shrink when traffic calms.
                if n == spare {
                    self.read_chunk = (self.read_chunk * 2).min(MAX_READ_CHUNK);
                } else if n < self.read_chunk / 4 {
                    self.read_chunk = (self.read_chunk / 2).max(READ_CHUNK);
                }
                Ok(Received::Data)
            }
            Err(e) => Err(CloseReason::Io(e.to_string())),
        })
    }
}

/// The MQTT 5 properties a message carries to every subscriber.
fn message_properties(m: &Message) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: m.properties.payload_format_indicator,
        response_topic: m.properties.response_topic.clone(),
        correlation_data: m.properties.correlation_data.clone(),
        user_properties: m.properties.user_properties.clone(),
        content_type: m.properties.content_type.clone(),
        ..Default::default()
    }
}

fn ack(packet_id: u16, reason_code: u8) -> PubResp {
    PubResp { packet_id, reason_code, properties: Default::default() }
}
