//! One starling.v1 connection, from `Connect` to close.
//!
//! Owns: the protocol's connection state (heartbeat deadline) and the
//! translation between frames and broker calls. Sessions, QoS state, retained
//! messages and persistence are the broker's, shared with MQTT: a client can
//! resume over `/ws` a session it started over MQTT and vice versa.
//! Must never: write per delivery; deliveries drained from the outbox are fed
//! to the WebSocket and flushed once.

use super::{decode, encode, pb, FrameError, Inbound, HEARTBEAT};
use crate::broker::{Ack, Broker, ConnectRequest, Message, Outgoing, Session, WillAction};
use crate::model::reason;
use crate::model::CloseReason;
use crate::model::{LastWill, QoS, SubscriptionOptions, WillProperties};
use crate::topic::TopicName;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pb::frame::Body;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

const DRAIN_BATCH: usize = 1024;

pub async fn serve<S>(ws: WebSocketStream<S>, peer: SocketAddr, broker: Arc<Broker>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut conn = Connection { ws, peer, broker };
    conn.run().await;
}

struct Connection<S> {
    ws: WebSocketStream<S>,
    peer: SocketAddr,
    broker: Arc<Broker>,
}

struct Attached {
    session: Arc<Session>,
    connection_id: u64,
    kicked: tokio::sync::oneshot::Receiver<u8>,
    will: Option<LastWill>,
    heartbeat: Option<Duration>,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn run(&mut self) {
        let timeout = Duration::from_secs(self.broker.config().mqtt.connect_timeout_secs);
        let connect = match tokio::time::timeout(timeout, self.next_inbound()).await {
            Ok(Ok(Some(Inbound::Frame(Body::Connect(connect))))) => connect,
            Ok(Ok(Some(_))) => {
                let reason = CloseReason::violation(reason::PROTOCOL_ERROR, "the first frame must be Connect");
                return self.close(&reason).await;
            }
            Ok(Err(reason)) => return self.close(&reason).await,
            Ok(Ok(None)) => return,
            Err(_) => return self.close(&CloseReason::ConnectTimeout).await,
        };
        let Some(mut attached) = self.accept_connect(connect).await else { return };
        let reason = self.serve_session(&mut attached).await;
        tracing::debug!(peer = %self.peer, client_id = %attached.session.client_id, %reason, "connection closed");
        self.close(&reason).await;
        self.broker.disconnected(&attached.session, attached.connection_id, attached.will.take(), reason.will_action());
    }

    async fn accept_connect(&mut self, connect: pb::Connect) -> Option<Attached> {
        let will = match connect.will.map(will_of).transpose() {
            Ok(will) => will,
            Err(e) => {
                let ack = pb::ConnAck {
                    reason_code: reason::TOPIC_NAME_INVALID.into(),
                    reason: format!("will: {e}"),
                    ..Default::default()
                };
                let _ = self.send(Body::ConnAck(ack)).await;
                let _ = self.ws.close(None).await;
                return None;
            }
        };
        if connect.client_id.starts_with(crate::bridge::LOCAL_CLIENT_ID_PREFIX) {
            let ack = pb::ConnAck {
                reason_code: reason::CLIENT_IDENTIFIER_NOT_VALID.into(),
                reason: "client ids starting with $bridge/ are reserved for bridges".into(),
                ..Default::default()
            };
            let _ = self.send(Body::ConnAck(ack)).await;
            let _ = self.ws.close(None).await;
            return None;
        }
        let connected = self.broker.connect(ConnectRequest {
            client_id: connect.client_id,
            clean_start: connect.clean_start,
            session_expiry_secs: connect.session_expiry_secs,
            receive_maximum: u16::MAX,
        });
        let max_heartbeat = u32::from(self.broker.config().mqtt.max_keep_alive_secs);
        let heartbeat_secs = connect.heartbeat_secs.min(max_heartbeat);
        let ack = pb::ConnAck {
            session_present: connected.session_present,
            client_id: connected.session.client_id.to_string(),
            reason_code: 0,
            reason: String::new(),
            max_frame_size: self.broker.config().mqtt.max_packet_size,
            heartbeat_secs,
        };
        let mut attached = Attached {
            session: connected.session,
            connection_id: connected.connection_id,
            kicked: connected.kicked,
            will,
            heartbeat: (heartbeat_secs > 0).then(|| Duration::from_millis(u64::from(heartbeat_secs) * 1500)),
        };
        tracing::debug!(peer = %self.peer, client_id = %attached.session.client_id, "starling.v1 client connected");
        if self.feed(Body::ConnAck(ack)).await.is_err() {
            self.broker.disconnected(&attached.session, attached.connection_id, None, WillAction::Discard);
            return None;
        }
        for item in connected.resend {
            if self.feed_outgoing(&mut attached, item).await.is_err() {
                break;
            }
        }
        Some(attached)
    }

