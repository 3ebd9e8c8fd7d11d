//! The broker core: sessions, subscriptions, routing, retained messages, wills.
//!
//! Owns: every piece of state shared between connections. Transports (MQTT
//! over TCP, later WebSocket and the Protobuf protocol) call in through
//! [`Broker::connect`], [`Broker::subscribe`], [`Broker::publish`] and
//! friends, and take deliveries out of their [`Session`]'s outbox.
//! Must never: know which transport a client uses, encode packets, or hold a
//! lock across an `.await`.
//!
//! Lock order (never the reverse): `sessions` → `subscriptions` → a session's
//! own lock; `retained` is never held together with another lock.
//!
//! Routing runs on the publisher's task (like NATS): [`Broker::publish`]
//! matches the topic in the tree under a read lock, then pushes an `Arc` of
//! the message into each subscriber's outbox. There is no central router task
//! that every message would queue behind. [`Broker::publish`] is also the one
//! seam where a cluster backplane will forward messages to other nodes.

pub mod class_runtime;
pub mod clock;
pub mod message;
pub mod outbox;
pub mod session;

pub use class_runtime::Refusal;
pub use message::{now_ms, Delivery, Handling, Message, MessageProperties};
pub use session::{Enqueued, Outgoing, Session, SubscriptionRecord, NEVER_EXPIRES};

use crate::auth::Security;
use crate::config::Config;
pub use crate::model::WillAction;
use crate::model::{reason, CloseReason, LastWill, QoS, SubscriptionOptions};
use crate::store::{GroupCommit, Store, StoreError};
use crate::topic::{parse_subscription, SubscriptionTree, TopicError, TopicFilter, TopicName};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// Key of an entry in the subscription tree: one per client and filter, or
/// one per shared-subscription group and filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubscriberKey {
    Client(Arc<str>),
    SharedGroup(Arc<str>),
}

#[derive(Debug, Clone)]
pub struct Subscriber {
    pub session: Arc<Session>,
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

#[derive(Debug)]
pub enum SubscriptionEntry {
    Client(Subscriber),
    /// `$share/{group}/{filter}`: each message goes to one member, round-robin.
    Shared {
        members: Vec<Subscriber>,
        next: AtomicUsize,
    },
}

/// What a transport asks for when a client connects.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// Empty means "assign one".
    pub client_id: String,
    pub clean_start: bool,
    /// Seconds; `NEVER_EXPIRES` for an MQTT 3.1.1 persistent session.
    pub session_expiry_secs: u32,
    /// How many QoS 1/2 messages the client accepts in flight.
    pub receive_maximum: u16,
    /// The authenticated user (`None`: anonymous); a session belongs to
    /// the user who created it.
    pub user: Option<Arc<str>>,
    /// The device kind the connection signed in with (single sign-on).
    pub device: Option<Arc<str>>,
}

/// Why [`Broker::connect`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectRefused {
    /// The client id names a session of another user: it is left untouched.
    SessionOfAnotherUser,
}

pub struct Connected {
    pub session: Arc<Session>,
    pub session_present: bool,
    /// Set when the broker chose the client id.
    pub assigned_client_id: Option<String>,
    /// Identifies this attachment; pass it back to [`Broker::disconnected`].
    pub connection_id: u64,
    /// Fires with the reason when the connection must close (takeover, single sign-on).
    pub kicked: oneshot::Receiver<CloseReason>,
    /// Unacknowledged deliveries from before, to resend first (DUP set).
    pub resend: Vec<Outgoing>,
    /// Session expiry after applying the configured cap.
    pub session_expiry_secs: u32,
}

/// Why a history request got no messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryError {
    InvalidTopic,
    /// The topic's class keeps no history.
    NotKept,
    /// The requester may not subscribe to the topic.
    Denied,
    StoreFailed,
}

