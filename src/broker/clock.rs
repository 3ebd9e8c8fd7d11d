//! A coarse wall clock for the delivery hot path.
//!
//! Owns: one process-wide millisecond reading refreshed every few
//! milliseconds by a background thread, so that per-delivery checks (expiry,
//! "is this writer still draining") cost an atomic load instead of a clock
//! call. Must never: be used where a precise time matters; use
//! [`super::now_ms`] there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// How stale the coarse clock may be.
const RESOLUTION: Duration = Duration::from_millis(5);

static NOW_MS: AtomicU64 = AtomicU64::new(0);

/// Unix milliseconds, at most [`RESOLUTION`] behind the real clock.
pub fn coarse_now_ms() -> u64 {
    static TICKER: OnceLock<()> = OnceLock::new();
    TICKER.get_or_init(|| {
        NOW_MS.store(super::now_ms(), Ordering::Relaxed);
        std::thread::Builder::new()
            .name("starling-clock".into())
            .spawn(|| loop {
                std::thread::sleep(RESOLUTION);
                NOW_MS.store(super::now_ms(), Ordering::Relaxed);
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
        let real = super::super::now_ms();
        assert!(real.abs_diff(coarse) < 1000, "coarse {coarse} real {real}");
    }
}
