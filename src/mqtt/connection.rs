//! One MQTT connection, from CONNECT to close, over any byte stream.
//!
//! Owns: the connection's protocol state (version, keep-alive, topic aliases
//! in both directions, the client's Maximum Packet Size) and the translation
//! between packets and broker calls. Generic over the stream so MQTT over TCP,
//! TLS and WebSocket share this code.
//! Must never: route messages or keep session state itself; that is the
//! broker's. Reads and writes go through `read_buf` / `write_buf`, so a
//! partially received packet survives a `select!` wake-up (cancel safety).
//!
//! The loop: wait for bytes, an outbox wake-up, a takeover, shutdown or the
//! keep-alive deadline; handle every complete packet in the read buffer;
//! drain the outbox into `write_buf`; write it with one call.

use crate::broker::{
    now_ms, Ack, Broker, ConnectRequest, Connected, Delivery, Message, MessageProperties, Outgoing, Session,
    NEVER_EXPIRES,
};
use crate::model::reason;
use crate::model::CloseReason;
use crate::mqtt::decode::{decode, DecodeError};
use crate::mqtt::encode::{encode, encode_publish, publish_len, PublishRef};
use crate::mqtt::packet::*;
use crate::topic::TopicName;
use bytes::BytesMut;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Smallest read we ask the kernel for; buffers start empty and the read
/// size grows (up to `MAX_READ_CHUNK`) only while reads keep filling it.
const READ_CHUNK: usize = 256;
/// Largest read: one read's worth of publishes is what a publisher routes
/// before it lets subscriber tasks run, so this also bounds how far a
/// publisher can run ahead of its subscribers' outboxes in one turn.
const MAX_READ_CHUNK: usize = 64 * 1024;
/// A write buffer up to this size is kept between writes; larger ones are
/// given back, so a burst does not pin memory on a connection.
const SMALL_BUFFER: usize = 256;
/// Deliveries taken from the outbox per write: enough to amortise the
/// syscall, small enough that a thousand slow subscribers' write buffers stay
/// a few megabytes in all (each holds at most one batch).
const DRAIN_BATCH: usize = 256;

