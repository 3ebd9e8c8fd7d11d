//! Once-a-second chores and read-only views: viewer counts published as
//! `$SYS/viewers/...`, expired retained messages swept, quiet rooms forgotten.
//!
//! Owns: the housekeeping task. Must never: block the runtime (each chore is
//! a short pass over in-memory state).

use super::*;

/// How often history is swept by age, in seconds.
pub const HISTORY_SWEEP_EVERY_SECS: u64 = 60;

impl Broker {
    /// Live subscribers of a room (an exact filter of a `count_viewers`
    /// class): in a cluster, on every node.
    pub fn viewer_count(&self, filter: &str) -> usize {
        let remote = self.backplane.get().map_or(0, |c| c.remote_viewers(filter));
        self.classes.viewer_count(filter) + remote
    }

    /// The topic classes in force.
    pub fn classes(&self) -> &crate::classes::ClassSet {
        &self.classes.set
    }

    /// Messages shed by sampling and publishes refused by class limits so far.
    /// The topic classes at run time (their drop counters, for `/metrics`).
    pub fn classes_runtime(&self) -> &class_runtime::ClassRuntime {
        &self.classes
    }

    pub fn class_counters(&self) -> (u64, u64) {
        (self.classes.shed.load(Ordering::Relaxed), self.classes.refused.load(Ordering::Relaxed))
    }

