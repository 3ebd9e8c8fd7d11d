//! Files in chat: resumable uploads (tus 1.0) and downloads, stored once by
//! content. docs/files.md describes the endpoint, limits and choices.
//!
//! Layout on disk (`files.dir`): `partial/{id}` holds an upload's bytes while
//! it arrives; a finished upload's bytes move to `blobs/{sha256}`, where
//! content uploaded twice is kept once. Each upload's record (owner, length,
//! durable offset, metadata, and once complete the sha256) is JSON in the
//! store's `files` tree; an in-memory index of them answers requests.
//!
//! Durability: a record's `offset` only moves after the bytes below it were
//! fsynced, so after a crash (SIGKILL) `HEAD` answers the last durable offset
//! and the partial file is cut back to it before the next write. At start the
//! index is rebuilt and reconciled with the disk: a finished record whose
//! blob never got its bytes takes them from `partial/`, and files that no
//! record names are removed.
//!
//! Owns: the records, the index (quotas, content dedup, who holds which
//! upload), the on-disk layout and the sweep of expired uploads.
//! Must never: hold the index lock across an `.await` or a long read (the
//! whole-file hash runs without it), or trust a client's claimed hash for
//! access: content is shared only with an owner who uploaded it before.
//!
//! Submodules: `tus` (the protocol's headers, pure) and `http` (the hyper
//! service on the WebSocket port).

pub mod http;
mod index;
pub mod tus;

use index::{Blob, Index, Writing};

use crate::config::{Config, FilesConfig};
use crate::store::{Store, StoreError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// One upload, finished or not: what the store keeps under `f/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub id: String,
    /// Who uploaded it: `user:NAME`, or `ip:ADDRESS` for anonymous clients.
    pub owner: String,
    /// `Upload-Length`.
    pub length: u64,
    /// Bytes received and durable; equals `length` once complete.
    pub offset: u64,
    /// The content's sha256 (hex), set when the upload is complete.
    pub sha256: Option<String>,
    /// The sha256 the client announced in `Upload-Metadata` (hex): checked at
    /// completion, and what instant upload looks for.
    pub claimed_sha256: Option<String>,
    /// `Upload-Metadata` as the client sent it (echoed by `HEAD`).
    pub metadata: String,
    /// From the metadata: `filename`, `filetype`, `private`.
    pub name: Option<String>,
    pub mime: Option<String>,
    pub private: bool,
    pub created_ms: u64,
    /// Unix ms after which an unfinished upload is gone: its last received
    /// byte plus `files.incomplete_expiry_secs`.
    pub expires_ms: u64,
}

impl FileRecord {
    pub fn is_complete(&self) -> bool {
        self.sha256.is_some()
    }

    /// What the record counts against quotas: a finished file its length,
    /// an unfinished upload the bytes it received (a declared length
    /// reserves nothing: issue 24, item 11; the chunk being written is
    /// reserved apart, see `Files::begin_write`).
    pub(crate) fn counted_bytes(&self) -> u64 {
        if self.is_complete() {
            self.length
        } else {
            self.offset
        }
    }
}

/// Who asks: the key quotas and ownership use, and whether they are a superuser.
#[derive(Debug, Clone)]
pub struct Requester {
    pub owner: String,
    pub superuser: bool,
}

/// Why a request on a file failed; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// No such upload, or not the requester's to see (404: existence is not revealed).
    NotFound,
    /// An unfinished upload past its expiry (410).
    Gone,
    /// `Upload-Offset` is not the upload's offset, or it is complete (409).
    Conflict(String),
    /// Another request is writing to this upload (423).
    Locked,
    /// A size, quota or count limit (413).
    TooLarge(String),
    /// The bytes are not what the client said they are (460).
    Checksum(String),
    BadRequest(String),
    /// Not the owner's to change (403).
    Forbidden,
    /// The disk or the store failed (500).
    Internal(String),
}

impl FileError {
    pub fn status(&self) -> u16 {
        match self {
            FileError::NotFound => 404,
            FileError::Gone => 410,
            FileError::Conflict(_) => 409,
            FileError::Locked => 423,
            FileError::TooLarge(_) => 413,
            FileError::Checksum(_) => tus::CHECKSUM_MISMATCH,
            FileError::BadRequest(_) => 400,
            FileError::Forbidden => 403,
            FileError::Internal(_) => 500,
        }
    }

