//! `starling bench`: the bundled load tool. It drives any MQTT broker (and
//! starling's own starling.v1 protocol) with fan-out, fan-in, point-to-point
//! and idle-connection workloads and reports throughput, loss, latency
//! percentiles, connect time, the broker's peak memory and the tool's own CPU
//! use (so a saturated tool is never mistaken for a slow broker).
//!
//! Owns: scenario layout (who publishes where, who subscribes to what), the
//! run's phases (connect, warm up, measure, drain) and the result. Must never:
//! talk to the broker other than through its public protocols.

pub mod load;
pub mod report;
pub mod stats;

use crate::mqtt::packet::{ProtocolVersion, QoS};
use load::{Rate, RunClock, Target, Transport};
use stats::{clock_nanos, Counters, Timeline};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Scenario {
    /// P publishers on one topic, S subscribers to it (a live-stream room).
    Fanout,
    /// P publishers each on its own topic PREFIX/city1/N/location, S subscribers to
    /// PREFIX/city1/# (with --topic-prefix fleet: the vehicle-location class).
    Fanin,
    /// N pairs: publisher N to its own subscriber on PREFIX/p2p/N (chat).
    P2p,
    /// S idle connections (one subscription each) held for the duration: memory per connection.
    Idle,
    /// A livestream room: P viewers comment on live/PREFIX/danmaku, S viewers
    /// watch it and live/PREFIX/gift; with --gift-rate, one more client sends
    /// gifts as --gift-username (a user with the `server` role), counted apart.
    Danmaku,
}

/// How connections spread over the nodes of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Spread {
    RoundRobin,
    PubOnFirst,
}

