//! The durable producer shared by the publisher and the dead-letter path: topic creation,
//! error classification and recovery from fatal idempotence errors.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use firefly_webhook::PublishError;
use firefly_webhook::publish::RecentNames;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::metadata::MetadataBroker;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::stats::ProducerContext;

/// Routes librdkafka's log lines and errors to `tracing` instead of `log`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(
            target: "librdkafka",
            error = &error as &dyn std::error::Error,
            reason,
            "kafka client error"
        );
    }
}

pub(crate) fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", fac, "{message}");
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

type Inner = FutureProducer<ProducerContext>;

/// How many topics a producer remembers to exist; one it forgot is checked (or created) again
/// on its next publish, which is harmless.
const KNOWN_TOPICS: usize = 10_000;

/// The serialised topic-creation attempts in progress, by topic: an entry lives only while an
/// attempt for its topic runs or has callers waiting for it.
#[derive(Default)]
struct Creating {
    attempts: std::sync::Mutex<HashMap<String, Shares>>,
}

/// One topic's attempt lock and how many callers share it.
struct Shares {
    lock: Arc<tokio::sync::Mutex<()>>,
    callers: usize,
}

impl Creating {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shares>> {
        // Each critical section is one map operation: a poisoned map is consistent.
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock of `topic`'s attempt, shared with the callers that asked meanwhile.
    fn attempt(&self, topic: &str) -> Attempt<'_> {
        let mut attempts = self.lock();
        let shares = attempts.entry(topic.to_owned()).or_insert_with(|| Shares {
            lock: Arc::default(),
            callers: 0,
        });
        shares.callers += 1;
        Attempt {
            creating: self,
            topic: topic.to_owned(),
            lock: Arc::clone(&shares.lock),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A caller's share in a topic's attempt. The last one to leave, however it leaves (done,
/// failed, or its future dropped), removes the entry.
struct Attempt<'a> {
    creating: &'a Creating,
    topic: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut attempts = self.creating.lock();
        if let Some(shares) = attempts.get_mut(&self.topic)
            && Arc::ptr_eq(&shares.lock, &self.lock)
        {
            shares.callers = shares.callers.saturating_sub(1);
            if shares.callers == 0 {
                attempts.remove(&self.topic);
            }
        }
    }
}

/// The current librdkafka producer, replaced as a whole when it lost its idempotence state, so
/// publishing recovers without the application recreating the publisher.
struct Slot {
    client_config: ClientConfig,
    /// The producer and its generation (bumped on every replacement).
    current: RwLock<(u64, Arc<Inner>)>,
    last_rebuild: std::sync::Mutex<Option<Instant>>,
    probing: AtomicBool,
}

impl Slot {
    fn new(client_config: ClientConfig) -> Result<Self> {
        let producer: Inner = client_config
            .create_with_context(ProducerContext::default())
            .map_err(Error::Client)?;
        Ok(Self {
            client_config,
            current: RwLock::new((0, Arc::new(producer))),
            last_rebuild: std::sync::Mutex::new(None),
            probing: AtomicBool::new(false),
        })
    }

    fn current(&self) -> (u64, Arc<Inner>) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (current.0, Arc::clone(&current.1))
    }

    fn is_fatal(&self) -> bool {
        self.current().1.client().fatal_error().is_some()
    }

    /// Replaces the producer of `generation` (unless another caller already did).
    fn rebuild(&self, generation: u64, why: &str) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            return;
        }
        let fatal = current.1.client().fatal_error().map(|(_, reason)| reason);
        let fresh = match self
            .client_config
            .create_with_context(ProducerContext::default())
        {
            Ok(fresh) => fresh,
            Err(err) => {
                tracing::error!(
                    error = &err as &dyn std::error::Error,
                    "kafka producer could not be recreated"
                );
                return;
            }
        };
        let old = std::mem::replace(&mut *current, (generation + 1, Arc::new(fresh)));
        drop(current);
        *self
            .last_rebuild
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        tracing::warn!(why, ?fatal, "kafka producer replaced");
        // Dropping a producer purges and flushes for up to half a second: not on a runtime
        // thread, and not while holding the lock.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(old))),
            Err(_) => drop(old),
        }
    }

    /// Deliveries time out although the cluster answers: the producer may be wedged (e.g. a
    /// broker that lost its producer-id state keeps rejecting librdkafka's epoch bumps), so
    /// probe in the background and replace it, at most once per `cooldown`.
    fn check_wedged(
        self: &Arc<Self>,
        generation: u64,
        probe_timeout: Duration,
        cooldown: Duration,
    ) {
        let recent = self
            .last_rebuild
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < cooldown);
        if recent || self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let slot = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let (current, producer) = slot.current();
            if current == generation
                && producer
                    .client()
                    .fetch_metadata(None, probe_timeout)
                    .is_ok()
            {
                drop(producer);
                slot.rebuild(generation, "deliveries time out while the cluster answers");
            }
            slot.probing.store(false, Ordering::Release);
        });
    }
}

