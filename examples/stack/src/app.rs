//! The pieces an ingesting application builds from [`Settings`]: the publisher (behind a
//! circuit breaker), the ingest service, readiness and the HTTP server.

use std::sync::Arc;
use std::time::Duration;

use firefly_webhook::health::{Health, Readiness};
use firefly_webhook::publish::{CircuitBreaker, Storage};
use firefly_webhook::serve::Server;
use firefly_webhook::spool::{Spool, SpoolConfig, SpoolState};
use firefly_webhook::worker::WorkerBuilder;
use firefly_webhook::{
    BoxError, IngestService, PublishError, Publisher, Routing, Subscriber, WebhookEvent, Worker,
    async_trait,
};

use crate::env::Settings;

/// The worker's own defaults, used when only one of the two pause settings is given.
const DEFAULT_PAUSE_AFTER: u32 = 20;
const DEFAULT_PAUSE_COOL_DOWN: Duration = Duration::from_secs(30);
use crate::transport::{Transport, TransportKind};

impl Settings {
    /// The transport's publisher behind a [`CircuitBreaker`] (unless
    /// `FIREFLY_BREAKER_THRESHOLD=0`), so a broker outage is answered with 503 at once instead
    /// of each request waiting out the publish timeout; and, with `FIREFLY_SPOOL_DIR`, behind a
    /// [`Spool`] that keeps accepting while the broker is down (an open breaker spools at once).
    pub async fn publisher(&self, transport: &Transport) -> Result<Arc<IngestPublisher>, BoxError> {
        let publisher = self.breaker(transport.publisher());
        let Some(dir) = &self.spool_dir else {
            return Ok(Arc::new(IngestPublisher::Direct(publisher)));
        };
        let mut config = SpoolConfig::new(dir.clone());
        if let Some(bytes) = self.spool_max_bytes {
            config.max_bytes = bytes;
        }
        if let Some(timeout) = self.spool_broker_timeout {
            config.publish_timeout = timeout;
        }
        if self.transport == TransportKind::Amqp {
            // The AMQP publisher spreads publishes over a pool of channels, which may reorder
            // the concurrent publishes of one destination: forward each in strict order.
            config.forward_window = 1;
        }
        let spool = Spool::open(publisher, config).await?;
        tracing::info!(dir = %dir.display(), "spooling to disk while the broker is down");
        Ok(Arc::new(IngestPublisher::Spooled(spool)))
    }

    fn breaker(&self, publisher: Arc<dyn Publisher>) -> Arc<dyn Publisher> {
        if self.breaker_threshold == Some(0) {
            return publisher;
        }
        let mut breaker = CircuitBreaker::new(publisher);
        if let Some(threshold) = self.breaker_threshold {
            breaker = breaker.failure_threshold(threshold);
        }
        if let Some(cool_down) = self.breaker_cool_down {
            breaker = breaker.cool_down(cool_down);
        }
        Arc::new(breaker)
    }

    /// The ingest service with every ingest setting applied.
    pub fn ingest(&self, publisher: impl Publisher) -> IngestService {
        let mut ingest = IngestService::new(publisher)
            .transport_name(self.transport.name())
            .max_body_bytes(self.max_body_bytes)
            .trusted_proxies(self.trusted_proxies.clone())
            .routing(Routing::provider().prefix(self.topic_prefix.clone()))
            .verifiers(self.verifiers.clone())
            .keep_credentials(self.keep_credentials);
        if let Some(providers) = &self.providers {
            ingest = ingest.providers(providers);
        }
        if let Some(timeout) = self.body_timeout {
            ingest = ingest.body_timeout(timeout);
        }
        if let Some(n) = self.max_in_flight {
            ingest = ingest.max_in_flight(n);
        }
        if let Some(bytes) = self.body_budget {
            ingest = ingest.body_budget(bytes);
        }
        if let Some(rate) = self.rate_limit_per_ip {
            ingest = ingest.rate_limit_per_ip(rate.per_second, rate.burst);
        }
        if let Some(rate) = self.rate_limit_per_provider {
            ingest = ingest.rate_limit_per_provider(rate.per_second, rate.burst);
        }
        for (provider, nets) in &self.allow_ips {
            ingest = ingest.allow_ips(provider, nets.iter().copied());
        }
        ingest
    }

    /// A worker builder on `subscriber` with the worker settings applied (concurrency, in-task
    /// deliveries, pause on a downstream outage); the application adds idempotency and its
    /// processor.
    pub fn worker<Sub: Subscriber>(&self, subscriber: Sub) -> WorkerBuilder<Sub> {
        let mut builder = Worker::builder(subscriber)
            .concurrency(self.concurrency)
            .inline(self.worker_inline);
        match (self.worker_pause_after, self.worker_pause_cool_down) {
            (Some(0), _) => builder = builder.without_pause(),
            (None, None) => {}
            (after, cool_down) => {
                builder = builder.pause_after(
                    after.unwrap_or(DEFAULT_PAUSE_AFTER),
                    cool_down.unwrap_or(DEFAULT_PAUSE_COOL_DOWN),
                );
            }
        }
        builder
    }

