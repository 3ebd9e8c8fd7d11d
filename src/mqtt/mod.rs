//! MQTT 3.1.1 and 5.0: the wire codec and the per-connection state machine.
//!
//! Owns: bytes ⇄ packets ([`decode`], [`encode`]), and [`connection`], which
//! turns packets into calls on the broker core and deliveries back into
//! packets. Must never: hold session state of its own; only what the spec
//! scopes to one network connection (topic aliases, keep-alive) lives here.

pub mod connection;
pub mod decode;
pub mod encode;
pub mod packet;
pub mod primitives;
mod reader;
pub mod runs;
pub use crate::model::reason;
