//! Durable state behind one trait: retained messages, persistent sessions and
//! their queued QoS 1/2 deliveries.
//!
//! Owns: the `Store` trait, the records it stores, and the implementations
//! (`sled` on disk, `memory` for tests and for `storage = "memory"`), which
//! share one test suite. `GroupCommit` batches flushes so that many publishers
//! waiting for durability cost one fsync; on sled that fsync is the
//! journal's (`journal.rs`), an append-only redo log replayed at open.
//! Must never: make routing decisions or hold broker locks; it stores what it
//! is given. Writes are not durable until `flush` (or `GroupCommit::sync`)
//! returns.

mod commit;
#[cfg(test)]
mod crash_tests;
mod journal;
mod memory;
mod sled_store;
#[cfg(test)]
mod tests;

pub use commit::{CommitMetrics, GroupCommit};
pub use memory::MemoryStore;
pub use sled_store::SledStore;

use crate::model::{QoS, SubscriptionOptions};
use serde::{Deserialize, Serialize};

/// Bumped whenever a stored record's encoding changes; a store written by a
/// different version is refused at open with a clear error.
pub const FORMAT_VERSION: u32 = 3;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("stored record is corrupt ({what}): {detail}")]
    Corrupt { what: String, detail: String },
    #[error("data directory was written by format version {found}, this build reads version {expected}")]
    FormatVersion { found: u32, expected: u32 },
}

/// An application message as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The broker-assigned message id (see `broker::Message::id`).
    pub id: u64,
    pub timestamp_ms: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    /// Absolute expiry, Unix milliseconds (from the MQTT 5 message expiry interval).
    pub expires_at_ms: Option<u64>,
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSubscription {
    /// The filter as the client sent it, including any `$share/group/` prefix.
    pub filter: String,
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    pub client_id: String,
    /// The authenticated user the session belongs to; `None`: anonymous.
    /// (Added in format version 2; version 1 sessions are read as anonymous.)
    pub user: Option<String>,
    /// Seconds the session lives after disconnect; `u32::MAX` means never expires.
    pub expiry_secs: u32,
    /// Unix milliseconds of the last disconnect; `None` while connected.
    pub disconnected_at_ms: Option<u64>,
    pub subscriptions: Vec<StoredSubscription>,
}

/// One QoS 1/2 delivery owed to a persistent session, kept until the client acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDelivery {
    /// Per-session sequence number, increasing; the key order.
    pub seq: u64,
    pub message: StoredMessage,
    /// QoS granted for this delivery (min of publish and subscription).
    pub qos: QoS,
    /// Retain flag as it must be sent (retain-as-published already applied).
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

