//! Keeping persistent sessions and deliveries whole when a node or its
//! NATS connection fails (docs/cluster.md): the session records in
//! `PREFIX_sessions` (written by the node that holds each session), the
//! rebuild of a session whose node did not hand it over (its subscriptions,
//! and the QoS 1/2 messages of `PREFIX_msgs` since its watermark), a
//! restarted node ending the sessions that moved on, and the catch-up after
//! a gap in a node's NATS connection.
//!
//! Owns: the session record and its watermark, what a rebuild and a
//! catch-up read from JetStream. Must never: lose an acknowledged message
//! to save a duplicate (duplicates are the price, losses are bugs), or
//! touch a session of another user.

use super::durable::{decode_with_origin, Durable, Written};
use super::{subjects, Cluster};
use crate::broker::{Broker, Delivery, Message, Session, SubscriptionRecord};
use crate::store::StoredSubscription;
use async_nats::jetstream::{consumer, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

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

/// How long a resume waits for the session's old node to answer a ping
/// (then it is taken for gone and the session is rebuilt).
const HANDOVER_PING_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a resume waits for the handover from a node that answered.
const HANDOVER_WAIT: Duration = Duration::from_millis(2_000);

/// After a gap in the NATS connection, the second catch-up pass runs this
/// much later.
const CATCH_UP_AGAIN_AFTER: Duration = Duration::from_secs(3);

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

/// A node that comes back (killed, restarted on its store) may hold
/// persistent sessions that moved to another node meanwhile: their clients
/// reconnected there and got their messages. The cluster's record names
/// the session's node; this node's stale copies are ended.
pub(super) async fn drop_sessions_taken_elsewhere(node: &Cluster, broker: &Broker) {
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

/// A time this node may have missed core NATS messages from (its NATS
/// connection dropped, or NATS cut it off as a slow consumer), and a wake-up
/// for the catch-up task once the connection is back.
#[derive(Default)]
pub struct Gap {
    since_ms: AtomicU64,
    back: tokio::sync::Notify,
    /// Where the running catch-up reads from (0: none running): until it
    /// has finished, this node's sessions may lack messages from then on.
    catching_up_from_ms: AtomicU64,
    caught_up: tokio::sync::Notify,
}

impl Gap {
    pub fn opened(&self, now_ms: u64) {
        // The earliest opening counts until the catch-up has run.
        let _ = self.since_ms.compare_exchange(0, now_ms.max(1), Relaxed, Relaxed);
    }

    pub fn closed(&self) {
        self.back.notify_one();
    }

    /// The start of a gap not yet caught up (open, or its catch-up running):
    /// this node's sessions may lack QoS 1/2 messages admitted since then.
    pub fn incomplete_since(&self) -> Option<u64> {
        [self.since_ms.load(Relaxed), self.catching_up_from_ms.load(Relaxed)].into_iter().filter(|&t| t != 0).min()
    }

    /// Waits (at most `limit`) until no gap is left to catch up.
    pub async fn wait_caught_up(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let caught_up = self.caught_up.notified();
                if self.incomplete_since().is_none() {
                    return;
                }
                caught_up.await;
            }
        })
        .await;
    }

    fn catching_up(&self, from_ms: u64) {
        self.catching_up_from_ms.store(from_ms.max(1), Relaxed);
    }

    fn done_catching_up(&self) {
        self.catching_up_from_ms.store(0, Relaxed);
        self.caught_up.notify_waiters();
    }
}

/// A session's watermark: before it, every QoS 1/2 message for the session
/// was acknowledged by its client. Never later than the oldest delivery
/// still owed, than `now - WATERMARK_GRACE_MS` (messages on their way), nor
/// than the start of a gap this node has not caught up on (messages that
/// reached JetStream but not this node are owed too, though no queue holds
/// them yet: a rebuild from a later watermark would lose them).
pub fn watermark_ms(oldest_undelivered_ms: Option<u64>, gap_since_ms: Option<u64>, now_ms: u64) -> u64 {
    let horizon = now_ms.saturating_sub(WATERMARK_GRACE_MS);
    let gap = gap_since_ms.map_or(u64::MAX, |since| since.saturating_sub(WATERMARK_GRACE_MS));
    oldest_undelivered_ms.unwrap_or(u64::MAX).min(horizon).min(gap)
}

