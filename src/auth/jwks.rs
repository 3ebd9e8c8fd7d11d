//! Signing keys from an identity provider's JWKS endpoint
//! (`[auth.jwt] jwks_url`), as Auth0, Keycloak, Cognito, Okta and the like
//! publish them.
//!
//! Owns: parsing a key set into keys the JWT checks can use (pure:
//! [`KeySet::parse`]), and one background thread per key set that fetches it
//! at start, every `jwks_refresh_secs`, and early when a token names a key id
//! the set does not hold (a provider rotated its keys), at most once per
//! [`MIN_REFETCH`].
//! Must never: take a symmetric (`oct`) key from the network (whoever can
//! answer the URL could then mint tokens), let a key choose an algorithm of
//! another family than its own, keep a failed fetch's result (the last good
//! set stays), or fetch for each connect.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A key set larger than this is refused (a provider publishes a handful).
pub const MAX_BODY_BYTES: u64 = 1 << 20;
/// Keys kept from one set, at most.
pub const MAX_KEYS: usize = 100;
/// An unknown key id fetches the set again at most this often.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed fetch, the next try comes this soon (then the refresh interval).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// One usable key: what verifies a signature, and the one algorithm it may.
pub struct SigningKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// The keys of one fetch, by key id.
#[derive(Default)]
pub struct KeySet {
    by_id: HashMap<String, Arc<SigningKey>>,
    /// Keys without a `kid`: used only by a token without one, and only when
    /// the set holds exactly one key.
    without_id: Vec<Arc<SigningKey>>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures here
    /// (encryption keys, symmetric keys, unknown types or curves) are
    /// skipped and named in `skipped`; a document that is not a key set is
    /// an error.
    pub fn parse(body: &[u8]) -> Result<(KeySet, Vec<String>), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for (n, value) in document.keys.into_iter().enumerate() {
            if set.len() >= MAX_KEYS {
                skipped.push(format!("keys after the first {MAX_KEYS}"));
                break;
            }
            let jwk: Jwk = match serde_json::from_value(value) {
                Ok(jwk) => jwk,
                Err(e) => {
                    skipped.push(format!("key {n}: {e}"));
                    continue;
                }
            };
            let name = jwk.common.key_id.clone().unwrap_or_else(|| format!("key {n}"));
            match signing_key(&jwk) {
                Ok(key) => match jwk.common.key_id {
                    Some(kid) => {
                        set.by_id.insert(kid, Arc::new(key));
                    }
                    None => set.without_id.push(Arc::new(key)),
                },
                Err(why) => skipped.push(format!("{name}: {why}")),
            }
        }
        Ok((set, skipped))
    }

    pub fn len(&self) -> usize {
        self.by_id.len() + self.without_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key a token's header names (`kid`), or the set's only key for a
    /// token without one.
    pub fn find(&self, kid: Option<&str>) -> Option<Arc<SigningKey>> {
        match kid {
            Some(kid) => self.by_id.get(kid).cloned(),
            None if self.len() == 1 => self.by_id.values().chain(&self.without_id).next().cloned(),
            None => None,
        }
    }
}

