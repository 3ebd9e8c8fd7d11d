//! Configuration: the file format, its defaults, and validation.
//!
//! Owns: turning `config.toml` (plus command-line overrides) into a checked
//! [`Config`]. Unknown keys and bad values are errors that name the file and
//! the key; every problem found is reported at once.
//! Must never: start anything or touch the network or disk beyond reading the
//! file.

mod auth;
mod cluster;
mod files;
mod load;
mod net;
mod ops;

pub use auth::{
    AclAction, AclRule, AuthConfig, FailMode, HttpConfig, HttpHookConfig, JwtConfig, Permission, SingleSession,
    UserRoles,
};
pub use cluster::ClusterConfig;
pub use files::FilesConfig;
pub use load::{env_overrides, ENV_PREFIX};
pub use net::{parse_trusted_proxy, NetConfig};
pub use ops::{LogConfig, LogFormat, MonitorConfig, PushConfig, SysConfig};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Upper bound of `mqtt.max_packet_size`: MQTT's own limit (268,435,460
/// bytes) less 1 MiB, so a message accepted at the limit still encodes when
/// delivered with a topic alias, subscription identifiers and an expiry.
pub const MAX_PACKET_SIZE_LIMIT: u32 = 268_435_460 - 1024 * 1024;

/// The commented default configuration that ships at the top of the repository.
pub const BUNDLED_CONFIG: &str = include_str!("../../config.toml");

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mqtt: MqttConfig,
    pub websocket: WebSocketConfig,
    pub session: SessionConfig,
    pub retained: RetainedConfig,
    pub storage: StorageConfig,
    pub classes: ClassesConfig,
    /// TLS listeners (MQTT over TLS, `wss://`); none when absent.
    pub tls: Option<TlsConfig>,
    /// Who may connect (docs/security.md).
    pub auth: AuthConfig,
    /// What they may touch: `[[acl]]` rules, first match wins.
    pub acl: Vec<AclRule>,
    pub http: HttpConfig,
    /// Links to other MQTT brokers (`[[bridge]]` sections), see `docs/bridging.md`.
    pub bridge: Vec<BridgeConfig>,
    pub log: LogConfig,
    pub sys: SysConfig,
    pub monitor: MonitorConfig,
    pub push: PushConfig,
    /// Resumable uploads (tus) and downloads on the WebSocket port.
    pub files: FilesConfig,
    /// Several nodes as one broker over NATS; none when absent.
    pub cluster: Option<ClusterConfig>,
    /// Proxies trusted to name a client's real address.
    pub net: NetConfig,
}

