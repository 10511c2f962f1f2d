//! [`KafkaSubscriber`]: at-least-once consumption in a consumer group.

mod context;
mod tracker;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use firefly_webhook::wire::{self, Binding, DeadLetter, FailureCategory};
use firefly_webhook::{
    Acker, Delivery, Position, PublishError, SubscribeError, Subscriber, WebhookEvent, async_trait,
};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use self::context::LAG_GAUGE;
use self::context::SubscriberContext;
use self::tracker::{Token, Tracker};
use crate::config::{KafkaConfig, SubscriberConfig};
use crate::error::{Error, Result};
use crate::producer::Producer;

type Inner = StreamConsumer<SubscriberContext>;

/// Consumes webhooks from Kafka topics in a consumer group, at least once.
///
/// - Offsets are committed only for finished deliveries: with out-of-order completion, each
///   partition commits up to its lowest unfinished offset, asynchronously, every
///   [`commit_interval`](SubscriberConfig::commit_interval) or
///   [`commit_every`](SubscriberConfig::commit_every) acks, and synchronously when partitions
///   are revoked. Deliveries of revoked partitions no longer commit when acked.
/// - [`retry`](Delivery::retry) redelivers the same message from this process after the delay
///   (Kafka has no per-message delay); its offset stays uncommitted meanwhile.
/// - [`dead_letter`](Delivery::dead_letter) writes the original value, key and headers plus the
///   failure headers to the dead-letter topic (`{topic}.dlq`), waits for the broker's
///   acknowledgement, then marks the offset finished.
/// - Messages that do not follow the wire format are dead-lettered with category
///   `validation` without reaching the worker.
/// - [`abandon`](Delivery::abandon) and dropping a delivery leave the offset uncommitted: the
///   message is redelivered after a restart or rebalance.
/// - Consumer lag per partition is reported as the gauge [`LAG_GAUGE`].
///
/// `next` is cancel-safe: a message is only taken from librdkafka when it is returned.
/// Create it inside a Tokio runtime.
///
/// ```no_run
/// use firefly_webhook::Subscriber;
/// use firefly_webhook_kafka::{KafkaConfig, KafkaSubscriber, SubscriberConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut subscriber = KafkaSubscriber::new(
///     &KafkaConfig::from_brokers("127.0.0.1:9092"),
///     SubscriberConfig::new("webhook-workers", ["github"]),
/// )?;
/// while let Some(delivery) = subscriber.next().await {
///     let Ok(delivery) = delivery else { continue }; // transport hiccup: just poll again
///     println!("{} from {}", delivery.event.id, delivery.position);
///     delivery.ack().await?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct KafkaSubscriber {
    consumer: Arc<Inner>,
    shared: Arc<Shared>,
    redeliveries: mpsc::UnboundedReceiver<Redelivery>,
    committer: JoinHandle<()>,
    group: String,
}

/// What deliveries need to settle themselves.
struct Shared {
    tracker: Arc<Tracker>,
    producer: Producer,
    dead_letter_topic: String,
    settle_backoff: Duration,
    redeliver: mpsc::UnboundedSender<Redelivery>,
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

    /// Redelivers from this process after `delay`, unless the partition was revoked by then.
    fn redeliver_later(
        &self,
        event: WebhookEvent,
        attempt: u32,
        record: Arc<Record>,
        delay: Duration,
    ) {
        let redelivery = Redelivery {
            event,
            attempt,
            record,
        };
        if delay.is_zero() {
            let _ = self.redeliver.send(redelivery);
            return;
        }
        let tx = self.redeliver.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // The subscriber may be gone: the uncommitted offset is redelivered elsewhere.
            let _ = tx.send(redelivery);
        });
    }
}

/// The original record, kept for dead-lettering it unchanged.
struct Record {
    token: Token,
    key: Option<Bytes>,
    headers: Option<OwnedHeaders>,
}

struct Redelivery {
    event: WebhookEvent,
    attempt: u32,
    record: Arc<Record>,
}

