//! History both ways (issue 27, item 3): the latest page, "load older"
//! pages with `before_message_id` (newest first, stable while new messages
//! arrive), catch-up pages with `after_message_id`, `has_more`, over
//! starling.v1 and `GET /api/v1/history`, on the sled and the memory store.

mod common;

use common::*;
use starling::server::Server;
use starling::wsproto::client::Client as ProtoClient;
use starling::wsproto::pb::{self, frame::Body};
use starling::wsproto::Inbound;

async fn page(app: &mut ProtoClient, after: u64, before: u64, limit: u32) -> (Vec<String>, Vec<u64>, bool) {
    let request = pb::HistoryRequest {
        request_id: 1,
        topic: "chat/room1".into(),
        after_message_id: after,
        before_message_id: before,
        limit,
    };
    app.send(Body::HistoryRequest(request)).await.unwrap();
    let reply = within("a history reply", async {
        loop {
            if let Inbound::Frame(Body::HistoryReply(r)) = app.recv().await.unwrap() {
                return r;
            }
        }
    })
    .await;
    assert_eq!(reply.reason_code, 0);
    let texts = reply.messages.iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect();
    let ids = reply.messages.iter().map(|p| p.message_id).collect();
    (texts, ids, reply.has_more)
}

fn texts(range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

async fn pages_both_ways(server: Server) {
    // Ten messages per writer: the chat class allows a sender a burst of 20.
    let mut writers = Vec::new();
    for n in 0..3 {
        writers.push(v5::connect(server.mqtt_addr(), &format!("writer{n}")).await);
    }
    for i in 1..=25 {
        writers[(i as usize - 1) / 10].publish_acked("chat/room1", false, format!("m{i}")).await;
    }
    let connect = pb::Connect { client_id: "reader".into(), clean_start: true, ..Default::default() };
    let url = format!("ws://{}/ws", server.ws_addr());
    let (mut app, _) = within("connect", ProtoClient::connect(&url, connect)).await.unwrap();

    // The latest page, oldest first; more lie before it.
    let (latest, ids, more) = page(&mut app, 0, 0, 10).await;
    assert_eq!((latest, more), (texts(16..=25), true));
    // New messages arrive while the reader scrolls back: pages stay put.
    for i in 26..=30 {
        writers[2].publish_acked("chat/room1", false, format!("m{i}")).await;
    }
    let (older, older_ids, more) = page(&mut app, 0, ids[0], 10).await;
    assert_eq!((older, more), (texts((6..=15).rev()), true), "newest first below the id");
    let (oldest, _, more) = page(&mut app, 0, *older_ids.last().unwrap(), 10).await;
    assert_eq!((oldest, more), (texts((1..=5).rev()), false), "the beginning: nothing more");

    // Catching up after a reconnect: the newest `limit` above the id, and
    // whether some were skipped.
    let (caught_up, _, skipped) = page(&mut app, ids[4], 0, 3).await; // after m20
    assert_eq!((caught_up, skipped), (texts(28..=30), true));
    let (caught_up, _, skipped) = page(&mut app, ids[9], 0, 10).await; // after m25
    assert_eq!((caught_up, skipped), (texts(26..=30), false));

    // The HTTP API: the same pages, and the sender of each message.
    let path = format!("/api/v1/history?topic=chat%2Froom1&before={}&limit=3", ids[0]);
    let reply = common::http::request(server.ws_addr(), "GET", &path, &[("Connection", "close")], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body: serde_json::Value = serde_json::from_str(&reply.text()).unwrap();
    let payloads: Vec<&str> =
        body["messages"].as_array().unwrap().iter().map(|m| m["payload"].as_str().unwrap()).collect();
    assert_eq!(payloads, ["m15", "m14", "m13"]);
    assert_eq!(body["has_more"], true);
    assert_eq!(body["messages"][0]["sender_client_id"], "writer1");
    let bad = common::http::request(
        server.ws_addr(),
        "GET",
        "/api/v1/history?topic=chat%2Froom1&before=x",
        &[("Connection", "close")],
        b"",
    )
    .await;
    assert_eq!(bad.status, 400);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn history_pages_both_ways_on_the_memory_store() {
    pages_both_ways(start(with_classes(memory_config())).await).await;
}

#[tokio::test]
async fn history_pages_both_ways_on_the_sled_store() {
    let dir = tempfile::tempdir().unwrap();
    pages_both_ways(start(with_classes(sled_config(dir.path()))).await).await;
}
