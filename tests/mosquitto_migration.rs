//! A Mosquitto setup moved over unchanged (issue 26, item 5): the password
//! file made by the real `mosquitto_passwd` and a Mosquitto ACL file, used as
//! `[auth] password_file` and `mosquitto_acl_file`, with the real
//! `mosquitto_pub` / `mosquitto_sub` logging in with them, and the ACL
//! (per-user topics, deny lines, patterns) enforced on every MQTT door.

mod common;

use common::process::{mosquitto, mosquitto_output, mosquitto_spawn};
use common::wire::{Wire, MQTT_DOORS};
use common::*;
use starling::mqtt::packet::QoS;
use std::process::Command;

const ACL: &str = "\
# Mosquitto ACL file, as Mosquitto reads it
user alice
topic readwrite chat/#
topic deny chat/secret

user bob
topic read chat/#

pattern write devices/%u/state
";

#[tokio::test]
async fn a_mosquitto_password_file_and_acl_file_work_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let made = |args: &[&str]| {
        let out = Command::new("mosquitto_passwd").args(args).output().expect("mosquitto_passwd runs");
        assert!(out.status.success(), "mosquitto_passwd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    made(&["-c", "-b", passwd.to_str().unwrap(), "alice", "wonderland"]);
    made(&["-b", passwd.to_str().unwrap(), "bob", "builder"]);
    assert!(std::fs::read_to_string(&passwd).unwrap().contains("alice:$7$"), "Mosquitto 2 hashes");
    std::fs::write(dir.path().join("acl"), ACL).unwrap();
    let mut config = memory_config();
    config.auth.chain = vec!["password_file".into()];
    config.auth.password_file = Some(passwd);
    config.auth.mosquitto_acl_file = Some(dir.path().join("acl"));
    let server = start(config).await;
    let (m, w) = (server.mqtt_addr(), server.ws_addr());
    let port = m.port().to_string();

    // The real clients log in with the Mosquitto passwords.
    let bob = mosquitto_spawn(
        "mosquitto_sub",
        &["-h", "127.0.0.1", "-p", &port, "-u", "bob", "-P", "builder", "-i", "bob-sub", "-t", "chat/#", "-C", "2"],
    );
    wait_until("bob's subscription", || {
        server.broker().session("bob-sub").is_some_and(|s| s.has_subscription("chat/#"))
    })
    .await;
    let alice = ["-h", "127.0.0.1", "-p", &port, "-u", "alice", "-P", "wonderland", "-q", "1"];
    // chat/secret is denied to alice (3.1.1: acknowledged and dropped).
    mosquitto("mosquitto_pub", &[&alice[..], &["-t", "chat/secret", "-m", "leak"]].concat()).await;
    mosquitto("mosquitto_pub", &[&alice[..], &["-t", "chat/room", "-m", "hi"]].concat()).await;
    mosquitto("mosquitto_pub", &[&alice[..], &["-t", "chat/room", "-m", "bye"]].concat()).await;
    assert_eq!(mosquitto_output(bob).await, "hi\nbye\n");
    // A wrong password is refused.
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "alice", "-P", "wrong", "-t", "chat/room", "-m", "x"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "a wrong password got in");

    // The ACL on every door: bob reads chat but may not write it; the
    // pattern lets each user write its own device's state only.
    for door in MQTT_DOORS {
        let denied = if door.v5() { Some(0x87) } else { Some(0x00) };
        let mut bob = Wire::accepted(door, m, w, &format!("bob-{door:?}"), Some("bob"), Some("builder")).await;
        assert_eq!(bob.subscribe("chat/room", QoS::AtLeastOnce).await, 1, "{door:?}");
        assert!(bob.subscribe("other/#", QoS::AtLeastOnce).await >= 0x80, "{door:?}: nothing grants it");
        assert_eq!(bob.publish("chat/room", QoS::AtLeastOnce, false, "x").await, denied, "{door:?}");
        let allowed = if door.v5() { Some(0x10) } else { Some(0x00) };
        assert_eq!(bob.publish("devices/bob/state", QoS::AtLeastOnce, false, "on").await, allowed, "{door:?}");
        assert_eq!(bob.publish("devices/alice/state", QoS::AtLeastOnce, false, "on").await, denied, "{door:?}");
        let mut alice = Wire::accepted(door, m, w, &format!("alice-{door:?}"), Some("alice"), Some("wonderland")).await;
        assert!(alice.subscribe("chat/secret", QoS::AtLeastOnce).await >= 0x80, "{door:?}: the deny line");
    }
    server.shutdown().await.unwrap();
}
