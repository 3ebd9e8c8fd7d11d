//! One end-to-end check of a broker: connect, subscribe, publish, receive
//! the message back, and time the round trip. `starling probe` runs it once
//! (for cron, Kubernetes exec probes and Nagios; it works against any MQTT
//! broker), and the broker's canary (`monitor.rs`) runs it through each of
//! its own listeners.
//!
//! Owns: the probe's steps over MQTT 3.1.1 (TCP, optionally TLS, or
//! WebSocket `/mqtt`) and starling.v1 (`/ws`), with the broker's own codecs,
//! and which step failed. Must never: wait without a bound (the whole probe
//! runs under one timeout), or leave a session behind (clean start; the
//! session ends with the connection).

use crate::model::QoS;
use crate::mqtt::decode::decode;
use crate::mqtt::encode::encode;
use crate::mqtt::packet::{
    Connect, Packet, ProtocolVersion, Publish, Subscribe, SubscribeFilter, SubscriptionOptions as WireOptions,
};
use crate::wsproto::client::Client as ProtoClient;
use crate::wsproto::pb;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Which protocol the probe speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeTransport {
    /// MQTT 3.1.1 over TCP (or TLS with `--tls`).
    Mqtt,
    /// MQTT 3.1.1 over WebSocket, path `/mqtt`, subprotocol `mqtt`.
    WsMqtt,
    /// starling.v1 over WebSocket, path `/ws`.
    WsProto,
}

impl ProbeTransport {
    pub fn label(self) -> &'static str {
        match self {
            ProbeTransport::Mqtt => "mqtt",
            ProbeTransport::WsMqtt => "ws-mqtt",
            ProbeTransport::WsProto => "ws-proto",
        }
    }
}

/// What to probe and how.
#[derive(Clone)]
pub struct ProbeTarget {
    /// `host:port`.
    pub address: String,
    pub transport: ProbeTransport,
    /// TLS (`mqtts`, `wss`), with what to verify the broker against.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// starling.v1: a signed token (or, with `username`, the password).
    pub token: Option<String>,
    pub client_id: String,
    /// The topic the probe subscribes to and publishes on.
    pub topic: String,
    /// Bound on the whole probe.
    pub timeout: Duration,
}

/// The step a probe stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    Subscribe,
    Publish,
    Receive,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Subscribe => "subscribe",
            Step::Publish => "publish",
            Step::Receive => "receive",
        }
    }
}

/// Why a probe failed: the step and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    pub step: Step,
    pub error: String,
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.step.label(), self.error)
    }
}

fn fail(step: Step, error: impl std::fmt::Display) -> ProbeFailure {
    ProbeFailure { step, error: error.to_string() }
}

/// Runs the probe; the round trip is from the PUBLISH written to the same
/// message read back.
pub async fn run(target: &ProbeTarget) -> Result<Duration, ProbeFailure> {
    let step = std::sync::Mutex::new(Step::Connect);
    let work = async {
        match target.transport {
            ProbeTransport::Mqtt | ProbeTransport::WsMqtt => probe_mqtt(target, &step).await,
            ProbeTransport::WsProto => probe_proto(target, &step).await,
        }
    };
    match tokio::time::timeout(target.timeout, work).await {
        Ok(result) => result,
        Err(_) => {
            let at = *step.lock().unwrap_or_else(|e| e.into_inner());
            Err(fail(at, format!("no answer within {:?}", target.timeout)))
        }
    }
}

fn set(step: &std::sync::Mutex<Step>, to: Step) {
    *step.lock().unwrap_or_else(|e| e.into_inner()) = to;
}

