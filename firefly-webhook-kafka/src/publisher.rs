//! [`KafkaPublisher`]: the gateway's durable hand-off to Kafka.

use std::fmt;
use std::sync::Arc;

use firefly_webhook::wire::{self, Binding};
use firefly_webhook::{PublishError, Publisher, WebhookEvent, async_trait};
use rdkafka::message::{Header, OwnedHeaders};

use crate::key::KeyStrategy;
use crate::producer::Producer;

/// Publishes webhooks to Kafka; `publish` returns only after the broker acknowledged the write
/// with `acks=all` on an idempotent producer.
///
/// The topic is the routed destination. The message value is the raw request body, the
/// metadata travels in headers following [`firefly_webhook::wire`] (CloudEvents binary mode,
/// one `http_*` header per HTTP header value, in order), and the key follows
/// [`KafkaConfig::key`](crate::KafkaConfig::key).
///
/// Get one from [`KafkaBroker::publisher`](crate::KafkaBroker::publisher). Cloning is cheap and
/// shares the broker's producer. librdkafka batches concurrent publishes (`linger.ms`), so many
/// requests in flight share one round trip to the broker.
///
/// ```no_run
/// use firefly_webhook::IngestService;
/// use firefly_webhook_kafka::{KafkaBroker, KafkaConfig};
///
/// # fn main() -> Result<(), firefly_webhook_kafka::Error> {
/// let broker = KafkaBroker::new(KafkaConfig::from_brokers("127.0.0.1:9092"))?;
/// let ingest = IngestService::new(broker.publisher());
/// # let _ = ingest;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: Arc<Producer>,
    key: Arc<KeyStrategy>,
}

impl KafkaPublisher {
    pub(crate) fn new(producer: Arc<Producer>, key: Arc<KeyStrategy>) -> Self {
        Self { producer, key }
    }

    /// Creates `topic` now if it is missing (or checks it exists when creation is off), instead
    /// of on the first publish.
    pub async fn ensure_topic(&self, topic: &str) -> Result<(), PublishError> {
        self.producer.ensure_topic(topic).await
    }
}

/// The Kafka headers for `event`: repeated names stay repeated, in order.
pub(crate) fn headers(event: &WebhookEvent, extra: usize) -> OwnedHeaders {
    let wire = wire::encode(event, Binding::KAFKA);
    let mut headers = OwnedHeaders::new_with_capacity(wire.len() + extra);
    for (key, value) in &wire {
        headers = headers.insert(Header {
            key: key.as_str(),
            value: Some(value.as_ref()),
        });
    }
    headers
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        let key = self.key.key(&event);
        let headers = headers(&event, 0);
        self.producer
            .send(destination, key.as_deref(), &event.body, headers)
            .await
    }

    async fn health(&self) -> Result<(), PublishError> {
        self.producer.health().await
    }
}

impl fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("key", &*self.key)
            .field("delivery_timeout", &self.producer.delivery_timeout())
            .finish_non_exhaustive()
    }
}
