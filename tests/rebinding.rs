//! DNS rebinding (issue 24, item 4): a page on `evil.test` whose name is
//! rebound to 127.0.0.1 reaches the broker with `Host: evil.test`. The admin
//! listener and the WebSocket port answer 421 to a `Host` that is not an IP
//! address, `localhost` or listed in `[http] allowed_hosts` /
//! `[websocket] allowed_hosts`, so such a page gets neither the keyless
//! loopback admin API nor a WebSocket (even with `Origin` equal to `Host`).

mod common;
use common::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` (a request without its final blank line) and returns the status line.
async fn status_line(addr: SocketAddr, head: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("{head}\r\n").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    within("an HTTP answer", async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_string()
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n")
}

fn upgrade(path: &str, host: &str, protocol: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n"
    )
}

#[tokio::test]
async fn a_rebound_name_gets_421_on_the_admin_listener_and_the_websocket_port() {
    let server = start(memory_config()).await;
    let (admin, ws) = (server.admin_addr(), server.ws_addr());
    for path in ["/metrics", "/api/v1/clients", "/"] {
        let line = status_line(admin, &get(path, &format!("evil.test:{}", admin.port()))).await;
        assert!(line.contains(" 421 "), "admin {path}: {line}");
    }
    assert!(status_line(admin, &get("/metrics", &admin.to_string())).await.contains(" 200 "));
    assert!(status_line(admin, &get("/metrics", &format!("localhost:{}", admin.port()))).await.contains(" 200 "));
    let evil = format!("evil.test:{}", ws.port());
    for (path, protocol) in [("/mqtt", "mqtt"), ("/ws", "starling.v1")] {
        let line = status_line(ws, &upgrade(path, &evil, protocol)).await;
        assert!(line.contains(" 421 "), "{path}: {line}");
        let line = status_line(ws, &upgrade(path, &ws.to_string(), protocol)).await;
        assert!(line.contains(" 101 "), "{path} by address: {line}");
    }
    assert!(status_line(ws, &get("/", &evil)).await.contains(" 421 "), "the demo page");
    server.shutdown().await.unwrap();

    // A name the operator lists is served.
    let mut config = memory_config();
    config.http.allowed_hosts = vec!["broker.example".into()];
    config.websocket.allowed_hosts = vec!["broker.example".into()];
    let server = start(config).await;
    let (admin, ws) = (server.admin_addr(), server.ws_addr());
    let line = status_line(admin, &get("/metrics", &format!("broker.example:{}", admin.port()))).await;
    assert!(line.contains(" 200 "), "{line}");
    let line = status_line(ws, &upgrade("/mqtt", &format!("broker.example:{}", ws.port()), "mqtt")).await;
    assert!(line.contains(" 101 "), "{line}");
    assert!(status_line(ws, &upgrade("/mqtt", "evil.test", "mqtt")).await.contains(" 421 "));
    server.shutdown().await.unwrap();
}
