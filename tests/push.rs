//! The offline push fallback (`[push]`): a chat delivery its recipient does
//! not acknowledge in time (over MQTT or starling.v1), or that waits for an offline persistent session,
//! is POSTed once, signed, to the app's webhook (a test HTTP server here);
//! an acknowledged one never is; failed calls are retried, and the queue
//! survives a restart.

mod common;

use common::hook::{Call, Hook};
use common::raw::{self, Raw};
use common::*;
use starling::config::Config;
use starling::mqtt::packet::{ProtocolVersion, QoS};

const SECRET: &str = "a-push-secret-for-the-tests";

fn with_push(mut config: Config, hook: &Hook) -> Config {
    config = with_classes(config);
    config.push.webhook = Some(hook.url("/push"));
    config.push.secret = SECRET.into();
    config.push.ack_timeout_secs = 1;
    config
}

/// The call is signed with the secret over its exact body.
fn assert_signed(call: &Call) {
    let timestamp: u64 = call.headers.get("x-starling-timestamp").expect("a timestamp").parse().unwrap();
    let now = starling::clock::now_ms() / 1000;
    assert!(timestamp <= now && now - timestamp < 60, "a current timestamp: {timestamp}");
    let wanted = starling::push::Push::signature(SECRET, timestamp, &call.body);
    assert_eq!(call.headers.get("x-starling-signature"), Some(&wanted), "{call:?}");
    assert!(wanted.starts_with("sha256=") && wanted.len() == 7 + 64);
}

/// Waits until nothing is watched or queued: every decision is made and sent.
async fn settled(server: &starling::server::Server) {
    let push = server.push().cloned().expect("push is on");
    wait_until("the push module to settle", || push.depths() == (0, 0)).await;
}

