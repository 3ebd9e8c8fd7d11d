//! TLS listeners: MQTT over TLS and `wss://` (MQTT and starling.v1), with
//! mosquitto's clients (`--cafile`, `--cert/--key`), rumqttc with rustls,
//! MQTT.js in Node; client certificates (mTLS) and `cn_as_username`; bad,
//! foreign and expired certificates refused; certificates reloaded.
//! Certificates are made here with rcgen.

mod common;

use common::*;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use starling::config::{AclAction, AclRule, Config, Permission, TlsConfig};
use starling::wsproto::{self, pb, Inbound};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::process::Command;

/// A CA and the certificates it signed, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.distinguished_name.push(DnType::CommonName, name);
    (params, key)
}

fn write(dir: &Path, name: &str, text: String) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// `ca.pem`; `server.pem`/`server.key` for localhost and 127.0.0.1;
/// client certificates `alice`, `expired` (CN bob, 2020) from the same CA;
/// `rogue` (CN alice) from another CA.
fn pki() -> Pki {
    let pki = Pki { dir: tempfile::tempdir().unwrap() };
    let dir = pki.dir.path();
    let (ca_params, ca_key) = ca("starling test CA");
    write(dir, "ca.pem", ca_params.self_signed(&ca_key).unwrap().pem());
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |file: &str,
                names: Vec<String>,
                cn: &str,
                usage: ExtendedKeyUsagePurpose,
                expired: bool,
                by: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2020, 2, 1);
        }
        write(dir, &format!("{file}.pem"), params.signed_by(&key, by).unwrap().pem());
        write(dir, &format!("{file}.key"), key.serialize_pem());
    };
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    leaf("server", names, "localhost", ExtendedKeyUsagePurpose::ServerAuth, false, &issuer);
    leaf("alice", vec![], "alice", ExtendedKeyUsagePurpose::ClientAuth, false, &issuer);
    leaf("expired", vec![], "bob", ExtendedKeyUsagePurpose::ClientAuth, true, &issuer);
    let (rogue_params, rogue_key) = ca("someone else's CA");
    let rogue_issuer = Issuer::new(rogue_params, rogue_key);
    leaf("rogue", vec![], "alice", ExtendedKeyUsagePurpose::ClientAuth, false, &rogue_issuer);
    pki
}

fn tls_config(pki: &Pki, mtls: bool) -> Config {
    let mut config = memory_config();
    config.mqtt.tls_bind = "127.0.0.1:0".parse().unwrap();
    config.websocket.tls_bind = "127.0.0.1:0".parse().unwrap();
    config.tls = Some(TlsConfig {
        cert_file: pki.path("server.pem"),
        key_file: pki.path("server.key"),
        client_ca_file: mtls.then(|| pki.path("ca.pem")),
        require_client_cert: mtls,
        cn_as_username: mtls,
    });
    config
}