pub(crate) struct Producer {
    // Several connections let a broker that serves each connection's requests one at a time
    // work on more batches at once; a key always uses the same producer, so per-key order holds.
    slots: Vec<Arc<Slot>>,
    round_robin: AtomicUsize,
    admin: Arc<AdminClient<TracingContext>>,
    /// Topics known to exist, bounded; forgotten when a publish says the topic is gone.
    known: RwLock<RecentNames>,
    creating: Creating,
    create_topics: bool,
    partitions: i32,
    replication: i32,
    /// Topic configs of created topics (`max.message.bytes`, `min.insync.replicas`).
    topic_config: Vec<(&'static str, String)>,
    max_message_bytes: usize,
    delivery_timeout: Duration,
    health_timeout: Duration,
}

impl Producer {
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self> {
        config.validate()?;
        let client_config = config.producer_client();
        let mut slots = Vec::with_capacity(config.producers.max(1));
        for _ in 0..config.producers.max(1) {
            slots.push(Arc::new(Slot::new(client_config.clone())?));
        }
        let admin = config
            .admin_client()
            .create_with_context(TracingContext)
            .map_err(Error::Client)?;
        let mut topic_config = vec![("max.message.bytes", config.max_message_bytes.to_string())];
        if let Some(n) = config.min_insync_replicas {
            topic_config.push(("min.insync.replicas", n.to_string()));
        }
        Ok(Self {
            slots,
            round_robin: AtomicUsize::new(0),
            admin: Arc::new(admin),
            known: RwLock::new(RecentNames::new(KNOWN_TOPICS)),
            creating: Creating::default(),
            create_topics: config.create_topics,
            partitions: config.partitions,
            replication: config.replication,
            topic_config,
            max_message_bytes: config.max_message_bytes,
            delivery_timeout: config.delivery_timeout,
            health_timeout: config.health_timeout,
        })
    }

    fn slot(&self, key: Option<&[u8]>) -> &Arc<Slot> {
        let n = self.slots.len();
        let i = match key {
            _ if n == 1 => 0,
            Some(key) => {
                let mut h = std::hash::DefaultHasher::new();
                key.hash(&mut h);
                // Truncation is fine: only the remainder matters.
                #[allow(clippy::cast_possible_truncation)]
                let i = (h.finish() % n as u64) as usize;
                i
            }
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        };
        &self.slots[i]
    }

    pub(crate) fn delivery_timeout(&self) -> Duration {
        self.delivery_timeout
    }

    /// Produces one record and waits for the broker's acknowledgement (`acks=all`).
    ///
    /// Never blocks on a full local queue: that is reported as overloaded at once. If the
    /// caller stops waiting (its own timeout, a client that hung up), the delivery report is
    /// still awaited and acted on in the background.
    pub(crate) async fn send(
        self: &Arc<Self>,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), PublishError> {
        self.ensure_topic(topic).await?;
        let slot = self.slot(key);
        let (generation, producer) = slot.current();
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        let delivery = match producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((err, _)) => return Err(self.classify(topic, slot, generation, err)),
        };
        // Not kept across the wait: only the slot may drop a replaced producer.
        drop(producer);
        let mut pending = Pending {
            producer: self,
            topic,
            slot,
            generation,
            delivery: Some(delivery),
        };
        let report = pending.report().await;
        self.settle(topic, slot, generation, report)
    }

    /// What a delivery report means for the caller, and for the producer: a producer that
    /// lost its idempotence state is replaced, a topic that vanished is forgotten.
    fn settle(
        &self,
        topic: &str,
        slot: &Arc<Slot>,
        generation: u64,
        report: Report,
    ) -> Result<(), PublishError> {
        match report {
            Report::Delivered => Ok(()),
            Report::Failed(err) => Err(self.classify(topic, slot, generation, err)),
            Report::Lost => Err(PublishError::unavailable(Error::ShutDown)),
            Report::Elapsed => Err(self.timed_out(topic, slot, generation)),
        }
    }

