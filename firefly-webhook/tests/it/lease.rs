//! Lease safety: the idempotency lock is renewed while a processor runs, so a redelivery never
//! runs alongside it; a lost lock stops the processor; the processor sees its fencing token.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::idempotency::{
    Claim, FencingToken, IdempotencyConfig, IdempotencyLayer, IdempotencyStore, MemoryStore,
    StoreError,
};
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Outcome, processor_fn};
use firefly_webhook::worker::Worker;
use firefly_webhook::{Publisher, WebhookEvent, async_trait};
use tokio::sync::Notify;

const LOCK_TTL: Duration = Duration::from_millis(300);

/// How [`Watched::renew`] answers.
#[derive(Clone, Copy, PartialEq)]
enum Renew {
    /// As the memory store does.
    Store,
    /// As if another worker owned the lock now.
    Fenced,
    /// As if the store could not be reached.
    Unavailable,
}

/// A [`MemoryStore`] that records what the layer asks of it.
struct Watched {
    inner: MemoryStore,
    renew: Renew,
    renewals: AtomicUsize,
    deferred: AtomicUsize,
    claimed: Mutex<Vec<FencingToken>>,
    completed: Mutex<Vec<FencingToken>>,
}

impl Watched {
    fn new(renew: Renew) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            renew,
            renewals: AtomicUsize::new(0),
            deferred: AtomicUsize::new(0),
            claimed: Mutex::default(),
            completed: Mutex::default(),
        })
    }
}

#[async_trait]
impl IdempotencyStore for Watched {
    async fn claim(&self, key: &str, lock_ttl: Duration) -> Result<Claim, StoreError> {
        let claim = self.inner.claim(key, lock_ttl).await?;
        match &claim {
            Claim::Acquired(token) => self.claimed.lock().unwrap().push(token.clone()),
            Claim::InProgress { .. } => {
                self.deferred.fetch_add(1, Ordering::SeqCst);
            }
            Claim::Completed => {}
        }
        Ok(claim)
    }
    async fn renew(
        &self,
        key: &str,
        token: &FencingToken,
        lock_ttl: Duration,
    ) -> Result<(), StoreError> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        match self.renew {
            Renew::Store => self.inner.renew(key, token, lock_ttl).await,
            Renew::Fenced => Err(StoreError::Fenced),
            Renew::Unavailable => Err(StoreError::unavailable("connection refused")),
        }
    }
    async fn complete(
        &self,
        key: &str,
        token: &FencingToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.completed.lock().unwrap().push(token.clone());
        self.inner.complete(key, token, ttl).await
    }
    async fn release(&self, key: &str, token: &FencingToken) -> Result<(), StoreError> {
        self.inner.release(key, token).await
    }
    async fn record_failure(
        &self,
        key: &str,
        error: &str,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        self.inner.record_failure(key, error, ttl).await
    }
}

fn config() -> IdempotencyConfig {
    let mut c = IdempotencyConfig::default();
    c.lock_ttl = LOCK_TTL;
    c.in_progress_retry = Duration::from_millis(20);
    c
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

/// Running and most-ever-running processors.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
    calls: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_running_three_lock_ttls_never_overlaps_a_redelivery() {
    let broker = MemoryBroker::new(16);
    let publisher = broker.publisher();
    // The same webhook twice, as a provider's redelivery: same body, so same key.
    for _ in 0..2 {
        publisher
            .publish("acme", WebhookEvent::new("acme", r#"{"n":1}"#))
            .await
            .unwrap();
    }
    let store = Watched::new(Renew::Store);
    let seen = Arc::new(Concurrency::default());
    // Two workers sharing the store stand for two processes.
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let seen = Arc::clone(&seen);
            let worker = Worker::builder(broker.subscriber_all())
                .concurrency(2)
                .idempotency(IdempotencyLayer::from_arc(store.clone()).config(config()))
                .build(processor_fn(move |_e, _ctx| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let running = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.max.fetch_max(running, Ordering::SeqCst);
                        seen.calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(3 * LOCK_TTL).await;
                        seen.now.fetch_sub(1, Ordering::SeqCst);
                        Ok(Outcome::Processed)
                    }
                }));
            let stop = Arc::new(Notify::new());
            let s = Arc::clone(&stop);
            let handle = tokio::spawn(worker.run_until(async move { s.notified().await }));
            (stop, handle)
        })
        .collect();
    until(|| broker.is_empty() && broker.in_flight() == 0).await;
    for (stop, handle) in workers {
        stop.notify_one();
        handle.await.unwrap();
    }
    assert_eq!(seen.max.load(Ordering::SeqCst), 1, "ran concurrently");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1, "ran twice");
    // The redelivery was put off while the lock was held, past its first TTL thanks to renewals.
    assert!(store.deferred.load(Ordering::SeqCst) >= 1);
    assert!(store.renewals.load(Ordering::SeqCst) >= 2);
    assert_eq!(store.claimed.lock().unwrap().len(), 1);
    assert!(broker.dead_letters("acme").is_empty());
}