    /// Readiness of `publisher` (the transport's name in the answer), cached for
    /// `FIREFLY_READY_CACHE`.
    ///
    /// With a spool the check is up while events go straight to the broker; **degraded** (still
    /// 200, reason `spooling`) while the spool holds events, and (reason `broker_unavailable`)
    /// while it holds none but the broker fails its health check, since events would be
    /// spooled; down when the spool is full or failed to write.
    pub fn readiness(&self, name: &str, publisher: Arc<IngestPublisher>) -> Readiness {
        let mut readiness = Readiness::new();
        if let Some(cache) = self.ready_cache {
            readiness = readiness.cache_for(cache);
        }
        match Arc::unwrap_or_clone(publisher) {
            IngestPublisher::Direct(publisher) => readiness.publisher(name, publisher),
            IngestPublisher::Spooled(spool) => readiness.check_health(name, move || {
                let spool = spool.clone();
                async move { spool_health(&spool).await }
            }),
        }
    }

    /// The HTTP server on `FIREFLY_LISTEN`, with the server settings applied (the server's
    /// own defaults otherwise).
    pub async fn server(&self) -> Result<Server, BoxError> {
        let mut server = Server::bind(self.listen)
            .await
            .map_err(|err| format!("cannot listen on {}: {err}", self.listen))?;
        if let Some(timeout) = self.header_read_timeout {
            server = server.header_read_timeout(timeout);
        }
        if let Some(timeout) = self.keep_alive_timeout {
            server = server.keep_alive_timeout(timeout);
        }
        if let Some(timeout) = self.request_timeout {
            server = server.request_timeout(timeout);
        }
        if let Some(max) = self.max_connections {
            server = server.max_connections(max);
        }
        if let Some(timeout) = self.shutdown_timeout {
            server = server.graceful_shutdown_timeout(timeout);
        }
        Ok(server)
    }
}

/// The publisher ingest hands events to ([`Settings::publisher`]): the transport's, behind
/// its circuit breaker and, with `FIREFLY_SPOOL_DIR`, behind a spool, which
/// [`Settings::readiness`] reports on.
#[derive(Clone)]
#[non_exhaustive]
pub enum IngestPublisher {
    /// Straight to the broker.
    Direct(Arc<dyn Publisher>),
    /// Through a spool while the broker is down.
    Spooled(Spool<Arc<dyn Publisher>>),
}

impl std::fmt::Debug for IngestPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct(_) => f.write_str("IngestPublisher::Direct"),
            Self::Spooled(spool) => f
                .debug_tuple("IngestPublisher::Spooled")
                .field(spool)
                .finish(),
        }
    }
}

#[async_trait]
impl Publisher for IngestPublisher {
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        match self {
            Self::Direct(publisher) => publisher.publish(destination, event).await,
            Self::Spooled(spool) => Publisher::publish(spool, destination, event).await,
        }
    }

    async fn health(&self) -> Result<(), PublishError> {
        match self {
            Self::Direct(publisher) => publisher.health().await,
            Self::Spooled(spool) => Publisher::health(spool).await,
        }
    }

    // Hands on the chosen publisher's future as it is: no box of its own per request.
    fn publish_with_storage<'s, 'd, 'async_trait>(
        &'s self,
        destination: &'d str,
        event: WebhookEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Storage, PublishError>> + Send + 'async_trait>>
    where
        's: 'async_trait,
        'd: 'async_trait,
        Self: 'async_trait,
    {
        match self {
            Self::Direct(publisher) => publisher.publish_with_storage(destination, event),
            Self::Spooled(spool) => Box::pin(spool.publish_with_storage(destination, event)),
        }
    }
}

/// The readiness of a spool: down when it takes nothing more, degraded while it holds
/// events or while the broker behind it fails, up otherwise.
async fn spool_health(spool: &Spool<Arc<dyn Publisher>>) -> Result<Health, BoxError> {
    match spool.state() {
        SpoolState::Spooling => return Ok(Health::Degraded("spooling")),
        SpoolState::Direct => {}
        // Full, failed, and any state a later version adds: what the spool's own health says.
        _ => {
            return Publisher::health(spool)
                .await
                .map(|()| Health::Up)
                .map_err(Into::into);
        }
    }
    match spool.inner().health().await {
        Ok(()) => Ok(Health::Up),
        Err(error) => {
            tracing::debug!(%error, "broker unavailable; new events would be spooled");
            Ok(Health::Degraded("broker_unavailable"))
        }
    }
}
