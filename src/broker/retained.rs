//! The retained messages held in memory, indexed three ways so that nothing
//! a client does makes the broker scan them all:
//! - a tree of topic levels, so a wildcard subscription visits only the
//!   branches its filter can match (a `+` level: every child; `#`: the
//!   subtree) instead of every retained message;
//! - a deadline queue of expiries (MQTT 5 message expiry and class TTLs), so
//!   the once-a-second sweep touches only what has expired;
//! - the count and total size, so the `[retained]` quotas are checked in O(1).
//!
//! Owns: the three, which must always agree. Pure: no I/O, no locks.
//! Must never: be changed except through `insert` and `remove`; recurse over
//! topic levels (a topic may have 32,768 of them, so walks are loops).

use super::Message;
use crate::topic::{TopicFilter, TopicName};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

/// Drops a subtree with a loop: the derived drop would recurse once per level.
impl Drop for Node {
    fn drop(&mut self) {
        let mut stack: Vec<Node> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, n)| n));
        }
    }
}

#[derive(Default)]
pub struct RetainedMap {
    root: Node,
    len: usize,
    bytes: usize,
    /// The part of `len` and `bytes` under `$SYS/`: the broker's own topics
    /// (no client may publish there, `auth::acl`), which neither count
    /// against the clients' `[retained]` quotas nor are refused by them.
    own_len: usize,
    own_bytes: usize,
    /// (expiry in Unix ms, topic) of every held message that expires.
    deadlines: BTreeSet<(u64, TopicName)>,
}

impl RetainedMap {
    /// Sets the retained message of `message.topic`, replacing any before it.
    pub fn insert(&mut self, message: Arc<Message>) {
        let mut node = &mut self.root;
        for level in message.topic.levels() {
            node = node.children.entry(level.into()).or_default();
        }
        let (at, footprint, topic) = (message.expires_at_ms, message.footprint(), message.topic.clone());
        // The old message is forgotten before the new one is counted: both
        // may have the same deadline entry.
        let own = is_broker_own(&topic);
        match node.message.replace(message) {
            Some(old) => self.forget(&old),
            None => {
                self.len += 1;
                self.own_len += usize::from(own);
            }
        }
        self.bytes += footprint;
        if own {
            self.own_bytes += footprint;
        }
        if let Some(at) = at {
            self.deadlines.insert((at, topic));
        }
    }

    /// Removes the retained message of `topic`, pruning the branch it leaves empty.
    pub fn remove(&mut self, topic: &TopicName) -> Option<Arc<Message>> {
        let levels: Vec<&str> = topic.levels().collect();
        let mut node = &mut self.root;
        for level in &levels {
            node = node.children.get_mut(*level)?;
        }
        let old = node.message.take()?;
        let leaf_has_children = !node.children.is_empty();
        self.len -= 1;
        self.own_len -= usize::from(is_broker_own(topic));
        self.forget(&old);
        if !leaf_has_children {
            // Cut the branch below the deepest node on the path that must
            // stay: the root, a node with a message, or one with other children.
            let mut node = &self.root;
            let mut cut = 0;
            for (depth, level) in levels.iter().enumerate() {
                if depth == 0 || node.message.is_some() || node.children.len() > 1 {
                    cut = depth;
                }
                node = &node.children[*level];
            }
            let mut node = &mut self.root;
            for level in &levels[..cut] {
                node = node.children.get_mut(*level).expect("the path was just walked");
            }
            node.children.remove(levels[cut]);
        }
        Some(old)
    }

    /// Takes a replaced or removed message out of the size and the deadlines.
    fn forget(&mut self, old: &Message) {
        self.bytes -= old.footprint();
        if is_broker_own(&old.topic) {
            self.own_bytes -= old.footprint();
        }
        if let Some(at) = old.expires_at_ms {
            self.deadlines.remove(&(at, old.topic.clone()));
        }
    }

