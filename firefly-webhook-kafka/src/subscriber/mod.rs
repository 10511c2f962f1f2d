//! [`KafkaSubscriber`]: at-least-once consumption in a consumer group.

mod context;
mod held;
mod tracker;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use firefly_webhook::wire::{self, Binding};
use firefly_webhook::{
    Acker, DeadLetter, Delivery, FailureCategory, Position, PublishError, SubscribeError,
    Subscriber, WebhookEvent, async_trait,
};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use self::context::LAG_GAUGE;
use self::context::SubscriberContext;
pub use self::held::HeldEvents;
use self::held::Hold;
use self::tracker::{Token, Tracker};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::offset::{KafkaOffset, TRANSPORT};
use crate::producer::Producer;

type Inner = StreamConsumer<SubscriberContext>;

/// Room for redeliveries between the end of their retry delay and the next pull. Under a
/// worker it is never the bound that matters: each waiting redelivery gave its worker slot
/// back, and the worker's next pull takes a redelivery before any new record, so at most
/// `concurrency` wait here. A retry that finds it full waits for room in its slot.
const REDELIVERY_CAPACITY: usize = 64;

/// Consumes webhooks from Kafka topics in a consumer group, at least once.
///
/// Get one from [`KafkaBroker::subscriber`](crate::KafkaBroker::subscriber) (or
/// [`subscriber_prefixed`](crate::KafkaBroker::subscriber_prefixed)); it joins the group
/// [`group_id`](KafkaConfig::group_id) and writes dead letters through the broker's producer.
///
/// - Offsets are committed only for finished deliveries: with out-of-order completion, each
///   partition commits up to its lowest unfinished offset, asynchronously, every
///   [`commit_interval`](KafkaConfig::commit_interval) or
///   [`commit_every`](KafkaConfig::commit_every) acks, and synchronously when partitions
///   are revoked. Deliveries of revoked partitions no longer commit when acked.
/// - [`retry`](Delivery::retry) redelivers the same message from this process after the delay
///   (Kafka has no per-message delay); its offset stays uncommitted meanwhile. The `retry`
///   call itself waits out the delay, so a worker keeps the delivery's concurrency slot and
///   holds at most `concurrency` records in memory whatever the failure rate (see
///   [`held`](Self::held)); `next` hands out waiting redeliveries before new records. A retry
///   ends early, leaving the record to the group, when its partition is revoked or the
///   subscriber [stops](Subscriber::stop) or is dropped.
/// - [`dead_letter`](Delivery::dead_letter) writes the original value, key and headers plus the
///   failure headers to the dead-letter topic
///   ([`dead_letter_topic`](KafkaConfig::dead_letter_topic), `{topic}.dlq` by default), waits
///   for the broker's acknowledgement, then marks the offset finished.
/// - Messages that do not follow the wire format are dead-lettered with category
///   `validation` without reaching the worker; `next` finishes that before reading on.
/// - [`abandon`](Delivery::abandon) and dropping a delivery leave the offset uncommitted: the
///   message is redelivered after a restart or rebalance.
/// - Each delivery's [`Position`] holds a [`KafkaOffset`].
/// - Consumer lag per partition is reported as the gauge [`LAG_GAUGE`].
///
/// `next` is cancel-safe: a message is only taken from librdkafka when it is returned.
///
/// ```no_run
/// use firefly_webhook::Subscriber;
/// use firefly_webhook_kafka::{KafkaBroker, KafkaConfig, KafkaOffset};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = KafkaConfig::from_brokers("127.0.0.1:9092");
/// config.group_id = "webhook-workers".into();
/// let broker = KafkaBroker::new(config)?;
/// let mut subscriber = broker.subscriber(["github"])?;
/// while let Some(delivery) = subscriber.next().await {
///     let Ok(delivery) = delivery else { continue }; // transport hiccup: just poll again
///     let at = delivery.position.downcast_ref::<KafkaOffset>();
///     println!("{} from {at:?}", delivery.event.id);
///     delivery.ack().await?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct KafkaSubscriber {
    consumer: Arc<Inner>,
    shared: Arc<Shared>,
    redeliveries: mpsc::Receiver<Redelivery>,
    /// An undecodable record being dead-lettered: `next` waits for it before reading on, so
    /// junk cannot pile up in memory.
    rejecting: Option<JoinHandle<()>>,
    committer: JoinHandle<()>,
    group: String,
    topics: Vec<String>,
}

