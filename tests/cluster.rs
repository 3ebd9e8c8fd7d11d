//! Several starling nodes as one broker over a real nats-server
//! (docs/cluster.md): a message published on any node reaches every
//! matching subscriber on every node, on every transport, once; interest is
//! refcounted per filter; a node whose NATS is gone keeps serving its own
//! clients and joins again when NATS is back.

mod common;

use common::nats::{node_config, nodes_with_three_replicas, skip_until, until_routed, NatsServer};
use common::*;
use starling::server::Server;
use starling::wsproto::client::Client as ProtoClient;
use starling::wsproto::pb;
use std::time::Duration;

async fn nodes(nats: &NatsServer, n: usize) -> Vec<Server> {
    let mut servers = Vec::new();
    for i in 1..=n {
        servers.push(start(node_config(nats, &format!("n{i}"))).await);
    }
    servers
}

async fn proto(server: &Server, id: &str) -> ProtoClient {
    let connect = pb::Connect { client_id: id.into(), clean_start: true, ..Default::default() };
    let url = format!("ws://{}/ws", server.ws_addr());
    within("starling.v1 connect", ProtoClient::connect(&url, connect)).await.unwrap().0
}

async fn mqtt_ws(server: &Server, id: &str) -> v4::Client {
    let addr = server.ws_addr();
    let mut o = v4::MqttOptions::new(id, format!("ws://{addr}/mqtt"), addr.port());
    o.set_transport(rumqttc::Transport::Ws);
    v4::connect_with(o).await.0
}

#[tokio::test]
async fn a_message_published_on_one_node_reaches_every_node_and_transport_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let servers = nodes(&nats, 3).await;
    let (n1, n2, n3) = (&servers[0], &servers[1], &servers[2]);

    let mut tcp = v4::connect(n1.mqtt_addr(), "tcp-on-n1", true).await;
    tcp.subscribe("news/+", v4::QoS::AtLeastOnce).await;
    let mut ws = mqtt_ws(n3, "ws-on-n3").await;
    ws.subscribe("news/#", v4::QoS::AtLeastOnce).await;
    let mut app = proto(n3, "app-on-n3").await;
    within("suback", app.subscribe(1, &[("news/today", 1)])).await.unwrap();
    let mut local = v4::connect(n2.mqtt_addr(), "local-on-n2", true).await;
    local.subscribe("news/today", v4::QoS::AtLeastOnce).await;

    let mut publisher = v4::connect(n2.mqtt_addr(), "publisher-on-n2", true).await;
    until_routed(&mut publisher, &mut tcp, "news/today").await;
    until_routed(&mut publisher, &mut ws, "news/today").await;
    // Everyone skips what came before a marker (the app on n3 shares n3's
    // NATS subscriptions with ws: routed too).
    publisher.publish_acked("news/today", false, "start").await;
    for client in [&mut tcp, &mut ws, &mut local] {
        skip_until(client, b"start").await;
    }
    while within("the start marker", app.next_publish()).await.unwrap().payload.as_ref() != b"start" {}

    for i in 0..20 {
        publisher.publish_acked("news/today", false, format!("m{i}")).await;
    }
    publisher.publish_acked("news/today", false, "last").await;
    // Every subscriber, on every node and transport, gets m0..m19 once and in order.
    for (name, client) in [("tcp on n1", &mut tcp), ("ws on n3", &mut ws), ("local on n2", &mut local)] {
        let mut got = Vec::new();
        loop {
            let p = client.next_publish().await;
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            if text == "last" {
                break;
            }
            got.push(text);
        }
        let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        assert_eq!(got, expected, "{name}");
    }
    let mut got = Vec::new();
    loop {
        let p = within("app publish", app.next_publish()).await.unwrap();
        let text = String::from_utf8_lossy(&p.payload).into_owned();
        if text == "last" {
            break;
        }
        got.push(text);
    }
    assert_eq!(got, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>(), "starling.v1 on n3");
    // n3 got each message over NATS once, though two of its filters match.
    let n3_cluster = n3.cluster().unwrap();
    assert!(n3_cluster.counters.received.load(std::sync::atomic::Ordering::Relaxed) >= 21);
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

