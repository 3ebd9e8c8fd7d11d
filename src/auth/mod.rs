//! Who a client is ([`Identity`]) and what it may do: authentication by a
//! chain of providers, access control ([`acl`]), roles, single sign-on
//! policy. docs/security.md explains it for operators.
//!
//! Owns: the [`Authenticator`] seam and its providers ([`password`] file,
//! signed tokens [`jwt`], the [`http_hook`]), the policy built from `[auth]`,
//! `[[acl]]` and `[http]` (swapped whole on reload, so a check never sees half
//! of an old policy and half of a new one), and the failure counter.
//! Must never: hold a session or socket, or log a secret. Slow work (argon2,
//! the HTTP hook) runs off the runtime threads and never blocks other
//! clients' traffic.

pub mod acl;
pub mod cooldown;
pub mod http_hook;
pub mod jwks;
pub mod jwt;
pub mod mosquitto_acl;
pub mod mosquitto_hash;
pub mod password;

use crate::config::{Config, Permission, SingleSession};
use crate::model::reason;
use acl::{AccessRules, Action, GrantedFilters, Subject};
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which door a client came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    MqttTcp,
    MqttWebSocket,
    StarlingV1,
    Http,
    /// The broker's own clients: bridges.
    Bridge,
}

impl Transport {
    /// Every transport, in the order of [`Transport::index`] (metrics).
    pub const ALL: [Transport; 5] =
        [Transport::MqttTcp, Transport::MqttWebSocket, Transport::StarlingV1, Transport::Http, Transport::Bridge];

    /// Position in [`Transport::ALL`]: per-transport counters index by it.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            Transport::MqttTcp => "mqtt",
            Transport::MqttWebSocket => "ws-mqtt",
            Transport::StarlingV1 => "ws-proto",
            Transport::Http => "http",
            Transport::Bridge => "bridge",
        }
    }
}

/// What the client presented: MQTT username and password, or a starling.v1
/// `Connect.token` (carried as the password).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.username.as_deref().unwrap_or("").is_empty() && self.password.as_ref().is_none_or(|p| p.is_empty())
    }
}

/// One authentication attempt.
#[derive(Debug, Clone)]
pub struct AuthRequest<'a> {
    pub client_id: &'a str,
    pub credentials: &'a Credentials,
    pub peer: SocketAddr,
    pub transport: Transport,
    /// "3.1.1", "5" or "starling.v1".
    pub protocol: &'static str,
    /// The listener the client reached is bound to a loopback address.
    pub local_listener: bool,
    /// The common name of a verified client certificate (`tls.cn_as_username`).
    pub certificate_user: Option<&'a str>,
}

/// Who a connected client is. Policy (ACL, roles, rate limits, single
/// sign-on, session ownership) keys on `user`, never on a client id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `None`: anonymous.
    pub user: Option<Arc<str>>,
    pub superuser: bool,
    pub roles: Vec<String>,
    /// A token's `acl` claim or the HTTP hook's answer, checked before the rules.
    pub granted: Option<GrantedFilters>,
    /// The device kind for `single_session = "user_device"` (a token's `device` claim).
    pub device: Option<Arc<str>>,
    /// When the credentials stop being valid (a token's `exp`), Unix ms.
    pub expires_at_ms: Option<u64>,
    /// The one client id these credentials may use (a token's `client_id`
    /// claim): a connect with an empty client id is given it.
    pub client_id: Option<Arc<str>>,
}

impl Identity {
    /// The broker's own clients (bridges, the API with an admin key).
    pub fn superuser(name: &str) -> Identity {
        Identity { user: Some(Arc::from(name)), superuser: true, ..Default::default() }
    }

    pub fn user_name(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// A refused authentication: the reason code (0x86 bad credentials, 0x87
/// not authorized, ...) and a message for the log and for MQTT 5 clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRefusal {
    pub code: u8,
    pub why: String,
}

/// One provider's answer.
#[derive(Debug)]
pub enum Decision {
    Allow(Identity),
    Deny(AuthRefusal),
    /// Not this provider's kind of credentials: ask the next one.
    Pass,
}

pub type DecisionFuture<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// A source of identities (password file, signed tokens, an HTTP hook).
pub trait Authenticator: Send + Sync {
    /// The name used in `auth.chain`.
    fn name(&self) -> &'static str;
    fn authenticate<'a>(&'a self, request: &'a AuthRequest<'a>) -> DecisionFuture<'a>;
}