impl KafkaSubscriber {
    /// Joins `subscriber.group_id` and subscribes to `subscriber.topics`. The dead-letter
    /// producer uses `kafka`'s producer settings. Must be called inside a Tokio runtime.
    pub fn new(kafka: &KafkaConfig, subscriber: SubscriberConfig) -> Result<Self> {
        subscriber.validate()?;
        let tracker = Arc::new(Tracker::new(subscriber.commit_every));
        let context = SubscriberContext {
            tracker: Arc::clone(&tracker),
            group: subscriber.group_id.clone(),
        };
        let consumer: Inner = subscriber
            .consumer_client(kafka)
            .create_with_context(context)
            .map_err(Error::Client)?;
        let topics: Vec<&str> = subscriber.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let consumer = Arc::new(consumer);

        let (redeliver, redeliveries) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            tracker: Arc::clone(&tracker),
            producer: Producer::new(kafka)?,
            dead_letter_topic: subscriber.dead_letter_topic.clone(),
            settle_backoff: subscriber.settle_backoff,
            redeliver,
        });
        let committer = tokio::spawn(commit_loop(
            Arc::downgrade(&consumer),
            tracker,
            subscriber.commit_interval,
        ));
        Ok(Self {
            consumer,
            shared,
            redeliveries,
            committer,
            group: subscriber.group_id,
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
            .map_err(|e| Error::Interrupted(e.to_string()))??;
        Ok(())
    }

    /// The group's committed offsets for this member's assigned partitions, from the broker.
    pub async fn committed(&self, timeout: Duration) -> Result<TopicPartitionList> {
        let consumer = Arc::clone(&self.consumer);
        let tpl = tokio::task::spawn_blocking(move || consumer.committed(timeout))
            .await
            .map_err(|e| Error::Interrupted(e.to_string()))??;
        Ok(tpl)
    }

    /// The partitions currently assigned to this member.
    pub fn assignment(&self) -> Result<TopicPartitionList> {
        Ok(self.consumer.assignment()?)
    }

    /// Turns a received message into a delivery, or dead-letters it when it cannot be decoded.
    fn accept(shared: &Arc<Shared>, message: &BorrowedMessage<'_>) -> Option<Delivery> {
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
                    %err,
                    "undecodable kafka message; dead-lettering it"
                );
                let failure = DeadLetter::new(
                    err.to_string(),
                    FailureCategory::Validation,
                    0,
                    "wire_format",
                    topic,
                );
                tokio::spawn(dead_letter_until_done(
                    Arc::clone(shared),
                    record,
                    body,
                    failure,
                ));
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
    let position = Position::Kafka {
        topic: record.token.topic.clone(),
        partition: record.token.partition,
        offset: record.token.offset,
    };
    let destination = record.token.topic.clone();
    let acker = KafkaAcker {
        shared: Arc::clone(shared),
        record,
        attempt,
    };
    Delivery::new(event, destination, attempt, position, acker)
}

/// Dead-letters an undecodable record, retrying until the broker takes it or the partition is
/// revoked (then another member sees the record again).
async fn dead_letter_until_done(
    shared: Arc<Shared>,
    record: Arc<Record>,
    body: Bytes,
    failure: DeadLetter,
) {
    loop {
        match shared.send_dead_letter(&record, &body, &failure).await {
            Ok(()) => {
                shared.tracker.finish(&record.token);
                return;
            }
            Err(err) => {
                tracing::warn!(%err, "kafka dead-lettering failed; retrying");
                if !shared.tracker.is_current(&record.token) {
                    return;
                }
                tokio::time::sleep(shared.settle_backoff).await;
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
            tracing::warn!(%err, "kafka offset commit failed; will retry");
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
            let step = tokio::select! {
                biased;
                Some(r) = self.redeliveries.recv() => Step::Redelivery(r),
                received = self.consumer.recv() => match received {
                    Ok(message) => Step::Delivery(Self::accept(&self.shared, &message)),
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
}

impl Drop for KafkaSubscriber {
    fn drop(&mut self) {
        // The consumer itself closes when dropped: its revocation callback commits what is
        // finished and leaves the group.
        self.committer.abort();
    }
}

impl fmt::Debug for KafkaSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSubscriber")
            .field("group", &self.group)
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
        self.shared
            .redeliver_later(event.clone(), next_attempt, Arc::clone(&self.record), delay);
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
                // Keep the promise that an unsettled message comes back, without a restart.
                self.shared.redeliver_later(
                    event.clone(),
                    self.attempt,
                    Arc::clone(&self.record),
                    self.shared.settle_backoff,
                );
                Err(SubscribeError::Settle(Box::new(err)))
            }
        }
    }

    async fn abandon(&self, _event: &WebhookEvent, _attempt: u32) -> Result<(), SubscribeError> {
        // Leave the offset uncommitted: the group redelivers it after a restart or rebalance.
        Ok(())
    }
}
