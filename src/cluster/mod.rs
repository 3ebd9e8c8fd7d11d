//! The cluster backplane: several starling nodes share one topic space
//! through NATS (docs/cluster.md). Without `[cluster]` none of this runs.
//!
//! - **Forwarding.** Every message a client publishes on this node (after
//!   admission: class, id, time) is handed to a task that publishes it on
//!   NATS under its topic's subject ([`subjects`]). The hand-off is a bounded
//!   channel: a local subscriber never waits for NATS, and when NATS is slow
//!   or gone the channel fills and further messages are not forwarded
//!   (counted) while local delivery goes on. `$SYS/...` and the canary's
//!   `$canary/...` stay on their node; other `$` topics are the cluster's.
//! - **Interest.** The node subscribes on NATS only to the subjects of the
//!   filters its own sessions hold, refcounted: 10,000 local subscribers of
//!   one room cost one NATS subscription. Changes go, in order, to a task
//!   that subscribes and unsubscribes.
//! - **Receiving.** Each NATS subscription's messages are decoded and handed
//!   to `Broker::route_remote`. A message matching several of the node's
//!   filters arrives once per filter; the first sighting (origin node and
//!   message id, remembered for the last [`SEEN`] messages) is delivered,
//!   under the topic's order lock, so each local subscription gets it once
//!   and in order.
//!
//! Owns: the NATS connection, the interest counts, the wire format of a
//! forwarded message, the cluster's counters and state.
//! Must never: block a publisher on NATS, or forward a message it received
//! from NATS (that would loop).

pub mod durable;
mod handover;
pub mod recovery;
pub mod subjects;

use crate::broker::{Backplane, BackplaneAck, Broker, Message};
use crate::config::ClusterConfig;
use crate::store::StoredMessage;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Message sightings remembered to drop the second copy of a message that
/// matched two of this node's filters.
pub const SEEN: usize = 65_536;

/// A forwarded message on the wire (postcard); the same bytes go to the
/// durable stream, the history stream and the retained bucket.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireMessage {
    /// The node that admitted it.
    origin: String,
    high_priority: bool,
    message: StoredMessage,
}

/// One node's viewer counts (all of them, or those that changed).
#[derive(Debug, Serialize, Deserialize)]
struct ViewerCounts {
    node: String,
    counts: Vec<(String, usize)>,
}

pub use crate::broker::backplane::VIEWERS_FULL_EVERY_SECS;
/// A node's counts not heard of for this long are forgotten (the node is gone).
pub const VIEWERS_FORGET_AFTER_MS: u64 = 3 * VIEWERS_FULL_EVERY_SECS * 1000;

/// Other nodes' viewer counts: room → node → (count, when heard).
#[derive(Default)]
struct RemoteViewers {
    rooms: HashMap<String, HashMap<String, (usize, u64)>>,
    changed: HashSet<String>,
}

/// What happened since start (`/metrics`).
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Messages handed to NATS.
    pub forwarded: AtomicU64,
    /// Messages not forwarded: the queue to NATS was full.
    pub forward_dropped: AtomicU64,
    /// Messages received from other nodes and delivered here.
    pub received: AtomicU64,
    /// Messages a shared subscription's queue group gave this node.
    pub shared_received: AtomicU64,
    /// Second copies dropped (a message that matched two filters).
    pub duplicates: AtomicU64,
    /// Payloads from NATS that did not decode.
    pub malformed: AtomicU64,
    /// Sessions this node handed to another node (a client connected there).
    pub sessions_handed_over: AtomicU64,
    /// Sessions this node took over from another node.
    pub sessions_taken_over: AtomicU64,
}

/// A filter, or a shared subscription's group and filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InterestKey {
    group: Option<String>,
    filter: String,
}

enum InterestChange {
    Add(InterestKey),
    Remove(InterestKey),
}

/// The bounded memory of recent (origin, id) sightings.
#[derive(Default)]
struct Seen {
    set: HashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
}

