//! Worker pipeline: idempotency, retry, dead-letter, panics, shutdown and ordering.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::idempotency::{
    IdempotencyConfig, IdempotencyKeys, IdempotencyLayer, MemoryStore,
};
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Context, Outcome, ProcessError, WebhookProcessor, processor_fn};
use firefly_webhook::subscribe::{Acker, Delivery, Position, SubscribeError, Subscriber};
use firefly_webhook::worker::{RetryPolicy, Worker};
use firefly_webhook::{DeadLetter, FailureCategory};
use firefly_webhook::{EventId, Publisher, WebhookEvent, async_trait, http};
use tokio::sync::Notify;

/// Settlements a [`TestTransport`] saw.
#[derive(Debug, Clone, PartialEq)]
enum Settle {
    Ack,
    Retry { next_attempt: u32 },
    Dead(DeadLetter),
    Abandon,
}

/// A transport that records every settlement and redelivers retries after their delay.
#[derive(Clone, Default)]
struct TestTransport {
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    queue: Mutex<VecDeque<(WebhookEvent, u32)>>,
    notify: Notify,
    log: Mutex<Vec<(EventId, Settle)>>,
    in_flight: AtomicUsize,
}

impl TestTransport {
    fn push(&self, event: WebhookEvent, attempt: u32) {
        self.state.queue.lock().unwrap().push_back((event, attempt));
        self.state.notify.notify_one();
    }

    fn log(&self) -> Vec<(EventId, Settle)> {
        self.state.log.lock().unwrap().clone()
    }

    fn settled(&self, id: EventId) -> Vec<Settle> {
        self.log()
            .into_iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, s)| s)
            .collect()
    }

    fn idle(&self) -> bool {
        self.state.queue.lock().unwrap().is_empty()
            && self.state.in_flight.load(Ordering::SeqCst) == 0
    }
}

struct TestAcker {
    transport: TestTransport,
    id: EventId,
}

