//! Listeners: accept connections and hand each to its protocol's task.
//!
//! Owns: the accept loops, the connection limit shared by all listeners,
//! socket options, and routing WebSocket upgrades by path (`/mqtt`, `/ws`);
//! plain requests go to the files endpoint (`/files/`, `crate::files`), the
//! API (`/api/`) or the web demo (`/`, `/web/`).
//! Must never: parse protocol bytes past the HTTP upgrade, or pace the accept
//! loop with sleeps (a burst of thousands of connects must be taken as fast
//! as the kernel offers them; `mqtt.max_connections` bounds it instead).

pub mod api;
pub mod buffered;
pub mod gate;
pub mod http;
pub mod proxy;
pub mod static_files;
pub mod tls;
pub mod ws_stream;

use crate::auth::Transport;
use crate::broker::Broker;
use crate::client::Peer;
use crate::files::Files;
use bytes::BytesMut;
use http::HeadError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

/// WebSocket subprotocols accepted on `/mqtt` (MQTT.js sends `mqtt`; some
/// older clients `mqttv3.1`).
pub const MQTT_SUBPROTOCOLS: &[&str] = &["mqtt", "mqttv3.1"];
pub use crate::wsproto::SUBPROTOCOL as PROTO_SUBPROTOCOL;

/// Binds a listener with the configured pending-connection queue (0: the
/// system's `somaxconn`, so a burst of connects is queued rather than lost).
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let backlog = if backlog == 0 { system_somaxconn() } else { backlog };
    socket.listen(backlog)
}

fn system_somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(4096)
}

/// Raises the process's open-file soft limit to its hard limit; returns the
/// limit in force (each connection takes one file descriptor).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Who may speak for clients on a listener, and how long a PROXY header
/// may take (see [`proxy`]).
pub struct Proxies {
    pub trusted: proxy::TrustedProxies,
    /// The listener expects a PROXY protocol header first.
    pub proxy_protocol: bool,
    pub header_timeout: Duration,
    /// The per-IP gate, for a client named by forwarding headers.
    pub gate: Arc<gate::ConnectionGate>,
}

/// Accepts connections until `stop` turns true and runs `handle` for each on
/// its own task, tracked by `tasks` so shutdown can wait for them. `limit`
/// bounds this listener's connections, `gate` each source IP's. A trusted
/// proxy (`proxies`) is not limited per IP: the clients it speaks for are,
/// once it has named them.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limit: Arc<Semaphore>,
    gate: Arc<gate::ConnectionGate>,
    tasks: TaskTracker,
    mut stop: watch::Receiver<bool>,
    proxies: Arc<Proxies>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut failures = 0u32;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                failures = 0;
                pair
            }
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have,
                // and back off (1 ms doubling to 1 s) instead of spinning a
                // core on an accept that keeps failing.
                failures = failures.saturating_add(1);
                let wait = Duration::from_millis(1u64 << failures.min(10).saturating_sub(1));
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, "accept failed; backing off");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached (mqtt.max_connections); closing");
            continue;
        };
        let from_proxy = proxies.trusted.contains(peer.ip());
        if proxies.proxy_protocol {
            if !from_proxy {
                tracing::warn!(%peer, "connection refused: this listener expects a PROXY header, and only from net.trusted_proxies");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let (gate, proxies, handle) = (gate.clone(), proxies.clone(), handle.clone());
            tasks.spawn(async move {
                let mut stream = stream;
                let read = tokio::time::timeout(proxies.header_timeout, proxy::read_header(&mut stream)).await;
                let client = match read {
                    Ok(Ok(client)) => client.unwrap_or(peer),
                    Ok(Err(why)) => return tracing::info!(%peer, why, "connection from a proxy refused"),
                    Err(_) => return tracing::info!(%peer, "connection from a proxy refused: no PROXY header in time"),
                };
                let Ok(slot) = gate.admit(client.ip(), crate::clock::now_ms()) else {
                    return tracing::debug!(%peer, %client, "connection refused (per-IP limit)");
                };
                handle(stream, client).await;
                drop((permit, slot));
            });
            continue;
        }
        let admitted =
            if from_proxy { Ok(gate::IpSlot::unlimited(&gate)) } else { gate.admit(peer.ip(), crate::clock::now_ms()) };
        let slot = match admitted {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused at accept (per-IP limit)");
                continue;
            }
        };
        // Latency matters more than packet count: writers already batch.
        let _ = stream.set_nodelay(true);
        let connection = handle(stream, peer);
        // A combinator, not `async move { connection.await; drop(permit) }`:
        // that block would hold the connection future twice (once captured,
        // once being awaited), doubling every idle connection's task.
        tasks.spawn(futures_util::FutureExt::map(connection, move |()| drop((permit, slot))));
    }
}

