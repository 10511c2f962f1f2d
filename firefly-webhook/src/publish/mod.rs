//! The [`Publisher`] port, destination [`Routing`], the [`CircuitBreaker`] that makes a
//! broker outage fail fast, and [`RecentNames`] for publishers that prepare destinations.

mod breaker;
mod recent;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::breaker::{BreakerOpen, BreakerState, CircuitBreaker};
pub use self::recent::RecentNames;
use crate::event::WebhookEvent;
use futures_util::future::BoxFuture;

use crate::BoxError;

/// Hands accepted webhooks to a durable transport.
///
/// `publish` returns `Ok` only once the transport has durably accepted the event (a Kafka
/// `acks=all` delivery report, an AMQP publisher confirm, a slot in the memory queue). The
/// ingest service answers `202 Accepted` only after that.
///
/// The trait is object-safe: an application can choose a backend at start-up and hold it as
/// `Arc<dyn Publisher>`.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `event` to `destination` (a topic, routing key or queue name).
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError>;

    /// Whether the transport can accept events right now; backs the readiness probe.
    async fn health(&self) -> Result<(), PublishError> {
        Ok(())
    }

    /// [`publish`](Self::publish), and where the event is held once it returns `Ok`: the
    /// `202` receipt reports it as `"storage"`. Publishers that may hold an event locally (the
    /// spool) override it; the default says [`Storage::Broker`].
    async fn publish_with_storage(
        &self,
        destination: &str,
        event: WebhookEvent,
    ) -> Result<Storage, PublishError> {
        self.publish(destination, event)
            .await
            .map(|()| Storage::Broker)
    }
}

/// Where an accepted event is held: what the `202` receipt reports as `"storage"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Storage {
    /// The broker confirmed it.
    Broker,
    /// It is on the local disk; the spool forwards it once the broker takes it.
    Spool,
}

impl Storage {
    /// `"broker"` or `"spool"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Broker => "broker",
            Self::Spool => "spool",
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Each method hands on the inner publisher's future: no box and no move of the event per
// layer of `Arc`.
// (The signatures are the ones `#[async_trait]` gives the trait's methods.)
impl<P: Publisher + ?Sized> Publisher for Arc<P> {
    fn publish<'s, 'd, 'async_trait>(
        &'s self,
        destination: &'d str,
        event: WebhookEvent,
    ) -> BoxFuture<'async_trait, Result<(), PublishError>>
    where
        's: 'async_trait,
        'd: 'async_trait,
        Self: 'async_trait,
    {
        (**self).publish(destination, event)
    }

    fn health<'s, 'async_trait>(&'s self) -> BoxFuture<'async_trait, Result<(), PublishError>>
    where
        's: 'async_trait,
        Self: 'async_trait,
    {
        (**self).health()
    }

    fn publish_with_storage<'s, 'd, 'async_trait>(
        &'s self,
        destination: &'d str,
        event: WebhookEvent,
    ) -> BoxFuture<'async_trait, Result<Storage, PublishError>>
    where
        's: 'async_trait,
        'd: 'async_trait,
        Self: 'async_trait,
    {
        (**self).publish_with_storage(destination, event)
    }
}

/// Why a publish failed. The ingest service answers 503 for the first three, 500 for `Rejected`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The transport cannot be reached or is not ready; try again later. A
    /// [`CircuitBreaker`] that is failing fast answers this with a [`BreakerOpen`] source.
    #[error("broker unavailable")]
    Unavailable(#[source] BoxError),
    /// The transport is reachable but its buffers or queues are full.
    #[error("broker is overloaded")]
    Overloaded,
    /// The transport did not confirm within the publish timeout.
    #[error("broker did not confirm within {0:?}")]
    TimedOut(Duration),
    /// The transport refused this message; retrying the same message will not help.
    #[error("broker rejected the message")]
    Rejected(#[source] BoxError),
}

impl PublishError {
    /// An [`Unavailable`](Self::Unavailable) error from any error.
    pub fn unavailable(err: impl Into<BoxError>) -> Self {
        Self::Unavailable(err.into())
    }

    /// A [`Rejected`](Self::Rejected) error from any error.
    pub fn rejected(err: impl Into<BoxError>) -> Self {
        Self::Rejected(err.into())
    }

    /// Whether a later attempt may succeed (maps to 503 rather than 500).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Rejected(_))
    }
}

type RouteFn = dyn Fn(&WebhookEvent) -> String + Send + Sync;

/// Chooses the destination (topic, routing key, queue) of each event.
///
/// The default routes to the provider name. Prefix and suffix apply to every strategy.
///
/// ```
/// use firefly_webhook::{Routing, WebhookEvent};
///
/// let routing = Routing::provider().prefix("webhooks.").map([("gh", "github")]);
/// assert_eq!(routing.destination(&WebhookEvent::new("gh", "")), "webhooks.github");
/// assert_eq!(routing.destination(&WebhookEvent::new("stripe", "")), "webhooks.stripe");
///
/// let all = Routing::custom(|_event: &WebhookEvent| "all-webhooks".to_owned());
/// assert_eq!(all.destination(&WebhookEvent::new("gh", "")), "all-webhooks");
/// ```
#[derive(Clone, Default)]
pub struct Routing {
    prefix: String,
    suffix: String,
    map: HashMap<String, String>,
    custom: Option<Arc<RouteFn>>,
}

impl Routing {
    /// Destination = provider name.
    pub fn provider() -> Self {
        Self::default()
    }

    /// Destination chosen by `f`; prefix and suffix still apply.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&WebhookEvent) -> String + Send + Sync + 'static,
    {
        Self {
            custom: Some(Arc::new(f)),
            ..Self::default()
        }
    }

    /// Prepends `prefix` to every destination.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Appends `suffix` to every destination.
    #[must_use]
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }

    /// Routes the listed providers to explicit destinations; others use the base strategy.
    #[must_use]
    pub fn map<I, K, V>(mut self, entries: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.map
            .extend(entries.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The destination for `event`.
    pub fn destination(&self, event: &WebhookEvent) -> String {
        let base = if let Some(d) = self.map.get(&event.provider) {
            d.clone()
        } else if let Some(f) = &self.custom {
            f(event)
        } else {
            event.provider.clone()
        };
        if self.prefix.is_empty() && self.suffix.is_empty() {
            base
        } else {
            [self.prefix.as_str(), &base, &self.suffix].concat()
        }
    }
}

impl fmt::Debug for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routing")
            .field("prefix", &self.prefix)
            .field("suffix", &self.suffix)
            .field("map", &self.map)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}
