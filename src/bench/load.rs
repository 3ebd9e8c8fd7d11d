//! The load tool's clients: lean MQTT publishers and subscribers (over TCP or
//! WebSocket) and starling.v1 ones, built to cost the load generator as
//! little CPU as possible so that the broker, not the tool, is measured.
//!
//! Owns: connecting (optionally from a chosen 127.0.0.x source address),
//! subscribing, publishing at a rate, and counting what arrives. Subscribers
//! do not decode whole packets: they read the fixed header, skip to the
//! payload and take the 8-byte send timestamp from it. Must never: allocate or
//! take the clock per message on the receive path (one `clock_nanos()` per
//! read batch).

use super::stats::{clock_nanos, new_histogram, Counters};
use crate::mqtt::decode::decode;
use crate::mqtt::encode::encode;
use crate::mqtt::packet::*;
use crate::net::ws_stream::WsByteStream;
use crate::wsproto::{self, pb};
use bytes::{BufMut, BytesMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Mutex as AsyncMutex, Semaphore};
use tokio_util::either::Either;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Transport {
    /// MQTT over TCP.
    Mqtt,
    /// MQTT over TLS (the broker's certificate checked against --ca-file).
    Mqtts,
    /// MQTT over WebSocket (`/mqtt`).
    WsMqtt,
    /// The starling.v1 Protobuf protocol over WebSocket (`/ws`).
    WsProto,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub version: ProtocolVersion,
    pub keep_alive: u16,
    /// Credentials every client presents (`--username`, `--password`).
    pub username: Option<String>,
    pub password: Option<String>,
    /// MQTT: keep the session (`--persistent`).
    pub persistent: bool,
    /// MQTT over TLS: the client configuration (trusting --ca-file).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A TLS client configuration that trusts the certificates in `ca_file` (PEM).
pub fn tls_client_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    crate::server::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("--ca-file {}: {e}", ca_file.display()))? {
        let cert = cert.map_err(|e| format!("--ca-file {}: {e}", ca_file.display()))?;
        roots.add(cert).map_err(|e| format!("--ca-file {}: {e}", ca_file.display()))?;
    }
    Ok(Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()))
}

/// What the run measures from: messages sent before `measure_from_ns` (the
/// warm-up) are delivered but not counted.
pub struct RunClock {
    pub measure_from_ns: AtomicU64,
}

type MqttStream = Either<
    Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>,
    WsByteStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
>;

async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens an MQTT byte stream (TCP or `/mqtt` WebSocket) and completes CONNECT.
pub async fn mqtt_connect(target: &Target, source: Option<IpAddr>, client_id: &str) -> Result<MqttStream, String> {
    let tcp = tcp_connect(target.addr, source).await.map_err(|e| format!("connect {}: {e}", target.addr))?;
    let mut stream: MqttStream = match target.transport {
        Transport::Mqtt => Either::Left(Either::Left(tcp)),
        Transport::Mqtts => {
            let config = target.tls.clone().ok_or("--transport mqtts needs --ca-file")?;
            let name = rustls::pki_types::ServerName::IpAddress(target.addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Either::Left(Either::Right(tls))
        }
        Transport::WsMqtt => {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = format!("ws://{}/mqtt", target.addr).into_client_request().map_err(|e| e.to_string())?;
            request.headers_mut().insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
            let (ws, _) = tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
                .await
                .map_err(|e| format!("websocket upgrade: {e}"))?;
            Either::Right(WsByteStream::new(ws))
        }
        Transport::WsProto => unreachable!("starling.v1 clients use proto_connect"),
    };
    let connect = Connect {
        protocol: target.version,
        clean_start: !target.persistent,
        keep_alive: target.keep_alive,
        client_id: client_id.to_string(),
        will: None,
        // MQTT 3.1.1 allows a password only with a username: a token alone
        // goes with an empty one.
        username: target.username.clone().or_else(|| target.password.as_ref().map(|_| String::new())),
        password: target.password.as_ref().map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
        properties: ConnectProperties {
            session_expiry_interval: (target.persistent && target.version.is_v5()).then_some(3600),
            ..Default::default()
        },
    };
    send(&mut stream, &Packet::Connect(Box::new(connect)), target.version).await?;
    match recv(&mut stream, target.version).await? {
        Packet::ConnAck(ack) if ack.reason_code == 0 => Ok(stream),
        Packet::ConnAck(ack) => Err(format!("CONNACK refused: 0x{:02X}", ack.reason_code)),
        other => Err(format!("expected CONNACK, got {other:?}")),
    }
}

pub async fn mqtt_subscribe<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    version: ProtocolVersion,
    filter: &str,
    qos: QoS,
) -> Result<(), String> {
    let subscribe = Subscribe {
        packet_id: 1,
        // Comma-separated: several filters in one SUBSCRIBE.
        filters: filter
            .split(',')
            .map(|f| SubscribeFilter {
                filter: f.to_string(),
                options: SubscriptionOptions { qos, ..Default::default() },
            })
            .collect(),
        properties: Default::default(),
    };
    send(stream, &Packet::Subscribe(subscribe), version).await?;
    match recv(stream, version).await? {
        Packet::SubAck(ack) if ack.reason_codes.iter().all(|c| *c < 0x80) => Ok(()),
        other => Err(format!("subscription refused: {other:?}")),
    }
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, packet: &Packet, version: ProtocolVersion) -> Result<(), String> {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf);
    write_flush(stream, &buf).await.map_err(|e| e.to_string())
}