/// What deliveries need to settle themselves.
struct Shared {
    tracker: Arc<Tracker>,
    producer: Arc<Producer>,
    dead_letter_topic: String,
    settle_backoff: Duration,
    redeliver: mpsc::Sender<Redelivery>,
    held: HeldEvents,
    /// Set once the subscriber stopped or was dropped: waiting retries end.
    stopped: watch::Sender<bool>,
}

impl Shared {
    fn dead_letter_topic(&self, topic: &str) -> String {
        self.dead_letter_topic.replace("{topic}", topic)
    }

    /// Writes the original record plus `failure`'s headers to the dead-letter topic and waits
    /// for the broker's acknowledgement.
    async fn send_dead_letter(
        &self,
        record: &Record,
        payload: &[u8],
        failure: &DeadLetter,
    ) -> Result<(), PublishError> {
        let extra = failure.encode(Binding::KAFKA);
        let original = record.headers.as_ref();
        let mut headers =
            OwnedHeaders::new_with_capacity(original.map_or(0, Headers::count) + extra.len());
        if let Some(original) = original {
            for h in original.iter() {
                headers = headers.insert(h);
            }
        }
        for (key, value) in &extra {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: Some(value.as_ref()),
            });
        }
        let topic = self.dead_letter_topic(&record.token.topic);
        self.producer
            .send(&topic, record.key.as_deref(), payload, headers)
            .await
    }

    /// Waits out `delay`, then hands `redelivery` to the next pull. The caller keeps whatever
    /// it holds meanwhile (a worker: the delivery's concurrency slot). Ends early, leaving the
    /// uncommitted record to the group (redelivered after a rebalance or restart), when its
    /// partition is revoked or the subscriber stops.
    async fn redeliver(&self, redelivery: Redelivery, delay: Duration) {
        let mut stopped = self.stopped.subscribe();
        let token = &redelivery.record.token;
        let due = Instant::now() + delay;
        loop {
            // Registered before the check, so a revocation in between is not missed.
            let revoked = self.tracker.revoked.notified();
            if !self.tracker.is_current(token) {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(due) => break,
                () = revoked => {}
                _ = stopped.wait_for(|stopped| *stopped) => return,
            }
        }
        tokio::select! {
            // Fails only when the subscriber is gone.
            _ = self.redeliver.send(redelivery) => {}
            _ = stopped.wait_for(|stopped| *stopped) => {}
        }
    }
}

/// The original record, kept for dead-lettering it unchanged.
struct Record {
    token: Token,
    key: Option<Bytes>,
    headers: Option<OwnedHeaders>,
    /// Counts the record in [`HeldEvents`] while any delivery or redelivery of it lives.
    _held: Hold,
}

struct Redelivery {
    event: WebhookEvent,
    attempt: u32,
    record: Arc<Record>,
}

impl KafkaSubscriber {
    /// Joins `config.group_id` and subscribes to `topics` (names, or `^` regular
    /// expressions); dead letters go through `producer`.
    pub(crate) fn new(
        config: &KafkaConfig,
        producer: Arc<Producer>,
        topics: Vec<String>,
    ) -> Result<Self> {
        config.validate_topics(&topics)?;
        // The committer runs beside the consumer.
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let tracker = Arc::new(Tracker::new(config.commit_every));
        let context = SubscriberContext {
            tracker: Arc::clone(&tracker),
            group: config.group_id.clone(),
        };
        let consumer: Inner = config
            .consumer_client()
            .create_with_context(context)
            .map_err(Error::Client)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let consumer = Arc::new(consumer);

        let (redeliver, redeliveries) = mpsc::channel(REDELIVERY_CAPACITY);
        let shared = Arc::new(Shared {
            tracker: Arc::clone(&tracker),
            producer,
            dead_letter_topic: config.dead_letter_topic.clone(),
            settle_backoff: config.settle_backoff,
            redeliver,
            held: HeldEvents::new(),
            stopped: watch::Sender::new(false),
        });
        let committer = runtime.spawn(commit_loop(
            Arc::downgrade(&consumer),
            tracker,
            config.commit_interval,
        ));
        Ok(Self {
            consumer,
            shared,
            redeliveries,
            rejecting: None,
            committer,
            group: config.group_id.clone(),
            topics,
        })
    }

