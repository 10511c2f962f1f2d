//! The [`Subscriber`] port: deliveries that are acked, retried later or dead-lettered.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::BoxError;
use crate::event::WebhookEvent;
use crate::wire::DeadLetter;

/// A source of deliveries for a [`Worker`](crate::worker::Worker).
///
/// Implemented by the memory transport here and by the Kafka and AMQP adapter crates.
/// A delivery that is dropped without being settled is never acknowledged, so the transport
/// redelivers it (after a restart at the latest).
#[async_trait]
pub trait Subscriber: Send + 'static {
    /// The next delivery. `None` means the subscription has ended and will yield no more.
    ///
    /// An `Err` is a transport problem (connection lost, ...); the worker logs it, backs off and
    /// calls `next` again, so implementations should reconnect by themselves.
    async fn next(&mut self) -> Option<Result<Delivery, SubscribeError>>;
}

#[async_trait]
impl<S: Subscriber + ?Sized> Subscriber for Box<S> {
    async fn next(&mut self) -> Option<Result<Delivery, SubscribeError>> {
        (**self).next().await
    }
}

/// Settles one delivery on its transport. Transports implement this; users call the methods
/// on [`Delivery`] instead.
#[async_trait]
pub trait Acker: Send + Sync + 'static {
    /// Processing finished: the transport may forget the message.
    async fn ack(&self) -> Result<(), SubscribeError>;

    /// Deliver the message again after `delay`, as attempt `next_attempt`.
    async fn retry(
        &self,
        event: &WebhookEvent,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), SubscribeError>;

    /// Move the message to the dead-letter destination with `failure` attached, then forget it.
    async fn dead_letter(
        &self,
        event: &WebhookEvent,
        failure: &DeadLetter,
    ) -> Result<(), SubscribeError>;

    /// Give the message back unprocessed (shutdown): it will be redelivered as `attempt`.
    async fn abandon(&self, event: &WebhookEvent, attempt: u32) -> Result<(), SubscribeError>;
}

/// Where a delivery sits in its transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Position {
    /// The memory transport's per-destination sequence number.
    Memory {
        /// Sequence within the destination, starting at 0.
        sequence: u64,
    },
    /// A Kafka record.
    Kafka {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Offset within the partition.
        offset: i64,
    },
    /// An AMQP delivery.
    Amqp {
        /// The channel-scoped delivery tag.
        delivery_tag: u64,
        /// Whether the broker flagged the delivery as redelivered.
        redelivered: bool,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { sequence } => write!(f, "memory#{sequence}"),
            Self::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}/{partition}@{offset}"),
            Self::Amqp { delivery_tag, .. } => write!(f, "amqp#{delivery_tag}"),
        }
    }
}

/// One message handed to a worker, with the means to settle it.
pub struct Delivery {
    /// The webhook.
    pub event: WebhookEvent,
    /// Where it was published.
    pub destination: String,
    /// 1 on first delivery; higher when the transport redelivers after `retry`.
    pub attempt: u32,
    /// Where it sits in the transport.
    pub position: Position,
    acker: Box<dyn Acker>,
}

impl Delivery {
    /// A delivery settled through `acker`.
    pub fn new(
        event: WebhookEvent,
        destination: impl Into<String>,
        attempt: u32,
        position: Position,
        acker: impl Acker,
    ) -> Self {
        Self {
            event,
            destination: destination.into(),
            attempt: attempt.max(1),
            position,
            acker: Box::new(acker),
        }
    }

    /// Acknowledges the delivery.
    pub async fn ack(self) -> Result<(), SubscribeError> {
        self.acker.ack().await
    }

    /// Asks the transport to deliver it again after `delay`.
    pub async fn retry(self, delay: Duration) -> Result<(), SubscribeError> {
        self.acker
            .retry(&self.event, self.attempt.saturating_add(1), delay)
            .await
    }

    /// Dead-letters it with `failure`.
    pub async fn dead_letter(self, failure: &DeadLetter) -> Result<(), SubscribeError> {
        self.acker.dead_letter(&self.event, failure).await
    }

    /// Leaves it unprocessed for redelivery.
    pub async fn abandon(self) -> Result<(), SubscribeError> {
        self.acker.abandon(&self.event, self.attempt).await
    }

    /// Splits into the parts the worker pipeline uses.
    pub(crate) fn into_parts(self) -> (WebhookEvent, DeliveryMeta, Box<dyn Acker>) {
        (
            self.event,
            DeliveryMeta {
                destination: self.destination,
                attempt: self.attempt,
                position: self.position,
            },
            self.acker,
        )
    }
}

/// What the worker keeps of a delivery besides the event and its acker.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryMeta {
    pub(crate) destination: String,
    pub(crate) attempt: u32,
    pub(crate) position: Position,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &self.event)
            .field("destination", &self.destination)
            .field("attempt", &self.attempt)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// A transport failure while receiving or settling deliveries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The transport cannot be reached.
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// A received message does not follow the wire format.
    #[error("message could not be decoded: {0}")]
    Decode(#[source] BoxError),
    /// Settling (ack, retry, dead-letter) failed; the message will be redelivered.
    #[error("could not settle the delivery: {0}")]
    Settle(#[source] BoxError),
}
