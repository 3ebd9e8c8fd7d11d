//! Criterion benchmarks of starling's hot path, named by workload shape:
//! topic matching on large trees, the MQTT codec, routing one publish to many
//! subscribers, and group commit. `cargo bench --bench hot_path` runs them at
//! full size; `cargo test --all-targets` runs each once at a small size.
//! Results and the machine they ran on: docs/performance.md.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use starling::broker::{Broker, ConnectRequest, Message, Outgoing};
use starling::config::Config;
use starling::mqtt::decode::decode;
use starling::mqtt::encode::encode;
use starling::mqtt::packet::*;
use starling::store::{GroupCommit, MemoryStore, SledStore, Store, StoredMessage};
use starling::topic::{SubscriptionTree, TopicFilter, TopicName};
use std::sync::Arc;

/// Full sizes under `cargo bench`, small ones when run as a test.
fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn topic_matching(c: &mut Criterion) {
    let n = if full_size() { 1_000_000 } else { 10_000 };
    let mut group = c.benchmark_group("match");
    // Exact-heavy: a fleet, one subscription per vehicle topic.
    let mut exact = SubscriptionTree::new();
    for i in 0..n {
        let f = TopicFilter::new(&format!("fleet/c{}/{i}/location", i % 100)).unwrap();
        exact.insert(&f, i, ());
    }
    let topic = TopicName::new(&format!("fleet/c7/{}/location", n / 2 + 7)).unwrap();
    group.bench_function(BenchmarkId::new("exact_heavy", n), |b| {
        b.iter(|| {
            let mut hits = 0;
            exact.for_each_match(black_box(&topic), |_, _| hits += 1);
            hits
        })
    });
    drop(exact);
    // Wildcard-heavy: '+' and '#' filters at every level.
    let mut wild = SubscriptionTree::new();
    for i in 0..n {
        let f = match i % 4 {
            0 => format!("fleet/+/{i}/location"),
            1 => format!("fleet/c{}/+/location", i % 1000),
            2 => format!("fleet/c{}/{i}/#", i % 100),
            _ => format!("+/c{}/{i}/+", i % 100),
        };
        wild.insert(&TopicFilter::new(&f).unwrap(), i, ());
    }
    group.bench_function(BenchmarkId::new("wildcard_heavy", n), |b| {
        b.iter(|| {
            let mut hits = 0;
            wild.for_each_match(black_box(&topic), |_, _| hits += 1);
            hits
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "fleet/city1/v123/location".into(),
            packet_id: 7,
            payload: vec![0u8; 64].into(),
            properties: Default::default(),
        });
        let mut encoded = BytesMut::new();
        encode(&publish, version, &mut encoded);
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(BenchmarkId::new("encode_publish_64B", format!("{version:?}")), |b| {
            let mut buf = BytesMut::with_capacity(4096);
            b.iter(|| {
                buf.clear();
                encode(black_box(&publish), version, &mut buf);
            })
        });
        group.bench_function(BenchmarkId::new("decode_publish_64B", format!("{version:?}")), |b| {
            b.iter(|| {
                let mut buf = encoded.clone();
                decode(black_box(&mut buf), Some(version), usize::MAX).unwrap()
            })
        });
    }
    group.finish();
}

fn routing(c: &mut Criterion) {
    route_fan_out(c, false);
    // Subscriptions granted with a hole (a deny rule they overlap, issue 24
    // item 7): what the per-delivery hole check costs those that have one.
    route_fan_out(c, true);
}

fn route_fan_out(c: &mut Criterion, with_holes: bool) {
    let n = if full_size() { 10_000 } else { 100 };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    let mut config = Config::default();
    config.session.max_queued_messages = 10;
    let broker = Broker::new(config, Arc::new(MemoryStore::new())).unwrap();
    let hole_set = Arc::new(vec![starling::topic::TopicFilter::new("live/room1/secret").unwrap()]);
    let sessions: Vec<_> = (0..n)
        .map(|i| {
            let connected = broker
                .connect(ConnectRequest {
                    client_id: format!("viewer-{i}"),
                    clean_start: true,
                    session_expiry_secs: 0,
                    receive_maximum: 100,
                    user: None,
                    device: None,
                    attachment: starling::broker::Attachment {
                        transport: starling::auth::Transport::MqttTcp,
                        protocol: "5",
                        peer: None,
                        keep_alive_secs: 0,
                        connected_at_ms: 0,
                        identity: None,
                    },
                })
                .expect("fresh client ids");
            if with_holes {
                let filter = starling::topic::parse_subscription("live/room1/+").unwrap();
                // One set shared by all, as the broker interns them.
                let record = starling::broker::SubscriptionRecord {
                    options: SubscriptionOptions::default(),
                    identifier: None,
                    holes: Some(hole_set.clone()),
                };
                broker.subscribe_unsaved(&connected.session, &filter, record);
            } else {
                let filter = starling::topic::parse_subscription("live/room1/danmaku").unwrap();
                broker.subscribe(&connected.session, &filter, SubscriptionOptions::default(), None);
            }
            connected.session
        })
        .collect();
    let topic = TopicName::new("live/room1/danmaku").unwrap();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(n as u64));
    let mut out: Vec<Outgoing> = Vec::new();
    let name = if with_holes { "fanout_1_to_n_with_a_hole_then_drain" } else { "fanout_1_to_n_then_drain" };
    group.bench_function(BenchmarkId::new(name, n), |b| {
        b.iter(|| {
            broker.publish(Message::new(topic.clone(), bytes::Bytes::from_static(&[0; 64]), QoS::AtMostOnce, false));
            // Each subscriber's writer takes its copy (what keeps outboxes from filling).
            for s in &sessions {
                out.clear();
                s.drain(&mut out, 16, usize::MAX, starling::clock::coarse_now_ms());
            }
        })
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let commit = runtime.block_on(async { GroupCommit::new(store.clone()) });
    let writers = if full_size() { 100 } else { 4 };
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(writers));
    group.bench_function(BenchmarkId::new("group_commit_concurrent_writers", writers), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let tasks: Vec<_> = (0..writers)
                    .map(|i| {
                        let (store, commit) = (store.clone(), commit.clone());
                        tokio::spawn(async move {
                            let m = StoredMessage {
                                id: i,
                                timestamp_ms: 0,
                                topic: format!("t/{i}"),
                                payload: vec![0; 64],
                                qos: QoS::AtLeastOnce,
                                retain: true,
                                expires_at_ms: None,
                                payload_format_indicator: None,
                                content_type: None,
                                response_topic: None,
                                correlation_data: None,
                                user_properties: vec![],
                            };
                            store.set_retained(&m.topic, Some(&m)).unwrap();
                            commit.sync().await.unwrap();
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, topic_matching, codec, routing, group_commit);
criterion_main!(benches);
