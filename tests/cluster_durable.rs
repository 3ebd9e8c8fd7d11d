//! The JetStream half of the cluster (docs/cluster.md, "What lives in
//! JetStream"), over a real nats-server: QoS 1 and 2 across nodes are
//! acknowledged once JetStream holds them; a node started later sees the
//! retained messages and the chat history; a persistent session whose node
//! was SIGKILLed is rebuilt on the node its client reconnects to, with every
//! acknowledged message.

mod common;

use common::nats::{node_config, nodes_with_three_replicas, until_routed, NatsServer};
use common::process::BrokerProcess;
use common::*;
use starling::server::Server;
use std::path::Path;

async fn ready_node(nats: &NatsServer, node: &str) -> Server {
    let server = start(node_config(nats, node)).await;
    let cluster = server.cluster().unwrap().clone();
    wait_until("JetStream streams and buckets", || cluster.durable.is_ready()).await;
    server
}

async fn jetstream(nats: &NatsServer) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap())
}

#[tokio::test]
async fn qos_1_and_2_cross_nodes_once_jetstream_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let (n1, n2) = (ready_node(&nats, "n1").await, ready_node(&nats, "n2").await);
    let mut at_least_once = v4::connect(n2.mqtt_addr(), "qos1-on-n2", true).await;
    at_least_once.subscribe("orders/#", v4::QoS::AtLeastOnce).await;
    let mut exactly_once = v5::connect(n2.mqtt_addr(), "qos2-on-n2").await;
    exactly_once.subscribe("orders/#", v5::QoS::ExactlyOnce).await;

    let mut publisher = v5::connect(n1.mqtt_addr(), "publisher-on-n1").await;
    // The PUBACK / PUBCOMP comes once JetStream holds the message; n2's
    // subscription may not be on NATS yet, so publish until one arrives.
    within("n2 to get a message from n1", async {
        loop {
            publisher.publish_qos("orders/probe", v5::QoS::AtLeastOnce, false, "probe").await;
            if let Ok(p) =
                tokio::time::timeout(std::time::Duration::from_millis(200), at_least_once.next_publish()).await
            {
                if p.payload.as_ref() == b"probe" {
                    return;
                }
            }
        }
    })
    .await;
    publisher.publish_qos("orders/1", v5::QoS::AtLeastOnce, false, "one").await;
    publisher.publish_qos("orders/2", v5::QoS::ExactlyOnce, false, "two").await;
    for (payload, qos) in [("one", v4::QoS::AtLeastOnce), ("two", v4::QoS::AtLeastOnce)] {
        let p = loop {
            let p = at_least_once.next_publish().await;
            if p.payload.as_ref() != b"probe" {
                break p;
            }
        };
        assert_eq!((p.payload.as_ref(), p.qos), (payload.as_bytes(), qos));
    }
    for (payload, qos) in [("one", v5::QoS::AtLeastOnce), ("two", v5::QoS::ExactlyOnce)] {
        let p = loop {
            let p = exactly_once.next_publish().await;
            if p.payload.as_ref() != b"probe" {
                break p;
            }
        };
        assert_eq!((p.payload.as_ref(), p.qos), (payload.as_bytes(), qos));
    }
    // Both are in the durable stream (QoS 1 and 2 only).
    let stream = jetstream(&nats).await.get_stream("starling_msgs").await.unwrap();
    let subjects = stream.info_with_subjects("starling.m.1.orders.>").await.unwrap();
    let held: Vec<String> = {
        use futures_util::StreamExt;
        subjects.map(|s| s.unwrap().0).collect().await
    };
    assert!(held.contains(&"starling.m.1.orders.1".to_string()), "{held:?}");
    assert!(held.contains(&"starling.m.1.orders.2".to_string()), "{held:?}");
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}