/// MQTT over TCP. Returns the connection's future itself (no `async`
/// wrapper, which would keep its own copy of the arguments in every task).
pub fn serve_mqtt(stream: TcpStream, addr: SocketAddr, broker: Arc<Broker>) -> impl Future<Output = ()> + Send {
    let peer = Peer::plain(addr, Transport::MqttTcp, is_local(broker.config().mqtt.bind, addr));
    crate::mqtt::connection::serve(stream, peer, broker)
}

/// Completes a TLS handshake within the connect timeout; `None` (logged) when it fails.
async fn tls_handshake(
    tls: &tls::Tls,
    stream: TcpStream,
    addr: SocketAddr,
    broker: &Broker,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Option<Arc<str>>)> {
    let timeout = Duration::from_secs(broker.config().mqtt.connect_timeout_secs);
    match tokio::time::timeout(timeout, tls.accept(stream)).await {
        Ok(Ok(accepted)) => Some(accepted),
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %addr, "TLS handshake timed out");
            None
        }
    }
}

fn tls_peer(addr: SocketAddr, transport: Transport, bind: SocketAddr, certificate_user: Option<Arc<str>>) -> Peer {
    Peer { addr, transport, local_listener: is_local(bind, addr), tls: true, certificate_user }
}

/// A loopback listener and a loopback client: what the anonymous default
/// and keyless access trust. The client's address, not the listener's
/// alone: behind a proxy on the same host, a loopback listener serves
/// clients from anywhere.
fn is_local(bind: SocketAddr, client: SocketAddr) -> bool {
    bind.ip().is_loopback() && client.ip().to_canonical().is_loopback()
}

/// MQTT over TLS.
pub async fn serve_mqtt_tls(stream: TcpStream, addr: SocketAddr, broker: Arc<Broker>, tls: Arc<tls::Tls>) {
    let Some((stream, certificate_user)) = tls_handshake(&tls, stream, addr, &broker).await else { return };
    let peer = tls_peer(addr, Transport::MqttTcp, broker.config().mqtt.tls_bind, certificate_user);
    crate::mqtt::connection::serve(stream, peer, broker).await
}

/// The WebSocket port. Returns the connection's future itself (see `serve_mqtt`).
/// `files` serves `/files/` (uploads off: `None`).
pub fn serve_websocket(
    stream: TcpStream,
    addr: SocketAddr,
    broker: Arc<Broker>,
    files: Option<Arc<Files>>,
    proxies: Arc<Proxies>,
) -> impl Future<Output = ()> + Send {
    let local_listener = is_local(broker.config().websocket.bind, addr);
    serve_websocket_on(stream, Peer::plain(addr, Transport::MqttWebSocket, local_listener), broker, files, proxies)
}

/// The `wss://` port: TLS, then the same as the WebSocket port.
pub async fn serve_websocket_tls(
    stream: TcpStream,
    addr: SocketAddr,
    broker: Arc<Broker>,
    tls: Arc<tls::Tls>,
    files: Option<Arc<Files>>,
    proxies: Arc<Proxies>,
) {
    let Some((stream, certificate_user)) = tls_handshake(&tls, stream, addr, &broker).await else { return };
    let peer = tls_peer(addr, Transport::MqttWebSocket, broker.config().websocket.tls_bind, certificate_user);
    serve_websocket_on(stream, peer, broker, files, proxies).await
}

