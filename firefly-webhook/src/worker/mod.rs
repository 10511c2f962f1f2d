//! The worker runtime: pull deliveries from a [`Subscriber`], run them through a tower stack
//! ending in your [`WebhookProcessor`], then ack, retry later or dead-letter.
//!
//! The default stack is `VerifyLayer` (when verifiers are configured) → `IdempotencyLayer` →
//! `Retry(RetryPolicy)` → `ProcessorService`. Settlement follows one rule: a delivery is
//! acked only after processing finished — processed, skipped as a duplicate, or written to the
//! dead-letter destination. Anything else leaves it for redelivery.
//!
//! A worker holds at most `concurrency` deliveries in memory, whatever the failure rate:
//! each one pulled takes a slot, a short retry waits in process in its slot, a longer one goes
//! back to the transport, and deliveries waiting behind another of the same ordering key keep
//! theirs.
//!
//! When the processor keeps failing, the worker pauses instead of burning every event's retry
//! budget: see [`WorkerBuilder::pause_after`].
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
//! let worker = Worker::builder(broker.subscriber_all())
//!     .concurrency(16)
//!     .retry(RetryPolicy::new().max_attempts(5))
//!     .build(processor_fn(|event, ctx| {
//!         let (id, attempt) = (event.id, ctx.attempt);
//!         async move {
//!             println!("{id} attempt {attempt}");
//!             Ok(Outcome::Processed)
//!         }
//!     }));
//! // Runs until the future completes, then drains in-flight work.
//! worker.run_until(tokio::time::sleep(Duration::from_millis(50))).await;
//! assert_eq!(broker.in_flight(), 0);
//! # }
//! ```

mod pause;
mod retry;
mod service;
mod stack;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::{Layer as _, Service as _, ServiceBuilder, ServiceExt};

use self::pause::{Advice, Gate, Pause, Probe, Verdict};
pub use self::retry::RetryPolicy;
pub use self::service::{Elapsed, Panicked, ProcessorService};
use self::stack::JobService;
use crate::dead_letter::DeadLetter;
use crate::event::{TraceContext, WebhookEvent};
use crate::handles::Handles;
use crate::idempotency::{IdempotencyKeys, IdempotencyLayer, MemoryStore};
use crate::metric;
use crate::process::{Context, Job, Outcome, ProcessError, RetryDecision, WebhookProcessor};
use crate::subscribe::{Acker, Delivery, DeliveryMeta, SubscribeError, Subscriber};
use crate::verify::VerifyLayer;
use metrics::{Counter, Histogram, SharedString};
use tracing::Instrument as _;

type OrderFn = dyn Fn(&WebhookEvent) -> Option<String> + Send + Sync;

/// Consecutive failed deliveries that pause a worker by default.
const PAUSE_AFTER: u32 = 20;
/// How long a worker pauses by default.
const PAUSE_COOL_DOWN: Duration = Duration::from_secs(30);

/// Configures a [`Worker`]; see [`Worker::builder`].
#[must_use = "builder does nothing itself"]
pub struct WorkerBuilder<Sub> {
    subscriber: Sub,
    concurrency: usize,
    inline: bool,
    shutdown_timeout: Duration,
    retry: RetryPolicy,
    idempotency: Option<IdempotencyLayer>,
    order_by: Option<Arc<OrderFn>>,
    processing_timeout: Option<Duration>,
    verifiers: Option<crate::verify::Verifiers>,
    /// Consecutive failures and cool-down of the pause breaker; `None` when it is off.
    pause: Option<(u32, Duration)>,
    on_span: Option<Arc<SpanHook>>,
}

/// See [`WorkerBuilder::on_span`].
type SpanHook = dyn Fn(&tracing::Span, Option<&TraceContext>) -> Option<TraceContext> + Send + Sync;

impl<Sub> fmt::Debug for WorkerBuilder<Sub> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("inline", &self.inline)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("retry", &self.retry)
            .field("idempotency", &self.idempotency)
            .field("ordered", &self.order_by.is_some())
            .field("processing_timeout", &self.processing_timeout)
            .field("pause", &self.pause)
            .field("on_span", &self.on_span.is_some())
            .finish_non_exhaustive()
    }
}