    async fn serve_session(&mut self, at: &mut Attached) -> CloseReason {
        let mut shutdown = self.broker.shutdown_signal();
        let mut outgoing = Vec::new();
        let mut deadline = at.heartbeat.map(|h| Instant::now() + h);
        loop {
            if let Err(reason) = self.drain(at, &mut outgoing).await {
                return reason;
            }
            if let Err(e) = self.ws.flush().await {
                return CloseReason::Io(e.to_string());
            }
            if *shutdown.borrow() {
                return CloseReason::ServerShutdown;
            }
            let heartbeat_missed = crate::net::silence_deadline(deadline);
            let session = at.session.clone();
            tokio::select! {
                biased;
                _ = &mut at.kicked => return CloseReason::TakenOver,
                _ = shutdown.changed() => return CloseReason::ServerShutdown,
                inbound = self.next_inbound() => {
                    deadline = at.heartbeat.map(|h| Instant::now() + h);
                    match inbound {
                        Ok(Some(inbound)) => {
                            if let Err(reason) = self.handle(at, inbound).await {
                                return reason;
                            }
                        }
                        Ok(None) => return CloseReason::PeerClosed,
                        Err(reason) => return reason,
                    }
                }
                _ = session.notified() => {}
                _ = heartbeat_missed => return CloseReason::KeepAliveTimeout,
            }
        }
    }

    async fn handle(&mut self, at: &mut Attached, inbound: Inbound) -> Result<(), CloseReason> {
        let body = match inbound {
            Inbound::Heartbeat => {
                return self.feed_raw(WsMessage::Binary(Bytes::from_static(&[HEARTBEAT]))).await;
            }
            Inbound::Frame(body) => body,
        };
        match body {
            Body::Publish(publish) => self.handle_publish(at, publish).await,
            Body::PubAck(ack) => {
                let known = u16::try_from(ack.packet_id).is_ok_and(|id| at.session.puback(id));
                if !known {
                    tracing::debug!(client_id = %at.session.client_id, packet_id = ack.packet_id, "PubAck for unknown packet id");
                }
                Ok(())
            }
            Body::Subscribe(subscribe) => {
                let results = subscribe
                    .filters
                    .iter()
                    .map(|f| {
                        // The protocol offers QoS 0 and 1; a request for more gets 1.
                        // Absent: the class's default QoS (chat rooms: 1).
                        let asked = f.qos.map(|q| q.min(1)).unwrap_or_else(|| self.class_default_qos(&f.filter));
                        let qos = if asked == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                        let options = SubscriptionOptions { qos, ..Default::default() };
                        let code = self
                            .broker
                            .subscribe(&at.session, &f.filter, options, None)
                            .unwrap_or(reason::TOPIC_FILTER_INVALID);
                        pb::SubscribeResult { code: code.into() }
                    })
                    .collect();
                self.feed(Body::SubAck(pb::SubAck { request_id: subscribe.request_id, results })).await
            }
            Body::Unsubscribe(unsubscribe) => {
                let codes = unsubscribe
                    .filters
                    .iter()
                    .map(|f| {
                        let code = if crate::topic::parse_subscription(f).is_err() {
                            reason::TOPIC_FILTER_INVALID
                        } else if self.broker.unsubscribe(&at.session, f) {
                            reason::SUCCESS
                        } else {
                            reason::NO_SUBSCRIPTION_EXISTED
                        };
                        u32::from(code)
                    })
                    .collect();
                self.feed(Body::UnsubAck(pb::UnsubAck { request_id: unsubscribe.request_id, codes })).await
            }
            Body::HistoryRequest(request) => {
                let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
                let (messages, reason_code) = match self.broker.history(&request.topic, request.after_message_id, limit)
                {
                    Ok(messages) => (messages.iter().map(history_publish).collect(), 0),
                    Err(code) => (Vec::new(), u32::from(code)),
                };
                let reply =
                    pb::HistoryReply { request_id: request.request_id, topic: request.topic, messages, reason_code };
                self.feed(Body::HistoryReply(reply)).await
            }
            Body::Disconnect(disconnect) => Err(if disconnect.reason_code == u32::from(reason::DISCONNECT_WITH_WILL) {
                CloseReason::ClientDisconnectedWithWill
            } else {
                CloseReason::ClientDisconnected
            }),
            Body::Connect(_) => Err(CloseReason::violation(reason::PROTOCOL_ERROR, "second Connect on one connection")),
            Body::ConnAck(_) | Body::SubAck(_) | Body::UnsubAck(_) | Body::HistoryReply(_) | Body::Error(_) => {
                Err(CloseReason::violation(reason::PROTOCOL_ERROR, "server-to-client frame sent by a client"))
            }
        }
    }

