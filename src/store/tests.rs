//! One suite for every `Store`: each shared test is a function over
//! `&dyn Store`, instantiated for `MemoryStore` and `SledStore` by
//! `shared_suite!`. Then sled-only durability tests, `GroupCommit` tests,
//! and a model test that drives both stores with the same random operations
//! (sled's own testing approach) and requires identical loads at every step.

use super::*;
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(super) fn message(topic: &str, payload: &[u8]) -> StoredMessage {
    StoredMessage {
        id: 42,
        timestamp_ms: 1_699_999_999_000,
        topic: topic.to_owned(),
        payload: payload.to_vec(),
        qos: QoS::AtLeastOnce,
        retain: true,
        expires_at_ms: Some(1_700_000_000_000),
        payload_format_indicator: Some(1),
        content_type: Some("text/plain".into()),
        response_topic: None,
        correlation_data: Some(vec![0, 1, 2]),
        user_properties: vec![("k".into(), "v".into())],
    }
}

pub(super) fn session(client_id: &str, expiry_secs: u32) -> StoredSession {
    StoredSession {
        client_id: client_id.to_owned(),
        user: Some("alice".into()),
        expiry_secs,
        disconnected_at_ms: Some(42),
        subscriptions: vec![StoredSubscription {
            filter: "$share/g/a/+".into(),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: false,
                retain_handling: 2,
            },
            identifier: Some(7),
        }],
    }
}

