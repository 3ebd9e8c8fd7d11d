//! Sessions moving between nodes: the claims a node sends when a client
//! connects to it (every other node closes its connection of that client,
//! applies single sign-on, and hands over the session unless the client
//! asked for a clean start), the handovers, and the liveness pings a
//! resuming node sends the session's old node (answered between claims, so
//! an answer means every earlier claim's handover was sent).
//!
//! Owns: the claim and handover messages and the two tasks that receive
//! them. Must never: hand a session over while this node is still catching
//! up on a gap in its NATS connection (the session would move without the
//! messages of the gap), or take a session of another user.

use super::Cluster;
use crate::broker::{Broker, Message};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// "This node now has `client_id`": every other node closes its
/// connection of that client, and hands the session over unless the client
/// asked for a clean start.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Claim {
    pub(super) node: String,
    pub(super) client_id: String,
    pub(super) user: Option<String>,
    pub(super) device: Option<String>,
    pub(super) clean_start: bool,
}

/// A session's state, from the node that had it to the node that took it.
#[derive(Debug, Serialize, Deserialize)]
struct Handover {
    client_id: String,
    user: Option<String>,
    subscriptions: Vec<crate::store::StoredSubscription>,
    deliveries: Vec<crate::store::StoredDelivery>,
}

/// How long a handover waits for this node to catch up on a gap in its
/// NATS connection (the catch-up's two passes take about 3 s).
const CATCH_UP_BEFORE_HANDOVER: Duration = Duration::from_secs(10);

/// Other nodes' claims: close and hand over what this node had of the
/// client; apply single sign-on for the claiming user.
pub(super) async fn run_claims(
    mut claims: async_nats::Subscriber,
    mut pings: async_nats::Subscriber,
    cluster: Weak<Cluster>,
    broker: Weak<Broker>,
) {
    use crate::config::SingleSession;
    loop {
        // Pings are answered here, between claims: an answer tells the
        // asking node that every earlier claim's handover was sent.
        let nats_message = tokio::select! {
            biased; // a claim that came before a ping is handled before it
            claim = claims.next() => claim,
            ping = pings.next() => {
                let Some(ping) = ping else { return };
                if let (Some(node), Some(reply)) = (cluster.upgrade(), ping.reply) {
                    let _ = node.client.publish(reply, Bytes::new()).await;
                }
                continue;
            }
        };
        let Some(nats_message) = nats_message else { return };
        let (Some(node), Some(broker)) = (cluster.upgrade(), broker.upgrade()) else { return };
        let Ok(claim) = postcard::from_bytes::<Claim>(&nats_message.payload) else {
            node.counters.malformed.fetch_add(1, Relaxed);
            continue;
        };
        if claim.node == node.node {
            continue;
        }
        if node.gap.incomplete_since().is_some() && broker.session(&claim.client_id).is_some() {
            // Messages that reached JetStream while this node was cut off
            // are still being read back: hand the session over with them,
            // not without (the new node, waiting, rebuilds from the record
            // meanwhile if this takes long; both copies merge, nothing is lost).
            node.gap.wait_caught_up(CATCH_UP_BEFORE_HANDOVER).await;
        }
        if let Some(crate::broker::HandedOver { subscriptions, deliveries }) =
            broker.hand_over(&claim.client_id, claim.user.as_deref(), !claim.clean_start)
        {
            let handover = Handover {
                client_id: claim.client_id.clone(),
                user: claim.user.clone(),
                subscriptions: subscriptions.into_iter().map(|(filter, r)| r.to_stored(filter)).collect(),
                deliveries: deliveries
                    .into_iter()
                    .map(|d| crate::store::StoredDelivery {
                        seq: 0,
                        message: d.message.to_stored(),
                        qos: d.qos,
                        retain: d.retain,
                        subscription_ids: d.subscription_ids.to_vec(),
                    })
                    .collect(),
            };
            if let Ok(payload) = postcard::to_allocvec(&handover) {
                let subject = format!("{}.c.handover.{}", node.prefix, claim.node);
                if node.client.publish(subject, Bytes::from(payload)).await.is_ok() {
                    node.counters.sessions_handed_over.fetch_add(1, Relaxed);
                    tracing::info!(client_id = claim.client_id, to = claim.node, "cluster: session handed over");
                }
            }
        }
        if let Some(user) = claim.user.as_deref() {
            match broker.security().single_session() {
                SingleSession::Off => 0,
                SingleSession::User => broker.sign_out_others(user, false, None, u64::MAX),
                SingleSession::UserDevice => broker.sign_out_others(user, true, claim.device.as_deref(), u64::MAX),
            };
        }
    }
}

/// Sessions other nodes hand to this one.
pub(super) async fn run_handovers(mut handovers: async_nats::Subscriber, cluster: Weak<Cluster>, broker: Weak<Broker>) {
    while let Some(nats_message) = handovers.next().await {
        let (Some(node), Some(broker)) = (cluster.upgrade(), broker.upgrade()) else { return };
        let Ok(handover) = postcard::from_bytes::<Handover>(&nats_message.payload) else {
            node.counters.malformed.fetch_add(1, Relaxed);
            continue;
        };
        let subscriptions = handover
            .subscriptions
            .into_iter()
            .map(|s| (s.filter.clone(), crate::broker::SubscriptionRecord::from_stored(&s)))
            .collect();
        let deliveries = handover
            .deliveries
            .into_iter()
            .filter_map(|d| {
                let message = Message::from_stored(d.message).ok()?;
                Some(crate::broker::Delivery {
                    message: Arc::new(message),
                    qos: d.qos,
                    retain: d.retain,
                    subscription_ids: d.subscription_ids.into_iter().collect(),
                    seq: None,
                })
            })
            .collect();
        // Taken over first, then the waiting connect told: its CONNACK says
        // the session is present only once its subscriptions are.
        if broker.take_over_state(&handover.client_id, handover.user.as_deref(), subscriptions, deliveries) {
            node.counters.sessions_taken_over.fetch_add(1, Relaxed);
            tracing::info!(client_id = handover.client_id, "cluster: session taken over from another node");
        }
        let waiting = node.awaiting_handover.lock().remove(&handover.client_id);
        if let Some(waiting) = waiting {
            let _ = waiting.send(());
        }
    }
}
