//! The session's side of QoS 1/2 acknowledgements: PUBACK, PUBREC and
//! PUBCOMP clear the in-flight window (and the stored copies), and the ids
//! of incoming QoS 2 messages wait for their PUBREL.
//! Must never: touch the outbox or the subscriptions.

use super::{Inflight, Session, SessionState};
use crate::broker::message::Delivery;
use crate::model::QoS;

/// Where the in-flight window holds the sent, unacknowledged `qos`
/// delivery with `packet_id` (what a PUBACK or PUBREC answers).
fn sent_position(st: &SessionState, packet_id: u16, qos: QoS) -> Option<usize> {
    st.inflight.iter().position(|(id, e)| *id == packet_id && matches!(e, Inflight::Sent(d) if d.qos == qos))
}

impl Session {
    /// PUBACK from the client. Returns false for an unknown packet id.
    pub fn puback(&self, packet_id: u16) -> bool {
        let mut st = self.state.lock();
        let Some(pos) = sent_position(&st, packet_id, QoS::AtLeastOnce) else {
            return false;
        };
        let (_, entry) = st.inflight.remove(pos).expect("position is valid");
        if let Inflight::Sent(Delivery { seq, .. }) = entry {
            st.owe_remove(seq);
        }
        self.unlock_and_write(st);
        true
    }

    /// An acknowledgement that completes a delivery whatever its QoS: a
    /// starling.v1 `PubAck` (the protocol has no QoS 2 exchange, so a QoS 2
    /// delivery of a session begun over MQTT, or one waiting for PUBCOMP, is
    /// done when the app acknowledges it). Returns false for an unknown id.
    pub fn acknowledge(&self, packet_id: u16) -> bool {
        let mut st = self.state.lock();
        let Some(pos) = st.inflight.iter().position(|(id, _)| *id == packet_id) else {
            return false;
        };
        let seq = match st.inflight.remove(pos).expect("position is valid").1 {
            Inflight::Sent(d) => d.seq,
            Inflight::Released { seq } => seq,
        };
        st.owe_remove(seq);
        self.unlock_and_write(st);
        true
    }

    /// PUBREC from the client. A failure reason ends the exchange; success
    /// moves it to "released". Returns false for an unknown packet id.
    pub fn pubrec(&self, packet_id: u16, reason_code: u8) -> bool {
        let mut st = self.state.lock();
        let Some(pos) = sent_position(&st, packet_id, QoS::ExactlyOnce) else {
            return false;
        };
        let seq = match &st.inflight[pos].1 {
            Inflight::Sent(d) => d.seq,
            Inflight::Released { seq } => *seq,
        };
        if reason_code >= 0x80 {
            st.inflight.remove(pos);
            st.owe_remove(seq);
            self.unlock_and_write(st);
        } else {
            st.inflight.entry_mut(pos).1 = Inflight::Released { seq };
        }
        true
    }

    /// PUBCOMP from the client. Returns false for an unknown packet id.
    pub fn pubcomp(&self, packet_id: u16) -> bool {
        let mut st = self.state.lock();
        let Some(pos) =
            st.inflight.iter().position(|(id, e)| *id == packet_id && matches!(e, Inflight::Released { .. }))
        else {
            return false;
        };
        if let Some((_, Inflight::Released { seq })) = st.inflight.remove(pos) {
            st.owe_remove(seq);
        }
        self.unlock_and_write(st);
        true
    }

    /// Ends a delivery the client can never receive (larger than its Maximum
    /// Packet Size): [MQTT-3.1.2-25] says to discard it as if it had been sent.
    pub fn discard_inflight(&self, packet_id: u16) {
        let mut st = self.state.lock();
        if let Some(pos) = st.inflight.iter().position(|(id, _)| *id == packet_id) {
            if let Some((_, Inflight::Sent(Delivery { seq, .. }))) = st.inflight.remove(pos) {
                st.owe_remove(seq);
            }
        }
        self.unlock_and_write(st);
    }

