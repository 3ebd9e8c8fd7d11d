//! The canary (`[monitor]`): every `interval_secs` the broker probes each of
//! its own listeners end to end (connect, subscribe, publish, receive, with
//! [`crate::probe`]) and times the round trip. Results feed `/readyz`, the
//! metrics (`starling_canary_*`), `/api/v1/stats`, the log and, on a change
//! of state, the alert webhook.
//!
//! Owns: the per-listener state (ok, slow, failing), its history counters,
//! and the alert on each change (at most one POST per change). Must never:
//! block the runtime (webhook calls run on blocking threads with a timeout),
//! or probe with credentials anyone else could use (it signs in as
//! [`crate::auth::CANARY_USER`] with a per-process random secret, on
//! `$canary/...` topics that `#` never matches).

use crate::clock::now_ms;
use crate::config::MonitorConfig;
use crate::probe::{self, ProbeTarget, ProbeTransport};
use parking_lot::Mutex;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::watch;

/// A listener's health as the canary sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    /// Answered, slower than `threshold_ms`.
    Slow,
    Failing,
}

/// The last probe of one listener.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryResult {
    pub listener: &'static str,
    pub ok: bool,
    pub state: Health,
    pub rtt_ms: Option<f64>,
    /// The failed step and why.
    pub error: Option<String>,
    pub checked_at_ms: u64,
    /// Failed probes since start.
    pub failures: u64,
}

/// What the canary knows; read by the admin listener.
#[derive(Default)]
pub struct Canary {
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    results: Mutex<Vec<CanaryResult>>,
}

impl Canary {
    pub fn results(&self) -> Vec<CanaryResult> {
        self.results.lock().clone()
    }

    /// The listeners failing now, with why (for `/readyz`).
    pub fn failing(&self) -> Vec<String> {
        self.results
            .lock()
            .iter()
            .filter(|r| r.state == Health::Failing)
            .map(|r| format!("{}: {}", r.listener, r.error.as_deref().unwrap_or("failing")))
            .collect()
    }

    fn record(
        &self,
        listener: &'static str,
        outcome: Result<Duration, probe::ProbeFailure>,
        threshold: Duration,
    ) -> (Option<Health>, CanaryResult) {
        let mut results = self.results.lock();
        let index = match results.iter().position(|r| r.listener == listener) {
            Some(i) => i,
            None => {
                results.push(CanaryResult {
                    listener,
                    ok: false,
                    state: Health::Ok,
                    rtt_ms: None,
                    error: None,
                    checked_at_ms: 0,
                    failures: 0,
                });
                results.len() - 1
            }
        };
        let first = results[index].checked_at_ms == 0;
        let entry = &mut results[index];
        let previous = (!first).then_some(entry.state);
        entry.checked_at_ms = now_ms();
        match outcome {
            Ok(rtt) => {
                entry.rtt_ms = Some((rtt.as_secs_f64() * 1000.0 * 100.0).round() / 100.0);
                entry.error = None;
                entry.state = if rtt > threshold { Health::Slow } else { Health::Ok };
            }
            Err(failure) => {
                entry.rtt_ms = None;
                entry.error = Some(failure.to_string());
                entry.state = Health::Failing;
                entry.failures += 1;
            }
        }
        entry.ok = entry.state != Health::Failing;
        (previous, entry.clone())
    }
}

/// One listener to probe.
pub struct Probe {
    pub listener: &'static str,
    pub target: ProbeTarget,
    /// A TLS listener: trust exactly the certificate in this file (read
    /// again each round, so a reloaded certificate is followed).
    pub pin: Option<std::path::PathBuf>,
}

/// The probes for the broker's listeners, signed in as the canary: the
/// plain ones, and the TLS ones (`tls`: their addresses and the
/// certificate file) unless they require client certificates, which the
/// canary does not have.
pub fn probes(
    mqtt: std::net::SocketAddr,
    ws: std::net::SocketAddr,
    tls: Option<(std::net::SocketAddr, std::net::SocketAddr, &crate::config::TlsConfig)>,
    secret: &str,
    config: &MonitorConfig,
) -> Vec<Probe> {
    let loopback = |addr: std::net::SocketAddr| {
        // A listener on every address answers on loopback too.
        let ip = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
            ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        std::net::SocketAddr::new(ip, addr.port()).to_string()
    };
    let mut listeners: Vec<(&'static str, ProbeTransport, std::net::SocketAddr, Option<std::path::PathBuf>)> = vec![
        ("mqtt", ProbeTransport::Mqtt, mqtt, None),
        ("ws-mqtt", ProbeTransport::WsMqtt, ws, None),
        ("ws-proto", ProbeTransport::WsProto, ws, None),
    ];
    if let Some((mqtts, wss, tls)) = tls {
        if tls.require_client_cert {
            tracing::info!("canary: the TLS listeners require client certificates and are not probed");
        } else {
            let pin = Some(tls.cert_file.clone());
            listeners.push(("mqtt-tls", ProbeTransport::Mqtt, mqtts, pin.clone()));
            listeners.push(("wss-mqtt", ProbeTransport::WsMqtt, wss, pin.clone()));
            listeners.push(("wss-proto", ProbeTransport::WsProto, wss, pin));
        }
    }
    listeners
        .into_iter()
        .map(|(listener, transport, addr, pin)| Probe {
            listener,
            pin,
            target: ProbeTarget {
                address: loopback(addr),
                transport,
                tls: None,
                username: Some(crate::auth::CANARY_USER.into()),
                password: Some(secret.into()),
                token: None,
                client_id: String::new(),
                topic: format!("$canary/{listener}"),
                timeout: Duration::from_millis(config.timeout_ms.max(1)),
            },
        })
        .collect()
}

