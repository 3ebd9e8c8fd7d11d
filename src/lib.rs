//! starling: a realtime pub/sub broker.
//!
//! # Layout
//! - [`config`]: the configuration file, its defaults and validation.
//! - [`topic`]: topic names, filters and the subscription tree (pure logic).
//! - [`mqtt`]: the MQTT 3.1.1/5.0 codec and the MQTT connection state machine.
//! - [`broker`]: the transport-independent core: sessions, subscriptions,
//!   routing, retained messages, QoS state, wills.
//! - [`classes`]: topic classes from `topics/*.toml` (chat, danmaku,
//!   location...) and their pure policies.
//! - [`store`]: durable state (sled) behind the `Store` trait, with group commit.
//! - [`wsproto`]: the WebSocket-Protobuf protocol (`proto/starling.proto`):
//!   server-side connection and a small client.
//! - [`net`]: listeners that accept connections and hand them to a protocol;
//!   the WebSocket upgrade and routing by path.
//! - [`bench`]: `starling bench`, the load tool.
//! - [`fuzz`]: `starling fuzz`, a mutation fuzzer for every parser clients and
//!   operators can feed.
//! - [`clock`]: the wall clock, precise and coarse (bottom layer).
//! - [`model`]: the neutral vocabulary (QoS, wills, reason codes, close reasons).
//! - [`client`]: the client core every transport shares (admission, the
//!   connected loop, per-operation access checks).
//! - [`auth`]: authentication providers, access rules, roles, single sign-on.
//! - [`simulate`]: `starling simulate fleet`, publishers that feed the web demo.
//! - [`bridge`]: links to other MQTT brokers (rumqttc), attached to the
//!   core like a client.
//! - [`files`]: files in chat: resumable uploads (tus 1.0) and downloads on
//!   the WebSocket port, stored once by content.
//! - [`cluster`]: several nodes as one broker over NATS: forwarding,
//!   interest-based NATS subscriptions, the topic ↔ subject mapping.
//! - [`server`]: wires the pieces together; what `starling serve` and the
//!   tests start.
//!
//! The data path: accept → connection task → decode → [`broker::Broker::publish`]
//! → subscription tree → subscriber outboxes → the subscriber's connection
//! task drains its outbox, encodes, and writes once.

pub mod admin;
pub mod auth;
pub mod bench;
pub mod bridge;
pub mod broker;
pub mod classes;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod files;
pub mod fuzz;
pub mod model;
pub mod monitor;
pub mod mqtt;
pub mod net;
pub mod plugins;
pub mod probe;
pub mod push;
pub mod server;
pub mod simulate;
pub mod store;
pub mod topic;
pub mod wsproto;
