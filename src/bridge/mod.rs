//! Bridges: links from this broker to other MQTT brokers (`[[bridge]]` in the
//! configuration; `docs/bridging.md` is the user's guide).
//!
//! Owns: one task per bridge that keeps a rumqttc connection to the remote
//! (reconnecting with exponential back-off and jitter), carries messages both
//! ways according to the topic rules, and reports its state
//! ([`BridgeStatus`]). While the link is up, the client core's loop
//! (`client::Client::serve`) drives it through `BridgeEdge`, like any
//! network connection. Must never: reach into the broker core. A bridge
//! attaches through the same door as a network client: a persistent session
//! of its own, `$bridge/{name}`, made with [`Broker::connect`], which
//! subscribes to the `out` rules, drains its outbox and acknowledges each
//! QoS 1 delivery only when the remote has acknowledged it; remote messages
//! for the `in` rules are published with [`Broker::publish`] and
//! acknowledged to the remote only once [`Broker::acknowledge`] holds (the
//! one acknowledgement every edge waits for: group commit, then the cluster).
//!
//! Consequences, all inherited from sessions: while the remote is away the
//! session is disconnected, so QoS 1 out-messages queue in its outbox (bounded,
//! drop-new, stored in sled: they survive a restart) and QoS 0 ones are
//! dropped, like for any offline client; on reconnect, unacknowledged
//! deliveries are resent first.
//!
//! Loop prevention: the local subscriptions use No Local and remote messages
//! are published under the bridge's client id, so a bridge never sends back
//! out what it brought in; MQTT 5 remote subscriptions use No Local; on MQTT
//! 3.1.1 links an [`rules::EchoFilter`] drops what the remote echoes.

mod link;
mod rules;

use crate::broker::{Ack, Broker, ConnectRequest, Message, Outgoing, Session, WillAction, NEVER_EXPIRES};
use crate::client::{Client, Edge, Received};
use crate::config::BridgeConfig;
use crate::model::CloseReason;
use crate::model::{QoS, SubscriptionOptions};
use futures_util::stream::{FuturesOrdered, StreamExt};
use link::{AckHandle, Link, LinkEvent, LinkOptions, RemotePublish, Request};
use parking_lot::Mutex;
use rules::{Backoff, EchoFilter, Rules};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::model::BRIDGE_CLIENT_ID_PREFIX as LOCAL_CLIENT_ID_PREFIX;

/// QoS 1 messages a bridge keeps in flight towards the remote (lowered to an
/// MQTT 5 remote's Receive Maximum).
const OUT_WINDOW: u16 = 32;
/// Out-messages taken from the session but not yet sent by rumqttc, at most.
const MAX_PENDING: usize = 256;
/// How long (and how many) sent messages the 3.1.1 echo filter remembers.
const ECHO_WINDOW: Duration = Duration::from_secs(30);
const ECHO_MAX: usize = 10_000;
/// How long stopping waits for the remote to get our DISCONNECT.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What a bridge is doing, for operators and tests (`Server::bridges`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeStatus {
    pub name: String,
    pub address: String,
    /// The link to the remote is up.
    pub connected: bool,
    /// Why the link last failed or could not be made; kept after recovery.
    pub last_error: Option<String>,
    /// Successful connections so far.
    pub connects: u64,
    /// Messages from the remote published here.
    pub messages_in: u64,
    /// Messages handed to the remote (QoS 1: acknowledged by it).
    pub messages_out: u64,
    /// Out-messages waiting in the bridge's session (not yet sent).
    pub queue_depth: usize,
    /// QoS 1 out-messages sent and not yet acknowledged by the remote.
    pub inflight: usize,
}

/// Reads a bridge's state from anywhere (see [`Bridge::monitor`]).
#[derive(Clone)]
pub struct BridgeMonitor(Arc<Shared>);

impl BridgeMonitor {
    pub fn status(&self) -> BridgeStatus {
        let s = &self.0;
        let (connected, last_error) = s.link.lock().clone();
        BridgeStatus {
            name: s.name.clone(),
            address: s.address.clone(),
            connected,
            last_error,
            connects: s.connects.load(Ordering::Relaxed),
            messages_in: s.messages_in.load(Ordering::Relaxed),
            messages_out: s.messages_out.load(Ordering::Relaxed),
            queue_depth: s.session.lock().queued_len(),
            inflight: s.inflight.load(Ordering::Relaxed),
        }
    }
}

