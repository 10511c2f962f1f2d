//! The [`Broker`] shape every transport has: one value, built from its config, that hands out
//! publishers and subscribers.
//!
//! Every transport follows the same pattern, so swapping one for another is a one-line change:
//!
//! | transport | lazy | eager | config |
//! |---|---|---|---|
//! | memory (here) | `MemoryBroker::new(capacity)` | — | — |
//! | Kafka | `KafkaBroker::new(config)?` | `KafkaBroker::connect(config).await?` | `KafkaConfig` |
//! | RabbitMQ | `AmqpBroker::new(config)?` | `AmqpBroker::connect(config).await?` | `AmqpConfig` |
//!
//! `new` builds clients without talking to the broker (they connect on first use and
//! reconnect by themselves); `connect` also waits until the broker answers, so a wrong address
//! fails at start-up. Consumer settings (group, prefetch, ...) live in the adapter's config.
//!
//! ```
//! use firefly_webhook::memory::MemoryBroker;
//! use firefly_webhook::process::{Outcome, processor_fn};
//! use firefly_webhook::{Broker, IngestService, Worker};
//!
//! // The only line that names a transport:
//! let broker = MemoryBroker::new(1000);
//!
//! let ingest = IngestService::new(broker.publisher());
//! let worker = Worker::builder(broker.subscriber(["github"]).unwrap())
//!     .build(processor_fn(|_event, _ctx| async { Ok(Outcome::Processed) }));
//! # let _ = (ingest, worker);
//! ```

use async_trait::async_trait;

use crate::publish::{PublishError, Publisher};
use crate::subscribe::Subscriber;

/// A transport: hands out [`Publisher`]s and [`Subscriber`]s that share its connections.
///
/// Implemented by `MemoryBroker` here and by `KafkaBroker` and `AmqpBroker` in the adapter
/// crates, all the same way (see the [module docs](self)).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The publisher this transport hands out.
    type Publisher: Publisher + Clone;
    /// The subscriber this transport hands out.
    type Subscriber: Subscriber;
    /// The transport's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The transport's short name (`"memory"`, `"kafka"`, `"amqp"`), for logs and health.
    fn name(&self) -> &'static str;

    /// A publisher sharing this broker's connection.
    fn publisher(&self) -> Self::Publisher;

    /// A subscriber that consumes `destinations` (topics, queues), with the consumer settings
    /// of the broker's config. Subscribers connect lazily and reconnect by themselves.
    fn subscriber<I, S>(&self, destinations: I) -> Result<Self::Subscriber, Self::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>;

    /// Whether the broker accepts events right now; backs the readiness probe.
    async fn health(&self) -> Result<(), PublishError> {
        self.publisher().health().await
    }
}
