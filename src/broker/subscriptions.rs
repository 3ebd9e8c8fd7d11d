//! Subscriptions: adding and removing them in the tree (plain and
//! `$share/` groups), and the retained messages a new subscription receives.
//!
//! Owns: the entries of `Broker::subscriptions`. Must never: check who may
//! subscribe (the client core does), or hold the tree's write lock while
//! enqueueing retained messages.

use super::*;

impl Broker {
    /// Adds or replaces one subscription of the broker's own (a bridge's:
    /// no rules apply, so no holes) and queues the retained messages it
    /// asks for. Returns the granted QoS. The filter comes validated (a
    /// `SubscriptionFilter` cannot exist otherwise): the edge parsed it once.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &SubscriptionFilter,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> QoS {
        let record = SubscriptionRecord { options, identifier, holes: None };
        let granted = self.subscribe_unsaved(session, filter, record);
        session.save();
        granted
    }

    /// [`Broker::subscribe`] without saving the session record: a SUBSCRIBE
    /// of many filters saves once, after the last (see
    /// `client::Client::subscribe_all`). `record.holes` come from the rules
    /// (`Broker::read_access_to`): neither live messages nor retained ones
    /// in them are delivered.
    pub fn subscribe_unsaved(
        &self,
        session: &Arc<Session>,
        parsed: &SubscriptionFilter,
        record: SubscriptionRecord,
    ) -> QoS {
        let (options, identifier) = (record.options, record.identifier);
        let filter = parsed.to_string();
        let existed = session.add_subscription(&filter, record.clone()).is_some();
        if !existed {
            self.interest_changed(&filter, 1);
        }
        {
            let mut tree = self.subscriptions.write();
            insert_subscription(&mut tree, session, parsed.share_group.as_deref(), &parsed.filter, &record);
        }
        // Retained messages are not sent to shared subscriptions ([MQTT-3.8.4-?], as
        // Mosquitto and EMQX do); retain handling 1 sends them only for a new subscription.
        let send_retained = parsed.share_group.is_none()
            && match options.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
        if send_retained {
            let now = now_ms();
            let retained = self.retained.read();
            // A filter without wildcards names one topic: a lookup; with
            // wildcards, a walk of the branches the filter can match.
            let matching: Vec<Arc<Message>> = if parsed.filter.has_wildcards() {
                retained.matching(&parsed.filter, now)
            } else {
                TopicName::new(parsed.filter.as_ref())
                    .ok()
                    .and_then(|t| retained.get(&t).cloned())
                    .filter(|m| !m.is_expired(now))
                    .into_iter()
                    .collect()
            };
            drop(retained);
            for message in matching.into_iter().filter(|m| !in_holes(&record.holes, &m.topic)) {
                let qos = message.qos.min(options.qos);
                session.enqueue(Delivery {
                    message,
                    qos,
                    retain: true,
                    subscription_ids: identifier.into_iter().collect(),
                    seq: None,
                });
            }
        }
        options.qos
    }

    /// Gives a kept subscription new holes (the rules changed, or its
    /// client came back with its real identity): the record and the tree's
    /// entry, nothing sent again.
    pub(super) fn set_holes(&self, session: &Arc<Session>, parsed: &SubscriptionFilter, record: SubscriptionRecord) {
        let filter = parsed.to_string();
        if session.add_subscription(&filter, record.clone()).is_none() {
            // Removed meanwhile: leave it removed.
            session.remove_subscription(&filter);
            return;
        }
        let mut tree = self.subscriptions.write();
        insert_subscription(&mut tree, session, parsed.share_group.as_deref(), &parsed.filter, &record);
    }

    /// Removes one subscription. Returns whether it existed.
    pub fn unsubscribe(&self, session: &Arc<Session>, parsed: &SubscriptionFilter) -> bool {
        let filter = parsed.to_string();
        if session.remove_subscription(&filter).is_none() {
            return false;
        }
        self.interest_changed(&filter, -1);
        {
            let mut tree = self.subscriptions.write();
            remove_subscription(&mut tree, session, parsed.share_group.as_deref(), &parsed.filter);
        }
        session.save();
        true
    }
}

/// Round-robin over the group, preferring connected members; a group whose
/// members are all offline still queues for one of them (persistent
/// sessions). Members whose holes leave `topic` out are passed over.
pub(super) fn pick_shared_member<'a>(
    members: &'a [Subscriber],
    next: &AtomicUsize,
    topic: &TopicName,
) -> Option<&'a Subscriber> {
    if members.is_empty() {
        return None;
    }
    let start = next.fetch_add(1, Ordering::Relaxed);
    let in_turn = (0..members.len()).map(|k| &members[(start + k) % members.len()]).filter(|m| !m.excludes(topic));
    in_turn.clone().find(|m| m.session.is_connected()).or_else(|| in_turn.clone().next())
}

pub(super) fn insert_subscription(
    tree: &mut SubscriptionTree<SubscriberKey, SubscriptionEntry>,
    session: &Arc<Session>,
    share_group: Option<&str>,
    filter: &TopicFilter,
    record: &SubscriptionRecord,
) {
    let subscriber = Subscriber {
        session: session.clone(),
        options: record.options,
        identifier: record.identifier.and_then(std::num::NonZeroU32::new),
        holes: record.holes.clone(),
    };
    match share_group {
        None => {
            tree.insert(
                filter,
                SubscriberKey::Client(session.client_id.clone()),
                SubscriptionEntry::Client(subscriber),
            );
        }
        Some(group) => {
            let key = SubscriberKey::SharedGroup(Arc::from(group));
            if let Some(SubscriptionEntry::Shared { members, .. }) = tree.get_mut(filter, &key) {
                members.retain(|m| m.session.client_id != session.client_id);
                members.push(subscriber);
            } else {
                tree.insert(
                    filter,
                    key,
                    SubscriptionEntry::Shared { members: vec![subscriber], next: AtomicUsize::new(0) },
                );
            }
        }
    }
}

pub(super) fn remove_subscription(
    tree: &mut SubscriptionTree<SubscriberKey, SubscriptionEntry>,
    session: &Arc<Session>,
    share_group: Option<&str>,
    filter: &TopicFilter,
) {
    match share_group {
        None => {
            let key = SubscriberKey::Client(session.client_id.clone());
            // Only remove the entry if it belongs to this session object (a
            // newer session with the same client id may have replaced it).
            if let Some(SubscriptionEntry::Client(sub)) = tree.get(filter, &key) {
                if Arc::ptr_eq(&sub.session, session) {
                    tree.remove(filter, &key);
                }
            }
        }
        Some(group) => {
            let key = SubscriberKey::SharedGroup(Arc::from(group));
            let now_empty = match tree.get_mut(filter, &key) {
                Some(SubscriptionEntry::Shared { members, .. }) => {
                    members.retain(|m| !Arc::ptr_eq(&m.session, session));
                    members.is_empty()
                }
                _ => false,
            };
            if now_empty {
                tree.remove(filter, &key);
            }
        }
    }
}