impl Config {
    /// Where uploaded files live: `files.dir`, or `files` under the data
    /// directory; `None` with the memory backend and no `files.dir` (the
    /// files then live in a temporary directory: nothing survives a restart).
    pub fn files_dir(&self) -> Option<PathBuf> {
        match (&self.files.dir, self.storage.backend) {
            (Some(dir), _) => Some(dir.clone()),
            (None, StorageBackend::Sled) => Some(self.storage.data_dir.join("files")),
            (None, StorageBackend::Memory) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Address of the MQTT/TCP listener.
    pub bind: SocketAddr,
    /// Largest packet accepted from a client, fixed header included (bytes).
    pub max_packet_size: u32,
    /// A connection that has not sent CONNECT within this time is closed.
    pub connect_timeout_secs: u64,
    /// Upper bound on the keep-alive a client may ask for; larger requests are
    /// lowered (MQTT 5 tells the client through Server Keep Alive).
    pub max_keep_alive_secs: u16,
    /// How many QoS 1/2 publishes a client may have unacknowledged towards us.
    pub receive_maximum: u16,
    /// How many topic aliases a client may use towards us (MQTT 5).
    pub topic_alias_maximum: u16,
    /// Connections beyond this are refused at accept.
    pub max_connections: usize,
    /// Address of the MQTT over TLS listener (only with a `[tls]` section).
    pub tls_bind: SocketAddr,
    /// Connections from one IP address beyond this are closed at accept; 0: no limit.
    pub max_connections_per_ip: usize,
    /// New connections per second from one IP address (bursts of as many); 0: no limit.
    pub connects_per_ip_per_sec: u32,
    /// Apply the per-IP limits to loopback peers too (off: local tools,
    /// tests and `starling bench` are not throttled).
    pub limit_loopback_peers: bool,
    /// Pending-connection queue of each listener; 0: the system's `net.core.somaxconn`.
    pub backlog: u32,
    /// A client with keep-alive 0 (starling.v1: heartbeat 0) silent this long is closed.
    pub idle_timeout_secs: u64,
    /// A write to a client that does not complete within this time (the client
    /// stopped reading) closes its connection.
    pub write_timeout_secs: u64,
    /// The MQTT and MQTT/TLS listeners expect a PROXY protocol header (v1
    /// or v2) first, from a `net.trusted_proxies` peer only (others are
    /// closed): the header's source address is then the client's.
    pub proxy_protocol: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            bind: "127.0.0.1:1883".parse().unwrap(),
            max_packet_size: 1024 * 1024,
            connect_timeout_secs: 10,
            max_keep_alive_secs: 3600,
            receive_maximum: 100,
            topic_alias_maximum: 64,
            max_connections: 100_000,
            tls_bind: "127.0.0.1:8883".parse().unwrap(),
            max_connections_per_ip: 1000,
            connects_per_ip_per_sec: 100,
            limit_loopback_peers: false,
            backlog: 0,
            idle_timeout_secs: 600,
            write_timeout_secs: 30,
            proxy_protocol: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Address of the WebSocket listener: MQTT on `/mqtt`, the Protobuf
    /// protocol on `/ws`.
    pub bind: SocketAddr,
    /// Web pages (by `Origin`) allowed to open WebSockets here. Empty: only
    /// requests without an `Origin` and the broker's own pages (an `Origin`
    /// whose host and port equal the request's `Host`); `["*"]`: any page.
    pub allowed_origins: Vec<String>,
    /// Host names this port answers to (DNS rebinding): besides these, IP
    /// addresses and `localhost`; `["*"]`: any. Other `Host`s get 421.
    pub allowed_hosts: Vec<String>,
    /// Address of the `wss://` listener (only with a `[tls]` section).
    pub tls_bind: SocketAddr,
    /// The WebSocket and `wss://` listeners expect a PROXY protocol header
    /// first (as `mqtt.proxy_protocol`).
    pub proxy_protocol: bool,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            bind: "127.0.0.1:8083".parse().unwrap(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            tls_bind: "127.0.0.1:8084".parse().unwrap(),
            proxy_protocol: false,
        }
    }
}

/// `[tls]`: certificates for the TLS listeners (docs/security.md#tls).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that sign client certificates (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: refuse clients without a certificate.
    #[serde(default)]
    pub require_client_cert: bool,
    /// With `client_ca_file`: a verified client certificate's common name
    /// is the client's username (authenticated by the certificate).
    #[serde(default)]
    pub cn_as_username: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// QoS 1/2 deliveries in flight to one client when it does not announce a
    /// smaller Receive Maximum.
    pub max_inflight: u16,
    /// Messages held for one session (online backlog or offline queue).
    pub max_queued_messages: usize,
    /// Upper bound on a client's session expiry (seconds), MQTT 3.1.1
    /// persistent sessions ("never expires") included; 0 means no cap.
    pub max_session_expiry_secs: u32,
    /// Bytes (payloads and topics) held for one session; beyond it, new
    /// messages for that session are handled as if its queue were full.
    pub max_queued_bytes: usize,
    /// Sessions the broker holds at once (connected or not); a client that
    /// would create one more is refused (MQTT 5 0x97, 3.1.1 return code 3).
    pub max_sessions: usize,
    /// Subscriptions one session may hold; filters beyond it are refused
    /// one by one (MQTT 5 SUBACK 0x97, 3.1.1 0x80, starling.v1 0x97).
    pub max_subscriptions_per_client: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_inflight: 100,
            max_queued_messages: 1000,
            max_session_expiry_secs: 7 * 24 * 3600,
            max_queued_bytes: 16 * 1024 * 1024,
            max_sessions: 100_000,
            max_subscriptions_per_client: 1000,
        }
    }
}

