//! Traffic counters read by `/metrics` and the `$SYS` topics: messages and
//! bytes received from clients and sent to them, connects and disconnects.
//!
//! Owns: the counters. They are striped: each thread adds to its own
//! cache-padded slot, so counting on every publish and every write batch
//! costs an uncontended add, and a read sums the slots.
//! Must never: be read on a hot path (a read walks every slot).

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 16;

/// A counter that many threads add to without sharing a cache line.
pub struct StripedCounter {
    slots: [CachePadded<AtomicU64>; STRIPES],
}

impl Default for StripedCounter {
    fn default() -> Self {
        StripedCounter { slots: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))) }
    }
}

/// This thread's slot: threads take slots in turn as they first count.
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    SLOT.with(|s| *s)
}

impl StripedCounter {
    pub fn add(&self, n: u64) {
        self.add_at(slot(), n);
    }

    fn add_at(&self, slot: usize, n: u64) {
        self.slots[slot].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

/// The broker's traffic counters, since start.
#[derive(Default)]
pub struct Stats {
    /// PUBLISHes (and starling.v1 Publish frames) accepted from clients.
    pub messages_received: StripedCounter,
    /// Their payload bytes.
    pub bytes_received: StripedCounter,
    /// Deliveries written to clients.
    pub messages_sent: StripedCounter,
    /// Their payload and topic bytes.
    pub bytes_sent: StripedCounter,
    /// Connections admitted (after authentication).
    pub connects: StripedCounter,
    /// Admitted connections that ended, whatever the reason.
    pub disconnects: StripedCounter,
}

impl Stats {
    /// A message accepted from a client: one slot lookup for both counters.
    pub fn received(&self, payload_bytes: usize) {
        let slot = slot();
        self.messages_received.add_at(slot, 1);
        self.bytes_received.add_at(slot, payload_bytes as u64);
    }

    /// A batch of deliveries taken for a client's write.
    pub fn sent(&self, messages: usize, bytes: usize) {
        let slot = slot();
        self.messages_sent.add_at(slot, messages as u64);
        self.bytes_sent.add_at(slot, bytes as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn adds_from_many_threads_are_all_counted() {
        let counter = Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| c.add(2)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.get(), 8 * 10_000 * 2);
    }
}
