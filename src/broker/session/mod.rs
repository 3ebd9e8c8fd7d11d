//! A client's session: what outlives one network connection.
//!
//! Owns: the session's subscriptions (as the client sent them), its outbox of
//! pending deliveries, outbound QoS 1/2 messages in flight (packet ids,
//! retransmission on resume), inbound QoS 2 packet ids awaiting PUBREL, and
//! the stored copies of QoS 1/2 deliveries of a persistent session.
//! Must never: hold its lock across an `.await` (it is a `parking_lot`
//! mutex because every critical section is short and synchronous), or take
//! the subscription-tree lock while holding its own (lock order: sessions map
//! → subscription tree → session).

use super::filters::SessionFilters;
use super::message::{Delivery, Message};
use super::outbox::Outbox;
use super::publish_rules::Will;
use crate::auth::Transport;
use crate::classes::policy::TokenBucket;
use crate::model::CloseReason;
use crate::store::{Store, StoredDelivery, StoredSession};
use crate::topic::ProcessKeys;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

mod acks;
mod liveness;
mod outbound;
mod owed;
#[cfg(test)]
mod test_support;
pub use outbound::{Drained, Enqueued};

/// Session expiry meaning "never expires" (MQTT 3.1.1 clean session = 0).
pub const NEVER_EXPIRES: u32 = u32::MAX;

pub use super::filters::SubscriptionRecord;

/// What the connection must send next.
#[derive(Debug)]
pub enum Outgoing {
    Publish { packet_id: u16, dup: bool, delivery: Delivery },
    PubRel { packet_id: u16 },
}

#[derive(Debug)]
enum Inflight {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent(Delivery),
    /// PUBREL sent, waiting for PUBCOMP. The stored copy (if any) is removed
    /// only at PUBCOMP, so a crash in between redelivers rather than loses.
    Released { seq: Option<NonZeroU64> },
}

/// The QoS 1/2 deliveries sent and not yet acknowledged, in send order.
/// Boxed on first use: a QoS 0 subscriber never has one, and this is in
/// every session (8 bytes instead of an empty `VecDeque`'s 32).
#[derive(Default)]
#[allow(clippy::box_collection)]
struct InflightWindow(Option<Box<VecDeque<(u16, Inflight)>>>);

/// What an unused window reads as.
static NO_INFLIGHT: VecDeque<(u16, Inflight)> = VecDeque::new();

impl std::ops::Deref for InflightWindow {
    type Target = VecDeque<(u16, Inflight)>;
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().unwrap_or(&NO_INFLIGHT)
    }
}

impl InflightWindow {
    fn push_back(&mut self, entry: (u16, Inflight)) {
        self.0.get_or_insert_with(Box::default).push_back(entry);
    }

    fn remove(&mut self, pos: usize) -> Option<(u16, Inflight)> {
        self.0.as_mut()?.remove(pos)
    }

    fn entry_mut(&mut self, pos: usize) -> &mut (u16, Inflight) {
        &mut self.0.as_mut().expect("a position in the window")[pos]
    }
}

/// What a session holds undelivered (see [`Session::load`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLoad {
    pub queued: usize,
    pub queued_bytes: usize,
    pub inflight: usize,
}

/// Who is attached to a session, for operators (the admin API, metrics).
/// Boxed in the session while connected, so offline sessions do not pay for it.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub transport: Transport,
    /// "3.1.1", "5", "starling.v1" or "bridge".
    pub protocol: &'static str,
    pub peer: Option<SocketAddr>,
    pub keep_alive_secs: u32,
    pub connected_at_ms: u64,
    /// Who the connection authenticated as: a reload checks the session's
    /// subscriptions against it (`Broker::recheck_connected`). `None` for
    /// the broker's own clients (bridges).
    pub identity: Option<Arc<crate::auth::Identity>>,
}

/// The connection currently attached to the session.
struct Owner {
    attachment: Box<Attachment>,
    connection_id: u64,
    /// The connection's task, woken when it must close (registered by its
    /// first idle wait, see `poll_close`). A slot here instead of a channel
    /// per connection: an idle connection's cost is multiplied by millions.
    waker: Option<std::task::Waker>,
    /// Why the connection was asked to close (shutdown, single sign-on, an
    /// operator, keep-alive); it stays the owner until it detaches.
    /// Boxed: rare, and a `CloseReason` is 32 bytes in every session.
    close_reason: Option<Box<CloseReason>>,
    /// The `device` the connection signed in with (single sign-on per device kind).
    device: Option<Arc<str>>,
}

