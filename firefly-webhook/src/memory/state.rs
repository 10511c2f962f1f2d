//! The broker's state behind its one lock: queues, delayed retries, dead letters, and the
//! accounting that bounds them.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::MemoryConfig;
use crate::dead_letter::DeadLetter;
use crate::event::WebhookEvent;
use crate::metric;
use crate::publish::PublishError;

/// Bytes charged per event on top of its body and headers: the event struct, its queue slot,
/// the map node and name of a queue it may be alone in, and the acker of its delivery.
pub(super) const EVENT_OVERHEAD: usize = 512;
/// Bytes charged per header value on top of its name and value.
const HEADER_OVERHEAD: usize = 64;
/// Bytes charged per dead letter on top of its event and its record's strings.
const DEAD_LETTER_OVERHEAD: usize = 128;

/// What `event` costs while the broker holds it for `destination`.
pub(super) fn footprint(destination: &str, event: &WebhookEvent) -> usize {
    let headers: usize = event
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + HEADER_OVERHEAD)
        .sum();
    EVENT_OVERHEAD
        + destination.len()
        + event.body.len()
        + headers
        + event.provider.len()
        + event.path.len()
        + event.query.as_ref().map_or(0, String::len)
        + event.correlation_id.len()
        + event.content_type.as_ref().map_or(0, String::len)
}

fn record_footprint(record: &DeadLetter) -> usize {
    DEAD_LETTER_OVERHEAD + record.reason.len() + record.error_type.len() + record.destination.len()
}

/// One event the broker holds, queued or waiting for a delayed retry.
pub(super) struct Entry {
    pub(super) event: WebhookEvent,
    pub(super) attempt: u32,
    pub(super) sequence: u64,
    /// Its [`footprint`], charged from publish until it is acked or its dead letter evicted.
    pub(super) bytes: usize,
}

struct Dead {
    destination: Arc<str>,
    event: WebhookEvent,
    record: DeadLetter,
    /// The event's footprint plus its record's.
    bytes: usize,
}

/// Why an event was [rejected](PublishError::Rejected): it could never fit in the budget.
#[derive(Debug, thiserror::Error)]
#[error("the event ({size} bytes) is larger than the memory budget ({budget} bytes)")]
pub(super) struct TooLarge {
    size: usize,
    budget: usize,
}

/// Everything the broker holds. Invariants: every queue in `queues` is non-empty; `events`
/// counts the entries in `queues` and `delayed` plus `handed_out`; `bytes` is the sum of their
/// footprints (a handed-out event's is kept by its acker) plus `dead_bytes`, and stays at
/// most `config.max_bytes` but for the record of the newest dead letter.
pub(super) struct State {
    config: MemoryConfig,
    /// Per destination, in name order so that a subscriber of every destination can resume
    /// after the one it served last in `O(log n)`.
    queues: BTreeMap<Arc<str>, VecDeque<Entry>>,
    /// Retries waiting for their time, by (due, sequence): polled by the subscribers, so a
    /// retry costs no task or timer of its own.
    delayed: BTreeMap<(Instant, u64), (Arc<str>, Entry)>,
    /// The newest dead letters, oldest first.
    dead: VecDeque<Dead>,
    dead_bytes: usize,
    evicted: u64,
    handed_out: usize,
    events: usize,
    bytes: usize,
    next_sequence: u64,
    /// The gauges' handles, registered at the first report (see `crate::handles`).
    gauges: Option<Gauges>,
}

struct Gauges {
    bytes: Reported,
    events: Reported,
    dead_letters: Reported,
}

/// A gauge and the value last set on it. An unchanged value is not set again: each set writes
/// to memory that the threads publishing and the threads acking hand back and forth, and the
/// dead-letter count, for one, stays the same for almost every event.
struct Reported {
    gauge: metrics::Gauge,
    last: Option<usize>,
}

impl Reported {
    fn new(gauge: metrics::Gauge) -> Self {
        Self { gauge, last: None }
    }

