//! Signed tokens (JWT): the app's own server signs a token for its user, so
//! starling never needs the app's user database.
//!
//! Owns: the key (`[auth.jwt]`: an HS256 `secret`, a PEM `public_key_file`
//! for RS256 or ES256, or an identity provider's key set, `jwks_url`, whose
//! key the token's `kid` picks: [`jwks`]), the checks (signature, algorithm,
//! `exp` required and not passed, `nbf`, optional `iss` and `aud`, `sub`
//! required) and the claims that become an [`Identity`]: `sub`,
//! `client_id`, `acl`, `superuser`, `roles`, `device`.
//! Must never: accept a token whose algorithm differs from the key's (no
//! `none`, no HS256 signed with an RSA public key).
//!
//! Tokens travel in the MQTT password field (the username may be empty or
//! must equal `sub`) and in starling.v1 `Connect.token`.

use super::acl::GrantedFilters;
use super::jwks;
use super::{AuthRefusal, AuthRequest, Authenticator, Decision, DecisionFuture, Identity};
use crate::config::JwtConfig;
use crate::model::reason;
use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::Arc;

#[derive(Debug, serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    acl: Option<GrantedFilters>,
    #[serde(default)]
    superuser: bool,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    device: Option<String>,
}

pub struct JwtVerifier {
    keys: Keys,
    /// The checks every token passes; the algorithm is set per key.
    validation: Validation,
}

/// Where the verifying key comes from.
enum Keys {
    /// `secret` or `public_key_file`: one key, one algorithm.
    Fixed(DecodingKey, Algorithm),
    /// `jwks_url`: the provider's current set; the token's `kid` picks.
    Remote(Arc<jwks::RemoteKeys>),
}

