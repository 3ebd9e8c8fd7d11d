//! `/files/` and `/api/v1/files` on the WebSocket port, served by hyper:
//! tus 1.0 (core, creation, creation-with-upload, expiration, checksum,
//! termination) for uploads, `GET /files/{id}` for downloads (ranges,
//! ETag), and the content lookup apps ask before uploading.
//!
//! The WebSocket port reads one request head itself to route by path; a
//! files request is handed here with that head put back in front of the
//! stream, and hyper serves it (one request per connection: every answer
//! says `Connection: close`, so the port's other paths never see a second
//! request on a connection they did not route).
//!
//! Owns: the HTTP mapping (methods, headers, statuses, CORS), who is asking
//! (the `Authorization` header: a token or API key as `Bearer`, a username
//! and password as `Basic`, or none where anonymous clients are allowed),
//! and streaming bodies to and from disk (never a whole chunk in memory).
//! Must never: keep bytes in the record's offset that were not fsynced first.

use super::{tus, FileError, FileRecord, Files, Requester, WriteLease};
use crate::auth::{AuthRequest, Credentials, Transport};
use crate::broker::Broker;
use crate::client::Peer;
use crate::clock::now_ms;
use base64::Engine;
use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::io::SeekFrom;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWrite, AsyncWriteExt, ReadBuf};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Bytes of an upload written between two commits (fsync + record): what a
/// crash can cost a client, and what a commit costs the disk.
pub const COMMIT_EVERY: u64 = 2 * 1024 * 1024;

/// Headers a browser may read from our answers (CORS).
const EXPOSED: &str = "Location, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Tus-Resumable, \
                       Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, Content-Range, ETag";
/// Headers a browser may send (CORS preflight).
const ALLOWED: &str = "Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Metadata, Upload-Offset, \
                       Upload-Checksum, Upload-Defer-Length, Upload-Concat, X-HTTP-Method-Override, X-Requested-With, \
                       Range, If-None-Match";

/// Whether the WebSocket port hands this path to [`serve`].
pub fn handles(path: &str) -> bool {
    path == "/files" || path.starts_with("/files/") || path == "/api/v1/files"
}

/// Serves one HTTP request on `stream`, whose first bytes (`head`) were
/// already read by the port's router.
pub async fn serve<S>(stream: S, head: Bytes, peer: Peer, broker: Arc<Broker>, files: Arc<Files>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let activity = Arc::new(AtomicU64::new(now_ms()));
    let io = Rewound { head, inner: stream, activity: activity.clone() };
    let idle = Duration::from_secs(files.config().idle_timeout_secs);
    let context = Arc::new(Served { broker, files, peer });
    let service = hyper::service::service_fn(move |request| {
        let context = context.clone();
        async move { Ok::<_, Infallible>(handle(request, &context).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    // A client that stops reading a download (or sending an upload) for
    // `idle_timeout_secs` loses the connection: it must not hold its task.
    let watchdog = async {
        loop {
            tokio::time::sleep(idle / 4).await;
            if now_ms().saturating_sub(activity.load(Ordering::Relaxed)) > idle.as_millis() as u64 {
                return;
            }
        }
    };
    tokio::select! {
        result = connection => if let Err(e) = result {
            tracing::debug!(error = %e, "files: connection ended with an error");
        },
        () = watchdog => tracing::debug!("files: connection idle; closed"),
    }
}

struct Served {
    broker: Arc<Broker>,
    files: Arc<Files>,
    peer: Peer,
}

async fn handle(request: Request<Incoming>, context: &Served) -> Response<Body> {
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(origin) = &origin {
        let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok());
        if let Err(why) =
            crate::net::http::origin_allowed(origin, host, &context.broker.config().websocket.allowed_origins)
        {
            return text(StatusCode::FORBIDDEN, &why);
        }
    }
    let preflight = request.method() == Method::OPTIONS;
    let mut response = route(request, context).await;
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        }
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, GET, HEAD, PATCH, DELETE, OPTIONS"),
            );
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED));
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
        }
    }
    response
}