impl Seen {
    /// True the first time.
    fn first(&mut self, key: (u64, u64)) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > SEEN {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// This node's membership in the cluster.
pub struct Cluster {
    /// This cluster itself, for the tasks a [`Backplane`] call starts.
    me: Weak<Cluster>,
    node: String,
    prefix: String,
    client: async_nats::Client,
    /// Holds the queue-group subscriptions (echo on).
    shared_client: async_nats::Client,
    forward: mpsc::Sender<durable::Outbound>,
    /// The JetStream half (streams and buckets).
    pub durable: Arc<durable::Durable>,
    /// Sessions whose client reconnected here, waiting for their old node's
    /// handover (client id → told when it arrived).
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    awaiting_handover: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    interest: Mutex<HashMap<InterestKey, usize>>,
    changes: mpsc::UnboundedSender<InterestChange>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    seen: Mutex<Seen>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    viewers: Mutex<RemoteViewers>,
    connected: Arc<AtomicBool>,
    /// A gap in this node's NATS connection not yet caught up on.
    gap: Arc<recovery::Gap>,
    broker: Weak<Broker>,
    /// NATS subscriptions held (a `/#` filter takes two).
    pub subscriptions: AtomicUsize,
    pub counters: ClusterCounters,
}

impl Cluster {
    /// Connects to NATS (retrying in the background if it is not up yet)
    /// and starts the forwarding and interest tasks for `broker`.
    pub async fn start(config: &ClusterConfig, broker: &Arc<Broker>) -> anyhow::Result<Arc<Cluster>> {
        let node = config.node_name();
        let connected = Arc::new(AtomicBool::new(false));
        let events = connected.clone();
        let event_node = node.clone();
        let gap = Arc::new(recovery::Gap::default());
        let gap_events = gap.clone();
        let options =
            connect_options(config, format!("starling {node}")).await?.no_echo().event_callback(move |event| {
                let (events, node, gap) = (events.clone(), event_node.clone(), gap_events.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            events.store(true, Relaxed);
                            tracing::info!(node, "cluster: connected to NATS");
                            gap.closed();
                        }
                        async_nats::Event::Disconnected => {
                            events.store(false, Relaxed);
                            gap.opened(crate::clock::now_ms());
                            tracing::warn!(
                                node,
                                "cluster: lost NATS; local delivery goes on, other nodes are not reached"
                            );
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            // NATS messages were dropped here: caught up from JetStream.
                            gap.opened(crate::clock::now_ms());
                            gap.closed();
                            tracing::warn!(node, "cluster: too slow for NATS; catching up from JetStream");
                        }
                        other => tracing::info!(node, event = %other, "cluster: NATS event"),
                    }
                }
            });
        let urls: Vec<async_nats::ServerAddr> = config
            .nats_urls
            .iter()
            .map(|u| u.parse().map_err(|e| anyhow::anyhow!("cluster.nats_urls: {u:?}: {e}")))
            .collect::<anyhow::Result<_>>()?;
        let client =
            options.connect(urls.clone()).await.map_err(|e| anyhow::anyhow!("cluster: cannot use NATS: {e}"))?;
        // Queue-group subscriptions (shared subscriptions) live on a second
        // connection: the first one does not echo, and a group's member on
        // this node must get its share of what this node publishes too.
        let shared_client = connect_options(config, format!("starling {node} shared"))
            .await?
            .connect(urls)
            .await
            .map_err(|e| anyhow::anyhow!("cluster: cannot use NATS: {e}"))?;
        if client.connection_state() == async_nats::connection::State::Connected {
            connected.store(true, Relaxed);
        }
        broker.set_id_tag(durable::provisional_id_tag(&node));
        let (forward, forward_rx) = mpsc::channel(config.forward_queue);
        let durable = Arc::new(durable::Durable::new(
            client.clone(),
            &config.subject_prefix,
            &node,
            Duration::from_millis(config.ack_timeout_ms),
        ));
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let cluster = Arc::new_cyclic(|me| Cluster {
            me: me.clone(),
            node,
            prefix: config.subject_prefix.clone(),
            client,
            shared_client,
            forward,
            durable,
            awaiting_handover: Mutex::new(HashMap::new()),
            interest: Mutex::new(HashMap::new()),
            changes,
            seen: Mutex::new(Seen::default()),
            viewers: Mutex::new(RemoteViewers::default()),
            connected,
            gap: gap.clone(),
            broker: Arc::downgrade(broker),
            subscriptions: AtomicUsize::new(0),
            counters: ClusterCounters::default(),
        });
        tokio::spawn(durable::run_forwarder(cluster.client.clone(), cluster.durable.clone(), forward_rx));
        let claims = cluster.client.subscribe(format!("{}.c.claim", cluster.prefix)).await?;
        let pings = cluster.client.subscribe(format!("{}.c.ping.{}", cluster.prefix, cluster.node)).await?;
        tokio::spawn(handover::run_claims(claims, pings, Arc::downgrade(&cluster), Arc::downgrade(broker)));
        let limits = durable::Limits {
            history: broker.history_limits(),
            max_session_expiry_secs: u64::from(broker.config().session.max_session_expiry_secs),
        };
        let (setup_config, setup_cluster, setup_broker) =
            (config.clone(), Arc::downgrade(&cluster), Arc::downgrade(broker));
        tokio::spawn(async move {
            let (cluster, broker) = (setup_cluster, setup_broker);
            let Some(retained_watch) = durable::run_setup(setup_config, cluster.clone(), broker.clone(), limits).await
            else {
                return;
            };
            let (Some(node), Some(strong_broker)) = (cluster.upgrade(), broker.upgrade()) else { return };
            // Sessions that moved elsewhere while this node was away end
            // here before the node says it is ready.
            recovery::drop_sessions_taken_elsewhere(&node, &strong_broker).await;
            durable::now_ready(&node, retained_watch, broker.clone());
            drop((node, strong_broker));
            recovery::run_session_records(cluster, broker).await;
        });
        let handovers = cluster.client.subscribe(format!("{}.c.handover.{}", cluster.prefix, cluster.node)).await?;
        tokio::spawn(handover::run_handovers(handovers, Arc::downgrade(&cluster), Arc::downgrade(broker)));
        let viewers = cluster.client.subscribe(format!("{}.c.viewers", cluster.prefix)).await?;
        tokio::spawn(run_viewers(viewers, Arc::downgrade(&cluster)));
        tokio::spawn(run_interest(Arc::downgrade(&cluster), Arc::downgrade(broker), changes_rx));
        tokio::spawn(recovery::run_catch_up(gap, Arc::downgrade(&cluster), Arc::downgrade(broker)));
        Ok(cluster)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the NATS connection is up (down: degraded, local only).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    /// Distinct filters (and shared groups' filters) this node holds interest in.
    pub fn interest_count(&self) -> usize {
        self.interest.lock().len()
    }

    /// Hands an admitted message to NATS for the other nodes (and, once
    /// JetStream is ready, to the durable stream when QoS 1/2, the history
    /// stream when `history`, the retained bucket when retained); never
    /// waits. Returns what the publisher's acknowledgement must wait for: a
    /// QoS 1/2 message's acknowledgement by JetStream.
    fn forward_message(&self, message: &Message, history: bool) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        if message.topic.is_node_local() {
            return None; // $SYS and the canary's topics are each node's own
        }
        let wire = WireMessage {
            origin: self.node.clone(),
            high_priority: message.handling.high_priority,
            message: message.to_stored(),
        };
        let payload = match postcard::to_allocvec(&wire) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot encode a message");
                return None;
            }
        };
        // Without NATS (degraded) a publisher is acknowledged on this node's
        // durability alone, and the message reaches no other node.
        let (ack, acked) = if message.qos as u8 > 0 && self.durable.is_ready() && self.is_connected() {
            let (ack, acked) = tokio::sync::oneshot::channel();
            (Some(ack), Some(acked))
        } else {
            (None, None)
        };
        match self.forward.try_send(self.durable.outbound(message, payload, history, ack)) {
            Ok(()) => {
                self.counters.forwarded.fetch_add(1, Relaxed);
                acked
            }
            Err(_) => {
                self.counters.forward_dropped.fetch_add(1, Relaxed);
                // Not forwarded: an acknowledgement would promise what the
                // cluster does not hold.
                acked.map(|_| {
                    let (refuse, refused) = tokio::sync::oneshot::channel();
                    let _ = refuse.send(false);
                    refused
                })
            }
        }
    }

    /// A session added (+1) or removed (-1) a subscription to `filter`
    /// (`$share/group/` prefix and all): the NATS subscriptions follow the
    /// first and the last.
    fn interest_delta(&self, filter: &str, delta: isize) {
        let Ok(parsed) = crate::topic::parse_subscription(filter) else { return };
        let key = InterestKey { group: parsed.share_group.clone(), filter: parsed.filter.as_str().to_string() };
        let mut interest = self.interest.lock();
        let count = interest.entry(key.clone()).or_insert(0);
        let before = *count;
        *count = count.saturating_add_signed(delta);
        let after = *count;
        if after == 0 {
            interest.remove(&key);
        }
        // Sent under the lock: the task sees changes in the order they happened.
        if before == 0 && after > 0 {
            let _ = self.changes.send(InterestChange::Add(key));
        } else if before > 0 && after == 0 {
            let _ = self.changes.send(InterestChange::Remove(key));
        }
    }

    /// A client connected here: tells the other nodes (the claim itself is
    /// fire and forget). For a persistent session resumed here (`resume`),
    /// the node that had it hands it over; if that node died, the session is
    /// rebuilt from JetStream instead ([`recovery::recover_session`]); the
    /// answer says whether either happened, and the connect waits for it
    /// (bounded) to report the session present.
    fn claim_client_id(
        self: &Arc<Self>,
        client_id: &str,
        user: Option<&str>,
        device: Option<&str>,
        clean_start: bool,
        resume: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let claim = handover::Claim {
            node: self.node.clone(),
            client_id: client_id.to_string(),
            user: user.map(str::to_string),
            device: device.map(str::to_string),
            clean_start,
        };
        let payload = postcard::to_allocvec(&claim).ok()?;
        let (client, subject) = (self.client.clone(), format!("{}.c.claim", self.prefix));
        let (moved_tx, moved) = tokio::sync::oneshot::channel();
        let recovery = (resume && self.durable.is_ready()).then(|| {
            let (handed, handed_rx) = tokio::sync::oneshot::channel();
            self.awaiting_handover.lock().insert(client_id.to_string(), handed);
            (Arc::downgrade(self), client_id.to_string(), user.map(str::to_string), handed_rx)
        });
        let answers = recovery.is_some();
        tokio::spawn(async move {
            if let Err(e) = client.publish(subject, Bytes::from(payload)).await {
                tracing::debug!(error = %e, "cluster: cannot send a claim");
            }
            if let Some((cluster, client_id, user, handed)) = recovery {
                let moved = recovery::recover_session(cluster, client_id, user, handed).await;
                let _ = moved_tx.send(moved);
            }
        });
        answers.then_some(moved)
    }

    /// Sends this node's viewer counts to the others (fire and forget).
    fn send_viewer_counts(&self, counts: Vec<(String, usize)>) {
        let Ok(payload) = postcard::to_allocvec(&ViewerCounts { node: self.node.clone(), counts }) else { return };
        let (client, subject) = (self.client.clone(), format!("{}.c.viewers", self.prefix));
        tokio::spawn(async move {
            let _ = client.publish(subject, Bytes::from(payload)).await;
        });
    }

    /// Viewers of `room` on the other nodes.
    fn viewers_elsewhere(&self, room: &str) -> usize {
        let now = crate::clock::now_ms();
        self.viewers.lock().rooms.get(room).map_or(0, |nodes| {
            nodes.values().filter(|(_, at)| now.saturating_sub(*at) < VIEWERS_FORGET_AFTER_MS).map(|(c, _)| c).sum()
        })
    }

    /// Rooms whose count on other nodes changed (or whose node went quiet)
    /// since the last call.
    fn changed_viewers(&self, now_ms: u64) -> Vec<String> {
        let mut viewers = self.viewers.lock();
        let RemoteViewers { rooms, changed } = &mut *viewers;
        rooms.retain(|room, nodes| {
            let before = nodes.len();
            nodes.retain(|_, (_, at)| now_ms.saturating_sub(*at) < VIEWERS_FORGET_AFTER_MS);
            if nodes.len() != before {
                changed.insert(room.clone());
            }
            !nodes.is_empty()
        });
        changed.drain().collect()
    }

    /// Whether this is the first sighting of a message (origin, id); called
    /// under the topic's order lock.
    pub fn first_sighting(&self, origin: &str, id: u64) -> bool {
        let origin = ahash_of(origin);
        let first = self.seen.lock().first((origin, id));
        if !first {
            self.counters.duplicates.fetch_add(1, Relaxed);
        }
        first
    }
}

