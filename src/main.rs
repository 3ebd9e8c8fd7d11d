//! The `starling` command line: parse, load the configuration, start.

use clap::{Parser, Subcommand};
use starling::config::{Config, StorageBackend, BUNDLED_CONFIG};
use starling::server::Server;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "starling", version, about = "A realtime pub/sub broker (MQTT 3.1.1 and 5.0)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load-test a broker (starling or any other MQTT broker): fan-out,
    /// fan-in, point-to-point and idle connections.
    Bench(starling::bench::BenchArgs),
    /// Simulated publishers for the web demo: `starling simulate fleet`.
    Simulate(starling::simulate::SimulateArgs),
    /// Run the broker.
    Serve {
        /// Configuration file. Default: ./config.toml if it exists, else the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address for MQTT over TCP (overrides mqtt.bind).
        #[arg(long)]
        mqtt_bind: Option<SocketAddr>,
        /// Address for the WebSocket listener, /mqtt and /ws (overrides websocket.bind).
        #[arg(long)]
        ws_bind: Option<SocketAddr>,
        /// Directory for sled storage (overrides storage.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Storage backend, "sled" or "memory" (overrides storage.backend).
        #[arg(long, value_parser = ["sled", "memory"])]
        storage: Option<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    starling::server::install_crypto_provider();
    match cli.command {
        Command::Bench(args) => {
            let runtime = tokio::runtime::Runtime::new().expect("cannot start the Tokio runtime");
            match runtime.block_on(starling::bench::run(args)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Simulate(args) => {
            let runtime = tokio::runtime::Runtime::new().expect("cannot start the Tokio runtime");
            match runtime.block_on(starling::simulate::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config, mqtt_bind, ws_bind, data_dir, storage } => {
            let mut config = match load_config(config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(addr) = mqtt_bind {
                config.mqtt.bind = addr;
            }
            if let Some(addr) = ws_bind {
                config.websocket.bind = addr;
            }
            if let Some(dir) = data_dir {
                config.storage.data_dir = dir;
            }
            if let Some(backend) = storage {
                config.storage.backend =
                    if backend == "memory" { StorageBackend::Memory } else { StorageBackend::Sled };
            }
            let runtime = tokio::runtime::Runtime::new().expect("cannot start the Tokio runtime");
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load_config(path: Option<PathBuf>) -> Result<Config, starling::config::ConfigError> {
    match path {
        Some(path) => Config::from_file(&path),
        None if std::path::Path::new("config.toml").exists() => Config::from_file(std::path::Path::new("config.toml")),
        None => Config::from_toml(BUNDLED_CONFIG, "<built-in config.toml>"),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    // Lines on stdout that scripts and tests can wait for. Write errors are
    // ignored: a closed stdout must not stop the broker.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "starling: mqtt listening on {}", server.mqtt_addr());
    let _ = writeln!(out, "starling: websocket listening on {}", server.ws_addr());
    let _ = out.flush();
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("cannot install the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