async fn route(request: Request<Incoming>, context: &Served) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let path = parts.uri.path();
    // Some proxies and browsers cannot send PATCH or DELETE (tus core).
    let method = match headers.get("x-http-method-override").and_then(|v| v.to_str().ok()) {
        Some(m) if parts.method == Method::POST => Method::from_bytes(m.as_bytes()).unwrap_or(Method::POST),
        _ => parts.method.clone(),
    };
    let files = &context.files;
    if method == Method::OPTIONS {
        return tus_response(StatusCode::NO_CONTENT, files).body(empty()).expect("valid response");
    }
    let requester = match who_asks(headers, context).await {
        Ok(requester) => requester,
        Err(response) => return response,
    };
    if path == "/api/v1/files" {
        return match method {
            Method::GET => lookup(parts.uri.query().unwrap_or(""), &requester, files),
            _ => json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        };
    }
    let id = path.strip_prefix("/files").unwrap_or_default().trim_start_matches('/');
    let tus_request = matches!(method, Method::POST | Method::HEAD | Method::PATCH | Method::DELETE);
    if tus_request && headers.get("tus-resumable").and_then(|v| v.to_str().ok()) != Some(tus::VERSION) {
        let mut response = text(StatusCode::PRECONDITION_FAILED, "send Tus-Resumable: 1.0.0 (the only version served)");
        response.headers_mut().insert("tus-version", HeaderValue::from_static(tus::VERSION));
        return response;
    }
    if id.is_empty() {
        return match method {
            Method::POST => create(headers, body, &requester, context).await,
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "POST /files/ creates an upload (tus 1.0)"),
        };
    }
    if !tus::valid_id(id) {
        return text(StatusCode::NOT_FOUND, "no such file");
    }
    match method {
        Method::GET => download(headers, &requester, id, files).await,
        Method::HEAD => head(&requester, id, files),
        Method::PATCH => patch(headers, body, &requester, id, context).await,
        Method::DELETE => match files.terminate(&requester, id).await {
            Ok(()) => tus_response(StatusCode::NO_CONTENT, files).body(empty()).expect("valid response"),
            Err(e) => failure(&e, files),
        },
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "files take GET, HEAD, PATCH, DELETE and OPTIONS"),
    }
}

/// Who sent the request, from its `Authorization` header (401 when it is
/// wrong, or missing where anonymous clients are not allowed).
async fn who_asks(headers: &HeaderMap, context: &Served) -> Result<Requester, Response<Body>> {
    let security = context.broker.security();
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let local = context.peer.local_listener;
    let identity = match authorization.and_then(|a| a.strip_prefix("Basic ").or_else(|| a.strip_prefix("basic "))) {
        Some(encoded) => {
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).unwrap_or_default();
            let decoded = String::from_utf8_lossy(&decoded);
            let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
            let credentials = Credentials {
                username: Some(user.to_string()),
                password: Some(Bytes::copy_from_slice(password.as_bytes())),
            };
            let request = AuthRequest {
                client_id: "",
                credentials: &credentials,
                peer: context.peer.addr,
                transport: Transport::Http,
                protocol: "http",
                local_listener: local,
                certificate_user: context.peer.certificate_user.as_deref(),
            };
            security.authenticate(&request).await.ok()
        }
        None => security.authenticate_bearer(authorization, local, context.peer.addr.ip()),
    };
    // Anonymous ownership is by IP address: off unless configured.
    let anonymous_refused =
        identity.as_ref().is_some_and(|i| i.user_name().is_none()) && !context.files.config().allow_anonymous;
    match identity.filter(|_| !anonymous_refused) {
        Some(identity) => Ok(Requester {
            owner: match identity.user_name() {
                Some(user) => format!("user:{user}"),
                None => format!("ip:{}", context.peer.addr.ip()),
            },
            superuser: identity.superuser,
        }),
        None => {
            let mut response = text(
                StatusCode::UNAUTHORIZED,
                if anonymous_refused {
                    "files need a signed-in user (anonymous uploads are off: files.allow_anonymous): send \
                     Authorization: Bearer TOKEN, or Basic with a username and password"
                } else {
                    "send Authorization: Bearer TOKEN (or an API key), or Basic with a username and password"
                },
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer, Basic realm=\"starling\""));
            Err(response)
        }
    }
}