    pub fn message(&self) -> String {
        match self {
            FileError::NotFound => "no such file".into(),
            FileError::Gone => "this upload expired: start a new one".into(),
            FileError::Locked => "another request is writing to this upload".into(),
            FileError::Forbidden => "only the uploader may do that".into(),
            FileError::Conflict(m)
            | FileError::TooLarge(m)
            | FileError::Checksum(m)
            | FileError::BadRequest(m)
            | FileError::Internal(m) => m.clone(),
        }
    }
}

impl From<StoreError> for FileError {
    fn from(e: StoreError) -> Self {
        FileError::Internal(format!("the store failed: {e}"))
    }
}

fn io_error(what: &str, e: std::io::Error) -> FileError {
    tracing::warn!(error = %e, "files: {what}");
    FileError::Internal(format!("{what}: {e}"))
}

/// A snapshot of [`Files::totals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesTotals {
    pub files: usize,
    pub unfinished: usize,
    /// What quotas count: finished files at their length, unfinished
    /// uploads at the bytes received plus the chunk being written.
    pub counted_bytes: u64,
    pub stored_bytes: u64,
}

/// What happened to uploads since start (`/metrics`).
#[derive(Debug, Default)]
pub struct FilesCounters {
    pub created: AtomicU64,
    /// Created complete: the owner uploaded the content before.
    pub instant: AtomicU64,
    pub completed: AtomicU64,
    /// Body bytes written to uploads.
    pub bytes_received: AtomicU64,
    /// Refused with 413 (size, quota, count or storage limit).
    pub refused_limit: AtomicU64,
    /// Refused with 460 (a chunk's or the whole file's checksum).
    pub refused_checksum: AtomicU64,
    pub expired: AtomicU64,
}

/// The uploaded files of one broker.
pub struct Files {
    pub counters: FilesCounters,
    config: FilesConfig,
    dir: PathBuf,
    /// The directory is ours alone and removed on drop (memory backend).
    temporary: bool,
    store: Arc<dyn Store>,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    index: Mutex<Index>,
}

/// While held, no other request writes to the upload; dropped when the
/// request ends however it ends (a client that vanishes mid-body included).
pub struct WriteLease {
    files: Arc<Files>,
    pub id: String,
}

impl Drop for WriteLease {
    fn drop(&mut self) {
        let mut index = self.files.index.lock();
        if let Some(writing) = index.writing.remove(&self.id) {
            // The part of the chunk that never came is free again.
            index.count_bytes(&writing.owner, -(writing.reserved as i64));
        }
    }
}

/// Key of a record in the store's `files` tree.
fn record_key(id: &str) -> String {
    format!("f/{id}")
}

