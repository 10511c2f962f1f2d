//! Per-partition bookkeeping of unfinished offsets: what may be committed.
//!
//! Deliveries finish in any order. For each assigned partition the tracker keeps the offsets
//! handed out and not yet finished; the commit position is the lowest of them (or one past the
//! highest offset seen when none is pending), so a commit never passes an unfinished message.
//!
//! Every assignment of a partition gets a new *generation*. Revoking a partition forgets it, so
//! late acks from its old deliveries (now owned by another group member) change nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use tokio::sync::Notify;

/// Identifies one message of one assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) generation: u64,
}

#[derive(Debug)]
struct Partition {
    generation: u64,
    pending: BTreeSet<i64>,
    /// One past the highest offset handed out; `None` before the first message.
    next: Option<i64>,
    /// The position last sent to the broker.
    committed: Option<i64>,
}

impl Partition {
    fn new(generation: u64) -> Self {
        Self {
            generation,
            pending: BTreeSet::new(),
            next: None,
            committed: None,
        }
    }

    fn position(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, HashMap<i32, Partition>>,
    generations: u64,
    finished_since_commit: usize,
}

impl State {
    fn generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }

    fn partition(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.topics.get_mut(topic)?.get_mut(&partition)
    }
}

#[derive(Debug)]
pub(crate) struct Tracker {
    state: Mutex<State>,
    commit_every: usize,
    /// Wakes the committer early once `commit_every` deliveries finished.
    pub(crate) wake: Notify,
    /// Wakes retries waiting out their delay when partitions are revoked: those of a revoked
    /// partition end at once instead of holding their worker slot.
    pub(crate) revoked: Notify,
}