/// `POST /files/`: creation, with an optional first chunk (creation-with-upload).
async fn create(headers: &HeaderMap, body: Incoming, requester: &Requester, context: &Served) -> Response<Body> {
    let files = &context.files;
    if headers.contains_key("upload-defer-length") {
        return text(StatusCode::BAD_REQUEST, "Upload-Defer-Length is not supported: send Upload-Length");
    }
    let Some(length) = header_u64(headers, "upload-length") else {
        return text(StatusCode::BAD_REQUEST, "send Upload-Length: the file's size in bytes");
    };
    let metadata = headers.get("upload-metadata").and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut record = match files.create(requester, length, metadata, now_ms()).await {
        Ok(record) => record,
        Err(e) => return failure(&e, files),
    };
    tracing::debug!(
        id = record.id,
        owner = requester.owner,
        length,
        instant = record.is_complete(),
        "files: upload created"
    );
    let with_upload = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) == Some(tus::OFFSET_OCTET_STREAM);
    if (with_upload || record.length == 0) && !record.is_complete() {
        // creation-with-upload: the body is the first chunk. An empty file
        // is complete at once (its "last byte" never comes).
        let (lease, started) = match files.begin_write(requester, &record.id, 0, now_ms()) {
            Ok(pair) => pair,
            Err(e) => return failure(&e, files),
        };
        let appended = if record.length == 0 {
            files.finish(&lease).await
        } else {
            append(headers, body, lease, started, None, files).await
        };
        match appended {
            Ok(updated) => record = updated,
            Err(e) => {
                // The upload exists; the client HEADs it and resumes.
                tracing::debug!(id = record.id, error = e.message(), "files: first chunk not taken whole");
                record = files.get(requester, &record.id, now_ms()).unwrap_or(record);
            }
        }
    }
    let mut builder = tus_response(StatusCode::CREATED, files)
        .header(header::LOCATION, format!("/files/{}", record.id))
        .header("upload-offset", record.offset);
    if !record.is_complete() {
        builder = builder.header("upload-expires", tus::http_date(record.expires_ms));
    }
    builder.body(empty()).expect("valid response")
}

/// `HEAD /files/{id}`: where an upload stands (its owner only).
fn head(requester: &Requester, id: &str, files: &Files) -> Response<Body> {
    let record = match files.get(requester, id, now_ms()) {
        Ok(record) if record.owner == requester.owner || requester.superuser => record,
        Ok(_) => return failure(&FileError::NotFound, files),
        Err(e) => return failure(&e, files),
    };
    let mut builder = tus_response(StatusCode::OK, files)
        .header("upload-offset", record.offset)
        .header("upload-length", record.length)
        .header(header::CACHE_CONTROL, "no-store");
    if !record.metadata.is_empty() {
        builder = builder.header("upload-metadata", record.metadata.as_str());
    }
    if !record.is_complete() {
        builder = builder.header("upload-expires", tus::http_date(record.expires_ms));
    }
    builder.body(empty()).expect("valid response")
}

/// `PATCH /files/{id}`: appends the body at `Upload-Offset`.
async fn patch(
    headers: &HeaderMap,
    body: Incoming,
    requester: &Requester,
    id: &str,
    context: &Served,
) -> Response<Body> {
    let files = &context.files;
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some(tus::OFFSET_OCTET_STREAM) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH bodies are Content-Type: application/offset+octet-stream",
        );
    }
    let Some(offset) = header_u64(headers, "upload-offset") else {
        return text(StatusCode::BAD_REQUEST, "send Upload-Offset: where this chunk starts");
    };
    let checksum = match headers.get("upload-checksum").map(|v| v.to_str().unwrap_or("")) {
        Some(value) => match tus::parse_checksum(value) {
            Ok(checksum) => Some(checksum),
            Err(why) => return text(StatusCode::BAD_REQUEST, &why),
        },
        None => None,
    };
    let (lease, record) = match files.begin_write(requester, id, offset, now_ms()) {
        Ok(pair) => pair,
        Err(e) => return failure(&e, files),
    };
    match append(headers, body, lease, record, checksum, files).await {
        Ok(record) => {
            let mut builder = tus_response(StatusCode::NO_CONTENT, files).header("upload-offset", record.offset);
            if !record.is_complete() {
                builder = builder.header("upload-expires", tus::http_date(record.expires_ms));
            }
            builder.body(empty()).expect("valid response")
        }
        Err(e) => failure(&e, files),
    }
}

