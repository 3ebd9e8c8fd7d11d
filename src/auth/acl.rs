//! Access control: may this identity publish to a topic, or subscribe to a
//! filter? Pure logic, no I/O, so every rule can be unit-tested.
//!
//! Owns: the order of checks (docs/security.md) and filter algebra: whether
//! an allowed filter *covers* a requested one, and whether two filters
//! *overlap* (some topic matches both).
//! Must never: look at sessions, sockets or the store.
//!
//! Order of checks for one action:
//! 1. Publishing to `$SYS/...` is refused to every client (the broker's own).
//! 2. Superusers may do anything else.
//! 3. The identity's own ACL (a token's `acl` claim or the HTTP hook's
//!    answer): a filter there that allows the action decides "allow".
//! 4. `[[acl]]` rules in order; the first that matches decides.
//! 5. Subscriptions to `$SYS/...` that no rule allowed are refused, whatever
//!    the default, `$SYS/viewers/...` included: a room's viewer count names
//!    the room, and private rooms must not be listed to everyone (the
//!    shipped config.toml allows them with an explicit rule, for the demo).
//! 6. `acl_default`.
//!
//! A subscription is *allowed* by an allow rule only if the rule's filter
//! covers every topic the subscription can match (`chat/+` covers
//! `chat/room1` but not `#`); `acl_default = "allow"` covers everything
//! but `$` topics. A deny rule met first that covers the whole filter
//! refuses it (a deny of `chat/#` refuses `chat/lobby`); one that only
//! overlaps it becomes a *hole* (issue 24, item 7): a deny of `chat/secret`
//! grants `chat/#` and `#` with `chat/secret` left out, as Mosquitto and
//! EMQX do. The broker leaves a subscription's holes out of its live
//! deliveries and retained messages ([`ReadAccess`]); history is asked for
//! by topic, and a topic in a hole is simply refused. A hole is the deny
//! rule's whole filter, even where an allow rule before it carves part of
//! it out again: stricter than a per-topic check, never looser.

use crate::config::{AclAction, AclRule, Permission};
use crate::topic::{TopicFilter, TopicName};

/// What a client wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
}

/// Publish and subscribe filters granted to one identity by a token or the
/// HTTP hook (`{"publish": [...], "subscribe": [...]}`, with `%u` / `%c`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct GrantedFilters {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// Who is asking, as far as the rules care.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub user: Option<&'a str>,
    pub client_id: &'a str,
    pub superuser: bool,
    pub granted: Option<&'a GrantedFilters>,
}