/// After a gap in this node's NATS connection, the QoS 1/2 messages other
/// nodes admitted meanwhile (held by `PREFIX_msgs`) are read back and routed
/// here like live ones: each local subscription gets what it missed, once
/// (the first-sighting memory drops what had arrived). QoS 0 messages of the
/// gap are gone, as MQTT allows.
pub(super) async fn run_catch_up(gap: Arc<Gap>, cluster: Weak<Cluster>, broker: Weak<Broker>) {
    loop {
        gap.back.notified().await;
        // Still incomplete until both passes ran (session watermarks and
        // handovers wait for it): marked before the gap is taken, so that
        // it never looks complete in between.
        let pending = gap.since_ms.load(Relaxed);
        if pending != 0 {
            gap.catching_up(pending);
        }
        let since = gap.since_ms.swap(0, Relaxed);
        let (Some(node), Some(broker)) = (cluster.upgrade(), broker.upgrade()) else { return };
        if since == 0 || !node.durable.is_ready() {
            gap.done_catching_up();
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
        gap.done_catching_up();
    }
}

async fn catch_up(node: &Cluster, broker: &Broker, from_ms: u64) -> anyhow::Result<usize> {
    let mut routed = 0;
    read_durable_since(&node.durable, from_ms, |origin, message| {
        // This node's own messages never left it.
        if origin != node.node() && broker.route_remote(message, |id| node.first_sighting(&origin, id)) {
            routed += 1;
        }
    })
    .await?;
    Ok(routed)
}

/// Reads `PREFIX_msgs` from the messages stored at `from_ms` to its end (as
/// it is when the read starts), handing each message, with the node that
/// admitted it, to `each`.
async fn read_durable_since(
    durable: &Durable,
    from_ms: u64,
    mut each: impl FnMut(String, Message),
) -> anyhow::Result<()> {
    let stream = durable.js.get_stream(durable.msgs_stream()).await?;
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(from_ms) * 1_000_000)?;
    let mut consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        })
        .await?;
    if consumer.info().await?.num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await?;
    while let Ok(Some(Ok(nats_message))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
        if let Some((origin, message)) = decode_with_origin(&nats_message.payload) {
            each(origin, message);
        }
        if nats_message.info().map_or(true, |info| info.pending == 0) {
            break;
        }
    }
    Ok(())
}

/// Every second (or soon after a subscription changed): writes the record
/// of each persistent session this node holds when it changed or its
/// watermark can move a step, and removes the records of sessions that
/// ended here (unless another node has taken them).
pub(super) async fn run_session_records(cluster: Weak<Cluster>, broker: Weak<Broker>) {
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
    let now = crate::clock::now_ms();
    let sessions = broker.persistent_sessions();
    let mut writes = Vec::new();
    {
        let written = node.durable.written.lock();
        for session in &sessions {
            let record = session_record(node.node(), session, now, node.gap.incomplete_since());
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
                // Only the record read: the node that took the session may
                // have written its own since (it does at once), which stays.
                let _ = bucket.delete_expect_revision(key, Some(entry.revision)).await;
            }
        }
    }
}

/// Writes the record of a session that just came to this node before its
/// client is told it is present: a client that moves on at once must find
/// this node named, not the one before (the periodic writer is up to a
/// second late).
async fn record_now(node: &Cluster, client_id: &str) {
    let (Some(bucket), Some(broker)) = (node.durable.sessions.get(), node.broker.upgrade()) else { return };
    let Some(session) = broker.session(client_id) else { return };
    let now = crate::clock::now_ms();
    let record = session_record(node.node(), &session, now, node.gap.incomplete_since());
    let digest = record_digest(&record);
    let Ok(value) = postcard::to_allocvec(&record) else { return };
    let put = bucket.put(subjects::client_key(client_id), Bytes::from(value));
    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), put).await {
        let written = Written { digest, watermark_ms: record.watermark_ms, at_ms: now };
        node.durable.written.lock().insert(Arc::from(client_id), written);
    }
}

