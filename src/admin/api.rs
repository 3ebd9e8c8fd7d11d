//! The operators' API on the admin listener, `/api/v1/...`: publish (one or
//! a batch), clients (list, inspect, close), subscriptions, topics, retained
//! messages (read, clear), bridges, and the summary the status page polls.
//! Described route by route in docs/openapi.yaml.
//!
//! Owns: request parsing and validation (with `{"code", "message"}` errors
//! naming the problem) and the JSON shapes. Must never: publish around
//! `Broker::publish` (classes, retained limits and durability apply as for
//! any client), or answer a QoS ≥ 1 publish before the message is durable.

use super::{error, AdminState};
use crate::broker::{Ack, Closed, Message, MessageProperties, PublishOutcome, Session};
use crate::model::QoS;
use crate::topic::TopicName;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

type Shared = Arc<AdminState>;

/// Most messages one batch may carry.
const MAX_BATCH: usize = 1000;
/// Page size when none is asked for, and the most one page holds.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/publish", post(publish))
        .route("/api/v1/publish/batch", post(publish_batch))
        .route("/api/v1/clients", get(list_clients))
        .route("/api/v1/clients/{client_id}", get(get_client).delete(close_client))
        .route("/api/v1/subscriptions", get(list_subscriptions))
        .route("/api/v1/topics", get(list_topics))
        .route("/api/v1/retained/{*topic}", get(get_retained).delete(delete_retained))
        .route("/api/v1/bridges", get(list_bridges))
        .route("/api/v1/stats", get(stats))
}

/// An error answer: status, code and message.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1, &self.2)
    }
}

fn bad_request(what: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", what.into())
}

fn from_json_rejection(r: JsonRejection) -> ApiError {
    ApiError(r.status(), "bad_request", r.body_text())
}

fn from_query_rejection(r: QueryRejection) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
}

// ---- publish -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    properties: PublishProperties,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    #[default]
    Plain,
    Base64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishProperties {
    content_type: Option<String>,
    response_topic: Option<String>,
    /// Encoded like the payload (`encoding`).
    correlation_data: Option<String>,
    /// Name → value; sent to MQTT 5 subscribers in name order.
    #[serde(default)]
    user_properties: BTreeMap<String, String>,
    message_expiry_secs: Option<u32>,
}

fn decode(encoding: Encoding, text: String, what: &str) -> Result<bytes::Bytes, ApiError> {
    match encoding {
        Encoding::Plain => Ok(text.into()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Into::into)
            .map_err(|e| bad_request(format!("{what} is not valid base64: {e}"))),
    }
}

/// Checks a request and makes the message, as a client's PUBLISH would be.
fn to_message(state: &AdminState, request: PublishRequest) -> Result<Message, ApiError> {
    let topic = TopicName::new(&request.topic).map_err(|e| bad_request(format!("topic {:?}: {e}", request.topic)))?;
    if topic.as_str().starts_with('$') {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "reserved_topic",
            format!("topics starting with $ are the broker's own: {:?}", request.topic),
        ));
    }
    let qos =
        QoS::from_u8(request.qos).ok_or_else(|| bad_request(format!("qos must be 0, 1 or 2, not {}", request.qos)))?;
    let payload = decode(request.encoding, request.payload, "payload")?;
    let max = state.broker.config().mqtt.max_packet_size as usize;
    if payload.len() > max {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the payload is {} bytes; mqtt.max_packet_size is {max}", payload.len()),
        ));
    }
    let props = request.properties;
    if let Some(response_topic) = &props.response_topic {
        TopicName::new(response_topic).map_err(|e| bad_request(format!("response_topic {response_topic:?}: {e}")))?;
    }
    let correlation_data =
        props.correlation_data.map(|c| decode(request.encoding, c, "correlation_data")).transpose()?;
    let mut message = Message::new(topic, payload, qos, request.retain);
    message.expires_at_ms = props.message_expiry_secs.map(|s| crate::clock::now_ms() + u64::from(s) * 1000);
    message.properties = MessageProperties {
        payload_format_indicator: None,
        content_type: props.content_type,
        response_topic: props.response_topic,
        correlation_data,
        user_properties: props.user_properties.into_iter().collect(),
    };
    Ok(message)
}

