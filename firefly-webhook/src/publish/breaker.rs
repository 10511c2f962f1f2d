//! [`CircuitBreaker`]: stop waiting on a broker that keeps failing.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{PublishError, Publisher};
use crate::event::WebhookEvent;
use crate::metric;

/// A [`Publisher`] that fails fast while the publisher it wraps keeps failing.
///
/// Without it, a broker outage makes every ingest request wait for the full publish timeout
/// before its `503`, and connections pile up. The breaker has three [states](BreakerState):
///
/// - **closed**: publishes go through. After [`failure_threshold`](Self::failure_threshold)
///   consecutive failures it opens. Every [retryable](PublishError::is_retryable) error counts
///   as a failure, and so does a publish that exceeds the
///   [`publish_timeout`](Self::publish_timeout) or is abandoned before it finishes (for example
///   by the ingest service's own publish timeout: the breaker cannot tell a hung broker from a
///   caller that stopped waiting). A [`Rejected`](PublishError::Rejected) message counts as a
///   success: the broker answered.
/// - **open**: for the [`cool_down`](Self::cool_down), `publish` fails at once with
///   [`PublishError::Unavailable`] whose source is a [`BreakerOpen`], without calling the inner
///   publisher, and [`health`](Publisher::health) fails too.
/// - **half-open**: after the cool-down, the next publish goes through as a probe while all
///   others still fail fast. If the probe succeeds the breaker closes; otherwise it opens for
///   another cool-down.
///
/// In the closed state a publish costs two uncontended atomic loads on top of the inner
/// publish (plus one compare-and-swap after a success that ends a run of failures). Each
/// transition logs a line and sets the [`PUBLISH_BREAKER_STATE`](metric::PUBLISH_BREAKER_STATE)
/// gauge.
///
/// ```
/// use std::time::Duration;
///
/// use firefly_webhook::IngestService;
/// use firefly_webhook::memory::MemoryBroker;
/// use firefly_webhook::publish::{BreakerState, CircuitBreaker};
///
/// let broker = MemoryBroker::new(1024);
/// let publisher = CircuitBreaker::new(broker.publisher())
///     .failure_threshold(5)
///     .cool_down(Duration::from_secs(5))
///     .publish_timeout(Duration::from_secs(2));
/// assert_eq!(publisher.state(), BreakerState::Closed);
///
/// let ingest = IngestService::new(publisher);
/// # let _ = ingest;
/// ```
///
/// A caller can tell a fast failure from a broker error by downcasting the source:
///
/// ```
/// use firefly_webhook::PublishError;
/// use firefly_webhook::publish::BreakerOpen;
///
/// fn failed_fast(err: &PublishError) -> bool {
///     matches!(err, PublishError::Unavailable(source) if source.is::<BreakerOpen>())
/// }
/// # assert!(!failed_fast(&PublishError::Overloaded));
/// ```
pub struct CircuitBreaker<P> {
    inner: P,
    failure_threshold: u32,
    cool_down: Duration,
    publish_timeout: Option<Duration>,
    /// The whole state, so that every transition is one atomic operation.
    word: AtomicU64,
    /// Time zero for the deadlines stored in `word`.
    epoch: Instant,
}

impl<P: Publisher> CircuitBreaker<P> {
    /// Wraps `inner`, closed, with a failure threshold of 5, a cool-down of 5 s and no publish
    /// timeout of its own.
    pub fn new(inner: P) -> Self {
        metrics::gauge!(metric::PUBLISH_BREAKER_STATE).set(BreakerState::Closed.gauge());
        Self {
            inner,
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
            publish_timeout: None,
            word: AtomicU64::new(Word::CLOSED.0),
            epoch: Instant::now(),
        }
    }

