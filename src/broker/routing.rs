//! Publishing: admission (topic class, message id and time, history and
//! retained persistence) and local routing to the matching subscribers'
//! outboxes; acknowledgements after durability and publisher pacing.
//!
//! Owns: the one seam a cluster backplane uses: [`Broker::publish`] is
//! `admit` then `route_local`; a backplane forwards what `admit` returned to
//! other nodes and delivers what they send through `route_local`.
//! Must never: check who may publish (the client core does), write to the
//! store under the tree lock beyond a persistent session's delivery record,
//! or hold a lock across an `.await`.

use super::class_runtime::DropReason;
use super::stats::Limit;
use super::subscriptions::pick_shared_member;
use super::*;

/// Deliveries of one message above which it counts as a fan-out, and how
/// long (ms, on the coarse clock) writers keep coalescing after one
/// (`Broker::fanning_out`).
const FAN_OUT_ABOVE: usize = 8;
const FAN_OUT_RECENT_MS: u64 = 10;

/// Which shared-subscription groups a routing pass serves.
#[derive(Debug, Clone, Copy)]
pub enum SharedScope<'a> {
    /// Every group: a single node, or a cluster node without NATS.
    All,
    /// None: in a cluster the groups are served through NATS queue groups.
    Nothing,
    /// One group on one filter (a message its NATS queue group gave this node).
    Only { group: &'a str, filter: &'a TopicFilter },
}

/// A message that passed admission, with its topic's order held until it
/// is routed.
pub struct AdmittedPublish<'a> {
    pub message: Arc<Message>,
    _in_order: parking_lot::MutexGuard<'a, ()>,
}

impl Broker {
    /// The one way back: what a publisher's acknowledgement says, once
    /// everything the broker promised for it holds. Storage first (a
    /// persistent subscriber's copy, history, retained: flushed by group
    /// commit), then the backplane (in a cluster, JetStream holds the QoS
    /// 1/2 message, within its own deadline). The client core, the bridge
    /// and the admin API all answer with this, each mapping it to its wire
    /// code, so none acknowledges before another would.
    pub async fn acknowledge(&self, outcome: PublishOutcome) -> Ack {
        if let Some(refusal) = outcome.refused {
            return Ack::Refused(refusal);
        }
        if outcome.store_failed {
            return Ack::StoreFailed;
        }
        if outcome.must_sync {
            if let Err(e) = self.sync().await {
                tracing::error!(error = %e, "store flush failed; refusing to acknowledge as success");
                return Ack::StoreFailed;
            }
        }
        if let Some(backplane_ack) = outcome.backplane_ack {
            // Durable for every persistent subscriber in the cluster only
            // once the backplane's store holds it.
            if !backplane_ack.held().await {
                tracing::warn!("the backplane did not hold a QoS 1/2 message; refusing to acknowledge as success");
                return Ack::NotReplicated;
            }
        }
        Ack::Accepted { matched: outcome.deliveries > 0 || outcome.shed }
    }

