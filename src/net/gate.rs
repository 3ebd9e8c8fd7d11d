//! Who may open a connection right now: connections per source IP and new
//! connections per second per source IP (`mqtt.max_connections_per_ip`,
//! `mqtt.connects_per_ip_per_sec`), shared by every listener.
//!
//! Owns: the per-IP counts and token buckets, and the guard that gives a
//! connection's slot back when it ends. Entries of IPs with no connection
//! and a full bucket are forgotten, so the map is bounded by the
//! connections alive plus the IPs seen in the last few seconds.
//! Must never: sleep or pace the accept loop (a refused connection is closed
//! at once), or hold its lock across anything but map updates.

use crate::classes::policy::TokenBucket;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    /// 0: no limit.
    pub max_per_ip: usize,
    /// 0: no limit.
    pub connects_per_sec: u32,
    /// Whether loopback peers are limited too.
    pub limit_loopback: bool,
}

struct PerIp {
    open: usize,
    bucket: TokenBucket,
}

pub struct ConnectionGate {
    limits: GateLimits,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    ips: Mutex<HashMap<IpAddr, PerIp>>,
    /// Connections refused so far (per-IP count or rate).
    refused: AtomicU64,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateRefusal {
    TooManyFromIp,
    TooFastFromIp,
}

/// Holds a connection's per-IP slot; dropping it gives the slot back.
pub struct IpSlot {
    gate: Arc<ConnectionGate>,
    ip: Option<IpAddr>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut ips = self.gate.ips.lock();
        if let Some(entry) = ips.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

impl IpSlot {
    /// A slot that counts nothing (a trusted proxy: the clients it names are
    /// counted instead).
    pub fn unlimited(gate: &Arc<ConnectionGate>) -> IpSlot {
        IpSlot { gate: gate.clone(), ip: None }
    }
}

impl ConnectionGate {
    pub fn new(limits: GateLimits) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate { limits, ips: Mutex::new(HashMap::new()), refused: AtomicU64::new(0) })
    }

    /// Connections refused at accept so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Admits a new connection from `ip` at `now_ms`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now_ms: u64) -> Result<IpSlot, GateRefusal> {
        let limits = self.limits;
        let unlimited = limits.max_per_ip == 0 && limits.connects_per_sec == 0;
        if unlimited || (ip.is_loopback() && !limits.limit_loopback) {
            return Ok(IpSlot { gate: self.clone(), ip: None });
        }
        let mut ips = self.ips.lock();
        if ips.len() > 4096 {
            // Forget idle entries: no connection open and the bucket has refilled.
            ips.retain(|_, e| e.open > 0 || !e.bucket.is_full(now_ms));
        }
        let rate = f64::from(limits.connects_per_sec.max(1));
        let entry = ips.entry(ip).or_insert_with(|| PerIp {
            open: 0,
            bucket: TokenBucket::new(rate, limits.connects_per_sec.max(1), now_ms),
        });
        let refusal = if limits.max_per_ip > 0 && entry.open >= limits.max_per_ip {
            Some(GateRefusal::TooManyFromIp)
        } else if limits.connects_per_sec > 0 && !entry.bucket.try_take(now_ms) {
            Some(GateRefusal::TooFastFromIp)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(ips);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        entry.open += 1;
        Ok(IpSlot { gate: self.clone(), ip: Some(ip) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_per_ip: usize, connects_per_sec: u32) -> Arc<ConnectionGate> {
        ConnectionGate::new(GateLimits { max_per_ip, connects_per_sec, limit_loopback: true })
    }

    #[test]
    fn counts_connections_per_ip_and_gives_slots_back() {
        let g = gate(2, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = g.admit(a, 0).unwrap();
        let _s2 = g.admit(a, 0).unwrap();
        assert_eq!(g.admit(a, 0).err(), Some(GateRefusal::TooManyFromIp));
        assert!(g.admit(b, 0).is_ok(), "another IP is not affected");
        drop(s1);
        assert!(g.admit(a, 0).is_ok());
        assert_eq!(g.refused(), 1);
    }

    #[test]
    fn limits_the_connect_rate_per_ip() {
        let g = gate(0, 5);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let admitted = (0..20).filter(|_| g.admit(a, 1_000).is_ok()).count();
        assert_eq!(admitted, 5, "a burst of the rate");
        assert!(g.admit(a, 1_100).is_err());
        assert!(g.admit(a, 1_250).is_ok(), "refilled at 5 a second");
    }

    #[test]
    fn loopback_is_exempt_unless_asked() {
        let g = ConnectionGate::new(GateLimits { max_per_ip: 1, connects_per_sec: 1, limit_loopback: false });
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let slots: Vec<_> = (0..10).map(|_| g.admit(lo, 0).unwrap()).collect();
        assert_eq!(slots.len(), 10);
    }
}
