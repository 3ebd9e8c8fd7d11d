//! [`SledStore`]: the durable `Store`, one sled database per data directory.
//!
//! Layout, one sled tree per record kind so each can be scanned alone:
//! - `retained`: topic -> postcard(`StoredMessage`)
//! - `sessions`: client id -> postcard(`StoredSession`)
//! - `deliveries`: client id, 0x00, seq as u64 big-endian ->
//!   postcard(`StoredDelivery`). Sled orders keys byte-wise, so a prefix scan
//!   on "client id, 0x00" yields one session's queue in `seq` order. The 0x00
//!   separator cannot occur inside a client id (MQTT strings exclude U+0000,
//!   [MQTT-1.5.4-2]), so client "a" never sees the queue of client "ab".
//! - `meta`: "format_version" -> u32 big-endian.
//!
//! Every write goes through the [`Journal`] (`journal/` inside the data
//! directory): recorded there, then applied to sled. `flush` syncs the
//! journal only; sled itself is flushed at checkpoints, with its own
//! background flushing off, so after a crash the journal is replayed over
//! what sled kept.

use super::journal::{Journal, Op, TreeId};
use super::{Store, StoreError, StoredDelivery, StoredMessage, StoredSession, FORMAT_VERSION};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

const FORMAT_VERSION_KEY: &[u8] = b"format_version";

pub struct SledStore {
    retained: sled::Tree,
    sessions: sled::Tree,
    deliveries: sled::Tree,
    history: sled::Tree,
    /// The offline-push queue: big-endian sequence number → event.
    push: sled::Tree,
    /// Uploaded files' records: key → the files module's JSON.
    files: sled::Tree,
    /// Appends per topic since open, for amortised trimming.
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    history_appends: parking_lot::Mutex<std::collections::HashMap<String, u64>>,
    journal: Journal,
}

fn io(context: &str, err: sled::Error) -> StoreError {
    StoreError::Io(format!("{context}: {err}"))
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    // Our records only use types postcard supports, so this failing is a
    // bug rather than bad data; it is still reported, not unwrapped.
    postcard::to_allocvec(value).map_err(|e| StoreError::Io(format!("encoding {what}: {e}")))
}

fn decode<T: DeserializeOwned>(what: impl Into<String>, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt { what: what.into(), detail: e.to_string() })
}

/// "client id, 0x00": the prefix shared by every delivery key of one session.
fn delivery_prefix(client_id: &str) -> Result<Vec<u8>, StoreError> {
    if client_id.contains('\0') {
        // The protocol layer rejects these; refusing here keeps one
        // session's queue from ever bleeding into another's key range.
        return Err(StoreError::Io(format!("client id {client_id:?} contains U+0000 and cannot key deliveries")));
    }
    let mut key = Vec::with_capacity(client_id.len() + 9);
    key.extend_from_slice(client_id.as_bytes());
    key.push(0);
    Ok(key)
}

/// "topic, 0x00": topic names never contain U+0000 (the topic rules refuse it).
fn history_prefix(topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 9);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key
}

