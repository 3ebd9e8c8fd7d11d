//! The JetStream half of the cluster: what must outlive any one node
//! (docs/cluster.md, "What lives in JetStream").
//!
//! - **`PREFIX_msgs`** (stream, subjects `PREFIX.m.1.>`): every QoS 1/2
//!   message any node admitted, kept `durable_window_secs`. The forwarding
//!   task publishes it there (a JetStream publish *is* the core publish the
//!   other nodes receive), and the publisher's acknowledgement waits for
//!   JetStream's. A persistent session whose node died is rebuilt from it.
//! - **`PREFIX_history`** (stream, `PREFIX.h.>`): chat history, trimmed by
//!   JetStream per topic (the largest `history_messages` of the classes, and
//!   their longest `history_secs`): once for the cluster. A node reads it at
//!   start, so one that joins later shows the rooms' history.
//! - **`PREFIX_retained`** (key-value): each topic's retained message
//!   (an empty payload clears it). Every node watches it, from the start of
//!   its history, and keeps its own copy in step.
//! - **`PREFIX_sessions`** (key-value): each persistent session's node,
//!   user, subscriptions and *watermark*: a time before which every QoS 1/2
//!   message for it was acknowledged by its client. The owning node keeps
//!   it current (a pass every second); another node that gets the client
//!   after the owner died replays the stream from the watermark.
//!
//! Owns: the streams and buckets, publishing into them (acks awaited off the
//! forwarding task), reading them back. Must never: be on a local delivery's
//! path, or make the forwarding task wait for a JetStream round trip.

use super::{subjects, Cluster, WireMessage};
use crate::broker::{Broker, Delivery, Message, Session, SubscriptionRecord};
use crate::store::StoredSubscription;
use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How far behind "now" a session's watermark stays at least: covers a
/// message's way from its origin to this node and the clocks' difference
/// between nodes. A session rebuilt after its node died may get this much
/// of what it already had again (as duplicates, never as a loss).
pub const WATERMARK_GRACE_MS: u64 = 10_000;
/// A session record is rewritten when its watermark can move this much.
pub const WATERMARK_STEP_MS: u64 = 30_000;
/// A session record is rewritten at least this often: the sessions bucket
/// forgets records not written for a day longer than the longest session
/// expiry (those of a node that died, whose clients never came back).
pub const RECORD_REFRESH_MS: u64 = 3_600_000;
/// How long a node waits for JetStream to acknowledge one publish.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node keeps sending a message to JetStream again before it
/// gives up (and refuses the publisher): covers a stream leader election.
pub const ACK_DEADLINE: Duration = Duration::from_secs(15);

/// What sizes the streams and buckets, from the broker's configuration.
pub struct Limits {
    /// The most messages and the longest age a history class keeps.
    pub history: (usize, Option<u64>),
    /// `session.max_session_expiry_secs`.
    pub max_session_expiry_secs: u64,
}

/// After a gap in the NATS connection, the second catch-up pass runs this
/// much later.
const CATCH_UP_AGAIN_AFTER: Duration = Duration::from_secs(3);

/// How long one attempt to find or create the streams and buckets may take.
const SETUP_ATTEMPT: Duration = Duration::from_secs(3);

/// A persistent session as the cluster remembers it (`PREFIX_sessions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub node: String,
    pub user: Option<String>,
    pub subscriptions: Vec<StoredSubscription>,
    /// Every QoS 1/2 message admitted before this time (Unix ms) that this
    /// session should have got was acknowledged by its client.
    pub watermark_ms: u64,
}

/// What one published message asks of NATS, in order: core publishes
/// (QoS 0) and JetStream publishes (the durable copy, history, retained).
pub(super) struct Outbound {
    pub publishes: Vec<(String, Bytes, bool)>,
    /// The message's id: with the node's name, the `Nats-Msg-Id` JetStream
    /// drops a second copy by (its de-duplication window), so a publish can
    /// be sent again safely.
    pub message_id: u64,
    /// Told whether every JetStream publish was acknowledged.
    pub ack: Option<oneshot::Sender<bool>>,
}

/// What this node wrote to the sessions bucket, to write only changes.
struct Written {
    digest: u64,
    watermark_ms: u64,
    at_ms: u64,
}

