//! One starling.v1 connection, from `Connect` to close: the starling.v1
//! [`Edge`] of the client core.
//!
//! Owns: the translation between frames and client-core calls, and the one
//! place that maps the core's outcomes to starling.v1 codes. Policy (who
//! may connect, publish, subscribe, read history) is the client core's. Sessions, QoS state, retained
//! messages and persistence are the broker's, shared with MQTT: a client can
//! resume over `/ws` a session it started over MQTT and vice versa.
//! Must never: write per delivery; deliveries drained from the outbox are fed
//! to the WebSocket and flushed once.

use super::{decode, encode, pb, FrameError, Inbound, HEARTBEAT};
use crate::auth::Credentials;
use crate::broker::{Broker, HistoryQuery, Message, Outgoing};
use crate::client::lifecycle::{self, Door};
use crate::client::{self, AckToken, Client, ConnectInfo, Edge, Peer, Published, Received};
use crate::model::reason;
use crate::model::CloseReason;
use crate::model::{LastWill, QoS, SubscriptionOptions, WillProperties};
use crate::topic::TopicName;
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use pb::frame::Body;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

/// Serves one client until the connection ends. Not an `async fn` itself,
/// and the rare phases (Connect, admission, goodbye) are boxed: this future
/// is what every idle connection's task holds (see `mqtt::connection::serve`).
pub fn serve<S>(ws: WebSocketStream<S>, peer: Peer, broker: Arc<Broker>) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    lifecycle::run(Connection { ws, peer, inbound: None, pending: Vec::new(), fed: 0 }, broker)
}

/// The phases around the serve loop, as starling.v1 speaks them (the
/// order and the bounds are the client core's, `client::lifecycle`).
impl<S> Door for Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    type Connect = pb::Connect;

    async fn read_connect(&mut self) -> Result<Option<pb::Connect>, CloseReason> {
        match self.next_inbound().await? {
            Some(Inbound::Frame(Body::Connect(connect))) => Ok(Some(connect)),
            Some(_) => Err(CloseReason::violation(reason::PROTOCOL_ERROR, "the first frame must be Connect")),
            None => Ok(None),
        }
    }

    /// An `Error` (a wrong first frame) or `Disconnect` (the connect
    /// timeout) says why, then the WebSocket closes.
    async fn refuse_connect(&mut self, reason: &CloseReason) {
        self.close(reason).await;
    }

    async fn admit(&mut self, broker: &Arc<Broker>, connect: pb::Connect) -> Option<Client> {
        self.accept_connect(broker, connect).await
    }

    async fn goodbye(&mut self, reason: &CloseReason) {
        self.close(reason).await;
    }

    /// Reads until the client answers our close frame.
    async fn linger(&mut self) {
        while let Some(Ok(_)) = self.ws.next().await {}
    }
}

/// The starling.v1 side of one connection.
struct Connection<S> {
    ws: WebSocketStream<S>,
    peer: Peer,
    /// The frame `receive` read, for `handle`.
    inbound: Option<Inbound>,
    /// Frames encoded since the last flush (fed to the WebSocket together).
    pending: Vec<WsMessage>,
    /// How many of `pending` were fed (a flush in progress).
    fed: usize,
}

