//! The files' index: records, content reference counts, and what each
//! owner holds against its quotas.
//!
//! Owns: the accounting rules (a finished file counts its length, an
//! unfinished upload the bytes received, a request writing to an upload the
//! rest of it, reserved until it ends). Must never: touch the disk or the
//! store (`Files` does, under the index's lock).

use super::FileRecord;
use std::collections::HashMap;

/// Finished content, stored once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Blob {
    pub(super) length: u64,
    /// Finished uploads naming it; the blob is removed when none does.
    pub(super) refs: u32,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Usage {
    /// The owner's finished files at their length, unfinished uploads at
    /// the bytes received, plus the chunks being written (reserved).
    pub(super) bytes: u64,
    pub(super) incomplete: usize,
    /// Every record: finished files and unfinished uploads.
    pub(super) files: usize,
}

/// A request writing to an upload: whose, and the bytes reserved for the
/// rest of its chunk (taken off as they arrive, given back when it ends).
#[derive(Debug)]
pub(super) struct Writing {
    pub(super) owner: String,
    pub(super) reserved: u64,
}

#[derive(Default)]
pub(super) struct Index {
    pub(super) files: HashMap<String, FileRecord>,
    pub(super) blobs: HashMap<String, Blob>,
    pub(super) usage: HashMap<String, Usage>,
    /// What all owners' `Usage::bytes` add up to.
    pub(super) total_bytes: u64,
    /// Uploads a request is writing to right now (one at a time each).
    pub(super) writing: HashMap<String, Writing>,
}

impl Index {
    /// The owner's oldest finished file with this content, if any.
    pub(super) fn own_file(&self, owner: &str, sha256: &str, length: u64) -> Option<&FileRecord> {
        self.files
            .values()
            .filter(|f| f.owner == owner && f.sha256.as_deref() == Some(sha256) && f.length == length)
            .min_by_key(|f| f.created_ms)
    }

    pub(super) fn count_in(&mut self, record: &FileRecord) {
        let usage = self.usage.entry(record.owner.clone()).or_default();
        usage.bytes += record.counted_bytes();
        usage.files += 1;
        if !record.is_complete() {
            usage.incomplete += 1;
        }
        self.total_bytes += record.counted_bytes();
    }

    pub(super) fn count_out(&mut self, record: &FileRecord) {
        if let Some(usage) = self.usage.get_mut(&record.owner) {
            usage.bytes = usage.bytes.saturating_sub(record.counted_bytes());
            usage.files = usage.files.saturating_sub(1);
            if !record.is_complete() {
                usage.incomplete = usage.incomplete.saturating_sub(1);
            }
        }
        self.total_bytes = self.total_bytes.saturating_sub(record.counted_bytes());
        self.forget_unused(&record.owner);
    }

    /// Adds `bytes` to what `owner` holds (negative: gives them back).
    pub(super) fn count_bytes(&mut self, owner: &str, bytes: i64) {
        let usage = self.usage.entry(owner.to_string()).or_default();
        usage.bytes = usage.bytes.saturating_add_signed(bytes);
        self.total_bytes = self.total_bytes.saturating_add_signed(bytes);
        self.forget_unused(owner);
    }

    fn forget_unused(&mut self, owner: &str) {
        if self.usage.get(owner).is_some_and(|u| u.bytes == 0 && u.incomplete == 0 && u.files == 0) {
            self.usage.remove(owner);
        }
    }
}
