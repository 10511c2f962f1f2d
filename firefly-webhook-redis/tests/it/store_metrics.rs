//! Every store operation is timed, and a failed one is counted.

use std::time::Duration;

use firefly_webhook::{Claim, IdempotencyStore, StoreError, metric};
use firefly_webhook_redis::{FailurePolicy, RedisConfig, RedisStore};

use crate::common::{DONE, LOCK, cleanup, prefix, store};
use crate::recorded::Recorded;

fn seconds(metrics: &Recorded, op: &str, outcome: &str) -> Vec<f64> {
    metrics.histogram(
        metric::STORE_SECONDS,
        &[(metric::OP, op), (metric::OUTCOME, outcome)],
    )
}

fn errors(metrics: &Recorded, op: &str, outcome: &str) -> u64 {
    metrics.counter(
        metric::STORE_ERRORS_TOTAL,
        &[(metric::OP, op), (metric::OUTCOME, outcome)],
    )
}

/// A store on a loopback port nothing listens on.
fn unreachable(policy: FailurePolicy) -> RedisStore {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = RedisConfig::from_url(format!("redis://127.0.0.1:{port}"));
    config.connect_timeout = Duration::from_secs(2);
    config.failure_policy = policy;
    RedisStore::new(config).unwrap()
}

#[test]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
fn every_operation_is_timed_and_an_unreachable_store_is_counted() {
    let metrics = Recorded::new();
    metrics.run(async {
        let prefix = prefix();
        let store = store(&prefix);
        let Claim::Acquired(token) = store.claim("m", LOCK).await.unwrap() else {
            panic!("a fresh key is acquired")
        };
        store.complete("m", &token, DONE).await.unwrap();
        assert_eq!(store.claim("m", LOCK).await.unwrap(), Claim::Completed);
        store.health().await.unwrap();

        let claims = seconds(&metrics, "claim", "ok");
        assert_eq!(claims.len(), 2, "{claims:?}");
        assert!(
            claims.iter().all(|s| s.is_finite() && *s >= 0.0),
            "{claims:?}"
        );
        assert_eq!(seconds(&metrics, "complete", "ok").len(), 1);
        assert_eq!(seconds(&metrics, "ping", "ok").len(), 1);
        assert_eq!(metrics.counter(metric::STORE_ERRORS_TOTAL, &[]), 0);

        // Nothing listens: each operation fails as unavailable, timed and counted.
        let down = unreachable(FailurePolicy::FailClosed);
        let err = down.claim("m", LOCK).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(down.record_failure("m", "boom", DONE).await.is_err());
        assert_eq!(errors(&metrics, "claim", "unavailable"), 1);
        assert_eq!(errors(&metrics, "record_failure", "unavailable"), 1);
        assert_eq!(seconds(&metrics, "claim", "unavailable").len(), 1);
        assert_eq!(seconds(&metrics, "claim", "ok").len(), 2);

        // Failing open hides the failure from the worker, not from the metrics.
        let open = unreachable(FailurePolicy::FailOpen);
        assert!(matches!(
            open.claim("m", LOCK).await.unwrap(),
            Claim::Acquired(_)
        ));
        assert_eq!(errors(&metrics, "claim", "unavailable"), 2);
        assert_eq!(metrics.counter(metric::STORE_ERRORS_TOTAL, &[]), 3);

        cleanup(&prefix).await;
    });
}