pub struct Session {
    pub client_id: Arc<str>,
    /// The authenticated user the session belongs to (`None`: anonymous).
    /// Only a connection of the same user may resume or take it over.
    pub user: Option<Arc<str>>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    state: Mutex<SessionState>,
    /// Wakes the attached connection's task when the outbox becomes
    /// non-empty: a waker slot and a flag, not a waiter list, so the task's
    /// idle wait holds no future for it (see `poll_deliveries`).
    wake: futures_util::task::AtomicWaker,
    wake_pending: AtomicBool,
    /// The attached connection's id (0: none) and whether it was asked to
    /// close: what its idle wait checks without the lock (`poll_close`).
    /// Written under the state lock.
    owner_id: AtomicU64,
    close_asked: AtomicBool,
    /// The attached writer waits for the socket (see `set_writer_blocked`).
    writer_blocked: AtomicBool,
    /// While attached: when the connection must close unless it sends
    /// something (keep-alive), and when its credentials expire (Unix ms, 0:
    /// never). The broker's once-a-second sweep closes it then, so idle
    /// connections hold no timer each (`Broker::check_connections`).
    silent_deadline_ms: AtomicU64,
    credentials_expire_ms: AtomicU64,
    store: Arc<dyn Store>,
    /// Held while the writes owed to the store are written, so they reach
    /// it in the order they were decided (`owed.rs`). Taken before the
    /// state lock, never under it.
    store_order: Mutex<()>,
    /// Notified when a congested outbox has drained to half (publisher pacing).
    /// Made on first use: only a publisher that met a full outbox waits here.
    room: std::sync::OnceLock<Box<Notify>>,
    /// When the attached writer last took deliveries: tells a slow
    /// subscriber (draining, worth pacing publishers for) from a stalled
    /// one. Unix ms modulo 2^32, compared by wrapping difference (a 49-day
    /// wheel; windows are seconds), 0 for never: 4 bytes, which keeps the
    /// session inside its 384-byte allocation class (`tests/idle_memory.rs`).
    last_drain_ms: AtomicU32,
}

struct SessionState {
    expiry_secs: u32,
    /// A small array for a few filters, a map for many (see `SessionFilters`).
    subscriptions: SessionFilters,
    outbox: Outbox<Delivery>,
    inflight: InflightWindow,
    next_packet_id: u16,
    /// How many QoS 1/2 deliveries may be in flight: min(client's Receive
    /// Maximum, configured `max_inflight`).
    send_window: u16,
    /// Boxed on first use (most sessions never receive QoS 2): 8 bytes in
    /// every session instead of an empty set's 32.
    #[allow(clippy::box_collection)]
    incoming_qos2: Option<Box<HashSet<u16, ProcessKeys>>>,
    owner: Option<Owner>,
    /// Incremented on every attach, so timers (session expiry, will delay)
    /// started for one disconnect can tell the session has moved on.
    generation: u64,
    next_seq: u64,
    /// Id of the last message routed here: detects a second matching
    /// subscription of the same client without a per-publish set. Under
    /// the lock the enqueue takes anyway: no atomic of its own, and one
    /// cache line fewer per delivery at fan-out.
    last_routed: u64,
    /// Unix ms; 0 while connected (8 bytes, not an `Option`'s 16).
    disconnected_at_ms: u64,
    /// The outbox refused a message and has not yet drained to half.
    congested: bool,
    /// Per topic class (by index): this client's publish rate limiter.
    /// Boxed on first use (only publishers to rate-limited classes have one).
    #[allow(clippy::box_collection)]
    rate_buckets: Option<Box<HashMap<usize, TokenBucket, ProcessKeys>>>,
    /// Tasks sleeping for this session (will delay, expiry), cancelled on
    /// the next attach or when the session ends, and the will whose delay
    /// runs. Boxed on first use: only disconnected sessions have any.
    timers: Option<Box<Timers>>,
    /// Store writes decided under this lock, written after it (`owed.rs`).
    /// Boxed on first use: a clean session never owes any.
    owed: Option<Box<owed::Owed>>,
}