    /// How many consecutive failures open the breaker (default 5; at least 1).
    #[must_use]
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// How long the breaker stays open before it lets a probe through (default 5 s).
    #[must_use]
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// Gives up on a publish after `timeout` with [`PublishError::TimedOut`], which counts as a
    /// failure (default: no timeout of its own). Keep it below the ingest service's publish
    /// timeout so the breaker, not the ingest service, decides when a publish has hung.
    #[must_use]
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = Some(timeout);
        self
    }

    /// The current state. An open breaker whose cool-down has passed reports
    /// [`Open`](BreakerState::Open) until the next publish becomes the probe.
    pub fn state(&self) -> BreakerState {
        self.load().state()
    }

    /// The wrapped publisher.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    fn load(&self) -> Word {
        // All of the breaker's state is in this one word, so no ordering with other memory is
        // needed.
        Word(self.word.load(Ordering::Relaxed))
    }

    fn compare_exchange(&self, current: Word, new: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(current.0, new.0, Ordering::Relaxed, Ordering::Relaxed)
            .map(drop)
            .map_err(Word)
    }

    /// Nanoseconds since `epoch`.
    fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }

    /// The deadline of an open period that starts now.
    fn open_until(&self) -> Word {
        Word::open(self.now().saturating_add(nanos(self.cool_down)))
    }

    /// Lets a publish through (`Ok(true)` when it is the half-open probe) or fails it fast.
    fn admit(&self) -> Result<bool, BreakerOpen> {
        let mut current = self.load();
        loop {
            match current.state() {
                BreakerState::Closed => return Ok(false),
                BreakerState::HalfOpen => return Err(BreakerOpen::new(Duration::ZERO)),
                BreakerState::Open => {
                    let (now, deadline) = (self.now(), current.deadline());
                    if now < deadline {
                        return Err(BreakerOpen::new(Duration::from_nanos(deadline - now)));
                    }
                    match self.compare_exchange(current, Word::HALF_OPEN) {
                        Ok(()) => {
                            transitioned(BreakerState::HalfOpen);
                            tracing::info!("publish circuit half-open: probing the broker");
                            return Ok(true);
                        }
                        Err(actual) => current = actual,
                    }
                }
            }
        }
    }

    /// Records the outcome of an admitted publish; `answered` is false for a broker failure.
    fn record(&self, probe: bool, answered: bool) {
        if probe {
            // Only the probe moves the breaker out of half-open, so it may simply store.
            if answered {
                self.word.store(Word::CLOSED.0, Ordering::Relaxed);
                transitioned(BreakerState::Closed);
                tracing::info!("publish circuit closed: the broker answered the probe");
            } else {
                self.word.store(self.open_until().0, Ordering::Relaxed);
                transitioned(BreakerState::Open);
                tracing::warn!(cool_down = ?self.cool_down, "publish circuit re-opened: the probe failed");
            }
            return;
        }

        let mut current = self.load();
        if answered {
            if current != Word::CLOSED && current.state() == BreakerState::Closed {
                // A lost race means another outcome was recorded meanwhile; either is fine.
                let _ = self.compare_exchange(current, Word::CLOSED);
            }
            return;
        }
        loop {
            if current.state() != BreakerState::Closed {
                return;
            }
            let failures = current.failures() + 1;
            let opens = failures >= u64::from(self.failure_threshold);
            let next = if opens {
                self.open_until()
            } else {
                Word::closed(failures)
            };
            match self.compare_exchange(current, next) {
                Ok(()) => {
                    if opens {
                        transitioned(BreakerState::Open);
                        tracing::warn!(failures, cool_down = ?self.cool_down, "publish circuit opened: failing fast");
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    async fn call(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        let publish = self.inner.publish(destination, event);
        match self.publish_timeout {
            None => publish.await,
            Some(timeout) => tokio::time::timeout(timeout, publish)
                .await
                .unwrap_or(Err(PublishError::TimedOut(timeout))),
        }
    }
}

#[async_trait]
impl<P: Publisher> Publisher for CircuitBreaker<P> {
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        let probe = self.admit().map_err(PublishError::unavailable)?;
        let attempt = Attempt {
            breaker: self,
            probe,
            finished: false,
        };
        let result = self.call(destination, event).await;
        attempt.finish(
            result
                .as_ref()
                .map_or_else(|e| !e.is_retryable(), |()| true),
        );
        result
    }

    /// Fails while the breaker is open and its cool-down lasts, without asking the inner
    /// publisher; asks it otherwise (so a readiness probe can recover once the cool-down ends,
    /// even if no traffic arrives to probe the broker).
    async fn health(&self) -> Result<(), PublishError> {
        let current = self.load();
        if current.state() == BreakerState::Open {
            let (now, deadline) = (self.now(), current.deadline());
            if now < deadline {
                let open = BreakerOpen::new(Duration::from_nanos(deadline - now));
                return Err(PublishError::unavailable(open));
            }
        }
        self.inner.health().await
    }
}

impl<P> fmt::Debug for CircuitBreaker<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &Word(self.word.load(Ordering::Relaxed)).state())
            .field("failure_threshold", &self.failure_threshold)
            .field("cool_down", &self.cool_down)
            .field("publish_timeout", &self.publish_timeout)
            .finish_non_exhaustive()
    }
}