/// JetStream for one node.
pub struct Durable {
    js: jetstream::Context,
    prefix: String,
    node: String,
    ready: AtomicBool,
    retained: OnceLock<kv::Store>,
    sessions: OnceLock<kv::Store>,
    nodes: OnceLock<kv::Store>,
    written: Mutex<HashMap<Arc<str>, Written>>,
    /// Wakes the session pass early (a subscription changed).
    sessions_changed: tokio::sync::Notify,
    /// JetStream publishes not acknowledged (timeouts, no stream).
    pub failed: AtomicU64,
    /// Sessions rebuilt from the stream after their node died.
    pub sessions_recovered: AtomicU64,
    /// Messages replayed into rebuilt sessions.
    pub replayed: AtomicU64,
    /// Messages routed here from JetStream after a gap in the NATS connection.
    pub caught_up: AtomicU64,
}

impl Durable {
    pub fn new(client: async_nats::Client, prefix: &str, node: &str) -> Durable {
        let mut js = jetstream::new(client);
        js.set_timeout(ACK_TIMEOUT);
        Durable {
            js,
            prefix: prefix.to_string(),
            node: node.to_string(),
            ready: AtomicBool::new(false),
            retained: OnceLock::new(),
            sessions: OnceLock::new(),
            nodes: OnceLock::new(),
            written: Mutex::new(HashMap::new()),
            sessions_changed: tokio::sync::Notify::new(),
            failed: AtomicU64::new(0),
            sessions_recovered: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
        }
    }

    /// Whether the streams and buckets exist (false until NATS with
    /// JetStream was reached once).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// A subscription changed: the session pass runs soon.
    pub fn session_changed(&self) {
        self.sessions_changed.notify_one();
    }

    fn msgs_stream(&self) -> String {
        format!("{}_msgs", self.prefix)
    }

    fn history_stream(&self) -> String {
        format!("{}_history", self.prefix)
    }

