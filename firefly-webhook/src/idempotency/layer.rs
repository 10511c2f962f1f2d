//! [`IdempotencyLayer`]: claim the event's key before processing, mark it done after.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::store::{Claim, IdempotencyStore, StoreError};
use crate::process::{Outcome, ProcessError};
use crate::worker::Job;

/// Settings of [`IdempotencyLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// How long a claim blocks other workers (default 5 min): bounds the wait after a crash.
    pub lock_ttl: Duration,
    /// How long a processed key is remembered (default 24 h): the redelivery window covered.
    pub processed_ttl: Duration,
    /// How long failure counters live after the last failure (default 24 h).
    pub failure_ttl: Duration,
    /// Redelivery delay when the store is unreachable (default 5 s).
    pub unavailable_retry: Duration,
    /// Redelivery delay when another worker holds the lock (default 1 s, at most the lock's
    /// remaining TTL).
    pub in_progress_retry: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            lock_ttl: Duration::from_secs(300),
            processed_ttl: Duration::from_secs(24 * 3600),
            failure_ttl: Duration::from_secs(24 * 3600),
            unavailable_retry: Duration::from_secs(5),
            in_progress_retry: Duration::from_secs(1),
        }
    }
}

/// Runs the inner service at most once per idempotency key.
///
/// - key already processed → `Ok(Outcome::Skipped)` without calling the inner service (the
///   worker acks it);
/// - key locked by another worker → a [deferred](ProcessError::deferred) error: the delivery
///   is retried later, never acked and dropped;
/// - store unreachable → deferred too (fail closed: the processor is not called);
/// - claimed → inner service; on success the key is marked processed, on failure the lock is
///   released (so a retry can claim it) and the failure counted.
#[derive(Clone)]
pub struct IdempotencyLayer {
    store: Arc<dyn IdempotencyStore>,
    config: IdempotencyConfig,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// A layer over `store` with default TTLs.
    pub fn new(store: impl IdempotencyStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// A layer over a shared store.
    pub fn from_arc(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            config: IdempotencyConfig::default(),
        }
    }

    /// Replaces the settings.
    #[must_use]
    pub fn config(mut self, config: IdempotencyConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the lock TTL.
    #[must_use]
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.config.lock_ttl = ttl;
        self
    }

    /// Sets the processed-marker TTL.
    #[must_use]
    pub fn processed_ttl(mut self, ttl: Duration) -> Self {
        self.config.processed_ttl = ttl;
        self
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            inner,
            store: Arc::clone(&self.store),
            config: self.config,
        }
    }
}

/// The service produced by [`IdempotencyLayer`].
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    store: Arc<dyn IdempotencyStore>,
    config: IdempotencyConfig,
}

impl<S> fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Another worker holds the event's lock.
#[derive(Debug, thiserror::Error)]
#[error("another worker is processing this event")]
pub struct InProgress;

/// The response future of [`Idempotency`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Outcome, ProcessError>> + Send>>;

impl<S> Service<Job> for Idempotency<S>
where
    S: Service<Job, Response = Outcome, Error = ProcessError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Outcome;
    type Error = ProcessError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = Arc::clone(&self.store);
        let config = self.config;
        Box::pin(async move {
            let key = job.ctx.idempotency_key.clone();
            let token = match store.claim(&key, config.lock_ttl).await {
                Ok(Claim::Acquired(token)) => token,
                Ok(Claim::Completed) => {
                    metrics::counter!("firefly_webhook_duplicates_total", "provider" => job.event.provider.clone())
                        .increment(1);
                    return Ok(Outcome::skipped("duplicate: already processed"));
                }
                Ok(Claim::InProgress { retry_after }) => {
                    let delay = retry_after.map_or(config.in_progress_retry, |left| {
                        left.min(config.in_progress_retry)
                    });
                    return Err(ProcessError::deferred(InProgress, delay));
                }
                Err(err) => {
                    tracing::warn!(key, error = %err, "idempotency store unavailable; deferring");
                    return Err(ProcessError::deferred(err, config.unavailable_retry));
                }
            };
            let result = inner.call(job).await;
            match &result {
                Ok(_) => {
                    if let Err(err) = store.complete(&key, &token, config.processed_ttl).await {
                        // The effect happened: ack anyway. A missing marker only widens the
                        // window in which a provider redelivery could run again.
                        tracing::error!(key, error = %err, "could not mark the event processed");
                    }
                }
                Err(err) => {
                    let message = err.to_string();
                    let (released, counted) = tokio::join!(
                        store.release(&key, &token),
                        store.record_failure(&key, &message, config.failure_ttl)
                    );
                    if let Err(e) = released
                        && !matches!(e, StoreError::Fenced)
                    {
                        tracing::warn!(key, error = %e, "could not release the idempotency lock");
                    }
                    if let Err(e) = counted {
                        tracing::debug!(key, error = %e, "could not record the failure");
                    }
                }
            }
            result
        })
    }
}
