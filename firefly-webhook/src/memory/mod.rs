//! The embedded in-memory transport: bounded queues inside this process.
//!
//! It is the default for development, tests and single-process deployments that accept losing
//! queued events on a crash. It never blocks or drops: an event that does not fit makes
//! [`MemoryPublisher::publish`] fail with [`PublishError::Overloaded`] (the gateway answers 503
//! with `Retry-After`, and the provider redelivers later).
//!
//! # Memory budget
//!
//! Everything the broker holds counts against one [`MemoryConfig`]: queued events, events
//! handed out to a worker and not settled yet, events waiting for a delayed retry, and dead
//! letters. An event costs its body and header bytes plus a fixed overhead of about 512 bytes
//! ([`MemoryBroker::bytes`] reports the total). So whatever providers send, how many provider
//! names they invent and however often processing fails, the transport holds at most
//! [`max_bytes`](MemoryConfig::max_bytes) (the default, 256 MiB, fits a 512 MB process):
//!
//! - a publish that would exceed [`max_bytes`](MemoryConfig::max_bytes), or find its
//!   destination's queue holding [`queue_capacity`](MemoryConfig::queue_capacity) events,
//!   fails as overloaded (and an event larger than the whole budget as rejected);
//! - a delivery keeps its bytes until it is settled; one dropped unsettled is forgotten, as a
//!   crash would forget it;
//! - a delayed retry keeps the bytes it had; it waits in one sorted map that the subscribers
//!   poll, not in a task or timer of its own, and never needs room to come back;
//! - dead letters are kept in a ring of the newest [`dead_letters`](MemoryConfig::dead_letters);
//!   older ones are evicted (and counted, see [`MemoryBroker::dead_letters_evicted`]) when the
//!   ring is full or when a new event needs their bytes: a live event is worth more than the
//!   copy of one given up on;
//! - an empty destination queue is dropped, and each event is charged for the queue it may be
//!   alone in, so a flood of new provider names stays within the budget too.
//!
//! The gauges [`MEMORY_QUEUE_BYTES`](crate::metric::MEMORY_QUEUE_BYTES),
//! [`MEMORY_QUEUE_EVENTS`](crate::metric::MEMORY_QUEUE_EVENTS) and
//! [`MEMORY_DEAD_LETTERS`](crate::metric::MEMORY_DEAD_LETTERS) and the counter
//! [`MEMORY_DEAD_LETTERS_EVICTED_TOTAL`](crate::metric::MEMORY_DEAD_LETTERS_EVICTED_TOTAL)
//! report it.
//!
//! ```
//! use firefly_webhook::memory::MemoryBroker;
//! use firefly_webhook::{Publisher, Subscriber, WebhookEvent};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let broker = MemoryBroker::new(1024); // 1,024 events per queue, within the default bytes
//! let mut subscriber = broker.subscriber_all(); // every destination
//! broker.publisher().publish("github", WebhookEvent::new("github", "{}")).await.unwrap();
//! assert!(broker.bytes() > 0);
//!
//! let delivery = subscriber.next().await.unwrap().unwrap();
//! assert_eq!(&*delivery.destination, "github");
//! delivery.ack().await.unwrap();
//! assert_eq!(broker.bytes(), 0);
//! # }
//! ```

mod state;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::state::{Cursor, State};
use crate::broker::Broker;
use crate::dead_letter::DeadLetter;
use crate::done::DoneOk;
use crate::event::WebhookEvent;
use crate::publish::{PublishError, Publisher, Storage};
use crate::subscribe::{Acker, Delivery, Position, SubscribeError, Subscriber};

