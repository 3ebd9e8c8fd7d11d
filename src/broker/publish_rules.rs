//! Who may publish and subscribe to what: the `[[acl]]` rules (with a
//! token's or the hook's grants) and the topic classes' roles (`[access]
//! publish`, `subscribe` and `high_priority`). One check for a client's
//! PUBLISH (called by the client core on every transport), its will (at
//! CONNECT and again when it is published) and a bridge's in-messages; one
//! for a SUBSCRIBE, and again for the subscriptions a session keeps when it
//! is resumed or the rules are reloaded (they may have changed meanwhile).
//!
//! Owns: [`Broker::may_publish`], [`Broker::may_subscribe`],
//! [`Broker::recheck_subscriptions`] and [`Will`], a will with the identity
//! it is published under. Must never: admit a message (rate limits and sizes
//! are the class runtime's, on the publish path every message takes).

use super::{Broker, Holes, Message, SubscriptionRecord};
use crate::auth::acl::{Action, ReadAccess};
use crate::auth::Identity;
use crate::classes::AccessFile;
use crate::model::LastWill;
use crate::topic::SubscriptionFilter;
use std::sync::Arc;

/// A connection's will, with what publishing it needs: the identity whose
/// rights it is checked against again when it is published, and the rate
/// key its topic class limits it by (as the client's own publishes).
#[derive(Debug, Clone)]
pub struct Will {
    pub last_will: LastWill,
    pub identity: Arc<Identity>,
    pub rate_key: Option<Arc<str>>,
}

impl Broker {
    /// Whether `identity` (as `client_id`) may subscribe to `filter` (without
    /// any `$share/group/` prefix): the ACL, then the subscribing roles of
    /// every class the filter can reach.
    pub fn may_subscribe(&self, identity: &Identity, client_id: &str, filter: &str) -> bool {
        self.security().allows(identity, client_id, Action::Subscribe, filter) && self.roles_admit(identity, filter)
    }

    /// Whether the subscribing roles of every class `filter` can reach admit `identity`.
    fn roles_admit(&self, identity: &Identity, filter: &str) -> bool {
        identity.superuser
            || self
                .classes()
                .classes_reached_by(filter)
                .iter()
                .all(|class| AccessFile::admits(&class.access.subscribe, &identity.roles))
    }

    /// [`Broker::may_subscribe`] for a SUBSCRIBE's filter as sent: a shared
    /// subscription (`$share/GROUP/FILTER`) needs the plain filter's rights
    /// (so deny rules still apply) and, unless `[auth]
    /// share_groups_follow_filter`, a rule or grant that names the group: a
    /// client allowed `chat/+` must not take a share of the `workers` group's
    /// messages by joining `$share/workers/chat/+`.
    pub fn may_subscribe_to(&self, identity: &Identity, client_id: &str, filter: &SubscriptionFilter) -> bool {
        self.read_access_to(identity, client_id, filter).is_some()
    }

    /// [`Broker::may_subscribe_to`], with what a granted subscription must
    /// leave out: `None` refused, `Some(holes)` granted (see
    /// `auth::acl::ReadAccess`: a wildcard next to a deny rule is granted
    /// with the deny's filter as a hole).
    pub fn read_access_to(&self, identity: &Identity, client_id: &str, filter: &SubscriptionFilter) -> Option<Holes> {
        let plain = filter.filter.as_ref();
        let ReadAccess::Granted { holes } = self.security().read_access(identity, client_id, plain) else {
            return None;
        };
        let roles_admit = self.roles_admit(identity, plain);
        let group_allowed = filter.share_group.is_none()
            || identity.superuser
            || self.config.auth.share_groups_follow_filter
            || self.security().allows(identity, client_id, Action::Subscribe, &filter.to_string());
        (roles_admit && group_allowed).then(|| self.intern_holes(holes))
    }

    /// The deny filters of a granted subscription as the tree keeps them:
    /// one shared set per distinct list (a rule's filter was validated with
    /// the configuration; `%u` substitutions make per-user sets).
    fn intern_holes(&self, holes: Vec<String>) -> Holes {
        let holes: Vec<crate::topic::TopicFilter> =
            holes.iter().filter_map(|h| crate::topic::TopicFilter::new(h).ok()).collect();
        if holes.is_empty() {
            return None;
        }
        let mut interned = self.interned_holes.lock();
        if let Some(shared) = interned.get(&holes).and_then(std::sync::Weak::upgrade) {
            return Some(shared);
        }
        if interned.len() >= 1024 {
            // Forget the sets no subscription holds any more.
            interned.retain(|_, set| set.strong_count() > 0);
        }
        let shared = Arc::new(holes.clone());
        interned.insert(holes, Arc::downgrade(&shared));
        Some(shared)
    }

