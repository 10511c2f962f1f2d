//! The publish circuit breaker in front of the ingest service: a hung broker costs the first
//! few requests their publish timeout, then requests fail fast until a probe succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use firefly_webhook::health::Readiness;
use firefly_webhook::metric;
use firefly_webhook::publish::{BreakerOpen, BreakerState, CircuitBreaker};
use firefly_webhook::{IngestService, PublishError, Publisher, WebhookEvent, async_trait};
use http::{Request, StatusCode, header};
use http_body_util::Full;
use tower::ServiceExt;

/// Hangs while `down`, succeeds otherwise; counts publishes and health checks.
#[derive(Default)]
struct Broker {
    down: AtomicBool,
    publishes: AtomicUsize,
    health_checks: AtomicUsize,
}

impl Broker {
    fn down() -> Arc<Self> {
        let broker = Self::default();
        broker.down.store(true, Ordering::SeqCst);
        Arc::new(broker)
    }

    fn publishes(&self) -> usize {
        self.publishes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Publisher for Broker {
    async fn publish(&self, _destination: &str, _event: WebhookEvent) -> Result<(), PublishError> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), PublishError> {
        self.health_checks.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(PublishError::unavailable("connection refused"))
        } else {
            Ok(())
        }
    }
}

async fn post(svc: &IngestService) -> StatusCode {
    let req = Request::post("/api/v1/webhook/acme")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    svc.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test(start_paused = true)]
async fn a_hung_broker_trips_the_breaker_behind_the_ingest_timeout() {
    let broker = Broker::down();
    let breaker = Arc::new(
        CircuitBreaker::new(Arc::clone(&broker))
            .failure_threshold(3)
            .cool_down(Duration::from_secs(10)),
    );
    // No breaker timeout: the ingest service's own timeout abandons each publish.
    let svc = IngestService::new(Arc::clone(&breaker)).publish_timeout(Duration::from_secs(5));

    for _ in 0..3 {
        assert_eq!(post(&svc).await, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(broker.publishes(), 3);

    // Open: answered 503 without reaching the broker.
    for _ in 0..20 {
        assert_eq!(post(&svc).await, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(broker.publishes(), 3);

    // The broker comes back; after the cool-down one probe closes the breaker.
    broker.down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(post(&svc).await, StatusCode::ACCEPTED);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(post(&svc).await, StatusCode::ACCEPTED);
    assert_eq!(broker.publishes(), 5);
}

#[tokio::test(start_paused = true)]
async fn readiness_is_down_while_open_without_asking_the_broker() {
    let broker = Broker::down();
    let breaker = Arc::new(
        CircuitBreaker::new(Arc::clone(&broker))
            .failure_threshold(1)
            .publish_timeout(Duration::from_secs(1)),
    );
    let ready = Readiness::new()
        .cache_for(Duration::ZERO)
        .publisher("broker", Arc::clone(&breaker));

    let err = breaker
        .publish("t", WebhookEvent::new("acme", "{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::TimedOut(_)));
    assert_eq!(breaker.state(), BreakerState::Open);

    let err = breaker
        .publish("t", WebhookEvent::new("acme", "{}"))
        .await
        .unwrap_err();
    let PublishError::Unavailable(source) = err else {
        panic!("expected a fast failure, got {err:?}");
    };
    let open = source.downcast_ref::<BreakerOpen>().unwrap();
    assert_eq!(open.retry_in(), Duration::from_secs(5));
    assert_eq!(
        open.to_string(),
        "circuit breaker is open; retry in 5s",
        "lowercase, no type names"
    );

    assert!(ready.run().await.is_err());
    assert_eq!(broker.health_checks.load(Ordering::SeqCst), 0);
}

#[test]
#[allow(clippy::float_cmp)] // the gauge holds small integers, exactly
fn transitions_set_the_state_gauge() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    fn gauge(snapshotter: &Snapshotter) -> f64 {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find_map(|(key, _, _, value)| match value {
                DebugValue::Gauge(v) if key.key().name() == metric::PUBLISH_BREAKER_STATE => {
                    Some(v.into_inner())
                }
                _ => None,
            })
            .expect("the gauge is set")
    }

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let broker = Broker::down();
            let breaker = Arc::new(
                CircuitBreaker::new(Arc::clone(&broker))
                    .failure_threshold(1)
                    .publish_timeout(Duration::from_secs(1)),
            );
            let publish = || {
                let breaker = Arc::clone(&breaker);
                async move { breaker.publish("t", WebhookEvent::new("acme", "{}")).await }
            };
            assert_eq!(gauge(&snapshotter), 0.0);
            assert!(publish().await.is_err());
            assert_eq!(gauge(&snapshotter), 1.0);

            broker.down.store(false, Ordering::SeqCst);
            tokio::time::advance(Duration::from_secs(5)).await;
            broker.down.store(true, Ordering::SeqCst);
            let probe = tokio::spawn(publish());
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(breaker.state(), BreakerState::HalfOpen);
            assert_eq!(gauge(&snapshotter), 2.0);
            assert!(probe.await.unwrap().is_err());
            assert_eq!(gauge(&snapshotter), 1.0);

            broker.down.store(false, Ordering::SeqCst);
            tokio::time::advance(Duration::from_secs(5)).await;
            assert!(publish().await.is_ok());
            assert_eq!(gauge(&snapshotter), 0.0);
        });
    });
}
