//! Topic classes at run time: what the broker keeps to apply them.
//!
//! Owns: the loaded [`ClassSet`], per-sender rate limiters, per-room
//! samplers, live viewer counts, and [`ClassRuntime::admit`], which decides
//! for one publish whether it goes out and how (QoS cap, retained with a TTL,
//! history, outbox handling, priority). Must never: route or store messages;
//! [`super::Broker::publish`] does that with what `admit` returns.

use super::message::{Handling, Message};
use crate::classes::policy::{RoomSampler, TokenBucket};
use crate::classes::{ClassSet, PersistenceMode, TopicClass};
use crate::topic::TopicName;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a publish was refused by its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the sender's rate limit (MQTT 5 reason 0x96).
    RateLimited,
    /// Payload larger than the class allows (MQTT 5 reason 0x95).
    PayloadTooLarge,
    /// A new retained message beyond `[retained] max_messages` / `max_bytes`
    /// (MQTT 5 reason 0x97). Not a class rule, but refused the same way.
    RetainedQuota,
}

impl Refusal {
    /// The MQTT 5 reason code that names it (DISCONNECT, starling.v1).
    pub fn reason_code(self) -> u8 {
        match self {
            Refusal::RateLimited => crate::model::reason::MESSAGE_RATE_TOO_HIGH,
            Refusal::PayloadTooLarge => crate::model::reason::PACKET_TOO_LARGE,
            Refusal::RetainedQuota => crate::model::reason::QUOTA_EXCEEDED,
        }
    }

    /// What to tell the client.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::RateLimited => "over the publish rate limit of this topic's class",
            Refusal::PayloadTooLarge => "payload larger than this topic's class allows",
            Refusal::RetainedQuota => "the broker holds as many retained messages as it may",
        }
    }
}

/// What `admit` decided.
pub enum Admission {
    /// Publish it; keep it in history as given.
    Publish {
        history: Option<HistoryRule>,
    },
    /// Accepted but not delivered: the room is sampled and this one is shed.
    Shed,
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy)]
pub struct HistoryRule {
    pub keep: usize,
    pub max_age_secs: Option<u64>,
}

#[derive(Default)]
pub struct ClassRuntime {
    pub set: ClassSet,
    /// Per sender (a message's `rate_key`: user or source address; else its
    /// client id): its token bucket for each rate-limited class (by index).
    /// Kept after a session ends (a new client id must not reset it); full,
    /// idle buckets are forgotten by `forget_quiet_rooms`.
    buckets: DashMap<Arc<str>, Vec<(usize, TokenBucket)>>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    samplers: Mutex<HashMap<TopicName, RoomSampler>>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    viewers: Mutex<Viewers>,
    /// Messages shed by sampling, for stats.
    pub shed: AtomicU64,
    /// Publishes refused by rate limits or payload limits.
    pub refused: AtomicU64,
    /// Deliveries not made, by class slot (0: no class, else index + 1)
    /// and [`DropReason`].
    drops: Box<[[AtomicU64; DropReason::LABELS.len()]]>,
}

/// Why a delivery (or a whole message) did not reach a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber's outbox was full (`queue` policy): refused.
    QueueFull,
    /// An older message was discarded to make room (`drop_oldest`).
    DropOldest,
    /// An older message of the same topic was replaced (`conflate`).
    Conflated,
    /// The room's sampling shed the message (counted once per message).
    Sampled,
    /// QoS 0 for a disconnected session.
    Offline,
}

impl DropReason {
    pub const LABELS: [&'static str; 5] = ["queue_full", "drop_oldest", "conflated", "sampled", "offline"];
}

#[derive(Default)]
struct Viewers {
    counts: HashMap<String, usize>,
    dirty: HashSet<String>,
}

impl ClassRuntime {
    pub fn new(set: ClassSet) -> ClassRuntime {
        let slots = set.classes().len() + 1;
        let drops = (0..slots).map(|_| Default::default()).collect();
        ClassRuntime { set, drops, ..Default::default() }
    }

