//! The worker runtime: pull deliveries from a [`Subscriber`], run them through a tower stack
//! ending in your [`WebhookProcessor`], then ack, retry later or dead-letter.
//!
//! The default stack is `VerifyLayer` (when verifiers are configured) → `IdempotencyLayer` →
//! `Retry(RetryPolicy)` → `ProcessorService`. Settlement follows one rule: a delivery is
//! acked only after processing finished — processed, skipped as a duplicate, or written to the
//! dead-letter destination. Anything else leaves it for redelivery.
//!
//! ```
//! use std::time::Duration;
//! use firefly_webhook::memory::MemoryBroker;
//! use firefly_webhook::process::{Outcome, processor_fn};
//! use firefly_webhook::worker::{RetryPolicy, Worker};
//! use firefly_webhook::{Publisher, WebhookEvent};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let broker = MemoryBroker::new(1000);
//! broker.publisher().publish("github", WebhookEvent::new("github", "{}")).await.unwrap();
//!
//! let worker = Worker::builder(broker.subscriber())
//!     .concurrency(16)
//!     .retry(RetryPolicy::new().max_attempts(5))
//!     .build(processor_fn(|event, ctx| async move {
//!         println!("{} attempt {}", event.id, ctx.attempt);
//!         Ok(Outcome::Processed)
//!     }));
//! // Runs until the future completes, then drains in-flight work.
//! worker.run_until(tokio::time::sleep(Duration::from_millis(50))).await;
//! assert_eq!(broker.in_flight(), 0);
//! # }
//! ```

mod retry;
mod service;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

pub use self::retry::RetryPolicy;
pub use self::service::{Elapsed, Panicked, ProcessorService};
use crate::event::WebhookEvent;
use crate::idempotency::{
    IdempotencyConfig, IdempotencyKeys, IdempotencyLayer, IdempotencyStore, MemoryStore,
};
use crate::process::{Context, Outcome, ProcessError, WebhookProcessor};
use crate::subscribe::{Acker, Delivery, Subscriber};
use crate::verify::VerifyLayer;
use crate::wire::DeadLetter;

/// The request flowing through the worker's tower stack.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Job {
    /// The event (shared: retries clone the job, not the body).
    pub event: Arc<WebhookEvent>,
    /// What the worker knows about this attempt.
    pub ctx: Context,
}

impl Job {
    /// A job for `event` with `ctx`.
    pub fn new(event: impl Into<Arc<WebhookEvent>>, ctx: Context) -> Self {
        Self {
            event: event.into(),
            ctx,
        }
    }
}

impl AsRef<WebhookEvent> for Job {
    fn as_ref(&self) -> &WebhookEvent {
        &self.event
    }
}

/// The type-erased stack a [`Worker`] runs.
pub type JobService = BoxCloneService<Job, Outcome, ProcessError>;

type OrderFn = dyn Fn(&WebhookEvent) -> Option<String> + Send + Sync;

/// Configures a [`Worker`]; see [`Worker::builder`].
pub struct WorkerBuilder<Sub> {
    subscriber: Sub,
    concurrency: usize,
    shutdown_timeout: Duration,
    retry: RetryPolicy,
    store: Option<Arc<dyn IdempotencyStore>>,
    idempotency: IdempotencyConfig,
    keys: IdempotencyKeys,
    order_by: Option<Arc<OrderFn>>,
    processing_timeout: Option<Duration>,
    verifiers: Option<crate::verify::Verifiers>,
}

impl<Sub> fmt::Debug for WorkerBuilder<Sub> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("retry", &self.retry)
            .field(
                "idempotency",
                &self.store.as_ref().map(|_| self.idempotency),
            )
            .field("ordered", &self.order_by.is_some())
            .field("processing_timeout", &self.processing_timeout)
            .finish_non_exhaustive()
    }
}

