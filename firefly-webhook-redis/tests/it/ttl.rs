//! The TTLs passed per call end up on the keys; the failure counter counts and expires.

use std::time::Duration;

use firefly_webhook::{Claim, IdempotencyStore};
use firefly_webhook_redis::redis::AsyncCommands;

use crate::common::{URL, cleanup, connection, key, prefix, store, wait_gone};

const MARGIN: i64 = 60_000; // generous: PTTL only shrinks, and the machine is shared

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn lock_and_processed_ttls_are_set() {
    let prefix = prefix();
    let store = store(&prefix);
    let mut conn = connection(URL).await;
    let lock = Duration::from_secs(300);
    let done = Duration::from_secs(86_400);

    let Claim::Acquired(token) = store.claim("k", lock).await.unwrap() else {
        panic!()
    };
    let pttl: i64 = conn.pttl(key(&prefix, "processing", "k")).await.unwrap();
    assert!(
        (300_000 - MARGIN..=300_000).contains(&pttl),
        "lock pttl {pttl}"
    );
    let Claim::InProgress {
        retry_after: Some(left),
    } = store.claim("k", lock).await.unwrap()
    else {
        panic!("second claim must be in progress")
    };
    assert!(left <= lock && left > lock / 2, "{left:?}");

    store.complete("k", &token, done).await.unwrap();
    let pttl: i64 = conn.pttl(key(&prefix, "processed", "k")).await.unwrap();
    assert!(
        (86_400_000 - MARGIN..=86_400_000).contains(&pttl),
        "processed pttl {pttl}"
    );
    let lock_left: bool = conn.exists(key(&prefix, "processing", "k")).await.unwrap();
    assert!(!lock_left, "complete drops the lock");
    cleanup(&prefix).await;
}

#[tokio::test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn failure_counter_counts_and_expires() {
    let prefix = prefix();
    let store = store(&prefix);
    let mut conn = connection(URL).await;
    let long = Duration::from_secs(600);
    assert_eq!(store.record_failure("k", "a", long).await.unwrap(), 1);
    assert_eq!(store.record_failure("k", "b", long).await.unwrap(), 2);
    assert_eq!(store.failures("k").await.unwrap(), Some((2, "b".into())));
    let failures = key(&prefix, "failures", "k");
    let pttl: i64 = conn.pttl(&failures).await.unwrap();
    assert!(
        (600_000 - MARGIN..=600_000).contains(&pttl),
        "failures pttl {pttl}"
    );

    // Each failure pushes the expiry out; a short TTL lets the counter lapse.
    assert_eq!(
        store
            .record_failure("k", "c", Duration::from_millis(100))
            .await
            .unwrap(),
        3
    );
    assert!(wait_gone(URL, &failures).await);
    assert_eq!(store.failures("k").await.unwrap(), None);
    assert_eq!(store.record_failure("k", "d", long).await.unwrap(), 1);
    assert_eq!(store.failures("k").await.unwrap(), Some((1, "d".into())));
    cleanup(&prefix).await;
}
