use super::*;

fn shipped() -> ClassSet {
    ClassSet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("topics")).expect("shipped classes load")
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

#[test]
fn shipped_classes_load_and_classify() {
    let set = shipped();
    let name = |t: &str| set.classify(&topic(t)).map(|c| c.class.name.clone());
    assert_eq!(name("chat/lobby").as_deref(), Some("chat"));
    assert_eq!(name("dm/ann/bob").as_deref(), Some("chat"));
    assert_eq!(name("live/42/danmaku").as_deref(), Some("danmaku"));
    assert_eq!(name("fleet/paris/v17/location").as_deref(), Some("location"));
    assert_eq!(name("status/pump-3").as_deref(), Some("location"));
    assert_eq!(name("chat/lobby/extra"), None, "patterns match whole topics only");
    assert_eq!(name("sensors/x"), None);
    let gift = set.classify(&topic("live/42/gift")).unwrap();
    assert!(gift.high_priority);
    assert!(!set.classify(&topic("live/42/danmaku")).unwrap().high_priority);
}

#[test]
fn the_most_specific_pattern_wins() {
    let sources = vec![
        ("a.toml".to_string(), "name = \"general\"\npatterns = [\"chat/{room}\"]\n".to_string()),
        ("b.toml".to_string(), "name = \"support\"\npatterns = [\"chat/support\"]\n".to_string()),
    ];
    let set = ClassSet::from_sources(&sources).unwrap();
    assert_eq!(set.classify(&topic("chat/support")).unwrap().class.name, "support");
    assert_eq!(set.classify(&topic("chat/random")).unwrap().class.name, "general");
}

fn errors(text: &str) -> String {
    ClassSet::from_sources(&[("bad.toml".to_string(), text.to_string())]).unwrap_err().to_string()
}

#[test]
fn bad_class_files_name_the_file_and_key() {
    let e = errors("name = \"x\"\npatterns = [\"a/{b\"]\n");
    assert!(e.contains("bad.toml") && e.contains("patterns[0]"), "{e}");
    let e = errors("name = \"x\"\npatterns = [\"a/+\"]\n");
    assert!(e.contains("patterns[0]"), "{e}");
    let e = errors("name = \"x\"\npatterns = [\"a\"]\nmax_qos = 3\n");
    assert!(e.contains("max_qos"), "{e}");
    let e = errors("name = \"x\"\npatterns = [\"a\"]\n[outbox]\npolicy = \"lifo\"\n");
    assert!(e.contains("bad.toml") && e.contains("lifo"), "{e}");
    let e = errors("name = \"x\"\npatterns = [\"a\"]\nunknown = 1\n");
    assert!(e.contains("unknown"), "{e}");
    let e = errors("name = \"x\"\npatterns = [\"a\"]\n[rate_limit]\nmessages_per_sec = 0\nburst = 0\n");
    assert!(e.contains("rate_limit.messages_per_sec") && e.contains("rate_limit.burst"), "{e}");
    let e = errors("name = \"x\"\npatterns = [\"a\"]\n[persistence]\nmode = \"none\"\nhistory_messages = 5\n");
    assert!(e.contains("persistence"), "{e}");
    let e = errors("name = \"x\"\npatterns = [\"a\"]\nhigh_priority_patterns = [\"b\"]\n");
    assert!(e.contains("high_priority_patterns"), "{e}");
}

#[test]
fn the_same_pattern_in_two_classes_is_refused() {
    let sources = vec![
        ("a.toml".to_string(), "name = \"one\"\npatterns = [\"room/{id}\"]\n".to_string()),
        ("b.toml".to_string(), "name = \"two\"\npatterns = [\"room/{x}\"]\n".to_string()),
    ];
    let e = ClassSet::from_sources(&sources).unwrap_err().to_string();
    assert!(e.contains("room/{id}") && e.contains("room/{x}"), "{e}");
}

#[test]
fn a_missing_directory_means_no_classes() {
    let set = ClassSet::load_dir(Path::new("/nonexistent/topics")).unwrap();
    assert!(set.is_empty());
}