impl<Sub: Subscriber> WorkerBuilder<Sub> {
    /// Deliveries processed at once (default 64).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long shutdown waits for in-flight work before giving it back (default 30 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Retry policy (default [`RetryPolicy::default`]).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Idempotency store (default: a [`MemoryStore`] private to this worker).
    #[must_use]
    pub fn idempotency(mut self, store: impl IdempotencyStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Idempotency store shared with other workers of this process.
    #[must_use]
    pub fn idempotency_shared(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Idempotency TTLs and delays.
    #[must_use]
    pub fn idempotency_config(mut self, config: IdempotencyConfig) -> Self {
        self.idempotency = config;
        self
    }

    /// Turns idempotency off: the processor may see a provider's redeliveries.
    #[must_use]
    pub fn without_idempotency(mut self) -> Self {
        self.store = None;
        self
    }

    /// How idempotency keys are computed (default: [`IdempotencyKeys::new`]).
    #[must_use]
    pub fn keys(mut self, keys: IdempotencyKeys) -> Self {
        self.keys = keys;
        self
    }

    /// Events with the same ordering key run one at a time, in delivery order; others run in
    /// parallel. `None` from `f` means "no ordering" for that event.
    #[must_use]
    pub fn order_by<F>(mut self, f: F) -> Self
    where
        F: Fn(&WebhookEvent) -> Option<String> + Send + Sync + 'static,
    {
        self.order_by = Some(Arc::new(f));
        self
    }

    /// Fails attempts that run longer than `timeout`.
    #[must_use]
    pub fn processing_timeout(mut self, timeout: Duration) -> Self {
        self.processing_timeout = Some(timeout);
        self
    }

    /// Verifies signatures again before processing; failures are dead-lettered (validation).
    #[must_use]
    pub fn verifiers(mut self, verifiers: crate::verify::Verifiers) -> Self {
        self.verifiers = Some(verifiers);
        self
    }

    /// Builds the default stack around `processor`.
    pub fn build<P: WebhookProcessor>(self, processor: P) -> Worker<Sub> {
        let processor = ProcessorService::new(processor).timeout(self.processing_timeout);
        // Verification first: a forged event must not claim an idempotency key.
        let stack = ServiceBuilder::new()
            .option_layer(self.verifiers.clone().map(VerifyLayer::new))
            .option_layer(
                self.store
                    .clone()
                    .map(|s| IdempotencyLayer::from_arc(s).config(self.idempotency)),
            )
            .layer(tower::retry::RetryLayer::new(self.retry))
            .service(processor)
            .map_err(|e: ProcessError| e);
        self.build_service(BoxCloneService::new(stack))
    }

    /// Uses a stack of your own (compose it from [`IdempotencyLayer`], `VerifyLayer`,
    /// `tower::retry::RetryLayer` with a [`RetryPolicy`], [`ProcessorService`] and your own
    /// layers). The worker still uses its [`RetryPolicy`] to decide between a delayed
    /// redelivery and dead-lettering when the stack returns an error.
    pub fn build_service(self, service: JobService) -> Worker<Sub> {
        Worker {
            subscriber: self.subscriber,
            service,
            shared: Arc::new(Shared {
                retry: self.retry,
                keys: self.keys,
                order_by: self.order_by,
                queues: Mutex::new(HashMap::new()),
            }),
            concurrency: self.concurrency,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

/// Consumes deliveries and processes them; see the [module docs](self).
pub struct Worker<Sub> {
    subscriber: Sub,
    service: JobService,
    shared: Arc<Shared>,
    concurrency: usize,
    shutdown_timeout: Duration,
}

impl<Sub> fmt::Debug for Worker<Sub> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("concurrency", &self.concurrency)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

type Queued = (Delivery, OwnedSemaphorePermit);

struct Shared {
    retry: RetryPolicy,
    keys: IdempotencyKeys,
    order_by: Option<Arc<OrderFn>>,
    /// Per ordering key: deliveries waiting behind the one running.
    queues: Mutex<HashMap<String, VecDeque<Queued>>>,
}

impl Shared {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Queued>>> {
        // Each critical section is a single map operation; a poisoned map is consistent.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Worker<()> {
    /// Starts configuring a worker that consumes `subscriber`.
    pub fn builder<Sub: Subscriber>(subscriber: Sub) -> WorkerBuilder<Sub> {
        WorkerBuilder {
            subscriber,
            concurrency: 64,
            shutdown_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            store: Some(Arc::new(MemoryStore::new())),
            idempotency: IdempotencyConfig::default(),
            keys: IdempotencyKeys::new(),
            order_by: None,
            processing_timeout: None,
            verifiers: None,
        }
    }
}

impl<Sub: Subscriber> Worker<Sub> {
    /// Runs until the subscription ends, then waits for in-flight work.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Runs until `shutdown` completes or the subscription ends. Then it stops pulling,
    /// lets in-flight deliveries finish for up to the shutdown timeout, and gives back the
    /// rest unprocessed (they are redelivered).
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()> + Send) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut backoff = Duration::from_millis(100);
        tokio::pin!(shutdown);

        loop {
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break, // the semaphore is never closed
                },
            };
            let next = tokio::select! {
                biased;
                () = &mut shutdown => break,
                next = self.subscriber.next() => next,
            };
            match next {
                None => break,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "subscriber failed");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Some(Ok(delivery)) => {
                    backoff = Duration::from_millis(100);
                    self.dispatch(&mut tasks, delivery, permit, &cancel_rx);
                }
            }
        }

        let drained = async { while tasks.join_next().await.is_some() {} };
        tokio::pin!(drained);
        if tokio::time::timeout(self.shutdown_timeout, &mut drained)
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout: giving unfinished deliveries back");
            let _ = cancel_tx.send(true);
            drained.await;
        }
    }

