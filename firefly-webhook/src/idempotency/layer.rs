//! [`IdempotencyLayer`]: claim the event's key before processing, mark it done after.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

use super::key::IdempotencyKeys;
use super::store::{Claim, FencingToken, IdempotencyStore, MemoryStore, StoreError};
use crate::BoxFuture;
use crate::metric;
use crate::process::{Job, Outcome, ProcessError};

/// Settings of [`IdempotencyLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// How long a claim blocks other workers once its holder stops renewing it (default
    /// 5 min): bounds the wait after a crash. While the processor runs, the lock is renewed
    /// every third of this, so processing may take longer.
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
///
/// # Leases
///
/// A processor may run longer than the lock TTL: while it runs, the layer
/// [renews](IdempotencyStore::renew) the lock every third of the TTL, so a redelivery of the
/// same event finds it held and is deferred, however long processing takes. A crashed worker
/// stops renewing, and its lock expires one TTL later.
///
/// Renewal is fenced. When it fails because the lock is gone (it expired during a pause, or
/// another worker owns it now), or when the store cannot be reached until the lock's TTL has
/// run out, the layer stops the processor — its future is dropped, as a timeout would — and
/// returns a [deferred](ProcessError::deferred) [`LeaseLost`] error, so the delivery is
/// redelivered without counting an attempt and nothing is marked processed: from then on
/// another worker may be processing the event, and it is that worker's result that counts.
/// An effect the processor already started may still land; the
/// [`fencing_token`](crate::process::Context::fencing_token) in the job's context lets a
/// processor refuse such a late write where the effect is stored.
///
/// Refusing to build a worker whose processing timeout exceeds the lock TTL would be the
/// simpler guard, but it would rule out long processors; renewal keeps them possible and needs
/// no timeout at all.
///
/// The worker takes one through [`WorkerBuilder::idempotency`](crate::worker::WorkerBuilder::idempotency),
/// with its settings and the [`IdempotencyKeys`] that name each event.
#[derive(Clone)]
pub struct IdempotencyLayer {
    store: Store,
    config: IdempotencyConfig,
    keys: IdempotencyKeys,
}

impl<S: IdempotencyStore> From<S> for IdempotencyLayer {
    fn from(store: S) -> Self {
        Self::new(store)
    }
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
    pub fn new<S: IdempotencyStore>(store: S) -> Self {
        let store = Arc::new(store);
        let store = match (Arc::clone(&store) as Arc<dyn Any + Send + Sync>).downcast() {
            Ok(memory) => Store::Memory(memory),
            Err(_) => Store::Other(store),
        };
        Self::with_store(store)
    }

    /// A layer over a shared store.
    ///
    /// The layer calls a store through the [`IdempotencyStore`] trait, whose methods return a
    /// boxed future each; a [`MemoryStore`] given to [`new`](Self::new) is called directly
    /// instead, two allocations fewer an event. One given here is called through the trait.
    pub fn from_arc(store: Arc<dyn IdempotencyStore>) -> Self {
        Self::with_store(Store::Other(store))
    }

    fn with_store(store: Store) -> Self {
        Self {
            store,
            config: IdempotencyConfig::default(),
            keys: IdempotencyKeys::new(),
        }
    }

    /// How idempotency keys are computed (default: [`IdempotencyKeys::new`]).
    #[must_use]
    pub fn keys(mut self, keys: IdempotencyKeys) -> Self {
        self.keys = keys;
        self
    }

    /// The key rules this layer was configured with.
    pub fn key_rules(&self) -> &IdempotencyKeys {
        &self.keys
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
            store: self.store.clone(),
            config: self.config,
        }
    }
}

/// The layer's store. The in-process [`MemoryStore`] answers claims and completions at once,
/// so the layer calls it directly, without the boxed future of each of the trait's methods
/// (an allocation, and a copy of the call's state into it): two an event.
#[derive(Clone)]
enum Store {
    Memory(Arc<MemoryStore>),
    Other(Arc<dyn IdempotencyStore>),
}

impl Store {
    fn get(&self) -> &dyn IdempotencyStore {
        match self {
            Self::Memory(store) => &**store,
            Self::Other(store) => &**store,
        }
    }

    async fn claim(&self, key: &str, lock_ttl: Duration) -> Result<Claim, StoreError> {
        match self {
            Self::Memory(store) => Ok(store.claim_now(key, lock_ttl)),
            Self::Other(store) => store.claim(key, lock_ttl).await,
        }
    }

    async fn complete(
        &self,
        key: &str,
        token: &FencingToken,
        processed_ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(store) => store.complete_now(key, token, processed_ttl),
            Self::Other(store) => store.complete(key, token, processed_ttl).await,
        }
    }
}

/// The service produced by [`IdempotencyLayer`].
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    store: Store,
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

/// The event's lock could not be renewed while it was being processed, so processing was
/// stopped (see [Leases](IdempotencyLayer#leases)).
#[derive(Debug, thiserror::Error)]
#[error("the idempotency lock was lost while processing")]
pub struct LeaseLost;

