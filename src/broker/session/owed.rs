//! The writes a persistent session owes the store: decided under the
//! session's lock, written after it.
//!
//! Owns: the queue of owed writes (a stored copy of a QoS 1/2 delivery, or
//! its removal once acknowledged, expired or displaced) and
//! [`Session::write_owed`], which writes them in the order they were
//! decided, one writer at a time (`Session::store_order`). So a PUBACK's
//! removal can never reach the store before the copy it removes, although
//! neither is written under the session's lock: the writer task draining
//! the session never waits for a journal write(2) (issue 23, item 5).
//! Must never: be called with the state lock held, or lose the order.

use super::{Session, SessionState};
use crate::broker::message::Delivery;
use crate::store::{StoreError, StoredDelivery};
use parking_lot::MutexGuard;
use std::num::NonZeroU64;

/// One write owed to the store.
pub(super) enum StoreOp {
    /// A QoS 1/2 delivery's copy (its `seq` is set), written before its
    /// publisher is answered. Kept as the delivery (an `Arc` and a few
    /// words): encoding it for the store happens outside the lock too.
    Push(Delivery),
    /// The copy of the delivery with this sequence number is no longer needed.
    Remove(u64),
}

/// What a session owes the store. Boxed in the state on first use: a clean
/// session never has any.
#[derive(Default)]
pub(super) struct Owed {
    ops: Vec<StoreOp>,
    /// Sequence numbers whose copy could not be written, until the caller
    /// that queued it asks ([`Session::write_owed`]).
    failed: Vec<u64>,
}

impl SessionState {
    /// Queues the stored copy of a delivery.
    pub(super) fn owe_push(&mut self, delivery: Delivery) {
        self.owed.get_or_insert_with(Box::default).ops.push(StoreOp::Push(delivery));
    }

    /// Queues the removal of a delivery's copy, if it has one.
    pub(super) fn owe_remove(&mut self, seq: Option<NonZeroU64>) {
        if let Some(seq) = seq {
            self.owed.get_or_insert_with(Box::default).ops.push(StoreOp::Remove(seq.get()));
        }
    }

    /// Whether writes wait: the caller must call [`Session::write_owed`]
    /// once it has released the lock.
    pub(super) fn owes(&self) -> bool {
        self.owed.as_ref().is_some_and(|owed| !owed.ops.is_empty())
    }
}

impl Session {
    /// Writes everything owed so far, in order. When this returns, every
    /// write queued before the call is in the store (or failed, see
    /// [`Session::take_failed_write`]), whoever wrote it: a caller that
    /// finds the queue empty waited for the one who took it (`store_order`).
    pub(super) fn write_owed(&self) {
        let _order = self.store_order.lock();
        let ops = match self.state.lock().owed.as_mut() {
            Some(owed) => std::mem::take(&mut owed.ops),
            None => return,
        };
        let mut failed = Vec::new();
        for op in ops {
            match op {
                StoreOp::Push(delivery) => {
                    let Some(seq) = delivery.seq else { continue };
                    let stored = StoredDelivery {
                        seq: seq.get(),
                        message: delivery.message.to_stored(),
                        qos: delivery.qos,
                        retain: delivery.retain,
                        subscription_ids: delivery.subscription_ids.to_vec(),
                    };
                    if let Err(e) = self.store.push_delivery(&self.client_id, &stored) {
                        // The delivery stays queued in memory, not durable: its
                        // publisher must not be told it is.
                        tracing::error!(client_id = %self.client_id, error = %e, "cannot store delivery");
                        failed.push(seq.get());
                    }
                }
                StoreOp::Remove(seq) => {
                    // A copy left behind is redelivered after a restart,
                    // never lost: nothing to tell anyone.
                    let _ = self.store.remove_delivery(&self.client_id, seq);
                }
            }
        }
        let mut st = self.state.lock();
        if let Some(owed) = st.owed.as_mut() {
            owed.failed.extend(failed);
            if owed.ops.is_empty() && owed.failed.is_empty() {
                st.owed = None;
            }
        }
    }

    /// Releases the state lock, then writes what was owed under it.
    pub(super) fn unlock_and_write(&self, st: MutexGuard<'_, SessionState>) {
        let owes = st.owes();
        drop(st);
        if owes {
            self.write_owed();
        }
    }

    /// Whether the copy of delivery `seq`, queued by the caller and written
    /// since ([`Session::write_owed`]), failed. Answers once.
    pub(super) fn take_failed_write(&self, seq: Option<NonZeroU64>) -> bool {
        let Some(seq) = seq else { return false };
        let mut st = self.state.lock();
        let Some(owed) = st.owed.as_mut() else { return false };
        let Some(pos) = owed.failed.iter().position(|&f| f == seq.get()) else { return false };
        owed.failed.swap_remove(pos);
        if owed.ops.is_empty() && owed.failed.is_empty() {
            st.owed = None;
        }
        true
    }

    /// Forgets the stored session, its deliveries and every write still
    /// owed for them (the session ended, or no longer persists).
    pub fn remove_stored(&self) -> Result<(), StoreError> {
        let _order = self.store_order.lock();
        self.state.lock().owed = None;
        self.store.remove_session(&self.client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{attachment, delivery, probed_session};
    use super::super::Outgoing;
    use crate::model::QoS;

    /// Every store write of a session happens with its lock free: the
    /// probe store asserts it on each write (see `test_support::LockProbe`).
    #[test]
    fn no_store_write_happens_under_the_session_lock() {
        let (s, probe) = probed_session(60);
        s.attach(1, 10, None, attachment());
        for _ in 0..3 {
            s.enqueue(delivery(1, QoS::AtLeastOnce));
        }
        s.enqueue(delivery(1, QoS::ExactlyOnce));
        let mut out = Vec::new();
        s.drain(&mut out, 64, usize::MAX, 1_000);
        let ids: Vec<u16> = out
            .iter()
            .filter_map(|o| match o {
                Outgoing::Publish { packet_id, .. } => Some(*packet_id),
                Outgoing::PubRel { .. } => None,
            })
            .collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert!(s.puback(1));
        assert!(s.acknowledge(2));
        s.discard_inflight(3);
        assert!(s.pubrec(4, 0));
        assert!(s.pubcomp(4));
        assert_eq!(probe.writes(), 8, "four copies written, four removed");
        assert_eq!(probe.stored(&s.client_id), 0);
        s.enqueue(delivery(1, QoS::AtLeastOnce));
        s.remove_stored().unwrap();
        assert_eq!(probe.stored(&s.client_id), 0);
    }

    /// A copy that cannot be written is reported to the one who queued it,
    /// once; the delivery stays queued in memory.
    #[test]
    fn a_failed_write_is_reported_to_its_publisher() {
        let (s, probe) = probed_session(60);
        probe.fail_pushes(true);
        let enqueued = s.enqueue(delivery(1, QoS::AtLeastOnce));
        assert!(
            matches!(enqueued, super::super::Enqueued::Queued { stored: false, store_failed: true, .. }),
            "{enqueued:?}"
        );
        probe.fail_pushes(false);
        let enqueued = s.enqueue(delivery(1, QoS::AtLeastOnce));
        assert!(matches!(enqueued, super::super::Enqueued::Queued { stored: true, store_failed: false, .. }));
        assert_eq!(s.queued_len(), 2);
        assert!(s.state.lock().owed.is_none(), "nothing left owed or unreported");
    }
}