impl<Sub: Subscriber> WorkerBuilder<Sub> {
    /// Deliveries processed at once (default 64).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Runs deliveries inside the worker's own task, up to [`concurrency`](Self::concurrency)
    /// at once, instead of spawning a task for each (the default, `false`).
    ///
    /// In-task deliveries cost less each (no task to allocate, schedule and join: about 9 %
    /// more webhooks per second through the gateway example, which turns this on), and still
    /// overlap while they await I/O; but one worker's deliveries then share one thread at a
    /// time, and its pulling waits while one of them computes. Turn it on when processors
    /// mostly await (a database, an HTTP call, a queue); leave it off when they do heavy CPU
    /// work, which a task each spreads over the runtime's threads (or run several in-task
    /// workers on one subscription). Ordering, retries, settlement and shutdown behave the
    /// same either way, and so do panics: one anywhere in the stack is a failed attempt.
    pub fn inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }

    /// How long shutdown waits for in-flight work before giving it back (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Retry policy (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Idempotency: a store (any [`IdempotencyStore`](crate::idempotency::IdempotencyStore), shared as `Arc<dyn IdempotencyStore>`
    /// or not), or an [`IdempotencyLayer`] with its TTLs and key rules. Default: a
    /// [`MemoryStore`] private to this worker, default settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// use firefly_webhook::idempotency::{IdempotencyKeys, IdempotencyLayer, MemoryStore};
    /// # use firefly_webhook::{Worker, memory::MemoryBroker};
    /// # let broker = MemoryBroker::new(10);
    ///
    /// let store = MemoryStore::new();
    /// let builder = Worker::builder(broker.subscriber_all()).idempotency(
    ///     IdempotencyLayer::new(store)
    ///         .lock_ttl(Duration::from_secs(60))
    ///         .keys(IdempotencyKeys::new().provider("acme", |event| {
    ///             event.header("x-acme-event").map(str::to_owned)
    ///         })),
    /// );
    /// # let _ = builder;
    /// ```
    pub fn idempotency(mut self, idempotency: impl Into<IdempotencyLayer>) -> Self {
        self.idempotency = Some(idempotency.into());
        self
    }

    /// Turns idempotency off: the processor may see a provider's redeliveries.
    pub fn without_idempotency(mut self) -> Self {
        self.idempotency = None;
        self
    }

    /// Events with the same ordering key run one at a time, in delivery order; others run in
    /// parallel. `None` from `f` means "no ordering" for that event.
    pub fn order_by<F>(mut self, f: F) -> Self
    where
        F: Fn(&WebhookEvent) -> Option<String> + Send + Sync + 'static,
    {
        self.order_by = Some(Arc::new(f));
        self
    }

    /// Fails attempts that run longer than `timeout`.
    pub fn processing_timeout(mut self, timeout: Duration) -> Self {
        self.processing_timeout = Some(timeout);
        self
    }

    /// Verifies signatures again before processing; failures are dead-lettered (validation).
    pub fn verifiers(mut self, verifiers: crate::verify::Verifiers) -> Self {
        self.verifiers = Some(verifiers);
        self
    }

    /// Pauses the worker when `consecutive_failures` deliveries in a row, of at least two
    /// different events, fail transiently (after their in-process retries): it pulls nothing
    /// for `cool_down`, then lets one delivery through as a probe, and resumes at full
    /// concurrency once a probe succeeds (a failed probe pauses it for another cool-down). `0`
    /// turns the pause off, as [`without_pause`](Self::without_pause) does.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use firefly_webhook::{Worker, memory::MemoryBroker};
    /// # let broker = MemoryBroker::new(10);
    ///
    /// // Pause for a minute after 50 failed deliveries in a row.
    /// let builder = Worker::builder(broker.subscriber_all())
    ///     .pause_after(50, Duration::from_secs(60));
    /// # let _ = builder;
    /// ```
    ///
    /// Default: 20 failures, 30 s. At the rates a worker is built for, 20 deliveries failing in
    /// a row without one success in between means the downstream is down, not that 20 events
    /// are bad; and 30 s, the default retry policy's longest backoff, lets a restarting
    /// dependency come back without adding much delay once it has.
    ///
    /// What it protects: while the worker is paused (or probing), a delivery that fails goes
    /// back to the transport *without counting an attempt*, as a
    /// [deferred](ProcessError::deferred) one does, and deliveries not pulled yet stay in the
    /// broker. Nothing is dead-lettered because of the outage. Before the breaker opens, a
    /// delivery out of attempts is dead-lettered only if it is the only event failing since
    /// the last success; if others are failing too, it goes back to the transport without
    /// counting an attempt. So a poison event is still dead-lettered among events that
    /// succeed, while an outage costs nothing but the first failures' attempts. (If every
    /// event fails, that is indistinguishable from an outage: the worker keeps them all and
    /// keeps probing.)
    ///
    /// Processed events and permanent errors reset the count (the downstream answered);
    /// skipped events, duplicates and deferred deliveries neither count nor reset. Each
    /// transition logs a line and sets the [`WORKER_BREAKER_STATE`](metric::WORKER_BREAKER_STATE)
    /// gauge.
    pub fn pause_after(mut self, consecutive_failures: u32, cool_down: Duration) -> Self {
        self.pause = (consecutive_failures > 0).then_some((consecutive_failures, cool_down));
        self
    }

    /// Never pauses: every failure follows the retry policy, even during an outage.
    pub fn without_pause(mut self) -> Self {
        self.pause = None;
        self
    }

    /// Calls `hook` with each delivery's [`SPAN`] span as soon as it is created and the trace
    /// context the event carried (the ingest span's), if any. What the hook returns becomes
    /// the span's own context; `None` leaves it to the worker (a child of the event's
    /// context). The same hook as
    /// [`IngestService::on_span`](crate::IngestService::on_span) fits here: an OpenTelemetry
    /// hook makes the event's context the span's remote parent, so one exported trace shows
    /// the request, the publish and the processing.
    pub fn on_span<F>(mut self, hook: F) -> Self
    where
        F: Fn(&tracing::Span, Option<&TraceContext>) -> Option<TraceContext>
            + Send
            + Sync
            + 'static,
    {
        self.on_span = Some(Arc::new(hook));
        self
    }

    /// Builds the default stack around `processor`.
    pub fn build<P: WebhookProcessor>(self, processor: P) -> Worker<Sub> {
        let processor = ProcessorService::new(processor).timeout(self.processing_timeout);
        let retried = tower::retry::Retry::new(self.retry, processor);
        // Verification first: a forged event must not claim an idempotency key. Each shape
        // is built as it is, rather than with optional layers: the idempotency layer's future
        // is then the stack's, which the worker takes without boxing it once more.
        match (self.verifiers.clone(), self.idempotency.clone()) {
            (None, None) => self.build_service(retried),
            (None, Some(idempotency)) => self.build_service(idempotency.layer(retried)),
            (Some(verifiers), None) => {
                self.build_service(VerifyLayer::new(verifiers).layer(retried))
            }
            (Some(verifiers), Some(idempotency)) => self.build_service(
                ServiceBuilder::new()
                    .layer(VerifyLayer::new(verifiers))
                    .layer(idempotency)
                    .service(retried),
            ),
        }
    }

    /// Uses a stack of your own (compose it from [`IdempotencyLayer`], `VerifyLayer`,
    /// `tower::retry::RetryLayer` with a [`RetryPolicy`], [`ProcessorService`] and your own
    /// layers). The worker still uses its [`RetryPolicy`] to decide between a delayed
    /// redelivery and dead-lettering when the stack returns an error without a
    /// [`RetryDecision`], and the key rules of its idempotency setting to fill
    /// [`Context::idempotency_key`].
    pub fn build_service<S>(self, service: S) -> Worker<Sub>
    where
        S: tower::Service<Job, Response = Outcome, Error = ProcessError> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let keys = self
            .idempotency
            .as_ref()
            .map_or_else(IdempotencyKeys::new, |layer| layer.key_rules().clone())
            .or_verifiers(self.verifiers.as_ref());
        Worker {
            subscriber: self.subscriber,
            service: JobService::new(service),
            shared: Arc::new(Shared {
                retry: self.retry,
                keys,
                order_by: self.order_by,
                queues: Mutex::new(HashMap::new()),
                recorded: Handles::default(),
                on_span: self.on_span,
                pause: self
                    .pause
                    .map(|(failures, cool_down)| Arc::new(Pause::new(failures, cool_down))),
            }),
            concurrency: self.concurrency,
            inline: self.inline,
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
    inline: bool,
    shutdown_timeout: Duration,
}