    /// Commits every finished position now and waits for the broker's answer (for example
    /// before a planned shutdown).
    pub async fn commit(&self) -> Result<()> {
        let positions = self.shared.tracker.positions();
        if positions.count() == 0 {
            return Ok(());
        }
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || consumer.commit(&positions, CommitMode::Sync))
            .await
            .map_err(Error::Interrupted)??;
        Ok(())
    }

    /// The group's committed offsets for this member's assigned partitions, from the broker.
    pub async fn committed(&self, timeout: Duration) -> Result<TopicPartitionList> {
        let consumer = Arc::clone(&self.consumer);
        let tpl = tokio::task::spawn_blocking(move || consumer.committed(timeout))
            .await
            .map_err(Error::Interrupted)??;
        Ok(tpl)
    }

    /// The partitions currently assigned to this member.
    pub fn assignment(&self) -> Result<TopicPartitionList> {
        Ok(self.consumer.assignment()?)
    }

    /// How many records this subscriber holds in memory, now and at most; keep it before
    /// handing the subscriber to a worker (clones share the counts).
    pub fn held(&self) -> HeldEvents {
        self.shared.held.clone()
    }

    /// Turns a received message into a delivery, or starts dead-lettering it (into
    /// `rejecting`) when it cannot be decoded.
    fn accept(
        shared: &Arc<Shared>,
        message: &BorrowedMessage<'_>,
        rejecting: &mut Option<JoinHandle<()>>,
    ) -> Option<Delivery> {
        let topic = message.topic();
        let token = shared
            .tracker
            .received(topic, message.partition(), message.offset());
        let body = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        let headers = message.headers();
        let pairs = headers
            .into_iter()
            .flat_map(|h| h.iter())
            .map(|h| (h.key, h.value.unwrap_or_default()));
        let decoded = wire::decode(pairs, body.clone(), None, Binding::KAFKA);
        let record = Arc::new(Record {
            token,
            key: message.key().map(Bytes::copy_from_slice),
            headers: headers.map(BorrowedHeaders::detach),
            _held: shared.held.hold(),
        });
        match decoded {
            Ok(event) => {
                let attempt = attempt(message).unwrap_or(1);
                Some(delivery(shared, event, attempt, record))
            }
            Err(err) => {
                tracing::warn!(
                    topic,
                    partition = record.token.partition,
                    offset = record.token.offset,
                    error = &err as &dyn std::error::Error,
                    "undecodable kafka message; dead-lettering it"
                );
                let failure = DeadLetter::new(
                    err.to_string(),
                    FailureCategory::Validation,
                    0,
                    "wire_format",
                    topic,
                );
                *rejecting = Some(tokio::spawn(dead_letter_until_done(
                    Arc::clone(shared),
                    record,
                    body,
                    failure,
                )));
                None
            }
        }
    }
}

/// The `ce_attempt` header of a record that was republished with one.
fn attempt(message: &BorrowedMessage<'_>) -> Option<u32> {
    let name = wire::attempt_header(Binding::KAFKA);
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
}

fn delivery(
    shared: &Arc<Shared>,
    event: WebhookEvent,
    attempt: u32,
    record: Arc<Record>,
) -> Delivery {
    let position = Position::new(
        TRANSPORT,
        KafkaOffset {
            topic: record.token.topic.clone(),
            partition: record.token.partition,
            offset: record.token.offset,
        },
    );
    let destination = record.token.topic.clone();
    let acker = KafkaAcker {
        shared: Arc::clone(shared),
        record,
        attempt,
    };
    Delivery::new(event, destination, attempt, position, acker)
}

/// Dead-letters an undecodable record, retrying until the broker takes it, the partition is
/// revoked (then another member sees the record again) or the subscriber stops.
async fn dead_letter_until_done(
    shared: Arc<Shared>,
    record: Arc<Record>,
    body: Bytes,
    failure: DeadLetter,
) {
    let mut stopped = shared.stopped.subscribe();
    loop {
        match shared.send_dead_letter(&record, &body, &failure).await {
            Ok(()) => {
                shared.tracker.finish(&record.token);
                return;
            }
            Err(err) => {
                tracing::warn!(
                    error = &err as &dyn std::error::Error,
                    "kafka dead-lettering failed; retrying"
                );
                if !shared.tracker.is_current(&record.token) {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(shared.settle_backoff) => {}
                    _ = stopped.wait_for(|stopped| *stopped) => return,
                }
            }
        }
    }
}

