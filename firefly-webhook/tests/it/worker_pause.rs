//! The worker's pause breaker, on the memory transport, against a downstream that is down for
//! a while (a flag): the worker stops pulling, probes one delivery at a time, and no event is
//! dead-lettered because of the outage.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Outcome, ProcessError, WebhookProcessor, processor_fn};
use firefly_webhook::worker::{RetryPolicy, Worker};
use firefly_webhook::{EventId, Publisher, Subscriber, WebhookEvent, metric};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use tokio::sync::Notify;

const COOL_DOWN: Duration = Duration::from_secs(60);

/// The processor's downstream: fails every call while `down`.
#[derive(Default)]
struct Downstream {
    down: AtomicBool,
    /// Every call, with the event it was for.
    calls: Mutex<Vec<EventId>>,
    /// Successful calls per event.
    processed: Mutex<HashMap<EventId, usize>>,
}

impl Downstream {
    fn new(down: bool) -> Arc<Self> {
        let downstream = Self::default();
        downstream.down.store(down, Ordering::SeqCst);
        Arc::new(downstream)
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn processed(&self) -> HashMap<EventId, usize> {
        self.processed.lock().unwrap().clone()
    }

    fn processor(self: &Arc<Self>) -> impl WebhookProcessor {
        let downstream = Arc::clone(self);
        processor_fn(move |event, _ctx| {
            let downstream = Arc::clone(&downstream);
            let id = event.id;
            let poison = &event.body[..] == b"poison";
            async move {
                downstream.calls.lock().unwrap().push(id);
                if poison {
                    return Err(ProcessError::transient("this event breaks the downstream"));
                }
                if downstream.down.load(Ordering::SeqCst) {
                    return Err(ProcessError::transient("downstream is down"));
                }
                *downstream.processed.lock().unwrap().entry(id).or_default() += 1;
                Ok(Outcome::Processed)
            }
        })
    }
}

async fn publish(broker: &MemoryBroker, bodies: impl IntoIterator<Item = String>) {
    let publisher = broker.publisher();
    for body in bodies {
        publisher
            .publish("acme", WebhookEvent::new("acme", body))
            .await
            .unwrap();
    }
}

fn retry_policy() -> RetryPolicy {
    // One retry in process, the next through the transport.
    RetryPolicy::new()
        .max_attempts(3)
        .backoff(Duration::from_secs(1), Duration::from_secs(4))
        .jitter(0.0)
        .in_process_limit(Duration::from_secs(1))
}

/// Runs `worker` in the background; returns what stops it.
fn spawn<S: Subscriber>(worker: Worker<S>) -> (Arc<Notify>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(Notify::new());
    let s = Arc::clone(&stop);
    let handle =
        tokio::spawn(async move { worker.run_until(async move { s.notified().await }).await });
    (stop, handle)
}

async fn stop(worker: (Arc<Notify>, tokio::task::JoinHandle<()>)) {
    worker.0.notify_one();
    worker.1.await.unwrap();
}

async fn until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(3600), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("condition not reached within an hour (of paused time)");
}

/// A metrics recorder whose values stay put when read (the debugging recorder's snapshots
/// reset them).
pub(crate) struct Recorded(Registry<Key, AtomicStorage>);

