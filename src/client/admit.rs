//! Admission: who may connect, as which session, for every transport
//! alike: reserved client ids, authentication, will checks, session
//! ownership (takeover, and cluster-wide claims), single sign-on, the
//! keep-alive clamp.
//!
//! Owns: [`admit`] and [`attach_trusted`], and what they take and give.
//! Must never: know a wire format, or let a refused connection touch a
//! session.

use super::*;

/// Where a connection comes from.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The listener it reached is bound to a loopback address (anonymous
    /// clients are allowed there unless `auth.allow_anonymous = false`).
    pub local_listener: bool,
    /// The connection is TLS.
    pub tls: bool,
    /// With `tls.cn_as_username`: the verified client certificate's common
    /// name, which authenticates the client as that user.
    pub certificate_user: Option<Arc<str>>,
}

impl Peer {
    pub fn plain(addr: SocketAddr, transport: Transport, local_listener: bool) -> Peer {
        Peer { addr, transport, local_listener, tls: false, certificate_user: None }
    }
}

/// What a client asks for when it connects, in no transport's terms.
#[derive(Debug, Clone, Default)]
pub struct ConnectInfo {
    /// Empty: the broker assigns one.
    pub client_id: String,
    pub clean_start: bool,
    /// Seconds; `NEVER_EXPIRES` for an MQTT 3.1.1 persistent session.
    pub session_expiry_secs: u32,
    pub receive_maximum: u16,
    /// Keep-alive (MQTT) or heartbeat (starling.v1) in seconds; 0: none.
    pub keep_alive_secs: u32,
    /// Whether the protocol can tell the client a lower keep-alive (MQTT 5,
    /// starling.v1); MQTT 3.1.1 cannot, so its request is kept.
    pub may_lower_keep_alive: bool,
    pub will: Option<LastWill>,
    pub credentials: Credentials,
    /// "3.1.1", "5" or "starling.v1" (for logs and the HTTP hook).
    pub protocol: &'static str,
}

/// A refused connection: reason code and why (for logs and MQTT 5 / starling.v1 clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: u8,
    pub why: String,
}

/// An accepted connection: the client, and what the transport tells it.
pub struct Admitted {
    pub client: Client,
    pub session_present: bool,
    /// Set when the broker chose the client id.
    pub assigned_client_id: Option<String>,
    /// Session expiry after the configured cap.
    pub session_expiry_secs: u32,
    /// The keep-alive in force (lower than asked when the protocol allows).
    pub keep_alive_secs: u32,
    /// Unacknowledged deliveries from before, to send first.
    pub resend: Vec<Outgoing>,
}

