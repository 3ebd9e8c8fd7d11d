//! A small starling.v1 client: what the tests and the load tool speak, and a
//! reference for client authors next to `docs/protocol.md`.
//!
//! Owns: connecting (with the `starling.v1` subprotocol), sending frames and
//! heartbeats, receiving frames. Must never: hide protocol steps. Acks,
//! reconnects and heartbeat timing stay the caller's choice, so tests can
//! misbehave on purpose.

use super::{decode, encode, pb, FrameError, Inbound, HEARTBEAT};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pb::frame::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("connection closed")]
    Closed,
    #[error("unexpected frame: {0:?}")]
    Unexpected(Box<Inbound>),
    #[error("refused with reason 0x{code:02X}: {reason}")]
    Refused { code: u32, reason: String },
}

/// A connection over `S`: a plain TCP stream by default, or any byte stream
/// (a TLS stream for `wss://`, see [`Client::connect_over`]).
pub struct Client<S = MaybeTlsStream<TcpStream>> {
    ws: WebSocketStream<S>,
}

impl Client {
    /// Opens `url` (e.g. `ws://127.0.0.1:8083/ws`) and sends nothing yet.
    pub async fn open(url: &str) -> Result<Client, ClientError> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(super::SUBPROTOCOL));
        let (ws, _response) = tokio_tungstenite::connect_async(request).await?;
        Ok(Client { ws })
    }

    /// Opens `url`, sends `connect` and waits for the `ConnAck`; a refusal is an error.
    pub async fn connect(url: &str, connect: pb::Connect) -> Result<(Client, pb::ConnAck), ClientError> {
        let mut client = Client::open(url).await?;
        client.send(Body::Connect(connect)).await?;
        match client.recv().await? {
            Inbound::Frame(Body::ConnAck(ack)) if ack.reason_code == 0 => Ok((client, ack)),
            Inbound::Frame(Body::ConnAck(ack)) => {
                Err(ClientError::Refused { code: ack.reason_code, reason: ack.reason })
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Upgrades `stream` (already connected, TLS done if any) to a WebSocket
    /// for `url`, sends `connect` and waits for the `ConnAck`.
    pub async fn connect_over(stream: S, url: &str, connect: pb::Connect) -> Result<(Self, pb::ConnAck), ClientError> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(super::SUBPROTOCOL));
        let (ws, _response) = tokio_tungstenite::client_async(request, stream).await?;
        let mut client = Client { ws };
        client.send(Body::Connect(connect)).await?;
        match client.recv().await? {
            Inbound::Frame(Body::ConnAck(ack)) if ack.reason_code == 0 => Ok((client, ack)),
            Inbound::Frame(Body::ConnAck(ack)) => {
                Err(ClientError::Refused { code: ack.reason_code, reason: ack.reason })
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    pub async fn send(&mut self, body: Body) -> Result<(), ClientError> {
        Ok(self.ws.send(WsMessage::Binary(encode(body))).await?)
    }

    /// Sends raw bytes as one binary message (for tests of malformed input).
    pub async fn send_raw(&mut self, data: Vec<u8>) -> Result<(), ClientError> {
        Ok(self.ws.send(WsMessage::Binary(Bytes::from(data))).await?)
    }

    pub async fn heartbeat(&mut self) -> Result<(), ClientError> {
        Ok(self.ws.send(WsMessage::Binary(Bytes::from_static(&[HEARTBEAT]))).await?)
    }

    /// Next heartbeat or frame from the server; `Closed` once it closed.
    pub async fn recv(&mut self) -> Result<Inbound, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(WsMessage::Binary(data))) => return Ok(decode(&data)?),
                Some(Ok(WsMessage::Close(_))) | None => return Err(ClientError::Closed),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Next `Publish`, skipping heartbeats and other frames.
    pub async fn next_publish(&mut self) -> Result<pb::Publish, ClientError> {
        loop {
            if let Inbound::Frame(Body::Publish(p)) = self.recv().await? {
                return Ok(p);
            }
        }
    }

    pub async fn subscribe(&mut self, request_id: u32, filters: &[(&str, u32)]) -> Result<pb::SubAck, ClientError> {
        let filters =
            filters.iter().map(|(f, q)| pb::SubscribeFilter { filter: f.to_string(), qos: Some(*q) }).collect();
        self.send(Body::Subscribe(pb::Subscribe { request_id, filters })).await?;
        loop {
            match self.recv().await? {
                Inbound::Frame(Body::SubAck(ack)) if ack.request_id == request_id => return Ok(ack),
                Inbound::Frame(Body::Publish(_)) | Inbound::Heartbeat => {}
                other => return Err(ClientError::Unexpected(Box::new(other))),
            }
        }
    }

    /// Publishes; for QoS 1 `packet_id` must be 1..=65535 and the `PubAck`
    /// comes through [`Client::recv`].
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: u32,
        packet_id: u32,
    ) -> Result<(), ClientError> {
        let publish =
            pb::Publish { topic: topic.to_string(), payload: payload.into(), qos, packet_id, ..Default::default() };
        self.send(Body::Publish(publish)).await
    }

    pub async fn ack(&mut self, packet_id: u32) -> Result<(), ClientError> {
        self.send(Body::PubAck(pb::PubAck { packet_id, reason_code: 0 })).await
    }

    /// Sends `Disconnect` (reason 0: the will is discarded) and closes.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        self.send(Body::Disconnect(pb::Disconnect::default())).await?;
        let _ = self.ws.close(None).await;
        Ok(())
    }
}