impl Tracker {
    pub(crate) fn new(commit_every: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            commit_every: commit_every.max(1),
            wake: Notify::new(),
            revoked: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few map operations that cannot panic halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts tracking newly assigned partitions (a fresh generation each).
    pub(crate) fn assign(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for elem in tpl.elements() {
            let generation = state.generation();
            state
                .topics
                .entry(elem.topic().to_owned())
                .or_default()
                .insert(elem.partition(), Partition::new(generation));
        }
    }

    /// Stops tracking revoked partitions; returns the positions to commit for them.
    pub(crate) fn revoke(&self, tpl: &TopicPartitionList) -> TopicPartitionList {
        let mut state = self.lock();
        let mut commit = TopicPartitionList::new();
        for elem in tpl.elements() {
            let Some(parts) = state.topics.get_mut(elem.topic()) else {
                continue;
            };
            if let Some(part) = parts.remove(&elem.partition())
                && let Some(position) = part.position()
            {
                add(&mut commit, elem.topic(), elem.partition(), position);
            }
            if parts.is_empty() {
                state.topics.remove(elem.topic());
            }
        }
        drop(state);
        self.revoked.notify_waiters();
        commit
    }

    /// Records a message handed out; returns its token.
    pub(crate) fn received(&self, topic: &str, partition: i32, offset: i64) -> Token {
        let mut state = self.lock();
        let generation = if let Some(part) = state.partition(topic, partition) {
            part.generation
        } else {
            // A message before its assignment callback should not happen; track it anyway so
            // it is processed rather than lost.
            let generation = state.generation();
            state
                .topics
                .entry(topic.to_owned())
                .or_default()
                .insert(partition, Partition::new(generation));
            generation
        };
        if let Some(part) = state.partition(topic, partition) {
            part.pending.insert(offset);
            part.next = Some(part.next.map_or(offset + 1, |n| n.max(offset + 1)));
        }
        Token {
            topic: topic.to_owned(),
            partition,
            offset,
            generation,
        }
    }

    /// Whether `token` still belongs to a current assignment.
    pub(crate) fn is_current(&self, token: &Token) -> bool {
        self.lock()
            .partition(&token.topic, token.partition)
            .is_some_and(|p| p.generation == token.generation && p.pending.contains(&token.offset))
    }

    /// Marks a message finished. Returns `false` when its partition was revoked meanwhile.
    pub(crate) fn finish(&self, token: &Token) -> bool {
        let mut state = self.lock();
        let finished = match state.partition(&token.topic, token.partition) {
            Some(part) if part.generation == token.generation => part.pending.remove(&token.offset),
            _ => false,
        };
        if finished {
            state.finished_since_commit += 1;
            if state.finished_since_commit >= self.commit_every {
                state.finished_since_commit = 0;
                drop(state);
                self.wake.notify_one();
            }
        }
        finished
    }

    /// Positions that moved since the last commit; they are recorded as committed.
    pub(crate) fn take_commits(&self) -> TopicPartitionList {
        let mut state = self.lock();
        state.finished_since_commit = 0;
        let mut commit = TopicPartitionList::new();
        for (topic, parts) in &mut state.topics {
            for (&partition, part) in parts.iter_mut() {
                let Some(position) = part.position() else {
                    continue;
                };
                if part.committed.is_none_or(|c| position > c) {
                    part.committed = Some(position);
                    add(&mut commit, topic, partition, position);
                }
            }
        }
        commit
    }

    /// Every known position, whether or not it moved.
    pub(crate) fn positions(&self) -> TopicPartitionList {
        let mut state = self.lock();
        let mut commit = TopicPartitionList::new();
        for (topic, parts) in &mut state.topics {
            for (&partition, part) in parts.iter_mut() {
                if let Some(position) = part.position() {
                    part.committed = Some(position);
                    add(&mut commit, topic, partition, position);
                }
            }
        }
        commit
    }

    /// A commit failed: send these positions again next time.
    pub(crate) fn commit_failed(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for elem in tpl.elements() {
            if let Some(part) = state.partition(elem.topic(), elem.partition()) {
                part.committed = None;
            }
        }
    }

    /// Unfinished offsets of one partition (for tests and diagnostics).
    #[cfg(test)]
    fn pending(&self, topic: &str, partition: i32) -> Vec<i64> {
        self.lock()
            .partition(topic, partition)
            .map(|p| p.pending.iter().copied().collect())
            .unwrap_or_default()
    }
}

fn add(tpl: &mut TopicPartitionList, topic: &str, partition: i32, offset: i64) {
    // Only fails for offsets librdkafka cannot represent, which a broker never hands out.
    if let Err(err) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
        tracing::warn!(
            topic,
            partition,
            offset,
            error = &err as &dyn std::error::Error,
            "kafka offset not committable"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpl(parts: &[(&str, i32)]) -> TopicPartitionList {
        let mut t = TopicPartitionList::new();
        for (topic, p) in parts {
            t.add_partition(topic, *p);
        }
        t
    }

    fn offsets(tpl: &TopicPartitionList) -> Vec<(String, i32, i64)> {
        let mut v: Vec<_> = tpl
            .elements()
            .iter()
            .map(|e| {
                (
                    e.topic().to_owned(),
                    e.partition(),
                    e.offset().to_raw().unwrap_or(-1),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commits_never_pass_an_unfinished_offset() {
        let t = Tracker::new(1000);
        t.assign(&tpl(&[("a", 0)]));
        let tokens: Vec<_> = (10..15).map(|o| t.received("a", 0, o)).collect();
        assert!(offsets(&t.take_commits()).iter().all(|(_, _, o)| *o == 10));
        // Finish out of order: 11, 13, 14 done; 10 and 12 still running.
        for i in [1, 3, 4] {
            assert!(t.finish(&tokens[i]));
        }
        assert!(
            offsets(&t.take_commits()).is_empty(),
            "position is still 10"
        );
        assert!(t.finish(&tokens[0]));
        assert_eq!(offsets(&t.take_commits()), [("a".into(), 0, 12)]);
        assert!(t.finish(&tokens[2]));
        assert_eq!(offsets(&t.take_commits()), [("a".into(), 0, 15)]);
        assert!(offsets(&t.take_commits()).is_empty());
        assert!(t.pending("a", 0).is_empty());
    }

    #[test]
    fn revoked_partitions_ignore_late_acks() {
        let t = Tracker::new(1000);
        t.assign(&tpl(&[("a", 0), ("a", 1)]));
        let a0 = t.received("a", 0, 0);
        let a0b = t.received("a", 0, 1);
        let a1 = t.received("a", 1, 5);
        assert!(t.finish(&a0));
        let revoked = t.revoke(&tpl(&[("a", 0)]));
        assert_eq!(offsets(&revoked), [("a".into(), 0, 1)]);
        assert!(!t.is_current(&a0b));
        assert!(!t.finish(&a0b), "stale ack must not count");
        // Reassigned: a new generation; the old token is still stale.
        t.assign(&tpl(&[("a", 0)]));
        assert!(!t.finish(&a0b));
        let again = t.received("a", 0, 1);
        assert_ne!(again.generation, a0b.generation);
        assert!(t.is_current(&again) && t.is_current(&a1));
    }

    #[test]
    fn wakes_the_committer_every_n_acks() {
        let t = Tracker::new(2);
        t.assign(&tpl(&[("a", 0)]));
        let a = t.received("a", 0, 0);
        let b = t.received("a", 0, 1);
        t.finish(&a);
        t.finish(&b);
        // A stored permit means the committer's next `notified()` returns at once.
        let notified = t.wake.notified();
        futures_poll_ready(notified);
    }

    fn futures_poll_ready<F: std::future::Future>(f: F) {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        assert!(f.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn failed_commits_are_resent() {
        let t = Tracker::new(1000);
        t.assign(&tpl(&[("a", 0)]));
        let a = t.received("a", 0, 3);
        t.finish(&a);
        let first = t.take_commits();
        assert_eq!(offsets(&first), [("a".into(), 0, 4)]);
        t.commit_failed(&first);
        assert_eq!(offsets(&t.take_commits()), [("a".into(), 0, 4)]);
        assert_eq!(offsets(&t.positions()), [("a".into(), 0, 4)]);
    }
}