/// Durable storage. Implementations are cheap to call from async code for
/// writes (they buffer); `flush` blocks until everything written is durable and
/// should be called through `GroupCommit` or `spawn_blocking`.
pub trait Store: Send + Sync + 'static {
    fn load_retained(&self) -> Result<Vec<StoredMessage>, StoreError>;
    /// `None` clears the retained message for `topic`.
    fn set_retained(&self, topic: &str, message: Option<&StoredMessage>) -> Result<(), StoreError>;
    fn load_sessions(&self) -> Result<Vec<StoredSession>, StoreError>;
    fn save_session(&self, session: &StoredSession) -> Result<(), StoreError>;
    /// Removes the session and all its queued deliveries.
    fn remove_session(&self, client_id: &str) -> Result<(), StoreError>;
    fn push_delivery(&self, client_id: &str, delivery: &StoredDelivery) -> Result<(), StoreError>;
    fn remove_delivery(&self, client_id: &str, seq: u64) -> Result<(), StoreError>;
    /// The session's oldest queued deliveries in `seq` order: at most
    /// `max_items`, and no more once `max_bytes` of payload is reached
    /// (at least one), so a restore never loads more than a queue holds.
    fn load_deliveries(
        &self,
        client_id: &str,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredDelivery>, StoreError>;
    /// Appends a message to its topic's history (topic classes with
    /// history), keyed by topic and message id. Trimming to `keep` newest and
    /// dropping messages published before `not_before_ms` happens here too,
    /// amortised (every [`HISTORY_TRIM_EVERY`]th append to the topic), so a
    /// topic may briefly hold a few more than `keep`.
    fn append_history(&self, message: &StoredMessage, keep: usize, not_before_ms: u64) -> Result<(), StoreError>;
    /// The newest `limit` messages of `topic` with an id above `after_id` and
    /// published at or after `not_before_ms`, oldest first.
    fn load_history(
        &self,
        topic: &str,
        after_id: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// The newest `limit` messages of `topic` with an id below `before_id`
    /// and published at or after `not_before_ms`, oldest first: a page
    /// further back ("load older"), stable while new messages arrive.
    fn load_history_before(
        &self,
        topic: &str,
        before_id: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        // Stores that can seek override this; this reads the whole topic.
        let mut older: Vec<StoredMessage> =
            self.load_history(topic, 0, usize::MAX, not_before_ms)?.into_iter().filter(|m| m.id < before_id).collect();
        let skip = older.len().saturating_sub(limit);
        older.drain(..skip);
        Ok(older)
    }
    /// Drops history older than its topic's age limit: `not_before(topic)`
    /// is the cutoff in Unix ms, or `None` to leave the topic alone. Reads
    /// each topic only up to its first message young enough to keep, so a
    /// sweep costs what it removes plus one message per topic. Returns how
    /// many messages it removed. This is what ages out rooms that went quiet
    /// (`append_history` trims only the rooms that are written to).
    fn sweep_history(&self, not_before: &dyn Fn(&str) -> Option<u64>) -> Result<usize, StoreError>;
    /// Topics holding history that start with `prefix`, in byte order, at
    /// most `limit` (for operators: `GET /api/v1/topics`). Reads one key per
    /// topic.
    fn history_topics(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError>;
    /// The offline-push queue (`[push]`): an event waiting to be POSTed,
    /// under its sequence number (opaque bytes: the push module's JSON).
    fn push_queue_add(&self, seq: u64, event: &[u8]) -> Result<(), StoreError>;
    fn push_queue_remove(&self, seq: u64) -> Result<(), StoreError>;
    /// Every queued event, oldest first.
    fn push_queue_load(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Uploaded files' records (`crate::files`): opaque bytes (the files
    /// module's JSON) under a key it chooses.
    fn files_put(&self, key: &str, record: &[u8]) -> Result<(), StoreError>;
    fn files_remove(&self, key: &str) -> Result<(), StoreError>;
    /// Every file record, in key order (read once at start).
    fn files_load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Blocks until every write made before the call is durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Topics whose append counts are remembered (for amortised trimming) at
/// most; past it the counts start over, which only makes the next append of
/// each topic trim once more. Bounds the map however many rooms come and go.
pub const HISTORY_COUNTERS_MAX: usize = 100_000;

/// Counts one append to `topic` in `counters` (bounded, see
/// [`HISTORY_COUNTERS_MAX`]); true when this append trims.
fn history_trim_due_for(counters: &mut std::collections::HashMap<String, u64>, topic: &str) -> bool {
    if counters.len() >= HISTORY_COUNTERS_MAX && !counters.contains_key(topic) {
        *counters = Default::default(); // gives the memory back, unlike clear()
    }
    history_trim_due(counters.entry(topic.to_string()).or_default())
}

/// History is trimmed on one append in this many (of each topic).
pub const HISTORY_TRIM_EVERY: u64 = 16;

/// Counts one append to a topic's history; true when this one trims. Counted
/// per topic, not by message id: ids are broker-wide, so a room whose
/// messages interleave with another room's could otherwise never get an id
/// that is a multiple of [`HISTORY_TRIM_EVERY`] and would grow without
/// bound. The first append after start trims, so what a previous run left
/// is cut back at once.
fn history_trim_due(appends: &mut u64) -> bool {
    let due = appends.is_multiple_of(HISTORY_TRIM_EVERY);
    *appends += 1;
    due
}