    /// Once a second: publish changed viewer counts as retained
    /// `$SYS/viewers/{filter}` messages, sweep expired retained messages
    /// (location TTLs), forget quiet rooms' samplers.
    pub(super) fn start_housekeeping(self: &Arc<Self>) {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                let Some(broker) = broker.upgrade() else { return };
                let now = now_ms();
                let mut changed: Vec<String> = Vec::new();
                let local_changes = broker.classes.take_changed_viewer_counts();
                if let Some(cluster) = broker.backplane.get() {
                    // Other nodes add this node's counts to theirs: tell them
                    // what changed, and everything every few seconds.
                    if ticks.is_multiple_of(super::backplane::VIEWERS_FULL_EVERY_SECS) {
                        cluster.share_viewer_counts(broker.classes.all_viewer_counts());
                    } else if !local_changes.is_empty() {
                        cluster.share_viewer_counts(local_changes.clone());
                    }
                    changed.extend(cluster.take_changed_viewers(now));
                }
                changed.extend(local_changes.into_iter().map(|(filter, _)| filter));
                changed.sort_unstable();
                changed.dedup();
                for filter in changed {
                    let Ok(topic) = TopicName::new(&format!("$SYS/viewers/{filter}")) else { continue };
                    let count = broker.viewer_count(&filter);
                    let payload = if count == 0 { bytes::Bytes::new() } else { count.to_string().into() };
                    broker.publish(Message::new(topic, payload, QoS::AtMostOnce, true));
                }
                let sys_every = broker.config.sys.interval_secs;
                if sys_every > 0 && ticks.is_multiple_of(sys_every) {
                    broker.publish_sys();
                }
                broker.check_connections(now);
                broker.sweep_expired_retained(now);
                if broker.delivery_watch.get().is_some() && !broker.watch_sweep_running.swap(true, Ordering::AcqRel) {
                    // Asks sessions and writes the store: off the runtime's threads.
                    let broker = broker.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Some(watch) = broker.delivery_watch.get() {
                            watch.sweep(now, &|session| {
                                broker.session(&session.client_id).is_some_and(|s| std::ptr::eq(&*s, session))
                            });
                        }
                        broker.watch_sweep_running.store(false, Ordering::Release);
                    });
                }
                broker.classes.forget_quiet_rooms(now);
                ticks += 1;
                if ticks.is_multiple_of(HISTORY_SWEEP_EVERY_SECS)
                    && !broker.history_sweep_running.swap(true, Ordering::AcqRel)
                {
                    // The store is read from disk: off the runtime's threads.
                    let broker = broker.clone();
                    tokio::task::spawn_blocking(move || {
                        broker.sweep_old_history(now_ms());
                        broker.history_sweep_running.store(false, Ordering::Release);
                    });
                }
            }
        });
    }

    /// Removes retained messages whose expiry (MQTT 5 message expiry, or a
    /// class's retained TTL) has passed, from memory and from the store.
    /// Costs what expired, not what is held.
    fn sweep_expired_retained(&self, now: u64) {
        // The deadline queue names exactly what expired: no scan.
        let expired = self.retained.read().expired(now);
        if expired.is_empty() {
            return;
        }
        let mut retained = self.retained.write();
        for topic in expired {
            // Re-check under the write lock: a newer message may have replaced it.
            if let Some(message) = retained.get(&topic).filter(|m| m.is_expired(now)) {
                // In a cluster every node expires its own copy at the same
                // deadline; the node that admitted the message (its id's
                // tag) also removes it from the cluster's bucket: once.
                if let Some(backplane) = self.backplane.get().filter(|_| self.gave_id(message.id)) {
                    backplane.forget_retained(topic.as_str(), message.id);
                }
                retained.remove(&topic);
                let _ = self.store.set_retained(topic.as_str(), None);
            }
        }
    }

    /// Publishes the `$SYS/broker/...` topics (Mosquitto's names and
    /// meanings), retained, so a subscriber gets the latest at once.
    pub fn publish_sys(&self) {
        use super::stats::total;
        let stats = &self.stats;
        let topics: [(&str, String); 10] = [
            ("version", format!("starling {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{} seconds", self.started.elapsed().as_secs())),
            ("clients/connected", self.connected_count().to_string()),
            ("clients/total", self.session_count().to_string()),
            ("messages/received", total(&stats.messages_received()).to_string()),
            ("messages/sent", total(&stats.messages_sent()).to_string()),
            ("bytes/received", total(&stats.bytes_received()).to_string()),
            ("bytes/sent", total(&stats.bytes_sent()).to_string()),
            ("retained messages/count", self.retained_count().to_string()),
            ("subscriptions/count", self.subscription_count().to_string()),
        ];
        let counts = [
            total(&stats.messages_received()),
            total(&stats.messages_sent()),
            total(&stats.bytes_received()),
            total(&stats.bytes_sent()),
            stats.connects().iter().sum(),
        ];
        let loads = self.sys_load.lock().update(counts, std::time::Instant::now());
        let load_topics = super::stats::LoadAverages::NAMES.iter().zip(loads).flat_map(|(name, averages)| {
            ["1min", "5min", "15min"]
                .into_iter()
                .zip(averages)
                .map(move |(window, value)| (format!("load/{name}/{window}"), format!("{value:.2}")))
        });
        let all = topics.into_iter().map(|(n, v)| (n.to_string(), v)).chain(load_topics);
        for (name, value) in all {
            let Ok(topic) = TopicName::new(&format!("$SYS/broker/{name}")) else { continue };
            self.publish(Message::new(topic, value.into(), QoS::AtMostOnce, true));
        }
    }

    /// Drops history messages older than their class's `history_secs`, in
    /// every room, written to lately or not (appends trim only the rooms
    /// that are written to). Runs on a blocking thread every
    /// [`HISTORY_SWEEP_EVERY_SECS`].
    pub fn sweep_old_history(&self, now: u64) -> usize {
        let cutoff = |topic: &str| {
            let rule = self.classes.history_rule(&TopicName::new(topic).ok()?)?;
            Some(now.saturating_sub(rule.max_age_secs? * 1000))
        };
        match self.store.sweep_history(&cutoff) {
            Ok(removed) => {
                if removed > 0 {
                    tracing::debug!(removed, "old history swept");
                }
                removed
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot sweep old history");
                0
            }
        }
    }

    /// Number of retained messages held.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Bytes (payloads and topics) of the retained messages held.
    pub fn retained_bytes(&self) -> usize {
        self.retained.read().bytes()
    }
}
