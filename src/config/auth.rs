//! The security sections of the configuration: `[auth]` (who may connect),
//! `[[acl]]` (what they may touch), `[http] api_keys` and the WebSocket
//! `allowed_origins`. Documented key by key in docs/configuration.md and
//! explained in docs/security.md.
//!
//! Owns: the shapes, defaults and validation of those keys.
//! Must never: read the files they name (the password file and keys are read
//! by `crate::auth` when the broker starts or reloads).

use serde::Deserialize;
use std::path::PathBuf;

/// `[auth]`: authentication providers and the defaults that apply when none decides.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether clients without credentials may connect. Unset: only on
    /// listeners bound to a loopback address (and a non-loopback listener
    /// with no provider refuses to start until this is set explicitly).
    pub allow_anonymous: Option<bool>,
    /// Providers asked in order; the first that decides (allow or deny) wins.
    pub chain: Vec<String>,
    /// `username:ARGON2ID-PHC` lines, managed by `starling passwd`.
    pub password_file: Option<PathBuf>,
    /// What the ACL says when no rule matches. Unset: "allow" while anonymous
    /// loopback use is on (no provider configured), otherwise "deny".
    pub acl_default: Option<Permission>,
    /// A Mosquitto ACL file (`acl_file`), mapped onto rules after `[[acl]]`
    /// (auth/mosquitto_acl.rs); with it the default is "deny".
    pub mosquitto_acl_file: Option<PathBuf>,
    /// Single sign-on: one connection per user (or per user and device kind).
    pub single_session: SingleSession,
    pub jwt: Option<JwtConfig>,
    pub http: Option<HttpHookConfig>,
    /// Roles of password-file users (tokens and the hook carry their own).
    pub roles: Vec<UserRoles>,
    /// Failed logins for one username, or from one source address, within
    /// `failed_login_window_secs` that start a login cooldown (0: off).
    pub max_failed_logins: u32,
    pub failed_login_window_secs: u64,
    /// The first cooldown; each repeat doubles it, up to an hour.
    pub login_cooldown_secs: u64,
    /// Password verifications (argon2) running at once, at most (0: twice
    /// the cores). Excess attempts wait up to a second, then are refused as
    /// server busy (0x89).
    pub max_concurrent_verifications: usize,
    /// Whether a client allowed a filter may also join any shared group on
    /// it (`$share/GROUP/FILTER`). Off: a shared subscription needs a rule
    /// that names it (`topic = "$share/workers/jobs/+"`), as well as the
    /// plain filter's rights.
    pub share_groups_follow_filter: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: None,
            chain: Vec::new(),
            password_file: None,
            acl_default: None,
            mosquitto_acl_file: None,
            single_session: SingleSession::default(),
            jwt: None,
            http: None,
            roles: Vec::new(),
            max_failed_logins: 10,
            failed_login_window_secs: 300,
            login_cooldown_secs: 5,
            max_concurrent_verifications: 0,
            share_groups_follow_filter: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 shared secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key (RSA for RS256, P-256 for ES256).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// An identity provider's key set (JWKS), fetched in the background; a
    /// token's `kid` picks the key.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the key set is fetched again (also early, at most every
    /// 5 s, when a token names a key the set does not hold).
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// Required `iss`, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    #[serde(default)]
    pub audience: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHookConfig {
    /// POSTed `{client_id, username, password, peer, transport, protocol}`.
    pub url: String,
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    /// How long an answer (allow or deny) is reused for the same credentials.
    #[serde(default = "default_hook_cache_secs")]
    pub cache_secs: u64,
    /// What a hook that is down, slow or answering nonsense means.
    #[serde(default)]
    pub fail: FailMode,
}

fn default_jwks_refresh_secs() -> u64 {
    300
}

impl Default for JwtConfig {
    fn default() -> JwtConfig {
        JwtConfig {
            secret: None,
            public_key_file: None,
            jwks_url: None,
            jwks_refresh_secs: default_jwks_refresh_secs(),
            issuer: None,
            audience: None,
        }
    }
}

fn default_hook_timeout_ms() -> u64 {
    2000
}

fn default_hook_cache_secs() -> u64 {
    60
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    #[default]
    Closed,
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SingleSession {
    #[default]
    Off,
    /// A new connection of a user closes that user's older ones.
    User,
    /// ... only those that signed in with the same `device` claim.
    UserDevice,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRoles {
    pub user: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    Publish,
    Subscribe,
    All,
}

/// One `[[acl]]` rule; rules are evaluated in order and the first match wins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// A user name, or "*" for anyone (anonymous clients included).
    #[serde(default = "anyone")]
    pub user: String,
    /// A client id, a prefix ending in "*", or "*".
    #[serde(default = "anyone")]
    pub client: String,
    pub action: AclAction,
    /// A topic filter; `%u` is the user name and `%c` the client id.
    pub topic: String,
    pub permission: Permission,
}

fn anyone() -> String {
    "*".to_string()
}

/// `[http]`: the admin listener (health, readiness, metrics) and the keys
/// of the HTTP APIs (admin listener and `/api/v1` on the WebSocket port).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub bind: std::net::SocketAddr,
    /// Keys accepted as `Authorization: Bearer KEY` (full access to the API).
    pub api_keys: Vec<String>,
    /// Host names the admin listener answers to (DNS rebinding): besides
    /// these, IP addresses and `localhost`; `["*"]`: any. Other `Host`s get
    /// 421, so the keyless loopback admission serves only a listed `Host`.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { bind: ([127, 0, 0, 1], 18083).into(), api_keys: Vec::new(), allowed_hosts: Vec::new() }
    }
}

