//! [`Journal`]: the append-only redo log that makes sled writes durable with
//! one `fdatasync`.
//!
//! Owns: the journal files (`<data dir>/journal/<generation>.log`), one
//! record appended per store write, `sync` (what `Store::flush` costs), the
//! replay into sled when the store opens, and the checkpoint that deletes a
//! file once sled has flushed everything it covers.
//! Must never: decide what is stored (the sled store hands it tree, key and
//! value); hold its lock across more than one `write` and the sled operation
//! it records.
//!
//! Why: a sled flush writes out every dirty page and took about 11 ms on the
//! disk we measure on, while an `fdatasync` of an append-only file takes
//! about 0.3 ms (docs/performance.md, "Durable QoS 1"). Acknowledgements wait
//! for durability, so their latency is the flush's.
//!
//! The rules that make replay exact:
//! - **Write-ahead, in one order.** A write appends its record with one
//!   `write` call and then applies the same operation to sled, both under
//!   one lock, so the journal's order is sled's order. The record is in the
//!   kernel's page cache before sled has it, so a killed process (`kill -9`)
//!   never leaves sled ahead of the journal: replaying the journal over
//!   whatever sled recovered gives exactly the state of the last record.
//! - **Operations are idempotent.** A record says "key := value" or "key is
//!   gone", so replaying one that sled already had changes nothing.
//! - **A file is deleted only after sled is durable past it.** A checkpoint
//!   starts a new file, flushes sled, fsyncs sled's file, and only then
//!   deletes the older files.
//! - **A torn tail is expected, not corruption.** A crash can cut the last
//!   record; each record carries its length and a CRC-32, and replay stops at
//!   the first record that does not check out (logged with what was skipped).
//!
//! On power loss what survives is what the last `sync` covered (plus what
//! the kernel happened to write): the same promise as before, one
//! `fdatasync` instead of a sled flush.

use super::StoreError;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Identifies each file as a starling journal, then its format version.
const MAGIC: &[u8; 16] = b"starling-journal";
const VERSION: u32 = 1;
const HEADER_LEN: usize = MAGIC.len() + 4;
/// Length (u32) and CRC-32 (u32) in front of every record's body.
const RECORD_HEADER_LEN: usize = 8;
/// A record body larger than this is corruption, not a write (the largest
/// store write is a retained message or queued delivery, bounded by the
/// maximum packet size, 256 MiB in MQTT).
const MAX_RECORD_LEN: usize = 300 * 1024 * 1024;

/// Once the current file holds this many bytes, the next write starts a
/// checkpoint: replay after a crash reads at most about this much.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

const OP_INSERT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// The sled trees the journal records writes to (the byte in each record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TreeId {
    Retained = 1,
    Sessions = 2,
    Deliveries = 3,
    History = 4,
    Push = 5,
    Files = 6,
}

impl TreeId {
    pub const ALL: [TreeId; 6] =
        [TreeId::Retained, TreeId::Sessions, TreeId::Deliveries, TreeId::History, TreeId::Push, TreeId::Files];

    fn from_byte(b: u8) -> Option<TreeId> {
        TreeId::ALL.into_iter().find(|t| *t as u8 == b)
    }
}

/// One write to record: set `key` to `value`, or remove it.
pub enum Op<'a> {
    Insert(&'a [u8], &'a [u8]),
    Remove(&'a [u8]),
}

pub struct Journal {
    dir: PathBuf,
    /// sled's own directory: its `db` file is fsynced at each checkpoint.
    sled_dir: PathBuf,
    db: sled::Db,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    active: Mutex<Active>,
    /// A checkpoint is running on its own thread (at most one at a time).
    checkpointing: Arc<AtomicBool>,
    /// [`CHECKPOINT_BYTES`], smaller in tests.
    checkpoint_bytes: u64,
}

struct Active {
    file: Arc<File>,
    generation: u64,
    /// Bytes in the current file (where the next record starts).
    len: u64,
    /// Encoding buffer, reused so that a write allocates nothing.
    scratch: Vec<u8>,
    /// A write failed half-way and the file could not be cut back: every
    /// later write is refused rather than appended after a torn record.
    broken: Option<String>,
}

