//! A webhook receiver for tests: a loopback HTTP server that answers every
//! request `200` (or what the test sets) and hands each request's headers
//! and body to the test. Test-only: the broker itself uses real HTTP crates.

use super::within;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// One request the hook received.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Call {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

pub struct Hook {
    pub addr: SocketAddr,
    calls: mpsc::UnboundedReceiver<Call>,
    /// The status the next requests get.
    status: Arc<AtomicU16>,
}

impl Hook {
    pub async fn start() -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, calls) = mpsc::unbounded_channel();
        let status = Arc::new(AtomicU16::new(200));
        let answer = status.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, answer) = (tx.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or("").to_string();
                        let mut headers = BTreeMap::new();
                        loop {
                            let mut h = String::new();
                            reader.read_line(&mut h).await.unwrap();
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((n, v)) = h.split_once(':') {
                                headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                        let mut body = vec![0; len];
                        reader.read_exact(&mut body).await.unwrap();
                        let status = answer.load(Ordering::SeqCst);
                        let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        let _ = tx.send(Call { path, headers, body });
                        if reader.get_mut().write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Hook { addr, calls, status }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer the next requests with `status`.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub async fn next(&mut self) -> Call {
        within("a webhook call", self.calls.recv()).await.expect("the hook runs")
    }

    /// A call that has already arrived, if any (no waiting).
    pub fn try_next(&mut self) -> Option<Call> {
        self.calls.try_recv().ok()
    }
}
