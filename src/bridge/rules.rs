//! The pure parts of a bridge: topic rules with prefix rewriting, the echo
//! filter for MQTT 3.1.1 links, and the reconnect back-off.
//!
//! Owns: which local topics go out and under which remote topic, which
//! remote topics come in and under which local topic. Must never: do I/O or
//! read the clock (time is passed in), so all of it is unit tested here.

use crate::config::BridgeTopic;
use crate::model::QoS;
use crate::topic::{TopicFilter, TopicName};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// One direction of one `[[bridge.topics]]` rule: a topic matching `filter`
/// (on the side the message comes from) loses `from_prefix` and gains
/// `to_prefix`.
#[derive(Debug, Clone)]
struct Mapping {
    filter: TopicFilter,
    qos: QoS,
    from_prefix: String,
    to_prefix: String,
}

impl Mapping {
    fn apply(&self, topic: &TopicName) -> Option<TopicName> {
        if !self.filter.matches(topic) {
            return None;
        }
        // "p/#" also matches "p" itself, which has no "p/" to strip: no mapping.
        let rest = topic.as_str().strip_prefix(self.from_prefix.as_str())?;
        TopicName::new(&format!("{}{rest}", self.to_prefix)).ok()
    }
}

/// The topic rules of one bridge, in file order: when several rules match a
/// message, the first one decides its topic on the other side.
#[derive(Debug, Clone)]
pub(super) struct Rules {
    out: Vec<Mapping>,
    inbound: Vec<Mapping>,
}

impl Rules {
    /// Builds the rules; the configuration has been validated, so an error
    /// here names the rule for the log and is not expected.
    pub fn new(topics: &[BridgeTopic]) -> Result<Rules, String> {
        let mut rules = Rules { out: Vec::new(), inbound: Vec::new() };
        for (i, t) in topics.iter().enumerate() {
            let qos = if t.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
            let parse = |f: String| TopicFilter::new(&f).map_err(|e| format!("topics[{i}]: {f:?}: {e}"));
            if t.direction.is_out() {
                rules.out.push(Mapping {
                    filter: parse(t.local_filter())?,
                    qos,
                    from_prefix: t.local_prefix.clone(),
                    to_prefix: t.remote_prefix.clone(),
                });
            }
            if t.direction.is_in() {
                rules.inbound.push(Mapping {
                    filter: parse(t.remote_filter())?,
                    qos,
                    from_prefix: t.remote_prefix.clone(),
                    to_prefix: t.local_prefix.clone(),
                });
            }
        }
        Ok(rules)
    }

    /// What the bridge's local session subscribes to (the `out` rules).
    pub fn local_subscriptions(&self) -> Vec<(String, QoS)> {
        self.out.iter().map(|m| (m.filter.as_str().to_string(), m.qos)).collect()
    }

    /// What the bridge subscribes to on the remote (the `in` rules).
    pub fn remote_subscriptions(&self) -> Vec<(String, QoS)> {
        self.inbound.iter().map(|m| (m.filter.as_str().to_string(), m.qos)).collect()
    }

    /// The remote topic for a local message, if an `out` rule takes it.
    pub fn to_remote(&self, local: &TopicName) -> Option<TopicName> {
        self.out.iter().find_map(|m| m.apply(local))
    }

    /// The local topic for a remote message, if an `in` rule takes it.
    pub fn to_local(&self, remote: &str) -> Option<TopicName> {
        let remote = TopicName::new(remote).ok()?;
        self.inbound.iter().find_map(|m| m.apply(&remote))
    }

    /// Whether the remote will send a message published on `remote` back to
    /// us, because one of our remote subscriptions matches it.
    pub fn remote_echoes(&self, remote: &TopicName) -> bool {
        self.inbound.iter().any(|m| m.filter.matches(remote))
    }
}

/// MQTT 3.1.1 has no No Local option: a remote sends what the bridge
/// published back to the bridge when one of its subscriptions matches. The
/// filter remembers what was sent (topic and payload, hashed) for `window`
/// and drops the first matching message that comes back. Bounded: at most
/// `max` remembered messages, the oldest forgotten first.
#[derive(Debug)]
pub(super) struct EchoFilter {
    window: Duration,
    max: usize,
    sent: VecDeque<(Instant, u64)>,
    pending: HashMap<u64, u32>,
}

impl EchoFilter {
    pub fn new(window: Duration, max: usize) -> EchoFilter {
        EchoFilter { window, max: max.max(1), sent: VecDeque::new(), pending: HashMap::new() }
    }

    /// Remembers a message sent to the remote that it will echo.
    pub fn sent(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        self.expire(now);
        if self.sent.len() >= self.max {
            self.forget_oldest();
        }
        let fp = fingerprint(topic, payload);
        self.sent.push_back((now, fp));
        *self.pending.entry(fp).or_insert(0) += 1;
    }

    /// Whether a message from the remote is the echo of one we sent; if so,
    /// it is consumed (a second identical message is not an echo).
    pub fn is_echo(&mut self, now: Instant, topic: &str, payload: &[u8]) -> bool {
        self.expire(now);
        let fp = fingerprint(topic, payload);
        let Some(count) = self.pending.get_mut(&fp) else { return false };
        *count -= 1;
        if *count == 0 {
            self.pending.remove(&fp);
        }
        if let Some(pos) = self.sent.iter().position(|(_, f)| *f == fp) {
            self.sent.remove(pos);
        }
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sent.len()
    }

