//! Reverse proxies on the way in: the PROXY protocol (HAProxy's v1 and v2,
//! read by `ppp`) on listeners with `proxy_protocol = true`, and
//! `Forwarded` / `X-Forwarded-For` on the WebSocket port. Both are believed
//! only from `[net] trusted_proxies`; the client's address they name then
//! stands for the connection's (per-IP limits, logs, anonymous admission,
//! file ownership).
//!
//! Owns: the trusted networks, reading a PROXY header off a new
//! connection, and picking the client out of forwarding headers.
//! Must never: believe a peer that is not a listed proxy, or consume a byte
//! past the PROXY header (the client's protocol starts there).

use crate::config::NetConfig;
use ppp::{HeaderResult, PartialResult};
use std::net::{IpAddr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// `[net] trusted_proxies`, parsed.
#[derive(Debug, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// The configured proxies (entries that do not parse were refused when
    /// the configuration was validated).
    pub fn from_config(config: &NetConfig) -> TrustedProxies {
        TrustedProxies(
            config.trusted_proxies.iter().filter_map(|e| crate::config::parse_trusted_proxy(e).ok()).collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical(); // ::ffff:10.0.0.1 is 10.0.0.1
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// The longest PROXY header read: the spec's receive buffer for v2 with
/// TLVs (a v1 header is at most 107 bytes).
const MAX_HEADER: usize = 536;

/// What the bytes at the start of a connection are.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A whole header of `len` bytes; `client` is `None` when the proxy
    /// speaks for itself (v2 `LOCAL`, v1 `UNKNOWN`: its health checks).
    Complete {
        len: usize,
        client: Option<SocketAddr>,
    },
    Incomplete,
    Invalid(String),
}

fn parse(bytes: &[u8]) -> Parsed {
    use ppp::{v1, v2};
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(header)) => Parsed::Complete {
            len: header.header.len(),
            client: match header.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(header)) => Parsed::Complete {
            len: header.len(),
            client: match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                (_, v2::Addresses::IPv6(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                (_, _) => None,
            },
        },
        result if result.is_incomplete() => Parsed::Incomplete,
        HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("no PROXY protocol header ({e})")),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("no PROXY protocol header ({e})")),
    }
}

/// Reads the PROXY header that opens `stream` and nothing more. Returns the
/// client's address, or `None` when the proxy speaks for itself. The caller
/// bounds the wait (the connect timeout).
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    let mut buf = [0u8; MAX_HEADER];
    let io = |e: std::io::Error| format!("reading the PROXY header: {e}");
    // A proxy sends the header in one segment, usually with the client's
    // first bytes: peek, then take exactly the header.
    let n = stream.peek(&mut buf).await.map_err(io)?;
    if n == 0 {
        return Err("closed before a PROXY header".into());
    }
    match parse(&buf[..n]) {
        Parsed::Complete { len, client } => {
            stream.read_exact(&mut buf[..len]).await.map_err(io)?;
            return Ok(client);
        }
        Parsed::Invalid(why) => return Err(why),
        Parsed::Incomplete => {}
    }
    // The header came in pieces: a byte at a time, so that nothing past
    // it is taken (peeking again would spin: the bytes are still there).
    let mut len = 0;
    while len < MAX_HEADER {
        stream.read_exact(&mut buf[len..len + 1]).await.map_err(io)?;
        len += 1;
        match parse(&buf[..len]) {
            Parsed::Complete { client, .. } => return Ok(client),
            Parsed::Invalid(why) => return Err(why),
            Parsed::Incomplete => {}
        }
    }
    Err(format!("a PROXY header longer than {MAX_HEADER} bytes"))
}

/// The client named by the forwarding headers of a request that came from
/// a trusted proxy: walking the chain from the right (each proxy appends
/// the address it saw), the first address that is not a trusted proxy;
/// entries left of it were written by the client and prove nothing.
/// `Forwarded` (RFC 7239) wins over `X-Forwarded-For`. `None`: no header,
/// or an entry that is not an address (`unknown`, an obfuscated name).
pub fn forwarded_client(
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let chain: Vec<Option<IpAddr>> = match (forwarded, x_forwarded_for) {
        (Some(forwarded), _) => forwarded
            .split(',')
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.eq_ignore_ascii_case("for").then(|| parse_node(value))
                })?
            })
            .collect(),
        (None, Some(xff)) => xff.split(',').map(parse_node).collect(),
        (None, None) => return None,
    };
    let mut leftmost = None;
    for hop in chain.into_iter().rev() {
        let ip = hop?;
        if !trusted.contains(ip) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    // Every hop is a proxy: the first one is the client (on a proxy's host).
    leftmost
}

/// `192.0.2.1`, `"192.0.2.1:4711"`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[').and_then(|rest| rest.split(']').next()).and_then(|ip| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::from_config(&NetConfig { trusted_proxies: entries.iter().map(|e| e.to_string()).collect() })
    }

    #[test]
    fn v1_and_v2_headers_give_the_client_and_their_length() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 1883\r\n\x10\x0c";
        assert_eq!(
            parse(v1),
            Parsed::Complete { len: v1.len() - 2, client: Some("203.0.113.7:51000".parse().unwrap()) }
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parsed::Complete { len: 15, client: None });
        assert_eq!(parse(b"PROXY TCP4 203.0.113.7 10.0"), Parsed::Incomplete);
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x07, 0x5b]);
        assert_eq!(parse(&v2), Parsed::Complete { len: 28, client: Some("198.51.100.9:8080".parse().unwrap()) });
        assert_eq!(parse(&v2[..20]), Parsed::Incomplete);
        assert!(matches!(parse(b"\x10\x0c\x00\x04MQTT"), Parsed::Invalid(_)), "an MQTT CONNECT is not a header");
    }

    #[test]
    fn the_client_is_the_rightmost_hop_that_is_not_a_proxy() {
        let proxies = trusted(&["10.0.0.0/8", "::1"]);
        let client = |f: Option<&str>, x: Option<&str>| forwarded_client(f, x, &proxies);
        assert_eq!(client(None, Some("203.0.113.7")), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(
            client(None, Some("6.6.6.6, 203.0.113.7, 10.1.2.3")),
            Some("203.0.113.7".parse().unwrap()),
            "a client's forged first entry is not believed"
        );
        assert_eq!(
            client(Some("for=6.6.6.6, for=\"[2001:db8::5]:4711\";proto=https"), None),
            Some("2001:db8::5".parse().unwrap())
        );
        assert_eq!(client(Some("for=unknown"), None), None);
        assert_eq!(client(None, Some("10.0.0.9")), Some("10.0.0.9".parse().unwrap()), "only proxies: the first");
        assert_eq!(client(None, None), None);
        assert!(proxies.contains("::ffff:10.0.0.1".parse().unwrap()), "an IPv4-mapped address");
    }
}
