//! Listeners: accept connections and hand each to its protocol's task.
//!
//! Owns: the accept loops, the connection limit, socket options. Must never:
//! parse protocol bytes or pace the accept loop with sleeps (a burst of
//! thousands of connects must be taken as fast as the kernel offers them;
//! `mqtt.max_connections` bounds it instead).

use crate::broker::Broker;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

/// Accepts MQTT/TCP connections until `stop` turns true. Each connection runs
/// on its own task, tracked by `tasks` so shutdown can wait for them.
pub async fn serve_mqtt_tcp(
    listener: TcpListener,
    broker: Arc<Broker>,
    tasks: TaskTracker,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(broker.config().mqtt.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: log and keep serving the connections we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached (mqtt.max_connections); closing");
            continue;
        };
        // Latency matters more than packet count: the writer already batches.
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        tasks.spawn(async move {
            crate::mqtt::connection::serve(stream, peer, broker).await;
            drop(permit);
        });
    }
}