#[tokio::test]
async fn an_unacknowledged_delivery_is_pushed_once_and_an_acknowledged_one_never() {
    let mut hook = Hook::start().await;
    let server = start(with_push(memory_config(), &hook)).await;
    // Bob's app receives but never acknowledges (the phone went to sleep).
    let mut bob = Raw::connected(server.mqtt_addr(), ProtocolVersion::V311, "bob-phone").await;
    bob.send(&raw::subscribe_packet(1, "dm/alice/bob", QoS::AtLeastOnce)).await;
    assert!(matches!(bob.recv().await, Some(starling::mqtt::packet::Packet::SubAck(_))));
    // So does Frank's, over starling.v1.
    let url = format!("ws://{}/ws", server.ws_addr());
    let connect =
        starling::wsproto::pb::Connect { client_id: "frank-app".into(), clean_start: true, ..Default::default() };
    let (mut frank, _) =
        within("frank connects", starling::wsproto::client::Client::connect(&url, connect)).await.unwrap();
    frank.subscribe(1, &[("dm/alice/bob", 1)]).await.unwrap();
    // Carol's app acknowledges at once (rumqttc does).
    let mut carol = v4::connect(server.mqtt_addr(), "carol-phone", true).await;
    carol.subscribe("dm/alice/bob", v4::QoS::AtLeastOnce).await;

    let mut alice = v4::connect(server.mqtt_addr(), "alice", true).await;
    alice.publish_acked("dm/alice/bob", false, "are you coming tonight?").await;
    let delivered = bob.expect_publish().await;
    assert_eq!(delivered.payload.as_ref(), b"are you coming tonight?");
    assert_eq!(within("carol's delivery", carol.next_publish()).await.payload.as_ref(), b"are you coming tonight?");

    assert_eq!(
        within("frank's delivery", frank.next_publish()).await.unwrap().payload.as_ref(),
        b"are you coming tonight?"
    );

    let mut calls = [hook.next().await, hook.next().await];
    calls.sort_by_key(|c| c.json()["recipient_client_id"].as_str().unwrap().to_string());
    assert_eq!(calls[1].json()["recipient_client_id"], "frank-app");
    let call = &calls[0];
    assert_eq!(call.path, "/push");
    assert_signed(call);
    assert_signed(&calls[1]);
    let event = call.json();
    assert_eq!(event["recipient_client_id"], "bob-phone");
    assert_eq!((event["topic"].as_str(), event["sender"].as_str()), (Some("dm/alice/bob"), Some("alice")));
    assert_eq!(event["preview"], "are you coming tonight?");
    assert!(event["message_id"].as_str().unwrap().parse::<u64>().is_ok() && event["timestamp_ms"].is_u64());
    settled(&server).await;
    assert!(hook.try_next().is_none(), "one push per message per recipient, none for carol");
    let url = format!("http://{}/metrics", server.admin_addr());
    let metrics =
        tokio::task::spawn_blocking(move || ureq::get(&url).call().unwrap().into_string().unwrap()).await.unwrap();
    assert!(metrics.contains(r#"starling_push_deliveries_total{outcome="acknowledged"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"starling_push_webhook_calls_total{result="ok"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"starling_push_deliveries_total{outcome="pushed"} 2"#), "{metrics}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_offline_recipient_is_pushed_at_once_and_a_failing_webhook_is_retried_after_a_restart() {
    let mut hook = Hook::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = with_push(sled_config(dir.path()), &hook);
    let server = start(config.clone()).await;
    // Dave has a persistent session and is offline.
    let mut dave = v4::connect(server.mqtt_addr(), "dave-phone", false).await;
    dave.subscribe("chat/climbing", v4::QoS::AtLeastOnce).await;
    dave.disconnect().await;
    wait_until("dave offline", || server.broker().connected_count() == 0).await;

    // The app's server is down: the call fails and will be retried.
    hook.answer(503);
    let mut erin = v4::connect(server.mqtt_addr(), "erin", true).await;
    erin.publish_acked("chat/climbing", false, "rope is in the car").await;
    let first = hook.next().await;
    assert_signed(&first);
    let event = first.json();
    assert_eq!(
        (event["recipient_client_id"].as_str(), event["preview"].as_str()),
        (Some("dave-phone"), Some("rope is in the car"))
    );
    erin.disconnect().await;
    assert_eq!(server.push().unwrap().depths().1, 1, "the event waits in the queue");
    server.shutdown().await.unwrap();

    // After a restart the queued event is sent again, and taken this time.
    hook.answer(200);
    let server = start(config).await;
    let again = within("the event after the restart", async {
        loop {
            let call = hook.next().await;
            if call.json()["message_id"] == event["message_id"] {
                return call;
            }
        }
    })
    .await;
    assert_signed(&again);
    // Only a successful call empties the queue the restarted broker loaded.
    settled(&server).await;
    server.shutdown().await.unwrap();
}

/// The webhook queue is bounded (issue 24, item 12): an event the webhook
/// keeps refusing is given up after `max_attempts` calls (a dead letter)
/// instead of holding back every later event, and beyond `max_queue` the
/// oldest events are dropped; both are counted.
#[tokio::test]
async fn a_refused_event_becomes_a_dead_letter_and_the_queue_is_bounded() {
    let mut hook = Hook::start().await;
    let mut config = with_push(memory_config(), &hook);
    config.push.max_attempts = 2;
    config.push.max_queue = 2;
    let server = start(config).await;
    let push = server.push().cloned().unwrap();
    // Offline persistent recipients: each message is an event at once.
    for who in ["gus", "hal", "ian", "jo"] {
        let mut c = v4::connect(server.mqtt_addr(), &format!("{who}-phone"), false).await;
        c.subscribe("chat/dead", v4::QoS::AtLeastOnce).await;
        c.disconnect().await;
    }
    wait_until("all offline", || server.broker().connected_count() == 0).await;
    hook.answer(500);
    let mut kim = v4::connect(server.mqtt_addr(), "kim", true).await;
    kim.publish_acked("chat/dead", false, "anyone?").await;
    // Four events, a queue of two: two dropped, the rest given up after two calls each.
    wait_until("every event dropped or given up", || {
        let c = &push.counters;
        use std::sync::atomic::Ordering::Relaxed;
        push.depths() == (0, 0) && c.dropped.load(Relaxed) + c.dead_letters.load(Relaxed) == 4
    })
    .await;
    assert!(push.counters.dropped.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    // And a later event still goes through once the webhook answers.
    hook.answer(200);
    while hook.try_next().is_some() {}
    kim.publish_acked("chat/dead", false, "hello again").await;
    let call = within("a later event", async {
        loop {
            let call = hook.next().await;
            if call.json()["preview"] == "hello again" {
                return call;
            }
        }
    })
    .await;
    assert_signed(&call);
    server.shutdown().await.unwrap();
}