/// One way in, one way back (issue 23): with JetStream not answering (the
/// NATS server paused: its connection stays open), a QoS 1 message that
/// arrives through the admin API is answered 503, and one that arrives
/// through a bridge is not acknowledged to the remote broker, exactly as a
/// client's PUBLISH is refused; once NATS answers again, both go through.
#[tokio::test]
async fn the_bridge_and_the_api_wait_for_the_cluster_as_clients_do() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    // The remote broker the bridge brings `feed/#` in from.
    let remote = start_memory().await;
    let mut config = node_config(&nats, "n1");
    config.cluster.as_mut().unwrap().ack_timeout_ms = 1_000;
    let bridge = format!(
        "[[bridge]]\nname = \"remote\"\naddress = \"{}\"\nreconnect_delay_min_ms = 20\n\
         reconnect_delay_max_ms = 200\n[[bridge.topics]]\nfilter = \"feed/#\"\ndirection = \"in\"\nqos = 1\n",
        remote.mqtt_addr()
    );
    config.bridge = starling::config::Config::from_toml(&bridge, "test bridge").unwrap().bridge;
    let n1 = start(config).await;
    let cluster = n1.cluster().unwrap().clone();
    wait_until("JetStream streams and buckets", || cluster.durable.is_ready()).await;
    wait_until("the bridge is up", || n1.bridges()[0].connected).await;
    let mut local = v4::connect(n1.mqtt_addr(), "local-reader", true).await;
    local.subscribe("feed/#", v4::QoS::AtLeastOnce).await;
    let mut feeder = v5::connect(remote.mqtt_addr(), "feeder").await;
    feeder.publish_acked("feed/a", false, "before").await;
    assert_eq!(local.next_publish().await.payload.as_ref(), b"before");
    // QoS 1 deliveries the remote still waits a PUBACK for (the bridge's).
    let remote_inflight = || remote.broker().session_summary().inflight;
    wait_until("the remote has its acknowledgement", || remote_inflight() == 0).await;
    let api = |qos: u8| {
        let body = json!({ "topic": "api/t", "payload": "hello", "qos": qos }).to_string();
        let addr = n1.admin_addr();
        async move {
            common::http::request(
                addr,
                "POST",
                "/api/v1/publish",
                &[("content-type", "application/json"), ("connection", "close")],
                body.as_bytes(),
            )
            .await
        }
    };

    assert_eq!(api(1).await.status, 200, "before the pause");
    nats.pause();
    let reply = api(1).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("not_replicated"), "{}", reply.text());
    assert_eq!(api(0).await.status, 200, "QoS 0 promises nothing: answered at once");
    // The remote's QoS 1 message reaches the local subscriber, but the
    // remote gets no acknowledgement: it keeps the message in flight, and
    // the bridge reconnects so that it is sent again.
    feeder.publish_acked("feed/a", false, "while paused").await;
    assert_eq!(local.next_publish().await.payload.as_ref(), b"while paused");
    wait_until("the bridge gives the message back (reconnects)", || n1.bridges()[0].connects >= 2).await;
    assert!(remote_inflight() > 0 || !n1.bridges()[0].connected, "not acknowledged to the remote");

    nats.resume();
    wait_for("the API publish goes through once NATS answers", || async { api(1).await.status == 200 }).await;
    // The bridge is up again, the remote sent its message again, and now it
    // is acknowledged there.
    wait_until("the remote's message is acknowledged", || n1.bridges()[0].connected && remote_inflight() == 0).await;
    feeder.publish_acked("feed/a", false, "after").await;
    loop {
        if local.next_publish().await.payload.as_ref() == b"after" {
            break;
        }
    }
    n1.shutdown().await.unwrap();
    remote.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_started_later_sees_the_retained_messages_and_the_chat_history() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let n1 = ready_node(&nats, "n1").await;
    let mut car = v4::connect(n1.mqtt_addr(), "car-7", true).await;
    car.publish_acked("fleet/car-7/location", true, "52.52,13.40").await;
    car.publish_acked("fleet/car-8/location", true, "48.85,2.35").await;
    car.publish_acked("fleet/car-8/location", true, "").await; // cleared
    for i in 0..3 {
        car.publish_acked("chat/lobby", false, format!("hello {i}")).await;
    }
    let retained = jetstream(&nats).await.get_key_value("starling_retained").await.unwrap();
    wait_for("the retained value in the bucket", || async {
        retained.get(starling::cluster::subjects::topic_key("fleet/car-8/location")).await.ok().flatten().is_some()
    })
    .await;

    // n3 joins after all that.
    let n3 = ready_node(&nats, "n3").await;
    let mut map = v4::connect(n3.mqtt_addr(), "map-on-n3", true).await;
    map.subscribe("fleet/+/location", v4::QoS::AtLeastOnce).await;
    let p = map.next_publish().await;
    assert_eq!((p.topic.as_str(), p.payload.as_ref(), p.retain), ("fleet/car-7/location", &b"52.52,13.40"[..], true));
    assert_eq!(n3.broker().retained_count(), 1, "the cleared topic holds nothing");
    let history = common::http::request(n3.ws_addr(), "GET", "/api/v1/history?topic=chat/lobby", &[], b"").await;
    assert_eq!(history.status, 200, "{}", history.text());
    let body: serde_json::Value = serde_json::from_str(&history.text()).unwrap();
    let texts: Vec<&str> =
        body["messages"].as_array().unwrap().iter().map(|m| m["payload"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hello 0", "hello 1", "hello 2"]);

    // A retained value set on n3 now reaches n1 through the bucket.
    let mut other_car = v4::connect(n3.mqtt_addr(), "car-9", true).await;
    other_car.publish_acked("fleet/car-9/location", true, "40.41,-3.70").await;
    let topic = starling::topic::TopicName::new("fleet/car-9/location").unwrap();
    wait_until("n1 to hold car-9's position", || n1.broker().retained_message(&topic).is_some()).await;

    // A retained value with an expiry (MQTT 5, 3 s): every node drops its
    // copy at that deadline, and the node that admitted it (n3) empties the
    // bucket's entry, once.
    let expiring = v5::connect(n3.mqtt_addr(), "car-10").await;
    let properties =
        rumqttc::v5::mqttbytes::v5::PublishProperties { message_expiry_interval: Some(3), ..Default::default() };
    expiring
        .client
        .publish_with_properties("fleet/car-10/location", v5::QoS::AtLeastOnce, true, "1.0,2.0", properties)
        .await
        .unwrap();
    let key = starling::cluster::subjects::topic_key("fleet/car-10/location");
    wait_for("car-10's value in the bucket", || async {
        retained.get(&key).await.ok().flatten().is_some_and(|v| !v.is_empty())
    })
    .await;
    let topic = starling::topic::TopicName::new("fleet/car-10/location").unwrap();
    wait_until("n1 to hold car-10's position", || n1.broker().retained_message(&topic).is_some()).await;
    wait_for("the bucket to forget car-10's expired value", || async {
        retained.get(&key).await.ok().flatten().is_some_and(|v| v.is_empty())
    })
    .await;
    wait_until("n1 to drop its copy", || n1.broker().retained_message(&topic).is_none()).await;
    n1.shutdown().await.unwrap();
    n3.shutdown().await.unwrap();
}

/// A node as its own process (sled storage, the shipped topic classes), so
/// that it can be SIGKILLed.
async fn node_process(dir: &Path, nats: &NatsServer, node: &str) -> BrokerProcess {
    let home = dir.join(node);
    std::fs::create_dir_all(&home).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(manifest.join("config.toml"))
        .unwrap()
        .replace("dir = \"./topics\"", &format!("dir = {:?}", manifest.join("topics").display().to_string()));
    let config = format!("{config}\n[cluster]\nnats_urls = [\"{}\"]\nnode = \"{node}\"\n", nats.url());
    std::fs::write(home.join("config.toml"), config).unwrap();
    let process = BrokerProcess::start(&home).await;
    wait_for(&format!("{node}'s JetStream streams and buckets"), || async {
        let metrics =
            common::http::request(process.admin_addr, "GET", "/metrics", &[("Connection", "close")], b"").await;
        metrics.text().lines().any(|line| line == "starling_cluster_jetstream_ready 1")
    })
    .await;
    process
}

#[tokio::test]
async fn a_persistent_session_survives_its_node_being_killed() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let n1 = node_process(dir.path(), &nats, "n1").await;
    let n2 = node_process(dir.path(), &nats, "n2").await;
    let mut phone = v4::connect(n1.addr, "phone", false).await;
    phone.subscribe("orders/phone", v4::QoS::AtLeastOnce).await;
    // The cluster knows the session (its record names n1 and the subscription).
    let sessions = jetstream(&nats).await.get_key_value("starling_sessions").await.unwrap();
    wait_for("the phone's session record", || async {
        let record = sessions.get(starling::cluster::subjects::client_key("phone")).await.ok().flatten();
        record
            .and_then(|r| postcard::from_bytes::<starling::cluster::recovery::SessionRecord>(&r).ok())
            .is_some_and(|r| r.node == "n1" && r.subscriptions.iter().any(|s| s.filter == "orders/phone"))
    })
    .await;

    // A message the phone gets while connected, routed from n2 to n1.
    let mut shop = v4::connect(n2.addr, "shop-on-n2", true).await;
    until_routed(&mut shop, &mut phone, "orders/phone").await;
    phone.kill();
    // Acknowledged to the shop while the phone is away: queued on n1 and
    // held by JetStream.
    let acknowledged: Vec<String> = (0..20).map(|i| format!("order {i}")).collect();
    for order in &acknowledged {
        shop.publish_acked("orders/phone", false, order.as_str()).await;
    }
    n1.kill_9().await;

    // The phone comes back through the load balancer, to n2, and is told
    // its session is present: rebuilt from the cluster's record and
    // JetStream before the CONNACK (issue 25, item 1).
    let mut options = v4::options(n2.addr, "phone");
    options.set_clean_session(false);
    let (mut phone, connack) = v4::connect_with(options).await;
    assert!(connack.session_present, "the session rebuilt on n2 is present");
    let mut missing: std::collections::BTreeSet<String> = acknowledged.iter().cloned().collect();
    while !missing.is_empty() {
        let p = phone.next_publish().await;
        missing.remove(&String::from_utf8_lossy(&p.payload).into_owned());
    }
    // Its subscription lives on n2 now: new orders arrive directly.
    shop.publish_acked("orders/phone", false, "after the crash").await;
    while phone.next_publish().await.payload.as_ref() != b"after the crash" {}
    let metrics = common::http::request(n2.admin_addr, "GET", "/metrics", &[("Connection", "close")], b"").await.text();
    assert!(metrics.lines().any(|l| l == "starling_cluster_session_moves_total{direction=\"rebuilt\"} 1"), "{metrics}");

    // n1 comes back on its store, which still holds the phone's session:
    // the cluster's record says it lives on n2 now, so n1 ends its copy.
    let n1 = node_process(dir.path(), &nats, "n1").await;
    let client =
        common::http::request(n1.admin_addr, "GET", "/api/v1/clients/phone", &[("Connection", "close")], b"").await;
    assert_eq!(client.status, 404, "{}", client.text());
    shop.publish_acked("orders/phone", false, "after n1 is back").await;
    while phone.next_publish().await.payload.as_ref() != b"after n1 is back" {}
}