/// The response future of [`Idempotency`].
pub type ResponseFuture = BoxFuture<Result<Outcome, ProcessError>>;

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

    fn call(&mut self, mut job: Job) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        let config = self.config;
        Box::pin(async move {
            // The job moves into the inner service; the key stays here, shared.
            let shared_key = Arc::clone(&job.ctx.idempotency_key);
            let key = &*shared_key;
            // Before the claim is sent: the lock cannot expire earlier than this plus its TTL.
            let claimed_at = Instant::now();
            let token = match store.claim(key, config.lock_ttl).await {
                Ok(Claim::Acquired(token)) => token,
                Ok(Claim::Completed) => {
                    metrics::counter!(metric::DUPLICATES_TOTAL, metric::PROVIDER => job.event.provider.clone())
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
                    tracing::warn!(
                        key,
                        error = &err as &dyn std::error::Error,
                        "idempotency store unavailable; deferring"
                    );
                    return Err(ProcessError::deferred(err, config.unavailable_retry));
                }
            };
            job.ctx.fencing_token = Some(token.clone());
            // Renewal starts a third of the TTL in: until then only the timer is kept here,
            // and the renewal loop (boxed) is built only for the processors that last that long.
            let renewals = async {
                tokio::time::sleep_until(claimed_at + renewal_period(config.lock_ttl)).await;
                Box::pin(hold(store.get(), key, &token, config.lock_ttl, claimed_at)).await
            };
            let result = tokio::select! {
                biased;
                result = inner.call(job) => result,
                lost = renewals => {
                    // The processor was dropped with the other branch.
                    tracing::warn!(key, reason = lost, "idempotency lock lost; processing stopped");
                    return Err(ProcessError::deferred(LeaseLost, config.in_progress_retry));
                }
            };
            match &result {
                Ok(_) => {
                    if let Err(err) = store.complete(key, &token, config.processed_ttl).await {
                        // The effect happened: ack anyway. A missing marker only widens the
                        // window in which a provider redelivery could run again.
                        tracing::error!(
                            key,
                            error = &err as &dyn std::error::Error,
                            "could not mark the event processed"
                        );
                    }
                }
                // Boxed: failures are the exception, and the future of every call would
                // otherwise keep room for this branch's state.
                Err(err) => Box::pin(fail(store.get(), key, &token, err, config.failure_ttl)).await,
            }
            result
        })
    }
}

/// After a failed attempt: releases the lock (so a retry can claim it) and counts the failure.
async fn fail(
    store: &dyn IdempotencyStore,
    key: &str,
    token: &FencingToken,
    err: &ProcessError,
    failure_ttl: Duration,
) {
    let message = err.to_string();
    let (released, counted) = tokio::join!(
        store.release(key, token),
        store.record_failure(key, &message, failure_ttl)
    );
    if let Err(e) = released
        && !matches!(e, StoreError::Fenced)
    {
        tracing::warn!(
            key,
            error = &e as &dyn std::error::Error,
            "could not release the idempotency lock"
        );
    }
    if let Err(e) = counted {
        tracing::debug!(
            key,
            error = &e as &dyn std::error::Error,
            "could not record the failure"
        );
    }
}

/// How often a lock of `ttl` is renewed, the first time counting from its claim.
fn renewal_period(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(1))
}

/// Renews the lock on `key` every third of `ttl` for as long as it is polled, from the
/// first renewal on (the caller waits for that one: [`renewal_period`]); returns (why) once
/// the lock is lost: renewal was fenced, or no renewal succeeded before the lock ran out.
async fn hold(
    store: &dyn IdempotencyStore,
    key: &str,
    token: &FencingToken,
    ttl: Duration,
    claimed_at: Instant,
) -> &'static str {
    let every = renewal_period(ttl);
    // A lower bound of the lock's expiry in the store: each renewal counts from when it was
    // sent, not from when the store applied it.
    let mut valid_until = claimed_at + ttl;
    loop {
        let sent = Instant::now();
        if sent >= valid_until {
            return "the lock expired before it could be renewed";
        }
        match tokio::time::timeout_at(valid_until, store.renew(key, token, ttl)).await {
            Ok(Ok(())) => valid_until = sent + ttl,
            Ok(Err(StoreError::Fenced)) => return "another worker owns the lock now",
            Ok(Err(err)) => tracing::warn!(
                key,
                error = &err as &dyn std::error::Error,
                "could not renew the idempotency lock; retrying"
            ),
            Err(_) => return "the lock expired before it could be renewed",
        }
        tokio::time::sleep_until((sent + every).min(valid_until)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_process_store_is_called_directly() {
        let layer = IdempotencyLayer::new(MemoryStore::new());
        assert!(matches!(layer.store, Store::Memory(_)));
        let shared: Arc<dyn IdempotencyStore> = Arc::new(MemoryStore::new());
        assert!(matches!(
            IdempotencyLayer::from_arc(shared).store,
            Store::Other(_)
        ));
    }

    #[tokio::test]
    async fn directly_or_through_the_trait_the_store_answers_alike() {
        let ttl = Duration::from_secs(60);
        for store in [
            Store::Memory(Arc::new(MemoryStore::new())),
            Store::Other(Arc::new(MemoryStore::new())),
        ] {
            let Ok(Claim::Acquired(token)) = store.claim("k", ttl).await else {
                panic!("the first claim acquires");
            };
            assert!(matches!(
                store.claim("k", ttl).await,
                Ok(Claim::InProgress { .. })
            ));
            let stranger = FencingToken::random();
            assert!(matches!(
                store.complete("k", &stranger, ttl).await,
                Err(StoreError::Fenced)
            ));
            store.complete("k", &token, ttl).await.unwrap();
            assert!(matches!(store.claim("k", ttl).await, Ok(Claim::Completed)));
            // Completed: the lock is gone, its token with it.
            assert!(matches!(
                store.complete("k", &token, ttl).await,
                Err(StoreError::Fenced)
            ));
        }
    }
}