fn io(context: impl std::fmt::Display, err: std::io::Error) -> StoreError {
    StoreError::Io(format!("{context}: {err}"))
}

impl Journal {
    /// Replays every journal file in `sled_dir/journal` into `trees` (in
    /// generation order), makes sled durable, deletes the replayed files and
    /// starts a new one.
    pub fn open(
        sled_dir: &Path,
        db: &sled::Db,
        checkpoint_bytes: u64,
        tree_of: impl Fn(TreeId) -> sled::Tree,
    ) -> Result<Journal, StoreError> {
        let dir = sled_dir.join("journal");
        std::fs::create_dir_all(&dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
        let files = journal_files(&dir)?;
        let mut replayed = 0;
        for (_, path) in &files {
            replayed += replay_file(path, &tree_of)?;
        }
        if replayed > 0 {
            db.flush().map_err(|e| StoreError::Io(format!("flushing the replayed journal: {e}")))?;
            sync_sled_file(sled_dir)?;
            tracing::info!(records = replayed, dir = %dir.display(), "replayed the store journal");
        }
        let generation = files.last().map_or(1, |(g, _)| g + 1);
        let file = create_file(&dir, generation)?;
        // The replayed files go only once sled holds what they held.
        for (_, path) in &files {
            std::fs::remove_file(path).map_err(|e| io(format!("removing {}", path.display()), e))?;
        }
        sync_dir(&dir)?;
        let journal = Journal {
            dir,
            sled_dir: sled_dir.to_path_buf(),
            db: db.clone(),
            active: Mutex::new(Active {
                file: Arc::new(file),
                generation,
                len: HEADER_LEN as u64,
                scratch: Vec::new(),
                broken: None,
            }),
            checkpointing: Arc::new(AtomicBool::new(false)),
            checkpoint_bytes,
        };
        Ok(journal)
    }

    /// Records `ops` on `tree` (one `write` for all of them), then runs
    /// `apply` (the same operations on sled), under one lock.
    pub fn write<T>(
        &self,
        tree: TreeId,
        ops: &[Op<'_>],
        apply: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut active = self.active.lock();
        if let Some(why) = &active.broken {
            return Err(StoreError::Io(format!("the store journal is unusable after an earlier failure: {why}")));
        }
        let mut scratch = std::mem::take(&mut active.scratch);
        scratch.clear();
        for op in ops {
            encode_record(&mut scratch, tree, op);
        }
        let written = (&*active.file).write_all(&scratch);
        if let Err(e) = written {
            // Cut the file back to the last whole record, so nothing is
            // ever appended after a torn one; if even that fails, stop.
            if let Err(cut) = active.file.set_len(active.len) {
                active.broken = Some(format!("write failed ({e}) and truncating failed ({cut})"));
            }
            active.scratch = scratch;
            return Err(io("appending to the store journal", e));
        }
        active.len += scratch.len() as u64;
        active.scratch = scratch;
        let result = apply();
        if active.len >= self.checkpoint_bytes && !self.checkpointing.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.start_checkpoint(&mut active) {
                self.checkpointing.store(false, Ordering::Release);
                tracing::warn!(error = %e, "store journal checkpoint could not start; will retry");
            }
        }
        result
    }

    /// Blocks until every record written before the call is durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        // A checkpoint synced the older files before it switched, so the
        // current file is the only one that can hold unsynced records.
        let file = self.active.lock().file.clone();
        file.sync_data().map_err(|e| io("syncing the store journal", e))
    }

