//! Leases on Redis: `renew` is fenced like `complete`, and a processor that runs longer than
//! the lock TTL keeps its lock, so a redelivery never runs alongside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use firefly_webhook::idempotency::{IdempotencyConfig, IdempotencyLayer};
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Outcome, processor_fn};
use firefly_webhook::worker::Worker;
use firefly_webhook::{Claim, FencingToken, IdempotencyStore, Publisher, StoreError, WebhookEvent};
use firefly_webhook_redis::redis::AsyncCommands;
use tokio::sync::Notify;

use crate::common::{DONE, URL, cleanup, connection, key, prefix, store, wait_gone};

const LOCK_TTL: Duration = Duration::from_millis(300);

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn renew_extends_the_owners_lock_only() {
    let prefix = prefix();
    let store = store(&prefix);
    let processing = key(&prefix, "processing", "k");
    let mut conn = connection(URL).await;
    let Claim::Acquired(token) = store.claim("k", Duration::from_secs(2)).await.unwrap() else {
        panic!("first claim must acquire");
    };
    store
        .renew("k", &token, Duration::from_secs(60))
        .await
        .unwrap();
    let pttl: i64 = conn.pttl(&processing).await.unwrap();
    assert!(pttl > 2_000, "renewed to 60 s, PTTL {pttl} ms");
    // Another token cannot renew, and leaves the lock and its owner alone.
    assert!(matches!(
        store
            .renew("k", &FencingToken::random(), Duration::from_secs(1))
            .await,
        Err(StoreError::Fenced)
    ));
    let owner: String = conn.get(&processing).await.unwrap();
    assert_eq!(owner, token.as_str());
    assert!(conn.pttl::<_, i64>(&processing).await.unwrap() > 2_000);
    // After complete there is no lock to renew.
    store.complete("k", &token, DONE).await.unwrap();
    assert!(matches!(
        store.renew("k", &token, Duration::from_secs(1)).await,
        Err(StoreError::Fenced)
    ));
    assert_eq!(
        store.claim("k", Duration::from_secs(1)).await.unwrap(),
        Claim::Completed
    );

    // An expired lock cannot be brought back, even by its last owner.
    let Claim::Acquired(short) = store.claim("k2", Duration::from_millis(50)).await.unwrap() else {
        panic!("first claim must acquire");
    };
    assert!(wait_gone(URL, &key(&prefix, "processing", "k2")).await);
    assert!(matches!(
        store.renew("k2", &short, Duration::from_secs(60)).await,
        Err(StoreError::Fenced)
    ));
    let exists: bool = conn.exists(key(&prefix, "processing", "k2")).await.unwrap();
    assert!(!exists, "a fenced renew must not recreate the lock");
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn a_processor_running_three_lock_ttls_never_overlaps_a_redelivery() {
    let prefix = prefix();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let broker = MemoryBroker::new(16);
    let publisher = broker.publisher();
    // The same webhook twice, as a provider's redelivery: same body, so same key.
    for _ in 0..2 {
        publisher
            .publish(
                "acme",
                WebhookEvent::new("acme", format!(r#"{{"run":"{run}"}}"#)),
            )
            .await
            .unwrap();
    }
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let tokens_matched = Arc::new(AtomicUsize::new(0));
    let mut config = IdempotencyConfig::default();
    config.lock_ttl = LOCK_TTL;
    config.in_progress_retry = Duration::from_millis(20);
    // Two workers, each with its own store (its own connections), stand for two processes.
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (running, most, calls, matched) = (
                Arc::clone(&running),
                Arc::clone(&most),
                Arc::clone(&calls),
                Arc::clone(&tokens_matched),
            );
            let prefix = prefix.clone();
            let worker = Worker::builder(broker.subscriber_all())
                .concurrency(2)
                .idempotency(IdempotencyLayer::new(store(&prefix)).config(config))
                .build(processor_fn(move |_e, ctx| {
                    let (running, most, calls, matched) = (
                        Arc::clone(&running),
                        Arc::clone(&most),
                        Arc::clone(&calls),
                        Arc::clone(&matched),
                    );
                    let token = ctx
                        .fencing_token
                        .clone()
                        .expect("a claimed event has a token");
                    let lock = key(&prefix, "processing", &ctx.idempotency_key);
                    async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(3 * LOCK_TTL).await;
                        // Past three TTLs, the lock in Redis is still this attempt's.
                        let mut conn = connection(URL).await;
                        let owner: Option<String> = conn.get(&lock).await.unwrap();
                        if owner.as_deref() == Some(token.as_str()) {
                            matched.fetch_add(1, Ordering::SeqCst);
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(Outcome::Processed)
                    }
                }));
            let stop = Arc::new(Notify::new());
            let s = Arc::clone(&stop);
            let handle = tokio::spawn(worker.run_until(async move { s.notified().await }));
            (stop, handle)
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !(calls.load(Ordering::SeqCst) >= 1
            && running.load(Ordering::SeqCst) == 0
            && broker.is_empty()
            && broker.in_flight() == 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both deliveries settle");
    for (stop, handle) in workers {
        stop.notify_one();
        handle.await.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "ran concurrently");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "ran twice");
    assert_eq!(
        tokens_matched.load(Ordering::SeqCst),
        1,
        "the lock was not renewed"
    );
    assert!(broker.dead_letters("acme").is_empty());
    cleanup(&prefix).await;
}
