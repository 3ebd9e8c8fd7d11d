//! Signed tokens (JWT): the app's own server signs a token for its user, so
//! starling never needs the app's user database.
//!
//! Owns: the key (`[auth.jwt]`: an HS256 `secret`, or a PEM
//! `public_key_file` for RS256 or ES256), the checks (signature, algorithm,
//! `exp` required and not passed, `nbf`, optional `iss` and `aud`, `sub`
//! required) and the claims that become an [`Identity`]: `sub`,
//! `client_id`, `acl`, `superuser`, `roles`, `device`.
//! Must never: accept a token whose algorithm differs from the key's (no
//! `none`, no HS256 signed with an RSA public key).
//!
//! Tokens travel in the MQTT password field (the username may be empty or
//! must equal `sub`) and in starling.v1 `Connect.token`.

use super::acl::GrantedFilters;
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
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    pub fn from_config(config: &JwtConfig) -> anyhow::Result<JwtVerifier> {
        let (key, algorithm) = match (&config.secret, &config.public_key_file) {
            (Some(secret), None) => (DecodingKey::from_secret(secret.as_bytes()), Algorithm::HS256),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("auth.jwt.public_key_file: cannot read {}", path.display()))?;
                match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => (key, Algorithm::RS256),
                    Err(_) => match DecodingKey::from_ec_pem(&pem) {
                        Ok(key) => (key, Algorithm::ES256),
                        Err(e) => anyhow::bail!(
                            "auth.jwt.public_key_file {}: not an RSA or P-256 public key in PEM: {e}",
                            path.display()
                        ),
                    },
                }
            }
            _ => anyhow::bail!("auth.jwt: set exactly one of secret and public_key_file"),
        };
        let mut validation = Validation::new(algorithm);
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
        Ok(JwtVerifier { key, validation })
    }

    /// Checks `token`; `username` (when given and non-empty) must equal
    /// `sub`, and a `client_id` claim must equal `client_id`; an empty client
    /// id takes the claim's (`Identity::client_id`: the broker assigns it).
    pub fn verify(&self, token: &str, username: Option<&str>, client_id: &str) -> Result<Identity, AuthRefusal> {
        let bad = |why: String| AuthRefusal { code: reason::BAD_USER_NAME_OR_PASSWORD, why };
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| bad(format!("token refused: {e}")))?;
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
        let decision = (|| {
            let password = request.credentials.password.as_deref()?;
            let token = std::str::from_utf8(password).ok().filter(|t| looks_like_jwt(t))?;
            Some(match self.0.verify(token, request.credentials.username.as_deref(), request.client_id) {
                Ok(identity) => Decision::Allow(identity),
                Err(refusal) => Decision::Deny(refusal),
            })
        })()
        .unwrap_or(Decision::Pass);
        Box::pin(std::future::ready(decision))
    }
}