/// `[retained]`: how many retained messages the broker holds (in memory and on disk).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetainedConfig {
    /// Retained topics at most; a new one beyond it is refused (MQTT 5 0x97).
    pub max_messages: usize,
    /// Bytes (payloads and topics) of retained messages at most.
    pub max_bytes: usize,
}

impl Default for RetainedConfig {
    fn default() -> Self {
        RetainedConfig { max_messages: 1_000_000, max_bytes: 512 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassesConfig {
    /// Directory of topic class files (`*.toml`); empty string: no classes.
    pub dir: PathBuf,
    /// The file named `dir` itself (not the default): then a missing
    /// directory is an error at start, not "no classes".
    #[serde(skip)]
    pub required: bool,
}

impl Default for ClassesConfig {
    fn default() -> Self {
        ClassesConfig { dir: PathBuf::from("./topics"), required: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Sled,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { backend: StorageBackend::Sled, data_dir: PathBuf::from("./data") }
    }
}

/// One `[[bridge]]` section: a link to another MQTT broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Names the bridge in logs and status; letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// The remote broker, `host:port` (a name or an IP address; `[v6]:port`).
    pub address: String,
    #[serde(default)]
    pub version: BridgeVersion,
    /// Client id on the remote; default `starling-bridge-{name}`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// PEM file of the CA that signs the remote's certificate: setting it
    /// turns TLS on.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for remotes that require them.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    #[serde(default = "default_bridge_keep_alive")]
    pub keep_alive_secs: u16,
    /// Whether the remote forgets our session (its subscriptions and the
    /// messages it holds for us) when the link drops.
    #[serde(default)]
    pub clean_session: bool,
    /// Reconnect back-off: the first retry waits about this long ...
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_delay_min_ms: u64,
    /// ... and each failure doubles the wait up to this cap (plus jitter).
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_delay_max_ms: u64,
    /// Messages held for `out` rules while the link is down (or slow); default
    /// `session.max_queued_messages`.
    #[serde(default)]
    pub max_queued_messages: Option<usize>,
    /// The local user whose `[[acl]]` rules (and `[[auth.roles]]`) messages
    /// from the remote are published under, as that user's own PUBLISHes
    /// would be. Unset: the bridge is trusted with every topic but `$SYS`,
    /// which no client may publish to.
    #[serde(default)]
    pub local_user: Option<String>,
    pub topics: Vec<BridgeTopic>,
}

fn default_bridge_keep_alive() -> u16 {
    60
}

fn default_reconnect_min_ms() -> u64 {
    1000
}

fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// MQTT version a bridge speaks to its remote. Unknown values are kept (not
/// refused by the parser) so that validation can name the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(from = "String")]
pub enum BridgeVersion {
    #[default]
    V311,
    V5,
    Unknown(String),
}

impl From<String> for BridgeVersion {
    fn from(s: String) -> Self {
        match s.as_str() {
            "3.1.1" => BridgeVersion::V311,
            "5" | "5.0" => BridgeVersion::V5,
            _ => BridgeVersion::Unknown(s),
        }
    }
}

/// Which way a bridge topic rule carries messages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum BridgeDirection {
    /// Remote → local.
    In,
    /// Local → remote.
    Out,
    Both,
    Unknown(String),
}

impl From<String> for BridgeDirection {
    fn from(s: String) -> Self {
        match s.as_str() {
            "in" => BridgeDirection::In,
            "out" => BridgeDirection::Out,
            "both" => BridgeDirection::Both,
            _ => BridgeDirection::Unknown(s),
        }
    }
}

impl BridgeDirection {
    pub fn is_in(&self) -> bool {
        matches!(self, BridgeDirection::In | BridgeDirection::Both)
    }

    pub fn is_out(&self) -> bool {
        matches!(self, BridgeDirection::Out | BridgeDirection::Both)
    }
}

/// One `[[bridge.topics]]` rule, like Mosquitto's
/// `topic pattern direction qos local-prefix remote-prefix`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTopic {
    /// Topic filter, without the prefixes.
    pub filter: String,
    pub direction: BridgeDirection,
    /// Subscription QoS on the side the messages come from: 0 or 1.
    #[serde(default)]
    pub qos: u8,
    /// `{local_prefix}{topic}` here is `{remote_prefix}{topic}` on the remote.
    #[serde(default)]
    pub local_prefix: String,
    #[serde(default)]
    pub remote_prefix: String,
}

impl BridgeTopic {
    /// The filter as seen on this broker.
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.filter)
    }

    /// The filter as seen on the remote broker.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.filter)
    }
}