/// The limits of a [`MemoryBroker`]; see the [module docs](self#memory-budget).
///
/// ```
/// use firefly_webhook::memory::{MemoryBroker, MemoryConfig};
///
/// let mut config = MemoryConfig::default();
/// config.max_bytes = 64 * 1024 * 1024;
/// config.dead_letters = 100;
/// let broker = MemoryBroker::with_config(config);
/// assert_eq!(broker.config().queue_capacity, MemoryConfig::default().queue_capacity);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Bytes held at most: queued, in-flight, delayed-retry and dead-lettered events together
    /// (default 256 MiB, half of a 512 MB process).
    pub max_bytes: usize,
    /// Events waiting in one destination's queue at most (default 10,000). Only publishing
    /// checks it: a retry or a delivery given back always finds its place.
    pub queue_capacity: usize,
    /// Dead letters kept, the newest (default 1,000; 0 keeps none).
    pub dead_letters: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
            queue_capacity: 10_000,
            dead_letters: 1_000,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
    closed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section mutates the state and then only reports metrics, so a panic
        // while holding the lock (a panicking metrics recorder) leaves it consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The memory transport's name, in [`Position`]s and health reports.
const TRANSPORT: &str = "memory";

/// An in-process broker. Cloning is cheap and shares the queues.
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("config", &self.config())
            .field("closed", &self.shared.closed())
            .finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// A broker whose queues each hold at most `capacity` undelivered events, all within the
    /// default byte budget ([`MemoryConfig::default`]).
    pub fn new(capacity: usize) -> Self {
        Self::with_config(MemoryConfig {
            queue_capacity: capacity,
            ..MemoryConfig::default()
        })
    }

    /// A broker with these limits.
    pub fn with_config(config: MemoryConfig) -> Self {
        let config = MemoryConfig {
            queue_capacity: config.queue_capacity.max(1),
            ..config
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(config)),
                notify: Notify::new(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Its limits.
    pub fn config(&self) -> MemoryConfig {
        *self.shared.lock().config()
    }

    /// A publisher into this broker.
    pub fn publisher(&self) -> MemoryPublisher {
        MemoryPublisher {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A subscriber that receives from every destination.
    pub fn subscriber_all(&self) -> MemorySubscriber {
        MemorySubscriber {
            shared: Arc::clone(&self.shared),
            destinations: None,
            cursor: Cursor::After(None),
            looked: false,
        }
    }

    /// A subscriber that receives only from the named destinations. Several subscribers on
    /// one destination compete for its events.
    pub fn subscriber<I, S>(&self, destinations: I) -> Result<MemorySubscriber, Infallible>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ok(MemorySubscriber {
            shared: Arc::clone(&self.shared),
            destinations: Some(
                destinations
                    .into_iter()
                    .map(|name| Arc::from(name.into()))
                    .collect(),
            ),
            cursor: Cursor::Index(0),
            looked: false,
        })
    }

    /// Events waiting in `destination`'s queue.
    pub fn len(&self, destination: &str) -> usize {
        self.shared.lock().len(destination)
    }

    /// Events waiting in all queues together.
    pub fn total_len(&self) -> usize {
        self.shared.lock().total_len()
    }

    /// Whether every queue is empty.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().is_empty()
    }

    /// Deliveries handed out and not yet settled, plus retries waiting for their delay.
    pub fn in_flight(&self) -> u64 {
        self.shared.lock().in_flight() as u64
    }

    /// Events held: queued, in flight and waiting for a delayed retry (dead letters aside).
    pub fn events(&self) -> usize {
        self.shared.lock().events()
    }

    /// Bytes held, dead letters included; at most [`MemoryConfig::max_bytes`] (the record of
    /// the newest dead letter aside).
    pub fn bytes(&self) -> usize {
        self.shared.lock().bytes()
    }

    /// The dead letters kept from `destination`, oldest first, with their failure records.
    pub fn dead_letters(&self, destination: &str) -> Vec<(WebhookEvent, DeadLetter)> {
        self.shared.lock().dead_letters(destination)
    }

    /// Dead letters kept, all destinations together.
    pub fn dead_letter_count(&self) -> usize {
        self.shared.lock().dead_letter_count()
    }

    /// Dead letters dropped since the broker started, to keep the newest
    /// [`MemoryConfig::dead_letters`] or to make room for new events.
    pub fn dead_letters_evicted(&self) -> u64 {
        self.shared.lock().dead_letters_evicted()
    }

    /// Stops accepting events (publish fails as unavailable). Subscribers keep delivering what
    /// is queued and end only once nothing is queued, in flight, or waiting for a delayed retry,
    /// so a worker that runs until its subscription ends processes everything accepted.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.notify.notify_waiters();
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    type Publisher = MemoryPublisher;
    type Subscriber = MemorySubscriber;
    type Error = Infallible;

    fn name(&self) -> &'static str {
        TRANSPORT
    }

    fn publisher(&self) -> MemoryPublisher {
        MemoryBroker::publisher(self)
    }

    fn subscriber<I, S>(&self, destinations: I) -> Result<MemorySubscriber, Infallible>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        MemoryBroker::subscriber(self, destinations)
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

impl MemoryPublisher {
    fn enqueue(&self, destination: &str, mut event: WebhookEvent) -> Result<(), PublishError> {
        if self.shared.closed() {
            return Err(PublishError::unavailable(Closed));
        }
        // Queued events must not pin the server's read buffers they were sliced from.
        event.detach();
        self.shared.lock().publish(destination, event)?;
        self.shared.notify.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Publisher for MemoryPublisher {
    /// Queues `event`; fails as [overloaded](PublishError::Overloaded) when it does not fit in
    /// the budget now, and as [rejected](PublishError::Rejected) when it never could.
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        self.enqueue(destination, event)
    }

    // Not the default (which awaits `publish`): one future instead of two.
    async fn publish_with_storage(
        &self,
        destination: &str,
        event: WebhookEvent,
    ) -> Result<Storage, PublishError> {
        self.enqueue(destination, event).map(|()| Storage::Broker)
    }

    async fn health(&self) -> Result<(), PublishError> {
        if self.shared.closed() {
            Err(PublishError::unavailable(Closed))
        } else {
            Ok(())
        }
    }
}

/// Receives from a [`MemoryBroker`].
///
/// Woken from an empty queue, [`next`](Subscriber::next) yields once before it takes an event,
/// so the tasks already waiting to run (under load, the requests that publish) go first and a
/// worker takes their events one after another instead of being woken for each.
pub struct MemorySubscriber {
    shared: Arc<Shared>,
    destinations: Option<Vec<Arc<str>>>,
    cursor: Cursor,
    /// `try_next` has just found nothing: `next` then goes straight to asking to be woken.
    looked: bool,
}

impl std::fmt::Debug for MemorySubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySubscriber")
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscriber for MemorySubscriber {
    async fn next(&mut self) -> Option<Result<Delivery, SubscribeError>> {
        let Self {
            shared,
            destinations,
            cursor,
            looked,
        } = self;
        // (The worker's `try_next` has looked without asking, just before.)
        let mut looked = std::mem::take(looked);
        let mut take = || take(shared, destinations.as_deref(), cursor);
        // Each `Taken` ends before the next await, so the future does not keep room for it.
        loop {
            // First without asking to be woken: under load an event is waiting, and asking
            // costs two locks of the notifier's waiter list.
            if !std::mem::take(&mut looked) {
                let taken = take();
                if taken.is_final() {
                    return taken.delivery.map(Ok);
                }
            }
            // Then asking, and looking again: an event published in between is not missed.
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let due = {
                let taken = take();
                if taken.is_final() {
                    return taken.delivery.map(Ok);
                }
                taken.due
            };
            if let Some(due) = due {
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep_until(due) => {}
                }
            } else {
                notified.await;
            }
            // Woken by a publish, this task would run next on that thread (tokio's LIFO slot)
            // and take that one event, then wait and be woken again for the next: a wake-up,
            // a poll and a waiter registration per event. Let the tasks already waiting to run
            // go first (under load, the requests that publish), then take what they queued
            // one after another.
            tokio::task::yield_now().await;
        }
    }

    fn try_next(&mut self) -> Option<Delivery> {
        let delivery = take(&self.shared, self.destinations.as_deref(), &mut self.cursor).delivery;
        self.looked = delivery.is_none();
        delivery
    }
}

/// What [`take`] found.
struct Taken {
    delivery: Option<Delivery>,
    /// The broker is closed and nothing can come any more.
    ended: bool,
    /// When the next delayed retry is due.
    due: Option<Instant>,
}

impl Taken {
    /// A delivery, or the end of the subscription: nothing to wait for.
    fn is_final(&self) -> bool {
        self.delivery.is_some() || self.ended
    }
}

/// The next event of `destinations` (all when `None`), if one is queued, moving the delayed
/// retries that are due into their queues first.
fn take(shared: &Arc<Shared>, destinations: Option<&[Arc<str>]>, cursor: &mut Cursor) -> Taken {
    let (popped, promoted, due, idle) = {
        let mut state = shared.lock();
        let (promoted, due) = state.promote_due(Instant::now);
        let popped = state.pop(destinations, cursor);
        (popped, promoted, due, state.in_flight() == 0)
    };
    if promoted {
        // Some of them may be for other subscribers' destinations.
        shared.notify.notify_waiters();
    }
    let delivery = popped.map(|(destination, entry)| {
        let acker = MemoryAcker {
            shared: Arc::clone(shared),
            held: Mutex::new(Some(Held {
                destination: Arc::clone(&destination),
                bytes: entry.bytes,
            })),
        };
        let position = Position::new(TRANSPORT, entry.sequence);
        Delivery::new(entry.event, destination, entry.attempt, position, acker)
    });
    Taken {
        // A delivery still in flight may come back (retry, abandon): end only when none is.
        ended: delivery.is_none() && idle && shared.closed(),
        delivery,
        due,
    }
}

/// What an unsettled delivery holds of the broker.
struct Held {
    destination: Arc<str>,
    /// The event's footprint, still counted.
    bytes: usize,
}

/// Settles one delivery, once; dropped unsettled, it forgets the event and releases its bytes
/// (as a crash would: the memory transport has no restart to redeliver it after).
struct MemoryAcker {
    shared: Arc<Shared>,
    held: Mutex<Option<Held>>,
}

impl MemoryAcker {
    /// Applies `settle` to what the delivery holds, once; later calls do nothing. `requeued`:
    /// the event is queued again or waits for a delayed retry.
    fn settle(&self, requeued: bool, settle: impl FnOnce(&mut State, Held)) {
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(held) = held else {
            return;
        };
        let idle = {
            let mut state = self.shared.lock();
            settle(&mut state, held);
            state.in_flight() == 0
        };
        // Subscribers wait for an event to come back, for a new retry deadline, or (once the
        // broker is closed) for the last delivery to be settled.
        if requeued || (idle && self.shared.closed()) {
            self.shared.notify.notify_waiters();
        }
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        self.settle(false, |state, held| state.finish(held.bytes, None));
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    // Settled before the future is made, which then holds nothing and costs no allocation:
    // every delivery is acked. (The signature `#[async_trait]` gives the trait's method.)
    fn ack<'s, 'async_trait>(&'s self) -> BoxFuture<'async_trait, Result<(), SubscribeError>>
    where
        's: 'async_trait,
        Self: 'async_trait,
    {
        self.settle(false, |state, held| state.finish(held.bytes, None));
        Box::pin(DoneOk::new())
    }

    async fn retry(
        &self,
        event: &WebhookEvent,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), SubscribeError> {
        let event = event.clone();
        self.settle(true, |state, held| {
            state.redeliver(
                held.destination,
                event,
                next_attempt,
                held.bytes,
                delay,
                false,
            );
        });
        Ok(())
    }

    async fn dead_letter(
        &self,
        event: &WebhookEvent,
        failure: &DeadLetter,
    ) -> Result<(), SubscribeError> {
        let (event, failure) = (event.clone(), failure.clone());
        self.settle(false, |state, held| {
            state.finish(held.bytes, Some((held.destination, event, failure)));
        });
        Ok(())
    }

    async fn abandon(&self, event: &WebhookEvent, attempt: u32) -> Result<(), SubscribeError> {
        let event = event.clone();
        self.settle(true, |state, held| {
            state.redeliver(
                held.destination,
                event,
                attempt,
                held.bytes,
                Duration::ZERO,
                true,
            );
        });
        Ok(())
    }
}