impl Recorded {
    /// Runs `test` on a current-thread runtime with paused time, recording its metrics.
    pub(crate) fn run(test: impl AsyncFnOnce(&Self)) {
        let recorded = Self(Registry::atomic());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorded, || rt.block_on(test(&recorded)));
    }

    /// The gauge `name`, if it was ever set.
    pub(crate) fn gauge(&self, name: &str) -> Option<f64> {
        self.0
            .get_gauge_handles()
            .into_iter()
            .find(|(key, _)| key.name() == name)
            .map(|(_, gauge)| f64::from_bits(gauge.load(Ordering::SeqCst)))
    }

    /// The counter `name`, summed over its labels.
    pub(crate) fn counter(&self, name: &str) -> u64 {
        self.0
            .get_counter_handles()
            .into_iter()
            .filter(|(key, _)| key.name() == name)
            .map(|(_, counter)| counter.load(Ordering::SeqCst))
            .sum()
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

fn breaker_state(metrics: &Recorded) -> Option<f64> {
    metrics.gauge(metric::WORKER_BREAKER_STATE)
}

fn dead_lettered(metrics: &Recorded) -> u64 {
    metrics.counter(metric::DEAD_LETTERED_TOTAL)
}

#[test]
#[allow(clippy::float_cmp)] // the gauge holds small integers, exactly
fn an_outage_pauses_the_worker_and_dead_letters_nothing() {
    Recorded::run(async |metrics| {
        let broker = MemoryBroker::new(1_000);
        publish(&broker, (0..40).map(|i| format!("event {i}"))).await;
        let downstream = Downstream::new(true);
        let worker = spawn(
            Worker::builder(broker.subscriber_all())
                .concurrency(4)
                .retry(retry_policy())
                .pause_after(5, COOL_DOWN)
                .build(downstream.processor()),
        );

        // Five deliveries in a row fail: the worker pauses.
        until(|| breaker_state(metrics) == Some(1.0)).await;
        // In-flight deliveries settle (their in-process retries end) ...
        tokio::time::sleep(Duration::from_secs(5)).await;
        let paused_at = downstream.calls();
        // ... and then nothing is pulled for the rest of the cool-down.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            downstream.calls(),
            paused_at,
            "a paused worker pulls nothing"
        );
        assert_eq!(broker.events(), 40, "every event is still in the broker");
        assert!(broker.dead_letters("acme").is_empty());

        // After the cool-down, one delivery probes; it fails and the worker pauses again.
        tokio::time::sleep(COOL_DOWN).await;
        let probed: HashSet<EventId> = downstream.calls.lock().unwrap()[paused_at..]
            .iter()
            .copied()
            .collect();
        assert_eq!(probed.len(), 1, "one probe delivery at a time");
        assert_eq!(breaker_state(metrics), Some(1.0));

        // The downstream recovers: the next probe succeeds and everything is processed once.
        downstream.down.store(false, Ordering::SeqCst);
        until(|| downstream.processed().len() == 40 && broker.events() == 0).await;
        stop(worker).await;
        assert!(downstream.processed().values().all(|&n| n == 1));
        assert!(broker.dead_letters("acme").is_empty());
        assert_eq!(dead_lettered(metrics), 0);
        assert_eq!(breaker_state(metrics), Some(0.0));
        assert_eq!((broker.bytes(), broker.in_flight()), (0, 0));
    });
}

#[test]
#[allow(clippy::float_cmp)]
fn before_the_pause_opens_only_an_event_failing_alone_is_dead_lettered() {
    Recorded::run(async |metrics| {
        let broker = MemoryBroker::new(1_000);
        publish(&broker, (0..30).map(|i| format!("event {i}"))).await;
        let downstream = Downstream::new(true);
        // One delivery at a time, each out of attempts after its in-process retry, and the
        // default pause (20 failures, 30 s): the breaker needs 20 deliveries to open.
        let worker = spawn(
            Worker::builder(broker.subscriber_all())
                .concurrency(1)
                .retry(retry_policy().max_attempts(2))
                .build(downstream.processor()),
        );
        until(|| breaker_state(metrics) == Some(1.0)).await;
        // The first event failed alone: indistinguishable from a poison event. Every later
        // one failed while others did too, and went back to the broker.
        let dead = broker.dead_letters("acme");
        assert_eq!(dead.len(), 1);
        assert_eq!(&dead[0].0.body[..], b"event 0");

        downstream.down.store(false, Ordering::SeqCst);
        until(|| downstream.processed().len() == 29 && broker.events() == 0).await;
        stop(worker).await;
        assert!(downstream.processed().values().all(|&n| n == 1));
        assert_eq!(dead_lettered(metrics), 1);
        assert_eq!(breaker_state(metrics), Some(0.0));
    });
}

