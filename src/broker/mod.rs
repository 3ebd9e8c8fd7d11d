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
//! that every message would queue behind. [`Broker::publish`] is
//! [`Broker::admit`] then [`Broker::route_local`]: the seam where a
//! [`Backplane`] (the NATS cluster, plugged in by the server) forwards
//! messages to other nodes. The broker owns its seams: it defines
//! [`Backplane`] and [`DeliveryWatch`] (`backplane.rs`) and never names the
//! modules that implement them.
//!
//! Files by concern: `sessions.rs` (connect, takeover, single sign-on,
//! disconnect, expiry), `subscriptions.rs` (the tree's entries, retained on
//! subscribe), `routing.rs` (admit, route, acknowledgements, pacing,
//! history), `housekeeping.rs` (the once-a-second chores).

pub mod backplane;
pub mod class_runtime;
mod filters;
mod housekeeping;
pub mod message;
mod operators;
pub mod outbox;
mod publish_rules;
mod retained;
mod routing;
mod run;
pub mod session;
mod sessions;
pub mod stats;
mod subscriptions;

pub use crate::clock::now_ms;
pub use backplane::{Backplane, BackplaneAck, DeliveryWatch};
pub use class_runtime::Refusal;
pub use filters::{in_holes, Holes, HolesMemo};
pub use message::{is_reserved_property, Delivery, Handling, Message, MessageProperties};
pub use session::{Attachment, Enqueued, Outgoing, Session, SessionLoad, SubscriptionRecord, NEVER_EXPIRES};

pub use operators::{Closed, SessionSummary};
pub use publish_rules::Will;
pub use routing::AdmittedPublish;
use sessions::session_has_expired;
pub use sessions::HandedOver;
use subscriptions::insert_subscription;

use crate::auth::Security;
use crate::config::Config;
pub use crate::model::WillAction;
use crate::model::{reason, CloseReason, QoS, SubscriptionOptions};
use crate::store::{GroupCommit, Store, StoreError};
use crate::topic::{parse_subscription, SubscriptionFilter, SubscriptionTree, TopicFilter, TopicName};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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
    /// The MQTT 5 subscription identifier (never 0). Four bytes, not an
    /// `Option<u32>`'s eight: with `holes` added, an entry stays the 24
    /// bytes it was, and fan-out walks thousands of them.
    pub identifier: Option<std::num::NonZeroU32>,
    /// Topics this subscription must not deliver (deny rules it overlaps).
    pub holes: Holes,
}

impl Subscriber {
    /// Whether this subscription leaves `topic` out (a hole the rules cut).
    pub(crate) fn excludes(&self, topic: &TopicName) -> bool {
        in_holes(&self.holes, topic)
    }

    /// This subscription's copy of `message`: QoS capped by the
    /// subscription, retain flag as its option says, its identifier.
    pub(crate) fn delivery_of(&self, message: &Arc<Message>) -> Delivery {
        Delivery {
            message: message.clone(),
            qos: message.qos.min(self.options.qos),
            retain: self.options.retain_as_published && message.retain,
            subscription_ids: self.identifier.map(std::num::NonZeroU32::get).into_iter().collect(),
            seq: None,
        }
    }
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
    /// Who connects, for operators.
    pub attachment: Attachment,
}

/// Why [`Broker::connect`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectRefused {
    /// The client id names a session of another user: it is left untouched.
    SessionOfAnotherUser,
    /// `session.max_sessions` sessions exist already.
    TooManySessions,
}

pub struct Connected {
    pub session: Arc<Session>,
    pub session_present: bool,
    /// Set when the broker chose the client id.
    pub assigned_client_id: Option<String>,
    /// Identifies this attachment; pass it back to [`Broker::disconnected`].
    pub connection_id: u64,
    /// Unacknowledged deliveries from before, to resend first (DUP set).
    pub resend: Vec<Outgoing>,
    /// Session expiry after applying the configured cap.
    pub session_expiry_secs: u32,
}

/// Which page of a topic's history: after `after_id` (the newest `limit`
/// above it: catching up after a reconnect), before `before_id` (the newest
/// `limit` below it: "load older"), or the latest page (both 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub after_id: u64,
    pub before_id: u64,
    /// 0: the class's `history_messages`; never more than [`HISTORY_PAGE_MAX`].
    pub limit: usize,
}

/// Messages one history request returns at most.
pub const HISTORY_PAGE_MAX: usize = 200;

/// One page of history, oldest first, and whether more lie beyond it (older
/// ones for a `before` or latest page, skipped newer-than-`after` ones for
/// an `after` page that did not reach back to `after_id`).
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub has_more: bool,
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

