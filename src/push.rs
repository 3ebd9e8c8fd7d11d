//! The offline push fallback (`[push]`): when a QoS 1/2 delivery in a
//! watched topic class is not acknowledged by its recipient within
//! `ack_timeout_secs`, or waits for an offline persistent session, the app's
//! server is told with a signed POST, so it can send an APNs/FCM
//! notification (the IM practice: no ack within 15 s → push).
//!
//! Owns: the watched deliveries (recipient, message, deadline), the sweep
//! that decides at each deadline (the session still holds the message
//! undelivered → push; acknowledged, or the session ended → no push), the
//! persistent queue of events to POST (in the store, so it survives a
//! restart), and the sender (HMAC-SHA256 signature, retries with back-off).
//! Must never: touch the ack path (the sweep asks the session instead), hold
//! more than `max_pending` watches, or block the runtime (the sweep and the
//! HTTP calls run on blocking threads). Plugs into the broker as its
//! `DeliveryWatch`.

use crate::broker::{DeliveryWatch, Message, Session};
use crate::config::PushConfig;
use crate::store::Store;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The push as the broker sees it: its [`DeliveryWatch`] (the broker owns
/// the trait and never names this module; `server.rs` plugs the push in).
impl DeliveryWatch for Push {
    fn watches(&self, class_slot: usize) -> bool {
        Push::watches(self, class_slot)
    }

    fn watch(&self, session: &Arc<Session>, message: &Arc<Message>) {
        Push::watch(self, session, message)
    }

    fn sweep(&self, now_ms: u64, is_current: &dyn Fn(&Session) -> bool) {
        Push::sweep(self, now_ms, is_current)
    }
}

/// A delivery being watched.
struct Watch {
    recipient: Arc<Session>,
    message: Arc<Message>,
}

/// What the push module counts (for `/metrics`).
#[derive(Default)]
pub struct PushCounters {
    /// Deliveries watched so far.
    pub watched: AtomicU64,
    /// Not watched: `max_pending` watches were held.
    pub not_watched: AtomicU64,
    /// Acknowledged (or ended) before the deadline: no push.
    pub acknowledged: AtomicU64,
    /// Events queued for the webhook.
    pub queued: AtomicU64,
    pub calls_ok: AtomicU64,
    pub calls_failed: AtomicU64,
    /// Events dropped because the queue held `max_queue` (the oldest go).
    pub dropped: AtomicU64,
    /// Events given up after `max_attempts` failed calls.
    pub dead_letters: AtomicU64,
}

pub struct Push {
    config: PushConfig,
    /// Class slots (`Handling::class`) whose deliveries are watched.
    watched_slots: Vec<bool>,
    /// By (deadline in Unix ms, sequence).
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    pending: Mutex<BTreeMap<(u64, u64), Watch>>,
    next_seq: AtomicU64,
    store: Arc<dyn Store>,
    /// Events waiting to be POSTed, oldest first (mirrors the store's queue).
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    queue: Mutex<std::collections::VecDeque<(u64, Vec<u8>)>>,
    wake_sender: Notify,
    pub counters: PushCounters,
}

impl Push {
    /// `class_names[i]` is the name of class slot `i + 1` (slot 0: no class).
    /// Loads the queue left by the last run.
    pub fn new(config: PushConfig, class_names: &[&str], store: Arc<dyn Store>) -> anyhow::Result<Push> {
        let mut watched_slots = vec![false; class_names.len() + 1];
        for name in &config.classes {
            match class_names.iter().position(|c| c == name) {
                Some(i) => watched_slots[i + 1] = true,
                None => tracing::warn!(class = %name, "push.classes names no topic class; ignored"),
            }
        }
        let queue: std::collections::VecDeque<_> = store.push_queue_load()?.into();
        let next_seq = queue.back().map_or(1, |(seq, _)| seq + 1);
        if !queue.is_empty() {
            tracing::info!(events = queue.len(), "push events from the last run will be sent");
        }
        Ok(Push {
            config,
            watched_slots,
            pending: Mutex::new(BTreeMap::new()),
            next_seq: AtomicU64::new(next_seq),
            store,
            queue: Mutex::new(queue),
            wake_sender: Notify::new(),
            counters: PushCounters::default(),
        })
    }

    /// Whether deliveries of class slot `slot` are watched (on the routing path: an index).
    pub fn watches(&self, slot: usize) -> bool {
        self.watched_slots.get(slot).copied().unwrap_or(false)
    }

    /// Watches a delivery just queued for `recipient`: due at once when it
    /// is offline, else after `ack_timeout_secs`.
    pub fn watch(&self, recipient: &Arc<Session>, message: &Arc<Message>) {
        let now = crate::clock::now_ms();
        let deadline = if recipient.is_connected() { now + self.config.ack_timeout_secs * 1000 } else { now };
        let mut pending = self.pending.lock();
        if pending.len() >= self.config.max_pending {
            self.counters.not_watched.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        pending.insert((deadline, seq), Watch { recipient: recipient.clone(), message: message.clone() });
        self.counters.watched.fetch_add(1, Ordering::Relaxed);
    }

    /// Watches whose deadline passed: pushed if still undelivered. Writes
    /// the events to the store and flushes. Runs on a blocking thread.
    pub fn sweep(&self, now_ms: u64, live: impl Fn(&Session) -> bool) {
        let due: Vec<(u64, Watch)> = {
            let mut pending = self.pending.lock();
            let later = pending.split_off(&(now_ms + 1, 0));
            std::mem::replace(&mut *pending, later).into_iter().map(|((_, seq), w)| (seq, w)).collect()
        };
        if due.is_empty() {
            return;
        }
        let mut events = Vec::new();
        for (seq, watch) in due {
            // Still this client's session, and the message still waits there.
            if live(&watch.recipient) && watch.recipient.holds_undelivered(watch.message.id) {
                events.push((seq, self.event(&watch)));
            } else {
                self.counters.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
        }
        if events.is_empty() {
            return;
        }
        for (seq, event) in &events {
            if let Err(e) = self.store.push_queue_add(*seq, event) {
                tracing::error!(error = %e, "cannot store a push event; it is sent but not kept across a restart");
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "cannot flush the push queue");
        }
        self.counters.queued.fetch_add(events.len() as u64, Ordering::Relaxed);
        let overflow: Vec<u64> = {
            let mut queue = self.queue.lock();
            queue.extend(events);
            let excess = queue.len().saturating_sub(self.config.max_queue);
            // The oldest go: the newest are the ones a user still cares about.
            queue.drain(..excess).map(|(seq, _)| seq).collect()
        };
        if !overflow.is_empty() {
            self.counters.dropped.fetch_add(overflow.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                dropped = overflow.len(),
                max_queue = self.config.max_queue,
                "push queue full: oldest events dropped"
            );
            for seq in overflow {
                let _ = self.store.push_queue_remove(seq);
            }
        }
        self.wake_sender.notify_one();
    }

    fn event(&self, watch: &Watch) -> Vec<u8> {
        let m = &watch.message;
        let cut = m.payload.len().min(self.config.preview_bytes);
        serde_json::to_vec(&serde_json::json!({
            "recipient_client_id": &*watch.recipient.client_id,
            "user": watch.recipient.user.as_deref(),
            "topic": m.topic.as_str(),
            // A string: JSON numbers lose precision above 2^53.
            "message_id": m.id.to_string(),
            "sender": m.publisher.as_deref(),
            "preview": String::from_utf8_lossy(&m.payload[..cut]),
            "timestamp_ms": m.timestamp_ms,
        }))
        .expect("JSON values serialize")
    }

    /// Takes the sent (or given up) event `seq` off the queue, unless a full
    /// queue dropped it meanwhile.
    fn pop_if_front(&self, seq: u64) {
        let mut queue = self.queue.lock();
        if queue.front().is_some_and(|(front, _)| *front == seq) {
            queue.pop_front();
        }
    }

    /// Watches held now, and events waiting to be sent.
    pub fn depths(&self) -> (usize, usize) {
        (self.pending.lock().len(), self.queue.lock().len())
    }

    /// `sha256=` and the hex HMAC-SHA256, under the secret, of
    /// `{timestamp}.{body}` (`timestamp`: the `X-Starling-Timestamp` header,
    /// Unix seconds), so a receiver can refuse a replayed call.
    pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    /// Sends the queue in order, one event at a time: a failure is retried
    /// (after 1 s, doubling up to 60 s) before the next event goes. Ends
    /// when `stop` turns true.
    pub async fn run_sender(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(url) = self.config.webhook.clone() else { return };
        let mut backoff = Duration::from_secs(1);
        // Failed calls of the event at the front (by its sequence number).
        let mut attempts: (u64, u32) = (0, 0);
        loop {
            let next = self.queue.lock().front().cloned();
            let Some((seq, event)) = next else {
                tokio::select! {
                    _ = self.wake_sender.notified() => continue,
                    _ = stop.changed() => return,
                }
            };
            let (target, secret) = (url.clone(), self.config.secret.clone());
            let sent = tokio::task::spawn_blocking(move || {
                let timestamp = crate::clock::now_ms() / 1000;
                let signature = Push::signature(&secret, timestamp, &event);
                ureq::post(&target)
                    .timeout(Duration::from_secs(10))
                    .set("Content-Type", "application/json")
                    .set("X-Starling-Timestamp", &timestamp.to_string())
                    .set("X-Starling-Signature", &signature)
                    .send_bytes(&event)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match sent {
                Ok(()) => {
                    self.counters.calls_ok.fetch_add(1, Ordering::Relaxed);
                    self.pop_if_front(seq);
                    let store = self.store.clone();
                    let _ = tokio::task::spawn_blocking(move || store.push_queue_remove(seq)).await;
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    self.counters.calls_failed.fetch_add(1, Ordering::Relaxed);
                    attempts = if attempts.0 == seq { (seq, attempts.1 + 1) } else { (seq, 1) };
                    if attempts.1 >= self.config.max_attempts {
                        // A dead letter: one event the webhook keeps refusing
                        // must not hold back every later one.
                        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(webhook = %url, error = %e, attempts = attempts.1, "push event given up (dead letter)");
                        self.pop_if_front(seq);
                        let store = self.store.clone();
                        let _ = tokio::task::spawn_blocking(move || store.push_queue_remove(seq)).await;
                        backoff = Duration::from_secs(1);
                        continue;
                    }
                    tracing::warn!(webhook = %url, error = %e, retry_in = ?backoff, "push webhook call failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}