    fn expire(&mut self, now: Instant) {
        while self.sent.front().is_some_and(|(at, _)| now.duration_since(*at) > self.window) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, fp)) = self.sent.pop_front() {
            if let Some(count) = self.pending.get_mut(&fp) {
                *count -= 1;
                if *count == 0 {
                    self.pending.remove(&fp);
                }
            }
        }
    }
}

fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

/// Exponential back-off with jitter: the n-th consecutive failure waits a
/// random time in [d/2, d] with d = min(min · 2ⁿ, max).
#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), failures: 0 }
    }

    /// The wait before the next attempt; `random` is uniform in [0, 1).
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        let d = self.min.saturating_mul(factor).min(self.max);
        self.failures = self.failures.saturating_add(1);
        d / 2 + d.mul_f64(random.clamp(0.0, 1.0) / 2.0)
    }

    /// A connection succeeded: start again from `min`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BridgeDirection;

    fn topic(filter: &str, direction: &str, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            filter: filter.into(),
            direction: BridgeDirection::from(direction.to_string()),
            qos: 1,
            local_prefix: local.into(),
            remote_prefix: remote.into(),
        }
    }

    fn name(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    #[test]
    fn prefixes_are_rewritten_both_ways() {
        let rules = Rules::new(&[topic("sensors/#", "both", "site1/", "plant/")]).unwrap();
        assert_eq!(rules.local_subscriptions(), vec![("site1/sensors/#".to_string(), QoS::AtLeastOnce)]);
        assert_eq!(rules.remote_subscriptions(), vec![("plant/sensors/#".to_string(), QoS::AtLeastOnce)]);
        assert_eq!(rules.to_remote(&name("site1/sensors/a/t")), Some(name("plant/sensors/a/t")));
        assert_eq!(rules.to_local("plant/sensors/a/t"), Some(name("site1/sensors/a/t")));
        assert_eq!(rules.to_remote(&name("site2/sensors/a")), None);
        assert_eq!(rules.to_local("sensors/a"), None);
    }

    #[test]
    fn direction_decides_which_side_subscribes() {
        let rules = Rules::new(&[topic("a/#", "in", "", ""), topic("b/#", "out", "", "")]).unwrap();
        assert_eq!(rules.to_local("a/1"), Some(name("a/1")));
        assert_eq!(rules.to_local("b/1"), None);
        assert_eq!(rules.to_remote(&name("b/1")), Some(name("b/1")));
        assert_eq!(rules.to_remote(&name("a/1")), None);
        assert!(rules.remote_echoes(&name("a/1")) && !rules.remote_echoes(&name("b/1")));
    }

    #[test]
    fn the_first_matching_rule_wins_and_odd_topics_are_skipped() {
        let rules = Rules::new(&[topic("x/#", "in", "one/", "r/"), topic("#", "in", "two/", "")]).unwrap();
        assert_eq!(rules.to_local("r/x/1"), Some(name("one/x/1")));
        assert_eq!(rules.to_local("other"), Some(name("two/other")));
        // "r/#" would match "r" itself, which has no "r/" prefix to strip; the
        // second rule takes it.
        let rules = Rules::new(&[topic("#", "in", "l/", "r/")]).unwrap();
        assert_eq!(rules.to_local("r"), None);
        assert_eq!(rules.to_local("r/"), Some(name("l/")));
        assert_eq!(rules.to_local("not/valid/#"), None);
        // Wildcards never match $-topics at the first level.
        assert_eq!(Rules::new(&[topic("#", "in", "", "")]).unwrap().to_local("$SYS/x"), None);
    }

    #[test]
    fn echo_filter_drops_one_echo_per_message_sent() {
        let t0 = Instant::now();
        let mut f = EchoFilter::new(Duration::from_secs(10), 100);
        f.sent(t0, "a", b"1");
        f.sent(t0, "a", b"1");
        assert!(!f.is_echo(t0, "a", b"2"));
        assert!(!f.is_echo(t0, "b", b"1"));
        assert!(f.is_echo(t0, "a", b"1"));
        assert!(f.is_echo(t0, "a", b"1"));
        assert!(!f.is_echo(t0, "a", b"1"), "a third identical message is a new one");
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn echo_filter_forgets_after_the_window_and_beyond_its_bound() {
        let t0 = Instant::now();
        let mut f = EchoFilter::new(Duration::from_secs(10), 2);
        f.sent(t0, "a", b"1");
        assert!(!f.is_echo(t0 + Duration::from_secs(11), "a", b"1"));
        f.sent(t0, "a", b"1");
        f.sent(t0, "b", b"1");
        f.sent(t0, "c", b"1");
        assert_eq!(f.len(), 2);
        assert!(!f.is_echo(t0, "a", b"1"), "the oldest was forgotten");
        assert!(f.is_echo(t0, "b", b"1") && f.is_echo(t0, "c", b"1"));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let lows: Vec<_> = (0..6).map(|_| b.next_delay(0.0).as_millis()).collect();
        assert_eq!(lows, vec![50, 100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(0.999_999).as_millis(), 99);
        for _ in 0..100 {
            assert!(b.next_delay(0.5) <= Duration::from_millis(1000));
        }
    }
}
