//! The `starling` binary: configuration errors at start-up and graceful
//! shutdown on SIGTERM.

mod common;
use common::process::BrokerProcess;
use common::*;
use std::process::Command;

fn starling(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_starling")).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn bad_config_names_the_file_and_every_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "[mqtt]\nreceive_maximum = 0\n[session]\nmax_queued_messages = 0\n")
        .unwrap();
    let out = starling(dir.path(), &["serve", "--config", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("mqtt.receive_maximum") && err.contains("session.max_queued_messages"), "{err}");
}

#[test]
fn unknown_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("typo.toml"), "[storage]\ndatadir = \"x\"\n").unwrap();
    let out = starling(dir.path(), &["serve", "--config", "typo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.toml") && err.contains("datadir"), "{err}");
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = starling(dir.path(), &["serve", "--config", "nope.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}

#[tokio::test]
async fn sigterm_disconnects_clients_with_0x8b_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path()).await;
    let mut client = v5::connect(broker.addr, "stay").await;
    let pid = broker.child.id().unwrap().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let disconnect = client.disconnected().await.expect("DISCONNECT from the broker");
    assert_eq!(disconnect.reason_code, rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::ServerShuttingDown);
    let status = within("broker exit", broker.child.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// `[log] format = "json"`: every stderr line is a JSON object, there are no
/// colour codes (stderr is not a terminal), and a connection's close is
/// logged once with its reason.
#[tokio::test]
async fn json_logs_without_colour_and_one_line_per_closed_connection() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[log]\nlevel = \"info\"\nformat = \"json\"\n[storage]\nbackend = \"memory\"\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .arg("serve")
        .args(common::process::EPHEMERAL_LISTENERS)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = within("the listening line", async {
        loop {
            let line = stdout.next_line().await.unwrap().expect("the broker exited");
            if let Some(a) = line.strip_prefix("starling: mqtt listening on ") {
                return a.trim().parse().unwrap();
            }
        }
    })
    .await;
    let client = v4::connect(addr, "log-test", true).await;
    // (The canary's own connections, every 10 s, close at debug level: not here.)
    client.client.disconnect().await.unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut connected = None;
    let closed = within("the close line", async {
        loop {
            let line = stderr.next_line().await.unwrap().expect("the broker exited");
            assert!(!line.contains('\u{1b}'), "a colour code in a log written to a pipe: {line:?}");
            let event: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            if event["fields"]["client_id"] != "log-test" {
                continue;
            }
            if event["fields"]["message"] == "client connected" {
                connected = Some(event.clone());
            }
            if event["fields"]["message"] == "connection closed" {
                return event;
            }
        }
    })
    .await;
    // One line per accepted connection: who, from where, how.
    let connected = connected.expect("a connect line before the close line");
    assert_eq!(connected["level"], "INFO", "{connected}");
    assert_eq!(connected["fields"]["transport"], "mqtt", "{connected}");
    assert_eq!(connected["fields"]["protocol"], "3.1.1", "{connected}");
    assert_eq!(connected["fields"]["keep_alive_secs"], 30, "{connected}");
    assert!(connected["fields"]["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{connected}");
    assert_eq!(closed["fields"]["client_id"], "log-test", "{closed}");
    assert!(closed["fields"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{closed}");
    assert!(closed["fields"]["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{closed}");
    assert!(closed["fields"]["duration_secs"].as_f64().is_some(), "{closed}");
    assert_eq!(closed["level"], "INFO", "{closed}");
}

#[test]
fn a_bad_log_level_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "[log]\nlevel = \"starling=loud\"\n").unwrap();
    let out = starling(dir.path(), &["serve", "--config", "bad.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.level"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn version_names_the_release_and_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let out = starling(dir.path(), &["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("starling {} (commit ", env!("CARGO_PKG_VERSION"))), "{text}");
}

/// The shipped config.toml and topics/ copied to `DIR/etc`, as a package
/// installs them next to each other.
fn installed_config(dir: &std::path::Path) -> std::path::PathBuf {
    let etc = dir.join("etc");
    std::fs::create_dir_all(etc.join("topics")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("config.toml"), etc.join("config.toml")).unwrap();
    for entry in std::fs::read_dir(root.join("topics")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, etc.join("topics").join(path.file_name().unwrap())).unwrap();
    }
    etc.join("config.toml")
}

/// `check-config` says what `serve` would refuse, without binding: every
/// problem of the file at once (environment overrides included) and the
/// files and directories it names that are not there. Relative paths are
/// the config file's, wherever it is run from.
#[test]
fn check_config_reports_every_problem_and_resolves_paths_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = installed_config(dir.path());
    let config = config.to_str().unwrap();
    // Run from elsewhere: topics/ is found next to the file.
    let out = starling(dir.path(), &["check-config", "--config", config]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");

    let out = Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["check-config", "--config", config])
        .env("STARLING_MQTT__RECEIVE_MAXIMUM", "0")
        .env("STARLING_SESSION__MAX_QUEUED_MESSAGES", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mqtt.receive_maximum") && err.contains("session.max_queued_messages"), "{err}");

    std::fs::write(
        dir.path().join("missing.toml"),
        "[classes]\ndir = \"no-such-topics\"\n[auth]\nchain = [\"password_file\"]\npassword_file = \"no-such-passwd\"\n",
    )
    .unwrap();
    let out = starling(dir.path(), &["check-config", "--config", "missing.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("classes.dir") && err.contains("auth.password_file"), "{err}");
}

/// A `classes.dir` the file names must exist (before, a missing one meant
/// "no classes" and chat history quietly disappeared): `serve` refuses to
/// start and names the key.
#[test]
fn a_named_classes_dir_that_is_missing_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "[classes]\ndir = \"topics\"\n[storage]\nbackend = \"memory\"\n")
        .unwrap();
    let mut args = vec!["serve", "--config", "c.toml"];
    args.extend(common::process::EPHEMERAL_LISTENERS);
    let out = starling(dir.path(), &args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("classes.dir") && err.contains("no such directory"), "{err}");
}

/// The documented systemd unit runs in /var/lib/starling with the config in
/// /etc/starling: the topic classes next to the config are loaded (chat
/// history works), and an environment variable overrides the file.
#[tokio::test]
async fn served_from_another_directory_the_classes_next_to_the_config_apply() {
    let dir = tempfile::tempdir().unwrap();
    let config = installed_config(dir.path());
    let mut args = common::process::EPHEMERAL_LISTENERS.to_vec();
    args.extend(["--config", config.to_str().unwrap()]);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let broker = BrokerProcess::start_with_listeners(&state, &[("STARLING_STORAGE__BACKEND", "memory")], &args).await;
    let mut client = v5::connect(broker.addr, "chatter").await;
    client.publish_acked("chat/lobby", false, "kept in history").await;
    let history = common::http::request(
        broker.ws_addr,
        "GET",
        "/api/v1/history?topic=chat%2Flobby",
        &[("Connection", "close")],
        b"",
    )
    .await;
    assert_eq!(history.status, 200, "{}", history.text());
    assert!(
        history.text().contains("a2VwdCBpbiBoaXN0b3J5") || history.text().contains("kept in history"),
        "{}",
        history.text()
    );
    // STARLING_STORAGE__BACKEND=memory: nothing was written under ./data.
    assert!(!config.parent().unwrap().join("data").exists(), "the environment chose memory storage");
}

/// `starling token` mints what the configured broker accepts (its HS256
/// secret, issuer and roles), and refuses without a secret.
#[tokio::test]
async fn starling_token_mints_a_token_the_broker_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[storage]\nbackend = \"memory\"\n[classes]\ndir = \"\"\n[auth]\nchain = [\"jwt\"]\n\
                  [auth.jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\nissuer = \"https://app.example\"\n";
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let out =
        starling(dir.path(), &["token", "--config", "c.toml", "--sub", "alice", "--ttl", "2h", "--roles", "server"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut config = starling::config::Config::from_file(&dir.path().join("c.toml")).unwrap();
    for bind in [&mut config.mqtt.bind, &mut config.websocket.bind, &mut config.http.bind] {
        *bind = "127.0.0.1:0".parse().unwrap();
    }
    config.sys.interval_secs = 0;
    config.monitor.interval_secs = 0;
    let server = start(config).await;
    let mut options = v5::options(server.mqtt_addr(), "alice-phone");
    options.set_credentials("", token);
    let (_client, ack) = v5::connect_with(options).await;
    assert_eq!(ack.code, rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success);
    server.shutdown().await.unwrap();

    std::fs::write(dir.path().join("none.toml"), "[storage]\nbackend = \"memory\"\n").unwrap();
    let out = starling(dir.path(), &["token", "--config", "none.toml", "--sub", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[auth.jwt] secret"));
}
