//! What operators read and do through the admin API: list sessions, look up
//! and clear retained messages, list topics, close a client's connection.
//!
//! Owns: these reads and actions on the core's state. Must never: be called
//! on a hot path (the listings scan the sessions map or walk the retained
//! tree), or hold the sessions lock while taking a session's lock for long.

use super::*;

/// What [`Broker::close_client`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The connection was asked to close; the session ends or stays as its
    /// expiry says (ends at once with `discard_session`).
    Connection,
    /// Nobody was connected; the session was discarded (`discard_session`).
    SessionDiscarded,
    /// Nobody is connected and the session was kept (no `discard_session`).
    NotConnected,
    NoSuchClient,
}

/// Totals over every session (see [`Broker::session_summary`]).
#[derive(Debug, Default)]
pub struct SessionSummary {
    /// Live connections by (transport label, protocol).
    pub connections: std::collections::BTreeMap<(&'static str, &'static str), usize>,
    pub online: usize,
    pub offline: usize,
    pub queued: usize,
    pub queued_bytes: usize,
    pub inflight: usize,
}

impl Broker {
    /// Connections, sessions and undelivered totals in one scan of the
    /// sessions (for `/metrics` and `/api/v1/stats`).
    pub fn session_summary(&self) -> SessionSummary {
        let sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        let mut summary = SessionSummary::default();
        for session in sessions {
            match session.attachment() {
                Some(a) => {
                    summary.online += 1;
                    *summary.connections.entry((a.transport.label(), a.protocol)).or_default() += 1;
                }
                None => summary.offline += 1,
            }
            let load = session.load();
            summary.queued += load.queued;
            summary.queued_bytes += load.queued_bytes;
            summary.inflight += load.inflight;
        }
        summary
    }

    /// Every session, connected or not, ordered by client id.
    pub fn sessions_snapshot(&self) -> Vec<Arc<Session>> {
        let mut sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        sessions
    }

    /// Closes the connection of `client_id` (MQTT 5: DISCONNECT 0x98,
    /// administrative action; the will is published). With
    /// `discard_session`, the session ends too: at once when nobody is
    /// connected, otherwise when the connection ends.
    pub fn close_client(self: &Arc<Self>, client_id: &str, discard_session: bool) -> Closed {
        let Some(session) = self.session(client_id) else { return Closed::NoSuchClient };
        if discard_session {
            // Expiry 0: the disconnect that follows ends the session.
            session.set_expiry_secs(0);
        }
        if session.ask_to_close(CloseReason::AdministrativeAction) {
            return Closed::Connection;
        }
        if !discard_session {
            return Closed::NotConnected;
        }
        let mut sessions = self.sessions.lock();
        let mut will = None;
        if sessions.get(client_id).is_some_and(|s| Arc::ptr_eq(s, &session)) && !session.is_connected() {
            will = self.discard_session_locked(&mut sessions, &session);
        }
        drop(sessions);
        if let Some(will) = will {
            self.publish_will(&session, will);
        }
        Closed::SessionDiscarded
    }

    /// The retained message of `topic`, if any (and not expired).
    pub fn retained_message(&self, topic: &TopicName) -> Option<Arc<Message>> {
        self.retained.read().get(topic).filter(|m| !m.is_expired(now_ms())).cloned()
    }

    /// Clears the retained message of `topic`, in memory and in the store,
    /// durably. Returns whether there was one.
    pub async fn clear_retained(&self, topic: &TopicName) -> Result<bool, StoreError> {
        let existed = self.retained.write().remove(topic).is_some();
        if existed {
            self.store.set_retained(topic.as_str(), None)?;
            self.sync().await?;
        }
        Ok(existed)
    }

    /// Topics starting with `prefix` that hold a retained message, in
    /// byte order, at most `limit`.
    pub fn retained_topics(&self, prefix: &str, limit: usize) -> Vec<String> {
        self.retained.read().topics(prefix, limit)
    }

    /// Topics starting with `prefix` that hold history, at most `limit`.
    /// Reads the store: call it off the runtime's threads.
    pub fn history_topics(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.store.history_topics(prefix, limit)
    }

    /// Subscriptions in the tree (a client's, or a shared group's).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }
}
