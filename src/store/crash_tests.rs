//! The sled store after a crash: what the journal brings back.
//!
//! A crash is simulated by copying the data directory while the store is
//! open and idle: the copy holds what a killed process leaves on disk (the
//! page cache's view), sled's unflushed writes missing. Opening the copy
//! must give every write back. The integration test
//! `tests/persistence.rs::acknowledged_messages_survive_kill_9` does the same
//! with a real SIGKILL.

use super::tests::{delivery, message, session};
use super::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn journal_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("journal")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// Writes of every kind, some then undone, as a broker makes them.
fn write_some(store: &SledStore) {
    store.set_retained("a", Some(&message("a", b"r"))).unwrap();
    store.set_retained("gone", Some(&message("gone", b"x"))).unwrap();
    store.set_retained("gone", None).unwrap();
    store.save_session(&session("c", 30)).unwrap();
    for seq in 1..=300 {
        store.push_delivery("c", &delivery(seq, b"payload")).unwrap();
    }
    for seq in 1..=100 {
        store.remove_delivery("c", seq).unwrap();
    }
    store.save_session(&session("doomed", 5)).unwrap();
    store.push_delivery("doomed", &delivery(1, b"d")).unwrap();
    store.remove_session("doomed").unwrap();
    store.push_queue_add(7, b"event").unwrap();
    store.files_put("f", b"record").unwrap();
}

fn assert_all_there(store: &SledStore) {
    assert_eq!(store.load_retained().unwrap(), [message("a", b"r")]);
    assert_eq!(store.load_sessions().unwrap(), [session("c", 30)]);
    let seqs: Vec<u64> = store.load_deliveries("c", usize::MAX, usize::MAX).unwrap().iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (101..=300).collect::<Vec<_>>());
    assert!(store.load_deliveries("doomed", usize::MAX, usize::MAX).unwrap().is_empty());
    assert_eq!(store.push_queue_load().unwrap(), [(7, b"event".to_vec())]);
    assert_eq!(store.files_load().unwrap(), [("f".to_string(), b"record".to_vec())]);
}

/// What a crash right after a flush leaves: a store written with
/// `write_some` and flushed, its directory copied while it was open.
fn crashed_after_a_flush() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    write_some(&store);
    store.flush().unwrap();
    copy_dir(dir.path(), crashed.path());
    crashed
}

#[test]
fn a_crash_after_flush_loses_nothing_the_journal_holds() {
    let crashed = crashed_after_a_flush();

    // sled alone, without the journal, lost the writes: the replay matters.
    {
        let raw = super::sled_store::open_waiting_for_lock(crashed.path()).unwrap();
        assert!(raw.open_tree("deliveries").unwrap().is_empty(), "sled flushed on its own; the test proves nothing");
    }
    let store = SledStore::open(crashed.path()).unwrap();
    assert_all_there(&store);
    // The replayed files are gone once sled holds their records.
    assert_eq!(journal_files(crashed.path()).len(), 1);
    drop(store);
    assert_all_there(&SledStore::open(crashed.path()).unwrap());
}

/// A crash in the middle of a write leaves part of a record at the end of
/// the file; it is skipped and everything before it is kept.
#[test]
fn a_torn_last_record_is_skipped() {
    let crashed = crashed_after_a_flush();
    let last = journal_files(crashed.path()).pop().unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    std::io::Write::write_all(&mut file, &[200, 0, 0, 0, 1, 2, 3, 4, 1, 3, 5]).unwrap();
    drop(file);

    assert_all_there(&SledStore::open(crashed.path()).unwrap());
}

#[test]
fn a_clean_close_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    write_some(&store);
    drop(store);
    assert!(journal_files(dir.path()).is_empty());
    let raw = super::sled_store::open_waiting_for_lock(dir.path()).unwrap();
    assert_eq!(raw.open_tree("deliveries").unwrap().len(), 200);
}

/// Past the checkpoint size the journal starts a new file, flushes sled and
/// deletes the old file; a crash at any point after still loses nothing.
#[test]
fn checkpoints_cut_the_journal_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with_checkpoint_bytes(dir.path(), 16 * 1024).unwrap();
    let (first_generation, _, _) = store.journal_position();
    write_some(&store); // about 90 KB of records: several checkpoints
    store.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (generation, _, running) = store.journal_position();
        if generation > first_generation && !running && journal_files(dir.path()).len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint finished: {:?}", journal_files(dir.path()));
        std::thread::yield_now();
    }
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    drop(store);
    assert_all_there(&SledStore::open(crashed.path()).unwrap());
}

/// A directory written by format 2 (before the journal) opens, and is
/// stamped with the current format.
#[test]
fn format_2_directories_open_and_are_stamped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = super::sled_store::open_waiting_for_lock(dir.path()).unwrap();
        db.open_tree("meta").unwrap().insert("format_version", &2u32.to_be_bytes()).unwrap();
        db.open_tree("sessions").unwrap().insert("c", postcard::to_stdvec(&session("c", 30)).unwrap()).unwrap();
        db.flush().unwrap();
    }
    assert_eq!(SledStore::open(dir.path()).unwrap().load_sessions().unwrap(), [session("c", 30)]);
    let raw = super::sled_store::open_waiting_for_lock(dir.path()).unwrap();
    let stamp = raw.open_tree("meta").unwrap().get("format_version").unwrap().unwrap();
    assert_eq!(stamp.as_ref(), FORMAT_VERSION.to_be_bytes());
}