/// Streams `body` to the upload's file at its offset, committing (fsync,
/// then the record) every [`COMMIT_EVERY`] bytes, or, with a checksum, only
/// once the whole chunk proved right. Finishes the upload when its last
/// byte arrived. Returns the record as it now stands.
async fn append(
    headers: &HeaderMap,
    mut body: Incoming,
    lease: WriteLease,
    record: FileRecord,
    checksum: Option<(tus::Algorithm, Vec<u8>)>,
    files: &Files,
) -> Result<FileRecord, FileError> {
    let start = record.offset;
    if let Some(declared) = header_u64(headers, header::CONTENT_LENGTH.as_str()) {
        if start + declared > record.length {
            return Err(FileError::TooLarge(format!(
                "{declared} bytes at offset {start} would pass Upload-Length {}",
                record.length
            )));
        }
    }
    let io = |what: &'static str| move |e: std::io::Error| super::io_error(what, e);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(files.partial_path(&lease.id))
        .await
        .map_err(io("cannot open the upload's file"))?;
    // Bytes past the durable offset (written before a crash) are dropped.
    file.set_len(start).await.map_err(io("cannot cut the upload's file"))?;
    file.seek(SeekFrom::Start(start)).await.map_err(io("cannot seek in the upload's file"))?;
    let mut hasher = checksum.as_ref().map(|(algorithm, _)| tus::Hasher::new(*algorithm));
    let idle = Duration::from_secs(files.config().idle_timeout_secs);
    let (mut written, mut committed) = (start, start);
    let mut current = record;
    let ended: Result<(), FileError> = loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                break Err(FileError::BadRequest(
                    "no bytes for files.idle_timeout_secs: send the rest in a new PATCH".into(),
                ))
            }
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(FileError::BadRequest(format!("the request body broke off: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(mut data) = frame.into_data() else { continue };
        if written + data.len() as u64 > current.length {
            break Err(FileError::TooLarge(format!("more bytes than Upload-Length {}", current.length)));
        }
        if let Some(hasher) = &mut hasher {
            hasher.update(&data);
        }
        written += data.len() as u64;
        files.counters.bytes_received.fetch_add(data.len() as u64, Ordering::Relaxed);
        while data.has_remaining() {
            let n = file.write(data.chunk()).await.map_err(io("cannot write the upload's file"))?;
            data.advance(n);
        }
        if hasher.is_none() && written - committed >= COMMIT_EVERY {
            file.flush().await.map_err(io("cannot write the upload's file"))?;
            file.sync_data().await.map_err(io("cannot sync the upload's file"))?;
            current = files.commit_offset(&lease, written, now_ms()).await?;
            committed = written;
        }
    };
    let mut ended = ended;
    if let (Some(hasher), Some((_, expected))) = (hasher, checksum.as_ref()) {
        // A chunk with a checksum counts whole or not at all.
        if ended.is_ok() && hasher.finish() != *expected {
            ended = Err(FileError::Checksum("the chunk does not match Upload-Checksum: it was discarded".into()));
        }
        if let Err(e) = ended {
            let _ = file.set_len(start).await;
            return Err(e);
        }
    }
    if written > committed {
        file.flush().await.map_err(io("cannot write the upload's file"))?;
        file.sync_data().await.map_err(io("cannot sync the upload's file"))?;
        current = files.commit_offset(&lease, written, now_ms()).await?;
    }
    drop(file);
    ended?;
    if current.offset == current.length {
        current = files.finish(&lease).await?;
    }
    Ok(current)
}

/// `GET /files/{id}`: the file's bytes (or a range of them).
async fn download(headers: &HeaderMap, requester: &Requester, id: &str, files: &Files) -> Response<Body> {
    let record = match files.get(requester, id, now_ms()) {
        Ok(record) => record,
        Err(e) => return failure(&e, files),
    };
    let Some(sha) = record.sha256.as_deref() else {
        return text(StatusCode::CONFLICT, "the upload is not finished yet");
    };
    let etag = format!("\"{sha}\"");
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(&etag)) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .body(empty())
            .expect("valid");
    }
    let content_type = tus::safe_content_type(record.mime.as_deref());
    let range = tus::parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), record.length);
    let (status, start, len) = match range {
        tus::Range::Whole => (StatusCode::OK, 0, record.length),
        tus::Range::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        tus::Range::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", record.length))
                .body(empty())
                .expect("valid response")
        }
    };
    let mut file = match tokio::fs::File::open(files.blob_path(sha)).await {
        Ok(file) => file,
        Err(e) => return failure(&super::io_error("cannot open a stored file", e), files),
    };
    if start > 0 {
        if let Err(e) = file.seek(SeekFrom::Start(start)).await {
            return failure(&super::io_error("cannot seek in a stored file", e), files);
        }
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(tokio::io::AsyncReadExt::take(file, len), 64 * 1024)
        .map(|chunk| chunk.map(Frame::data));
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type.as_str())
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::CONTENT_DISPOSITION,
            tus::content_disposition(record.name.as_deref(), tus::shown_inline(&content_type)),
        )
        .header(header::ETAG, etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, max-age=3600")
        .header(header::LAST_MODIFIED, tus::http_date(record.created_ms))
        // An uploaded file never runs as a page of the broker's origin.
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{}/{}", start + len - 1, record.length));
    }
    builder.body(StreamBody::new(stream).boxed_unsync()).expect("valid response")
}