impl TestAcker {
    fn record(&self, s: Settle) {
        self.transport.state.log.lock().unwrap().push((self.id, s));
        self.transport
            .state
            .in_flight
            .fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Acker for TestAcker {
    async fn ack(&self) -> Result<(), SubscribeError> {
        self.record(Settle::Ack);
        Ok(())
    }

    async fn retry(
        &self,
        event: &WebhookEvent,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), SubscribeError> {
        let t = self.transport.clone();
        let event = event.clone();
        // Count the redelivery as in flight until it is queued again.
        t.state.in_flight.fetch_add(1, Ordering::SeqCst);
        self.record(Settle::Retry { next_attempt });
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            t.push(event, next_attempt);
            t.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(())
    }

    async fn dead_letter(
        &self,
        _event: &WebhookEvent,
        failure: &DeadLetter,
    ) -> Result<(), SubscribeError> {
        self.record(Settle::Dead(failure.clone()));
        Ok(())
    }

    async fn abandon(&self, event: &WebhookEvent, attempt: u32) -> Result<(), SubscribeError> {
        self.record(Settle::Abandon);
        self.transport.push(event.clone(), attempt);
        Ok(())
    }
}

#[async_trait]
impl Subscriber for TestTransport {
    async fn next(&mut self) -> Option<Result<Delivery, SubscribeError>> {
        loop {
            let notified = self.state.notify.notified();
            let popped = self.state.queue.lock().unwrap().pop_front();
            if let Some((event, attempt)) = popped {
                self.state.in_flight.fetch_add(1, Ordering::SeqCst);
                let acker = TestAcker {
                    transport: self.clone(),
                    id: event.id,
                };
                let dest = event.provider.clone();
                return Some(Ok(Delivery::new(
                    event,
                    dest,
                    attempt,
                    Position::new("test", 0_u64),
                    acker,
                )));
            }
            notified.await;
        }
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy::new()
        .max_attempts(3)
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .in_process_limit(Duration::from_millis(50))
}

fn idem_fast() -> IdempotencyConfig {
    let mut c = IdempotencyConfig::default();
    c.in_progress_retry = Duration::from_millis(10);
    c
}

fn github_event(delivery_id: &str, body: &str) -> WebhookEvent {
    let mut h = http::HeaderMap::new();
    h.insert("x-github-delivery", delivery_id.parse().unwrap());
    WebhookEvent::new("github", body.to_owned()).with_headers(h)
}

async fn until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition not reached within 30 s");
}

/// Runs `worker` in the background; returns a handle that stops it.
fn spawn<S: Subscriber>(worker: Worker<S>) -> (Arc<Notify>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(Notify::new());
    let s = Arc::clone(&stop);
    let handle =
        tokio::spawn(async move { worker.run_until(async move { s.notified().await }).await });
    (stop, handle)
}

async fn stop(h: (Arc<Notify>, tokio::task::JoinHandle<()>)) {
    h.0.notify_one();
    h.1.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_across_eight_workers_run_once_per_key() {
    let broker = MemoryBroker::new(10_000);
    let publisher = broker.publisher();
    let mut keys: Vec<String> = Vec::new();
    for i in 0..1000 {
        // 30 % duplicates of earlier deliveries.
        let key = if i % 10 < 3 && !keys.is_empty() {
            keys[fastrand::usize(..keys.len())].clone()
        } else {
            let k = format!("delivery-{i}");
            keys.push(k.clone());
            k
        };
        // A redelivery repeats the body; the key comes from it (the header is not signed).
        let body = format!(r#"{{"delivery":"{key}"}}"#);
        publisher
            .publish("github", github_event(&key, &body))
            .await
            .unwrap();
    }
    let unique = keys.len();

    let store = Arc::new(MemoryStore::new());
    let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..8 {
        let calls = Arc::clone(&calls);
        let worker = Worker::builder(broker.subscriber_all())
            .concurrency(8)
            .idempotency(IdempotencyLayer::from_arc(store.clone()).config(idem_fast()))
            .retry(fast_retry())
            .build(processor_fn(move |event, _ctx| {
                let calls = Arc::clone(&calls);
                let key = event.header("x-github-delivery").unwrap().to_owned();
                async move {
                    tokio::task::yield_now().await;
                    *calls.lock().unwrap().entry(key).or_default() += 1;
                    Ok(Outcome::Processed)
                }
            }));
        workers.push(spawn(worker));
    }
    until(|| broker.is_empty() && broker.in_flight() == 0).await;
    for w in workers {
        stop(w).await;
    }
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), unique);
    assert!(calls.values().all(|&n| n == 1), "a key was processed twice");
    assert!(broker.dead_letters("github").is_empty());
}

#[tokio::test]
async fn transient_twice_then_success_is_processed_and_acked_once() {
    transient_twice_then_success_is_processed_and_acked_once_with(false).await;
}

#[tokio::test]
async fn transient_twice_then_success_is_processed_and_acked_once_in_task() {
    transient_twice_then_success_is_processed_and_acked_once_with(true).await;
}

async fn transient_twice_then_success_is_processed_and_acked_once_with(inline: bool) {
    let transport = TestTransport::default();
    let event = WebhookEvent::new("acme", "x");
    let id = event.id;
    transport.push(event, 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let worker = Worker::builder(transport.clone())
        .inline(inline)
        .retry(fast_retry())
        .build(processor_fn(move |_e, ctx| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let attempt = ctx.attempt;
            async move {
                assert_eq!(attempt as usize, n);
                if n <= 2 {
                    Err(ProcessError::transient("flaky"))
                } else {
                    Ok(Outcome::Processed)
                }
            }
        }));
    let w = spawn(worker);
    until(|| !transport.settled(id).is_empty() && transport.idle()).await;
    stop(w).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(transport.settled(id), vec![Settle::Ack]);
}

#[tokio::test]
async fn long_backoff_goes_back_to_the_transport() {
    let transport = TestTransport::default();
    let event = WebhookEvent::new("acme", "x");
    let id = event.id;
    transport.push(event, 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    // Backoff longer than the in-process limit: retried through the transport.
    let policy = RetryPolicy::new()
        .max_attempts(3)
        .backoff(Duration::from_millis(30), Duration::from_millis(30))
        .in_process_limit(Duration::ZERO);
    let worker = Worker::builder(transport.clone())
        .retry(policy)
        .build(processor_fn(move |_e, _ctx| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    Err(ProcessError::transient("flaky"))
                } else {
                    Ok(Outcome::Processed)
                }
            }
        }));
    let w = spawn(worker);
    until(|| transport.settled(id).contains(&Settle::Ack) && transport.idle()).await;
    stop(w).await;
    assert_eq!(
        transport.settled(id),
        vec![Settle::Retry { next_attempt: 2 }, Settle::Ack]
    );
}

