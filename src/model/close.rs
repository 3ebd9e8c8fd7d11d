//! Why a client's connection ended (any transport): one enum used by logs, the DISCONNECT reason
//! code and the will decision, so the three can never disagree.

use super::reason;

/// How a connection ended, as far as the will message is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WillAction {
    /// Normal DISCONNECT: discard the will ([MQTT-3.1.2-10]).
    Discard,
    /// Abnormal end, or DISCONNECT with reason 0x04: publish it (after the will delay).
    Publish,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// DISCONNECT with reason 0x00: the will is discarded.
    ClientDisconnected,
    /// DISCONNECT with reason 0x04 (MQTT 5): the will is published.
    ClientDisconnectedWithWill,
    /// The peer closed the socket without DISCONNECT.
    PeerClosed,
    /// A read or write failed.
    Io(String),
    /// Nothing received for 1.5 × keep-alive ([MQTT-3.1.2-22]).
    KeepAliveTimeout,
    /// No CONNECT within `mqtt.connect_timeout_secs`.
    ConnectTimeout,
    /// A write did not complete within `mqtt.write_timeout_secs`: the client
    /// stopped reading.
    WriteTimeout,
    /// Another connection with the same client id took the session.
    TakenOver,
    /// Single sign-on: a newer connection of the same user (and device kind)
    /// signed in, on any transport (`auth.single_session`).
    SignedInElsewhere,
    /// The credentials the client connected with expired (a signed token's
    /// `exp` passed); reconnect with fresh ones.
    CredentialsExpired,
    /// The broker is shutting down.
    ServerShutdown,
    /// An operator closed the connection (`DELETE /api/v1/clients/{id}`).
    AdministrativeAction,
    /// A QoS 1/2 publish could not be accepted and the protocol cannot say
    /// so in its acknowledgement (MQTT 3.1.1): the connection is closed
    /// without one, so the client sends the message again.
    PublishFailed { code: u8, what: String },
    /// Bytes that are not a valid packet or frame: the transport's decoder
    /// names the problem and the reason code (0x81 malformed, 0x95 too large, ...).
    Malformed { code: u8, what: String },
    /// A valid packet that breaks a protocol rule; `what` names the rule.
    Violation { code: u8, what: String },
}

impl CloseReason {
    pub fn violation(code: u8, what: impl Into<String>) -> CloseReason {
        CloseReason::Violation { code, what: what.into() }
    }

    /// Reason code for the DISCONNECT the server sends (MQTT 5 only), or
    /// `None` when the server sends none (the client ended it, or the socket is gone).
    pub fn disconnect_code(&self) -> Option<u8> {
        match self {
            CloseReason::ClientDisconnected
            | CloseReason::ClientDisconnectedWithWill
            | CloseReason::PeerClosed
            | CloseReason::Io(_)
            | CloseReason::ConnectTimeout
            | CloseReason::WriteTimeout => None,
            CloseReason::KeepAliveTimeout => Some(reason::KEEP_ALIVE_TIMEOUT),
            CloseReason::TakenOver | CloseReason::SignedInElsewhere => Some(reason::SESSION_TAKEN_OVER),
            CloseReason::CredentialsExpired => Some(reason::MAXIMUM_CONNECT_TIME),
            CloseReason::ServerShutdown => Some(reason::SERVER_SHUTTING_DOWN),
            CloseReason::AdministrativeAction => Some(reason::ADMINISTRATIVE_ACTION),
            CloseReason::Malformed { code, .. } => Some(*code),
            CloseReason::Violation { code, .. } | CloseReason::PublishFailed { code, .. } => Some(*code),
        }
    }

    /// Every end but a normal DISCONNECT publishes the will ([MQTT-3.1.2-8]).
    /// A server shutdown does not: the broker is going away and the client did
    /// nothing wrong (documented in docs/architecture.md).
    pub fn will_action(&self) -> WillAction {
        match self {
            CloseReason::ClientDisconnected | CloseReason::ServerShutdown => WillAction::Discard,
            _ => WillAction::Publish,
        }
    }

    /// Every label [`CloseReason::label`] gives, in [`CloseReason::index`] order.
    pub const LABELS: [&'static str; 15] = [
        "client_disconnect",
        "client_disconnect_with_will",
        "peer_closed",
        "io_error",
        "keep_alive_timeout",
        "connect_timeout",
        "write_timeout",
        "session_taken_over",
        "signed_in_elsewhere",
        "credentials_expired",
        "server_shutdown",
        "administrative_action",
        "malformed_packet",
        "protocol_violation",
        "publish_failed",
    ];

    /// Position of the label in [`CloseReason::LABELS`] (per-reason counters).
    pub fn index(&self) -> usize {
        let label = self.label();
        Self::LABELS.iter().position(|l| *l == label).expect("every label is listed")
    }

    /// Short stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::ClientDisconnected => "client_disconnect",
            CloseReason::ClientDisconnectedWithWill => "client_disconnect_with_will",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Io(_) => "io_error",
            CloseReason::KeepAliveTimeout => "keep_alive_timeout",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::TakenOver => "session_taken_over",
            CloseReason::SignedInElsewhere => "signed_in_elsewhere",
            CloseReason::CredentialsExpired => "credentials_expired",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::AdministrativeAction => "administrative_action",
            CloseReason::Malformed { .. } => "malformed_packet",
            CloseReason::Violation { .. } => "protocol_violation",
            CloseReason::PublishFailed { .. } => "publish_failed",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Io(e) => write!(f, "{}: {e}", self.label()),
            CloseReason::Malformed { code, what } => write!(f, "{} (0x{code:02X}): {what}", self.label()),
            CloseReason::Violation { code, what } | CloseReason::PublishFailed { code, what } => {
                write!(f, "{} (0x{code:02X}): {what}", self.label())
            }
            _ => f.write_str(self.label()),
        }
    }
}