    // ---- inbound QoS 2 ---------------------------------------------------

    /// Records an inbound QoS 2 packet id. False if it was already recorded
    /// (a retransmission: do not publish again).
    pub fn begin_incoming_qos2(&self, packet_id: u16) -> bool {
        self.state.lock().incoming_qos2.get_or_insert_with(Box::default).insert(packet_id)
    }

    /// PUBREL from the client. False if the id was unknown.
    pub fn release_incoming_qos2(&self, packet_id: u16) -> bool {
        let mut st = self.state.lock();
        let Some(ids) = st.incoming_qos2.as_mut() else { return false };
        let removed = ids.remove(&packet_id);
        if ids.is_empty() {
            st.incoming_qos2 = None;
        }
        removed
    }

    pub fn incoming_qos2_len(&self) -> usize {
        self.state.lock().incoming_qos2.as_ref().map_or(0, |ids| ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{attachment, delivery, session_with_expiry};
    use super::super::{Outgoing, Session};
    use crate::model::QoS;

    /// Sends what the outbox holds; the packet ids, in order.
    fn send(s: &Session) -> Vec<u16> {
        let mut out = Vec::new();
        s.drain(&mut out, 64, usize::MAX, 1_000);
        out.iter()
            .map(|o| match o {
                Outgoing::Publish { packet_id, .. } => *packet_id,
                Outgoing::PubRel { packet_id } => *packet_id,
            })
            .collect()
    }

    /// A persistent session's stored copies, as the store holds them.
    fn stored(s: &Session) -> usize {
        s.store.load_deliveries(&s.client_id, usize::MAX, usize::MAX).unwrap().len()
    }

    #[test]
    fn a_puback_ends_a_qos_1_delivery_and_its_stored_copy() {
        let s = session_with_expiry(60);
        s.attach(1, 10, None, attachment());
        s.enqueue(delivery(1, QoS::AtLeastOnce));
        assert_eq!(stored(&s), 1, "stored before it is sent");
        assert_eq!(send(&s), [1]);
        assert!(!s.pubcomp(1), "a PUBCOMP does not answer a QoS 1 delivery");
        assert!(!s.puback(2), "unknown packet id");
        assert!(s.puback(1));
        assert!(!s.puback(1), "only once");
        assert_eq!((s.load().inflight, stored(&s)), (0, 0));
    }

    #[test]
    fn qos_2_goes_sent_released_complete_and_a_failed_pubrec_ends_it() {
        let s = session_with_expiry(60);
        s.attach(1, 10, None, attachment());
        s.enqueue(delivery(1, QoS::ExactlyOnce));
        s.enqueue(delivery(1, QoS::ExactlyOnce));
        assert_eq!(send(&s), [1, 2]);
        assert!(!s.puback(1), "a PUBACK does not answer QoS 2");
        assert!(!s.pubcomp(1), "not released yet");
        assert!(s.pubrec(1, 0x00));
        assert_eq!(stored(&s), 2, "the copy stays until PUBCOMP: a crash in between redelivers");
        assert!(s.pubcomp(1));
        assert!(s.pubrec(2, 0x80), "a failure reason ends the exchange at once");
        assert!(!s.pubcomp(2));
        assert_eq!((s.load().inflight, stored(&s)), (0, 0));
    }

    #[test]
    fn inbound_qos_2_ids_are_remembered_until_pubrel() {
        let s = session_with_expiry(0);
        assert!(s.begin_incoming_qos2(7));
        assert!(!s.begin_incoming_qos2(7), "a retransmission is not published again");
        assert_eq!(s.incoming_qos2_len(), 1);
        assert!(s.release_incoming_qos2(7));
        assert!(!s.release_incoming_qos2(7));
        assert_eq!(s.incoming_qos2_len(), 0);
    }
}