#[tokio::test]
async fn permanent_failure_is_dead_lettered_at_once() {
    let transport = TestTransport::default();
    let event = WebhookEvent::new("acme", "not json");
    let id = event.id;
    transport.push(event, 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let worker = Worker::builder(transport.clone())
        .retry(fast_retry())
        .build(processor_fn(move |_e, _ctx| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err(ProcessError::permanent("malformed payload")) }
        }));
    let w = spawn(worker);
    until(|| !transport.settled(id).is_empty()).await;
    stop(w).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let settled = transport.settled(id);
    let [Settle::Dead(dl)] = settled.as_slice() else {
        panic!("expected one dead letter, got {:?}", transport.settled(id));
    };
    assert_eq!(dl.attempts, 1);
    assert_eq!(dl.category, FailureCategory::Unrecoverable);
    assert_eq!(dl.reason, "malformed payload");
    assert_eq!(dl.destination, "acme");
}

#[tokio::test]
async fn always_failing_is_dead_lettered_after_max_attempts() {
    always_failing_is_dead_lettered_after_max_attempts_with(false).await;
}

#[tokio::test]
async fn always_failing_is_dead_lettered_after_max_attempts_in_task() {
    always_failing_is_dead_lettered_after_max_attempts_with(true).await;
}

async fn always_failing_is_dead_lettered_after_max_attempts_with(inline: bool) {
    let broker = MemoryBroker::new(10);
    broker
        .publisher()
        .publish("acme", WebhookEvent::new("acme", "x"))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let policy = fast_retry()
        .max_attempts(4)
        .in_process_limit(Duration::from_millis(7));
    let worker = Worker::builder(broker.subscriber_all())
        .inline(inline)
        .retry(policy)
        .build(processor_fn(move |_e, _ctx| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err(ProcessError::transient("downstream is down")) }
        }));
    let w = spawn(worker);
    until(|| broker.dead_letters("acme").len() == 1).await;
    stop(w).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let (_, dl) = &broker.dead_letters("acme")[0];
    assert_eq!(dl.attempts, 4);
    assert_eq!(dl.category, FailureCategory::Processing);
    assert_eq!(broker.in_flight(), 0);
}

/// Runs `worker` until `broker` has dead-lettered one `acme` event and holds nothing else;
/// that event and its record.
async fn run_until_dead_lettered(
    broker: &MemoryBroker,
    worker: Worker<firefly_webhook::memory::MemorySubscriber>,
) -> (WebhookEvent, DeadLetter) {
    let w = spawn(worker);
    until(|| {
        broker.dead_letters("acme").len() == 1 && broker.is_empty() && broker.in_flight() == 0
    })
    .await;
    stop(w).await;
    broker.dead_letters("acme").remove(0)
}

#[tokio::test]
async fn panics_are_failed_attempts_and_the_worker_keeps_going() {
    panics_are_failed_attempts_and_the_worker_keeps_going_with(false).await;
}

#[tokio::test]
async fn panics_are_failed_attempts_and_the_worker_keeps_going_in_task() {
    panics_are_failed_attempts_and_the_worker_keeps_going_with(true).await;
}

async fn panics_are_failed_attempts_and_the_worker_keeps_going_with(inline: bool) {
    let broker = MemoryBroker::new(10);
    let p = broker.publisher();
    p.publish("acme", WebhookEvent::new("acme", "always-panics"))
        .await
        .unwrap();
    p.publish("acme", WebhookEvent::new("acme", "panics-once"))
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let worker = Worker::builder(broker.subscriber_all())
        .inline(inline)
        .concurrency(1)
        .retry(fast_retry())
        .build(processor_fn(move |e, ctx| {
            let body = String::from_utf8(e.body.to_vec()).unwrap();
            s.lock().unwrap().push((body.clone(), ctx.attempt));
            let attempt = ctx.attempt;
            async move {
                assert!(!(body == "always-panics" || attempt == 1), "boom");
                Ok(Outcome::Processed)
            }
        }));
    let (event, dl) = &run_until_dead_lettered(&broker, worker).await;
    assert_eq!(&event.body[..], b"always-panics");
    assert_eq!(dl.attempts, 3);
    assert!(dl.reason.contains("panicked"), "{}", dl.reason);
    let seen = seen.lock().unwrap();
    assert!(seen.contains(&("panics-once".to_owned(), 2)), "{seen:?}");
}

