//! [`SubscriptionTree`]: a trie over topic levels that finds every
//! subscription matching a published topic.
//!
//! Every walk here is iterative, never recursive over levels: a single
//! 65535-byte filter of '/' characters has 65536 levels, and recursing that
//! deep (in matching, removal or even `Drop`) would overflow a 2 MiB task
//! stack and take the whole broker down on one SUBSCRIBE.

use super::{TopicFilter, TopicName};
use std::borrow::Borrow;
use std::collections::HashMap;

/// Hash maps keyed by client-chosen strings: ahash is several times faster
/// than SipHash on short keys and, with its random per-process keys, still
/// resists collision floods. The keys are the process's ([`ProcessKeys`]),
/// not each map's: every node has two maps, and a per-map key would add 32
/// bytes to each (measured in docs/performance.md, "Idle connections").
type Map<K, V> = HashMap<K, V, ProcessKeys>;

/// A zero-sized hasher builder: ahash with one set of random keys per process.
#[derive(Clone, Copy, Default, Debug)]
pub struct ProcessKeys;

static PROCESS_KEYS: std::sync::LazyLock<ahash::RandomState> = std::sync::LazyLock::new(ahash::RandomState::new);

impl std::hash::BuildHasher for ProcessKeys {
    type Hasher = ahash::AHasher;
    fn build_hasher(&self) -> ahash::AHasher {
        PROCESS_KEYS.build_hasher()
    }
}
use std::hash::Hash;

/// One trie node: the filter levels that lead here are the path from the root.
struct Node<K, V> {
    /// Children for literal levels (including the empty level "").
    children: Map<Box<str>, Node<K, V>>,
    /// Child for a '+' level. Kept apart from `children` so matching never
    /// confuses a literal "+" lookup with the wildcard.
    plus: Option<Box<Node<K, V>>>,
    /// Subscriptions whose filter ends exactly at this node.
    exact: Entries<K, V>,
    /// Subscriptions whose filter is this node's path followed by '#';
    /// `None` while there are none (most nodes), so a node stays small.
    multi: Option<Box<Map<K, V>>>,
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Node { children: Map::default(), plus: None, exact: Entries::Empty, multi: None }
    }

    /// A node with nothing in or below it can be cut from the tree.
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.exact.is_empty() && self.multi.is_none()
    }

    /// Number of children (literal and '+'), used to decide what pruning keeps.
    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node<K, V> {
        if level == "+" {
            return self.plus.get_or_insert_with(|| Box::new(Node::new()));
        }
        // Look up before inserting so an existing level costs no Box<str>.
        if !self.children.contains_key(level) {
            self.children.insert(level.into(), Node::new());
        }
        self.children.get_mut(level).expect("child was just inserted")
    }
}

/// A node's exact-match entries. Most nodes that have any hold one (a
/// client's own topic, a vehicle's feed): kept inline, because a hash map's
/// first insert allocates room for four entries (about 250 bytes per
/// subscription, measured in docs/performance.md). A map from the second on.
enum Entries<K, V> {
    Empty,
    One(K, V),
    Many(Map<K, V>),
}

impl<K, V> Entries<K, V> {
    /// `Many` is never left empty, so this is all it takes.
    fn is_empty(&self) -> bool {
        matches!(self, Entries::Empty)
    }
}

