//! [`GroupCommit`]: many writers waiting for durability share one flush.
//!
//! A flush (fsync) costs milliseconds whatever it carries, so one per QoS 1/2
//! publish would cap throughput at a few hundred messages a second. Instead
//! every waiter enqueues a request; one committer task takes all requests
//! queued so far, runs a single `Store::flush` and answers them all.
//!
//! The guarantee: `sync()` resolves only after a flush that *started after*
//! the call. Requests are drained before the flush starts, and a request that
//! arrives while a flush runs waits for the next one, since the running flush
//! may already have passed the caller's write.

use super::{Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), StoreError>>;

#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<Waiter>,
    metrics: Arc<CommitMetrics>,
}

/// How the flushes go, for `/metrics`.
pub struct CommitMetrics {
    /// Flushes completed (successful or not).
    pub flushes: AtomicU64,
    /// Seconds each flush took.
    pub flush_seconds: prometheus::Histogram,
    /// Waiters answered by each flush (how well group commit batches).
    pub batch_size: prometheus::Histogram,
    /// The last flush succeeded (true before the first).
    pub last_ok: std::sync::atomic::AtomicBool,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram options")
        };
        CommitMetrics {
            flushes: AtomicU64::new(0),
            flush_seconds: histogram(
                "store_flush_seconds",
                "Time each group-commit flush of the store took",
                vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            ),
            batch_size: histogram(
                "store_commit_batch_size",
                "Waiters (acknowledgements held for durability) answered by each flush",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
            ),
            last_ok: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl GroupCommit {
    /// Spawns the committer task on the current tokio runtime (panics outside
    /// one, like `tokio::spawn`). The task ends when every clone is dropped.
    pub fn new(store: Arc<dyn Store>) -> GroupCommit {
        let (requests, rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(CommitMetrics::default());
        // The committer holds the store weakly: when the broker drops its
        // handles the store closes at once (releasing sled's directory lock),
        // not whenever the runtime next polls this task.
        tokio::spawn(committer(Arc::downgrade(&store), rx, metrics.clone()));
        GroupCommit { requests, metrics }
    }

    /// Resolves once everything written to the store before this call is
    /// durable, or with the error of the flush that should have made it so.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let stopped = || StoreError::Io("group commit task has stopped".into());
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Flushes completed so far (successful or not); lets tests and metrics
    /// see how well requests are being batched.
    pub fn flushes(&self) -> u64 {
        self.metrics.flushes.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &CommitMetrics {
        &self.metrics
    }
}

async fn committer(store: Weak<dyn Store>, mut requests: mpsc::UnboundedReceiver<Waiter>, metrics: Arc<CommitMetrics>) {
    // Sleep until someone needs a flush: an idle broker does no fsyncs.
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while let Ok(waiter) = requests.try_recv() {
            batch.push(waiter);
        }
        let Some(store) = store.upgrade() else {
            for waiter in batch {
                let _ = waiter.send(Err(StoreError::Io("the store has been closed".into())));
            }
            continue;
        };
        // flush blocks on disk I/O, which must not stall a runtime worker.
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || store.flush())
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(format!("flush task failed: {e}"))));
        metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        metrics.batch_size.observe(batch.len() as f64);
        metrics.last_ok.store(result.is_ok(), Ordering::Relaxed);
        metrics.flushes.fetch_add(1, Ordering::Relaxed);
        for waiter in batch {
            // A waiter that gave up (its future was dropped) is not an error.
            let _ = waiter.send(result.clone());
        }
    }
}
