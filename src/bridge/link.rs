//! One connection attempt to the remote broker through rumqttc, MQTT 3.1.1
//! or 5, behind one small interface.
//!
//! Owns: building rumqttc's options, the task that polls rumqttc's event loop
//! (so the bridge's own loop only waits on channels, which are cancel safe in
//! `select!`), and translating rumqttc's events and requests for both
//! protocol versions. Must never: decide what to send or how to map topics;
//! that is the bridge's. A link is used for one connection: when it ends,
//! the bridge opens a new one (rumqttc's own retransmission state is not
//! used; the bridge's local session holds what must be resent).

use crate::broker::{Message, MessageProperties};
use crate::clock::now_ms;
use crate::config::{BridgeConfig, BridgeVersion};
use crate::model::QoS;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as mqtt5;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Requests waiting in rumqttc's channel at most (publishes, acks, subscribes).
pub(super) const REQUEST_CAPACITY: usize = 512;
/// Events buffered between rumqttc's poll task and the bridge loop; when it is
/// full, the poll task waits, so a slow local side slows the remote down
/// rather than queueing without bound.
const EVENT_CAPACITY: usize = 256;

/// Everything needed to open a connection; built once per bridge.
#[derive(Clone)]
pub(super) struct LinkOptions {
    pub v5: bool,
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    pub clean_session: bool,
    pub credentials: Option<(String, String)>,
    pub tls: Option<rumqttc::TlsConfiguration>,
    pub max_packet_size: u32,
    /// QoS 1 publishes this side keeps in flight towards the remote.
    pub inflight: u16,
}

impl LinkOptions {
    /// Reads the TLS files (the only I/O); errors name the bridge and the key.
    pub fn from_config(config: &BridgeConfig, max_packet_size: u32, inflight: u16) -> anyhow::Result<LinkOptions> {
        let (host, port) = config.host_port().map_err(|e| anyhow::anyhow!("bridge {:?}: address: {e}", config.name))?;
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("bridge {:?}: {key} {}: {e}", config.name, path.display()))
        };
        let tls = match &config.tls_ca_file {
            None => None,
            Some(ca) => {
                let ca = read("tls_ca_file", ca)?;
                let client_auth = match (&config.tls_cert_file, &config.tls_key_file) {
                    (Some(cert), Some(key)) => Some((read("tls_cert_file", cert)?, read("tls_key_file", key)?)),
                    _ => None,
                };
                Some(rumqttc::TlsConfiguration::Simple { ca, alpn: None, client_auth })
            }
        };
        Ok(LinkOptions {
            v5: config.version == BridgeVersion::V5,
            client_id: config.remote_client_id(),
            host,
            port,
            keep_alive: Duration::from_secs(u64::from(config.keep_alive_secs)),
            clean_session: config.clean_session,
            credentials: config.username.clone().map(|u| (u, config.password.clone().unwrap_or_default())),
            tls,
            max_packet_size,
            inflight,
        })
    }
}

/// What happened on the link, in the order rumqttc reported it.
#[derive(Debug)]
pub(super) enum LinkEvent {
    ConnAck {
        session_present: bool,
        /// The remote's Receive Maximum (MQTT 5).
        receive_maximum: Option<u16>,
    },
    Publish(RemotePublish),
    /// rumqttc took the next publish request off its channel and gave it this
    /// packet id (0 for QoS 0). Publishes are taken in the order they were sent.
    Sent {
        pkid: u16,
    },
    PubAck {
        pkid: u16,
    },
    /// The remote answered our SUBSCRIBE; `refused` lists the positions of
    /// the filters it refused.
    SubAck {
        refused: Vec<usize>,
    },
    /// The connection ended (or never came up); nothing follows.
    Closed(String),
}

/// A message from the remote.
#[derive(Debug)]
pub(super) struct RemotePublish {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: MessageProperties,
    pub expiry_secs: Option<u32>,
    pub ack: AckHandle,
}

impl RemotePublish {
    pub fn needs_ack(&self) -> bool {
        self.qos != QoS::AtMostOnce
    }
}

/// What it takes to acknowledge a remote publish (its packet id and QoS).
#[derive(Debug, Clone, Copy)]
pub(super) struct AckHandle {
    pkid: u16,
    qos: QoS,
}