#[tokio::test]
async fn the_fencing_token_reaches_the_processor() {
    let broker = MemoryBroker::new(4);
    broker
        .publisher()
        .publish("acme", WebhookEvent::new("acme", "x"))
        .await
        .unwrap();
    broker.close();
    let store = Watched::new(Renew::Store);
    let seen: Arc<Mutex<Vec<Option<FencingToken>>>> = Arc::default();
    let s = Arc::clone(&seen);
    Worker::builder(broker.subscriber_all())
        .idempotency(IdempotencyLayer::from_arc(store.clone()).config(config()))
        .build(processor_fn(move |_e, ctx| {
            s.lock().unwrap().push(ctx.fencing_token.clone());
            async { Ok(Outcome::Processed) }
        }))
        .run()
        .await;
    let claimed = store.claimed.lock().unwrap().clone();
    assert_eq!(claimed.len(), 1);
    assert_eq!(*seen.lock().unwrap(), [Some(claimed[0].clone())]);
    assert_eq!(*store.completed.lock().unwrap(), claimed);

    // Without idempotency there is no lock, and no token.
    let broker = MemoryBroker::new(4);
    broker
        .publisher()
        .publish("acme", WebhookEvent::new("acme", "x"))
        .await
        .unwrap();
    broker.close();
    let s = Arc::clone(&seen);
    Worker::builder(broker.subscriber_all())
        .without_idempotency()
        .build(processor_fn(move |_e, ctx| {
            s.lock().unwrap().push(ctx.fencing_token.clone());
            async { Ok(Outcome::Processed) }
        }))
        .run()
        .await;
    assert_eq!(seen.lock().unwrap().last(), Some(&None));
}

/// Sets its flag when dropped: tells a processor that was stopped from one that returned.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The first attempt hangs until stopped; the second succeeds at once.
async fn run_with_lost_lease(renew: Renew) -> (Arc<Watched>, Arc<AtomicBool>, usize) {
    let broker = MemoryBroker::new(4);
    broker
        .publisher()
        .publish("acme", WebhookEvent::new("acme", "slow"))
        .await
        .unwrap();
    broker.close();
    let store = Watched::new(renew);
    let stopped = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (st, c) = (Arc::clone(&stopped), Arc::clone(&calls));
    tokio::time::timeout(
        Duration::from_secs(30),
        Worker::builder(broker.subscriber_all())
            .idempotency(IdempotencyLayer::from_arc(store.clone()).config(config()))
            .build(processor_fn(move |_e, _ctx| {
                let first = c.fetch_add(1, Ordering::SeqCst) == 0;
                let guard = DropFlag(Arc::clone(&st));
                async move {
                    if first {
                        std::future::pending::<()>().await;
                    }
                    std::mem::forget(guard);
                    Ok(Outcome::Processed)
                }
            }))
            .run(),
    )
    .await
    .expect("the stopped attempt is redelivered and then processed");
    assert!(broker.dead_letters("acme").is_empty());
    (store, stopped, calls.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_fenced_renewal_stops_the_processor_and_marks_nothing() {
    let (store, stopped, calls) = run_with_lost_lease(Renew::Fenced).await;
    assert!(
        stopped.load(Ordering::SeqCst),
        "the hung attempt was not stopped"
    );
    assert_eq!(calls, 2);
    let claimed = store.claimed.lock().unwrap().clone();
    assert_eq!(claimed.len(), 2);
    // Only the attempt that kept its lock completed.
    assert_eq!(*store.completed.lock().unwrap(), [claimed[1].clone()]);
}

#[tokio::test]
async fn an_unreachable_store_stops_the_processor_once_the_lock_ran_out() {
    let (store, stopped, calls) = run_with_lost_lease(Renew::Unavailable).await;
    assert!(stopped.load(Ordering::SeqCst));
    assert_eq!(calls, 2);
    // It kept trying before giving up: every third of the TTL, until the TTL ran out.
    assert!(store.renewals.load(Ordering::SeqCst) >= 2);
    let claimed = store.claimed.lock().unwrap().clone();
    assert_eq!(*store.completed.lock().unwrap(), [claimed[1].clone()]);
}
