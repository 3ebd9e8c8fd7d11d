//! The admin HTTP listener (`[http] bind`, default `127.0.0.1:18083`):
//! liveness, readiness and Prometheus metrics, for operators and their tools.
//!
//! Owns: the routes, who may call them (a Bearer key from `[http] api_keys`
//! or a superuser token; with no key configured, loopback peers only), the
//! JSON error shape `{"code", "message"}`, and the metric names.
//! Must never: change broker state; block the runtime (metrics are read from
//! counters and small scans when scraped, the readiness check waits on the
//! store's group commit, off the runtime's threads).

use crate::broker::Broker;
use crate::net::gate::ConnectionGate;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// What the routes read.
pub struct AdminState {
    pub broker: Arc<Broker>,
    pub gate: Arc<ConnectionGate>,
}

/// Serves the admin routes on `listener` until `stop` turns true.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let app = router(state);
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    };
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "admin listener failed");
    }
}

fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// `{"code": "...", "message": "..."}` with `status`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(serde_json::json!({ "code": code, "message": message }))).into_response()
}

/// A superuser's Bearer key or token; without one, a loopback peer when no
/// key is configured. Everything else: 401.
async fn authorize(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let security = state.broker.security();
    let allowed = match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        Some(Ok(value)) => {
            security.authenticate_bearer(Some(value), peer.ip().is_loopback()).is_some_and(|i| i.superuser)
        }
        Some(Err(_)) => false,
        None => peer.ip().is_loopback() && !security.has_api_keys(),
    };
    if !allowed {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer KEY with a key from [http] api_keys (or a superuser token)",
        );
    }
    next.run(request).await
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready when the store takes writes: a group-commit flush completes.
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    match state.broker.sync().await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", &format!("the store: {e}")),
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    match render_metrics(&state) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "metrics", &e.to_string()),
    }
}

/// The metrics, read from the broker's counters at scrape time, in
/// Prometheus's text format. Names and meanings: docs/operations.md
/// ("Metrics").
pub fn render_metrics(state: &AdminState) -> prometheus::Result<String> {
    let broker = &state.broker;
    let registry = Registry::new_custom(Some("starling".into()), None)?;
    let gauge = |name: &str, help: &str, value: usize| -> prometheus::Result<()> {
        let g = IntGauge::new(name, help)?;
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(Box::new(g))
    };
    let counter = |name: &str, help: &str, value: u64| -> prometheus::Result<()> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        registry.register(Box::new(c))
    };
    gauge("sessions", "Sessions held, connected or not", broker.session_count())?;
    gauge("clients_connected", "Sessions with a live connection", broker.connected_count())?;
    gauge("retained_messages", "Retained messages held", broker.retained_count())?;
    gauge("retained_bytes", "Bytes (payloads and topics) of the retained messages", broker.retained_bytes())?;
    gauge("pending_timers", "Will-delay and session-expiry timers armed", broker.pending_timers())?;
    gauge("uptime_seconds", "Seconds since the broker started", broker.started.elapsed().as_secs() as usize)?;
    counter("auth_failures_total", "Refused credentials and tokens", broker.security().failures())?;
    counter("publishes_denied_total", "Publishes the ACL refused", broker.security().denied_publishes())?;
    counter(
        "connections_refused_per_ip_total",
        "Connections refused at accept by the per-IP limits",
        state.gate.refused(),
    )?;
    let stats = &broker.stats;
    counter(
        "messages_received_total",
        "PUBLISHes accepted from clients (all transports)",
        stats.messages_received.get(),
    )?;
    counter("bytes_received_total", "Payload bytes of the messages received", stats.bytes_received.get())?;
    counter("messages_sent_total", "Deliveries written to clients (all transports)", stats.messages_sent.get())?;
    counter("bytes_sent_total", "Payload and topic bytes of the deliveries sent", stats.bytes_sent.get())?;
    counter("connects_total", "Connections admitted (after authentication)", stats.connects.get())?;
    counter("disconnects_total", "Admitted connections that ended", stats.disconnects.get())?;
    let (shed, refused) = broker.class_counters();
    counter("class_messages_shed_total", "Messages shed by topic-class sampling", shed)?;
    counter("class_publishes_refused_total", "Publishes refused by topic-class limits", refused)?;
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8(out).expect("the text encoder writes UTF-8"))
}