/// State shared between a bridge's task and its handle.
struct Shared {
    name: String,
    address: String,
    /// The bridge's local session (replaced if it ever expired and was recreated).
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    session: Mutex<Arc<Session>>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    link: Mutex<(bool, Option<String>)>,
    connects: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    inflight: AtomicUsize,
}

/// A configured bridge: prepared (its local session exists and queues), then
/// started (its task connects to the remote).
pub struct Bridge {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    runner: Option<Runner>,
    task: Option<JoinHandle<()>>,
}

impl Bridge {
    /// Reads the TLS files and sets up the bridge's local session so that
    /// out-messages queue from now on. Errors name the bridge.
    pub fn prepare(broker: &Arc<Broker>, config: &BridgeConfig) -> anyhow::Result<Bridge> {
        let rules = Rules::new(&config.topics).map_err(|e| anyhow::anyhow!("bridge {:?}: {e}", config.name))?;
        let options = LinkOptions::from_config(config, broker.config().mqtt.max_packet_size, OUT_WINDOW)?;
        let max_queued = config.max_queued_messages.unwrap_or(broker.config().session.max_queued_messages);
        let client_id = format!("{LOCAL_CLIENT_ID_PREFIX}{}", config.name);
        let connected = connect_local(broker, &client_id, OUT_WINDOW);
        let session = connected.session.clone();
        sync_local_subscriptions(broker, &session, &rules, max_queued);
        broker.disconnected(&session, connected.connection_id, None, WillAction::Discard);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            address: config.address.clone(),
            session: Mutex::new(session),
            link: Mutex::new((false, None)),
            connects: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
        });
        let runner = Runner {
            broker: broker.clone(),
            echo: (!options.v5).then(|| EchoFilter::new(ECHO_WINDOW, ECHO_MAX)),
            publisher: Arc::new(match &config.local_user {
                Some(user) => crate::auth::Identity {
                    user: Some(Arc::from(user.as_str())),
                    roles: broker.security().roles_of(user),
                    ..Default::default()
                },
                None => crate::auth::Identity::superuser(&format!("{LOCAL_CLIENT_ID_PREFIX}{}", config.name)),
            }),
            rules,
            options,
            client_id,
            max_queued,
            backoff: Backoff::new(
                Duration::from_millis(config.reconnect_delay_min_ms),
                Duration::from_millis(config.reconnect_delay_max_ms),
            ),
            shared: shared.clone(),
            stop: stop_rx,
        };
        Ok(Bridge { shared, stop, runner: Some(runner), task: None })
    }

    /// Starts the task that connects to the remote and keeps the link up.
    pub fn start(&mut self) {
        if let Some(runner) = self.runner.take() {
            self.task = Some(tokio::spawn(runner.run()));
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn status(&self) -> BridgeStatus {
        self.monitor().status()
    }

    /// A handle that reads this bridge's state (for the admin API).
    pub fn monitor(&self) -> BridgeMonitor {
        BridgeMonitor(self.shared.clone())
    }

    /// Asks the task to stop: it sends DISCONNECT to the remote and detaches
    /// its local session (which keeps what is queued).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the task to end after [`Bridge::stop`].
    pub async fn stopped(mut self) {
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STOP_GRACE * 2, &mut task).await.is_err() {
                tracing::warn!(bridge = %self.shared.name, "bridge did not stop in time");
                task.abort();
            }
        }
    }
}

fn local_connect_request(client_id: &str, window: u16) -> ConnectRequest {
    ConnectRequest {
        client_id: client_id.to_string(),
        clean_start: false,
        session_expiry_secs: NEVER_EXPIRES,
        receive_maximum: window,
        // The broker's own client: no user. Network clients cannot use
        // `$bridge/` ids, so nobody else can own this session.
        user: None,
        device: None,
        attachment: crate::broker::Attachment {
            transport: crate::auth::Transport::Bridge,
            protocol: "bridge",
            peer: None,
            keep_alive_secs: 0,
            connected_at_ms: crate::clock::now_ms(),
            identity: None,
        },
    }
}

