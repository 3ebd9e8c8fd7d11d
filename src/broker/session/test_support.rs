//! What the session's unit tests build: a session on a memory store, an
//! attachment, a delivery of a given size and QoS.

use super::{Attachment, Session};
use crate::broker::message::{Delivery, Message};
use crate::model::QoS;
use crate::store::{MemoryStore, Store, StoreError, StoredDelivery, StoredMessage, StoredSession};
use crate::topic::TopicName;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// A clean session (expiry 0) with room for 100 deliveries.
pub fn session() -> Session {
    session_with_expiry(0)
}

/// A session that expires `expiry_secs` after it disconnects (persistent
/// when above 0: its QoS 1/2 deliveries are stored).
pub fn session_with_expiry(expiry_secs: u32) -> Session {
    Session::new(Arc::from("c"), None, expiry_secs, 100, Arc::new(crate::store::MemoryStore::new()))
}

pub fn attachment() -> Attachment {
    Attachment {
        transport: crate::auth::Transport::MqttTcp,
        protocol: "3.1.1",
        peer: None,
        keep_alive_secs: 0,
        connected_at_ms: 0,
        identity: None,
    }
}

/// A delivery on topic `t` with `payload_bytes` of payload.
pub fn delivery(payload_bytes: usize, qos: QoS) -> Delivery {
    let message = Message::new(TopicName::new("t").unwrap(), bytes::Bytes::from(vec![0u8; payload_bytes]), qos, false);
    Delivery { message: Arc::new(message), qos, retain: false, subscription_ids: Default::default(), seq: None }
}

/// A persistent session (expiry `expiry_secs`) on a [`LockProbe`] store.
pub fn probed_session(expiry_secs: u32) -> (Arc<Session>, Arc<LockProbe>) {
    let probe = Arc::new(LockProbe::default());
    let session = Arc::new(Session::new(Arc::from("c"), None, expiry_secs, 100, probe.clone()));
    probe.session.set(Arc::downgrade(&session)).unwrap();
    (session, probe)
}

/// A memory store that fails the test if its session's lock is held while
/// a delivery's copy is written or removed (the writes happen after the
/// lock, see `owed.rs`), counts those writes, and fails pushes on demand.
#[derive(Default)]
pub struct LockProbe {
    inner: MemoryStore,
    session: OnceLock<Weak<Session>>,
    writes: AtomicU64,
    fail_pushes: AtomicBool,
}

impl LockProbe {
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn fail_pushes(&self, fail: bool) {
        self.fail_pushes.store(fail, Ordering::SeqCst);
    }

    /// The session's stored copies.
    pub fn stored(&self, client_id: &str) -> usize {
        self.inner.load_deliveries(client_id, usize::MAX, usize::MAX).unwrap().len()
    }

    fn write(&self) {
        let session = self.session.get().and_then(Weak::upgrade).expect("the probed session");
        assert!(session.state.try_lock().is_some(), "a store write under the session's lock");
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

impl Store for LockProbe {
    fn load_retained(&self) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.load_retained()
    }
    fn set_retained(&self, topic: &str, message: Option<&StoredMessage>) -> Result<(), StoreError> {
        self.inner.set_retained(topic, message)
    }
    fn load_sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        self.inner.load_sessions()
    }
    fn save_session(&self, session: &StoredSession) -> Result<(), StoreError> {
        self.inner.save_session(session)
    }
    fn remove_session(&self, client_id: &str) -> Result<(), StoreError> {
        self.write();
        self.inner.remove_session(client_id)
    }
    fn push_delivery(&self, client_id: &str, delivery: &StoredDelivery) -> Result<(), StoreError> {
        self.write();
        if self.fail_pushes.load(Ordering::SeqCst) {
            return Err(StoreError::Io("the probe fails this write".into()));
        }
        self.inner.push_delivery(client_id, delivery)
    }
    fn remove_delivery(&self, client_id: &str, seq: u64) -> Result<(), StoreError> {
        self.write();
        self.inner.remove_delivery(client_id, seq)
    }
    fn load_deliveries(&self, client_id: &str, items: usize, bytes: usize) -> Result<Vec<StoredDelivery>, StoreError> {
        self.inner.load_deliveries(client_id, items, bytes)
    }
    fn append_history(&self, message: &StoredMessage, keep: usize, not_before_ms: u64) -> Result<(), StoreError> {
        self.inner.append_history(message, keep, not_before_ms)
    }
    fn load_history(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
        not_before: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.load_history(topic, after, limit, not_before)
    }
    fn sweep_history(&self, not_before: &dyn Fn(&str) -> Option<u64>) -> Result<usize, StoreError> {
        self.inner.sweep_history(not_before)
    }
    fn history_topics(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.history_topics(prefix, limit)
    }
    fn push_queue_add(&self, seq: u64, event: &[u8]) -> Result<(), StoreError> {
        self.inner.push_queue_add(seq, event)
    }
    fn push_queue_remove(&self, seq: u64) -> Result<(), StoreError> {
        self.inner.push_queue_remove(seq)
    }
    fn push_queue_load(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.push_queue_load()
    }
    fn files_put(&self, key: &str, record: &[u8]) -> Result<(), StoreError> {
        self.inner.files_put(key, record)
    }
    fn files_remove(&self, key: &str) -> Result<(), StoreError> {
        self.inner.files_remove(key)
    }
    fn files_load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.files_load()
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}
