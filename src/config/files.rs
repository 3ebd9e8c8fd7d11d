//! `[files]`: resumable uploads and downloads on the WebSocket port (tus 1.0,
//! docs/files.md).
//!
//! Owns: the shape, defaults and validation of the section.
//! Must never: touch the directory it names (`crate::files` creates and
//! scans it when the broker starts).

use serde::Deserialize;
use std::path::PathBuf;

/// `[files]`: where uploaded files live and how much a client may store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// `false`: `/files/` answers 404 and nothing is written.
    pub enabled: bool,
    /// Where the bytes go (`partial/` while uploading, `blobs/` once
    /// complete, stored once per content). Unset: `files` under
    /// `storage.data_dir`.
    pub dir: Option<PathBuf>,
    /// The largest file (`Upload-Length`) accepted; larger: 413.
    pub max_file_bytes: u64,
    /// Bytes one user (or, for anonymous clients, one IP address) may hold:
    /// finished files at their length, unfinished uploads at the bytes
    /// received, plus the rest of an upload while a request writes to it;
    /// beyond: 413. A declared length alone reserves nothing.
    pub user_quota_bytes: u64,
    /// Unfinished uploads one user may have at once; beyond: 413.
    pub max_incomplete_per_user: usize,
    /// Files and unfinished uploads one user may have; beyond: 413. Bounds
    /// the records (and their metadata) a user can make however small.
    pub max_files_per_user: usize,
    /// The largest `Upload-Metadata` header accepted; larger: 413.
    pub max_metadata_bytes: usize,
    /// Whether clients that [auth] admits anonymously may upload and
    /// download. Off by default: anonymous files are owned by the client's
    /// IP address, so everyone behind one NAT or proxy could read and
    /// delete each other's unfinished and private files.
    pub allow_anonymous: bool,
    /// Bytes held by all files together (at their declared lengths); beyond: 413.
    pub max_total_bytes: u64,
    /// An unfinished upload expires this long after its last received byte;
    /// then it answers 410 and its bytes are removed.
    pub incomplete_expiry_secs: u64,
    /// An upload whose client sends nothing for this long is ended (what
    /// arrived is kept, so the client resumes from there).
    pub idle_timeout_secs: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            enabled: true,
            dir: None,
            max_file_bytes: 100 * 1024 * 1024,
            user_quota_bytes: 1024 * 1024 * 1024,
            max_incomplete_per_user: 20,
            max_files_per_user: 10_000,
            max_metadata_bytes: 1024,
            allow_anonymous: false,
            max_total_bytes: 10 * 1024 * 1024 * 1024,
            incomplete_expiry_secs: 24 * 3600,
            idle_timeout_secs: 60,
        }
    }
}

impl FilesConfig {
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if self.max_file_bytes == 0 {
            problems.push("files.max_file_bytes = 0: must be at least 1 (or files.enabled = false)".into());
        }
        if self.user_quota_bytes < self.max_file_bytes {
            problems.push(format!(
                "files.user_quota_bytes = {} is below files.max_file_bytes = {}: no user could upload the largest file",
                self.user_quota_bytes, self.max_file_bytes
            ));
        }
        if self.max_total_bytes < self.user_quota_bytes {
            problems.push("files.max_total_bytes: must be at least files.user_quota_bytes".into());
        }
        if self.incomplete_expiry_secs == 0 {
            problems.push("files.incomplete_expiry_secs = 0: must be at least 1".into());
        }
        if self.idle_timeout_secs == 0 {
            problems.push("files.idle_timeout_secs = 0: must be at least 1".into());
        }
        if self.max_files_per_user == 0 {
            problems.push("files.max_files_per_user = 0: must be at least 1 (or files.enabled = false)".into());
        }
        if self.max_metadata_bytes == 0 {
            problems.push("files.max_metadata_bytes = 0: must be at least 1".into());
        }
        if self.max_incomplete_per_user == 0 {
            problems.push("files.max_incomplete_per_user = 0: must be at least 1".into());
        }
    }
}
