//! The session's outbound side: queueing deliveries (the outbox, the
//! persistent session's stored copies) and taking them for the writer (the
//! in-flight window, packet ids, expiry on the way out).
//!
//! Owns: `enqueue*`, `merge_duplicate`, `drain`. The time comes in as an
//! argument (`drain(.., now_ms)`), so the window and expiry rules are tested
//! without a clock. Must never: acknowledge (`acks.rs`) or wait: the writer
//! is woken after the lock is released.

use super::{Inflight, Outgoing, Session, SessionState};
use crate::broker::message::Delivery;
use crate::broker::outbox::Pushed;
use crate::model::QoS;
use parking_lot::MutexGuard;
use std::num::NonZeroU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What one [`Session::drain`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Payload and topic bytes of the deliveries taken.
    pub bytes: usize,
    /// Deliveries were left because a limit of this call was reached (not
    /// because the in-flight window is full): drain again after the write.
    pub more: bool,
}

impl Session {
    /// Queues a delivery. For a persistent session a QoS 1/2 delivery is
    /// written to the store before this returns (after the lock is
    /// released, in the order decided under it, so an acknowledgement can
    /// never overtake the write: see `owed.rs`); the return value says
    /// whether the caller must wait for a flush before acknowledging the
    /// publisher. QoS 0 messages for a disconnected session are dropped,
    /// like Mosquitto.
    pub fn enqueue(&self, delivery: Delivery) -> Enqueued {
        self.enqueue_locked(self.state.lock(), delivery)
    }

    /// [`Session::enqueue`] for the route pass: the delivery comes back
    /// (`Err`) when this session already took the same message in this
    /// pass, through another matching subscription of the client (the
    /// caller merges it, [MQTT-3.3.4-3..5]). Two concurrent publishes to
    /// one session can make a true duplicate look new (the client then
    /// gets two copies, which MQTT allows), never the reverse.
    pub fn enqueue_routed(&self, delivery: Delivery) -> Result<Enqueued, Delivery> {
        let id = delivery.message.id;
        self.enqueue_routed_in_run(delivery, id)
    }

    /// [`Session::enqueue_routed`] for one message of a run whose first
    /// message has id `run_first_id` (a shared group's copy, queued after
    /// the clients' runs): a session that took the whole run through a
    /// client subscription is marked with that id, and keeps the mark.
    pub fn enqueue_routed_in_run(&self, delivery: Delivery, run_first_id: u64) -> Result<Enqueued, Delivery> {
        let mut st = self.state.lock();
        let id = delivery.message.id;
        if st.last_routed == id || st.last_routed == run_first_id {
            return Err(delivery);
        }
        st.last_routed = id;
        Ok(self.enqueue_locked(st, delivery))
    }

    /// [`Session::enqueue_routed`] for a run of one publisher's messages to
    /// one topic ([`crate::broker::Broker::publish_run`]): one lock and at
    /// most one wake for the whole run, the deliveries' slots written back
    /// to back. `result` gets each delivery's outcome in order; if this
    /// session already took the run through another matching subscription,
    /// every delivery comes back (`Err`) for the caller to merge.
    pub fn enqueue_routed_run(
        &self,
        deliveries: impl Iterator<Item = Delivery>,
        run_first_id: u64,
        mut result: impl FnMut(Result<Enqueued, Delivery>),
    ) {
        let mut st = self.state.lock();
        // The run's first id marks it, as a message's id marks one message.
        if std::mem::replace(&mut st.last_routed, run_first_id) == run_first_id {
            drop(st);
            deliveries.for_each(|d| result(Err(d)));
            return;
        }
        let mut wake = false;
        if st.expiry_secs == 0 {
            // Nothing is stored for a clean session: results go out as they come.
            for delivery in deliveries {
                let (enqueued, wake_this, _) = self.enqueue_in(&mut st, delivery);
                wake |= wake_this;
                result(Ok(enqueued));
            }
            drop(st);
        } else {
            // The results wait for the store writes, made once the lock is free.
            let mut settled = Vec::new();
            for delivery in deliveries {
                let (enqueued, wake_this, seq) = self.enqueue_in(&mut st, delivery);
                wake |= wake_this;
                settled.push((enqueued, seq));
            }
            let owes = st.owes();
            drop(st);
            if wake {
                self.wake_writer();
            }
            if owes {
                self.write_owed();
            }
            for (enqueued, seq) in settled {
                result(Ok(self.settle(enqueued, seq)));
            }
            return;
        }
        if wake {
            self.wake_writer();
        }
    }

