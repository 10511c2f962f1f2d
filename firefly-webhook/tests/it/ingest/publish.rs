//! Publish failures: 503 / 500, never 202.

use super::*;

#[tokio::test]
async fn full_memory_queue_is_503_with_retry_after() {
    let broker = MemoryBroker::new(1);
    let provider = unique("full");
    let svc = IngestService::new(broker.publisher()).retry_after(Duration::from_secs(7));

    let first = send(svc.clone(), post_req(&url(&provider), "first")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = send(svc.clone(), post_req(&url(&provider), "second")).await;
    let json = assert_rejected(
        &second,
        StatusCode::SERVICE_UNAVAILABLE,
        "broker_unavailable",
        true,
    );
    assert_eq!(second.headers[header::RETRY_AFTER], "7");
    assert_ne!(json["eventId"], first.json()["eventId"]);

    // Only the confirmed event is in the broker.
    assert_eq!(broker.len(&provider), 1);
    let event = queued(&broker);
    assert_eq!(event.body, "first");
    assert_eq!(
        event.id.to_string(),
        first.json()["eventId"].as_str().unwrap()
    );

    // Another destination has its own queue; and once drained, the first accepts again.
    let other = unique("other");
    assert_eq!(
        send(svc.clone(), post_req(&url(&other), "x")).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send(svc, post_req(&url(&provider), "third")).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test(start_paused = true)]
async fn publish_timeout_is_503() {
    let publisher = Failing::new(Failure::Hang);
    let svc = IngestService::new(Arc::clone(&publisher))
        .publish_timeout(Duration::from_millis(250))
        .retry_after(Duration::from_millis(1));
    let answer = send(svc, post_req(&url(&unique("slow")), "{}")).await;
    assert_rejected(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "broker_unavailable",
        true,
    );
    // Sub-second waits are rounded up: Retry-After is whole seconds and never 0.
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");
    assert_eq!(publisher.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unavailable_and_overloaded_publishers_are_503() {
    for how in [Failure::Unavailable, Failure::Overloaded] {
        let publisher = Failing::new(how);
        let svc = IngestService::new(Arc::clone(&publisher));
        let answer = send(svc, post_req(&url(&unique("down")), "{}")).await;
        let json = assert_rejected(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            true,
        );
        assert_eq!(answer.headers[header::RETRY_AFTER], "5");
        // Internal error details stay in the logs.
        assert!(!json["message"].as_str().unwrap().contains("refused"));
        assert_eq!(publisher.calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn rejected_publish_is_500() {
    let publisher = Failing::new(Failure::Rejected);
    let svc = IngestService::new(Arc::clone(&publisher));
    let answer = send(svc, post_req(&url(&unique("rejected")), "{}")).await;
    let json = assert_rejected(
        &answer,
        StatusCode::INTERNAL_SERVER_ERROR,
        "publish_rejected",
        true,
    );
    assert!(answer.headers.get(header::RETRY_AFTER).is_none());
    assert!(!json["message"].as_str().unwrap().contains("too large"));
}

#[tokio::test]
async fn a_failed_publish_never_yields_202() {
    let broker = MemoryBroker::new(64);
    let provider = unique("flaky");
    let svc = IngestService::new(Flaky {
        inner: broker.publisher(),
        calls: AtomicUsize::new(0),
    });
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..20 {
        let answer = send(svc.clone(), post_req(&url(&provider), format!("event {i}"))).await;
        let id = answer.json()["eventId"].as_str().unwrap().to_owned();
        match answer.status {
            StatusCode::ACCEPTED => accepted.push(id),
            StatusCode::SERVICE_UNAVAILABLE => refused.push(id),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((accepted.len(), refused.len()), (10, 10));
    assert_eq!(broker.len(&provider), 10);
    let mut sub = broker.subscriber_all();
    let mut in_broker = Vec::new();
    while let Some(Some(Ok(d))) = sub.next().now_or_never() {
        in_broker.push(d.event.id.to_string());
    }
    assert_eq!(in_broker, accepted, "exactly the accepted events, in order");
    assert!(refused.iter().all(|id| !in_broker.contains(id)));
}

#[tokio::test]
async fn closed_broker_is_503() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    broker.close();
    let answer = send(svc, post_req(&url(&unique("closed")), "{}")).await;
    assert_rejected(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "broker_unavailable",
        true,
    );
    assert!(broker.is_empty());
}