/// An admitted publish; dropped unfinished, it counts as a failure.
struct Attempt<'a, P: Publisher> {
    breaker: &'a CircuitBreaker<P>,
    probe: bool,
    finished: bool,
}

impl<P: Publisher> Attempt<'_, P> {
    fn finish(mut self, answered: bool) {
        self.finished = true;
        self.breaker.record(self.probe, answered);
    }
}

impl<P: Publisher> Drop for Attempt<'_, P> {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!(probe = self.probe, "publish abandoned before it finished");
            self.breaker.record(self.probe, false);
        }
    }
}

/// Where a [`CircuitBreaker`] is; also the value of its
/// [`PUBLISH_BREAKER_STATE`](metric::PUBLISH_BREAKER_STATE) gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Publishes go through (gauge 0).
    Closed,
    /// Publishes fail fast until the cool-down ends (gauge 1).
    Open,
    /// One probe publish is in flight; others fail fast (gauge 2).
    HalfOpen,
}

impl BreakerState {
    fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

fn transitioned(to: BreakerState) {
    metrics::gauge!(metric::PUBLISH_BREAKER_STATE).set(to.gauge());
}

/// A [`CircuitBreaker`] failed a publish (or health check) without calling the broker; the
/// source of its [`PublishError::Unavailable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is open; retry in {retry_in:?}")]
pub struct BreakerOpen {
    retry_in: Duration,
}

impl BreakerOpen {
    fn new(retry_in: Duration) -> Self {
        Self { retry_in }
    }

    /// How long until the breaker lets a probe through: the rest of the cool-down, or zero
    /// while a probe is already in flight.
    pub fn retry_in(&self) -> Duration {
        self.retry_in
    }
}

/// The breaker's state in one `u64`: the low two bits are the [`BreakerState`], the rest is
/// the count of consecutive failures (closed) or the deadline in nanoseconds since the epoch
/// (open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    const STATE_BITS: u32 = 2;
    const STATE_MASK: u64 = 0b11;
    const OPEN_TAG: u64 = 1;
    const HALF_OPEN_TAG: u64 = 2;
    const MAX_PAYLOAD: u64 = u64::MAX >> Self::STATE_BITS;
    const CLOSED: Self = Self(0);
    const HALF_OPEN: Self = Self(Self::HALF_OPEN_TAG);

    fn closed(failures: u64) -> Self {
        Self(failures.min(Self::MAX_PAYLOAD) << Self::STATE_BITS)
    }

    fn open(deadline: u64) -> Self {
        Self((deadline.min(Self::MAX_PAYLOAD) << Self::STATE_BITS) | Self::OPEN_TAG)
    }

