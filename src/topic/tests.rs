//! Spec examples from MQTT 5.0 §4.7 / §4.8.2, validation rules, and a
//! differential property test of `SubscriptionTree` against
//! `TopicFilter::matches`.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

fn name(s: &str) -> TopicName {
    TopicName::new(s).unwrap_or_else(|e| panic!("{s:?} should be a valid topic name: {e}"))
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap_or_else(|e| panic!("{s:?} should be a valid filter: {e}"))
}

/// Asks both the reference matcher and the tree, and insists they agree, so
/// every spec example below tests both implementations.
fn matches(f: &str, t: &str) -> bool {
    let (f, t) = (filter(f), name(t));
    let mut tree = SubscriptionTree::new();
    tree.insert(&f, 1u8, ());
    let mut hits = 0;
    tree.for_each_match(&t, |_, _| hits += 1);
    assert!(hits <= 1, "tree reported one entry {hits} times");
    assert_eq!(f.matches(&t), hits == 1, "tree and matcher disagree on {f} vs {t}");
    hits == 1
}

// ---- §4.7.1.2 multi-level wildcard ----

#[test]
fn spec_multi_level_wildcard_examples() {
    let f = "sport/tennis/player1/#";
    assert!(matches(f, "sport/tennis/player1"));
    assert!(matches(f, "sport/tennis/player1/ranking"));
    assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
    assert!(!matches(f, "sport/tennis/player2"));
    assert!(!matches(f, "sport/tennis"));
    // "sport/#" also matches the singular "sport", '#' includes the parent level.
    assert!(matches("sport/#", "sport"));
    assert!(matches("sport/#", "sport/"));
    assert!(matches("#", "sport/tennis"));
    assert!(matches("#", "/"));
}

#[test]
fn spec_multi_level_wildcard_validity() {
    for ok in ["#", "sport/tennis/#", "sport/#", "/#", "+/#"] {
        filter(ok);
    }
    assert_eq!(TopicFilter::new("sport/tennis#"), Err(TopicError::MultiLevelNotWholeLevel));
    assert_eq!(TopicFilter::new("sport/tennis/#/ranking"), Err(TopicError::MultiLevelNotLast));
    assert_eq!(TopicFilter::new("#/"), Err(TopicError::MultiLevelNotLast));
    assert_eq!(TopicFilter::new("##"), Err(TopicError::MultiLevelNotWholeLevel));
    assert_eq!(
        TopicFilter::new("a/#/b").unwrap_err().to_string(),
        "[MQTT-4.7.1-1] wildcard '#' must be the last level"
    );
}

// ---- §4.7.1.3 single-level wildcard ----

#[test]
fn spec_single_level_wildcard_examples() {
    let f = "sport/tennis/+";
    assert!(matches(f, "sport/tennis/player1"));
    assert!(matches(f, "sport/tennis/player2"));
    assert!(!matches(f, "sport/tennis/player1/ranking"));
    // "sport/+" does not match "sport" but does match "sport/" (empty level).
    assert!(!matches("sport/+", "sport"));
    assert!(matches("sport/+", "sport/"));
    assert!(matches("sport/+/player1", "sport/tennis/player1"));
    assert!(matches("+/tennis/#", "sport/tennis"));
    assert!(matches("+/tennis/#", "sport/tennis/player1/ranking"));
    // "/finance" has two levels, the first empty.
    assert!(matches("+/+", "/finance"));
    assert!(matches("/+", "/finance"));
    assert!(!matches("+", "/finance"));
    assert!(matches("+/+", "/"));
    assert!(matches("+", "finance"));
}

#[test]
fn spec_single_level_wildcard_validity() {
    for ok in ["+", "+/tennis/#", "sport/+/player1", "+/+", "/+", "+/"] {
        filter(ok);
    }
    assert_eq!(TopicFilter::new("sport+"), Err(TopicError::SingleLevelNotWholeLevel));
    assert_eq!(TopicFilter::new("sport/+x"), Err(TopicError::SingleLevelNotWholeLevel));
    assert_eq!(TopicFilter::new("++"), Err(TopicError::SingleLevelNotWholeLevel));
}

// ---- §4.7.2 topics beginning with '$' ----