/// Writes and flushes: a WebSocket stream only sends a message on flush
/// (for TCP the flush costs nothing).
async fn write_flush<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Reads exactly one packet (handshake only; the hot path uses `scan`).
async fn recv<S: AsyncRead + Unpin>(stream: &mut S, version: ProtocolVersion) -> Result<Packet, String> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some(p) = decode(&mut buf, Some(version), usize::MAX).map_err(|e| e.to_string())? {
            return Ok(p);
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed during handshake".into());
        }
    }
}

/// Reads deliveries until `stop`, acknowledging QoS 1/2 and recording the
/// latency of every message sent after the warm-up.
pub async fn run_mqtt_subscriber<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    version: ProtocolVersion,
    keep_alive: u16,
    counters: Arc<Counters>,
    clock: Arc<RunClock>,
    mut stop: watch::Receiver<bool>,
) {
    let mut hist = new_histogram();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut acks = BytesMut::new();
    let ping_every = Duration::from_secs(u64::from(keep_alive.max(2)) / 2);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = tokio::select! {
            read = stream.read_buf(&mut buf) => match read { Ok(0) | Err(_) => break, Ok(n) => n },
            _ = ping.tick(), if keep_alive > 0 => {
                if write_flush(&mut stream, &[0xC0, 0x00]).await.is_err() { break }
                continue;
            }
            _ = stop.changed() => break,
        };
        let _ = n;
        let now = clock_nanos();
        let from = clock.measure_from_ns.load(Ordering::Relaxed);
        let consumed = scan(&buf, version, now, from, &mut hist, &mut acks);
        let _ = buf.split_to(consumed.bytes);
        if consumed.publishes > 0 {
            counters.received_all.fetch_add(consumed.publishes, Ordering::Relaxed);
        }
        if consumed.measured > 0 {
            counters.received.fetch_add(consumed.measured, Ordering::Relaxed);
            counters.received_bytes.fetch_add(consumed.measured_bytes, Ordering::Relaxed);
        }
        if consumed.gifts > 0 {
            counters.gifts_received.fetch_add(consumed.gifts, Ordering::Relaxed);
        }
        if !acks.is_empty() {
            if write_flush(&mut stream, &acks).await.is_err() {
                break;
            }
            acks.clear();
        }
    }
    counters.merge_latency(&hist);
}

pub struct Scanned {
    /// Bytes of complete packets consumed.
    pub bytes: usize,
    /// PUBLISH packets.
    pub publishes: u64,
    /// PUBLISH packets sent after the warm-up, and their bytes.
    pub measured: u64,
    pub measured_bytes: u64,
    /// Of those, gifts (a topic ending in `/gift`: the danmaku scenario).
    pub gifts: u64,
}