    fn enqueue_locked(&self, mut st: MutexGuard<'_, SessionState>, delivery: Delivery) -> Enqueued {
        let (enqueued, wake, seq) = self.enqueue_in(&mut st, delivery);
        let owes = st.owes();
        drop(st);
        if wake {
            self.wake_writer();
        }
        if owes {
            self.write_owed();
        }
        self.settle(enqueued, seq)
    }

    /// The final result of an enqueue whose stored copy (delivery `seq`,
    /// if any) was written or failed in [`Session::write_owed`] since.
    fn settle(&self, enqueued: Enqueued, seq: Option<NonZeroU64>) -> Enqueued {
        match enqueued {
            Enqueued::Queued { stored: true, displaced, .. } if self.take_failed_write(seq) => {
                Enqueued::Queued { stored: false, store_failed: true, displaced }
            }
            other => other,
        }
    }

    /// Queues one delivery under the caller's lock. Returns the result (a
    /// stored copy is owed, not yet written: see [`Session::settle`]),
    /// whether the writer must be woken once the lock is released, and the
    /// sequence number of the owed copy.
    fn enqueue_in(&self, st: &mut SessionState, mut delivery: Delivery) -> (Enqueued, bool, Option<NonZeroU64>) {
        if delivery.qos == QoS::AtMostOnce && st.owner.is_none() {
            return (Enqueued::Dropped, false, None);
        }
        let persist = st.expiry_secs > 0 && delivery.qos > QoS::AtMostOnce;
        // The stored copy is owed only once the outbox has taken the delivery.
        if persist {
            let seq = st.next_seq;
            st.next_seq += 1;
            delivery.seq = NonZeroU64::new(seq);
        }
        let seq = delivery.seq;
        // Encoded for the store later, outside the lock (`owed.rs`).
        let stored = seq.map(|_| delivery.clone());
        let owed = stored.is_some();
        let (enqueued, wake) = match st.outbox.push(delivery) {
            Pushed::Queued { was_empty } => {
                let wake = was_empty && st.owner.is_some();
                (Enqueued::Queued { stored: owed, store_failed: false, displaced: false }, wake)
            }
            Pushed::QueuedDropping(old) => {
                // Discarded to make room, or replaced by a newer message of its topic.
                st.owe_remove(old.seq);
                (Enqueued::Queued { stored: owed, store_failed: false, displaced: true }, false)
            }
            Pushed::Refused(_) => {
                st.congested = true;
                return (Enqueued::Full, false, None);
            }
        };
        if let Some(stored) = stored {
            st.owe_push(stored);
        }
        (enqueued, wake, seq)
    }

    /// A second matching subscription of the same client: fold it into the
    /// copy still queued (highest QoS, every subscription id). If that copy
    /// was already taken by the writer, queue another copy: MQTT allows one
    /// per subscription. Returns the enqueue result when a copy was added.
    pub fn merge_duplicate(&self, delivery: Delivery) -> Option<Enqueued> {
        let mut st = self.state.lock();
        let queued = st.outbox.iter_mut().rev().find(|d| Arc::ptr_eq(&d.message, &delivery.message));
        let Some(queued) = queued else {
            drop(st);
            return Some(self.enqueue(delivery));
        };
        // A stored copy keeps its stored QoS; upgrading it is not worth a rewrite.
        if queued.seq.is_none() {
            queued.qos = queued.qos.max(delivery.qos);
        }
        queued.retain |= delivery.retain;
        queued.subscription_ids.extend(delivery.subscription_ids);
        None
    }

    /// Moves deliveries from the outbox into `out`, assigning packet ids to
    /// QoS 1/2 ones while the send window allows. Expired messages are
    /// discarded here ([MQTT-3.3.2-5]).
    /// Returns the bytes (message footprints) it took.
    /// Returns the bytes taken and whether deliveries that could be sent are
    /// left behind because `max` or `max_bytes` was reached: the caller must
    /// come back for them after its write, since no new wake will come (the
    /// outbox wakes its writer only when it goes from empty to non-empty).
    /// `now_ms` is the caller's clock (the coarse one on the hot path):
    /// expiry is judged by it, and it is when this writer last drained.
    pub fn drain(&self, out: &mut Vec<Outgoing>, max: usize, max_bytes: usize, now_ms: u64) -> Drained {
        let now = now_ms;
        // Truncated on purpose (see `last_drain_ms`); never 0, which means never.
        self.last_drain_ms.store((now as u32).max(1), Ordering::Relaxed);
        let mut st = self.state.lock();
        let bytes = self.drain_locked(&mut st, out, max, max_bytes, now);
        let more = (out.len() >= max || bytes >= max_bytes) && st.outbox.front().is_some();
        if st.congested && st.outbox.len() <= st.outbox.capacity() / 2 {
            st.congested = false;
            if let Some(room) = self.room.get() {
                room.notify_waiters();
            }
        }
        let owes = st.owes();
        drop(st);
        if owes {
            self.write_owed(); // expired copies
        }
        Drained { bytes, more }
    }