#[tokio::test]
async fn a_panicking_key_rule_is_a_failed_attempt() {
    a_panicking_key_rule_is_a_failed_attempt_with(false).await;
}

#[tokio::test]
async fn a_panicking_key_rule_is_a_failed_attempt_in_task() {
    a_panicking_key_rule_is_a_failed_attempt_with(true).await;
}

/// Key rules are user code: one that panics fails that delivery's attempt, like a panic in the
/// stack, and the worker goes on with the others.
async fn a_panicking_key_rule_is_a_failed_attempt_with(inline: bool) {
    let broker = MemoryBroker::new(10);
    let p = broker.publisher();
    for body in ["bad-key", "good"] {
        p.publish("acme", WebhookEvent::new("acme", body))
            .await
            .unwrap();
    }
    let rule = IdempotencyKeys::new().provider("acme", |e| {
        assert!(&e.body[..] != b"bad-key", "key rule boom");
        Some(String::from_utf8_lossy(&e.body).into_owned())
    });
    let processed = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&processed);
    let worker = Worker::builder(broker.subscriber_all())
        .inline(inline)
        .concurrency(1)
        .retry(fast_retry())
        .idempotency(IdempotencyLayer::new(MemoryStore::new()).keys(rule))
        .build(processor_fn(move |e, _ctx| {
            seen.lock().unwrap().push(e.body.clone());
            async { Ok(Outcome::Processed) }
        }));
    let (event, dl) = &run_until_dead_lettered(&broker, worker).await;
    assert_eq!(&event.body[..], b"bad-key");
    assert_eq!(dl.attempts, 3);
    assert!(dl.reason.contains("key rule boom"), "{}", dl.reason);
    assert_eq!(*processed.lock().unwrap(), vec![bytes::Bytes::from("good")]);
}