pub const PROVIDERS: &[&str] = &["password_file", "jwt", "http"];

impl AuthConfig {
    pub fn validate(&self, acl: &[AclRule], problems: &mut Vec<String>) {
        if self.max_failed_logins > 0 && (self.failed_login_window_secs == 0 || self.login_cooldown_secs == 0) {
            problems.push(
                "auth.failed_login_window_secs and auth.login_cooldown_secs must be above 0 while max_failed_logins is"
                    .into(),
            );
        }
        for (i, name) in self.chain.iter().enumerate() {
            if !PROVIDERS.contains(&name.as_str()) {
                problems.push(format!("auth.chain[{i}] = {name:?}: unknown provider; one of {}", PROVIDERS.join(", ")));
            }
            if self.chain[..i].contains(name) {
                problems.push(format!("auth.chain[{i}] = {name:?}: listed twice"));
            }
        }
        let in_chain = |p: &str| self.chain.iter().any(|c| c == p);
        if in_chain("password_file") && self.password_file.is_none() {
            problems.push("auth.chain has \"password_file\" but auth.password_file is not set".into());
        }
        if !in_chain("password_file") && self.password_file.is_some() {
            problems.push("auth.password_file is set but \"password_file\" is not in auth.chain".into());
        }
        match (&self.jwt, in_chain("jwt")) {
            (None, true) => problems.push("auth.chain has \"jwt\" but there is no [auth.jwt] section".into()),
            (Some(_), false) => problems.push("[auth.jwt] is set but \"jwt\" is not in auth.chain".into()),
            (Some(j), true) => {
                match [j.secret.is_some(), j.public_key_file.is_some(), j.jwks_url.is_some()]
                    .iter()
                    .filter(|k| **k)
                    .count()
                {
                    0 => problems.push(
                        "auth.jwt: set secret (HS256), public_key_file (RS256/ES256) or jwks_url (an identity \
                         provider's keys)"
                            .into(),
                    ),
                    1 => {}
                    _ => problems.push("auth.jwt: set only one of secret, public_key_file and jwks_url".into()),
                }
                if j.secret.as_ref().is_some_and(|s| s.len() < 32) {
                    problems.push("auth.jwt.secret: shorter than 32 bytes; use a long random secret".into())
                }
                if let Some(url) = &j.jwks_url {
                    if !url.starts_with("https://") && !url.starts_with("http://") {
                        problems.push(format!("auth.jwt.jwks_url = {url:?}: must be an https:// URL"));
                    } else if super::net::plain_http_off_loopback(url) {
                        problems.push(format!(
                            "auth.jwt.jwks_url = {url:?}: keys over plain http:// from a host that is not \
                             loopback could be replaced on the way; use https://"
                        ));
                    }
                }
                if j.jwks_refresh_secs == 0 {
                    problems.push("auth.jwt.jwks_refresh_secs = 0: must be at least 1".into());
                }
            }
            (None, false) => {}
        }
        match (&self.http, in_chain("http")) {
            (None, true) => problems.push("auth.chain has \"http\" but there is no [auth.http] section".into()),
            (Some(_), false) => problems.push("[auth.http] is set but \"http\" is not in auth.chain".into()),
            (Some(h), true) => {
                if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
                    problems.push(format!("auth.http.url = {:?}: must start with http:// or https://", h.url));
                }
                if h.timeout_ms == 0 {
                    problems.push("auth.http.timeout_ms = 0: must be at least 1".into());
                }
            }
            (None, false) => {}
        }
        for (i, r) in self.roles.iter().enumerate() {
            if r.user.is_empty() {
                problems.push(format!("auth.roles[{i}].user is empty"));
            }
        }
        for (i, rule) in acl.iter().enumerate() {
            if rule.user.is_empty() || rule.client.is_empty() {
                problems.push(format!("acl[{i}]: user and client must not be empty (use \"*\" for anyone)"));
            }
            let sample = rule.topic.replace("%u", "user").replace("%c", "client");
            if let Err(e) = crate::topic::TopicFilter::new(&sample) {
                problems.push(format!("acl[{i}].topic = {:?}: {e}", rule.topic));
            }
        }
    }
}
