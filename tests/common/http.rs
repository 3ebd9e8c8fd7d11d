//! Plain HTTP/1.1 over a loopback socket, for the files endpoint and other
//! HTTP answers of the WebSocket port: one request per connection (the
//! broker closes after each answer), the whole answer read to the end.

use super::within;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Lower-cased names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// `Upload-Offset` as a number.
    pub fn offset(&self) -> u64 {
        self.header("upload-offset").unwrap_or_else(|| panic!("no Upload-Offset in {self:?}")).parse().unwrap()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes the request head (with `Content-Length` when there is a body)
/// and returns the open socket, so a test can send the body in pieces.
pub async fn begin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    length: Option<usize>,
) -> TcpStream {
    let mut stream = within("connecting", TcpStream::connect(addr)).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads a whole answer (the broker closes the connection after it).
pub async fn finish(mut stream: TcpStream, method: &str) -> Reply {
    let mut raw = Vec::new();
    within("the HTTP answer", stream.read_to_end(&mut raw)).await.unwrap();
    parse(&raw, method == "HEAD")
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let length = (!body.is_empty() || matches!(method, "POST" | "PATCH")).then_some(body.len());
    let mut stream = begin(addr, method, path, headers, length).await;
    // A server that answers before reading the body closes early: ignore
    // the write error and read what it said.
    let _ = stream.write_all(body).await;
    finish(stream, method).await
}

pub fn parse(raw: &[u8], head_only: bool) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("no complete HTTP answer: {:?}", String::from_utf8_lossy(raw));
    });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if head_only {
        body.clear();
    } else if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}