    fn set(&mut self, value: usize) {
        if self.last != Some(value) {
            self.last = Some(value);
            #[allow(clippy::cast_precision_loss)] // a gauge; precise well beyond any budget
            self.gauge.set(value as f64);
        }
    }
}

impl State {
    pub(super) fn new(config: MemoryConfig) -> Self {
        Self {
            config,
            queues: BTreeMap::new(),
            delayed: BTreeMap::new(),
            dead: VecDeque::new(),
            dead_bytes: 0,
            evicted: 0,
            handed_out: 0,
            events: 0,
            bytes: 0,
            next_sequence: 0,
            gauges: None,
        }
    }

    pub(super) fn config(&self) -> &MemoryConfig {
        &self.config
    }

    fn sequence(&mut self) -> u64 {
        self.next_sequence += 1;
        self.next_sequence
    }

    /// Queues a new event, or refuses it when it does not fit. Dead letters give way to it:
    /// a live event is worth more than the copy of one given up on.
    pub(super) fn publish(
        &mut self,
        destination: &str,
        event: WebhookEvent,
    ) -> Result<(), PublishError> {
        let bytes = footprint(destination, &event);
        let budget = self.config.max_bytes;
        if bytes > budget {
            return Err(PublishError::rejected(TooLarge {
                size: bytes,
                budget,
            }));
        }
        let queued = self.queues.get(destination).map_or(0, VecDeque::len);
        if queued >= self.config.queue_capacity || self.bytes - self.dead_bytes + bytes > budget {
            return Err(PublishError::Overloaded);
        }
        let mut evicted = 0;
        while self.bytes + bytes > budget && self.evict_oldest_dead_letter() {
            evicted += 1;
        }
        let entry = Entry {
            event,
            attempt: 1,
            sequence: self.sequence(),
            bytes,
        };
        self.events += 1;
        self.bytes += bytes;
        self.enqueue(destination, entry, false);
        self.report(evicted);
        Ok(())
    }

    fn enqueue(&mut self, destination: &str, entry: Entry, front: bool) {
        let queue = match self.queues.get_mut(destination) {
            Some(queue) => queue,
            None => self.queues.entry(Arc::from(destination)).or_default(),
        };
        if front {
            queue.push_front(entry);
        } else {
            queue.push_back(entry);
        }
    }