impl HistoryError {
    /// The reason code starling.v1 `HistoryReply.reason_code` carries.
    pub fn reason_code(self) -> u8 {
        match self {
            HistoryError::InvalidTopic => reason::TOPIC_NAME_INVALID,
            HistoryError::NotKept => reason::IMPLEMENTATION_SPECIFIC_ERROR,
            HistoryError::Denied => reason::NOT_AUTHORIZED,
            HistoryError::StoreFailed => reason::UNSPECIFIED_ERROR,
        }
    }
}

/// How a publish went, for the publisher's acknowledgement and pacing.
#[derive(Debug, Clone, Default)]
pub struct PublishOutcome {
    /// Subscriptions that received a copy.
    pub deliveries: usize,
    /// A copy was written to the store: flush before acknowledging.
    pub must_sync: bool,
    /// Most targets' outboxes were full while their writers are draining:
    /// one of them, for the publisher to wait on (see [`Broker::publish_paced`]).
    pub congested: Option<Arc<Session>>,
    /// The topic's class refused the message (nothing was published).
    pub refused: Option<Refusal>,
    /// The topic's class shed the message (a sampled room): accepted, not delivered.
    pub shed: bool,
}

/// What a publisher's acknowledgement should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Accepted (and durable where promised); `matched` is false when no
    /// subscription matched (MQTT 5 reason 0x10).
    Accepted {
        matched: bool,
    },
    /// The store could not flush: not acknowledged as durable (0x80).
    StoreFailed,
    Refused(Refusal),
}

/// A writer that took nothing for this long is stalled, not slow: its full
/// outbox loses messages (its policy) but never holds publishers back.
const STALLED_AFTER_MS: u64 = 50;
/// Number of topic-order locks (see `Broker::topic_order`).
const TOPIC_ORDER_STRIPES: usize = 256;

/// Longest a publisher waits for one congested outbox to drain.
const MAX_PACING_WAIT: Duration = Duration::from_millis(50);

pub struct Broker {
    config: Config,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    subscriptions: RwLock<SubscriptionTree<SubscriberKey, SubscriptionEntry>>,
    retained: RwLock<HashMap<TopicName, Arc<Message>>>,
    store: Arc<dyn Store>,
    commit: GroupCommit,
    next_connection_id: AtomicU64,
    /// Next message id: starts at `now_ms << 16` (and above every stored id),
    /// so ids keep increasing across restarts unless the clock goes back or a
    /// run averaged more than 65,536 messages per millisecond.
    next_message_id: AtomicU64,
    /// Publishes to one topic take one of these while they get their id and
    /// are routed, so every subscriber sees a topic's messages in id order
    /// (chat rooms are ordered; starling.v1 clients drop duplicates by id).
    /// Striped by topic hash: different topics rarely wait for each other.
    topic_order: Box<[Mutex<()>]>,
    classes: class_runtime::ClassRuntime,
    /// Authentication, access control and single sign-on (reloadable).
    security: Security,
    shutdown: watch::Sender<bool>,
}

impl Broker {
    /// Builds the broker and restores retained messages and persistent
    /// sessions from `store`. Must run inside a Tokio runtime (timers).
    pub fn new(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Arc<Broker>> {
        Broker::with_classes(config, store, crate::classes::ClassSet::default())
    }

    /// A broker whose topics follow `classes` (see `crate::classes`). Reads
    /// the files the security policy names (password file, token key).
    pub fn with_classes(
        config: Config,
        store: Arc<dyn Store>,
        classes: crate::classes::ClassSet,
    ) -> anyhow::Result<Arc<Broker>> {
        let security = Security::from_config(&config)?;
        let commit = GroupCommit::new(store.clone());
        let (shutdown, _) = watch::channel(false);
        let broker = Arc::new(Broker {
            config,
            sessions: Mutex::new(HashMap::new()),
            subscriptions: RwLock::new(SubscriptionTree::new()),
            retained: RwLock::new(HashMap::new()),
            store,
            commit,
            next_connection_id: AtomicU64::new(1),
            next_message_id: AtomicU64::new(now_ms() << 16),
            topic_order: (0..TOPIC_ORDER_STRIPES).map(|_| Mutex::new(())).collect(),
            classes: class_runtime::ClassRuntime::new(classes),
            security,
            shutdown,
        });
        broker.restore()?;
        broker.start_housekeeping();
        Ok(broker)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Authentication, access control and single sign-on.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Resolves when every store write made before the call is durable; many
    /// concurrent callers share one flush (group commit).
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.commit.sync().await
    }

    /// A receiver that turns `true` when the broker shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection to close (MQTT 5: DISCONNECT 0x8B).
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Saves every persistent session and flushes the store. Called after
    /// connections have closed.
    pub fn flush_all(&self) -> Result<(), StoreError> {
        let sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            session.save();
        }
        self.store.flush()
    }