#[test]
fn spec_dollar_topics() {
    assert!(!matches("#", "$SYS/monitor/Clients"));
    assert!(!matches("#", "$SYS"));
    assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(!matches("+", "$SYS"));
    assert!(!matches("+/#", "$SYS/x"));
    assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
    assert!(matches("$SYS/#", "$SYS"));
    assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert!(matches("$SYS/+/Clients", "$SYS/monitor/Clients"));
    // Only the first character counts: '$' later in a topic is ordinary.
    assert!(matches("+/$x", "a/$x"));
    assert!(matches("#", "a/$SYS"));
    assert!(name("$SYS/x").is_system());
    assert!(!name("a/$SYS").is_system());
    assert!(name("$SYS").is_sys() && name("$SYS/broker/uptime").is_sys());
    assert!(!name("$SYSTEM/x").is_sys() && !name("$app/x").is_sys() && !name("a/$SYS").is_sys());
    assert!(name("$canary/mqtt").is_node_local() && name("$SYS/x").is_node_local());
    assert!(!name("$app/d/t").is_node_local() && !name("$canaryx/y").is_node_local());
}

// ---- §4.7.3 topic semantics and validation ----

#[test]
fn spec_topic_semantics() {
    // Case sensitive.
    assert!(!matches("ACCOUNTS", "Accounts"));
    assert!(matches("Accounts", "Accounts"));
    // Spaces are ordinary characters.
    assert!(matches("Accounts payable", "Accounts payable"));
    // A leading '/' makes a distinct topic.
    assert!(!matches("finance", "/finance"));
    assert!(!matches("/finance", "finance"));
    // "/" alone is a valid name with two empty levels.
    assert_eq!(name("/").levels().collect::<Vec<_>>(), ["", ""]);
    assert_eq!(name("a//b").levels().collect::<Vec<_>>(), ["a", "", "b"]);
    assert!(matches("a//b", "a//b"));
    assert!(matches("a/+/b", "a//b"));
    assert!(!matches("a/b", "a//b"));
}

#[test]
fn name_validation() {
    assert_eq!(TopicName::new(""), Err(TopicError::Empty));
    assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName('+')));
    assert_eq!(TopicName::new("a/#"), Err(TopicError::WildcardInName('#')));
    assert_eq!(TopicName::new("a+b"), Err(TopicError::WildcardInName('+')));
    assert_eq!(TopicName::new("a\0b"), Err(TopicError::NullCharacter));
    assert_eq!(TopicFilter::new(""), Err(TopicError::Empty));
    assert_eq!(TopicFilter::new("a/\0"), Err(TopicError::NullCharacter));

    let longest = "a".repeat(MAX_TOPIC_LEN);
    assert!(TopicName::new(&longest).is_ok());
    assert!(TopicFilter::new(&longest).is_ok());
    let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
    assert_eq!(TopicName::new(&too_long), Err(TopicError::TooLong { len: 65_536 }));
    assert_eq!(TopicFilter::new(&too_long), Err(TopicError::TooLong { len: 65_536 }));
    // The limit is in bytes, not characters.
    assert!(TopicName::new(&"é".repeat(32_768)).is_err());
}

#[test]
fn name_and_filter_accessors() {
    let n = name("a/b");
    let clone = n.clone();
    assert_eq!(n, clone);
    assert_eq!(n.as_str(), "a/b");
    assert_eq!(n.to_string(), "a/b");
    assert_eq!(format!("{n:?}"), "TopicName(\"a/b\")");
    assert!(!n.is_system());
    assert!(name("a") < name("b"));

    let f = filter("a/+/#");
    assert!(f.has_wildcards());
    assert!(!filter("a/b").has_wildcards());
    assert_eq!(f.levels().collect::<Vec<_>>(), ["a", "+", "#"]);
    assert_eq!(f.to_string(), "a/+/#");
}

// ---- §4.8.2 shared subscriptions ----