    /// Topics with a retained message that start with `prefix`, in byte
    /// order, at most `limit` (for operators). Walks only the branches that
    /// can lead to the prefix.
    pub fn topics(&self, prefix: &str, limit: usize) -> Vec<String> {
        let mut found = Vec::new();
        // Depth first with one path buffer: an entry holds the length of its
        // parent's path (`None` at the top), which is still in the buffer
        // when the entry is popped (its subtree is walked before a sibling
        // of the parent), so a deep topic costs its length, not its square.
        let mut path = String::new();
        let mut stack: Vec<(&str, &Node, Option<usize>)> =
            self.root.children.iter().map(|(l, n)| (&**l, n, None)).collect();
        while let Some((level, node, parent_len)) = stack.pop() {
            match parent_len {
                None => path.clear(),
                Some(len) => {
                    path.truncate(len);
                    path.push('/');
                }
            }
            path.push_str(level);
            if !path.starts_with(prefix) && !prefix.starts_with(path.as_str()) {
                continue;
            }
            if node.message.is_some() && path.starts_with(prefix) {
                found.push(path.clone());
            }
            let len = path.len();
            stack.extend(node.children.iter().map(|(level, child)| (&**level, child, Some(len))));
        }
        found.sort();
        found.truncate(limit);
        found
    }

    pub fn get(&self, topic: &TopicName) -> Option<&Arc<Message>> {
        let mut node = &self.root;
        for level in topic.levels() {
            node = node.children.get(level)?;
        }
        node.message.as_ref()
    }

    /// The unexpired messages `filter` matches (§4.7: `+` one level, `#` the
    /// rest including the parent, no leading wildcard into `$` topics).
    pub fn matching(&self, filter: &TopicFilter, now_ms: u64) -> Vec<Arc<Message>> {
        let levels: Vec<&str> = filter.levels().collect();
        let mut found = Vec::new();
        let mut keep = |node: &Node| {
            if let Some(m) = node.message.as_ref().filter(|m| !m.is_expired(now_ms)) {
                found.push(m.clone());
            }
        };
        // [MQTT-4.7.2-1]: a wildcard first level does not reach `$` topics.
        let reachable = |depth: usize, level: &str| depth > 0 || !level.starts_with('$');
        let mut stack = vec![(&self.root, 0usize)];
        while let Some((node, depth)) = stack.pop() {
            match levels.get(depth).copied() {
                None => keep(node),
                Some("#") => {
                    keep(node);
                    let mut subtree: Vec<&Node> =
                        node.children.iter().filter(|(l, _)| reachable(depth, l)).map(|(_, n)| n).collect();
                    while let Some(n) = subtree.pop() {
                        keep(n);
                        subtree.extend(n.children.values());
                    }
                }
                Some("+") => {
                    stack.extend(node.children.iter().filter(|(l, _)| reachable(depth, l)).map(|(_, n)| (n, depth + 1)))
                }
                Some(level) => stack.extend(node.children.get(level).map(|n| (n, depth + 1))),
            }
        }
        found
    }