/// How long a connect with a token naming an unknown key waits for the
/// key set to be fetched again (a provider that just rotated its keys).
const UNKNOWN_KEY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl JwtVerifier {
    /// `previous`: the verifier a reload replaces; its remote key set (and
    /// fetching thread) is kept when the URL and interval are the same, so a
    /// reload never leaves tokens without keys.
    pub fn from_config(config: &JwtConfig, previous: Option<&JwtVerifier>) -> anyhow::Result<JwtVerifier> {
        let keys = match (&config.secret, &config.public_key_file, &config.jwks_url) {
            (Some(secret), None, None) => Keys::Fixed(DecodingKey::from_secret(secret.as_bytes()), Algorithm::HS256),
            (None, Some(path), None) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("auth.jwt.public_key_file: cannot read {}", path.display()))?;
                match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => Keys::Fixed(key, Algorithm::RS256),
                    Err(_) => match DecodingKey::from_ec_pem(&pem) {
                        Ok(key) => Keys::Fixed(key, Algorithm::ES256),
                        Err(e) => anyhow::bail!(
                            "auth.jwt.public_key_file {}: not an RSA or P-256 public key in PEM: {e}",
                            path.display()
                        ),
                    },
                }
            }
            (None, None, Some(url)) => {
                let refresh = std::time::Duration::from_secs(config.jwks_refresh_secs);
                match previous.map(|p| &p.keys) {
                    Some(Keys::Remote(kept)) if kept.fetches(url, refresh) => Keys::Remote(kept.clone()),
                    _ => Keys::Remote(
                        jwks::RemoteKeys::start(url.clone(), refresh)
                            .context("auth.jwt.jwks_url: starting the key fetcher")?,
                    ),
                }
            }
            _ => anyhow::bail!("auth.jwt: set exactly one of secret, public_key_file and jwks_url"),
        };
        let mut validation = Validation::default();
        // Expiry is exact: a token is refused from its `exp` second on, and a
        // connected client is disconnected then.
        validation.leeway = 0;
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not only checked
        // when present: a token without `iss` (or `aud`) was minted by
        // someone else's setup and is refused (issue 24).
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier { keys, validation })
    }

    /// The key for `token` and the one algorithm it may be signed with.
    fn key_for(&self, token: &str) -> Result<(DecodingKey, Algorithm), AuthRefusal> {
        match &self.keys {
            Keys::Fixed(key, algorithm) => Ok((key.clone(), *algorithm)),
            Keys::Remote(remote) => {
                let Some(set) = remote.current() else {
                    // Retryable: the provider's keys are not here yet.
                    return Err(AuthRefusal {
                        code: reason::SERVER_UNAVAILABLE,
                        why: "the identity provider's keys (auth.jwt.jwks_url) are not fetched yet".into(),
                    });
                };
                let header = jsonwebtoken::decode_header(token).map_err(|e| AuthRefusal {
                    code: reason::BAD_USER_NAME_OR_PASSWORD,
                    why: format!("token refused: {e}"),
                })?;
                match set.find(header.kid.as_deref()) {
                    Some(found) => Ok((found.key.clone(), found.algorithm)),
                    None => {
                        remote.refetch_soon();
                        Err(AuthRefusal {
                            code: reason::BAD_USER_NAME_OR_PASSWORD,
                            why: format!("token refused: no key {:?} in the identity provider's key set", header.kid),
                        })
                    }
                }
            }
        }
    }

    /// Whether `token` names a key the current remote key set lacks (worth
    /// waiting for a fetch: the provider may have just rotated).
    fn names_an_unknown_key(&self, token: &str) -> bool {
        let Keys::Remote(remote) = &self.keys else { return false };
        let Some(set) = remote.current() else { return false };
        jsonwebtoken::decode_header(token).is_ok_and(|h| set.find(h.kid.as_deref()).is_none())
    }

    /// Checks `token`; `username` (when given and non-empty) must equal
    /// `sub`, and a `client_id` claim must equal `client_id`; an empty client
    /// id takes the claim's (`Identity::client_id`: the broker assigns it).
    pub fn verify(&self, token: &str, username: Option<&str>, client_id: &str) -> Result<Identity, AuthRefusal> {
        let bad = |why: String| AuthRefusal { code: reason::BAD_USER_NAME_OR_PASSWORD, why };
        let (key, algorithm) = self.key_for(token)?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| bad(format!("token refused: {e}")))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(bad("token refused: empty sub".into()));
        }
        if super::is_reserved_user(&claims.sub) {
            // `$api-key`, `$bridge/...`: the broker's own names, never a token's.
            return Err(bad(format!("token refused: sub {:?} begins with $ (the broker's own names)", claims.sub)));
        }
        if let Some(name) = username.filter(|u| !u.is_empty()) {
            if name != claims.sub {
                return Err(bad(format!("username {name:?} is not the token's subject")));
            }
        }
        if let Some(bound) = &claims.client_id {
            if !client_id.is_empty() && bound != client_id {
                return Err(AuthRefusal {
                    code: reason::NOT_AUTHORIZED,
                    why: format!("this token is for client id {bound:?}, not {client_id:?}"),
                });
            }
        }
        Ok(Identity {
            user: Some(Arc::from(claims.sub.as_str())),
            superuser: claims.superuser,
            roles: claims.roles,
            granted: claims.acl,
            device: claims.device.map(|d| Arc::from(d.as_str())),
            expires_at_ms: Some(claims.exp.saturating_mul(1000)),
            client_id: claims.client_id.map(|c| Arc::from(c.as_str())),
        })
    }
}

/// Looks like a JWT (three base64url parts): the only credentials this provider judges.
fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ") && s.split('.').count() == 3
}

/// The chain's "jwt" provider.
pub struct JwtProvider(pub Arc<JwtVerifier>);

impl Authenticator for JwtProvider {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn authenticate<'a>(&'a self, request: &'a AuthRequest<'a>) -> DecisionFuture<'a> {
        Box::pin(async move {
            let Some(token) = request
                .credentials
                .password
                .as_deref()
                .and_then(|p| std::str::from_utf8(p).ok())
                .filter(|t| looks_like_jwt(t))
            else {
                return Decision::Pass;
            };
            let verify = || self.0.verify(token, request.credentials.username.as_deref(), request.client_id);
            let mut result = verify();
            if result.is_err() && self.0.names_an_unknown_key(token) {
                // `key_for` asked for a fetch: give it a moment, then try once more.
                if let Keys::Remote(remote) = &self.0.keys {
                    remote.next_fetch(UNKNOWN_KEY_WAIT).await;
                }
                result = verify();
            }
            match result {
                Ok(identity) => Decision::Allow(identity),
                Err(refusal) => Decision::Deny(refusal),
            }
        })
    }
}

