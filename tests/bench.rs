//! `starling bench` end to end: each transport against a real broker, at a
//! low rate where nothing may be lost, plus the report files.

mod common;
use clap::Parser;
use common::*;
use starling::bench::{BenchArgs, Scenario};

/// Parses bench arguments the way the command line does.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn args(line: &str) -> BenchArgs {
    Cli::parse_from(std::iter::once("bench").chain(line.split_whitespace())).args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_and_transport_measures_without_loss() {
    let server = start_memory().await;
    let (tcp, ws) = (server.mqtt_addr(), server.ws_addr());
    let runs = [
        format!("fanout --broker {tcp} --subscribers 20 --rate 50 --duration 1 --warmup 0.2 --quiet"),
        format!("fanin --broker {tcp} --publishers 20 --subscribers 2 --rate 200 --rate-total --duration 1 --warmup 0.2 --quiet --mqtt-version 5"),
        format!("p2p --broker {tcp} --pairs 10 --rate 20 --qos 1 --duration 1 --warmup 0.2 --quiet"),
        format!("p2p --broker {tcp} --pairs 5 --rate 20 --qos 2 --duration 1 --warmup 0.2 --quiet --source-addrs 3"),
        format!("fanout --broker {ws} --transport ws-mqtt --subscribers 10 --rate 20 --duration 1 --warmup 0.2 --quiet"),
        format!("fanout --broker {ws} --transport ws-proto --subscribers 10 --rate 20 --duration 1 --warmup 0.2 --quiet"),
    ];
    for line in runs {
        let result = within(&line, starling::bench::run(args(&line))).await.unwrap();
        assert_eq!(result.connect_failures, 0, "{line}");
        assert!(result.published > 0, "{line}: nothing published");
        assert_eq!(result.received, result.expected, "{line}: lost messages");
        assert!(result.latency_ms.is_some(), "{line}: no latency measured");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_scenario_reports_memory_per_connection_and_reports_are_written() {
    let server = start_memory().await;
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id(); // the broker runs in this process
    let svg = dir.path().join("r.svg");
    let line = format!(
        "idle --broker {} --subscribers 200 --duration 0.2 --warmup 0 --broker-pid {pid} --quiet --report {}",
        server.mqtt_addr(),
        svg.display()
    );
    let result = within("idle run", starling::bench::run(args(&line))).await.unwrap();
    assert_eq!(result.scenario, Scenario::Idle);
    assert!(result.bytes_per_connection.is_some());
    assert!(result.broker_peak_rss_bytes.is_some_and(|b| b > 0));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let html = dir.path().join("r.html");
    let line = format!(
        "fanout --broker {} --subscribers 5 --rate 20 --duration 1 --warmup 0.2 --quiet --report {}",
        server.mqtt_addr(),
        html.display()
    );
    within("fanout with report", starling::bench::run(args(&line))).await.unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("deliveries_per_sec"));
    server.shutdown().await.unwrap();
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(["bench", "fanout", "--rate", "fast"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `--username/--password` (or a token as the password) on every transport:
/// with good credentials nothing fails, with a wrong password every connect does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    starling::auth::password::set_password(&file, "loader", b"secret").unwrap();
    let mut config = with_jwt(memory_config());
    config.auth.chain = vec!["password_file".into(), "jwt".into()];
    config.auth.password_file = Some(file);
    config.auth.allow_anonymous = Some(false);
    let server = start(config).await;
    let (tcp, ws) = (server.mqtt_addr(), server.ws_addr());
    let jwt = token(json!({"sub": "loader"}));
    let good = [
        format!("idle --broker {tcp} --subscribers 20 --duration 0.2 --warmup 0 --quiet --username loader --password secret"),
        format!("idle --broker {ws} --transport ws-mqtt --subscribers 20 --duration 0.2 --warmup 0 --quiet --mqtt-version 5 --username loader --password secret"),
        format!("idle --broker {ws} --transport ws-proto --subscribers 20 --duration 0.2 --warmup 0 --quiet --username loader --password secret"),
        format!("p2p --broker {tcp} --pairs 5 --rate 20 --duration 1 --warmup 0.2 --quiet --password {jwt}"),
    ];
    for line in good {
        let result = within(&line, starling::bench::run(args(&line))).await.unwrap();
        assert_eq!(result.connect_failures, 0, "{line}");
    }
    let line = format!(
        "idle --broker {tcp} --subscribers 5 --duration 0.2 --warmup 0 --quiet --username loader --password wrong"
    );
    match within(&line, starling::bench::run(args(&line))).await {
        Ok(result) => assert_eq!(result.connect_failures, 5, "{line}"),
        Err(e) => assert!(e.to_string().contains("0x86"), "{e}"),
    }
    server.shutdown().await.unwrap();
}

/// The rows of the class and durability tables (benches/compare.sh
/// danmaku5k, durable500): gifts counted apart and every one delivered;
/// QoS 1 acknowledgements of persistent sessions timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn danmaku_gifts_and_durable_acknowledgements_are_measured() {
    let server = start(with_jwt(with_classes(memory_config()))).await;
    let tcp = server.mqtt_addr();
    // Viewers are anonymous (loopback); the gift sender has the server role.
    let gifter = token(json!({"sub": "gift-service", "roles": ["server"]}));
    let line = format!(
        "danmaku --broker {tcp} --publishers 5 --subscribers 20 --rate 5 --rate-total --gift-rate 5 --gift-password {gifter} --duration 1 --warmup 0.2 --quiet"
    );
    let danmaku = within(&line, starling::bench::run(args(&line))).await.unwrap();
    assert_eq!(danmaku.connect_failures, 0);
    assert!(danmaku.gifts_published > 0, "no gifts sent");
    assert_eq!(danmaku.gifts_received, danmaku.gifts_expected, "every gift reaches every viewer");
    assert_eq!(danmaku.received, danmaku.expected, "comments under the limits all arrive");

    let line = format!("p2p --broker {tcp} --pairs 5 --rate 50 --qos 1 --persistent --duration 1 --warmup 0.2 --quiet");
    let durable = within(&line, starling::bench::run(args(&line))).await.unwrap();
    assert_eq!(durable.received, durable.expected);
    assert!(durable.acked > 0 && durable.ack_latency_ms.is_some(), "acknowledgements are timed");
    assert!(durable.received_bytes >= durable.received * 64, "every delivery carries its 64 B payload");
    server.shutdown().await.unwrap();
}