    fn restore(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = now_ms();
        let mut retained = self.retained.write();
        for stored in self.store.load_retained()? {
            self.next_message_id.fetch_max(stored.id + 1, Ordering::Relaxed);
            match Message::from_stored(stored) {
                Ok(m) if !m.is_expired(now) => {
                    retained.insert(m.topic.clone(), Arc::new(m));
                }
                Ok(m) => self.store.set_retained(m.topic.as_str(), None)?,
                Err(e) => tracing::warn!(error = %e, "skipping stored retained message with an invalid topic"),
            }
        }
        drop(retained);
        let max_queued = self.config.session.max_queued_messages;
        for stored in self.store.load_sessions()? {
            let disconnected_at = stored.disconnected_at_ms.unwrap_or(now);
            if session_has_expired(stored.expiry_secs, disconnected_at, now) {
                self.store.remove_session(&stored.client_id)?;
                continue;
            }
            let mut deliveries = Vec::new();
            for d in self.store.load_deliveries(&stored.client_id)? {
                self.next_message_id.fetch_max(d.message.id + 1, Ordering::Relaxed);
                match Message::from_stored(d.message.clone()) {
                    Ok(m) => deliveries.push((d, Arc::new(m))),
                    Err(e) => {
                        tracing::warn!(client_id = %stored.client_id, error = %e, "skipping corrupt queued message")
                    }
                }
            }
            let session = Arc::new(Session::restore(&stored, deliveries, max_queued, self.store.clone()));
            {
                let mut tree = self.subscriptions.write();
                for (filter, record) in session.subscriptions() {
                    if let Ok(parsed) = parse_subscription(&filter) {
                        insert_subscription(
                            &mut tree,
                            &session,
                            parsed.share_group.as_deref(),
                            &parsed.filter,
                            &record,
                        );
                    }
                }
            }
            self.schedule_expiry(&session, session.generation());
            self.sessions.lock().insert(session.client_id.clone(), session);
        }
        tracing::info!(
            retained = self.retained.read().len(),
            sessions = self.sessions.lock().len(),
            "restored state from the store"
        );
        Ok(())
    }

    // ---- connect / disconnect --------------------------------------------