#[tokio::test]
async fn a_node_that_loses_its_nats_server_catches_up_from_jetstream() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::cluster_of_three(dir.path()).await;
    let servers = nodes_with_three_replicas(&nats, &["n1", "n2"]).await;
    let (n1, n2) = (&servers[0], &servers[1]);
    let mut inbox = v4::connect(n2.mqtt_addr(), "inbox-on-n2", false).await;
    inbox.subscribe("tickets/#", v4::QoS::AtLeastOnce).await;
    let mut desk = v4::connect(n1.mqtt_addr(), "desk-on-n1", true).await;
    until_routed(&mut desk, &mut inbox, "tickets/probe").await;

    // n2's NATS server dies in the middle of a stream of acknowledged
    // tickets: n2 reconnects to another server, and what NATS could not
    // bring it meanwhile comes from JetStream.
    let election = std::time::Duration::from_secs(60);
    for i in 0..300 {
        if i == 50 {
            nats[1].kill().await;
        }
        desk.publish_acked_within(election, "tickets/new", false, format!("ticket {i}")).await;
    }
    let mut missing: std::collections::BTreeSet<String> = (0..300).map(|i| format!("ticket {i}")).collect();
    // The catch-up waits for JetStream too: one bound for all of it.
    within_for(election, "every acknowledged ticket on n2", async {
        while !missing.is_empty() {
            match inbox.events.recv().await {
                Some(Ok(v4::Incoming::Publish(p))) => {
                    missing.remove(&String::from_utf8_lossy(&p.payload).into_owned());
                }
                Some(Ok(_)) => {}
                other => panic!("n2's subscriber lost its connection: {other:?}"),
            }
        }
    })
    .await;
    let caught_up = n2.cluster().unwrap().durable.caught_up.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("n2 caught up on {caught_up} messages from JetStream");
    for server in servers {
        server.shutdown().await.unwrap();
    }
}
