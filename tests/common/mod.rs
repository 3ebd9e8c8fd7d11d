//! Shared helpers for the end-to-end tests: start a real broker on an
//! ephemeral loopback port, connect real clients (rumqttc v4 and v5), and wait
//! for events with bounded timeouts (never sleep-and-hope).
#![allow(dead_code)]

use starling::config::{Config, StorageBackend};
use starling::server::Server;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Upper bound for any single wait in a test; only reached when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn memory_config() -> Config {
    let mut config = Config::default();
    config.mqtt.bind = "127.0.0.1:0".parse().unwrap();
    config.websocket.bind = "127.0.0.1:0".parse().unwrap();
    config.http.bind = "127.0.0.1:0".parse().unwrap();
    // No $SYS topics unless a test asks: they would count as retained messages.
    config.sys.interval_secs = 0;
    // No canary unless a test asks: its probes would count as clients and traffic.
    config.monitor.interval_secs = 0;
    config.storage.backend = StorageBackend::Memory;
    // Plain MQTT unless a test asks for the shipped topic classes.
    config.classes.dir = std::path::PathBuf::new();
    // As the shipped config.toml: the loopback demo uploads anonymously
    // (tests/files.rs checks the default, off, apart).
    config.files.allow_anonymous = true;
    config
}

/// The shipped `topics/` classes (chat, danmaku, location) on.
pub fn with_classes(mut config: Config) -> Config {
    config.classes.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topics");
    // As the shipped config.toml: room viewer counts readable by everyone
    // (a `$SYS` topic like any other needs a rule).
    config.acl.push(starling::config::AclRule {
        user: "*".into(),
        client: "*".into(),
        action: starling::config::AclAction::Subscribe,
        topic: "$SYS/viewers/#".into(),
        permission: starling::config::Permission::Allow,
    });
    config
}

pub fn sled_config(dir: &Path) -> Config {
    let mut config = memory_config();
    config.storage.backend = StorageBackend::Sled;
    config.storage.data_dir = dir.to_path_buf();
    config
}

pub async fn start(config: Config) -> Server {
    Server::start(config).await.expect("broker starts")
}

pub async fn start_memory() -> Server {
    start(memory_config()).await
}

/// The HS256 secret of [`with_jwt`] brokers.
pub const JWT_SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

/// Signed tokens checked by `[auth.jwt]`, anonymous loopback clients still
/// allowed, and the ACL open unless a rule says otherwise (the tests that
/// use it are about roles and tokens, not about the default).
pub fn with_jwt(mut config: Config) -> Config {
    config.auth.chain = vec!["jwt".into()];
    config.auth.jwt = Some(starling::config::JwtConfig {
        secret: Some(JWT_SECRET.into()),
        public_key_file: None,
        issuer: None,
        audience: None,
        ..Default::default()
    });
    config.auth.acl_default = Some(starling::config::Permission::Allow);
    config
}

/// An HS256 token signed with [`JWT_SECRET`]; `exp` is an hour from now
/// unless the claims set it.
pub fn token(mut claims: serde_json::Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = serde_json::json!(starling::clock::now_ms() / 1000 + 3600);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[allow(unused_imports)]
pub use serde_json::json;

/// Waits for `fut` at most [`WAIT`], failing the test with `what` otherwise.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    within_for(WAIT, what, fut).await
}

/// [`within`] with its own bound, for what takes longer by design (a NATS
/// cluster electing a new JetStream leader).
pub async fn within_for<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `cond` until it holds, failing the test after [`WAIT`]. For
/// conditions inside the broker that no client can observe (for example
/// `server.broker().session_count()`).
pub async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_for(WAIT, what, cond).await
}

/// [`wait_until`] with its own bound (see [`within_for`]).
pub async fn wait_until_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    within_for(limit, what, async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            if cond() {
                return;
            }
        }
    })
    .await
}

/// [`wait_until`] for a condition that takes a round trip to check (an
/// HTTP request, a connect): asks again every 10 ms, fails after [`WAIT`].
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            if cond().await {
                return;
            }
        }
    })
    .await
}

/// The behaviour under test needs wall-clock time to pass (keep-alive, will
/// delay, message or session expiry); never use this to wait for an event.
pub async fn let_time_pass(d: Duration) {
    tokio::time::sleep(d).await
}

