//! The `starling` command line: parse, load the configuration, start.

use anyhow::Context;
use clap::{Parser, Subcommand};
use starling::config::{Config, StorageBackend, BUNDLED_CONFIG};
use starling::server::Server;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc, a default feature: measured faster than the system allocator
/// on every throughput row and leaner per idle connection (docs/performance.md,
/// "Allocator"). `--no-default-features` builds with the system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `starling --version`: the release and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("STARLING_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "starling", version = VERSION, about = "A realtime pub/sub broker (MQTT 3.1.1 and 5.0)")]
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
    /// Add a user to a password file or change their password (argon2id);
    /// the password is asked on a terminal, or read as one line from stdin.
    /// A running broker reads the file again on SIGHUP.
    Passwd {
        /// The password file (`auth.password_file`); created if missing.
        file: PathBuf,
        /// The user name.
        user: String,
        /// Remove the user instead.
        #[arg(long)]
        delete: bool,
    },
    /// Mutation-fuzz the parsers (MQTT, starling.v1, HTTP head, topics,
    /// config, topic classes, tus headers): every target must survive any input.
    Fuzz {
        /// A target, or "all": mqtt, starling-v1, http-head, topic, config, classes, tus.
        #[arg(long, default_value = "all")]
        target: String,
        /// Inputs per target.
        #[arg(long, default_value_t = 1_000_000)]
        inputs: u64,
        /// Seed of the mutator (a run is reproducible from its seed).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Instead of fuzzing, write each target's seed inputs to DIR/<target>/
        /// (the starting corpus of the coverage-guided fuzzer in fuzz/).
        #[arg(long, value_name = "DIR")]
        write_corpus: Option<PathBuf>,
    },
    /// Check a broker end to end: connect, subscribe, publish, receive the
    /// message back, and report the round trip. Exit 0 when it got through;
    /// otherwise 1, naming the step that failed. Works against any MQTT broker.
    Probe(ProbeArgs),
    /// Check a configuration file without starting anything: every problem
    /// at once (exit 1), or "OK" (exit 0). Environment overrides
    /// (STARLING_SECTION__KEY) apply as they would at start.
    CheckConfig {
        /// Configuration file. Default: ./config.toml if it exists, else the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Mint a signed token (HS256, with `[auth.jwt] secret`) for development
    /// and tests: `starling token --sub alice --ttl 1h`. Printed on stdout.
    Token {
        /// Configuration file. Default: ./config.toml if it exists, else the built-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The user name (`sub`).
        #[arg(long)]
        sub: String,
        /// How long it is valid: "90s", "30m", "1h", "7d".
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// Roles for topic classes (repeat, or comma-separated), e.g. server.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// A topic or filter the token lets its user subscribe to.
        #[arg(long)]
        channel: Option<String>,
        /// The one client id the token may connect as.
        #[arg(long)]
        client_id: Option<String>,
    },
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
        /// Address for the admin listener, /healthz, /readyz, /metrics (overrides http.bind).
        #[arg(long)]
        http_bind: Option<SocketAddr>,
        /// Directory for sled storage (overrides storage.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Storage backend, "sled" or "memory" (overrides storage.backend).
        #[arg(long, value_parser = ["sled", "memory"])]
        storage: Option<String>,
    },
}