#[tokio::test]
async fn in_progress_duplicate_is_retried_not_dropped() {
    let transport = TestTransport::default();
    let first = github_event("same", "1");
    // A redelivery: same delivery id, same body.
    let second = github_event("same", "1");
    let second_id = second.id;
    transport.push(first, 1);
    transport.push(second, 1);
    let gate = Arc::new(Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (Arc::clone(&gate), Arc::clone(&calls));
    let worker = Worker::builder(transport.clone())
        .concurrency(4)
        .idempotency(IdempotencyLayer::new(MemoryStore::new()).config(idem_fast()))
        .retry(fast_retry())
        .build(processor_fn(move |_e, _ctx| {
            c.fetch_add(1, Ordering::SeqCst);
            let g = Arc::clone(&g);
            async move {
                g.notified().await;
                Ok(Outcome::Processed)
            }
        }));
    let w = spawn(worker);
    // The duplicate is put off while the first holds the lock ...
    until(|| {
        transport
            .settled(second_id)
            .iter()
            .any(|s| matches!(s, Settle::Retry { .. }))
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // ... and acked as a duplicate once the first completes.
    gate.notify_one();
    until(|| transport.settled(second_id).contains(&Settle::Ack) && transport.idle()).await;
    stop(w).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let settled = transport.settled(second_id);
    assert!(
        settled
            .iter()
            .all(|s| matches!(s, Settle::Retry { next_attempt: 1 } | Settle::Ack)),
        "{settled:?}"
    );
}

#[tokio::test]
async fn shutdown_acks_finished_and_gives_back_unfinished() {
    shutdown_acks_finished_and_gives_back_unfinished_with(false).await;
}

#[tokio::test]
async fn shutdown_acks_finished_and_gives_back_unfinished_in_task() {
    shutdown_acks_finished_and_gives_back_unfinished_with(true).await;
}

async fn shutdown_acks_finished_and_gives_back_unfinished_with(inline: bool) {
    let broker = MemoryBroker::new(100);
    let p = broker.publisher();
    for i in 0..10 {
        let body = if i % 2 == 0 { "quick" } else { "stuck" };
        p.publish("acme", WebhookEvent::new("acme", format!("{body}-{i}")))
            .await
            .unwrap();
    }
    let done = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&done);
    let never = Arc::new(Notify::new());
    let worker = Worker::builder(broker.subscriber_all())
        .inline(inline)
        .concurrency(10)
        .shutdown_timeout(Duration::from_millis(100))
        .build(processor_fn(move |e, _ctx| {
            let d = Arc::clone(&d);
            let never = Arc::clone(&never);
            let stuck = e.body.starts_with(b"stuck");
            async move {
                if stuck {
                    never.notified().await;
                }
                d.fetch_add(1, Ordering::SeqCst);
                Ok(Outcome::Processed)
            }
        }));
    let w = spawn(worker);
    until(|| done.load(Ordering::SeqCst) == 5 && broker.is_empty()).await;
    stop(w).await;
    // The five stuck deliveries went back to the queue; nothing is in flight or lost.
    assert_eq!(broker.in_flight(), 0);
    assert_eq!(broker.len("acme"), 5);
    let processed = Arc::new(AtomicUsize::new(0));
    let pc = Arc::clone(&processed);
    let worker = Worker::builder(broker.subscriber_all())
        .inline(inline)
        .build(processor_fn(move |e, _ctx| {
            assert!(e.body.starts_with(b"stuck"));
            pc.fetch_add(1, Ordering::SeqCst);
            async { Ok(Outcome::Processed) }
        }));
    let w = spawn(worker);
    until(|| processed.load(Ordering::SeqCst) == 5 && broker.in_flight() == 0).await;
    stop(w).await;
    assert!(broker.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_ordering_keeps_order_and_runs_keys_in_parallel() {
    per_key_ordering_keeps_order_and_runs_keys_in_parallel_with(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_ordering_keeps_order_and_runs_keys_in_parallel_in_task() {
    per_key_ordering_keeps_order_and_runs_keys_in_parallel_with(true).await;
}

#[allow(clippy::many_single_char_names)]
async fn per_key_ordering_keeps_order_and_runs_keys_in_parallel_with(inline: bool) {
    let broker = MemoryBroker::new(1000);
    let p = broker.publisher();
    for seq in 0..30 {
        for key in ["a", "b", "c", "d"] {
            let mut h = http::HeaderMap::new();
            h.insert("x-account", key.parse().unwrap());
            p.publish(
                "acme",
                WebhookEvent::new("acme", format!("{key}:{seq}")).with_headers(h),
            )
            .await
            .unwrap();
        }
    }
    let seen: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let running: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let max_total = Arc::new(AtomicUsize::new(0));
    let (s, r, m) = (
        Arc::clone(&seen),
        Arc::clone(&running),
        Arc::clone(&max_total),
    );
    let worker = Worker::builder(broker.subscriber_all())
        .inline(inline)
        .concurrency(16)
        .order_by(|e| e.header("x-account").map(str::to_owned))
        .build(processor_fn(move |e, _ctx| {
            let (s, r, m) = (Arc::clone(&s), Arc::clone(&r), Arc::clone(&m));
            let text = String::from_utf8(e.body.to_vec()).unwrap();
            async move {
                let (key, seq) = text.split_once(':').unwrap();
                {
                    let mut running = r.lock().unwrap();
                    let n = running.entry(key.to_owned()).or_default();
                    *n += 1;
                    assert_eq!(*n, 1, "two events of one key ran at once");
                    m.fetch_max(running.values().sum(), Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(fastrand::u64(1..4))).await;
                s.lock()
                    .unwrap()
                    .entry(key.to_owned())
                    .or_default()
                    .push(seq.parse().unwrap());
                *r.lock().unwrap().get_mut(key).unwrap() -= 1;
                Ok(Outcome::Processed)
            }
        }));
    let w = spawn(worker);
    until(|| broker.is_empty() && broker.in_flight() == 0).await;
    stop(w).await;
    let seen = seen.lock().unwrap();
    for key in ["a", "b", "c", "d"] {
        assert_eq!(seen[key], (0..30).collect::<Vec<_>>(), "order of {key}");
    }
    assert!(
        max_total.load(Ordering::SeqCst) > 1,
        "keys never ran in parallel"
    );
}

#[tokio::test]
async fn hooks_run_around_each_attempt() {
    #[derive(Default)]
    struct Hooked {
        log: Mutex<Vec<String>>,
    }
    #[async_trait]
    impl WebhookProcessor for Hooked {
        async fn process(&self, _e: &WebhookEvent, ctx: &Context) -> Result<Outcome, ProcessError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("process {}", ctx.attempt));
            if ctx.attempt == 1 {
                Err(ProcessError::transient("first"))
            } else {
                Ok(Outcome::Processed)
            }
        }
        async fn before_process(
            &self,
            _e: &WebhookEvent,
            ctx: &Context,
        ) -> Result<(), ProcessError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("before {}", ctx.attempt));
            Ok(())
        }
        async fn after_process(&self, _e: &WebhookEvent, ctx: &Context, _o: &Outcome) {
            self.log
                .lock()
                .unwrap()
                .push(format!("after {}", ctx.attempt));
        }
        async fn on_error(&self, _e: &WebhookEvent, ctx: &Context, _err: &ProcessError) {
            self.log
                .lock()
                .unwrap()
                .push(format!("error {}", ctx.attempt));
        }
    }
    let broker = MemoryBroker::new(10);
    broker
        .publisher()
        .publish("acme", WebhookEvent::new("acme", "x"))
        .await
        .unwrap();
    let processor = Arc::new(Hooked::default());
    let worker = Worker::builder(broker.subscriber_all())
        .retry(fast_retry())
        .build(Arc::clone(&processor));
    let w = spawn(worker);
    until(|| processor.log.lock().unwrap().len() == 6).await;
    stop(w).await;
    assert_eq!(
        *processor.log.lock().unwrap(),
        [
            "before 1",
            "process 1",
            "error 1",
            "before 2",
            "process 2",
            "after 2"
        ]
    );
}

#[test]
fn counters_are_labelled_by_provider() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let broker = MemoryBroker::new(10);
            let p = broker.publisher();
            p.publish("acme", github_event("d1", "ok")).await.unwrap();
            p.publish("acme", github_event("d1", "ok")).await.unwrap();
            p.publish("acme", github_event("d2", "bad")).await.unwrap();
            broker.close();
            Worker::builder(broker.subscriber_all())
                .concurrency(1)
                .retry(fast_retry())
                .build(processor_fn(|e, _ctx| {
                    let bad = &e.body[..] == b"bad";
                    async move {
                        if bad {
                            Err(ProcessError::permanent("bad"))
                        } else {
                            Ok(Outcome::Processed)
                        }
                    }
                }))
                .run()
                .await;
        });
    });
    let counters: HashMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            // Gauges (the memory broker's, the worker's breaker state) describe the whole
            // process, not a provider.
            if matches!(value, DebugValue::Gauge(_)) {
                return None;
            }
            assert!(
                key.labels()
                    .any(|l| l.key() == "provider" && l.value() == "github"),
                "{key:?}"
            );
            match value {
                DebugValue::Counter(n) => Some((key.name().to_owned(), n)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(counters["firefly_webhook_received_total"], 3);
    assert_eq!(counters["firefly_webhook_processed_total"], 1);
    assert_eq!(counters["firefly_webhook_duplicates_total"], 1);
    assert_eq!(counters["firefly_webhook_dead_lettered_total"], 1);
    assert_eq!(counters["firefly_webhook_failed_total"], 1);
}

#[tokio::test]
async fn verification_in_the_worker_dead_letters_forgeries_before_claiming() {
    use firefly_webhook::verify::{GitHub, Verifiers};
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    fn signed(secret: &str, body: &str, delivery: &str) -> WebhookEvent {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let hex = mac
            .finalize()
            .into_bytes()
            .iter()
            .fold(String::new(), |mut s, b| {
                use std::fmt::Write;
                let _ = write!(s, "{b:02x}");
                s
            });
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={hex}").parse().unwrap(),
        );
        h.insert("x-github-delivery", delivery.parse().unwrap());
        WebhookEvent::new("github", body.to_owned()).with_headers(h)
    }

    let broker = MemoryBroker::new(10);
    let p = broker.publisher();
    // A forgery that reuses a real delivery id must not block the genuine delivery.
    p.publish("github", signed("wrong", "{}", "same-id"))
        .await
        .unwrap();
    p.publish("github", signed("s3cret", "{}", "same-id"))
        .await
        .unwrap();
    broker.close();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    Worker::builder(broker.subscriber_all())
        .concurrency(1)
        .verifiers(Verifiers::new().provider("github", GitHub::new("s3cret")))
        .build(processor_fn(move |_e, _ctx| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(Outcome::Processed) }
        }))
        .run()
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let dead = broker.dead_letters("github");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.category, FailureCategory::Validation);
    assert_eq!(dead[0].1.attempts, 1);
}