/// What `starling token` puts in a token (development and tests).
#[derive(Debug, Clone, Default)]
pub struct DevClaims {
    pub sub: String,
    pub ttl: std::time::Duration,
    pub roles: Vec<String>,
    pub client_id: Option<String>,
    /// A topic or filter the token lets its user subscribe to (`channel`).
    pub channel: Option<String>,
}

/// Mints an HS256 token with `[auth.jwt] secret`, carrying the configured
/// `iss` and `aud` so that this broker accepts it. Refuses without a secret
/// (a broker on a key pair or an identity provider's keys cannot sign).
pub fn mint_dev_token(config: Option<&JwtConfig>, claims: &DevClaims, now_secs: u64) -> anyhow::Result<String> {
    let Some(secret) = config.and_then(|c| c.secret.as_deref()) else {
        anyhow::bail!(
            "no HS256 secret configured ([auth.jwt] secret): starling token signs with it; a broker on \
             public_key_file or jwks_url gets its tokens from whoever holds the private key"
        );
    };
    if claims.sub.is_empty() || super::is_reserved_user(&claims.sub) {
        anyhow::bail!("--sub {:?}: a user name, not empty and not beginning with $", claims.sub);
    }
    let mut body = serde_json::json!({
        "sub": claims.sub,
        "iat": now_secs,
        "exp": now_secs + claims.ttl.as_secs().max(1),
    });
    if !claims.roles.is_empty() {
        body["roles"] = claims.roles.clone().into();
    }
    if let Some(client_id) = &claims.client_id {
        body["client_id"] = client_id.clone().into();
    }
    if let Some(channel) = &claims.channel {
        body["channel"] = channel.clone().into();
        // Until subscription tokens exist (issue 27), the channel is also
        // granted for subscribing through the token's own `acl` claim.
        body["acl"] = serde_json::json!({ "subscribe": [channel] });
    }
    if let Some(config) = config {
        if let Some(issuer) = &config.issuer {
            body["iss"] = issuer.clone().into();
        }
        if let Some(audience) = &config.audience {
            body["aud"] = audience.clone().into();
        }
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &body, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JwtConfig {
        JwtConfig {
            secret: Some("0123456789abcdef0123456789abcdef".into()),
            issuer: Some("https://app.example".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_minted_token_is_one_this_broker_accepts() {
        let claims = DevClaims {
            sub: "alice".into(),
            ttl: std::time::Duration::from_secs(3600),
            roles: vec!["server".into()],
            client_id: Some("alice-phone".into()),
            channel: Some("chat/room1".into()),
        };
        let now = crate::clock::now_ms() / 1000;
        let token = mint_dev_token(Some(&config()), &claims, now).unwrap();
        let identity = JwtVerifier::from_config(&config(), None).unwrap().verify(&token, None, "").unwrap();
        assert_eq!(identity.user.as_deref(), Some("alice"));
        assert_eq!(identity.roles, ["server"]);
        assert_eq!(identity.client_id.as_deref(), Some("alice-phone"));
        assert_eq!(identity.expires_at_ms, Some((now + 3600) * 1000));
        assert!(identity.granted.is_some(), "the channel is granted");
    }

    #[test]
    fn without_a_secret_or_with_a_reserved_sub_nothing_is_minted() {
        let claims = DevClaims { sub: "alice".into(), ttl: std::time::Duration::from_secs(60), ..Default::default() };
        let keyless = JwtConfig { public_key_file: Some("k.pem".into()), ..Default::default() };
        assert!(mint_dev_token(Some(&keyless), &claims, 0).unwrap_err().to_string().contains("[auth.jwt] secret"));
        assert!(mint_dev_token(None, &claims, 0).is_err());
        let reserved = DevClaims { sub: "$api-key".into(), ..claims };
        assert!(mint_dev_token(Some(&config()), &reserved, 0).is_err());
    }
}
