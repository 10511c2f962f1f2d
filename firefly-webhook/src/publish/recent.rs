//! [`RecentNames`]: the bounded memory of a publisher for the destinations it has prepared.

use std::collections::HashSet;

/// A set of names bounded to about `capacity`: when its newer half is full, the older half is
/// forgotten, so the names in use stay and those not seen for a while go.
///
/// For a publisher that prepares a destination before its first publish (creates a Kafka topic,
/// declares RabbitMQ queues): remembering every name ever published to would grow without
/// bound when clients pick names, and forgetting one only costs preparing it again.
#[derive(Debug, Clone)]
pub struct RecentNames {
    newer: HashSet<String>,
    older: HashSet<String>,
    half: usize,
}

impl RecentNames {
    /// An empty set that holds at most `capacity` names (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            newer: HashSet::new(),
            older: HashSet::new(),
            half: (capacity / 2).max(1),
        }
    }

    /// Whether `name` is among the newer half: a read-only check (a shared lock suffices) for
    /// the hot path; `false` says nothing, ask [`contains`](Self::contains) then.
    pub fn is_recent(&self, name: &str) -> bool {
        self.newer.contains(name)
    }

    /// Whether `name` is known; a name found in the older half moves to the newer one.
    pub fn contains(&mut self, name: &str) -> bool {
        if self.newer.contains(name) {
            return true;
        }
        match self.older.take(name) {
            Some(name) => {
                self.push(name);
                true
            }
            None => false,
        }
    }

    /// Remembers `name` (as the newest).
    pub fn insert(&mut self, name: &str) {
        if !self.contains(name) {
            self.push(name.to_owned());
        }
    }

    /// Forgets `name`.
    pub fn remove(&mut self, name: &str) {
        self.newer.remove(name);
        self.older.remove(name);
    }

    /// Forgets every name.
    pub fn clear(&mut self) {
        self.newer.clear();
        self.older.clear();
    }

    /// How many names are remembered.
    pub fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }

    /// Whether no name is remembered.
    pub fn is_empty(&self) -> bool {
        self.newer.is_empty() && self.older.is_empty()
    }

    fn push(&mut self, name: String) {
        if self.newer.len() >= self.half {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_the_names_in_use() {
        let mut names = RecentNames::new(10);
        names.insert("hot");
        for i in 0..1000 {
            names.insert(&format!("cold-{i}"));
            // A name in use is looked up before each publish, and so stays.
            assert!(names.contains("hot"));
            assert!(names.len() <= 10, "{}", names.len());
        }
        assert!(!names.contains("cold-0"));
        assert!(names.contains("cold-999"));
        assert!(names.is_recent("cold-999"));
        names.remove("hot");
        assert!(!names.contains("hot"));
        names.clear();
        assert!(names.is_empty());
    }
}
