//! Traffic counters read by `/metrics` and the `$SYS` topics: messages and
//! bytes received from clients and sent to them (by transport and QoS),
//! connects (by transport), refused connects (by reason), disconnects (by
//! close reason), limit hits, the sampled delivery latency, and the
//! busiest topics (sampled).
//!
//! Owns: the counters. They are striped: each thread adds to its own
//! cache-padded slot, so counting on every publish and every write batch
//! costs an uncontended add, and a read sums the slots.
//! Must never: be read on a hot path (a read walks every slot).

use crate::auth::Transport;
use crate::model::{CloseReason, QoS};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const STRIPES: usize = 16;

/// This thread's slot: threads take slots in turn as they first count.
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    SLOT.with(|s| *s)
}

/// Transports counted apart (see [`Transport::ALL`]).
const TRANSPORTS: usize = Transport::ALL.len();
const QOS_LEVELS: usize = 3;

/// Why a connection was refused, for `starling_connects_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBecause {
    /// Bad username/password or token.
    BadCredentials,
    /// Authenticated but not allowed (ACL on the will, anonymous refused ...).
    NotAuthorized,
    /// A reserved client id, or the session of another user.
    ClientIdNotValid,
    /// `session.max_sessions` reached.
    TooManySessions,
    /// `limits.max_connections` or the per-IP limits at accept.
    ConnectionLimit,
    /// Anything else the CONNECT was refused for (bad will topic, protocol).
    Other,
}

impl RefusedBecause {
    pub const LABELS: [&'static str; 6] =
        ["bad_credentials", "not_authorized", "client_id_not_valid", "too_many_sessions", "connection_limit", "other"];

    /// From the reason code a refusal carries.
    pub fn from_code(code: u8) -> RefusedBecause {
        use crate::model::reason;
        match code {
            reason::BAD_USER_NAME_OR_PASSWORD => RefusedBecause::BadCredentials,
            reason::NOT_AUTHORIZED | reason::BANNED => RefusedBecause::NotAuthorized,
            reason::CLIENT_IDENTIFIER_NOT_VALID => RefusedBecause::ClientIdNotValid,
            reason::QUOTA_EXCEEDED => RefusedBecause::TooManySessions,
            reason::SERVER_BUSY | reason::CONNECTION_RATE_EXCEEDED => RefusedBecause::ConnectionLimit,
            _ => RefusedBecause::Other,
        }
    }
}

/// Limits a client ran into, for `starling_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Connections,
    Sessions,
    SubscriptionsPerClient,
    QueuedMessages,
    RetainedMessages,
    PacketSize,
    PublishRate,
    ClassPayloadSize,
}

impl Limit {
    pub const LABELS: [&'static str; 8] = [
        "connections",
        "sessions",
        "subscriptions_per_client",
        "queued_messages",
        "retained_messages",
        "packet_size",
        "publish_rate",
        "class_payload_size",
    ];
}

/// One thread's share of every counter.
#[derive(Default)]
struct Slot {
    messages_received: [[AtomicU64; QOS_LEVELS]; TRANSPORTS],
    bytes_received: [[AtomicU64; QOS_LEVELS]; TRANSPORTS],
    messages_sent: [[AtomicU64; QOS_LEVELS]; TRANSPORTS],
    bytes_sent: [[AtomicU64; QOS_LEVELS]; TRANSPORTS],
    connects: [AtomicU64; TRANSPORTS],
    disconnects: [AtomicU64; CloseReason::LABELS.len()],
    refused: [AtomicU64; RefusedBecause::LABELS.len()],
    limit_hits: [AtomicU64; Limit::LABELS.len()],
}

