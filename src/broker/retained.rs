//! The retained messages held in memory, with their total size, so the
//! `[retained]` quotas can be checked without a scan.
//!
//! Owns: the map and the byte count that must always agree with it. Must
//! never: be changed except through `insert` and `remove`.

use super::Message;
use crate::topic::TopicName;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct RetainedMap {
    map: HashMap<TopicName, Arc<Message>>,
    bytes: usize,
}

impl RetainedMap {
    pub fn insert(&mut self, message: Arc<Message>) {
        self.bytes += message.footprint();
        if let Some(old) = self.map.insert(message.topic.clone(), message) {
            self.bytes -= old.footprint();
        }
    }

    pub fn remove(&mut self, topic: &TopicName) -> Option<Arc<Message>> {
        let old = self.map.remove(topic)?;
        self.bytes -= old.footprint();
        Some(old)
    }

    pub fn get(&self, topic: &TopicName) -> Option<&Arc<Message>> {
        self.map.get(topic)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether storing `message` (new topic, or replacing its topic's
    /// message) stays within `max_messages` and `max_bytes`.
    pub fn fits(&self, message: &Message, max_messages: usize, max_bytes: usize) -> bool {
        let replaced = self.map.get(&message.topic);
        let count = self.map.len() + usize::from(replaced.is_none());
        let bytes = self.bytes - replaced.map_or(0, |m| m.footprint()) + message.footprint();
        count <= max_messages && bytes <= max_bytes
    }
}
