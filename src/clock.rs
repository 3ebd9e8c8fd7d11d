//! The wall clock, at the bottom of the tree (every layer reads the time;
//! nothing here imports the crate).
//!
//! Owns: [`now_ms`], the precise Unix milliseconds that expiries and session
//! timestamps use (wall-clock, because they must stay meaningful across
//! restarts), and [`coarse_now_ms`], one process-wide reading refreshed every
//! few milliseconds by a background thread, so that per-delivery checks
//! (expiry, "is this writer still draining") cost an atomic load instead of
//! a clock call. Must never: use the coarse reading where a precise time
//! matters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// How stale the coarse clock may be.
const RESOLUTION: Duration = Duration::from_millis(5);

static NOW_MS: AtomicU64 = AtomicU64::new(0);

/// Unix milliseconds, at most [`RESOLUTION`] behind the real clock.
pub fn coarse_now_ms() -> u64 {
    static TICKER: OnceLock<()> = OnceLock::new();
    TICKER.get_or_init(|| {
        NOW_MS.store(now_ms(), Ordering::Relaxed);
        std::thread::Builder::new()
            .name("starling-clock".into())
            .spawn(|| loop {
                std::thread::sleep(RESOLUTION);
                NOW_MS.store(now_ms(), Ordering::Relaxed);
            })
            .expect("cannot start the clock thread");
    });
    NOW_MS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn coarse_clock_is_close_to_the_real_one() {
        let coarse = super::coarse_now_ms();
        let real = super::now_ms();
        assert!(real.abs_diff(coarse) < 1000, "coarse {coarse} real {real}");
    }
}