/// A byte stream or a WebSocket carrying MQTT packets.
enum MqttLink {
    Stream(Box<dyn Stream>),
    Ws(Box<tokio_tungstenite::WebSocketStream<Box<dyn Stream>>>),
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// TCP to the target, then TLS when it asks for it.
async fn open_stream(target: &ProbeTarget) -> Result<Box<dyn Stream>, String> {
    let tcp = tokio::net::TcpStream::connect(&target.address).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = &target.tls else { return Ok(Box::new(tcp)) };
    let host = target.address.rsplit_once(':').map_or(target.address.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} as a TLS server name: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(Box::new(tls))
}

/// `ws://` or `wss://` to the target's `path`.
fn ws_url(target: &ProbeTarget, path: &str) -> String {
    let scheme = if target.tls.is_some() { "wss" } else { "ws" };
    format!("{scheme}://{}{path}", target.address)
}

struct Mqtt {
    link: MqttLink,
    buf: BytesMut,
}

const V311: ProtocolVersion = ProtocolVersion::V311;

impl Mqtt {
    async fn open(target: &ProbeTarget) -> Result<Mqtt, String> {
        let stream = open_stream(target).await?;
        let link = match target.transport {
            ProbeTransport::WsMqtt => {
                let mut request = ws_url(target, "/mqtt").into_client_request().map_err(|e| e.to_string())?;
                request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
                let (ws, _) = tokio_tungstenite::client_async(request, stream).await.map_err(|e| e.to_string())?;
                MqttLink::Ws(Box::new(ws))
            }
            _ => MqttLink::Stream(stream),
        };
        Ok(Mqtt { link, buf: BytesMut::new() })
    }

    async fn send(&mut self, packet: &Packet) -> Result<(), String> {
        let mut out = BytesMut::new();
        encode(packet, V311, &mut out);
        match &mut self.link {
            MqttLink::Stream(s) => {
                s.write_all(&out).await.map_err(|e| e.to_string())?;
                s.flush().await.map_err(|e| e.to_string())
            }
            MqttLink::Ws(ws) => ws.send(WsMessage::Binary(out.freeze())).await.map_err(|e| e.to_string()),
        }
    }