impl<Sub> fmt::Debug for Worker<Sub> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("concurrency", &self.concurrency)
            .field("inline", &self.inline)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

/// The name of the span each delivery is processed in (target `firefly_webhook::worker`, level
/// `DEBUG`, like the ingest span: see [`ingest::SPAN`](crate::ingest::SPAN)).
///
/// Its fields: `provider`, `event_id`, `destination`, `attempt`, `outcome` (`processed`,
/// `skipped`, `deferred`, `retry`, `dead_lettered` or `given_back`), `trace_id` and `span_id`
/// (the span's own W3C ids: a **child** of the context the event carries, so the worker's span
/// shares the ingest request's trace id), and `traceparent`, the event's context. Spans the
/// processor opens are its children.
pub const SPAN: &str = "process";

/// The target of the delivery span ([`SPAN`]).
pub const SPAN_TARGET: &str = "firefly_webhook::worker";
const TARGET: &str = SPAN_TARGET;

/// A delivery with its concurrency slot, and its probe when it is the paused worker's.
type Queued = (Delivery, OwnedSemaphorePermit, Option<Probe>);

struct Shared {
    retry: RetryPolicy,
    keys: IdempotencyKeys,
    order_by: Option<Arc<OrderFn>>,
    /// Per ordering key: deliveries waiting behind the one running.
    queues: Mutex<HashMap<String, VecDeque<Queued>>>,
    pause: Option<Arc<Pause>>,
    recorded: Handles<String, Arc<Recorded>>,
    on_span: Option<Arc<SpanHook>>,
}

