//! Publishing a run: one publisher's consecutive messages to one topic,
//! admitted under one hold of the topic's order lock and routed in one pass,
//! so that each subscriber's session is locked once per run instead of once
//! per message.
//!
//! Why: at a large fan-out the routing cost is memory, not instructions.
//! Every delivery's store into a subscriber's outbox ring misses the cache,
//! and the unlock after it waits for that store; a profile of 1→1,000 spent
//! most of the routing time there (docs/performance.md, "Routing runs").
//! With a run, a subscriber's deliveries go into adjacent ring slots under
//! one lock, and their misses overlap.
//!
//! Owns: [`Broker::publish_run`] and its routing pass.
//! Must never: make a subscriber's view differ from publishing the messages
//! one by one (same order, same class policies and counters, one copy per
//! client), or hold a lock across an `.await`.

use super::routing::{merge_duplicate, SharedScope, Tally};
use super::subscriptions::pick_shared_member;
use super::*;

impl Broker {
    /// [`Broker::publish_run`], then paces the publisher once for the run,
    /// as [`Broker::publish_paced`] does for one message.
    pub async fn publish_run_paced(&self, messages: Vec<Message>) -> (Vec<PublishOutcome>, Vec<Message>) {
        let (outcomes, rest) = self.publish_run(messages);
        if let Some(session) = outcomes.iter().rev().find_map(|o| o.congested.as_ref()) {
            session.wait_for_room(MAX_PACING_WAIT).await;
        }
        (outcomes, rest)
    }

    /// Publishes `messages` (one topic, in the order one publisher sent
    /// them) as [`Broker::publish`] would one by one, and returns one
    /// outcome per message taken. Only the last outcome carries the pacing
    /// verdict (`congested`): the publisher waits once for the run. A
    /// message its class refuses ends the run, as it may end the
    /// connection: its outcome is the last, and the messages after it come
    /// back untouched (the caller publishes them, or closes). In a cluster
    /// each message is published alone (the backplane forwards them one by
    /// one).
    pub fn publish_run(&self, messages: Vec<Message>) -> (Vec<PublishOutcome>, Vec<Message>) {
        if messages.len() < 2 || self.backplane.get().is_some() {
            let mut messages = messages.into_iter();
            let mut outcomes = Vec::new();
            for message in messages.by_ref() {
                let outcome = self.publish(message);
                let refused = outcome.refused.is_some();
                outcomes.push(outcome);
                if refused {
                    break;
                }
            }
            return (outcomes, messages.collect());
        }
        debug_assert!(messages.windows(2).all(|w| w[0].topic == w[1].topic), "a run has one topic");
        let now = now_ms();
        let mut outcomes: Vec<PublishOutcome> = Vec::with_capacity(messages.len());
        let mut admitted: Vec<(Arc<Message>, usize)> = Vec::with_capacity(messages.len());
        let in_order = self.order_stripe(messages[0].topic.as_str()).lock();
        let mut messages = messages.into_iter();
        for message in messages.by_ref() {
            let mut outcome = PublishOutcome::default();
            if let Some((message, history)) = self.admit_to_class(message, now, &mut outcome) {
                let message = self.stamp_and_keep(message, history, now, &mut outcome);
                outcome.message_id = message.id;
                admitted.push((message, outcomes.len()));
            }
            let refused = outcome.refused.is_some();
            outcomes.push(outcome);
            if refused {
                break;
            }
        }
        let rest: Vec<Message> = messages.collect();
        match admitted.as_slice() {
            [] => {}
            [(message, i)] => self.route_local_scoped(message, &mut outcomes[*i], SharedScope::All),
            run => self.route_run(run, &mut outcomes),
        }
        drop(in_order);
        (outcomes, rest)
    }

    /// The routing pass of a run of two or more admitted messages (each
    /// with the index of its outcome).
    fn route_run(&self, run: &[(Arc<Message>, usize)], outcomes: &mut [PublishOutcome]) {
        let first = &run[0].0;
        let mut tally = Tally::new(first);
        let mut duplicates: Vec<(Arc<Session>, Delivery, usize)> = Vec::new();
        // Shared groups pick their member per message, in the pass; the
        // copies are queued after every client's run, in message order, so
        // that a client reached both ways gets one copy, in order, as when
        // the messages are routed one by one.
        let mut shared: Vec<(Arc<Session>, Delivery, usize)> = Vec::new();
        let mut holes = HolesMemo::default();
        let tree = self.subscriptions.read();
        tree.for_each_match(&first.topic, |_key, entry| match entry {
            SubscriptionEntry::Client(sub) => {
                // One publisher: its own-message rule is the same for the run.
                if sub.options.no_local && first.publisher.as_deref() == Some(&*sub.session.client_id) {
                    return;
                }
                // One topic for the whole run: one look at the holes.
                if holes.excludes(&sub.holes, &first.topic) {
                    return;
                }
                let deliveries = run.iter().map(|(message, _)| sub.delivery_of(message));
                let mut next = run.iter();
                sub.session.enqueue_routed_run(deliveries, first.id, |result| {
                    let (message, i) = next.next().expect("one result per delivery");
                    match result {
                        Ok(enqueued) => {
                            let qos = message.qos.min(sub.options.qos);
                            tally.count(self, &sub.session, message, qos, enqueued, &mut outcomes[*i]);
                        }
                        Err(delivery) => duplicates.push((sub.session.clone(), delivery, *i)),
                    }
                });
            }
            SubscriptionEntry::Shared { members, next } => {
                for (message, i) in run {
                    let Some(sub) = pick_shared_member(members, next, &first.topic) else { continue };
                    shared.push((sub.session.clone(), sub.delivery_of(message), *i));
                }
            }
        });
        drop(tree);
        shared.sort_by_key(|(_, _, i)| *i); // stable: groups keep their order
        for (session, delivery, i) in shared {
            let (message, qos) = (delivery.message.clone(), delivery.qos);
            match session.enqueue_routed_in_run(delivery, first.id) {
                Ok(enqueued) => tally.count(self, &session, &message, qos, enqueued, &mut outcomes[i]),
                Err(delivery) => duplicates.push((session, delivery, i)),
            }
        }
        let last = run[run.len() - 1].1;
        tally.finish(self, first, run.len(), &mut outcomes[last]);
        for (session, delivery, i) in duplicates {
            merge_duplicate(&session, delivery, &mut outcomes[i]);
        }
    }
}