/// Walks the complete packets in `buf`: records PUBLISH latencies (payload
/// bytes 0..8 = send time in `clock_nanos`) and appends the acknowledgements
/// to `acks`. Pure, so it is unit-tested.
pub fn scan(
    buf: &[u8],
    version: ProtocolVersion,
    now_ns: u64,
    measure_from_ns: u64,
    hist: &mut hdrhistogram::Histogram<u64>,
    acks: &mut BytesMut,
) -> Scanned {
    let mut pos = 0;
    let mut measured = 0;
    let mut measured_bytes = 0;
    let mut gifts = 0;
    let mut publishes = 0;
    while let Some((header_len, remaining)) = fixed_header(&buf[pos..]) {
        let end = pos + header_len + remaining;
        if end > buf.len() {
            break;
        }
        let first = buf[pos];
        let body = &buf[pos + header_len..end];
        match first >> 4 {
            3 => {
                publishes += 1;
                let qos = (first >> 1) & 0b11;
                let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
                let mut p = 2 + topic_len;
                let packet_id = if qos > 0 {
                    let id = [body[p], body[p + 1]];
                    p += 2;
                    Some(id)
                } else {
                    None
                };
                if version.is_v5() {
                    let (len, used) = varint(&body[p..]).unwrap_or((0, 1));
                    p += used + len;
                }
                let payload = &body[p.min(body.len())..];
                if payload.len() >= 8 {
                    let sent = u64::from_be_bytes(payload[..8].try_into().unwrap());
                    if sent >= measure_from_ns {
                        measured += 1;
                        measured_bytes += (end - pos) as u64;
                        gifts += u64::from(body[2..2 + topic_len].ends_with(b"/gift"));
                        let _ = hist.record((now_ns.saturating_sub(sent) / 1000).max(1));
                    }
                }
                match (qos, packet_id) {
                    (1, Some(id)) => acks.extend_from_slice(&[0x40, 0x02, id[0], id[1]]),
                    (2, Some(id)) => acks.extend_from_slice(&[0x50, 0x02, id[0], id[1]]),
                    _ => {}
                }
            }
            // PUBREL: complete the QoS 2 exchange.
            6 if body.len() >= 2 => acks.extend_from_slice(&[0x70, 0x02, body[0], body[1]]),
            _ => {}
        }
        pos = end;
    }
    Scanned { bytes: pos, publishes, measured, measured_bytes, gifts }
}

fn fixed_header(buf: &[u8]) -> Option<(usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, used) = varint(&buf[1..])?;
    Some((1 + used, len))
}