/// The verifying key and its algorithm; refuses what must not come from the network.
fn signing_key(jwk: &Jwk) -> Result<SigningKey, String> {
    if let Some(usage) = &jwk.common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return Err(format!("\"use\" is {usage:?}, not \"sig\""));
        }
    }
    let family_default = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            ref other => return Err(format!("curve {other:?} is not supported (P-256, P-384)")),
        },
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric (oct) key is never taken from a URL".into()),
    };
    let algorithm = match jwk.common.key_algorithm {
        Some(named) => {
            named.to_string().parse::<Algorithm>().map_err(|_| format!("\"alg\" {named} is not a signing algorithm"))?
        }
        None => family_default,
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
    // The named algorithm must belong to the key's family (an RSA key
    // saying "HS256" is refused, not used as an HMAC secret).
    let same_family = matches!(
        (family_default, algorithm),
        (Algorithm::RS256, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
            | (Algorithm::RS256, Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)
            | (Algorithm::ES256, Algorithm::ES256)
            | (Algorithm::ES384, Algorithm::ES384)
            | (Algorithm::EdDSA, Algorithm::EdDSA)
    );
    if !same_family {
        return Err(format!("\"alg\" {algorithm:?} does not fit the key's type"));
    }
    Ok(SigningKey { key, algorithm })
}

/// A key set kept fresh by a thread of its own.
pub struct RemoteKeys {
    url: String,
    refresh: Duration,
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    current: RwLock<Option<Arc<KeySet>>>,
    /// Counts successful fetches; waiters on an early refetch watch it.
    fetched: tokio::sync::watch::Sender<u64>,
    /// Wakes the thread for an early refetch; the thread ends when this is dropped.
    nudge: std::sync::mpsc::SyncSender<()>,
}

impl RemoteKeys {
    /// Starts the fetching thread (the first fetch begins at once; until it
    /// succeeds, tokens are refused as server unavailable).
    pub fn start(url: String, refresh: Duration) -> std::io::Result<Arc<RemoteKeys>> {
        let (nudge, nudged) = std::sync::mpsc::sync_channel(1);
        let keys = Arc::new(RemoteKeys {
            url,
            refresh,
            current: RwLock::new(None),
            fetched: tokio::sync::watch::channel(0).0,
            nudge,
        });
        let weak = Arc::downgrade(&keys);
        std::thread::Builder::new().name("jwks".into()).spawn(move || refresh_until_dropped(weak, nudged, refresh))?;
        Ok(keys)
    }

    fn fetch(&self, agent: &ureq::Agent) -> Result<(), String> {
        let response = agent.get(&self.url).call().map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        response.into_reader().take(MAX_BODY_BYTES + 1).read_to_end(&mut body).map_err(|e| e.to_string())?;
        if body.len() as u64 > MAX_BODY_BYTES {
            return Err(format!("the key set is larger than {MAX_BODY_BYTES} bytes"));
        }
        let (set, skipped) = KeySet::parse(&body)?;
        if set.is_empty() {
            return Err(format!("no usable signing key (skipped: {})", skipped.join("; ")));
        }
        if !skipped.is_empty() {
            tracing::info!(url = %self.url, skipped = %skipped.join("; "), "JWKS keys skipped");
        }
        tracing::info!(url = %self.url, keys = set.len(), "JWKS key set fetched");
        *self.current.write() = Some(Arc::new(set));
        self.fetched.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Whether this fetches `url` every `refresh` (a reload keeps it then).
    pub fn fetches(&self, url: &str, refresh: Duration) -> bool {
        self.url == url && self.refresh == refresh
    }

    /// The keys of the last good fetch; `None` before the first.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.read().clone()
    }

    /// Asks the thread for an early fetch (a token named an unknown key).
    pub fn refetch_soon(&self) {
        let _ = self.nudge.try_send(());
    }

    /// Waits up to `limit` for the next successful fetch after now.
    pub async fn next_fetch(&self, limit: Duration) {
        let mut fetched = self.fetched.subscribe();
        fetched.mark_unchanged();
        let _ = tokio::time::timeout(limit, fetched.changed()).await;
    }
}

/// The fetching thread: fetch, wait for the interval or a nudge, again;
/// ends once its [`RemoteKeys`] is dropped (a reload made a new one).
fn refresh_until_dropped(keys: std::sync::Weak<RemoteKeys>, nudged: std::sync::mpsc::Receiver<()>, refresh: Duration) {
    use std::sync::mpsc::RecvTimeoutError::Disconnected;
    let agent = ureq::AgentBuilder::new().timeout(FETCH_TIMEOUT).build();
    loop {
        let Some(strong) = keys.upgrade() else { return };
        let fetched_at = Instant::now();
        let wait = match strong.fetch(&agent) {
            Ok(()) => refresh,
            Err(why) => {
                tracing::warn!(url = %strong.url, %why, "JWKS fetch failed; keeping the last good key set");
                RETRY_AFTER_FAILURE.min(refresh)
            }
        };
        drop(strong);
        if nudged.recv_timeout(wait) == Err(Disconnected) {
            return;
        }
        // Nudged or due. Rate-limited: a flood of tokens with made-up key
        // ids must not become a flood of fetches.
        let earliest = fetched_at + MIN_REFETCH;
        while let Some(left) = earliest.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            if nudged.recv_timeout(left) == Err(Disconnected) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa(kid: Option<&str>, extra: serde_json::Value) -> serde_json::Value {
        use base64::Engine;
        // Any 2,048-bit modulus parses; these tests never verify a signature.
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xC3u8; 256]);
        let mut key = serde_json::json!({"kty": "RSA", "n": n, "e": "AQAB"});
        if let Some(kid) = kid {
            key["kid"] = kid.into();
        }
        for (k, v) in extra.as_object().unwrap() {
            key[k] = v.clone();
        }
        key
    }

    fn parse(keys: Vec<serde_json::Value>) -> (KeySet, Vec<String>) {
        KeySet::parse(serde_json::json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn keys_are_found_by_id_and_a_lone_key_serves_tokens_without_one() {
        let (set, skipped) = parse(vec![rsa(Some("a"), serde_json::json!({"alg": "RS256", "use": "sig"}))]);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(set.find(Some("a")).unwrap().algorithm, Algorithm::RS256);
        assert!(set.find(Some("b")).is_none());
        assert!(set.find(None).is_some(), "the only key");
        let (set, _) = parse(vec![rsa(Some("a"), serde_json::json!({})), rsa(Some("b"), serde_json::json!({}))]);
        assert!(set.find(None).is_none(), "two keys: a token must say which");
        assert_eq!(set.find(Some("b")).unwrap().algorithm, Algorithm::RS256, "the type's default");
    }

    #[test]
    fn what_must_not_come_from_a_url_is_skipped() {
        let (set, skipped) = parse(vec![
            serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
            rsa(Some("enc"), serde_json::json!({"use": "enc"})),
            rsa(Some("confused"), serde_json::json!({"alg": "HS256"})),
            serde_json::json!({"kty": "weird", "kid": "w"}),
            rsa(Some("good"), serde_json::json!({"alg": "PS256"})),
        ]);
        assert_eq!(set.len(), 1, "{skipped:?}");
        assert_eq!(set.find(Some("good")).unwrap().algorithm, Algorithm::PS256);
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(skipped.iter().any(|s| s.contains("hmac") && s.contains("symmetric")), "{skipped:?}");
    }

    #[test]
    fn a_document_that_is_not_a_key_set_is_an_error() {
        assert!(KeySet::parse(b"<html>").is_err());
        assert!(KeySet::parse(br#"{"issuer": "x"}"#).is_err());
        let many: Vec<_> = (0..MAX_KEYS + 5).map(|i| rsa(Some(&format!("k{i}")), serde_json::json!({}))).collect();
        let (set, skipped) = parse(many);
        assert_eq!(set.len(), MAX_KEYS);
        assert_eq!(skipped.len(), 1);
    }
}