    /// Switches to a new file (under the lock) and, on a thread of its own,
    /// flushes sled and deletes the older files.
    fn start_checkpoint(&self, active: &mut Active) -> Result<(), StoreError> {
        active.file.sync_data().map_err(|e| io("syncing the store journal before a checkpoint", e))?;
        let generation = active.generation + 1;
        let file = create_file(&self.dir, generation)?;
        sync_dir(&self.dir)?;
        active.file = Arc::new(file);
        active.generation = generation;
        active.len = HEADER_LEN as u64;
        let (db, dir, sled_dir, done) =
            (self.db.clone(), self.dir.clone(), self.sled_dir.clone(), self.checkpointing.clone());
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                if let Err(e) = checkpoint(&db, &dir, &sled_dir, generation) {
                    tracing::warn!(error = %e, "store journal checkpoint failed; the journal is kept and replayed at start");
                }
                done.store(false, Ordering::Release);
            })
            .map_err(|e| io("starting the checkpoint thread", e))?;
        Ok(())
    }

    /// For a clean close: flushes sled and deletes every journal file, so
    /// the next open has nothing to replay.
    pub fn close_clean(&self) -> Result<(), StoreError> {
        let active = self.active.lock();
        checkpoint(&self.db, &self.dir, &self.sled_dir, active.generation + 1)
    }

    /// The current file's generation and length, and whether a checkpoint
    /// is running (tests).
    #[cfg(test)]
    pub fn position(&self) -> (u64, u64, bool) {
        let active = self.active.lock();
        (active.generation, active.len, self.checkpointing.load(Ordering::Acquire))
    }
}

/// Makes sled durable past every file older than `current`, then deletes them.
fn checkpoint(db: &sled::Db, dir: &Path, sled_dir: &Path, current: u64) -> Result<(), StoreError> {
    db.flush().map_err(|e| StoreError::Io(format!("flushing sled for a checkpoint: {e}")))?;
    sync_sled_file(sled_dir)?;
    for (generation, path) in journal_files(dir)? {
        if generation < current {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(format!("removing {}", path.display()), e))
                }
                _ => {}
            }
        }
    }
    sync_dir(dir)
}

