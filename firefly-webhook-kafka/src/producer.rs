//! The durable producer shared by the publisher and the dead-letter path: topic creation,
//! error classification and recovery from fatal idempotence errors.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use firefly_webhook::PublishError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// Routes librdkafka's log lines and errors to `tracing` instead of `log`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
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

type Inner = FutureProducer<TracingContext>;

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
            .create_with_context(TracingContext)
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
        let fresh = match self.client_config.create_with_context(TracingContext) {
            Ok(fresh) => fresh,
            Err(err) => {
                tracing::error!(%err, "kafka producer could not be recreated");
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
    known: RwLock<HashSet<String>>,
    creating: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    create_topics: bool,
    partitions: i32,
    replication: i32,
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
        Ok(Self {
            slots,
            round_robin: AtomicUsize::new(0),
            admin: Arc::new(admin),
            known: RwLock::new(HashSet::new()),
            creating: std::sync::Mutex::new(HashMap::new()),
            create_topics: config.create_topics,
            partitions: config.partitions,
            replication: config.replication,
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
    /// Never blocks on a full local queue: that is reported as overloaded at once.
    pub(crate) async fn send(
        &self,
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
        // librdkafka enforces message.timeout.ms itself; this only guards against a lost report.
        let guard = self.delivery_timeout + Duration::from_secs(1);
        match tokio::time::timeout(guard, delivery).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((err, _)))) => Err(self.classify(topic, slot, generation, err)),
            Ok(Err(_canceled)) => Err(PublishError::unavailable(Error::ShutDown)),
            Err(_elapsed) => Err(self.timed_out(topic, slot, generation)),
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
        let lock = Arc::clone(
            self.creating
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(topic.to_owned())
                .or_default(),
        );
        // One attempt per topic at a time; callers that queued behind a failed attempt fail
        // with it instead of each waiting for an attempt of their own (bounded latency when
        // the cluster is down).
        let Ok(_attempt) = lock.try_lock() else {
            let _waited = lock.lock().await;
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
                .insert(topic.to_owned());
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
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(topic)
    }

    async fn create(&self, topic: &str) -> Result<(), PublishError> {
        let new = NewTopic::new(
            topic,
            self.partitions,
            TopicReplication::Fixed(self.replication),
        );
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
}