/// The cluster as the broker sees it: its [`Backplane`] (the broker owns the
/// trait and never names this module; `server.rs` plugs the cluster in).
impl Backplane for Cluster {
    fn forward(&self, message: &Message, history: bool) -> Option<BackplaneAck> {
        // The forwarder answers no at `ack_timeout_ms` after the hand-over;
        // a little more bounds an answer that never comes (a stuck forwarder).
        let deadline = self.durable.ack_timeout() + Duration::from_millis(500);
        self.forward_message(message, history).map(|held| BackplaneAck::new(held, deadline))
    }

    fn is_connected(&self) -> bool {
        Cluster::is_connected(self)
    }

    fn is_durable(&self) -> bool {
        self.durable.is_ready()
    }

    fn interest(&self, filter: &str, delta: isize) {
        self.interest_delta(filter, delta);
        self.durable.session_changed();
    }

    fn forget_retained(&self, topic: &str, id: u64) {
        self.durable.forget_retained(topic, id);
    }

    fn claim(
        &self,
        client_id: &str,
        user: Option<&str>,
        device: Option<&str>,
        clean_start: bool,
        resume: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        self.me.upgrade()?.claim_client_id(client_id, user, device, clean_start, resume)
    }

    fn share_viewer_counts(&self, counts: Vec<(String, usize)>) {
        self.send_viewer_counts(counts);
    }