/// Checks who the client is and attaches it to its session.
pub async fn admit(broker: &Arc<Broker>, peer: &Peer, info: ConnectInfo) -> Result<Admitted, Refused> {
    // Every refusal is counted by reason (`starling_connects_refused_total`).
    let refuse = |code: u8, why: String| {
        broker.stats.refused(RefusedBecause::from_code(code));
        Err(Refused { code, why })
    };
    if info.client_id.starts_with(crate::model::BRIDGE_CLIENT_ID_PREFIX) {
        return refuse(
            reason::CLIENT_IDENTIFIER_NOT_VALID,
            "client ids starting with $bridge/ are reserved for bridges".into(),
        );
    }
    let security = broker.security();
    let request = AuthRequest {
        client_id: &info.client_id,
        credentials: &info.credentials,
        peer: peer.addr,
        transport: peer.transport,
        protocol: info.protocol,
        local_listener: peer.local_listener,
        certificate_user: peer.certificate_user.as_deref(),
    };
    let identity = match security.authenticate(&request).await {
        Ok(identity) => identity,
        Err(r) => return refuse(r.code, r.why),
    };
    // A token bound to one client id: an empty client id is given it (and
    // told it, as an assigned one), any other was refused by the token check.
    let mut info = info;
    let mut bound_assigned = None;
    if let (true, Some(bound)) = (info.client_id.is_empty(), identity.client_id.as_deref()) {
        info.client_id = bound.to_string();
        bound_assigned = Some(bound.to_string());
    }
    if let Some(will) = &info.will {
        if let Err(e) = TopicName::new(&will.topic) {
            return refuse(reason::TOPIC_NAME_INVALID, format!("will topic: {e}"));
        }
        // A will is a publish: the same rules as a PUBLISH (the ACL and the
        // topic class's roles, high priority included), here and again when
        // it is published.
        let mut message = crate::broker::Message::new(
            TopicName::new(&will.topic).expect("checked above"),
            will.payload.clone(),
            will.qos,
            will.retain,
        );
        if !broker.may_publish(&identity, &info.client_id, &mut message) {
            return refuse(reason::NOT_AUTHORIZED, format!("not allowed to publish the will topic {:?}", will.topic));
        }
    }
    let max_keep_alive = u32::from(broker.config().mqtt.max_keep_alive_secs);
    let keep_alive_secs = if info.may_lower_keep_alive && info.keep_alive_secs > max_keep_alive {
        max_keep_alive
    } else {
        info.keep_alive_secs
    };
    let connected = broker
        .connect(ConnectRequest {
            client_id: info.client_id,
            clean_start: info.clean_start,
            session_expiry_secs: info.session_expiry_secs,
            receive_maximum: info.receive_maximum,
            user: identity.user.clone(),
            device: identity.device.clone(),
            attachment: crate::broker::Attachment {
                transport: peer.transport,
                protocol: info.protocol,
                peer: Some(peer.addr),
                keep_alive_secs,
                connected_at_ms: now_ms(),
                identity: Some(identity.clone()),
            },
        })
        .map_err(|refused| {
            let refused = match refused {
                ConnectRefused::SessionOfAnotherUser => Refused {
                    code: reason::CLIENT_IDENTIFIER_NOT_VALID,
                    why: "this client id belongs to a session of another user".into(),
                },
                ConnectRefused::TooManySessions => {
                    broker.stats.limit_hit(Limit::Sessions);
                    Refused {
                        code: reason::QUOTA_EXCEEDED,
                        why: "the broker holds as many sessions as it may (session.max_sessions)".into(),
                    }
                }
            };
            broker.stats.refused(RefusedBecause::from_code(refused.code));
            refused
        })?;
    if connected.session_present {
        // A resumed session keeps only what this identity may still read
        // (a new token, rules reloaded while it was away, a restart).
        broker.recheck_subscriptions(&connected.session, &identity);
    }
    let mut session_present = connected.session_present;
    if let Some(backplane) = broker.backplane() {
        // The client id (and single sign-on) hold cluster-wide: the node
        // that had this client closes it there and hands its session over.
        let moved = backplane.claim(
            &connected.session.client_id,
            identity.user.as_deref(),
            identity.device.as_deref(),
            info.clean_start,
            !info.clean_start && connected.session.is_persistent(),
        );
        // A session resumed here that another node held: wait (bounded) for
        // it to arrive, so the CONNACK can say it is present. MQTT clients
        // that read "not present" discard their session state.
        if let Some(moved) = moved.filter(|_| !session_present) {
            let limit = broker.config().cluster.as_ref().map_or(0, |c| c.handover_timeout_ms);
            session_present = matches!(tokio::time::timeout(Duration::from_millis(limit), moved).await, Ok(Ok(true)));
        }
    }
    if let Some(user) = identity.user.as_deref() {
        let signed_out = match security.single_session() {
            SingleSession::Off => 0,
            SingleSession::User => broker.sign_out_others(user, false, None, connected.connection_id),
            SingleSession::UserDevice => {
                broker.sign_out_others(user, true, identity.device.as_deref(), connected.connection_id)
            }
        };
        if signed_out > 0 {
            tracing::debug!(user, signed_out, "single sign-on: older connections asked to close");
        }
    }
    let identity_user = identity.user.clone();
    // One line per accepted connection, what operators grep for (the
    // canary's probes, several each interval, at debug).
    let user = identity.user_name().unwrap_or("");
    if user == crate::auth::CANARY_USER {
        tracing::debug!(client_id = %connected.session.client_id, peer = %peer.addr, "canary connected");
    } else {
        tracing::info!(client_id = %connected.session.client_id, user, transport = peer.transport.label(),
            peer = %peer.addr, protocol = info.protocol, keep_alive_secs, session_present, "client connected");
    }
    broker.stats.connected(peer.transport);
    Ok(Admitted {
        client: Client {
            transport: peer.transport,
            broker: broker.clone(),
            session: connected.session,
            identity,
            close_waker: None,
            connection_id: connected.connection_id,
            will: info.will.map(Box::new),
            // Silent for 1.5 × keep-alive: closed ([MQTT-3.1.2-22]). No
            // keep-alive still does not mean forever: `mqtt.idle_timeout_secs`.
            liveness_ms: if keep_alive_secs > 0 {
                keep_alive_secs.saturating_mul(1500)
            } else {
                u32::try_from(broker.config().mqtt.idle_timeout_secs.saturating_mul(1000)).unwrap_or(u32::MAX)
            },
            routed: 0,
            yield_before_routing: false,
            batches: 0,
            rate_key: match identity_user.as_deref() {
                Some(user) => Some(Arc::from(format!("user:{user}"))),
                None if peer.addr.ip().is_loopback() && !broker.config().mqtt.limit_loopback_peers => None,
                None => Some(Arc::from(format!("ip:{}", peer.addr.ip()))),
            },
            finished: false,
            owed: None,
        },
        session_present,
        assigned_client_id: connected.assigned_client_id.or(bound_assigned),
        session_expiry_secs: connected.session_expiry_secs,
        keep_alive_secs,
        resend: connected.resend,
    })
}

/// Attaches one of the broker's own clients (a bridge) to the session it
/// connected with `Broker::connect`: no authentication, no keep-alive, not
/// subject to the ACL (a superuser identity named `name`). Returns the client
/// and the deliveries to resend first.
pub fn attach_trusted(
    broker: &Arc<Broker>,
    connected: crate::broker::Connected,
    name: &str,
) -> (Client, Vec<Outgoing>) {
    broker.stats.connected(Transport::Bridge);
    let client = Client {
        transport: Transport::Bridge,
        broker: broker.clone(),
        session: connected.session,
        identity: Arc::new(Identity::superuser(name)),
        close_waker: None,
        connection_id: connected.connection_id,
        will: None,
        liveness_ms: 0,
        routed: 0,
        yield_before_routing: false,
        batches: 0,
        rate_key: None,
        finished: false,
        owed: None,
    };
    (client, connected.resend)
}