/// What a subscription may receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAccess {
    Refused,
    /// Granted; `holes` are the filters of deny rules that overlap it, whose
    /// topics it must not deliver (empty: none).
    Granted {
        holes: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessRules {
    rules: Vec<AclRule>,
    default: Permission,
}

impl AccessRules {
    pub fn new(rules: Vec<AclRule>, default: Permission) -> AccessRules {
        AccessRules { rules, default }
    }

    pub fn default_permission(&self) -> Permission {
        self.default
    }

    /// Whether `subject` may publish to `topic` or subscribe to `filter`
    /// (for a subscription, `target` is the filter without any `$share/group/`;
    /// a subscription granted with holes counts as allowed).
    pub fn allows(&self, subject: &Subject<'_>, action: Action, target: &str) -> bool {
        match action {
            Action::Publish => self.allows_publish(subject, target),
            Action::Subscribe => matches!(self.read_access(subject, target), ReadAccess::Granted { .. }),
        }
    }

    fn allows_publish(&self, subject: &Subject<'_>, topic: &str) -> bool {
        if topic.starts_with("$SYS/") || topic == "$SYS" {
            return false;
        }
        if subject.superuser {
            return true;
        }
        if subject.granted.is_some_and(|g| g.publish.iter().any(|f| grants(f, subject, Action::Publish, topic))) {
            return true;
        }
        for rule in self.rules.iter().filter(|rule| rule_applies(rule, subject, Action::Publish)) {
            let Some(filter) = substitute(&rule.topic, subject) else { continue };
            if topic_matches(&filter, topic) {
                return rule.permission == Permission::Allow;
            }
        }
        self.default == Permission::Allow
    }

    /// What `subject` may receive through a subscription to `filter`
    /// (without any `$share/group/`): refused, or granted with the holes
    /// of the deny rules it overlaps (see the module's doc).
    pub fn read_access(&self, subject: &Subject<'_>, filter: &str) -> ReadAccess {
        let system = filter.starts_with("$SYS/") || filter == "$SYS";
        if subject.superuser {
            return ReadAccess::Granted { holes: Vec::new() };
        }
        if subject.granted.is_some_and(|g| g.subscribe.iter().any(|f| grants(f, subject, Action::Subscribe, filter))) {
            return ReadAccess::Granted { holes: Vec::new() };
        }
        let mut holes = Vec::new();
        for rule in self.rules.iter().filter(|rule| rule_applies(rule, subject, Action::Subscribe)) {
            let Some(rule_filter) = substitute(&rule.topic, subject) else { continue };
            match rule.permission {
                Permission::Allow if covers(&rule_filter, filter) => return ReadAccess::Granted { holes },
                Permission::Allow => {}
                Permission::Deny if covers(&rule_filter, filter) => return ReadAccess::Refused,
                Permission::Deny if overlaps(&rule_filter, filter) => holes.push(rule_filter),
                Permission::Deny => {}
            }
        }
        if system || self.default == Permission::Deny {
            return ReadAccess::Refused;
        }
        ReadAccess::Granted { holes }
    }
}

fn grants(filter: &str, subject: &Subject<'_>, action: Action, target: &str) -> bool {
    let Some(filter) = substitute(filter, subject) else { return false };
    match action {
        Action::Publish => topic_matches(&filter, target),
        Action::Subscribe => covers(&filter, target),
    }
}

fn rule_applies(rule: &AclRule, subject: &Subject<'_>, action: Action) -> bool {
    let action_ok = match rule.action {
        AclAction::All => true,
        AclAction::Publish => action == Action::Publish,
        AclAction::Subscribe => action == Action::Subscribe,
    };
    let user_ok = rule.user == "*" || subject.user == Some(rule.user.as_str());
    let client_ok = match rule.client.strip_suffix('*') {
        Some(prefix) => subject.client_id.starts_with(prefix),
        None => rule.client == subject.client_id,
    };
    action_ok && user_ok && client_ok
}

/// `%u` → user, `%c` → client id. `None` when the rule needs a user and the
/// client has none, or when a name would change the filter's shape (a
/// user named `+` must not turn `dm/%u/#` into `dm/+/#`).
fn substitute(filter: &str, subject: &Subject<'_>) -> Option<String> {
    let unsafe_name = |s: &str| s.is_empty() || s.contains(['+', '#', '/']);
    let mut out = filter.to_string();
    if filter.contains("%u") {
        let user = subject.user.filter(|u| !unsafe_name(u))?;
        out = out.replace("%u", user);
    }
    if filter.contains("%c") {
        if unsafe_name(subject.client_id) {
            return None;
        }
        out = out.replace("%c", subject.client_id);
    }
    Some(out)
}

fn topic_matches(filter: &str, topic: &str) -> bool {
    match (TopicFilter::new(filter), TopicName::new(topic)) {
        (Ok(f), Ok(t)) => f.matches(&t),
        _ => false,
    }
}

/// Whether every topic that `requested` can match is matched by `allowed`.
pub fn covers(allowed: &str, requested: &str) -> bool {
    let mut a = allowed.split('/');
    let mut r = requested.split('/');
    let mut first = true;
    loop {
        match (a.next(), r.next()) {
            // `#` at the first level never covers `$` topics, like matching.
            (Some("#"), Some(level)) if first && level.starts_with('$') => return false,
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) => {
                if level == "#" || (first && level.starts_with('$')) {
                    return false;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Whether some topic matches both filters.
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut a = a.split('/');
    let mut b = b.split('/');
    let mut first = true;
    loop {
        match (a.next(), b.next()) {
            (Some("#"), Some(level)) | (Some(level), Some("#")) => {
                // A leading wildcard never matches `$` topics.
                return !(first && level.starts_with('$'));
            }
            // `x/#` also matches `x` itself.
            (Some("#"), None) | (None, Some("#")) => return true,
            (Some(x), Some(y)) => {
                let wild_vs_dollar = first && ((x == "+" && y.starts_with('$')) || (y == "+" && x.starts_with('$')));
                if wild_vs_dollar || (x != "+" && y != "+" && x != y) {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(user: &str, client: &str, action: AclAction, topic: &str, permission: Permission) -> AclRule {
        AclRule { user: user.into(), client: client.into(), action, topic: topic.into(), permission }
    }

    fn alice() -> Subject<'static> {
        Subject { user: Some("alice"), client_id: "phone", superuser: false, granted: None }
    }

    #[test]
    fn covers_is_subset_of_matches() {
        assert!(covers("chat/+", "chat/room1"));
        assert!(covers("chat/+", "chat/+"));
        assert!(!covers("chat/+", "chat/#"));
        assert!(!covers("chat/+", "#"));
        assert!(covers("chat/#", "chat/a/b"));
        assert!(covers("chat/#", "chat/+/b"));
        assert!(covers("#", "anything/at/all"));
        assert!(!covers("#", "$SYS/x"));
        assert!(!covers("+/x", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/broker/uptime"));
        assert!(!covers("a/b", "a/b/c"));
        assert!(!covers("a/b/c", "a/b"));
    }

    #[test]
    fn overlaps_finds_a_common_topic() {
        assert!(overlaps("chat/secret", "chat/#"));
        assert!(overlaps("chat/+", "chat/room1"));
        assert!(overlaps("a/#", "a"));
        assert!(!overlaps("a/b", "a/c"));
        assert!(!overlaps("#", "$SYS/x"));
        assert!(overlaps("$SYS/#", "$SYS/x"));
        assert!(!overlaps("a/b", "a/b/c"));
        assert!(overlaps("+/b/#", "a/+"));
    }

    #[test]
    fn sys_publish_is_always_refused_and_sys_read_needs_a_rule() {
        let rules = AccessRules::new(vec![], Permission::Allow);
        assert!(!rules.allows(&alice(), Action::Publish, "$SYS/broker/uptime"));
        let root = Subject { superuser: true, ..alice() };
        assert!(!rules.allows(&root, Action::Publish, "$SYS/broker/uptime"));
        assert!(rules.allows(&root, Action::Subscribe, "$SYS/#"));
        assert!(!rules.allows(&alice(), Action::Subscribe, "$SYS/#"));
        assert!(!rules.allows(&alice(), Action::Subscribe, "$SYS/viewers/live/r1/danmaku"), "viewers need a rule too");
        let viewers = AccessRules::new(
            vec![rule("*", "*", AclAction::Subscribe, "$SYS/viewers/#", Permission::Allow)],
            Permission::Deny,
        );
        assert!(viewers.allows(&alice(), Action::Subscribe, "$SYS/viewers/live/r1/danmaku"));
        let explicit = AccessRules::new(
            vec![rule("alice", "*", AclAction::Subscribe, "$SYS/#", Permission::Allow)],
            Permission::Deny,
        );
        assert!(explicit.allows(&alice(), Action::Subscribe, "$SYS/broker/uptime"));
    }

    #[test]
    fn first_matching_rule_wins_with_placeholders() {
        let rules = AccessRules::new(
            vec![
                rule("*", "*", AclAction::Subscribe, "dm/%u/#", Permission::Allow),
                rule("*", "*", AclAction::Publish, "dm/+/%u", Permission::Allow),
                rule("*", "*", AclAction::All, "chat/secret", Permission::Deny),
                rule("*", "*", AclAction::All, "chat/#", Permission::Allow),
            ],
            Permission::Deny,
        );
        let a = alice();
        assert!(rules.allows(&a, Action::Subscribe, "dm/alice/#"));
        assert!(!rules.allows(&a, Action::Subscribe, "dm/bob/#"));
        assert!(!rules.allows(&a, Action::Subscribe, "dm/#"));
        assert!(rules.allows(&a, Action::Publish, "dm/bob/alice"));
        assert!(!rules.allows(&a, Action::Publish, "dm/bob/mallory"));
        assert_eq!(
            rules.read_access(&a, "chat/#"),
            ReadAccess::Granted { holes: vec!["chat/secret".into()] },
            "granted, with the denied topic left out"
        );
        assert_eq!(rules.read_access(&a, "chat/secret"), ReadAccess::Refused, "inside the deny");
        assert!(rules.allows(&a, Action::Subscribe, "chat/lobby"));
        assert!(!rules.allows(&a, Action::Publish, "chat/secret"));
        assert!(!rules.allows(&a, Action::Publish, "elsewhere"));
        // A user name with wildcards never widens a placeholder rule.
        let sneaky = Subject { user: Some("+"), ..a };
        assert!(!rules.allows(&sneaky, Action::Subscribe, "dm/+/#"));
        // Anonymous clients do not match %u rules.
        let anon = Subject { user: None, ..a };
        assert!(!rules.allows(&anon, Action::Subscribe, "dm/alice/#"));
    }

    #[test]
    fn rules_select_by_user_and_client_prefix() {
        let rules = AccessRules::new(
            vec![
                rule("bob", "*", AclAction::Publish, "#", Permission::Allow),
                rule("*", "sensor-*", AclAction::Publish, "sensors/%c", Permission::Allow),
            ],
            Permission::Deny,
        );
        let bob = Subject { user: Some("bob"), client_id: "x", superuser: false, granted: None };
        assert!(rules.allows(&bob, Action::Publish, "a/b"));
        assert!(!rules.allows(&alice(), Action::Publish, "a/b"));
        let sensor = Subject { user: None, client_id: "sensor-7", superuser: false, granted: None };
        assert!(rules.allows(&sensor, Action::Publish, "sensors/sensor-7"));
        assert!(!rules.allows(&sensor, Action::Publish, "sensors/sensor-8"));
    }

    #[test]
    fn granted_filters_are_checked_before_rules() {
        let rules = AccessRules::new(vec![rule("*", "*", AclAction::All, "#", Permission::Deny)], Permission::Deny);
        let granted = GrantedFilters { publish: vec!["chat/%u".into()], subscribe: vec!["chat/+".into()] };
        let s = Subject { granted: Some(&granted), ..alice() };
        assert!(rules.allows(&s, Action::Publish, "chat/alice"));
        assert!(!rules.allows(&s, Action::Publish, "chat/bob"));
        assert!(rules.allows(&s, Action::Subscribe, "chat/lobby"));
        assert!(!rules.allows(&s, Action::Subscribe, "chat/#"));
    }

    /// The paho interoperability suite's case: default allow and one deny.
    #[test]
    fn wildcards_next_to_a_deny_are_granted_with_a_hole() {
        let rules = AccessRules::new(
            vec![rule("*", "*", AclAction::Subscribe, "test/nosubscribe", Permission::Deny)],
            Permission::Allow,
        );
        let a = alice();
        let hole = ReadAccess::Granted { holes: vec!["test/nosubscribe".into()] };
        assert_eq!(rules.read_access(&a, "#"), hole);
        assert_eq!(rules.read_access(&a, "test/+"), hole);
        assert_eq!(rules.read_access(&a, "TopicA/#"), ReadAccess::Granted { holes: vec![] });
        assert_eq!(rules.read_access(&a, "test/nosubscribe"), ReadAccess::Refused);
        assert_eq!(rules.read_access(&a, "$SYS/#"), ReadAccess::Refused, "$ topics still need a rule");
        // Default deny: nothing covers `#`, so it stays refused.
        let strict = AccessRules::new(
            vec![
                rule("*", "*", AclAction::Subscribe, "chat/secret/#", Permission::Deny),
                rule("*", "*", AclAction::Subscribe, "chat/#", Permission::Allow),
            ],
            Permission::Deny,
        );
        assert_eq!(strict.read_access(&a, "#"), ReadAccess::Refused);
        assert_eq!(strict.read_access(&a, "chat/+/x"), ReadAccess::Granted { holes: vec!["chat/secret/#".into()] });
        // A deny after the allow that covers the filter is never reached.
        let later = AccessRules::new(
            vec![
                rule("*", "*", AclAction::Subscribe, "chat/#", Permission::Allow),
                rule("*", "*", AclAction::Subscribe, "chat/secret", Permission::Deny),
            ],
            Permission::Deny,
        );
        assert_eq!(later.read_access(&a, "chat/#"), ReadAccess::Granted { holes: vec![] });
    }

    proptest::proptest! {
        /// A granted subscription never delivers a topic the rules deny to
        /// a publish-style per-topic check: whatever it matches outside its
        /// holes, reading that one topic is allowed.
        #[test]
        fn what_a_subscription_delivers_outside_its_holes_is_readable(
            deny in "[ab+]{1}(/[ab+]){0,2}(/#)?",
            allow in "[ab+#]{1}(/[ab+]){0,2}(/#)?",
            requested in "[ab+#]{1}(/[ab+]){0,3}(/#)?",
            topic in "[ab]{1}(/[ab]){0,4}",
            default_allow in proptest::bool::ANY,
        ) {
            let (Ok(r), Ok(t)) = (TopicFilter::new(&requested), TopicName::new(&topic)) else { return Ok(()) };
            if TopicFilter::new(&deny).is_err() || TopicFilter::new(&allow).is_err() {
                return Ok(());
            }
            let rules = AccessRules::new(
                vec![
                    rule("*", "*", AclAction::Subscribe, &deny, Permission::Deny),
                    rule("*", "*", AclAction::Subscribe, &allow, Permission::Allow),
                ],
                if default_allow { Permission::Allow } else { Permission::Deny },
            );
            let a = alice();
            if let ReadAccess::Granted { holes } = rules.read_access(&a, &requested) {
                let in_hole = holes.iter().any(|h| TopicFilter::new(h).unwrap().matches(&t));
                if r.matches(&t) && !in_hole {
                    proptest::prop_assert!(
                        rules.read_access(&a, &topic) != ReadAccess::Refused,
                        "{requested} (holes {holes:?}) delivers {topic}, which is refused on its own"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// `covers` never claims more than matching: any topic that the
        /// requested filter matches is matched by the allowed one.
        #[test]
        fn covered_topics_match(
            allowed in "[ab+#$]{0,1}(/[ab+]){0,3}(/#)?",
            requested in "[ab+$]{0,1}(/[ab+]){0,3}(/#)?",
            topic in "[ab$]{1}(/[ab]){0,4}",
        ) {
            let (Ok(a), Ok(r), Ok(t)) = (TopicFilter::new(&allowed), TopicFilter::new(&requested), TopicName::new(&topic))
                else { return Ok(()) };
            if covers(&allowed, &requested) && r.matches(&t) {
                proptest::prop_assert!(a.matches(&t), "{allowed} covers {requested} but not {topic}");
            }
            if a.matches(&t) && r.matches(&t) {
                proptest::prop_assert!(overlaps(&allowed, &requested), "{allowed} and {requested} share {topic}");
            }
        }
    }
}