/// The broker's traffic counters, since start, striped per thread: a count
/// is an uncontended add to this thread's slot; a read sums the slots.
pub struct Stats {
    slots: Box<[CachePadded<Slot>; STRIPES]>,
    /// Publish-to-delivery latency, sampled (see `Stats::sent`).
    pub delivery_latency: prometheus::Histogram,
    /// The busiest topics, sampled.
    pub topics: TopicSampler,
    /// Writers the housekeeping sweep found stopped with deliveries they
    /// could send and nothing blocking them (a lost wake-up; the sweep wakes
    /// them). Should stay 0: a guard, not a counter of normal events.
    writer_stalls: AtomicU64,
    /// Subscriptions dropped because the rules no longer allowed them.
    subscriptions_revoked: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        let latency = prometheus::HistogramOpts::new(
            "delivery_latency_seconds",
            "Time from a message's acceptance to its delivery being written, one delivery in 64 sampled (ms resolution)",
        )
        .buckets(vec![0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        Stats {
            slots: Box::new(std::array::from_fn(|_| CachePadded::new(Slot::default()))),
            delivery_latency: prometheus::Histogram::with_opts(latency).expect("valid histogram options"),
            topics: TopicSampler::default(),
            writer_stalls: AtomicU64::new(0),
            subscriptions_revoked: AtomicU64::new(0),
        }
    }
}

/// Totals of one counter family, by transport and QoS.
pub type ByTransportQos = [[u64; QOS_LEVELS]; TRANSPORTS];

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    fn mine(&self) -> &Slot {
        &self.slots[slot()]
    }

    fn sum<const N: usize>(&self, pick: impl Fn(&Slot) -> &[AtomicU64; N]) -> [u64; N] {
        let mut total = [0u64; N];
        for s in self.slots.iter() {
            for (t, c) in total.iter_mut().zip(pick(s)) {
                *t = t.wrapping_add(c.load(Ordering::Relaxed));
            }
        }
        total
    }

    fn sum_2d(&self, pick: impl Fn(&Slot) -> &[[AtomicU64; QOS_LEVELS]; TRANSPORTS]) -> ByTransportQos {
        let mut total = [[0u64; QOS_LEVELS]; TRANSPORTS];
        for s in self.slots.iter() {
            for (row, counters) in total.iter_mut().zip(pick(s)) {
                for (t, c) in row.iter_mut().zip(counters) {
                    *t = t.wrapping_add(c.load(Ordering::Relaxed));
                }
            }
        }
        total
    }

    /// A message accepted from a client.
    pub fn received(&self, transport: Transport, qos: QoS, payload_bytes: usize) {
        let s = self.mine();
        add(&s.messages_received[transport.index()][qos as usize], 1);
        add(&s.bytes_received[transport.index()][qos as usize], payload_bytes as u64);
    }

    /// A batch of deliveries taken for a client's write: counts by QoS and
    /// the bytes of the batch (counted under the batch's highest QoS).
    pub fn sent(&self, transport: Transport, by_qos: [u64; QOS_LEVELS], bytes: usize) {
        let s = self.mine();
        let t = transport.index();
        for (qos, n) in by_qos.iter().enumerate().filter(|(_, n)| **n > 0) {
            add(&s.messages_sent[t][qos], *n);
        }
        let top = by_qos.iter().rposition(|n| *n > 0).unwrap_or(0);
        add(&s.bytes_sent[t][top], bytes as u64);
    }

    pub fn connected(&self, transport: Transport) {
        add(&self.mine().connects[transport.index()], 1);
    }

    pub fn disconnected(&self, reason: &CloseReason) {
        add(&self.mine().disconnects[reason.index()], 1);
    }

    pub fn refused(&self, because: RefusedBecause) {
        add(&self.mine().refused[because as usize], 1);
    }

    pub fn writer_stalled(&self) {
        add(&self.writer_stalls, 1);
    }

    /// Writers found stalled with sendable deliveries since start (see the field).
    pub fn writer_stalls(&self) -> u64 {
        self.writer_stalls.load(Ordering::Relaxed)
    }

    pub fn subscriptions_revoked(&self, n: usize) {
        add(&self.subscriptions_revoked, n as u64);
    }