// ---- rumqttc v4 (MQTT 3.1.1) -------------------------------------------------

pub mod v4 {
    use super::*;
    pub use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Publish, QoS};

    pub struct Client {
        pub client: AsyncClient,
        pub events: mpsc::UnboundedReceiver<Result<Incoming, String>>,
        pub task: tokio::task::JoinHandle<()>,
        /// Packets set aside while waiting for an acknowledgement (see `publish_acked`).
        pub backlog: std::collections::VecDeque<Incoming>,
    }

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    /// Connects and waits for CONNACK; the event loop runs on its own task and
    /// forwards every incoming packet (and the error that ends it).
    pub async fn connect_with(options: MqttOptions) -> (Client, rumqttc::ConnAck) {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let connack = within("CONNACK", async {
            loop {
                match rx.recv().await {
                    Some(Ok(Incoming::ConnAck(ack))) => return ack,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("connect failed: {e}"),
                    None => panic!("event loop ended"),
                }
            }
        })
        .await;
        (Client { client, events: rx, task, backlog: Default::default() }, connack)
    }

    pub async fn connect(addr: SocketAddr, id: &str, clean: bool) -> Client {
        let mut o = options(addr, id);
        o.set_clean_session(clean);
        connect_with(o).await.0
    }

    impl Client {
        /// Next incoming packet that `pick` accepts; others are skipped.
        /// Next packet that `pick` accepts, looking first at what
        /// `publish_acked` set aside; other packets are skipped.
        pub async fn next_matching<T>(&mut self, what: &str, mut pick: impl FnMut(&Incoming) -> Option<T>) -> T {
            while let Some(p) = self.backlog.pop_front() {
                if let Some(t) = pick(&p) {
                    return t;
                }
            }
            within(what, async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(p)) => {
                            if let Some(t) = pick(&p) {
                                return t;
                            }
                        }
                        Some(Err(e)) => panic!("connection ended while waiting for {what}: {e}"),
                        None => panic!("event loop ended while waiting for {what}"),
                    }
                }
            })
            .await
        }

        /// Publishes at QoS 1 and waits for the broker's PUBACK, so the
        /// message has been routed (and stored) before the test goes on.
        pub async fn publish_acked(&mut self, topic: &str, retain: bool, payload: impl Into<Vec<u8>>) {
            self.publish_acked_within(WAIT, topic, retain, payload).await
        }

        /// [`Client::publish_acked`], waiting at most `limit` for the PUBACK.
        pub async fn publish_acked_within(
            &mut self,
            limit: Duration,
            topic: &str,
            retain: bool,
            payload: impl Into<Vec<u8>>,
        ) {
            self.client.publish(topic, QoS::AtLeastOnce, retain, payload).await.unwrap();
            // A delivery of our own message may arrive before the PUBACK: keep it.
            within_for(limit, "PUBACK", async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(Incoming::PubAck(_))) => return,
                        Some(Ok(p)) => self.backlog.push_back(p),
                        Some(Err(e)) => panic!("connection ended while waiting for PUBACK: {e}"),
                        None => panic!("event loop ended while waiting for PUBACK"),
                    }
                }
            })
            .await;
        }

        pub async fn next_publish(&mut self) -> Publish {
            self.next_matching("PUBLISH", |p| match p {
                Incoming::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<rumqttc::SubscribeReasonCode> {
            self.client.subscribe(filter, qos).await.unwrap();
            self.next_matching("SUBACK", |p| match p {
                Incoming::SubAck(a) => Some(a.return_codes.clone()),
                _ => None,
            })
            .await
        }

        /// Waits until the connection ends; returns the error text.
        pub async fn closed(&mut self) -> String {
            within("connection close", async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return e,
                        None => return "event loop ended".to_string(),
                    }
                }
            })
            .await
        }

        pub async fn disconnect(self) {
            let _ = self.client.disconnect().await;
            let _ = tokio::time::timeout(WAIT, self.task).await;
        }

        /// Drops the connection without DISCONNECT (an abnormal end).
        pub fn kill(self) {
            self.task.abort();
        }
    }
}