/// A disconnected session's pending business (see `SessionState::timers`).
#[derive(Default)]
struct Timers {
    tasks: Vec<tokio::task::AbortHandle>,
    /// The will waiting for its delay. It lives here, not in the timer's
    /// task, so that whichever comes first, the delay or the session's end,
    /// takes it and publishes it, exactly once ([MQTT-3.1.3-9]): when the two
    /// deadlines met, the expiry used to cancel the will's task and the will
    /// was lost (issue 23). A reconnect drops it unpublished.
    will: Option<Will>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("client_id", &self.client_id).finish()
    }
}

impl Session {
    pub fn new(
        client_id: Arc<str>,
        user: Option<Arc<str>>,
        expiry_secs: u32,
        max_queued: usize,
        store: Arc<dyn Store>,
    ) -> Session {
        Session {
            client_id,
            user,
            state: Mutex::new(SessionState {
                expiry_secs,
                subscriptions: SessionFilters::default(),
                outbox: Outbox::new(max_queued),
                rate_buckets: None,
                inflight: InflightWindow::default(),
                next_packet_id: 1,
                send_window: 1,
                incoming_qos2: None,
                owner: None,
                generation: 0,
                next_seq: 1,
                last_routed: 0,
                disconnected_at_ms: 0,
                congested: false,
                timers: None,
                owed: None,
            }),
            wake: futures_util::task::AtomicWaker::new(),
            wake_pending: AtomicBool::new(false),
            owner_id: AtomicU64::new(0),
            close_asked: AtomicBool::new(false),
            writer_blocked: AtomicBool::new(false),
            silent_deadline_ms: AtomicU64::new(0),
            credentials_expire_ms: AtomicU64::new(0),
            store,
            store_order: Mutex::new(()),
            room: std::sync::OnceLock::new(),
            last_drain_ms: AtomicU32::new(0),
        }
    }

    /// Rebuilds a persistent session from the store after a restart. Its
    /// queued deliveries go back into the outbox, oldest first. A record
    /// without a disconnect time counts as disconnected at `now_ms`.
    pub fn restore(
        stored: &StoredSession,
        deliveries: Vec<(StoredDelivery, Arc<Message>)>,
        max_queued: usize,
        store: Arc<dyn Store>,
        now_ms: u64,
    ) -> Session {
        let session = Session::new(
            Arc::from(stored.client_id.as_str()),
            stored.user.as_deref().map(Arc::from),
            stored.expiry_secs,
            max_queued,
            store,
        );
        {
            let mut st = session.state.lock();
            st.disconnected_at_ms = stored.disconnected_at_ms.unwrap_or(now_ms).max(1);
            for sub in &stored.subscriptions {
                st.subscriptions.insert(&sub.filter, SubscriptionRecord::from_stored(sub));
            }
            // Restored deliveries may exceed the configured capacity if it was
            // lowered; keep them all rather than lose acknowledged messages.
            for (d, message) in deliveries {
                st.next_seq = st.next_seq.max(d.seq + 1);
                st.outbox.push_unbounded(Delivery {
                    message,
                    qos: d.qos,
                    retain: d.retain,
                    subscription_ids: d.subscription_ids.into_iter().collect(),
                    // Stored sequence numbers start at 1 (`next_seq`).
                    seq: NonZeroU64::new(d.seq),
                });
            }
        }
        session
    }

    pub fn is_persistent(&self) -> bool {
        self.state.lock().expiry_secs > 0
    }

    pub fn expiry_secs(&self) -> u32 {
        self.state.lock().expiry_secs
    }

    pub fn set_expiry_secs(&self, secs: u32) {
        self.state.lock().expiry_secs = secs;
    }

    pub fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    pub fn is_connected(&self) -> bool {
        self.state.lock().owner.is_some()
    }

    /// The connection attached now, if any.
    pub fn attachment(&self) -> Option<Attachment> {
        self.state.lock().owner.as_ref().map(|o| (*o.attachment).clone())
    }

