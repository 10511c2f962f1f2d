//! The [`Subscriber`] port: deliveries that are acked, retried later or dead-lettered.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::dead_letter::DeadLetter;
use crate::event::WebhookEvent;
use futures_util::future::BoxFuture;

use crate::BoxError;

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

    /// A delivery at hand now, without waiting: `None` when there is none (or the transport
    /// cannot tell without waiting), and the worker then awaits [`next`](Self::next), which
    /// also reports errors and the end of the subscription.
    ///
    /// A [`Worker`](crate::worker::Worker) tries this first for each delivery, so that a
    /// transport holding a backlog in memory hands it out without a boxed future for each
    /// one. Returns `None` by default.
    fn try_next(&mut self) -> Option<Delivery> {
        None
    }

    /// The consumer stops pulling (a [`Worker`](crate::worker::Worker) calls this when it
    /// shuts down, before it waits for the deliveries in flight): no `next` or `try_next` call
    /// follows, and the deliveries handed out are still settled. A transport that waits out
    /// retry delays in the settling call (so that they count against the worker's concurrency)
    /// ends those waits now and leaves the messages for redelivery. Does nothing by default.
    fn stop(&mut self) {}
}

impl<S: Subscriber + ?Sized> Subscriber for Box<S> {
    // Hands on the inner subscriber's future, without boxing it once more (the signature
    // `#[async_trait]` gives the trait's method).
    fn next<'s, 'async_trait>(
        &'s mut self,
    ) -> BoxFuture<'async_trait, Option<Result<Delivery, SubscribeError>>>
    where
        's: 'async_trait,
        Self: 'async_trait,
    {
        (**self).next()
    }

    fn try_next(&mut self) -> Option<Delivery> {
        (**self).try_next()
    }

    fn stop(&mut self) {
        (**self).stop();
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

/// Where a delivery sits in its transport: the transport's name and a value the transport
/// defines (a sequence number, a topic/partition/offset, a delivery tag).
///
/// The core knows no transport: adapters put their own type in and read it back with
/// [`downcast_ref`](Self::downcast_ref). `Display` shows the value, for logs.
///
/// ```
/// use firefly_webhook::Position;
///
/// let position = Position::new("memory", 7_u64);
/// assert_eq!(position.transport(), "memory");
/// assert_eq!(position.downcast_ref::<u64>(), Some(&7));
/// assert_eq!(position.to_string(), "memory:7");
/// ```
#[derive(Clone)]
pub struct Position {
    transport: &'static str,
    value: Value,
}

/// A position's value: a `u64` (a sequence number, a delivery tag) is kept inline, anything
/// else behind an `Arc`, so that most deliveries cost no allocation for their position.
#[derive(Clone)]
enum Value {
    Number(u64),
    Other(Arc<dyn PositionValue>),
}

trait PositionValue: Any + fmt::Display + fmt::Debug + Send + Sync {}

impl<T: Any + fmt::Display + fmt::Debug + Send + Sync> PositionValue for T {}

impl Position {
    /// A position on `transport` (its short name, e.g. `"kafka"`) holding `value`.
    pub fn new<T>(transport: &'static str, value: T) -> Self
    where
        T: fmt::Display + fmt::Debug + Send + Sync + 'static,
    {
        let value = match (&value as &dyn Any).downcast_ref::<u64>() {
            Some(&number) => Value::Number(number),
            None => Value::Other(Arc::new(value)),
        };
        Self { transport, value }
    }

    /// The transport's short name.
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// The transport's value, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        let value: &dyn Any = match &self.value {
            Value::Number(number) => number,
            Value::Other(value) => &**value,
        };
        value.downcast_ref()
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(number) => fmt::Display::fmt(number, f),
            Self::Other(value) => fmt::Display::fmt(value, f),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(number) => fmt::Debug::fmt(number, f),
            Self::Other(value) => fmt::Debug::fmt(value, f),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.value)
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Position")
            .field(&self.transport)
            .field(&self.value)
            .finish()
    }
}

/// One message handed to a worker, with the means to settle it.
pub struct Delivery {
    /// The webhook.
    pub event: WebhookEvent,
    /// Where it was published. Shared: the worker hands it on to every attempt's
    /// [`Context`](crate::process::Context) without copying it.
    pub destination: Arc<str>,
    /// 1 on first delivery; higher when the transport redelivers after `retry`.
    pub attempt: u32,
    /// Where it sits in the transport.
    pub position: Position,
    acker: Box<dyn Acker>,
}

impl Delivery {
    /// A delivery settled through `acker`.
    // Inline: it takes the whole event by value, which a call would copy once more (the memory
    // subscriber's share of an event, 1,290 → 1,112 instructions when the compiler stopped
    // inlining it on its own).
    #[inline]
    pub fn new(
        event: WebhookEvent,
        destination: impl Into<Arc<str>>,
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
    pub(crate) destination: Arc<str>,
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
    #[error("broker unavailable")]
    Unavailable(#[source] BoxError),
    /// A received message does not follow the wire format.
    #[error("message could not be decoded")]
    Decode(#[source] BoxError),
    /// Settling (ack, retry, dead-letter) failed; the message will be redelivered.
    #[error("could not settle the delivery")]
    Settle(#[source] BoxError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_hold_numbers_inline_and_anything_else_shared() {
        let number = Position::new("memory", 7_u64);
        assert_eq!(number.downcast_ref::<u64>(), Some(&7));
        assert_eq!(number.downcast_ref::<u32>(), None);
        assert!(matches!(number.value, Value::Number(7)));
        assert_eq!(
            format!("{number} {number:?}"),
            "memory:7 Position(\"memory\", 7)"
        );

        let text = Position::new("kafka", String::from("orders/3@42"));
        assert!(matches!(text.value, Value::Other(_)));
        assert_eq!(
            text.downcast_ref::<String>().map(String::as_str),
            Some("orders/3@42")
        );
        assert_eq!(text.downcast_ref::<u64>(), None);
        let copy = text.clone();
        assert_eq!(
            format!("{copy} {copy:?}"),
            "kafka:orders/3@42 Position(\"kafka\", \"orders/3@42\")"
        );
    }
}