#[test]
fn shared_subscriptions() {
    let s = parse_subscription("$share/group/sport/+").unwrap();
    assert_eq!(s.share_group.as_deref(), Some("group"));
    assert_eq!(s.filter, filter("sport/+"));

    let s = parse_subscription("$share/g/#").unwrap();
    assert_eq!(s.filter, filter("#"));
    // The '$' rule applies to the filter part: "$share/g/#" does not see $SYS.
    assert!(!s.filter.matches(&name("$SYS/x")));

    for plain in ["sport/+", "$sharefoo/x", "$share", "$SYS/#", "a/$share/g/x"] {
        let s = parse_subscription(plain).unwrap();
        assert_eq!(s.share_group, None, "{plain}");
        assert_eq!(s.filter.as_str(), plain);
    }

    assert_eq!(parse_subscription("$share/g"), Err(TopicError::MissingSharedFilter));
    assert_eq!(parse_subscription("$share/g/"), Err(TopicError::MissingSharedFilter));
    assert_eq!(parse_subscription("$share//x"), Err(TopicError::EmptyShareName));
    assert_eq!(parse_subscription("$share/"), Err(TopicError::MissingSharedFilter));
    assert_eq!(parse_subscription("$share/g+/x"), Err(TopicError::InvalidShareName('+')));
    assert_eq!(parse_subscription("$share/#/x"), Err(TopicError::InvalidShareName('#')));
    assert_eq!(parse_subscription("$share/g/a/#/b"), Err(TopicError::MultiLevelNotLast));
    assert_eq!(parse_subscription("a#"), Err(TopicError::MultiLevelNotWholeLevel));
    assert_eq!(parse_subscription(""), Err(TopicError::Empty));
    assert_eq!(parse_subscription("$share/g/\0"), Err(TopicError::NullCharacter));

    // What the broker keys a session's subscriptions by: the filter as sent.
    for sent in ["$share/group/sport/+", "$share/g/#", "sport/+", "$sharefoo/x", "$SYS/#", "a//b"] {
        assert_eq!(parse_subscription(sent).unwrap().to_string(), sent);
    }
}

// ---- SubscriptionTree behaviour ----

fn collect(tree: &SubscriptionTree<&'static str, u32>, topic: &str) -> Vec<(&'static str, u32)> {
    let mut out = Vec::new();
    tree.for_each_match(&name(topic), |k, v| out.push((*k, *v)));
    out.sort();
    out
}

#[test]
fn tree_insert_replace_get_remove() {
    let mut tree = SubscriptionTree::new();
    let f = filter("a/+/c");
    assert!(tree.is_empty());
    assert_eq!(tree.insert(&f, "k1", 1), None);
    assert_eq!(tree.insert(&f, "k2", 2), None);
    assert_eq!(tree.insert(&f, "k1", 10), Some(1));
    assert_eq!(tree.len(), 2);
    assert_eq!(tree.get(&f, "k1"), Some(&10));
    assert_eq!(tree.get(&filter("a/b/c"), "k1"), None);
    *tree.get_mut(&f, "k2").unwrap() += 5;
    assert_eq!(collect(&tree, "a/b/c"), [("k1", 10), ("k2", 7)]);
    assert_eq!(tree.remove(&f, "k1"), Some(10));
    assert_eq!(tree.remove(&f, "k1"), None);
    assert_eq!(tree.remove(&filter("a/+"), "k2"), None);
    assert_eq!(tree.len(), 1);
    assert_eq!(collect(&tree, "a/b/c"), [("k2", 7)]);
}

#[test]
fn tree_keeps_exact_and_multi_entries_apart() {
    // "a" and "a/#" end at the same node but are different subscriptions.
    let mut tree = SubscriptionTree::new();
    tree.insert(&filter("a"), "k", 1);
    tree.insert(&filter("a/#"), "k", 2);
    // A literal "+" level is never stored as the wildcard, and vice versa.
    tree.insert(&filter("a/+"), "k", 3);
    assert_eq!(tree.len(), 3);
    assert_eq!(collect(&tree, "a"), [("k", 1), ("k", 2)]);
    assert_eq!(collect(&tree, "a/x"), [("k", 2), ("k", 3)]);
    assert_eq!(tree.remove(&filter("a/#"), "k"), Some(2));
    assert_eq!(collect(&tree, "a"), [("k", 1)]);
}

#[test]
fn tree_prunes_empty_nodes() {
    let mut tree = SubscriptionTree::new();
    let filters = ["a/b/c/d", "a/b/+/#", "a/b", "#", "+/+", "/"];
    for (i, f) in filters.iter().enumerate() {
        tree.insert(&filter(f), i, ());
    }
    assert!(tree.node_count() > 1);
    for (i, f) in filters.iter().enumerate() {
        assert_eq!(tree.remove(&filter(f), &i), Some(()));
    }
    assert!(tree.is_empty());
    assert_eq!(tree.node_count(), 1, "only the root should remain");

    // Removing a leaf keeps the part of the chain another filter still uses.
    tree.insert(&filter("a/b/c"), 0, ());
    tree.insert(&filter("a/x"), 0, ());
    tree.remove(&filter("a/b/c"), &0);
    assert_eq!(tree.node_count(), 3); // root, a, x
}