/// A byte stream an MQTT connection runs over (TCP, or a WebSocket seen as bytes).
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Resolves when a read would find data (or end of stream), so an idle
    /// connection can wait without holding a read buffer. Streams that
    /// cannot tell resolve at once.
    fn ready_to_read(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

impl ByteStream for tokio::net::TcpStream {
    fn ready_to_read(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        self.readable()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for crate::net::ws_stream::WsByteStream<S> {}

/// Serves one client until the connection ends.
pub async fn serve<S>(stream: S, peer: SocketAddr, broker: Arc<Broker>)
where
    S: ByteStream,
{
    let mut conn = Connection {
        stream,
        peer,
        broker,
        read_buf: BytesMut::new(),
        write_buf: BytesMut::new(),
        version: ProtocolVersion::V311,
        read_chunk: READ_CHUNK,
        routed: 0,
    };
    conn.run().await;
}

struct Connection<S> {
    stream: S,
    peer: SocketAddr,
    broker: Arc<Broker>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    version: ProtocolVersion,
    /// Bytes asked for per read (adaptive, see `read_more`).
    read_chunk: usize,
    /// Deliveries routed since this task last yielded.
    routed: usize,
}

/// State that exists once CONNECT has been accepted.
struct Attached {
    session: Arc<Session>,
    /// Fires with a reason code when another connection takes the session.
    kicked: tokio::sync::oneshot::Receiver<u8>,
    connection_id: u64,
    /// Boxed: most connections have none, and it would otherwise weigh on
    /// every connection's task.
    will: Option<Box<LastWill>>,
    keep_alive: Option<Duration>,
    /// Session expiry asked for at CONNECT; MQTT 5 forbids raising it from 0 at DISCONNECT.
    connect_expiry: u32,
    inbound_aliases: HashMap<u16, String>,
    /// Aliases we assigned for topics sent to the client.
    outbound_aliases: HashMap<TopicName, u16>,
    outbound_alias_max: u16,
    /// Client's Maximum Packet Size; larger deliveries are dropped ([MQTT-3.1.2-24]).
    client_max_packet: usize,
}

enum Read {
    Data,
    Closed,
}

impl<S> Connection<S>
where
    S: ByteStream,
{
    async fn run(&mut self) {
        let timeout = Duration::from_secs(self.broker.config().mqtt.connect_timeout_secs);
        // The connect and packet-handling phases are boxed: a task's future is
        // as large as its largest state, and an idle connection should pay
        // only for the small waiting state (see docs/performance.md).
        let connect = match Box::pin(tokio::time::timeout(timeout, self.read_connect())).await {
            Ok(Ok(connect)) => connect,
            Ok(Err(reason)) => {
                tracing::debug!(peer = %self.peer, %reason, "connection closed before CONNECT completed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, reason = %CloseReason::ConnectTimeout, "closing");
                return;
            }
        };
        let Some(mut attached) = Box::pin(self.accept_connect(*connect)).await else { return };
        let reason = self.serve_session(&mut attached).await;
        tracing::debug!(peer = %self.peer, client_id = %attached.session.client_id, %reason, "connection closed");
        if let (Some(code), true) = (reason.disconnect_code(), self.version.is_v5()) {
            self.send_now(Packet::Disconnect(Disconnect { reason_code: code, properties: Default::default() })).await;
        }
        let _ = self.stream.shutdown().await;
        let will_action = reason.will_action();
        self.broker.disconnected(
            &attached.session,
            attached.connection_id,
            attached.will.take().map(|w| *w),
            will_action,
        );
    }

    // ---- CONNECT -----------------------------------------------------------

    async fn read_connect(&mut self) -> Result<Box<Connect>, CloseReason> {
        let max = self.broker.config().mqtt.max_packet_size as usize;
        loop {
            match decode(&mut self.read_buf, None, max) {
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
            if let Read::Closed = self.read_more().await? {
                return Err(CloseReason::PeerClosed);
            }
        }
    }

    async fn refuse(&mut self, code: u8, why: &str) {
        tracing::debug!(peer = %self.peer, code, why, "refusing CONNECT");
        let mut ack = ConnAck { reason_code: code, ..Default::default() };
        if self.version.is_v5() {
            ack.properties.reason_string = Some(why.to_string());
        }
        self.send_now(Packet::ConnAck(ack)).await;
        let _ = self.stream.shutdown().await;
    }

    async fn accept_connect(&mut self, connect: Connect) -> Option<Attached> {
        self.version = connect.protocol;
        let v5 = connect.protocol.is_v5();
        let cfg = self.broker.config().mqtt.clone();

        if connect.client_id.is_empty() && !connect.clean_start && !v5 {
            self.refuse(reason::CLIENT_IDENTIFIER_NOT_VALID, "[MQTT-3.1.3-8] empty client id needs clean session")
                .await;
            return None;
        }
        if connect.client_id.starts_with(crate::bridge::LOCAL_CLIENT_ID_PREFIX) {
            self.refuse(
                reason::CLIENT_IDENTIFIER_NOT_VALID,
                "client ids starting with $bridge/ are reserved for bridges",
            )
            .await;
            return None;
        }
        if connect.properties.authentication_method.is_some() {
            self.refuse(reason::BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported").await;
            return None;
        }
        if let Some(will) = &connect.will {
            if let Err(e) = TopicName::new(&will.topic) {
                self.refuse(reason::TOPIC_NAME_INVALID, &format!("will topic: {e}")).await;
                return None;
            }
        }
        let requested_expiry = if v5 {
            connect.properties.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            NEVER_EXPIRES
        };
        let connected: Connected = self.broker.connect(ConnectRequest {
            client_id: connect.client_id.clone(),
            clean_start: connect.clean_start,
            session_expiry_secs: requested_expiry,
            receive_maximum: connect.properties.receive_maximum.unwrap_or(u16::MAX),
        });

        let mut keep_alive = connect.keep_alive;
        let mut ack =
            ConnAck { session_present: connected.session_present, reason_code: reason::SUCCESS, ..Default::default() };
        if v5 {
            let p = &mut ack.properties;
            p.assigned_client_identifier = connected.assigned_client_id.clone();
            p.receive_maximum = Some(cfg.receive_maximum);
            p.maximum_packet_size = Some(cfg.max_packet_size);
            p.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            if connected.session_expiry_secs != requested_expiry {
                p.session_expiry_interval = Some(connected.session_expiry_secs);
            }
            // MQTT 5 lets the server lower the keep-alive; 3.1.1 cannot be told.
            if keep_alive > cfg.max_keep_alive_secs {
                keep_alive = cfg.max_keep_alive_secs;
                p.server_keep_alive = Some(keep_alive);
            }
        }
        self.write(&Packet::ConnAck(ack));
        let mut attached = Attached {
            session: connected.session.clone(),
            kicked: connected.kicked,
            connection_id: connected.connection_id,
            will: connect.will.map(Box::new),
            keep_alive: (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
            connect_expiry: requested_expiry,
            inbound_aliases: HashMap::new(),
            outbound_aliases: HashMap::new(),
            outbound_alias_max: if v5 { connect.properties.topic_alias_maximum.unwrap_or(0) } else { 0 },
            client_max_packet: connect.properties.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
        };
        tracing::debug!(peer = %self.peer, client_id = %connected.session.client_id, version = ?self.version,
            session_present = connected.session_present, "client connected");
        for item in connected.resend {
            self.write_outgoing(&mut attached, item);
        }
        Some(attached)
    }

    // ---- the connected loop --------------------------------------------------

    async fn serve_session(&mut self, at: &mut Attached) -> CloseReason {
        let mut shutdown = self.broker.shutdown_signal();
        let mut outgoing = Vec::new();
        let mut deadline = at.keep_alive.map(|k| Instant::now() + k);
        loop {
            // Drain everything the outbox holds, then write once.
            self.drain(at, &mut outgoing);
            if let Err(reason) = self.flush().await {
                return reason;
            }
            if *shutdown.borrow() {
                return CloseReason::ServerShutdown;
            }
            let keep_alive_expired = crate::net::silence_deadline(deadline);
            let session = at.session.clone();
            tokio::select! {
                biased;
                _ = &mut at.kicked => return CloseReason::TakenOver,
                _ = shutdown.changed() => return CloseReason::ServerShutdown,
                read = self.read_more() => {
                    match read {
                        Ok(Read::Data) => {}
                        Ok(Read::Closed) => return CloseReason::PeerClosed,
                        Err(reason) => return reason,
                    }
                    deadline = at.keep_alive.map(|k| Instant::now() + k);
                    if let Err(reason) = Box::pin(self.handle_buffered_packets(at)).await {
                        return reason;
                    }
                    if std::mem::take(&mut self.routed) > 0 {
                        // Fairness: after routing, let the subscribers' writers
                        // run before reading more.
                        tokio::task::yield_now().await;
                    }
                }
                _ = session.notified() => {}
                _ = keep_alive_expired => return CloseReason::KeepAliveTimeout,
            }
        }
    }

    async fn handle_buffered_packets(&mut self, at: &mut Attached) -> Result<(), CloseReason> {
        let max = self.broker.config().mqtt.max_packet_size as usize;
        loop {
            let packet = match decode(&mut self.read_buf, Some(self.version), max) {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(e) => return Err(e.into()),
            };
            self.handle_packet(at, packet).await?;
            if self.routed >= route_budget() {
                // Enough deliveries queued for one turn: let the writers take
                // them while the outboxes are small and still in cache.
                self.routed = 0;
                tokio::task::yield_now().await;
            }
        }
        // Nothing partial left and traffic is light: hold no read buffer
        // while waiting (the next read allocates `read_chunk` bytes).
        if self.read_buf.is_empty() && (self.read_chunk == READ_CHUNK || self.read_buf.capacity() > MAX_READ_CHUNK) {
            self.read_buf = BytesMut::new();
        }
        Ok(())
    }

    async fn handle_packet(&mut self, at: &mut Attached, packet: Packet) -> Result<(), CloseReason> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(at, publish).await?,
            Packet::PubAck(ack) => {
                if !at.session.puback(ack.packet_id) {
                    tracing::debug!(client_id = %at.session.client_id, packet_id = ack.packet_id, "PUBACK for unknown packet id");
                }
            }
            Packet::PubRec(rec) => {
                let known = at.session.pubrec(rec.packet_id, rec.reason_code);
                if rec.reason_code < 0x80 {
                    let code = if known { reason::SUCCESS } else { reason::PACKET_IDENTIFIER_NOT_FOUND };
                    self.write(&Packet::PubRel(ack(rec.packet_id, code)));
                }
            }
            Packet::PubComp(comp) => {
                at.session.pubcomp(comp.packet_id);
            }
            Packet::PubRel(rel) => {
                let code = if at.session.release_incoming_qos2(rel.packet_id) {
                    reason::SUCCESS
                } else {
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.write(&Packet::PubComp(ack(rel.packet_id, code)));
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(at, subscribe)?,
            Packet::Unsubscribe(unsubscribe) => {
                let reason_codes = unsubscribe
                    .filters
                    .iter()
                    .map(|f| {
                        if crate::topic::parse_subscription(f).is_err() {
                            reason::TOPIC_FILTER_INVALID
                        } else if self.broker.unsubscribe(&at.session, f) {
                            reason::SUCCESS
                        } else {
                            reason::NO_SUBSCRIPTION_EXISTED
                        }
                    })
                    .collect();
                self.write(&Packet::UnsubAck(UnsubAck {
                    packet_id: unsubscribe.packet_id,
                    reason_codes,
                    properties: Default::default(),
                }));
            }
            Packet::PingReq => self.write(&Packet::PingResp),
            Packet::Disconnect(disconnect) => {
                if let Some(expiry) = disconnect.properties.session_expiry_interval {
                    if at.connect_expiry == 0 && expiry != 0 {
                        return Err(CloseReason::violation(
                            reason::PROTOCOL_ERROR,
                            "[MQTT-3.14.2-2] session expiry set at DISCONNECT after 0 at CONNECT",
                        ));
                    }
                    at.session.set_expiry_secs(expiry);
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

    async fn handle_publish(&mut self, at: &mut Attached, publish: Publish) -> Result<(), CloseReason> {
        let topic = self.resolve_topic(at, &publish)?;
        let packet_id = publish.packet_id;
        if publish.qos == QoS::ExactlyOnce {
            if !at.session.begin_incoming_qos2(packet_id) {
                // A retransmission of a message we already took: acknowledge again, publish once.
                self.write(&Packet::PubRec(ack(packet_id, reason::SUCCESS)));
                return Ok(());
            }
            if at.session.incoming_qos2_len() > self.broker.config().mqtt.receive_maximum as usize {
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
        message.publisher = Some(at.session.client_id.clone());
        // A single message may ask for high priority (topic classes: never sampled or shed).
        message.handling.high_priority =
            message.properties.user_properties.iter().any(|(k, v)| k == "priority" && v == "high");
        if publish.qos == QoS::AtMostOnce {
            let outcome = self.broker.publish_paced(message).await;
            self.routed += outcome.deliveries.max(1);
            if let Some(refusal) = outcome.refused {
                // QoS 0 has no acknowledgement: MQTT 5 clients learn why from a
                // DISCONNECT (0x96 rate too high, 0x95 too large); 3.1.1 has no
                // way to say it, so the message is dropped and logged.
                if self.version.is_v5() {
                    return Err(CloseReason::violation(refusal.reason_code(), refusal.text()));
                }
                tracing::debug!(client_id = %at.session.client_id, ?refusal, "publish refused by its topic class");
            }
            return Ok(());
        }
        self.routed += 1;
        // Acknowledged means durable: the broker waits for the store when needed.
        let code = match self.broker.publish_acknowledged(message).await {
            Ack::Accepted { matched: true } => reason::SUCCESS,
            Ack::Accepted { matched: false } => reason::NO_MATCHING_SUBSCRIBERS,
            Ack::StoreFailed => reason::UNSPECIFIED_ERROR,
            // PUBACK/PUBREC cannot carry 0x96/0x95; 0x97 (quota exceeded) is the closest.
            Ack::Refused(refusal) => {
                tracing::debug!(client_id = %at.session.client_id, ?refusal, "publish refused by its topic class");
                reason::QUOTA_EXCEEDED
            }
        };
        if code >= 0x80 && publish.qos == QoS::ExactlyOnce {
            // A failed PUBREC ends the QoS 2 exchange ([MQTT-4.3.3]).
            at.session.release_incoming_qos2(packet_id);
        }
        let reply = ack(packet_id, code);
        self.write(&if publish.qos == QoS::AtLeastOnce { Packet::PubAck(reply) } else { Packet::PubRec(reply) });
        Ok(())
    }

    /// Applies MQTT 5 topic aliases and validates the topic name.
    fn resolve_topic(&self, at: &mut Attached, publish: &Publish) -> Result<TopicName, CloseReason> {
        let mut topic = publish.topic.as_str();
        if let Some(alias) = publish.properties.topic_alias {
            let max = self.broker.config().mqtt.topic_alias_maximum;
            if alias == 0 || alias > max {
                return Err(CloseReason::violation(
                    reason::TOPIC_ALIAS_INVALID,
                    format!("[MQTT-3.3.2-9] topic alias {alias} outside 1..={max}"),
                ));
            }
            if topic.is_empty() {
                match at.inbound_aliases.get(&alias) {
                    Some(t) => topic = t.as_str(),
                    None => {
                        return Err(CloseReason::violation(
                            reason::PROTOCOL_ERROR,
                            format!("topic alias {alias} used before it was set"),
                        ));
                    }
                }
            } else {
                at.inbound_aliases.insert(alias, topic.to_string());
            }
        }
        TopicName::new(topic).map_err(|e| CloseReason::violation(reason::TOPIC_NAME_INVALID, e.to_string()))
    }

    fn handle_subscribe(&mut self, at: &mut Attached, subscribe: Subscribe) -> Result<(), CloseReason> {
        let identifier = subscribe.properties.subscription_identifier;
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        for f in &subscribe.filters {
            if f.options.no_local && f.filter.starts_with("$share/") {
                return Err(CloseReason::violation(
                    reason::PROTOCOL_ERROR,
                    "[MQTT-3.8.3-4] no local on a shared subscription",
                ));
            }
            let code = match self.broker.subscribe(&at.session, &f.filter, f.options, identifier) {
                Ok(code) => code,
                Err(e) => {
                    tracing::debug!(client_id = %at.session.client_id, filter = %f.filter, error = %e, "subscription refused");
                    reason::TOPIC_FILTER_INVALID
                }
            };
            reason_codes.push(code);
        }
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

    fn drain(&mut self, at: &mut Attached, outgoing: &mut Vec<Outgoing>) {
        loop {
            at.session.drain(outgoing, DRAIN_BATCH);
            if outgoing.is_empty() {
                return;
            }
            let full = outgoing.len() == DRAIN_BATCH;
            for item in outgoing.drain(..) {
                self.write_outgoing(at, item);
            }
            if !full {
                return;
            }
        }
    }

    fn write_outgoing(&mut self, at: &mut Attached, item: Outgoing) {
        let (packet_id, dup, delivery) = match item {
            Outgoing::PubRel { packet_id } => return self.write(&Packet::PubRel(ack(packet_id, reason::SUCCESS))),
            Outgoing::Publish { packet_id, dup, delivery } => (packet_id, dup, delivery),
        };
        let version = self.version;
        let m = &delivery.message;
        if packet_id == 0 && self.can_share_frame(at, &delivery) {
            // Encode once, write many: every subscriber of this protocol family
            // that takes the message unchanged copies one cached frame. A
            // message nobody else holds (point-to-point) skips the cache.
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
            if publish_len(&publish, version) > at.client_max_packet {
                return; // [MQTT-3.1.2-25]: discard as if delivered
            }
            if Arc::strong_count(m) <= 1 {
                encode_publish(&publish, version, &mut self.write_buf);
            } else {
                let frame = m.wire.get_or_encode(usize::from(version.is_v5()), || {
                    let mut buf = BytesMut::new();
                    encode_publish(&publish, version, &mut buf);
                    buf.freeze()
                });
                self.write_buf.extend_from_slice(frame);
            }
            return;
        }
        let mut properties = PublishProperties::default();
        let mut topic = m.topic.as_str();
        let mut new_alias = false;
        if version.is_v5() {
            properties = message_properties(m);
            properties.message_expiry_interval = m.remaining_expiry_secs(now_ms());
            properties.subscription_identifiers = delivery.subscription_ids.clone();
            if at.outbound_alias_max > 0 {
                if let Some(alias) = at.outbound_aliases.get(&m.topic) {
                    properties.topic_alias = Some(*alias);
                    topic = "";
                } else if at.outbound_aliases.len() < at.outbound_alias_max as usize {
                    let alias = at.outbound_aliases.len() as u16 + 1;
                    at.outbound_aliases.insert(m.topic.clone(), alias);
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
        if publish_len(&publish, version) > at.client_max_packet {
            // [MQTT-3.1.2-25]: discard as if delivered. An alias assigned just
            // now was never seen by the client, so it must not be used later.
            if new_alias {
                at.outbound_aliases.remove(&m.topic);
            }
            if packet_id != 0 {
                at.session.discard_inflight(packet_id);
            }
            return;
        }
        encode_publish(&publish, version, &mut self.write_buf);
    }

    /// Whether this delivery is byte-for-byte the same for every subscriber
    /// of this protocol family: QoS 0, no retain flag, no subscription ids,
    /// and (MQTT 5) no topic alias and no expiry countdown.
    fn can_share_frame(&self, at: &Attached, delivery: &Delivery) -> bool {
        delivery.qos == QoS::AtMostOnce
            && !delivery.retain
            && delivery.subscription_ids.is_empty()
            && (!self.version.is_v5() || (at.outbound_alias_max == 0 && delivery.message.expires_at_ms.is_none()))
    }

    // ---- I/O ---------------------------------------------------------------------

    fn write(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.write_buf);
    }

    async fn flush(&mut self) -> Result<(), CloseReason> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.write_buf).await.map_err(|e| CloseReason::Io(e.to_string()))?;
        self.stream.flush().await.map_err(|e| CloseReason::Io(e.to_string()))?;
        // Written out: give the buffer back unless it is small. A busy writer
        // pays one allocation per write; an idle connection holds nothing.
        if self.write_buf.capacity() > SMALL_BUFFER {
            self.write_buf = BytesMut::new();
        } else {
            self.write_buf.clear();
        }
        Ok(())
    }

    /// Writes one packet immediately (used around connect and close).
    async fn send_now(&mut self, packet: Packet) {
        self.write(&packet);
        let _ = self.flush().await;
    }

    /// Reads what the socket has into `read_buf`. Cancel safe: bytes are
    /// appended to the buffer only when a read completes.
    async fn read_more(&mut self) -> Result<Read, CloseReason> {
        if self.read_buf.capacity() == 0 {
            // Idle: wait for data before allocating the buffer to read it into.
            self.stream.ready_to_read().await.map_err(|e| CloseReason::Io(e.to_string()))?;
        }
        let spare = self.read_buf.capacity() - self.read_buf.len();
        if spare < self.read_chunk {
            self.read_buf.reserve(self.read_chunk);
        }
        let spare = self.read_buf.capacity() - self.read_buf.len();
        match self.stream.read_buf(&mut self.read_buf).await {
            Ok(0) => Ok(Read::Closed),
            Ok(n) => {
                // Grow the read while the socket keeps filling it; shrink when traffic calms.
                if n == spare {
                    self.read_chunk = (self.read_chunk * 2).min(MAX_READ_CHUNK);
                } else if n < self.read_chunk / 4 {
                    self.read_chunk = (self.read_chunk / 2).max(READ_CHUNK);
                }
                Ok(Read::Data)
            }
            Err(e) => Err(CloseReason::Io(e.to_string())),
        }
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

fn route_budget() -> usize {
    static BUDGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUDGET
        .get_or_init(|| std::env::var("STARLING_ROUTE_BUDGET").ok().and_then(|v| v.parse().ok()).unwrap_or(32 * 1024))
}

fn ack(packet_id: u16, reason_code: u8) -> PubResp {
    PubResp { packet_id, reason_code, properties: Default::default() }
}