    /// Counts `n` deliveries not made; `class_slot` is `Handling::class`.
    pub fn count_drops(&self, class_slot: usize, reason: DropReason, n: u64) {
        if let Some(row) = self.drops.get(class_slot) {
            row[reason as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Every (class name, reason, count) with a count above zero; class
    /// "none" for topics of no class.
    pub fn drop_counts(&self) -> Vec<(&str, &'static str, u64)> {
        let mut out = Vec::new();
        for (slot, row) in self.drops.iter().enumerate() {
            let class = if slot == 0 { "none" } else { self.set.classes()[slot - 1].name.as_str() };
            for (reason, count) in DropReason::LABELS.iter().zip(row.iter()) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    out.push((class, *reason, count));
                }
            }
        }
        out
    }

    /// Applies the topic's class to a publish: may refuse it, shed it, or
    /// adjust it (QoS cap, retain + TTL, handling) before it is routed.
    pub fn admit(&self, message: &mut Message, now_ms: u64) -> Admission {
        let Some(classified) = self.set.classify(&message.topic) else {
            return Admission::Publish { history: None };
        };
        let class: &TopicClass = classified.class;
        let high_priority = classified.high_priority || message.handling.high_priority;
        if class.max_payload_bytes.is_some_and(|max| message.payload.len() > max) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Admission::Refused(Refusal::PayloadTooLarge);
        }
        let sender = message.rate_key.as_ref().or(message.publisher.as_ref());
        if let (Some(limit), Some(sender), false) = (&class.rate_limit, sender, high_priority) {
            let mut buckets = self.buckets.entry(sender.clone()).or_default();
            let bucket = match buckets.iter_mut().position(|(c, _)| *c == classified.index) {
                Some(i) => &mut buckets[i].1,
                None => {
                    buckets.push((classified.index, TokenBucket::new(limit.messages_per_sec, limit.burst, now_ms)));
                    &mut buckets.last_mut().expect("just pushed").1
                }
            };
            if !bucket.try_take(now_ms) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Admission::Refused(Refusal::RateLimited);
            }
        }
        message.qos = message.qos.min(class.max_qos);
        if class.stamp_sender {
            stamp_sender(message);
        }
        message.handling = Handling {
            policy: class.outbox_policy,
            capacity: class.outbox_capacity,
            high_priority,
            class: u16::try_from(classified.index + 1).unwrap_or(u16::MAX),
        };
        let mut history = None;
        match class.persistence {
            PersistenceMode::None => {}
            PersistenceMode::Retained => {
                message.retain = true;
                if let Some(ttl) = class.retained_ttl_secs {
                    let at = now_ms + ttl * 1000;
                    message.expires_at_ms = Some(message.expires_at_ms.map_or(at, |e| e.min(at)));
                }
            }
            PersistenceMode::History => {
                history = Some(HistoryRule { keep: class.history_messages, max_age_secs: class.history_secs })
            }
        }
        if let (Some(sampling), false) = (&class.sampling, high_priority) {
            let mut samplers = self.samplers.lock();
            let sampler = samplers.entry(message.topic.clone()).or_insert_with(|| {
                RoomSampler::new(sampling.room_messages_per_sec, sampling.per_viewer_per_sec, now_ms)
            });
            if !sampler.admit(now_ms) {
                self.shed.fetch_add(1, Ordering::Relaxed);
                self.count_drops(classified.index + 1, DropReason::Sampled, 1);
                return Admission::Shed;
            }
        }
        Admission::Publish { history }
    }

    /// A message another node admitted arrived here (after `handling`): in a sampled room, it
    /// uses the room's share this node's sampler gives (the origin sampled
    /// it already; high-priority messages are never sampled).
    pub fn observe_remote(&self, message: &crate::broker::Message, now_ms: u64) {
        if message.handling.high_priority {
            return;
        }
        // The class `handling` found for it (this node's, set on arrival): no second lookup.
        let index = usize::from(message.handling.class).wrapping_sub(1);
        let Some(sampling) = self.set.classes().get(index).and_then(|class| class.sampling.as_ref()) else { return };
        let mut samplers = self.samplers.lock();
        samplers
            .entry(message.topic.clone())
            .or_insert_with(|| RoomSampler::new(sampling.room_messages_per_sec, sampling.per_viewer_per_sec, now_ms))
            .observe_passed(now_ms);
    }