/// Attaches the bridge's local session. Bridges are trusted like the
/// broker itself: their traffic is not subject to the ACL (docs/security.md).
fn connect_local(broker: &Arc<Broker>, client_id: &str, window: u16) -> crate::broker::Connected {
    broker
        .connect(local_connect_request(client_id, window))
        .expect("a $bridge/ session has no user and no network client can claim it")
}

/// Makes the local session's subscriptions those of the `out` rules: No
/// Local (what the bridge brought in is not sent back out), retain as
/// published, retained messages only for a new subscription.
fn sync_local_subscriptions(broker: &Broker, session: &Arc<Session>, rules: &Rules, max_queued: usize) {
    session.set_max_queued(max_queued);
    let wanted = rules.local_subscriptions();
    for (filter, _) in session.subscriptions() {
        if !wanted.iter().any(|(f, _)| *f == filter) {
            if let Ok(parsed) = crate::topic::parse_subscription(&filter) {
                broker.unsubscribe(session, &parsed);
            }
        }
    }
    for (filter, qos) in wanted {
        let options = SubscriptionOptions { qos, no_local: true, retain_as_published: true, retain_handling: 1 };
        match crate::topic::parse_subscription(&filter) {
            Ok(parsed) => {
                broker.subscribe(session, &parsed, options, None);
            }
            Err(e) => {
                tracing::error!(client_id = %session.client_id, %filter, error = %e, "bridge subscription refused")
            }
        }
    }
}

/// How one connection ended.
enum End {
    Stopped,
    Lost { was_connected: bool, error: String },
}

/// The bridge's task.
struct Runner {
    broker: Arc<Broker>,
    rules: Rules,
    options: LinkOptions,
    client_id: String,
    max_queued: usize,
    backoff: Backoff,
    /// MQTT 3.1.1 only (MQTT 5 subscribes with No Local).
    echo: Option<EchoFilter>,
    /// Whom messages from the remote are published as (`local_user`, or
    /// the bridge itself, trusted): checked like a client's PUBLISH.
    publisher: Arc<crate::auth::Identity>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
}

/// A remote QoS 1 message's acknowledgement to the remote, waiting for the
/// broker's one acknowledgement (storage, then the cluster).
type AckWait = Pin<Box<dyn Future<Output = (AckHandle, Ack)> + Send>>;

/// State of one connection.
struct LinkState {
    session: Arc<Session>,
    /// Requests not yet taken by rumqttc (its channel was full).
    requests: VecDeque<Request>,
    /// Local packet ids (0 for QoS 0) of publishes handed to rumqttc, in
    /// order, until rumqttc reports the packet id it chose.
    awaiting: VecDeque<u16>,
    /// Remote packet id → local packet id of QoS 1 publishes in flight.
    inflight: HashMap<u16, u16>,
    /// Remote QoS 1 messages published here, waiting for the broker's
    /// acknowledgement (`Broker::acknowledge`, the same the client core
    /// awaits) before they are acknowledged to the remote, in the order they
    /// arrived ([MQTT-4.6.0-2]).
    acks: FuturesOrdered<AckWait>,
}