/// The handles of one provider's per-event worker metrics (see [`Handles`]).
struct Recorded {
    /// The provider label: the name, or [`metric::OTHER_PROVIDER`] past
    /// [`metric::MAX_PROVIDER_LABELS`] names.
    label: SharedString,
    received: Counter,
    processing: Histogram,
    processed: Counter,
}

impl Shared {
    /// The metric handles of `provider`'s events.
    fn recorded(&self, provider: &str) -> Arc<Recorded> {
        self.recorded.get(provider, |provider| {
            let label = if self.recorded.len() < metric::MAX_PROVIDER_LABELS {
                SharedString::from(provider.to_owned())
            } else {
                SharedString::const_str(metric::OTHER_PROVIDER)
            };
            Arc::new(Recorded {
                received: metrics::counter!(metric::RECEIVED_TOTAL, metric::PROVIDER => label.clone()),
                processing: metrics::histogram!(metric::PROCESSING_SECONDS, metric::PROVIDER => label.clone()),
                processed: metrics::counter!(metric::PROCESSED_TOTAL, metric::PROVIDER => label.clone()),
                label,
            })
        })
    }

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
            inline: false,
            shutdown_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            idempotency: Some(IdempotencyLayer::new(MemoryStore::new())),
            order_by: None,
            processing_timeout: None,
            verifiers: None,
            pause: Some((PAUSE_AFTER, PAUSE_COOL_DOWN)),
            on_span: None,
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
        let mut tasks = Running::new(self.inline);
        let mut backoff = Duration::from_millis(100);
        tokio::pin!(shutdown);