/// What the bridge asks the link to send.
#[derive(Debug, Clone)]
pub(super) enum Request {
    /// `message` carries the MQTT 5 properties (MQTT 5 links only);
    /// `local_id` is the local session's packet id (0 for QoS 0), for the bridge.
    Publish {
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        message: Option<std::sync::Arc<Message>>,
        local_id: u16,
    },
    Ack(AckHandle),
    /// Filters with their QoS; `no_local` is set for MQTT 5.
    Subscribe(Vec<(String, QoS)>),
    Disconnect,
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub(super) struct Link {
    client: Client,
    pub events: mpsc::Receiver<LinkEvent>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Link {
    /// Starts connecting; the first event is `ConnAck` or `Closed`.
    pub fn open(o: &LinkOptions) -> Link {
        let (tx, events) = mpsc::channel(EVENT_CAPACITY);
        let transport = match &o.tls {
            Some(tls) => rumqttc::Transport::tls_with_config(tls.clone()),
            None => rumqttc::Transport::tcp(),
        };
        if o.v5 {
            let mut opts = rumqttc::v5::MqttOptions::new(&o.client_id, &o.host, o.port);
            opts.set_keep_alive(o.keep_alive)
                .set_clean_start(o.clean_session)
                .set_manual_acks(true)
                .set_transport(transport)
                .set_max_packet_size(Some(o.max_packet_size))
                .set_outgoing_inflight_upper_limit(o.inflight);
            if !o.clean_session {
                // A persistent remote session: keep it until we come back.
                opts.set_session_expiry_interval(Some(u32::MAX));
            }
            if let Some((user, pass)) = &o.credentials {
                opts.set_credentials(user, pass);
            }
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, REQUEST_CAPACITY);
            Link { client: Client::V5(client), events, task: tokio::spawn(poll_v5(eventloop, tx)) }
        } else {
            let mut opts = rumqttc::MqttOptions::new(&o.client_id, &o.host, o.port);
            let max = o.max_packet_size as usize;
            opts.set_keep_alive(o.keep_alive)
                .set_clean_session(o.clean_session)
                .set_manual_acks(true)
                .set_transport(transport)
                .set_max_packet_size(max, max)
                .set_inflight(o.inflight);
            if let Some((user, pass)) = &o.credentials {
                opts.set_credentials(user, pass);
            }
            let (client, eventloop) = rumqttc::AsyncClient::new(opts, REQUEST_CAPACITY);
            Link { client: Client::V4(client), events, task: tokio::spawn(poll_v4(eventloop, tx)) }
        }
    }

    /// Hands a request to rumqttc without waiting. `false` when its channel
    /// is full (or the link is closing): keep the request and try again after
    /// the next event.
    pub fn try_send(&self, request: &Request) -> bool {
        match (&self.client, request.clone()) {
            (Client::V4(c), Request::Publish { topic, qos, retain, payload, .. }) => {
                c.try_publish(topic, qos4(qos), retain, payload).is_ok()
            }
            (Client::V5(c), Request::Publish { topic, qos, retain, payload, message, .. }) => match message {
                Some(m) => c.try_publish_with_properties(topic, qos5(qos), retain, payload, properties5(&m)).is_ok(),
                None => c.try_publish(topic, qos5(qos), retain, payload).is_ok(),
            },
            (Client::V4(c), Request::Ack(a)) => {
                let mut p = rumqttc::Publish::new("", qos4(a.qos), Vec::new());
                p.pkid = a.pkid;
                c.try_ack(&p).is_ok()
            }
            (Client::V5(c), Request::Ack(a)) => {
                let mut p = mqtt5::Publish::new("", qos5(a.qos), Bytes::new(), None);
                p.pkid = a.pkid;
                c.try_ack(&p).is_ok()
            }
            (Client::V4(c), Request::Subscribe(filters)) => c
                .try_subscribe_many(filters.into_iter().map(|(f, q)| rumqttc::SubscribeFilter::new(f, qos4(q))))
                .is_ok(),
            (Client::V5(c), Request::Subscribe(filters)) => {
                let filters = filters.into_iter().map(|(path, q)| mqtt5::Filter {
                    path,
                    qos: qos5(q),
                    // Loop prevention: the remote never sends back what this link published.
                    nolocal: true,
                    preserve_retain: true,
                    // A resubscription on a resumed session does not resend retained messages.
                    retain_forward_rule: mqtt5::RetainForwardRule::OnNewSubscribe,
                });
                c.try_subscribe_many(filters).is_ok()
            }
            (Client::V4(c), Request::Disconnect) => c.try_disconnect().is_ok(),
            (Client::V5(c), Request::Disconnect) => c.try_disconnect().is_ok(),
        }
    }
}

fn qos4(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    match q {
        QoS::AtMostOnce => Q5::AtMostOnce,
        QoS::AtLeastOnce => Q5::AtLeastOnce,
        QoS::ExactlyOnce => Q5::ExactlyOnce,
    }
}

fn from_qos4(q: rumqttc::QoS) -> QoS {
    match q {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn from_qos5(q: rumqttc::v5::mqttbytes::QoS) -> QoS {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    match q {
        Q5::AtMostOnce => QoS::AtMostOnce,
        Q5::AtLeastOnce => QoS::AtLeastOnce,
        Q5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The MQTT 5 properties a local message carries to the remote (the expiry
/// interval is what is left of it).
fn properties5(m: &Message) -> mqtt5::PublishProperties {
    let p = &m.properties;
    mqtt5::PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: m.remaining_expiry_secs(now_ms()),
        topic_alias: None,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        subscription_identifiers: Vec::new(),
        content_type: p.content_type.clone(),
    }
}

async fn poll_v4(mut eventloop: rumqttc::EventLoop, tx: mpsc::Sender<LinkEvent>) {
    use rumqttc::{Event, Outgoing, Packet};
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                LinkEvent::ConnAck { session_present: ack.session_present, receive_maximum: None }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Publish(RemotePublish {
                ack: AckHandle { pkid: p.pkid, qos: from_qos4(p.qos) },
                topic: p.topic,
                payload: p.payload,
                qos: from_qos4(p.qos),
                retain: p.retain,
                properties: MessageProperties::default(),
                expiry_secs: None,
            }),
            Ok(Event::Incoming(Packet::PubAck(ack))) => LinkEvent::PubAck { pkid: ack.pkid },
            Ok(Event::Incoming(Packet::SubAck(ack))) => LinkEvent::SubAck {
                refused: positions(&ack.return_codes, |c| matches!(c, rumqttc::SubscribeReasonCode::Failure)),
            },
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent { pkid },
            Ok(Event::Outgoing(Outgoing::Disconnect)) => LinkEvent::Closed("disconnected".into()),
            Ok(_) => continue,
            Err(e) => LinkEvent::Closed(e.to_string()),
        };
        let closed = matches!(event, LinkEvent::Closed(_));
        if tx.send(event).await.is_err() || closed {
            return;
        }
    }
}

fn positions<T>(codes: &[T], refused: impl Fn(&T) -> bool) -> Vec<usize> {
    codes.iter().enumerate().filter(|(_, c)| refused(c)).map(|(i, _)| i).collect()
}

async fn poll_v5(mut eventloop: rumqttc::v5::EventLoop, tx: mpsc::Sender<LinkEvent>) {
    use mqtt5::Packet;
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => LinkEvent::ConnAck {
                session_present: ack.session_present,
                receive_maximum: ack.properties.and_then(|p| p.receive_max),
            },
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // A topic that is not UTF-8 maps to no rule: acknowledged and dropped.
                let topic = String::from_utf8(p.topic.to_vec()).unwrap_or_default();
                let props = p.properties.unwrap_or_default();
                LinkEvent::Publish(RemotePublish {
                    ack: AckHandle { pkid: p.pkid, qos: from_qos5(p.qos) },
                    topic,
                    payload: p.payload,
                    qos: from_qos5(p.qos),
                    retain: p.retain,
                    expiry_secs: props.message_expiry_interval,
                    properties: MessageProperties {
                        payload_format_indicator: props.payload_format_indicator,
                        content_type: props.content_type,
                        response_topic: props.response_topic,
                        correlation_data: props.correlation_data,
                        user_properties: props.user_properties,
                    },
                })
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => LinkEvent::PubAck { pkid: ack.pkid },
            Ok(Event::Incoming(Packet::SubAck(ack))) => LinkEvent::SubAck {
                refused: positions(&ack.return_codes, |c| !matches!(c, mqtt5::SubscribeReasonCode::Success(_))),
            },
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent { pkid },
            Ok(Event::Outgoing(Outgoing::Disconnect)) => LinkEvent::Closed("disconnected".into()),
            Ok(_) => continue,
            Err(e) => LinkEvent::Closed(e.to_string()),
        };
        let closed = matches!(event, LinkEvent::Closed(_));
        if tx.send(event).await.is_err() || closed {
            return;
        }
    }
}