/// Low bits of a message id that name the cluster node that gave it.
pub const ID_TAG_BITS: u32 = 10;
const ID_TAG_MASK: u64 = (1 << ID_TAG_BITS) - 1;
const NO_ID_TAG: u64 = u64::MAX;

/// How a publish went, for the publisher's acknowledgement and pacing.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    /// Subscriptions that received a copy.
    pub deliveries: usize,
    /// A copy was written to the store: flush before acknowledging.
    pub must_sync: bool,
    /// A copy owed to the store (a persistent session's delivery, history,
    /// a retained message) could not be written: not durable, so a QoS 1/2
    /// publisher must not be acknowledged with success.
    pub store_failed: bool,
    /// Most targets' outboxes were full while their writers are draining:
    /// one of them, for the publisher to wait on (see [`Broker::publish_paced`]).
    pub congested: Option<Arc<Session>>,
    /// The topic's class refused the message (nothing was published).
    pub refused: Option<Refusal>,
    /// The topic's class shed the message (a sampled room): accepted, not delivered.
    pub shed: bool,
    /// The id the message was given (0 when it was refused or shed).
    pub message_id: u64,
    /// In a cluster: the backplane's answer for a QoS 1/2 message (its
    /// durable store holds it), which the publisher's acknowledgement waits for.
    pub backplane_ack: Option<BackplaneAck>,
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
    /// In a cluster, the backplane's durable store did not hold the message
    /// in time (JetStream unreachable or slow): not acknowledged (0x80).
    NotReplicated,
    Refused(Refusal),
}

/// A writer that took nothing for this long is stalled, not slow: its full
/// outbox loses messages (its policy) but never holds publishers back.
const STALLED_AFTER_MS: u64 = 50;
/// A writer with sendable deliveries, no pending wake and no blocked write
/// that took nothing for this long has lost its wake-up (the stall guard).
const WRITER_STALLED_AFTER_MS: u64 = 2_000;
/// Number of topic-order locks (see `Broker::topic_order`).
const TOPIC_ORDER_STRIPES: usize = 256;

/// Longest a publisher waits for one congested outbox to drain.
const MAX_PACING_WAIT: Duration = Duration::from_millis(50);