#[tokio::test]
async fn a_closed_broker_ends_only_after_delayed_retries_are_processed() {
    let broker = MemoryBroker::new(10);
    broker
        .publisher()
        .publish("acme", WebhookEvent::new("acme", "x"))
        .await
        .unwrap();
    // Closed right away: the worker must still see the retry that comes back after a delay.
    broker.close();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let policy = fast_retry()
        .backoff(Duration::from_millis(30), Duration::from_millis(30))
        .in_process_limit(Duration::ZERO);
    tokio::time::timeout(
        Duration::from_secs(30),
        Worker::builder(broker.subscriber_all())
            .retry(policy)
            .build(processor_fn(move |_e, _ctx| {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n == 1 {
                        Err(ProcessError::transient("flaky"))
                    } else {
                        Ok(Outcome::Processed)
                    }
                }
            }))
            .run(),
    )
    .await
    .expect("the worker ends once everything is settled");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(broker.is_empty());
    assert_eq!(broker.in_flight(), 0);
    assert!(broker.dead_letters("acme").is_empty());
}

/// In-task deliveries still overlap: ten that each wait for all ten to have started finish.
#[tokio::test]
async fn in_task_deliveries_run_concurrently() {
    let broker = MemoryBroker::new(100);
    let p = broker.publisher();
    for i in 0..10 {
        p.publish("acme", WebhookEvent::new("acme", format!("e-{i}")))
            .await
            .unwrap();
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(10));
    let done = Arc::new(AtomicUsize::new(0));
    let (b, d) = (Arc::clone(&barrier), Arc::clone(&done));
    let worker = Worker::builder(broker.subscriber_all())
        .inline(true)
        .concurrency(10)
        .build(processor_fn(move |_e, _ctx| {
            let (b, d) = (Arc::clone(&b), Arc::clone(&d));
            async move {
                b.wait().await;
                d.fetch_add(1, Ordering::SeqCst);
                Ok(Outcome::Processed)
            }
        }));
    let w = spawn(worker);
    until(|| done.load(Ordering::SeqCst) == 10 && broker.in_flight() == 0).await;
    stop(w).await;
    assert!(broker.is_empty());
}

