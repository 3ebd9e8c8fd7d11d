//! Who may publish what: the `[[acl]]` rules (with a token's or the hook's
//! grants) and the topic classes' roles (`[access] publish` and
//! `high_priority`). One check for a client's PUBLISH (called by the client
//! core on every transport) and for its will, at CONNECT and again when the
//! will is published (the rules may have changed meanwhile).
//!
//! Owns: [`Broker::may_publish`] and [`Will`], a will with the identity it
//! is published under. Must never: admit a message (rate limits and sizes
//! are the class runtime's, on the publish path every message takes).

use super::{Broker, Message};
use crate::auth::acl::Action;
use crate::auth::Identity;
use crate::classes::AccessFile;
use crate::model::LastWill;
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
