//! The broker as a separate process (for crash tests) and the mosquitto
//! command-line clients (for interoperability tests).

use super::WAIT;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `starling serve` flags that put every listener on an ephemeral loopback
/// port (tests run in parallel).
pub const EPHEMERAL_LISTENERS: [&str; 6] =
    ["--mqtt-bind", "127.0.0.1:0", "--ws-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0"];

/// A `starling serve` process on an ephemeral loopback port.
pub struct BrokerProcess {
    pub child: Child,
    /// MQTT over TCP.
    pub addr: SocketAddr,
    /// The WebSocket port (`/mqtt`, `/ws`).
    pub ws_addr: SocketAddr,
    /// The admin HTTP listener.
    pub admin_addr: SocketAddr,
}

impl BrokerProcess {
    /// Starts the real binary with its data in `dir` and waits for the line
    /// that announces the listening address.
    pub async fn start(dir: &Path) -> BrokerProcess {
        BrokerProcess::start_with_env(dir, &[]).await
    }

    /// [`BrokerProcess::start`] with extra environment variables.
    pub async fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> BrokerProcess {
        BrokerProcess::start_with_listeners(dir, env, &EPHEMERAL_LISTENERS).await
    }

    /// [`BrokerProcess::start`] with the listeners' flags given (a test that
    /// restarts the broker where its clients expect it passes fixed ports).
    pub async fn start_with_listeners(dir: &Path, env: &[(&str, &str)], listeners: &[&str]) -> BrokerProcess {
        // STARLING_TEST_BIN: run the scenarios against another build (a
        // release binary, say) without rebuilding the tests.
        let program = std::env::var("STARLING_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_starling").into());
        let mut child = Command::new(program)
            .arg("serve")
            .args(listeners)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .current_dir(dir)
            .env("RUST_LOG", std::env::var("STARLING_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starling binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (addr, ws_addr, admin_addr) = super::within("the broker's listening lines", async {
            let (mut mqtt, mut ws, mut admin) = (None, None, None);
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(a) = line.strip_prefix("starling: mqtt listening on ") {
                    mqtt = Some(a.trim().parse().unwrap());
                }
                if let Some(a) = line.strip_prefix("starling: websocket listening on ") {
                    ws = Some(a.trim().parse().unwrap());
                }
                if let Some(a) = line.strip_prefix("starling: admin listening on ") {
                    admin = Some(a.trim().parse().unwrap());
                }
                if let (Some(m), Some(w), Some(a)) = (mqtt, ws, admin) {
                    return (m, w, a);
                }
            }
            panic!("broker exited before listening");
        })
        .await;
        // Keep reading so the broker never writes into a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        BrokerProcess { child, addr, ws_addr, admin_addr }
    }

    /// SIGKILL: no shutdown path runs, nothing is flushed on the way out.
    pub async fn kill_9(mut self) {
        self.child.start_kill().unwrap();
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

/// A loopback port free at the time of the call (for a broker that must
/// come back on the same port after a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a mosquitto client to completion (bounded by [`WAIT`]) and returns stdout.
pub async fn mosquitto(program: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(WAIT, Command::new(program).args(args).kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish"))
        .unwrap_or_else(|e| panic!("cannot run {program} (the test command installs mosquitto-clients): {e}"));
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Starts a mosquitto client in the background (for subscribers).
pub fn mosquitto_spawn(program: &str, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (the test command installs mosquitto-clients): {e}"))
}

/// Waits for a background mosquitto client to exit and returns its stdout.
pub async fn mosquitto_output(child: Child) -> String {
    let out =
        tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("mosquitto client finished in time").unwrap();
    assert!(out.status.success(), "mosquitto client failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
