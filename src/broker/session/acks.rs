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
        if let Inflight::Sent(Delivery { seq: Some(seq), .. }) = entry {
            let _ = self.store.remove_delivery(&self.client_id, seq.get());
        }
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
        if let Some(seq) = seq {
            let _ = self.store.remove_delivery(&self.client_id, seq.get());
        }
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
            if let Some(seq) = seq {
                let _ = self.store.remove_delivery(&self.client_id, seq.get());
            }
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
        if let Some((_, Inflight::Released { seq: Some(seq) })) = st.inflight.remove(pos) {
            let _ = self.store.remove_delivery(&self.client_id, seq.get());
        }
        true
    }

    /// Ends a delivery the client can never receive (larger than its Maximum
    /// Packet Size): [MQTT-3.1.2-25] says to discard it as if it had been sent.
    pub fn discard_inflight(&self, packet_id: u16) {
        let mut st = self.state.lock();
        if let Some(pos) = st.inflight.iter().position(|(id, _)| *id == packet_id) {
            if let Some((_, Inflight::Sent(Delivery { seq: Some(seq), .. }))) = st.inflight.remove(pos) {
                let _ = self.store.remove_delivery(&self.client_id, seq.get());
            }
        }
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
