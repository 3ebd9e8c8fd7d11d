//! The broker's seams to what plugs into it: the backplane that joins other
//! nodes (a NATS cluster) and the delivery watch that pushes to clients that
//! are away (the offline push webhook).
//!
//! Owns: the two traits and the acknowledgement a backplane owes a publish.
//! The broker calls them; `cluster/` and `push.rs` implement them and are
//! built by `server.rs`, which plugs them in. Must never: name a plug-in's
//! type (dependencies point down: the broker does not know NATS or webhooks
//! exist, only these calls).

use super::{Message, Session};
use std::sync::Arc;
use std::time::Duration;

/// Seconds between full shares of a node's viewer counts (the broker's
/// sweep shares only changes in between).
pub const VIEWERS_FULL_EVERY_SECS: u64 = 5;

/// What a backplane owes the publisher of a QoS 1/2 message it forwarded:
/// whether the other nodes' durable store holds it, within its own deadline.
#[derive(Debug)]
pub struct BackplaneAck {
    held: tokio::sync::oneshot::Receiver<bool>,
    deadline: Duration,
}

impl BackplaneAck {
    /// An answer that comes on `held` (true: held) within `deadline`; no
    /// answer by then counts as not held.
    pub fn new(held: tokio::sync::oneshot::Receiver<bool>, deadline: Duration) -> BackplaneAck {
        BackplaneAck { held, deadline }
    }

    /// An answer that is already no (the message could not be forwarded).
    pub fn not_held() -> BackplaneAck {
        let (tx, held) = tokio::sync::oneshot::channel();
        let _ = tx.send(false);
        BackplaneAck { held, deadline: Duration::ZERO }
    }

    /// Waits for the answer: true only when the backplane said it holds
    /// the message before the deadline.
    pub async fn held(self) -> bool {
        matches!(tokio::time::timeout(self.deadline, self.held).await, Ok(Ok(true)))
    }
}

/// Other nodes of one broker. A single node has none (`Broker::backplane`
/// is `None`); a cluster plugs in its NATS implementation at start.
pub trait Backplane: Send + Sync {
    /// Hands an admitted message to the other nodes (and their durable
    /// store); never waits. A QoS 1/2 message's acknowledgement waits for
    /// the returned answer; `None`: nothing to wait for (QoS 0, a node-local
    /// topic, or degraded: the acknowledgement rests on this node alone).
    fn forward(&self, message: &Message, history: bool) -> Option<BackplaneAck>;
    /// Whether the other nodes are reached now (false: local delivery only,
    /// and this node serves shared subscriptions by itself).
    fn is_connected(&self) -> bool;
    /// Whether the cluster's durable store (streams and buckets) is in
    /// place: retained messages then come from it, in its order.
    fn is_durable(&self) -> bool;
    /// A session here added (+1) or removed (-1) a subscription to `filter`
    /// (`$share/group/` prefix and all).
    fn interest(&self, filter: &str, delta: isize);
    /// A retained message this node gave the id `id` expired.
    fn forget_retained(&self, topic: &str, id: u64);
    /// A client connected here: its client id (and single sign-on) hold
    /// cluster-wide, and a persistent session it resumes (`resume`) is
    /// handed over by the node that had it (or rebuilt from the cluster's
    /// record when that node is gone). For a resume, the answer says
    /// whether the session came from another node (its subscriptions and
    /// messages are then in place): the connect waits for it, bounded, to
    /// tell the client its session is present.
    fn claim(
        &self,
        client_id: &str,
        user: Option<&str>,
        device: Option<&str>,
        clean_start: bool,
        resume: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<bool>>;
    /// This node's viewer counts, for the other nodes.
    fn share_viewer_counts(&self, counts: Vec<(String, usize)>);
    /// Viewers of `room` on the other nodes.
    fn remote_viewers(&self, room: &str) -> usize;
    /// Rooms whose count on other nodes changed since the last call.
    fn take_changed_viewers(&self, now_ms: u64) -> Vec<String>;
}

/// Watches QoS 1/2 deliveries to sessions that may be away, to tell them
/// some other way (the offline push webhook, `push.rs`).
pub trait DeliveryWatch: Send + Sync {
    /// Whether messages of the topic class in `class_slot` are watched.
    fn watches(&self, class_slot: usize) -> bool;
    /// A message was queued for `session`.
    fn watch(&self, session: &Arc<Session>, message: &Arc<Message>);
    /// The once-a-second sweep, off the runtime's threads: sends what is
    /// due. `is_current` tells whether a session is still the broker's.
    fn sweep(&self, now_ms: u64, is_current: &dyn Fn(&Session) -> bool);
}