/// `$` topics other than the broker's own (`$SYS`, `$canary`) are the
/// cluster's like any other: a subscriber to `$app/#` on n3 gets a publish to
/// `$app/d/t` on n1 (issue 23), while `$SYS` stays each node's own.
#[tokio::test]
async fn dollar_topics_other_than_sys_cross_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let servers = nodes(&nats, 3).await;
    let (n1, n3) = (&servers[0], &servers[2]);
    let mut subscriber = v4::connect(n3.mqtt_addr(), "app-sub-on-n3", true).await;
    subscriber.subscribe("$app/#", v4::QoS::AtLeastOnce).await;
    let mut publisher = v4::connect(n1.mqtt_addr(), "app-pub-on-n1", true).await;
    until_routed(&mut publisher, &mut subscriber, "$app/d/t").await;
    publisher.publish_acked("$app/d/t", false, "to every node").await;
    let p = subscriber.next_publish().await;
    assert_eq!((p.topic.as_str(), p.payload.as_ref()), ("$app/d/t", &b"to every node"[..]));
    assert!(n1.cluster().unwrap().counters.forwarded.load(std::sync::atomic::Ordering::Relaxed) > 0);
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn interest_is_one_nats_subscription_per_filter_however_many_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let servers = nodes(&nats, 2).await;
    let (n1, n2) = (&servers[0], &servers[1]);
    let cluster = n1.cluster().unwrap().clone();
    let mut viewers = Vec::new();
    for i in 0..50 {
        let mut c = v4::connect(n1.mqtt_addr(), &format!("viewer-{i}"), true).await;
        c.subscribe("room/1", v4::QoS::AtMostOnce).await;
        viewers.push(c);
    }
    let mut wide = v4::connect(n1.mqtt_addr(), "wide", true).await;
    wide.subscribe("room/#", v4::QoS::AtMostOnce).await;
    assert_eq!(cluster.interest_count(), 2, "room/1 and room/#");
    wait_until("two filters' NATS subscriptions (room/# takes two)", || {
        cluster.subscriptions.load(std::sync::atomic::Ordering::Relaxed) == 3
    })
    .await;

    let mut publisher = v4::connect(n2.mqtt_addr(), "publisher", true).await;
    until_routed(&mut publisher, &mut wide, "room/1").await;
    publisher.publish_acked("room/1", false, "hello room").await;
    publisher.publish_acked("room/1", false, "bye").await;
    for viewer in viewers.iter_mut().chain(std::iter::once(&mut wide)) {
        let p = viewer
            .next_matching("hello room", |p| match p {
                v4::Incoming::Publish(p)
                    if p.payload.as_ref() != b"probe" && p.payload.as_ref() != b"end of probes" =>
                {
                    Some(p.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(p.payload.as_ref(), b"hello room");
        assert_eq!(viewer.next_publish().await.payload.as_ref(), b"bye", "one copy, then the next message");
    }
    // The last subscriber of a filter gone: its NATS subscription goes too.
    for viewer in viewers {
        viewer.disconnect().await;
    }
    wait_until("room/1's interest to end", || cluster.interest_count() == 1).await;
    wait_until("its NATS subscription to end", || {
        cluster.subscriptions.load(std::sync::atomic::Ordering::Relaxed) == 2
    })
    .await;
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn without_nats_a_node_serves_its_own_clients_and_rejoins_when_nats_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(dir.path()).await;
    let servers = nodes(&nats, 2).await;
    let (n1, n2) = (&servers[0], &servers[1]);
    let mut remote = v4::connect(n1.mqtt_addr(), "on-n1", true).await;
    remote.subscribe("chat/x", v4::QoS::AtLeastOnce).await;
    let mut local = v4::connect(n2.mqtt_addr(), "local-on-n2", true).await;
    local.subscribe("chat/x", v4::QoS::AtLeastOnce).await;
    let mut publisher = v4::connect(n2.mqtt_addr(), "publisher", true).await;
    until_routed(&mut publisher, &mut remote, "chat/x").await;

    nats.kill().await;
    let cluster = n2.cluster().unwrap().clone();
    wait_until("n2 to notice NATS is gone", || !cluster.is_connected()).await;
    let ready = common::http::request(n2.admin_addr(), "GET", "/readyz", &[("Connection", "close")], b"").await;
    assert_eq!(ready.status, 503, "not the node to send new clients to");
    assert!(ready.text().contains("cluster_disconnected"), "{}", ready.text());
    // Local delivery goes on.
    while local.next_publish().await.payload.as_ref() != b"end of probes" {}
    publisher.publish_acked("chat/x", false, "while NATS is down").await;
    assert_eq!(local.next_publish().await.payload.as_ref(), b"while NATS is down");

    nats.restart().await;
    wait_until("n2 to reconnect", || cluster.is_connected()).await;
    // Interest is renewed on reconnect: routing resumes.
    until_routed(&mut publisher, &mut remote, "chat/x").await;
    publisher.publish_acked("chat/x", false, "back").await;
    skip_until(&mut remote, b"back").await;
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_client_id_is_unique_cluster_wide_and_single_sign_on_holds_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let mut servers = Vec::new();
    for node in ["n1", "n2"] {
        let mut config = with_jwt(node_config(&nats, node));
        config.auth.single_session = starling::config::SingleSession::User;
        servers.push(start(config).await);
    }
    let (n1, n2) = (&servers[0], &servers[1]);
    // The same client id on another node: the first connection is taken over (0x8E).
    let mut first = v5::connect(n1.mqtt_addr(), "device-7").await;
    let _second = v5::connect(n2.mqtt_addr(), "device-7").await;
    assert_eq!(
        first.disconnected().await.map(|d| d.reason_code),
        Some(rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::SessionTakenOver)
    );
    // Single sign-on per user: alice signing in on n2 closes her connection on n1.
    let alice = token(json!({ "sub": "alice" }));
    let mut laptop = v5::connect_token(n1.mqtt_addr(), "alice-laptop", &alice).await;
    let bob = token(json!({ "sub": "bob" }));
    let mut bobs = v5::connect_token(n1.mqtt_addr(), "bob-1", &bob).await;
    let _phone = v5::connect_token(n2.mqtt_addr(), "alice-phone", &alice).await;
    assert_eq!(
        laptop.disconnected().await.map(|d| d.reason_code),
        Some(rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::SessionTakenOver)
    );
    // Bob is untouched.
    bobs.subscribe("bob/x", v5::QoS::AtMostOnce).await;
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_persistent_session_moves_to_the_node_its_client_reconnects_to() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let servers = nodes(&nats, 2).await;
    let (n1, n2) = (&servers[0], &servers[1]);
    let mut phone = v4::connect(n1.mqtt_addr(), "phone", false).await;
    phone.subscribe("inbox/phone", v4::QoS::AtLeastOnce).await;
    phone.disconnect().await;
    // Queued on n1 while the phone is away.
    let mut sender = v4::connect(n1.mqtt_addr(), "sender", true).await;
    for i in 0..5 {
        sender.publish_acked("inbox/phone", false, format!("while away {i}")).await;
    }
    // The phone comes back through the load balancer, to n2: its
    // subscription and its five messages follow it.
    let mut phone = v4::connect(n2.mqtt_addr(), "phone", false).await;
    for i in 0..5 {
        assert_eq!(phone.next_publish().await.payload.as_ref(), format!("while away {i}").as_bytes());
    }
    let n1_cluster = n1.cluster().unwrap().clone();
    wait_until("n1 to have ended its copy of the session", || n1.broker().session("phone").is_none()).await;
    assert_eq!(n1_cluster.counters.sessions_handed_over.load(std::sync::atomic::Ordering::Relaxed), 1);
    // New messages published on n1 reach the phone on n2.
    until_routed(&mut sender, &mut phone, "inbox/phone").await;
    sender.publish_acked("inbox/phone", false, "after the move").await;
    assert_eq!(phone.next_publish().await.payload.as_ref(), b"after the move");
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_shared_subscription_gives_each_message_to_one_member_in_the_whole_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let servers = nodes(&nats, 2).await;
    let (n1, n2) = (&servers[0], &servers[1]);
    let mut workers = Vec::new();
    for (i, server) in [n1, n1, n2, n2].into_iter().enumerate() {
        let mut w = v4::connect(server.mqtt_addr(), &format!("worker-{i}"), true).await;
        w.subscribe("$share/workers/jobs/#", v4::QoS::AtLeastOnce).await;
        workers.push(w);
    }
    for server in [n1, n2] {
        let cluster = server.cluster().unwrap().clone();
        // jobs/# takes two subjects: two queue subscriptions per node.
        wait_until("the group's queue subscriptions", || {
            cluster.subscriptions.load(std::sync::atomic::Ordering::Relaxed) == 2
        })
        .await;
    }
    // A plain subscriber on n2 gets every job, beside the group.
    let mut auditor = v4::connect(n2.mqtt_addr(), "auditor", true).await;
    auditor.subscribe("jobs/#", v4::QoS::AtLeastOnce).await;
    let mut publisher = v4::connect(n1.mqtt_addr(), "dispatcher", true).await;
    until_routed(&mut publisher, &mut auditor, "jobs/warmup").await;

    let jobs = 40;
    for i in 0..jobs {
        publisher.publish_acked("jobs/new", false, format!("job {i}")).await;
    }
    for i in 0..jobs {
        assert_eq!(auditor.next_publish().await.payload.as_ref(), format!("job {i}").as_bytes());
    }
    // Every job reached exactly one worker, and workers on both nodes worked.
    let mut seen = std::collections::BTreeMap::new();
    let mut per_node = [0usize; 2];
    within("every job at one worker", async {
        while seen.values().filter(|&&n| n > 0).count() < jobs {
            for (i, w) in workers.iter_mut().enumerate() {
                while let Ok(Some(Ok(v4::Incoming::Publish(p)))) =
                    tokio::time::timeout(Duration::from_millis(20), w.events.recv()).await
                {
                    let text = String::from_utf8_lossy(&p.payload).into_owned();
                    if text.starts_with("job ") {
                        *seen.entry(text).or_insert(0usize) += 1;
                        per_node[i / 2] += 1;
                    }
                }
            }
        }
    })
    .await;
    assert!(seen.values().all(|&n| n == 1), "a job reached two workers: {seen:?}");
    assert_eq!(per_node.iter().sum::<usize>(), jobs);
    assert!(per_node[0] > 0 && per_node[1] > 0, "balanced across nodes: {per_node:?}");
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_room_s_viewer_count_sums_the_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let servers = nodes(&nats, 2).await;
    let (n1, n2) = (&servers[0], &servers[1]);
    let room = "live/r1/danmaku";
    let mut viewers = Vec::new();
    for (i, server) in [n1, n1, n1, n2, n2].into_iter().enumerate() {
        let mut v = v4::connect(server.mqtt_addr(), &format!("viewer-{i}"), true).await;
        v.subscribe(room, v4::QoS::AtMostOnce).await;
        viewers.push(v);
    }
    for server in [n1, n2] {
        wait_until("5 viewers counted on every node", || server.broker().viewer_count(room) == 5).await;
    }
    // The retained $SYS topic on each node says the cluster's count.
    let mut watcher = v4::connect(n2.mqtt_addr(), "watcher", true).await;
    watcher.subscribe(&format!("$SYS/viewers/{room}"), v4::QoS::AtMostOnce).await;
    skip_until(&mut watcher, b"5").await;
    // Viewers leaving n1 are subtracted on n2.
    for v in viewers.drain(..2) {
        v.disconnect().await;
    }
    wait_until("3 viewers counted on n2", || n2.broker().viewer_count(room) == 3).await;
    skip_until(&mut watcher, b"3").await;
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

/// Parses bench arguments the way the command line does.
#[derive(clap::Parser)]
struct BenchCli {
    #[command(flatten)]
    args: starling::bench::BenchArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starling_bench_spreads_its_clients_over_the_nodes() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let servers = nodes(&nats, 3).await;
    let brokers: Vec<String> = servers.iter().map(|s| s.mqtt_addr().to_string()).collect();
    let brokers = brokers.join(",");
    // The warm-up covers the subscribers' interest reaching NATS on a busy
    // machine: what is published before it is not counted.
    for line in [
        format!("fanout --broker {brokers} --subscribers 30 --rate 50 --duration 1 --warmup 3 --quiet"),
        format!(
            "p2p --broker {brokers} --spread pub-on-first --pairs 12 --rate 20 --qos 1 --duration 1 --warmup 3 --quiet"
        ),
    ] {
        let args = BenchCli::parse_from(std::iter::once("bench").chain(line.split_whitespace())).args;
        let result = within(&line, starling::bench::run(args)).await.unwrap();
        assert_eq!(result.connect_failures, 0, "{line}");
        assert!(result.published > 0, "{line}: nothing published");
        assert_eq!(result.received, result.expected, "{line}: lost messages");
    }
    // Every node had clients: each forwarded or received over NATS.
    for server in &servers {
        let c = &server.cluster().unwrap().counters;
        let crossed = c.forwarded.load(std::sync::atomic::Ordering::Relaxed)
            + c.received.load(std::sync::atomic::Ordering::Relaxed);
        assert!(crossed > 0, "a node took no part");
    }
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn over_a_nats_cluster_routing_survives_the_loss_of_a_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::cluster_of_three(dir.path()).await;
    // Each node knows one NATS server; the others it learns from it.
    let servers = nodes_with_three_replicas(&nats, &["n1", "n2"]).await;
    let (n1, n2) = (&servers[0], &servers[1]);
    let mut subscriber = v4::connect(n2.mqtt_addr(), "on-n2", true).await;
    subscriber.subscribe("alerts/#", v4::QoS::AtLeastOnce).await;
    let mut publisher = v4::connect(n1.mqtt_addr(), "on-n1", true).await;
    until_routed(&mut publisher, &mut subscriber, "alerts/a").await;

    // n1's NATS server dies: n1 moves to another one of the cluster.
    nats[0].kill().await;
    let cluster = n1.cluster().unwrap().clone();
    wait_until("n1 to reconnect to another NATS server", || cluster.is_connected()).await;
    // Acknowledged once JetStream (two of three replicas) holds it: when the
    // lost server led the stream, after the others elect a new leader
    // (seconds; the node sends the message again meanwhile).
    let election = Duration::from_secs(40);
    publisher.publish_acked_within(election, "alerts/b", false, "after the NATS server was lost").await;
    skip_until(&mut subscriber, b"after the NATS server was lost").await;
    until_routed(&mut publisher, &mut subscriber, "alerts/a").await;
    let js = async_nats::jetstream::new(async_nats::connect(nats[1].url()).await.unwrap());
    let mut stream = js.get_stream("starling_msgs").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let last = stream.get_last_raw_message_by_subject("starling.m.1.alerts.b").await.unwrap();
    assert!(String::from_utf8_lossy(&last.payload).contains("after the NATS server was lost"));
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_sampled_room_fed_from_two_nodes_gives_a_viewer_the_class_s_rate_not_twice_it() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    // A room busy above 1 comment/s, where a viewer sees at most 5 a second.
    let classes = dir.path().join("topics");
    std::fs::create_dir_all(&classes).unwrap();
    let room =
        "name = \"room\"\npatterns = [\"room/{id}\"]\n[sampling]\nroom_messages_per_sec = 1\nper_viewer_per_sec = 5\n";
    std::fs::write(classes.join("room.toml"), room).unwrap();
    let mut servers = Vec::new();
    for node in ["n1", "n2"] {
        let mut config = node_config(&nats, node);
        config.classes.dir = classes.clone();
        servers.push(start(config).await);
    }
    let (n1, n2) = (&servers[0], &servers[1]);
    let mut viewer = v4::connect(n2.mqtt_addr(), "viewer-on-n2", true).await;
    viewer.subscribe("room/1", v4::QoS::AtMostOnce).await;
    // n2 subscribes on NATS in order: once the probes' filter routes, so does the room's.
    viewer.subscribe("probe/#", v4::QoS::AtLeastOnce).await;
    let mut probe = v4::connect(n1.mqtt_addr(), "probe-on-n1", true).await;
    until_routed(&mut probe, &mut viewer, "probe/1").await;

    // n1's sampler passes the first 5 comments of this second; they reach
    // n2 and take the room's share there, so a comment published on n2 in
    // the same second is shed (alone, n2's sampler would have passed it).
    let on_n1 = v4::connect(n1.mqtt_addr(), "fan-on-n1", true).await;
    let mut on_n2 = v4::connect(n2.mqtt_addr(), "fan-on-n2", true).await;
    for i in 0..5 {
        on_n1.client.publish("room/1", v4::QoS::AtMostOnce, false, format!("from n1 {i}")).await.unwrap();
    }
    for i in 0..5 {
        assert_eq!(viewer.next_publish().await.payload.as_ref(), format!("from n1 {i}").as_bytes());
    }
    let shed_before = n2.broker().class_counters().0;
    on_n2.publish_acked("room/1", false, "from n2").await;
    assert_eq!(n2.broker().class_counters().0, shed_before + 1, "shed by the room's cluster-wide share");
    for server in servers {
        server.shutdown().await.unwrap();
    }
}
