//! `GET /metrics`: the broker's counters and gauges in Prometheus's text
//! format, read at scrape time. Names, labels and meanings: docs/operations.md
//! ("Metrics"); docs/grafana/starling.json is built on them.
//!
//! Owns: the metric names and labels. Must never: keep its own counts (the
//! broker's `Stats`, the class runtime, the group commit and the bridges
//! keep them; this only reads), or be read on a hot path.

use super::{error, AdminState};
use crate::auth::Transport;
use crate::broker::stats::{ByTransportQos, Limit, RefusedBecause};
use crate::model::CloseReason;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::core::Collector;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::Arc;

pub async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    match render_metrics(&state) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "metrics", &e.to_string()),
    }
}

const QOS_LABELS: [&str; 3] = ["0", "1", "2"];

/// A fresh registry filled from the broker's state, every metric prefixed `starling_`.
struct Metrics {
    registry: Registry,
}

impl Metrics {
    fn register(&self, collector: impl Collector + 'static) -> prometheus::Result<()> {
        self.registry.register(Box::new(collector))
    }

    fn gauge(&self, name: &str, help: &str, value: usize) -> prometheus::Result<()> {
        let g = IntGauge::new(name, help)?;
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        self.register(g)
    }

    fn counter(&self, name: &str, help: &str, value: u64) -> prometheus::Result<()> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        self.register(c)
    }

    /// A counter family: one series per `(label values, value)`.
    fn counters<'a>(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl IntoIterator<Item = (Vec<&'a str>, u64)>,
    ) -> prometheus::Result<()> {
        let family = IntCounterVec::new(Opts::new(name, help), labels)?;
        for (values, value) in series {
            family.with_label_values(&values).inc_by(value);
        }
        self.register(family)
    }

    fn gauges<'a>(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl IntoIterator<Item = (Vec<&'a str>, i64)>,
    ) -> prometheus::Result<()> {
        let family = IntGaugeVec::new(Opts::new(name, help), labels)?;
        for (values, value) in series {
            family.with_label_values(&values).set(value);
        }
        self.register(family)
    }

    /// A by-transport-and-QoS table, the transports that carried nothing left out.
    fn by_transport_qos(&self, name: &str, help: &str, table: &ByTransportQos) -> prometheus::Result<()> {
        let series = Transport::ALL.iter().zip(table.iter()).flat_map(|(transport, row)| {
            let seen = row.iter().any(|n| *n > 0);
            QOS_LABELS
                .iter()
                .zip(row.iter())
                .filter(move |_| seen)
                .map(move |(qos, n)| (vec![transport.label(), *qos], *n))
        });
        self.counters(name, help, &["transport", "qos"], series)
    }
}

