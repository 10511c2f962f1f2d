//! Readiness: cached, single-flight, and no error text in the response.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use firefly_webhook::BoxError;
use firefly_webhook::health::Readiness;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A check that counts its runs, takes 100 ms, and fails with a revealing message while
/// `failing` is set.
#[derive(Clone, Default)]
struct Probe {
    runs: Arc<AtomicUsize>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Probe {
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    fn readiness(&self) -> Readiness {
        let probe = self.clone();
        Readiness::new().check("broker", move || {
            let probe = probe.clone();
            async move {
                probe.runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                if probe.failing.load(Ordering::SeqCst) {
                    Err::<(), BoxError>(
                        "connect to amqp://admin:hunter2@10.1.2.3:5672 refused".into(),
                    )
                } else {
                    Ok(())
                }
            }
        })
    }
}

async fn probe(ready: &Readiness) -> (StatusCode, Bytes) {
    let req = Request::get("/health/ready")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = ready.clone().oneshot(req).await.unwrap();
    let status = res.status();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(start_paused = true)]
async fn concurrent_probes_share_one_run_and_the_result_is_cached() {
    let check = Probe::default();
    let ready = check.readiness();

    let answers = futures_util::future::join_all((0..50).map(|_| probe(&ready))).await;
    assert!(answers.iter().all(|(s, _)| *s == StatusCode::OK));
    assert_eq!(check.runs(), 1, "probes during a run share it");

    // Within the window (default 1 s): the cached result.
    tokio::time::advance(Duration::from_millis(900)).await;
    assert_eq!(probe(&ready).await.0, StatusCode::OK);
    assert!(ready.run().await.is_ok());
    assert_eq!(check.runs(), 1);

    // After it: the checks run again, once.
    tokio::time::advance(Duration::from_millis(200)).await;
    check.failing.store(true, Ordering::SeqCst);
    let answers = futures_util::future::join_all((0..50).map(|_| probe(&ready))).await;
    assert!(
        answers
            .iter()
            .all(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(check.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_window_is_configurable() {
    let check = Probe::default();
    let ready = check.readiness().cache_for(Duration::from_secs(10));
    probe(&ready).await;
    tokio::time::advance(Duration::from_secs(9)).await;
    probe(&ready).await;
    assert_eq!(check.runs(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    probe(&ready).await;
    assert_eq!(check.runs(), 2);

    // Zero: every probe runs the checks, except those that arrive during a run.
    let check = Probe::default();
    let ready = check.readiness().cache_for(Duration::ZERO);
    probe(&ready).await;
    probe(&ready).await;
    assert_eq!(check.runs(), 2);
    futures_util::future::join_all((0..10).map(|_| probe(&ready))).await;
    assert_eq!(check.runs(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_body_has_names_and_status_but_no_error_text() {
    let check = Probe::default();
    check.failing.store(true, Ordering::SeqCst);
    let ready = check
        .readiness()
        .check("hangs", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .check("panics", || async { panic!("secret state") })
        .check("store", || async { Ok(()) });

    let (status, body) = probe(&ready).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json,
        json!({"status": "down", "checks": [
            {"name": "broker", "status": "down"},
            {"name": "hangs", "status": "down"},
            {"name": "panics", "status": "down"},
            {"name": "store", "status": "up"},
        ]})
    );
    let text = String::from_utf8_lossy(&body);
    for secret in [
        "hunter2",
        "10.1.2.3",
        "refused",
        "timed out",
        "secret state",
    ] {
        assert!(!text.contains(secret), "{text}");
    }

    // The programmatic result keeps the reasons, from the same cached run.
    let failed = ready.run().await.unwrap_err();
    assert_eq!(check.runs(), 1);
    let reasons: Vec<_> = failed
        .iter()
        .map(|(n, e)| (n.as_str(), e.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "broker",
                "connect to amqp://admin:hunter2@10.1.2.3:5672 refused"
            ),
            ("hangs", "check timed out"),
            ("panics", "check panicked"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_cache_and_a_probe_given_up_on_does_not_restart_the_run() {
    let check = Probe::default();
    let ready = check.readiness();

    // A caller that gives up mid-run leaves the run for the next one to finish.
    let gave_up = tokio::time::timeout(Duration::from_millis(50), probe(&ready)).await;
    assert!(gave_up.is_err());
    let copy = ready.clone();
    assert_eq!(probe(&copy).await.0, StatusCode::OK);
    assert_eq!(probe(&ready).await.0, StatusCode::OK);
    assert_eq!(check.runs(), 1);
}
