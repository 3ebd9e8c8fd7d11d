//! One connection's life, written once for every network edge (MQTT over
//! TCP, TLS and WebSocket; starling.v1): connect timeout → admission (and
//! the resend of what the session had in flight, done by the edge's
//! acknowledgement) → serve → bounded goodbye → lingering close.
//!
//! Owns: the order of the phases, their bounds (`mqtt.connect_timeout_secs`
//! for the first packet, [`CLOSE_GRACE`] for the goodbye and for the
//! lingering close), and which close reasons get a goodbye at all (not a
//! write timeout: that client stopped reading). Must never: know a wire
//! format; each [`Door`] says how its own phases are spoken.
//!
//! The rare phases (connect, admission, goodbye, lingering) are boxed: a
//! task's future is as large as its largest state, and an idle connection
//! should pay only for the serve loop's waiting state (docs/performance.md).

use super::{Client, Edge};
use crate::broker::Broker;
use crate::model::CloseReason;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Longest the goodbye may take, and the lingering close after it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A network edge's side of the phases around the serve loop.
pub trait Door: Edge + Sized {
    /// The first packet: what the client asks to connect with.
    type Connect: Send;
    /// Reads the first packet. `Ok(None)`: the peer went away first.
    fn read_connect(&mut self) -> impl Future<Output = Result<Option<Self::Connect>, CloseReason>> + Send;
    /// The connect phase failed (a wrong first packet, or the connect
    /// timeout): say so if the protocol can, then close.
    fn refuse_connect(&mut self, reason: &CloseReason) -> impl Future<Output = ()> + Send;
    /// Admission: authenticates, answers the connect (a refusal included)
    /// and queues what the session resends. `None`: refused (answered).
    fn admit(&mut self, broker: &Arc<Broker>, connect: Self::Connect) -> impl Future<Output = Option<Client>> + Send;
    /// Says why the connection ends (MQTT 5 DISCONNECT, starling.v1
    /// Disconnect or Error) after writing what the serve loop left, then
    /// shuts the writing side. Bounded by the caller.
    fn goodbye(&mut self, reason: &CloseReason) -> impl Future<Output = ()> + Send;
    /// Reads and discards what the peer still sends until it closes: closing
    /// with unread input makes the kernel send a reset, and a reset can
    /// destroy the goodbye before the client reads it. Bounded by the caller.
    fn linger(&mut self) -> impl Future<Output = ()> + Send;
}

/// Runs one connection through every phase. An async block, not an `async
/// fn`: the door is held once (an `async fn` would also keep its argument).
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub fn run<D: Door + Send>(mut door: D, broker: Arc<Broker>) -> impl Future<Output = ()> + Send {
    async move {
        let timeout = Duration::from_secs(broker.config().mqtt.connect_timeout_secs);
        let connect = match Box::pin(tokio::time::timeout(timeout, door.read_connect())).await {
            Ok(Ok(Some(connect))) => connect,
            Ok(Ok(None)) => return,
            Ok(Err(reason)) => return Box::pin(door.refuse_connect(&reason)).await,
            Err(_) => return Box::pin(door.refuse_connect(&CloseReason::ConnectTimeout)).await,
        };
        let Some(mut client) = Box::pin(door.admit(&broker, connect)).await else { return };
        let reason = client.serve(&mut door).await;
        // A client that stopped reading gets no goodbye (it would not read
        // it, and must not hold its task and session here).
        let says_goodbye = reason != CloseReason::WriteTimeout;
        if says_goodbye {
            let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, door.goodbye(&reason))).await;
        }
        client.finish(&reason);
        if says_goodbye && reason.disconnect_code().is_some() {
            let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, door.linger())).await;
        }
    }
}
