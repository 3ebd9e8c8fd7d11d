//! Interoperability with the real mosquitto command-line clients (installed
//! by the test command), MQTT 3.1.1 and 5.

mod common;
use common::process::{mosquitto, mosquitto_output, mosquitto_spawn};
use common::*;
use std::net::SocketAddr;

/// Waits until `client_id` has a session with at least one subscription.
async fn subscribed(server: &starling::server::Server, client_id: &str) {
    within(&format!("{client_id} to subscribe"), async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
        loop {
            tick.tick().await;
            if server.broker().session(client_id).is_some_and(|s| s.is_connected() && !s.subscriptions().is_empty()) {
                return;
            }
        }
    })
    .await;
}

fn port(addr: SocketAddr) -> String {
    addr.port().to_string()
}

#[tokio::test]
async fn mosquitto_pub_to_mosquitto_sub_every_qos_and_version() {
    let server = start_memory().await;
    let p = port(server.mqtt_addr());
    for version in ["mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            let id = format!("sub-{version}-{qos}");
            let topic = format!("interop/{version}/{qos}");
            let sub = mosquitto_spawn(
                "mosquitto_sub",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &p,
                    "-V",
                    version,
                    "-i",
                    &id,
                    "-t",
                    &topic,
                    "-q",
                    qos,
                    "-C",
                    "1",
                    "-W",
                    "10",
                ],
            );
            subscribed(&server, &id).await;
            mosquitto(
                "mosquitto_pub",
                &["-h", "127.0.0.1", "-p", &p, "-V", version, "-t", &topic, "-q", qos, "-m", "hello"],
            )
            .await;
            assert_eq!(mosquitto_output(sub).await.trim(), "hello", "{version} QoS {qos}");
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mosquitto_retained_and_wildcards() {
    let server = start_memory().await;
    let p = port(server.mqtt_addr());
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("site/{version}/temp");
        mosquitto(
            "mosquitto_pub",
            &["-h", "127.0.0.1", "-p", &p, "-V", version, "-t", &topic, "-q", "1", "-r", "-m", "21.5"],
        )
        .await;
        let out = mosquitto(
            "mosquitto_sub",
            &["-h", "127.0.0.1", "-p", &p, "-V", version, "-t", "site/+/temp", "-C", "1", "-W", "10", "-v"],
        )
        .await;
        // Both retained messages match; the first one is enough to prove wildcard + retained.
        assert!(out.trim().starts_with("site/") && out.trim().ends_with("21.5"), "{out}");
    }
    // Clearing with an empty retained message (QoS 1: mosquitto_pub waits for the broker).
    mosquitto("mosquitto_pub", &["-h", "127.0.0.1", "-p", &p, "-t", "site/mqttv311/temp", "-q", "1", "-r", "-n"]).await;
    mosquitto("mosquitto_pub", &["-h", "127.0.0.1", "-p", &p, "-t", "site/mqttv5/temp", "-q", "1", "-r", "-n"]).await;
    assert_eq!(server.broker().retained_count(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mosquitto_persistent_session_gets_queued_messages() {
    let server = start_memory().await;
    let p = port(server.mqtt_addr());
    for (version, session_args) in [("mqttv311", vec!["-c"]), ("mqttv5", vec!["-c", "-x", "3600"])] {
        let id = format!("persist-{version}");
        let topic = format!("queue/{version}");
        // Subscribe with a persistent session, then leave after the subscription is made.
        let mut args = vec!["-h", "127.0.0.1", "-p", &p, "-V", version, "-i", &id, "-t", &topic, "-q", "1", "-E"];
        args.extend(&session_args);
        mosquitto("mosquitto_sub", &args).await;
        for n in ["1", "2", "3"] {
            mosquitto("mosquitto_pub", &["-h", "127.0.0.1", "-p", &p, "-V", version, "-t", &topic, "-q", "1", "-m", n])
                .await;
        }
        let mut args =
            vec!["-h", "127.0.0.1", "-p", &p, "-V", version, "-i", &id, "-t", &topic, "-q", "1", "-C", "3", "-W", "10"];
        args.extend(&session_args);
        let out = mosquitto("mosquitto_sub", &args).await;
        assert_eq!(out.lines().collect::<Vec<_>>(), vec!["1", "2", "3"], "{version}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mosquitto_pub_reaches_rumqttc_subscribers() {
    let server = start_memory().await;
    let addr = server.mqtt_addr();
    let mut sub4 = v4::connect(addr, "r4", true).await;
    sub4.subscribe("mixed/#", v4::QoS::ExactlyOnce).await;
    let mut sub5 = v5::connect(addr, "r5").await;
    sub5.subscribe("mixed/#", v5::QoS::ExactlyOnce).await;
    mosquitto(
        "mosquitto_pub",
        &["-h", "127.0.0.1", "-p", &port(addr), "-V", "mqttv5", "-t", "mixed/a", "-q", "2", "-m", "x"],
    )
    .await;
    assert_eq!(sub4.next_publish().await.payload, "x");
    assert_eq!(sub5.next_publish().await.payload, "x");
    server.shutdown().await.unwrap();
}