    /// Topics whose message expired at or before `now_ms`, earliest first.
    pub fn expired(&self, now_ms: u64) -> Vec<TopicName> {
        self.deadlines.iter().take_while(|(at, _)| *at <= now_ms).map(|(_, topic)| topic.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether storing `message` (new topic, or replacing its topic's
    /// message) keeps the clients' retained messages within `max_messages`
    /// and `max_bytes`. The broker's own `$SYS/` topics always fit and are
    /// not counted: with a small quota they would otherwise take every slot
    /// within seconds, and the broker would refuse itself (issue 23).
    pub fn fits(&self, message: &Message, max_messages: usize, max_bytes: usize) -> bool {
        if is_broker_own(&message.topic) {
            return true;
        }
        let replaced = self.get(&message.topic);
        let count = self.len - self.own_len + usize::from(replaced.is_none());
        let bytes = self.bytes - self.own_bytes - replaced.map_or(0, |m| m.footprint()) + message.footprint();
        count <= max_messages && bytes <= max_bytes
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(n) = stack.pop() {
            count += 1;
            stack.extend(n.children.values());
        }
        count
    }
}

/// The broker's own topics: `$SYS` and below.
fn is_broker_own(topic: &TopicName) -> bool {
    topic.is_sys()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QoS;
    use crate::topic::tests::{filter_strategy, topic_strategy};
    use proptest::prelude::*;

    fn message(topic: &TopicName, payload: &'static str, expires_at_ms: Option<u64>) -> Arc<Message> {
        let mut m = Message::new(topic.clone(), payload.into(), QoS::AtMostOnce, true);
        m.expires_at_ms = expires_at_ms;
        Arc::new(m)
    }

    #[test]
    fn the_brokers_own_topics_neither_count_against_the_quota_nor_are_refused() {
        let mut map = RetainedMap::default();
        let sys = |n: usize| TopicName::new(&format!("$SYS/broker/t{n}")).unwrap();
        for n in 0..5 {
            assert!(map.fits(&message(&sys(n), "value", None), 2, 64), "the broker's own always fits");
            map.insert(message(&sys(n), "value", None));
        }
        let client = |n: usize| TopicName::new(&format!("room/{n}")).unwrap();
        assert!(map.fits(&message(&client(0), "p", None), 2, 64), "$SYS takes no client slot");
        map.insert(message(&client(0), "p", None));
        map.insert(message(&client(1), "p", None));
        assert!(!map.fits(&message(&client(2), "p", None), 2, 1 << 20), "two client slots, both taken");
        assert!(map.fits(&message(&client(1), "q", None), 2, 1 << 20), "replacing takes no new slot");
        assert_eq!(map.len(), 7, "$SYS/broker/retained messages/count still counts them all");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The tree finds what the reference matcher finds over a plain map;
        /// the count, size, deadlines and pruning agree with the model.
        #[test]
        fn agrees_with_a_scan_of_a_plain_map(
            topics in prop::collection::vec(topic_strategy(), 1..12),
            filters in prop::collection::vec(filter_strategy(), 1..8),
            ops in prop::collection::vec((0..12usize, any::<bool>(), prop::option::of(0..4u64)), 1..40),
        ) {
            let mut map = RetainedMap::default();
            let mut model: HashMap<TopicName, Arc<Message>> = HashMap::new();
            for (t, insert, expiry) in ops {
                let topic = &topics[t % topics.len()];
                if insert {
                    let m = message(topic, "p", expiry);
                    map.insert(m.clone());
                    model.insert(topic.clone(), m);
                } else {
                    prop_assert_eq!(map.remove(topic).is_some(), model.remove(topic).is_some());
                }
                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(map.bytes(), model.values().map(|m| m.footprint()).sum::<usize>());
                let own: Vec<&Arc<Message>> = model.values().filter(|m| is_broker_own(&m.topic)).collect();
                prop_assert_eq!(map.own_len, own.len());
                prop_assert_eq!(map.own_bytes, own.iter().map(|m| m.footprint()).sum::<usize>());
                for now in 0..5 {
                    let mut expired = map.expired(now);
                    expired.sort();
                    let mut want: Vec<TopicName> =
                        model.values().filter(|m| m.is_expired(now)).map(|m| m.topic.clone()).collect();
                    want.sort();
                    prop_assert_eq!(expired, want);
                    for filter in &filters {
                        let mut got: Vec<TopicName> = map.matching(filter, now).iter().map(|m| m.topic.clone()).collect();
                        got.sort();
                        let mut want: Vec<TopicName> = model
                            .values()
                            .filter(|m| filter.matches(&m.topic) && !m.is_expired(now))
                            .map(|m| m.topic.clone())
                            .collect();
                        want.sort();
                        prop_assert_eq!(got, want, "filter {}", filter);
                    }
                }
            }
            // Removing everything leaves only the root: no empty branches kept.
            for topic in model.keys() {
                map.remove(topic);
            }
            prop_assert_eq!(map.node_count(), 1);
            prop_assert!(map.expired(u64::MAX).is_empty());
        }
    }

    #[test]
    fn topics_are_listed_by_prefix_in_order() {
        let mut map = RetainedMap::default();
        for t in ["fleet/car-2/pos", "fleet/car-1/pos", "fleet", "chat/a", "$SYS/broker/uptime", "fleet/car-1"] {
            map.insert(message(&TopicName::new(t).unwrap(), "p", None));
        }
        assert_eq!(map.topics("fleet/", 10), ["fleet/car-1", "fleet/car-1/pos", "fleet/car-2/pos"]);
        assert_eq!(map.topics("fleet", 2), ["fleet", "fleet/car-1"]);
        assert_eq!(map.topics("fleet/car-1/", 10), ["fleet/car-1/pos"]);
        assert_eq!(map.topics("$SYS", 10), ["$SYS/broker/uptime"]);
        assert_eq!(map.topics("", 100).len(), 6);
        assert!(map.topics("nothing", 10).is_empty());
    }

    #[test]
    fn a_topic_of_thousands_of_levels_is_walked_without_recursion() {
        let topic = TopicName::new(&"/".repeat(40_000)).unwrap();
        let mut map = RetainedMap::default();
        map.insert(message(&topic, "deep", None));
        assert_eq!(map.matching(&TopicFilter::new("#").unwrap(), 0).len(), 1);
        assert_eq!(map.topics("", 10), [topic.as_str()]);
        assert!(map.remove(&topic).is_some());
        assert_eq!(map.node_count(), 1);
    }
}
