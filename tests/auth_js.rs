//! Credentials from the JavaScript clients people use: MQTT.js with a signed
//! token as the MQTT password over `/mqtt`, and web/starling-client.js with
//! `token` over `/ws` (tests/js/auth_clients.mjs). The test command installs
//! Node and the npm packages.

mod common;
use common::*;
use tokio::process::Command;

#[tokio::test]
async fn mqttjs_and_the_starling_client_with_tokens() {
    let mut config = with_jwt(memory_config());
    config.auth.allow_anonymous = Some(false);
    let server = start(config).await;
    let good = token(json!({"sub": "js-user"}));
    let bad = token(json!({"sub": "js-user", "exp": starling::clock::now_ms() / 1000 - 10}));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/auth_clients.mjs");
    let ws = server.ws_addr();
    let out = within(
        "the JavaScript clients",
        Command::new("node")
            .arg(script)
            .arg(format!("ws://{ws}/mqtt"))
            .arg(format!("ws://{ws}/ws"))
            .arg(&good)
            .arg(&bad)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "MQTTJS OK hello with a token",
            "MQTTJS REFUSED 134",
            "STARLING OK hello from starling-client",
            "STARLING REFUSED 134"
        ]
    );
    server.shutdown().await.unwrap();
}
