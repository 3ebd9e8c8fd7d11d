//! Tokens signed by an identity provider whose keys are published as a JWKS
//! (`[auth.jwt] jwks_url`; issue 24, item 3). The provider is played by a
//! small HTTP server on loopback serving a key set the test changes; the
//! keys are P-256 pairs made here by openssl. Checked on MQTT 3.1.1 and 5
//! over TCP and WebSocket and on starling.v1: the token's `kid` picks the
//! key, a rotated key is fetched when a token first names it, keys that are
//! not fetched yet refuse with "server unavailable" (retryable), and a
//! token whose algorithm does not fit its key is refused.

mod common;

use axum::extract::State;
use axum::http::StatusCode;
use common::wire::{Door, Wire, MQTT_DOORS};
use common::*;
use parking_lot::Mutex;
use starling::wsproto::client::{Client as ProtoClient, ClientError};
use starling::wsproto::pb;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ISSUER: &str = "https://idp.test";

/// A P-256 key pair: the private key (PKCS#8 PEM, to sign) and its JWK.
struct KeyPair {
    private_pem: Vec<u8>,
    x: String,
    y: String,
}

fn key_pair(dir: &Path, name: &str) -> KeyPair {
    let path = |suffix: &str| dir.join(format!("{name}.{suffix}")).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &path("key")]);
    run(&["pkcs8", "-topk8", "-nocrypt", "-in", &path("key"), "-out", &path("pkcs8")]);
    run(&["ec", "-in", &path("key"), "-pubout", "-outform", "DER", "-out", &path("der")]);
    // A P-256 public key in DER ends with the point: 04 || X (32) || Y (32).
    let der = std::fs::read(path("der")).unwrap();
    let point = &der[der.len() - 64..];
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    KeyPair { private_pem: std::fs::read(path("pkcs8")).unwrap(), x: b64(&point[..32]), y: b64(&point[32..]) }
}

impl KeyPair {
    fn jwk(&self, kid: &str) -> serde_json::Value {
        json!({"kty": "EC", "crv": "P-256", "x": self.x, "y": self.y, "kid": kid, "use": "sig", "alg": "ES256"})
    }

    fn sign(&self, kid: Option<&str>, sub: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = kid.map(str::to_string);
        let claims = json!({"sub": sub, "exp": starling::clock::now_ms() / 1000 + 600, "iss": ISSUER});
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_pem(&self.private_pem).unwrap())
            .unwrap()
    }
}