/// `GET /api/v1/files?sha256=HEX&length=N`: the caller's own finished file
/// with this content, so an app can skip the upload (404 otherwise).
fn lookup(query: &str, requester: &Requester, files: &Files) -> Response<Body> {
    let param =
        |name: &str| query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v);
    let sha = param("sha256").map(str::to_ascii_lowercase);
    let Some(sha) = sha.filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())) else {
        return json_error(StatusCode::BAD_REQUEST, "send ?sha256= with the file's SHA-256 as 64 hex digits");
    };
    let Some(length) = param("length").and_then(|l| l.parse::<u64>().ok()) else {
        return json_error(StatusCode::BAD_REQUEST, "send ?length= with the file's size in bytes");
    };
    match files.find_own(requester, &sha, length) {
        Some(record) => json(
            StatusCode::OK,
            serde_json::json!({
                "id": record.id,
                "url": format!("/files/{}", record.id),
                "length": record.length,
                "sha256": sha,
                "name": record.name,
                "mime": record.mime,
            }),
        ),
        None => json_error(StatusCode::NOT_FOUND, "you hold no file with this content: upload it"),
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A response carrying the tus discovery headers.
fn tus_response(status: StatusCode, files: &Files) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("tus-resumable", tus::VERSION)
        .header("tus-version", tus::VERSION)
        .header("tus-extension", tus::EXTENSIONS)
        .header("tus-max-size", files.config().max_file_bytes)
        .header("tus-checksum-algorithm", tus::CHECKSUM_ALGORITHMS)
}

fn failure(error: &FileError, files: &Files) -> Response<Body> {
    files.count_refusal(error);
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = error.message();
    tus_response(status, files)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(format!("{message}\n")))
        .expect("valid response")
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(format!("{message}\n")))
        .expect("valid response")
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .expect("valid response")
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, serde_json::json!({ "error": message }))
}

fn full(body: String) -> Body {
    Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {}).boxed_unsync()
}

fn empty() -> Body {
    full(String::new())
}

/// The stream with the request head the port's router read put back in
/// front, noting the time of every read and write (the idle watchdog).
struct Rewound<S> {
    head: Bytes,
    inner: S,
    activity: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