impl<S> Edge for Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    const DRAIN_BATCH: usize = 1024;

    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received, CloseReason>> {
        Poll::Ready(match ready!(self.poll_next_inbound(cx))? {
            Some(inbound) => {
                self.inbound = Some(inbound);
                Ok(Received::Data)
            }
            None => Ok(Received::Closed),
        })
    }

    async fn handle(&mut self, client: &mut Client) -> Result<(), CloseReason> {
        match self.inbound.take() {
            Some(inbound) => self.handle_inbound(client, inbound).await,
            None => Ok(()),
        }
    }

    fn write_outgoing(&mut self, client: &mut Client, item: Outgoing) {
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
                    sender: m.sender.as_deref().unwrap_or("").to_string(),
                    sender_client_id: m.publisher.as_deref().unwrap_or("").to_string(),
                };
                self.push(Body::Publish(publish));
            }
            // A QoS 2 exchange begun over MQTT has nothing left to say here: finish it.
            Outgoing::PubRel { packet_id } => {
                client.session().pubcomp(packet_id);
            }
        }
    }

    fn acknowledged(&mut self, _client: &mut Client, token: AckToken, published: Published) -> Result<(), CloseReason> {
        self.acknowledge_publish(token, published);
        Ok(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>> {
        let io = |e: WsError| CloseReason::Io(e.to_string());
        if self.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // Fed one by one; `fed` keeps the progress across polls.
        while self.fed < self.pending.len() {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io)?;
            let message = std::mem::replace(&mut self.pending[self.fed], WsMessage::Binary(Bytes::new()));
            Pin::new(&mut self.ws).start_send(message).map_err(io)?;
            self.fed += 1;
        }
        ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(io)?;
        self.fed = 0;
        if self.pending.capacity() > 64 {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn refuse(&mut self, code: u8, why: String) {
        tracing::debug!(peer = %self.peer.addr, code, why, "refusing Connect");
        let ack = pb::ConnAck { reason_code: code.into(), reason: why, ..Default::default() };
        let _ = self.send(Body::ConnAck(ack)).await;
        let _ = self.ws.close(None).await;
    }

    async fn accept_connect(&mut self, broker: &Arc<Broker>, connect: pb::Connect) -> Option<Client> {
        let will = match connect.will.map(will_of).transpose() {
            Ok(will) => will,
            Err(e) => {
                self.refuse(reason::TOPIC_NAME_INVALID, format!("will: {e}")).await;
                return None;
            }
        };
        let info = ConnectInfo {
            client_id: connect.client_id,
            clean_start: connect.clean_start,
            session_expiry_secs: connect.session_expiry_secs,
            receive_maximum: u16::MAX,
            keep_alive_secs: connect.heartbeat_secs,
            may_lower_keep_alive: true,
            will,
            credentials: Credentials {
                username: (!connect.username.is_empty()).then_some(connect.username),
                password: (!connect.token.is_empty()).then(|| Bytes::from(connect.token)),
            },
            protocol: "starling.v1",
        };
        let admitted = match client::admit(broker, &self.peer, info).await {
            Ok(admitted) => admitted,
            Err(refused) => {
                self.refuse(refused.code, refused.why).await;
                return None;
            }
        };
        let ack = pb::ConnAck {
            session_present: admitted.session_present,
            client_id: admitted.client.client_id().to_string(),
            reason_code: 0,
            reason: String::new(),
            max_frame_size: broker.config().mqtt.max_packet_size,
            heartbeat_secs: admitted.keep_alive_secs,
        };
        let mut client = admitted.client;
        self.push(Body::ConnAck(ack));
        for item in admitted.resend {
            self.write_outgoing(&mut client, item);
        }
        Some(client)
    }

    async fn handle_inbound(&mut self, client: &mut Client, inbound: Inbound) -> Result<(), CloseReason> {
        let body = match inbound {
            Inbound::Heartbeat => {
                self.pending.push(WsMessage::Binary(Bytes::from_static(&[HEARTBEAT])));
                return Ok(());
            }
            Inbound::Frame(body) => body,
        };
        match body {
            Body::Publish(publish) => return self.handle_publish(client, publish).await,
            Body::PubAck(ack) => {
                // Completes QoS 1 and QoS 2 deliveries alike (QoS 2 of a
                // session begun over MQTT is delivered here as QoS 1).
                let known = u16::try_from(ack.packet_id).is_ok_and(|id| client.session().acknowledge(id));
                if !known {
                    tracing::debug!(
                        client_id = client.client_id(),
                        packet_id = ack.packet_id,
                        "PubAck for unknown packet id"
                    );
                }
            }
            Body::Subscribe(subscribe) => {
                let filters: Vec<(String, SubscriptionOptions)> = subscribe
                    .filters
                    .into_iter()
                    .map(|f| {
                        // The protocol offers QoS 0 and 1; a request for more gets 1.
                        // Absent: the class's default QoS (chat rooms: 1).
                        let asked = f.qos.map(|q| q.min(1)).unwrap_or_else(|| class_default_qos(client, &f.filter));
                        let qos = if asked == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                        (f.filter, SubscriptionOptions { qos, ..Default::default() })
                    })
                    .collect();
                let results = client
                    .subscribe_all(filters, None)
                    .iter()
                    .map(|r| pb::SubscribeResult { code: r.reason_code().into() })
                    .collect();
                self.push(Body::SubAck(pb::SubAck { request_id: subscribe.request_id, results }));
            }
            Body::Unsubscribe(unsubscribe) => {
                let codes =
                    unsubscribe.filters.iter().map(|f| u32::from(client.unsubscribe(f).reason_code())).collect();
                self.push(Body::UnsubAck(pb::UnsubAck { request_id: unsubscribe.request_id, codes }));
            }
            Body::HistoryRequest(request) => {
                let query = HistoryQuery {
                    after_id: request.after_message_id,
                    before_id: request.before_message_id,
                    limit: usize::try_from(request.limit).unwrap_or(usize::MAX),
                };
                let (messages, has_more, reason_code) = match client.history(&request.topic, query) {
                    Ok(page) => {
                        let mut messages: Vec<pb::Publish> = page.messages.iter().map(history_publish).collect();
                        if query.before_id > 0 {
                            messages.reverse(); // "load older": newest first, the screen's order
                        }
                        (messages, page.has_more, 0)
                    }
                    Err(e) => (Vec::new(), false, u32::from(e.reason_code())),
                };
                let reply = pb::HistoryReply {
                    request_id: request.request_id,
                    topic: request.topic,
                    messages,
                    reason_code,
                    has_more,
                };
                self.push(Body::HistoryReply(reply));
            }
            Body::Disconnect(disconnect) => {
                return Err(if disconnect.reason_code == u32::from(reason::DISCONNECT_WITH_WILL) {
                    CloseReason::ClientDisconnectedWithWill
                } else {
                    CloseReason::ClientDisconnected
                })
            }
            Body::Connect(_) => {
                return Err(CloseReason::violation(reason::PROTOCOL_ERROR, "second Connect on one connection"))
            }
            Body::ConnAck(_) | Body::SubAck(_) | Body::UnsubAck(_) | Body::HistoryReply(_) | Body::Error(_) => {
                return Err(CloseReason::violation(reason::PROTOCOL_ERROR, "server-to-client frame sent by a client"))
            }
        }
        Ok(())
    }

    async fn handle_publish(&mut self, client: &mut Client, publish: pb::Publish) -> Result<(), CloseReason> {
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
                    self.push(Body::PubAck(ack));
                } else {
                    self.push(Body::Error(pb::Error {
                        code: reason::TOPIC_NAME_INVALID.into(),
                        message: e.to_string(),
                    }));
                }
                return Ok(());
            }
        };
        let mut message = Message::new(topic, publish.payload, qos, publish.retain);
        message.handling.high_priority = publish.high_priority;
        if qos == QoS::AtLeastOnce {
            // In a cluster the answer may wait for JetStream: reading goes
            // on meanwhile, and `acknowledged` sends it (client/acks.rs).
            let token = AckToken { packet_id: publish.packet_id as u16, qos };
            if let Some(published) = client.publish_answered_later(message, token).await {
                self.acknowledge_publish(token, published);
            }
            return Ok(());
        }
        let published = client.publish(message).await;
        // QoS 0: say why a message was refused or denied, keep the connection.
        let text = match published {
            Published::Refused(refusal) => refusal.text(),
            Published::Denied => "not allowed to publish to this topic",
            Published::StoreFailed => "the store failed",
            Published::Accepted { .. } => return Ok(()),
        };
        self.push(Body::Error(pb::Error { code: published.reason_code().into(), message: text.into() }));
        Ok(())
    }

    /// The PubAck for a QoS 1 publish, now or once owed.
    fn acknowledge_publish(&mut self, token: AckToken, published: Published) {
        let reason_code = published.reason_code().into();
        self.push(Body::PubAck(pb::PubAck { packet_id: token.packet_id.into(), reason_code }));
    }

    // ---- I/O ---------------------------------------------------------------

    /// Next heartbeat or frame; `None` when the peer closed.
    async fn next_inbound(&mut self) -> Result<Option<Inbound>, CloseReason> {
        std::future::poll_fn(|cx| self.poll_next_inbound(cx)).await
    }

    fn poll_next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Inbound>, CloseReason>> {
        Poll::Ready(loop {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(WsMessage::Binary(data))) => {
                    break decode(&data).map(Some).map_err(|e| match e {
                        FrameError::Empty | FrameError::BadHeartbeat(_) => {
                            CloseReason::violation(reason::PROTOCOL_ERROR, e.to_string())
                        }
                        FrameError::Malformed(_) => CloseReason::violation(reason::MALFORMED_PACKET, e.to_string()),
                    })
                }
                Some(Ok(WsMessage::Text(_))) => {
                    break Err(CloseReason::violation(
                        reason::PROTOCOL_ERROR,
                        "text messages are not part of starling.v1; send binary",
                    ))
                }
                Some(Ok(WsMessage::Close(_))) | None => break Ok(None),
                Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                Some(Err(WsError::Capacity(e))) => {
                    break Err(CloseReason::violation(reason::PACKET_TOO_LARGE, format!("frame too large: {e}")))
                }
                Some(Err(e)) => break Err(CloseReason::Io(e.to_string())),
            }
        })
    }

    /// Queues a frame for the next flush.
    fn push(&mut self, body: Body) {
        self.pending.push(WsMessage::Binary(encode(body)));
    }

    async fn send(&mut self, body: Body) -> Result<(), CloseReason> {
        self.ws.send(WsMessage::Binary(encode(body))).await.map_err(|e| CloseReason::Io(e.to_string()))
    }

    /// Tells the client why (an `Error` for its mistakes, a `Disconnect` for
    /// the server's reasons), then closes the WebSocket.
    async fn close(&mut self, reason: &CloseReason) {
        // What the loop had queued (a last PubAck) goes out before the goodbye.
        let _ = std::future::poll_fn(|cx| Edge::poll_flush(self, cx)).await;
        if let Some(code) = reason.disconnect_code() {
            let text = reason.to_string();
            let frame = match reason {
                CloseReason::Violation { code, what } => {
                    Body::Error(pb::Error { code: (*code).into(), message: what.clone() })
                }
                _ => Body::Disconnect(pb::Disconnect {
                    reason_code: code.into(),
                    reason: text.clone(),
                    // A takeover or a sign-in elsewhere means another connection
                    // is live: do not fight it ("signed in elsewhere").
                    reconnect: !matches!(reason, CloseReason::TakenOver | CloseReason::SignedInElsewhere),
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

/// The default QoS of the class of `filter` (a room, no wildcards), capped at 1.
fn class_default_qos(client: &Client, filter: &str) -> u32 {
    TopicName::new(filter)
        .ok()
        .and_then(|topic| client.broker().classes().classify(&topic).map(|c| c.class.default_qos as u32))
        .unwrap_or(0)
        .min(1)
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
        sender: m.sender.as_deref().unwrap_or("").to_string(),
        sender_client_id: m.publisher.as_deref().unwrap_or("").to_string(),
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