    /// [`Broker::acknowledge`] as a future of its own (it holds the broker),
    /// for an edge that keeps several waiting in order (the bridge).
    pub fn acknowledgement(
        self: &Arc<Self>,
        outcome: PublishOutcome,
    ) -> impl std::future::Future<Output = Ack> + Send + 'static {
        let broker = self.clone();
        async move { broker.acknowledge(outcome).await }
    }

    /// Publishes, then paces the publisher: when most of the message's
    /// subscribers had full outboxes but are draining them (slow, not
    /// stalled), waits until one of them has room again (at most 50 ms), so
    /// a publisher running at full speed cannot keep every outbox overflowing
    /// and make the broker route messages only to drop them. Stalled
    /// subscribers never hold a publisher back.
    pub async fn publish_paced(&self, message: Message) -> PublishOutcome {
        let outcome = self.publish(message);
        if let Some(session) = &outcome.congested {
            session.wait_for_room(MAX_PACING_WAIT).await;
        }
        outcome
    }

    /// Admits the message, then routes it to every matching local
    /// subscription. The one routing seam: a cluster backplane forwards what
    /// [`Broker::admit`] returned to other nodes before `route_local`, and
    /// delivers what other nodes send through [`Broker::route_local`].
    pub fn publish(&self, message: Message) -> PublishOutcome {
        let mut outcome = PublishOutcome::default();
        if let Some(admitted) = self.admit(message, &mut outcome) {
            outcome.message_id = admitted.message.id;
            // In a cluster, shared subscriptions are served through NATS
            // queue groups (one member in the whole cluster per message);
            // without NATS, this node's members are all there is.
            let shared = match self.backplane.get() {
                Some(backplane) => {
                    let history = self.classes.history_rule(&admitted.message.topic).is_some();
                    outcome.backplane_ack = backplane.forward(&admitted.message, history);
                    if backplane.is_connected() {
                        SharedScope::Nothing
                    } else {
                        SharedScope::All
                    }
                }
                None => SharedScope::All,
            };
            self.route_local_scoped(&admitted.message, &mut outcome, shared);
        }
        outcome
    }

    /// Delivers a message another node admitted (the cluster backplane):
    /// handled by this node's class for its topic, kept in this node's
    /// history and retained messages as the origin kept it, and routed to
    /// the local subscribers, once however many of this node's filters it
    /// matched. Never forwarded again. Returns whether it was delivered
    /// (false: a second copy).
    /// `first_sighting` tells (under the topic's order lock) whether the
    /// backplane sees this message id for the first time.
    pub fn route_remote(&self, mut message: Message, first_sighting: impl FnOnce(u64) -> bool) -> bool {
        self.adopt_remote(&mut message);
        let _in_order = self.order_stripe(message.topic.as_str()).lock();
        if !first_sighting(message.id) {
            return false;
        }
        self.classes.observe_remote(&message, now_ms());
        let message = Arc::new(message);
        self.keep_remote_history(&message);
        // Retained messages come from the cluster's bucket once JetStream
        // is there (in the bucket's order, the same on every node).
        if message.retain && !self.backplane.get().is_some_and(|b| b.is_durable()) {
            let _ = self.retain(&message);
        }
        let mut outcome = PublishOutcome::default();
        self.route_local_scoped(&message, &mut outcome, SharedScope::Nothing);
        true
    }

    /// A retained message (or a clear) from the cluster's bucket.
    pub fn keep_remote_retained(&self, mut message: Message) {
        self.adopt_remote(&mut message);
        let _in_order = self.order_stripe(message.topic.as_str()).lock();
        let _ = self.retain(&Arc::new(message));
    }

    /// A message of the cluster's history stream (read at start), kept in
    /// this node's history as its class says.
    pub fn keep_remote_history(&self, message: &Message) {
        if let Some(rule) = self.classes.history_rule(&message.topic) {
            let not_before = rule.max_age_secs.map_or(0, |s| now_ms().saturating_sub(s * 1000));
            if let Err(e) = self.store.append_history(&message.to_stored(), rule.keep, not_before) {
                tracing::warn!(topic = %message.topic, error = %e, "cannot store a remote message's history");
            }
        }
    }

    /// The most messages and the longest age any class keeps in history
    /// (the cluster's history stream keeps that much per topic).
    pub fn history_limits(&self) -> (usize, Option<u64>) {
        self.classes.history_limits()
    }

    /// Delivers a message NATS's queue group for `$share/{group}/{filter}`
    /// gave this node: to one of this node's members of that group only
    /// (every other subscriber got it through the plain path).
    pub fn route_shared(&self, mut message: Message, group: &str, filter: &TopicFilter) {
        self.adopt_remote(&mut message);
        let mut outcome = PublishOutcome::default();
        self.route_local_scoped(&Arc::new(message), &mut outcome, SharedScope::Only { group, filter });
    }

    /// Makes a message another node admitted one of this node's: handled by
    /// this node's class for its topic. Its id stays the origin's, so every
    /// node shows it under one id; this node's next ids go above it (a
    /// Lamport clock; each node's tag in the low bits keeps ids unique, see
    /// docs/cluster.md).
    fn adopt_remote(&self, message: &mut Message) {
        message.handling = self.classes.handling(&message.topic, message.handling.high_priority);
        self.ids_past(message.id);
    }

    /// The topic-order lock of `topic` (one of a fixed set of stripes).
    pub(super) fn order_stripe(&self, topic: &str) -> &parking_lot::Mutex<()> {
        static STRIPE_HASH: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
        let hash = STRIPE_HASH.get_or_init(ahash::RandomState::new).hash_one(topic);
        &self.topic_order[hash as usize % self.topic_order.len()]
    }

    /// Applies the topic's class (refuse, shed, adjust), stamps the message
    /// with its id and time under the topic's order lock, and stores what
    /// must outlive it (history, retained). `None`: refused or shed (said in
    /// `outcome`). The returned guard keeps the topic's order until routing
    /// is done, so every subscriber sees a topic's messages in id order.
    pub fn admit(&self, message: Message, outcome: &mut PublishOutcome) -> Option<AdmittedPublish<'_>> {
        let stripe = self.order_stripe(message.topic.as_str());
        let now = now_ms();
        let (message, history) = self.admit_to_class(message, now, outcome)?;
        let in_order = stripe.lock();
        let message = self.stamp_and_keep(message, history, now, outcome);
        Some(AdmittedPublish { message, _in_order: in_order })
    }

    /// The retained quota and the topic's class: the message as its class
    /// adjusted it, with the history rule to keep it by; `None`: refused or
    /// shed (said in `outcome`).
    pub(super) fn admit_to_class(
        &self,
        mut message: Message,
        now: u64,
        outcome: &mut PublishOutcome,
    ) -> Option<(Message, Option<class_runtime::HistoryRule>)> {
        if message.retain && !message.payload.is_empty() {
            let limits = &self.config.retained;
            if !self.retained.read().fits(&message, limits.max_messages, limits.max_bytes) {
                tracing::debug!(topic = %message.topic, "retained message refused: [retained] quota reached");
                self.stats.limit_hit(Limit::RetainedMessages);
                outcome.refused = Some(Refusal::RetainedQuota);
                return None;
            }
        }
        let history = match self.classes.admit(&mut message, now) {
            class_runtime::Admission::Publish { history } => history,
            class_runtime::Admission::Shed => {
                outcome.shed = true;
                return None;
            }
            class_runtime::Admission::Refused(refusal) => {
                self.stats.limit_hit(match refusal {
                    Refusal::RateLimited => Limit::PublishRate,
                    Refusal::PayloadTooLarge => Limit::ClassPayloadSize,
                    Refusal::RetainedQuota => Limit::RetainedMessages,
                });
                outcome.refused = Some(refusal);
                return None;
            }
        };
        Some((message, history))
    }

    /// Gives an admitted message its id and time (the caller holds the
    /// topic's order lock) and stores what must outlive it.
    pub(super) fn stamp_and_keep(
        &self,
        mut message: Message,
        history: Option<class_runtime::HistoryRule>,
        now: u64,
        outcome: &mut PublishOutcome,
    ) -> Arc<Message> {
        message.id = self.next_id();
        message.timestamp_ms = now;
        let message = Arc::new(message);
        if let Some(rule) = history {
            let not_before = rule.max_age_secs.map_or(0, |s| now.saturating_sub(s * 1000));
            match self.store.append_history(&message.to_stored(), rule.keep, not_before) {
                Ok(()) => outcome.must_sync |= message.qos > QoS::AtMostOnce,
                Err(e) => {
                    tracing::error!(topic = %message.topic, error = %e, "cannot store history");
                    outcome.store_failed = true;
                }
            }
        }
        if message.retain {
            match self.retain(&message) {
                Ok(must_sync) => outcome.must_sync |= must_sync,
                Err(()) => outcome.store_failed = true,
            }
        }
        message
    }

    /// Sets, replaces or clears (empty payload) the retained message of a topic.
    /// Returns whether a store write must be flushed before acknowledging;
    /// `Err` when the store refused the write (the map is updated anyway: the
    /// message is retained until a restart).
    fn retain(&self, message: &Arc<Message>) -> Result<bool, ()> {
        let result = if message.payload.is_empty() {
            self.retained.write().remove(&message.topic);
            self.store.set_retained(message.topic.as_str(), None)
        } else {
            self.retained.write().insert(message.clone());
            self.store.set_retained(message.topic.as_str(), Some(&message.to_stored()))
        };
        if let Err(e) = result {
            tracing::error!(topic = %message.topic, error = %e, "cannot store retained message");
            return Err(());
        }
        Ok(message.qos > QoS::AtMostOnce)
    }

    /// Delivers an admitted message to every matching subscription on this
    /// node: one pass over the tree under its read lock, enqueueing to each
    /// session's outbox (and the store, for a persistent session's QoS > 0 copy).
    pub fn route_local(&self, message: &Arc<Message>, outcome: &mut PublishOutcome) {
        self.route_local_scoped(message, outcome, SharedScope::All)
    }

    /// [`Broker::route_local`], serving the shared-subscription groups that
    /// `shared` says.
    pub fn route_local_scoped(&self, message: &Arc<Message>, outcome: &mut PublishOutcome, shared: SharedScope<'_>) {
        // Deliver while holding the tree's read lock (the lock order allows
        // session locks inside it): no target list, no reference-count
        // traffic, one pass. Readers never block each other; only
        // (un)subscribes wait.
        let mut duplicates: Vec<(Arc<Session>, Delivery)> = Vec::new();
        let mut tally = Tally::new(message);
        let tree = self.subscriptions.read();
        let mut deliver = |sub: &Subscriber| {
            let delivery = sub.delivery_of(message);
            let qos = delivery.qos;
            // A client with several matching subscriptions gets one copy
            // ([MQTT-3.3.4-3..5]); the rare second match is merged below.
            match sub.session.enqueue_routed(delivery) {
                Ok(enqueued) => tally.count(self, &sub.session, message, qos, enqueued, outcome),
                Err(delivery) => duplicates.push((sub.session.clone(), delivery)),
            }
        };
        let mut holes = HolesMemo::default();
        match shared {
            SharedScope::Only { group, filter } => {
                let key = SubscriberKey::SharedGroup(Arc::from(group));
                if let Some(SubscriptionEntry::Shared { members, next }) = tree.get(filter, &key) {
                    if let Some(sub) = pick_shared_member(members, next, &message.topic) {
                        deliver(sub);
                    }
                }
            }
            SharedScope::All | SharedScope::Nothing => tree.for_each_match(&message.topic, |_key, entry| match entry {
                SubscriptionEntry::Client(sub) => {
                    let own = sub.options.no_local && message.publisher.as_deref() == Some(&*sub.session.client_id);
                    if !own && !holes.excludes(&sub.holes, &message.topic) {
                        deliver(sub);
                    }
                }
                SubscriptionEntry::Shared { members, next } => {
                    if matches!(shared, SharedScope::All) {
                        if let Some(sub) = pick_shared_member(members, next, &message.topic) {
                            deliver(sub);
                        }
                    }
                }
            }),
        }
        drop(tree);
        tally.finish(self, message, 1, outcome);
        for (session, delivery) in duplicates {
            merge_duplicate(&session, delivery, outcome);
        }
    }

    /// Whether a message went to many subscribers within the last few
    /// milliseconds: a writer woken now is likely one of a fan-out's, and
    /// waits one poll of the kernel before writing so that a publisher's
    /// next messages, if they arrived meanwhile, go in the same write
    /// (docs/performance.md, "Write coalescing at a fixed rate").
    /// Point-to-point traffic alone never waits.
    pub fn fanning_out(&self) -> bool {
        crate::clock::coarse_now_ms().saturating_sub(self.last_fan_out_ms.load(Ordering::Relaxed)) <= FAN_OUT_RECENT_MS
    }

    /// Counts the message a `drop_oldest` or `conflate` outbox discarded
    /// to take this one.
    fn count_displaced(&self, message: &Message, n: u64) {
        let reason = match message.handling.policy {
            crate::classes::OutboxPolicy::Conflate => DropReason::Conflated,
            _ => DropReason::DropOldest,
        };
        self.classes.count_drops(usize::from(message.handling.class), reason, n);
    }

    /// Recent messages of a topic whose class keeps history, oldest first:
    /// those with an id above `after_id`, at most `limit` (0: the class's
    /// `history_messages`). Access is the caller's to check (the client
    /// core and the HTTP API do, with the subscribe rules).
    pub fn history(&self, topic: &str, query: HistoryQuery) -> Result<HistoryPage, HistoryError> {
        let topic = TopicName::new(topic).map_err(|_| HistoryError::InvalidTopic)?;
        let rule = self.classes.history_rule(&topic).ok_or(HistoryError::NotKept)?;
        let limit = if query.limit == 0 { rule.keep } else { query.limit.min(rule.keep) }.min(HISTORY_PAGE_MAX);
        let not_before = rule.max_age_secs.map_or(0, |s| now_ms().saturating_sub(s * 1000));
        // One more than asked: whether more lie beyond the page.
        let stored = if query.before_id > 0 {
            self.store.load_history_before(topic.as_str(), query.before_id, limit + 1, not_before)
        } else {
            self.store.load_history(topic.as_str(), query.after_id, limit + 1, not_before)
        }
        .map_err(|e| {
            tracing::error!(%topic, error = %e, "cannot read history");
            HistoryError::StoreFailed
        })?;
        let has_more = stored.len() > limit;
        let skip = usize::from(has_more); // the oldest: the one beyond the page
        let messages = stored.into_iter().skip(skip).filter_map(|m| Message::from_stored(m).ok()).collect();
        Ok(HistoryPage { messages, has_more })
    }
}

