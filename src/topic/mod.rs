//! Topic names, topic filters and the subscription tree that matches one
//! against the other (MQTT 5.0 §4.7, shared subscriptions §4.8.2).
//!
//! Owns: validation of topic names (PUBLISH) and topic filters (SUBSCRIBE,
//! UNSUBSCRIBE), parsing of the `$share/{group}/` prefix, and
//! [`SubscriptionTree`], the trie that finds every subscription matching a
//! published topic. A [`TopicName`] or [`TopicFilter`] that exists is valid,
//! so code past the codec never re-checks the §4.7 rules.
//!
//! Must never: know about sessions, clients, QoS, retained messages or locks.
//! The tree stores opaque keys and values; which subscriber wins a shared
//! group, and any access control, is decided by the caller.

mod filter;
mod name;
mod tree;

#[cfg(test)]
pub(crate) mod tests;

pub use filter::{parse_subscription, SubscriptionFilter, TopicFilter};
pub use name::TopicName;
pub use tree::{ProcessKeys, SubscriptionTree};

/// Longest topic name or filter in bytes: both travel as an MQTT UTF-8
/// string, whose length prefix is a u16 ([MQTT-4.7.3-3]).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a topic name, topic filter or shared subscription was refused. Each
/// message cites the conformance statement it enforces, so a log line or a
/// DISCONNECT reason string tells the client exactly what it got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("[MQTT-4.7.3-1] topic names and topic filters must be at least one character long")]
    Empty,
    #[error("[MQTT-4.7.3-3] topic is {len} bytes long, the limit is 65535")]
    TooLong { len: usize },
    #[error("[MQTT-4.7.3-2] topic names and topic filters must not contain U+0000")]
    NullCharacter,
    #[error("[MQTT-4.7.0-1] wildcard '{0}' must not be used in a topic name")]
    WildcardInName(char),
    #[error("[MQTT-4.7.1-1] wildcard '#' must occupy a whole level")]
    MultiLevelNotWholeLevel,
    #[error("[MQTT-4.7.1-1] wildcard '#' must be the last level")]
    MultiLevelNotLast,
    #[error("[MQTT-4.7.1-2] wildcard '+' must occupy a whole level")]
    SingleLevelNotWholeLevel,
    #[error("[MQTT-4.8.2-1] shared subscription must name a share group of at least one character")]
    EmptyShareName,
    #[error("[MQTT-4.8.2-2] share group must not contain '{0}'")]
    InvalidShareName(char),
    #[error("[MQTT-4.8.2-2] share group must be followed by '/' and a topic filter")]
    MissingSharedFilter,
}

/// The checks topic names and filters share: length and U+0000
/// ([MQTT-4.7.3-1..3]). UTF-8 well-formedness is already guaranteed by `&str`.
fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: s.len() });
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}