fn varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in buf.iter().take(4).enumerate() {
        value |= ((b & 0x7F) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// How fast one publisher sends.
#[derive(Debug, Clone, Copy)]
pub enum Rate {
    Max,
    PerSecond(f64),
}

/// Unacknowledged QoS 1/2 messages a publisher may have at once.
const ACK_WINDOW: usize = 100;
/// Send-time slots by packet id (more than the window: see `run_mqtt_publisher`).
const SENT_SLOTS: usize = 256;

/// Messages encoded per write at max rate: big enough to amortise the
/// syscall, small enough to keep latency samples fresh.
const BATCH: u64 = 64;

/// Publishes to `topics` (round-robin) until `stop`. QoS 1/2 publishes are
/// limited to `window` unacknowledged at a time.
#[allow(clippy::too_many_arguments)]
pub async fn run_mqtt_publisher<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    version: ProtocolVersion,
    topics: Vec<String>,
    qos: QoS,
    size: usize,
    rate: Rate,
    counters: Arc<Counters>,
    clock: Arc<RunClock>,
    mut stop: watch::Receiver<bool>,
) {
    let (reader, writer) = tokio::io::split(stream);
    let mut reader = Some(reader);
    let writer = Arc::new(AsyncMutex::new(writer));
    let window = Arc::new(Semaphore::new(if qos == QoS::AtMostOnce { 0 } else { ACK_WINDOW }));
    // When each packet id in flight was sent (the window is smaller than the
    // slots, and ids count up, so an id's slot is its own until acknowledged).
    let sent_at: Arc<[AtomicU64]> = (0..SENT_SLOTS).map(|_| AtomicU64::new(0)).collect();
    // Send-to-ack times, kept outside the ack task: it may be cut off at close.
    let ack_hist = Arc::new(std::sync::Mutex::new(new_histogram()));
    // QoS 1/2: a reader task turns acknowledgements into window permits.
    let ack_task = (qos != QoS::AtMostOnce).then(|| {
        let (writer, window, counters, sent_at) = (writer.clone(), window.clone(), counters.clone(), sent_at.clone());
        let ack_hist = ack_hist.clone();
        let clock = clock.clone();
        let mut reader = reader.take().expect("taken once");
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            loop {
                if reader.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let now = clock_nanos();
                let from = clock.measure_from_ns.load(Ordering::Relaxed);
                let mut pubrels = BytesMut::new();
                let mut done = 0;
                let mut measured_acks = 0;
                let mut pos = 0;
                let mut latencies = Vec::new();
                while let Some((h, r)) = fixed_header(&buf[pos..]) {
                    if pos + h + r > buf.len() {
                        break;
                    }
                    let body = &buf[pos + h..pos + h + r];
                    match buf[pos] >> 4 {
                        // PUBACK, PUBCOMP: the message is done.
                        4 | 7 if body.len() >= 2 => {
                            done += 1;
                            let id = u16::from_be_bytes([body[0], body[1]]) as usize;
                            let sent = sent_at[id % SENT_SLOTS].load(Ordering::Relaxed);
                            if sent >= from && sent > 0 {
                                measured_acks += 1;
                                latencies.push((now.saturating_sub(sent) / 1000).max(1));
                            }
                        }
                        5 => pubrels.extend_from_slice(&[0x62, 0x02, body[0], body[1]]),
                        _ => {}
                    }
                    pos += h + r;
                }
                let _ = buf.split_to(pos);
                if !latencies.is_empty() {
                    let mut hist = ack_hist.lock().unwrap();
                    for micros in latencies {
                        let _ = hist.record(micros);
                    }
                }
                if !pubrels.is_empty() && write_flush(&mut *writer.lock().await, &pubrels).await.is_err() {
                    return;
                }
                if done > 0 {
                    counters.acked.fetch_add(measured_acks, Ordering::Relaxed);
                    window.add_permits(done as usize);
                }
            }
        })
    });
    let started = Instant::now() + random_phase(rate);
    let mut sent: u64 = 0;
    let mut next_packet_id: u16 = 0;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let padding = vec![0u8; size.saturating_sub(8)];
    let mut topic_index = 0;
    while !*stop.borrow() {
        let due = match rate {
            Rate::Max => sent + BATCH,
            // The first message is due at `started` (phase offset), then every 1/r s.
            Rate::PerSecond(r) => match Instant::now().checked_duration_since(started) {
                Some(elapsed) => (elapsed.as_secs_f64() * r) as u64 + 1,
                None => 0,
            },
        };
        if due <= sent {
            let Rate::PerSecond(r) = rate else { unreachable!() };
            let next_at = started + Duration::from_secs_f64(sent as f64 / r);
            tokio::select! {
                _ = tokio::time::sleep_until(next_at.into()) => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        let n = (due - sent).min(BATCH);
        // Counted by the timestamp each message carries, which is what the
        // subscribers judge by: deciding after the write would count a
        // message stamped just before the warm-up ended as published but
        // never as received (a phantom loss). Stamp first, then read the
        // start: a start set after the stamp is later than it either way.
        let mut measured = 0;
        for _ in 0..n {
            if qos != QoS::AtMostOnce {
                let permit = tokio::select! {
                    p = window.acquire() => p,
                    _ = stop.changed() => break,
                };
                match permit {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                next_packet_id = next_packet_id.wrapping_add(1).max(1);
            }
            let topic = &topics[topic_index];
            topic_index = (topic_index + 1) % topics.len();
            let stamp = clock_nanos();
            measured += u64::from(stamp >= clock.measure_from_ns.load(Ordering::Relaxed));
            if qos != QoS::AtMostOnce {
                sent_at[next_packet_id as usize % SENT_SLOTS].store(stamp, Ordering::Relaxed);
            }
            put_publish(&mut out, version, topic, qos, next_packet_id, stamp, &padding);
        }
        // Stopping must not wait for a broker that reads slowly: abandon the write.
        let written = tokio::select! {
            w = async { write_flush(&mut *writer.lock().await, &out).await } => w.is_ok(),
            _ = stop.changed() => false,
        };
        if !written {
            break;
        }
        out.clear();
        sent += n;
        // Count only what was stamped after the warm-up.
        counters.published.fetch_add(measured, Ordering::Relaxed);
    }
    // Close gracefully: DISCONNECT and our FIN after the last publish, then
    // read until the broker closes. Dropping the socket with acknowledgements
    // still unread would make the kernel send a reset, and a reset arriving
    // with the last publish can destroy it before the broker reads it (the
    // tool would then count a loss that the broker never saw).
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let mut writer = writer.lock().await;
        let _ = writer.write_all(&[0xE0, 0x00]).await;
        let _ = writer.shutdown().await;
    })
    .await;
    match (ack_task, reader) {
        (Some(mut task), _) => {
            if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        (None, Some(mut reader)) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                let mut scratch = [0u8; 4096];
                while reader.read(&mut scratch).await.is_ok_and(|n| n > 0) {}
            })
            .await;
        }
        (None, None) => {}
    }
    counters.merge_ack_latency(&ack_hist.lock().unwrap());
}