    /// A metadata round trip to the cluster.
    pub(crate) async fn health(&self) -> Result<(), PublishError> {
        for slot in &self.slots {
            let (generation, producer) = slot.current();
            if producer.client().fatal_error().is_some() {
                drop(producer);
                slot.rebuild(generation, "fatal error");
            }
        }
        let (_, producer) = self.slots[0].current();
        let timeout = self.health_timeout;
        let probe = Arc::clone(&producer);
        let result = tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(None, timeout)
                .map(|metadata| metadata.brokers().len())
        })
        .await;
        match result {
            Ok(Ok(0)) => Err(PublishError::unavailable("the cluster reported no brokers")),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(PublishError::unavailable(err)),
            Err(join) => Err(PublishError::unavailable(join)),
        }
    }

    /// Makes sure `topic` exists, creating it when allowed; remembers known topics.
    pub(crate) async fn ensure_topic(&self, topic: &str) -> Result<(), PublishError> {
        if self.is_known(topic) {
            return Ok(());
        }
        let attempt = self.creating.attempt(topic);
        // One attempt per topic at a time; callers that queued behind a failed attempt fail
        // with it instead of each waiting for an attempt of their own (bounded latency when
        // the cluster is down).
        let Ok(_running) = attempt.lock.try_lock() else {
            let _waited = attempt.lock.lock().await;
            return if self.is_known(topic) {
                Ok(())
            } else {
                Err(PublishError::unavailable(Error::TopicNotReady(
                    topic.to_owned(),
                )))
            };
        };
        if self.is_known(topic) {
            return Ok(());
        }
        let outcome = if self.create_topics {
            self.create(topic).await
        } else {
            self.check_exists(topic).await
        };
        if outcome.is_ok() {
            self.known
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(topic);
        }
        outcome
    }

    fn forget(&self, topic: &str) {
        self.known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
    }

    fn is_known(&self, topic: &str) -> bool {
        if self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_recent(topic)
        {
            return true;
        }
        self.known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(topic)
    }

    async fn create(&self, topic: &str) -> Result<(), PublishError> {
        let mut new = NewTopic::new(
            topic,
            self.partitions,
            TopicReplication::Fixed(self.replication),
        );
        for (key, value) in &self.topic_config {
            new = new.set(key, value);
        }
        let options = AdminOptions::new()
            .request_timeout(Some(self.delivery_timeout))
            .operation_timeout(Some(self.delivery_timeout));
        let created = tokio::time::timeout(
            self.delivery_timeout,
            self.admin.create_topics([&new], &options),
        )
        .await
        .map_err(|_| PublishError::TimedOut(self.delivery_timeout))?
        .map_err(PublishError::unavailable)?;
        for result in created {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    let err = Error::CreateTopic { topic: name, code };
                    return Err(if code == RDKafkaErrorCode::InvalidTopic {
                        PublishError::rejected(err)
                    } else {
                        PublishError::unavailable(err)
                    });
                }
            }
        }
        tracing::info!(topic, partitions = self.partitions, "kafka topic ready");
        Ok(())
    }

    /// The broker's `message.max.bytes` (the limit of topics that do not set their own), if
    /// the cluster reports it within the health timeout. Not every broker implements
    /// DescribeConfigs (Tansu does not), and ACLs may forbid it: then this is `None`.
    pub(crate) async fn broker_message_limit(&self) -> Option<usize> {
        let admin = Arc::clone(&self.admin);
        let timeout = self.health_timeout;
        let broker = tokio::task::spawn_blocking(move || {
            let metadata = admin.inner().fetch_metadata(None, timeout).ok()?;
            metadata.brokers().first().map(MetadataBroker::id)
        })
        .await
        .ok()??;
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let resource = ResourceSpecifier::Broker(broker);
        let described =
            tokio::time::timeout(timeout, self.admin.describe_configs([&resource], &options))
                .await
                .ok()?;
        let resource = match described.map(|mut all| all.pop()) {
            Ok(Some(Ok(resource))) => resource,
            Ok(Some(Err(code))) => {
                tracing::debug!(%code, "kafka broker config not readable");
                return None;
            }
            Ok(None) => return None,
            Err(err) => {
                tracing::debug!(
                    error = &err as &dyn std::error::Error,
                    "kafka broker config not readable"
                );
                return None;
            }
        };
        resource
            .get("message.max.bytes")
            .and_then(|entry| entry.value.as_deref()?.parse().ok())
    }

    async fn check_exists(&self, topic: &str) -> Result<(), PublishError> {
        let admin = Arc::clone(&self.admin);
        let name = topic.to_owned();
        let timeout = self.health_timeout;
        let metadata = tokio::task::spawn_blocking(move || {
            admin.inner().fetch_metadata(Some(&name), timeout).map(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == name)
                    .map(|t| (t.error(), t.partitions().len()))
            })
        })
        .await
        .map_err(PublishError::unavailable)?
        .map_err(PublishError::unavailable)?;
        match metadata {
            Some((None, partitions)) if partitions > 0 => Ok(()),
            _ => Err(PublishError::unavailable(Error::UnknownTopic(
                topic.to_owned(),
            ))),
        }
    }

    /// Maps a produce error onto the port's error kinds (503 for the first three, 500 for
    /// messages the broker will never take).
    fn classify(
        &self,
        topic: &str,
        slot: &Arc<Slot>,
        generation: u64,
        err: KafkaError,
    ) -> PublishError {
        let code = err.rdkafka_error_code();
        if code.is_some_and(producer_state_lost) || slot.is_fatal() {
            slot.rebuild(generation, "producer id or epoch rejected");
        }
        if code.is_some_and(topic_missing) {
            self.forget(topic);
        }
        match code {
            Some(RDKafkaErrorCode::QueueFull) => PublishError::Overloaded,
            Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                PublishError::rejected(Error::TooLarge {
                    limit: self.max_message_bytes,
                    source: err,
                })
            }
            Some(RDKafkaErrorCode::MessageTimedOut) => self.timed_out(topic, slot, generation),
            Some(code) if never_accepted(code) => PublishError::rejected(err),
            _ => PublishError::unavailable(err),
        }
    }

    fn timed_out(&self, topic: &str, slot: &Arc<Slot>, generation: u64) -> PublishError {
        // The topic may have been deleted behind our back (or a broker lost its storage):
        // check it again on the next publish.
        self.forget(topic);
        let cooldown = (self.delivery_timeout * 2).max(Duration::from_secs(10));
        slot.check_wedged(generation, self.health_timeout, cooldown);
        PublishError::TimedOut(self.delivery_timeout)
    }
}