pub(super) fn delivery(seq: u64, payload: &[u8]) -> StoredDelivery {
    StoredDelivery {
        seq,
        message: message("a/b", payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![1, 2],
    }
}

fn seqs(store: &dyn Store, client_id: &str) -> Vec<u64> {
    let deliveries = store.load_deliveries(client_id, usize::MAX, usize::MAX).unwrap();
    deliveries.iter().map(|d| d.seq).collect()
}

// ---- the shared suite ----

fn empty_store_loads_nothing(store: &dyn Store) {
    assert!(store.load_retained().unwrap().is_empty());
    assert!(store.load_sessions().unwrap().is_empty());
    assert!(store.load_deliveries("a", usize::MAX, usize::MAX).unwrap().is_empty());
    // Removing what is not there is not an error.
    store.remove_session("a").unwrap();
    store.remove_delivery("a", 1).unwrap();
    store.set_retained("a", None).unwrap();
    store.flush().unwrap();
}

fn retained_set_replace_clear(store: &dyn Store) {
    let (a1, a2, b) = (message("a", b"1"), message("a", b"2"), message("b", b"3"));
    store.set_retained("b", Some(&b)).unwrap();
    store.set_retained("a", Some(&a1)).unwrap();
    assert_eq!(store.load_retained().unwrap(), [a1.clone(), b.clone()]);
    store.set_retained("a", Some(&a2)).unwrap();
    assert_eq!(store.load_retained().unwrap(), [a2, b.clone()]);
    store.set_retained("a", None).unwrap();
    assert_eq!(store.load_retained().unwrap(), [b]);
    store.set_retained("b", None).unwrap();
    assert!(store.load_retained().unwrap().is_empty());
}

fn sessions_save_load_remove(store: &dyn Store) {
    let (a, b) = (session("a", 60), session("b", u32::MAX));
    store.save_session(&b).unwrap();
    store.save_session(&a).unwrap();
    assert_eq!(store.load_sessions().unwrap(), [a.clone(), b.clone()]);
    let a2 = StoredSession { disconnected_at_ms: None, subscriptions: vec![], ..a.clone() };
    store.save_session(&a2).unwrap();
    assert_eq!(store.load_sessions().unwrap(), [a2, b.clone()]);
    store.remove_session("a").unwrap();
    assert_eq!(store.load_sessions().unwrap(), [b]);
}

fn remove_session_removes_only_its_deliveries(store: &dyn Store) {
    // "ab" starts with "a": the key separator must keep their queues apart.
    for client in ["a", "ab", "b"] {
        store.save_session(&session(client, 10)).unwrap();
        for seq in 1..=3 {
            store.push_delivery(client, &delivery(seq, client.as_bytes())).unwrap();
        }
    }
    assert_eq!(seqs(store, "a"), [1, 2, 3]);
    store.remove_session("a").unwrap();
    assert!(store.load_deliveries("a", usize::MAX, usize::MAX).unwrap().is_empty());
    assert_eq!(seqs(store, "ab"), [1, 2, 3]);
    assert_eq!(seqs(store, "b"), [1, 2, 3]);
    let loaded = store.load_deliveries("ab", usize::MAX, usize::MAX).unwrap();
    assert!(loaded.iter().all(|d| d.message.payload == b"ab"));
    let sessions = store.load_sessions().unwrap();
    let ids: Vec<&str> = sessions.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!(ids, ["ab", "b"]);
    // A new session with the same id starts with an empty queue.
    store.save_session(&session("a", 10)).unwrap();
    assert!(store.load_deliveries("a", usize::MAX, usize::MAX).unwrap().is_empty());
}

fn deliveries_in_seq_order(store: &dyn Store) {
    for seq in [5, 1, 3, 2, 4] {
        store.push_delivery("c", &delivery(seq, b"x")).unwrap();
    }
    assert_eq!(seqs(store, "c"), [1, 2, 3, 4, 5]);
    store.remove_delivery("c", 3).unwrap();
    store.remove_delivery("c", 3).unwrap();
    assert_eq!(seqs(store, "c"), [1, 2, 4, 5]);
    // Pushing an existing seq replaces it rather than duplicating it.
    store.push_delivery("c", &delivery(2, b"y")).unwrap();
    let loaded = store.load_deliveries("c", usize::MAX, usize::MAX).unwrap();
    assert_eq!(loaded.len(), 4);
    assert_eq!(loaded[1], delivery(2, b"y"));
}

fn seq_order_is_numeric_across_byte_boundaries(store: &dyn Store) {
    // Little-endian or variable-length keys would sort 256 before 255.
    let expected = [0, 1, 255, 256, 257, 65_535, 65_536, 1 << 32, u64::MAX - 1, u64::MAX];
    for &seq in expected.iter().rev() {
        store.push_delivery("c", &delivery(seq, b"x")).unwrap();
    }
    assert_eq!(seqs(store, "c"), expected);
}

fn history_message(topic: &str, id: u64, timestamp_ms: u64) -> StoredMessage {
    StoredMessage { id, timestamp_ms, ..message(topic, format!("m{id}").as_bytes()) }
}

fn history_kept_trimmed_and_filtered(store: &dyn Store) {
    // 40 messages in room a (ids 1..=40), interleaved with room b.
    for id in 1..=40u64 {
        store.append_history(&history_message("chat/a", id * 2, 1000 + id), 10, 0).unwrap();
        store.append_history(&history_message("chat/b", id * 2 + 1, 1000 + id), 10, 0).unwrap();
    }
    let ids = |v: Vec<StoredMessage>| v.iter().map(|m| m.id).collect::<Vec<_>>();
    // The newest 5, oldest first.
    assert_eq!(ids(store.load_history("chat/a", 0, 5, 0).unwrap()), vec![72, 74, 76, 78, 80]);
    // Only after a given id.
    assert_eq!(ids(store.load_history("chat/a", 76, 100, 0).unwrap()), vec![78, 80]);
    // Trimming keeps about 10 (amortised: at most 10 + HISTORY_TRIM_EVERY).
    let kept = store.load_history("chat/a", 0, 1000, 0).unwrap();
    assert!(kept.len() >= 10 && kept.len() <= 10 + HISTORY_TRIM_EVERY as usize, "{}", kept.len());
    // Also room b, whose ids (all odd) are never a multiple of the trim interval.
    let kept = store.load_history("chat/b", 0, 1000, 0).unwrap();
    assert!(kept.len() >= 10 && kept.len() <= 10 + HISTORY_TRIM_EVERY as usize, "{}", kept.len());
    // Age filter on read.
    assert_eq!(ids(store.load_history("chat/a", 0, 1000, 1040).unwrap()), vec![80]);
    // Rooms never mix; an unknown room is empty.
    assert!(store.load_history("chat/b", 0, 1000, 0).unwrap().iter().all(|m| m.topic == "chat/b"));
    assert!(store.load_history("chat/zzz", 0, 10, 0).unwrap().is_empty());
}

fn history_swept_by_age(store: &dyn Store) {
    for id in 1..=10u64 {
        store.append_history(&history_message("chat/old", id, id * 100), 100, 0).unwrap();
        store.append_history(&history_message("chat/kept", 100 + id, id * 100), 100, 0).unwrap();
        store.append_history(&history_message("chat/x", 200 + id, id * 100), 100, 0).unwrap();
    }
    // "chat/old" and "chat/x" age out before 550 (messages 1..=5 go);
    // "chat/kept" has no age limit.
    assert_eq!(store.history_topics("chat/", 10).unwrap(), ["chat/kept", "chat/old", "chat/x"]);
    assert_eq!(store.history_topics("chat/o", 10).unwrap(), ["chat/old"]);
    assert_eq!(store.history_topics("", 2).unwrap(), ["chat/kept", "chat/old"]);
    assert!(store.history_topics("zzz", 10).unwrap().is_empty());
    let removed = store.sweep_history(&|topic| (topic != "chat/kept").then_some(550)).unwrap();
    assert_eq!(removed, 10);
    let ids = |topic: &str| store.load_history(topic, 0, 100, 0).unwrap().iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids("chat/old"), vec![6, 7, 8, 9, 10]);
    assert_eq!(ids("chat/x"), vec![206, 207, 208, 209, 210]);
    assert_eq!(ids("chat/kept").len(), 10);
    // Everything past its age: the room is gone; a second sweep finds nothing.
    assert_eq!(store.sweep_history(&|_| Some(u64::MAX)).unwrap(), 20);
    assert_eq!(store.sweep_history(&|_| Some(u64::MAX)).unwrap(), 0);
    assert!(ids("chat/old").is_empty());
    assert!(store.history_topics("chat/", 10).unwrap().is_empty());
}

