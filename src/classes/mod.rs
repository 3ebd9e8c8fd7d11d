//! Topic classes: files in `topics/` that give groups of topics a behaviour
//! (chat rooms, live-stream danmaku, vehicle locations, ...).
//!
//! Owns: the class file format and its validation (errors name the file, the
//! key and the reason), compiling patterns such as `chat/{room}` into
//! filters, choosing a topic's class (the most specific matching pattern
//! wins), and the pure policies in [`policy`]. Must never: hold per-client or
//! per-message state; the broker keeps that and asks this module what to do.

pub mod policy;

use crate::model::QoS;
use crate::topic::{SubscriptionTree, TopicFilter, TopicName};
use serde::Deserialize;
use std::path::Path;

/// What a subscriber's outbox does when full, for messages of a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutboxPolicy {
    /// Keep everything queued up to the capacity; refuse new messages beyond.
    #[default]
    Queue,
    /// Make room by discarding the oldest normal-priority message.
    DropOldest,
    /// Keep at most one pending message per topic: a newer one replaces it.
    Conflate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PersistenceMode {
    /// Nothing kept beyond MQTT's own retained messages and sessions.
    #[default]
    None,
    /// Every message becomes the topic's retained message (optionally with a TTL).
    Retained,
    /// The last N messages (and/or T seconds) of each topic are kept for `HistoryRequest`.
    History,
}

/// A class file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassFile {
    pub name: String,
    /// Topic patterns: levels separated by `/`, `{name}` stands for one level.
    pub patterns: Vec<String>,
    /// QoS granted to starling.v1 subscriptions to this class's topics that
    /// do not ask for one (MQTT clients always state their QoS).
    #[serde(default)]
    pub default_qos: u8,
    /// Publishes above this QoS are delivered at this QoS.
    #[serde(default = "two")]
    pub max_qos: u8,
    /// Larger payloads are refused (MQTT 5 reason 0x95; starling.v1 PubAck/Error 0x95).
    #[serde(default)]
    pub max_payload_bytes: Option<usize>,
    /// Patterns (among `patterns`) whose messages are high priority: never
    /// sampled, never shed, not rate limited (they come from trusted senders).
    #[serde(default)]
    pub high_priority_patterns: Vec<String>,
    #[serde(default)]
    pub persistence: PersistenceFile,
    #[serde(default)]
    pub outbox: OutboxFile,
    #[serde(default)]
    pub rate_limit: Option<RateLimitFile>,
    #[serde(default)]
    pub sampling: Option<SamplingFile>,
    /// Publish each matching subscription filter's live subscriber count as
    /// the retained message `$SYS/viewers/{filter}` (at most once a second).
    #[serde(default)]
    pub count_viewers: bool,
    #[serde(default)]
    pub access: AccessFile,
    #[serde(default)]
    pub identity: IdentityFile,
}

/// `[identity]`: what deliveries say about who sent a message.
#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    /// MQTT 5 deliveries carry the verified sender as the user properties
    /// `sender` (user name) and `sender_client_id`, replacing any the
    /// publisher set (starling.v1 deliveries always carry it).
    #[serde(default)]
    pub stamp_sender: bool,
}

