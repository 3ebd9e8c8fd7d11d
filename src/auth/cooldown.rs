//! Login cooldown: after `[auth] max_failed_logins` failed logins for one
//! username, or from one source address, within `failed_login_window_secs`,
//! further attempts are refused without verifying anything, for a cooldown
//! that starts at `login_cooldown_secs` and doubles on each repeat (at most
//! an hour). Password guessing then costs the attacker time, not the broker
//! argon2 runs.
//!
//! Owns: the counts and cooldowns per key, bounded ([`MAX_KEYS`]). Pure: the
//! time comes in as an argument, no I/O, no locks (`Security` wraps it in
//! its own). Must never: count anything but a refused credential (a hook
//! that is down, or a client the ACL refuses, is not a guess).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Keys tracked at most: beyond, keys with nothing recent are forgotten
/// first, then all (a distributed guess at more than this many names or
/// addresses at once then costs argon2 runs again, bounded by the
/// verification semaphore, rather than memory).
pub const MAX_KEYS: usize = 100_000;
/// The longest a cooldown gets, however often it repeats.
pub const MAX_COOLDOWN_MS: u64 = 3_600_000;

/// Who failed: a username, or a source address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LoginKey {
    User(Arc<str>),
    Address(IpAddr),
}

impl std::fmt::Display for LoginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginKey::User(user) => write!(f, "user {user:?}"),
            LoginKey::Address(ip) => write!(f, "address {ip}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownPolicy {
    /// Failures within the window that start a cooldown (0: off).
    pub max_failures: u32,
    pub window_ms: u64,
    /// The first cooldown; each repeat doubles it, up to [`MAX_COOLDOWN_MS`].
    pub cooldown_ms: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    window_start_ms: u64,
    failures: u32,
    /// Refused until then (Unix ms; 0: not cooling down).
    until_ms: u64,
    /// Cooldowns so far: the next one is `cooldown_ms << repeats`.
    repeats: u32,
    last_failure_ms: u64,
}

#[derive(Debug)]
pub struct Cooldowns {
    policy: CooldownPolicy,
    entries: HashMap<LoginKey, Entry>,
}

impl Cooldowns {
    pub fn new(policy: CooldownPolicy) -> Cooldowns {
        Cooldowns { policy, entries: HashMap::new() }
    }

    /// The settings changed (a reload); the counts so far stay.
    pub fn set_policy(&mut self, policy: CooldownPolicy) {
        self.policy = policy;
    }

    /// When `key` may try again, if it is cooling down at `now_ms`.
    pub fn blocked_until(&self, key: &LoginKey, now_ms: u64) -> Option<u64> {
        self.entries.get(key).map(|e| e.until_ms).filter(|until| *until > now_ms)
    }

    /// A failed login for `key` at `now_ms`. Returns when the cooldown it
    /// starts ends, if it starts one (the caller logs it, once).
    pub fn failed(&mut self, key: LoginKey, now_ms: u64) -> Option<u64> {
        if self.policy.max_failures == 0 {
            return None;
        }
        if self.entries.len() >= MAX_KEYS && !self.entries.contains_key(&key) {
            self.make_room(now_ms);
        }
        let policy = self.policy;
        let entry = self.entries.entry(key).or_default();
        // A quiet spell as long as the longest cooldown forgives the repeats.
        if now_ms.saturating_sub(entry.last_failure_ms) > MAX_COOLDOWN_MS {
            entry.repeats = 0;
        }
        entry.last_failure_ms = now_ms;
        if now_ms.saturating_sub(entry.window_start_ms) > policy.window_ms {
            entry.window_start_ms = now_ms;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures < policy.max_failures {
            return None;
        }
        let cooldown = policy.cooldown_ms.saturating_mul(1u64 << entry.repeats.min(32)).min(MAX_COOLDOWN_MS);
        entry.repeats = entry.repeats.saturating_add(1);
        entry.failures = 0;
        entry.window_start_ms = now_ms;
        entry.until_ms = now_ms + cooldown;
        Some(entry.until_ms)
    }

    /// A successful login: the username's count starts over (an address's
    /// is kept: one success among many guesses from it proves little).
    pub fn succeeded(&mut self, key: &LoginKey) {
        if matches!(key, LoginKey::User(_)) {
            self.entries.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now_ms: u64) {
        let window = self.policy.window_ms;
        self.entries.retain(|_, e| e.until_ms > now_ms || now_ms.saturating_sub(e.last_failure_ms) <= window);
        if self.entries.len() >= MAX_KEYS {
            self.entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CooldownPolicy {
        CooldownPolicy { max_failures: 3, window_ms: 10_000, cooldown_ms: 1_000 }
    }

    fn alice() -> LoginKey {
        LoginKey::User(Arc::from("alice"))
    }

    #[test]
    fn the_nth_failure_in_the_window_starts_a_cooldown_that_doubles_on_repeat() {
        let mut c = Cooldowns::new(policy());
        assert_eq!(c.failed(alice(), 0), None);
        assert_eq!(c.failed(alice(), 1), None);
        assert_eq!(c.failed(alice(), 2), Some(1_002), "third failure: one second");
        assert_eq!(c.blocked_until(&alice(), 500), Some(1_002));
        assert_eq!(c.blocked_until(&alice(), 1_002), None, "over at its end");
        for t in [1_100, 1_200] {
            assert_eq!(c.failed(alice(), t), None);
        }
        assert_eq!(c.failed(alice(), 1_300), Some(3_300), "the repeat: two seconds");
        let bob = LoginKey::User(Arc::from("bob"));
        assert_eq!(c.blocked_until(&bob, 1_400), None, "a bystander is not touched");
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_add_up() {
        let mut c = Cooldowns::new(policy());
        for t in (0..10).map(|i| i * 12_000) {
            assert_eq!(c.failed(alice(), t), None, "at {t}");
            assert_eq!(c.failed(alice(), t + 1), None, "at {t}");
        }
    }

    #[test]
    fn the_cooldown_is_capped_and_a_success_resets_a_user_only() {
        let mut c = Cooldowns::new(CooldownPolicy { max_failures: 1, window_ms: 10_000, cooldown_ms: 1_000_000 });
        let mut now = 0;
        for _ in 0..10 {
            let until = c.failed(alice(), now).unwrap();
            assert!(until - now <= MAX_COOLDOWN_MS);
            now = until;
        }
        assert_eq!(c.failed(alice(), now), Some(now + MAX_COOLDOWN_MS));
        c.succeeded(&alice());
        assert_eq!(c.blocked_until(&alice(), now + 1), None);
        let address = LoginKey::Address("192.0.2.1".parse().unwrap());
        c.failed(address.clone(), now);
        c.succeeded(&address);
        assert!(c.blocked_until(&address, now).is_some(), "an address stays cooling down");
    }

    #[test]
    fn the_keys_are_bounded() {
        let mut c = Cooldowns::new(policy());
        for i in 0..(MAX_KEYS as u64 + 10) {
            c.failed(LoginKey::User(Arc::from(i.to_string().as_str())), i);
        }
        assert!(c.len() <= MAX_KEYS);
    }

    #[test]
    fn zero_turns_it_off() {
        let mut c = Cooldowns::new(CooldownPolicy { max_failures: 0, ..policy() });
        for t in 0..100 {
            assert_eq!(c.failed(alice(), t), None);
        }
        assert!(c.is_empty());
    }
}
