//! The embedded in-memory transport: bounded per-destination queues inside this process.
//!
//! It is the default for development, tests and single-process deployments that accept losing
//! queued events on a crash. A full queue makes [`MemoryPublisher::publish`] fail with
//! [`PublishError::Overloaded`] (the gateway answers 503); it never blocks or drops.
//!
//! ```
//! use firefly_webhook::memory::MemoryBroker;
//! use firefly_webhook::{Publisher, Subscriber, WebhookEvent};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let broker = MemoryBroker::new(1024);
//! let mut subscriber = broker.subscriber(); // every destination
//! broker.publisher().publish("github", WebhookEvent::new("github", "{}")).await.unwrap();
//!
//! let delivery = subscriber.next().await.unwrap().unwrap();
//! assert_eq!(delivery.destination, "github");
//! delivery.ack().await.unwrap();
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::event::WebhookEvent;
use crate::publish::{PublishError, Publisher};
use crate::subscribe::{Acker, Delivery, Position, SubscribeError, Subscriber};
use crate::wire::DeadLetter;

struct Entry {
    event: WebhookEvent,
    attempt: u32,
    sequence: u64,
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Entry>,
    dead: Vec<(WebhookEvent, DeadLetter)>,
}

struct Shared {
    capacity: usize,
    queues: Mutex<HashMap<String, Queue>>,
    notify: Notify,
    closed: AtomicBool,
    in_flight: AtomicU64,
    next_sequence: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        // A panic while holding this lock cannot leave a queue half-updated (every update is a
        // single push or pop), so a poisoned lock is safe to keep using.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn requeue(&self, destination: &str, event: WebhookEvent, attempt: u32, front: bool) {
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        let mut queues = self.lock();
        let queue = queues.entry(destination.to_owned()).or_default();
        let entry = Entry {
            event,
            attempt,
            sequence,
        };
        if front {
            queue.ready.push_front(entry);
        } else {
            queue.ready.push_back(entry);
        }
        drop(queues);
        self.notify.notify_waiters();
    }
}

/// An in-process broker. Cloning is cheap and shares the queues.
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("capacity", &self.shared.capacity)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// A broker whose queues each hold at most `capacity` undelivered events.
    pub fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                queues: Mutex::new(HashMap::new()),
                notify: Notify::new(),
                closed: AtomicBool::new(false),
                in_flight: AtomicU64::new(0),
                next_sequence: AtomicU64::new(0),
            }),
        }
    }

    /// A publisher into this broker.
    pub fn publisher(&self) -> MemoryPublisher {
        MemoryPublisher {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A subscriber that receives from every destination.
    pub fn subscriber(&self) -> MemorySubscriber {
        MemorySubscriber {
            shared: Arc::clone(&self.shared),
            destinations: None,
            cursor: 0,
        }
    }

    /// A subscriber that receives only from the named destinations. Several subscribers on
    /// one destination compete for its events.
    pub fn subscriber_for<I, S>(&self, destinations: I) -> MemorySubscriber
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        MemorySubscriber {
            shared: Arc::clone(&self.shared),
            destinations: Some(destinations.into_iter().map(Into::into).collect()),
            cursor: 0,
        }
    }

    /// Events waiting in `destination`'s queue.
    pub fn len(&self, destination: &str) -> usize {
        self.shared
            .lock()
            .get(destination)
            .map_or(0, |q| q.ready.len())
    }

    /// Events waiting in all queues together.
    pub fn total_len(&self) -> usize {
        self.shared.lock().values().map(|q| q.ready.len()).sum()
    }

    /// Whether every queue is empty.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().values().all(|q| q.ready.is_empty())
    }

    /// Deliveries handed out and not yet settled, plus retries waiting for their delay.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// The events dead-lettered from `destination`, with their failure records.
    pub fn dead_letters(&self, destination: &str) -> Vec<(WebhookEvent, DeadLetter)> {
        self.shared
            .lock()
            .get(destination)
            .map_or_else(Vec::new, |q| q.dead.clone())
    }

    /// Stops accepting events (publish fails as unavailable). Subscribers keep delivering what
    /// is queued and end only once nothing is queued, in flight, or waiting for a delayed retry,
    /// so a worker that runs until its subscription ends processes everything accepted.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.notify.notify_waiters();
    }
}

