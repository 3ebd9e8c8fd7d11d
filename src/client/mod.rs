//! The client core: one client's life, the same for every transport.
//!
//! Owns: admission ([`admit`]: reserved client ids, authentication, will
//! checks, session ownership, single sign-on, keep-alive clamp), the
//! connected loop ([`Client::serve`]: read | outbox | kick | shutdown |
//! keep-alive | credential expiry), drain batching, and every per-operation
//! policy with typed outcomes ([`Client::publish`], [`Client::subscribe`],
//! [`Client::unsubscribe`], [`Client::history`]): access control, class
//! roles, `$SYS` protection. A rule enforced here holds for MQTT/TCP,
//! MQTT/WebSocket and starling.v1 alike.
//! Must never: know a wire format. Transports ([`Edge`]s: `mqtt::connection`,
//! `wsproto::connection`) decode, encode, read, write, flush and close, and
//! map the outcomes to their own codes in one place each.

use crate::auth::{AuthRequest, Credentials, Identity, Transport};
use crate::broker::stats::{Limit, RefusedBecause};
use crate::broker::{
    now_ms, Ack, Broker, ConnectRefused, ConnectRequest, HistoryError, HistoryPage, HistoryQuery, Message, Outgoing,
    PublishOutcome, Refusal, Session, Will,
};
use crate::config::SingleSession;
use crate::model::{reason, CloseReason, LastWill, QoS, SubscriptionOptions};
use crate::topic::{parse_subscription, TopicError, TopicName};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

mod acks;
mod admit;
pub mod lifecycle;
pub use acks::AckToken;
pub use admit::{admit, attach_trusted, Admitted, ConnectInfo, Peer, Refused};

/// How a publish ended, for the transport's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Accepted (durable where promised); `matched` is false when nobody subscribed.
    Accepted { matched: bool },
    /// The access rules (ACL, class roles, `$SYS`) forbid it.
    Denied,
    /// The topic's class refused it (rate, size).
    Refused(Refusal),
    /// The store could not make it durable.
    StoreFailed,
}

impl Published {
    /// The MQTT 5 / starling.v1 reason code.
    pub fn reason_code(self) -> u8 {
        match self {
            Published::Accepted { matched: true } => reason::SUCCESS,
            Published::Accepted { matched: false } => reason::NO_MATCHING_SUBSCRIBERS,
            Published::Denied => reason::NOT_AUTHORIZED,
            Published::Refused(refusal) => refusal.reason_code(),
            Published::StoreFailed => reason::UNSPECIFIED_ERROR,
        }
    }
}

/// A publish's acknowledgement as the client core reports it.
fn published(ack: Ack) -> Published {
    match ack {
        Ack::Accepted { matched } => Published::Accepted { matched },
        // Not durable where promised, on this node or in the cluster.
        Ack::StoreFailed | Ack::NotReplicated => Published::StoreFailed,
        Ack::Refused(refusal) => Published::Refused(refusal),
    }
}

/// How one subscription request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscribed {
    Granted(QoS),
    Denied,
    InvalidFilter(TopicError),
    /// `session.max_subscriptions_per_client` reached.
    QuotaExceeded,
}