/// Publishes through the broker's one way in (as a client's PUBLISH is:
/// class admission, routing, storage, the cluster) and says what the answer
/// will be once [`acknowledged`] waited for the broker's one acknowledgement.
async fn publish_only(state: &AdminState, message: Message) -> Result<(Value, PublishOutcome), ApiError> {
    state.broker.stats.received(crate::auth::Transport::Http, message.qos, message.payload.len());
    state.broker.stats.topics.publish(message.topic.as_str());
    let qos = message.qos;
    let mut outcome = state.broker.publish_paced(message).await;
    if qos == QoS::AtMostOnce {
        // Nothing is promised for QoS 0: no flush, no cluster acknowledgement.
        outcome.must_sync = false;
        outcome.store_failed = false;
    }
    Ok((published(&outcome), outcome))
}

/// The broker's one acknowledgement, as an HTTP answer: 200 only when the
/// client core would have answered PUBACK 0x00/0x10 (durable on this node
/// and, in a cluster, held by JetStream); otherwise the error says why.
async fn acknowledged(state: &AdminState, answer: Value, outcome: PublishOutcome) -> Result<Value, ApiError> {
    match state.broker.acknowledge(outcome).await {
        Ack::Accepted { .. } => Ok(answer),
        Ack::Refused(refusal) => {
            let status = match refusal {
                crate::broker::Refusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                crate::broker::Refusal::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                crate::broker::Refusal::RetainedQuota => StatusCode::INSUFFICIENT_STORAGE,
            };
            Err(ApiError(status, "refused", refusal.text().into()))
        }
        Ack::StoreFailed => Err(store_failed("the store could not make the message durable")),
        Ack::NotReplicated => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_replicated",
            "the cluster's store (JetStream) did not hold the message in time; it is not acknowledged, publish it again"
                .into(),
        )),
    }
}

fn store_failed(what: &str) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, "store_failed", what.into())
}

fn published(outcome: &PublishOutcome) -> Value {
    // A string: JSON numbers lose precision above 2^53.
    json!({ "message_id": outcome.message_id.to_string(), "deliveries": outcome.deliveries, "shed": outcome.shed })
}

async fn publish(
    State(state): State<Shared>,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body.map_err(from_json_rejection)?;
    let message = to_message(&state, request)?;
    let (answer, outcome) = publish_only(&state, message).await?;
    // Like a PUBACK: answered once the broker's acknowledgement holds.
    Ok(Json(acknowledged(&state, answer, outcome).await?))
}

/// Many messages, published in order; their acknowledgements are awaited
/// together (one flush, by group commit, makes every QoS ≥ 1 one durable
/// before the answer). Each message has its own result.
async fn publish_batch(
    State(state): State<Shared>,
    body: Result<Json<Vec<PublishRequest>>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(requests) = body.map_err(from_json_rejection)?;
    if requests.len() > MAX_BATCH {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{} messages; a batch holds at most {MAX_BATCH}", requests.len()),
        ));
    }
    let mut published = Vec::with_capacity(requests.len());
    for request in requests {
        published.push(match to_message(&state, request) {
            Ok(message) => publish_only(&state, message).await,
            Err(e) => Err(e),
        });
    }
    let results = futures_util::future::join_all(published.into_iter().map(|p| async {
        match p {
            Ok((answer, outcome)) => acknowledged(&state, answer, outcome).await,
            Err(e) => Err(e),
        }
    }))
    .await;
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(answer) => answer,
            Err(ApiError(status, code, message)) => {
                json!({ "error": { "status": status.as_u16(), "code": code, "message": message } })
            }
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

// ---- clients -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientQuery {
    transport: Option<String>,
    user: Option<String>,
    client_id_prefix: Option<String>,
    connected: Option<bool>,
    page: Option<usize>,
    limit: Option<usize>,
}

/// `(skip, limit)` from 1-based `page` and `limit`.
fn paging(page: Option<usize>, limit: Option<usize>) -> Result<(usize, usize, usize), ApiError> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if page == 0 || limit == 0 || limit > MAX_LIMIT {
        return Err(bad_request(format!("page starts at 1; limit is 1 to {MAX_LIMIT}")));
    }
    Ok(((page - 1).saturating_mul(limit), limit, page))
}

