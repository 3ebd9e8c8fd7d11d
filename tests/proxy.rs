//! Behind a reverse proxy (issue 24, item 13): the PROXY protocol (v1 and
//! v2) on the MQTT and WebSocket listeners, and `X-Forwarded-For` /
//! `Forwarded` on the WebSocket port, believed only from
//! `[net] trusted_proxies`. The proxy here is a real one in miniature: a
//! loopback relay that connects to the broker from 127.0.0.2 (the trusted
//! proxy), writes the header naming a client, then copies bytes both ways.

mod common;

use common::wire::{Door, Wire, MQTT_DOORS};
use common::*;
use starling::wsproto::client::{Client as ProtoClient, ClientError};
use starling::wsproto::pb;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const PROXY_IP: &str = "127.0.0.2";

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 60, empty client id).
const CONNECT: &[u8] = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";

/// A connection to `target` from `source_ip` (any 127/8 address is this machine).
async fn connect_from(source_ip: &str, target: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source_ip}:0").parse().unwrap()).unwrap();
    socket.connect(target).await.unwrap()
}

/// Which header the relay writes.
#[derive(Clone, Copy)]
enum Header {
    V1,
    V2,
}

fn header(kind: Header, client: SocketAddr, target: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(client), SocketAddr::V4(target)) = (client, target) else { panic!("IPv4 in these tests") };
    match kind {
        Header::V1 => {
            format!("PROXY TCP4 {} {} {} {}\r\n", client.ip(), target.ip(), client.port(), target.port()).into_bytes()
        }
        Header::V2 => {
            let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
            h.extend_from_slice(&client.ip().octets());
            h.extend_from_slice(&target.ip().octets());
            h.extend_from_slice(&client.port().to_be_bytes());
            h.extend_from_slice(&target.port().to_be_bytes());
            h
        }
    }
}

/// A relay on a loopback port: each connection to it is carried to
/// `target` from 127.0.0.2 behind a PROXY header naming `client`.
async fn proxy_relay(target: SocketAddr, client: SocketAddr, kind: Header) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut outbound = connect_from(PROXY_IP, target).await;
                outbound.write_all(&header(kind, client, target)).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

fn behind_a_proxy(mut config: starling::config::Config) -> starling::config::Config {
    config.net.trusted_proxies = vec![PROXY_IP.into()];
    config.mqtt.proxy_protocol = true;
    config.websocket.proxy_protocol = true;
    config
}

async fn proto_connect(ws: SocketAddr, client_id: &str) -> Result<ProtoClient, u32> {
    let connect = pb::Connect { client_id: client_id.into(), clean_start: true, ..Default::default() };
    match within("starling.v1 connect", ProtoClient::connect(&format!("ws://{ws}/ws"), connect)).await {
        Ok((client, _)) => Ok(client),
        Err(ClientError::Refused { code, .. }) => Err(code),
        Err(e) => panic!("starling.v1 connect failed: {e}"),
    }
}

/// The broker listens on loopback, where anonymous clients are allowed by
/// default. Through a proxy, that must follow the client's address, not
/// the proxy's: a remote client is refused, a local one admitted, on every
/// transport, and operators see the client's address.
#[tokio::test]
async fn the_client_named_by_the_proxy_decides_anonymous_admission_on_every_transport() {
    let server = start(behind_a_proxy(memory_config())).await;
    let (mqtt, ws) = (server.mqtt_addr(), server.ws_addr());
    let remote: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    for (kind, name) in [(Header::V1, "v1"), (Header::V2, "v2")] {
        let (remote_mqtt, remote_ws) = (proxy_relay(mqtt, remote, kind).await, proxy_relay(ws, remote, kind).await);
        let (local_mqtt, local_ws) = (proxy_relay(mqtt, local, kind).await, proxy_relay(ws, local, kind).await);
        for door in MQTT_DOORS {
            let (_, ack) = Wire::connect(door, remote_mqtt, remote_ws, "far", None, None).await;
            assert_eq!(ack.reason_code, 0x87, "{name} {door:?}: a remote anonymous client");
            let (_, ack) = Wire::connect(door, local_mqtt, local_ws, "near", None, None).await;
            assert_eq!(ack.reason_code, 0, "{name} {door:?}: a local anonymous client");
        }
        assert_eq!(proto_connect(remote_ws, "far").await.err(), Some(0x87), "{name} starling.v1");
        let _near = proto_connect(local_ws, &format!("near-{name}")).await.expect("a local client over starling.v1");
    }
    // The admin API lists the client at its own address.
    let relay = proxy_relay(mqtt, local, Header::V1).await;
    let (_wire, ack) = Wire::connect(Door::Tcp5, relay, relay, "listed", None, None).await;
    assert_eq!(ack.reason_code, 0);
    let reply = http::request(
        server.admin_addr(),
        "GET",
        "/api/v1/clients/listed",
        &[("Host", "localhost"), ("Connection", "close")],
        b"",
    )
    .await;
    assert!(reply.text().contains("\"127.0.0.1:40001\""), "{}", reply.text());
}

