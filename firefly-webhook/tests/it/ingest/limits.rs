//! 413 and bounded memory.

use super::*;

#[tokio::test]
async fn declared_oversize_body_is_413_without_reading_it() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let (body, pulled) = counting_stream(16 * 1024);
    let req = Request::post(url(&unique("big")))
        .header(header::CONTENT_LENGTH, (1024 * MIB).to_string())
        .body(body)
        .unwrap();
    let answer = send(svc, req).await;
    let json = assert_rejected(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        false,
    );
    assert!(json["message"].as_str().unwrap().contains("1048576"));
    assert_eq!(pulled.load(Ordering::SeqCst), 0, "the body is never read");
    assert!(broker.is_empty());
}

#[tokio::test]
async fn streamed_1gib_body_is_cut_off_after_the_limit() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    // 16384 chunks of 64 KiB = 1 GiB, with no Content-Length.
    let (body, pulled) = counting_stream(16 * 1024);
    let req = Request::post(url(&unique("stream"))).body(body).unwrap();
    let answer = send(svc, req).await;
    assert_rejected(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        false,
    );
    // 16 chunks fill the 1 MiB limit exactly; the 17th crosses it and stops the read.
    let pulled = pulled.load(Ordering::SeqCst);
    assert_eq!(pulled, MIB / (64 * 1024) + 1, "pulled {pulled} chunks");
    assert!(broker.is_empty());
}

#[tokio::test]
async fn custom_limit_applies_while_streaming() {
    let broker = MemoryBroker::new(16);
    let provider = unique("limit");
    let svc = IngestService::new(broker.publisher()).max_body_bytes(100 * 1024);
    let (body, pulled) = counting_stream(2);
    let answer = send(
        svc.clone(),
        Request::post(url(&provider)).body(body).unwrap(),
    )
    .await;
    let json = assert_rejected(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        false,
    );
    assert!(json["message"].as_str().unwrap().contains("102400"));
    assert_eq!(pulled.load(Ordering::SeqCst), 2);

    let (body, _) = counting_stream(1);
    let answer = send(svc, Request::post(url(&provider)).body(body).unwrap()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(queued(&broker).body.len(), 64 * 1024);
}