/// Runs the canary until `stop` turns true.
pub async fn run(
    canary: std::sync::Arc<Canary>,
    probes: Vec<Probe>,
    config: MonitorConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let threshold = Duration::from_millis(config.threshold_ms);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        for probe in &probes {
            let mut target = probe.target.clone();
            // A fresh client id each round: nothing to take over, nothing left behind.
            target.client_id = format!("$canary-{}-{:08x}", probe.listener, rand::random::<u32>());
            if let Some(cert) = &probe.pin {
                match probe::pinned_tls_config(cert) {
                    Ok(config) => target.tls = Some(config),
                    Err(e) => {
                        tracing::warn!(listener = probe.listener, error = %e, "canary: cannot read the certificate")
                    }
                }
            }
            // Shutdown does not wait for a probe of listeners that are closing.
            let outcome = tokio::select! {
                outcome = probe::run(&target) => outcome,
                _ = stop.changed() => return,
            };
            let (previous, result) = canary.record(probe.listener, outcome, threshold);
            report(&config, previous, &result);
        }
    }
}

/// Logs the result; on a change of state (or a bad first result), alerts.
fn report(config: &MonitorConfig, previous: Option<Health>, result: &CanaryResult) {
    let changed = match previous {
        Some(previous) => previous != result.state,
        None => result.state != Health::Ok,
    };
    match result.state {
        Health::Ok => tracing::debug!(listener = result.listener, rtt_ms = result.rtt_ms, "canary ok"),
        Health::Slow => tracing::warn!(
            listener = result.listener,
            rtt_ms = result.rtt_ms,
            threshold_ms = config.threshold_ms,
            "canary slow"
        ),
        Health::Failing => {
            tracing::warn!(listener = result.listener, error = result.error.as_deref().unwrap_or(""), "canary failing")
        }
    }
    if !changed {
        return;
    }
    if result.state == Health::Ok {
        tracing::info!(listener = result.listener, rtt_ms = result.rtt_ms, "canary recovered");
    }
    let Some(url) = config.alert_webhook.clone() else { return };
    let alert = serde_json::json!({
        "listener": result.listener,
        "state": result.state,
        "previous": previous,
        "rtt_ms": result.rtt_ms,
        "error": result.error,
        "timestamp_ms": result.checked_at_ms,
    });
    tokio::task::spawn_blocking(move || {
        let sent = ureq::post(&url).timeout(Duration::from_secs(5)).send_json(alert);
        if let Err(e) = sent {
            tracing::warn!(webhook = %url, error = %e, "canary alert not delivered");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(
        tls: Option<(std::net::SocketAddr, std::net::SocketAddr, &crate::config::TlsConfig)>,
    ) -> Vec<&'static str> {
        let addr: std::net::SocketAddr = "0.0.0.0:1883".parse().unwrap();
        probes(addr, addr, tls, "secret", &MonitorConfig::default()).iter().map(|p| p.listener).collect()
    }

    #[test]
    fn tls_listeners_are_probed_unless_they_require_client_certificates() {
        let addr: std::net::SocketAddr = "127.0.0.1:8883".parse().unwrap();
        let mut tls = crate::config::TlsConfig {
            cert_file: "server.pem".into(),
            key_file: "server.key".into(),
            client_ca_file: None,
            require_client_cert: false,
            cn_as_username: false,
        };
        assert_eq!(listeners(None), ["mqtt", "ws-mqtt", "ws-proto"]);
        assert_eq!(
            listeners(Some((addr, addr, &tls))),
            ["mqtt", "ws-mqtt", "ws-proto", "mqtt-tls", "wss-mqtt", "wss-proto"]
        );
        tls.require_client_cert = true;
        assert_eq!(listeners(Some((addr, addr, &tls))), ["mqtt", "ws-mqtt", "ws-proto"]);
    }

    #[test]
    fn a_listener_on_every_address_is_probed_on_loopback() {
        let addr: std::net::SocketAddr = "0.0.0.0:1883".parse().unwrap();
        let probes = probes(addr, addr, None, "secret", &MonitorConfig::default());
        assert_eq!(probes[0].target.address, "127.0.0.1:1883");
        assert_eq!(probes[0].target.username.as_deref(), Some(crate::auth::CANARY_USER));
    }

    #[test]
    fn one_alert_per_change_of_state() {
        let canary = Canary::default();
        let threshold = Duration::from_millis(100);
        let fail = || Err(probe::ProbeFailure { step: probe::Step::Connect, error: "refused".into() });
        let (previous, r) = canary.record("mqtt", Ok(Duration::from_millis(1)), threshold);
        assert_eq!((previous, r.state), (None, Health::Ok));
        let (previous, r) = canary.record("mqtt", Ok(Duration::from_millis(500)), threshold);
        assert_eq!((previous, r.state), (Some(Health::Ok), Health::Slow));
        let (previous, r) = canary.record("mqtt", fail(), threshold);
        assert_eq!((previous, r.state, r.failures), (Some(Health::Slow), Health::Failing, 1));
        assert_eq!(canary.failing(), ["mqtt: connect failed: refused"]);
        let (_, r) = canary.record("mqtt", fail(), threshold);
        assert_eq!(r.failures, 2);
    }
}