    /// Creates (or finds) the streams and buckets.
    async fn ensure(&self, config: &crate::config::ClusterConfig, limits: &Limits) -> anyhow::Result<()> {
        let replicas = config.stream_replicas;
        self.js
            .get_or_create_stream(stream::Config {
                name: self.msgs_stream(),
                subjects: vec![format!("{}.{}", self.prefix, subjects::DURABLE_MESSAGES)],
                max_age: Duration::from_secs(config.durable_window_secs),
                max_bytes: config.durable_max_bytes as i64,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                discard: stream::DiscardPolicy::Old,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", self.msgs_stream()))?;
        let (keep, max_age) = limits.history;
        self.js
            .get_or_create_stream(stream::Config {
                name: self.history_stream(),
                subjects: vec![format!("{}.{}", self.prefix, subjects::HISTORY)],
                max_messages_per_subject: keep.max(1) as i64,
                max_age: max_age.map_or(Duration::ZERO, Duration::from_secs),
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", self.history_stream()))?;
        let retained = self.bucket(&format!("{}_retained", self.prefix), replicas, Duration::ZERO).await?;
        let forget = Duration::from_secs(limits.max_session_expiry_secs.max(86_400) + 86_400);
        let sessions = self.bucket(&format!("{}_sessions", self.prefix), replicas, forget).await?;
        let nodes = self.bucket(&format!("{}_nodes", self.prefix), replicas, Duration::ZERO).await?;
        let _ = self.retained.set(retained);
        let _ = self.sessions.set(sessions);
        let _ = self.nodes.set(nodes);
        Ok(())
    }

    async fn bucket(&self, name: &str, replicas: usize, max_age: Duration) -> anyhow::Result<kv::Store> {
        if let Ok(store) = self.js.get_key_value(name).await {
            return Ok(store);
        }
        self.js
            .create_key_value(kv::Config {
                bucket: name.to_string(),
                history: 1,
                max_age,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("bucket {name}: {e}"))
    }

    /// Removes `topic`'s expired retained message (id `id`) from the
    /// bucket, unless a newer one replaced it meanwhile (fire and forget).
    pub fn forget_retained(&self, topic: &str, id: u64) {
        let Some(bucket) = self.retained.get().cloned() else { return };
        let key = subjects::topic_key(topic);
        tokio::spawn(async move {
            let Ok(Some(entry)) = bucket.entry(key.clone()).await else { return };
            let still = entry.operation == kv::Operation::Put && decode(&entry.value).is_some_and(|m| m.id == id);
            if still {
                // Only if nothing was written since (the entry's revision).
                let _ = bucket.update(key, Bytes::new(), entry.revision).await;
            }
        });
    }

    /// The publishes of one forwarded message, in order.
    pub(super) fn outbound(
        &self,
        message: &Message,
        payload: Bytes,
        history: bool,
        ack: Option<oneshot::Sender<bool>>,
    ) -> Outbound {
        let topic = message.topic.as_str();
        let durable = message.qos as u8 > 0;
        let jetstream = self.is_ready();
        let mut publishes = vec![(subjects::topic_subject(&self.prefix, topic, durable), payload.clone(), durable)];
        if jetstream && history {
            publishes.push((subjects::history_subject(&self.prefix, topic), payload.clone(), true));
        }
        if jetstream && message.retain {
            let key = subjects::topic_key(topic);
            publishes.push((format!("$KV.{}_retained.{key}", self.prefix), payload, true));
        }
        Outbound { publishes, ack, message_id: message.id }
    }
}

/// A JetStream publish waiting for its acknowledgement, with what it takes
/// to send it again.
struct Pending {
    subject: String,
    payload: Bytes,
    message_id: u64,
    ack: jetstream::context::PublishAckFuture,
}

/// Publishes what `forward` queued, in order: core publishes directly,
/// JetStream publishes sent at once with their acknowledgements awaited by
/// [`run_acks`] (async-nats batches the writes either way).
pub(super) async fn run_forwarder(
    client: async_nats::Client,
    durable: Arc<Durable>,
    mut queue: mpsc::Receiver<Outbound>,
) {
    let (acks, acks_rx) = mpsc::channel(65_536);
    tokio::spawn(run_acks(acks_rx, durable.clone()));
    while let Some(Outbound { publishes, ack, message_id }) = queue.recv().await {
        let mut pending = Vec::new();
        let mut ok = true;
        for (subject, payload, jetstream) in publishes {
            if jetstream && durable.is_ready() {
                match durable.publish(&subject, &payload, message_id).await {
                    Ok(ack) => pending.push(Pending { subject, payload, message_id, ack }),
                    Err(e) => {
                        ok = false;
                        tracing::debug!(error = %e, "cluster: JetStream publish failed");
                    }
                }
            } else if let Err(e) = client.publish(subject, payload).await {
                tracing::debug!(error = %e, "cluster: publish to NATS failed");
            }
        }
        if !ok {
            durable.failed.fetch_add(1, Relaxed);
        }
        if pending.is_empty() && ack.is_none() {
            continue;
        }
        if !ok {
            if let Some(ack) = ack {
                let _ = ack.send(false);
            }
            continue;
        }
        let _ = acks.send((pending, ack)).await;
    }
}

impl Durable {
    async fn publish(
        &self,
        subject: &str,
        payload: &Bytes,
        message_id: u64,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        let message_id = format!("{}-{message_id}", self.node);
        let publish = jetstream::context::Publish::build().payload(payload.clone()).message_id(message_id);
        self.js.send_publish(subject.to_string(), publish).await
    }
}

/// Awaits JetStream's acknowledgements in publish order and tells the
/// publishers waiting for them. A publish that is not acknowledged (a NATS
/// server lost, a stream leader being elected) is sent again, under the
/// same message id, until [`ACK_DEADLINE`].
async fn run_acks(mut acks: mpsc::Receiver<(Vec<Pending>, Option<oneshot::Sender<bool>>)>, durable: Arc<Durable>) {
    while let Some((pending, ack)) = acks.recv().await {
        let deadline = tokio::time::Instant::now() + ACK_DEADLINE;
        let mut ok = true;
        for Pending { subject, payload, message_id, ack } in pending {
            let mut result = ack.await.map(|_| ());
            while result.is_err() && tokio::time::Instant::now() < deadline {
                tracing::debug!(subject, "cluster: JetStream did not acknowledge; sending again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                result = match durable.publish(&subject, &payload, message_id).await {
                    Ok(again) => again.await.map(|_| ()),
                    Err(e) => Err(e),
                };
            }
            if let Err(e) = result {
                ok = false;
                tracing::warn!(subject, error = %e, "cluster: JetStream did not acknowledge a message");
            }
        }
        if !ok {
            durable.failed.fetch_add(1, Relaxed);
        }
        if let Some(ack) = ack {
            let _ = ack.send(ok);
        }
    }
}

/// Creates the streams and buckets once NATS (with JetStream) is reached,
/// retrying with back-off, then loads what the cluster holds and keeps it
/// in step: retained messages (live), history (once), session records.
pub(super) async fn run_setup(
    config: crate::config::ClusterConfig,
    cluster: Weak<Cluster>,
    broker: Weak<Broker>,
    limits: Limits,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        let Some(node) = cluster.upgrade() else { return };
        // (JetStream requests sent before the first connection completes
        // can come back as if they had succeeded; a request sent while a
        // NATS cluster is still electing its JetStream leader is never
        // answered: a short timeout and a new attempt beat the long wait.)
        let attempt = async {
            if !node.is_connected() {
                anyhow::bail!("not connected to NATS");
            }
            node.durable.ensure(&config, &limits).await?;
            node.durable.js.get_stream(node.durable.msgs_stream()).await?;
            Ok(())
        };
        let attempt = tokio::time::timeout(SETUP_ATTEMPT, attempt)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer from JetStream within {SETUP_ATTEMPT:?}")));
        match attempt {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, "cluster: JetStream not available yet; retrying"),
        }
        drop(node);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    let Some(node) = cluster.upgrade() else { return };
    // What the cluster holds is here before the node says it is ready.
    let mut retained_watch = None;
    if let (Some(broker), Some(bucket)) = (broker.upgrade(), node.durable.retained.get()) {
        load_history(&node, &broker).await;
        retained_watch = load_retained(bucket, &broker).await;
    }
    if let Some(broker) = broker.upgrade() {
        match claim_id_tag(&node.durable, node.node()).await {
            Ok(tag) => broker.set_id_tag(tag),
            Err(e) => {
                tracing::error!(error = %e, "cluster: no message id tag of this node's own; ids may repeat across nodes")
            }
        }
        drop_sessions_taken_elsewhere(&node, &broker).await;
    }
    node.durable.ready.store(true, Relaxed);
    tracing::info!(node = node.node, "cluster: JetStream streams and buckets ready");
    if let Some(watch) = retained_watch {
        tokio::spawn(follow_retained(watch, broker.clone()));
    }
    drop(node);
    run_session_records(cluster, broker).await;
}

/// This node's id tag, below `1 << ID_TAG_BITS`, the first from
/// [`provisional_id_tag`] on that no other node holds: the key `tag-N` in
/// `PREFIX_nodes` is created once (atomically) and names its node for good.
async fn claim_id_tag(durable: &Durable, node: &str) -> anyhow::Result<u64> {
    let bucket = durable.nodes.get().ok_or_else(|| anyhow::anyhow!("no nodes bucket"))?;
    let slots = 1u64 << crate::broker::ID_TAG_BITS;
    let first = provisional_id_tag(node);
    for step in 0..slots {
        let tag = (first + step) % slots;
        let key = format!("tag-{tag}");
        if bucket.create(&key, Bytes::from(node.to_string())).await.is_ok() {
            return Ok(tag);
        }
        if bucket.get(&key).await?.is_some_and(|holder| holder.as_ref() == node.as_bytes()) {
            return Ok(tag);
        }
    }
    anyhow::bail!("every one of the {slots} node tags is taken (PREFIX_nodes)")
}

/// The tag a node uses until it has claimed one: a hash of its name (the
/// same on every start).
pub fn provisional_id_tag(node: &str) -> u64 {
    // FNV-1a: stable across processes, unlike the hashers' random seeds.
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    hash % (1 << crate::broker::ID_TAG_BITS)
}

/// A node that comes back (killed, restarted on its store) may hold
/// persistent sessions that moved to another node meanwhile: their clients
/// reconnected there and got their messages. The cluster's record names
/// the session's node; this node's stale copies are ended.
async fn drop_sessions_taken_elsewhere(node: &Cluster, broker: &Broker) {
    for session in broker.persistent_sessions() {
        if session.is_connected() {
            continue;
        }
        let Some(record) = session_record_of(&node.durable, &session.client_id).await else { continue };
        if record.node != node.node() {
            tracing::info!(client_id = %session.client_id, now_on = record.node,
                "cluster: a session restored from the store lives on another node now; ended here");
            broker.hand_over(&session.client_id, session.user.as_deref(), false);
        }
    }
}

/// Reads the history stream into this node's history (a node that joins
/// late shows what came before it).
async fn load_history(node: &Cluster, broker: &Broker) {
    let loaded = async {
        let mut stream = node.durable.js.get_stream(node.durable.history_stream()).await?;
        if stream.info().await?.state.messages == 0 {
            return Ok::<usize, anyhow::Error>(0);
        }
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut count = 0;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            if let Some(message) = decode(&message.payload) {
                broker.keep_remote_history(&message);
                count += 1;
            }
            if message.info().map_or(true, |info| info.pending == 0) {
                break;
            }
        }
        Ok(count)
    }
    .await;
    match loaded {
        Ok(count) => tracing::info!(count, "cluster: history read from JetStream"),
        Err(e) => tracing::warn!(error = %e, "cluster: cannot read the history stream"),
    }
}

/// Reads every topic's retained value from the bucket into this node's
/// retained messages; returns the watch that goes on with the changes.
async fn load_retained(bucket: &kv::Store, broker: &Broker) -> Option<kv::Watch> {
    let values = bucket.status().await.map_or(0, |status| status.values());
    let mut watch = match bucket.watch_with_history(">").await {
        Ok(watch) => watch,
        Err(e) => {
            tracing::warn!(error = %e, "cluster: cannot watch retained messages");
            return None;
        }
    };
    let mut loaded = 0;
    if values > 0 {
        while let Ok(Some(entry)) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
            let Ok(entry) = entry else { break };
            apply_retained(&entry, broker);
            loaded += 1;
            if entry.delta == 0 {
                break; // the last of the values the bucket held
            }
        }
    }
    tracing::info!(loaded, "cluster: retained messages read from JetStream");
    Some(watch)
}

/// Keeps this node's retained messages in step with the bucket's changes.
async fn follow_retained(mut watch: kv::Watch, broker: Weak<Broker>) {
    while let Some(entry) = watch.next().await {
        let Some(broker) = broker.upgrade() else { return };
        if let Ok(entry) = entry {
            apply_retained(&entry, &broker);
        }
    }
}

fn apply_retained(entry: &kv::Entry, broker: &Broker) {
    if entry.operation == kv::Operation::Put {
        if let Some(message) = decode(&entry.value) {
            broker.keep_remote_retained(message);
        }
    }
}

fn decode(payload: &[u8]) -> Option<Message> {
    decode_with_origin(payload).map(|(_, message)| message)
}

fn decode_with_origin(payload: &[u8]) -> Option<(String, Message)> {
    let wire: WireMessage = postcard::from_bytes(payload).ok()?;
    let mut message = Message::from_stored(wire.message).ok()?;
    message.handling.high_priority = wire.high_priority;
    Some((wire.origin, message))
}

/// A time this node may have missed core NATS messages from (its NATS
/// connection dropped, or NATS cut it off as a slow consumer), and a wake-up
/// for the catch-up task once the connection is back.
#[derive(Default)]
pub struct Gap {
    since_ms: AtomicU64,
    back: tokio::sync::Notify,
}

impl Gap {
    pub fn opened(&self, now_ms: u64) {
        // The earliest opening counts until the catch-up has run.
        let _ = self.since_ms.compare_exchange(0, now_ms.max(1), Relaxed, Relaxed);
    }

    pub fn closed(&self) {
        self.back.notify_one();
    }
}

/// After a gap in this node's NATS connection, the QoS 1/2 messages other
/// nodes admitted meanwhile (held by `PREFIX_msgs`) are read back and routed
/// here like live ones: each local subscription gets what it missed, once
/// (the first-sighting memory drops what had arrived). QoS 0 messages of the
/// gap are gone, as MQTT allows.
pub(super) async fn run_catch_up(gap: Arc<Gap>, cluster: Weak<Cluster>, broker: Weak<Broker>) {
    loop {
        gap.back.notified().await;
        let since = gap.since_ms.swap(0, Relaxed);
        let (Some(node), Some(broker)) = (cluster.upgrade(), broker.upgrade()) else { return };
        if since == 0 || !node.durable.is_ready() {
            continue;
        }
        let from = since.saturating_sub(WATERMARK_GRACE_MS);
        // Twice: at once, and again when this node's renewed subscriptions
        // have surely reached every NATS server (what was published before
        // that did not come live); the second pass routes only what the
        // first could not have seen. JetStream may be electing a stream
        // leader (the NATS server that went away led it): a few attempts,
        // a second apart.
        for pass in [Duration::ZERO, CATCH_UP_AGAIN_AFTER] {
            tokio::time::sleep(pass).await;
            for attempt in 1..=10 {
                match catch_up(&node, &broker, from).await {
                    Ok(routed) => {
                        node.durable.caught_up.fetch_add(routed as u64, Relaxed);
                        tracing::info!(routed, "cluster: caught up on what NATS could not bring during a gap");
                        break;
                    }
                    Err(e) if attempt < 10 => {
                        tracing::debug!(error = %e, "cluster: catching up from JetStream; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => tracing::error!(error = %e, "cluster: cannot catch up from JetStream"),
                }
            }
        }
    }
}

async fn catch_up(node: &Cluster, broker: &Broker, from_ms: u64) -> anyhow::Result<usize> {
    let stream = node.durable.js.get_stream(node.durable.msgs_stream()).await?;
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(from_ms) * 1_000_000)?;
    let mut consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await?;
    if consumer.info().await?.num_pending == 0 {
        return Ok(0);
    }
    let mut messages = consumer.messages().await?;
    let mut routed = 0;
    while let Ok(Some(Ok(nats_message))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
        if let Some((origin, message)) = decode_with_origin(&nats_message.payload) {
            // This node's own messages never left it.
            if origin != node.node() && broker.route_remote(message, &origin, node) {
                routed += 1;
            }
        }
        if nats_message.info().map_or(true, |info| info.pending == 0) {
            break;
        }
    }
    Ok(routed)
}

/// Every second (or soon after a subscription changed): writes the record
/// of each persistent session this node holds when it changed or its
/// watermark can move a step, and removes the records of sessions that
/// ended here (unless another node has taken them).
async fn run_session_records(cluster: Weak<Cluster>, broker: Weak<Broker>) {
    loop {
        {
            let (Some(node), Some(broker)) = (cluster.upgrade(), broker.upgrade()) else { return };
            let Some(bucket) = node.durable.sessions.get().cloned() else { return };
            write_session_records(&node, &broker, &bucket).await;
            drop((node, broker));
        }
        let Some(durable) = cluster.upgrade().map(|node| node.durable.clone()) else { return };
        let _ = tokio::time::timeout(Duration::from_secs(1), durable.sessions_changed.notified()).await;
    }
}

async fn write_session_records(node: &Cluster, broker: &Broker, bucket: &kv::Store) {
    let now = crate::broker::now_ms();
    let sessions = broker.persistent_sessions();
    let mut writes = Vec::new();
    {
        let written = node.durable.written.lock();
        for session in &sessions {
            let record = session_record(node.node(), session, now);
            let digest = record_digest(&record);
            let due = written.get(&session.client_id).is_none_or(|w| {
                w.digest != digest
                    || record.watermark_ms >= w.watermark_ms + WATERMARK_STEP_MS
                    || now >= w.at_ms + RECORD_REFRESH_MS
            });
            if due {
                writes.push((session.client_id.clone(), record, digest));
            }
        }
    }
    for (client_id, record, digest) in writes {
        let Ok(value) = postcard::to_allocvec(&record) else { continue };
        match bucket.put(subjects::client_key(&client_id), Bytes::from(value)).await {
            Ok(_) => {
                node.durable
                    .written
                    .lock()
                    .insert(client_id, Written { digest, watermark_ms: record.watermark_ms, at_ms: now });
            }
            Err(e) => tracing::debug!(error = %e, "cluster: cannot write a session record"),
        }
    }
    let live: std::collections::HashSet<&str> = sessions.iter().map(|s| &*s.client_id).collect();
    let gone: Vec<Arc<str>> = node.durable.written.lock().keys().filter(|id| !live.contains(&***id)).cloned().collect();
    for client_id in gone {
        node.durable.written.lock().remove(&client_id);
        let key = subjects::client_key(&client_id);
        // Another node may have taken the session: its record stays.
        if let Ok(Some(entry)) = bucket.entry(key.clone()).await {
            let ours = postcard::from_bytes::<SessionRecord>(&entry.value).is_ok_and(|r| r.node == node.node());
            if ours && entry.operation == kv::Operation::Put {
                let _ = bucket.delete(key).await;
            }
        }
    }
}

fn session_record(node: &str, session: &Session, now_ms: u64) -> SessionRecord {
    let horizon = now_ms.saturating_sub(WATERMARK_GRACE_MS);
    let watermark_ms = session.oldest_undelivered_ms().map_or(horizon, |oldest| oldest.min(horizon));
    let mut subscriptions: Vec<StoredSubscription> = session
        .subscriptions()
        .into_iter()
        .map(|(filter, r)| StoredSubscription { filter, options: r.options, identifier: r.identifier })
        .collect();
    subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
    SessionRecord {
        node: node.to_string(),
        user: session.user.as_deref().map(str::to_string),
        subscriptions,
        watermark_ms,
    }
}

fn record_digest(record: &SessionRecord) -> u64 {
    let without_watermark = SessionRecord { watermark_ms: 0, ..record.clone() };
    postcard::to_allocvec(&without_watermark).map_or(0, |bytes| super::ahash_of_bytes(&bytes))
}

/// The record of `client_id`, if the cluster holds one.
pub(super) async fn session_record_of(durable: &Durable, client_id: &str) -> Option<SessionRecord> {
    let bucket = durable.sessions.get()?;
    let value = bucket.get(subjects::client_key(client_id)).await.ok()??;
    postcard::from_bytes(&value).ok()
}

/// The QoS 1/2 messages of the stream admitted from `since_ms` on that
/// match the record's subscriptions, as deliveries for the session.
pub(super) async fn replay(
    durable: &Durable,
    client_id: &str,
    record: &SessionRecord,
) -> anyhow::Result<Vec<Delivery>> {
    let filters: Vec<(crate::topic::TopicFilter, SubscriptionRecord)> = record
        .subscriptions
        .iter()
        .filter_map(|s| {
            let parsed = crate::topic::parse_subscription(&s.filter).ok()?;
            // A shared subscription's messages went to the group's other members.
            parsed
                .share_group
                .is_none()
                .then_some((parsed.filter, SubscriptionRecord { options: s.options, identifier: s.identifier }))
        })
        .collect();
    let mut deliveries = Vec::new();
    if filters.is_empty() {
        return Ok(deliveries);
    }
    let stream = durable.js.get_stream(durable.msgs_stream()).await?;
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(record.watermark_ms) * 1_000_000)?;
    let mut consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await?;
    if consumer.info().await?.num_pending == 0 {
        return Ok(deliveries);
    }
    let mut messages = consumer.messages().await?;
    while let Ok(Some(Ok(nats_message))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
        if let Some(message) = decode(&nats_message.payload) {
            let no_local =
                |r: &SubscriptionRecord| r.options.no_local && message.publisher.as_deref() == Some(client_id);
            let matched: Vec<&SubscriptionRecord> =
                filters.iter().filter(|(f, r)| f.matches(&message.topic) && !no_local(r)).map(|(_, r)| r).collect();
            if let Some(qos) = matched.iter().map(|r| r.options.qos).max() {
                deliveries.push(Delivery {
                    qos: qos.min(message.qos),
                    retain: false,
                    subscription_ids: matched.iter().filter_map(|r| r.identifier).collect(),
                    seq: None,
                    message: Arc::new(message),
                });
            }
        }
        if nats_message.info().map_or(true, |info| info.pending == 0) {
            break;
        }
    }
    durable.replayed.fetch_add(deliveries.len() as u64, Relaxed);
    Ok(deliveries)
}