/// Longest a publisher's goodbye may take at the end of a run.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A random start offset within one send interval, so that thousands of
/// slow publishers (a vehicle fleet) spread their messages evenly instead of
/// all firing in the same millisecond.
fn random_phase(rate: Rate) -> Duration {
    match rate {
        Rate::PerSecond(r) => Duration::from_secs_f64(rand::random::<f64>() / r),
        Rate::Max => Duration::ZERO,
    }
}

/// Encodes a PUBLISH by hand: the payload is the send timestamp plus padding.
fn put_publish(
    out: &mut BytesMut,
    version: ProtocolVersion,
    topic: &str,
    qos: QoS,
    packet_id: u16,
    ts: u64,
    padding: &[u8],
) {
    let props = usize::from(version.is_v5());
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + id_len + props + 8 + padding.len();
    out.put_u8(0x30 | ((qos as u8) << 1));
    let mut r = remaining;
    loop {
        let mut byte = (r % 128) as u8;
        r /= 128;
        if r > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if r == 0 {
            break;
        }
    }
    out.put_u16(topic.len() as u16);
    out.put_slice(topic.as_bytes());
    if id_len > 0 {
        out.put_u16(packet_id);
    }
    if props > 0 {
        out.put_u8(0);
    }
    out.put_u64(ts);
    out.put_slice(padding);
}

// ---- starling.v1 -------------------------------------------------------------

pub async fn proto_connect(target: &Target, client_id: &str) -> Result<wsproto::client::Client, String> {
    let connect = pb::Connect {
        client_id: client_id.to_string(),
        clean_start: true,
        username: target.username.clone().unwrap_or_default(),
        token: target.password.clone().unwrap_or_default(),
        ..Default::default()
    };
    let url = format!("ws://{}/ws", target.addr);
    wsproto::client::Client::connect(&url, connect).await.map(|(c, _)| c).map_err(|e| e.to_string())
}

pub async fn run_proto_subscriber(
    mut client: wsproto::client::Client,
    counters: Arc<Counters>,
    clock: Arc<RunClock>,
    mut stop: watch::Receiver<bool>,
) {
    let mut hist = new_histogram();
    loop {
        let inbound = tokio::select! {
            r = client.recv() => match r { Ok(i) => i, Err(_) => break },
            _ = stop.changed() => break,
        };
        if let wsproto::Inbound::Frame(pb::frame::Body::Publish(p)) = inbound {
            counters.received_all.fetch_add(1, Ordering::Relaxed);
            if p.payload.len() >= 8 {
                let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                if sent >= clock.measure_from_ns.load(Ordering::Relaxed) {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    let _ = hist.record((clock_nanos().saturating_sub(sent) / 1000).max(1));
                }
            }
            if p.qos > 0 && client.ack(p.packet_id).await.is_err() {
                break;
            }
        }
    }
    counters.merge_latency(&hist);
}