/// Everything built from the configuration; replaced whole on reload.
struct Policy {
    chain: Vec<Box<dyn Authenticator>>,
    allow_anonymous: Option<bool>,
    rules: AccessRules,
    roles: HashMap<String, Vec<String>>,
    single_session: SingleSession,
    api_keys: Vec<String>,
    /// The JWT verifier, also used for `Authorization: Bearer` on the HTTP API.
    jwt: Option<Arc<jwt::JwtVerifier>>,
}

/// The security policy in force: authentication, access control, single sign-on.
pub struct Security {
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    policy: RwLock<Arc<Policy>>,
    anonymous: Arc<Identity>,
    failures: AtomicU64,
    /// Failed logins per username and source address (`cooldown.rs`);
    /// kept across reloads.
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    cooldowns: parking_lot::Mutex<cooldown::Cooldowns>,
    /// Whether loopback peers are tracked by address too (`mqtt.limit_loopback_peers`).
    cooldown_loopback: bool,
    /// Cooldowns started, and attempts refused because of one.
    cooldowns_started: AtomicU64,
    cooling_refusals: AtomicU64,
    denied_publishes: AtomicU64,
    /// The canary's password (user [`CANARY_USER`]): random, never written
    /// anywhere, so only this process's own canary can use it.
    canary_secret: String,
}

/// The user the broker's own canary connects as (`monitor.rs`).
pub const CANARY_USER: &str = "$canary";

/// The user an HTTP API request with an admin key (`[http] api_keys`) acts as.
pub const API_KEY_USER: &str = "$api-key";

/// Whether `user` is one of the broker's own names (`$canary`, `$api-key`,
/// `$bridge/NAME`): no provider may admit a client under one, so a token's
/// `sub`, a password-file user or a hook's answer never becomes the owner of
/// what an API key or a bridge created.
pub fn is_reserved_user(user: &str) -> bool {
    user.starts_with('$')
}

impl Security {
    /// Builds the policy: reads the password file and the token key. Errors
    /// name the key and the file.
    pub fn from_config(config: &Config) -> anyhow::Result<Security> {
        Ok(Security {
            policy: RwLock::new(Arc::new(Policy::build(config, None)?)),
            anonymous: Arc::new(Identity::default()),
            failures: AtomicU64::new(0),
            cooldowns: parking_lot::Mutex::new(cooldown::Cooldowns::new(cooldown_policy(config))),
            cooldown_loopback: config.mqtt.limit_loopback_peers,
            cooldowns_started: AtomicU64::new(0),
            cooling_refusals: AtomicU64::new(0),
            denied_publishes: AtomicU64::new(0),
            canary_secret: format!("{:032x}", rand::random::<u128>()),
        })
    }

