//! `[net]`: who the broker trusts to tell it a client's real address
//! (reverse proxies and load balancers on the way in).
//!
//! Owns: the shape, defaults and validation of the section.
//! Must never: decide anything per connection (`crate::net::proxy` does).

use serde::Deserialize;

/// `[net]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Addresses (`10.0.0.5`) and networks (`10.0.0.0/8`, `::1/128`) of
    /// the proxies in front of the broker. Only a connection from one of
    /// them may open with a PROXY protocol header (on a listener with
    /// `proxy_protocol = true`) or name a client in `Forwarded` /
    /// `X-Forwarded-For` (on the WebSocket port). Empty: nobody.
    pub trusted_proxies: Vec<String>,
}

/// One `trusted_proxies` entry: a network, or one address as its own /32 or /128.
pub fn parse_trusted_proxy(entry: &str) -> Result<ipnet::IpNet, String> {
    let entry = entry.trim();
    entry
        .parse::<ipnet::IpNet>()
        .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("net.trusted_proxies: {entry:?} is neither an address nor a network (10.0.0.0/8)"))
}

impl NetConfig {
    pub(super) fn validate(&self, proxy_listeners: &[&str], problems: &mut Vec<String>) {
        for entry in &self.trusted_proxies {
            if let Err(why) = parse_trusted_proxy(entry) {
                problems.push(why);
            }
        }
        if self.trusted_proxies.is_empty() {
            for key in proxy_listeners {
                problems.push(format!(
                    "{key} = true but net.trusted_proxies is empty: no proxy could connect; list your proxies' addresses"
                ));
            }
        }
    }
}

/// Whether `url` is plain `http://` to a host that is not loopback (what a
/// webhook or a key set must not use without saying so).
pub(super) fn plain_http_off_loopback(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    !(host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_networks_are_accepted_and_garbage_is_named() {
        assert_eq!(parse_trusted_proxy("10.0.0.5").unwrap().to_string(), "10.0.0.5/32");
        assert_eq!(parse_trusted_proxy("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_trusted_proxy("192.168.0.0/16").unwrap().to_string(), "192.168.0.0/16");
        assert!(parse_trusted_proxy("proxy.local").unwrap_err().contains("proxy.local"));
        let mut problems = Vec::new();
        NetConfig::default().validate(&["mqtt.proxy_protocol"], &mut problems);
        assert!(problems[0].contains("mqtt.proxy_protocol"), "{problems:?}");
    }
}