impl Runner {
    async fn run(mut self) {
        loop {
            if *self.stop.borrow() {
                return;
            }
            let (was_connected, error) = match self.connect_once().await {
                End::Stopped => return,
                End::Lost { was_connected, error } => (was_connected, error),
            };
            let name = &self.shared.name;
            {
                let mut link = self.shared.link.lock();
                if was_connected {
                    self.backoff.reset();
                    tracing::warn!(bridge = %name, %error, "bridge link lost; reconnecting");
                } else if link.1.as_deref() != Some(error.as_str()) {
                    tracing::warn!(bridge = %name, address = %self.shared.address, %error, "bridge cannot connect; retrying");
                } else {
                    tracing::debug!(bridge = %name, %error, "bridge still cannot connect");
                }
                *link = (false, Some(error));
            }
            let delay = self.backoff.next_delay(rand::random());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    async fn connect_once(&mut self) -> End {
        let mut link = Link::open(&self.options);
        let (remote_session_present, receive_maximum) = loop {
            tokio::select! {
                event = link.events.recv() => match event {
                    Some(LinkEvent::ConnAck { session_present, receive_maximum }) => break (session_present, receive_maximum),
                    Some(LinkEvent::Closed(error)) => return End::Lost { was_connected: false, error },
                    None => return End::Lost { was_connected: false, error: "link task ended".into() },
                    Some(_) => {}
                },
                _ = self.stop.changed() => return End::Stopped,
            }
        };
        let window = receive_maximum.map_or(OUT_WINDOW, |r| r.min(OUT_WINDOW)).max(1);
        let connected = connect_local(&self.broker, &self.client_id, window);
        if connected.session_present {
            connected.session.set_max_queued(self.max_queued);
        } else {
            // The session expired while the remote was away (session.max_session_expiry_secs).
            sync_local_subscriptions(&self.broker, &connected.session, &self.rules, self.max_queued);
        }
        *self.shared.session.lock() = connected.session.clone();
        self.shared.connects.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(bridge = %self.shared.name, remote_session_present, queued = connected.session.queued_len(),
            "bridge link up");
        let mut st = LinkState {
            session: connected.session.clone(),
            requests: VecDeque::new(),
            awaiting: VecDeque::new(),
            inflight: HashMap::new(),
            acks: FuturesOrdered::new(),
        };
        let remote_filters = self.rules.remote_subscriptions();
        if remote_filters.is_empty() {
            self.link_ready();
        } else {
            // Ready once the remote has answered (LinkEvent::SubAck).
            st.requests.push_back(Request::Subscribe(remote_filters));
        }
        // The bridge is one more client of the core: its loop, drain and
        // kick handling are the client core's; this edge is the rumqttc link.
        let (mut client, resend) = crate::client::attach_trusted(&self.broker, connected, &self.client_id);
        for item in resend {
            self.outgoing(&mut st, item);
        }
        let mut stop = self.stop.clone();
        let stop_asked = Box::pin(async move {
            let _ = stop.changed().await;
        });
        let mut edge =
            BridgeEdge { runner: self, link: &mut link, st: &mut st, woke: None, stopped: false, stop_asked };
        let reason = client.serve(&mut edge).await;
        let stopped = edge.stopped;
        let end = if stopped {
            self.goodbye(&mut link, &mut st).await;
            End::Stopped
        } else {
            let error = match &reason {
                CloseReason::TakenOver => "the bridge's local session was taken over".to_string(),
                CloseReason::Io(e) => e.clone(),
                other => other.to_string(),
            };
            End::Lost { was_connected: true, error }
        };
        // No will: the session stays (it never expires) and keeps queueing.
        client.finish(&CloseReason::ClientDisconnected);
        self.shared.link.lock().0 = false;
        self.shared.inflight.store(0, Ordering::Relaxed);
        end
    }

    /// The link carries messages both ways: connected, and subscribed on the remote.
    fn link_ready(&self) {
        self.shared.link.lock().0 = true;
        tracing::info!(bridge = %self.shared.name, address = %self.shared.address, "bridge connected");
    }

    /// A delivery from the local session becomes a request to the remote.
    fn outgoing(&mut self, st: &mut LinkState, item: Outgoing) {
        let (packet_id, delivery) = match item {
            Outgoing::Publish { packet_id, delivery, .. } => (packet_id, delivery),
            // Bridge subscriptions are QoS 0/1: no QoS 2 exchange to finish.
            Outgoing::PubRel { packet_id } => {
                st.session.pubcomp(packet_id);
                return;
            }
        };
        let message = &delivery.message;
        let Some(remote) = self.rules.to_remote(&message.topic) else {
            // No rule takes it any more (the configuration changed while it was queued).
            tracing::debug!(bridge = %self.shared.name, topic = %message.topic, "no out rule for a queued message; dropped");
            if packet_id != 0 {
                st.session.puback(packet_id);
            }
            return;
        };
        if let Some(echo) = &mut self.echo {
            if self.rules.remote_echoes(&remote) {
                echo.sent(Instant::now(), remote.as_str(), &message.payload);
            }
        }
        st.requests.push_back(Request::Publish {
            topic: remote.as_str().to_string(),
            qos: delivery.qos.min(QoS::AtLeastOnce),
            retain: delivery.retain,
            payload: message.payload.clone(),
            message: self.options.v5.then(|| message.clone()),
            local_id: packet_id,
        });
    }

    fn handle(&mut self, st: &mut LinkState, event: LinkEvent) {
        match event {
            LinkEvent::Sent { pkid } => match st.awaiting.pop_front() {
                Some(local) if local != 0 && pkid != 0 => {
                    st.inflight.insert(pkid, local);
                }
                _ => {
                    self.shared.messages_out.fetch_add(1, Ordering::Relaxed);
                }
            },
            LinkEvent::PubAck { pkid } => {
                if let Some(local) = st.inflight.remove(&pkid) {
                    st.session.puback(local);
                    self.shared.messages_out.fetch_add(1, Ordering::Relaxed);
                }
            }
            LinkEvent::Publish(publish) => self.incoming(st, publish),
            LinkEvent::SubAck { refused } => {
                let filters = self.rules.remote_subscriptions();
                for (filter, _) in refused.iter().filter_map(|&i| filters.get(i)) {
                    let error = format!("the remote refused the subscription to {filter:?}");
                    tracing::warn!(bridge = %self.shared.name, %error);
                    self.shared.link.lock().1 = Some(error);
                }
                self.link_ready();
            }
            LinkEvent::ConnAck { .. } | LinkEvent::Closed(_) => {}
        }
    }

    /// A message from the remote: published here under the bridge's client id
    /// (so the bridge's own No Local subscriptions do not send it back), and
    /// acknowledged to the remote once the broker's acknowledgement holds
    /// (durable here and, in a cluster, held by JetStream).
    fn incoming(&mut self, st: &mut LinkState, p: RemotePublish) {
        let ack = p.needs_ack().then_some(p.ack);
        let is_echo = self.echo.as_mut().is_some_and(|e| e.is_echo(Instant::now(), &p.topic, &p.payload));
        let local = if is_echo { None } else { self.rules.to_local(&p.topic) };
        let Some(topic) = local else {
            if !is_echo {
                tracing::debug!(bridge = %self.shared.name, topic = %p.topic, "no in rule for a remote message; dropped");
            }
            if let Some(ack) = ack {
                // Acknowledged behind the ones before it (in order).
                st.acks.push_back(Box::pin(std::future::ready((ack, Ack::Accepted { matched: false }))));
            }
            return;
        };
        let mut message = Message::new(topic, p.payload, p.qos.min(QoS::AtLeastOnce), p.retain);
        message.expires_at_ms = p.expiry_secs.map(|s| crate::clock::now_ms() + u64::from(s) * 1000);
        message.properties = p.properties;
        message.publisher = Some(st.session.client_id.clone());
        // The same checks as a local PUBLISH: never `$SYS`, and the ACL of
        // `local_user` when one is named. A refused message is acknowledged
        // (sending it again would be refused again) and counted.
        if !self.broker.may_publish(&self.publisher, &st.session.client_id, &mut message) {
            self.broker.security().count_denied_publish();
            tracing::debug!(bridge = %self.shared.name, topic = %message.topic, "remote message refused by the local rules");
            if let Some(ack) = ack {
                st.acks.push_back(Box::pin(std::future::ready((ack, Ack::Accepted { matched: false }))));
            }
            return;
        }
        let outcome = self.broker.publish(message);
        self.shared.messages_in.fetch_add(1, Ordering::Relaxed);
        let Some(ack) = ack else { return };
        // Waited for together: group commit makes one flush of the waits
        // that overlap, and the cluster's answers come in publish order.
        let acknowledgement = self.broker.acknowledgement(outcome);
        st.acks.push_back(Box::pin(async move { (ack, acknowledgement.await) }));
    }

    /// Stopping: acknowledge what is durable, say DISCONNECT, and give the
    /// remote a moment to acknowledge what is in flight.
    async fn goodbye(&mut self, link: &mut Link, st: &mut LinkState) {
        // What is acknowledged here within the grace is acknowledged there;
        // the rest the remote sends again on the next connection.
        while let Ok(Some((ack, Ack::Accepted { .. } | Ack::Refused(_)))) =
            tokio::time::timeout(STOP_GRACE, st.acks.next()).await
        {
            st.requests.push_back(Request::Ack(ack));
        }
        st.requests.push_back(Request::Disconnect);
        let _ = tokio::time::timeout(STOP_GRACE, async {
            loop {
                flush_requests(link, st);
                match link.events.recv().await {
                    Some(LinkEvent::Closed(_)) | None => return,
                    Some(LinkEvent::Publish(p)) => drop(p), // not acknowledged: the remote keeps it
                    Some(event) => self.handle(st, event),
                }
            }
        })
        .await;
        tracing::info!(bridge = %self.shared.name, "bridge stopped");
    }
}

/// What woke the bridge's edge, for `handle`.
enum Woke {
    Event(LinkEvent),
    Acknowledged(AckHandle, Ack),
}

/// The bridge as an edge of the client core: its "socket" is the rumqttc
/// link (requests out, events in) plus the store flush it waits for before
/// acknowledging remote messages.
struct BridgeEdge<'a> {
    runner: &'a mut Runner,
    link: &'a mut Link,
    st: &'a mut LinkState,
    woke: Option<Woke>,
    /// The bridge was asked to stop (say goodbye to the remote).
    stopped: bool,
    /// Resolves when the bridge is asked to stop (polled by `poll_receive`).
    stop_asked: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Edge for BridgeEdge<'_> {
    const DRAIN_BATCH: usize = MAX_PENDING;

    /// Out-messages taken from the session but not yet sent by rumqttc are
    /// bounded: the session's outbox (durable, bounded) keeps the rest.
    fn room(&self) -> usize {
        MAX_PENDING.saturating_sub(self.st.requests.len() + self.st.awaiting.len())
    }

    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received, CloseReason>> {
        if self.stop_asked.as_mut().poll(cx).is_ready() {
            self.stopped = true;
            return Poll::Ready(Err(CloseReason::ServerShutdown));
        }
        if let Poll::Ready(event) = self.link.events.poll_recv(cx) {
            return Poll::Ready(match event {
                Some(LinkEvent::Closed(error)) => Err(CloseReason::Io(error)),
                None => Err(CloseReason::Io("link task ended".into())),
                Some(event) => {
                    self.woke = Some(Woke::Event(event));
                    Ok(Received::Data)
                }
            });
        }
        if let Poll::Ready(Some((ack, answer))) = self.st.acks.poll_next_unpin(cx) {
            self.woke = Some(Woke::Acknowledged(ack, answer));
            return Poll::Ready(Ok(Received::Data));
        }
        Poll::Pending
    }

    async fn handle(&mut self, _client: &mut Client) -> Result<(), CloseReason> {
        match self.woke.take() {
            Some(Woke::Event(event)) => self.runner.handle(self.st, event),
            // Accepted, or refused by its topic class here (sending it
            // again would be refused again): acknowledged to the remote.
            Some(Woke::Acknowledged(ack, Ack::Accepted { .. } | Ack::Refused(_))) => {
                self.st.requests.push_back(Request::Ack(ack));
            }
            Some(Woke::Acknowledged(_, answer @ (Ack::StoreFailed | Ack::NotReplicated))) => {
                // Not acknowledged: the link closes, and the remote sends the
                // message (and those after it) again on the next connection.
                let why = match answer {
                    Ack::StoreFailed => "the store could not make it durable",
                    _ => "the cluster's store (JetStream) did not hold it in time",
                };
                tracing::warn!(bridge = %self.runner.shared.name, why, "a remote message is not acknowledged; reconnecting");
                return Err(CloseReason::Io(format!("a remote message was not acknowledged: {why}")));
            }
            None => {}
        }
        Ok(())
    }

    fn write_outgoing(&mut self, _client: &mut Client, item: Outgoing) {
        self.runner.outgoing(self.st, item);
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CloseReason>> {
        flush_requests(self.link, self.st);
        self.runner.shared.inflight.store(self.st.inflight.len(), Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }

    /// The bridge's edge carries deliveries out only: what comes in from the
    /// remote broker is published (and acknowledged) by the bridge's own
    /// task, never through this client, so nothing is ever owed here.
    fn acknowledged(
        &mut self,
        _client: &mut Client,
        token: crate::client::AckToken,
        _published: crate::client::Published,
    ) -> Result<(), CloseReason> {
        unreachable!("the bridge's client took publish {token:?}, but it never publishes")
    }
}

/// Hands requests to rumqttc in order until its channel is full; the rest
/// wait for the next event (every request it takes produces one).
fn flush_requests(link: &Link, st: &mut LinkState) {
    while let Some(request) = st.requests.front() {
        if !link.try_send(request) {
            break;
        }
        if let Some(Request::Publish { local_id, .. }) = st.requests.pop_front() {
            st.awaiting.push_back(local_id);
        }
    }
}
