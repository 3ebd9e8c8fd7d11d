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
//!   user, subscriptions and watermark ([`super::recovery`] keeps and reads
//!   them).
//! - **`PREFIX_nodes`** (key-value): which node holds which message id tag.
//!
//! Owns: the streams and buckets, publishing into them (acks awaited off the
//! forwarding task), reading them back. Must never: be on a local delivery's
//! path, or make the forwarding task wait for a JetStream round trip.

use super::{subjects, Cluster, WireMessage};
use crate::broker::{Broker, Message};
use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a node waits for JetStream to acknowledge one publish.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// What sizes the streams and buckets, from the broker's configuration.
pub struct Limits {
    /// The most messages and the longest age a history class keeps.
    pub history: (usize, Option<u64>),
    /// `session.max_session_expiry_secs`.
    pub max_session_expiry_secs: u64,
}

/// How long one attempt to find or create the streams and buckets may take.
const SETUP_ATTEMPT: Duration = Duration::from_secs(3);

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
pub(super) struct Written {
    pub(super) digest: u64,
    pub(super) watermark_ms: u64,
    pub(super) at_ms: u64,
}

/// JetStream for one node.
pub struct Durable {
    pub(super) js: jetstream::Context,
    /// How long a publish is sent again before the publisher is refused
    /// (`[cluster] ack_timeout_ms`).
    ack_timeout: Duration,
    prefix: String,
    node: String,
    ready: AtomicBool,
    retained: OnceLock<kv::Store>,
    pub(super) sessions: OnceLock<kv::Store>,
    nodes: OnceLock<kv::Store>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    pub(super) written: Mutex<HashMap<Arc<str>, Written>>,
    /// Wakes the session pass early (a subscription changed).
    pub(super) sessions_changed: tokio::sync::Notify,
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
    pub fn new(client: async_nats::Client, prefix: &str, node: &str, ack_timeout: Duration) -> Durable {
        let mut js = jetstream::new(client);
        js.set_timeout(ACK_TIMEOUT.min(ack_timeout));
        Durable {
            js,
            ack_timeout,
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

    /// `[cluster] ack_timeout_ms`.
    pub fn ack_timeout(&self) -> Duration {
        self.ack_timeout
    }

    /// A subscription changed: the session pass runs soon.
    pub fn session_changed(&self) {
        self.sessions_changed.notify_one();
    }

    pub(super) fn msgs_stream(&self) -> String {
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
        // The deadline runs from the hand-over, not from when the batches
        // before this one were settled: a stalled JetStream answers every
        // waiting publisher within the timeout, not one timeout after another.
        let deadline = tokio::time::Instant::now() + durable.ack_timeout;
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
        let _ = acks.send((pending, ack, deadline)).await;
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
/// same message id, until its deadline (`[cluster] ack_timeout_ms` after it
/// was handed over).
type AckBatch = (Vec<Pending>, Option<oneshot::Sender<bool>>, tokio::time::Instant);

async fn run_acks(mut acks: mpsc::Receiver<AckBatch>, durable: Arc<Durable>) {
    while let Some((pending, ack, deadline)) = acks.recv().await {
        let mut ok = true;
        for Pending { subject, payload, message_id, ack } in pending {
            let within = |f| tokio::time::timeout_at(deadline, f);
            let mut result = within(ack).await.map_err(|_| "no answer before the deadline".to_string()).and_then(
                |r: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>| {
                    r.map(|_| ()).map_err(|e| e.to_string())
                },
            );
            while result.is_err() && tokio::time::Instant::now() < deadline {
                tracing::debug!(subject, "cluster: JetStream did not acknowledge; sending again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                result = match tokio::time::timeout_at(deadline, durable.publish(&subject, &payload, message_id)).await
                {
                    Ok(Ok(again)) => match tokio::time::timeout_at(deadline, again).await {
                        Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                        Err(_) => Err("no answer before the deadline".into()),
                    },
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("could not send before the deadline".into()),
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
/// retrying with back-off, then loads what the cluster holds: history
/// (once) and retained messages, and claims this node's id tag. Returns the
/// retained bucket's watch for [`now_ready`] (`None`: the node is gone).
/// The caller (`cluster/mod.rs`) settles the sessions in between.
pub(super) async fn run_setup(
    config: crate::config::ClusterConfig,
    cluster: Weak<Cluster>,
    broker: Weak<Broker>,
    limits: Limits,
) -> Option<Option<kv::Watch>> {
    let mut delay = Duration::from_millis(50);
    loop {
        let node = cluster.upgrade()?;
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
    let node = cluster.upgrade()?;
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
    }
    Some(retained_watch)
}

/// The node is ready: what the cluster holds is loaded and its sessions
/// settled; retained messages are followed live from now on.
pub(super) fn now_ready(node: &Cluster, retained_watch: Option<kv::Watch>, broker: Weak<Broker>) {
    node.durable.ready.store(true, Relaxed);
    tracing::info!(node = node.node, "cluster: JetStream streams and buckets ready");
    if let Some(watch) = retained_watch {
        tokio::spawn(follow_retained(watch, broker));
    }
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

pub(super) fn decode_with_origin(payload: &[u8]) -> Option<(String, Message)> {
    let wire: WireMessage = postcard::from_bytes(payload).ok()?;
    let mut message = Message::from_stored(wire.message).ok()?;
    message.handling.high_priority = wire.high_priority;
    Some((wire.origin, message))
}
