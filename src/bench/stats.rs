//! Measurements of one load run: counters, latency histograms, a per-second
//! timeline, the load tool's own CPU use and the broker's peak memory.
//!
//! Owns: collecting numbers cheaply from many tasks (atomics for counts; one
//! histogram per connection task, merged at the end). Must never: do I/O on
//! the hot path; `/proc` is read only at the start and end of a run.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The clock that timestamps payloads: nanoseconds since the first call in
/// this process. Publishers and subscribers share it, so latency is exact.
pub fn clock_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Latency histogram in microseconds, 1 µs .. 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Counters shared by every task of a run.
#[derive(Default)]
pub struct Counters {
    /// Published after the warm-up.
    pub published: AtomicU64,
    /// Received that were published after the warm-up (for loss and latency).
    pub received: AtomicU64,
    /// Everything received, whenever it was sent (throughput over time).
    pub received_all: AtomicU64,
    /// Acknowledgements of messages sent after the warm-up.
    pub acked: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Merged latency histograms of finished subscriber tasks.
    pub latency: Mutex<Option<Histogram<u64>>>,
    /// Merged send-to-acknowledgement histograms of publishers (QoS 1/2).
    pub ack_latency: Mutex<Option<Histogram<u64>>>,
    /// Bytes of the measured messages delivered (packets, headers included).
    pub received_bytes: AtomicU64,
    /// Measured gifts (danmaku) delivered.
    pub gifts_received: AtomicU64,
}

impl Counters {
    pub fn merge_latency(&self, h: &Histogram<u64>) {
        Self::merge(&self.latency, h)
    }

    pub fn merge_ack_latency(&self, h: &Histogram<u64>) {
        Self::merge(&self.ack_latency, h)
    }

    fn merge(into: &Mutex<Option<Histogram<u64>>>, h: &Histogram<u64>) {
        let mut slot = into.lock().unwrap();
        match slot.as_mut() {
            Some(all) => {
                let _ = all.add(h);
            }
            None => *slot = Some(h.clone()),
        }
    }
}

/// One sample per interval: messages published and received in it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub at_secs: f64,
    pub published_per_sec: f64,
    pub received_per_sec: f64,
}

/// Samples the counters every `interval` until stopped.
pub struct Timeline {
    pub samples: Vec<Sample>,
    last: (u64, u64),
    last_at: Instant,
    started: Instant,
}

impl Timeline {
    pub fn new(counters: &Counters) -> Timeline {
        let now = Instant::now();
        Timeline {
            samples: Vec::new(),
            last: (counters.published.load(Ordering::Relaxed), counters.received_all.load(Ordering::Relaxed)),
            last_at: now,
            started: now,
        }
    }

    pub fn sample(&mut self, counters: &Counters) -> Sample {
        let now = Instant::now();
        let (p, r) = (counters.published.load(Ordering::Relaxed), counters.received_all.load(Ordering::Relaxed));
        let dt = now.duration_since(self.last_at).as_secs_f64().max(1e-9);
        let sample = Sample {
            at_secs: now.duration_since(self.started).as_secs_f64(),
            published_per_sec: (p - self.last.0) as f64 / dt,
            received_per_sec: (r - self.last.1) as f64 / dt,
        };
        self.samples.push(sample);
        self.last = (p, r);
        self.last_at = now;
        sample
    }
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete rusage into the pointer we pass.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPUs this process may run on (honours `taskset`).
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Peak and current resident memory of a process, from /proc/PID/status (bytes).
pub fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Raises this process's open-file limit to its hard limit (load runs open
/// tens of thousands of sockets). Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    crate::net::raise_fd_limit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_across_tasks() {
        let counters = Counters::default();
        let mut a = new_histogram();
        a.record(100).unwrap();
        let mut b = new_histogram();
        b.record(300).unwrap();
        counters.merge_latency(&a);
        counters.merge_latency(&b);
        let all = counters.latency.lock().unwrap().clone().unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.max() >= 300);
    }

    #[test]
    fn own_process_is_measurable() {
        assert!(rss_of(std::process::id()).is_some_and(|(peak, now)| peak >= now && now > 0));
        assert!(usable_cpus() >= 1);
    }
}