/// Logs to stderr, colour only on a terminal; `RUST_LOG` wins over `level`.
fn init_logging(log: &starling::config::LogConfig) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match log.format {
        starling::config::LogFormat::Text => builder.init(),
        starling::config::LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(&Default::default());
    }
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
        Command::Probe(args) => probe(args),
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
        Command::Fuzz { target, inputs, seed, write_corpus } => {
            let targets: Vec<&str> =
                if target == "all" { starling::fuzz::TARGETS.to_vec() } else { vec![target.as_str()] };
            if let Some(dir) = write_corpus {
                return match write_seed_corpus(&dir, &targets) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::from(2)
                    }
                };
            }
            // Panics are what we look for: count them, do not print each.
            std::panic::set_hook(Box::new(|_| {}));
            let mut failed = false;
            for t in targets {
                let started = std::time::Instant::now();
                match starling::fuzz::run(t, inputs, seed) {
                    Ok(report) => {
                        let secs = started.elapsed().as_secs_f64();
                        println!(
                            "fuzz {t}: {} inputs in {secs:.1} s ({:.0}/s), {} crashes",
                            report.inputs,
                            report.inputs as f64 / secs,
                            report.crashes.len()
                        );
                        for input in &report.crashes {
                            println!("  crash input (hex): {input}");
                        }
                        failed |= !report.crashes.is_empty();
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::CheckConfig { config } => check_config(config),
        Command::Token { config, sub, ttl, roles, channel, client_id } => {
            let claims = starling::auth::jwt::DevClaims { sub, ttl: ttl.into(), roles, client_id, channel };
            let minted = load_config(config).map_err(anyhow::Error::from).and_then(|config| {
                let now_secs = starling::clock::now_ms() / 1000;
                starling::auth::jwt::mint_dev_token(config.auth.jwt.as_ref(), &claims, now_secs)
            });
            match minted {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Passwd { file, user, delete } => match passwd(&file, &user, delete) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config, mqtt_bind, ws_bind, http_bind, data_dir, storage } => {
            let overrides = Overrides { mqtt_bind, ws_bind, http_bind, data_dir, storage };
            let load = move || load_config(config.clone()).and_then(|c| overrides.apply(c));
            let config = match load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log);
            let runtime = starling::server::runtime().expect("cannot start the Tokio runtime");
            match runtime.block_on(serve(config, load)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The file (relative paths in it are its directory's), else ./config.toml,
/// else the built-in defaults; then `STARLING_SECTION__KEY` variables.
fn load_config(path: Option<PathBuf>) -> Result<Config, starling::config::ConfigError> {
    let env = std::env::vars;
    match path {
        Some(path) => Config::from_file_with_env(&path, env()),
        None if std::path::Path::new("config.toml").exists() => {
            Config::from_file_with_env(std::path::Path::new("config.toml"), env())
        }
        None => Config::from_toml_with_env(BUNDLED_CONFIG, "<built-in config.toml>", env()),
    }
}

/// `starling check-config`: what `serve` would refuse, without binding:
/// the file's problems (all of them), then the files and directories it
/// names that cannot be read.
fn check_config(path: Option<PathBuf>) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut problems = Vec::new();
    let mut readable = |key: &str, path: Option<&std::path::Path>| {
        if let Some(path) = path {
            if let Err(e) = std::fs::metadata(path) {
                problems.push(format!("{key} = {:?}: {e}", path.display().to_string()));
            }
        }
    };
    if config.classes.required {
        readable("classes.dir", Some(&config.classes.dir));
    }
    readable("auth.password_file", config.auth.password_file.as_deref());
    readable("auth.jwt.public_key_file", config.auth.jwt.as_ref().and_then(|j| j.public_key_file.as_deref()));
    if let Some(tls) = &config.tls {
        readable("tls.cert_file", Some(&tls.cert_file));
        readable("tls.key_file", Some(&tls.key_file));
        readable("tls.client_ca_file", tls.client_ca_file.as_deref());
    }
    if config.classes.dir.is_dir() {
        if let Err(e) = starling::classes::ClassSet::load_dir(&config.classes.dir) {
            problems.push(format!("classes.dir {}: {e}", config.classes.dir.display()));
        }
    }
    if problems.is_empty() {
        println!("OK");
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the configuration names what cannot be used:");
        for problem in problems {
            eprintln!("  - {problem}");
        }
        ExitCode::FAILURE
    }
}

/// Command-line flags that override the configuration file.
struct Overrides {
    mqtt_bind: Option<SocketAddr>,
    ws_bind: Option<SocketAddr>,
    http_bind: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    storage: Option<String>,
}

impl Overrides {
    /// Applies the flags and validates again (a flag can make the
    /// configuration invalid, e.g. a public bind with no authentication).
    fn apply(&self, mut config: Config) -> Result<Config, starling::config::ConfigError> {
        if let Some(addr) = self.mqtt_bind {
            config.mqtt.bind = addr;
        }
        if let Some(addr) = self.ws_bind {
            config.websocket.bind = addr;
        }
        if let Some(addr) = self.http_bind {
            config.http.bind = addr;
        }
        if let Some(dir) = &self.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(backend) = &self.storage {
            config.storage.backend = if backend == "memory" { StorageBackend::Memory } else { StorageBackend::Sled };
        }
        config.validate("the configuration with command-line flags")?;
        Ok(config)
    }
}

/// `starling passwd`: one password from the terminal (asked twice) or one
/// line from stdin, so scripts can pipe it.
fn passwd(file: &std::path::Path, user: &str, delete: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if delete {
        if !starling::auth::password::delete_user(file, user)? {
            anyhow::bail!("{user:?} is not in {}", file.display());
        }
        println!("removed {user:?} from {}", file.display());
        return Ok(());
    }
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {user}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            anyhow::bail!("the passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    starling::auth::password::set_password(file, user, password.as_bytes())?;
    println!("set the password of {user:?} in {} (a running broker reads it on SIGHUP)", file.display());
    Ok(())
}

async fn serve(
    config: Config,
    reload: impl Fn() -> Result<Config, starling::config::ConfigError>,
) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    // Lines on stdout that scripts and tests can wait for. Write errors are
    // ignored: a closed stdout must not stop the broker.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "starling: mqtt listening on {}", server.mqtt_addr());
    let _ = writeln!(out, "starling: websocket listening on {}", server.ws_addr());
    let _ = writeln!(out, "starling: admin listening on {}", server.admin_addr());
    if let (Some(mqtt), Some(ws)) = (server.mqtt_tls_addr(), server.ws_tls_addr()) {
        let _ = writeln!(out, "starling: mqtt tls listening on {mqtt}");
        let _ = writeln!(out, "starling: websocket tls listening on {ws}");
    }
    let _ = out.flush();
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .expect("cannot install the SIGHUP handler");
        let stop = wait_for_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = hangup.recv() => {
                    // Password file, token keys, ACL rules and roles; connections stay.
                    let result = reload().map_err(anyhow::Error::from).and_then(|c| server.reload(&c));
                    match result {
                        Ok(()) => {
                            let _ = writeln!(out, "starling: reloaded");
                            let _ = out.flush();
                        }
                        Err(e) => tracing::error!("reload refused, the previous policy stays in force: {e:#}"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
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

/// `starling fuzz --write-corpus DIR`: each target's seeds as DIR/<target>/seed-N.
fn write_seed_corpus(dir: &std::path::Path, targets: &[&str]) -> anyhow::Result<()> {
    for target in targets {
        let seeds = starling::fuzz::seeds(target).ok_or_else(|| anyhow::anyhow!("unknown fuzz target {target:?}"))?;
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir).with_context(|| format!("cannot create {}", target_dir.display()))?;
        for (i, seed) in seeds.iter().enumerate() {
            let path = target_dir.join(format!("seed-{i}"));
            std::fs::write(&path, seed).with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!("fuzz {target}: {} seeds in {}", seeds.len(), target_dir.display());
    }
    Ok(())
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// The broker, `host:port` (MQTT port for mqtt, WebSocket port otherwise).
    address: String,
    #[arg(long, value_enum, default_value = "mqtt")]
    transport: starling::probe::ProbeTransport,
    /// TLS (MQTT over TLS, or wss:// for the WebSocket transports),
    /// verifying the broker with --cafile.
    #[arg(long)]
    tls: bool,
    #[arg(long, value_name = "FILE")]
    cafile: Option<PathBuf>,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// A signed token (starling.v1 `Connect.token`; the MQTT password otherwise).
    #[arg(long)]
    token: Option<String>,
    /// The topic to subscribe and publish on.
    #[arg(long, default_value = "starling/probe")]
    topic: String,
    /// Bound on the whole check: `5s`, `500ms`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: std::time::Duration,
    /// One JSON object on stdout instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// `5s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 5s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit is ms, s or m")),
    };
    if !(seconds > 0.0 && seconds < 86_400.0) {
        return Err(format!("{text:?}: between 1ms and a day"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

fn probe(args: ProbeArgs) -> ExitCode {
    let tls = match args.tls {
        false => None,
        true => match starling::probe::tls_config(args.cafile.as_deref()) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
    };
    let target = starling::probe::ProbeTarget {
        address: args.address.clone(),
        transport: args.transport,
        tls,
        username: args.username,
        password: args.password,
        token: args.token,
        client_id: format!("starling-probe-{:08x}", rand::random::<u32>()),
        topic: args.topic,
        timeout: args.timeout,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
    let outcome = runtime.block_on(starling::probe::run(&target));
    let transport = args.transport.label();
    match outcome {
        Ok(rtt) => {
            let ms = rtt.as_secs_f64() * 1000.0;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "address": args.address, "transport": transport, "rtt_ms": ms})
                );
            } else {
                println!("ok: {transport} {} round trip {ms:.2} ms", args.address);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "address": args.address, "transport": transport,
                        "step": failure.step.label(), "error": failure.error})
                );
            } else {
                println!("failed: {transport} {}: {failure}", args.address);
            }
            ExitCode::FAILURE
        }
    }
}