/// One HTTP request head, then `/mqtt` (MQTT over WebSocket), `/ws` (the
/// Protobuf protocol), the API (`/api/`), the web demo (`/`, `/web/...`), or
/// a plain HTTP answer. `peer.transport` is set here from the path.
///
/// Two phases chained, not one `async fn`: the HTTP phase is boxed and gone
/// before the WebSocket is served, so the request, its buffer and the HTTP
/// answers do not weigh on every WebSocket's task.
fn serve_websocket_on<S>(
    stream: S,
    peer: Peer,
    broker: Arc<Broker>,
    files: Option<Arc<Files>>,
    proxies: Arc<Proxies>,
) -> impl Future<Output = ()> + Send
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + buffered::ReadReady + Unpin + Send + 'static,
{
    use futures_util::future::{Either, FutureExt};
    Box::pin(http_phase(stream, peer, broker.clone(), files, proxies)).then(move |upgraded| match upgraded {
        None => Either::Left(std::future::ready(())),
        Some(Upgraded { ws, mut peer, endpoint: Endpoint::Mqtt, slot }) => {
            peer.transport = Transport::MqttWebSocket;
            let serve = crate::mqtt::connection::serve(ws_stream::WsByteStream::new(ws), peer, broker);
            Either::Right(Either::Left(serve.map(move |()| drop(slot))))
        }
        Some(Upgraded { ws, mut peer, endpoint: Endpoint::Proto, slot }) => {
            peer.transport = Transport::StarlingV1;
            Either::Right(Either::Right(crate::wsproto::connection::serve(ws, peer, broker).map(move |()| drop(slot))))
        }
    })
}

/// What the WebSocket codec reads per call (from the read-ahead, not the
/// socket) and keeps as its input buffer while idle.
const WS_CODEC_READ: usize = 512;

/// Which WebSocket endpoint a request upgraded to.
enum Endpoint {
    Mqtt,
    Proto,
}

/// A request that became a WebSocket, and where it goes.
struct Upgraded<S> {
    ws: WebSocketStream<buffered::Buffered<S>>,
    peer: Peer,
    endpoint: Endpoint,
    /// The per-IP slot of a client named by a proxy's forwarding headers,
    /// held for as long as the connection lives.
    slot: Option<gate::IpSlot>,
}