        'run: loop {
            while tasks.spawned.try_join_next().is_some() {}
            // A free slot is taken at once; waiting for one runs the in-task deliveries and
            // watches for shutdown meanwhile (so does the pull below, in any case).
            let permit = if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
                permit
            } else {
                let permit = tasks
                    .until(&mut shutdown, Arc::clone(&permits).acquire_owned())
                    .await;
                // `None`: shutting down (the semaphore is never closed).
                let Some(Ok(permit)) = permit else { break };
                permit
            };
            // A paused worker pulls nothing; a probing one, one delivery at a time.
            let probe = match &self.shared.pause {
                None => None,
                Some(pause) => loop {
                    let waited = match pause.gate() {
                        Gate::Pull(probe) => break probe,
                        Gate::WaitUntil(until) => {
                            tasks
                                .until(&mut shutdown, tokio::time::sleep_until(until))
                                .await
                        }
                        Gate::WaitForProbe => tasks.until(&mut shutdown, pause.probe_ended()).await,
                    };
                    if waited.is_none() {
                        break 'run;
                    }
                },
            };
            // A delivery at hand is taken without the boxed future of `next`, and only once
            // `until` has looked at the shutdown signal: one taken is never dropped unsettled.
            let subscriber = &mut self.subscriber;
            let pull = async {
                match subscriber.try_next() {
                    Some(delivery) => Some(Ok(delivery)),
                    None => subscriber.next().await,
                }
            };
            let Some(next) = tasks.until(&mut shutdown, pull).await else {
                break;
            };
            match next {
                None => break,
                Some(Err(err)) => {
                    tracing::warn!(error = &err as &dyn std::error::Error, retry_in = ?backoff, "subscriber failed");
                    if tasks
                        .until(&mut shutdown, tokio::time::sleep(backoff))
                        .await
                        .is_none()
                    {
                        break;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Some(Ok(delivery)) => {
                    backoff = Duration::from_millis(100);
                    self.dispatch(&mut tasks, (delivery, permit, probe), &cancel_rx);
                }
            }
        }

        // A transport that waits out retry delays in a worker slot gives those back now.
        self.subscriber.stop();
        let drained = tasks.drain();
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

    fn dispatch(&mut self, tasks: &mut Running, pending: Queued, cancel: &watch::Receiver<bool>) {
        let delivery = &pending.0;
        let order_key = self
            .shared
            .order_by
            .as_ref()
            .and_then(|f| f(&delivery.event));
        if let Some(key) = &order_key {
            let mut queues = self.shared.queues();
            if let Some(waiting) = queues.get_mut(key) {
                // A delivery with this key is running: it picks this one up when done.
                waiting.push_back(pending);
                return;
            }
            queues.insert(key.clone(), VecDeque::new());
        }
        let shared = Arc::clone(&self.shared);
        // Taken apart before the future is built, which then holds a pointer to the event
        // rather than room for the whole delivery.
        let first = Started::new(pending);
        // The stack starts here, called through the worker's own service: a task needs a
        // service of its own only for the deliveries that queue behind its ordering key.
        let span = span(&shared, &first.event, &first.meta);
        let begun = span.in_scope(|| begin(&shared, &mut self.service, &first, cancel));
        let ordered = order_key.map(|key| (key, self.service.clone()));
        // Boxed: the task's future is large (the whole service call and settlement), and
        // spawning a boxed one moves a pointer instead of copying that state.
        tasks.start(Box::pin(deliveries(
            shared,
            cancel.clone(),
            ordered,
            first,
            begun,
            span,
        )));
    }
}

/// Settles `current`, whose stack has `begun`, then, with an ordering key, the deliveries that
/// queued behind it, one after another (through the service that comes with the key).
///
/// The task's future is allocated once per task. It holds each piece of state once: the event
/// behind its `Arc`, the job inside the service's future, and the paths few deliveries take
/// boxed on their own. That keeps it under 1 KiB (824 bytes in a release build today), a size
/// that allocators serve from a per-thread cache (glibc up to 1,032 bytes) instead of their
/// slower general path.
///
/// A plain `fn` returning an `async move` block: an `async fn` would keep its arguments beside
/// the locals they move into, each piece of state twice.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
fn deliveries(
    shared: Arc<Shared>,
    mut cancel: watch::Receiver<bool>,
    mut ordered: Option<(String, JobService)>,
    mut current: Started,
    mut begun: Begun,
    mut span: tracing::Span,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        loop {
            settle(&shared, &mut current, &mut begun, &mut cancel)
                .instrument(span)
                .await;
            let Some((key, service)) = &mut ordered else {
                return;
            };
            let next = {
                let mut queues = shared.queues();
                let next = queues.get_mut(key.as_str()).and_then(VecDeque::pop_front);
                if next.is_none() {
                    queues.remove(key.as_str());
                }
                next
            };
            let Some(queued) = next else { return };
            // The settled delivery (its permit with it) is dropped here.
            current = Started::new(queued);
            span = self::span(&shared, &current.event, &current.meta);
            begun = span.in_scope(|| begin(&shared, service, &current, &cancel));
        }
    }
}

/// A delivery about to be settled: taken apart, its event shared.
struct Started {
    event: Arc<WebhookEvent>,
    meta: DeliveryMeta,
    acker: Box<dyn Acker>,
    /// The delivery's place in the worker's concurrency: given back when this is dropped.
    _permit: OwnedSemaphorePermit,
    probe: Option<Probe>,
}