    /// Moves the delayed retries that are due into their queues; returns whether any moved
    /// and when the next one is due.
    /// (`now` is only read when retries are waiting.)
    pub(super) fn promote_due(&mut self, now: impl FnOnce() -> Instant) -> (bool, Option<Instant>) {
        if self.delayed.is_empty() {
            return (false, None);
        }
        let now = now();
        let mut moved = false;
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                return (moved, Some(entry.key().0));
            }
            let (destination, mut entry) = entry.remove();
            entry.sequence = self.sequence();
            self.enqueue(&destination, entry, false);
            moved = true;
        }
        (moved, None)
    }

    /// Hands out the next event of `names` (all destinations when `None`), round robin from
    /// `cursor`: one busy destination cannot starve the others.
    pub(super) fn pop(
        &mut self,
        names: Option<&[Arc<str>]>,
        cursor: &mut Cursor,
    ) -> Option<(Arc<str>, Entry)> {
        let (name, queue) = match (names, cursor) {
            (Some(names), Cursor::Index(next)) => {
                let found = (0..names.len())
                    .map(|i| (*next + i) % names.len())
                    .find(|&i| self.queues.contains_key(&names[i]))?;
                *next = (found + 1) % names.len();
                let name = names[found].clone();
                let queue = self.queues.get_mut(&name)?;
                (name, queue)
            }
            (_, cursor) => {
                let after = match cursor {
                    Cursor::After(Some(last)) => Bound::Excluded(&**last),
                    _ => Bound::Unbounded,
                };
                // The first queue after the cursor's, else the first of all (round again).
                let wraps = self
                    .queues
                    .range::<str, _>((after, Bound::Unbounded))
                    .next()
                    .is_none();
                let (name, queue) = if wraps {
                    self.queues.iter_mut().next()?
                } else {
                    self.queues
                        .range_mut::<str, _>((after, Bound::Unbounded))
                        .next()?
                };
                // A destination served again (the only one, say) keeps its place as it is.
                if !matches!(cursor, Cursor::After(Some(last)) if Arc::ptr_eq(last, name)) {
                    *cursor = Cursor::After(Some(Arc::clone(name)));
                }
                (Arc::clone(name), queue)
            }
        };
        let entry = queue.pop_front()?;
        if queue.is_empty() {
            // Provider names come and go (without an allowlist, any client can invent one).
            self.queues.remove(&name);
        }
        self.handed_out += 1;
        Some((name, entry))
    }

    /// A handed-out event that cost `bytes` is done with: processed (or dropped unsettled),
    /// or dead-lettered (`dead`: its destination, the event and the failure record).
    pub(super) fn finish(
        &mut self,
        bytes: usize,
        dead: Option<(Arc<str>, WebhookEvent, DeadLetter)>,
    ) {
        self.handed_out -= 1;
        self.events -= 1;
        let mut evicted = 0;
        match dead {
            None => self.bytes -= bytes,
            Some(_) if self.config.dead_letters == 0 => {
                self.bytes -= bytes;
                self.evicted += 1;
                evicted = 1;
            }
            Some((destination, event, record)) => {
                let extra = record_footprint(&record);
                self.bytes += extra;
                self.dead_bytes += bytes + extra;
                self.dead.push_back(Dead {
                    destination,
                    event,
                    record,
                    bytes: bytes + extra,
                });
                // The ring's length, then the budget: older dead letters make room for the
                // newest's record.
                while (self.dead.len() > self.config.dead_letters
                    || (self.bytes > self.config.max_bytes && self.dead.len() > 1))
                    && self.evict_oldest_dead_letter()
                {
                    evicted += 1;
                }
            }
        }
        self.report(evicted);
    }

    /// A handed-out event (that cost `bytes`) is to be delivered again as `attempt`: after
    /// `delay`, or at once at the front of its queue (`front`: given back unprocessed). It
    /// keeps its bytes either way, and needs no room: it has it.
    pub(super) fn redeliver(
        &mut self,
        destination: Arc<str>,
        event: WebhookEvent,
        attempt: u32,
        bytes: usize,
        delay: Duration,
        front: bool,
    ) {
        self.handed_out -= 1;
        let entry = Entry {
            event,
            attempt,
            sequence: self.sequence(),
            bytes,
        };
        if delay.is_zero() {
            self.enqueue(&destination, entry, front);
        } else {
            let key = (Instant::now() + delay, entry.sequence);
            self.delayed.insert(key, (destination, entry));
        }
    }

    /// Drops the oldest dead letter and its bytes; false when there is none.
    fn evict_oldest_dead_letter(&mut self) -> bool {
        let Some(dead) = self.dead.pop_front() else {
            return false;
        };
        self.dead_bytes -= dead.bytes;
        self.bytes -= dead.bytes;
        self.evicted += 1;
        true
    }

    fn report(&mut self, evicted: u64) {
        let gauges = self.gauges.get_or_insert_with(|| Gauges {
            bytes: Reported::new(metrics::gauge!(metric::MEMORY_QUEUE_BYTES)),
            events: Reported::new(metrics::gauge!(metric::MEMORY_QUEUE_EVENTS)),
            dead_letters: Reported::new(metrics::gauge!(metric::MEMORY_DEAD_LETTERS)),
        });
        gauges.bytes.set(self.bytes);
        gauges.events.set(self.events);
        gauges.dead_letters.set(self.dead.len());
        if evicted > 0 {
            metrics::counter!(metric::MEMORY_DEAD_LETTERS_EVICTED_TOTAL).increment(evicted);
        }
    }

    pub(super) fn len(&self, destination: &str) -> usize {
        self.queues.get(destination).map_or(0, VecDeque::len)
    }

    pub(super) fn total_len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Handed out and not settled, plus waiting for a delayed retry.
    pub(super) fn in_flight(&self) -> usize {
        self.handed_out + self.delayed.len()
    }

    pub(super) fn events(&self) -> usize {
        self.events
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn dead_letters(&self, destination: &str) -> Vec<(WebhookEvent, DeadLetter)> {
        self.dead
            .iter()
            .filter(|dead| &*dead.destination == destination)
            .map(|dead| (dead.event.clone(), dead.record.clone()))
            .collect()
    }

    pub(super) fn dead_letter_count(&self) -> usize {
        self.dead.len()
    }

    pub(super) fn dead_letters_evicted(&self) -> u64 {
        self.evicted
    }
}