#[test]
fn without_the_pause_an_outage_dead_letters_events() {
    Recorded::run(async |metrics| {
        let broker = MemoryBroker::new(1_000);
        publish(&broker, (0..10).map(|i| format!("event {i}"))).await;
        let downstream = Downstream::new(true);
        let worker = spawn(
            Worker::builder(broker.subscriber_all())
                .concurrency(4)
                .retry(retry_policy())
                .without_pause()
                .build(downstream.processor()),
        );
        until(|| broker.dead_letters("acme").len() == 10).await;
        stop(worker).await;
        assert_eq!(dead_lettered(metrics), 10);
        assert_eq!(breaker_state(metrics), None, "no breaker, no gauge");
    });
}

#[test]
#[allow(clippy::float_cmp)]
fn a_poison_event_among_successes_is_still_dead_lettered() {
    Recorded::run(async |metrics| {
        let broker = MemoryBroker::new(1_000);
        let bodies = (0..20).map(|i| {
            if i == 5 {
                "poison".to_owned()
            } else {
                format!("event {i}")
            }
        });
        publish(&broker, bodies).await;
        let downstream = Downstream::new(false);
        let worker = spawn(
            Worker::builder(broker.subscriber_all())
                .concurrency(4)
                .retry(retry_policy())
                .pause_after(2, COOL_DOWN)
                .build(downstream.processor()),
        );
        until(|| broker.dead_letters("acme").len() == 1 && broker.events() == 0).await;
        stop(worker).await;
        let (event, record) = &broker.dead_letters("acme")[0];
        assert_eq!(&event.body[..], b"poison");
        assert_eq!(record.attempts, 3);
        assert_eq!(downstream.processed().len(), 19);
        assert_eq!(breaker_state(metrics), Some(0.0), "it never paused");
    });
}

#[test]
#[allow(clippy::float_cmp)]
fn permanent_errors_never_pause_the_worker() {
    Recorded::run(async |metrics| {
        let broker = MemoryBroker::new(1_000);
        publish(&broker, (0..10).map(|i| format!("event {i}"))).await;
        let worker = spawn(
            Worker::builder(broker.subscriber_all())
                .concurrency(2)
                .pause_after(2, COOL_DOWN)
                .build(processor_fn(|_event, _ctx| async {
                    Err(ProcessError::permanent("malformed"))
                })),
        );
        until(|| broker.dead_letters("acme").len() == 10).await;
        stop(worker).await;
        assert_eq!(breaker_state(metrics), Some(0.0));
    });
}

#[tokio::test(start_paused = true)]
async fn a_failing_worker_holds_at_most_concurrency_deliveries() {
    let broker = MemoryBroker::new(1_000);
    publish(&broker, (0..30).map(|i| format!("event {i}"))).await;
    let held = Arc::new(AtomicUsize::new(0));
    let (b, h) = (broker.clone(), Arc::clone(&held));
    // Every retry waits in process: what the broker has handed out is what the worker holds.
    let policy = RetryPolicy::new()
        .max_attempts(3)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .in_process_limit(Duration::from_secs(1));
    let worker = spawn(
        Worker::builder(broker.subscriber_all())
            .concurrency(3)
            .retry(policy)
            .without_pause()
            .build(processor_fn(move |_event, _ctx| {
                let in_flight = usize::try_from(b.in_flight()).unwrap();
                h.fetch_max(in_flight, Ordering::SeqCst);
                async { Err(ProcessError::transient("downstream is down")) }
            })),
    );
    until(|| broker.dead_letters("acme").len() == 30).await;
    stop(worker).await;
    assert!(held.load(Ordering::SeqCst) <= 3, "{held:?}");
}
