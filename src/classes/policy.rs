//! The policies a topic class applies, as plain state machines with time
//! passed in (no clocks, no locks), so they are unit-tested exactly.
//!
//! Owns: the per-sender token bucket (rate limits) and the per-room sampler
//! (graceful shedding for very busy live rooms). Must never: read a clock or
//! know about sessions.

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at time `now_ms`.
    pub fn new(rate_per_sec: f64, burst: u32, now_ms: u64) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: rate_per_sec, burst, tokens: burst, last_ms: now_ms }
    }

    /// Whether the bucket would be full at `now_ms` (nothing to remember).
    pub fn is_full(&self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last_ms = now_ms.max(self.last_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Sampling for one busy room: while the room receives more than
/// `room_limit` messages per second, pass about `per_viewer` messages per
/// second (evenly spread) and shed the rest. Every viewer then gets at most
/// `per_viewer` per second, whatever the room's size; high-priority messages
/// bypass the sampler entirely.
#[derive(Debug, Clone)]
pub struct RoomSampler {
    room_limit: u32,
    per_viewer: u32,
    window_start_ms: u64,
    /// Messages offered in the current one-second window.
    offered: u32,
    /// Messages passed in the current window.
    passed: u32,
    /// Rate measured over the previous window (decides sampling in this one).
    last_rate: u32,
    pub shed: u64,
}

impl RoomSampler {
    pub fn new(room_limit: u32, per_viewer: u32, now_ms: u64) -> RoomSampler {
        RoomSampler {
            room_limit,
            per_viewer: per_viewer.max(1),
            window_start_ms: now_ms,
            offered: 0,
            passed: 0,
            last_rate: 0,
            shed: 0,
        }
    }

    /// Whether the room has offered nothing for `quiet_ms`.
    pub fn quiet_since(&self, now_ms: u64, quiet_ms: u64) -> bool {
        now_ms.saturating_sub(self.window_start_ms) > quiet_ms
    }

    /// A message of this room that another cluster node passed (its
    /// sampler let it through): it counts as offered and passed here, so the
    /// room's rate and what a viewer sees hold for the whole cluster, not per
    /// node.
    pub fn observe_passed(&mut self, now_ms: u64) {
        self.roll(now_ms);
        self.offered += 1;
        self.passed += 1;
    }

    fn roll(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.window_start_ms) >= 1000 {
            // A quiet gap longer than a window means the rate is low now.
            let windows = now_ms.saturating_sub(self.window_start_ms) / 1000;
            self.last_rate = if windows == 1 { self.offered } else { 0 };
            self.window_start_ms += windows * 1000;
            self.offered = 0;
            self.passed = 0;
        }
    }

    /// Whether to deliver this (normal-priority) message.
    pub fn admit(&mut self, now_ms: u64) -> bool {
        self.roll(now_ms);
        self.offered += 1;
        let busy = self.last_rate > self.room_limit || self.offered > self.room_limit;
        if !busy {
            self.passed += 1;
            return true;
        }
        // Spread what passes evenly over the window: pass message n when the
        // share of the window it represents allows one more.
        let expected = self.last_rate.max(self.offered).max(1);
        let allowed = (u64::from(self.offered) * u64::from(self.per_viewer)).div_ceil(u64::from(expected)) as u32;
        if self.passed < allowed.min(self.per_viewer) {
            self.passed += 1;
            true
        } else {
            self.shed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(2.0, 5, 0);
        assert_eq!((0..10).filter(|_| b.try_take(0)).count(), 5, "the burst");
        assert!(!b.try_take(100), "0.2 tokens after 100 ms");
        assert!(b.try_take(500), "one token after 500 ms");
        assert!(!b.try_take(500));
        // A long pause refills only up to the burst.
        assert_eq!((0..10).filter(|_| b.try_take(60_000)).count(), 5);
    }

    #[test]
    fn what_other_nodes_passed_counts_against_this_node_s_share() {
        // Alone, a node offered 400 in a second after a busy one passes 20.
        let mut alone = RoomSampler::new(100, 20, 0);
        let mut with_others = RoomSampler::new(100, 20, 0);
        for i in 0..400 {
            alone.admit(i * 2);
            with_others.admit(i * 2);
        }
        let mut passed = (0, 0);
        for i in 0..400 {
            let now = 1000 + i * 2;
            if i % 20 == 0 {
                with_others.observe_passed(now); // another node's 20 passed
            }
            passed.0 += u32::from(alone.admit(now));
            passed.1 += u32::from(with_others.admit(now));
        }
        assert_eq!(passed.0, 20);
        // The others' 20 took nearly all of the room's share of 20.
        assert!(passed.1 <= 3, "this node passed {} besides the others' 20", passed.1);
    }

    #[test]
    fn quiet_room_is_not_sampled() {
        let mut s = RoomSampler::new(100, 10, 0);
        for i in 0..50 {
            assert!(s.admit(i * 20));
        }
        assert_eq!(s.shed, 0);
    }

    #[test]
    fn busy_room_passes_at_most_k_per_second() {
        let mut s = RoomSampler::new(100, 10, 0);
        // 1,000 messages per second for 5 seconds.
        let mut passed_per_window = vec![0; 5];
        for n in 0..5000u64 {
            let now = n; // one per millisecond
            if s.admit(now) {
                passed_per_window[(now / 1000) as usize] += 1;
            }
        }
        // The first window passes what arrives before the limit is seen, then samples.
        assert!(passed_per_window[0] <= 100 + 10, "{passed_per_window:?}");
        for w in &passed_per_window[1..] {
            assert!(*w <= 10 && *w >= 9, "{passed_per_window:?}");
        }
        assert_eq!(s.shed as usize + passed_per_window.iter().sum::<usize>(), 5000);
    }

    #[test]
    fn sampling_stops_when_the_room_calms_down() {
        let mut s = RoomSampler::new(100, 10, 0);
        for n in 0..2000u64 {
            s.admit(n / 2); // 2,000/s during the first second
        }
        // Then a quiet second: 5 messages spread out, none shed after the first calm window.
        let shed_before = s.shed;
        for n in 0..5u64 {
            assert!(s.admit(3000 + n * 200));
        }
        assert_eq!(s.shed, shed_before);
    }
}
