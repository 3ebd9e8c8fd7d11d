//! MQTT topics and filters as NATS subjects, reversibly.
//!
//! A message on topic `a/b/c` travels as `PREFIX.m.K.a.b.c`: one NATS token
//! per MQTT level, after a kind token `K`: `0` for a message at QoS 0 (core
//! NATS only) and `1` for QoS 1 or 2, which the JetStream stream
//! `PREFIX_msgs` keeps ([`DURABLE_MESSAGES`]). A chat message is also kept
//! under `PREFIX.h.a.b.c` (the history stream). A level is escaped when NATS
//! could not carry it as a token of its own: `~` starts an escape, and `.`,
//! space, tab, CR, LF, `*`, `>`, `~`, a leading `$` and every byte outside
//! printable ASCII become `~XX` (hex of the UTF-8 byte); an empty level is
//! the token `~`. No escaped token is `*` or `>`, so a topic never reads as
//! a wildcard, and decoding gives the topic back exactly.
//!
//! A filter maps level by level the same way, with `+` as `*` and a trailing
//! `#` as `>`, after `PREFIX.m.*` (either kind). MQTT's `a/#` also matches
//! `a` itself, which NATS's `a.>` does not: such a filter needs two
//! subjects, [`filter_subjects`] gives both.
//!
//! Owns: the mapping (pure; property-tested). Must never: decide interest
//! or route.

/// The subjects (after the prefix) the durable-message stream keeps.
pub const DURABLE_MESSAGES: &str = "m.1.>";
/// The subjects (after the prefix) the history stream keeps.
pub const HISTORY: &str = "h.>";

/// The subject of a message published to `topic`; `durable` for QoS 1 and 2.
pub fn topic_subject(prefix: &str, topic: &str, durable: bool) -> String {
    subject_of(prefix, if durable { ".m.1" } else { ".m.0" }, topic)
}

/// The subject under which the history stream keeps a message of `topic`.
pub fn history_subject(prefix: &str, topic: &str) -> String {
    subject_of(prefix, ".h", topic)
}

fn subject_of(prefix: &str, kind: &str, topic: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + kind.len() + 1 + topic.len());
    subject.push_str(prefix);
    subject.push_str(kind);
    for level in topic.split('/') {
        subject.push('.');
        escape_level(level, &mut subject);
    }
    subject
}

/// The subjects a node subscribes to for one MQTT filter (without any
/// `$share/group/` prefix): one, or two for a filter ending in `/#`.
pub fn filter_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let mut subject = format!("{prefix}.m.*");
    let levels: Vec<&str> = filter.split('/').collect();
    let mut parent = None;
    for (i, level) in levels.iter().enumerate() {
        if *level == "#" {
            // `a/#` matches `a` too; `#` alone matches every topic.
            if i > 0 {
                parent = Some(subject.clone());
            }
            subject.push_str(".>");
            break;
        }
        subject.push('.');
        if *level == "+" {
            subject.push('*');
        } else {
            escape_level(level, &mut subject);
        }
    }
    parent.into_iter().chain(std::iter::once(subject)).collect()
}

/// The key of `topic` in a JetStream key-value bucket (the retained
/// messages): base64url, which NATS keys can carry whatever the topic.
pub fn topic_key(topic: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(topic)
}

/// The key of a client id in the sessions bucket.
pub fn client_key(client_id: &str) -> String {
    topic_key(client_id)
}

/// The topic a [`topic_key`] names.
pub fn key_topic(key: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(key).ok()?;
    String::from_utf8(bytes).ok()
}

/// The NATS queue group of the shared subscription `$share/{group}/{filter}`:
/// MQTT makes the group and the filter together one shared subscription.
pub fn queue_group(prefix: &str, group: &str, filter: &str) -> String {
    let mut queue = format!("{prefix}.share.");
    escape_level(group, &mut queue);
    for level in filter.split('/') {
        queue.push('.');
        match level {
            "+" => queue.push_str("~2B"),
            "#" => queue.push_str("~23"),
            level => escape_level(level, &mut queue),
        }
    }
    queue
}

/// The topic a message or history subject carries; `None` when it is not
/// one of ours.
pub fn subject_topic(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?;
    let rest =
        rest.strip_prefix(".m.0.").or_else(|| rest.strip_prefix(".m.1.")).or_else(|| rest.strip_prefix(".h."))?;
    let mut topic = String::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            topic.push('/');
        }
        unescape_level(token, &mut topic)?;
    }
    Some(topic)
}

fn escape_level(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('~');
        return;
    }
    for (i, byte) in level.bytes().enumerate() {
        let plain = byte.is_ascii_graphic() && !matches!(byte, b'.' | b'*' | b'>' | b'~') && !(i == 0 && byte == b'$');
        if plain {
            out.push(byte as char);
        } else {
            out.push_str(&format!("~{byte:02X}"));
        }
    }
}

