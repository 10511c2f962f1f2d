//! Redis goes away: fail closed by default, fail open on request, recover when it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use firefly_webhook::idempotency::{IdempotencyConfig, IdempotencyLayer};
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Outcome, processor_fn};
use firefly_webhook::worker::Worker;
use firefly_webhook::{
    Claim, FencingToken, IdempotencyStore, Publisher, StoreError, WebhookEvent, async_trait,
};
use firefly_webhook_redis::{FailurePolicy, RedisConfig, RedisStore};
use tokio::sync::watch;

use crate::common::{DONE, LOCK, PrivateRedis};

/// Bounds each call so a hanging store fails the test instead of the whole run.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the store must answer, not hang")
}

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn unreachable_redis_fails_closed_then_recovers() {
    let mut server = PrivateRedis::start().await;
    let mut config = RedisConfig::from_url(server.url());
    config.pool_size = 1;
    config.connect_timeout = Duration::from_millis(500);
    config.command_timeout = Duration::from_millis(500);
    let store = RedisStore::new(config).unwrap();
    bounded(store.health()).await.unwrap();
    let Claim::Acquired(token) = bounded(store.claim("before", LOCK)).await.unwrap() else {
        panic!()
    };
    bounded(store.complete("before", &token, DONE))
        .await
        .unwrap();

    server.kill();
    // First call finds the open connection dead, the next ones cannot reconnect.
    for _ in 0..3 {
        let err = bounded(store.claim("during", LOCK)).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
    assert!(matches!(
        bounded(store.record_failure("during", "e", DONE)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(bounded(store.health()).await.is_err());

    // Back up (empty: it saves nothing): the store reconnects by itself.
    server.restart().await;
    let mut claim = None;
    for _ in 0..50 {
        match bounded(store.claim("after", LOCK)).await {
            Ok(c) => {
                claim = Some(c);
                break;
            }
            Err(StoreError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(err) => panic!("{err:?}"),
        }
    }
    assert!(matches!(claim, Some(Claim::Acquired(_))), "{claim:?}");
}

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn fail_open_is_an_explicit_opt_in() {
    let mut server = PrivateRedis::start().await;
    let mut config = RedisConfig::from_url(server.url());
    config.failure_policy = FailurePolicy::FailOpen;
    let store = RedisStore::new(config).unwrap();
    // While Redis answers, fail-open changes nothing: duplicates are still caught.
    let Claim::Acquired(token) = bounded(store.claim("k", LOCK)).await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        bounded(store.claim("k", LOCK)).await.unwrap(),
        Claim::InProgress { .. }
    ));
    bounded(store.complete("k", &token, DONE)).await.unwrap();
    assert_eq!(
        bounded(store.claim("k", LOCK)).await.unwrap(),
        Claim::Completed
    );
    let Claim::Acquired(fresh) = bounded(store.claim("k2", LOCK)).await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        bounded(store.release("k2", &token)).await,
        Err(StoreError::Fenced)
    ));

    server.kill();
    // Down: every claim "acquires", even for a key that was completed, and settling is a no-op.
    for _ in 0..2 {
        let Claim::Acquired(open) = bounded(store.claim("k", LOCK)).await.unwrap() else {
            panic!("fail-open claims acquire")
        };
        bounded(store.complete("k", &open, DONE)).await.unwrap();
        bounded(store.release("k", &open)).await.unwrap();
    }
    // A real token whose complete cannot reach Redis is let through too.
    bounded(store.complete("k2", &fresh, DONE)).await.unwrap();
    assert!(bounded(store.health()).await.is_err());
}

/// Counts the claims that failed because the store was unavailable.
struct Counting {
    inner: RedisStore,
    unavailable: Arc<AtomicUsize>,
}

#[async_trait]
impl IdempotencyStore for Counting {
    async fn claim(&self, key: &str, lock_ttl: Duration) -> Result<Claim, StoreError> {
        let result = self.inner.claim(key, lock_ttl).await;
        if matches!(result, Err(StoreError::Unavailable(_))) {
            self.unavailable.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn renew(
        &self,
        key: &str,
        token: &FencingToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.renew(key, token, ttl).await
    }
    async fn complete(
        &self,
        key: &str,
        token: &FencingToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn worker_neither_processes_nor_acks_while_redis_is_down() {
    let mut server = PrivateRedis::start().await;
    server.kill();
    let unavailable = Arc::new(AtomicUsize::new(0));
    let mut redis = RedisConfig::from_url(server.url());
    redis.connect_timeout = Duration::from_millis(500);
    let store = Counting {
        inner: RedisStore::new(redis).unwrap(),
        unavailable: Arc::clone(&unavailable),
    };
    let broker = MemoryBroker::new(16);
    broker
        .publisher()
        .publish("github", WebhookEvent::new("github", r#"{"id":1}"#))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut config = IdempotencyConfig::default();
    config.unavailable_retry = Duration::from_millis(50);
    let worker = {
        let calls = Arc::clone(&calls);
        Worker::builder(broker.subscriber_all())
            .idempotency(IdempotencyLayer::new(store).config(config))
            .build(processor_fn(move |_event, _ctx| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(Outcome::Processed) }
            }))
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    // Several deliveries of the event meet a dead Redis: none reaches the processor.
    for _ in 0..600 {
        if unavailable.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        unavailable.load(Ordering::SeqCst) >= 3,
        "the worker kept trying"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "fail closed: processor not called"
    );

    // Redis is back: the event was not acked away, so it is processed now, once.
    server.restart().await;
    for _ in 0..600 {
        if calls.load(Ordering::SeqCst) > 0 && broker.is_empty() && broker.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(broker.dead_letters("github").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn a_silent_redis_costs_one_connect_attempt_per_connection_not_per_call() {
    // Accepts connections and never answers, like a host that is up but whose Redis hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let silent = {
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        })
    };
    let mut config = RedisConfig::from_url(format!("redis://127.0.0.1:{port}"));
    config.pool_size = 2;
    config.connect_timeout = Duration::from_millis(300);
    config.command_timeout = Duration::from_millis(300);
    let store = RedisStore::new(config).unwrap();

    let calls: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { bounded(store.claim(&format!("k{i}"), LOCK)).await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
    // Callers queued behind a failing connect fail with it instead of each trying again.
    let attempts = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&attempts),
        "{attempts} connection attempts"
    );
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn connect_pings_within_the_connect_timeout() {
    let mut server = PrivateRedis::start().await;
    let store = bounded(RedisStore::connect(RedisConfig::from_url(server.url())))
        .await
        .unwrap();
    bounded(store.ping()).await.unwrap();

    // A Redis that is gone fails `connect` (while `new` still builds a store, lazily).
    server.kill();
    let mut config = RedisConfig::from_url(server.url());
    config.failure_policy = FailurePolicy::FailOpen;
    let err = bounded(RedisStore::connect(config.clone()))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(RedisStore::new(config).is_ok());

    // A host that accepts connections and never answers: `connect` gives up after the
    // connect timeout, not after connect + command timeouts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut config = RedisConfig::from_url(format!("redis://127.0.0.1:{port}"));
    config.connect_timeout = Duration::from_millis(300);
    config.command_timeout = Duration::from_secs(20);
    let started = std::time::Instant::now();
    let err = bounded(RedisStore::connect(config)).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(took < Duration::from_secs(10), "connect took {took:?}");
    silent.abort();
}
