//! A subscriber's bounded queue of pending deliveries and what happens when it
//! is full.
//!
//! Owns: capacity and the overflow policies of the topic classes, applied per
//! item (one subscriber may follow a chat room and a live room at once):
//! - `Queue`: refuse new items beyond the capacity (plain MQTT, like
//!   Mosquitto's `max_queued_messages`);
//! - `DropOldest`: make room by discarding the oldest normal-priority item
//!   that is itself not `Queue` (a chat message is never discarded for a
//!   live-room comment);
//! - `Conflate`: keep one pending item per topic, the newest.
//!
//! A byte quota works like the capacity: an item that would take the queued
//! bytes past it is handled as if the outbox were full.
//!
//! High-priority items are never discarded to make room; when nothing else
//! can go they may exceed the capacity (and the byte quota), up to twice it. Pure data: no locks,
//! no I/O; the session wraps it in its lock. Must never: grow past twice its
//! capacity.

use crate::classes::OutboxPolicy;
use std::collections::VecDeque;

/// What the outbox needs to know about an item.
pub trait OutboxItem {
    fn policy(&self) -> OutboxPolicy;
    /// The class's own capacity, if it sets one.
    fn capacity(&self) -> Option<usize>;
    fn high_priority(&self) -> bool;
    /// Items that conflate with each other (same topic).
    fn conflates_with(&self, other: &Self) -> bool;
    /// Bytes the item pins (payload and topic), for the byte quota.
    fn size(&self) -> usize {
        0
    }
}

#[derive(Debug)]
pub enum Pushed<T> {
    /// Queued; `was_empty` tells the caller to wake the writer.
    Queued { was_empty: bool },
    /// Queued after discarding (or replacing) this older item.
    QueuedDropping(T),
    /// Refused: the item comes back.
    Refused(T),
}

/// An empty outbox whose ring holds more slots than this releases it.
const SHRINK_ABOVE: usize = 64;

/// Capacities are kept in a `u32` (an outbox of four billion messages is
/// not a thing), which keeps the struct at one cache line.
fn clamp_capacity(capacity: usize) -> u32 {
    u32::try_from(capacity.max(1)).unwrap_or(u32::MAX)
}

#[derive(Debug)]
pub struct Outbox<T> {
    items: VecDeque<T>,
    capacity: u32,
    /// Slots the ring had when it was last released: the next burst
    /// allocates that many at once instead of doubling its way up from 4,
    /// copying the ring at every step (a subscriber of a busy fan-out fills
    /// and empties its ring many times a second).
    released_slots: u32,
    dropped: u64,
    /// Sum of the queued items' sizes, and its quota (`session.max_queued_bytes`).
    bytes: usize,
    max_bytes: usize,
}

impl<T: OutboxItem> Outbox<T> {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            items: VecDeque::new(),
            capacity: clamp_capacity(capacity),
            released_slots: 0,
            dropped: 0,
            bytes: 0,
            max_bytes: usize::MAX,
        }
    }

    /// Sets the byte quota: a new item that would take the queued bytes past
    /// it is handled like one beyond the capacity.
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes.max(1);
    }

    /// Bytes the queued items pin.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, item: T) -> Pushed<T> {
        let capacity = item.capacity().unwrap_or(self.capacity as usize).max(1);
        let size = item.size();
        if item.policy() == OutboxPolicy::Conflate {
            if let Some(pending) = self.items.iter_mut().rev().find(|p| p.conflates_with(&item)) {
                // The newest replaces the pending one, which was never sent.
                self.bytes = self.bytes - pending.size() + size;
                return Pushed::QueuedDropping(std::mem::replace(pending, item));
            }
        }
        if self.items.len() < capacity && self.bytes + size <= self.max_bytes {
            let was_empty = self.items.is_empty();
            if self.items.capacity() == 0 && self.released_slots > 0 {
                self.items.reserve_exact((self.released_slots as usize).min(capacity));
            }
            self.items.push_back(item);
            self.bytes += size;
            return Pushed::Queued { was_empty };
        }
        self.dropped += 1;
        let make_room = item.high_priority() || item.policy() != OutboxPolicy::Queue;
        if make_room {
            // Only messages whose own class allows it are discarded: a chat
            // message (`queue`) queued beside live-room comments is never
            // pushed out by them.
            if let Some(pos) = self.items.iter().position(|p| !p.high_priority() && p.policy() != OutboxPolicy::Queue) {
                let oldest = self.items.remove(pos).expect("position is valid");
                self.bytes = self.bytes - oldest.size() + size;
                self.items.push_back(item);
                return Pushed::QueuedDropping(oldest);
            }
            if item.high_priority()
                && self.items.len() < 2 * capacity
                && self.bytes + size <= self.max_bytes.saturating_mul(2)
            {
                self.items.push_back(item);
                self.bytes += size;
                return Pushed::Queued { was_empty: false };
            }
        }
        Pushed::Refused(item)
    }

    /// Changes the default capacity. Items already queued beyond a lowered
    /// capacity stay; new ones are refused or make room as their policy says.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = clamp_capacity(capacity);
    }
}