/// sled makes its log stable with `sync_file_range`, which neither writes
/// the file's size nor flushes the disk's cache; an fsync of its `db` file
/// does both, so that deleting a journal file never trusts less than that.
fn sync_sled_file(sled_dir: &Path) -> Result<(), StoreError> {
    let path = sled_dir.join("db");
    match File::open(&path) {
        Ok(file) => file.sync_all().map_err(|e| io(format!("syncing {}", path.display()), e)),
        Err(e) => Err(io(format!("opening {}", path.display()), e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(format!("syncing directory {}", dir.display()), e))
}

fn file_name(generation: u64) -> String {
    format!("{generation:020}.log")
}

fn create_file(dir: &Path, generation: u64) -> Result<File, StoreError> {
    let path = dir.join(file_name(generation));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| io(format!("creating {}", path.display()), e))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    file.write_all(&header).and_then(|_| file.sync_data()).map_err(|e| io(format!("writing {}", path.display()), e))?;
    Ok(file)
}

/// The journal files in `dir`, oldest generation first. Other files are
/// left alone.
fn journal_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(format!("listing {}", dir.display()), e))? {
        let entry = entry.map_err(|e| io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let generation = name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse::<u64>().ok());
        if let Some(generation) = generation {
            files.push((generation, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Body: op, tree, key length (u32 LE), key, value (the rest).
fn encode_record(out: &mut Vec<u8>, tree: TreeId, op: &Op<'_>) {
    let (code, key, value): (u8, &[u8], &[u8]) = match op {
        Op::Insert(key, value) => (OP_INSERT, key, value),
        Op::Remove(key) => (OP_REMOVE, key, &[]),
    };
    let body_len = 2 + 4 + key.len() + value.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, once the body is in place
    out.push(code);
    out.push(tree as u8);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record read back: the tree and the operation on it.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub tree: TreeId,
    pub key: Vec<u8>,
    /// `None`: the key was removed.
    pub value: Option<Vec<u8>>,
}

/// Decodes the records of one file's contents (after its header). Stops at
/// the first record that is cut short or fails its check, and says where.
pub fn decode_records(mut data: &[u8]) -> (Vec<Record>, Option<String>) {
    let mut records = Vec::new();
    let mut offset = HEADER_LEN;
    while !data.is_empty() {
        let bad = |why: String| Some(format!("at byte {offset}: {why}; {} bytes after it skipped", data.len()));
        if data.len() < RECORD_HEADER_LEN {
            return (records, bad("record header cut short".into()));
        }
        let len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
        if !(6..=MAX_RECORD_LEN).contains(&len) || data.len() < RECORD_HEADER_LEN + len {
            return (records, bad(format!("record of {len} bytes cut short or impossible")));
        }
        let body = &data[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
        if crc32fast::hash(body) != crc {
            return (records, bad("checksum mismatch".into()));
        }
        let key_len = u32::from_le_bytes(body[2..6].try_into().expect("4 bytes")) as usize;
        let (Some(tree), true) = (TreeId::from_byte(body[1]), 6 + key_len <= len) else {
            return (records, bad(format!("unknown tree {} or key of {key_len} bytes", body[1])));
        };
        let key = body[6..6 + key_len].to_vec();
        let value = match body[0] {
            OP_INSERT => Some(body[6 + key_len..].to_vec()),
            OP_REMOVE => None,
            other => return (records, bad(format!("unknown operation {other}"))),
        };
        records.push(Record { tree, key, value });
        data = &data[RECORD_HEADER_LEN + len..];
        offset += RECORD_HEADER_LEN + len;
    }
    (records, None)
}

fn replay_file(path: &Path, tree_of: &impl Fn(TreeId) -> sled::Tree) -> Result<usize, StoreError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| io(format!("reading {}", path.display()), e))?;
    if data.len() < HEADER_LEN {
        // Created but its header never made it to disk: nothing to replay.
        tracing::warn!(file = %path.display(), "store journal file without a whole header; ignored");
        return Ok(0);
    }
    if &data[..MAGIC.len()] != MAGIC {
        return Err(StoreError::Corrupt {
            what: format!("journal file {}", path.display()),
            detail: "not a starling journal (bad magic)".into(),
        });
    }
    let version = u32::from_le_bytes(data[MAGIC.len()..HEADER_LEN].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(StoreError::Corrupt {
            what: format!("journal file {}", path.display()),
            detail: format!("journal format {version}, this build reads {VERSION}"),
        });
    }
    let (records, stopped) = decode_records(&data[HEADER_LEN..]);
    if let Some(why) = stopped {
        // Normal after a crash mid-write: the cut record was never
        // acknowledged (acknowledgements wait for `sync`).
        tracing::warn!(file = %path.display(), "store journal ends in a partial record {why}");
    }
    let count = records.len();
    for record in records {
        let tree = tree_of(record.tree);
        let result = match record.value {
            Some(value) => tree.insert(record.key, value).map(drop),
            None => tree.remove(record.key).map(drop),
        };
        result.map_err(|e| StoreError::Io(format!("replaying {}: {e}", path.display())))?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(records: &[(TreeId, Op<'_>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (tree, op) in records {
            encode_record(&mut out, *tree, op);
        }
        out
    }

    #[test]
    fn records_round_trip() {
        let data = encoded(&[
            (TreeId::Deliveries, Op::Insert(b"client\0seq", b"value")),
            (TreeId::Retained, Op::Remove(b"a/b")),
            (TreeId::Files, Op::Insert(b"", b"")),
        ]);
        let (records, stopped) = decode_records(&data);
        assert_eq!(stopped, None);
        assert_eq!(
            records,
            [
                Record { tree: TreeId::Deliveries, key: b"client\0seq".to_vec(), value: Some(b"value".to_vec()) },
                Record { tree: TreeId::Retained, key: b"a/b".to_vec(), value: None },
                Record { tree: TreeId::Files, key: vec![], value: Some(vec![]) },
            ]
        );
    }

    /// Every cut of the last record, and every flipped byte in it, loses
    /// that record only: the ones before it are read back.
    #[test]
    fn a_torn_or_damaged_tail_keeps_every_record_before_it() {
        let first = encoded(&[(TreeId::Sessions, Op::Insert(b"c", b"session"))]);
        let mut data = first.clone();
        data.extend(encoded(&[(TreeId::Deliveries, Op::Insert(b"c\0\0\0\0\0\0\0\0\x01", b"payload"))]));
        for cut in first.len()..data.len() {
            let (records, stopped) = decode_records(&data[..cut]);
            assert_eq!(records.len(), 1, "cut at {cut}");
            assert_eq!(stopped.is_some(), cut > first.len(), "cut at {cut}");
        }
        for flip in first.len()..data.len() {
            let mut damaged = data.clone();
            damaged[flip] ^= 0x40;
            let (records, stopped) = decode_records(&damaged);
            assert_eq!(records.len(), 1, "flipped byte {flip}");
            assert!(stopped.is_some(), "flipped byte {flip}");
        }
    }
}