/// Reads the request head and answers it: plain HTTP (files, API, demo,
/// errors) ends here with `None`; an accepted upgrade is handed back.
async fn http_phase<S>(
    mut stream: S,
    mut peer: Peer,
    broker: Arc<Broker>,
    files: Option<Arc<Files>>,
    proxies: Arc<Proxies>,
) -> Option<Upgraded<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + buffered::ReadReady + Unpin + Send,
{
    let broker = &broker;
    let mut buf = BytesMut::new();
    let timeout = Duration::from_secs(broker.config().mqtt.connect_timeout_secs);
    let request = match tokio::time::timeout(timeout, http::read_request(&mut stream, &mut buf)).await {
        Ok(Ok(request)) => request,
        Ok(Err(HeadError::Respond(status, body))) => return plain_answer(&mut stream, status, body.as_bytes()).await,
        Ok(Err(HeadError::Io)) | Err(_) => return None,
    };
    // Plain HTTP answers are bounded by the write timeout too: a client that
    // asks for the demo page and stops reading must not hold its task.
    let write_timeout = Duration::from_secs(broker.config().mqtt.write_timeout_secs);
    if !http::host_allowed(request.header("host"), &broker.config().websocket.allowed_hosts) {
        let host = request.header("host").unwrap_or_default();
        tracing::info!(peer = %peer.addr, host, "request refused: Host not in websocket.allowed_hosts (DNS rebinding?)");
        let body = format!("Host {host:?} is not served here; add it to websocket.allowed_hosts\n");
        return plain_answer(&mut stream, 421, body.as_bytes()).await;
    }
    // A trusted proxy names the client (`Forwarded`, `X-Forwarded-For`);
    // anyone else's forwarding headers are ignored.
    let mut slot = None;
    if proxies.trusted.contains(peer.addr.ip()) {
        let named =
            proxy::forwarded_client(request.header("forwarded"), request.header("x-forwarded-for"), &proxies.trusted);
        if let Some(client) = named {
            match proxies.gate.admit(client, crate::clock::now_ms()) {
                Ok(admitted) => slot = Some(admitted),
                Err(refusal) => {
                    tracing::debug!(peer = %peer.addr, %client, ?refusal, "request refused (per-IP limit)");
                    return plain_answer(&mut stream, 429, b"too many connections from your address\n").await;
                }
            }
            peer.local_listener = peer.local_listener && client.to_canonical().is_loopback();
            peer.addr = SocketAddr::new(client, 0);
        }
    }
    if crate::files::http::handles(&request.path) {
        let Some(files) = files else {
            let body = "file uploads are off on this broker (files.enabled = false)\n";
            return plain_answer(&mut stream, 404, body.as_bytes()).await;
        };
        // The files endpoint reads the request itself (hyper): give it the
        // head back, followed by whatever body bytes already arrived.
        let mut head = BytesMut::from(&request.head[..]);
        head.extend_from_slice(&buf);
        peer.transport = Transport::Http;
        crate::files::http::serve(stream, head.freeze(), peer, broker.clone(), files).await;
        return None;
    }
    if request.path.starts_with("/api/") {
        let (status, body) = api::handle(&request, broker, peer.local_listener, peer.addr.ip());
        let answer = http::respond(&mut stream, status, "application/json", body.as_bytes());
        let _ = tokio::time::timeout(write_timeout, answer).await;
        return None;
    }
    // The web demo (`/`) and the files it loads (`/web/...`).
    if let Some(asset) = static_files::lookup(&request.path).filter(|_| request.header("upgrade").is_none()) {
        let _ = tokio::time::timeout(write_timeout, static_files::serve(&mut stream, &request, asset)).await;
        return None;
    }
    let accepted: &[&str] = match request.path.as_str() {
        "/mqtt" => MQTT_SUBPROTOCOLS,
        "/ws" => &[PROTO_SUBPROTOCOL],
        other => {
            let body = format!(
                "no such path: {other}\nWebSocket endpoints are /mqtt (MQTT) and /ws (starling.v1 Protobuf protocol)\n"
            );
            return plain_answer(&mut stream, 404, body.as_bytes()).await;
        }
    };
    if let Err(why) = http::check_origin(&request, &broker.config().websocket.allowed_origins) {
        tracing::info!(peer = %peer.addr, why, "WebSocket upgrade refused: origin not allowed");
        return plain_answer(&mut stream, 403, why.as_bytes()).await;
    }
    let (accept_key, protocol) = match http::check_upgrade(&request, accepted) {
        Ok(ok) => ok,
        Err(HeadError::Respond(status, body)) => return plain_answer(&mut stream, status, body.as_bytes()).await,
        Err(HeadError::Io) => return None,
    };
    if http::accept_upgrade(&mut stream, &accept_key, &protocol).await.is_err() {
        return None;
    }
    let endpoint = if request.path == "/mqtt" { Endpoint::Mqtt } else { Endpoint::Proto };
    let max = broker.config().mqtt.max_packet_size as usize;
    // A message (and a frame) over the limit fails the read: the client gets
    // the protocol's "too large" answer and the connection closes. The
    // codec's own buffers are small (an idle WebSocket should cost little);
    // `Buffered` below it reads ahead and gathers writes, and gives both
    // buffers back when they empty.
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(WS_CODEC_READ)
        .write_buffer_size(0);
    let stream = buffered::Buffered::new(stream);
    let ws = WebSocketStream::from_partially_read(stream, buf.to_vec(), Role::Server, Some(config)).await;
    Some(Upgraded { ws, peer, endpoint, slot })
}

/// A plain-text HTTP answer that ends the request (no upgrade).
async fn plain_answer<S: tokio::io::AsyncWrite + Unpin, T>(stream: &mut S, status: u16, body: &[u8]) -> Option<T> {
    http::respond(stream, status, "text/plain; charset=utf-8", body).await;
    None
}
