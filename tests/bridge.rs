//! Bridges against a real Mosquitto (installed by the test command): each
//! test starts its own `mosquitto -c <conf>` on an ephemeral loopback port.

mod common;
use common::process::mosquitto;
use common::*;
use starling::bridge::BridgeStatus;
use starling::config::Config;
use starling::server::Server;
use starling::wsproto::client::{Client as ProtoClient, ClientError};
use starling::wsproto::pb;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

// ---- a Mosquitto of our own ------------------------------------------------------

/// A Mosquitto configuration on a free loopback port; start (and restart) it
/// with [`MosquittoConf::start`].
struct MosquittoConf {
    dir: tempfile::TempDir,
    port: u16,
}

struct Mosquitto {
    child: Child,
}

impl MosquittoConf {
    /// `persistent`: sessions and queued messages survive a restart (saved on SIGTERM).
    fn new(persistent: bool) -> MosquittoConf {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\n");
        // Run as root (CI containers), Mosquitto would switch to the user
        // "mosquitto", which cannot write our temporary directory.
        conf.push_str("user root\n");
        if persistent {
            conf.push_str(&format!("persistence true\npersistence_location {}/\n", dir.path().display()));
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        MosquittoConf { dir, port }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn add_lines(&self, lines: &str) {
        let path = self.dir.path().join("mosquitto.conf");
        let conf = std::fs::read_to_string(&path).unwrap();
        std::fs::write(path, conf + lines).unwrap();
    }

    /// Starts Mosquitto and waits (bounded) until it accepts connections.
    async fn start(&self) -> Mosquitto {
        let verbose = std::env::var_os("STARLING_TEST_LOG").is_some();
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(if verbose { Stdio::inherit() } else { Stdio::null() })
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run mosquitto (the test command installs it)");
        let addr = self.addr();
        within("mosquitto to accept connections", async {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
            loop {
                tick.tick().await;
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("mosquitto exited at start: {status}");
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return;
                }
            }
        })
        .await;
        Mosquitto { child }
    }
}

impl Mosquitto {
    /// SIGTERM, so a persistent Mosquitto saves its state, and waits for the exit.
    async fn stop(mut self) {
        let pid = self.child.id().expect("mosquitto is running").to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(status.success());
        within("mosquitto to exit", self.child.wait()).await.unwrap();
    }
}

// ---- starling with bridges ----------------------------------------------------------

/// One `[[bridge]]` named `name` to `remote`, with `extra` keys and `topics`
/// (`[[bridge.topics]]` tables), exactly as a user writes it; quick retries.
fn bridge_toml(
    name: &str,
    remote: SocketAddr,
    version: &str,
    extra: &str,
    topics: &[(&str, &str, u8, &str, &str)],
) -> String {
    let mut toml = format!(
        "[[bridge]]\nname = \"{name}\"\naddress = \"{remote}\"\nversion = \"{version}\"\n\
         reconnect_delay_min_ms = 20\nreconnect_delay_max_ms = 200\n{extra}\n"
    );
    for (filter, direction, qos, local, remote) in topics {
        toml.push_str(&format!(
            "[[bridge.topics]]\nfilter = \"{filter}\"\ndirection = \"{direction}\"\nqos = {qos}\n\
             local_prefix = \"{local}\"\nremote_prefix = \"{remote}\"\n"
        ));
    }
    toml
}

fn with_bridges(mut config: Config, toml: &str) -> Config {
    config.bridge = Config::from_toml(toml, "test bridge").expect("bridge config is valid").bridge;
    config
}

fn status(server: &Server) -> BridgeStatus {
    server.bridges().remove(0)
}

async fn connected(server: &Server) {
    wait_until("the bridge to connect", || status(server).connected).await;
}

fn text(payload: &[u8]) -> String {
    String::from_utf8(payload.to_vec()).unwrap()
}

/// Next publish as (topic, payload, QoS 0/1/2).
async fn next(client: &mut v4::Client) -> (String, String, u8) {
    let p = client.next_publish().await;
    (p.topic.clone(), text(&p.payload), p.qos as u8)
}

fn msg(topic: &str, payload: &str, qos: u8) -> (String, String, u8) {
    (topic.to_string(), payload.to_string(), qos)
}

async fn publish(client: &v4::Client, topic: &str, qos: v4::QoS, payload: &str) {
    client.client.publish(topic, qos, false, payload.to_string()).await.unwrap();
}

// ---- tests ----------------------------------------------------------------------------

async fn every_direction_with_prefixes(version: &str) {
    let remote = MosquittoConf::new(false);
    let _mosquitto = remote.start().await;
    let topics = [
        ("sensors/#", "in", 1, "site1/", ""),
        ("commands/#", "out", 1, "app/", "dev/"),
        ("chat/#", "both", 0, "", "bridged/"),
    ];
    let toml = bridge_toml("devices", remote.addr(), version, "", &topics);
    let server = start(with_bridges(memory_config(), &toml)).await;
    connected(&server).await;

    let mut here = v4::connect(server.mqtt_addr(), "app", true).await;
    here.subscribe("site1/sensors/#", v4::QoS::AtLeastOnce).await;
    here.subscribe("chat/#", v4::QoS::AtLeastOnce).await;
    let mut there = v4::connect(remote.addr(), "device", true).await;
    there.subscribe("dev/commands/#", v4::QoS::AtLeastOnce).await;
    there.subscribe("bridged/chat/#", v4::QoS::AtLeastOnce).await;

    // in: remote sensors/... arrives here as site1/sensors/..., QoS kept (at most the rule's).
    publish(&there, "sensors/kitchen/temp", v4::QoS::AtLeastOnce, "21.5").await;
    publish(&there, "sensors/kitchen/hum", v4::QoS::AtMostOnce, "40").await;
    assert_eq!(next(&mut here).await, msg("site1/sensors/kitchen/temp", "21.5", 1));
    assert_eq!(next(&mut here).await, msg("site1/sensors/kitchen/hum", "40", 0));

    // out: local app/commands/... arrives there as dev/commands/...; other topics stay here.
    publish(&here, "app/commands/lamp", v4::QoS::AtLeastOnce, "on").await;
    publish(&here, "app/private", v4::QoS::AtLeastOnce, "stays").await;
    publish(&here, "app/commands/fan", v4::QoS::AtMostOnce, "off").await;
    assert_eq!(next(&mut there).await, msg("dev/commands/lamp", "on", 1));
    assert_eq!(next(&mut there).await, msg("dev/commands/fan", "off", 0));

    // both, QoS 0 rule: each side's chat/... reaches the other, at QoS 0.
    publish(&here, "chat/room1", v4::QoS::AtLeastOnce, "hello there").await;
    assert_eq!(next(&mut there).await, msg("bridged/chat/room1", "hello there", 0));
    assert_eq!(next(&mut here).await, msg("chat/room1", "hello there", 1));
    publish(&there, "bridged/chat/room2", v4::QoS::AtLeastOnce, "hello here").await;
    assert_eq!(next(&mut there).await, msg("bridged/chat/room2", "hello here", 1));
    assert_eq!(next(&mut here).await, msg("chat/room2", "hello here", 0));

    // The counters move just after the messages do.
    wait_until("3 messages in and 3 out", || {
        let s = status(&server);
        (s.messages_in, s.messages_out) == (3, 3)
    })
    .await;
    let s = status(&server);
    assert!(s.connected && s.connects == 1 && s.last_error.is_none() && s.queue_depth == 0, "{s:?}");
    server.shutdown().await.unwrap();
}

/// Bridged-in messages pass the checks a local PUBLISH passes (issue 24,
/// item 9): an `in` rule that maps remote topics under `$SYS/` cannot make
/// the remote publish the broker's own topics, and a bridge that names a
/// `local_user` publishes under that user's `[[acl]]` rules. Refused
/// messages are acknowledged to the remote (sending them again would be
/// refused again) and counted.
#[tokio::test]
async fn bridged_in_messages_pass_the_local_publish_checks() {
    let remote = MosquittoConf::new(false);
    let _mosquitto = remote.start().await;
    let topics = [("x/#", "in", 1, "$SYS/", ""), ("feed/#", "in", 1, "", "")];
    let toml = bridge_toml("limited", remote.addr(), "5", "local_user = \"feeder\"", &topics);
    let mut config = with_bridges(memory_config(), &toml);
    config.acl.push(starling::config::AclRule {
        user: "feeder".into(),
        client: "*".into(),
        action: starling::config::AclAction::Publish,
        topic: "feed/secret/#".into(),
        permission: starling::config::Permission::Deny,
    });
    let server = start(config).await;
    connected(&server).await;
    let mut here = v4::connect(server.mqtt_addr(), "app", true).await;
    here.subscribe("feed/#", v4::QoS::AtLeastOnce).await;
    let there = v4::connect(remote.addr(), "device", true).await;
    publish(&there, "x/fake-uptime", v4::QoS::AtLeastOnce, "forever").await;
    publish(&there, "feed/secret/1", v4::QoS::AtLeastOnce, "not for feeder").await;
    publish(&there, "feed/open/1", v4::QoS::AtLeastOnce, "fine").await;
    // Only the allowed one arrives; the two before it were refused.
    assert_eq!(next(&mut here).await, msg("feed/open/1", "fine", 1));
    let sys = starling::topic::TopicName::new("$SYS/x/fake-uptime").unwrap();
    assert!(server.broker().retained_message(&sys).is_none());
    assert!(server.broker().security().denied_publishes() >= 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_direction_with_prefixes_mqtt_311() {
    every_direction_with_prefixes("3.1.1").await;
}

#[tokio::test]
async fn every_direction_with_prefixes_mqtt_5() {
    every_direction_with_prefixes("5").await;
}

/// A message crosses a two-way bridge once and never comes back: after each
/// message, a marker sent along the path an echo would take arrives next.
async fn two_way_without_loops(version: &str, remote: SocketAddr) {
    let toml = bridge_toml("loop", remote, version, "", &[("loop/#", "both", 1, "", "")]);
    let server = start(with_bridges(memory_config(), &toml)).await;
    connected(&server).await;
    let mut here = v4::connect(server.mqtt_addr(), "here", true).await;
    here.subscribe("loop/#", v4::QoS::AtLeastOnce).await;
    let mut there = v4::connect(remote, "there", true).await;
    there.subscribe("loop/#", v4::QoS::AtLeastOnce).await;

    for round in 0..3 {
        // From here: it reaches there once, and Mosquitto does not send it
        // back: a marker published there after it was routed arrives here next.
        let m = format!("from here {round}");
        here.publish_acked("loop/a", false, m.clone()).await;
        assert_eq!(next(&mut here).await, msg("loop/a", &m, 1));
        assert_eq!(next(&mut there).await, msg("loop/a", &m, 1));
        let marker = format!("marker there {round}");
        there.publish_acked("loop/marker", false, marker.clone()).await;
        assert_eq!(next(&mut there).await, msg("loop/marker", &marker, 1));
        assert_eq!(next(&mut here).await, msg("loop/marker", &marker, 1), "an echo came back");

        // From there: it reaches here once, and the bridge does not send it
        // back out: a marker published here afterwards arrives there next.
        let m = format!("from there {round}");
        there.publish_acked("loop/b", false, m.clone()).await;
        assert_eq!(next(&mut there).await, msg("loop/b", &m, 1));
        assert_eq!(next(&mut here).await, msg("loop/b", &m, 1));
        let marker = format!("marker here {round}");
        here.publish_acked("loop/marker", false, marker.clone()).await;
        assert_eq!(next(&mut here).await, msg("loop/marker", &marker, 1));
        assert_eq!(next(&mut there).await, msg("loop/marker", &marker, 1), "a message was sent back");
    }
    // The markers from here went out once and came back to nobody: the last
    // thing here saw is the last marker, nothing follows a final barrier.
    there.publish_acked("loop/end", false, "end").await;
    assert_eq!(next(&mut there).await, msg("loop/end", "end", 1));
    assert_eq!(next(&mut here).await, msg("loop/end", "end", 1));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_way_bridge_without_loops_mqtt_311() {
    let remote = MosquittoConf::new(false);
    let _mosquitto = remote.start().await;
    two_way_without_loops("3.1.1", remote.addr()).await;
}

#[tokio::test]
async fn two_way_bridge_without_loops_mqtt_5() {
    let remote = MosquittoConf::new(false);
    let _mosquitto = remote.start().await;
    two_way_without_loops("5", remote.addr()).await;
}

/// The remote can be another starling (its MQTT 5 No Local, its 3.1.1 echo).
#[tokio::test]
async fn two_way_bridge_between_two_starlings() {
    let remote = start_memory().await;
    two_way_without_loops("5", remote.mqtt_addr()).await;
    two_way_without_loops("3.1.1", remote.mqtt_addr()).await;
    remote.shutdown().await.unwrap();
}

/// Mosquitto goes away mid-stream: QoS 1 messages queue here, the link comes
/// back by itself when Mosquitto does, and they all arrive.
#[tokio::test]
async fn remote_restart_mid_stream() {
    let remote = MosquittoConf::new(true);
    let mosquitto = remote.start().await;
    let toml =
        bridge_toml("up", remote.addr(), "3.1.1", "", &[("data/#", "out", 1, "", ""), ("cmd/#", "in", 1, "", "")]);
    let server = start(with_bridges(memory_config(), &toml)).await;
    connected(&server).await;
    // The consumer on Mosquitto has a persistent session: Mosquitto keeps
    // what arrives for it while it is away.
    let consumer_options = || {
        let mut o = v4::options(remote.addr(), "consumer");
        o.set_clean_session(false);
        o
    };
    let (mut consumer, _) = v4::connect_with(consumer_options()).await;
    consumer.subscribe("data/#", v4::QoS::AtLeastOnce).await;
    let mut producer = v4::connect(server.mqtt_addr(), "producer", true).await;
    for i in 0..10 {
        producer.publish_acked("data/x", false, format!("{i}")).await;
    }
    for i in 0..10 {
        assert_eq!(next(&mut consumer).await, msg("data/x", &i.to_string(), 1));
    }

    mosquitto.stop().await;
    consumer.kill();
    wait_until("the bridge to notice", || !status(&server).connected).await;
    for i in 10..20 {
        producer.publish_acked("data/x", false, format!("{i}")).await;
    }
    assert_eq!(status(&server).queue_depth, 10);

    let _mosquitto = remote.start().await;
    connected(&server).await;
    let (mut consumer, ack) = v4::connect_with(consumer_options()).await;
    assert!(ack.session_present, "mosquitto kept the consumer's session");
    // At least once: a message in flight when Mosquitto stopped may come twice.
    let mut got = Vec::new();
    while got.len() < 10 {
        let (topic, payload, qos) = next(&mut consumer).await;
        assert_eq!((topic.as_str(), qos), ("data/x", 1));
        let n: usize = payload.parse().unwrap();
        if n >= 10 && !got.contains(&n) {
            got.push(n);
        }
    }
    assert_eq!(got, (10..20).collect::<Vec<_>>());
    // The in direction is back too.
    let mut here = v4::connect(server.mqtt_addr(), "here", true).await;
    here.subscribe("cmd/#", v4::QoS::AtLeastOnce).await;
    consumer.publish_acked("cmd/reboot", false, "now").await;
    assert_eq!(next(&mut here).await, msg("cmd/reboot", "now", 1));
    let s = status(&server);
    assert!(s.connects >= 2 && s.last_error.is_some() && s.queue_depth == 0, "{s:?}");
    server.shutdown().await.unwrap();
}

/// Out-messages queued while the remote is unreachable survive a restart of
/// starling (sled) and arrive once the remote is there. QoS 0 ones are not
/// kept, like for any offline session.
#[tokio::test]
async fn starling_restart_keeps_queued_out_messages() {
    let dir = tempfile::tempdir().unwrap();
    let remote = MosquittoConf::new(false); // not started yet: unreachable
    let toml = bridge_toml("later", remote.addr(), "3.1.1", "", &[("out/#", "out", 1, "", "")]);
    let config = with_bridges(sled_config(dir.path()), &toml);

    let server = start(config.clone()).await;
    wait_until("a connection error", || status(&server).last_error.is_some()).await;
    assert!(!status(&server).connected);
    let mut producer = v4::connect(server.mqtt_addr(), "producer", true).await;
    publish(&producer, "out/dropped", v4::QoS::AtMostOnce, "qos 0 is not queued").await;
    for i in 0..5 {
        producer.publish_acked("out/q", false, format!("{i}")).await;
    }
    assert_eq!(status(&server).queue_depth, 5);
    producer.disconnect().await;
    server.shutdown().await.unwrap();

    let _mosquitto = remote.start().await;
    let mut consumer = v4::connect(remote.addr(), "consumer", true).await;
    consumer.subscribe("out/#", v4::QoS::AtLeastOnce).await;
    let server = start(config).await;
    for i in 0..5 {
        assert_eq!(next(&mut consumer).await, msg("out/q", &i.to_string(), 1));
    }
    wait_until("the queue to drain", || {
        let s = status(&server);
        s.connected && s.queue_depth == 0 && s.inflight == 0
    })
    .await;
    server.shutdown().await.unwrap();
}

/// Devices keep publishing to their Mosquitto with mosquitto_pub; an app on
/// starling's WebSocket protocol receives them.
#[tokio::test]
async fn devices_on_mosquitto_reach_a_websocket_app() {
    let remote = MosquittoConf::new(false);
    let _mosquitto = remote.start().await;
    let toml = bridge_toml("devices", remote.addr(), "5", "", &[("devices/#", "in", 1, "site1/", "")]);
    let server = start(with_bridges(memory_config(), &toml)).await;
    connected(&server).await;
    let url = format!("ws://{}/ws", server.ws_addr());
    let connect = pb::Connect { client_id: "dashboard".into(), clean_start: true, ..Default::default() };
    let (mut app, _) = within("starling.v1 connect", ProtoClient::connect(&url, connect)).await.unwrap();
    app.subscribe(1, &[("site1/devices/#", 1)]).await.unwrap();

    let port = remote.port.to_string();
    for (version, reading) in [("mqttv311", "21.5"), ("mqttv5", "22.0")] {
        mosquitto(
            "mosquitto_pub",
            &["-h", "127.0.0.1", "-p", &port, "-V", version, "-t", "devices/d1/temp", "-q", "1", "-m", reading],
        )
        .await;
        let p = within("a Publish over /ws", app.next_publish()).await.unwrap();
        assert_eq!((p.topic.as_str(), text(&p.payload).as_str(), p.qos), ("site1/devices/d1/temp", reading, 1));
        app.ack(p.packet_id).await.unwrap();
    }
    server.shutdown().await.unwrap();
}

/// TLS with a CA of our own (openssl makes a CA and a server certificate for 127.0.0.1).
#[tokio::test]
async fn tls_with_a_custom_ca() {
    let remote = MosquittoConf::new(false);
    let pki = remote.dir.path();
    make_pki(pki).await;
    remote.add_lines(&format!("cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n", pki.display()));
    let _mosquitto = remote.start().await;
    let extra = format!("tls_ca_file = \"{}\"", pki.join("ca.pem").display());
    let toml = bridge_toml("secure", remote.addr(), "3.1.1", &extra, &[("s/#", "both", 1, "", "")]);
    let server = start(with_bridges(memory_config(), &toml)).await;
    connected(&server).await;
    let mut here = v4::connect(server.mqtt_addr(), "here", true).await;
    here.subscribe("s/#", v4::QoS::AtLeastOnce).await;
    mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &remote.port.to_string(),
            "--cafile",
            &pki.join("ca.pem").display().to_string(),
            // libmosquitto's host name check does not take IP addresses; the bridge's (rustls) does.
            "--insecure",
            "-t",
            "s/1",
            "-q",
            "1",
            "-m",
            "over tls",
        ],
    )
    .await;
    assert_eq!(next(&mut here).await, msg("s/1", "over tls", 1));
    server.shutdown().await.unwrap();
}

async fn make_pki(dir: &Path) {
    let run = |args: Vec<String>| async move {
        let out = Command::new("openssl").args(&args).current_dir(dir).output().await.expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let ec = s(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]);
    let mut ca = s(&["req", "-x509", "-days", "2", "-subj", "/CN=test ca", "-keyout", "ca.key", "-out", "ca.pem"]);
    ca.extend(ec.clone());
    ca.extend(s(&["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]));
    run(ca).await;
    let mut csr = s(&["req", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"]);
    csr.extend(ec);
    run(csr).await;
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    run(s(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]))
    .await;
}

/// A remote that is not there is not fatal; files that cannot be read are a
/// start-up error naming the bridge and the key.
#[tokio::test]
async fn start_up_errors_and_unreachable_remotes() {
    let nobody = MosquittoConf::new(false).addr();
    let toml = bridge_toml("absent", nobody, "5", "", &[("a/#", "out", 1, "", "")]);
    let server = start(with_bridges(memory_config(), &toml)).await;
    wait_until("a connection error", || status(&server).last_error.is_some()).await;
    let mut client = v4::connect(server.mqtt_addr(), "c", true).await;
    client.subscribe("a/#", v4::QoS::AtLeastOnce).await;
    client.publish_acked("a/1", false, "the broker works").await;
    assert_eq!(next(&mut client).await, msg("a/1", "the broker works", 1));
    server.shutdown().await.unwrap();

    let missing = PathBuf::from("/nonexistent/ca.pem");
    let extra = format!("tls_ca_file = \"{}\"", missing.display());
    let toml = bridge_toml("tls", nobody, "3.1.1", &extra, &[("a/#", "out", 1, "", "")]);
    let err = Server::start(with_bridges(memory_config(), &toml)).await.err().expect("start fails").to_string();
    assert!(err.contains("bridge \"tls\"") && err.contains("tls_ca_file"), "{err}");
}

/// The bridge's local session cannot be taken over by a network client.
#[tokio::test]
async fn network_clients_cannot_use_bridge_client_ids() {
    let server = start_memory().await;
    let (raw, ack) = raw::Raw::connect_with(
        server.mqtt_addr(),
        raw::connect_packet(starling::mqtt::packet::ProtocolVersion::V5, "$bridge/devices"),
    )
    .await;
    assert_eq!(ack.reason_code, starling::model::reason::CLIENT_IDENTIFIER_NOT_VALID);
    drop(raw);
    let url = format!("ws://{}/ws", server.ws_addr());
    let connect = pb::Connect { client_id: "$bridge/devices".into(), clean_start: true, ..Default::default() };
    match within("starling.v1 connect", ProtoClient::connect(&url, connect)).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, 0x85),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("a network client took a bridge's client id"),
    }
    server.shutdown().await.unwrap();
}
