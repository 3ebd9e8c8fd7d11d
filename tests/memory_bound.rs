//! A subscriber that stops reading costs the broker a bounded amount of
//! memory, however much is published to it, and a bystander on the same
//! broker keeps receiving everything. Against the real binary, so the
//! broker's own peak RSS (`VmHWM`) can be read.
//!
//! The bound: what a stalled client may pin is its outbox's byte quota
//! (`session.max_queued_bytes`, 16 MiB by default) plus one write buffer
//! (the client core's 1 MiB write budget, plus one message over it), until
//! `mqtt.write_timeout_secs` closes it. Allowing for the publisher's read
//! buffer and the allocator, the broker's peak RSS may grow by at most
//! [`BOUND`] while 150 MB go to the stalled subscriber. Before the limits
//! existed it pinned every message (1,000 × the maximum payload).

mod common;

use common::process::BrokerProcess;
use common::raw::Raw;
use common::v4;
use starling::mqtt::packet::*;

/// Growth of the broker's peak RSS allowed during the flood.
const BOUND: u64 = 48 << 20;
const MESSAGES: usize = 150;
const PAYLOAD: usize = 1_000_000;

/// The broker's peak resident set (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_1_mb_messages_costs_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    let pid = broker.child.id().unwrap();

    let mut bystander = v4::connect(broker.addr, "bystander", true).await;
    bystander.subscribe("small/#", v4::QoS::AtMostOnce).await;

    // Subscribes, then never reads again.
    let mut stalled = Raw::connected(broker.addr, ProtocolVersion::V311, "stalled").await;
    stalled
        .send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter { filter: "big/#".into(), options: Default::default() }],
            properties: Default::default(),
        }))
        .await;
    assert!(matches!(stalled.recv().await, Some(Packet::SubAck(_))));

    let mut options = v4::options(broker.addr, "publisher");
    options.set_max_packet_size(1 << 21, 1 << 21);
    let (mut publisher, _) = v4::connect_with(options).await;
    let baseline = peak_rss(pid);
    for i in 0..MESSAGES {
        // QoS 1: each big message is routed before the next is sent.
        publisher.publish_acked("big/frame", false, vec![b'x'; PAYLOAD]).await;
        publisher.client.publish("small/tick", v4::QoS::AtMostOnce, false, i.to_string()).await.unwrap();
    }
    for i in 0..MESSAGES {
        let tick = bystander.next_publish().await;
        assert_eq!(tick.payload, i.to_string().as_bytes(), "the bystander lost or reordered a message");
    }
    let grown = peak_rss(pid).saturating_sub(baseline);
    eprintln!("peak RSS grew by {} MiB (baseline {} MiB)", grown >> 20, baseline >> 20);
    assert!(
        grown <= BOUND,
        "the broker's peak RSS grew by {} MiB while {} MB went to a subscriber that does not read (bound {} MiB)",
        grown >> 20,
        MESSAGES * PAYLOAD / 1_000_000,
        BOUND >> 20
    );
    drop(stalled);
    broker.kill_9().await;
}
