//! A subscriber's bounded queue of pending deliveries and what happens when it
//! is full.
//!
//! Owns: capacity and the overflow policy. Pure data: no locks, no I/O; the
//! session wraps it in its lock. Must never: grow past its capacity.

use std::collections::VecDeque;

/// What to do with a new message when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Keep what is queued, refuse the new message (plain MQTT, like
    /// Mosquitto's `max_queued_messages`).
    DropNew,
    /// Make room by discarding the oldest queued message (live streams where
    /// only recent messages matter).
    DropOldest,
}

#[derive(Debug)]
pub enum Pushed<T> {
    /// Queued; `was_empty` tells the caller to wake the writer.
    Queued { was_empty: bool },
    /// Queued after discarding this older item (DropOldest).
    QueuedDropping(T),
    /// Refused: the item comes back (DropNew).
    Refused(T),
}

/// An empty outbox whose ring holds more slots than this releases it.
const SHRINK_ABOVE: usize = 64;

#[derive(Debug)]
pub struct Outbox<T> {
    items: VecDeque<T>,
    capacity: usize,
    policy: OverflowPolicy,
    dropped: u64,
}

impl<T> Outbox<T> {
    pub fn new(capacity: usize, policy: OverflowPolicy) -> Self {
        Outbox { items: VecDeque::new(), capacity: capacity.max(1), policy, dropped: 0 }
    }

    pub fn push(&mut self, item: T) -> Pushed<T> {
        if self.items.len() < self.capacity {
            let was_empty = self.items.is_empty();
            self.items.push_back(item);
            return Pushed::Queued { was_empty };
        }
        self.dropped += 1;
        match self.policy {
            OverflowPolicy::DropNew => Pushed::Refused(item),
            OverflowPolicy::DropOldest => {
                let oldest = self.items.pop_front().expect("capacity >= 1 and full");
                self.items.push_back(item);
                Pushed::QueuedDropping(oldest)
            }
        }
    }

    /// Changes the capacity. Items already queued beyond a lowered capacity
    /// stay; new ones are refused or make room as the policy says.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Appends ignoring capacity: only for restoring what was already accepted
    /// before a restart.
    pub fn push_unbounded(&mut self, item: T) {
        self.items.push_back(item);
    }

    /// Whether the next push is queued without refusing or discarding anything.
    pub fn accepts_without_dropping(&self) -> bool {
        self.items.len() < self.capacity
    }

    /// Puts an item back at the front (it could not be sent yet); may exceed
    /// capacity by the one item that was just taken out.
    pub fn push_front(&mut self, item: T) {
        self.items.push_front(item);
    }

    pub fn pop(&mut self) -> Option<T> {
        let item = self.items.pop_front();
        // Give a burst's memory back once it has drained: an idle subscriber
        // should not keep a thousand-slot ring allocated.
        if self.items.is_empty() && self.items.capacity() > SHRINK_ABOVE {
            self.items = VecDeque::new();
        }
        item
    }

    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Messages refused or discarded since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn clear(&mut self) -> Vec<T> {
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

    #[test]
    fn drop_new_keeps_the_queue_and_refuses() {
        let mut o = Outbox::new(2, OverflowPolicy::DropNew);
        assert!(matches!(o.push(1), Pushed::Queued { was_empty: true }));
        assert!(matches!(o.push(2), Pushed::Queued { was_empty: false }));
        assert!(matches!(o.push(3), Pushed::Refused(3)));
        assert_eq!((o.pop(), o.pop(), o.pop()), (Some(1), Some(2), None));
        assert_eq!(o.dropped(), 1);
    }

    #[test]
    fn drop_oldest_makes_room() {
        let mut o = Outbox::new(2, OverflowPolicy::DropOldest);
        o.push(1);
        o.push(2);
        assert!(matches!(o.push(3), Pushed::QueuedDropping(1)));
        assert_eq!((o.pop(), o.pop()), (Some(2), Some(3)));
    }

    #[test]
    fn capacity_can_change_and_keeps_what_is_queued() {
        let mut o = Outbox::new(1, OverflowPolicy::DropNew);
        o.push(1);
        assert!(matches!(o.push(2), Pushed::Refused(2)));
        o.set_capacity(2);
        assert!(matches!(o.push(2), Pushed::Queued { was_empty: false }));
        o.set_capacity(1);
        assert_eq!(o.len(), 2);
        assert!(matches!(o.push(3), Pushed::Refused(3)));
    }
}