/// Commits finished positions on an interval or when enough deliveries finished; ends when
/// the subscriber is dropped.
async fn commit_loop(consumer: Weak<Inner>, tracker: Arc<Tracker>, interval: Duration) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = tracker.wake.notified() => {}
        }
        let Some(consumer) = consumer.upgrade() else {
            return;
        };
        let commit = tracker.take_commits();
        if commit.count() > 0
            && let Err(err) = consumer.commit(&commit, CommitMode::Async)
        {
            tracing::warn!(
                error = &err as &dyn std::error::Error,
                "kafka offset commit failed; will retry"
            );
            tracker.commit_failed(&commit);
        }
    }
}

enum Step {
    Redelivery(Redelivery),
    Delivery(Option<Delivery>),
    Failed(rdkafka::error::KafkaError),
}

#[async_trait]
impl Subscriber for KafkaSubscriber {
    async fn next(&mut self) -> Option<Result<Delivery, SubscribeError>> {
        loop {
            if let Some(rejecting) = &mut self.rejecting {
                // Cancel-safe: the handle stays until the dead-lettering ended.
                let _ = rejecting.await;
                self.rejecting = None;
            }
            let step = tokio::select! {
                biased;
                Some(r) = self.redeliveries.recv() => Step::Redelivery(r),
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        Step::Delivery(Self::accept(&self.shared, &message, &mut self.rejecting))
                    }
                    Err(err) => Step::Failed(err),
                },
            };
            match step {
                Step::Redelivery(r) => {
                    if self.shared.tracker.is_current(&r.record.token) {
                        return Some(Ok(delivery(&self.shared, r.event, r.attempt, r.record)));
                    }
                }
                Step::Delivery(Some(delivery)) => return Some(Ok(delivery)),
                Step::Delivery(None) => {}
                Step::Failed(err) => {
                    return Some(Err(SubscribeError::Unavailable(Box::new(err))));
                }
            }
        }
    }

    /// Ends the retries waiting out their delay (their records stay uncommitted, so the group
    /// redelivers them after a restart or rebalance); deliveries in flight still settle.
    fn stop(&mut self) {
        self.shared.stopped.send_replace(true);
    }
}

impl Drop for KafkaSubscriber {
    fn drop(&mut self) {
        self.shared.stopped.send_replace(true);
        // The consumer itself closes when dropped: its revocation callback commits what is
        // finished and leaves the group.
        self.committer.abort();
    }
}

impl fmt::Debug for KafkaSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSubscriber")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("dead_letter_topic", &self.shared.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

/// Settles one delivery; cheap to create and to ack (a map update under a short lock).
struct KafkaAcker {
    shared: Arc<Shared>,
    record: Arc<Record>,
    attempt: u32,
}

#[async_trait]
impl Acker for KafkaAcker {
    async fn ack(&self) -> Result<(), SubscribeError> {
        self.shared.tracker.finish(&self.record.token);
        Ok(())
    }

    async fn retry(
        &self,
        event: &WebhookEvent,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), SubscribeError> {
        let redelivery = Redelivery {
            event: event.clone(),
            attempt: next_attempt,
            record: Arc::clone(&self.record),
        };
        self.shared.redeliver(redelivery, delay).await;
        Ok(())
    }

    async fn dead_letter(
        &self,
        event: &WebhookEvent,
        failure: &DeadLetter,
    ) -> Result<(), SubscribeError> {
        match self
            .shared
            .send_dead_letter(&self.record, &event.body, failure)
            .await
        {
            Ok(()) => {
                self.shared.tracker.finish(&self.record.token);
                Ok(())
            }
            Err(err) => {
                // Keep the promise that an unsettled message comes back without a restart,
                // after a pause spent in the caller's slot.
                let redelivery = Redelivery {
                    event: event.clone(),
                    attempt: self.attempt,
                    record: Arc::clone(&self.record),
                };
                self.shared
                    .redeliver(redelivery, self.shared.settle_backoff)
                    .await;
                Err(SubscribeError::Settle(Box::new(err)))
            }
        }
    }

    async fn abandon(&self, _event: &WebhookEvent, _attempt: u32) -> Result<(), SubscribeError> {
        // Leave the offset uncommitted: the group redelivers it after a restart or rebalance.
        Ok(())
    }
}