impl<T> Outbox<T> {
    /// Appends ignoring capacity: only for restoring what was already accepted
    /// before a restart.
    pub fn push_unbounded(&mut self, item: T)
    where
        T: OutboxItem,
    {
        self.bytes += item.size();
        self.items.push_back(item);
    }

    pub fn pop(&mut self) -> Option<T>
    where
        T: OutboxItem,
    {
        let item = self.items.pop_front();
        if let Some(item) = &item {
            self.bytes -= item.size();
        }
        // Give a burst's memory back once it has drained: an idle subscriber
        // should not keep a thousand-slot ring allocated.
        if self.items.is_empty() && self.items.capacity() > SHRINK_ABOVE {
            self.released_slots = u32::try_from(self.items.capacity()).unwrap_or(u32::MAX);
            self.items = VecDeque::new();
        }
        item
    }

    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items refused or discarded for lack of room since creation
    /// (conflated replacements are not counted: nothing was lost).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takes out the items `remove` picks, keeping the others' order.
    pub fn remove_where(&mut self, mut remove: impl FnMut(&T) -> bool) -> Vec<T>
    where
        T: OutboxItem,
    {
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(self.items.len());
        for item in self.items.drain(..) {
            if remove(&item) {
                removed.push(item);
            } else {
                kept.push_back(item);
            }
        }
        self.items = kept;
        self.bytes -= removed.iter().map(OutboxItem::size).sum::<usize>();
        removed
    }

