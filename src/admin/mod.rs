//! The admin HTTP listener (`[http] bind`, default `127.0.0.1:18083`):
//! liveness, readiness, Prometheus metrics, the operators' API
//! (`/api/v1/...`, in `api.rs`) and the status page, for operators, their
//! tools and the app's own servers. Every route is described in
//! docs/openapi.yaml.
//!
//! Owns: the routes, who may call them (a Bearer key from `[http] api_keys`
//! or a superuser token; with no key configured, loopback peers only; the
//! status page's files are public, the data it shows is not), and the JSON
//! error shape `{"code", "message"}`.
//! Must never: block the runtime (listings are scans of in-memory maps, store
//! reads run on blocking threads, durability waits on the group commit), or
//! bypass the broker's admission (published messages go through
//! `Broker::publish` like any client's).

mod api;
mod metrics;

pub use metrics::render_metrics;

use crate::bridge::BridgeMonitor;
use crate::broker::Broker;
use crate::net::gate::ConnectionGate;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Every route the listener serves, as (method, path template): the list
/// docs/openapi.yaml must describe exactly (tests/admin_api.rs checks both
/// ways).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/status/status.js"),
    ("GET", "/status/status.css"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/api/v1/publish"),
    ("POST", "/api/v1/publish/batch"),
    ("GET", "/api/v1/clients"),
    ("GET", "/api/v1/clients/{client_id}"),
    ("DELETE", "/api/v1/clients/{client_id}"),
    ("GET", "/api/v1/subscriptions"),
    ("GET", "/api/v1/topics"),
    ("GET", "/api/v1/retained/{topic}"),
    ("DELETE", "/api/v1/retained/{topic}"),
    ("GET", "/api/v1/bridges"),
    ("GET", "/api/v1/stats"),
];

/// What the routes read.
pub struct AdminState {
    pub broker: Arc<Broker>,
    pub gate: Arc<ConnectionGate>,
    /// The configured bridges, in configuration order.
    pub bridges: Vec<BridgeMonitor>,
    /// The canary's last results (none while `[monitor]` is off).
    pub canary: Arc<crate::monitor::Canary>,
    /// The cluster, the push and the files, for their status and metrics.
    pub plugins: crate::plugins::Plugins,
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
    let protected = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .merge(api::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not take that method")
        })
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    // The status page's files hold no data: public, so a browser can load
    // the page and then ask for the API key the data needs.
    let page = Router::new()
        .route("/", get(|| async { static_file("text/html; charset=utf-8", STATUS_HTML) }))
        .route("/status/status.js", get(|| async { static_file("text/javascript; charset=utf-8", STATUS_JS) }))
        .route("/status/status.css", get(|| async { static_file("text/css; charset=utf-8", STATUS_CSS) }));
    page.merge(protected).layer(middleware::from_fn_with_state(state.clone(), check_host)).with_state(state)
}

/// DNS rebinding: every route answers only to an allowed `Host`
/// (`[http] allowed_hosts`, IP addresses, `localhost`); others get 421, so
/// a page on a rebound name never reaches the keyless loopback admission.
async fn check_host(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !crate::net::http::host_allowed(host, &state.broker.config().http.allowed_hosts) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            &format!("Host {:?} is not served here; add it to http.allowed_hosts", host.unwrap_or_default()),
        );
    }
    next.run(request).await
}

const STATUS_HTML: &str = include_str!("../../web/status/index.html");
const STATUS_JS: &str = include_str!("../../web/status/status.js");
const STATUS_CSS: &str = include_str!("../../web/status/status.css");

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `{"code": "...", "message": "..."}` with `status`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
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
            security.authenticate_bearer(Some(value), peer.ip().is_loopback(), peer.ip()).is_some_and(|i| i.superuser)
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

/// Ready when the store takes writes (a group-commit flush completes) and
/// the canary's probes get through every listener (slow still counts as
/// ready); otherwise 503 naming the failing part.
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    if let Err(e) = state.broker.sync().await {
        return error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", &format!("the store: {e}"));
    }
    let failing = state.canary.failing();
    if !failing.is_empty() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "canary_failing", &format!("canary: {}", failing.join("; ")));
    }
    // A node cut off from NATS still serves the clients it has, but it is
    // not the node to send new ones to: their messages would reach no other
    // node, and a QoS 1/2 acknowledgement would rest on this node alone.
    match &state.plugins.cluster {
        Some(cluster) if !cluster.is_connected() => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_disconnected",
            "cut off from NATS: serving this node's clients only, reconnecting",
        ),
        Some(cluster) if !cluster.durable.is_ready() => {
            Json(serde_json::json!({ "status": "degraded", "cluster": "no_jetstream" })).into_response()
        }
        Some(_) => Json(serde_json::json!({ "status": "ready", "cluster": "connected" })).into_response(),
        None => Json(serde_json::json!({ "status": "ready" })).into_response(),
    }
}