    /// Subscriptions dropped because the rules no longer allowed them.
    pub fn revoked_subscriptions(&self) -> u64 {
        self.subscriptions_revoked.load(Ordering::Relaxed)
    }

    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hit_n(limit, 1);
    }

    pub fn limit_hit_n(&self, limit: Limit, n: u64) {
        add(&self.mine().limit_hits[limit as usize], n);
    }

    pub fn messages_received(&self) -> ByTransportQos {
        self.sum_2d(|s| &s.messages_received)
    }
    pub fn bytes_received(&self) -> ByTransportQos {
        self.sum_2d(|s| &s.bytes_received)
    }
    pub fn messages_sent(&self) -> ByTransportQos {
        self.sum_2d(|s| &s.messages_sent)
    }
    pub fn bytes_sent(&self) -> ByTransportQos {
        self.sum_2d(|s| &s.bytes_sent)
    }
    pub fn connects(&self) -> [u64; TRANSPORTS] {
        self.sum(|s| &s.connects)
    }
    pub fn disconnects(&self) -> [u64; CloseReason::LABELS.len()] {
        self.sum(|s| &s.disconnects)
    }
    pub fn refusals(&self) -> [u64; RefusedBecause::LABELS.len()] {
        self.sum(|s| &s.refused)
    }
    pub fn limit_hits(&self) -> [u64; Limit::LABELS.len()] {
        self.sum(|s| &s.limit_hits)
    }
}

/// Everything in a by-transport-and-QoS table.
pub fn total(table: &ByTransportQos) -> u64 {
    table.iter().flatten().fold(0, |a, b| a.wrapping_add(*b))
}

/// Mosquitto's `$SYS/broker/load/...`: exponentially weighted moving
/// averages, over 1, 5 and 15 minutes, of per-minute rates.
#[derive(Default)]
pub struct LoadAverages {
    /// The counters at the last update, and when.
    last: Option<([u64; 5], std::time::Instant)>,
    averages: [[f64; 3]; 5],
}

impl LoadAverages {
    /// What is averaged, in the order of `update`'s counters.
    pub const NAMES: [&'static str; 5] =
        ["messages/received", "messages/sent", "bytes/received", "bytes/sent", "connections"];
    const WINDOWS_SECS: [f64; 3] = [60.0, 300.0, 900.0];

    /// Folds in the counters' growth since the last call (per minute) and
    /// returns the averages. The first call only remembers the counters.
    pub fn update(&mut self, counters: [u64; 5], now: std::time::Instant) -> [[f64; 3]; 5] {
        if let Some((before, then)) = self.last {
            let seconds = now.duration_since(then).as_secs_f64();
            if seconds > 0.0 {
                for (i, averages) in self.averages.iter_mut().enumerate() {
                    let per_minute = counters[i].wrapping_sub(before[i]) as f64 * 60.0 / seconds;
                    for (average, window) in averages.iter_mut().zip(Self::WINDOWS_SECS) {
                        let keep = (-seconds / window).exp();
                        *average = *average * keep + per_minute * (1.0 - keep);
                    }
                }
            }
        }
        self.last = Some((counters, now));
        self.averages
    }
}

/// Publishes counted per topic: one in [`TopicSampler::EVERY`] (per
/// thread), so the hot path pays a lock only that often. Feeds "top topics
/// by rate" on the status page and `GET /api/v1/stats`.
pub struct TopicSampler {
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    windows: Mutex<SampleWindows>,
}

struct SampleWindows {
    started: Instant,
    current: HashMap<Box<str>, u64>,
    /// The window before, and how long it lasted.
    previous: HashMap<Box<str>, u64>,
    previous_len: Duration,
}

impl Default for TopicSampler {
    fn default() -> Self {
        TopicSampler {
            windows: Mutex::new(SampleWindows {
                started: Instant::now(),
                current: HashMap::new(),
                previous: HashMap::new(),
                previous_len: Duration::ZERO,
            }),
        }
    }
}

impl TopicSampler {
    /// One publish in this many is counted.
    pub const EVERY: u64 = 16;
    /// Topics counted per window; others wait for the next window.
    const MAX_TOPICS: usize = 1024;
    const WINDOW: Duration = Duration::from_secs(10);