fn push_queue_kept_in_order(store: &dyn Store) {
    for seq in [3u64, 1, 300] {
        store.push_queue_add(seq, format!("event {seq}").as_bytes()).unwrap();
    }
    store.push_queue_remove(1).unwrap();
    store.push_queue_remove(99).unwrap();
    let queued = store.push_queue_load().unwrap();
    assert_eq!(queued, vec![(3, b"event 3".to_vec()), (300, b"event 300".to_vec())]);
}

fn file_records_put_replace_remove(store: &dyn Store) {
    store.files_put("f/b", b"one").unwrap();
    store.files_put("f/a", b"two").unwrap();
    store.files_put("f/b", b"three").unwrap();
    store.files_remove("f/a").unwrap();
    store.files_remove("f/missing").unwrap();
    assert_eq!(store.files_load().unwrap(), vec![("f/b".to_string(), b"three".to_vec())]);
}

macro_rules! shared_suite {
    ($($test:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[test]
                fn $test() {
                    super::$test(&super::MemoryStore::new());
                }
            )*
        }

        mod on_sled {
            $(
                #[test]
                fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$test(&super::SledStore::open(dir.path()).unwrap());
                }
            )*
        }
    };
}

shared_suite!(
    empty_store_loads_nothing,
    retained_set_replace_clear,
    sessions_save_load_remove,
    remove_session_removes_only_its_deliveries,
    deliveries_in_seq_order,
    seq_order_is_numeric_across_byte_boundaries,
    history_kept_trimmed_and_filtered,
    history_swept_by_age,
    push_queue_kept_in_order,
    file_records_put_replace_remove,
);

// ---- sled only: durability and format ----

#[test]
fn sled_reopen_preserves_everything_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.set_retained("a", Some(&message("a", b"r"))).unwrap();
        store.save_session(&session("c", 30)).unwrap();
        store.push_delivery("c", &delivery(256, b"d1")).unwrap();
        store.push_delivery("c", &delivery(255, b"d0")).unwrap();
        store.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.load_retained().unwrap(), [message("a", b"r")]);
    assert_eq!(store.load_sessions().unwrap(), [session("c", 30)]);
    assert_eq!(
        store.load_deliveries("c", usize::MAX, usize::MAX).unwrap(),
        [delivery(255, b"d0"), delivery(256, b"d1")]
    );
}