impl Started {
    fn new((delivery, permit, probe): Queued) -> Self {
        let (event, meta, acker) = delivery.into_parts();
        Self {
            event: Arc::new(event),
            meta,
            acker,
            _permit: permit,
            probe,
        }
    }
}

/// The deliveries in progress: spawned as tasks of their own, or run inside the worker's task
/// ([`WorkerBuilder::inline`]).
struct Running {
    inline: bool,
    spawned: JoinSet<()>,
    /// In-task deliveries not polled yet. Each is polled once on its own, and joins `in_task`
    /// only if it has to wait: a delivery whose stack does not wait (a synchronous processor,
    /// the memory transport) then costs no node, wake-up or queueing in the set.
    fresh: Vec<Delivering>,
    in_task: FuturesUnordered<Delivering>,
}

/// A delivery's future, as [`deliveries`] makes it.
type Delivering = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Running {
    fn new(inline: bool) -> Self {
        Self {
            inline,
            spawned: JoinSet::new(),
            fresh: Vec::new(),
            in_task: FuturesUnordered::new(),
        }
    }

    fn start(&mut self, delivery: Delivering) {
        if self.inline {
            self.fresh.push(delivery);
        } else {
            self.spawned.spawn(delivery);
        }
    }

    /// Awaits `fut` while running the in-task deliveries; `None` if `shutdown` completes first.
    async fn until<F: Future>(
        &mut self,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        fut: F,
    ) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let Self { fresh, in_task, .. } = self;
        std::future::poll_fn(|cx| {
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            // (An empty set would still register the waker on each poll.)
            while !in_task.is_empty() && in_task.poll_next_unpin(cx).is_ready() {}
            for mut delivery in fresh.drain(..) {
                if delivery.as_mut().poll(cx).is_pending() {
                    // It will wake this task, whose next poll polls it in the set (which
                    // queues what it is given), and from then on it wakes the set.
                    in_task.push(delivery);
                }
            }
            fut.as_mut().poll(cx).map(Some)
        })
        .await
    }

    /// Completes once every delivery finished.
    async fn drain(&mut self) {
        self.in_task.extend(self.fresh.drain(..));
        while self.in_task.next().await.is_some() {}
        while self.spawned.join_next().await.is_some() {}
    }
}

/// The span of one delivery: a child of the trace the event carries (the ingest span's),
/// or of the one the [`WorkerBuilder::on_span`] hook gives it.
fn span(shared: &Shared, event: &WebhookEvent, meta: &DeliveryMeta) -> tracing::Span {
    use tracing::field::Empty;
    let parent = event.trace.as_ref();
    let span = tracing::debug_span!(
        target: TARGET,
        SPAN,
        provider = event.provider.as_str(),
        event_id = %event.id,
        destination = &*meta.destination,
        attempt = meta.attempt,
        outcome = Empty,
        trace_id = Empty,
        span_id = Empty,
        traceparent = parent.map(tracing::field::display),
    );
    if span.is_disabled() && shared.on_span.is_none() {
        return span;
    }
    let own = shared
        .on_span
        .as_ref()
        .and_then(|hook| hook(&span, parent))
        .unwrap_or_else(|| parent.map_or_else(TraceContext::start, TraceContext::child));
    span.record("trace_id", tracing::field::display(own.trace_id()));
    span.record("span_id", tracing::field::display(own.parent_id()));
    span
}

/// How a delivery started: given back before its stack ran, or with the stack running.
enum Begun {
    /// The worker is shutting down.
    Cancelled,
    /// Pulled just before the worker paused: it goes back to the transport after this delay.
    Paused(Duration),
    /// The stack's future, with what settling it needs.
    Running {
        run: Call,
        recorded: Arc<Recorded>,
        started: Instant,
    },
}

