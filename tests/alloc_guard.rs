//! A regression guard for the routing path that runs in CI in well under a
//! second and measures no time: heap allocations per delivery, counted by a
//! counting global allocator around `Broker::publish` to 1,000 subscribers
//! and each subscriber's drain. The thresholds sit a little above what the
//! code does today (docs/performance.md), so an extra allocation per
//! delivery fails the test.

use starling::broker::{Broker, ConnectRequest, Message, Outgoing};
use starling::config::Config;
use starling::model::{QoS, SubscriptionOptions};
use starling::store::MemoryStore;
use starling::topic::TopicName;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The system allocator, counting allocations (and reallocations).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SUBSCRIBERS: usize = 1000;
const MESSAGES: usize = 20;

#[test]
fn routing_and_draining_allocate_at_most_a_little_per_delivery() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    let broker = Broker::new(Config::default(), Arc::new(MemoryStore::new())).unwrap();
    let sessions: Vec<_> = (0..SUBSCRIBERS)
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
            let filter = starling::topic::parse_subscription("live/room1/danmaku").unwrap();
            broker.subscribe(&connected.session, &filter, SubscriptionOptions::default(), None);
            connected.session
        })
        .collect();
    let topic = TopicName::new("live/room1/danmaku").unwrap();
    let mut out: Vec<Outgoing> = Vec::with_capacity(64);
    let mut round = |count: &mut dyn FnMut(u64, u64)| {
        let message = Message::new(topic.clone(), bytes::Bytes::from_static(&[0; 64]), QoS::AtMostOnce, false);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let outcome = broker.publish(message);
        let routed = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(outcome.deliveries, SUBSCRIBERS);
        for s in &sessions {
            out.clear();
            s.drain(&mut out, 16, usize::MAX, starling::clock::coarse_now_ms());
            assert_eq!(out.len(), 1);
        }
        let drained = ALLOCATIONS.load(Ordering::Relaxed);
        count(routed - before, drained - routed);
    };
    // Warm up: outboxes and buffers reach their steady size.
    round(&mut |_, _| {});
    let (mut routing, mut draining) = (0u64, 0u64);
    for _ in 0..MESSAGES {
        round(&mut |r, d| {
            routing += r;
            draining += d;
        });
    }
    let deliveries = (SUBSCRIBERS * MESSAGES) as f64;
    let per_delivery_routing = routing as f64 / deliveries;
    let per_delivery_draining = draining as f64 / deliveries;
    println!("allocations per delivery: routing {per_delivery_routing:.3}, draining {per_delivery_draining:.3}");
    // Today: a shared Arc per message, nothing per delivery (see the print).
    assert!(per_delivery_routing <= 0.05, "routing allocates {per_delivery_routing:.3} per delivery");
    assert!(per_delivery_draining <= 0.05, "draining allocates {per_delivery_draining:.3} per delivery");
}

/// A delivery is copied into every subscriber's outbox ring, so its size is
/// memory traffic per delivery at fan-out (docs/performance.md, "Fan-out
/// rows on the mimalloc build"): 56 bytes before subscription ids became a
/// one-word vector and the stored sequence number a non-zero one.
#[test]
fn a_delivery_fits_half_a_cache_line() {
    assert!(
        std::mem::size_of::<starling::broker::Delivery>() <= 32,
        "Delivery is {} bytes",
        std::mem::size_of::<starling::broker::Delivery>()
    );
    assert!(std::mem::size_of::<Outgoing>() <= 40, "Outgoing is {} bytes", std::mem::size_of::<Outgoing>());
}