/// The key of message `id` in `topic`'s history: "topic, 0, id (big-endian)".
fn history_key(topic: &str, id: u64) -> Vec<u8> {
    let mut key = history_prefix(topic);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// A key after every key of `topic`'s history ("topic, 1").
fn topic_end(topic: &str) -> Vec<u8> {
    let mut key = history_prefix(topic);
    *key.last_mut().expect("the prefix ends with 0") = 1;
    key
}

fn delivery_key(client_id: &str, seq: u64) -> Result<Vec<u8>, StoreError> {
    let mut key = delivery_prefix(client_id)?;
    // Big-endian so byte order equals numeric order (255 < 256 < 65536).
    key.extend_from_slice(&seq.to_be_bytes());
    Ok(key)
}

impl SledStore {
    /// The newest `limit` history messages with keys in `from..to` (one
    /// topic's), published at or after `not_before_ms`, oldest first.
    fn history_page(
        &self,
        topic: &str,
        from: Vec<u8>,
        to: Vec<u8>,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut newest_first = Vec::new();
        for kv in self.history.range(from..to).rev() {
            if newest_first.len() >= limit {
                break;
            }
            let (_, value) = kv.map_err(|e| io(&format!("reading the history of {topic:?}"), e))?;
            let message: StoredMessage = decode(format!("history message of {topic:?}"), &value)?;
            if message.timestamp_ms < not_before_ms {
                break;
            }
            newest_first.push(message);
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Opens (or creates) the database in `path`. A new database is stamped
    /// with [`FORMAT_VERSION`]; an existing one written by another version is
    /// refused with [`StoreError::FormatVersion`] rather than misread.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with_checkpoint_bytes(path, super::journal::CHECKPOINT_BYTES)
    }

    /// `open`, with the journal checkpointing every `checkpoint_bytes`.
    pub(super) fn open_with_checkpoint_bytes(path: &Path, checkpoint_bytes: u64) -> Result<SledStore, StoreError> {
        let context = |what: &str| format!("{what} in {}", path.display());
        let db = open_waiting_for_lock(path).map_err(|e| io(&context("opening sled database"), e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| io(&context(&format!("opening tree {name:?}")), e));
        let meta = tree("meta")?;
        // The version is raw big-endian bytes, not postcard, so that it stays
        // readable whatever a future format does to record encoding.
        match meta.get(FORMAT_VERSION_KEY).map_err(|e| io(&context("reading format version"), e))? {
            Some(found) => {
                let found =
                    <[u8; 4]>::try_from(found.as_ref()).map(u32::from_be_bytes).map_err(|_| StoreError::Corrupt {
                        what: "meta/format_version".into(),
                        detail: format!("expected 4 bytes, found {}", found.len()),
                    })?;
                if found == 1 {
                    migrate_v1_sessions(&tree("sessions")?)?;
                    meta.insert(FORMAT_VERSION_KEY, &FORMAT_VERSION.to_be_bytes())
                        .map_err(|e| io(&context("writing format version"), e))?;
                    db.flush().map_err(|e| io(&context("flushing the migration to format 2"), e))?;
                    tracing::info!(path = %path.display(), "store migrated from format version 1");
                } else if found == 2 {
                    // Format 3 added the journal; the records are unchanged. The
                    // stamp keeps an older build, which would not replay the
                    // journal, from opening this directory.
                    meta.insert(FORMAT_VERSION_KEY, &FORMAT_VERSION.to_be_bytes())
                        .map_err(|e| io(&context("writing format version"), e))?;
                    db.flush().map_err(|e| io(&context("flushing the format stamp"), e))?;
                } else if found != FORMAT_VERSION {
                    return Err(StoreError::FormatVersion { found, expected: FORMAT_VERSION });
                }
            }
            None => {
                meta.insert(FORMAT_VERSION_KEY, &FORMAT_VERSION.to_be_bytes())
                    .map_err(|e| io(&context("writing format version"), e))?;
                // Make the stamp durable before any record is written, so a
                // crash can never leave records in an unstamped database.
                db.flush().map_err(|e| io(&context("flushing format version"), e))?;
            }
        }
        let (retained, sessions, deliveries) = (tree("retained")?, tree("sessions")?, tree("deliveries")?);
        let (history, push, files) = (tree("history")?, tree("push")?, tree("files")?);
        let journal = Journal::open(path, &db, checkpoint_bytes, |id| {
            match id {
                TreeId::Retained => &retained,
                TreeId::Sessions => &sessions,
                TreeId::Deliveries => &deliveries,
                TreeId::History => &history,
                TreeId::Push => &push,
                TreeId::Files => &files,
            }
            .clone()
        })?;
        Ok(SledStore {
            retained,
            sessions,
            deliveries,
            history,
            push,
            files,
            history_appends: Default::default(),
            journal,
        })
    }

    fn tree(&self, id: TreeId) -> &sled::Tree {
        match id {
            TreeId::Retained => &self.retained,
            TreeId::Sessions => &self.sessions,
            TreeId::Deliveries => &self.deliveries,
            TreeId::History => &self.history,
            TreeId::Push => &self.push,
            TreeId::Files => &self.files,
        }
    }

    /// Sets `key` in tree `id`: journal first, then sled.
    fn put(&self, id: TreeId, key: &[u8], value: &[u8], context: impl FnOnce() -> String) -> Result<(), StoreError> {
        self.journal.write(id, &[Op::Insert(key, value)], || {
            self.tree(id).insert(key, value).map(drop).map_err(|e| io(&context(), e))
        })
    }

    /// Removes `keys` from tree `id` (one journal write, one sled batch).
    fn delete(
        &self,
        id: TreeId,
        keys: &[impl AsRef<[u8]>],
        context: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let ops: Vec<Op<'_>> = keys.iter().map(|k| Op::Remove(k.as_ref())).collect();
        self.journal.write(id, &ops, || {
            let tree = self.tree(id);
            match keys {
                [one] => tree.remove(one.as_ref()).map(drop),
                many => {
                    let mut batch = sled::Batch::default();
                    for key in many {
                        batch.remove(key.as_ref());
                    }
                    tree.apply_batch(batch)
                }
            }
            .map_err(|e| io(&context(), e))
        })
    }

    /// The journal's current generation and length, and whether a
    /// checkpoint is running (tests).
    #[cfg(test)]
    pub(super) fn journal_position(&self) -> (u64, u64, bool) {
        self.journal.position()
    }
}

impl Drop for SledStore {
    /// A clean close leaves nothing to replay: sled is flushed and the
    /// journal files deleted (a failure only means a replay at next open).
    fn drop(&mut self) {
        if let Err(e) = self.journal.close_clean() {
            tracing::warn!(error = %e, "closing the store journal; it will be replayed at next open");
        }
    }
}

/// How long `open` waits for a directory lock held by a store that is still
/// closing in this process (sled finishes background work on its own threads
/// after the last handle drops). A lock held by another process still fails,
/// just five seconds later.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Format 1 -> 2: session records gained `user` (the owner). Sessions
/// written by version 1 had no authentication: they become anonymous ones.
fn migrate_v1_sessions(sessions: &sled::Tree) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct SessionV1 {
        client_id: String,
        expiry_secs: u32,
        disconnected_at_ms: Option<u64>,
        subscriptions: Vec<super::StoredSubscription>,
    }
    for kv in sessions.iter() {
        let (key, value) = kv.map_err(|e| io("migrating sessions", e))?;
        let old: SessionV1 = decode(format!("format-1 session {:?}", String::from_utf8_lossy(&key)), &value)?;
        let new = StoredSession {
            client_id: old.client_id,
            user: None,
            expiry_secs: old.expiry_secs,
            disconnected_at_ms: old.disconnected_at_ms,
            subscriptions: old.subscriptions,
        };
        sessions.insert(key, encode("session", &new)?).map_err(|e| io("migrating sessions", e))?;
    }
    Ok(())
}

/// Opens sled, waiting (at most `LOCK_WAIT`) for a handle just dropped
/// to release the directory's lock: sled's background threads hold it a
/// moment past the drop. The store's tests open raw sled this way too.
pub(super) fn open_waiting_for_lock(path: &Path) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        // No background flushing: the journal makes writes durable, and
        // checkpoints flush sled when they cut it.
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            // sled reports a held lock as ErrorKind::Other with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl Store for SledStore {
    fn load_retained(&self) -> Result<Vec<StoredMessage>, StoreError> {
        self.retained
            .iter()
            .map(|kv| {
                let (key, value) = kv.map_err(|e| io("scanning retained messages", e))?;
                decode(format!("retained message {:?}", String::from_utf8_lossy(&key)), &value)
            })
            .collect()
    }

    fn set_retained(&self, topic: &str, message: Option<&StoredMessage>) -> Result<(), StoreError> {
        let context = || format!("storing retained message for {topic:?}");
        match message {
            Some(message) => {
                self.put(TreeId::Retained, topic.as_bytes(), &encode("retained message", message)?, context)
            }
            None => self.delete(TreeId::Retained, &[topic], context),
        }
    }

    fn load_sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        self.sessions
            .iter()
            .map(|kv| {
                let (key, value) = kv.map_err(|e| io("scanning sessions", e))?;
                decode(format!("session {:?}", String::from_utf8_lossy(&key)), &value)
            })
            .collect()
    }

    fn save_session(&self, session: &StoredSession) -> Result<(), StoreError> {
        let value = encode("session", session)?;
        self.put(TreeId::Sessions, session.client_id.as_bytes(), &value, || {
            format!("saving session {:?}", session.client_id)
        })
    }

    fn remove_session(&self, client_id: &str) -> Result<(), StoreError> {
        let context = || format!("removing session {client_id:?}");
        // Deliveries go first: sled persists writes in order, so a crash in
        // between leaves at worst a session whose queue was already being
        // discarded, never orphaned deliveries that a later session with the
        // same client id would wrongly inherit.
        let keys = self
            .deliveries
            .scan_prefix(delivery_prefix(client_id)?)
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io(&context(), e))?;
        self.delete(TreeId::Deliveries, &keys, context)?;
        self.delete(TreeId::Sessions, &[client_id], context)
    }

    fn push_delivery(&self, client_id: &str, delivery: &StoredDelivery) -> Result<(), StoreError> {
        let value = encode("delivery", delivery)?;
        self.put(TreeId::Deliveries, &delivery_key(client_id, delivery.seq)?, &value, || {
            format!("queueing delivery {} for {client_id:?}", delivery.seq)
        })
    }

    fn remove_delivery(&self, client_id: &str, seq: u64) -> Result<(), StoreError> {
        self.delete(TreeId::Deliveries, &[delivery_key(client_id, seq)?], || {
            format!("removing delivery {seq} for {client_id:?}")
        })
    }

    fn load_deliveries(
        &self,
        client_id: &str,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        let prefix = delivery_prefix(client_id)?;
        // Streams the records in key order and stops at the limits: the rest
        // are never read into memory.
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for delivery in self.deliveries.scan_prefix(&prefix).map(|kv| {
            let (key, value) = kv.map_err(|e| io(&format!("scanning deliveries of {client_id:?}"), e))?;
            let what = || format!("delivery of {client_id:?}, key {key:?}");
            let delivery: StoredDelivery = decode(what(), &value)?;
            // The key decides the order, so a record whose own seq
            // disagrees with it would be replayed out of order.
            if key[prefix.len()..] != delivery.seq.to_be_bytes() {
                return Err(StoreError::Corrupt { what: what(), detail: format!("record says seq {}", delivery.seq) });
            }
            Ok(delivery)
        }) {
            let delivery = delivery?;
            bytes += delivery.message.payload.len().max(1);
            if out.len() >= max_items || (!out.is_empty() && bytes > max_bytes) {
                break;
            }
            out.push(delivery);
        }
        Ok(out)
    }

    fn append_history(&self, message: &StoredMessage, keep: usize, not_before_ms: u64) -> Result<(), StoreError> {
        let context = || format!("appending to the history of {:?}", message.topic);
        let prefix = history_prefix(&message.topic);
        let key = history_key(&message.topic, message.id);
        self.put(TreeId::History, &key, &encode("history message", message)?, context)?;
        let trim = super::history_trim_due_for(&mut self.history_appends.lock(), &message.topic);
        if !trim {
            return Ok(());
        }
        // Newest first: skip what is kept, remove the rest; then the too old.
        let mut doomed = Vec::new();
        for (i, kv) in self.history.scan_prefix(&prefix).rev().enumerate() {
            let (key, value) = kv.map_err(|e| io(&context(), e))?;
            let too_old = not_before_ms > 0
                && decode::<StoredMessage>("history message", &value).is_ok_and(|m| m.timestamp_ms < not_before_ms);
            if i >= keep || too_old {
                doomed.push(key);
            }
        }
        self.delete(TreeId::History, &doomed, context)
    }

    fn load_history(
        &self,
        topic: &str,
        after_id: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let Some(first) = after_id.checked_add(1) else { return Ok(Vec::new()) };
        self.history_page(topic, history_key(topic, first), topic_end(topic), limit, not_before_ms)
    }

    fn load_history_before(
        &self,
        topic: &str,
        before_id: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.history_page(topic, history_prefix(topic), history_key(topic, before_id), limit, not_before_ms)
    }

    fn sweep_history(&self, not_before: &dyn Fn(&str) -> Option<u64>) -> Result<usize, StoreError> {
        let context = "sweeping old history";
        let mut removed = 0;
        let mut from: Vec<u8> = Vec::new();
        // One topic a turn: find its first key, sweep its oldest messages,
        // then seek past it ("topic, 0x01" sorts after every "topic, 0x00, id").
        while let Some(kv) = self.history.range(from.as_slice()..).next() {
            let (key, _) = kv.map_err(|e| io(context, e))?;
            let Some(end) = key.iter().position(|b| *b == 0) else {
                from = key.to_vec();
                from.push(0);
                continue;
            };
            let topic = String::from_utf8_lossy(&key[..end]).into_owned();
            if let Some(cutoff) = not_before(&topic) {
                let mut doomed = Vec::new();
                for kv in self.history.scan_prefix(&key[..=end]) {
                    let (k, v) = kv.map_err(|e| io(context, e))?;
                    // Ids grow with time: the first young message ends the walk.
                    if decode::<StoredMessage>("history message", &v).is_ok_and(|m| m.timestamp_ms >= cutoff) {
                        break;
                    }
                    doomed.push(k);
                    removed += 1;
                }
                self.delete(TreeId::History, &doomed, || context.to_string())?;
            }
            from = key[..end].to_vec();
            from.push(1);
        }
        Ok(removed)
    }

    fn push_queue_add(&self, seq: u64, event: &[u8]) -> Result<(), StoreError> {
        self.put(TreeId::Push, &seq.to_be_bytes(), event, || "queueing a push".into())
    }

    fn push_queue_remove(&self, seq: u64) -> Result<(), StoreError> {
        self.delete(TreeId::Push, &[seq.to_be_bytes()], || "removing a sent push".into())
    }

    fn push_queue_load(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.push
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| io("loading the push queue", e))?;
                let seq = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes).map_err(|_| StoreError::Corrupt {
                    what: "push queue key".into(),
                    detail: format!("expected 8 bytes, found {}", k.len()),
                })?;
                Ok((seq, v.to_vec()))
            })
            .collect()
    }

    fn files_put(&self, key: &str, record: &[u8]) -> Result<(), StoreError> {
        self.put(TreeId::Files, key.as_bytes(), record, || "saving a file record".into())
    }

    fn files_remove(&self, key: &str) -> Result<(), StoreError> {
        self.delete(TreeId::Files, &[key], || "removing a file record".into())
    }

    fn files_load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.files
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| io("loading file records", e))?;
                let key = String::from_utf8(k.to_vec())
                    .map_err(|_| StoreError::Corrupt { what: "file record key".into(), detail: "not UTF-8".into() })?;
                Ok((key, v.to_vec()))
            })
            .collect()
    }

    fn history_topics(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let context = "listing history topics";
        let mut topics = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        // One key a topic: read the first, then seek past the topic
        // ("topic, 0x01" sorts after every "topic, 0x00, id").
        while topics.len() < limit {
            let Some(kv) = self.history.range(from.as_slice()..).next() else { break };
            let (key, _) = kv.map_err(|e| io(context, e))?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
            topics.push(String::from_utf8_lossy(&key[..end]).into_owned());
            from = key[..end].to_vec();
            from.push(1);
        }
        Ok(topics)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.journal.sync()
    }
}