impl BridgeConfig {
    /// The client id used on the remote broker.
    pub fn remote_client_id(&self) -> String {
        self.client_id.clone().unwrap_or_else(|| format!("starling-bridge-{}", self.name))
    }

    /// Splits `address` into host and port, or says what is wrong with it.
    pub fn host_port(&self) -> Result<(String, u16), String> {
        let (host, port) = self.address.rsplit_once(':').ok_or("expected host:port")?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or("unbalanced '[' in an IPv6 address")?.to_string(),
            None if host.contains(':') => return Err("an IPv6 address needs brackets: [addr]:port".into()),
            None => host.to_string(),
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err("expected host:port with a host name or IP address".into());
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok((host, p)),
            _ => Err(format!("port {port:?} is not a number between 1 and 65535")),
        }
    }

    fn validate(&self, index: usize, problems: &mut Vec<String>) {
        let at = if self.name.is_empty() { format!("bridge[{index}]") } else { format!("bridge {:?}", self.name) };
        let valid_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.name.is_empty() || !self.name.chars().all(valid_name) {
            problems.push(format!("{at}: name = {:?}: must be letters, digits, '.', '_' or '-'", self.name));
        }
        if let Err(e) = self.host_port() {
            problems.push(format!("{at}: address = {:?}: {e}", self.address));
        }
        if let BridgeVersion::Unknown(v) = &self.version {
            problems.push(format!("{at}: version = {v:?}: must be \"3.1.1\" or \"5\""));
        }
        if self.client_id.as_deref() == Some("") {
            problems.push(format!("{at}: client_id is empty: leave it out for the default"));
        }
        if self.password.is_some() && self.username.is_none() {
            problems.push(format!("{at}: password without username"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push(format!("{at}: tls_cert_file and tls_key_file go together"));
        }
        if self.tls_cert_file.is_some() && self.tls_ca_file.is_none() {
            problems.push(format!("{at}: tls_cert_file needs tls_ca_file (which turns TLS on)"));
        }
        if self.keep_alive_secs > 0 && self.keep_alive_secs < 5 {
            problems.push(format!("{at}: keep_alive_secs = {}: must be 0 (off) or at least 5", self.keep_alive_secs));
        }
        if self.reconnect_delay_min_ms == 0 {
            problems.push(format!("{at}: reconnect_delay_min_ms = 0: must be at least 1"));
        }
        if self.reconnect_delay_max_ms < self.reconnect_delay_min_ms {
            problems.push(format!(
                "{at}: reconnect_delay_max_ms = {}: must not be below reconnect_delay_min_ms = {}",
                self.reconnect_delay_max_ms, self.reconnect_delay_min_ms
            ));
        }
        if self.max_queued_messages == Some(0) {
            problems.push(format!("{at}: max_queued_messages = 0: must be at least 1"));
        }
        if self.topics.is_empty() {
            problems.push(format!("{at}: no [[bridge.topics]]: a bridge needs at least one topic rule"));
        }
        for (i, t) in self.topics.iter().enumerate() {
            let key = format!("{at}: topics[{i}]");
            if let BridgeDirection::Unknown(d) = &t.direction {
                problems.push(format!("{key}.direction = {d:?}: must be \"in\", \"out\" or \"both\""));
            }
            if t.qos > 1 {
                problems.push(format!("{key}.qos = {}: must be 0 or 1 (bridges carry QoS 2 as QoS 1)", t.qos));
            }
            for (name, prefix) in [("local_prefix", &t.local_prefix), ("remote_prefix", &t.remote_prefix)] {
                if prefix.contains(['+', '#']) {
                    problems.push(format!("{key}.{name} = {prefix:?}: must not contain wildcards"));
                }
            }
            if t.filter.is_empty() {
                problems.push(format!("{key}.filter is empty"));
                continue;
            }
            for (side, full) in [("local", t.local_filter()), ("remote", t.remote_filter())] {
                match crate::topic::parse_subscription(&full) {
                    Ok(parsed) if parsed.share_group.is_some() => problems
                        .push(format!("{key}.filter: {side} filter {full:?}: shared subscriptions cannot be bridged")),
                    Ok(_) => {}
                    Err(e) => problems.push(format!("{key}.filter: {side} filter {full:?}: {e}")),
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { file: String, problems: Vec<String> },
}

impl Config {
    /// Checks values that the types alone cannot; reports every problem with its key.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.push.validate(&mut problems);
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            problems.push(format!("log.level = {:?}: {e}", self.log.level));
        }
        let m = &self.mqtt;
        // 2 bytes of fixed header is the smallest packet; 268,435,460 the largest the encoding allows.
        if !(16..=MAX_PACKET_SIZE_LIMIT).contains(&m.max_packet_size) {
            problems.push(format!(
                "mqtt.max_packet_size = {}: must be between 16 and {MAX_PACKET_SIZE_LIMIT} (256 MiB less room for \
                 the properties the broker adds when it delivers)",
                m.max_packet_size
            ));
        }
        if m.connect_timeout_secs == 0 {
            problems.push("mqtt.connect_timeout_secs = 0: must be at least 1".to_string());
        }
        if m.receive_maximum == 0 {
            problems.push("mqtt.receive_maximum = 0: must be at least 1 (MQTT 5 forbids 0)".to_string());
        }
        if m.idle_timeout_secs == 0 {
            problems.push("mqtt.idle_timeout_secs = 0: must be at least 1".to_string());
        }
        if m.write_timeout_secs == 0 {
            problems.push("mqtt.write_timeout_secs = 0: must be at least 1".to_string());
        }
        if m.max_connections == 0 {
            problems.push("mqtt.max_connections = 0: must be at least 1".to_string());
        }
        if self.session.max_inflight == 0 {
            problems.push("session.max_inflight = 0: must be at least 1".to_string());
        }
        if self.session.max_sessions == 0 {
            problems.push("session.max_sessions = 0: must be at least 1".to_string());
        }
        if self.session.max_queued_bytes < 1024 {
            problems.push("session.max_queued_bytes: must be at least 1024".to_string());
        }
        if self.session.max_queued_messages == 0 {
            problems.push("session.max_queued_messages = 0: must be at least 1".to_string());
        }
        if self.storage.backend == StorageBackend::Sled && self.storage.data_dir.as_os_str().is_empty() {
            problems.push("storage.data_dir is empty: the sled backend needs a directory".to_string());
        }
        self.auth.validate(&self.acl, &mut problems);
        self.files.validate(&mut problems);
        let proxy_listeners: Vec<&str> = [
            ("mqtt.proxy_protocol", self.mqtt.proxy_protocol),
            ("websocket.proxy_protocol", self.websocket.proxy_protocol),
        ]
        .into_iter()
        .filter_map(|(key, on)| on.then_some(key))
        .collect();
        self.net.validate(&proxy_listeners, &mut problems);
        if let Some(cluster) = &self.cluster {
            cluster.validate(&mut problems);
        }
        if let Some(tls) = &self.tls {
            if tls.client_ca_file.is_none() && (tls.require_client_cert || tls.cn_as_username) {
                problems.push("tls.require_client_cert and tls.cn_as_username need tls.client_ca_file".to_string());
            }
        }
        if self.auth.chain.is_empty() && self.auth.allow_anonymous.is_none() {
            let mut binds = vec![("mqtt.bind", self.mqtt.bind), ("websocket.bind", self.websocket.bind)];
            if self.tls.is_some() {
                binds.extend([("mqtt.tls_bind", self.mqtt.tls_bind), ("websocket.tls_bind", self.websocket.tls_bind)]);
            }
            for (key, bind) in binds {
                if !bind.ip().is_loopback() {
                    problems.push(format!(
                        "{key} = {bind} is not a loopback address and no authentication is configured: \
                         set auth.chain (see docs/security.md), or auth.allow_anonymous = true to open it to anyone"
                    ));
                }
            }
        }
        for (i, bridge) in self.bridge.iter().enumerate() {
            bridge.validate(i, &mut problems);
            if self.bridge[..i].iter().any(|b| b.name == bridge.name) {
                problems.push(format!("bridge {:?}: name is used by an earlier [[bridge]]", bridge.name));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { file: file.to_string(), problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_config_is_the_default() {
        let parsed = Config::from_toml(BUNDLED_CONFIG, "config.toml").unwrap();
        // The differences, both for the loopback demo: the shipped file lets
        // everyone read room viewer counts (without a file, `$SYS/viewers`
        // needs a rule like any `$SYS` topic) and lets anonymous clients
        // upload files (off by default: they are owned by IP address).
        let mut expected = Config {
            acl: vec![AclRule {
                user: "*".into(),
                client: "*".into(),
                action: AclAction::Subscribe,
                topic: "$SYS/viewers/#".into(),
                permission: Permission::Allow,
            }],
            ..Config::default()
        };
        expected.files.allow_anonymous = true;
        assert_eq!(parsed, expected);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[mqtt]\nbindd = \"127.0.0.1:1\"\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("bindd"), "{err}");
    }

    #[test]
    fn bad_value_type_is_named() {
        let err = Config::from_toml("[mqtt]\nbind = \"not an address\"\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("bind"), "{err}");
        let err = Config::from_toml("[storage]\nbackend = \"postgres\"\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("backend") && err.contains("postgres"), "{err}");
    }

    #[test]
    fn every_invalid_value_is_reported_at_once() {
        let err =
            Config::from_toml("[mqtt]\nreceive_maximum = 0\nmax_packet_size = 1\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("mqtt.receive_maximum") && err.contains("mqtt.max_packet_size"), "{err}");
    }

    #[test]
    fn a_push_webhook_needs_a_url_and_a_secret() {
        let err = Config::from_toml("[push]\nwebhook = \"ftp://x\"\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("push.webhook") && err.contains("push.secret"), "{err}");
        let ok = "[push]\nwebhook = \"https://app.example/push\"\nsecret = \"0123456789abcdef\"\n";
        let insecure = "[push]\nwebhook = \"http://app.example/push\"\nsecret = \"0123456789abcdef\"\n";
        let err = Config::from_toml(insecure, "x.toml").unwrap_err().to_string();
        assert!(err.contains("push.allow_insecure"), "{err}");
        assert!(Config::from_toml(&format!("{insecure}allow_insecure = true\n"), "x.toml").is_ok());
        let local = "[push]\nwebhook = \"http://127.0.0.1:9000/push\"\nsecret = \"0123456789abcdef\"\n";
        assert!(Config::from_toml(local, "x.toml").is_ok(), "loopback needs no TLS");
        assert_eq!(Config::from_toml(ok, "x.toml").unwrap().push.ack_timeout_secs, 15);
    }

    const BRIDGE: &str = r#"
[[bridge]]
name = "devices"
address = "127.0.0.1:1883"
version = "3.1.1"
client_id = "starling-bridge-1"
[[bridge.topics]]
filter = "sensors/#"
direction = "in"
qos = 1
local_prefix = "site1/"
remote_prefix = ""
"#;

    #[test]
    fn the_issue_bridge_shape_parses() {
        let config = Config::from_toml(BRIDGE, "x.toml").unwrap();
        let b = &config.bridge[0];
        assert_eq!(
            (b.name.as_str(), b.version.clone(), b.remote_client_id()),
            ("devices", BridgeVersion::V311, "starling-bridge-1".into())
        );
        assert_eq!(b.host_port().unwrap(), ("127.0.0.1".to_string(), 1883));
        assert_eq!(b.topics[0].direction, BridgeDirection::In);
        assert_eq!(
            (b.topics[0].local_filter(), b.topics[0].remote_filter()),
            ("site1/sensors/#".into(), "sensors/#".into())
        );
        assert!(!b.clean_session && b.keep_alive_secs == 60 && b.max_queued_messages.is_none());
    }

    #[test]
    fn bridge_problems_name_the_bridge_and_key() {
        let text = BRIDGE
            .replace("\"in\"", "\"sideways\"")
            .replace("sensors/#", "sensors/#/x")
            .replace("127.0.0.1:1883", "127.0.0.1")
            .replace("\"3.1.1\"", "\"4\"")
            + "[[bridge]]\nname = \"devices\"\naddress = \"[::1]:0\"\n[[bridge.topics]]\nfilter = \"a\"\ndirection = \"out\"\nqos = 2\nlocal_prefix = \"+/\"\n";
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        for expected in [
            "bridge \"devices\": topics[0].direction = \"sideways\"",
            "bridge \"devices\": topics[0].filter: local filter \"site1/sensors/#/x\"",
            "bridge \"devices\": address = \"127.0.0.1\"",
            "bridge \"devices\": version = \"4\"",
            "bridge \"devices\": address = \"[::1]:0\"",
            "topics[0].qos = 2",
            "topics[0].local_prefix = \"+/\"",
            "bridge \"devices\": name is used by an earlier [[bridge]]",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn bridge_addresses() {
        let mut b = Config::from_toml(BRIDGE, "x.toml").unwrap().bridge.remove(0);
        for (address, expected) in [
            ("broker.example.com:8883", Ok(("broker.example.com".to_string(), 8883))),
            ("[::1]:1883", Ok(("::1".to_string(), 1883))),
            ("::1:1883", Err(())),
            (":1883", Err(())),
            ("host:99999", Err(())),
            ("host name:1", Err(())),
        ] {
            b.address = address.into();
            assert_eq!(b.host_port().map_err(|_| ()), expected, "{address}");
        }
    }

    #[test]
    fn the_commented_bridge_example_is_valid() {
        let start = BUNDLED_CONFIG.find("# [[bridge]]").expect("config.toml shows a [[bridge]] example");
        let example: String =
            BUNDLED_CONFIG[start..].lines().filter_map(|l| l.strip_prefix("# ")).map(|l| format!("{l}\n")).collect();
        let config = Config::from_toml(&example, "config.toml example").unwrap();
        assert_eq!(config.bridge.len(), 1);
        assert_eq!(config.bridge[0].topics[0].local_filter(), "site1/sensors/#");
    }

    #[test]
    fn unknown_bridge_key_is_named() {
        let err =
            Config::from_toml(&BRIDGE.replace("qos = 1", "qos = 1\nretain = true"), "x.toml").unwrap_err().to_string();
        assert!(err.contains("retain"), "{err}");
    }
}