    pub fn clear(&mut self) -> Vec<T> {
        self.bytes = 0;
        self.items.drain(..).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut T> {
        self.items.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct It {
        topic: &'static str,
        n: u32,
        policy: OutboxPolicy,
        hp: bool,
    }

    fn it(topic: &'static str, n: u32, policy: OutboxPolicy) -> It {
        It { topic, n, policy, hp: false }
    }

    impl OutboxItem for It {
        fn policy(&self) -> OutboxPolicy {
            self.policy
        }
        fn capacity(&self) -> Option<usize> {
            None
        }
        fn high_priority(&self) -> bool {
            self.hp
        }
        fn conflates_with(&self, other: &Self) -> bool {
            self.topic == other.topic
        }
    }

    fn drain(o: &mut Outbox<It>) -> Vec<u32> {
        std::iter::from_fn(|| o.pop()).map(|i| i.n).collect()
    }

    /// An emptied ring is released (idle subscribers hold no slots), and the
    /// next burst gets the released size in one allocation.
    #[test]
    fn a_released_ring_comes_back_at_its_size_at_once() {
        let mut o = Outbox::new(1000);
        for n in 0..500 {
            o.push(it("a", n, OutboxPolicy::Queue));
        }
        let burst = o.items.capacity();
        assert_eq!(drain(&mut o).len(), 500);
        assert_eq!(o.items.capacity(), 0, "an empty ring is given back");
        o.push(it("a", 0, OutboxPolicy::Queue));
        assert!(o.items.capacity() >= burst, "{} slots, the burst had {burst}", o.items.capacity());
        // A capacity of zero is one; capacities beyond u32 are clamped.
        let mut o = Outbox::<It>::new(0);
        assert_eq!(o.capacity(), 1);
        o.set_capacity(usize::MAX);
        assert_eq!(o.capacity(), u32::MAX as usize);
        assert_eq!(std::mem::size_of::<Outbox<It>>(), 64, "one cache line");
    }

    #[test]
    fn queue_keeps_the_queue_and_refuses() {
        let mut o = Outbox::new(2);
        assert!(matches!(o.push(it("a", 1, OutboxPolicy::Queue)), Pushed::Queued { was_empty: true }));
        assert!(matches!(o.push(it("a", 2, OutboxPolicy::Queue)), Pushed::Queued { was_empty: false }));
        assert!(matches!(o.push(it("a", 3, OutboxPolicy::Queue)), Pushed::Refused(_)));
        assert_eq!(drain(&mut o), vec![1, 2]);
        assert_eq!(o.dropped(), 1);
    }

    #[test]
    fn drop_oldest_makes_room_but_spares_high_priority() {
        let mut o = Outbox::new(3);
        o.push(It { hp: true, ..it("g", 1, OutboxPolicy::DropOldest) });
        o.push(it("d", 2, OutboxPolicy::DropOldest));
        o.push(it("d", 3, OutboxPolicy::DropOldest));
        assert!(matches!(o.push(it("d", 4, OutboxPolicy::DropOldest)), Pushed::QueuedDropping(It { n: 2, .. })));
        assert_eq!(drain(&mut o), vec![1, 3, 4]);
    }

    #[test]
    fn drop_oldest_never_discards_a_queue_item() {
        let mut o = Outbox::new(2);
        o.push(it("chat", 1, OutboxPolicy::Queue));
        o.push(it("live", 2, OutboxPolicy::DropOldest));
        assert!(matches!(o.push(it("live", 3, OutboxPolicy::DropOldest)), Pushed::QueuedDropping(It { n: 2, .. })));
        // Only the chat message is left to discard: the comment is refused instead.
        let mut o = Outbox::new(1);
        o.push(it("chat", 1, OutboxPolicy::Queue));
        assert!(matches!(o.push(it("live", 2, OutboxPolicy::DropOldest)), Pushed::Refused(_)));
        assert_eq!(drain(&mut o), vec![1]);
    }

    #[test]
    fn high_priority_may_exceed_capacity_up_to_twice() {
        let mut o = Outbox::new(2);
        let hp = |n| It { hp: true, ..it("g", n, OutboxPolicy::DropOldest) };
        for n in 1..=4 {
            assert!(matches!(o.push(hp(n)), Pushed::Queued { .. }), "{n}");
        }
        assert!(matches!(o.push(hp(5)), Pushed::Refused(_)));
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn conflate_keeps_the_newest_per_topic() {
        let mut o = Outbox::new(10);
        for n in 1..=5 {
            o.push(it("car1", n, OutboxPolicy::Conflate));
            o.push(it("car2", 10 + n, OutboxPolicy::Conflate));
        }
        assert_eq!(drain(&mut o), vec![5, 15]);
        assert_eq!(o.dropped(), 0);
    }

    #[test]
    fn conflate_at_capacity_drops_the_oldest_topic() {
        let mut o = Outbox::new(2);
        o.push(it("car1", 1, OutboxPolicy::Conflate));
        o.push(it("car2", 2, OutboxPolicy::Conflate));
        assert!(matches!(o.push(it("car3", 3, OutboxPolicy::Conflate)), Pushed::QueuedDropping(It { n: 1, .. })));
        assert_eq!(drain(&mut o), vec![2, 3]);
    }
}