impl<K: Eq + Hash, V> Entries<K, V> {
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Entries::Empty => {
                *self = Entries::One(key, value);
                None
            }
            Entries::One(k, v) if *k == key => Some(std::mem::replace(v, value)),
            Entries::One(..) => {
                let Entries::One(k, v) = std::mem::replace(self, Entries::Empty) else { unreachable!() };
                let mut map = Map::default();
                map.insert(k, v);
                map.insert(key, value);
                *self = Entries::Many(map);
                None
            }
            Entries::Many(map) => map.insert(key, value),
        }
    }

    fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            Entries::One(k, _) if <K as Borrow<Q>>::borrow(k) == key => {
                let Entries::One(_, v) = std::mem::replace(self, Entries::Empty) else { unreachable!() };
                Some(v)
            }
            Entries::Many(map) => {
                let v = map.remove(key)?;
                if map.is_empty() {
                    *self = Entries::Empty;
                }
                Some(v)
            }
            _ => None,
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            Entries::One(k, v) if <K as Borrow<Q>>::borrow(k) == key => Some(v),
            Entries::Many(map) => map.get(key),
            _ => None,
        }
    }

    fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            Entries::One(k, v) if <K as Borrow<Q>>::borrow(k) == key => Some(v),
            Entries::Many(map) => map.get_mut(key),
            _ => None,
        }
    }

    fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        match self {
            Entries::Empty => {}
            Entries::One(k, v) => f(k, v),
            Entries::Many(map) => map.iter().for_each(|(k, v)| f(k, v)),
        }
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Dismantles the subtree with a heap worklist instead of the default
    /// recursive drop, which would overflow the stack on a very deep filter.
    fn drop(&mut self) {
        if self.child_count() == 0 {
            return;
        }
        let mut pending: Vec<Node<K, V>> = self.children.drain().map(|(_, n)| n).collect();
        pending.extend(self.plus.take().map(|n| *n));
        while let Some(mut node) = pending.pop() {
            pending.extend(node.children.drain().map(|(_, n)| n));
            pending.extend(node.plus.take().map(|n| *n));
            // `node` drops here childless, so this Drop returns at once.
        }
    }
}

/// The levels of `filter` that form its trie path, and whether it ends in
/// '#'. The '#' is not a node: its entries live in the parent's `multi` map,
/// which is what makes "a/#" match "a" itself.
fn path_of(filter: &TopicFilter) -> (impl Iterator<Item = &str> + Clone, bool) {
    let multi = filter.as_str() == "#" || filter.as_str().ends_with("/#");
    (filter.levels().take_while(|l| *l != "#"), multi)
}

/// All subscriptions, keyed by (filter, key): one key (typically a client or
/// a share group member) holds at most one value per filter.
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K: Eq + Hash, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        SubscriptionTree::new()
    }
}

impl<K: Eq + Hash, V> SubscriptionTree<K, V> {
    pub fn new() -> Self {
        SubscriptionTree { root: Node::new(), len: 0 }
    }

    /// Number of (filter, key) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces the entry for (`filter`, `key`), returning the value
    /// it replaced.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let (path, multi) = path_of(filter);
        let mut node = &mut self.root;
        for level in path {
            node = node.child_or_insert(level);
        }
        let old = if multi {
            node.multi.get_or_insert_with(Box::default).insert(key, value)
        } else {
            node.exact.insert(key, value)
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the entry for (`filter`, `key`) and prunes nodes left empty,
    /// so memory follows live subscriptions rather than every filter ever
    /// seen (clients that subscribe to unique topics would otherwise leak).
    pub fn remove<Q>(&mut self, filter: &TopicFilter, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let (path, multi) = path_of(filter);
        let node = self.node_mut(path.clone())?;
        let old = if multi {
            let entries = node.multi.as_mut()?;
            let old = entries.remove(key)?;
            if entries.is_empty() {
                node.multi = None;
            }
            old
        } else {
            node.exact.remove(key)?
        };
        let emptied = node.is_empty();
        self.len -= 1;
        if emptied {
            self.prune(path);
        }
        Some(old)
    }

    pub fn get<Q>(&self, filter: &TopicFilter, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let (path, multi) = path_of(filter);
        let mut node = &self.root;
        for level in path {
            node = node.child(level)?;
        }
        if multi {
            node.multi.as_ref()?.get(key)
        } else {
            node.exact.get(key)
        }
    }

    pub fn get_mut<Q>(&mut self, filter: &TopicFilter, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let (path, multi) = path_of(filter);
        let node = self.node_mut(path)?;
        if multi {
            node.multi.as_mut()?.get_mut(key)
        } else {
            node.exact.get_mut(key)
        }
    }

    /// Calls `f` once for every (filter, key) entry whose filter matches
    /// `topic`. This is the publish hot path: it does not allocate unless a
    /// topic fans out into more than `INLINE_FRAMES` pending branches.
    pub fn for_each_match(&self, topic: &TopicName, mut f: impl FnMut(&K, &V)) {
        let topic_str = topic.as_str();
        // [MQTT-4.7.2-1]: at the root only, '+' and '#' must not match a
        // topic starting with '$'. Below the root wildcards apply as usual
        // ("$SYS/#" matches "$SYS/x").
        let system = topic.is_system();

        // A frame is a node to visit and the byte offset in the topic where
        // the next level starts; an offset past the end means every level
        // has been consumed. Offset 0 is only ever the root, since any child
        // frame is at least one level plus a separator further on.
        let mut stack = FrameStack::new();
        stack.push((&self.root, 0));
        while let Some((node, pos)) = stack.pop() {
            let wildcards = pos != 0 || !system;
            if wildcards {
                // '#' matches whatever is left, including nothing.
                if let Some(multi) = node.multi.as_deref() {
                    multi.iter().for_each(|(k, v)| f(k, v));
                }
            }
            if pos > topic_str.len() {
                node.exact.for_each(&mut f);
                continue;
            }
            let rest = &topic_str[pos..];
            let level = rest.find('/').map_or(rest, |i| &rest[..i]);
            let next = pos + level.len() + 1;
            if wildcards {
                if let Some(plus) = node.plus.as_deref() {
                    stack.push((plus, next));
                }
            }
            if let Some(child) = node.children.get(level) {
                stack.push((child, next));
            }
        }
    }

    fn node_mut<'a>(&mut self, path: impl Iterator<Item = &'a str>) -> Option<&mut Node<K, V>> {
        let mut node = &mut self.root;
        for level in path {
            node = node.child_mut(level)?;
        }
        Some(node)
    }