    /// How a message another node admitted is handled here (its class's
    /// outbox policy), without this node's rate limits or sampling: those
    /// were applied where it was published.
    pub fn handling(&self, topic: &crate::topic::TopicName, high_priority: bool) -> Handling {
        match self.set.classify(topic) {
            Some(classified) => Handling {
                policy: classified.class.outbox_policy,
                capacity: classified.class.outbox_capacity,
                high_priority: high_priority || classified.high_priority,
                class: u16::try_from(classified.index + 1).unwrap_or(u16::MAX),
            },
            None => Handling { high_priority, ..Handling::default() },
        }
    }

    /// The history rule of `topic`'s class, if it keeps history.
    pub fn history_rule(&self, topic: &TopicName) -> Option<HistoryRule> {
        let class = self.set.classify(topic)?.class;
        (class.persistence == PersistenceMode::History)
            .then_some(HistoryRule { keep: class.history_messages, max_age_secs: class.history_secs })
    }

    /// The most messages and the longest age any history class keeps (no
    /// age limit if one of them has none).
    pub fn history_limits(&self) -> (usize, Option<u64>) {
        let history = self.set.classes().iter().filter(|c| c.persistence == PersistenceMode::History);
        let (mut keep, mut max_age, mut unlimited) = (0, 0, false);
        for class in history {
            keep = keep.max(class.history_messages);
            match class.history_secs {
                Some(secs) => max_age = max_age.max(secs),
                None => unlimited = true,
            }
        }
        (keep, (!unlimited && max_age > 0).then_some(max_age))
    }

    /// A subscription to `filter` was added (+1) or removed (-1). Counted
    /// only for classes with `count_viewers`, by exact filter (a room).
    pub fn viewer_delta(&self, filter: &str, delta: isize) {
        let Ok(topic) = TopicName::new(filter) else { return };
        if !self.set.classify(&topic).is_some_and(|c| c.class.count_viewers) {
            return;
        }
        let mut viewers = self.viewers.lock();
        let count = viewers.counts.entry(filter.to_string()).or_default();
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            viewers.counts.remove(filter);
        }
        viewers.dirty.insert(filter.to_string());
    }

    /// Subscribers of `filter` counted by `count_viewers` classes.
    pub fn viewer_count(&self, filter: &str) -> usize {
        self.viewers.lock().counts.get(filter).copied().unwrap_or(0)
    }

    /// Every room's count (a cluster node shares them now and then, so a
    /// node that joins, or missed a change, catches up).
    pub fn all_viewer_counts(&self) -> Vec<(String, usize)> {
        self.viewers.lock().counts.iter().map(|(f, c)| (f.clone(), *c)).collect()
    }

    /// Counts changed since the last call, to publish.
    pub fn take_changed_viewer_counts(&self) -> Vec<(String, usize)> {
        let mut viewers = self.viewers.lock();
        let dirty: Vec<String> = viewers.dirty.drain().collect();
        dirty.into_iter().map(|f| (f.clone(), viewers.counts.get(&f).copied().unwrap_or(0))).collect()
    }

    /// Drops samplers of rooms quiet for a minute (they are re-created on demand).
    pub fn forget_quiet_rooms(&self, now_ms: u64) {
        self.samplers.lock().retain(|_, s| !s.quiet_since(now_ms, 60_000));
        // A sender whose buckets have all refilled has nothing to remember.
        self.buckets.retain(|_, buckets| !buckets.iter().all(|(_, b)| b.is_full(now_ms)));
    }

    /// Senders with rate-limit state (bounded by the senders active lately).
    pub fn rate_limited_senders(&self) -> usize {
        self.buckets.len()
    }
}

/// `[identity] stamp_sender`: the verified sender as the user properties
/// `sender` and `sender_client_id` (what MQTT 5 subscribers read), in place
/// of any the publisher set: nobody can post as someone else.
fn stamp_sender(message: &mut Message) {
    let properties = &mut message.properties.user_properties;
    properties.retain(|(key, _)| key != "sender" && key != "sender_client_id");
    properties.push(("sender".into(), message.sender.as_deref().unwrap_or("").into()));
    properties.push(("sender_client_id".into(), message.publisher.as_deref().unwrap_or("").into()));
}
