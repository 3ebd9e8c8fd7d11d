//! The small HTTP API on the WebSocket port (JSON, GET only).
//!
//! - `GET /api/v1/history?topic=T&after=ID&limit=N`: recent messages of a
//!   topic whose class keeps history (chat rooms), oldest first.
//! - `GET /api/v1/viewers?topic=T`: live subscribers of a room whose class
//!   counts viewers (live streams).
//!
//! Requests carry `Authorization: Bearer KEY` (an `[http] api_keys` entry:
//! full access) or `Bearer TOKEN` (a JWT: the token's user and its rules);
//! without one they are anonymous, allowed where anonymous clients are.
//! Reading a room needs the right to subscribe to it (403 otherwise).
//!
//! Owns: query parsing and the JSON shapes. Must never: change broker state.

use super::http::Request;
use crate::broker::{Broker, HistoryError, HistoryQuery};
use serde_json::json;

/// Status and JSON body for an `/api/...` request.
pub fn handle(request: &Request, broker: &Broker, local_listener: bool, peer: std::net::IpAddr) -> (u16, String) {
    if request.method != "GET" {
        return error(405, "the API is read-only: use GET");
    }
    // Who is asking: an admin key or a token in `Authorization: Bearer`, or
    // anonymous where anonymous clients are allowed.
    let Some(identity) = broker.security().authenticate_bearer(request.header("authorization"), local_listener, peer)
    else {
        return error(401, "send Authorization: Bearer with an API key or a token");
    };
    let query = request.query.as_deref().unwrap_or("");
    let param = |name: &str| {
        query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| percent_decode(v))
    };
    match request.path.as_str() {
        "/api/v1/history" => {
            let Some(topic) = param("topic") else { return error(400, "missing ?topic=") };
            let after = match param("after").map(|v| v.parse::<u64>()) {
                None => 0,
                Some(Ok(v)) => v,
                Some(Err(_)) => return error(400, "after must be a message id (a number)"),
            };
            let before = match param("before").map(|v| v.parse::<u64>()) {
                None => 0,
                Some(Ok(v)) => v,
                Some(Err(_)) => return error(400, "before must be a message id (a number)"),
            };
            let limit = match param("limit").map(|v| v.parse::<usize>()) {
                None => 0,
                Some(Ok(v)) => v,
                Some(Err(_)) => return error(400, "limit must be a number"),
            };
            let query = HistoryQuery { after_id: after, before_id: before, limit };
            match crate::client::history_for(broker, &identity, "", &topic, query) {
                Ok(page) => {
                    let mut messages: Vec<_> = page
                        .messages
                        .iter()
                        .map(|m| {
                            json!({
                                // A string: JSON numbers lose precision above 2^53.
                                "message_id": m.id.to_string(),
                                "timestamp_ms": m.timestamp_ms,
                                "payload": String::from_utf8_lossy(&m.payload),
                                "qos": m.qos as u8,
                                "sender": m.sender.as_deref().unwrap_or(""),
                                "sender_client_id": m.publisher.as_deref().unwrap_or(""),
                            })
                        })
                        .collect();
                    if before > 0 {
                        messages.reverse(); // newest first, as starling.v1's "load older"
                    }
                    let body = json!({ "topic": topic, "messages": messages, "has_more": page.has_more });
                    (200, body.to_string())
                }
                Err(HistoryError::NotKept) => {
                    error(404, &format!("{topic} keeps no history (its topic class has none)"))
                }
                Err(HistoryError::InvalidTopic) => error(400, &format!("{topic:?} is not a valid topic name")),
                Err(HistoryError::Denied) => error(403, &format!("not allowed to read {topic}")),
                Err(HistoryError::StoreFailed) => error(500, "the store could not be read"),
            }
        }
        "/api/v1/viewers" => {
            let Some(topic) = param("topic") else { return error(400, "missing ?topic=") };
            if !broker.may_subscribe(&identity, "", &topic) {
                return error(403, &format!("not allowed to read {topic}"));
            }
            (200, json!({ "topic": topic, "viewers": broker.viewer_count(&topic) }).to_string())
        }
        other => error(404, &format!("no API at {other}; there are /api/v1/history and /api/v1/viewers")),
    }
}

fn error(status: u16, message: &str) -> (u16, String) {
    (status, json!({ "error": message }).to_string())
}

/// `%2F` -> `/`, `+` -> space; invalid escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_escapes_and_keeps_bad_ones() {
        assert_eq!(percent_decode("chat%2Flobby"), "chat/lobby");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("live/r1/danmaku"), "live/r1/danmaku");
    }
}