impl Spread {
    /// The node (index into `--broker`) of subscriber `i`, or of publisher `i`.
    pub fn node(self, nodes: usize, publisher: bool, i: usize) -> usize {
        match (self, publisher) {
            _ if nodes <= 1 => 0,
            (Spread::RoundRobin, false) => i % nodes,
            (Spread::RoundRobin, true) => (i + 1) % nodes,
            (Spread::PubOnFirst, false) => 1 + i % (nodes - 1),
            (Spread::PubOnFirst, true) => 0,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Broker address (the WebSocket port for ws-mqtt and ws-proto); several,
    /// comma-separated, for the nodes of a cluster (see --spread).
    #[arg(long, default_value = "127.0.0.1:1883", value_delimiter = ',', required = true)]
    pub broker: Vec<SocketAddr>,
    /// With several --broker nodes: "round-robin" (subscribers over every
    /// node; each publisher on another node than the subscriber of the same
    /// number, so p2p pairs always cross nodes) or "pub-on-first" (publishers
    /// on the first node, subscribers over the others: every delivery
    /// crosses nodes).
    #[arg(long, value_enum, default_value = "round-robin")]
    pub spread: Spread,
    #[arg(long, value_enum, default_value = "mqtt")]
    pub transport: Transport,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub mqtt_version: u8,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Publishers (fanout, fanin).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Subscribers (fanout, fanin, idle).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Pairs (p2p).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Payload bytes (at least 8: the send timestamp).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages per second per publisher, or "max".
    #[arg(long, default_value = "100")]
    pub rate: String,
    /// --rate is the total over all publishers instead of per publisher.
    #[arg(long)]
    pub rate_total: bool,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Connections opened per second; 0 = as fast as the broker accepts them.
    #[arg(long, default_value_t = 0)]
    pub ramp: u32,
    /// Spread connections over source addresses 127.0.0.1 ..= 127.0.0.N (each
    /// source address allows ~28k connections to one port).
    #[arg(long, default_value_t = 1)]
    pub source_addrs: u8,
    /// Keep-alive of every connection (seconds).
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Topic prefix for fanout and p2p.
    #[arg(long, default_value = "bench")]
    pub topic_prefix: String,
    /// Seconds to wait for in-flight messages after publishers stop.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// PID of the broker, to report its peak memory (RSS).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the result as JSON (after the table).
    #[arg(long)]
    pub json: bool,
    /// Write charts: FILE.svg (latency distribution and throughput over time) or FILE.html.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bars (for scripts).
    #[arg(long)]
    pub quiet: bool,
    /// Idle scenario: connect without subscribing (memory of a bare connection).
    #[arg(long)]
    pub no_subscribe: bool,
    /// Every client connects with this username (MQTT; starling.v1 `Connect.username`).
    #[arg(long)]
    pub username: Option<String>,
    /// ... and this password, or a signed token (MQTT password; starling.v1 `Connect.token`).
    #[arg(long)]
    pub password: Option<String>,
    /// With --transport mqtts: PEM file of the CA (or self-signed certificate)
    /// the broker's certificate must chain to.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Persistent sessions: MQTT clean session 0 (MQTT 5: clean start 0 and
    /// a session expiry of an hour), so QoS 1/2 messages are stored.
    #[arg(long)]
    pub persistent: bool,
    /// Danmaku: gifts per second (0: none), sent by one more client.
    #[arg(long, default_value_t = 0.0)]
    pub gift_rate: f64,
    /// Danmaku: the gift sender's username and password.
    #[arg(long)]
    pub gift_username: Option<String>,
    #[arg(long)]
    pub gift_password: Option<String>,
}

/// A connection that has not completed its handshake by then counts as failed
/// (a broker that accepts slowly may otherwise leave connects hanging in
/// SYN retries for minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub scenario: Scenario,
    pub transport: Transport,
    pub mqtt_version: u8,
    pub qos: u8,
    pub publishers: usize,
    pub subscribers: usize,
    pub payload_bytes: usize,
    pub connections: usize,
    pub connect_secs: f64,
    pub connect_failures: u64,
    pub measured_secs: f64,
    pub published: u64,
    pub publish_rate: f64,
    pub expected: u64,
    pub received: u64,
    /// Messages received per second during the measured window (whenever
    /// they were published): the broker's delivery throughput.
    pub deliveries_per_sec: f64,
    pub loss_ratio: f64,
    /// The drain ended at `--drain` while deliveries were still arriving, so
    /// `loss_ratio` counts a backlog that was still draining, not proven loss
    /// (typical of `--rate max`, where the publisher outruns the broker and
    /// its socket buffers hold seconds of messages).
    pub drain_cut_off: bool,
    pub latency_ms: Option<Percentiles>,
    /// QoS 1/2: acknowledgements of the messages sent in the measured window,
    /// and the time from sending each to its acknowledgement.
    pub acked: u64,
    pub ack_latency_ms: Option<Percentiles>,
    /// Bytes of packets delivered to subscribers (measured messages).
    pub received_bytes: u64,
    /// Danmaku with --gift-rate: gifts sent, deliveries expected and received.
    pub gifts_published: u64,
    pub gifts_expected: u64,
    pub gifts_received: u64,
    pub broker_peak_rss_bytes: Option<u64>,
    pub broker_rss_bytes: Option<u64>,
    /// Idle scenario: broker RSS growth divided by connections.
    pub bytes_per_connection: Option<f64>,
    /// The tool's CPU use as a share of the CPUs it may use (1.0 = all busy).
    pub tool_cpu_share: f64,
    pub tool_saturated: bool,
    pub timeline: Vec<stats::Sample>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Milliseconds, from a histogram of microseconds; `None` when empty.
    fn of(h: &hdrhistogram::Histogram<u64>) -> Option<Percentiles> {
        (!h.is_empty()).then(|| Percentiles {
            p50: h.value_at_quantile(0.50) as f64 / 1000.0,
            p90: h.value_at_quantile(0.90) as f64 / 1000.0,
            p99: h.value_at_quantile(0.99) as f64 / 1000.0,
            p999: h.value_at_quantile(0.999) as f64 / 1000.0,
            max: h.max() as f64 / 1000.0,
            mean: h.mean() / 1000.0,
        })
    }
}

/// What a scenario connects: (client id, subscription filter) per subscriber
/// and (client id, topics) per publisher.
struct Layout {
    subscribers: Vec<(String, String)>,
    publishers: Vec<(String, Vec<String>)>,
    /// Deliveries expected per published message.
    fan: u64,
}

fn layout(args: &BenchArgs) -> Layout {
    let prefix = &args.topic_prefix;
    match args.scenario {
        Scenario::Fanout => {
            let topic = format!("{prefix}/fanout");
            Layout {
                subscribers: (0..args.subscribers).map(|i| (format!("sub-{i}"), topic.clone())).collect(),
                publishers: (0..args.publishers).map(|i| (format!("pub-{i}"), vec![topic.clone()])).collect(),
                fan: args.subscribers as u64,
            }
        }
        Scenario::Fanin => Layout {
            subscribers: (0..args.subscribers).map(|i| (format!("sub-{i}"), format!("{prefix}/city1/#"))).collect(),
            publishers: (0..args.publishers)
                .map(|i| (format!("pub-{i}"), vec![format!("{prefix}/city1/{i}/location")]))
                .collect(),
            fan: args.subscribers as u64,
        },
        Scenario::P2p => Layout {
            subscribers: (0..args.pairs).map(|i| (format!("sub-{i}"), format!("{prefix}/p2p/{i}"))).collect(),
            publishers: (0..args.pairs).map(|i| (format!("pub-{i}"), vec![format!("{prefix}/p2p/{i}")])).collect(),
            fan: 1,
        },
        Scenario::Danmaku => Layout {
            // Exactly the room's two topics (a viewer counts once, docs/scenarios.md).
            subscribers: (0..args.subscribers)
                .map(|i| (format!("viewer-{i}"), format!("live/{prefix}/danmaku,live/{prefix}/gift")))
                .collect(),
            publishers: (0..args.publishers)
                .map(|i| (format!("commenter-{i}"), vec![format!("live/{prefix}/danmaku")]))
                .collect(),
            fan: args.subscribers as u64,
        },
        Scenario::Idle => Layout {
            subscribers: (0..args.subscribers).map(|i| (format!("idle-{i}"), format!("{prefix}/idle/{i}"))).collect(),
            publishers: Vec::new(),
            fan: 0,
        },
    }
}

/// Runs the load described by `args` and returns the result (also printed
/// unless `args.quiet` and not `args.json`).
pub async fn run(args: BenchArgs) -> anyhow::Result<BenchResult> {
    anyhow::ensure!(args.size >= 8, "--size must be at least 8 (the payload carries the send timestamp)");
    let rate = match args.rate.as_str() {
        "max" => Rate::Max,
        r => {
            let r: f64 = r.parse().map_err(|_| anyhow::anyhow!("--rate must be a number or \"max\", not {r:?}"))?;
            anyhow::ensure!(r > 0.0, "--rate must be positive");
            Rate::PerSecond(r)
        }
    };
    stats::raise_fd_limit();
    clock_nanos();
    anyhow::ensure!(!args.broker.is_empty(), "--broker: give at least one address");
    let target = Target {
        addr: args.broker[0],
        transport: args.transport,
        version: if args.mqtt_version == 5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 },
        keep_alive: args.keep_alive,
        username: args.username.clone(),
        password: args.password.clone(),
        persistent: args.persistent,
        tls: match &args.ca_file {
            Some(ca) => Some(load::tls_client_config(ca).map_err(|e| anyhow::anyhow!(e))?),
            None => None,
        },
    };
    let qos = QoS::from_u8(args.qos).expect("clap checks the range");
    let plan = layout(&args);
    let counters = Arc::new(Counters::default());
    // Nothing counts until the warm-up has passed.
    let clock = Arc::new(RunClock { measure_from_ns: AtomicU64::new(u64::MAX) });
    let rss_before = args.broker_pid.and_then(stats::rss_of);
    let progress = report::Progress::new(args.quiet || args.json);