/// The identity provider's key endpoint: serves `keys` (or 503 while it is
/// `None`) and counts the fetches.
#[derive(Clone, Default)]
struct Provider {
    keys: Arc<Mutex<Option<serde_json::Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn serve(&self) -> SocketAddr {
        async fn jwks(State(provider): State<Provider>) -> Result<axum::Json<serde_json::Value>, StatusCode> {
            provider.fetches.fetch_add(1, Ordering::SeqCst);
            let keys = provider.keys.lock().clone();
            keys.map(|keys| axum::Json(json!({ "keys": keys }))).ok_or(StatusCode::SERVICE_UNAVAILABLE)
        }
        let app =
            axum::Router::new().route("/.well-known/jwks.json", axum::routing::get(jwks)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn publish(&self, keys: Vec<serde_json::Value>) {
        *self.keys.lock() = Some(serde_json::Value::Array(keys));
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn jwks_config(provider: SocketAddr) -> starling::config::Config {
    let mut config = with_jwt(memory_config());
    config.auth.jwt = Some(starling::config::JwtConfig {
        jwks_url: Some(format!("http://{provider}/.well-known/jwks.json")),
        issuer: Some(ISSUER.into()),
        ..Default::default()
    });
    config
}

/// A starling.v1 connect with `token`: `Ok` or the refusal's code.
async fn proto_connect(ws: SocketAddr, client_id: &str, token: &str) -> Result<ProtoClient, u32> {
    let connect =
        pb::Connect { client_id: client_id.into(), clean_start: true, token: token.into(), ..Default::default() };
    match within("starling.v1 connect", ProtoClient::connect(&format!("ws://{ws}/ws"), connect)).await {
        Ok((client, _)) => Ok(client),
        Err(ClientError::Refused { code, .. }) => Err(code),
        Err(e) => panic!("starling.v1 connect failed: {e}"),
    }
}

#[tokio::test]
async fn the_kid_picks_the_key_and_a_rotated_key_is_fetched_when_first_used() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key_pair(dir.path(), "a"), key_pair(dir.path(), "b"));
    let provider = Provider::default();
    provider.publish(vec![a.jwk("key-a")]);
    let config = jwks_config(provider.serve().await);
    let server = start(config.clone()).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let good = a.sign(Some("key-a"), "alice");
    wait_for("the first key set", || async {
        Wire::connect(Door::Tcp5, m, w, "alice-first", Some(""), Some(&good)).await.1.reason_code == 0
    })
    .await;
    for door in MQTT_DOORS {
        Wire::accepted(door, m, w, &format!("alice-{door:?}"), Some(""), Some(&good)).await.ping_barrier().await;
    }
    assert!(proto_connect(w, "alice-v1", &good).await.is_ok());
    // A reload (SIGHUP) keeps the fetched keys: no window without them.
    server.reload(&config).unwrap();
    Wire::accepted(Door::Tcp5, m, w, "alice-reloaded", Some(""), Some(&good)).await;
    // A lone key also serves a token without a kid.
    Wire::accepted(Door::Tcp5, m, w, "alice-nokid", Some(""), Some(&a.sign(None, "alice"))).await;

    // Refused: key b is not published; a's kid on b's signature; HS256
    // "signed" with a's public coordinates (the algorithm confusion).
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("key-a".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &json!({"sub": "alice", "exp": starling::clock::now_ms() / 1000 + 600, "iss": ISSUER}),
        &jsonwebtoken::EncodingKey::from_secret(a.x.as_bytes()),
    )
    .unwrap();
    for bad in [b.sign(Some("key-a"), "bob"), forged] {
        for door in MQTT_DOORS {
            let (_, ack) = Wire::connect(door, m, w, "intruder", Some(""), Some(&bad)).await;
            assert_eq!(ack.reason_code, 0x86, "{door:?}");
        }
        assert_eq!(proto_connect(w, "intruder-v1", &bad).await.err(), Some(0x86));
    }
    // An unknown kid waits (up to 3 s) for a fetch of the set, then is refused.
    let unknown = b.sign(Some("key-b"), "bob");
    assert_eq!(Wire::connect(Door::Tcp311, m, w, "intruder", Some(""), Some(&unknown)).await.1.reason_code, 0x86);
    assert_eq!(proto_connect(w, "intruder-v1", &unknown).await.err(), Some(0x86));
    // Made-up key ids do not make a fetch each (at most one per 5 s).
    let before = provider.fetches();
    assert!(before <= 3, "{before} fetches so far");

    // The provider rotates: b is added. A token naming it gets in once the
    // set is fetched again (early, because a token named an unknown key).
    provider.publish(vec![a.jwk("key-a"), b.jwk("key-b")]);
    let bobs = b.sign(Some("key-b"), "bob");
    within_for(Duration::from_secs(20), "a token signed with the new key", async {
        loop {
            if Wire::connect(Door::Ws5, m, w, "bob", Some(""), Some(&bobs)).await.1.reason_code == 0 {
                break;
            }
        }
    })
    .await;
    assert!(proto_connect(w, "bob-v1", &bobs).await.is_ok());
    Wire::accepted(Door::Tcp311, m, w, "alice-after", Some(""), Some(&good)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn before_the_keys_arrive_tokens_are_refused_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let a = key_pair(dir.path(), "a");
    let provider = Provider::default(); // answers 503 until keys are published
    let server = start(jwks_config(provider.serve().await)).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let token = a.sign(Some("key-a"), "alice");
    wait_until("a first fetch", || provider.fetches() >= 1).await;
    // Retryable refusals: MQTT 5 0x88, 3.1.1 code 3 (read as 0x88), starling.v1 0x88.
    for door in MQTT_DOORS {
        let (_, ack) = Wire::connect(door, m, w, "early", Some(""), Some(&token)).await;
        assert_eq!(ack.reason_code, 0x88, "{door:?}");
    }
    assert_eq!(proto_connect(w, "early-v1", &token).await.err(), Some(0x88));
    // The provider comes up: the broker retries and the same token gets in.
    provider.publish(vec![a.jwk("key-a")]);
    within_for(Duration::from_secs(20), "the keys after the provider came up", async {
        while Wire::connect(Door::Tcp5, m, w, "late", Some(""), Some(&token)).await.1.reason_code != 0 {}
    })
    .await;
    assert!(proto_connect(w, "late-v1", &token).await.is_ok());
    server.shutdown().await.unwrap();
}

#[test]
fn a_key_set_over_plain_http_from_another_host_is_refused_at_start() {
    let mut config = jwks_config("127.0.0.1:1".parse().unwrap());
    config.auth.jwt.as_mut().unwrap().jwks_url = Some("http://idp.example/.well-known/jwks.json".into());
    let problems = config.validate("test.toml").unwrap_err().to_string();
    assert!(problems.contains("auth.jwt.jwks_url") && problems.contains("https://"), "{problems}");
    config.auth.jwt.as_mut().unwrap().secret = Some("x".repeat(32));
    config.auth.jwt.as_mut().unwrap().jwks_url = Some("https://idp.example/.well-known/jwks.json".into());
    let problems = config.validate("test.toml").unwrap_err().to_string();
    assert!(problems.contains("only one of secret, public_key_file and jwks_url"), "{problems}");
}