fn client_json(session: &Session, with_subscriptions: bool) -> Value {
    let attachment = session.attachment();
    let load = session.load();
    let mut client = json!({
        "client_id": &*session.client_id,
        "user": session.user.as_deref(),
        "connected": attachment.is_some(),
        "transport": attachment.as_ref().map(|a| a.transport.label()),
        "protocol": attachment.as_ref().map(|a| a.protocol),
        "peer": attachment.as_ref().and_then(|a| a.peer).map(|p| p.to_string()),
        "connected_at_ms": attachment.as_ref().map(|a| a.connected_at_ms),
        "keep_alive_secs": attachment.as_ref().map(|a| a.keep_alive_secs),
        "disconnected_at_ms": session.disconnected_at_ms(),
        "session_expiry_secs": session.expiry_secs(),
        "subscriptions": session.subscription_count(),
        "queued": load.queued,
        "queued_bytes": load.queued_bytes,
        "inflight": load.inflight,
    });
    if with_subscriptions {
        let mut subscriptions = session.subscriptions();
        subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
        client["subscriptions"] =
            subscriptions.iter().map(|(f, r)| subscription_json(&session.client_id, f, r)).collect();
    }
    client
}

fn subscription_json(client_id: &str, filter: &str, record: &crate::broker::SubscriptionRecord) -> Value {
    json!({
        "client_id": client_id,
        "filter": filter,
        "qos": record.options.qos as u8,
        "no_local": record.options.no_local,
        "retain_as_published": record.options.retain_as_published,
        "retain_handling": record.options.retain_handling,
        "identifier": record.identifier,
    })
}

async fn list_clients(
    State(state): State<Shared>,
    query: Result<Query<ClientQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(from_query_rejection)?;
    let (skip, limit, page) = paging(q.page, q.limit)?;
    let matching: Vec<Arc<Session>> = state
        .broker
        .sessions_snapshot()
        .into_iter()
        .filter(|s| q.client_id_prefix.as_deref().is_none_or(|p| s.client_id.starts_with(p)))
        .filter(|s| q.user.as_deref().is_none_or(|u| s.user.as_deref() == Some(u)))
        .filter(|s| {
            let attachment = if q.transport.is_some() || q.connected.is_some() { s.attachment() } else { None };
            q.connected.is_none_or(|c| attachment.is_some() == c)
                && q.transport.as_deref().is_none_or(|t| attachment.as_ref().is_some_and(|a| a.transport.label() == t))
        })
        .collect();
    let data: Vec<Value> = matching.iter().skip(skip).take(limit).map(|s| client_json(s, false)).collect();
    Ok(Json(json!({ "data": data, "meta": { "page": page, "limit": limit, "count": matching.len() } })))
}

fn no_such_client(client_id: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "not_found", format!("no session with client id {client_id:?}"))
}