// ---- rumqttc v5 (MQTT 5.0) ----------------------------------------------------

pub mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::v5::{ConnAck, Disconnect, Packet, Publish};
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    pub struct Client {
        pub client: AsyncClient,
        pub events: mpsc::UnboundedReceiver<Result<Packet, String>>,
        pub task: tokio::task::JoinHandle<()>,
        /// Packets set aside while waiting for an acknowledgement (see `publish_acked`).
        pub backlog: std::collections::VecDeque<Packet>,
    }

    pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub async fn connect_with(options: MqttOptions) -> (Client, ConnAck) {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        // rumqttc reports a server DISCONNECT as an error, not
                        // as an event: forward it as the packet it was.
                        if let rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
                            reason_code,
                            ..
                        }) = &e
                        {
                            let _ = tx.send(Ok(Packet::Disconnect(Disconnect::new(*reason_code))));
                        }
                        let _ = tx.send(Err(format!("{e:?}")));
                        return;
                    }
                }
            }
        });
        let connack = within("CONNACK", async {
            loop {
                match rx.recv().await {
                    Some(Ok(Packet::ConnAck(ack))) => return ack,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("connect failed: {e}"),
                    None => panic!("event loop ended"),
                }
            }
        })
        .await;
        (Client { client, events: rx, task, backlog: Default::default() }, connack)
    }

    pub async fn connect(addr: SocketAddr, id: &str) -> Client {
        connect_with(options(addr, id)).await.0
    }

    /// Connects with a signed token as the password (empty username).
    pub async fn connect_token(addr: SocketAddr, id: &str, token: &str) -> Client {
        let mut o = options(addr, id);
        o.set_credentials("", token);
        connect_with(o).await.0
    }

    impl Client {
        /// Next packet that `pick` accepts, looking first at what
        /// `publish_acked` set aside; other packets are skipped.
        pub async fn next_matching<T>(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
            while let Some(p) = self.backlog.pop_front() {
                if let Some(t) = pick(&p) {
                    return t;
                }
            }
            within(what, async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(p)) => {
                            if let Some(t) = pick(&p) {
                                return t;
                            }
                        }
                        Some(Err(e)) => panic!("connection ended while waiting for {what}: {e}"),
                        None => panic!("event loop ended while waiting for {what}"),
                    }
                }
            })
            .await
        }

        pub async fn publish_acked(&mut self, topic: &str, retain: bool, payload: impl Into<bytes::Bytes>) {
            self.publish_qos(topic, QoS::AtLeastOnce, retain, payload).await;
        }

        /// Publishes at QoS 1 or 2 and waits for the end of the exchange
        /// (PUBACK, or PUBCOMP: rumqttc answers the PUBREC itself).
        pub async fn publish_qos(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<bytes::Bytes>) {
            self.client.publish(topic, qos, retain, payload).await.unwrap();
            // A delivery of our own message may arrive before the PUBACK: keep it.
            within("PUBACK / PUBCOMP", async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => return,
                        Some(Ok(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => return,
                        Some(Ok(p)) => self.backlog.push_back(p),
                        Some(Err(e)) => panic!("connection ended while waiting for PUBACK: {e}"),
                        None => panic!("event loop ended while waiting for PUBACK"),
                    }
                }
            })
            .await;
        }

        pub async fn next_publish(&mut self) -> Publish {
            self.next_matching("PUBLISH", |p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        pub async fn subscribe(
            &mut self,
            filter: &str,
            qos: QoS,
        ) -> Vec<rumqttc::v5::mqttbytes::v5::SubscribeReasonCode> {
            self.client.subscribe(filter, qos).await.unwrap();
            self.suback().await
        }

        pub async fn suback(&mut self) -> Vec<rumqttc::v5::mqttbytes::v5::SubscribeReasonCode> {
            self.next_matching("SUBACK", |p| match p {
                Packet::SubAck(a) => Some(a.return_codes.clone()),
                _ => None,
            })
            .await
        }

        /// Waits for a DISCONNECT from the server or the end of the connection.
        pub async fn disconnected(&mut self) -> Option<Disconnect> {
            within("server DISCONNECT", async {
                loop {
                    match self.events.recv().await {
                        Some(Ok(Packet::Disconnect(d))) => return Some(d),
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return None,
                    }
                }
            })
            .await
        }

        pub async fn disconnect(self) {
            let _ = self.client.disconnect().await;
            let _ = tokio::time::timeout(WAIT, self.task).await;
        }

        pub fn kill(self) {
            self.task.abort();
        }
    }
}