fn session_record(node: &str, session: &Session, now_ms: u64, gap_since_ms: Option<u64>) -> SessionRecord {
    let watermark_ms = watermark_ms(session.oldest_undelivered_ms(), gap_since_ms, now_ms);
    let mut subscriptions: Vec<StoredSubscription> =
        session.subscriptions().into_iter().map(|(filter, r)| r.to_stored(filter)).collect();
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
async fn replay(durable: &Durable, client_id: &str, record: &SessionRecord) -> anyhow::Result<Vec<Delivery>> {
    let filters: Vec<(crate::topic::TopicFilter, SubscriptionRecord)> = record
        .subscriptions
        .iter()
        .filter_map(|s| {
            let parsed = crate::topic::parse_subscription(&s.filter).ok()?;
            // A shared subscription's messages went to the group's other members.
            parsed.share_group.is_none().then_some((parsed.filter, SubscriptionRecord::from_stored(s)))
        })
        .collect();
    let mut deliveries = Vec::new();
    if filters.is_empty() {
        return Ok(deliveries);
    }
    read_durable_since(durable, record.watermark_ms, |_, message| {
        let no_local = |r: &SubscriptionRecord| r.options.no_local && message.publisher.as_deref() == Some(client_id);
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
    })
    .await?;
    durable.replayed.fetch_add(deliveries.len() as u64, Relaxed);
    Ok(deliveries)
}

/// A persistent session was resumed here: if the cluster's record says
/// another node had it, that node hands it over (its claims task answers a
/// ping only after handing over). If that node does not answer (killed), or
/// answers but hands nothing over, the session is rebuilt from JetStream:
/// the record's subscriptions, and every QoS 1/2 message since its
/// watermark that matches them (some may come twice; none is lost).
/// Returns whether the session came from another node (handed over or
/// rebuilt): the connect that waits for it answers "session present".
pub(super) async fn recover_session(
    cluster: Weak<Cluster>,
    client_id: String,
    user: Option<String>,
    handed: tokio::sync::oneshot::Receiver<()>,
) -> bool {
    let Some(node) = cluster.upgrade() else { return false };
    let record = session_record_of(&node.durable, &client_id).await;
    let Some(record) = record.filter(|r| r.node != node.node && r.user == user) else {
        node.awaiting_handover.lock().remove(&client_id);
        return false;
    };
    // A killed node has no subscriber for its ping: NATS says so at once
    // ("no responders"). A paused or cut-off one costs the timeout.
    let ping = node.client.request(format!("{}.c.ping.{}", node.prefix, record.node), Bytes::new());
    let alive = matches!(tokio::time::timeout(HANDOVER_PING_TIMEOUT, ping).await, Ok(Ok(_)));
    let wait = if alive { HANDOVER_WAIT } else { std::time::Duration::ZERO };
    let handed_over = tokio::time::timeout(wait, handed).await.is_ok_and(|r| r.is_ok());
    node.awaiting_handover.lock().remove(&client_id);
    if handed_over {
        record_now(&node, &client_id).await;
        return true;
    }
    let Some(broker) = node.broker.upgrade() else { return false };
    match replay(&node.durable, &client_id, &record).await {
        Ok(deliveries) => {
            let subscriptions =
                record.subscriptions.iter().map(|s| (s.filter.clone(), SubscriptionRecord::from_stored(s))).collect();
            let count = deliveries.len();
            if broker.take_over_state(&client_id, user.as_deref(), subscriptions, deliveries) {
                node.durable.sessions_recovered.fetch_add(1, Relaxed);
                node.durable.session_changed();
                tracing::info!(
                    client_id,
                    from = record.node,
                    replayed = count,
                    alive,
                    "cluster: session rebuilt from JetStream (its node did not hand it over)"
                );
                record_now(&node, &client_id).await;
                return true;
            }
            false
        }
        Err(e) => {
            tracing::error!(client_id, error = %e, "cluster: cannot rebuild a session from JetStream");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_never_passes_what_is_owed_on_its_way_or_in_a_gap() {
        let now = 1_000_000;
        assert_eq!(watermark_ms(None, None, now), now - WATERMARK_GRACE_MS);
        assert_eq!(watermark_ms(Some(500_000), None, now), 500_000, "the oldest delivery owed");
        assert_eq!(watermark_ms(Some(995_000), None, now), now - WATERMARK_GRACE_MS, "messages on their way");
        // A gap since 900 s that is not caught up: what JetStream got since
        // then may be missing here, so the watermark stays before it.
        assert_eq!(watermark_ms(None, Some(900_000), now), 900_000 - WATERMARK_GRACE_MS);
        assert_eq!(watermark_ms(Some(800_000), Some(900_000), now), 800_000);
    }

    #[tokio::test]
    async fn a_gap_is_incomplete_until_its_catch_up_has_run() {
        let gap = Gap::default();
        assert_eq!(gap.incomplete_since(), None);
        gap.opened(1_000);
        gap.opened(2_000); // the earliest opening counts
        assert_eq!(gap.incomplete_since(), Some(1_000));
        // The catch-up takes it over: still incomplete while it runs.
        gap.catching_up(1_000);
        gap.since_ms.store(0, Relaxed);
        assert_eq!(gap.incomplete_since(), Some(1_000));
        gap.opened(5_000); // a new gap while catching up
        assert_eq!(gap.incomplete_since(), Some(1_000));
        let waiting = async { gap.wait_caught_up(Duration::from_secs(10)).await };
        let finishing = async {
            gap.done_catching_up();
            gap.since_ms.store(0, Relaxed);
            gap.done_catching_up();
        };
        tokio::join!(waiting, finishing);
        assert_eq!(gap.incomplete_since(), None);
    }
}
