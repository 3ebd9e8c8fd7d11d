//! A real `nats-server` (Debian's package; the test command installs it)
//! with JetStream on, its own data directory and a free loopback port, for
//! the cluster tests.

use super::WAIT;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// Extra arguments (clustering: name, cluster port, routes).
    args: Vec<String>,
}

impl NatsServer {
    /// Starts nats-server on a free port and waits until it takes connections.
    pub async fn start(dir: &Path) -> NatsServer {
        let port = super::process::free_port();
        let mut server = NatsServer { child: None, port, dir: dir.to_path_buf(), args: Vec::new() };
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

    /// Starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server runs (the test command installs Debian's nats-server)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        super::wait_for("nats-server to listen", || async { tokio::net::TcpStream::connect(&addr).await.is_ok() })
            .await;
    }

    /// SIGKILL: the server is gone at once.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            let _ = tokio::time::timeout(WAIT, child.wait()).await;
        }
    }
}
