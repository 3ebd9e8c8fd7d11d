//! A real `nats-server` (Debian's package; the test command installs it)
//! with JetStream on, its own data directory and a free loopback port, for
//! the cluster tests.

use super::*;
use starling::config::{ClusterConfig, Config};
use starling::server::Server;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// The nats-server to run: `STARLING_NATS_SERVER` (the test command runs
/// the cluster tests a second time with the current upstream release it
/// installs in target/pyenv), else Debian's on the PATH.
pub fn nats_server_program() -> String {
    std::env::var("STARLING_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// Extra arguments (clustering: name, cluster port, routes).
    args: Vec<String>,
}

impl NatsServer {
    /// Starts nats-server on a port it picks itself (read from its log: a
    /// port chosen here and bound there could be taken by another test's
    /// server in between, and this test would then talk to that one) and
    /// waits until it takes connections.
    pub async fn start(dir: &Path) -> NatsServer {
        let mut server = NatsServer { child: None, port: 0, dir: dir.to_path_buf(), args: Vec::new() };
        server.restart().await;
        server
    }

    /// Starts nats-server with a configuration file, on a port it picks
    /// and `dir` as its JetStream directory (the file's `store_dir` is left
    /// out of the copy it runs: nats-server refuses both).
    pub async fn start_with_config(dir: &Path, config: &Path) -> NatsServer {
        let text = std::fs::read_to_string(config).unwrap();
        let kept: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with("store_dir:")).collect();
        let copy = dir.join("nats-server.conf");
        std::fs::write(&copy, kept.join("\n")).unwrap();
        let args = vec!["-c".into(), copy.to_str().unwrap().to_string()];
        let mut server = NatsServer { child: None, port: 0, dir: dir.to_path_buf(), args };
        server.restart().await;
        server
    }

    /// Three nats-servers routed into one NATS cluster (JetStream on each,
    /// its own data directory), each taking clients on its own port.
    pub async fn cluster_of_three(dir: &Path) -> Vec<NatsServer> {
        let ports: Vec<(u16, u16)> =
            (0..3).map(|_| (super::process::free_port(), super::process::free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, c)| format!("nats://127.0.0.1:{c}")).collect();
        let mut servers = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let data = dir.join(format!("nats-{i}"));
            std::fs::create_dir_all(&data).unwrap();
            let args = vec![
                "--server_name".into(),
                format!("s{i}"),
                "--cluster_name".into(),
                "starling-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{cluster_port}"),
                "--routes".into(),
                routes.join(","),
            ];
            let mut server = NatsServer { child: None, port: *port, dir: data, args };
            server.restart().await;
            servers.push(server);
        }
        // JetStream answers once the three have elected its leader.
        let js = async_nats::jetstream::new(async_nats::connect(servers[0].url()).await.unwrap());
        super::wait_for("the NATS cluster's JetStream leader", || async {
            let info = tokio::time::timeout(std::time::Duration::from_millis(300), js.query_account()).await;
            matches!(info, Ok(Ok(_)))
        })
        .await;
        servers
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again: on the same port and data directory; the first
    /// time, on a port it picks) and waits until it listens.
    pub async fn restart(&mut self) {
        use tokio::io::{AsyncBufReadExt, BufReader};
        // -1: a random free port, which nats-server logs.
        let port = if self.port == 0 { "-1".to_string() } else { self.port.to_string() };
        let mut child = Command::new(nats_server_program())
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server runs (the test command installs Debian's nats-server)");
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        let listening = super::within("nats-server to listen", async {
            loop {
                let line = log.next_line().await.unwrap().expect("nats-server exited before listening");
                if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                    return addr.trim().rsplit(':').next().unwrap().parse::<u16>().unwrap();
                }
            }
        })
        .await;
        // Keep reading its log, or it would block writing to a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
        self.port = listening;
        self.child = Some(child);
    }

    /// SIGSTOP: the server stops answering, but its connections stay open
    /// (a hung or cut-off NATS as its clients see it). [`NatsServer::resume`]
    /// continues it.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        // The stop takes effect when the kernel next schedules each of its
        // threads: on a loaded machine a moment later, and a message sent
        // meanwhile would still be answered. Wait until it is stopped.
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("nats-server is running");
        let stat = format!("/proc/{pid}/stat");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            // "pid (comm) STATE ...": the state follows the closing parenthesis.
            if state.rsplit(") ").next().is_some_and(|rest| rest.starts_with('T')) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "nats-server did not stop: {state}");
            std::thread::yield_now();
        }
    }

    /// SIGCONT after [`NatsServer::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("nats-server is running");
        // SAFETY: a signal to our own child process, by its pid.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0, "cannot signal nats-server");
    }

    /// SIGKILL: the server is gone at once.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            let _ = tokio::time::timeout(WAIT, child.wait()).await;
        }
    }
}

/// A node's configuration: the shipped topic classes, memory storage, NATS
/// at `nats`.
pub fn node_config(nats: &NatsServer, node: &str) -> Config {
    let mut config = with_classes(memory_config());
    config.cluster =
        Some(ClusterConfig { nats_urls: vec![nats.url()], node: Some(node.into()), ..ClusterConfig::default() });
    config
}

/// Nodes named `names`, the i-th knowing only the i-th NATS server of a
/// NATS cluster, with JetStream streams of three replicas, once each has
/// found them.
pub async fn nodes_with_three_replicas(nats: &[NatsServer], names: &[&str]) -> Vec<Server> {
    let mut servers = Vec::new();
    for (i, node) in names.iter().enumerate() {
        let mut config = node_config(&nats[i], node);
        config.cluster.as_mut().unwrap().stream_replicas = 3;
        // A stream leader's election after a NATS server is lost took 10 s
        // alone and over 15 s (the default ack_timeout_ms) on a loaded
        // machine: the tests that kill a server allow 40 s for it.
        config.cluster.as_mut().unwrap().ack_timeout_ms = 40_000;
        let server = start(config).await;
        let cluster = server.cluster().unwrap().clone();
        // Each stream and bucket is a raft group of three: seconds each on a busy machine.
        let raft_groups = Duration::from_secs(60);
        wait_until_for(raft_groups, "JetStream streams (3 replicas) and buckets", || cluster.durable.is_ready()).await;
        servers.push(server);
    }
    servers
}

/// Skips what `client` receives until a message whose payload is `payload`.
pub async fn skip_until(client: &mut v4::Client, payload: &[u8]) {
    let what = format!("a message {:?}", String::from_utf8_lossy(payload));
    client
        .next_matching(&what, |p| match p {
            v4::Incoming::Publish(p) if p.payload.as_ref() == payload => Some(()),
            _ => None,
        })
        .await
}

/// Publishes `probe` messages on `topic` from `publisher` until `receiver`
/// gets one (the other node's NATS subscription is in place), then drains
/// the probes still on their way.
pub async fn until_routed(publisher: &mut v4::Client, receiver: &mut v4::Client, topic: &str) {
    within("the other node's interest to reach NATS", async {
        loop {
            publisher.publish_acked(topic, false, "probe").await;
            let got = tokio::time::timeout(Duration::from_millis(100), receiver.events.recv()).await;
            if let Ok(Some(Ok(v4::Incoming::Publish(p)))) = got {
                if p.payload.as_ref() == b"probe" {
                    return;
                }
            }
        }
    })
    .await;
    // Drain the probes still on their way (each follows the first in order).
    publisher.publish_acked(topic, false, "end of probes").await;
    skip_until(receiver, b"end of probes").await;
}
