//! Just enough HTTP/1.1 for the WebSocket port: read one request head, answer
//! with a plain response, or complete a WebSocket upgrade.
//!
//! Owns: the request-head size limit and the upgrade checks (RFC 6455 §4.2).
//! Must never: keep a connection alive for a second request; every non-upgrade
//! response closes the connection.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A request head larger than this is refused (431): the head is read before
/// anything else and must not let a client make us buffer without bound.
pub const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The head's bytes as received (handed on when another server, such as
    /// the files endpoint's, reads the request itself).
    pub head: bytes::Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

#[derive(Debug)]
pub enum HeadError {
    /// The peer closed or the socket failed before a full head arrived.
    Io,
    /// Status and a body that says what is wrong.
    Respond(u16, String),
}

/// Reads one request head. Bytes after the head (the start of WebSocket
/// frames a client sent eagerly) stay in `buf`.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<Request, HeadError> {
    loop {
        if let Some(request) = parse_head(buf)? {
            return Ok(request);
        }
        buf.reserve(1024);
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Io),
            Ok(_) => {}
        }
    }
}

/// Parses a complete request head at the start of `buf` and removes it;
/// `Ok(None)` while it is incomplete (and under [`MAX_HEAD`]). Pure: the
/// fuzz harness drives it directly.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Request>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let target = req.path.unwrap_or("/");
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (target.to_string(), None),
            };
            let request = Request {
                method: req.method.unwrap_or("").to_string(),
                path,
                query,
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect(),
                head: bytes::Bytes::new(),
            };
            let request = Request { head: buf.split_to(len).freeze(), ..request };
            Ok(Some(request))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Err(HeadError::Respond(431, format!("request head larger than {MAX_HEAD} bytes\n")))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            Err(HeadError::Respond(431, "too many request headers (limit 32)\n".into()))
        }
        Err(e) => Err(HeadError::Respond(400, format!("malformed HTTP request: {e}\n"))),
    }
}

/// Writes a complete response and closes our side.
pub async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        421 => "Misdirected Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// Checks a WebSocket upgrade request and picks the first subprotocol the
/// client offers that is in `accepted`. Errors carry the response to send.
pub fn check_upgrade(req: &Request, accepted: &[&str]) -> Result<(String, String), HeadError> {
    if req.method != "GET" {
        return Err(HeadError::Respond(405, "WebSocket upgrades use GET\n".into()));
    }
    if !req.header_has_token("upgrade", "websocket") || !req.header_has_token("connection", "upgrade") {
        return Err(HeadError::Respond(
            426,
            format!("{} is a WebSocket endpoint: send a WebSocket upgrade request\n", req.path),
        ));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(HeadError::Respond(400, "Sec-WebSocket-Version must be 13\n".into()));
    }
    let Some(key) = req.header("sec-websocket-key") else {
        return Err(HeadError::Respond(400, "missing Sec-WebSocket-Key\n".into()));
    };
    let offered: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    let Some(protocol) = offered.iter().find(|p| accepted.contains(p)) else {
        return Err(HeadError::Respond(
            400,
            format!(
                "{} needs a WebSocket subprotocol, one of: {} (offered: {})\n",
                req.path,
                accepted.join(", "),
                if offered.is_empty() { "none".to_string() } else { offered.join(", ") }
            ),
        ));
    };
    Ok((tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()), protocol.to_string()))
}

/// Checks the `Origin` of a WebSocket upgrade (RFC 6455 §10.2): a page on
/// another site must not open a connection with the visitor's browser.
/// Allowed: no `Origin` (not a browser), an `Origin` whose host and port
/// equal the request's `Host` (the broker's own pages), and those listed
/// in `allowed` (`"*"`: any). `Err` carries the 403 body.
pub fn check_origin(req: &Request, allowed: &[String]) -> Result<(), String> {
    match req.header("origin") {
        Some(origin) => origin_allowed(origin, req.header("host"), allowed),
        None => Ok(()),
    }
}

/// DNS rebinding: a page on `evil.test` whose name was rebound to
/// 127.0.0.1 reaches the broker with `Host: evil.test`, and the browser
/// treats the answers as the page's own. Allowed: no `Host` (not a
/// browser), an IP literal (rebinding needs a name), `localhost`, and the
/// names in `allowed` (`"*"`: any). The port is not compared.
pub fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host else { return true };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => {
            host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
        }
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(name))
}

/// The rule of [`check_origin`] for a request that has an `Origin` (the files
/// endpoint applies it to its CORS requests too).
pub fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> Result<(), String> {
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin).trim_end_matches('/');
    if host.is_some_and(|host| host.eq_ignore_ascii_case(origin_host)) {
        return Ok(());
    }
    Err(format!("requests from pages at {origin} are not allowed here; add it to websocket.allowed_origins\n"))
}

/// Sends the 101 response that completes an upgrade checked by [`check_upgrade`].
pub async fn accept_upgrade<S: AsyncWrite + Unpin>(
    stream: &mut S,
    accept_key: &str,
    protocol: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await
}

#[cfg(test)]
mod host_tests {
    use super::host_allowed;

    #[test]
    fn ip_literals_localhost_and_listed_names_are_allowed() {
        let none: [String; 0] = [];
        for host in ["127.0.0.1:8083", "127.0.0.1", "[::1]:8083", "10.0.0.7", "localhost:18083", "LOCALHOST"] {
            assert!(host_allowed(Some(host), &none), "{host}");
        }
        assert!(host_allowed(None, &none), "not a browser");
        for host in ["evil.test", "evil.test:8083", "127.0.0.1.evil.test", "localhost.evil.test"] {
            assert!(!host_allowed(Some(host), &none), "{host}");
        }
        let listed = ["broker.example".to_string()];
        assert!(host_allowed(Some("Broker.Example:8083"), &listed));
        assert!(!host_allowed(Some("evil.test"), &listed));
        assert!(host_allowed(Some("evil.test"), &["*".to_string()]));
    }
}
