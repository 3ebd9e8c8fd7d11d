//! The operations sections of the configuration: `[push]` (the offline
//! push webhook), `[monitor]` (the canary), `[sys]` (`$SYS` topics) and
//! `[log]`. Documented key by key in docs/configuration.md.
//!
//! Owns: their shapes, defaults and validation.
//! Must never: start anything (`crate::push`, `crate::monitor` do).

use serde::Deserialize;

/// `[push]`: the offline push fallback. A QoS 1/2 delivery in one of
/// `classes` not acknowledged within `ack_timeout_secs` (or queued for an
/// offline persistent session) is POSTed to `webhook`, signed with `secret`,
/// so the app's server can send an APNs/FCM notification.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Where to POST; none: no pushes.
    pub webhook: Option<String>,
    /// HMAC-SHA256 key of `X-Starling-Signature` (required with a webhook).
    pub secret: String,
    pub ack_timeout_secs: u64,
    /// Topic classes whose deliveries are watched.
    pub classes: Vec<String>,
    /// Deliveries watched at once; beyond, new ones are not watched (counted).
    pub max_pending: usize,
    /// Bytes of the payload sent as `preview`.
    pub preview_bytes: usize,
    /// Events waiting to be POSTed, at most; beyond, the oldest is dropped
    /// (counted).
    pub max_queue: usize,
    /// Calls of one event before it is given up (a dead letter, counted and
    /// logged), so one event the webhook always rejects cannot block the rest.
    pub max_attempts: u32,
    /// Allow an `http://` webhook on a host that is not loopback (the
    /// events carry message previews and user names in clear).
    pub allow_insecure: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            webhook: None,
            secret: String::new(),
            ack_timeout_secs: 15,
            classes: vec!["chat".into()],
            max_pending: 100_000,
            preview_bytes: 100,
            max_queue: 100_000,
            max_attempts: 20,
            allow_insecure: false,
        }
    }
}

/// `[monitor]`: the built-in canary, which publishes a probe through each of
/// the broker's listeners to a subscriber of its own and times the round trip.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Seconds between rounds; 0: no canary.
    pub interval_secs: u64,
    /// A round trip slower than this (ms) counts as slow: logged, alerted,
    /// and `/readyz` says so (it stays ready: slow is not down).
    pub threshold_ms: u64,
    /// Bound on one probe (ms): no answer by then is a failure.
    pub timeout_ms: u64,
    /// POSTed a JSON alert when a listener's state changes (ok, slow,
    /// failing), at most once per change.
    pub alert_webhook: Option<String>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig { interval_secs: 10, threshold_ms: 500, timeout_ms: 5000, alert_webhook: None }
    }
}

/// `[sys]`: the broker's own `$SYS/broker/...` topics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// Seconds between updates of the `$SYS/broker/...` topics; 0: none.
    pub interval_secs: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig { interval_secs: 10 }
    }
}

/// `[log]`: what the broker writes to stderr.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directives: a level ("info") or per-module ones
    /// ("info,starling::auth=debug"). The `RUST_LOG` environment variable,
    /// when set, takes precedence.
    pub level: String,
    /// "text" (one human-readable line an event) or "json" (one JSON object
    /// a line, for log shippers).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl PushConfig {
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if let Some(url) = &self.webhook {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                problems.push(format!("push.webhook = {url:?}: must be an http:// or https:// URL"));
            }
            if self.secret.len() < 16 {
                problems.push("push.secret: set one of at least 16 characters to sign the webhook's calls".into());
            }
            if self.ack_timeout_secs == 0 {
                problems.push("push.ack_timeout_secs = 0: must be at least 1".into());
            }
            if super::net::plain_http_off_loopback(url) && !self.allow_insecure {
                problems.push(format!(
                    "push.webhook = {url:?}: plain http:// to a host that is not loopback sends message previews \
                     in clear; use https://, or set push.allow_insecure = true"
                ));
            }
            if self.max_queue == 0 || self.max_attempts == 0 {
                problems.push("push.max_queue and push.max_attempts must be at least 1".into());
            }
        }
    }
}
