//! [`MemoryStore`]: the `Store` kept in process memory, for tests and for
//! `storage = "memory"`. Nothing survives a restart; `flush` is a no-op.
//!
//! It must behave exactly like `SledStore` apart from durability (same
//! orderings, same removal rules), because the shared test suite and the
//! model test hold both to the same expectations.

use super::{Store, StoreError, StoredDelivery, StoredMessage, StoredSession};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct Inner {
    /// BTreeMaps keyed like sled's trees, so loads come back in the same
    /// (byte-wise) order as from disk.
    retained: BTreeMap<String, StoredMessage>,
    sessions: BTreeMap<String, StoredSession>,
    deliveries: BTreeMap<String, BTreeMap<u64, StoredDelivery>>,
    history: BTreeMap<String, BTreeMap<u64, StoredMessage>>,
    /// Appends per topic since start, for amortised trimming.
    history_appends: std::collections::HashMap<String, u64>,
    push: BTreeMap<u64, Vec<u8>>,
    files: BTreeMap<String, Vec<u8>>,
}

#[derive(Default)]
pub struct MemoryStore {
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// The newest `limit` messages of `topic` with ids in `ids`, published
    /// at or after `not_before_ms`, oldest first.
    fn history_page(
        &self,
        topic: &str,
        ids: impl std::ops::RangeBounds<u64>,
        limit: usize,
        not_before_ms: u64,
    ) -> Vec<StoredMessage> {
        let inner = self.lock();
        let Some(history) = inner.history.get(topic) else { return Vec::new() };
        let mut newest_first: Vec<StoredMessage> = history
            .range(ids)
            .rev()
            .map(|(_, m)| m)
            .take_while(|m| m.timestamp_ms >= not_before_ms)
            .take(limit)
            .cloned()
            .collect();
        newest_first.reverse();
        newest_first
    }
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every operation is a single map update that cannot panic halfway,
        // so the data behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn load_retained(&self) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self.lock().retained.values().cloned().collect())
    }

    fn set_retained(&self, topic: &str, message: Option<&StoredMessage>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match message {
            Some(message) => inner.retained.insert(topic.to_owned(), message.clone()),
            None => inner.retained.remove(topic),
        };
        Ok(())
    }

    fn load_sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        Ok(self.lock().sessions.values().cloned().collect())
    }

    fn save_session(&self, session: &StoredSession) -> Result<(), StoreError> {
        self.lock().sessions.insert(session.client_id.clone(), session.clone());
        Ok(())
    }

    fn remove_session(&self, client_id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.deliveries.remove(client_id);
        inner.sessions.remove(client_id);
        Ok(())
    }

    fn push_delivery(&self, client_id: &str, delivery: &StoredDelivery) -> Result<(), StoreError> {
        self.lock().deliveries.entry(client_id.to_owned()).or_default().insert(delivery.seq, delivery.clone());
        Ok(())
    }

    fn remove_delivery(&self, client_id: &str, seq: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(queue) = inner.deliveries.get_mut(client_id) {
            queue.remove(&seq);
            // Drop emptied queues so memory follows what is actually owed.
            if queue.is_empty() {
                inner.deliveries.remove(client_id);
            }
        }
        Ok(())
    }

    fn load_deliveries(
        &self,
        client_id: &str,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        let inner = self.lock();
        let Some(queue) = inner.deliveries.get(client_id) else { return Ok(Vec::new()) };
        let mut bytes = 0usize;
        Ok(queue
            .values()
            .take(max_items)
            .take_while(|d| {
                let first = bytes == 0;
                bytes += d.message.payload.len().max(1);
                first || bytes <= max_bytes
            })
            .cloned()
            .collect())
    }

    fn append_history(&self, message: &StoredMessage, keep: usize, not_before_ms: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let trim = super::history_trim_due_for(&mut inner.history_appends, &message.topic);
        let topic = inner.history.entry(message.topic.clone()).or_default();
        topic.insert(message.id, message.clone());
        if trim {
            while topic.len() > keep {
                topic.pop_first();
            }
            topic.retain(|_, m| not_before_ms == 0 || m.timestamp_ms >= not_before_ms);
        }
        Ok(())
    }

    fn load_history(
        &self,
        topic: &str,
        after_id: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self.history_page(topic, after_id.saturating_add(1).., limit, not_before_ms))
    }

    fn load_history_before(
        &self,
        topic: &str,
        before_id: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self.history_page(topic, ..before_id, limit, not_before_ms))
    }

    fn sweep_history(&self, not_before: &dyn Fn(&str) -> Option<u64>) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let mut removed = 0;
        inner.history.retain(|topic, messages| {
            if let Some(cutoff) = not_before(topic) {
                let before = messages.len();
                messages.retain(|_, m| m.timestamp_ms >= cutoff);
                removed += before - messages.len();
            }
            !messages.is_empty()
        });
        Ok(removed)
    }

    fn push_queue_add(&self, seq: u64, event: &[u8]) -> Result<(), StoreError> {
        self.lock().push.insert(seq, event.to_vec());
        Ok(())
    }

    fn push_queue_remove(&self, seq: u64) -> Result<(), StoreError> {
        self.lock().push.remove(&seq);
        Ok(())
    }

    fn push_queue_load(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self.lock().push.iter().map(|(s, e)| (*s, e.clone())).collect())
    }

    fn files_put(&self, key: &str, record: &[u8]) -> Result<(), StoreError> {
        self.lock().files.insert(key.to_string(), record.to_vec());
        Ok(())
    }

    fn files_remove(&self, key: &str) -> Result<(), StoreError> {
        self.lock().files.remove(key);
        Ok(())
    }

    fn files_load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self.lock().files.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn history_topics(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .history
            .range(prefix.to_string()..)
            .take_while(|(topic, _)| topic.starts_with(prefix))
            .filter(|(_, messages)| !messages.is_empty())
            .take(limit)
            .map(|(topic, _)| topic.clone())
            .collect())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