/// A second copy for a client whose other subscription already took the
/// message: merged into the queued one ([MQTT-3.3.4-3..5]), or queued if
/// that one has already gone.
pub(super) fn merge_duplicate(session: &Session, delivery: Delivery, outcome: &mut PublishOutcome) {
    if let Some(Enqueued::Queued { stored, store_failed, .. }) = session.merge_duplicate(delivery) {
        outcome.deliveries += 1;
        outcome.must_sync |= stored;
        outcome.store_failed |= store_failed;
    }
}

/// What a routing pass counts besides each message's outcome: congestion
/// for pacing, and the class drops, counted once per pass rather than per
/// delivery (a slow fan-out refuses many).
pub(super) struct Tally {
    now: u64,
    class_slot: usize,
    attempts: usize,
    full: usize,
    congested: Option<Arc<Session>>,
    refused: u64,
    displaced: u64,
    offline: u64,
}

impl Tally {
    /// For a pass over messages of `message`'s topic (one class).
    pub(super) fn new(message: &Message) -> Tally {
        Tally {
            now: crate::clock::coarse_now_ms(),
            class_slot: usize::from(message.handling.class),
            attempts: 0,
            full: 0,
            congested: None,
            refused: 0,
            displaced: 0,
            offline: 0,
        }
    }

