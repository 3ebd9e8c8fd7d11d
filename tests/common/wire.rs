//! MQTT packets over any of starling's MQTT doors (TCP or WebSocket `/mqtt`),
//! 3.1.1 or 5, with exact reason codes: for tests that must see what a
//! client sees on every transport.

use super::within;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use starling::mqtt::decode::decode;
use starling::mqtt::encode::encode;
use starling::mqtt::packet::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Which door and which protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Tcp311,
    Tcp5,
    Ws311,
    Ws5,
}

pub const MQTT_DOORS: [Door; 4] = [Door::Tcp311, Door::Tcp5, Door::Ws311, Door::Ws5];

impl Door {
    pub fn version(self) -> ProtocolVersion {
        match self {
            Door::Tcp311 | Door::Ws311 => ProtocolVersion::V311,
            Door::Tcp5 | Door::Ws5 => ProtocolVersion::V5,
        }
    }

    pub fn v5(self) -> bool {
        self.version().is_v5()
    }
}

enum Socket {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
}

pub struct Wire {
    socket: Socket,
    buf: BytesMut,
    pub door: Door,
    next_id: u16,
}

impl Wire {
    /// Opens a connection: `mqtt` is the TCP listener, `ws` the WebSocket port.
    pub async fn open(door: Door, mqtt: SocketAddr, ws: SocketAddr) -> Wire {
        let socket = match door {
            Door::Tcp311 | Door::Tcp5 => Socket::Tcp(TcpStream::connect(mqtt).await.unwrap()),
            Door::Ws311 | Door::Ws5 => {
                let mut request = format!("ws://{ws}/mqtt").into_client_request().unwrap();
                request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
                let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
                Socket::Ws(Box::new(ws))
            }
        };
        Wire { socket, buf: BytesMut::new(), door, next_id: 1 }
    }

    /// Opens, sends CONNECT with these credentials and returns the CONNACK
    /// (3.1.1 return codes read as their v5 reason codes).
    pub async fn connect(
        door: Door,
        mqtt: SocketAddr,
        ws: SocketAddr,
        client_id: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> (Wire, ConnAck) {
        let mut wire = Wire::open(door, mqtt, ws).await;
        let connect = Connect {
            protocol: door.version(),
            clean_start: true,
            keep_alive: 30,
            client_id: client_id.to_string(),
            will: None,
            username: username.map(str::to_string),
            password: password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            properties: Default::default(),
        };
        wire.send(&Packet::Connect(Box::new(connect))).await;
        match wire.recv().await {
            Some(Packet::ConnAck(ack)) => (wire, ack),
            other => panic!("{door:?}: expected CONNACK, got {other:?}"),
        }
    }

    /// [`Wire::connect`] that must succeed.
    pub async fn accepted(
        door: Door,
        mqtt: SocketAddr,
        ws: SocketAddr,
        client_id: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Wire {
        let (wire, ack) = Wire::connect(door, mqtt, ws, client_id, username, password).await;
        assert_eq!(ack.reason_code, 0, "{door:?}: CONNACK {ack:?}");
        wire
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.door.version(), &mut out);
        match &mut self.socket {
            Socket::Tcp(s) => s.write_all(&out).await.unwrap(),
            Socket::Ws(ws) => ws.send(WsMessage::Binary(out.freeze())).await.unwrap(),
        }
    }

    /// Sends `packets` in one write (one WebSocket frame): the broker reads
    /// them together, as it does a fast client's.
    pub async fn send_all(&mut self, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for packet in packets {
            encode(packet, self.door.version(), &mut out);
        }
        match &mut self.socket {
            Socket::Tcp(s) => s.write_all(&out).await.unwrap(),
            Socket::Ws(ws) => ws.send(WsMessage::Binary(out.freeze())).await.unwrap(),
        }
    }

    /// Next packet from the server, or `None` once it closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        let version = self.door.version();
        within("a packet or close from the server", async {
            loop {
                if let Some(p) = decode(&mut self.buf, Some(version), usize::MAX).expect("server sent a valid packet") {
                    return Some(p);
                }
                match &mut self.socket {
                    // Large reads, as a real client's (mosquitto_sub reads
                    // what the kernel has): a reader that takes a few bytes
                    // at a time never lets the broker's writes complete at once.
                    Socket::Tcp(s) => match s.read_buf(reserve(&mut self.buf)).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    },
                    Socket::Ws(ws) => match ws.next().await {
                        Some(Ok(WsMessage::Binary(data))) => self.buf.extend_from_slice(&data),
                        Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                        Some(Ok(_)) => {}
                    },
                }
            }
        })
        .await
    }

    fn packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// SUBSCRIBE one filter; the SUBACK's code (3.1.1 failure: 0x80).
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> u8 {
        let packet_id = self.packet_id();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![SubscribeFilter {
                filter: filter.to_string(),
                options: SubscriptionOptions { qos, ..Default::default() },
            }],
            properties: Default::default(),
        }))
        .await;
        loop {
            match self.recv().await {
                Some(Packet::SubAck(ack)) if ack.packet_id == packet_id => return ack.reason_codes[0],
                Some(Packet::Publish(_)) => {}
                other => panic!("{:?}: expected SUBACK, got {other:?}", self.door),
            }
        }
    }

    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &str) -> Option<u8> {
        let packet_id = if qos == QoS::AtMostOnce { 0 } else { self.packet_id() };
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: topic.to_string(),
            packet_id,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            properties: Default::default(),
        }))
        .await;
        if qos == QoS::AtMostOnce {
            return None;
        }
        loop {
            match self.recv().await {
                Some(Packet::PubAck(ack)) if ack.packet_id == packet_id => return Some(ack.reason_code),
                Some(Packet::Publish(_)) => {}
                other => panic!("{:?}: expected PUBACK, got {other:?}", self.door),
            }
        }
    }

    /// The next packet must be a PUBLISH.
    pub async fn expect_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("{:?}: expected PUBLISH, got {other:?}", self.door),
        }
    }

    /// PINGREQ, and the next packet must be PINGRESP: the connection is
    /// open and nothing else was pending for it.
    pub async fn ping_barrier(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Some(Packet::PingResp) => {}
            other => panic!("{:?}: expected PINGRESP and nothing before it, got {other:?}", self.door),
        }
    }

    /// Reads until the server closes; the DISCONNECT it sent first, if any.
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

/// Room for one large read at the end of `buf`.
fn reserve(buf: &mut BytesMut) -> &mut BytesMut {
    buf.reserve(256 * 1024);
    buf
}