    fn state(self) -> BreakerState {
        match self.0 & Self::STATE_MASK {
            Self::OPEN_TAG => BreakerState::Open,
            Self::HALF_OPEN_TAG => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    fn failures(self) -> u64 {
        self.0 >> Self::STATE_BITS
    }

    fn deadline(self) -> u64 {
        self.0 >> Self::STATE_BITS
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(5);

    #[derive(Debug, Clone, Copy)]
    enum Step {
        Ok,
        Unavailable,
        Overloaded,
        Rejected,
        /// Succeeds after this long.
        Slow(Duration),
        Hang,
    }

    /// Plays its script, one step per publish, then succeeds; counts calls.
    #[derive(Default)]
    struct Scripted {
        script: Mutex<VecDeque<Step>>,
        publishes: AtomicUsize,
        health_checks: AtomicUsize,
    }

    impl Scripted {
        fn new(steps: impl IntoIterator<Item = Step>) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(steps.into_iter().collect()),
                ..Self::default()
            })
        }

        fn publishes(&self) -> usize {
            self.publishes.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Publisher for Scripted {
        async fn publish(
            &self,
            _destination: &str,
            _event: WebhookEvent,
        ) -> Result<(), PublishError> {
            self.publishes.fetch_add(1, Ordering::SeqCst);
            let step = self.script.lock().unwrap().pop_front().unwrap_or(Step::Ok);
            match step {
                Step::Ok => Ok(()),
                Step::Unavailable => Err(PublishError::unavailable("connection refused")),
                Step::Overloaded => Err(PublishError::Overloaded),
                Step::Rejected => Err(PublishError::rejected("message too large")),
                Step::Slow(d) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
                Step::Hang => std::future::pending().await,
            }
        }

        async fn health(&self) -> Result<(), PublishError> {
            self.health_checks.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn breaker(inner: &Arc<Scripted>, threshold: u32) -> CircuitBreaker<Arc<Scripted>> {
        CircuitBreaker::new(Arc::clone(inner))
            .failure_threshold(threshold)
            .cool_down(COOL_DOWN)
    }

    async fn publish<P: Publisher>(p: &P) -> Result<(), PublishError> {
        p.publish("topic", WebhookEvent::new("acme", "{}")).await
    }

    /// The `BreakerOpen` of a fast failure; panics on any other result.
    fn fast_failure(result: Result<(), PublishError>) -> BreakerOpen {
        match result {
            Err(PublishError::Unavailable(source)) => *source
                .downcast::<BreakerOpen>()
                .expect("the source is BreakerOpen"),
            other => panic!("expected a fast failure, got {other:?}"),
        }
    }

    /// Opens `b` with `threshold` failures from its script.
    async fn trip<P: Publisher>(b: &CircuitBreaker<P>, threshold: u32) {
        for _ in 0..threshold {
            assert!(publish(b).await.is_err());
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_consecutive_failures_and_fails_fast() {
        let inner = Scripted::new([Step::Unavailable, Step::Overloaded, Step::Unavailable]);
        let b = breaker(&inner, 3);
        assert!(matches!(
            publish(&b).await,
            Err(PublishError::Unavailable(_))
        ));
        assert!(matches!(publish(&b).await, Err(PublishError::Overloaded)));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(publish(&b).await.is_err());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(inner.publishes(), 3);

        // While open: the inner publisher is not called, the error says when to come back.
        for _ in 0..10 {
            let open = fast_failure(publish(&b).await);
            assert!(open.retry_in() > Duration::ZERO && open.retry_in() <= COOL_DOWN);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            fast_failure(publish(&b).await).retry_in(),
            Duration::from_secs(3)
        );
        assert_eq!(inner.publishes(), 3);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let inner = Scripted::new([
            Step::Unavailable,
            Step::Unavailable,
            Step::Ok,
            Step::Unavailable,
            Step::Unavailable,
        ]);
        let b = breaker(&inner, 3);
        for _ in 0..5 {
            let _ = publish(&b).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(publish(&b).await.is_ok());
        assert_eq!(inner.publishes(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_messages_do_not_trip_it() {
        let inner = Scripted::new([Step::Rejected; 10]);
        let b = breaker(&inner, 2);
        for _ in 0..10 {
            assert!(matches!(publish(&b).await, Err(PublishError::Rejected(_))));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(inner.publishes(), 10);

        // A rejection shows the broker answering: it also ends a run of failures.
        let inner = Scripted::new([Step::Unavailable, Step::Rejected, Step::Unavailable]);
        let b = breaker(&inner, 2);
        for _ in 0..3 {
            let _ = publish(&b).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through_and_closes_on_success() {
        let inner = Scripted::new([
            Step::Unavailable,
            Step::Unavailable,
            Step::Slow(Duration::from_secs(1)),
        ]);
        let b = Arc::new(breaker(&inner, 2));
        trip(&b, 2).await;
        tokio::time::advance(COOL_DOWN).await;
        assert_eq!(b.state(), BreakerState::Open, "open until a publish probes");

        let probe = tokio::spawn({
            let b = Arc::clone(&b);
            async move { publish(&b).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(inner.publishes(), 3);
        for _ in 0..5 {
            assert_eq!(fast_failure(publish(&b).await).retry_in(), Duration::ZERO);
        }
        assert_eq!(inner.publishes(), 3, "only the probe reached the broker");

        assert!(probe.await.unwrap().is_ok());
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(publish(&b).await.is_ok());
        assert_eq!(inner.publishes(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_it_for_another_cool_down() {
        let inner = Scripted::new([Step::Unavailable, Step::Unavailable, Step::Unavailable]);
        let b = breaker(&inner, 2);
        trip(&b, 2).await;
        tokio::time::advance(COOL_DOWN).await;

        assert!(
            matches!(publish(&b).await, Err(PublishError::Unavailable(source)) if !source.is::<BreakerOpen>())
        );
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(fast_failure(publish(&b).await).retry_in(), COOL_DOWN);
        assert_eq!(inner.publishes(), 3);

        // The next probe succeeds.
        tokio::time::advance(COOL_DOWN).await;
        assert!(publish(&b).await.is_ok());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_publish_counts_as_a_failure() {
        let inner = Scripted::new([Step::Hang, Step::Hang]);
        let b = breaker(&inner, 2).publish_timeout(Duration::from_secs(1));
        assert!(matches!(
            publish(&b).await,
            Err(PublishError::TimedOut(t)) if t == Duration::from_secs(1)
        ));
        assert!(publish(&b).await.is_err());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_publish_counts_as_a_failure() {
        // As when the ingest service's own publish timeout gives up on a hung broker.
        let inner = Scripted::new([Step::Hang, Step::Hang, Step::Hang]);
        let b = breaker(&inner, 2);
        for _ in 0..2 {
            let gave_up = tokio::time::timeout(Duration::from_secs(5), publish(&b)).await;
            assert!(gave_up.is_err());
        }
        assert_eq!(b.state(), BreakerState::Open);

        // An abandoned probe re-opens it rather than leaving it half-open for good.
        tokio::time::advance(COOL_DOWN).await;
        let gave_up = tokio::time::timeout(Duration::from_secs(1), publish(&b)).await;
        assert!(gave_up.is_err());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(inner.publishes(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn health_fails_while_open_without_asking_the_inner_publisher() {
        let inner = Scripted::new([Step::Unavailable]);
        let b = breaker(&inner, 1);
        assert!(b.health().await.is_ok());
        assert_eq!(inner.health_checks.load(Ordering::SeqCst), 1);

        trip(&b, 1).await;
        fast_failure(b.health().await);
        assert_eq!(inner.health_checks.load(Ordering::SeqCst), 1);

        // After the cool-down the inner publisher answers again.
        tokio::time::advance(COOL_DOWN).await;
        assert!(b.health().await.is_ok());
        assert_eq!(inner.health_checks.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn word_round_trips() {
        assert_eq!(Word::CLOSED.state(), BreakerState::Closed);
        assert_eq!(Word::closed(7).failures(), 7);
        assert_eq!(Word::closed(7).state(), BreakerState::Closed);
        assert_eq!(Word::open(123).deadline(), 123);
        assert_eq!(Word::open(123).state(), BreakerState::Open);
        assert_eq!(Word::open(u64::MAX).deadline(), Word::MAX_PAYLOAD);
        assert_eq!(Word::HALF_OPEN.state(), BreakerState::HalfOpen);
        assert_eq!(BreakerState::HalfOpen.to_string(), "half-open");
    }

    #[test]
    fn threshold_is_at_least_one() {
        let b = CircuitBreaker::new(Scripted::new([])).failure_threshold(0);
        assert_eq!(b.failure_threshold, 1);
        assert!(format!("{b:?}").contains("Closed"));
    }
}