    /// One delivery's fate.
    pub(super) fn count(
        &mut self,
        broker: &Broker,
        session: &Arc<Session>,
        message: &Arc<Message>,
        qos: QoS,
        enqueued: Enqueued,
        outcome: &mut PublishOutcome,
    ) {
        self.attempts += 1;
        match enqueued {
            Enqueued::Queued { stored, store_failed, displaced } => {
                if let Some(watch) = broker.delivery_watch.get() {
                    if qos > QoS::AtMostOnce && watch.watches(self.class_slot) {
                        watch.watch(session, message);
                    }
                }
                outcome.deliveries += 1;
                outcome.must_sync |= stored;
                outcome.store_failed |= store_failed;
                self.displaced += u64::from(displaced);
            }
            Enqueued::Full => {
                self.refused += 1;
                if session.is_draining(self.now, STALLED_AFTER_MS) {
                    self.full += 1;
                    if self.congested.is_none() {
                        self.congested = Some(session.clone());
                    }
                }
            }
            Enqueued::Dropped => self.offline += 1,
        }
    }

    /// After the pass over `messages` messages (tree lock released): the
    /// pacing verdict goes into `outcome`, the counters to the broker.
    pub(super) fn finish(self, broker: &Broker, message: &Message, messages: usize, outcome: &mut PublishOutcome) {
        if self.full * 2 > self.attempts {
            outcome.congested = self.congested;
        }
        if self.attempts / messages.max(1) > FAN_OUT_ABOVE && broker.last_fan_out_ms.load(Ordering::Relaxed) != self.now
        {
            broker.last_fan_out_ms.store(self.now, Ordering::Relaxed);
        }
        if self.refused > 0 {
            broker.classes.count_drops(self.class_slot, DropReason::QueueFull, self.refused);
            broker.stats.limit_hit_n(Limit::QueuedMessages, self.refused);
        }
        if self.displaced > 0 {
            broker.count_displaced(message, self.displaced);
        }
        if self.offline > 0 {
            broker.classes.count_drops(self.class_slot, DropReason::Offline, self.offline);
        }
    }
}
