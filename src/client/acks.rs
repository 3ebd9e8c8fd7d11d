//! Acknowledgements a connection still owes: QoS 1/2 publishes whose answer
//! waits for the backplane (in a cluster, JetStream holding the message, up
//! to `[cluster] ack_timeout_ms`).
//!
//! Owns: the queue of those answers, in the order the publishes arrived
//! (MQTT wants PUBACKs in PUBLISH order, [MQTT-4.6.0-2]), and its bound.
//! The connection keeps reading while they wait, so a PINGREQ is answered,
//! later publishes are taken and each gets its own answer by its own
//! deadline: before, one publish waiting for an unreachable NATS held the
//! whole connection (no PINGRESP; the next publish read only after the
//! first's deadline, issue 25).
//! Must never: reorder answers, or let one connection queue without bound
//! (past [`MAX_OWED`] the connection stops reading until answers go out).

use super::Published;
use crate::model::QoS;
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Answers one connection may owe at once before it stops reading.
pub const MAX_OWED: usize = 256;

/// What the edge needs to write an answer it owes: the publish's id (MQTT
/// packet id, starling.v1 `packet_id`) and QoS (PUBACK or PUBREC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    pub packet_id: u16,
    pub qos: QoS,
}

type Answer = Pin<Box<dyn Future<Output = (AckToken, Published)> + Send>>;

/// The answers owed, oldest first. Boxed on the client and only while
/// non-empty: most connections never owe one.
#[derive(Default)]
pub struct OwedAcks {
    answers: FuturesOrdered<Answer>,
}

impl OwedAcks {
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Owes `answer` after every answer already owed.
    pub fn push(&mut self, token: AckToken, answer: impl Future<Output = Published> + Send + 'static) {
        self.answers.push_back(Box::pin(async move { (token, answer.await) }));
    }

    /// The oldest answer, once it is known (later ones wait behind it).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(AckToken, Published)>> {
        self.answers.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(packet_id: u16) -> AckToken {
        AckToken { packet_id, qos: QoS::AtLeastOnce }
    }

    #[tokio::test]
    async fn answers_leave_in_the_order_the_publishes_came() {
        let mut owed = OwedAcks::default();
        let (slow_tx, slow) = tokio::sync::oneshot::channel::<()>();
        owed.push(token(1), async move {
            let _ = slow.await;
            Published::StoreFailed
        });
        owed.push(token(2), std::future::ready(Published::Accepted { matched: true }));
        // The second is known, the first is not: nothing leaves yet.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(owed.poll_next(&mut cx).is_pending());
        slow_tx.send(()).unwrap();
        let first = std::future::poll_fn(|cx| owed.poll_next(cx)).await.unwrap();
        assert_eq!(first, (token(1), Published::StoreFailed));
        let second = std::future::poll_fn(|cx| owed.poll_next(cx)).await.unwrap();
        assert_eq!(second, (token(2), Published::Accepted { matched: true }));
        assert!(owed.is_empty());
    }
}