impl Files {
    /// Opens (creating) the files directory, loads the records and
    /// reconciles them with the disk.
    pub fn open(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<Files> {
        let (dir, temporary) = match config.files_dir() {
            Some(dir) => (dir, false),
            None => {
                (std::env::temp_dir().join(format!("starling-files-{}-{}", std::process::id(), tus::new_id())), true)
            }
        };
        for sub in ["partial", "blobs"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| anyhow::anyhow!("cannot create files.dir {}: {e}", dir.join(sub).display()))?;
        }
        let files = Files {
            counters: FilesCounters::default(),
            config: config.files.clone(),
            dir,
            temporary,
            store,
            index: Mutex::new(Index::default()),
        };
        files.load()?;
        Ok(files)
    }

    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn partial_path(&self, id: &str) -> PathBuf {
        self.dir.join("partial").join(id)
    }

    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(sha256)
    }

    fn load(&self) -> anyhow::Result<()> {
        let mut index = self.index.lock();
        for (key, bytes) in self.store.files_load()? {
            let mut record: FileRecord = match serde_json::from_slice(&bytes) {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(key, error = %e, "files: unreadable record skipped");
                    continue;
                }
            };
            let partial = self.partial_path(&record.id);
            if let Some(sha) = record.sha256.clone() {
                let blob = self.blob_path(&sha);
                if !blob.exists() {
                    // Finished, but the crash came before its bytes moved.
                    if std::fs::rename(&partial, &blob).is_err() {
                        tracing::warn!(id = record.id, "files: a finished file's bytes are missing; record removed");
                        self.store.files_remove(&key)?;
                        continue;
                    }
                }
                let entry = index.blobs.entry(sha).or_insert(Blob { length: record.length, refs: 0 });
                entry.refs += 1;
            } else {
                // The partial file may be longer than the durable offset (bytes
                // written after the last commit): the next write cuts it back.
                // Shorter means bytes were lost below the offset: start from
                // what is there.
                let on_disk = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
                if on_disk < record.offset {
                    tracing::warn!(
                        id = record.id,
                        record.offset,
                        on_disk,
                        "files: upload resumes from the bytes on disk"
                    );
                    record.offset = on_disk;
                }
                if !partial.exists() {
                    std::fs::File::create(&partial)?;
                }
            }
            index.count_in(&record);
            index.files.insert(record.id.clone(), record);
        }
        // Files no record names: leftovers of a crash (or of a memory-backend run).
        let unfinished: HashSet<&str> =
            index.files.values().filter(|f| !f.is_complete()).map(|f| f.id.as_str()).collect();
        let mut orphans = Vec::new();
        for sub in ["partial", "blobs"] {
            for entry in std::fs::read_dir(self.dir.join(sub))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let named =
                    if sub == "partial" { unfinished.contains(name.as_str()) } else { index.blobs.contains_key(&name) };
                if !named {
                    orphans.push(entry.path());
                }
            }
        }
        drop(unfinished);
        let removed = orphans.len();
        for path in orphans {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!(
            dir = %self.dir.display(),
            files = index.files.len(),
            removed_orphans = removed,
            "files: uploads loaded"
        );
        self.store.flush()?;
        Ok(())
    }

    /// Makes every record write before the call durable (on a blocking thread).
    async fn sync(&self) -> Result<(), FileError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| FileError::Internal(format!("flush task failed: {e}")))??;
        Ok(())
    }

    fn save(&self, record: &FileRecord) -> Result<(), FileError> {
        let json = serde_json::to_vec(record).expect("records serialise");
        self.store.files_put(&record_key(&record.id), &json)?;
        Ok(())
    }

    /// Starts an upload of `length` bytes (`POST /files/`). When the client
    /// claims a sha256 that it already uploaded completely (same length),
    /// the new upload is complete at once: instant upload.
    pub async fn create(
        &self,
        requester: &Requester,
        length: u64,
        metadata_header: &str,
        now_ms: u64,
    ) -> Result<FileRecord, FileError> {
        if length > self.config.max_file_bytes {
            return Err(FileError::TooLarge(format!(
                "Upload-Length {length} is over the limit of {} bytes (files.max_file_bytes)",
                self.config.max_file_bytes
            )));
        }
        if metadata_header.len() > self.config.max_metadata_bytes {
            return Err(FileError::TooLarge(format!(
                "Upload-Metadata is {} bytes, over the limit of {} (files.max_metadata_bytes)",
                metadata_header.len(),
                self.config.max_metadata_bytes
            )));
        }
        let metadata = tus::parse_metadata(metadata_header).map_err(FileError::BadRequest)?;
        let claimed = tus::claimed_sha256(&metadata).map_err(FileError::BadRequest)?;
        let mut record = FileRecord {
            id: tus::new_id(),
            owner: requester.owner.clone(),
            length,
            offset: 0,
            sha256: None,
            claimed_sha256: claimed.clone(),
            metadata: metadata_header.to_string(),
            name: tus::metadata_text(&metadata, "filename").or_else(|| tus::metadata_text(&metadata, "name")),
            mime: tus::metadata_text(&metadata, "filetype").or_else(|| tus::metadata_text(&metadata, "type")),
            private: tus::metadata_text(&metadata, "private").is_some_and(|v| v != "false" && v != "0"),
            created_ms: now_ms,
            expires_ms: now_ms + self.config.incomplete_expiry_secs * 1000,
        };
        {
            let mut index = self.index.lock();
            let usage = index.usage.get(&requester.owner).copied().unwrap_or_default();
            if usage.files >= self.config.max_files_per_user {
                return Err(FileError::TooLarge(format!(
                    "you have {} files and uploads, the most allowed (files.max_files_per_user): delete one",
                    usage.files
                )));
            }
            // A file that could never fit is refused now; one that fits
            // reserves nothing until its bytes come (`begin_write`).
            if usage.bytes + length > self.config.user_quota_bytes {
                return Err(FileError::TooLarge(format!(
                    "this upload would take you over your quota: {} of {} bytes used (files.user_quota_bytes)",
                    usage.bytes, self.config.user_quota_bytes
                )));
            }
            if index.total_bytes + length > self.config.max_total_bytes {
                return Err(FileError::TooLarge("the broker's file storage is full (files.max_total_bytes)".into()));
            }
            let instant = claimed.as_deref().filter(|sha| index.own_file(&requester.owner, sha, length).is_some());
            if let Some(sha) = instant {
                self.counters.instant.fetch_add(1, Relaxed);
                let sha = sha.to_string();
                record.offset = length;
                record.sha256 = Some(sha.clone());
                index.blobs.get_mut(&sha).expect("checked above").refs += 1;
            } else {
                if usage.incomplete >= self.config.max_incomplete_per_user {
                    return Err(FileError::TooLarge(format!(
                        "you have {} unfinished uploads, the most allowed (files.max_incomplete_per_user): \
                         finish or delete one",
                        usage.incomplete
                    )));
                }
                std::fs::File::create(self.partial_path(&record.id))
                    .map_err(|e| io_error("cannot create the upload's file", e))?;
            }
            self.save(&record)?;
            index.count_in(&record);
            index.files.insert(record.id.clone(), record.clone());
        }
        self.sync().await?;
        self.counters.created.fetch_add(1, Relaxed);
        Ok(record)
    }

    /// The record as `requester` may see it: an upload only to its owner, a
    /// finished file to anyone unless it is private. Expired: `Gone`.
    pub fn get(&self, requester: &Requester, id: &str, now_ms: u64) -> Result<FileRecord, FileError> {
        let index = self.index.lock();
        let record = index.files.get(id).ok_or(FileError::NotFound)?;
        let own = record.owner == requester.owner || requester.superuser;
        if !own && (!record.is_complete() || record.private) {
            return Err(FileError::NotFound);
        }
        if !record.is_complete() && now_ms >= record.expires_ms {
            return Err(FileError::Gone);
        }
        Ok(record.clone())
    }

    /// The caller's own finished file with this content, if any (`GET /api/v1/files`).
    pub fn find_own(&self, requester: &Requester, sha256: &str, length: u64) -> Option<FileRecord> {
        self.index.lock().own_file(&requester.owner, sha256, length).cloned()
    }

    /// Takes the write lease of an upload for a PATCH at `offset`.
    pub fn begin_write(
        self: &Arc<Self>,
        requester: &Requester,
        id: &str,
        offset: u64,
        now_ms: u64,
    ) -> Result<(WriteLease, FileRecord), FileError> {
        let mut index = self.index.lock();
        let record = index.files.get(id).ok_or(FileError::NotFound)?;
        if record.owner != requester.owner {
            return Err(FileError::NotFound);
        }
        if !record.is_complete() && now_ms >= record.expires_ms {
            return Err(FileError::Gone);
        }
        if index.writing.contains_key(id) {
            return Err(FileError::Locked);
        }
        if record.offset != offset {
            return Err(FileError::Conflict(format!(
                "Upload-Offset {offset} is not the upload's offset {}: HEAD it and resume from there",
                record.offset
            )));
        }
        if record.is_complete() {
            return Err(FileError::Conflict("the upload is complete".into()));
        }
        let record = record.clone();
        // This request may write the rest of the file: that is reserved
        // now, so concurrent chunks of one owner cannot pass the quota.
        let reserved = record.length - record.offset;
        let used = index.usage.get(&record.owner).map_or(0, |u| u.bytes);
        if used + reserved > self.config.user_quota_bytes {
            return Err(FileError::TooLarge(format!(
                "the rest of this upload ({reserved} bytes) would take you over your quota: {used} of {} bytes \
                 used (files.user_quota_bytes)",
                self.config.user_quota_bytes
            )));
        }
        if index.total_bytes + reserved > self.config.max_total_bytes {
            return Err(FileError::TooLarge("the broker's file storage is full (files.max_total_bytes)".into()));
        }
        index.count_bytes(&record.owner, reserved as i64);
        index.writing.insert(id.to_string(), Writing { owner: record.owner.clone(), reserved });
        Ok((WriteLease { files: self.clone(), id: id.to_string() }, record))
    }

    /// Records that the bytes up to `offset` are on disk (the caller fsynced
    /// them) and makes that durable; the upload's expiry moves on.
    pub async fn commit_offset(&self, lease: &WriteLease, offset: u64, now_ms: u64) -> Result<FileRecord, FileError> {
        let record = {
            let mut index = self.index.lock();
            let record = index.files.get_mut(&lease.id).ok_or(FileError::NotFound)?;
            // Received bytes move from the chunk's reservation to the record.
            let received = offset.saturating_sub(record.offset);
            record.offset = offset;
            record.expires_ms = now_ms + self.config.incomplete_expiry_secs * 1000;
            let record = record.clone();
            if let Some(writing) = index.writing.get_mut(&lease.id) {
                writing.reserved = writing.reserved.saturating_sub(received);
            }
            self.save(&record)?;
            record
        };
        self.sync().await?;
        Ok(record)
    }

    /// Finishes an upload whose bytes are all durable: hashes them, checks a
    /// claimed sha256, and moves them to the content store (or drops them if
    /// that content is there already).
    pub async fn finish(&self, lease: &WriteLease) -> Result<FileRecord, FileError> {
        let partial = self.partial_path(&lease.id);
        let sha = tokio::task::spawn_blocking(move || hash_file(&partial))
            .await
            .map_err(|e| FileError::Internal(format!("hash task failed: {e}")))?
            .map_err(|e| io_error("cannot read the uploaded bytes", e))?;
        let mut record = self.index.lock().files.get(&lease.id).cloned().ok_or(FileError::NotFound)?;
        if let Some(claimed) = record.claimed_sha256.as_deref().filter(|c| *c != sha) {
            let why =
                format!("the file's sha256 is {sha}, not {claimed} as Upload-Metadata said: the upload is discarded");
            self.remove_record(&lease.id)?;
            self.sync().await?;
            return Err(FileError::Checksum(why));
        }
        let record = {
            let mut index = self.index.lock();
            record.sha256 = Some(sha.clone());
            record.offset = record.length;
            // Counted before the bytes move, so a concurrent removal of the
            // same content cannot take the blob away in between.
            index.blobs.entry(sha.clone()).or_insert(Blob { length: record.length, refs: 0 }).refs += 1;
            self.save(&record)?;
            record
        };
        // The record says "complete" durably before the bytes move: a crash
        // in between is finished at the next start (see `load`).
        self.sync().await?;
        {
            let mut index = self.index.lock();
            let blob = self.blob_path(&sha);
            let partial = self.partial_path(&lease.id);
            if blob.exists() {
                let _ = std::fs::remove_file(&partial);
            } else {
                std::fs::rename(&partial, &blob).map_err(|e| io_error("cannot store the finished file", e))?;
                sync_dir(&self.dir.join("blobs"));
            }
            if let Some(usage) = index.usage.get_mut(&record.owner) {
                usage.incomplete = usage.incomplete.saturating_sub(1);
            }
            index.files.insert(record.id.clone(), record.clone());
        }
        self.counters.completed.fetch_add(1, Relaxed);
        Ok(record)
    }

    /// Ends an upload or deletes a file (`DELETE`, tus termination): the
    /// owner or a superuser only, and not while a request writes to it.
    pub async fn terminate(&self, requester: &Requester, id: &str) -> Result<(), FileError> {
        {
            let index = self.index.lock();
            let record = index.files.get(id).ok_or(FileError::NotFound)?;
            if record.owner != requester.owner && !requester.superuser {
                return Err(if record.is_complete() && !record.private {
                    FileError::Forbidden
                } else {
                    FileError::NotFound
                });
            }
            if index.writing.contains_key(id) {
                return Err(FileError::Locked);
            }
        }
        self.remove_record(id)?;
        self.sync().await
    }

    /// Forgets a record and removes bytes nothing else needs (not synced).
    fn remove_record(&self, id: &str) -> Result<(), FileError> {
        let mut index = self.index.lock();
        let Some(record) = index.files.remove(id) else { return Ok(()) };
        index.count_out(&record);
        self.store.files_remove(&record_key(id))?;
        match &record.sha256 {
            Some(sha) => {
                let gone = match index.blobs.get_mut(sha) {
                    Some(blob) => {
                        blob.refs = blob.refs.saturating_sub(1);
                        blob.refs == 0
                    }
                    None => false,
                };
                if gone {
                    index.blobs.remove(sha);
                    let _ = std::fs::remove_file(self.blob_path(sha));
                }
            }
            None => {
                let _ = std::fs::remove_file(self.partial_path(id));
            }
        }
        Ok(())
    }

    /// Removes unfinished uploads past their expiry that no request is
    /// writing to. Returns how many. Runs on a blocking thread.
    pub fn sweep(&self, now_ms: u64) -> Result<usize, FileError> {
        let expired: Vec<String> = {
            let index = self.index.lock();
            index
                .files
                .values()
                .filter(|f| !f.is_complete() && now_ms >= f.expires_ms && !index.writing.contains_key(&f.id))
                .map(|f| f.id.clone())
                .collect()
        };
        for id in &expired {
            self.remove_record(id)?;
            self.counters.expired.fetch_add(1, Relaxed);
        }
        if !expired.is_empty() {
            self.store.flush()?;
            tracing::info!(removed = expired.len(), "files: expired uploads removed");
        }
        Ok(expired.len())
    }

    /// Seconds between sweeps: often enough that an expired upload's bytes
    /// do not linger long past `incomplete_expiry_secs`.
    pub fn sweep_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs((self.config.incomplete_expiry_secs / 4).clamp(1, 60))
    }

    /// Finished files, unfinished uploads, bytes held at declared lengths,
    /// and bytes on disk in the content store.
    pub fn totals(&self) -> FilesTotals {
        let index = self.index.lock();
        let unfinished = index.files.values().filter(|f| !f.is_complete()).count();
        FilesTotals {
            files: index.files.len() - unfinished,
            unfinished,
            counted_bytes: index.total_bytes,
            stored_bytes: index.blobs.values().map(|b| b.length).sum(),
        }
    }

    /// Counts a refusal by its status (for `/metrics`).
    pub fn count_refusal(&self, error: &FileError) {
        match error {
            FileError::TooLarge(_) => self.counters.refused_limit.fetch_add(1, Relaxed),
            FileError::Checksum(_) => self.counters.refused_checksum.fetch_add(1, Relaxed),
            _ => 0,
        };
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The sha256 (hex) of a whole file, read in 1 MiB pieces.
fn hash_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(tus::hex(&hasher.finalize()))
}

