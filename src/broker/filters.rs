//! [`SessionFilters`]: the filters one session subscribed to, as it sent
//! them, with their options.
//!
//! Owns: the per-session subscription list, kept small for the common case
//! (a client with one or a few subscriptions holds one exact-size array, not
//! a hash table: an empty table's first insert would allocate room for four
//! entries and their control bytes) and switching to a hash map past
//! [`FEW`] entries, so a client with thousands stays fast.
//! Must never: route (the broker's subscription tree does), or hold the
//! session's lock (it lives inside it).

use crate::model::SubscriptionOptions;
use crate::store::StoredSubscription;
use crate::topic::{ProcessKeys, TopicFilter, TopicName};
use std::collections::HashMap;
use std::sync::Arc;

/// The topics a granted subscription must not deliver: the filters of the
/// deny rules it overlaps (`auth::acl::ReadAccess`). `None` for almost
/// every subscription; one pointer wide, since every subscription has one.
pub type Holes = Option<Arc<Vec<TopicFilter>>>;

/// Whether `holes` leave `topic` out.
pub fn in_holes(holes: &Holes, topic: &TopicName) -> bool {
    holes.as_ref().is_some_and(|holes| holes.iter().any(|hole| hole.matches(topic)))
}

/// The last hole check of one routing pass. Subscriptions under the same
/// rules share one interned set (`Broker::intern_holes`), so a fan-out to
/// thousands of them checks the set once per message, not once each.
/// Holds a pointer only as an identity: never dereferenced.
#[derive(Default)]
pub struct HolesMemo(Option<(*const Vec<TopicFilter>, bool)>);

impl HolesMemo {
    /// Whether `holes` leave `topic` out (the topic is the same for the
    /// whole pass).
    pub fn excludes(&mut self, holes: &Holes, topic: &TopicName) -> bool {
        let Some(set) = holes else { return false };
        let key = Arc::as_ptr(set);
        match self.0 {
            Some((last, excluded)) if last == key => excluded,
            _ => {
                let excluded = set.iter().any(|hole| hole.matches(topic));
                self.0 = Some((key, excluded));
                excluded
            }
        }
    }
}

/// A subscription as the session remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
    /// Not stored: worked out again from the rules in force whenever the
    /// subscription is restored, resumed or re-checked.
    pub holes: Holes,
}

impl SubscriptionRecord {
    /// The subscription to `filter` as the store (and the cluster) keep it.
    pub fn to_stored(&self, filter: String) -> StoredSubscription {
        StoredSubscription { filter, options: self.options, identifier: self.identifier }
    }

    /// A kept subscription's record (its filter aside).
    pub fn from_stored(stored: &StoredSubscription) -> SubscriptionRecord {
        SubscriptionRecord { options: stored.options, identifier: stored.identifier, holes: None }
    }
}

/// Up to this many, a linear scan of a small array (cheaper than hashing).
const FEW: usize = 16;

#[derive(Debug)]
pub enum SessionFilters {
    Few(Vec<(Box<str>, SubscriptionRecord)>),
    Many(HashMap<Box<str>, SubscriptionRecord, ProcessKeys>),
}

impl Default for SessionFilters {
    fn default() -> Self {
        SessionFilters::Few(Vec::new())
    }
}

impl SessionFilters {
    /// Adds or replaces `filter`'s record; returns the one it replaced.
    pub fn insert(&mut self, filter: &str, record: SubscriptionRecord) -> Option<SubscriptionRecord> {
        match self {
            SessionFilters::Few(entries) => {
                if let Some((_, old)) = entries.iter_mut().find(|(f, _)| &**f == filter) {
                    return Some(std::mem::replace(old, record));
                }
                if entries.len() < FEW {
                    // Exact growth: most sessions hold one or two filters.
                    entries.reserve_exact(1);
                    entries.push((filter.into(), record));
                    return None;
                }
                let mut map: HashMap<_, _, ProcessKeys> = entries.drain(..).collect();
                map.insert(filter.into(), record);
                *self = SessionFilters::Many(map);
                None
            }
            SessionFilters::Many(map) => map.insert(filter.into(), record),
        }
    }

    pub fn remove(&mut self, filter: &str) -> Option<SubscriptionRecord> {
        match self {
            SessionFilters::Few(entries) => {
                let at = entries.iter().position(|(f, _)| &**f == filter)?;
                let (_, record) = entries.swap_remove(at);
                entries.shrink_to_fit();
                Some(record)
            }
            SessionFilters::Many(map) => map.remove(filter),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            SessionFilters::Few(entries) => entries.len(),
            SessionFilters::Many(map) => map.len(),
        }
    }

    pub fn contains(&self, filter: &str) -> bool {
        match self {
            SessionFilters::Few(entries) => entries.iter().any(|(f, _)| &**f == filter),
            SessionFilters::Many(map) => map.contains_key(filter),
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &SubscriptionRecord)> + '_> {
        match self {
            SessionFilters::Few(entries) => Box::new(entries.iter().map(|(f, r)| (&**f, r))),
            SessionFilters::Many(map) => Box::new(map.iter().map(|(f, r)| (&**f, r))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{QoS, SubscriptionOptions};

    fn record(qos: QoS) -> SubscriptionRecord {
        SubscriptionRecord { options: SubscriptionOptions { qos, ..Default::default() }, identifier: None, holes: None }
    }

    #[test]
    fn the_memo_answers_a_shared_set_once_and_tells_sets_apart() {
        let topic = TopicName::new("a/secret").unwrap();
        let secret: Holes = Some(Arc::new(vec![TopicFilter::new("a/secret").unwrap()]));
        let other: Holes = Some(Arc::new(vec![TopicFilter::new("a/other").unwrap()]));
        let mut memo = HolesMemo::default();
        assert!(memo.excludes(&secret, &topic));
        assert!(memo.excludes(&secret.clone(), &topic), "the same set, remembered");
        assert!(!memo.excludes(&other, &topic), "another set is checked anew");
        assert!(!memo.excludes(&None, &topic));
        assert!(in_holes(&secret, &topic) && !in_holes(&other, &topic));
    }

    #[test]
    fn behaves_like_a_map_below_and_above_the_switch() {
        let mut filters = SessionFilters::default();
        for i in 0..40 {
            assert_eq!(filters.insert(&format!("f/{i}"), record(QoS::AtMostOnce)), None);
            assert_eq!(filters.len(), i + 1);
            assert_eq!(matches!(filters, SessionFilters::Many(_)), i >= FEW, "at {i}");
        }
        assert_eq!(filters.insert("f/3", record(QoS::AtLeastOnce)), Some(record(QoS::AtMostOnce)));
        assert!(filters.contains("f/39") && !filters.contains("f/40"));
        assert_eq!(filters.remove("f/3"), Some(record(QoS::AtLeastOnce)));
        assert_eq!(filters.remove("f/3"), None);
        assert_eq!(filters.iter().count(), 39);
        let mut few = SessionFilters::default();
        few.insert("a", record(QoS::AtMostOnce));
        few.insert("b", record(QoS::AtMostOnce));
        assert_eq!(few.remove("a"), Some(record(QoS::AtMostOnce)));
        assert_eq!(few.iter().map(|(f, _)| f.to_string()).collect::<Vec<_>>(), ["b"]);
    }
}