/// A rustls client trusting `ca`, optionally presenting a certificate.
fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    Arc::new(match cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

fn rumqttc_tls(addr: SocketAddr, id: &str, config: Arc<rustls::ClientConfig>) -> v4::MqttOptions {
    let mut o = v4::MqttOptions::new(id, "localhost", addr.port());
    o.set_keep_alive(std::time::Duration::from_secs(30));
    o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
    o
}

#[tokio::test]
async fn mqtt_over_tls_with_mosquitto_and_rumqttc() {
    starling::server::install_crypto_provider();
    let pki = pki();
    let server = start(tls_config(&pki, false)).await;
    let tls = server.mqtt_tls_addr().unwrap();
    let port = tls.port().to_string();
    let sub = process::mosquitto_spawn(
        "mosquitto_sub",
        &["-h", "localhost", "-p", &port, "--cafile", &pki.s("ca.pem"), "-t", "secure/#", "-C", "2", "-i", "s"],
    );
    wait_until("mosquitto_sub over TLS to subscribe", || {
        server.broker().session("s").is_some_and(|s| !s.subscriptions().is_empty())
    })
    .await;
    process::mosquitto(
        "mosquitto_pub",
        &["-h", "localhost", "-p", &port, "--cafile", &pki.s("ca.pem"), "-t", "secure/a", "-m", "from mosquitto"],
    )
    .await;
    // rumqttc over TLS, and a plain-TCP client: one topic tree for all listeners.
    let (mut r, _) = v4::connect_with(rumqttc_tls(tls, "rumqttc-tls", client_config(&pki.path("ca.pem"), None))).await;
    r.publish_acked("secure/b", false, "from rumqttc").await;
    assert_eq!(process::mosquitto_output(sub).await, "from mosquitto\nfrom rumqttc\n");
    // A client that does not trust the broker's CA gets nowhere.
    let foreign_ca = pki.path("rogue.pem");
    let refused = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile"])
        .arg(&foreign_ca)
        .args(["-t", "x", "-m", "x"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    // Plain MQTT on the TLS port is not TLS: no CONNACK (a TLS alert at most), then closed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(tls).await.unwrap();
    plain.write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00").await.unwrap();
    let mut answer = Vec::new();
    within("the TLS port to close a plain connection", plain.read_to_end(&mut answer)).await.ok();
    assert_ne!(answer.first(), Some(&0x20), "a CONNACK over plain TCP on the TLS port");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn wss_serves_mqtt_and_starling_v1() {
    starling::server::install_crypto_provider();
    let pki = pki();
    let server = start(tls_config(&pki, false)).await;
    let wss = server.ws_tls_addr().unwrap();
    // starling.v1 over wss://, with rustls and tungstenite.
    let stream = tls_connect(wss, client_config(&pki.path("ca.pem"), None)).await.unwrap();
    let request = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("wss://localhost:{}/ws", wss.port()))
        .header("Host", format!("localhost:{}", wss.port()))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", tokio_tungstenite::tungstenite::handshake::client::generate_key())
        .header("Sec-WebSocket-Protocol", "starling.v1")
        .body(())
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let connect =
        pb::frame::Body::Connect(pb::Connect { client_id: "wss-app".into(), clean_start: true, ..Default::default() });
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(wsproto::encode(connect))).await.unwrap();
    let reply = within("ConnAck over wss", ws.next()).await.unwrap().unwrap().into_data();
    match wsproto::decode(&reply).unwrap() {
        Inbound::Frame(pb::frame::Body::ConnAck(ack)) => assert_eq!(ack.reason_code, 0),
        other => panic!("expected ConnAck, got {other:?}"),
    }
    // MQTT.js over wss:// in Node, trusting the test CA.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/mqttjs_roundtrip.mjs");
    let out = within(
        "MQTT.js over wss",
        Command::new("node")
            .arg(script)
            .arg(format!("wss://localhost:{}/mqtt", wss.port()))
            .env("NODE_EXTRA_CA_CERTS", pki.path("ca.pem"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK over tls");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn client_certificates_and_cn_as_username() {
    starling::server::install_crypto_provider();
    let pki = pki();
    let mut config = tls_config(&pki, true);
    config.auth.acl_default = Some(Permission::Deny);
    config.acl = vec![AclRule {
        user: "*".into(),
        client: "*".into(),
        action: AclAction::All,
        topic: "dm/%u/#".into(),
        permission: Permission::Allow,
    }];
    let server = start(config).await;
    let tls = server.mqtt_tls_addr().unwrap();
    let port = tls.port().to_string();
    // alice's certificate: she is "alice" for the ACL.
    let alice = client_config(&pki.path("ca.pem"), Some((&pki.path("alice.pem"), &pki.path("alice.key"))));
    let (mut a, _) = v4::connect_with(rumqttc_tls(tls, "alice-device", alice)).await;
    assert_eq!(
        a.subscribe("dm/alice/#", v4::QoS::AtLeastOnce).await,
        [rumqttc::SubscribeReasonCode::Success(v4::QoS::AtLeastOnce)]
    );
    assert_eq!(a.subscribe("dm/bob/#", v4::QoS::AtLeastOnce).await, [rumqttc::SubscribeReasonCode::Failure]);
    process::mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            &pki.s("ca.pem"),
            "--cert",
            &pki.s("alice.pem"),
            "--key",
            &pki.s("alice.key"),
            "-t",
            "dm/alice/inbox",
            "-m",
            "note to self",
            "-q",
            "1",
        ],
    )
    .await;
    assert_eq!(a.next_publish().await.payload, "note to self");
    // No certificate, another CA's certificate, an expired one: no handshake.
    for (what, cert) in [("none", None), ("rogue", Some("rogue")), ("expired", Some("expired"))] {
        let config = client_config(
            &pki.path("ca.pem"),
            cert.map(|c| (pki.path(&format!("{c}.pem")), pki.path(&format!("{c}.key"))))
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
        );
        let result = async {
            let mut s = tls_connect(tls, config).await?;
            // TLS 1.3 reports a refused client certificate on the first read.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00").await?;
            let mut b = [0u8; 4];
            let n = s.read(&mut b).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed"));
            }
            Ok(())
        }
        .await;
        assert!(result.is_err(), "{what}: a connection was accepted");
    }
    // A username other than the certificate's CN is refused.
    let alice = client_config(&pki.path("ca.pem"), Some((&pki.path("alice.pem"), &pki.path("alice.key"))));
    let mut o = rumqttc_tls(tls, "liar", alice);
    o.set_credentials("bob", "x");
    let (client, mut events) = rumqttc::AsyncClient::new(o, 10);
    let error = within("CONNACK refusal", async {
        loop {
            match events.poll().await {
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
    })
    .await;
    drop(client);
    assert!(error.contains("BadUserNamePassword") || error.contains("refused"), "{error}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn certificates_reload_without_dropping_connections() {
    starling::server::install_crypto_provider();
    let pki = pki();
    let config = tls_config(&pki, false);
    let server = start(config.clone()).await;
    let tls = server.mqtt_tls_addr().unwrap();
    let (mut old, _) = v4::connect_with(rumqttc_tls(tls, "old", client_config(&pki.path("ca.pem"), None))).await;
    // A new CA and server certificate replace the files; reload.
    let fresh = self::pki();
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::copy(fresh.path(f), pki.path(&format!("new-{f}"))).unwrap();
    }
    let mut reloaded = config.clone();
    reloaded.tls = Some(TlsConfig {
        cert_file: pki.path("new-server.pem"),
        key_file: pki.path("new-server.key"),
        client_ca_file: None,
        require_client_cert: false,
        cn_as_username: false,
    });
    server.reload(&reloaded).unwrap();
    // New connections see the new certificate; the old CA no longer works.
    assert!(tls_connect(tls, client_config(&pki.path("ca.pem"), None)).await.is_err());
    let (mut new, _) = v4::connect_with(rumqttc_tls(tls, "new", client_config(&pki.path("new-ca.pem"), None))).await;
    new.publish_acked("x", false, "y").await;
    // The old connection keeps working.
    old.publish_acked("x", false, "z").await;
    // A broken file is refused and the certificate in force stays.
    let mut broken = reloaded.clone();
    broken.tls.as_mut().unwrap().key_file = pki.path("alice.key");
    assert!(server.reload(&broken).unwrap_err().to_string().contains("tls.key_file"));
    v4::connect_with(rumqttc_tls(tls, "after", client_config(&pki.path("new-ca.pem"), None))).await;
    server.shutdown().await.unwrap();
}

/// The canary probes the TLS listeners too (MQTT over TLS, MQTT and
/// starling.v1 over wss://), trusting exactly the broker's certificate;
/// `starling probe --tls` verifies against a CA, on every transport.
#[tokio::test]
async fn the_canary_and_starling_probe_go_through_the_tls_listeners() {
    let pki = pki();
    let mut config = tls_config(&pki, false);
    config.monitor.interval_secs = 1;
    let server = start(config).await;
    wait_until("six canary results, all ok", || {
        let results = server.canary().results();
        results.len() == 6 && results.iter().all(|r| r.ok)
    })
    .await;
    let mut listeners: Vec<&str> = server.canary().results().iter().map(|r| r.listener).collect();
    listeners.sort();
    assert_eq!(listeners, ["mqtt", "mqtt-tls", "ws-mqtt", "ws-proto", "wss-mqtt", "wss-proto"]);

    let (mqtts, wss) = (server.mqtt_tls_addr().unwrap(), server.ws_tls_addr().unwrap());
    for (transport, addr) in [("mqtt", mqtts), ("ws-mqtt", wss), ("ws-proto", wss)] {
        let out =
            probe_cli(&[&addr.to_string(), "--transport", transport, "--tls", "--cafile", &pki.s("ca.pem")]).await;
        assert!(out.status.success(), "{transport}: {}", String::from_utf8_lossy(&out.stdout));
    }
    // A CA that did not sign the broker's certificate: refused at connect.
    let out = probe_cli(&[&mqtts.to_string(), "--tls", "--cafile", &pki.s("alice.pem"), "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["step"], "connect");
    assert!(report["error"].as_str().unwrap().contains("TLS handshake"), "{report}");
    server.shutdown().await.unwrap();
}

async fn probe_cli(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_starling"));
    command.arg("probe").args(args).arg("--timeout").arg("5s");
    within("starling probe", command.output()).await.unwrap()
}

/// Files over `https://` on the `wss://` port: the JavaScript helper and
/// tus-js-client upload, and the second upload is instant, in Node trusting
/// the test CA.
#[tokio::test]
async fn files_upload_over_https_on_the_wss_port() {
    starling::server::install_crypto_provider();
    let pki = pki();
    let server = start(tls_config(&pki, false)).await;
    let wss = server.ws_tls_addr().unwrap();
    let file = pki.path("picture.bin");
    std::fs::write(&file, vec![42u8; 700_000]).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/tus_upload_test.mjs");
    let out = within(
        "tus-js-client over https",
        Command::new("node")
            .arg(script)
            .arg("instant")
            .arg(format!("https://localhost:{}", wss.port()))
            .arg(&file)
            .env("NODE_EXTRA_CA_CERTS", pki.path("ca.pem"))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("FIRST instant=false methods=POST,HEAD,PATCH"), "{stdout}");
    assert!(lines[1].starts_with("SECOND instant=true methods=POST,HEAD"), "{stdout}");
    server.shutdown().await.unwrap();
}

/// `starling bench --transport mqtts` (the TLS rows of benches/compare.sh):
/// connects through the TLS listener, checks the broker's certificate, and
/// loses nothing at a low rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_measures_over_tls() {
    let pki = pki();
    let server = start(tls_config(&pki, false)).await;
    let tls = server.mqtt_tls_addr().unwrap();
    let line = format!(
        "fanout --transport mqtts --ca-file {} --broker {tls} --subscribers 10 --rate 20 --duration 1 --warmup 0.2 --quiet",
        pki.s("ca.pem")
    );
    let result = within(&line, starling::bench::run(bench_args(&line))).await.unwrap();
    assert_eq!(result.connect_failures, 0);
    assert!(result.published > 0);
    assert_eq!(result.received, result.expected, "nothing lost over TLS");
    // A CA that did not sign the broker's certificate: every connect fails.
    let line = format!(
        "idle --transport mqtts --ca-file {} --broker {tls} --subscribers 3 --duration 0.1 --warmup 0 --quiet",
        pki.s("rogue.pem")
    );
    let refused = within(&line, starling::bench::run(bench_args(&line))).await.unwrap();
    assert_eq!(refused.connect_failures, 3);
    server.shutdown().await.unwrap();
}

fn bench_args(line: &str) -> starling::bench::BenchArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: starling::bench::BenchArgs,
    }
    <Cli as clap::Parser>::parse_from(std::iter::once("bench").chain(line.split_whitespace())).args
}