    fn remote_viewers(&self, room: &str) -> usize {
        self.viewers_elsewhere(room)
    }

    fn take_changed_viewers(&self, now_ms: u64) -> Vec<String> {
        self.changed_viewers(now_ms)
    }
}

/// How often a node pings its NATS server.
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// What both of a node's NATS connections share: credentials, trust,
/// reconnecting forever with back-off (50 ms doubling to 2 s).
async fn connect_options(config: &ClusterConfig, name: String) -> anyhow::Result<async_nats::ConnectOptions> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| std::time::Duration::from_millis((50u64 << attempts.min(6)).min(2000)))
        // A server that stops answering (cut off, paused) is noticed after
        // about three unanswered pings: within 10 s, not the default's
        // minutes (`/readyz` and `starling_cluster_connected` follow).
        .ping_interval(PING_INTERVAL)
        // Replies to this node (its requests, JetStream's answers, watches)
        // come to inboxes under its own name: NATS permissions can then let
        // each node read its replies and no other's (docs/cluster/nats-server.conf).
        .custom_inbox_prefix(format!("_INBOX.{}.{}", config.subject_prefix, config.node_name()));
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(file) = &config.credentials_file {
        options = options
            .credentials_file(file)
            .await
            .map_err(|e| anyhow::anyhow!("cluster.credentials_file {}: {e}", file.display()))?;
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    Ok(options)
}

