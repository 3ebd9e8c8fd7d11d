//! [`TopicName`]: the validated topic of a PUBLISH.

use super::{check_common, TopicError};
use std::fmt;
use std::sync::Arc;

/// A topic name that satisfies §4.7: non-empty, at most 65535 bytes, no
/// U+0000 and no wildcard characters.
///
/// Stored as `Arc<str>` because one published topic is handed to every
/// matching session and often kept in retained and queued messages; cloning
/// must not copy the string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    pub fn new(s: &str) -> Result<TopicName, TopicError> {
        check_common(s)?;
        // Wildcards are only meaningful in filters; a name containing one
        // could never be matched consistently ([MQTT-4.7.0-1]).
        if let Some(c) = s.chars().find(|c| matches!(c, '+' | '#')) {
            return Err(TopicError::WildcardInName(c));
        }
        Ok(TopicName(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The levels between '/' separators. Empty levels are legal and
    /// significant: "/a" has the levels "" and "a", "a/" has "a" and "".
    pub fn levels(&self) -> impl Iterator<Item = &str> + Clone {
        self.0.split('/')
    }

    /// Topics beginning with '$' are reserved for the server (e.g. `$SYS`)
    /// and are not matched by filters starting with a wildcard ([MQTT-4.7.2-1]).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// `$SYS` and below: the broker's own status topics (no client may
    /// publish there). Other `$` topics (`$app/...`) are the clients' own.
    pub fn is_sys(&self) -> bool {
        self.first_level_is("$SYS")
    }

    /// Topics that describe one node and stay on it in a cluster: `$SYS/...`
    /// (each node's own counters) and `$canary/...` (each node probes its
    /// own listeners). Every other topic, `$`-topics included, is the
    /// cluster's.
    pub fn is_node_local(&self) -> bool {
        self.is_sys() || self.first_level_is("$canary")
    }

    fn first_level_is(&self, level: &str) -> bool {
        self.0.strip_prefix(level).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicName({:?})", &*self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TopicName {
    type Error = TopicError;

    fn try_from(s: &str) -> Result<TopicName, TopicError> {
        TopicName::new(s)
    }
}