async fn get_client(State(state): State<Shared>, Path(client_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let session = state.broker.session(&client_id).ok_or_else(|| no_such_client(&client_id))?;
    Ok(Json(client_json(&session, true)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseQuery {
    #[serde(default)]
    discard_session: bool,
}

/// Closes the client's connection (MQTT 5: DISCONNECT 0x98); with
/// `discard_session=true` its session ends too.
async fn close_client(
    State(state): State<Shared>,
    Path(client_id): Path<String>,
    query: Result<Query<CloseQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(from_query_rejection)?;
    match state.broker.close_client(&client_id, q.discard_session) {
        Closed::Connection | Closed::SessionDiscarded => Ok(StatusCode::NO_CONTENT.into_response()),
        Closed::NotConnected => Err(ApiError(
            StatusCode::CONFLICT,
            "not_connected",
            format!("{client_id:?} is not connected; add ?discard_session=true to end its session"),
        )),
        Closed::NoSuchClient => Err(no_such_client(&client_id)),
    }
}

// ---- subscriptions, topics, retained ----------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionQuery {
    client_id: Option<String>,
    filter: Option<String>,
    page: Option<usize>,
    limit: Option<usize>,
}

async fn list_subscriptions(
    State(state): State<Shared>,
    query: Result<Query<SubscriptionQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(from_query_rejection)?;
    let (skip, limit, page) = paging(q.page, q.limit)?;
    let sessions = match &q.client_id {
        Some(id) => state.broker.session(id).into_iter().collect(),
        None => state.broker.sessions_snapshot(),
    };
    let mut count = 0usize;
    let mut data = Vec::new();
    for session in sessions {
        let mut subscriptions = session.subscriptions();
        subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
        for (filter, record) in subscriptions {
            if q.filter.as_deref().is_some_and(|f| f != filter) {
                continue;
            }
            if count >= skip && data.len() < limit {
                data.push(subscription_json(&session.client_id, &filter, &record));
            }
            count += 1;
        }
    }
    Ok(Json(json!({ "data": data, "meta": { "page": page, "limit": limit, "count": count } })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

/// Topics with a retained message or history, in byte order.
async fn list_topics(
    State(state): State<Shared>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(from_query_rejection)?;
    let (_, limit, _) = paging(None, q.limit)?;
    let retained = state.broker.retained_topics(&q.prefix, limit);
    let broker = state.broker.clone();
    let prefix = q.prefix.clone();
    let history = tokio::task::spawn_blocking(move || broker.history_topics(&prefix, limit))
        .await
        .map_err(|e| store_failed(&format!("the store: {e}")))?
        .map_err(|e| store_failed(&format!("the store: {e}")))?;
    let mut topics: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for topic in retained {
        topics.entry(topic).or_default().0 = true;
    }
    for topic in history {
        topics.entry(topic).or_default().1 = true;
    }
    let data: Vec<Value> = topics
        .into_iter()
        .take(limit)
        .map(|(topic, (retained, history))| json!({ "topic": topic, "retained": retained, "history": history }))
        .collect();
    Ok(Json(json!({ "data": data })))
}

fn topic_from_path(topic: &str) -> Result<TopicName, ApiError> {
    TopicName::new(topic).map_err(|e| bad_request(format!("topic {topic:?}: {e}")))
}

async fn get_retained(State(state): State<Shared>, Path(topic): Path<String>) -> Result<Json<Value>, ApiError> {
    let name = topic_from_path(&topic)?;
    let message = state
        .broker
        .retained_message(&name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no retained message on {topic:?}")))?;
    let (payload, encoding) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (text.to_string(), "plain"),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(&message.payload), "base64"),
    };
    Ok(Json(json!({
        "topic": message.topic.as_str(),
        "payload": payload,
        "encoding": encoding,
        "qos": message.qos as u8,
        "message_id": message.id.to_string(),
        "timestamp_ms": message.timestamp_ms,
        "expires_at_ms": message.expires_at_ms,
        "properties": {
            "content_type": message.properties.content_type,
            "response_topic": message.properties.response_topic,
            "user_properties": message.properties.user_properties.iter()
                .map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        },
    })))
}

async fn delete_retained(State(state): State<Shared>, Path(topic): Path<String>) -> Result<Response, ApiError> {
    let name = topic_from_path(&topic)?;
    match state.broker.clear_retained(&name).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no retained message on {topic:?}"))),
        Err(e) => Err(store_failed(&format!("the store: {e}"))),
    }
}

// ---- bridges and the summary -----------------------------------------------

fn bridges_json(state: &AdminState) -> Vec<Value> {
    state
        .bridges
        .iter()
        .map(|b| {
            let s = b.status();
            json!({
                "name": s.name, "address": s.address, "connected": s.connected, "last_error": s.last_error,
                "connects": s.connects, "messages_in": s.messages_in, "messages_out": s.messages_out,
                "queue_depth": s.queue_depth, "inflight": s.inflight,
            })
        })
        .collect()
}

async fn list_bridges(State(state): State<Shared>) -> Json<Value> {
    Json(json!({ "data": bridges_json(&state) }))
}

/// The status page's summary: totals (counters since start; the page makes
/// rates of them), top topics, bridges, canary results.
async fn stats(State(state): State<Shared>) -> Json<Value> {
    use crate::broker::stats::total;
    let broker = &state.broker;
    let sessions = broker.session_summary();
    let mut by_transport: BTreeMap<&str, usize> =
        ["mqtt", "ws-mqtt", "ws-proto", "bridge"].into_iter().map(|t| (t, 0)).collect();
    for ((transport, _), n) in &sessions.connections {
        *by_transport.entry(transport).or_default() += n;
    }
    let (online, offline, queued, inflight) = (sessions.online, sessions.offline, sessions.queued, sessions.inflight);
    let stats = &broker.stats;
    let top: Vec<Value> = stats
        .topics
        .top(10)
        .into_iter()
        .map(|(topic, rate)| json!({ "topic": topic, "messages_per_sec": (rate * 10.0).round() / 10.0 }))
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": broker.started.elapsed().as_secs(),
        "connections": { "total": online, "by_transport": by_transport },
        "sessions": { "online": online, "offline": offline },
        "subscriptions": broker.subscription_count(),
        "messages": { "received": total(&stats.messages_received()), "sent": total(&stats.messages_sent()) },
        "bytes": { "received": total(&stats.bytes_received()), "sent": total(&stats.bytes_sent()) },
        "retained": { "count": broker.retained_count(), "bytes": broker.retained_bytes() },
        "queued": queued,
        "inflight": inflight,
        "top_topics": top,
        "bridges": bridges_json(&state),
        "canary": state.canary.results(),
    }))
}
