//! The NATS configuration shipped for a cluster (docs/cluster/nats-server.conf;
//! issue 25, item 2), run for real: starling's nodes work under it (routing,
//! JetStream acknowledgements, a session handed over between nodes), and it
//! keeps everyone else off the cluster's subjects: an application user of
//! the same NATS cannot inject a message or read the cluster's traffic, an
//! anonymous client is refused, and one node's user cannot subscribe to
//! another node's handovers.

mod common;

use common::nats::{node_config, until_routed, NatsServer};
use common::*;
use futures_util::StreamExt;
use starling::server::Server;
use std::path::Path;
use std::time::Duration;

fn shipped_config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cluster/nats-server.conf")
}

async fn node(nats: &NatsServer, name: &str) -> Server {
    let mut config = node_config(nats, name);
    let cluster = config.cluster.as_mut().unwrap();
    cluster.user = Some(name.into());
    cluster.password = Some(format!("change-me-{name}"));
    let server = start(config).await;
    let cluster = server.cluster().unwrap().clone();
    wait_until("JetStream under the shipped permissions", || cluster.durable.is_ready()).await;
    server
}

/// A NATS client of `user` (or anonymous) that reports the server's errors.
async fn nats_client(
    nats: &NatsServer,
    user: Option<(&str, &str)>,
) -> (Result<async_nats::Client, async_nats::ConnectError>, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (errors_tx, errors) = tokio::sync::mpsc::unbounded_channel();
    let mut options = async_nats::ConnectOptions::new().event_callback(move |event| {
        let errors_tx = errors_tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = errors_tx.send(e.to_string());
            }
        }
    });
    if let Some((user, password)) = user {
        options = options.user_and_password(user.into(), password.into());
    }
    (options.connect(nats.url()).await, errors)
}

#[tokio::test]
async fn the_shipped_nats_permissions_let_the_nodes_work_and_keep_others_out() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_with_config(dir.path(), &shipped_config()).await;
    let (n1, n2) = (node(&nats, "n1").await, node(&nats, "n2").await);

    // The cluster works: routing, and a persistent session moving n1 -> n2.
    let mut phone = v4::connect(n1.mqtt_addr(), "phone", false).await;
    phone.subscribe("inbox/phone", v4::QoS::AtLeastOnce).await;
    let mut sender = v4::connect(n2.mqtt_addr(), "sender", true).await;
    until_routed(&mut sender, &mut phone, "inbox/phone").await;
    phone.disconnect().await;
    sender.publish_acked("inbox/phone", false, "while away").await;
    let mut phone = v4::connect(n2.mqtt_addr(), "phone", false).await;
    common::nats::skip_until(&mut phone, b"while away").await;

    // An application user of the same NATS: its publishes on the cluster's
    // subjects never reach the cluster, and it hears none of its traffic.
    let (app, _) = nats_client(&nats, Some(("app", "change-me-app"))).await;
    let app = app.expect("the app user connects");
    let mut overheard = app.subscribe("starling.>").await.unwrap();
    app.publish("starling.m.0.inbox.phone", "injected".into()).await.unwrap();
    app.publish("starling.m.1.inbox.phone", "injected".into()).await.unwrap();
    app.flush().await.unwrap();
    sender.publish_acked("inbox/phone", false, "genuine").await;
    common::nats::skip_until(&mut phone, b"genuine").await;
    sender.publish_acked("inbox/phone", false, "genuine 2").await;
    let next = phone.next_publish().await;
    assert_eq!(next.payload.as_ref(), b"genuine 2", "nothing injected came between");
    // It hears its own two publishes (in its own account), nothing of the cluster's.
    while let Ok(Some(heard)) = tokio::time::timeout(Duration::from_millis(300), overheard.next()).await {
        assert_eq!(heard.payload.as_ref(), b"injected", "the app heard the cluster: {heard:?}");
    }

    // Anonymous: refused.
    let (anonymous, _) = nats_client(&nats, None).await;
    match anonymous {
        Err(e) => assert!(e.to_string().to_lowercase().contains("authoriz"), "{e}"),
        Ok(client) => {
            // async-nats may report the refusal on the first round trip.
            let flushed = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
            assert!(!matches!(flushed, Ok(Ok(()))), "an anonymous client was let in");
        }
    }

    // n1's user may not read n2's handovers (nor its replies).
    let (as_n1, mut errors) = nats_client(&nats, Some(("n1", "change-me-n1"))).await;
    let as_n1 = as_n1.expect("n1's user connects");
    let _snoop = as_n1.subscribe("starling.c.handover.n2").await.unwrap();
    let _replies = as_n1.subscribe("_INBOX.starling.n2.>").await.unwrap();
    as_n1.flush().await.unwrap();
    let mut violations = Vec::new();
    within("two permission violations", async {
        while violations.len() < 2 {
            violations.push(errors.recv().await.unwrap());
        }
    })
    .await;
    assert!(violations.iter().all(|v| v.to_lowercase().contains("permissions violation")), "{violations:?}");
    assert!(violations.iter().any(|v| v.contains("starling.c.handover.n2")), "{violations:?}");

    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
}
