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
    flushes: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Spawns the committer task on the current tokio runtime (panics outside
    /// one, like `tokio::spawn`). The task ends when every clone is dropped.
    pub fn new(store: Arc<dyn Store>) -> GroupCommit {
        let (requests, rx) = mpsc::unbounded_channel();
        let flushes = Arc::new(AtomicU64::new(0));
        // The committer holds the store weakly: when the broker drops its
        // handles the store closes at once (releasing sled's directory lock),
        // not whenever the runtime next polls this task.
        tokio::spawn(committer(Arc::downgrade(&store), rx, flushes.clone()));
        GroupCommit { requests, flushes }
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
        self.flushes.load(Ordering::Relaxed)
    }
}

async fn committer(store: Weak<dyn Store>, mut requests: mpsc::UnboundedReceiver<Waiter>, flushes: Arc<AtomicU64>) {
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
        let result = tokio::task::spawn_blocking(move || store.flush())
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(format!("flush task failed: {e}"))));
        flushes.fetch_add(1, Ordering::Relaxed);
        for waiter in batch {
            // A waiter that gave up (its future was dropped) is not an error.
            let _ = waiter.send(result.clone());
        }
    }
}