/// The metrics, read from the broker's counters at scrape time, in
/// Prometheus's text format.
pub fn render_metrics(state: &AdminState) -> prometheus::Result<String> {
    let broker = &state.broker;
    let m = Metrics { registry: Registry::new_custom(Some("starling".into()), None)? };
    let stats = &broker.stats;

    // Connections and sessions: one scan of the sessions map.
    let sessions = broker.session_summary();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.gauges(
        "connections",
        "Live connections by transport and protocol",
        &["transport", "protocol"],
        sessions.connections.iter().map(|((t, p), n)| (vec![*t, *p], count(*n))),
    )?;
    m.gauges(
        "sessions",
        "Sessions held, by whether a connection is attached",
        &["state"],
        [(vec!["online"], count(sessions.online)), (vec!["offline"], count(sessions.offline))],
    )?;
    m.gauge("clients_connected", "Sessions with a live connection", sessions.online)?;
    m.gauge("queued_messages", "Deliveries waiting in outboxes (all sessions)", sessions.queued)?;
    m.gauge("queued_bytes", "Bytes of the deliveries waiting in outboxes", sessions.queued_bytes)?;
    m.gauge("inflight_messages", "QoS 1/2 deliveries sent and not yet acknowledged", sessions.inflight)?;
    m.gauge(
        "subscriptions",
        "Subscriptions in the tree (a client's, or a shared group's)",
        broker.subscription_count(),
    )?;
    m.gauge("retained_messages", "Retained messages held", broker.retained_count())?;
    m.gauge("retained_bytes", "Bytes (payloads and topics) of the retained messages", broker.retained_bytes())?;
    m.gauge("pending_timers", "Will-delay and session-expiry timers armed", broker.pending_timers())?;
    m.gauge("uptime_seconds", "Seconds since the broker started", broker.started.elapsed().as_secs() as usize)?;

    // Connects and disconnects.
    m.counters(
        "connects_total",
        "Connections admitted (after authentication), by transport",
        &["transport"],
        Transport::ALL.iter().zip(stats.connects()).filter(|(_, n)| *n > 0).map(|(t, n)| (vec![t.label()], n)),
    )?;
    let mut refused = stats.refusals();
    refused[RefusedBecause::ConnectionLimit as usize] += state.gate.refused();
    m.counters(
        "connects_refused_total",
        "Connections refused, by reason (connection_limit: the per-IP limits at accept)",
        &["reason"],
        RefusedBecause::LABELS.iter().zip(refused).map(|(r, n)| (vec![*r], n)),
    )?;
    m.counters(
        "disconnects_total",
        "Admitted connections that ended, by close reason",
        &["reason"],
        CloseReason::LABELS.iter().zip(stats.disconnects()).filter(|(_, n)| *n > 0).map(|(r, n)| (vec![*r], n)),
    )?;

    // Traffic.
    m.by_transport_qos(
        "messages_received_total",
        "PUBLISHes accepted from clients, by transport and QoS",
        &stats.messages_received(),
    )?;
    m.by_transport_qos("bytes_received_total", "Payload bytes of the messages received", &stats.bytes_received())?;
    m.by_transport_qos(
        "messages_sent_total",
        "Deliveries written to clients, by transport and QoS",
        &stats.messages_sent(),
    )?;
    m.by_transport_qos(
        "bytes_sent_total",
        "Payload and topic bytes of the deliveries sent (a write's bytes count under its highest QoS)",
        &stats.bytes_sent(),
    )?;
    m.counters(
        "deliveries_dropped_total",
        "Deliveries not made, by topic class and reason (sampled: whole messages shed by a room's sampling)",
        &["class", "reason"],
        broker.classes_runtime().drop_counts().into_iter().map(|(c, r, n)| (vec![c, r], n)),
    )?;
    m.register(stats.delivery_latency.clone())?;
    m.counter(
        "subscriptions_revoked_total",
        "Subscriptions dropped because the rules no longer allow them (a resumed session, a reload)",
        stats.revoked_subscriptions(),
    )?;
    m.counter(
        "writer_stalls_total",
        "Writers found stopped with deliveries they could send (a lost wake-up, woken by the sweep); should stay 0",
        stats.writer_stalls(),
    )?;

    // Store.
    let commit = broker.commit_metrics();
    m.register(commit.flush_seconds.clone())?;
    m.register(commit.batch_size.clone())?;
    m.gauge(
        "store_up",
        "1 when the store's last flush succeeded",
        usize::from(commit.last_ok.load(std::sync::atomic::Ordering::Relaxed)),
    )?;

    // Security and limits.
    m.counter("auth_failures_total", "Refused credentials and tokens", broker.security().failures())?;
    let (cooldowns, cooling_refusals) = broker.security().cooldown_counts();
    m.counter(
        "login_cooldowns_total",
        "Login cooldowns started (too many failed logins for a user or an address)",
        cooldowns,
    )?;
    m.counter(
        "login_cooldown_refusals_total",
        "Logins refused without verification during a cooldown",
        cooling_refusals,
    )?;
    m.counter("publishes_denied_total", "Publishes the ACL refused", broker.security().denied_publishes())?;
    m.counter(
        "connections_refused_per_ip_total",
        "Connections refused at accept by the per-IP limits",
        state.gate.refused(),
    )?;
    let mut hits = stats.limit_hits();
    hits[Limit::Connections as usize] += state.gate.refused();
    m.counters(
        "limit_hits_total",
        "Times a configured limit refused something, by limit",
        &["limit"],
        Limit::LABELS.iter().zip(hits).map(|(l, n)| (vec![*l], n)),
    )?;
    let (shed, class_refused) = broker.class_counters();
    m.counter("class_messages_shed_total", "Messages shed by topic-class sampling", shed)?;
    m.counter("class_publishes_refused_total", "Publishes refused by topic-class limits", class_refused)?;

    // Bridges.
    let bridges: Vec<_> = state.bridges.iter().map(|b| b.status()).collect();
    m.gauges(
        "bridge_up",
        "1 when the bridge's link to its remote is up",
        &["bridge"],
        bridges.iter().map(|b| (vec![b.name.as_str()], i64::from(b.connected))),
    )?;
    m.counters(
        "bridge_connects_total",
        "Successful connections of the bridge to its remote",
        &["bridge"],
        bridges.iter().map(|b| (vec![b.name.as_str()], b.connects)),
    )?;
    m.counters(
        "bridge_messages_total",
        "Messages the bridge carried: in (from the remote), out (to it)",
        &["bridge", "direction"],
        bridges.iter().flat_map(|b| {
            [(vec![b.name.as_str(), "in"], b.messages_in), (vec![b.name.as_str(), "out"], b.messages_out)]
        }),
    )?;
    m.gauges(
        "bridge_queue_depth",
        "Out-messages waiting in the bridge's session",
        &["bridge"],
        bridges.iter().map(|b| (vec![b.name.as_str()], b.queue_depth as i64)),
    )?;

    // The cluster backplane (NATS).
    if let Some(cluster) = &state.plugins.cluster {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &cluster.counters;
        m.gauge(
            "cluster_connected",
            "1 while this node's NATS connection is up (0: degraded, local delivery only)",
            usize::from(cluster.is_connected()),
        )?;
        m.gauge(
            "cluster_interest_filters",
            "Distinct filters this node's sessions hold (one NATS interest each)",
            cluster.interest_count(),
        )?;
        m.gauge(
            "cluster_nats_subscriptions",
            "NATS subscriptions held for that interest (a /# filter takes two)",
            cluster.subscriptions.load(Relaxed),
        )?;
        m.counters(
            "cluster_messages_total",
            "Messages over NATS by direction: forwarded (to other nodes), received (from them, delivered here), duplicate (a second copy: two filters matched), dropped (not forwarded: the queue to NATS was full), malformed",
            &["direction"],
            [
                (vec!["forwarded"], c.forwarded.load(Relaxed)),
                (vec!["received"], c.received.load(Relaxed)),
                (vec!["duplicate"], c.duplicates.load(Relaxed)),
                (vec!["dropped"], c.forward_dropped.load(Relaxed)),
                (vec!["malformed"], c.malformed.load(Relaxed)),
            ],
        )?;
        m.counter(
            "cluster_shared_received_total",
            "Messages a shared subscription's NATS queue group gave this node",
            c.shared_received.load(Relaxed),
        )?;
        let d = &cluster.durable;
        m.counters(
            "cluster_session_moves_total",
            "Sessions moved between nodes (a client reconnected elsewhere): handed_over (from this node), taken_over (to it, from a live node), rebuilt (to it, from JetStream: the old node did not answer)",
            &["direction"],
            [
                (vec!["handed_over"], c.sessions_handed_over.load(Relaxed)),
                (vec!["taken_over"], c.sessions_taken_over.load(Relaxed)),
                (vec!["rebuilt"], d.sessions_recovered.load(Relaxed)),
            ],
        )?;
        m.gauge(
            "cluster_jetstream_ready",
            "1 once this node found or created the cluster's JetStream streams and buckets",
            usize::from(d.is_ready()),
        )?;
        m.counter(
            "cluster_jetstream_failures_total",
            "Messages JetStream did not acknowledge (QoS 1/2 publishers were refused)",
            d.failed.load(Relaxed),
        )?;
        m.counter(
            "cluster_replayed_total",
            "QoS 1/2 messages replayed from JetStream into rebuilt sessions",
            d.replayed.load(Relaxed),
        )?;
        m.counter(
            "cluster_caught_up_total",
            "QoS 1/2 messages routed here from JetStream after a gap in this node's NATS connection (first sightings only)",
            d.caught_up.load(Relaxed),
        )?;
    }

    // Files in chat (tus uploads).
    if let Some(files) = &state.plugins.files {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &files.counters;
        let totals = files.totals();
        m.gauge("files", "Finished files (each upload its own, content stored once)", totals.files)?;
        m.gauge("files_unfinished", "Uploads still receiving bytes", totals.unfinished)?;
        m.gauge(
            "files_counted_bytes",
            "Bytes quotas count: finished files at their length, unfinished uploads at the bytes received plus the chunk being written",
            totals.counted_bytes as usize,
        )?;
        m.gauge("files_stored_bytes", "Bytes in the content store (each content once)", totals.stored_bytes as usize)?;
        m.counters(
            "file_uploads_total",
            "Uploads by outcome: created, instant (complete at creation: content the owner uploaded before), completed, expired",
            &["outcome"],
            [
                (vec!["created"], c.created.load(Relaxed)),
                (vec!["instant"], c.instant.load(Relaxed)),
                (vec!["completed"], c.completed.load(Relaxed)),
                (vec!["expired"], c.expired.load(Relaxed)),
            ],
        )?;
        m.counters(
            "file_upload_refusals_total",
            "Upload requests refused, by reason: limit (413), checksum (460)",
            &["reason"],
            [(vec!["limit"], c.refused_limit.load(Relaxed)), (vec!["checksum"], c.refused_checksum.load(Relaxed))],
        )?;
        m.counter("file_upload_bytes_total", "Body bytes received by uploads", c.bytes_received.load(Relaxed))?;
    }

    // The offline push webhook.
    if let Some(push) = &state.plugins.push {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &push.counters;
        let (watching, queued) = push.depths();
        m.gauge("push_watching", "QoS 1/2 deliveries watched for their acknowledgement", watching)?;
        m.gauge("push_queue_depth", "Push events waiting to be POSTed to the webhook", queued)?;
        m.counters(
            "push_webhook_calls_total",
            "Calls of the push webhook, by result",
            &["result"],
            [(vec!["ok"], c.calls_ok.load(Relaxed)), (vec!["error"], c.calls_failed.load(Relaxed))],
        )?;
        m.counters(
            "push_events_lost_total",
            "Push events not delivered: dropped (push.max_queue reached, oldest first), dead_letter (push.max_attempts failed calls)",
            &["reason"],
            [(vec!["dropped"], c.dropped.load(Relaxed)), (vec!["dead_letter"], c.dead_letters.load(Relaxed))],
        )?;
        m.counters(
            "push_deliveries_total",
            "Watched deliveries by outcome: pushed (not acknowledged in time, or recipient offline), acknowledged, not_watched (push.max_pending reached)",
            &["outcome"],
            [
                (vec!["pushed"], c.queued.load(Relaxed)),
                (vec!["acknowledged"], c.acknowledged.load(Relaxed)),
                (vec!["not_watched"], c.not_watched.load(Relaxed)),
            ],
        )?;
    }

    // The canary.
    let canary = state.canary.results();
    m.gauges(
        "canary_up",
        "1 when the canary's last probe through the listener got its message back",
        &["listener"],
        canary.iter().map(|r| (vec![r.listener], i64::from(r.ok))),
    )?;
    let rtt = prometheus::GaugeVec::new(
        Opts::new("canary_rtt_seconds", "Round trip of the canary's last successful probe through the listener"),
        &["listener"],
    )?;
    for r in &canary {
        if let Some(ms) = r.rtt_ms {
            rtt.with_label_values(&[r.listener]).set(ms / 1000.0);
        }
    }
    m.register(rtt)?;
    m.counters(
        "canary_failures_total",
        "Canary probes that failed, by listener",
        &["listener"],
        canary.iter().map(|r| (vec![r.listener], r.failures)),
    )?;

    let mut out = Vec::new();
    TextEncoder::new().encode(&m.registry.gather(), &mut out)?;
    Ok(String::from_utf8(out).expect("the text encoder writes UTF-8"))
}
