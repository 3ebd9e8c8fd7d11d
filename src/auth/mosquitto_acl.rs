//! Mosquitto's ACL file (`acl_file`), read as `[auth] mosquitto_acl_file`
//! and mapped onto starling's `[[acl]]` rules (docs/mosquitto.md).
//!
//! Owns: the mapping (pure). `user NAME` starts a user's block; `topic
//! [read|write|readwrite|deny] FILTER` grants (or denies) that user;
//! `pattern [...] FILTER` applies to every user (`%u`, `%c` kept). Mosquitto
//! lets any matching deny win over grants, so each scope's deny rules come
//! before its grants (starling's rules: first match wins); what nothing
//! grants is refused. Must never: guess at a line it cannot map: a `topic`
//! line before the first `user` line (Mosquitto gives those to anonymous
//! clients only, which no starling rule can name) and unknown keywords are
//! refused with their line number.

use crate::config::{AclAction, AclRule, Permission};

/// The rules `text` (a Mosquitto ACL file) means, in order.
pub fn map(text: &str) -> Result<Vec<AclRule>, String> {
    let mut denies = Vec::new();
    let mut grants = Vec::new();
    let mut user: Option<String> = None;
    let mut problems = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match keyword {
            "user" if !rest.is_empty() => user = Some(rest.to_string()),
            "topic" | "pattern" => {
                let scope = if keyword == "pattern" {
                    "*".to_string()
                } else if let Some(user) = &user {
                    user.clone()
                } else {
                    problems.push(format!(
                        "line {}: a topic line before any user line applies to anonymous clients only in \
                         Mosquitto; starling rules cannot name them (use a pattern, or an [[acl]] rule for \"*\")",
                        n + 1
                    ));
                    continue;
                };
                let (access, filter) = match rest.split_once(char::is_whitespace) {
                    Some((access @ ("read" | "write" | "readwrite" | "deny"), filter)) => (access, filter.trim()),
                    _ => ("readwrite", rest),
                };
                if filter.is_empty() {
                    problems.push(format!("line {}: {keyword} without a topic", n + 1));
                    continue;
                }
                let rule = |action, permission| AclRule {
                    user: scope.clone(),
                    client: "*".into(),
                    action,
                    topic: filter.to_string(),
                    permission,
                };
                match access {
                    "deny" => denies.push(rule(AclAction::All, Permission::Deny)),
                    "read" => grants.push(rule(AclAction::Subscribe, Permission::Allow)),
                    "write" => grants.push(rule(AclAction::Publish, Permission::Allow)),
                    _ => grants.push(rule(AclAction::All, Permission::Allow)),
                }
            }
            _ => problems.push(format!("line {}: {line:?}: not a user, topic or pattern line", n + 1)),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    denies.extend(grants);
    Ok(denies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(user: &str, action: AclAction, topic: &str, permission: Permission) -> AclRule {
        AclRule { user: user.into(), client: "*".into(), action, topic: topic.into(), permission }
    }

    #[test]
    fn users_topics_and_patterns_map_denies_first() {
        let text = "# comment\nuser alice\ntopic readwrite chat/#\ntopic read $SYS/#\ntopic deny chat/secret\n\n\
                    user bob\ntopic write sensors/bob\ntopic chat/+\npattern write devices/%u/state\n";
        assert_eq!(
            map(text).unwrap(),
            vec![
                rule("alice", AclAction::All, "chat/secret", Permission::Deny),
                rule("alice", AclAction::All, "chat/#", Permission::Allow),
                rule("alice", AclAction::Subscribe, "$SYS/#", Permission::Allow),
                rule("bob", AclAction::Publish, "sensors/bob", Permission::Allow),
                rule("bob", AclAction::All, "chat/+", Permission::Allow),
                rule("*", AclAction::Publish, "devices/%u/state", Permission::Allow),
            ]
        );
    }

    #[test]
    fn lines_that_cannot_be_mapped_are_refused_with_their_number() {
        let err = map("topic read public/#\nuser alice\nauth_plugin x\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("anonymous"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }
}