/// Starts the stack on `started` through `service`: synchronous, so that the worker can call
/// its own service (and the job moves straight into the service's future).
fn begin(
    shared: &Shared,
    service: &mut JobService,
    started: &Started,
    cancel: &watch::Receiver<bool>,
) -> Begun {
    if *cancel.borrow() {
        return Begun::Cancelled;
    }
    let Started {
        event, meta, probe, ..
    } = started;
    if let Some(delay) = shared
        .pause
        .as_ref()
        .and_then(|pause| pause.admit(probe.as_ref()))
    {
        return Begun::Paused(delay);
    }
    let recorded = shared.recorded(&event.provider);
    recorded.received.increment(1);
    let started = Instant::now();
    // The job is made inside `call`'s guard: the key rules are user code too.
    let job = || {
        let mut ctx = Context::new(
            Arc::clone(&meta.destination),
            meta.position.clone(),
            shared.keys.shared_key(event),
            event.received_at,
        );
        ctx.attempt = meta.attempt;
        Job {
            event: Arc::clone(event),
            ctx,
        }
    };
    Begun::Running {
        run: call(service, job),
        recorded,
        started,
    }
}

/// Awaits the stack [`begin`] started and settles the delivery: ack, retry later, dead-letter
/// or give back. (`begun` is borrowed: the stack's future stays where it is, in the task's.)
async fn settle(
    shared: &Shared,
    started: &mut Started,
    begun: &mut Begun,
    cancel: &mut watch::Receiver<bool>,
) {
    let Started {
        event,
        meta,
        acker,
        probe,
        ..
    } = started;
    let acker = &**acker;
    // The paths every delivery does not take are boxed futures (an allocation when taken):
    // inline, their state would make every delivery's future larger.
    let attempt = meta.attempt;
    let (run, recorded, started) = match begun {
        Begun::Cancelled => {
            Box::pin(give_back(acker, event, attempt)).await;
            return;
        }
        Begun::Paused(delay) => {
            // Pulled just before the worker paused: it stays in the transport, unprocessed.
            Box::pin(give_back_paused(acker, event, attempt, *delay)).await;
            return;
        }
        Begun::Running {
            run,
            recorded,
            started,
        } => (run, &**recorded, *started),
    };
    let result = tokio::select! {
        // The stack first: most deliveries finish in their first poll, before the shutdown
        // signal is even looked at.
        biased;
        r = run => r,
        () = cancel.wait_for(|c| *c).map(|_| ()) => {
            Box::pin(give_back(acker, event, attempt)).await;
            return;
        }
    };
    let result = result.unwrap_or_else(|panic| {
        Err(ProcessError::transient(Panicked(service::panic_message(
            &*panic,
        ))))
    });
    recorded.processing.record(started.elapsed().as_secs_f64());

    let verdict = match &result {
        Ok(Outcome::Processed) => Verdict::Up,
        Err(err) if err.is_permanent() => Verdict::Up,
        Err(err) if !err.is_deferred() => Verdict::Failed,
        _ => Verdict::Unknown,
    };
    let advice = shared
        .pause
        .as_ref()
        .map(|pause| pause.record(event.id, verdict, probe.as_mut()))
        .unwrap_or_default();

    let settled = match result {
        Ok(outcome) => {
            outcome_of(if outcome == Outcome::Processed {
                "processed"
            } else {
                "skipped"
            });
            if outcome == Outcome::Processed {
                recorded.processed.increment(1);
            }
            acker.ack().await
        }
        Err(err) if err.is_deferred() => {
            let delay = err.retry_after_hint().unwrap_or(Duration::from_secs(1));
            outcome_of("deferred");
            tracing::debug!(event_id = %event.id, ?delay, error = &err as &dyn std::error::Error, "deferred");
            acker.retry(event, attempt, delay).await
        }
        Err(err) => {
            Box::pin(settle_failure(
                shared,
                acker,
                event,
                attempt,
                &meta.destination,
                err,
                advice,
                recorded.label.clone(),
            ))
            .await
        }
    };
    if let Err(err) = settled {
        // Not settled: the transport redelivers it (at the latest after a restart).
        tracing::error!(event_id = %event.id, error = &err as &dyn std::error::Error, "could not settle the delivery");
        Box::pin(give_back(acker, event, attempt)).await;
    }
}

/// The outcome of one call of the stack, or the panic that ended it.
type Called = Result<Result<Outcome, ProcessError>, Box<dyn std::any::Any + Send>>;

/// The future of [`call`]: the service's own future, or the answer it had at once.
type Call = futures_util::future::Either<
    futures_util::future::CatchUnwind<
        AssertUnwindSafe<futures_util::future::BoxFuture<'static, Result<Outcome, ProcessError>>>,
    >,
    std::future::Ready<Called>,