fn two() -> u8 {
    2
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PersistenceFile {
    #[serde(default)]
    pub mode: PersistenceMode,
    /// History: messages kept per topic.
    #[serde(default)]
    pub history_messages: Option<usize>,
    /// History: messages older than this are dropped (0 or absent: no age limit).
    #[serde(default)]
    pub history_secs: Option<u64>,
    /// Retained: the retained message expires this long after it was published (0 or absent: never).
    #[serde(default)]
    pub retained_ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxFile {
    #[serde(default)]
    pub policy: OutboxPolicy,
    /// Messages pending per subscriber (absent: `session.max_queued_messages`).
    #[serde(default)]
    pub capacity: Option<usize>,
}

impl Default for OutboxFile {
    fn default() -> Self {
        OutboxFile { policy: OutboxPolicy::Queue, capacity: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Sustained messages per second per sender.
    pub messages_per_sec: f64,
    /// Messages a sender may send at once after being quiet.
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingFile {
    /// Sampling starts when a topic receives more than this many messages per second.
    pub room_messages_per_sec: u32,
    /// While sampling, each subscriber gets at most this many per second.
    pub per_viewer_per_sec: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    /// Roles that may publish to the class's topics; `"*"` for anyone.
    #[serde(default = "anyone")]
    pub publish: Vec<String>,
    /// Roles that may subscribe; `"*"` for anyone.
    #[serde(default = "anyone")]
    pub subscribe: Vec<String>,
    /// Roles that alone may publish to `high_priority_patterns` and whose
    /// per-message high-priority flag is honoured (for others it is
    /// ignored). Default: none (superusers only).
    #[serde(default)]
    pub high_priority: Vec<String>,
}

impl AccessFile {
    /// Whether someone with `roles` is in `allowed` (`"*"`: everyone).
    pub fn admits(allowed: &[String], roles: &[String]) -> bool {
        allowed.iter().any(|a| a == "*" || roles.contains(a))
    }
}

impl Default for AccessFile {
    fn default() -> Self {
        AccessFile { publish: anyone(), subscribe: anyone(), high_priority: Vec::new() }
    }
}

fn anyone() -> Vec<String> {
    vec!["*".to_string()]
}

/// A validated class, ready to apply.
#[derive(Debug, Clone)]
pub struct TopicClass {
    pub name: String,
    /// The file it came from, for messages.
    pub source: String,
    pub default_qos: QoS,
    pub max_qos: QoS,
    pub max_payload_bytes: Option<usize>,
    pub persistence: PersistenceMode,
    pub history_messages: usize,
    pub history_secs: Option<u64>,
    pub retained_ttl_secs: Option<u64>,
    pub outbox_policy: OutboxPolicy,
    pub outbox_capacity: Option<usize>,
    pub rate_limit: Option<RateLimitFile>,
    pub sampling: Option<SamplingFile>,
    pub count_viewers: bool,
    pub access: AccessFile,
    pub stamp_sender: bool,
}

/// Default history length when a history class does not say.
pub const DEFAULT_HISTORY_MESSAGES: usize = 100;

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    class: usize,
    high_priority: bool,
    /// Literal levels: more means more specific.
    literals: usize,
}

/// What the broker needs to know about one topic.
#[derive(Debug, Clone, Copy)]
pub struct Classified<'a> {
    pub class: &'a TopicClass,
    pub index: usize,
    pub high_priority: bool,
}

/// Every class, and the index that picks one for a topic.
#[derive(Default)]
pub struct ClassSet {
    classes: Vec<TopicClass>,
    patterns: Vec<Pattern>,
    index: SubscriptionTree<usize, ()>,
    /// Some class limits who may publish (see `restricts_publishing`);
    /// decided once when the set is built, asked on every publish.
    restricts_publishing: bool,
}

impl std::fmt::Debug for ClassSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassSet").field("classes", &self.classes.iter().map(|c| &c.name).collect::<Vec<_>>()).finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ClassError {
    pub problems: Vec<String>,
}

impl ClassSet {
    /// Loads every `*.toml` in `dir` (in name order). A missing directory
    /// means no classes. Every problem in every file is reported at once.
    pub fn load_dir(dir: &Path) -> Result<ClassSet, ClassError> {
        let mut files = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ClassSet::default()),
            Err(e) => return Err(ClassError { problems: vec![format!("{}: cannot read: {e}", dir.display())] }),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
        files.sort();
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for path in files {
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path.display().to_string(), text)),
                Err(e) => problems.push(format!("{}: cannot read: {e}", path.display())),
            }
        }
        match ClassSet::from_sources(&sources) {
            Ok(set) if problems.is_empty() => Ok(set),
            Ok(_) => Err(ClassError { problems }),
            Err(e) => {
                problems.extend(e.problems);
                Err(ClassError { problems })
            }
        }
    }

    /// Builds the set from (file name, contents) pairs.
    pub fn from_sources(sources: &[(String, String)]) -> Result<ClassSet, ClassError> {
        let mut set = ClassSet::default();
        let mut problems = Vec::new();
        for (file, text) in sources {
            let parsed: ClassFile = match toml::from_str(text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    problems.push(format!("{file}: {e}"));
                    continue;
                }
            };
            set.add(file, parsed, &mut problems);
        }
        set.check_ambiguity(&mut problems);
        set.restricts_publishing = set.classes.iter().any(|c| !c.access.publish.iter().any(|r| r == "*"))
            || set
                .patterns
                .iter()
                .any(|p| p.high_priority && !set.classes[p.class].access.high_priority.iter().any(|r| r == "*"));
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(ClassError { problems })
        }
    }

    fn add(&mut self, file: &str, f: ClassFile, problems: &mut Vec<String>) {
        let before = problems.len();
        let mut problem = |key: &str, why: String| problems.push(format!("{file}: {key}: {why}"));
        if f.name.is_empty() || !f.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
            problem("name", format!("{:?} must be letters, digits, '-' or '_'", f.name));
        }
        if self.classes.iter().any(|c| c.name == f.name) {
            problem("name", format!("class {:?} is defined twice", f.name));
        }
        if f.patterns.is_empty() {
            problem("patterns", "needs at least one pattern".into());
        }
        let qos = |v: u8| QoS::from_u8(v);
        if qos(f.max_qos).is_none() {
            problem("max_qos", format!("{} is not a QoS (0, 1 or 2)", f.max_qos));
        }
        if qos(f.default_qos).is_none() || f.default_qos > f.max_qos {
            problem("default_qos", format!("{} must be a QoS no higher than max_qos ({})", f.default_qos, f.max_qos));
        }
        if f.max_payload_bytes == Some(0) {
            problem("max_payload_bytes", "must be at least 1".into());
        }
        if f.outbox.capacity == Some(0) {
            problem("outbox.capacity", "must be at least 1".into());
        }
        if let Some(r) = &f.rate_limit {
            if !(r.messages_per_sec > 0.0 && r.messages_per_sec.is_finite()) {
                problem("rate_limit.messages_per_sec", format!("{} must be a positive number", r.messages_per_sec));
            }
            if r.burst == 0 {
                problem("rate_limit.burst", "must be at least 1".into());
            }
        }
        if let Some(s) = &f.sampling {
            if s.per_viewer_per_sec == 0 || s.room_messages_per_sec == 0 {
                problem("sampling", "room_messages_per_sec and per_viewer_per_sec must be at least 1".into());
            }
        }
        let p = &f.persistence;
        match p.mode {
            PersistenceMode::History => {
                if p.history_messages == Some(0) {
                    problem("persistence.history_messages", "must be at least 1".into());
                }
                if p.retained_ttl_secs.is_some() {
                    problem("persistence.retained_ttl_secs", "only applies to mode = \"retained\"".into());
                }
            }
            PersistenceMode::Retained => {
                if p.history_messages.is_some() || p.history_secs.is_some() {
                    problem("persistence.history_*", "only applies to mode = \"history\"".into());
                }
            }
            PersistenceMode::None => {
                if p.history_messages.is_some() || p.history_secs.is_some() || p.retained_ttl_secs.is_some() {
                    problem("persistence", "mode = \"none\" takes no other keys".into());
                }
            }
        }
        for who in f.access.publish.iter().chain(&f.access.subscribe) {
            if who.is_empty() {
                problem("access", "an empty entry (use \"*\" for anyone)".into());
            }
        }
        let class_index = self.classes.len();
        let mut compiled = Vec::new();
        for (i, pattern) in f.patterns.iter().enumerate() {
            match compile_pattern(pattern) {
                Ok((filter, literals)) => compiled.push((pattern.clone(), filter, literals)),
                Err(why) => problem(&format!("patterns[{i}]"), format!("{pattern:?}: {why}")),
            }
        }
        for hp in &f.high_priority_patterns {
            if !f.patterns.contains(hp) {
                problem("high_priority_patterns", format!("{hp:?} is not one of this class's patterns"));
            }
        }
        if problems.len() > before {
            return;
        }
        for (text, filter, literals) in compiled {
            let high_priority = f.high_priority_patterns.contains(&text);
            self.index.insert(&filter, self.patterns.len(), ());
            self.patterns.push(Pattern { text, class: class_index, high_priority, literals });
        }
        self.classes.push(TopicClass {
            name: f.name,
            source: file.to_string(),
            default_qos: QoS::from_u8(f.default_qos).unwrap_or(QoS::AtMostOnce),
            max_qos: QoS::from_u8(f.max_qos).unwrap_or(QoS::ExactlyOnce),
            max_payload_bytes: f.max_payload_bytes,
            persistence: p.mode,
            history_messages: p.history_messages.unwrap_or(DEFAULT_HISTORY_MESSAGES),
            history_secs: p.history_secs.filter(|s| *s > 0),
            retained_ttl_secs: p.retained_ttl_secs.filter(|s| *s > 0),
            outbox_policy: f.outbox.policy,
            outbox_capacity: f.outbox.capacity,
            rate_limit: f.rate_limit,
            sampling: f.sampling,
            count_viewers: f.count_viewers,
            access: f.access,
            stamp_sender: f.identity.stamp_sender,
        });
    }

    /// Two patterns that compile to the same filter in different classes
    /// would make the choice arbitrary.
    fn check_ambiguity(&self, problems: &mut Vec<String>) {
        for (i, a) in self.patterns.iter().enumerate() {
            for b in &self.patterns[i + 1..] {
                if a.class != b.class && same_shape(&a.text, &b.text) {
                    let (ca, cb) = (&self.classes[a.class], &self.classes[b.class]);
                    problems.push(format!(
                        "{}: patterns: {:?} (class {}) and {:?} (class {} in {}) match exactly the same topics",
                        ca.source, a.text, ca.name, b.text, cb.name, cb.source
                    ));
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    pub fn classes(&self) -> &[TopicClass] {
        &self.classes
    }

    /// Whether any class limits who may publish (its `publish` roles, or
    /// high-priority patterns reserved to roles): when none does, publishers
    /// need no class lookup for access.
    pub fn restricts_publishing(&self) -> bool {
        self.classes.iter().any(|c| !c.access.publish.iter().any(|r| r == "*"))
            || self
                .patterns
                .iter()
                .any(|p| p.high_priority && !self.classes[p.class].access.high_priority.iter().any(|r| r == "*"))
    }

    /// The classes whose topics a subscription to `filter` can reach: the
    /// class of the topic itself for a filter without wildcards, otherwise
    /// every class with a pattern that overlaps the filter.
    pub fn classes_reached_by(&self, filter: &str) -> Vec<&TopicClass> {
        if let Ok(topic) = TopicName::new(filter) {
            return self.classify(&topic).map(|c| c.class).into_iter().collect();
        }
        let mut reached: Vec<&TopicClass> = Vec::new();
        for p in &self.patterns {
            let shape: Vec<&str> = p.text.split('/').map(|l| if l.starts_with('{') { "+" } else { l }).collect();
            let class = &self.classes[p.class];
            if crate::auth::acl::overlaps(&shape.join("/"), filter) && !reached.iter().any(|c| std::ptr::eq(*c, class))
            {
                reached.push(class);
            }
        }
        reached
    }

    /// The class of `topic`: among matching patterns, the one with the most
    /// literal levels wins. `None`: plain MQTT behaviour.
    pub fn classify(&self, topic: &TopicName) -> Option<Classified<'_>> {
        if self.patterns.is_empty() {
            return None;
        }
        let mut best: Option<&Pattern> = None;
        self.index.for_each_match(topic, |i, ()| {
            let p = &self.patterns[*i];
            if best.is_none_or(|b| p.literals > b.literals) {
                best = Some(p);
            }
        });
        best.map(|p| Classified { class: &self.classes[p.class], index: p.class, high_priority: p.high_priority })
    }
}

/// `chat/{room}` -> the filter `chat/+` and its number of literal levels.
fn compile_pattern(pattern: &str) -> Result<(TopicFilter, usize), String> {
    let mut levels = Vec::new();
    let mut literals = 0;
    for level in pattern.split('/') {
        if level.starts_with('{') && level.ends_with('}') && level.len() > 2 {
            levels.push("+".to_string());
        } else if level.contains(['{', '}', '+', '#']) {
            return Err(format!(
                "level {level:?}: use {{name}} for a whole level; '+', '#' and partial braces are not allowed"
            ));
        } else {
            literals += 1;
            levels.push(level.to_string());
        }
    }
    if pattern.starts_with('$') {
        return Err("patterns cannot cover '$' topics".into());
    }
    TopicFilter::new(&levels.join("/")).map(|f| (f, literals)).map_err(|e| e.to_string())
}

/// Patterns that differ only in variable names match the same topics.
fn same_shape(a: &str, b: &str) -> bool {
    let shape = |p: &str| p.split('/').map(|l| if l.starts_with('{') { "+" } else { l }).collect::<Vec<_>>().join("/");
    shape(a) == shape(b)
}

#[cfg(test)]
mod tests;
