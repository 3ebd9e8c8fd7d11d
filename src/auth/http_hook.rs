//! The HTTP hook provider: asks the app's own service whether a client may
//! connect (`[auth.http]`).
//!
//! Request: `POST url` with JSON `{client_id, username, password, peer,
//! transport, protocol}`. Answer: `200 {"result": "allow"|"deny",
//! "superuser": bool, "acl": {"publish": [...], "subscribe": [...]},
//! "roles": [...], "device": "..."}`; 401 or 403 mean deny. Anything else,
//! a timeout or a refused connection is a failure, decided by `fail`
//! ("closed": refuse with 0x88 server unavailable; "open": let the client in
//! under the username it gave).
//!
//! Owns: the call (on the blocking pool, bounded by `timeout_ms`, so a slow
//! or dead hook delays only the clients waiting for it), and a bounded
//! cache of answers (allow and deny) for `cache_secs`, keyed by a SHA-256
//! of what was sent.
//! Must never: log the password; cache a failure.

use super::acl::GrantedFilters;
use super::{AuthRefusal, AuthRequest, Authenticator, Decision, DecisionFuture, Identity};
use crate::config::{FailMode, HttpHookConfig};
use crate::model::reason;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CACHE_MAX: usize = 100_000;

#[derive(Debug, Clone, serde::Deserialize)]
struct Answer {
    result: String,
    #[serde(default)]
    superuser: bool,
    #[serde(default)]
    acl: Option<GrantedFilters>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    device: Option<String>,
}

/// What the hook said, before it becomes a [`Decision`] for one client.
#[derive(Debug, Clone)]
enum Verdict {
    Allow(Answer),
    Deny(String),
}

pub struct HttpHook {
    config: HttpHookConfig,
    agent: ureq::Agent,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    cache: Mutex<HashMap<[u8; 32], (Instant, Verdict)>>,
}

impl HttpHook {
    pub fn new(config: HttpHookConfig) -> HttpHook {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_millis(config.timeout_ms)).build();
        HttpHook { config, agent, cache: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Verdict> {
        let mut cache = self.cache.lock();
        match cache.get(key) {
            Some((until, verdict)) if *until > Instant::now() => Some(verdict.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: [u8; 32], verdict: &Verdict) {
        if self.config.cache_secs == 0 {
            return;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (Instant::now() + Duration::from_secs(self.config.cache_secs), verdict.clone()));
    }
}

fn call(agent: &ureq::Agent, url: &str, body: serde_json::Value) -> Result<Verdict, String> {
    match agent.post(url).send_json(body) {
        Ok(response) => {
            let answer: Answer = response.into_json().map_err(|e| format!("unreadable answer: {e}"))?;
            match answer.result.as_str() {
                "allow" => Ok(Verdict::Allow(answer)),
                "deny" => Ok(Verdict::Deny("denied by the authentication hook".into())),
                other => Err(format!("answer result {other:?}: expected \"allow\" or \"deny\"")),
            }
        }
        Err(ureq::Error::Status(401 | 403, _)) => Ok(Verdict::Deny("denied by the authentication hook".into())),
        Err(ureq::Error::Status(code, _)) => Err(format!("status {code}")),
        Err(e) => Err(e.to_string()),
    }
}

impl Authenticator for HttpHook {
    fn name(&self) -> &'static str {
        "http"
    }

    fn authenticate<'a>(&'a self, request: &'a AuthRequest<'a>) -> DecisionFuture<'a> {
        Box::pin(async move {
            let username = request.credentials.username.clone().unwrap_or_default();
            let password = request.credentials.password.as_deref().unwrap_or(&[]);
            let password = String::from_utf8_lossy(password).into_owned();
            let key: [u8; 32] = {
                let mut h = Sha256::new();
                for part in [request.client_id, &username, &password, request.transport.label(), request.protocol] {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part.as_bytes());
                }
                h.finalize().into()
            };
            let verdict = match self.cached(&key) {
                Some(verdict) => Ok(verdict),
                None => {
                    let body = serde_json::json!({
                        "client_id": request.client_id,
                        "username": username,
                        "password": password,
                        "peer": request.peer.to_string(),
                        "transport": request.transport.label(),
                        "protocol": request.protocol,
                    });
                    let (agent, url) = (self.agent.clone(), self.config.url.clone());
                    let result = tokio::task::spawn_blocking(move || call(&agent, &url, body))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                    if let Ok(verdict) = &result {
                        self.remember(key, verdict);
                    }
                    result
                }
            };
            match verdict {
                Ok(Verdict::Allow(answer)) => Decision::Allow(Identity {
                    user: (!username.is_empty()).then(|| Arc::from(username.as_str())),
                    superuser: answer.superuser,
                    roles: answer.roles,
                    granted: answer.acl,
                    device: answer.device.map(|d| Arc::from(d.as_str())),
                    expires_at_ms: None,
                    client_id: None,
                }),
                Ok(Verdict::Deny(why)) => Decision::Deny(AuthRefusal { code: reason::NOT_AUTHORIZED, why }),
                Err(e) => {
                    tracing::warn!(url = %self.config.url, error = %e, fail = ?self.config.fail, "authentication hook failed");
                    match self.config.fail {
                        FailMode::Closed => Decision::Deny(AuthRefusal {
                            code: reason::SERVER_UNAVAILABLE,
                            why: "authentication service unavailable".into(),
                        }),
                        // Admitted, but as nobody: the name the client chose
                        // was not checked, so it gets none of that name's
                        // roles, grants or ACL rules (issue 24).
                        FailMode::Open => Decision::Allow(Identity::default()),
                    }
                }
            }
        })
    }
}
