//! [`Transport`]: the configured broker, chosen at start-up. The only place in the examples
//! that names a transport crate.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use firefly_webhook::memory::{MemoryBroker, MemoryConfig};
use firefly_webhook::{BoxError, Broker, PublishError, Publisher, Subscriber, async_trait};

use crate::env::Settings;

/// `FIREFLY_TRANSPORT`: which broker to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// The embedded in-memory broker (default).
    Memory,
    /// Kafka (`--features kafka`).
    Kafka,
    /// RabbitMQ (`--features amqp`).
    Amqp,
    /// The embedded durable log in `FIREFLY_DATA_DIR` (single node).
    Disk,
}

impl TransportKind {
    /// The `FIREFLY_TRANSPORT` value naming it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Kafka => "kafka",
            Self::Amqp => "amqp",
            Self::Disk => "disk",
        }
    }
}

impl FromStr for TransportKind {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, UnknownTransport> {
        match s.trim() {
            "memory" => Ok(Self::Memory),
            "kafka" => Ok(Self::Kafka),
            "amqp" | "rabbitmq" => Ok(Self::Amqp),
            "disk" => Ok(Self::Disk),
            other => Err(UnknownTransport(other.to_owned())),
        }
    }
}

/// A `FIREFLY_TRANSPORT` value that names no transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport `{0}`")]
pub struct UnknownTransport(pub String);

/// A [`Broker`] behind a pointer: hands out boxed publishers and subscribers.
#[async_trait]
trait AnyBroker: Send + Sync {
    fn name(&self) -> &'static str;
    fn publisher(&self) -> Arc<dyn Publisher>;
    fn subscriber(&self, destinations: Vec<String>) -> Result<Box<dyn Subscriber>, BoxError>;
    async fn health(&self) -> Result<(), PublishError>;
}

#[async_trait]
impl<B: Broker> AnyBroker for B {
    fn name(&self) -> &'static str {
        Broker::name(self)
    }

    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(Broker::publisher(self))
    }

    fn subscriber(&self, destinations: Vec<String>) -> Result<Box<dyn Subscriber>, BoxError> {
        Ok(Box::new(Broker::subscriber(self, destinations)?))
    }

    async fn health(&self) -> Result<(), PublishError> {
        Broker::health(self).await
    }
}

/// The broker chosen by `FIREFLY_TRANSPORT`, connected.
#[derive(Clone)]
pub struct Transport {
    broker: Arc<dyn AnyBroker>,
    memory: Option<MemoryBroker>,
    /// What runs as long as the transport does (RabbitMQ's queue depth watch).
    _background: Background,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("name", &self.broker.name())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Builds the configured broker; Kafka and RabbitMQ must answer within their timeouts.
    pub async fn connect(settings: &Settings) -> Result<Self, BoxError> {
        if settings.transport == TransportKind::Memory {
            let mut config = MemoryConfig::default();
            config.queue_capacity = settings.queue_capacity;
            if let Some(bytes) = settings.memory_max_bytes {
                config.max_bytes = bytes;
            }
            if let Some(n) = settings.memory_dead_letters {
                config.dead_letters = n;
            }
            let broker = MemoryBroker::with_config(config);
            return Ok(Self {
                broker: Arc::new(broker.clone()),
                memory: Some(broker),
                _background: None,
            });
        }
        let (broker, background) = remote(settings).await?;
        Ok(Self {
            broker,
            memory: None,
            _background: background,
        })
    }

    /// The transport's short name.
    pub fn name(&self) -> &'static str {
        self.broker.name()
    }

    /// A publisher into it.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        self.broker.publisher()
    }

    /// A subscriber to `destinations`.
    pub fn subscriber(&self, destinations: &[String]) -> Result<Box<dyn Subscriber>, BoxError> {
        self.broker.subscriber(destinations.to_vec())
    }

    /// Whether the broker accepts events right now.
    pub async fn health(&self) -> Result<(), PublishError> {
        self.broker.health().await
    }

    /// The embedded broker, when the transport is memory: its queue lives only in this
    /// process, so the application drains it before exiting.
    pub fn memory(&self) -> Option<&MemoryBroker> {
        self.memory.as_ref()
    }
}

/// What a transport runs in the background, kept until the last clone is dropped.
type Background = Option<Arc<dyn Send + Sync>>;

/// The broker for a transport other than memory, and what it runs in the background.
#[cfg_attr(
    not(any(feature = "kafka", feature = "amqp")),
    allow(clippy::unused_async)
)]
async fn remote(settings: &Settings) -> Result<(Arc<dyn AnyBroker>, Background), BoxError> {
    match settings.transport {
        #[cfg(feature = "kafka")]
        TransportKind::Kafka => Ok((Arc::new(kafka(settings).await?), None)),
        #[cfg(feature = "amqp")]
        TransportKind::Amqp => {
            use firefly_webhook_amqp::{AmqpBroker, AmqpConfig};
            let mut config = AmqpConfig::from_url(settings.amqp_url.0.clone());
            if let Some(interval) = settings.amqp_depth_interval {
                config.depth_interval = Some(interval);
            }
            // With a spool the broker may be down at start: events wait on disk.
            let broker = if settings.spool_dir.is_some() {
                AmqpBroker::new(config)?
            } else {
                AmqpBroker::connect(config).await?
            };
            // A worker's subscriber reports its queues' depth; a gateway without one watches
            // them itself, so the depth is known while no worker runs.
            let watch: Background = match &settings.destinations {
                Some(destinations) if !settings.worker => {
                    Some(Arc::new(broker.watch_depth(destinations.iter().cloned())))
                }
                _ => None,
            };
            Ok((Arc::new(broker), watch))
        }
        TransportKind::Disk => {
            use firefly_webhook::spool::{DiskBroker, DiskConfig};
            let mut config = DiskConfig::new(settings.data_dir.clone());
            if let Some(bytes) = settings.spool_max_bytes {
                config.max_bytes = bytes;
            }
            Ok((Arc::new(DiskBroker::connect(config).await?), None))
        }
        other => Err(format!(
            "FIREFLY_TRANSPORT={other:?} is not available in this build (memory, or kafka / amqp with `--features kafka` / `--features amqp`)"
        )
        .into()),
    }
}

#[cfg(feature = "kafka")]
async fn kafka(settings: &Settings) -> Result<firefly_webhook_kafka::KafkaBroker, BoxError> {
    use firefly_webhook_kafka::{KafkaBroker, KafkaConfig};
    let mut config = KafkaConfig::from_brokers(settings.kafka_brokers.clone());
    config.group_id.clone_from(&settings.group);
    // Every body the gateway accepts, with its headers, fits in one message.
    config.max_message_bytes = settings
        .max_body_bytes
        .saturating_add(KafkaConfig::HEADER_ROOM);
    // With a spool the broker may be down at start: events wait on disk.
    let broker = if settings.spool_dir.is_some() {
        KafkaBroker::new(config)?
    } else {
        KafkaBroker::connect(config).await?
    };
    // Create the worker's topics first, so its consumer finds them when it subscribes.
    if settings.worker {
        for topic in settings.destinations.iter().flatten() {
            if let Err(err) = broker.publisher().ensure_topic(topic).await {
                tracing::warn!(
                    topic,
                    error = &err as &dyn std::error::Error,
                    "could not create the topic yet"
                );
            }
        }
    }
    Ok(broker)
}