    /// Re-reads the password file, keys, rules and roles (SIGHUP). On error
    /// the old policy stays in force. Connections are not dropped: each
    /// check made from now on uses the new policy.
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        let policy = Policy::build(config, Some(&self.policy()))?;
        *self.policy.write() = Arc::new(policy);
        self.cooldowns.lock().set_policy(cooldown_policy(config));
        tracing::info!("security policy reloaded (password file, tokens, ACL rules, roles)");
        Ok(())
    }

    fn policy(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }

    /// Authentication attempts refused so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Login cooldowns started, and attempts refused during one.
    pub fn cooldown_counts(&self) -> (u64, u64) {
        (self.cooldowns_started.load(Ordering::Relaxed), self.cooling_refusals.load(Ordering::Relaxed))
    }

    /// The keys a login attempt counts against: its username (when it
    /// names one) and its source address (loopback peers only when
    /// `mqtt.limit_loopback_peers`, as for the per-IP limits).
    fn login_keys(&self, request: &AuthRequest<'_>) -> Vec<cooldown::LoginKey> {
        let mut keys = Vec::with_capacity(2);
        if let Some(user) = request.credentials.username.as_deref().filter(|u| !u.is_empty()) {
            keys.push(cooldown::LoginKey::User(Arc::from(user)));
        }
        if self.cooldown_loopback || !request.peer.ip().is_loopback() {
            keys.push(cooldown::LoginKey::Address(request.peer.ip()));
        }
        keys
    }

    /// Refuses at once, without verifying anything, an attempt whose
    /// username or address is cooling down.
    fn cooling_down(&self, keys: &[cooldown::LoginKey]) -> Option<AuthRefusal> {
        let now = crate::clock::now_ms();
        let cooldowns = self.cooldowns.lock();
        let (key, until) = keys.iter().find_map(|k| cooldowns.blocked_until(k, now).map(|u| (k, u)))?;
        self.cooling_refusals.fetch_add(1, Ordering::Relaxed);
        Some(AuthRefusal {
            code: reason::BAD_USER_NAME_OR_PASSWORD,
            why: format!("too many failed logins for {key}: try again in {} s", (until - now).div_ceil(1000)),
        })
    }

    /// Counts a login's outcome: a refused credential against each key
    /// (logging a cooldown once, when it starts), a success for its user.
    fn count_login(&self, keys: Vec<cooldown::LoginKey>, refused_credential: bool) {
        let now = crate::clock::now_ms();
        let mut cooldowns = self.cooldowns.lock();
        for key in keys {
            if !refused_credential {
                cooldowns.succeeded(&key);
            } else if let Some(until) = cooldowns.failed(key.clone(), now) {
                self.cooldowns_started.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%key, secs = (until - now).div_ceil(1000), "login cooldown: too many failed logins");
            }
        }
    }

    /// Publishes refused by the access rules so far (QoS 0 ones have no
    /// acknowledgement to carry the refusal: this counter is where they show).
    pub fn denied_publishes(&self) -> u64 {
        self.denied_publishes.load(Ordering::Relaxed)
    }

    pub fn count_denied_publish(&self) {
        self.denied_publishes.fetch_add(1, Ordering::Relaxed);
    }

    /// `[[auth.roles]]` of a local user (a bridge's `local_user`).
    pub fn roles_of(&self, user: &str) -> Vec<String> {
        self.policy().roles.get(user).cloned().unwrap_or_default()
    }

    pub fn single_session(&self) -> SingleSession {
        self.policy().single_session
    }

    /// Asks the providers in order; the first that decides wins. A client
    /// without credentials is anonymous (allowed per `allow_anonymous`).
    /// With no provider configured, credentials are not checked and the
    /// client is anonymous.
    pub async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Arc<Identity>, AuthRefusal> {
        if request.credentials.username.as_deref() == Some(CANARY_USER)
            && request.credentials.password.as_ref().is_some_and(|p| constant_time_eq(p, self.canary_secret.as_bytes()))
        {
            // The broker's own canary: a superuser (it publishes to `$canary/...`).
            return Ok(Arc::new(Identity::superuser(CANARY_USER)));
        }
        let policy = self.policy();
        let result = if let Some(user) = request.certificate_user {
            // Authenticated by a client certificate the configured CA signed.
            match request.credentials.username.as_deref() {
                Some(name) if !name.is_empty() && name != user => Err(AuthRefusal {
                    code: reason::BAD_USER_NAME_OR_PASSWORD,
                    why: format!("username {name:?} is not the client certificate's common name"),
                }),
                _ => Ok(Arc::new(Identity {
                    user: Some(Arc::from(user)),
                    roles: policy.roles.get(user).cloned().unwrap_or_default(),
                    ..Default::default()
                })),
            }
        } else if request.credentials.is_empty() || policy.chain.is_empty() {
            if policy.anonymous_allowed(request.local_listener) {
                Ok(self.anonymous.clone())
            } else {
                Err(AuthRefusal {
                    code: reason::NOT_AUTHORIZED,
                    why: "anonymous clients are not allowed: send a username and password or a token".into(),
                })
            }
        } else {
            let keys = self.login_keys(request);
            if let Some(refusal) = self.cooling_down(&keys) {
                // Not verified, not logged (the cooldown's start was).
                self.failures.fetch_add(1, Ordering::Relaxed);
                return Err(refusal);
            }
            let mut outcome = Err(AuthRefusal {
                code: reason::BAD_USER_NAME_OR_PASSWORD,
                why: "unknown user or bad password".into(),
            });
            for provider in &policy.chain {
                match provider.authenticate(request).await {
                    Decision::Pass => continue,
                    Decision::Allow(mut identity) => {
                        // `[[auth.roles]]` names password-file users: a JWT
                        // `sub` or a hook's user of the same name is someone
                        // else and gets only the roles its own provider says.
                        if identity.roles.is_empty() && provider.name() == "password_file" {
                            if let Some(roles) = identity.user.as_deref().and_then(|u| policy.roles.get(u)) {
                                identity.roles = roles.clone();
                            }
                        }
                        outcome = Ok(Arc::new(identity));
                        break;
                    }
                    Decision::Deny(refusal) => {
                        outcome = Err(refusal);
                        break;
                    }
                }
            }
            // Only a refused credential is a guess (not a hook that is down,
            // a busy verifier, or a token for another client id).
            match &outcome {
                Ok(_) => self.count_login(keys, false),
                Err(r) if r.code == reason::BAD_USER_NAME_OR_PASSWORD => self.count_login(keys, true),
                Err(_) => {}
            }
            outcome
        };
        // The broker's own names are never a client's (a token `sub` of
        // `$api-key` would own what API keys uploaded).
        let result = result.and_then(|identity| match identity.user_name().filter(|u| is_reserved_user(u)) {
            Some(user) => Err(AuthRefusal {
                code: reason::BAD_USER_NAME_OR_PASSWORD,
                why: format!("user name {user:?}: names beginning with $ are the broker's own"),
            }),
            None => Ok(identity),
        });
        if let Err(refusal) = &result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            // Never the password or token: only who tried and why it failed.
            tracing::info!(client_id = request.client_id, username = request.credentials.username.as_deref().unwrap_or(""),
                peer = %request.peer, transport = request.transport.label(), code = refusal.code, why = %refusal.why,
                "authentication refused");
        }
        result
    }

    /// Whether `identity` (connected as `client_id`) may publish to `topic`
    /// or subscribe to `filter` (without any `$share/group/` prefix).
    pub fn allows(&self, identity: &Identity, client_id: &str, action: Action, target: &str) -> bool {
        // Checked on every publish: hold the read guard (no reference-count
        // traffic); writers only come with a reload.
        let policy = self.policy.read();
        let subject = Subject {
            user: identity.user_name(),
            client_id,
            superuser: identity.superuser,
            granted: identity.granted.as_ref(),
        };
        policy.rules.allows(&subject, action, target)
    }

    /// What `identity` (as `client_id`) may receive through a subscription
    /// to `filter` (without any `$share/group/` prefix): refused, or granted
    /// with the holes the rules leave in it.
    pub fn read_access(&self, identity: &Identity, client_id: &str, filter: &str) -> acl::ReadAccess {
        let policy = self.policy.read();
        let subject = Subject {
            user: identity.user_name(),
            client_id,
            superuser: identity.superuser,
            granted: identity.granted.as_ref(),
        };
        policy.rules.read_access(&subject, filter)
    }

    /// The canary's password (for `monitor.rs` only).
    pub fn canary_secret(&self) -> &str {
        &self.canary_secret
    }

    /// Whether `[http] api_keys` holds any key.
    pub fn has_api_keys(&self) -> bool {
        !self.policy().api_keys.is_empty()
    }

    /// Identity for an HTTP API request: an admin key (superuser), a signed
    /// token, or none (anonymous, where anonymous clients are allowed).
    ///
    /// A wrong key or token counts against the peer's address like a wrong
    /// password (login cooldown: a guessed API key costs the guesser time).
    pub fn authenticate_bearer(
        &self,
        authorization: Option<&str>,
        local_listener: bool,
        peer: std::net::IpAddr,
    ) -> Option<Arc<Identity>> {
        let policy = self.policy();
        let Some(value) = authorization else {
            return policy.anonymous_allowed(local_listener).then(|| self.anonymous.clone());
        };
        let keys: Vec<cooldown::LoginKey> = (self.cooldown_loopback || !peer.is_loopback())
            .then_some(cooldown::LoginKey::Address(peer))
            .into_iter()
            .collect();
        if self.cooling_down(&keys).is_some() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let refused = |why: &str| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(why, %peer, "HTTP API key or token refused");
            self.count_login(keys.clone(), true);
            None
        };
        let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim) else {
            return refused("not a Bearer credential");
        };
        if policy.api_keys.iter().any(|k| constant_time_eq(k.as_bytes(), token.as_bytes())) {
            return Some(Arc::new(Identity::superuser(API_KEY_USER)));
        }
        let Some(verifier) = policy.jwt.as_ref() else { return refused("not an API key") };
        match verifier.verify(token, None, "") {
            Ok(identity) => Some(Arc::new(identity)),
            Err(refusal) => refused(&refusal.why),
        }
    }
}