/// Where a subscriber resumes its round robin.
#[derive(Debug)]
pub(super) enum Cursor {
    /// Over all destinations: after this name.
    After(Option<Arc<str>>),
    /// Over a subscriber's own list: at this index.
    Index(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_bytes: usize, queue_capacity: usize, dead_letters: usize) -> MemoryConfig {
        MemoryConfig {
            max_bytes,
            queue_capacity,
            dead_letters,
        }
    }

    #[test]
    fn gauges_are_set_when_their_value_changes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Default)]
        struct Sets(AtomicUsize);
        impl metrics::GaugeFn for Sets {
            fn increment(&self, _: f64) {}
            fn decrement(&self, _: f64) {}
            fn set(&self, _: f64) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let sets = Arc::new(Sets::default());
        let mut reported = Reported::new(metrics::Gauge::from_arc(sets.clone()));
        for value in [0, 0, 3, 3, 3, 0, 0] {
            reported.set(value);
        }
        // The first value, then each change: 0, 3, 0.
        assert_eq!(sets.0.load(Ordering::Relaxed), 3);
    }

    fn event(body: &str) -> WebhookEvent {
        WebhookEvent::new("acme", body.to_owned())
    }

    fn record() -> DeadLetter {
        DeadLetter::new(
            "down",
            crate::FailureCategory::Processing,
            3,
            "transient",
            "acme",
        )
    }

    #[test]
    fn footprint_counts_body_headers_and_overhead() {
        let plain = footprint("acme", &event(""));
        assert!(plain >= EVENT_OVERHEAD);
        assert_eq!(footprint("acme", &event(&"x".repeat(1000))), plain + 1000);
        let mut headers = http::HeaderMap::new();
        headers.append("x-a", "12345".parse().unwrap());
        headers.append("x-a", "6".parse().unwrap());
        let with_headers = event("").with_headers(headers);
        assert_eq!(
            footprint("acme", &with_headers),
            plain + 2 * (3 + HEADER_OVERHEAD) + 6
        );
        assert_eq!(footprint("acme-longer", &event("")), plain + 7);
    }

    #[test]
    fn round_robin_over_all_destinations_resumes_after_the_last() {
        let mut state = State::new(config(1 << 20, 100, 10));
        for name in ["c", "a", "b", "a", "c"] {
            state.publish(name, event(name)).unwrap();
        }
        let mut cursor = Cursor::After(None);
        let order: Vec<String> = std::iter::from_fn(|| state.pop(None, &mut cursor))
            .map(|(name, _)| name.to_string())
            .collect();
        assert_eq!(order, ["a", "b", "c", "a", "c"]);
        assert!(state.is_empty());
        assert_eq!(state.in_flight(), 5);
    }

    #[test]
    fn a_dead_letter_ring_of_zero_keeps_none() {
        let mut state = State::new(config(1 << 20, 100, 0));
        state.publish("acme", event("x")).unwrap();
        let (name, entry) = state.pop(None, &mut Cursor::After(None)).unwrap();
        state.finish(entry.bytes, Some((name, entry.event, record())));
        assert_eq!(state.dead_letter_count(), 0);
        assert_eq!(state.dead_letters_evicted(), 1);
        assert_eq!(state.bytes(), 0);
        assert_eq!(state.events(), 0);
    }
}