    /// Cuts the chain of nodes along `path` that hold nothing but the next
    /// node of the chain, ending at an empty leaf. Done in two passes (find
    /// the cut, then cut) because a single mutable walk cannot look back up.
    fn prune<'a>(&mut self, path: impl Iterator<Item = &'a str> + Clone) {
        // The highest node that must survive: the root, or the deepest node
        // on the path that has entries or another child. Everything below
        // it on the path is empty apart from the chain itself.
        let mut keep_depth = 0;
        let mut node = &self.root;
        for (depth, level) in path.clone().enumerate() {
            if depth > 0 && (!node.exact.is_empty() || node.multi.is_some() || node.child_count() > 1) {
                keep_depth = depth;
            }
            node = match node.child(level) {
                Some(n) => n,
                None => return,
            };
        }
        let mut levels = path;
        let mut keeper = &mut self.root;
        for _ in 0..keep_depth {
            let Some(next) = levels.next().and_then(|level| keeper.child_mut(level)) else {
                return;
            };
            keeper = next;
        }
        match levels.next() {
            Some("+") => keeper.plus = None,
            Some(level) => {
                keeper.children.remove(level);
            }
            // Empty path: the emptied node is the root, which always stays.
            None => {}
        }
    }

    /// Number of nodes in the trie, root included: lets tests prove pruning.
    #[cfg(test)]
    pub(crate) fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
        }
        count
    }
}

/// Frames kept on the stack before the work stack spills to the heap. A
/// match walk has at most one pending frame per topic level (the '+' branch
/// waiting while the literal branch is explored), so ordinary topics never
/// spill and publishing does not allocate.
const INLINE_FRAMES: usize = 16;

/// A LIFO stack that lives inline up to `INLINE_FRAMES` entries and only then
/// uses a `Vec`, which keeps deep or adversarial topics safe without making
/// every publish pay for an allocation.
struct FrameStack<T> {
    inline: [Option<T>; INLINE_FRAMES],
    len: usize,
    /// Only non-empty while `inline` is full, so popping it first keeps LIFO order.
    spill: Vec<T>,
}

impl<T> FrameStack<T> {
    fn new() -> Self {
        FrameStack { inline: [const { None }; INLINE_FRAMES], len: 0, spill: Vec::new() }
    }

    fn push(&mut self, frame: T) {
        if self.len < INLINE_FRAMES {
            self.inline[self.len] = Some(frame);
            self.len += 1;
        } else {
            self.spill.push(frame);
        }
    }

    fn pop(&mut self) -> Option<T> {
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
    }
}