#[test]
fn tree_survives_very_deep_filters() {
    // 65535 bytes of '/' is a valid filter with 65536 empty levels. Matching,
    // removal and drop must not recurse per level or they overflow the stack.
    let deep = "/".repeat(MAX_TOPIC_LEN);
    let deep_plus = format!("+{}", "/+".repeat(MAX_TOPIC_LEN / 2));
    let mut tree = SubscriptionTree::new();
    tree.insert(&filter(&deep), 1u8, ());
    tree.insert(&filter(&format!("{}#", "/".repeat(MAX_TOPIC_LEN - 1))), 2, ());
    tree.insert(&filter(&deep_plus), 3, ());
    let mut hits = Vec::new();
    tree.for_each_match(&name(&deep), |k, _| hits.push(*k));
    hits.sort();
    assert_eq!(hits, [1, 2]);
    let plus_topic = format!("a{}", "/a".repeat(MAX_TOPIC_LEN / 2));
    hits.clear();
    tree.for_each_match(&name(&plus_topic), |k, _| hits.push(*k));
    assert_eq!(hits, [3]);
    assert_eq!(tree.remove(&filter(&deep), &1), Some(()));
    drop(tree);
}

// ---- differential property test ----

const LEVELS: [&str; 6] = ["", "a", "b", "$SYS", "+", "#"];
const TOPIC_LEVELS: [&str; 5] = ["", "a", "b", "$SYS", "c"];

fn join(levels: &[usize], alphabet: &[&str]) -> String {
    levels.iter().map(|&i| alphabet[i]).collect::<Vec<_>>().join("/")
}

pub(crate) fn filter_strategy() -> impl Strategy<Value = TopicFilter> {
    prop::collection::vec(0..LEVELS.len(), 1..5)
        .prop_filter_map("invalid filter", |l| TopicFilter::new(&join(&l, &LEVELS)).ok())
}

pub(crate) fn topic_strategy() -> impl Strategy<Value = TopicName> {
    prop::collection::vec(0..TOPIC_LEVELS.len(), 1..5)
        .prop_filter_map("invalid topic", |l| TopicName::new(&join(&l, &TOPIC_LEVELS)).ok())
}

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, u8, u32),
    Remove(usize, u8),
}

fn op_strategy(filters: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..filters, 0..3u8, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
        2 => (0..filters, 0..3u8).prop_map(|(f, k)| Op::Remove(f, k)),
    ]
}

/// Nodes the trie needs for `live` filters: the root plus every distinct
/// proper path prefix (the '#' level is not a node).
fn expected_nodes(live: &HashMap<(TopicFilter, u8), u32>) -> usize {
    let mut prefixes = BTreeSet::new();
    for (f, _) in live.keys() {
        let path: Vec<&str> = f.levels().take_while(|l| *l != "#").collect();
        for n in 1..=path.len() {
            prefixes.insert(path[..n].join("\u{1}"));
        }
    }
    prefixes.len() + 1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tree_agrees_with_reference_matcher(
        filters in prop::collection::vec(filter_strategy(), 1..12),
        topics in prop::collection::vec(topic_strategy(), 1..12),
        ops in prop::collection::vec(op_strategy(12), 1..60),
    ) {
        // The tree's value carries the entry's filter, so a duplicate or a
        // match reported for the wrong filter shows up in the comparison.
        let mut tree: SubscriptionTree<u8, (TopicFilter, u32)> = SubscriptionTree::new();
        let mut model: HashMap<(TopicFilter, u8), u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(f, k, v) => {
                    let f = &filters[f % filters.len()];
                    let old = tree.insert(f, k, (f.clone(), v)).map(|(_, v)| v);
                    prop_assert_eq!(old, model.insert((f.clone(), k), v));
                }
                Op::Remove(f, k) => {
                    let f = &filters[f % filters.len()];
                    let old = tree.remove(f, &k).map(|(_, v)| v);
                    prop_assert_eq!(old, model.remove(&(f.clone(), k)));
                }
            }
            prop_assert_eq!(tree.len(), model.len());
            prop_assert_eq!(tree.node_count(), expected_nodes(&model));
            for ((f, k), v) in &model {
                prop_assert_eq!(tree.get(f, k), Some(&(f.clone(), *v)));
            }
            for topic in &topics {
                let mut got = Vec::new();
                tree.for_each_match(topic, |k, (f, v)| got.push((f.to_string(), *k, *v)));
                got.sort();
                let mut want: Vec<(String, u8, u32)> = model
                    .iter()
                    .filter(|((f, _), _)| f.matches(topic))
                    .map(|((f, k), v)| (f.to_string(), *k, *v))
                    .collect();
                want.sort();
                prop_assert_eq!(got, want, "topic {}", topic);
            }
        }
    }
}