impl Subscribed {
    /// The MQTT 5 SUBACK / starling.v1 SubAck code.
    pub fn reason_code(&self) -> u8 {
        match self {
            Subscribed::Granted(qos) => *qos as u8,
            Subscribed::Denied => reason::NOT_AUTHORIZED,
            Subscribed::InvalidFilter(_) => reason::TOPIC_FILTER_INVALID,
            Subscribed::QuotaExceeded => reason::QUOTA_EXCEEDED,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribed {
    Removed,
    NotSubscribed,
    InvalidFilter,
}

impl Unsubscribed {
    pub fn reason_code(self) -> u8 {
        match self {
            Unsubscribed::Removed => reason::SUCCESS,
            Unsubscribed::NotSubscribed => reason::NO_SUBSCRIPTION_EXISTED,
            Unsubscribed::InvalidFilter => reason::TOPIC_FILTER_INVALID,
        }
    }
}

/// What ended a connection's idle wait.
enum Woke {
    Kicked(CloseReason),
    Received(Result<Received, CloseReason>),
    Deliveries,
    /// The oldest acknowledgement owed is known.
    Acknowledged(AckToken, Published),
}

/// What a read from the peer brought.
pub enum Received {
    /// Input is buffered in the edge, ready for [`Edge::handle`].
    Data,
    /// The peer closed the connection.
    Closed,
}

/// A transport's side of a connection: decoding, encoding and the socket.
pub trait Edge: Send {
    /// Deliveries taken from the outbox per write.
    const DRAIN_BATCH: usize;
    /// Polls for input from the peer and buffers it. Poll-based, not an
    /// `async fn`: the idle wait polls it next to the kick and the outbox
    /// without holding a future for it.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received, CloseReason>>;
    /// Handles everything buffered, calling the client's operations.
    fn handle(&mut self, client: &mut Client) -> impl Future<Output = Result<(), CloseReason>> + Send;
    /// Encodes one delivery (or QoS 2 release) into the pending write.
    fn write_outgoing(&mut self, client: &mut Client, item: Outgoing);
    /// Deliveries the edge can take now (a bridge's bounded request queue);
    /// network edges take a batch whenever they write.
    fn room(&self) -> usize {
        usize::MAX
    }
    /// About to encode `items` deliveries holding `bytes` of topics and
    /// payloads: an edge that buffers its writes makes room once, instead of
    /// regrowing (and copying) its buffer while the batch is encoded.
    fn reserve(&mut self, _items: usize, _bytes: usize) {}
    /// Writes everything pending with as few calls as it can.
    /// Poll-based, like `poll_receive`: the loop's future holds no flush
    /// future (a blocked write is waited for in a boxed slow path).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>>;
    /// Writes the answer to a publish that [`Client::publish_answered_later`]
    /// took without answering (its acknowledgement waited for the backplane).
    fn acknowledged(&mut self, client: &mut Client, token: AckToken, published: Published) -> Result<(), CloseReason>;
}

/// A connected client: its session, identity and the loop that serves it.
pub struct Client {
    /// For the traffic counters.
    transport: Transport,
    broker: Arc<Broker>,
    session: Arc<Session>,
    identity: Arc<Identity>,
    /// The waker this connection left with its session, to be told when it
    /// must close (takeover, shutdown, single sign-on; `Session::poll_close`).
    close_waker: Option<std::task::Waker>,
    connection_id: u64,
    /// Boxed: most connections have none, and it would otherwise weigh on
    /// every connection's task.
    will: Option<Box<LastWill>>,
    /// How long the client may stay silent (ms; 0: no limit).
    liveness_ms: u32,
    /// Deliveries routed since this task last yielded.
    routed: usize,
    /// Whether the next publish goes behind the ready tasks first (see `publish`).
    yield_before_routing: bool,
    /// Write batches so far (latency sampling).
    batches: u32,
    /// Rate limits key on this: `user:NAME`, or `ip:ADDR` when anonymous;
    /// `None` (the client id) for anonymous loopback peers unless
    /// `mqtt.limit_loopback_peers` (local tools and pages share one address).
    rate_key: Option<Arc<str>>,
    /// `finish` ran; otherwise dropping the client (a panic in its task)
    /// still ends the attachment, so a session is never left marked connected.
    finished: bool,
    /// Acknowledgements owed to publishes still waiting for the backplane
    /// (`acks.rs`); `None` while there are none.
    owed: Option<Box<acks::OwedAcks>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.finished || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        tracing::warn!(client_id = %self.session.client_id, "connection task ended without closing; cleaning up");
        let will = self.take_will();
        self.broker.disconnected(&self.session, self.connection_id, will, crate::model::WillAction::Publish);
        self.broker.stats.disconnected(&CloseReason::Io("the connection's task ended without closing".into()));
    }
}

impl Client {
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    pub fn client_id(&self) -> &str {
        &self.session.client_id
    }

    /// Serves the connection until it must end, and says why.
    pub async fn serve<E: Edge>(&mut self, edge: &mut E) -> CloseReason {
        let mut shutdown = self.broker.shutdown_signal();
        let mut outgoing = Vec::new();
        // Keep-alive and credential expiry are enforced by the broker's
        // once-a-second sweep, which kicks this connection: no timer here.
        self.keep_alive_from_now();
        if let Some(at) = self.identity.expires_at_ms {
            self.session.set_credentials_expire_ms(at.max(1));
        }
        // Input that arrived with the connect (a client need not wait for
        // the acknowledgement, [MQTT-3.1.4]) is handled now, not when more
        // input happens to arrive.
        if let Err(reason) = Box::pin(edge.handle(self)).await {
            return reason;
        }
        loop {
            // Drain what the outbox holds (bounded), then write once. A write
            // that does not complete in time closes the connection; takeover
            // and shutdown are still seen while it waits.
            let more = self.drain(edge, &mut outgoing);
            // Most writes complete at once; a blocked one waits in a boxed
            // slow path (its timer and select must not enlarge every idle
            // connection's task).
            match std::future::poll_fn(|cx| Poll::Ready(edge.poll_flush(cx))).await {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(reason)) => return reason,
                Poll::Pending => {
                    if let Err(reason) = Box::pin(self.flush_blocked(edge, &mut shutdown)).await {
                        return reason;
                    }
                }
            }
            if *shutdown.borrow() {
                return CloseReason::ServerShutdown;
            }
            if more {
                // The write budget was spent with deliveries left: take the
                // next share after the other ready tasks had their turn.
                tokio::task::yield_now().await;
            }
            // The idle wait: a kick (takeover, shutdown, keep-alive), input,
            // or deliveries. Polled by hand, in that order, so an idle
            // connection's task holds no future for any of them (its size is
            // every idle connection's cost; docs/performance.md).
            let woke = std::future::poll_fn(|cx| {
                if let Poll::Ready(reason) = self.session.poll_close(self.connection_id, &mut self.close_waker, cx) {
                    return Poll::Ready(Woke::Kicked(reason));
                }
                if let Some(owed) = self.owed.as_mut() {
                    if let Poll::Ready(Some((token, published))) = owed.poll_next(cx) {
                        return Poll::Ready(Woke::Acknowledged(token, published));
                    }
                }
                // Owing too many answers, stop reading until some go out.
                if self.owed.as_ref().is_none_or(|owed| owed.len() < acks::MAX_OWED) {
                    if let Poll::Ready(received) = edge.poll_receive(cx) {
                        return Poll::Ready(Woke::Received(received));
                    }
                }
                if more {
                    return Poll::Ready(Woke::Deliveries);
                }
                self.session.poll_deliveries(self.connection_id, cx).map(|()| Woke::Deliveries)
            })
            .await;
            match woke {
                Woke::Kicked(reason) => return reason,
                Woke::Deliveries => {
                    // While the broker fans out, this writer is likely one
                    // of many woken by one message: let the kernel be polled
                    // once before writing, so a publisher whose next messages
                    // arrived meanwhile routes them first and this write
                    // carries them too. Fewer, larger writes cut the
                    // fixed-rate fan-out's p99 by a third to a half on a busy
                    // core; without fan-out, deliveries are written at once
                    // (docs/performance.md, "Write coalescing at a fixed rate").
                    if self.broker.fanning_out() {
                        tokio::task::yield_now().await;
                    }
                }
                Woke::Acknowledged(token, published) => {
                    if self.owed.as_ref().is_some_and(|owed| owed.is_empty()) {
                        self.owed = None;
                    }
                    if let Err(reason) = edge.acknowledged(self, token, published) {
                        return reason;
                    }
                }
                Woke::Received(Ok(Received::Closed)) => return CloseReason::PeerClosed,
                Woke::Received(Err(reason)) => return reason,
                Woke::Received(Ok(Received::Data)) => {
                    self.keep_alive_from_now();
                    self.yield_before_routing = read_soon_after_idle();
                    if let Err(reason) = Box::pin(edge.handle(self)).await {
                        return reason;
                    }
                    if std::mem::take(&mut self.routed) > 0 {
                        // Fairness: after routing, wait for the next poll of
                        // the kernel, so the subscribers' writers run (and
                        // more input gathers) before this task reads again.
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }

    /// Input arrived (or the connection started): the keep-alive runs anew.
    /// On every read, so the coarse clock (a load, no clock call): the sweep
    /// runs once a second, a millisecond either way does not matter.
    fn keep_alive_from_now(&self) {
        if self.liveness_ms > 0 {
            let now = crate::clock::coarse_now_ms();
            self.session.set_silent_deadline_ms((now + u64::from(self.liveness_ms)).max(1));
        }
    }

    /// A write the socket could not take at once: bounded by
    /// `mqtt.write_timeout_secs` (the client stopped reading), and still
    /// ended by a kick or shutdown.
    async fn flush_blocked<E: Edge>(
        &mut self,
        edge: &mut E,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), CloseReason> {
        let write_timeout = Duration::from_secs(self.broker.config().mqtt.write_timeout_secs);
        let (session, connection_id, close_waker) = (&self.session, self.connection_id, &mut self.close_waker);
        session.set_writer_blocked(true);
        let result = tokio::select! {
            biased;
            reason = std::future::poll_fn(|cx| session.poll_close(connection_id, close_waker, cx)) => Err(reason),
            _ = shutdown.changed() => Err(CloseReason::ServerShutdown),
            result = std::future::poll_fn(|cx| edge.poll_flush(cx)) => result,
            _ = tokio::time::sleep(write_timeout) => Err(CloseReason::WriteTimeout),
        };
        session.set_writer_blocked(false);
        result
    }

    /// Ends the session's attachment: publishes or schedules the will, and
    /// ends or keeps the session, as `reason` decides.
    pub fn finish(mut self, reason: &CloseReason) {
        // Once per admitted connection, whatever ended it (connections that
        // never completed CONNECT are logged at debug level by their edge).
        // The canary's own probes (several every interval) at debug: they
        // would drown the log, and their failures are logged by the canary.
        let user = self.identity.user.as_deref().unwrap_or("");
        if user == crate::auth::CANARY_USER {
            tracing::debug!(client_id = %self.session.client_id, user, %reason, "connection closed");
        } else {
            let (peer, started_ms) = self.session.peer_and_start_of(self.connection_id).unwrap_or((None, 0));
            let peer = peer.map_or_else(String::new, |p| p.to_string());
            let duration_secs = if started_ms == 0 { 0.0 } else { now_ms().saturating_sub(started_ms) as f64 / 1000.0 };
            tracing::info!(client_id = %self.session.client_id, user, peer, duration_secs, %reason, "connection closed");
        }
        let will = self.take_will();
        self.broker.disconnected(&self.session, self.connection_id, will, reason.will_action());
        self.broker.stats.disconnected(reason);
        if let CloseReason::Malformed { code: reason::PACKET_TOO_LARGE, .. } = reason {
            self.broker.stats.limit_hit(Limit::PacketSize);
        }
        self.finished = true;
    }

    /// Moves deliveries from the outbox into the edge's pending write: up to
    /// `DRAIN_BATCH` items a round while rounds come back full, and never
    /// much more than `WRITE_BUDGET` bytes before a write, so a reader that
    /// stops reading pins one bounded buffer, not its whole outbox.
    ///
    /// Returns true when it stopped at the byte budget with deliveries left:
    /// the serve loop must drain again after this write, because the outbox
    /// wakes its writer only when it goes from empty to non-empty (issue 23:
    /// a reader that paused during a burst otherwise never got the rest).
    fn drain<E: Edge>(&mut self, edge: &mut E, outgoing: &mut Vec<Outgoing>) -> bool {
        let mut budget = WRITE_BUDGET;
        loop {
            let batch = E::DRAIN_BATCH.min(edge.room());
            if batch == 0 {
                return false;
            }
            let drained = self.session.drain(outgoing, batch, budget, crate::clock::coarse_now_ms());
            let taken = drained.bytes;
            if outgoing.is_empty() {
                return false;
            }
            budget = budget.saturating_sub(taken);
            let full = outgoing.len() == batch;
            let mut by_qos = [0u64; 3];
            self.batches = self.batches.wrapping_add(1);
            if self.batches.is_multiple_of(LATENCY_SAMPLE_EVERY) {
                if let Some(Outgoing::Publish { delivery, .. }) = outgoing.first() {
                    sample_delivery_latency(&self.broker, delivery.message.timestamp_ms);
                }
            }
            edge.reserve(outgoing.len(), taken);
            for item in outgoing.drain(..) {
                if let Outgoing::Publish { delivery, .. } = &item {
                    by_qos[delivery.qos as usize] += 1;
                }
                edge.write_outgoing(self, item);
            }
            self.broker.stats.sent(self.transport, by_qos, taken);
            if !drained.more {
                return false;
            }
            if budget == 0 || !full {
                return true;
            }
        }
    }

    /// Called by an edge between inbound packets: after routing a lot in one
    /// turn, let the writers take it while the outboxes are small and in cache.
    pub async fn yield_if_routed_enough(&mut self) {
        if self.routed >= route_budget() {
            self.routed = 0;
            tokio::task::yield_now().await;
        }
    }

    // ---- operations ------------------------------------------------------

    /// Publishes a QoS 0 message for this client: access rules first, then
    /// the broker (class admission, routing). QoS 1/2 messages go through
    /// [`Client::publish_answered_later`].
    pub async fn publish(&mut self, message: Message) -> Published {
        debug_assert!(message.qos == QoS::AtMostOnce);
        let Some(message) = self.take_in_allowed(message).await else { return Published::Denied };
        let outcome = self.broker.publish_paced(message).await;
        self.routed_at_most_once(&outcome)
    }

    /// Counts and stamps an inbound message and applies the access rules:
    /// `None` when they forbid it (counted and logged).
    async fn take_in_allowed(&mut self, mut message: Message) -> Option<Message> {
        self.take_in(&mut message);
        self.yield_if_first_since_idle().await;
        if !self.may_publish(&mut message) {
            self.broker.security().count_denied_publish();
            tracing::debug!(client_id = %self.session.client_id, topic = %message.topic, "publish denied");
            return None;
        }
        Some(message)
    }

    /// Publishes a QoS 1/2 message for this client: `Some` is the answer
    /// now; `None` means the edge is told by [`Edge::acknowledged`] once the
    /// backplane answered (or its deadline passed), while the connection goes
    /// on reading. An answer is never sent before one owed to an earlier
    /// publish. Acknowledged means durable: the broker waits for the store
    /// (and in a cluster for JetStream) first.
    pub async fn publish_answered_later(&mut self, message: Message, token: AckToken) -> Option<Published> {
        debug_assert!(message.qos != QoS::AtMostOnce);
        let behind = self.owed.is_some();
        let Some(message) = self.take_in_allowed(message).await else {
            return self.answer_in_order(token, behind, Published::Denied);
        };
        self.routed += 1;
        let outcome = self.broker.publish_paced(message).await;
        if outcome.backplane_ack.is_none() && !behind {
            // Nothing slow to wait for (at most a group commit): answer now.
            return Some(published(self.broker.acknowledge(outcome).await));
        }
        let acknowledgement = self.broker.acknowledgement(outcome);
        self.owed.get_or_insert_with(Default::default).push(token, async move { published(acknowledgement.await) });
        None
    }

    /// `answer` now, or after the answers already owed.
    fn answer_in_order(&mut self, token: AckToken, behind: bool, answer: Published) -> Option<Published> {
        if !behind {
            return Some(answer);
        }
        self.owed.get_or_insert_with(Default::default).push(token, std::future::ready(answer));
        None
    }

    /// [`Client::publish`] for a run of QoS 0 messages to one topic (one
    /// client's consecutive PUBLISH packets, none asking for high priority):
    /// the access rules are checked once (same client, same topic, same
    /// answer), and the broker routes the run in one pass
    /// ([`Broker::publish_run`]). One result per message taken, in order; a
    /// refused message is the last taken, and the messages after it come
    /// back for the caller to publish next or drop with the connection.
    pub async fn publish_run(&mut self, mut messages: Vec<Message>) -> (Vec<Published>, Vec<Message>) {
        debug_assert!(messages.iter().all(|m| m.qos == QoS::AtMostOnce && !m.handling.high_priority));
        for message in &mut messages {
            self.take_in(message);
        }
        self.yield_if_first_since_idle().await;
        let count = messages.len();
        let Some(first) = messages.first_mut() else { return (Vec::new(), Vec::new()) };
        if !self.may_publish(first) {
            tracing::debug!(client_id = %self.session.client_id, topic = %first.topic, "publish denied");
            for _ in 0..count {
                self.broker.security().count_denied_publish();
            }
            return (vec![Published::Denied; count], Vec::new());
        }
        let (outcomes, rest) = self.broker.publish_run_paced(messages).await;
        let published = outcomes.iter().map(|outcome| self.routed_at_most_once(outcome)).collect();
        (published, rest)
    }

    /// Counts an inbound message and stamps it with its publisher.
    fn take_in(&self, message: &mut Message) {
        self.broker.stats.received(self.transport, message.qos, message.payload.len());
        self.broker.stats.topics.publish(message.topic.as_str());
        message.publisher = Some(self.session.client_id.clone());
        message.sender = self.identity.user.clone();
        message.rate_key = self.rate_key.clone();
        // The broker's own keys (the verified sender) are never the client's.
        if !message.properties.user_properties.is_empty() {
            message.properties.user_properties.retain(|(key, _)| !crate::broker::is_reserved_property(key));
        }
    }

    /// Among the first reads since this worker woke from idle: let every
    /// task that is ready run first. When one poll of the kernel wakes a
    /// subscriber's task (its SUBSCRIBE) and then this one, Tokio runs the
    /// task woken last first (its LIFO slot); going behind the others lets
    /// the SUBSCRIBE be handled before this PUBLISH is routed, as the kernel
    /// ordered them (tests/paho_scenarios.rs, docs/architecture.md).
    async fn yield_if_first_since_idle(&mut self) {
        if std::mem::take(&mut self.yield_before_routing) {
            yield_to_back().await;
        }
    }

    /// A QoS 0 publish's result (counted toward the routing budget).
    fn routed_at_most_once(&mut self, outcome: &PublishOutcome) -> Published {
        self.routed += outcome.deliveries.max(1);
        match outcome.refused {
            Some(refusal) => Published::Refused(refusal),
            None => Published::Accepted { matched: outcome.deliveries > 0 || outcome.shed },
        }
    }

    /// ACL and class roles; clears a high-priority flag the client may not set.
    fn may_publish(&self, message: &mut Message) -> bool {
        self.broker.may_publish(&self.identity, &self.session.client_id, message)
    }

    /// The will, with the identity and rate key it is published under.
    fn take_will(&mut self) -> Option<Will> {
        self.will.take().map(|will| Will {
            last_will: *will,
            identity: self.identity.clone(),
            rate_key: self.rate_key.clone(),
        })
    }

    /// Adds subscriptions (one SUBSCRIBE's filters) where the access rules
    /// and the per-client quota allow, queues the retained messages they ask
    /// for, and saves the session record once.
    pub fn subscribe_all(
        &mut self,
        filters: impl IntoIterator<Item = (String, SubscriptionOptions)>,
        identifier: Option<u32>,
    ) -> Vec<Subscribed> {
        let results: Vec<Subscribed> =
            filters.into_iter().map(|(filter, options)| self.subscribe_one(&filter, options, identifier)).collect();
        if results.iter().any(|r| matches!(r, Subscribed::Granted(_))) {
            self.session.save();
        }
        results
    }

    fn subscribe_one(&mut self, filter: &str, options: SubscriptionOptions, identifier: Option<u32>) -> Subscribed {
        let parsed = match parse_subscription(filter) {
            Ok(parsed) => parsed,
            Err(e) => return Subscribed::InvalidFilter(e),
        };
        let Some(holes) = self.broker.read_access_to(&self.identity, &self.session.client_id, &parsed) else {
            tracing::debug!(client_id = %self.session.client_id, filter, "subscription denied");
            return Subscribed::Denied;
        };
        let max = self.broker.config().session.max_subscriptions_per_client;
        if self.session.subscription_count() >= max && !self.session.has_subscription(filter) {
            self.broker.stats.limit_hit(Limit::SubscriptionsPerClient);
            return Subscribed::QuotaExceeded;
        }
        let record = crate::broker::SubscriptionRecord { options, identifier, holes };
        Subscribed::Granted(self.broker.subscribe_unsaved(&self.session, &parsed, record))
    }

    pub fn unsubscribe(&mut self, filter: &str) -> Unsubscribed {
        match parse_subscription(filter) {
            Err(_) => Unsubscribed::InvalidFilter,
            Ok(parsed) if self.broker.unsubscribe(&self.session, &parsed) => Unsubscribed::Removed,
            Ok(_) => Unsubscribed::NotSubscribed,
        }
    }

    /// Recent messages of a room, if this client may subscribe to it.
    pub fn history(&self, topic: &str, query: HistoryQuery) -> Result<HistoryPage, HistoryError> {
        history_for(&self.broker, &self.identity, &self.session.client_id, topic, query)
    }
}

/// Records the publish-to-delivery latency of a batch's first delivery. Called
/// for one write batch in [`LATENCY_SAMPLE_EVERY`] of each client: a clock
/// read per delivery would cost the fan-out path more than the histogram is
/// worth.
fn sample_delivery_latency(broker: &Broker, accepted_at_ms: u64) {
    if accepted_at_ms > 0 {
        let waited_ms = now_ms().saturating_sub(accepted_at_ms);
        broker.stats.delivery_latency.observe(waited_ms as f64 / 1000.0);
    }
}

/// One write batch in this many (per client) has its first delivery's latency recorded.
const LATENCY_SAMPLE_EVERY: u32 = 16;

/// History for any requester (a connected client, or the HTTP API):
/// allowed where subscribing to the topic is.
pub fn history_for(
    broker: &Broker,
    identity: &Identity,
    client_id: &str,
    topic: &str,
    query: HistoryQuery,
) -> Result<HistoryPage, HistoryError> {
    if TopicName::new(topic).is_err() {
        return Err(HistoryError::InvalidTopic);
    }
    if !broker.may_subscribe(identity, client_id, topic) {
        return Err(HistoryError::Denied);
    }
    broker.history(topic, query)
}

/// Bytes of messages taken from the outbox before a write: bounds the write
/// buffer of a client that stopped reading (plus one message over it).
const WRITE_BUDGET: usize = 1024 * 1024;

/// Deliveries a publisher routes before it yields (env `STARLING_ROUTE_BUDGET`).
fn route_budget() -> usize {
    static BUDGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUDGET
        .get_or_init(|| std::env::var("STARLING_ROUTE_BUDGET").ok().and_then(|v| v.parse().ok()).unwrap_or(32 * 1024))
}

/// Puts this task at the back of its worker's run queue, behind every task
/// that is ready now. A task that wakes itself while it is being polled is
/// queued at the back (not in the LIFO slot, and not deferred to the next
/// poll of the kernel as `tokio::task::yield_now` is, which lets the kernel's
/// newer events overtake the tasks already queued).
async fn yield_to_back() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

thread_local! {
    /// Reads handled on this worker thread since it last woke from idle.
    static READS_SINCE_IDLE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// How many reads after a worker wakes from idle yield before routing. The
/// events of one poll of the kernel run right after the wake; under
/// sustained load workers do not go idle, so the hot path never yields.
const ORDER_WINDOW_READS: u32 = 256;

/// For the runtime's `on_thread_unpark` hook (`server::runtime`): this
/// worker thread woke from idle, and the events it now runs came from one
/// poll of the kernel.
pub fn worker_woke_from_idle() {
    READS_SINCE_IDLE.set(0);
}

/// Counts a read on this worker; whether it is among the first after idle.
fn read_soon_after_idle() -> bool {
    let reads = READS_SINCE_IDLE.get();
    READS_SINCE_IDLE.set(reads.saturating_add(1));
    reads < ORDER_WINDOW_READS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::MemoryStore;

    /// A connection task that panics (a bug in an edge, say) still ends its
    /// client: the session is no longer connected (a clean one is gone) and
    /// the will goes out, as for any connection lost without DISCONNECT.
    #[tokio::test]
    async fn a_task_that_panics_still_ends_its_session_and_sends_its_will() {
        let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new())).unwrap();
        let peer = Peer {
            addr: "127.0.0.1:5000".parse().unwrap(),
            transport: Transport::MqttTcp,
            local_listener: true,
            tls: false,
            certificate_user: None,
        };
        let info = ConnectInfo {
            client_id: "doomed".into(),
            clean_start: true,
            session_expiry_secs: 0,
            receive_maximum: 10,
            keep_alive_secs: 30,
            may_lower_keep_alive: true,
            will: Some(LastWill {
                topic: "wills/doomed".into(),
                payload: bytes::Bytes::from_static(b"gone"),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Default::default(),
            }),
            credentials: Credentials::default(),
            protocol: "5",
        };
        let admitted = admit(&broker, &peer, info).await.expect("admitted");
        assert!(broker.session("doomed").is_some_and(|s| s.is_connected()));
        let task = tokio::spawn(async move {
            let _client = admitted.client;
            panic!("a bug in the connection task");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(broker.session("doomed").is_none_or(|s| !s.is_connected()), "the session was left connected");
        assert_eq!(broker.retained_count(), 1, "the will (retained) was not published");
    }
}