>;

/// Calls `service` with the job `job` makes (`ready`, then `call`), catching panics in any of
/// the three.
///
/// The worker's own stacks are always ready: then the job moves straight into the service's
/// (boxed) future, and the future returned here holds no room for it. A stack that is not
/// ready at once is waited for by a clone of `service`, with the job held meanwhile (in a
/// boxed future).
fn call(service: &mut JobService, job: impl FnOnce() -> Job) -> Call {
    use futures_util::future::Either;
    let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let job = job();
        let fut: futures_util::future::BoxFuture<'static, _> = match service.ready().now_or_never()
        {
            Some(Ok(ready)) => ready.call(job),
            Some(Err(err)) => return Err(err),
            None => {
                let mut service = service.clone();
                Box::pin(async move { service.ready().await?.call(job).await })
            }
        };
        Ok(fut)
    }));
    match called {
        Ok(Ok(fut)) => Either::Left(AssertUnwindSafe(fut).catch_unwind()),
        Ok(Err(err)) => Either::Right(std::future::ready(Ok(Err(err)))),
        Err(panic) => Either::Right(std::future::ready(Err(panic))),
    }
}

/// Settles a delivery whose processing failed (not deferred): back to the transport while the
/// worker is paused or the downstream is suspect, else as the retry policy decided.
#[allow(clippy::too_many_arguments, reason = "the pieces of one settlement")]
async fn settle_failure(
    shared: &Shared,
    acker: &dyn Acker,
    event: &WebhookEvent,
    attempt: u32,
    destination: &str,
    err: ProcessError,
    advice: Advice,
    provider: SharedString,
) -> Result<(), SubscribeError> {
    metrics::counter!(metric::FAILED_TOTAL, metric::PROVIDER => provider.clone()).increment(1);
    let RetryDecision {
        attempt: failed,
        retry_in: next,
    } = err.decision().unwrap_or_else(|| RetryDecision {
        attempt,
        retry_in: shared.retry.next_delay(attempt, &err),
    });
    if let Some(delay) = advice.defer {
        // The worker is paused: the outage is not this event's failure.
        outcome_of("given_back");
        tracing::info!(event_id = %event.id, ?delay, error = &err as &dyn std::error::Error, "worker paused: giving the delivery back");
        acker.retry(event, attempt, delay).await
    } else if let Some(delay) = next {
        metrics::counter!(metric::RETRIED_TOTAL, metric::PROVIDER => provider).increment(1);
        outcome_of("retry");
        tracing::info!(event_id = %event.id, attempt = failed, ?delay, error = &err as &dyn std::error::Error, "retrying later");
        acker.retry(event, failed + 1, delay).await
    } else if advice.others_failing && !err.is_permanent() {
        let delay = shared.retry.delay(failed);
        outcome_of("given_back");
        tracing::info!(event_id = %event.id, attempt = failed, ?delay, error = &err as &dyn std::error::Error, "out of attempts while other events fail too: giving the delivery back");
        acker.retry(event, attempt, delay).await
    } else {
        metrics::counter!(metric::DEAD_LETTERED_TOTAL, metric::PROVIDER => provider).increment(1);
        outcome_of("dead_lettered");
        tracing::warn!(event_id = %event.id, attempt = failed, error = &err as &dyn std::error::Error, "dead-lettering");
        let record = DeadLetter::new(
            err.to_string(),
            err.category(),
            failed,
            err.error_type(),
            destination,
        );
        acker.dead_letter(event, &record).await
    }
}

/// Records how the delivery ended in the current (delivery) span's `outcome` field.
fn outcome_of(outcome: &'static str) {
    tracing::Span::current().record("outcome", outcome);
}

async fn give_back_paused(acker: &dyn Acker, event: &WebhookEvent, attempt: u32, delay: Duration) {
    if let Err(err) = acker.retry(event, attempt, delay).await {
        tracing::error!(event_id = %event.id, error = &err as &dyn std::error::Error, "could not give the delivery back");
    }
}

async fn give_back(acker: &dyn Acker, event: &WebhookEvent, attempt: u32) {
    outcome_of("given_back");
    if let Err(err) = acker.abandon(event, attempt).await {
        tracing::error!(event_id = %event.id, error = &err as &dyn std::error::Error, "could not give the delivery back");
    }
}
