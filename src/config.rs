//! Configuration: the file format, its defaults, and validation.
//!
//! Owns: turning `config.toml` (plus command-line overrides) into a checked
//! [`Config`]. Unknown keys and bad values are errors that name the file and
//! the key; every problem found is reported at once.
//! Must never: start anything or touch the network or disk beyond reading the
//! file.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The commented default configuration that ships at the top of the repository.
pub const BUNDLED_CONFIG: &str = include_str!("../config.toml");

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mqtt: MqttConfig,
    pub websocket: WebSocketConfig,
    pub session: SessionConfig,
    pub storage: StorageConfig,
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Address of the WebSocket listener: MQTT on `/mqtt`, the Protobuf
    /// protocol on `/ws`.
    pub bind: SocketAddr,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig { bind: "127.0.0.1:8083".parse().unwrap() }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// QoS 1/2 deliveries in flight to one client when it does not announce a
    /// smaller Receive Maximum.
    pub max_inflight: u16,
    /// Messages held for one session (online backlog or offline queue).
    pub max_queued_messages: usize,
    /// Upper bound on a client's session expiry (seconds); 0 means no cap.
    pub max_session_expiry_secs: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { max_inflight: 100, max_queued_messages: 1000, max_session_expiry_secs: 0 }
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
    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Config::from_toml(&text, &file)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { file: file.to_string(), message: e.to_string() })?;
        config.validate(file)?;
        Ok(config)
    }

    /// Checks values that the types alone cannot; reports every problem with its key.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let m = &self.mqtt;
        // 2 bytes of fixed header is the smallest packet; 268,435,460 the largest the encoding allows.
        if !(16..=268_435_460).contains(&m.max_packet_size) {
            problems.push(format!("mqtt.max_packet_size = {}: must be between 16 and 268435460", m.max_packet_size));
        }
        if m.connect_timeout_secs == 0 {
            problems.push("mqtt.connect_timeout_secs = 0: must be at least 1".to_string());
        }
        if m.receive_maximum == 0 {
            problems.push("mqtt.receive_maximum = 0: must be at least 1 (MQTT 5 forbids 0)".to_string());
        }
        if m.max_connections == 0 {
            problems.push("mqtt.max_connections = 0: must be at least 1".to_string());
        }
        if self.session.max_inflight == 0 {
            problems.push("session.max_inflight = 0: must be at least 1".to_string());
        }
        if self.session.max_queued_messages == 0 {
            problems.push("session.max_queued_messages = 0: must be at least 1".to_string());
        }
        if self.storage.backend == StorageBackend::Sled && self.storage.data_dir.as_os_str().is_empty() {
            problems.push("storage.data_dir is empty: the sled backend needs a directory".to_string());
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
        assert_eq!(parsed, Config::default());
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
}