fn ahash_of(s: &str) -> u64 {
    ahash_of_bytes(s.as_bytes())
}

fn ahash_of_bytes(bytes: &[u8]) -> u64 {
    static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new).hash_one(bytes)
}

/// Applies interest changes in order: a NATS subscription (and its
/// receiving task) per filter held.
async fn run_interest(
    cluster: Weak<Cluster>,
    broker: Weak<Broker>,
    mut changes: mpsc::UnboundedReceiver<InterestChange>,
) {
    let mut receivers: HashMap<InterestKey, Vec<tokio::task::JoinHandle<()>>> = HashMap::new();
    while let Some(change) = changes.recv().await {
        let Some(node) = cluster.upgrade() else { return };
        match change {
            InterestChange::Add(key) => {
                let mut tasks = Vec::new();
                for subject in subjects::filter_subjects(&node.prefix, &key.filter) {
                    let subscribed = match &key.group {
                        None => node.client.subscribe(subject.clone()).await,
                        Some(group) => {
                            // One queue group per shared subscription (group and filter).
                            let queue = subjects::queue_group(&node.prefix, group, &key.filter);
                            node.shared_client.queue_subscribe(subject.clone(), queue).await
                        }
                    };
                    match subscribed {
                        Ok(subscriber) => {
                            node.subscriptions.fetch_add(1, Relaxed);
                            let task = match &key.group {
                                None => tokio::spawn(receive(subscriber, cluster.clone(), broker.clone())),
                                Some(group) => tokio::spawn(receive_shared(
                                    subscriber,
                                    group.clone(),
                                    key.filter.clone(),
                                    cluster.clone(),
                                    broker.clone(),
                                )),
                            };
                            tasks.push(task);
                        }
                        Err(e) => tracing::warn!(subject, error = %e, "cluster: cannot subscribe on NATS"),
                    }
                }
                receivers.insert(key, tasks);
            }
            InterestChange::Remove(key) => {
                for task in receivers.remove(&key).unwrap_or_default() {
                    // Dropping the subscriber (with the task) unsubscribes on NATS.
                    task.abort();
                    node.subscriptions.fetch_sub(1, Relaxed);
                }
            }
        }
    }
}