// ---- raw bytes, for what real clients refuse to send --------------------------

pub mod raw {
    use super::*;
    use bytes::BytesMut;
    use starling::mqtt::decode::decode;
    use starling::mqtt::encode::encode;
    use starling::mqtt::packet::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub struct Raw {
        pub stream: TcpStream,
        buf: BytesMut,
        pub version: ProtocolVersion,
    }

    impl Raw {
        pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> Raw {
            Raw { stream: TcpStream::connect(addr).await.unwrap(), buf: BytesMut::new(), version }
        }

        /// Opens a connection and completes CONNECT/CONNACK.
        pub async fn connected(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> Raw {
            let mut raw = Raw::open(addr, version).await;
            raw.send(&Packet::Connect(Box::new(connect_packet(version, client_id)))).await;
            match raw.recv().await {
                Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, 0, "CONNACK {ack:?}"),
                other => panic!("expected CONNACK, got {other:?}"),
            }
            raw
        }

        pub async fn send(&mut self, packet: &Packet) {
            let mut out = BytesMut::new();
            encode(packet, self.version, &mut out);
            self.stream.write_all(&out).await.unwrap();
        }

        pub async fn send_bytes(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.unwrap();
        }

        /// Next packet from the server, or `None` once it closed the connection.
        pub async fn recv(&mut self) -> Option<Packet> {
            within("a packet or close from the server", async {
                loop {
                    if let Some(p) =
                        decode(&mut self.buf, Some(self.version), usize::MAX).expect("server sent a valid packet")
                    {
                        return Some(p);
                    }
                    match self.stream.read_buf(&mut self.buf).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                }
            })
            .await
        }

        /// Opens a connection, sends `connect` and returns the CONNACK, whatever its code.
        pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Raw, ConnAck) {
            let mut raw = Raw::open(addr, connect.protocol).await;
            raw.send(&Packet::Connect(Box::new(connect))).await;
            match raw.recv().await {
                Some(Packet::ConnAck(ack)) => (raw, ack),
                other => panic!("expected CONNACK, got {other:?}"),
            }
        }

        /// The next packet, which must be a PUBLISH.
        pub async fn expect_publish(&mut self) -> Publish {
            match self.recv().await {
                Some(Packet::Publish(p)) => p,
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }

        /// Barrier: PINGREQ, and the next packet must be PINGRESP, so nothing
        /// else was pending for this client.
        pub async fn ping_barrier(&mut self) {
            self.send(&Packet::PingReq).await;
            match self.recv().await {
                Some(Packet::PingResp) => {}
                other => panic!("expected PINGRESP and nothing before it, got {other:?}"),
            }
        }

        /// Sends DISCONNECT (reason 0) and waits until the server closes.
        pub async fn disconnect(mut self) {
            self.send(&Packet::Disconnect(Disconnect::default())).await;
            self.until_closed().await;
        }

        /// Reads until the server closes; returns the DISCONNECT it sent first, if any.
        pub async fn until_closed(&mut self) -> Option<Disconnect> {
            let mut last = None;
            while let Some(p) = self.recv().await {
                if let Packet::Disconnect(d) = p {
                    last = Some(d);
                }
            }
            last
        }
    }

    pub fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
        Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 30,
            client_id: client_id.to_string(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        }
    }

    pub fn publish_packet(topic: &str, qos: QoS, packet_id: u16, payload: &str) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.to_string(),
            packet_id,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            properties: Default::default(),
        }
    }

    pub fn subscribe_packet(packet_id: u16, filter: &str, qos: QoS) -> Packet {
        Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: filter.to_string(),
                options: SubscriptionOptions { qos, ..Default::default() },
            }],
            properties: Default::default(),
        })
    }
}

pub mod hook;
pub mod http;
pub mod nats;
pub mod node;
pub mod process;
pub mod wire;
