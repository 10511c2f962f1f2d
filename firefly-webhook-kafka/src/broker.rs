//! [`KafkaBroker`]: the one way in, handing out publishers and subscribers.

use std::fmt;
use std::sync::Arc;

use firefly_webhook::{Broker, PublishError, async_trait};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::key::KeyStrategy;
use crate::offset::TRANSPORT;
use crate::producer::Producer;
use crate::publisher::KafkaPublisher;
use crate::subscriber::KafkaSubscriber;

/// A Kafka cluster, as the [`Broker`] every transport implements: built from a
/// [`KafkaConfig`], it hands out [`KafkaPublisher`]s that share one durable producer and
/// [`KafkaSubscriber`]s with the config's consumer-group settings.
///
/// [`new`](Self::new) creates the librdkafka clients without waiting for the cluster (they
/// connect on first use and reconnect by themselves); [`connect`](Self::connect) also waits
/// until the cluster answers, so a wrong address fails at start-up. Cloning is cheap and shares
/// the producer.
///
/// ```no_run
/// use firefly_webhook::IngestService;
/// use firefly_webhook_kafka::{KafkaBroker, KafkaConfig};
///
/// # async fn run() -> Result<(), firefly_webhook_kafka::Error> {
/// let broker = KafkaBroker::connect(KafkaConfig::from_brokers("127.0.0.1:9092")).await?;
/// let ingest = IngestService::new(broker.publisher());
/// let subscriber = broker.subscriber(["github", "stripe"])?;
/// # let _ = (ingest, subscriber);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KafkaBroker {
    config: Arc<KafkaConfig>,
    producer: Arc<Producer>,
    key: Arc<KeyStrategy>,
}

impl KafkaBroker {
    /// A broker with `config`. Validates it and creates the producer and admin clients;
    /// does not wait for the cluster.
    pub fn new(config: KafkaConfig) -> Result<Self> {
        let producer = Producer::new(&config)?;
        Ok(Self {
            producer: Arc::new(producer),
            key: Arc::new(config.key.clone()),
            config: Arc::new(config),
        })
    }

    /// [`new`](Self::new), then waits until the cluster answers a metadata request within
    /// [`health_timeout`](KafkaConfig::health_timeout); fails with [`Error::Unreachable`] if
    /// it does not.
    ///
    /// It also reads the broker's `message.max.bytes` when the broker reports it
    /// (DescribeConfigs; some brokers, such as Tansu, do not implement it, and ACLs may forbid
    /// it): if that is below [`max_message_bytes`](KafkaConfig::max_message_bytes) and topics
    /// are not created by this crate, it fails with [`Error::MessageLimit`]. When the limit
    /// cannot be read, a message the broker finds too large fails on publish as `Rejected`
    /// ([`Error::TooLarge`]).
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        let broker = Self::new(config)?;
        broker.health().await.map_err(Error::Unreachable)?;
        if let Some(limit) = broker.producer.broker_message_limit().await {
            broker.config.check_broker_message_limit(limit)?;
        }
        Ok(broker)
    }

    /// The configuration this broker was built with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// A publisher sharing this broker's producer.
    pub fn publisher(&self) -> KafkaPublisher {
        KafkaPublisher::new(Arc::clone(&self.producer), Arc::clone(&self.key))
    }

    /// A member of consumer group [`group_id`](KafkaConfig::group_id) reading `topics` (names,
    /// or regular expressions starting with `^`), with the config's consumer settings. Dead
    /// letters go through this broker's producer.
    ///
    /// Fails when `topics` is empty, a name is empty or a topic would be its own dead-letter
    /// topic, and outside a Tokio runtime.
    pub fn subscriber<I, S>(&self, topics: I) -> Result<KafkaSubscriber>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics = topics.into_iter().map(Into::into).collect();
        KafkaSubscriber::new(&self.config, Arc::clone(&self.producer), topics)
    }

    /// A subscriber to every topic whose name starts with `prefix` (a regular-expression
    /// subscription), e.g. all `webhooks.{provider}` topics the gateway creates with
    /// `Routing::provider().prefix("webhooks.")`. Topics created later are picked up within
    /// `topic.metadata.refresh.interval.ms` (10 s by default).
    ///
    /// The dead-letter topics must not match the subscription, or dead letters would be
    /// consumed again: set [`dead_letter_topic`](KafkaConfig::dead_letter_topic) to a name that
    /// does not start with the prefix, such as `dlq.{topic}` (the default `{topic}.dlq` does).
    ///
    /// ```no_run
    /// use firefly_webhook_kafka::{KafkaBroker, KafkaConfig};
    ///
    /// # async fn run() -> Result<(), firefly_webhook_kafka::Error> {
    /// let mut config = KafkaConfig::from_brokers("127.0.0.1:9092");
    /// config.dead_letter_topic = "dlq.{topic}".into();
    /// let broker = KafkaBroker::new(config)?;
    /// let subscriber = broker.subscriber_prefixed("webhooks.")?;
    /// # let _ = subscriber;
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscriber_prefixed(&self, prefix: &str) -> Result<KafkaSubscriber> {
        let pattern = self.config.prefix_subscription(prefix)?;
        self.subscriber([pattern])
    }

    /// Whether the cluster answers a metadata request within
    /// [`health_timeout`](KafkaConfig::health_timeout); backs the readiness probe.
    pub async fn health(&self) -> Result<(), PublishError> {
        self.producer.health().await
    }
}

#[async_trait]
impl Broker for KafkaBroker {
    type Publisher = KafkaPublisher;
    type Subscriber = KafkaSubscriber;
    type Error = Error;

    fn name(&self) -> &'static str {
        TRANSPORT
    }

    fn publisher(&self) -> KafkaPublisher {
        KafkaBroker::publisher(self)
    }

    fn subscriber<I, S>(&self, destinations: I) -> Result<KafkaSubscriber>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        KafkaBroker::subscriber(self, destinations)
    }

    async fn health(&self) -> Result<(), PublishError> {
        KafkaBroker::health(self).await
    }
}

impl fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