/// A stack of one's own whose `call` panics for some events, and which is not ready at once
/// for the others: its `poll_ready` answers `Pending` every other time.
#[derive(Clone)]
struct Moody {
    polls: Arc<AtomicUsize>,
}

impl tower::Service<firefly_webhook::process::Job> for Moody {
    type Response = Outcome;
    type Error = ProcessError;
    type Future = std::future::Ready<Result<Outcome, ProcessError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ProcessError>> {
        if self.polls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: firefly_webhook::process::Job) -> Self::Future {
        // In `call` itself, before any future exists.
        assert!(&job.event.body[..] != b"panics-in-call", "boom in call");
        std::future::ready(Ok(Outcome::Processed))
    }
}

#[tokio::test]
async fn own_stacks_may_be_not_ready_at_once_or_panic_in_call() {
    for inline in [false, true] {
        let broker = MemoryBroker::new(10);
        let p = broker.publisher();
        p.publish("acme", WebhookEvent::new("acme", "panics-in-call"))
            .await
            .unwrap();
        p.publish("acme", WebhookEvent::new("acme", "fine"))
            .await
            .unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        let worker = Worker::builder(broker.subscriber_all())
            .inline(inline)
            .concurrency(1)
            .retry(fast_retry())
            .build_service(Moody {
                polls: Arc::clone(&polls),
            });
        let w = spawn(worker);
        until(|| {
            broker.dead_letters("acme").len() == 1 && broker.is_empty() && broker.in_flight() == 0
        })
        .await;
        stop(w).await;
        let dead = broker.dead_letters("acme");
        assert_eq!(dead.len(), 1, "inline: {inline}");
        let (event, dl) = &dead[0];
        assert_eq!(&event.body[..], b"panics-in-call");
        assert_eq!(dl.attempts, 3);
        assert!(dl.reason.contains("boom in call"), "{}", dl.reason);
        // Every call waited for a `Pending` readiness first, and "fine" was processed (not
        // dead-lettered, nothing left in flight).
        assert!(polls.load(Ordering::SeqCst) >= 2 * 4, "inline: {inline}");
    }
}