/// The outcome of one delivery, as far as this crate cares.
enum Report {
    Delivered,
    Failed(KafkaError),
    /// The producer went away before reporting.
    Lost,
    /// No report within the delivery timeout (plus a margin).
    Elapsed,
}

/// Waits for `delivery`'s report; librdkafka enforces `message.timeout.ms` itself, the
/// timeout here only guards against a report that never comes.
async fn report<F>(delivery: F, delivery_timeout: Duration) -> Report
where
    F: Future<Output = <DeliveryFuture as Future>::Output>,
{
    let guard = delivery_timeout + Duration::from_secs(1);
    match tokio::time::timeout(guard, delivery).await {
        Ok(Ok(Ok(_))) => Report::Delivered,
        Ok(Ok(Err((err, _)))) => Report::Failed(err),
        Ok(Err(_canceled)) => Report::Lost,
        Err(_elapsed) => Report::Elapsed,
    }
}

/// A produced record whose delivery report is still due.
///
/// Recovery (replacing a wedged producer, forgetting a vanished topic) is driven by delivery
/// reports, so it must not depend on the caller waiting for them: a gateway whose publish
/// timeout is not longer than `delivery_timeout` drops every pending publish just before
/// librdkafka reports the timeout. Dropped while pending, this hands the report to a
/// background task that settles it.
struct Pending<'a> {
    producer: &'a Arc<Producer>,
    topic: &'a str,
    slot: &'a Arc<Slot>,
    generation: u64,
    delivery: Option<DeliveryFuture>,
}

impl Pending<'_> {
    async fn report(&mut self) -> Report {
        let Some(delivery) = self.delivery.as_mut() else {
            return Report::Lost;
        };
        let outcome = report(delivery, self.producer.delivery_timeout).await;
        self.delivery = None;
        outcome
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let Some(delivery) = self.delivery.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let producer = Arc::clone(self.producer);
        let slot = Arc::clone(self.slot);
        let topic = self.topic.to_owned();
        let generation = self.generation;
        runtime.spawn(async move {
            let outcome = report(delivery, producer.delivery_timeout).await;
            if let Err(err) = producer.settle(&topic, &slot, generation, outcome) {
                tracing::debug!(
                    topic,
                    error = &err as &dyn std::error::Error,
                    "kafka delivery failed after the caller stopped waiting"
                );
            }
        });
    }
}