    async fn recv(&mut self) -> Result<Packet, String> {
        loop {
            if let Some(packet) = decode(&mut self.buf, Some(V311), 1 << 20).map_err(|e| format!("{e:?}"))? {
                return Ok(packet);
            }
            match &mut self.link {
                MqttLink::Stream(s) => {
                    if s.read_buf(&mut self.buf).await.map_err(|e| e.to_string())? == 0 {
                        return Err("the broker closed the connection".into());
                    }
                }
                MqttLink::Ws(ws) => match ws.next().await {
                    Some(Ok(WsMessage::Binary(data))) => self.buf.extend_from_slice(&data),
                    Some(Ok(WsMessage::Close(_))) | None => return Err("the broker closed the connection".into()),
                    Some(Err(e)) => return Err(e.to_string()),
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

async fn probe_mqtt(target: &ProbeTarget, step: &std::sync::Mutex<Step>) -> Result<Duration, ProbeFailure> {
    let mut mqtt = Mqtt::open(target).await.map_err(|e| fail(Step::Connect, e))?;
    let connect = Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 30,
        client_id: target.client_id.clone(),
        will: None,
        username: target.username.clone(),
        password: target.password.clone().or_else(|| target.token.clone()).map(Bytes::from),
        properties: Default::default(),
    };
    mqtt.send(&Packet::Connect(Box::new(connect))).await.map_err(|e| fail(Step::Connect, e))?;
    match mqtt.recv().await.map_err(|e| fail(Step::Connect, e))? {
        Packet::ConnAck(ack) if ack.reason_code == 0 => {}
        Packet::ConnAck(ack) => return Err(fail(Step::Connect, format!("refused, CONNACK code {}", ack.reason_code))),
        other => return Err(fail(Step::Connect, format!("expected CONNACK, got {other:?}"))),
    }
    set(step, Step::Subscribe);
    let filter = SubscribeFilter {
        filter: target.topic.clone(),
        options: WireOptions { qos: QoS::AtLeastOnce, ..Default::default() },
    };
    let subscribe = Subscribe { packet_id: 1, filters: vec![filter], properties: Default::default() };
    mqtt.send(&Packet::Subscribe(subscribe)).await.map_err(|e| fail(Step::Subscribe, e))?;
    match mqtt.recv().await.map_err(|e| fail(Step::Subscribe, e))? {
        Packet::SubAck(ack) if ack.reason_codes.first().is_some_and(|c| *c < 0x80) => {}
        Packet::SubAck(ack) => {
            return Err(fail(Step::Subscribe, format!("refused, SUBACK code {:?}", ack.reason_codes)))
        }
        other => return Err(fail(Step::Subscribe, format!("expected SUBACK, got {other:?}"))),
    }
    set(step, Step::Publish);
    let nonce = format!("probe {:016x}", rand::random::<u64>());
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: target.topic.clone(),
        packet_id: 2,
        payload: Bytes::from(nonce.clone()),
        properties: Default::default(),
    };
    let sent = Instant::now();
    mqtt.send(&Packet::Publish(publish)).await.map_err(|e| fail(Step::Publish, e))?;
    set(step, Step::Receive);
    let (mut acked, mut received) = (false, None);
    while !acked || received.is_none() {
        match mqtt.recv().await.map_err(|e| fail(Step::Receive, e))? {
            Packet::PubAck(ack) if ack.packet_id == 2 => {
                if ack.reason_code >= 0x80 {
                    return Err(fail(Step::Publish, format!("refused, PUBACK code {}", ack.reason_code)));
                }
                acked = true;
            }
            Packet::Publish(p) if p.payload == nonce.as_bytes() => {
                received = Some(sent.elapsed());
                if p.qos > QoS::AtMostOnce {
                    let ack = Packet::PubAck(crate::mqtt::packet::PubResp {
                        packet_id: p.packet_id,
                        reason_code: 0,
                        properties: Default::default(),
                    });
                    mqtt.send(&ack).await.map_err(|e| fail(Step::Receive, e))?;
                }
            }
            _ => {}
        }
    }
    let _ = mqtt.send(&Packet::Disconnect(Default::default())).await;
    Ok(received.expect("loop ends once received"))
}

async fn probe_proto(target: &ProbeTarget, step: &std::sync::Mutex<Step>) -> Result<Duration, ProbeFailure> {
    let url = ws_url(target, "/ws");
    let connect = pb::Connect {
        client_id: target.client_id.clone(),
        clean_start: true,
        token: target.token.clone().or_else(|| target.password.clone()).unwrap_or_default(),
        username: target.username.clone().unwrap_or_default(),
        ..Default::default()
    };
    let stream = open_stream(target).await.map_err(|e| fail(Step::Connect, e))?;
    let (mut client, _) = ProtoClient::connect_over(stream, &url, connect).await.map_err(|e| fail(Step::Connect, e))?;
    set(step, Step::Subscribe);
    let ack = client.subscribe(1, &[(&target.topic, 1)]).await.map_err(|e| fail(Step::Subscribe, e))?;
    if ack.results.first().is_none_or(|r| r.code >= 0x80) {
        let codes: Vec<u32> = ack.results.iter().map(|r| r.code).collect();
        return Err(fail(Step::Subscribe, format!("refused, SubAck codes {codes:?}")));
    }
    set(step, Step::Publish);
    let nonce = format!("probe {:016x}", rand::random::<u64>());
    let sent = Instant::now();
    client.publish(&target.topic, nonce.clone(), 1, 1).await.map_err(|e| fail(Step::Publish, e))?;
    set(step, Step::Receive);
    loop {
        let p = client.next_publish().await.map_err(|e| fail(Step::Receive, e))?;
        if p.payload.as_ref() == nonce.as_bytes() {
            let rtt = sent.elapsed();
            if p.packet_id != 0 {
                let _ = client.ack(p.packet_id).await;
            }
            let _ = client.disconnect().await;
            return Ok(rtt);
        }
    }
}

/// A TLS client configuration trusting the CA certificates in `cafile`
/// (PEM), or the system's roots when `None`.
pub fn tls_config(cafile: Option<&std::path::Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match cafile {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for cert in rustls_pemfile_certs(&pem, path)? {
                roots.add(cert).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
        }
        None => anyhow::bail!("--tls needs --cafile (the CA that signed the broker's certificate)"),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn rustls_pemfile_certs(
    pem: &[u8],
    path: &std::path::Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no certificate in it", path.display());
    }
    Ok(certs)
}

/// A TLS client configuration that trusts exactly the certificate in
/// `cert_file` (the broker's own, first in its chain), whatever name it is
/// reached by: the canary probing its own TLS listeners.
pub fn pinned_tls_config(cert_file: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(cert_file).map_err(|e| anyhow::anyhow!("{}: {e}", cert_file.display()))?;
    let leaf = rustls_pemfile_certs(&pem, cert_file)?.remove(0);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(Pinned { leaf, provider: provider.clone() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts one certificate, by its exact bytes; signatures are still checked.
#[derive(Debug)]
struct Pinned {
    leaf: rustls::pki_types::CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the broker's own certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