    /// Creates, resumes or takes over the client's session. A session of
    /// another user is refused and left untouched.
    pub fn connect(self: &Arc<Self>, request: ConnectRequest) -> Result<Connected, ConnectRefused> {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (client_id, assigned) = if request.client_id.is_empty() {
            let id = format!("auto-{:016x}", rand::random::<u64>());
            (id.clone(), Some(id))
        } else {
            (request.client_id.clone(), None)
        };
        let cap = self.config.session.max_session_expiry_secs;
        let expiry = if cap > 0 { request.session_expiry_secs.min(cap) } else { request.session_expiry_secs };
        let send_window = request.receive_maximum.min(self.config.session.max_inflight);

        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id.as_str()).cloned();
        if existing.as_ref().is_some_and(|old| old.user != request.user) {
            return Err(ConnectRefused::SessionOfAnotherUser);
        }
        let (session, session_present) = match existing {
            Some(old) if !request.clean_start => {
                old.set_expiry_secs(expiry);
                (old, true)
            }
            other => {
                if let Some(old) = other {
                    // Clean start ends the old session; its connection (if any)
                    // is told it was taken over.
                    old.kick(CloseReason::TakenOver);
                    self.discard_session_locked(&mut sessions, &old);
                }
                let session = Arc::new(Session::new(
                    Arc::from(client_id.as_str()),
                    request.user.clone(),
                    expiry,
                    self.config.session.max_queued_messages,
                    self.store.clone(),
                ));
                sessions.insert(session.client_id.clone(), session.clone());
                (session, false)
            }
        };
        drop(sessions);
        let (kicked, resend) = session.attach(connection_id, send_window, request.device.clone());
        if session.is_persistent() {
            session.save();
        } else if session_present {
            // It was persistent and now expires at disconnect: forget the stored copy.
            let _ = self.store.remove_session(&session.client_id);
        }
        Ok(Connected {
            session,
            session_present,
            assigned_client_id: assigned,
            connection_id,
            kicked,
            resend,
            session_expiry_secs: expiry,
        })
    }

    /// Single sign-on: asks every other connection of `user` to close
    /// ([`CloseReason::SignedInElsewhere`]); with `same_device_only`, only
    /// those that signed in with `device` (none counts as a kind of its
    /// own). Returns how many were asked.
    /// Scans the sessions map: `auth.single_session` is opt-in, and a scan
    /// is cheaper than keeping a second index in step (measure before a
    /// deployment with 100k+ sessions and connect storms turns it on).
    pub fn sign_out_others(
        &self,
        user: &str,
        same_device_only: bool,
        device: Option<&str>,
        keep_connection: u64,
    ) -> usize {
        let sessions: Vec<Arc<Session>> =
            self.sessions.lock().values().filter(|s| s.user.as_deref() == Some(user)).cloned().collect();
        let keep = |d: Option<&str>| same_device_only && d != device;
        sessions.iter().filter(|s| s.kick_unless(keep_connection, keep, CloseReason::SignedInElsewhere)).count()
    }

    /// A connection ended. Publishes or schedules the will, and ends the
    /// session now (expiry 0) or schedules its expiry.
    pub fn disconnected(
        self: &Arc<Self>,
        session: &Arc<Session>,
        connection_id: u64,
        will: Option<LastWill>,
        will_action: WillAction,
    ) {
        let was_owner = session.detach(connection_id);
        let generation = session.generation();
        if let (Some(will), WillAction::Publish) = (will, will_action) {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            let expiry = session.expiry_secs();
            if delay == 0 || (was_owner && expiry == 0) {
                // The will fires when the delay passes or the session ends,
                // whichever is first ([MQTT-3.1.3-9]).
                self.publish_will(session, will);
            } else {
                let broker = Arc::downgrade(self);
                let session = session.clone();
                let wait = Duration::from_secs(u64::from(delay.min(expiry)));
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(broker) = broker.upgrade() {
                        // A reconnect before the delay bumps the generation and cancels the will.
                        if session.generation() == generation && !session.is_connected() {
                            broker.publish_will(&session, will);
                        }
                    }
                });
            }
        }
        if !was_owner {
            return; // Taken over: the session lives on with its new connection.
        }
        let expiry = session.expiry_secs();
        if expiry == 0 {
            let mut sessions = self.sessions.lock();
            if sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
                self.discard_session_locked(&mut sessions, session);
            }
        } else {
            session.save();
            self.schedule_expiry(session, generation);
        }
    }

    fn publish_will(&self, session: &Session, will: LastWill) {
        let Ok(topic) = TopicName::new(&will.topic) else { return };
        let props = will.properties;
        let message = Message {
            id: 0,
            timestamp_ms: 0,
            topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            expires_at_ms: props.message_expiry_interval.map(|s| now_ms() + u64::from(s) * 1000),
            properties: MessageProperties {
                payload_format_indicator: props.payload_format_indicator,
                content_type: props.content_type,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data,
                user_properties: props.user_properties,
            },
            publisher: Some(session.client_id.clone()),
            wire: Default::default(),
            handling: Handling::default(),
        };
        tracing::debug!(client_id = %session.client_id, topic = %message.topic, "publishing will");
        self.publish(message);
    }

    fn schedule_expiry(self: &Arc<Self>, session: &Arc<Session>, generation: u64) {
        let expiry = session.expiry_secs();
        if expiry == NEVER_EXPIRES || expiry == 0 {
            return;
        }
        let elapsed = now_ms().saturating_sub(session.disconnected_at_ms().unwrap_or_else(now_ms));
        let wait = Duration::from_millis((u64::from(expiry) * 1000).saturating_sub(elapsed));
        let broker = Arc::downgrade(self);
        let session = session.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(broker) = broker.upgrade() else { return };
            let mut sessions = broker.sessions.lock();
            let still_ours = sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, &session));
            if still_ours && session.generation() == generation && !session.is_connected() {
                tracing::debug!(client_id = %session.client_id, "session expired");
                broker.discard_session_locked(&mut sessions, &session);
            }
        });
    }

    /// Removes a session, its subscriptions and its stored state.
    fn discard_session_locked(&self, sessions: &mut HashMap<Arc<str>, Arc<Session>>, session: &Arc<Session>) {
        if sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            sessions.remove(&session.client_id);
        }
        let mut tree = self.subscriptions.write();
        for (filter, _) in session.subscriptions() {
            if let Ok(parsed) = parse_subscription(&filter) {
                remove_subscription(&mut tree, session, parsed.share_group.as_deref(), &parsed.filter);
            }
            self.classes.viewer_delta(&filter, -1);
        }
        drop(tree);
        self.classes.forget_sender(&session.client_id);
        if let Err(e) = self.store.remove_session(&session.client_id) {
            tracing::error!(client_id = %session.client_id, error = %e, "cannot remove stored session");
        }
    }

    /// The session of `client_id`, connected or not.
    pub fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// Number of known sessions (connected or not).
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    // ---- subscribe / unsubscribe -----------------------------------------

    /// Adds or replaces one subscription and queues the retained messages it
    /// asks for. Returns the granted QoS as a reason code, or a failure code.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> Result<u8, TopicError> {
        let parsed = parse_subscription(filter)?;
        let record = SubscriptionRecord { options, identifier };
        let existed = session.add_subscription(filter, record.clone()).is_some();
        if !existed {
            self.classes.viewer_delta(filter, 1);
        }
        {
            let mut tree = self.subscriptions.write();
            insert_subscription(&mut tree, session, parsed.share_group.as_deref(), &parsed.filter, &record);
        }
        session.save();
        // Retained messages are not sent to shared subscriptions ([MQTT-3.8.4-?], as
        // Mosquitto and EMQX do); retain handling 1 sends them only for a new subscription.
        let send_retained = parsed.share_group.is_none()
            && match options.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
        if send_retained {
            let now = now_ms();
            let matching: Vec<Arc<Message>> = self
                .retained
                .read()
                .values()
                .filter(|m| parsed.filter.matches(&m.topic) && !m.is_expired(now))
                .cloned()
                .collect();
            for message in matching {
                let qos = message.qos.min(options.qos);
                session.enqueue(Delivery {
                    message,
                    qos,
                    retain: true,
                    subscription_ids: identifier.into_iter().collect(),
                    seq: None,
                });
            }
        }
        Ok(options.qos as u8)
    }

    /// Removes one subscription. Returns whether it existed.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> bool {
        if session.remove_subscription(filter).is_none() {
            return false;
        }
        self.classes.viewer_delta(filter, -1);
        if let Ok(parsed) = parse_subscription(filter) {
            let mut tree = self.subscriptions.write();
            remove_subscription(&mut tree, session, parsed.share_group.as_deref(), &parsed.filter);
        }
        session.save();
        true
    }

    // ---- publish ---------------------------------------------------------

    /// Publishes for a client and says what its acknowledgement should be,
    /// after waiting for durability when the message was stored. Every
    /// transport acknowledges through this.
    pub async fn publish_acknowledged(&self, message: Message) -> Ack {
        let outcome = self.publish_paced(message).await;
        if let Some(refusal) = outcome.refused {
            return Ack::Refused(refusal);
        }
        if outcome.must_sync {
            if let Err(e) = self.sync().await {
                tracing::error!(error = %e, "store flush failed; refusing to acknowledge as success");
                return Ack::StoreFailed;
            }
        }
        Ack::Accepted { matched: outcome.deliveries > 0 || outcome.shed }
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

    /// Stamps the message with its id and time, stores it if retained, then
    /// routes it to every matching subscription. The one routing seam: a
    /// cluster backplane hooks in here.
    pub fn publish(&self, mut message: Message) -> PublishOutcome {
        let stripe = {
            static STRIPE_HASH: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
            let hash = STRIPE_HASH.get_or_init(ahash::RandomState::new).hash_one(message.topic.as_str());
            &self.topic_order[hash as usize % self.topic_order.len()]
        };
        let mut outcome = PublishOutcome::default();
        let now = now_ms();
        let history = match self.classes.admit(&mut message, now) {
            class_runtime::Admission::Publish { history } => history,
            class_runtime::Admission::Shed => {
                outcome.shed = true;
                return outcome;
            }
            class_runtime::Admission::Refused(refusal) => {
                outcome.refused = Some(refusal);
                return outcome;
            }
        };
        let _in_order = stripe.lock();
        message.id = self.next_message_id.fetch_add(1, Ordering::Relaxed);
        message.timestamp_ms = now;
        let message = Arc::new(message);
        if let Some(rule) = history {
            let not_before = rule.max_age_secs.map_or(0, |s| now.saturating_sub(s * 1000));
            match self.store.append_history(&message.to_stored(), rule.keep, not_before) {
                Ok(()) => outcome.must_sync |= message.qos > QoS::AtMostOnce,
                Err(e) => tracing::error!(topic = %message.topic, error = %e, "cannot store history"),
            }
        }
        if message.retain {
            outcome.must_sync |= self.retain(&message);
        }
        self.route(&message, &mut outcome);
        outcome
    }

    /// Sets, replaces or clears (empty payload) the retained message of a topic.
    /// Returns whether a store write must be flushed before acknowledging.
    fn retain(&self, message: &Arc<Message>) -> bool {
        let result = if message.payload.is_empty() {
            self.retained.write().remove(&message.topic);
            self.store.set_retained(message.topic.as_str(), None)
        } else {
            self.retained.write().insert(message.topic.clone(), message.clone());
            self.store.set_retained(message.topic.as_str(), Some(&message.to_stored()))
        };
        if let Err(e) = result {
            tracing::error!(topic = %message.topic, error = %e, "cannot store retained message");
            return false;
        }
        message.qos > QoS::AtMostOnce
    }

    fn route(&self, message: &Arc<Message>, outcome: &mut PublishOutcome) {
        // Deliver while holding the tree's read lock (the lock order allows
        // session locks inside it): no target list, no reference-count
        // traffic, one pass. Readers never block each other; only
        // (un)subscribes wait.
        let mut duplicates: Vec<(Arc<Session>, Delivery)> = Vec::new();
        let (mut attempts, mut full) = (0usize, 0usize);
        let mut congested: Option<Arc<Session>> = None;
        let now = clock::coarse_now_ms();
        let tree = self.subscriptions.read();
        tree.for_each_match(&message.topic, |_key, entry| {
            let sub = match entry {
                SubscriptionEntry::Client(sub) => {
                    if sub.options.no_local && message.publisher.as_deref() == Some(&*sub.session.client_id) {
                        return;
                    }
                    sub
                }
                SubscriptionEntry::Shared { members, next } => match pick_shared_member(members, next) {
                    Some(sub) => sub,
                    None => return,
                },
            };
            let delivery = Delivery {
                message: message.clone(),
                qos: message.qos.min(sub.options.qos),
                retain: sub.options.retain_as_published && message.retain,
                subscription_ids: sub.identifier.into_iter().collect(),
                seq: None,
            };
            // A client with several matching subscriptions gets one copy
            // ([MQTT-3.3.4-3..5]); the rare second match is merged below.
            if !sub.session.first_match_of(message.id) {
                duplicates.push((sub.session.clone(), delivery));
                return;
            }
            attempts += 1;
            match sub.session.enqueue(delivery) {
                Enqueued::Queued { stored } => {
                    outcome.deliveries += 1;
                    outcome.must_sync |= stored;
                }
                Enqueued::Full if sub.session.is_draining(now, STALLED_AFTER_MS) => {
                    full += 1;
                    if congested.is_none() {
                        congested = Some(sub.session.clone());
                    }
                }
                Enqueued::Full | Enqueued::Dropped => {}
            }
        });
        if full * 2 > attempts {
            outcome.congested = congested;
        }
        drop(tree);
        for (session, delivery) in duplicates {
            if let Some(Enqueued::Queued { stored }) = session.merge_duplicate(delivery) {
                outcome.deliveries += 1;
                outcome.must_sync |= stored;
            }
        }
    }

    /// Recent messages of a topic whose class keeps history, oldest first:
    /// those with an id above `after_id`, at most `limit` (0: the class's
    /// `history_messages`). Access is the caller's to check (the client
    /// core and the HTTP API do, with the subscribe rules).
    pub fn history(&self, topic: &str, after_id: u64, limit: usize) -> Result<Vec<Message>, HistoryError> {
        let topic = TopicName::new(topic).map_err(|_| HistoryError::InvalidTopic)?;
        let rule = self.classes.history_rule(&topic).ok_or(HistoryError::NotKept)?;
        let limit = if limit == 0 { rule.keep } else { limit.min(rule.keep) };
        let not_before = rule.max_age_secs.map_or(0, |s| now_ms().saturating_sub(s * 1000));
        let stored = self.store.load_history(topic.as_str(), after_id, limit, not_before).map_err(|e| {
            tracing::error!(%topic, error = %e, "cannot read history");
            HistoryError::StoreFailed
        })?;
        Ok(stored.into_iter().filter_map(|m| Message::from_stored(m).ok()).collect())
    }

    /// Live subscribers of a room (an exact filter of a `count_viewers` class).
    pub fn viewer_count(&self, filter: &str) -> usize {
        self.classes.viewer_count(filter)
    }

    /// The topic classes in force.
    pub fn classes(&self) -> &crate::classes::ClassSet {
        &self.classes.set
    }

    /// Messages shed by sampling and publishes refused by class limits so far.
    pub fn class_counters(&self) -> (u64, u64) {
        (self.classes.shed.load(Ordering::Relaxed), self.classes.refused.load(Ordering::Relaxed))
    }

    /// Once a second: publish changed viewer counts as retained
    /// `$SYS/viewers/{filter}` messages, sweep expired retained messages
    /// (location TTLs), forget quiet rooms' samplers.
    fn start_housekeeping(self: &Arc<Self>) {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(broker) = broker.upgrade() else { return };
                let now = now_ms();
                for (filter, count) in broker.classes.take_changed_viewer_counts() {
                    let Ok(topic) = TopicName::new(&format!("$SYS/viewers/{filter}")) else { continue };
                    let payload = if count == 0 { bytes::Bytes::new() } else { count.to_string().into() };
                    broker.publish(Message::new(topic, payload, QoS::AtMostOnce, true));
                }
                broker.sweep_expired_retained(now);
                broker.classes.forget_quiet_rooms(now);
            }
        });
    }

    /// Removes retained messages whose expiry (MQTT 5 message expiry, or a
    /// class's retained TTL) has passed, from memory and from the store.
    fn sweep_expired_retained(&self, now: u64) {
        let expired: Vec<TopicName> = {
            let retained = self.retained.read();
            retained.values().filter(|m| m.is_expired(now)).map(|m| m.topic.clone()).collect()
        };
        if expired.is_empty() {
            return;
        }
        let mut retained = self.retained.write();
        for topic in expired {
            // Re-check under the write lock: a newer message may have replaced it.
            if retained.get(&topic).is_some_and(|m| m.is_expired(now)) {
                retained.remove(&topic);
                let _ = self.store.set_retained(topic.as_str(), None);
            }
        }
    }

    /// Number of retained messages held.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }
}