    fn dispatch(
        &self,
        tasks: &mut JoinSet<()>,
        delivery: Delivery,
        permit: OwnedSemaphorePermit,
        cancel: &watch::Receiver<bool>,
    ) {
        let order_key = self
            .shared
            .order_by
            .as_ref()
            .and_then(|f| f(&delivery.event));
        if let Some(key) = &order_key {
            let mut queues = self.shared.queues();
            if let Some(waiting) = queues.get_mut(key) {
                // A delivery with this key is running: it picks this one up when done.
                waiting.push_back((delivery, permit));
                return;
            }
            queues.insert(key.clone(), VecDeque::new());
        }
        let shared = Arc::clone(&self.shared);
        let service = self.service.clone();
        let mut cancel = cancel.clone();
        tasks.spawn(async move {
            let mut current = Some((delivery, permit));
            while let Some((delivery, permit)) = current.take() {
                handle(&shared, service.clone(), delivery, &mut cancel).await;
                drop(permit);
                if let Some(key) = &order_key {
                    let mut queues = shared.queues();
                    current = queues.get_mut(key).and_then(VecDeque::pop_front);
                    if current.is_none() {
                        queues.remove(key);
                    }
                }
            }
        });
    }
}

async fn handle(
    shared: &Shared,
    service: JobService,
    delivery: Delivery,
    cancel: &mut watch::Receiver<bool>,
) {
    let (event, meta, acker) = delivery.into_parts();
    let event = Arc::new(event);
    let attempt = meta.attempt;
    let cancelled = *cancel.borrow();
    if cancelled {
        give_back(&*acker, &event, attempt).await;
        return;
    }
    let provider = event.provider.clone();
    metrics::counter!("firefly_webhook_received_total", "provider" => provider.clone())
        .increment(1);
    let ctx = Context {
        attempt,
        destination: meta.destination,
        position: meta.position,
        idempotency_key: shared.keys.key(&event),
        received_at: event.received_at,
    };
    let destination = ctx.destination.clone();
    let started = Instant::now();
    let run = AssertUnwindSafe(service.oneshot(Job {
        event: Arc::clone(&event),
        ctx,
    }))
    .catch_unwind();

    let result = tokio::select! {
        r = run => r,
        () = cancel.wait_for(|c| *c).map(|_| ()) => {
            give_back(&*acker, &event, attempt).await;
            return;
        }
    };
    let result = result.unwrap_or_else(|panic| {
        Err(ProcessError::transient(Panicked(service::panic_message(
            &*panic,
        ))))
    });
    metrics::histogram!("firefly_webhook_processing_seconds", "provider" => provider.clone())
        .record(started.elapsed().as_secs_f64());

    let settled = match result {
        Ok(outcome) => {
            if outcome == Outcome::Processed {
                metrics::counter!("firefly_webhook_processed_total", "provider" => provider)
                    .increment(1);
            }
            acker.ack().await
        }
        Err(err) if err.is_deferred() => {
            let delay = err.retry_after_hint().unwrap_or(Duration::from_secs(1));
            tracing::debug!(event_id = %event.id, ?delay, error = %err, "deferred");
            acker.retry(&event, attempt, delay).await
        }
        Err(err) => {
            metrics::counter!("firefly_webhook_failed_total", "provider" => provider.clone())
                .increment(1);
            let (attempt, next) = err
                .gave_up
                .unwrap_or_else(|| (attempt, shared.retry.next_delay(attempt, &err)));
            if let Some(delay) = next {
                metrics::counter!("firefly_webhook_retried_total", "provider" => provider)
                    .increment(1);
                tracing::info!(event_id = %event.id, attempt, ?delay, error = %err, "retrying later");
                acker.retry(&event, attempt + 1, delay).await
            } else {
                metrics::counter!("firefly_webhook_dead_lettered_total", "provider" => provider)
                    .increment(1);
                tracing::warn!(event_id = %event.id, attempt, error = %err, "dead-lettering");
                let record = DeadLetter::new(
                    err.to_string(),
                    err.category(),
                    attempt,
                    err.error_type(),
                    destination,
                );
                acker.dead_letter(&event, &record).await
            }
        }
    };
    if let Err(err) = settled {
        // Not settled: the transport redelivers it (at the latest after a restart).
        tracing::error!(event_id = %event.id, error = %err, "could not settle the delivery");
        give_back(&*acker, &event, attempt).await;
    }
}

async fn give_back(acker: &dyn Acker, event: &WebhookEvent, attempt: u32) {
    if let Err(err) = acker.abandon(event, attempt).await {
        tracing::error!(event_id = %event.id, error = %err, "could not give the delivery back");
    }
}
