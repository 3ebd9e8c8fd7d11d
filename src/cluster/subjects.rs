//! MQTT topics and filters as NATS subjects, reversibly.
//!
//! A topic `a/b/c` is the subject `PREFIX.m.a.b.c`: one NATS token per MQTT
//! level. A level is escaped when NATS could not carry it as a token of its
//! own: `~` starts an escape, and `.`, space, tab, CR, LF, `*`, `>`, `~`, a
//! leading `$` and every byte outside printable ASCII become `~XX` (hex of
//! the UTF-8 byte); an empty level is the token `~`. No escaped token is
//! `*` or `>`, so a topic never reads as a wildcard, and decoding gives the
//! topic back exactly.
//!
//! A filter maps level by level the same way, with `+` as `*` and a trailing
//! `#` as `>`. MQTT's `a/#` also matches `a` itself, which NATS's `a.>`
//! does not: such a filter needs two subjects, [`filter_subjects`] gives
//! both.
//!
//! Owns: the mapping (pure; property-tested). Must never: decide interest
//! or route.

/// The subject of a message published to `topic`.
pub fn topic_subject(prefix: &str, topic: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + 3 + topic.len());
    subject.push_str(prefix);
    subject.push_str(".m");
    for level in topic.split('/') {
        subject.push('.');
        escape_level(level, &mut subject);
    }
    subject
}

/// The subjects a node subscribes to for one MQTT filter (without any
/// `$share/group/` prefix): one, or two for a filter ending in `/#`.
pub fn filter_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let mut subject = format!("{prefix}.m");
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

/// The topic a message subject carries; `None` when it is not one of ours.
pub fn subject_topic(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix(".m.")?;
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
        assert_eq!(topic_subject("stl", "chat/room1"), "stl.m.chat.room1");
        assert_eq!(topic_subject("stl", "a//b/"), "stl.m.a.~.b.~");
        assert_eq!(topic_subject("stl", "v1.2/x y"), "stl.m.v1~2E2.x~20y");
        assert_eq!(topic_subject("stl", "$SYS/x"), "stl.m.~24SYS.x");
        assert_eq!(topic_subject("stl", "a$/*/>"), "stl.m.a$.~2A.~3E");
        assert_eq!(topic_subject("stl", "é"), "stl.m.~C3~A9");
    }

    #[test]
    fn filters_become_wildcard_subjects() {
        assert_eq!(filter_subjects("stl", "chat/+"), ["stl.m.chat.*"]);
        assert_eq!(filter_subjects("stl", "fleet/+/location"), ["stl.m.fleet.*.location"]);
        assert_eq!(filter_subjects("stl", "chat/#"), ["stl.m.chat", "stl.m.chat.>"]);
        assert_eq!(filter_subjects("stl", "#"), ["stl.m.>"]);
        assert_eq!(filter_subjects("stl", "a/b"), ["stl.m.a.b"]);
    }

    #[test]
    fn foreign_subjects_are_not_topics() {
        assert_eq!(subject_topic("stl", "other.m.a"), None);
        assert_eq!(subject_topic("stl", "stl.m.a~Z"), None);
        assert_eq!(subject_topic("stl", "stl.m.a~4"), None);
        assert_eq!(subject_topic("stl", "stl.m.a.~"), Some("a/".into()));
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
        fn topics_round_trip_and_are_valid_subjects(levels in prop::collection::vec(level(), 1..5)) {
            let topic = levels.join("/");
            let subject = topic_subject("stl", &topic);
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
            let subject = topic_subject("stl", &topic);
            let got = filter_subjects("stl", &filter).iter().any(|p| nats_matches(p, &subject));
            prop_assert_eq!(got, expected, "filter {} topic {}", filter, topic);
        }
    }
}