    /// The holes of a kept subscription before its client is back (a
    /// session restored after a restart, or handed over by another node):
    /// the `[[acl]]` rules for the session's user, without the grants of a
    /// token nobody has shown yet. Rules alone that refuse it leave it
    /// whole until the client resumes, when [`Broker::recheck_subscriptions`]
    /// decides with the real identity and drops what it queued meanwhile
    /// that it may not read.
    pub(super) fn holes_before_resume(&self, session: &super::Session, filter: &SubscriptionFilter) -> Holes {
        let identity = Identity { user: session.user.clone(), ..Identity::default() };
        match self.security().read_access(&identity, &session.client_id, filter.filter.as_ref()) {
            ReadAccess::Granted { holes } => self.intern_holes(holes),
            ReadAccess::Refused => None,
        }
    }

    /// Drops the subscriptions of `session` that `identity` may no longer
    /// hold (a resumed session under a new token, or rules reloaded), with
    /// what they queued that is not yet sent. Returns how many were dropped
    /// (counted in `starling_subscriptions_revoked_total`).
    /// Subscriptions that stay get the holes of the rules in force, and
    /// queued messages no remaining subscription may deliver are dropped.
    pub fn recheck_subscriptions(&self, session: &Arc<super::Session>, identity: &Identity) -> usize {
        let mut revoked = 0;
        let mut narrowed = false;
        for (filter, record) in session.subscriptions() {
            let Ok(parsed) = crate::topic::parse_subscription(&filter) else { continue };
            match self.read_access_to(identity, &session.client_id, &parsed) {
                Some(holes) if holes == record.holes => {}
                Some(holes) => {
                    narrowed |= holes.is_some();
                    self.set_holes(session, &parsed, SubscriptionRecord { holes, ..record });
                }
                None => {
                    if self.unsubscribe(session, &parsed) {
                        revoked += 1;
                        tracing::info!(client_id = %session.client_id, %filter, "subscription revoked: the rules no longer allow it");
                    }
                }
            }
        }
        if revoked > 0 || narrowed {
            session.forget_queued_unreadable();
        }
        if revoked > 0 {
            self.stats.subscriptions_revoked(revoked);
        }
        revoked
    }

    /// After a policy reload: every connected session keeps only the
    /// subscriptions its connection's identity may still hold. Returns how
    /// many were dropped.
    pub fn recheck_connected(&self) -> usize {
        let sessions: Vec<Arc<super::Session>> = self.sessions.lock().values().cloned().collect();
        sessions
            .iter()
            .filter_map(|s| s.attachment().and_then(|a| a.identity).map(|identity| (s, identity)))
            .map(|(session, identity)| self.recheck_subscriptions(session, &identity))
            .sum()
    }

    /// Whether `identity` (as `client_id`) may publish `message`: the ACL,
    /// then its topic class's publishing roles; a high-priority request is
    /// honoured only for the class's `high_priority` roles (otherwise it is
    /// cleared, or refused for a topic that is high priority by pattern).
    pub fn may_publish(&self, identity: &Identity, client_id: &str, message: &mut Message) -> bool {
        if !self.security().allows(identity, client_id, Action::Publish, message.topic.as_str()) {
            return false;
        }
        if identity.superuser {
            return true;
        }
        let classes = self.classes();
        // Most deployments restrict no class: skip the lookup unless a class
        // restricts publishing or the message asks for high priority.
        if !classes.restricts_publishing() && !message.handling.high_priority {
            return true;
        }
        let Some(classified) = classes.classify(&message.topic) else {
            return true;
        };
        let access = &classified.class.access;
        if !AccessFile::admits(&access.publish, &identity.roles) {
            return false;
        }
        let priority_allowed = AccessFile::admits(&access.high_priority, &identity.roles);
        if classified.high_priority && !priority_allowed {
            return false;
        }
        if !priority_allowed {
            message.handling.high_priority = false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscriptions under the same rules share one hole set: a fan-out
    /// checks it once per message (`HolesMemo`), not once per subscriber.
    #[tokio::test]
    async fn equal_hole_lists_share_one_set() {
        let broker = Broker::new(crate::config::Config::default(), Arc::new(crate::store::MemoryStore::new())).unwrap();
        let a = broker.intern_holes(vec!["a/secret".into()]).unwrap();
        let b = broker.intern_holes(vec!["a/secret".into()]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = broker.intern_holes(vec!["a/other".into()]).unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        assert!(broker.intern_holes(Vec::new()).is_none(), "no holes: nothing to check");
    }
}