    /// Where connection `connection_id` came from and when (while it is
    /// still the one attached): for its close line in the log.
    pub fn peer_and_start_of(&self, connection_id: u64) -> Option<(Option<std::net::SocketAddr>, u64)> {
        let st = self.state.lock();
        let owner = st.owner.as_ref().filter(|o| o.connection_id == connection_id)?;
        Some((owner.attachment.peer, owner.attachment.connected_at_ms))
    }

    /// Asks the attached connection, if any, to close with `reason`; it
    /// stays the owner until it detaches, so the session ends the normal way.
    /// Returns whether a connection was asked.
    pub fn ask_to_close(&self, reason: CloseReason) -> bool {
        let mut st = self.state.lock();
        match st.owner.as_mut() {
            Some(owner) => self.ask_owner_to_close(owner, reason),
            None => false,
        }
    }

    /// When the session was last disconnected (Unix ms), `None` while connected.
    pub fn disconnected_at_ms(&self) -> Option<u64> {
        Some(self.state.lock().disconnected_at_ms).filter(|&at| at != 0)
    }

    /// Attaches a new connection and, if another connection was attached,
    /// makes it close ([`CloseReason::TakenOver`]: it is no longer the owner,
    /// which its idle wait sees, and its task is woken). Unacknowledged
    /// deliveries are returned to be resent with DUP set, in their original
    /// order ([MQTT-4.4.0-1]).
    pub fn attach(
        &self,
        connection_id: u64,
        send_window: u16,
        device: Option<Arc<str>>,
        attachment: Attachment,
    ) -> Vec<Outgoing> {
        let mut st = self.state.lock();
        self.displace_owner(&mut st);
        st.owner =
            Some(Owner { attachment: Box::new(attachment), connection_id, waker: None, close_reason: None, device });
        self.owner_id.store(connection_id, Ordering::SeqCst);
        self.close_asked.store(false, Ordering::SeqCst);
        // A reconnect cancels the will delay (dropping the will) and the
        // expiry of the last disconnect.
        for timer in st.timers.take().into_iter().flat_map(|timers| timers.tasks) {
            timer.abort();
        }
        st.generation += 1;
        st.disconnected_at_ms = 0;
        st.send_window = send_window.max(1);
        let resend = st
            .inflight
            .iter()
            .map(|(packet_id, entry)| match entry {
                Inflight::Sent(d) => Outgoing::Publish { packet_id: *packet_id, dup: true, delivery: d.clone() },
                Inflight::Released { .. } => Outgoing::PubRel { packet_id: *packet_id },
            })
            .collect();
        drop(st);
        // The last connection's deadlines are not this one's.
        self.silent_deadline_ms.store(0, Ordering::Relaxed);
        self.credentials_expire_ms.store(0, Ordering::Relaxed);
        // Queued messages may be waiting from the offline period.
        self.wake_writer();
        resend
    }