/// The broker no longer knows this producer's id or epoch (fenced, restarted without its
/// state, ...): only a new producer, with a new id, can publish again.
fn producer_state_lost(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
    )
}

fn topic_missing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
    )
}

/// Errors about the message itself: sending it again cannot succeed.
fn never_accepted(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidArgument
            | RDKafkaErrorCode::BadMessage
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(never_accepted(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!never_accepted(RDKafkaErrorCode::AllBrokersDown));
        assert!(!never_accepted(RDKafkaErrorCode::MessageTimedOut));
    }

    #[test]
    fn known_topics_are_bounded_and_keep_the_ones_in_use() {
        let mut known = RecentNames::new(10);
        known.insert("hot");
        for i in 0..1000 {
            known.insert(&format!("cold-{i}"));
            // A topic in use is looked up before each publish, and so stays.
            assert!(known.contains("hot"));
            assert!(known.len() <= 10, "{}", known.len());
        }
        assert!(!known.contains("cold-0"));
        assert!(known.contains("cold-999"));
        known.remove("hot");
        assert!(!known.contains("hot"));

        let mut known = RecentNames::new(KNOWN_TOPICS);
        for i in 0..3 * KNOWN_TOPICS {
            known.insert(&i.to_string());
        }
        assert!((KNOWN_TOPICS / 2..=KNOWN_TOPICS).contains(&known.len()));
    }

    /// A producer whose cluster never answers: every topic creation times out.
    fn unreachable() -> Arc<Producer> {
        let mut config = KafkaConfig::from_brokers("127.0.0.1:1");
        config.delivery_timeout = Duration::from_millis(300);
        Arc::new(Producer::new(&config).unwrap())
    }

    #[tokio::test]
    async fn creation_attempts_leave_nothing_behind() {
        let producer = unreachable();
        // Several callers of one topic share an attempt; each fails with it.
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let producer = Arc::clone(&producer);
            callers.spawn(async move { producer.ensure_topic("webhooks").await });
        }
        while let Some(result) = callers.join_next().await {
            assert!(result.unwrap().is_err());
        }
        for i in 0..20 {
            assert!(producer.ensure_topic(&format!("t{i}")).await.is_err());
        }
        assert_eq!(producer.creating.len(), 0);

        // A caller that stops waiting (a publish timeout) leaves nothing either.
        let dropped = tokio::time::timeout(
            Duration::from_millis(20),
            producer.ensure_topic("abandoned"),
        )
        .await;
        assert!(dropped.is_err(), "the attempt was still running");
        assert_eq!(producer.creating.len(), 0);
        assert!(!producer.is_known("webhooks"));
    }

    #[tokio::test]
    #[ignore = "needs Kafka; run scripts/test"]
    async fn known_topics_stay_bounded_against_a_real_broker() {
        let mut config = KafkaConfig::from_brokers("127.0.0.1:9092");
        config.partitions = 1;
        let mut producer = Producer::new(&config).unwrap();
        producer.known = RwLock::new(RecentNames::new(4));
        let producer = Arc::new(producer);
        let run = format!("bounded-{}", uuid::Uuid::new_v4().simple());
        let topics: Vec<String> = (0..12).map(|i| format!("{run}-{i}")).collect();
        let mut callers = tokio::task::JoinSet::new();
        for topic in &topics {
            for _ in 0..3 {
                let (producer, topic) = (Arc::clone(&producer), topic.clone());
                callers.spawn(async move { producer.ensure_topic(&topic).await });
            }
        }
        while let Some(result) = callers.join_next().await {
            // A caller queued behind an attempt that failed fails with it (a busy broker
            // may time out a creation); the pass below settles every topic.
            drop(result.unwrap());
        }
        for topic in &topics {
            producer.ensure_topic(topic).await.unwrap();
        }
        assert_eq!(producer.creating.len(), 0);
        let known = producer.known.read().unwrap().len();
        assert!((1..=4).contains(&known), "{known}");
        // A forgotten topic is checked again: it exists, so that succeeds.
        assert!(!producer.is_known(&topics[0]));
        producer.ensure_topic(&topics[0]).await.unwrap();
        assert!(producer.is_known(&topics[0]));
    }
}