/// Publishes into a [`MemoryBroker`].
#[derive(Clone)]
pub struct MemoryPublisher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPublisher").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the memory broker is closed")]
struct Closed;

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish(
        &self,
        destination: &str,
        mut event: WebhookEvent,
    ) -> Result<(), PublishError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(PublishError::unavailable(Closed));
        }
        // Queued events must not pin the server's read buffers they were sliced from.
        event.detach();
        let sequence = self.shared.next_sequence.fetch_add(1, Ordering::Relaxed);
        let mut queues = self.shared.lock();
        let queue = match queues.get_mut(destination) {
            Some(q) => q,
            None => queues.entry(destination.to_owned()).or_default(),
        };
        if queue.ready.len() >= self.shared.capacity {
            return Err(PublishError::Overloaded);
        }
        queue.ready.push_back(Entry {
            event,
            attempt: 1,
            sequence,
        });
        drop(queues);
        self.shared.notify.notify_waiters();
        Ok(())
    }

    async fn health(&self) -> Result<(), PublishError> {
        if self.shared.closed.load(Ordering::Acquire) {
            Err(PublishError::unavailable(Closed))
        } else {
            Ok(())
        }
    }
}

/// Receives from a [`MemoryBroker`].
pub struct MemorySubscriber {
    shared: Arc<Shared>,
    destinations: Option<Vec<String>>,
    cursor: usize,
}

impl std::fmt::Debug for MemorySubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySubscriber")
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

impl MemorySubscriber {
    fn try_pop(&mut self) -> Option<(String, Entry)> {
        let mut queues = self.shared.lock();
        if let Some(names) = &self.destinations {
            for i in 0..names.len() {
                let name = &names[(self.cursor + i) % names.len()];
                if let Some(entry) = queues.get_mut(name).and_then(|q| q.ready.pop_front()) {
                    self.cursor = (self.cursor + i + 1) % names.len();
                    forget_if_empty(&mut queues, name);
                    return Some((name.clone(), entry));
                }
            }
            return None;
        }
        // Start after the queue served last so one busy destination cannot starve the others.
        let n = queues.len().max(1);
        let start = self.cursor % n;
        let (index, (name, queue)) = queues
            .iter_mut()
            .enumerate()
            .filter(|(_, (_, q))| !q.ready.is_empty())
            .min_by_key(|(i, _)| (i + n - start) % n)?;
        self.cursor = index + 1;
        let entry = queue.ready.pop_front()?;
        let name = name.clone();
        forget_if_empty(&mut queues, &name);
        Some((name, entry))
    }
}

/// Drops a destination's queue once it holds nothing, so provider names that come and go
/// (without an allowlist, any client can invent one) do not accumulate.
fn forget_if_empty(queues: &mut HashMap<String, Queue>, name: &str) {
    if queues
        .get(name)
        .is_some_and(|q| q.ready.is_empty() && q.dead.is_empty())
    {
        queues.remove(name);
    }
}

#[async_trait]
impl Subscriber for MemorySubscriber {
    async fn next(&mut self) -> Option<Result<Delivery, SubscribeError>> {
        let shared = Arc::clone(&self.shared);
        loop {
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some((destination, entry)) = self.try_pop() {
                self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
                let acker = MemoryAcker {
                    shared: Arc::clone(&self.shared),
                    destination: destination.clone(),
                };
                return Some(Ok(Delivery::new(
                    entry.event,
                    destination,
                    entry.attempt,
                    Position::Memory {
                        sequence: entry.sequence,
                    },
                    acker,
                )));
            }
            // A delivery still in flight may come back (retry, abandon): end only when none is.
            if self.shared.closed.load(Ordering::Acquire)
                && self.shared.in_flight.load(Ordering::Acquire) == 0
            {
                return None;
            }
            notified.await;
        }
    }
}

/// One delivery (or delayed redelivery) less in flight; wakes subscribers of a closed broker
/// when that was the last, so they can end.
fn settled(shared: &Shared) {
    let before = shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    if before == 1 && shared.closed.load(Ordering::Acquire) {
        shared.notify.notify_waiters();
    }
}

struct MemoryAcker {
    shared: Arc<Shared>,
    destination: String,
}

impl MemoryAcker {
    fn settled(&self) {
        settled(&self.shared);
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), SubscribeError> {
        self.settled();
        Ok(())
    }

    async fn retry(
        &self,
        event: &WebhookEvent,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), SubscribeError> {
        let shared = Arc::clone(&self.shared);
        let destination = self.destination.clone();
        let event = event.clone();
        if delay.is_zero() {
            shared.requeue(&destination, event, next_attempt, false);
            self.settled();
        } else {
            // Still in flight until it is queued again, so a closed broker's subscribers wait
            // for it instead of ending and losing it.
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                shared.requeue(&destination, event, next_attempt, false);
                settled(&shared);
            });
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        event: &WebhookEvent,
        failure: &DeadLetter,
    ) -> Result<(), SubscribeError> {
        self.shared
            .lock()
            .entry(self.destination.clone())
            .or_default()
            .dead
            .push((event.clone(), failure.clone()));
        self.settled();
        Ok(())
    }

    async fn abandon(&self, event: &WebhookEvent, attempt: u32) -> Result<(), SubscribeError> {
        self.shared
            .requeue(&self.destination, event.clone(), attempt, true);
        self.settled();
        Ok(())
    }
}
