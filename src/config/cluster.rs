//! `[cluster]`: several starling nodes acting as one broker over NATS
//! (docs/cluster.md). Absent: a single node that never touches NATS.
//!
//! Owns: the shape, defaults and validation of the section.
//! Must never: connect anywhere (`crate::cluster` does, at start).

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The NATS servers (`nats://host:port`), any of which will do.
    pub nats_urls: Vec<String>,
    /// This node's name, unique in the cluster. Unset: the host name.
    pub node: Option<String>,
    /// A NATS `.creds` file (JWT and nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// A NATS token.
    pub token: Option<String>,
    /// A NATS user and password (each node its own: docs/cluster/nats-server.conf).
    pub user: Option<String>,
    pub password: Option<String>,
    /// CA certificate(s) to trust for `tls://` NATS servers.
    pub tls_ca_file: Option<PathBuf>,
    /// Replicas of the JetStream streams and buckets (3 on a real NATS
    /// cluster).
    pub stream_replicas: usize,
    /// How long the `PREFIX_msgs` stream keeps QoS 1/2 messages: a
    /// persistent session whose node died is rebuilt from it when its client
    /// returns within this time (docs/cluster.md).
    pub durable_window_secs: u64,
    /// Size cap of the `PREFIX_msgs` stream (oldest messages go first).
    pub durable_max_bytes: u64,
    /// First token of every subject starling uses, so that several clusters
    /// can share one NATS.
    pub subject_prefix: String,
    /// Messages waiting to be handed to NATS; beyond (NATS slow or gone),
    /// new ones are not forwarded to other nodes (counted; local delivery
    /// goes on).
    pub forward_queue: usize,
    /// How long a QoS 1/2 publisher's acknowledgement waits for JetStream to
    /// hold the message (sending it again meanwhile: covers a stream leader
    /// election). Past it the publish is refused (MQTT 0x80, HTTP 503) and a
    /// bridge leaves the remote's message unacknowledged.
    pub ack_timeout_ms: u64,
    /// How long a client resuming a persistent session that another node
    /// holds waits, before its CONNACK, for that session to be handed over
    /// (or rebuilt when its node is gone); it is then told its session is
    /// present. Past it the CONNACK says not present and the session still
    /// arrives, later (docs/cluster.md).
    pub handover_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_urls: vec!["nats://127.0.0.1:4222".into()],
            node: None,
            credentials_file: None,
            token: None,
            user: None,
            password: None,
            tls_ca_file: None,
            stream_replicas: 1,
            durable_window_secs: 3600,
            durable_max_bytes: 1 << 30,
            subject_prefix: "starling".into(),
            forward_queue: 65_536,
            ack_timeout_ms: 15_000,
            handover_timeout_ms: 2_000,
        }
    }
}

impl ClusterConfig {
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if self.nats_urls.is_empty() {
            problems.push("cluster.nats_urls is empty: list at least one NATS server".into());
        }
        for url in &self.nats_urls {
            if !["nats://", "tls://", "ws://", "wss://"].iter().any(|s| url.starts_with(s)) && url.contains("://") {
                problems.push(format!("cluster.nats_urls: {url:?} is not a nats:// or tls:// URL"));
            }
        }
        let token_ok =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if let Some(node) = &self.node {
            if !token_ok(node) {
                problems.push(format!("cluster.node = {node:?}: use letters, digits, - and _"));
            }
        }
        if self.user.is_some() != self.password.is_some() {
            problems.push("cluster.user and cluster.password: set both or neither".into());
        }
        if [self.user.is_some(), self.token.is_some(), self.credentials_file.is_some()].iter().filter(|s| **s).count()
            > 1
        {
            problems.push("cluster: use one of user/password, token and credentials_file".into());
        }
        if !token_ok(&self.subject_prefix) {
            problems.push(format!("cluster.subject_prefix = {:?}: use letters, digits, - and _", self.subject_prefix));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            problems.push("cluster.stream_replicas: must be between 1 and 5 (JetStream's limit)".into());
        }
        if self.durable_window_secs == 0 || self.durable_max_bytes == 0 {
            problems.push("cluster.durable_window_secs and cluster.durable_max_bytes must be above 0".into());
        }
        if self.forward_queue == 0 {
            problems.push("cluster.forward_queue = 0: must be at least 1".into());
        }
        if self.handover_timeout_ms > 60_000 {
            problems.push(format!(
                "cluster.handover_timeout_ms = {}: at most 60000 (a connect waits this long)",
                self.handover_timeout_ms
            ));
        }
        if !(100..=600_000).contains(&self.ack_timeout_ms) {
            problems.push(format!(
                "cluster.ack_timeout_ms = {}: must be between 100 and 600000 (10 minutes)",
                self.ack_timeout_ms
            ));
        }
    }

    /// This node's name: `node`, or the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"))
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "starling".into())
        })
    }
}
