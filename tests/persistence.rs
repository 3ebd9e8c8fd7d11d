//! What survives a restart, graceful or not: retained messages, persistent
//! sessions, their subscriptions and queued QoS 1 messages.

mod common;
use common::process::BrokerProcess;
use common::*;
use std::collections::BTreeSet;

#[tokio::test]
async fn retained_and_sessions_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(sled_config(dir.path())).await;
    let addr = server.mqtt_addr();
    let mut sub = v4::connect(addr, "durable-sub", false).await;
    sub.subscribe("news/#", v4::QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = v4::connect(addr, "pub", true).await;
    publisher.publish_acked("news/retained", true, "kept").await;
    publisher.publish_acked("news/queued", false, "waiting").await;
    publisher.disconnect().await;
    server.shutdown().await.unwrap();

    let server = start(sled_config(dir.path())).await;
    let addr = server.mqtt_addr();
    // The offline session kept its subscription and its queue.
    let (mut sub, ack) = v4::connect_with({
        let mut o = v4::options(addr, "durable-sub");
        o.set_clean_session(false);
        o
    })
    .await;
    assert!(ack.session_present);
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let p = sub.next_publish().await;
        got.insert(String::from_utf8(p.payload.to_vec()).unwrap());
    }
    assert_eq!(got, BTreeSet::from(["kept".to_string(), "waiting".to_string()]));
    // And a fresh subscriber sees the retained message.
    let mut fresh = v4::connect(addr, "fresh", true).await;
    fresh.subscribe("news/retained", v4::QoS::AtMostOnce).await;
    assert_eq!(fresh.next_publish().await.payload, "kept");
    server.shutdown().await.unwrap();
}

/// The durability promise: a PUBACK means every persistent subscriber's copy
/// is on disk, even if the broker is killed with SIGKILL right after.
#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    let mut sub = v4::connect(broker.addr, "crash-sub", false).await;
    sub.subscribe("crash/#", v4::QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = v4::connect(broker.addr, "crash-pub", true).await;
    for i in 0..N {
        publisher.client.publish("crash/data", v4::QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
    }
    for _ in 0..N {
        publisher.next_matching("PUBACK", |p| matches!(p, v4::Incoming::PubAck(_)).then_some(())).await;
    }
    broker.kill_9().await;

    let broker = BrokerProcess::start(dir.path()).await;
    let mut sub = v4::connect(broker.addr, "crash-sub", false).await;
    let mut got = BTreeSet::new();
    while got.len() < N {
        let p = sub.next_publish().await;
        got.insert(String::from_utf8(p.payload.to_vec()).unwrap().parse::<usize>().unwrap());
    }
    assert_eq!(got, (0..N).collect::<BTreeSet<_>>());
    broker.kill_9().await;
}

/// Beyond acknowledged messages: every store write reaches the journal
/// before sled sees it, so a killed broker keeps even what no flush covered
/// yet; here a persistent session's subscription, written before its SUBACK.
#[tokio::test]
async fn a_subscription_survives_kill_9_without_any_flush() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    let mut sub = v4::connect(broker.addr, "kept-sub", false).await;
    sub.subscribe("kept/#", v4::QoS::AtLeastOnce).await;
    // No QoS 1/2 publish, no clean shutdown: nothing flushed the store.
    broker.kill_9().await;
    drop(sub);

    let broker = BrokerProcess::start(dir.path()).await;
    let (mut sub, ack) = v4::connect_with({
        let mut o = v4::options(broker.addr, "kept-sub");
        o.set_clean_session(false);
        o
    })
    .await;
    assert!(ack.session_present, "the session was lost");
    let mut publisher = v4::connect(broker.addr, "kept-pub", true).await;
    publisher.publish_acked("kept/a", false, "still subscribed").await;
    assert_eq!(sub.next_publish().await.payload, "still subscribed");
    broker.kill_9().await;
}