/// Round-robin over the group, preferring connected members; a group whose
/// members are all offline still queues for one of them (persistent sessions).
fn pick_shared_member<'a>(members: &'a [Subscriber], next: &AtomicUsize) -> Option<&'a Subscriber> {
    if members.is_empty() {
        return None;
    }
    let start = next.fetch_add(1, Ordering::Relaxed);
    (0..members.len())
        .map(|k| &members[(start + k) % members.len()])
        .find(|m| m.session.is_connected())
        .or_else(|| members.get(start % members.len()))
}

fn insert_subscription(
    tree: &mut SubscriptionTree<SubscriberKey, SubscriptionEntry>,
    session: &Arc<Session>,
    share_group: Option<&str>,
    filter: &TopicFilter,
    record: &SubscriptionRecord,
) {
    let subscriber = Subscriber { session: session.clone(), options: record.options, identifier: record.identifier };
    match share_group {
        None => {
            tree.insert(
                filter,
                SubscriberKey::Client(session.client_id.clone()),
                SubscriptionEntry::Client(subscriber),
            );
        }
        Some(group) => {
            let key = SubscriberKey::SharedGroup(Arc::from(group));
            if let Some(SubscriptionEntry::Shared { members, .. }) = tree.get_mut(filter, &key) {
                members.retain(|m| m.session.client_id != session.client_id);
                members.push(subscriber);
            } else {
                tree.insert(
                    filter,
                    key,
                    SubscriptionEntry::Shared { members: vec![subscriber], next: AtomicUsize::new(0) },
                );
            }
        }
    }
}

