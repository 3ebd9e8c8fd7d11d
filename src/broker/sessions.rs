//! Sessions: connect (create, resume, take over; owned by a user), single
//! sign-on, disconnect (wills, expiry timers), and discarding a session.
//!
//! Owns: the life of entries in `Broker::sessions`. Must never: hold the
//! `sessions` lock across an `.await`, or take it while holding the tree or a
//! session's lock (lock order: sessions → subscriptions → session).

use super::subscriptions::remove_subscription;
use super::*;

/// What a node hands to the node a client moved to (see [`Broker::hand_over`]).
pub struct HandedOver {
    pub subscriptions: Vec<(String, SubscriptionRecord)>,
    /// Undelivered messages, oldest first.
    pub deliveries: Vec<Delivery>,
}

impl Broker {
    /// Creates, resumes or takes over the client's session. A session of
    /// another user is refused and left untouched.
    pub fn connect(self: &Arc<Self>, request: ConnectRequest) -> Result<Connected, ConnectRefused> {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (client_id, assigned) = if request.client_id.is_empty() {
            let id = format!("auto-{:016x}", rand::random::<u64>());
            (id.clone(), Some(id))
        } else {
            (request.client_id.clone(), None)
        };
        let expiry = self.capped_expiry(request.session_expiry_secs);
        let send_window = request.receive_maximum.min(self.config.session.max_inflight);

        let mut ended_will = None;
        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id.as_str()).cloned();
        if existing.as_ref().is_some_and(|old| old.user != request.user) {
            return Err(ConnectRefused::SessionOfAnotherUser);
        }
        let (session, session_present) = match existing {
            Some(old) if !request.clean_start => {
                old.set_expiry_secs(expiry);
                (old, true)
            }
            other => {
                if other.is_none() && sessions.len() >= self.config.session.max_sessions {
                    return Err(ConnectRefused::TooManySessions);
                }
                if let Some(old) = other {
                    // Clean start ends the old session; its connection (if any)
                    // is told it was taken over, and a will still waiting for
                    // its delay is published (the session's end is its deadline).
                    old.kick_taken_over();
                    ended_will = self.discard_session_locked(&mut sessions, &old).map(|will| (old, will));
                }
                let session = Arc::new(Session::new(
                    Arc::from(client_id.as_str()),
                    request.user.clone(),
                    expiry,
                    self.config.session.max_queued_messages,
                    self.store.clone(),
                ));
                session.set_max_queued_bytes(self.config.session.max_queued_bytes);
                sessions.insert(session.client_id.clone(), session.clone());
                (session, false)
            }
        };
        drop(sessions);
        if let Some((old, will)) = ended_will {
            self.publish_will(&old, will);
        }
        let resend = session.attach(connection_id, send_window, request.device.clone(), request.attachment);
        if session.is_persistent() {
            session.save();
        } else if session_present {
            // It was persistent and now expires at disconnect: forget the stored copy.
            let _ = session.remove_stored();
        }
        Ok(Connected {
            session,
            session_present,
            assigned_client_id: assigned,
            connection_id,
            resend,
            session_expiry_secs: expiry,
        })
    }

    /// Single sign-on: asks every other connection of `user` to close
    /// ([`CloseReason::SignedInElsewhere`]); with `same_device_only`, only
    /// those that signed in with `device` (none counts as a kind of its
    /// own). Returns how many were asked.
    /// Scans the sessions map: `auth.single_session` is opt-in, and a scan
    /// is cheaper than keeping a second index in step (measure before a
    /// deployment with 100k+ sessions and connect storms turns it on).
    pub fn sign_out_others(
        &self,
        user: &str,
        same_device_only: bool,
        device: Option<&str>,
        keep_connection: u64,
    ) -> usize {
        let sessions: Vec<Arc<Session>> =
            self.sessions.lock().values().filter(|s| s.user.as_deref() == Some(user)).cloned().collect();
        let keep = |d: Option<&str>| same_device_only && d != device;
        sessions.iter().filter(|s| s.kick_unless(keep_connection, keep, CloseReason::SignedInElsewhere)).count()
    }

    /// A connection ended. Publishes or schedules the will, and ends the
    /// session now (expiry 0) or schedules its expiry.
    pub fn disconnected(
        self: &Arc<Self>,
        session: &Arc<Session>,
        connection_id: u64,
        will: Option<Will>,
        will_action: WillAction,
    ) {
        let was_owner = session.detach(connection_id, now_ms());
        let generation = session.generation();
        if let (Some(will), WillAction::Publish) = (will, will_action) {
            let delay = will.last_will.properties.will_delay_interval.unwrap_or(0);
            let expiry = session.expiry_secs();
            if delay == 0 || (was_owner && expiry == 0) {
                // The will fires when the delay passes or the session ends,
                // whichever is first ([MQTT-3.1.3-9]).
                self.publish_will(session, will);
            } else {
                // The will waits in the session, not in the timer: the delay
                // and the session's end (expiry, clean start, an operator)
                // each take it from there, and the first publishes it.
                session.set_pending_will(will);
                let broker = Arc::downgrade(self);
                let timer_session = session.clone();
                let wait = Duration::from_secs(u64::from(delay.min(expiry)));
                self.spawn_session_timer(session, async move {
                    tokio::time::sleep(wait).await;
                    if let Some(broker) = broker.upgrade() {
                        // A reconnect before the delay cancels this task and
                        // drops the will; the generation check covers a
                        // reconnect racing the wake-up.
                        if timer_session.generation() == generation && !timer_session.is_connected() {
                            if let Some(will) = timer_session.take_pending_will() {
                                broker.publish_will(&timer_session, will);
                            }
                        }
                    }
                });
            }
        }
        if !was_owner {
            return; // Taken over: the session lives on with its new connection.
        }
        let expiry = session.expiry_secs();
        if expiry == 0 {
            let mut sessions = self.sessions.lock();
            let mut will = None;
            if sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
                will = self.discard_session_locked(&mut sessions, session);
            }
            drop(sessions);
            if let Some(will) = will {
                self.publish_will(session, will);
            }
        } else {
            session.save();
            self.schedule_expiry(session, generation);
        }
    }

    /// Publishes a will as its client's PUBLISH would be: checked again
    /// against the rules in force now (they may have changed since CONNECT)
    /// under the identity it connected with, then admitted by its topic
    /// class (rate limits keyed as the client's own publishes).
    pub(super) fn publish_will(&self, session: &Session, will: Will) {
        let Will { last_will: will, identity, rate_key } = will;
        let Ok(topic) = TopicName::new(&will.topic) else { return };
        let props = will.properties;
        let mut message = Message {
            id: 0,
            timestamp_ms: 0,
            topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            expires_at_ms: props.message_expiry_interval.map(|s| now_ms() + u64::from(s) * 1000),
            properties: MessageProperties {
                payload_format_indicator: props.payload_format_indicator,
                content_type: props.content_type,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data,
                // The broker's own keys are never the client's (as for a PUBLISH).
                user_properties: props
                    .user_properties
                    .into_iter()
                    .filter(|(key, _)| !super::message::is_reserved_property(key))
                    .collect(),
            },
            publisher: Some(session.client_id.clone()),
            sender: identity.user.clone(),
            rate_key,
            wire: Default::default(),
            handling: Handling::default(),
        };
        if !self.may_publish(&identity, &session.client_id, &mut message) {
            self.security().count_denied_publish();
            tracing::info!(client_id = %session.client_id, topic = %message.topic, "will not published: the rules no longer allow its topic");
            return;
        }
        tracing::debug!(client_id = %session.client_id, topic = %message.topic, "publishing will");
        self.publish(message);
    }

    pub(super) fn schedule_expiry(self: &Arc<Self>, session: &Arc<Session>, generation: u64) {
        let expiry = session.expiry_secs();
        if expiry == NEVER_EXPIRES || expiry == 0 {
            return;
        }
        let elapsed = now_ms().saturating_sub(session.disconnected_at_ms().unwrap_or_else(now_ms));
        let wait = Duration::from_millis((u64::from(expiry) * 1000).saturating_sub(elapsed));
        let broker = Arc::downgrade(self);
        let timer_session = session.clone();
        self.spawn_session_timer(session, async move {
            tokio::time::sleep(wait).await;
            let Some(broker) = broker.upgrade() else { return };
            let session = timer_session;
            let mut sessions = broker.sessions.lock();
            let still_ours = sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, &session));
            if still_ours && session.generation() == generation && !session.is_connected() {
                tracing::debug!(client_id = %session.client_id, "session expired");
                let will = broker.discard_session_locked(&mut sessions, &session);
                drop(sessions);
                // The session ended before its will's delay passed: the end is
                // the will's deadline ([MQTT-3.1.3-9]).
                if let Some(will) = will {
                    broker.publish_will(&session, will);
                }
            }
        });
    }

    /// A session expiry within `session.max_session_expiry_secs` (which also
    /// caps MQTT 3.1.1's "never"), for CONNECT and for an MQTT 5 DISCONNECT
    /// that raises it.
    pub fn capped_expiry(&self, requested: u32) -> u32 {
        match self.config.session.max_session_expiry_secs {
            0 => requested,
            cap => requested.min(cap),
        }
    }

    /// Runs one of a session's timers (will delay, expiry) on a task of its
    /// own. The next attach of the session, or its end, cancels the task, so
    /// a reconnecting client never leaves a sleeping task (and its will's
    /// payload) behind. Counted in [`Broker::pending_timers`].
    fn spawn_session_timer(&self, session: &Session, timer: impl std::future::Future<Output = ()> + Send + 'static) {
        struct Pending(Arc<AtomicUsize>);
        impl Drop for Pending {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.pending_timers.fetch_add(1, Ordering::Relaxed);
        let pending = Pending(self.pending_timers.clone());
        let task = tokio::spawn(async move {
            let _pending = pending;
            timer.await
        });
        session.add_timer(task.abort_handle());
    }

    /// Session timers (will delays, expiries) currently waiting.
    pub fn pending_timers(&self) -> usize {
        self.pending_timers.load(Ordering::Relaxed)
    }

    /// Removes a session, its subscriptions and its stored state.
    /// Returns the will that was waiting for its delay: the caller
    /// publishes it once it has released the sessions lock.
    #[must_use = "a session's end publishes its pending will"]
    pub(super) fn discard_session_locked(
        &self,
        sessions: &mut HashMap<Arc<str>, Arc<Session>>,
        session: &Arc<Session>,
    ) -> Option<Will> {
        let will = session.cancel_timers();
        if sessions.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            sessions.remove(&session.client_id);
        }
        let mut tree = self.subscriptions.write();
        for (filter, _) in session.subscriptions() {
            if let Ok(parsed) = parse_subscription(&filter) {
                remove_subscription(&mut tree, session, parsed.share_group.as_deref(), &parsed.filter);
            }
            self.interest_changed(&filter, -1);
        }
        drop(tree);
        if let Err(e) = session.remove_stored() {
            tracing::error!(client_id = %session.client_id, error = %e, "cannot remove stored session");
        }
        will
    }

    /// Another node took `client_id` (a cluster claim): this node's session
    /// of it, if it belongs to `user`, is closed with
    /// [`CloseReason::TakenOver`] and ended here. Returns what the new node
    /// needs to continue it (subscriptions and undelivered messages) when
    /// `keep_state` (the client did not ask for a clean start) and the
    /// session was persistent.
    pub fn hand_over(&self, client_id: &str, user: Option<&str>, keep_state: bool) -> Option<HandedOver> {
        let mut sessions = self.sessions.lock();
        let session = sessions.get(client_id).cloned()?;
        if session.user.as_deref() != user {
            tracing::warn!(client_id, "cluster: another node took a client id of another user; left alone here");
            return None;
        }
        let state = (keep_state && session.is_persistent())
            .then(|| HandedOver { subscriptions: session.subscriptions(), deliveries: session.undelivered() });
        // Expiry 0: the disconnect that follows ends the session here.
        session.set_expiry_secs(0);
        let connected = session.ask_to_close(CloseReason::TakenOver);
        if !connected {
            // Taken by another node: the session lives on there, so a will
            // waiting here is dropped (a new connection to the session
            // cancels it, [MQTT-3.1.3-9]).
            let _moved_on = self.discard_session_locked(&mut sessions, &session);
        }
        state
    }

    /// The state of a session another node handed over, added to this
    /// node's session of `client_id` (if it is still there and of the same
    /// user): its subscriptions, then its undelivered messages, queued.
    pub fn take_over_state(
        &self,
        client_id: &str,
        user: Option<&str>,
        subscriptions: Vec<(String, SubscriptionRecord)>,
        deliveries: Vec<Delivery>,
    ) -> bool {
        let Some(session) = self.session(client_id).filter(|s| s.user.as_deref() == user) else { return false };
        for (filter, record) in subscriptions {
            // Another node's record: validated again where it enters this node.
            match parse_subscription(&filter) {
                Ok(parsed) if !session.has_subscription(&filter) => {
                    let holes = self.holes_before_resume(&session, &parsed);
                    self.subscribe_unsaved(&session, &parsed, SubscriptionRecord { holes, ..record });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(client_id, filter, error = %e, "cluster: a handed-over filter is invalid"),
            }
        }
        session.save();
        for delivery in deliveries {
            session.enqueue(delivery);
        }
        true
    }

    /// Every persistent session this node holds, connected or not.
    pub fn persistent_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().values().filter(|s| s.is_persistent()).cloned().collect()
    }

    /// The session of `client_id`, connected or not.
    pub fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().get(client_id).cloned()
    }

    /// Number of known sessions (connected or not).
    /// Sessions with a live connection (a scan: for metrics, not hot paths).
    pub fn connected_count(&self) -> usize {
        self.sessions.lock().values().filter(|s| s.is_connected()).count()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }
}

pub(super) fn session_has_expired(expiry_secs: u32, disconnected_at_ms: u64, now_ms: u64) -> bool {
    expiry_secs != NEVER_EXPIRES && disconnected_at_ms + u64::from(expiry_secs) * 1000 <= now_ms
}
