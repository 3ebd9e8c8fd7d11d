//! [`TopicFilter`], its reference matcher, and `$share/` parsing.

use super::{check_common, TopicError, TopicName};
use std::fmt;
use std::sync::Arc;

/// A topic filter that satisfies §4.7: non-empty, at most 65535 bytes, no
/// U+0000, '+' and '#' each occupy a whole level and '#' is the last level.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(Arc<str>);

impl TopicFilter {
    pub fn new(s: &str) -> Result<TopicFilter, TopicError> {
        check_common(s)?;
        let mut levels = s.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') {
                if level != "#" {
                    return Err(TopicError::MultiLevelNotWholeLevel);
                }
                if levels.peek().is_some() {
                    return Err(TopicError::MultiLevelNotLast);
                }
            }
            if level.contains('+') && level != "+" {
                return Err(TopicError::SingleLevelNotWholeLevel);
            }
        }
        Ok(TopicFilter(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The levels between '/' separators, wildcards included as "+" and "#".
    pub fn levels(&self) -> impl Iterator<Item = &str> + Clone {
        self.0.split('/')
    }

    /// Validation guarantees every '+' or '#' is a whole wildcard level, so a
    /// character search is enough.
    pub fn has_wildcards(&self) -> bool {
        self.0.contains(['+', '#'])
    }

    /// Whether this filter matches `topic`, level by level (§4.7.1).
    ///
    /// This is the plain reference matcher: the broker routes through
    /// [`SubscriptionTree`](super::SubscriptionTree), and the tests use this
    /// one as the oracle the tree must agree with.
    pub fn matches(&self, topic: &TopicName) -> bool {
        // [MQTT-4.7.2-1]: a leading wildcard never reaches server topics.
        // Validation makes a leading '+' or '#' a whole first level.
        if topic.is_system() && self.0.starts_with(['+', '#']) {
            return false;
        }
        let mut topic_levels = topic.levels();
        for level in self.levels() {
            match level {
                // '#' also matches the parent level: "a/#" matches "a".
                "#" => return true,
                // '+' needs a level to consume, but it may be empty.
                "+" => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                exact => {
                    if topic_levels.next() != Some(exact) {
                        return false;
                    }
                }
            }
        }
        topic_levels.next().is_none()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicFilter({:?})", &*self.0)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = TopicError;

    fn try_from(s: &str) -> Result<TopicFilter, TopicError> {
        TopicFilter::new(s)
    }
}

/// A SUBSCRIBE filter split into its optional share group and the filter
/// that is actually matched against topics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionFilter {
    /// `Some(group)` for `$share/{group}/{filter}`.
    pub share_group: Option<String>,
    pub filter: TopicFilter,
}

const SHARE_PREFIX: &str = "$share/";

/// The filter as the client sent it (`$share/{group}/{filter}` or the
/// filter): the key a session keeps its subscriptions under.
impl std::fmt::Display for SubscriptionFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.share_group {
            Some(group) => write!(f, "{SHARE_PREFIX}{group}/{}", self.filter.as_ref()),
            None => f.write_str(self.filter.as_ref()),
        }
    }
}

/// Parses a filter as sent in SUBSCRIBE, recognising shared subscriptions
/// (§4.8.2). Only the exact prefix `$share/` makes a shared subscription;
/// "$sharefoo/x" or "$share" are ordinary filters.
pub fn parse_subscription(s: &str) -> Result<SubscriptionFilter, TopicError> {
    // The whole string is what crossed the wire, so the length and U+0000
    // rules apply to it before it is taken apart.
    check_common(s)?;
    let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
        return Ok(SubscriptionFilter { share_group: None, filter: TopicFilter::new(s)? });
    };
    // No '/' at all ("$share/g") means the filter is missing entirely.
    let (group, filter) = rest.split_once('/').ok_or(TopicError::MissingSharedFilter)?;
    if group.is_empty() {
        return Err(TopicError::EmptyShareName);
    }
    // '/' cannot occur in `group` since we split on the first one.
    if let Some(c) = group.chars().find(|c| matches!(c, '+' | '#')) {
        return Err(TopicError::InvalidShareName(c));
    }
    if filter.is_empty() {
        return Err(TopicError::MissingSharedFilter);
    }
    Ok(SubscriptionFilter { share_group: Some(group.to_owned()), filter: TopicFilter::new(filter)? })
}