    /// Takes deliveries until `max` items or about `max_bytes` of payload
    /// and topic (at least one item): a slow reader's write buffer stays
    /// bounded even when messages are large.
    fn drain_locked(
        &self,
        st: &mut SessionState,
        out: &mut Vec<Outgoing>,
        max: usize,
        max_bytes: usize,
        now: u64,
    ) -> usize {
        let mut bytes = 0usize;
        while out.len() < max && (bytes < max_bytes || out.is_empty()) {
            let Some(front) = st.outbox.front() else { break };
            bytes += front.message.footprint();
            if front.message.is_expired(now) {
                let d = st.outbox.pop().expect("front exists");
                st.owe_remove(d.seq);
                continue;
            }
            if front.qos == QoS::AtMostOnce {
                let delivery = st.outbox.pop().expect("front exists");
                out.push(Outgoing::Publish { packet_id: 0, dup: false, delivery });
                continue;
            }
            if st.inflight.len() >= st.send_window as usize {
                break;
            }
            let delivery = st.outbox.pop().expect("front exists");
            let packet_id = next_free_packet_id(st);
            st.inflight.push_back((packet_id, Inflight::Sent(delivery.clone())));
            out.push(Outgoing::Publish { packet_id, dup: false, delivery });
        }
        bytes
    }
}

/// Result of [`Session::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued; `stored` says a copy was written to the store and the
    /// publisher's acknowledgement must wait for a flush; `store_failed`
    /// that the copy owed to the store could not be written.
    Queued { stored: bool, store_failed: bool, displaced: bool },
    /// Not queued: QoS 0 for a disconnected session.
    Dropped,
    /// Not queued: the outbox is full (counted in the outbox's `dropped`).
    Full,
}

fn next_free_packet_id(st: &mut SessionState) -> u16 {
    loop {
        let id = st.next_packet_id;
        st.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
        if !st.inflight.iter().any(|(used, _)| *used == id) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{attachment, delivery, session};
    use super::super::Outgoing;
    use crate::model::QoS;

    const NOW: u64 = 1_000_000;

    #[test]
    fn a_drain_that_stops_at_its_budget_says_more_is_left() {
        let s = session();
        s.attach(1, 10, None, attachment());
        for _ in 0..5 {
            s.enqueue(delivery(100, QoS::AtMostOnce));
        }
        let mut out = Vec::new();
        let first = s.drain(&mut out, 64, 250, NOW);
        assert_eq!(out.len(), 3, "stops once the budget is reached");
        assert!(first.more, "two are left, and no wake will come for them");
        out.clear();
        let second = s.drain(&mut out, 64, 1_000, NOW);
        assert_eq!(out.len(), 2);
        assert!(!second.more, "the outbox is empty");
        for _ in 0..3 {
            s.enqueue(delivery(1, QoS::AtMostOnce));
        }
        out.clear();
        assert!(s.drain(&mut out, 2, 1_000, NOW).more, "stopped at the item limit with one left");
    }

    #[test]
    fn the_in_flight_window_holds_back_qos_1_and_is_not_more() {
        let s = session();
        s.attach(1, 2, None, attachment()); // a send window of 2
        for _ in 0..4 {
            s.enqueue(delivery(1, QoS::AtLeastOnce));
        }
        let mut out = Vec::new();
        let drained = s.drain(&mut out, 64, usize::MAX, NOW);
        let ids: Vec<u16> = out
            .iter()
            .map(|o| match o {
                Outgoing::Publish { packet_id, .. } => *packet_id,
                Outgoing::PubRel { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(ids, [1, 2], "two in flight, distinct packet ids");
        assert!(!drained.more, "the window, not the budget, stopped it: the PUBACK wakes the writer");
        assert!(s.puback(1));
        out.clear();
        s.drain(&mut out, 64, usize::MAX, NOW);
        assert_eq!(out.len(), 1, "one acknowledged, one more goes");
    }

    #[test]
    fn an_expired_message_is_discarded_on_the_way_out() {
        let s = session();
        s.attach(1, 10, None, attachment());
        let mut expiring = delivery(1, QoS::AtMostOnce);
        std::sync::Arc::get_mut(&mut expiring.message).unwrap().expires_at_ms = Some(NOW + 10);
        s.enqueue(expiring);
        s.enqueue(delivery(2, QoS::AtMostOnce));
        let mut out = Vec::new();
        s.drain(&mut out, 64, usize::MAX, NOW + 10);
        assert_eq!(out.len(), 1, "[MQTT-3.3.2-5] the expired one is not sent");
        assert_eq!(s.queued_len(), 0);
    }
}