    /// Detaches `connection_id` if it is still the owner, at `now_ms` (Unix
    /// ms). Returns whether it was (false after a takeover: the new
    /// connection owns the session).
    pub fn detach(&self, connection_id: u64, now_ms: u64) -> bool {
        let mut st = self.state.lock();
        if st.owner.as_ref().map(|o| o.connection_id) == Some(connection_id) {
            st.owner = None;
            self.owner_id.store(0, Ordering::SeqCst);
            st.disconnected_at_ms = now_ms.max(1);
            self.silent_deadline_ms.store(0, Ordering::Relaxed);
            self.credentials_expire_ms.store(0, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Remembers a timer task of this session (see `Broker::spawn_session_timer`).
    pub fn add_timer(&self, timer: tokio::task::AbortHandle) {
        let mut st = self.state.lock();
        let timers = st.timers.get_or_insert_with(Default::default);
        timers.tasks.retain(|t| !t.is_finished());
        timers.tasks.push(timer);
    }

    /// Keeps `will` until its delay passes or the session ends, whichever
    /// is first (see [`Session::take_pending_will`], [`Session::cancel_timers`]).
    pub fn set_pending_will(&self, will: Will) {
        self.state.lock().timers.get_or_insert_with(Default::default).will = Some(will);
    }

    /// The will waiting for its delay, taken by the one who publishes it.
    pub fn take_pending_will(&self) -> Option<Will> {
        self.state.lock().timers.as_mut().and_then(|t| t.will.take())
    }

    /// Cancels the session's timer tasks (it ended). Returns the will still
    /// waiting for its delay: the session's end is its deadline, and the
    /// caller publishes it (after releasing its own locks).
    #[must_use = "a session's end publishes its pending will"]
    pub fn cancel_timers(&self) -> Option<Will> {
        let timers = self.state.lock().timers.take()?;
        for timer in timers.tasks {
            timer.abort();
        }
        timers.will
    }

    /// The session is replaced (a clean start): its attached connection, if
    /// any, is no longer the owner and closes with [`CloseReason::TakenOver`].
    pub fn kick_taken_over(&self) {
        self.displace_owner(&mut self.state.lock());
    }

    /// Asks the attached connection to close with `reason` unless it is
    /// `except` or `keep` says to keep it (given its device). It stays the
    /// owner until it detaches, so its session ends the normal way (saved,
    /// or discarded when it expires at disconnect). Returns whether it asked.
    pub fn kick_unless(&self, except: u64, keep: impl Fn(Option<&str>) -> bool, reason: CloseReason) -> bool {
        let mut st = self.state.lock();
        let Some(owner) = st.owner.as_mut() else { return false };
        if owner.connection_id == except || keep(owner.device.as_deref()) {
            return false;
        }
        self.ask_owner_to_close(owner, reason)
    }

    // ---- subscriptions -------------------------------------------------

    /// Records a subscription; returns the previous record if it replaced one.
    pub fn add_subscription(&self, filter: &str, record: SubscriptionRecord) -> Option<SubscriptionRecord> {
        self.state.lock().subscriptions.insert(filter, record)
    }

    pub fn remove_subscription(&self, filter: &str) -> Option<SubscriptionRecord> {
        self.state.lock().subscriptions.remove(filter)
    }

    pub fn subscription_count(&self) -> usize {
        self.state.lock().subscriptions.len()
    }

    pub fn has_subscription(&self, filter: &str) -> bool {
        self.state.lock().subscriptions.contains(filter)
    }

    pub fn subscriptions(&self) -> Vec<(String, SubscriptionRecord)> {
        self.state.lock().subscriptions.iter().map(|(f, r)| (f.to_string(), r.clone())).collect()
    }

    /// Every delivery not yet acknowledged, oldest first: in flight (sent,
    /// waiting for PUBACK/PUBREC), then queued. For handing the session to
    /// another node.
    pub fn undelivered(&self) -> Vec<Delivery> {
        let st = self.state.lock();
        let inflight = st.inflight.iter().filter_map(|(_, i)| match i {
            Inflight::Sent(d) => Some(d.clone()),
            Inflight::Released { .. } => None,
        });
        inflight.chain(st.outbox.iter().cloned()).collect()
    }

    /// When the oldest QoS 1/2 message not yet acknowledged by the client
    /// was admitted (Unix ms): in flight, then the queue's front (the queue
    /// is in arrival order). The cluster's session watermark.
    pub fn oldest_undelivered_ms(&self) -> Option<u64> {
        let st = self.state.lock();
        let inflight = st.inflight.iter().filter_map(|(_, i)| match i {
            Inflight::Sent(d) => Some(d.message.timestamp_ms),
            Inflight::Released { .. } => None,
        });
        let queued = st.outbox.iter().find(|d| d.qos as u8 > 0).map(|d| d.message.timestamp_ms);
        inflight.chain(queued).min()
    }

    /// Whether this session's writer took deliveries within `window_ms`: a
    /// full outbox of an active writer means "slow", of an idle one "stalled".
    pub fn is_draining(&self, now_ms: u64, window_ms: u64) -> bool {
        let last = self.last_drain_ms.load(Ordering::Relaxed);
        last != 0 && u64::from((now_ms as u32).wrapping_sub(last)) <= window_ms
    }

    /// Waits (at most `max_wait`) until a congested outbox has drained to half.
    pub async fn wait_for_room(&self, max_wait: std::time::Duration) {
        let room = self.room.get_or_init(Box::default).notified();
        if !self.state.lock().congested {
            return;
        }
        let _ = tokio::time::timeout(max_wait, room).await;
    }

    /// Takes one token from this client's rate limiter for topic class
    /// `class` (created full on first use). False: over the limit.
    pub fn allow_publish(&self, class: usize, messages_per_sec: f64, burst: u32, now_ms: u64) -> bool {
        self.state
            .lock()
            .rate_buckets
            .get_or_insert_with(Box::default)
            .entry(class)
            .or_insert_with(|| TokenBucket::new(messages_per_sec, burst, now_ms))
            .try_take(now_ms)
    }

    /// Messages refused or discarded by this session's outbox so far.
    pub fn dropped(&self) -> u64 {
        self.state.lock().outbox.dropped()
    }

    pub fn queued_len(&self) -> usize {
        self.state.lock().outbox.len()
    }

    /// Drops the queued (not yet sent) deliveries that no subscription of
    /// this session may deliver any more (revoked, or a hole the rules cut
    /// in it), with their stored copies.
    pub fn forget_queued_unreadable(&self) {
        let mut st = self.state.lock();
        let remaining: Vec<(crate::topic::TopicFilter, super::Holes)> = st
            .subscriptions
            .iter()
            .filter_map(|(f, r)| crate::topic::parse_subscription(f).ok().map(|p| (p.filter, r.holes.clone())))
            .collect();
        let removed = st.outbox.remove_where(|d| {
            let topic = &d.message.topic;
            !remaining.iter().any(|(f, holes)| f.matches(topic) && !super::in_holes(holes, topic))
        });
        for delivery in removed {
            st.owe_remove(delivery.seq);
        }
        self.unlock_and_write(st);
    }

    /// Whether the message `message_id` still waits here undelivered:
    /// queued, or sent and not acknowledged (a QoS 2 delivery whose PUBREC
    /// came back counts as delivered). A scan: for the push sweeper only.
    pub fn holds_undelivered(&self, message_id: u64) -> bool {
        let st = self.state.lock();
        st.outbox.iter().any(|d| d.message.id == message_id)
            || st.inflight.iter().any(|(_, e)| matches!(e, Inflight::Sent(d) if d.message.id == message_id))
    }

    /// Queued deliveries, their bytes, and QoS 1/2 deliveries in flight
    /// (sent, not yet acknowledged), under one lock: for operators.
    pub fn load(&self) -> SessionLoad {
        let st = self.state.lock();
        SessionLoad { queued: st.outbox.len(), queued_bytes: st.outbox.bytes(), inflight: st.inflight.len() }
    }

    /// Sets how many deliveries the outbox holds (default
    /// `session.max_queued_messages`), for sessions that need their own
    /// limit, such as a bridge's. Not stored: set it again after a restart.
    /// Sets the byte quota of the outbox (`session.max_queued_bytes`).
    pub fn set_max_queued_bytes(&self, max_bytes: usize) {
        self.state.lock().outbox.set_max_bytes(max_bytes);
    }

    /// Bytes queued for this session.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().outbox.bytes()
    }

    pub fn set_max_queued(&self, max_queued: usize) {
        self.state.lock().outbox.set_capacity(max_queued);
    }

    // ---- persistence -----------------------------------------------------

    pub fn to_stored(&self) -> StoredSession {
        let st = self.state.lock();
        StoredSession {
            client_id: self.client_id.to_string(),
            user: self.user.as_deref().map(str::to_string),
            expiry_secs: st.expiry_secs,
            disconnected_at_ms: Some(st.disconnected_at_ms).filter(|&at| at != 0),
            subscriptions: st.subscriptions.iter().map(|(filter, r)| r.to_stored(filter.to_string())).collect(),
        }
    }

    /// Writes the session record (not its deliveries, which are written as
    /// they are queued) if the session is persistent.
    pub fn save(&self) {
        if !self.is_persistent() {
            return;
        }
        if let Err(e) = self.store.save_session(&self.to_stored()) {
            tracing::error!(client_id = %self.client_id, error = %e, "cannot store session");
        }
    }
}

#[cfg(test)]
mod tests {
    /// A session and its `Arc` counts fit the allocator's 384-byte class:
    /// every connected client has one, and 8 bytes more cost 64 per client
    /// (the next class). Box what only some sessions need.
    #[test]
    fn a_session_fits_its_allocation_class() {
        let arc_counts = 2 * std::mem::size_of::<usize>();
        assert!(std::mem::size_of::<super::Session>() + arc_counts <= 384, "{}", std::mem::size_of::<super::Session>());
    }
}