/// Makes a rename in `dir` durable (best effort: some filesystems refuse).
fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Runs the sweep every [`Files::sweep_interval`] until `stop` turns true.
pub async fn run_sweeper(files: Arc<Files>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(files.sweep_interval()) => {}
            _ = stop.changed() => return,
        }
        let files = files.clone();
        let swept = tokio::task::spawn_blocking(move || files.sweep(crate::clock::now_ms())).await;
        if let Ok(Err(e)) = swept {
            tracing::warn!(error = e.message(), "files: sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unfinished upload answers `Gone` from its expiry until the sweep
    /// removes it, then `NotFound`; a finished file never expires. Pure
    /// clock arithmetic here, because over HTTP the sweep may take the
    /// record before any request sees the 410.
    #[tokio::test]
    async fn an_expired_upload_is_gone_until_swept_then_not_found() {
        let mut config = crate::config::Config::default();
        config.files.incomplete_expiry_secs = 10;
        let files = Arc::new(Files::open(&config, Arc::new(crate::store::MemoryStore::new())).unwrap());
        let alice = Requester { owner: "alice".into(), superuser: false };
        let upload = files.create(&alice, 1000, "", 0).await.unwrap();
        assert!(files.get(&alice, &upload.id, 9_999).is_ok());
        assert_eq!(files.get(&alice, &upload.id, 10_000).err(), Some(FileError::Gone));
        assert_eq!(files.begin_write(&alice, &upload.id, 0, 10_000).err(), Some(FileError::Gone));
        assert_eq!(files.sweep(9_999).unwrap(), 0, "not expired yet");
        assert_eq!(files.sweep(10_000).unwrap(), 1);
        assert_eq!(files.get(&alice, &upload.id, 10_000).err(), Some(FileError::NotFound));
    }
}