fn remove_subscription(
    tree: &mut SubscriptionTree<SubscriberKey, SubscriptionEntry>,
    session: &Arc<Session>,
    share_group: Option<&str>,
    filter: &TopicFilter,
) {
    match share_group {
        None => {
            let key = SubscriberKey::Client(session.client_id.clone());
            // Only remove the entry if it belongs to this session object (a
            // newer session with the same client id may have replaced it).
            if let Some(SubscriptionEntry::Client(sub)) = tree.get(filter, &key) {
                if Arc::ptr_eq(&sub.session, session) {
                    tree.remove(filter, &key);
                }
            }
        }
        Some(group) => {
            let key = SubscriberKey::SharedGroup(Arc::from(group));
            let now_empty = match tree.get_mut(filter, &key) {
                Some(SubscriptionEntry::Shared { members, .. }) => {
                    members.retain(|m| !Arc::ptr_eq(&m.session, session));
                    members.is_empty()
                }
                _ => false,
            };
            if now_empty {
                tree.remove(filter, &key);
            }
        }
    }
}

fn session_has_expired(expiry_secs: u32, disconnected_at_ms: u64, now_ms: u64) -> bool {
    expiry_secs != NEVER_EXPIRES && disconnected_at_ms + u64::from(expiry_secs) * 1000 <= now_ms
}