/// A listener that expects a PROXY header takes it only from a trusted
/// proxy, and a proxy that sends no header is refused; neither harms a
/// client connected meanwhile.
#[tokio::test]
async fn only_a_trusted_proxy_may_speak_and_only_with_a_header() {
    let server = start(behind_a_proxy(memory_config())).await;
    let mqtt = server.mqtt_addr();
    let relay = proxy_relay(mqtt, "127.0.0.1:40002".parse().unwrap(), Header::V2).await;
    let (mut bystander, ack) = Wire::connect(Door::Tcp311, relay, relay, "bystander", None, None).await;
    assert_eq!(ack.reason_code, 0);

    // 127.0.0.1 is not a trusted proxy: closed at once, header or not.
    for source in ["127.0.0.1", "127.0.0.3"] {
        let mut direct = connect_from(source, mqtt).await;
        let _ = direct.write_all(&header(Header::V1, "127.0.0.1:1".parse().unwrap(), mqtt)).await;
        let mut byte = [0u8; 1];
        let read = within("the untrusted peer to be closed", direct.read(&mut byte)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{source}: {read:?}");
    }
    // The trusted proxy without a header (an MQTT CONNECT straight away).
    let mut headless = connect_from(PROXY_IP, mqtt).await;
    headless.write_all(CONNECT).await.unwrap();
    let mut byte = [0u8; 1];
    let read = within("the headless connection to be closed", headless.read(&mut byte)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    bystander.ping_barrier().await;
}

/// Per-IP limits count the client the proxy names, not the proxy.
#[tokio::test]
async fn per_ip_limits_count_the_named_client() {
    let mut config = behind_a_proxy(memory_config());
    config.mqtt.max_connections_per_ip = 1;
    config.auth.allow_anonymous = Some(true);
    let server = start(config).await;
    let mqtt = server.mqtt_addr();
    let first = proxy_relay(mqtt, "198.51.100.1:1".parse().unwrap(), Header::V1).await;
    let second = proxy_relay(mqtt, "198.51.100.2:1".parse().unwrap(), Header::V1).await;
    let (_a, ack) = Wire::connect(Door::Tcp311, first, first, "a", None, None).await;
    assert_eq!(ack.reason_code, 0);
    let (_b, ack) = Wire::connect(Door::Tcp311, second, second, "b", None, None).await;
    assert_eq!(ack.reason_code, 0, "another client behind the same proxy");
    // A second connection of 198.51.100.1: closed before its CONNACK.
    let mut again = TcpStream::connect(first).await.unwrap();
    again.write_all(CONNECT).await.unwrap();
    let mut byte = [0u8; 1];
    let read = within("the second connection to be closed", again.read(&mut byte)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// A raw HTTP request from `source_ip`; the status code.
async fn status_from(source_ip: &str, target: SocketAddr, request: &str) -> u16 {
    let mut stream = connect_from(source_ip, target).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within("an HTTP answer", stream.read_to_end(&mut answer)).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// On the WebSocket port without the PROXY protocol, a trusted proxy's
/// `X-Forwarded-For` or `Forwarded` names the client; anyone else's is
/// ignored. Shown with anonymous uploads, which follow the anonymous
/// default (loopback clients only).
#[tokio::test]
async fn forwarding_headers_are_believed_from_a_trusted_proxy_only() {
    let mut config = memory_config();
    config.net.trusted_proxies = vec![PROXY_IP.into()];
    let server = start(config).await;
    let ws = server.ws_addr();
    let upload = |forwarded: &str| {
        format!(
            "POST /files/ HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 10\r\n{forwarded}\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    let far = upload("X-Forwarded-For: 203.0.113.7\r\n");
    assert_eq!(status_from(PROXY_IP, ws, &far).await, 401, "a remote client, named by the proxy");
    let far = upload("Forwarded: for=\"203.0.113.7:4711\";proto=https\r\n");
    assert_eq!(status_from(PROXY_IP, ws, &far).await, 401, "the same, in RFC 7239's words");
    let near = upload("X-Forwarded-For: 127.0.0.1\r\n");
    assert_eq!(status_from(PROXY_IP, ws, &near).await, 201, "a local client behind the proxy");
    let forged = upload("X-Forwarded-For: 203.0.113.7\r\n");
    assert_eq!(status_from("127.0.0.1", ws, &forged).await, 201, "not a proxy: its header is ignored");
}