fn unescape_level(token: &str, out: &mut String) -> Option<()> {
    if token == "~" {
        return Some(());
    }
    let bytes = token.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'~' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    out.push_str(std::str::from_utf8(&decoded).ok()?);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_topics_read_naturally() {
        assert_eq!(topic_subject("stl", "chat/room1", false), "stl.m.0.chat.room1");
        assert_eq!(topic_subject("stl", "chat/room1", true), "stl.m.1.chat.room1");
        assert_eq!(history_subject("stl", "chat/room1"), "stl.h.chat.room1");
        assert_eq!(topic_subject("stl", "a//b/", false), "stl.m.0.a.~.b.~");
        assert_eq!(topic_subject("stl", "v1.2/x y", false), "stl.m.0.v1~2E2.x~20y");
        assert_eq!(topic_subject("stl", "$SYS/x", false), "stl.m.0.~24SYS.x");
        assert_eq!(topic_subject("stl", "a$/*/>", false), "stl.m.0.a$.~2A.~3E");
        assert_eq!(topic_subject("stl", "é", false), "stl.m.0.~C3~A9");
    }

    #[test]
    fn filters_become_wildcard_subjects() {
        assert_eq!(filter_subjects("stl", "chat/+"), ["stl.m.*.chat.*"]);
        assert_eq!(filter_subjects("stl", "fleet/+/location"), ["stl.m.*.fleet.*.location"]);
        assert_eq!(filter_subjects("stl", "chat/#"), ["stl.m.*.chat", "stl.m.*.chat.>"]);
        assert_eq!(filter_subjects("stl", "#"), ["stl.m.*.>"]);
        assert_eq!(filter_subjects("stl", "a/b"), ["stl.m.*.a.b"]);
    }

    #[test]
    fn foreign_subjects_are_not_topics() {
        assert_eq!(subject_topic("stl", "other.m.0.a"), None);
        assert_eq!(subject_topic("stl", "stl.m.2.a"), None);
        assert_eq!(subject_topic("stl", "stl.m.0.a~Z"), None);
        assert_eq!(subject_topic("stl", "stl.m.0.a~4"), None);
        assert_eq!(subject_topic("stl", "stl.m.1.a.~"), Some("a/".into()));
        assert_eq!(subject_topic("stl", "stl.h.a.~"), Some("a/".into()));
    }

    #[test]
    fn keys_name_any_topic_and_read_back() {
        for topic in ["a/b", "$SYS/x", "é/ /.*>", ""] {
            let key = topic_key(topic);
            assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{key}");
            assert_eq!(key_topic(&key).as_deref(), Some(topic));
        }
    }

    /// NATS's own matching: `*` one token, `>` one or more at the end.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), subject.split('.').collect());
        for (i, token) in p.iter().enumerate() {
            match *token {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if i < s.len() && s[i] == t => {}
                _ => return false,
            }
        }
        p.len() == s.len()
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-c.~*> $é]{1,3}", Just("$x".to_string())]
    }

    proptest! {
        #[test]
        fn topics_round_trip_and_are_valid_subjects(levels in prop::collection::vec(level(), 1..5), durable in any::<bool>()) {
            let topic = levels.join("/");
            let subject = topic_subject("stl", &topic, durable);
            prop_assert_eq!(subject_topic("stl", &subject), Some(topic.clone()));
            for token in subject.split('.') {
                prop_assert!(!token.is_empty() && token != "*" && token != ">", "{subject}");
                prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()), "{subject}");
            }
        }

        #[test]
        fn a_filter_s_subjects_match_what_the_filter_matches(
            levels in prop::collection::vec(prop_oneof![Just("a".to_string()), Just("b".to_string()), Just(String::new())], 1..4),
            filter in prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("+"), Just("")], 0..3),
            hash in any::<bool>(),
        ) {
            let topic = levels.join("/");
            let mut filter: Vec<&str> = filter;
            if hash || filter.is_empty() { filter.push("#"); }
            let filter = filter.join("/");
            let parsed = crate::topic::parse_subscription(&filter);
            prop_assume!(parsed.is_ok()); // only valid filters are ever subscribed
            let mqtt = parsed.unwrap().filter;
            let name = crate::topic::TopicName::new(&topic);
            prop_assume!(name.is_ok()); // only valid topics are ever published
            let expected = mqtt.matches(&name.unwrap());
            let subject = topic_subject("stl", &topic, hash);
            let got = filter_subjects("stl", &filter).iter().any(|p| nats_matches(p, &subject));
            prop_assert_eq!(got, expected, "filter {} topic {}", filter, topic);
        }
    }
}