pub struct Broker {
    config: Config,
    /// Hole sets in use, by their filters, so that subscriptions under the
    /// same rules share one (a fan-out then checks it once per message:
    /// `filters::HolesMemo`). Lock map: docs/architecture.md, "Locks".
    interned_holes: Mutex<HashMap<Vec<TopicFilter>, std::sync::Weak<Vec<TopicFilter>>>>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    subscriptions: RwLock<SubscriptionTree<SubscriberKey, SubscriptionEntry>>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    retained: RwLock<retained::RetainedMap>,
    /// Traffic counters (`/metrics`, `$SYS`).
    pub stats: stats::Stats,
    /// When the broker started (uptime).
    pub started: std::time::Instant,
    /// A history sweep is running (at most one at a time).
    history_sweep_running: std::sync::atomic::AtomicBool,
    /// Moving averages behind `$SYS/broker/load/...`.
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    sys_load: Mutex<stats::LoadAverages>,
    /// The delivery watch (the offline push, when `[push] webhook` is set),
    /// plugged in by the server before clients connect.
    delivery_watch: std::sync::OnceLock<Arc<dyn DeliveryWatch>>,
    /// The backplane to other nodes, when `[cluster]` is set (plugged in by
    /// the server at start).
    backplane: std::sync::OnceLock<Arc<dyn Backplane>>,
    watch_sweep_running: std::sync::atomic::AtomicBool,
    store: Arc<dyn Store>,
    commit: GroupCommit,
    next_connection_id: AtomicU64,
    /// Next message id: starts at `now_ms << 16` (and above every stored id),
    /// so ids keep increasing across restarts unless the clock goes back or a
    /// run averaged more than 65,536 messages per millisecond.
    next_message_id: AtomicU64,
    /// In a cluster, this node's tag in the low [`ID_TAG_BITS`] bits of every
    /// id it gives (ids then step by `1 << ID_TAG_BITS`), so that two nodes
    /// never give the same id; [`NO_ID_TAG`] on a single node.
    id_tag: AtomicU64,
    /// Publishes to one topic take one of these while they get their id and
    /// are routed, so every subscriber sees a topic's messages in id order
    /// (chat rooms are ordered; starling.v1 clients drop duplicates by id).
    /// Striped by topic hash: different topics rarely wait for each other.
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    topic_order: Box<[Mutex<()>]>,
    classes: class_runtime::ClassRuntime,
    /// Authentication, access control and single sign-on (reloadable).
    security: Security,
    /// Session timer tasks alive (see `spawn_session_timer`).
    pending_timers: Arc<AtomicUsize>,
    /// When a message last went to many subscribers (coarse Unix ms): their
    /// writers then wait one poll of the kernel before writing, to carry
    /// more per write (`Broker::fanning_out`).
    last_fan_out_ms: AtomicU64,
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
            delivery_watch: Default::default(),
            watch_sweep_running: Default::default(),
            backplane: Default::default(),
            config,
            sessions: Mutex::new(HashMap::new()),
            interned_holes: Mutex::new(HashMap::new()),
            subscriptions: RwLock::new(SubscriptionTree::new()),
            retained: RwLock::new(retained::RetainedMap::default()),
            history_sweep_running: Default::default(),
            sys_load: Default::default(),
            stats: Default::default(),
            started: std::time::Instant::now(),
            store,
            commit,
            next_connection_id: AtomicU64::new(1),
            next_message_id: AtomicU64::new(now_ms() << 16),
            id_tag: AtomicU64::new(NO_ID_TAG),
            topic_order: (0..TOPIC_ORDER_STRIPES).map(|_| Mutex::new(())).collect(),
            classes: class_runtime::ClassRuntime::new(classes),
            security,
            pending_timers: Arc::new(AtomicUsize::new(0)),
            last_fan_out_ms: AtomicU64::new(0),
            shutdown,
        });
        broker.restore()?;
        broker.start_housekeeping();
        Ok(broker)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A new message id: above every id given or seen so far, and in a
    /// cluster carrying this node's tag.
    fn next_id(&self) -> u64 {
        match self.id_tag.load(Ordering::Relaxed) {
            NO_ID_TAG => self.next_message_id.fetch_add(1, Ordering::Relaxed),
            tag => (self.next_message_id.fetch_add(1 << ID_TAG_BITS, Ordering::Relaxed) & !ID_TAG_MASK) | tag,
        }
    }

    /// Every id given from now on is above `id` (a stored id, or one another
    /// node gave: a Lamport clock).
    fn ids_past(&self, id: u64) {
        self.next_message_id.fetch_max((id | ID_TAG_MASK) + 1, Ordering::Relaxed);
    }

    /// Whether this node gave `id` (in a cluster: the id carries its tag).
    pub fn gave_id(&self, id: u64) -> bool {
        let tag = self.id_tag.load(Ordering::Relaxed);
        tag != NO_ID_TAG && id & ID_TAG_MASK == tag
    }

    /// Sets this node's id tag (below `1 << ID_TAG_BITS`; the cluster
    /// claims one no other node holds).
    pub fn set_id_tag(&self, tag: u64) {
        // Ids step by 1 << ID_TAG_BITS now: start them higher, so that they
        // keep ahead of the clock up to a million messages a second.
        self.next_message_id.fetch_max(now_ms() << (16 + ID_TAG_BITS / 2), Ordering::Relaxed);
        self.id_tag.store(tag & ID_TAG_MASK, Ordering::Relaxed);
    }

    /// The backplane to other nodes, when one is plugged in.
    pub fn backplane(&self) -> Option<&Arc<dyn Backplane>> {
        self.backplane.get()
    }

    /// Plugs in the backplane (once, before clients connect) and declares
    /// the interest of every session restored from the store.
    pub fn attach_backplane(&self, backplane: Arc<dyn Backplane>) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            for (filter, _) in session.subscriptions() {
                backplane.interest(&filter, 1);
            }
        }
        let _ = self.backplane.set(backplane);
    }

    /// Plugs in the delivery watch (once, before clients connect).
    pub fn attach_delivery_watch(&self, watch: Arc<dyn DeliveryWatch>) {
        let _ = self.delivery_watch.set(watch);
    }

    /// A session added (+1) or removed (-1) its subscription to `filter`:
    /// viewer counts and the backplane's interest follow.
    fn interest_changed(&self, filter: &str, delta: isize) {
        self.classes.viewer_delta(filter, delta);
        if let Some(backplane) = self.backplane.get() {
            backplane.interest(filter, delta);
        }
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
    /// How the store's group-commit flushes go (for `/metrics`).
    pub fn commit_metrics(&self) -> &crate::store::CommitMetrics {
        self.commit.metrics()
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection to close (MQTT 5: DISCONNECT 0x8B): the flag
    /// first (a connection attaching after the sweep sees it), then a kick
    /// to every attached one, which is what wakes an idle connection.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            session.ask_to_close(CloseReason::ServerShutdown);
        }
    }

    /// The connections' once-a-second checks, in one pass over the sessions
    /// (from housekeeping): closes the connections silent past their
    /// keep-alive or whose credentials expired, one sweep instead of a timer
    /// per connection (an idle connection's task then waits on its socket,
    /// its outbox and its kick only); and the stall guard, which wakes every
    /// attached writer that stopped with deliveries it could send, counting
    /// it in `starling_writer_stalls_total` and logging it. A correct writer
    /// never needs the guard; it is there so a lost wake-up costs a second,
    /// not the connection, and shows up in metrics and tests.
    pub fn check_connections(&self, now_ms: u64) {
        let mut overdue: Vec<(Arc<Session>, CloseReason)> = Vec::new();
        let mut stall_suspects: Vec<Arc<Session>> = Vec::new();
        for session in self.sessions.lock().values() {
            if let Some(reason) = session.overdue(now_ms) {
                overdue.push((session.clone(), reason));
            } else if session.may_be_stalled(now_ms, WRITER_STALLED_AFTER_MS) {
                stall_suspects.push(session.clone());
            }
        }
        for (session, reason) in overdue {
            session.ask_to_close(reason);
        }
        for session in stall_suspects {
            if session.wake_if_stalled(now_ms, WRITER_STALLED_AFTER_MS) {
                self.stats.writer_stalled();
                tracing::warn!(client_id = %session.client_id, "writer stalled with deliveries waiting; woken");
            }
        }
    }

    /// Saves every persistent session and flushes the store. Called after
    /// connections have closed.
    pub fn flush_all(&self) -> Result<(), StoreError> {
        let sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            session.save();
            // Expiry and will timers hold their session (and so the store):
            // the broker is stopping, the next start schedules the expiry
            // again. A will still waiting for its delay is not stored, so it
            // is not sent after a restart (docs/architecture.md, "Wills").
            let _not_stored = session.cancel_timers();
        }
        self.store.flush()
    }

    fn restore(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = now_ms();
        let mut retained = self.retained.write();
        for stored in self.store.load_retained()? {
            self.ids_past(stored.id);
            match Message::from_stored(stored) {
                Ok(m) if !m.is_expired(now) => {
                    retained.insert(Arc::new(m));
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
            // At most one queue's worth: what is beyond it stays on disk and
            // comes after the client has taken these.
            let limit = (max_queued, self.config.session.max_queued_bytes);
            for d in self.store.load_deliveries(&stored.client_id, limit.0, limit.1)? {
                self.ids_past(d.message.id);
                match Message::from_stored(d.message.clone()) {
                    Ok(m) => deliveries.push((d, Arc::new(m))),
                    Err(e) => {
                        tracing::warn!(client_id = %stored.client_id, error = %e, "skipping corrupt queued message")
                    }
                }
            }
            let session = Arc::new(Session::restore(&stored, deliveries, max_queued, self.store.clone(), now));
            session.set_max_queued_bytes(self.config.session.max_queued_bytes);
            {
                // Holes from the rules for the session's user until its
                // client is back (`holes_before_resume`).
                let kept: Vec<(SubscriptionFilter, SubscriptionRecord)> = session
                    .subscriptions()
                    .into_iter()
                    .filter_map(|(filter, record)| parse_subscription(&filter).ok().map(|p| (p, record)))
                    .map(|(parsed, record)| {
                        let holes = self.holes_before_resume(&session, &parsed);
                        session.add_subscription(
                            &parsed.to_string(),
                            SubscriptionRecord { holes: holes.clone(), ..record.clone() },
                        );
                        (parsed, SubscriptionRecord { holes, ..record })
                    })
                    .collect();
                let mut tree = self.subscriptions.write();
                for (parsed, record) in kept {
                    insert_subscription(&mut tree, &session, parsed.share_group.as_deref(), &parsed.filter, &record);
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
}

#[cfg(test)]
mod id_tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_cluster_node_s_ids_carry_its_tag_and_go_past_every_id_it_saw() {
        let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new())).unwrap();
        let single = (broker.next_id(), broker.next_id());
        assert_eq!(single.1, single.0 + 1, "a single node counts up by one");
        broker.set_id_tag(5);
        let ids: Vec<u64> = (0..100).map(|_| broker.next_id()).collect();
        assert!(ids.iter().all(|id| id & ID_TAG_MASK == 5), "every id names the node");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "and they increase");
        assert!(ids[0] > single.1);
        // Another node (tag 700) gave an id far ahead: the next ids go past it.
        let remote = (ids[99] + (1 << 30)) & !ID_TAG_MASK | 700;
        broker.ids_past(remote);
        let next = broker.next_id();
        assert!(next > remote && next & ID_TAG_MASK == 5);
    }
}

#[cfg(test)]
mod size_tests {
    /// Fan-out walks the tree's entries, thousands per message: keep one
    /// subscriber within 24 bytes (holes, issue 24 item 7, fit in the
    /// room an `Option<u32>` identifier wasted).
    #[test]
    fn a_subscriber_entry_stays_24_bytes() {
        assert_eq!(std::mem::size_of::<super::Subscriber>(), 24);
    }
}