#[allow(clippy::too_many_arguments)]
pub async fn run_proto_publisher(
    mut client: wsproto::client::Client,
    topics: Vec<String>,
    qos: u32,
    size: usize,
    rate: Rate,
    counters: Arc<Counters>,
    clock: Arc<RunClock>,
    stop: watch::Receiver<bool>,
) {
    let started = Instant::now() + random_phase(rate);
    let mut sent: u64 = 0;
    let padding = vec![0u8; size.saturating_sub(8)];
    let mut packet_id: u32 = 0;
    while !*stop.borrow() {
        if let Rate::PerSecond(r) = rate {
            let next_at = started + Duration::from_secs_f64(sent as f64 / r);
            tokio::time::sleep_until(next_at.into()).await;
        }
        let mut payload = Vec::with_capacity(size.max(8));
        let stamp = clock_nanos();
        payload.extend_from_slice(&stamp.to_be_bytes());
        payload.extend_from_slice(&padding);
        // QoS 1 over starling.v1 here is fire-and-forget for the tool: acks are read and dropped.
        packet_id = if qos > 0 { packet_id % 65535 + 1 } else { 0 };
        let topic = &topics[(sent as usize) % topics.len()];
        if client.publish(topic, payload, qos, packet_id).await.is_err() {
            break;
        }
        sent += 1;
        // By the stamp, as subscribers count (see `run_mqtt_publisher`).
        if stamp >= clock.measure_from_ns.load(Ordering::Relaxed) {
            counters.published.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Gracefully, as over MQTT (see `run_mqtt_publisher`): say goodbye and
    // read what the broker still sends until it closes.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if client.send(pb::frame::Body::Disconnect(pb::Disconnect::default())).await.is_ok() {
            while client.recv().await.is_ok() {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_reads_latency_and_acks_from_publishes() {
        let mut buf = BytesMut::new();
        put_publish(&mut buf, ProtocolVersion::V311, "a/b", QoS::AtMostOnce, 0, 1_000, &[0; 56]);
        let first = buf.len();
        put_publish(&mut buf, ProtocolVersion::V311, "live/r/gift", QoS::AtLeastOnce, 7, 2_000, &[]);
        let full = buf.len();
        put_publish(&mut buf, ProtocolVersion::V311, "a/b", QoS::AtMostOnce, 0, 3_000, &[]);
        buf.truncate(buf.len() - 3); // an incomplete third packet
        let mut hist = new_histogram();
        let mut acks = BytesMut::new();
        let scanned = scan(&buf, ProtocolVersion::V311, 1_002_000, 1_500, &mut hist, &mut acks);
        assert_eq!(scanned.bytes, full);
        assert_eq!(scanned.measured, 1, "the first was sent before the warm-up ended");
        assert_eq!(scanned.measured_bytes as usize, full - first);
        assert_eq!(scanned.gifts, 1, "a topic ending in /gift is a gift");
        assert_eq!(hist.len(), 1);
        assert_eq!(&acks[..], &[0x40, 0x02, 0, 7]);
    }

    #[test]
    fn hand_encoded_publish_decodes_with_the_codec() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let mut buf = BytesMut::new();
            put_publish(&mut buf, version, "t", QoS::ExactlyOnce, 9, 42, &[1; 200]);
            let Some(Packet::Publish(p)) = decode(&mut buf, Some(version), usize::MAX).unwrap() else { panic!() };
            assert_eq!((p.topic.as_str(), p.packet_id, p.payload.len()), ("t", 9, 208));
            assert_eq!(u64::from_be_bytes(p.payload[..8].try_into().unwrap()), 42);
        }
    }
}