impl Policy {
    /// `previous`: the policy being replaced (a reload), whose fetched key
    /// set is kept when `jwks_url` did not change.
    fn build(config: &Config, previous: Option<&Policy>) -> anyhow::Result<Policy> {
        let auth = &config.auth;
        let mut chain: Vec<Box<dyn Authenticator>> = Vec::new();
        let mut jwt_verifier = None;
        for name in &auth.chain {
            match name.as_str() {
                "password_file" => {
                    let path = auth.password_file.as_ref().expect("validated: password_file set");
                    chain.push(Box::new(password::PasswordFile::load(path, auth.max_concurrent_verifications)?));
                }
                "jwt" => {
                    let cfg = auth.jwt.as_ref().expect("validated: [auth.jwt] set");
                    let previous = previous.and_then(|p| p.jwt.as_deref());
                    let verifier = Arc::new(jwt::JwtVerifier::from_config(cfg, previous)?);
                    jwt_verifier = Some(verifier.clone());
                    chain.push(Box::new(jwt::JwtProvider(verifier)));
                }
                "http" => {
                    let cfg = auth.http.as_ref().expect("validated: [auth.http] set");
                    chain.push(Box::new(http_hook::HttpHook::new(cfg.clone())));
                }
                other => anyhow::bail!("auth.chain: unknown provider {other:?}"),
            }
        }
        let laptop_default =
            auth.chain.is_empty() && auth.allow_anonymous.is_none() && auth.mosquitto_acl_file.is_none();
        let default = auth.acl_default.unwrap_or(if laptop_default { Permission::Allow } else { Permission::Deny });
        let mut rules = config.acl.clone();
        if let Some(path) = &auth.mosquitto_acl_file {
            // After the [[acl]] rules (starling's own say first); read
            // again on every reload, like the password file.
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("auth.mosquitto_acl_file: cannot read {}: {e}", path.display()))?;
            let mapped = mosquitto_acl::map(&text)
                .map_err(|e| anyhow::anyhow!("auth.mosquitto_acl_file {}: {e}", path.display()))?;
            tracing::info!(file = %path.display(), rules = mapped.len(), "Mosquitto ACL file loaded");
            rules.extend(mapped);
        }
        Ok(Policy {
            chain,
            allow_anonymous: auth.allow_anonymous,
            rules: AccessRules::new(rules, default),
            roles: auth.roles.iter().map(|r| (r.user.clone(), r.roles.clone())).collect(),
            single_session: auth.single_session,
            api_keys: config.http.api_keys.clone(),
            jwt: jwt_verifier,
        })
    }

    fn anonymous_allowed(&self, local_listener: bool) -> bool {
        self.allow_anonymous.unwrap_or(local_listener)
    }
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `[auth]`'s login cooldown settings.
fn cooldown_policy(config: &Config) -> cooldown::CooldownPolicy {
    let auth = &config.auth;
    cooldown::CooldownPolicy {
        max_failures: auth.max_failed_logins,
        window_ms: auth.failed_login_window_secs.saturating_mul(1000),
        cooldown_ms: auth.login_cooldown_secs.saturating_mul(1000),
    }
}