/// Delivers what one NATS subscription receives.
async fn receive(mut subscriber: async_nats::Subscriber, cluster: Weak<Cluster>, broker: Weak<Broker>) {
    while let Some(nats_message) = subscriber.next().await {
        let (Some(node), Some(broker)) = (cluster.upgrade(), broker.upgrade()) else { return };
        let wire: WireMessage = match postcard::from_bytes(&nats_message.payload) {
            Ok(wire) => wire,
            Err(e) => {
                node.counters.malformed.fetch_add(1, Relaxed);
                tracing::debug!(subject = %nats_message.subject, error = %e, "cluster: undecodable message");
                continue;
            }
        };
        if wire.origin == node.node {
            continue; // our own, echoed by a NATS that ignored no_echo
        }
        let mut message = match Message::from_stored(wire.message) {
            Ok(message) => message,
            Err(_) => {
                node.counters.malformed.fetch_add(1, Relaxed);
                continue;
            }
        };
        message.handling.high_priority = wire.high_priority;
        if broker.route_remote(message, |id| node.first_sighting(&wire.origin, id)) {
            node.counters.received.fetch_add(1, Relaxed);
        }
    }
}

/// Delivers what a shared subscription's queue group gives this node: to
/// one of this node's members of the group. Messages this node published
/// come here too (the group may pick this node).
async fn receive_shared(
    mut subscriber: async_nats::Subscriber,
    group: String,
    filter: String,
    cluster: Weak<Cluster>,
    broker: Weak<Broker>,
) {
    let Ok(filter) = crate::topic::TopicFilter::new(&filter) else { return };
    while let Some(nats_message) = subscriber.next().await {
        let (Some(node), Some(broker)) = (cluster.upgrade(), broker.upgrade()) else { return };
        let Some(message) = postcard::from_bytes::<WireMessage>(&nats_message.payload)
            .ok()
            .and_then(|wire| Some((wire.high_priority, Message::from_stored(wire.message).ok()?)))
            .map(|(high_priority, mut message)| {
                message.handling.high_priority = high_priority;
                message
            })
        else {
            node.counters.malformed.fetch_add(1, Relaxed);
            continue;
        };
        broker.route_shared(message, &group, &filter);
        node.counters.shared_received.fetch_add(1, Relaxed);
    }
}

/// Other nodes' viewer counts.
async fn run_viewers(mut shares: async_nats::Subscriber, cluster: Weak<Cluster>) {
    while let Some(nats_message) = shares.next().await {
        let Some(node) = cluster.upgrade() else { return };
        let Ok(share) = postcard::from_bytes::<ViewerCounts>(&nats_message.payload) else {
            node.counters.malformed.fetch_add(1, Relaxed);
            continue;
        };
        if share.node == node.node {
            continue;
        }
        let now = crate::clock::now_ms();
        let mut viewers = node.viewers.lock();
        for (room, count) in share.counts {
            let nodes = viewers.rooms.entry(room.clone()).or_default();
            let before = nodes.get(&share.node).map(|(c, _)| *c);
            if count == 0 {
                nodes.remove(&share.node);
            } else {
                nodes.insert(share.node.clone(), (count, now));
            }
            if before != Some(count) && !(before.is_none() && count == 0) {
                viewers.changed.insert(room);
            }
        }
    }
}