    // Phase 1: subscribers connect and subscribe.
    let (stop_subs_tx, stop_subs) = watch::channel(false);
    let (stop_pubs_tx, stop_pubs) = watch::channel(false);
    let mut subscriber_tasks = JoinSet::new();
    let connect_started = Instant::now();
    let total_connections = plan.subscribers.len() + plan.publishers.len();
    let bar = progress.connecting(total_connections as u64);
    let gate = Arc::new(Semaphore::new(512)); // connects in flight at once
    let mut connected = JoinSet::new();
    for (i, (client_id, filter)) in plan.subscribers.iter().cloned().enumerate() {
        pace(args.ramp, i, connect_started).await;
        let (mut target, gate, counters) = (target.clone(), gate.clone(), counters.clone());
        target.addr = args.broker[args.spread.node(args.broker.len(), false, i)];
        let source = source_addr(args.source_addrs, i);
        let filter = if args.no_subscribe { None } else { Some(filter) };
        connected.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let result = tokio::time::timeout(
                CONNECT_TIMEOUT,
                connect_subscriber(&target, source, &client_id, filter.as_deref(), qos),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no CONNACK/SUBACK within {CONNECT_TIMEOUT:?}")));
            if let Err(e) = &result {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%client_id, error = %e, "subscriber failed to connect");
            }
            result.ok()
        });
    }
    let mut subscribers = Vec::new();
    while let Some(done) = connected.join_next().await {
        bar.inc(1);
        if let Ok(Some(s)) = done {
            subscribers.push(s);
        }
    }
    // Phase 2: publishers connect.
    let mut publishers = Vec::new();
    for (i, (client_id, topics)) in plan.publishers.iter().cloned().enumerate() {
        let source = source_addr(args.source_addrs, plan.subscribers.len() + i);
        let target = Target { addr: args.broker[args.spread.node(args.broker.len(), true, i)], ..target.clone() };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect_publisher(&target, source, &client_id))
            .await
            .unwrap_or_else(|_| Err(format!("no CONNACK within {CONNECT_TIMEOUT:?}")));
        match connected {
            Ok(p) => publishers.push((p, topics)),
            Err(e) => {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%client_id, error = %e, "publisher failed to connect");
            }
        }
        bar.inc(1);
    }
    // Danmaku gifts: one more client, with its own credentials and counters.
    let gift_counters = Arc::new(Counters::default());
    let mut gifter = None;
    if args.scenario == Scenario::Danmaku && args.gift_rate > 0.0 {
        let target =
            Target { username: args.gift_username.clone(), password: args.gift_password.clone(), ..target.clone() };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect_publisher(&target, None, "gifts")).await {
            Ok(Ok(p)) => gifter = Some(p),
            Ok(Err(e)) => anyhow::bail!("the gift sender could not connect: {e}"),
            Err(_) => anyhow::bail!("the gift sender got no CONNACK within {CONNECT_TIMEOUT:?}"),
        }
    }
    bar.finish_and_clear();
    // Every connection, subscribers and publishers, handshake included.
    let connect_secs = connect_started.elapsed().as_secs_f64();
    for s in subscribers {
        let (counters, clock, stop) = (counters.clone(), clock.clone(), stop_subs.clone());
        let (keep_alive, version) = (args.keep_alive, target.version);
        subscriber_tasks.spawn(async move {
            match s {
                Connection::Mqtt(stream) => {
                    load::run_mqtt_subscriber(stream, version, keep_alive, counters, clock, stop).await
                }
                Connection::Proto(client) => load::run_proto_subscriber(*client, counters, clock, stop).await,
            }
        });
    }

    // Phase 3: publish (warm-up, then measure).
    let per_publisher = match rate {
        Rate::PerSecond(r) if args.rate_total => Rate::PerSecond(r / publishers.len().max(1) as f64),
        other => other,
    };
    let mut publisher_tasks = JoinSet::new();
    for (p, topics) in publishers {
        let (counters, clock, stop) = (counters.clone(), clock.clone(), stop_pubs.clone());
        let size = args.size;
        let version = target.version;
        publisher_tasks.spawn(async move {
            match p {
                Connection::Mqtt(stream) => {
                    load::run_mqtt_publisher(stream, version, topics, qos, size, per_publisher, counters, clock, stop)
                        .await
                }
                Connection::Proto(client) => {
                    load::run_proto_publisher(
                        *client,
                        topics,
                        u32::from(args_qos(qos)),
                        size,
                        per_publisher,
                        counters,
                        clock,
                        stop,
                    )
                    .await
                }
            }
        });
    }
    if let Some(Connection::Mqtt(stream)) = gifter {
        let (counters, clock, stop) = (gift_counters.clone(), clock.clone(), stop_pubs.clone());
        let (version, size, rate) = (target.version, args.size, Rate::PerSecond(args.gift_rate));
        let topics = vec![format!("live/{}/gift", args.topic_prefix)];
        publisher_tasks.spawn(async move {
            load::run_mqtt_publisher(stream, version, topics, QoS::AtMostOnce, size, rate, counters, clock, stop).await
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    clock.measure_from_ns.store(clock_nanos(), Ordering::Relaxed);
    let measure_started = Instant::now();
    let cpu_at_measure = stats::process_cpu_time();
    let received_at_start = counters.received_all.load(Ordering::Relaxed);
    let mut timeline = Timeline::new(&counters);
    let bar = progress.measuring(args.duration);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while measure_started.elapsed().as_secs_f64() < args.duration {
        tick.tick().await;
        let sample = timeline.sample(&counters);
        bar.update(measure_started.elapsed().as_secs_f64(), &sample);
    }
    let _ = stop_pubs_tx.send(true);
    let measured_secs = measure_started.elapsed().as_secs_f64();
    let cpu_in_window = stats::process_cpu_time().saturating_sub(cpu_at_measure);
    let received_in_window = counters.received_all.load(Ordering::Relaxed) - received_at_start;
    while publisher_tasks.join_next().await.is_some() {}
    bar.finish();

    // Phase 4: drain what is still in flight, then stop the subscribers.
    let published = counters.published.load(Ordering::Relaxed);
    let gifts_published = gift_counters.published.load(Ordering::Relaxed);
    let expected = (published + gifts_published) * plan.fan;
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    // Quiet means nothing at all arrives any more (messages sent before the
    // window still arriving count as activity: the backlog is draining).
    let mut last = counters.received_all.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    let mut went_quiet = false;
    while Instant::now() < drain_deadline && counters.received.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counters.received_all.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(1000) {
            went_quiet = true;
            break; // nothing more is coming
        }
    }
    // At --rate max a publisher can queue seconds of messages in socket
    // buffers; a drain that ends while they still arrive has not shown loss.
    let drain_cut_off = !went_quiet && counters.received.load(Ordering::Relaxed) < expected;
    let rss_during = args.broker_pid.and_then(stats::rss_of);
    if args.scenario == Scenario::Idle {
        // Hold the idle connections for the duration, then measure.
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    }
    let rss_idle = args.broker_pid.and_then(stats::rss_of);
    let _ = stop_subs_tx.send(true);
    while subscriber_tasks.join_next().await.is_some() {}

    let received = counters.received.load(Ordering::Relaxed);
    let latency = counters.latency.lock().unwrap().clone();
    let ack_latency = counters.ack_latency.lock().unwrap().clone();
    // Over the measured window only: connecting and draining are not load.
    let tool_cpu_share = cpu_in_window.as_secs_f64() / measured_secs.max(1e-9) / stats::usable_cpus() as f64;
    let result = BenchResult {
        scenario: args.scenario,
        transport: args.transport,
        mqtt_version: args.mqtt_version,
        qos: args.qos,
        publishers: plan.publishers.len(),
        subscribers: plan.subscribers.len(),
        payload_bytes: args.size,
        connections: total_connections,
        connect_secs,
        connect_failures: counters.connect_failures.load(Ordering::Relaxed),
        measured_secs,
        published,
        publish_rate: published as f64 / measured_secs,
        expected,
        received,
        deliveries_per_sec: received_in_window as f64 / measured_secs,
        loss_ratio: if expected == 0 { 0.0 } else { 1.0 - (received.min(expected) as f64 / expected as f64) },
        drain_cut_off,
        latency_ms: latency.as_ref().and_then(Percentiles::of),
        acked: counters.acked.load(Ordering::Relaxed),
        ack_latency_ms: ack_latency.as_ref().and_then(Percentiles::of),
        received_bytes: counters.received_bytes.load(Ordering::Relaxed),
        gifts_published,
        gifts_expected: gifts_published * plan.fan,
        gifts_received: counters.gifts_received.load(Ordering::Relaxed),
        broker_peak_rss_bytes: rss_during.map(|(peak, _)| peak),
        broker_rss_bytes: rss_during.map(|(_, now)| now),
        bytes_per_connection: match (args.scenario, rss_before, rss_idle) {
            (Scenario::Idle, Some((_, before)), Some((_, after))) if total_connections > 0 => {
                Some((after as f64 - before as f64) / total_connections as f64)
            }
            _ => None,
        },
        tool_cpu_share,
        tool_saturated: tool_cpu_share > 0.9,
        timeline: timeline.samples,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else if !args.quiet {
        report::print_table(&result);
    }
    if let Some(path) = &args.report {
        report::write_report(path, &result)?;
    }
    Ok(result)
}

fn args_qos(qos: QoS) -> u8 {
    (qos as u8).min(1)
}

enum Connection {
    Mqtt(Box<dyn MqttIo>),
    Proto(Box<crate::wsproto::client::Client>),
}

/// A connected MQTT byte stream, whatever the transport.
pub trait MqttIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> MqttIo for T {}

/// Connects and subscribes to `filter` (`None`: connect only).
async fn connect_subscriber(
    target: &Target,
    source: Option<IpAddr>,
    client_id: &str,
    filter: Option<&str>,
    qos: QoS,
) -> Result<Connection, String> {
    if target.transport == Transport::WsProto {
        let mut client = load::proto_connect(target, client_id).await?;
        if let Some(filter) = filter {
            let filters: Vec<(&str, u32)> = filter.split(',').map(|f| (f, u32::from(args_qos(qos)))).collect();
            client.subscribe(1, &filters).await.map_err(|e| e.to_string())?;
        }
        return Ok(Connection::Proto(Box::new(client)));
    }
    let mut stream = load::mqtt_connect(target, source, client_id).await?;
    if let Some(filter) = filter {
        load::mqtt_subscribe(&mut stream, target.version, filter, qos).await?;
    }
    Ok(Connection::Mqtt(Box::new(stream)))
}

async fn connect_publisher(target: &Target, source: Option<IpAddr>, client_id: &str) -> Result<Connection, String> {
    if target.transport == Transport::WsProto {
        return Ok(Connection::Proto(Box::new(load::proto_connect(target, client_id).await?)));
    }
    Ok(Connection::Mqtt(Box::new(load::mqtt_connect(target, source, client_id).await?)))
}

fn source_addr(count: u8, i: usize) -> Option<IpAddr> {
    (count > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % count as usize) as u8)))
}

/// Waits until connection `i` may start under `--ramp`.
async fn pace(ramp: u32, i: usize, started: Instant) {
    if ramp > 0 {
        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / ramp as f64)).into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_put_each_pair_on_two_nodes() {
        let pairs = |spread: Spread, n: usize| -> Vec<(usize, usize)> {
            (0..4).map(|i| (spread.node(n, false, i), spread.node(n, true, i))).collect()
        };
        assert_eq!(pairs(Spread::RoundRobin, 3), [(0, 1), (1, 2), (2, 0), (0, 1)]);
        assert_eq!(pairs(Spread::PubOnFirst, 3), [(1, 0), (2, 0), (1, 0), (2, 0)]);
        assert_eq!(pairs(Spread::PubOnFirst, 1), [(0, 0); 4]);
    }
}