    /// The default QoS of the class of `filter` (a room, no wildcards), capped at 1.
    fn class_default_qos(&self, filter: &str) -> u32 {
        TopicName::new(filter)
            .ok()
            .and_then(|topic| self.broker.classes().classify(&topic).map(|c| c.class.default_qos as u32))
            .unwrap_or(0)
            .min(1)
    }

    async fn handle_publish(&mut self, at: &mut Attached, publish: pb::Publish) -> Result<(), CloseReason> {
        let qos = match publish.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            other => {
                return Err(CloseReason::violation(
                    reason::QOS_NOT_SUPPORTED,
                    format!("Publish.qos {other}: must be 0 or 1"),
                ))
            }
        };
        if qos == QoS::AtLeastOnce && !(1..=u32::from(u16::MAX)).contains(&publish.packet_id) {
            return Err(CloseReason::violation(reason::PROTOCOL_ERROR, "a QoS 1 Publish needs packet_id 1..=65535"));
        }
        let topic = match TopicName::new(&publish.topic) {
            Ok(topic) => topic,
            Err(e) => {
                // Refuse this message, keep the connection: the client learns which topic was wrong.
                if qos == QoS::AtLeastOnce {
                    let ack =
                        pb::PubAck { packet_id: publish.packet_id, reason_code: reason::TOPIC_NAME_INVALID.into() };
                    return self.feed(Body::PubAck(ack)).await;
                }
                let error = pb::Error { code: reason::TOPIC_NAME_INVALID.into(), message: e.to_string() };
                return self.feed(Body::Error(error)).await;
            }
        };
        let mut message = Message::new(topic, publish.payload, qos, publish.retain);
        message.publisher = Some(at.session.client_id.clone());
        message.handling.high_priority = publish.high_priority;
        if qos == QoS::AtMostOnce {
            let outcome = self.broker.publish_paced(message).await;
            if let Some(refusal) = outcome.refused {
                // Refused by the topic's class: say why, keep the connection.
                let error = pb::Error { code: refusal.reason_code().into(), message: refusal.text().into() };
                return self.feed(Body::Error(error)).await;
            }
            return Ok(());
        }
        let code = match self.broker.publish_acknowledged(message).await {
            Ack::Accepted { matched: true } => reason::SUCCESS,
            Ack::Accepted { matched: false } => reason::NO_MATCHING_SUBSCRIBERS,
            Ack::StoreFailed => reason::UNSPECIFIED_ERROR,
            Ack::Refused(refusal) => refusal.reason_code(),
        };
        self.feed(Body::PubAck(pb::PubAck { packet_id: publish.packet_id, reason_code: code.into() })).await
    }

    async fn drain(&mut self, at: &mut Attached, outgoing: &mut Vec<Outgoing>) -> Result<(), CloseReason> {
        loop {
            at.session.drain(outgoing, DRAIN_BATCH);
            if outgoing.is_empty() {
                return Ok(());
            }
            let full = outgoing.len() == DRAIN_BATCH;
            // Taken out so `self` can be borrowed while feeding; capacity is reused.
            let mut items = std::mem::take(outgoing);
            for item in items.drain(..) {
                self.feed_outgoing(at, item).await?;
            }
            *outgoing = items;
            if !full {
                return Ok(());
            }
        }
    }

    async fn feed_outgoing(&mut self, at: &mut Attached, item: Outgoing) -> Result<(), CloseReason> {
        match item {
            Outgoing::Publish { packet_id, dup, delivery } => {
                let m = &delivery.message;
                let publish = pb::Publish {
                    topic: m.topic.as_str().to_string(),
                    payload: m.payload.clone(),
                    // QoS 2 (a session started over MQTT) is delivered at QoS 1 here.
                    qos: u32::from(delivery.qos != QoS::AtMostOnce),
                    retain: delivery.retain,
                    packet_id: packet_id.into(),
                    message_id: m.id,
                    timestamp_ms: m.timestamp_ms,
                    dup,
                    high_priority: m.handling.high_priority,
                };
                self.feed(Body::Publish(publish)).await
            }
            // A QoS 2 exchange begun over MQTT has nothing left to say here: finish it.
            Outgoing::PubRel { packet_id } => {
                at.session.pubcomp(packet_id);
                Ok(())
            }
        }
    }

    // ---- I/O ---------------------------------------------------------------

    /// Next heartbeat or frame; `None` when the peer closed.
    async fn next_inbound(&mut self) -> Result<Option<Inbound>, CloseReason> {
        loop {
            match self.ws.next().await {
                Some(Ok(WsMessage::Binary(data))) => {
                    return decode(&data).map(Some).map_err(|e| match e {
                        FrameError::Empty | FrameError::BadHeartbeat(_) => {
                            CloseReason::violation(reason::PROTOCOL_ERROR, e.to_string())
                        }
                        FrameError::Malformed(_) => CloseReason::violation(reason::MALFORMED_PACKET, e.to_string()),
                    })
                }
                Some(Ok(WsMessage::Text(_))) => {
                    return Err(CloseReason::violation(
                        reason::PROTOCOL_ERROR,
                        "text messages are not part of starling.v1; send binary",
                    ))
                }
                Some(Ok(WsMessage::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                Some(Err(WsError::Capacity(e))) => {
                    return Err(CloseReason::violation(reason::PACKET_TOO_LARGE, format!("frame too large: {e}")))
                }
                Some(Err(e)) => return Err(CloseReason::Io(e.to_string())),
            }
        }
    }

    async fn feed(&mut self, body: Body) -> Result<(), CloseReason> {
        self.feed_raw(WsMessage::Binary(encode(body))).await
    }

    async fn feed_raw(&mut self, message: WsMessage) -> Result<(), CloseReason> {
        self.ws.feed(message).await.map_err(|e| CloseReason::Io(e.to_string()))
    }

    async fn send(&mut self, body: Body) -> Result<(), CloseReason> {
        self.ws.send(WsMessage::Binary(encode(body))).await.map_err(|e| CloseReason::Io(e.to_string()))
    }

    /// Tells the client why (an `Error` for its mistakes, a `Disconnect` for
    /// the server's reasons), then closes the WebSocket.
    async fn close(&mut self, reason: &CloseReason) {
        if let Some(code) = reason.disconnect_code() {
            let text = reason.to_string();
            let frame = match reason {
                CloseReason::Violation { code, what } => {
                    Body::Error(pb::Error { code: (*code).into(), message: what.clone() })
                }
                _ => Body::Disconnect(pb::Disconnect {
                    reason_code: code.into(),
                    reason: text.clone(),
                    // A takeover means another connection of this client is live: do not fight it.
                    reconnect: !matches!(reason, CloseReason::TakenOver),
                }),
            };
            let _ = self.send(frame).await;
            let close_code = match code {
                reason::PACKET_TOO_LARGE => CloseCode::Size,
                reason::MALFORMED_PACKET | reason::PROTOCOL_ERROR => CloseCode::Protocol,
                reason::SERVER_SHUTTING_DOWN => CloseCode::Away,
                _ => CloseCode::Policy,
            };
            let _ = self
                .ws
                .close(Some(CloseFrame { code: close_code, reason: text.chars().take(100).collect::<String>().into() }))
                .await;
        } else {
            let _ = self.ws.close(None).await;
        }
    }
}

/// A history entry as sent in `HistoryReply` (no packet id: not acknowledged).
fn history_publish(m: &Message) -> pb::Publish {
    pb::Publish {
        topic: m.topic.as_str().to_string(),
        payload: m.payload.clone(),
        qos: u32::from(m.qos != QoS::AtMostOnce),
        retain: false,
        packet_id: 0,
        message_id: m.id,
        timestamp_ms: m.timestamp_ms,
        dup: false,
        high_priority: m.handling.high_priority,
    }
}

/// A will given as a `Publish` in `Connect`.
fn will_of(publish: pb::Publish) -> Result<LastWill, crate::topic::TopicError> {
    TopicName::new(&publish.topic)?;
    Ok(LastWill {
        topic: publish.topic,
        payload: publish.payload,
        qos: if publish.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce },
        retain: publish.retain,
        properties: WillProperties::default(),
    })
}