    /// Called for every publish; counts one in [`Self::EVERY`].
    pub fn publish(&self, topic: &str) {
        thread_local! {
            static SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        let due = SEEN.with(|seen| {
            let n = seen.get().wrapping_add(1);
            seen.set(n);
            n % Self::EVERY == 0
        });
        if due {
            self.record(topic);
        }
    }

    fn record(&self, topic: &str) {
        let mut w = self.windows.lock();
        w.rotate_if_due();
        if let Some(n) = w.current.get_mut(topic) {
            *n += 1;
        } else if w.current.len() < Self::MAX_TOPICS {
            w.current.insert(topic.into(), 1);
        }
    }

    /// The busiest topics, estimated messages per second over the last 10 to
    /// 20 seconds, highest first.
    pub fn top(&self, n: usize) -> Vec<(String, f64)> {
        let mut w = self.windows.lock();
        w.rotate_if_due();
        let seconds = (w.previous_len + w.started.elapsed()).as_secs_f64().max(1.0);
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for (topic, count) in w.previous.iter().chain(w.current.iter()) {
            *totals.entry(topic).or_default() += count;
        }
        let mut top: Vec<(String, f64)> = totals
            .into_iter()
            .map(|(topic, count)| (topic.to_string(), (count * Self::EVERY) as f64 / seconds))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(n);
        top
    }
}

impl SampleWindows {
    fn rotate_if_due(&mut self) {
        let elapsed = self.started.elapsed();
        if elapsed >= TopicSampler::WINDOW {
            self.previous = std::mem::take(&mut self.current);
            self.previous_len = elapsed;
            self.started = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn adds_from_many_threads_are_all_counted() {
        let stats = Arc::new(Stats::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        stats.received(Transport::MqttWebSocket, QoS::AtLeastOnce, 2);
                        stats.sent(Transport::StarlingV1, [1, 0, 2], 10);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let ws = Transport::MqttWebSocket.index();
        assert_eq!(stats.messages_received()[ws][1], 80_000);
        assert_eq!(stats.bytes_received()[ws][1], 160_000);
        assert_eq!(total(&stats.messages_received()), 80_000);
        let v1 = Transport::StarlingV1.index();
        assert_eq!(stats.messages_sent()[v1], [80_000, 0, 160_000]);
        // A batch's bytes go under its highest QoS.
        assert_eq!(stats.bytes_sent()[v1], [0, 0, 800_000]);
    }

    #[test]
    fn load_averages_approach_a_steady_rate_faster_over_shorter_windows() {
        let mut load = LoadAverages::default();
        let start = Instant::now();
        assert_eq!(load.update([0; 5], start), [[0.0; 3]; 5]);
        // 10 messages received a second (600 a minute) for 10 minutes, sampled every 10 s.
        let mut averages = [[0.0; 3]; 5];
        for step in 1..=60u64 {
            averages = load.update([step * 100, 0, 0, 0, 0], start + Duration::from_secs(step * 10));
        }
        let [one, five, fifteen] = averages[0];
        assert!((one - 600.0).abs() < 1.0, "{one}");
        assert!(five > 500.0 && five < one, "{five}");
        // 600 × (1 − e^(−600/900)) ≈ 292 after ten minutes.
        assert!((fifteen - 292.0).abs() < 2.0 && fifteen < five, "{fifteen}");
        assert_eq!(averages[1], [0.0; 3]);
    }

    #[test]
    fn the_sampler_ranks_topics_by_rate() {
        let sampler = TopicSampler::default();
        for i in 0..(TopicSampler::EVERY * 300) {
            sampler.publish(if i % 3 == 0 { "quiet" } else { "busy" });
        }
        let top = sampler.top(10);
        assert_eq!(top.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["busy", "quiet"]);
        // Within a second: rates are per second over at least one second.
        assert!(top[0].1 > top[1].1 && top[0].1 <= (TopicSampler::EVERY * 300) as f64);
        assert_eq!(sampler.top(1).len(), 1);
    }
}