#[test]
fn sled_refuses_other_format_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    {
        let db = super::sled_store::open_waiting_for_lock(dir.path()).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("format_version", &(FORMAT_VERSION + 1).to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    match SledStore::open(dir.path()) {
        Err(StoreError::FormatVersion { found, expected }) => {
            assert_eq!((found, expected), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        Err(other) => panic!("expected a format version error, got {other}"),
        Ok(_) => panic!("a store of another format version was opened"),
    }
}

/// A data directory written by format 1 (sessions without an owner) opens
/// under the current format: its sessions become anonymous ones, nothing is
/// lost.
#[test]
fn sled_migrates_format_1_sessions() {
    #[derive(serde::Serialize)]
    struct SessionV1 {
        client_id: String,
        expiry_secs: u32,
        disconnected_at_ms: Option<u64>,
        subscriptions: Vec<StoredSubscription>,
    }
    let dir = tempfile::tempdir().unwrap();
    let mut expected = session("old", 60);
    {
        let db = super::sled_store::open_waiting_for_lock(dir.path()).unwrap();
        db.open_tree("meta").unwrap().insert("format_version", &1u32.to_be_bytes()).unwrap();
        let v1 = SessionV1 {
            client_id: expected.client_id.clone(),
            expiry_secs: expected.expiry_secs,
            disconnected_at_ms: expected.disconnected_at_ms,
            subscriptions: expected.subscriptions.clone(),
        };
        db.open_tree("sessions").unwrap().insert("old", postcard::to_stdvec(&v1).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    expected.user = None;
    assert_eq!(store.load_sessions().unwrap(), vec![expected.clone()]);
    drop(store);
    // Stamped with the current format: opening again reads it as it is.
    assert_eq!(SledStore::open(dir.path()).unwrap().load_sessions().unwrap(), vec![expected]);
}

#[test]
fn sled_reports_corrupt_records() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    {
        let db = super::sled_store::open_waiting_for_lock(dir.path()).unwrap();
        // postcard cannot decode a lone continuation byte as a message.
        db.open_tree("retained").unwrap().insert("t", &[0xff]).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert!(matches!(store.load_retained(), Err(StoreError::Corrupt { .. })));
}

// ---- GroupCommit ----

/// A store that only flushes: it counts writes and records, at the end of a
/// slow flush, how many writes were made before that flush started. If
/// `fail` is set every flush fails.
#[derive(Default)]
struct FlushProbe {
    writes: AtomicU64,
    durable: AtomicU64,
    fail: bool,
}

impl Store for FlushProbe {
    fn load_retained(&self) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(vec![])
    }
    fn set_retained(&self, _: &str, _: Option<&StoredMessage>) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn load_sessions(&self) -> Result<Vec<StoredSession>, StoreError> {
        Ok(vec![])
    }
    fn save_session(&self, _: &StoredSession) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove_session(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn push_delivery(&self, _: &str, _: &StoredDelivery) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove_delivery(&self, _: &str, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn load_deliveries(&self, _: &str, _: usize, _: usize) -> Result<Vec<StoredDelivery>, StoreError> {
        Ok(vec![])
    }
    fn append_history(&self, _: &StoredMessage, _: usize, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn load_history(&self, _: &str, _: u64, _: usize, _: u64) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(vec![])
    }
    fn sweep_history(&self, _: &dyn Fn(&str) -> Option<u64>) -> Result<usize, StoreError> {
        Ok(0)
    }
    fn history_topics(&self, _: &str, _: usize) -> Result<Vec<String>, StoreError> {
        Ok(vec![])
    }
    fn push_queue_add(&self, _: u64, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn push_queue_remove(&self, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn push_queue_load(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(vec![])
    }
    fn files_put(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn files_remove(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn files_load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(vec![])
    }
    fn flush(&self) -> Result<(), StoreError> {
        let covered = self.writes.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(10));
        if self.fail {
            return Err(StoreError::Io("disk on fire".into()));
        }
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_syncs() {
    // The committer holds the store weakly; the test keeps it alive.
    let store: Arc<dyn Store> = Arc::new(FlushProbe::default());
    let commit = GroupCommit::new(store.clone());
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let commit = commit.clone();
            tokio::spawn(async move { commit.sync().await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let flushes = commit.flushes();
    assert!((1..=10).contains(&flushes), "100 syncs took {flushes} flushes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_sync_waits_for_a_flush_started_after_the_call() {
    let probe = Arc::new(FlushProbe::default());
    let commit = GroupCommit::new(probe.clone());
    let tasks: Vec<_> = (0..50u64)
        .map(|i| {
            let (commit, probe) = (commit.clone(), probe.clone());
            tokio::spawn(async move {
                // Staggered so that many calls land while a flush is running.
                tokio::time::sleep(Duration::from_millis(i % 7 * 3)).await;
                probe.set_retained("t", None).unwrap();
                let mine = probe.writes.load(Ordering::SeqCst);
                commit.sync().await.unwrap();
                let durable = probe.durable.load(Ordering::SeqCst);
                assert!(durable >= mine, "write {mine} not durable ({durable})");
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // Calls that arrived mid-flush needed a second flush, so >1 is expected.
    assert!(commit.flushes() > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_reports_errors_to_every_waiter() {
    let probe = FlushProbe { fail: true, ..FlushProbe::default() };
    let store: Arc<dyn Store> = Arc::new(probe);
    let commit = GroupCommit::new(store.clone());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let commit = commit.clone();
            tokio::spawn(async move { commit.sync().await })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
    // A failed flush does not stop the committer.
    assert!(commit.sync().await.is_err());
}

#[tokio::test]
async fn group_commit_over_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let commit = GroupCommit::new(store.clone());
    store.set_retained("a", Some(&message("a", b"x"))).unwrap();
    commit.sync().await.unwrap();
    assert_eq!(commit.flushes(), 1);
}

// ---- model test: SledStore against MemoryStore ----

const CLIENTS: [&str; 4] = ["a", "ab", "b", ""];
const TOPICS: [&str; 3] = ["a", "a/b", "$SYS/x"];

#[derive(Debug, Clone)]
enum Op {
    SetRetained(usize, Option<u8>),
    SaveSession(usize, u32),
    RemoveSession(usize),
    PushDelivery(usize, u64, u8),
    RemoveDelivery(usize, u64),
    FlushReopen,
}

fn seq_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![0..4u64, Just(255), Just(256), Just(65_535), Just(65_536), Just(u64::MAX),]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS.len();
    prop_oneof![
        3 => (0..TOPICS.len(), any::<Option<u8>>()).prop_map(|(t, p)| Op::SetRetained(t, p)),
        2 => (client.clone(), any::<u32>()).prop_map(|(c, e)| Op::SaveSession(c, e)),
        1 => client.clone().prop_map(Op::RemoveSession),
        4 => (client.clone(), seq_strategy(), any::<u8>())
            .prop_map(|(c, s, p)| Op::PushDelivery(c, s, p)),
        2 => (client, seq_strategy()).prop_map(|(c, s)| Op::RemoveDelivery(c, s)),
        1 => Just(Op::FlushReopen),
    ]
}

fn apply(store: &dyn Store, op: &Op) {
    match *op {
        Op::SetRetained(t, payload) => {
            let msg = payload.map(|p| message(TOPICS[t], &[p]));
            store.set_retained(TOPICS[t], msg.as_ref()).unwrap();
        }
        Op::SaveSession(c, expiry) => store.save_session(&session(CLIENTS[c], expiry)).unwrap(),
        Op::RemoveSession(c) => store.remove_session(CLIENTS[c]).unwrap(),
        Op::PushDelivery(c, seq, p) => store.push_delivery(CLIENTS[c], &delivery(seq, &[p])).unwrap(),
        Op::RemoveDelivery(c, seq) => store.remove_delivery(CLIENTS[c], seq).unwrap(),
        Op::FlushReopen => store.flush().unwrap(),
    }
}

fn assert_same(sled: &dyn Store, model: &dyn Store) -> Result<(), TestCaseError> {
    prop_assert_eq!(sled.load_retained().unwrap(), model.load_retained().unwrap());
    prop_assert_eq!(sled.load_sessions().unwrap(), model.load_sessions().unwrap());
    for client in CLIENTS {
        prop_assert_eq!(
            sled.load_deliveries(client, usize::MAX, usize::MAX).unwrap(),
            model.load_deliveries(client, usize::MAX, usize::MAX).unwrap()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sled_matches_memory_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut sled = Some(SledStore::open(dir.path()).unwrap());
        let model = MemoryStore::new();
        for op in &ops {
            apply(sled.as_ref().unwrap(), op);
            apply(&model, op);
            if let Op::FlushReopen = op {
                // Drop every handle first: sled locks its directory.
                drop(sled.take());
                sled = Some(SledStore::open(dir.path()).unwrap());
            }
            assert_same(sled.as_ref().unwrap(), &model)?;
        }
    }
}

/// The per-topic append counters forget everything past a bound instead of
/// growing with every room that ever existed.
#[test]
fn history_counters_stay_bounded() {
    let mut counters = std::collections::HashMap::new();
    for i in 0..super::HISTORY_COUNTERS_MAX + 10 {
        super::history_trim_due_for(&mut counters, &format!("room/{i}"));
    }
    assert!(counters.len() <= super::HISTORY_COUNTERS_MAX);
    // A known topic keeps counting: the first append trims, the next ones do not.
    let mut counters = std::collections::HashMap::new();
    assert!(super::history_trim_due_for(&mut counters, "a"));
    assert!(!super::history_trim_due_for(&mut counters, "a"));
}
