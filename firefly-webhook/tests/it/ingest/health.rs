//! Health.

use super::*;

#[tokio::test]
async fn liveness_is_always_up() {
    let answer = send(
        Liveness,
        Request::get("/health/live")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"status": "up"}));
}

#[tokio::test]
async fn readiness_follows_the_publisher() {
    let broker = MemoryBroker::new(16);
    // Cached results would hide the change of state below.
    let ready = Readiness::new()
        .cache_for(Duration::ZERO)
        .publisher("memory", broker.publisher());
    let get = || {
        Request::get("/health/ready")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let answer = send(ready.clone(), get()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        serde_json::json!({"status": "up", "checks": [{"name": "memory", "status": "up"}]})
    );
    assert!(ready.run().await.is_ok());

    broker.close();
    let answer = send(ready.clone(), get()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["status"], "down");
    assert_eq!(answer.json()["checks"][0]["status"], "down");

    let failing = Readiness::new()
        .publisher("ok", MemoryBroker::new(1).publisher())
        .publisher("kafka", Failing::new(Failure::Unavailable));
    let answer = send(failing.clone(), get()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let json = answer.json();
    assert_eq!(
        json["checks"][0],
        serde_json::json!({"name": "ok", "status": "up"})
    );
    assert_eq!(json["checks"][1]["name"], "kafka");
    assert_eq!(json["checks"][1]["status"], "down");
    let failed = failing.run().await.unwrap_err();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "kafka");
}

#[tokio::test(start_paused = true)]
async fn readiness_check_that_hangs_counts_as_down() {
    let ready = Readiness::new()
        .timeout(Duration::from_secs(1))
        .check("hangs", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
    let answer = send(
        ready,
        Request::get("/").body(Full::new(Bytes::new())).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["checks"][0]["status"], "down");
}
