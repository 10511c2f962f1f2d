//! The ingest service in front of Kafka: what a provider's POST turns into on the topic.

use std::time::Duration;

use firefly_webhook::http::{Request, StatusCode};
use firefly_webhook::{Bytes, IngestService, Routing};
use firefly_webhook_kafka::KafkaBroker;
use firefly_webhook_kafka::rdkafka::message::Message;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

use crate::common::{header_list, kafka, publisher, raw_consumer, raw_next, unique};

pub(crate) fn post(body: Bytes) -> Request<Full<Bytes>> {
    Request::post("/api/v1/webhook/github")
        .header("content-type", "application/octet-stream")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("x-github-delivery", "ingest-1")
        .body(Full::new(body))
        .unwrap()
}

pub(crate) async fn call(
    ingest: &IngestService,
    req: Request<Full<Bytes>>,
) -> (
    StatusCode,
    firefly_webhook::http::HeaderMap,
    serde_json::Value,
) {
    let res = ingest.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn a_webhook_reaches_the_topic_byte_for_byte_with_its_event_id() {
    let topic = unique("ingest");
    let t = topic.clone();
    let ingest = IngestService::new(publisher(1)).routing(Routing::custom(move |_| t.clone()));
    let body: Vec<u8> = (0..=255u8).rev().chain([0, 0, 0xc3]).collect();

    let (status, _, receipt) = call(&ingest, post(Bytes::from(body.clone()))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
    assert_eq!(receipt["destination"], topic.as_str());

    let message = raw_next(&raw_consumer(&topic)).await;
    assert_eq!(message.payload().unwrap(), &body[..]);
    let headers = header_list(&message);
    let get = |name: &str| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    };
    let event_id = receipt["eventId"].as_str().unwrap();
    assert_eq!(get("ce_id"), [event_id.as_bytes()]);
    assert_eq!(get("ce_provider"), [b"github".as_slice()]);
    assert_eq!(get("http_x-multi"), [b"one".as_slice(), b"two"]);
    assert_eq!(get("http_x-github-delivery"), [b"ingest-1".as_slice()]);
    assert_eq!(
        get("content-type"),
        [b"application/octet-stream".as_slice()]
    );
    // The message key is the provider-aware idempotency key, so redeliveries share a partition.
    let published =
        firefly_webhook::WebhookEvent::new("github", message.payload().unwrap().to_vec());
    assert_eq!(
        message.key().unwrap(),
        firefly_webhook::idempotency::idempotency_key(&published).as_bytes()
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_a_quick_503_with_retry_after() {
    // Nothing listens on this port: the broker is "down" from the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = kafka(1);
    config.brokers = format!("127.0.0.1:{port}");
    config.delivery_timeout = Duration::from_secs(2);
    let ingest = IngestService::new(KafkaBroker::new(config).unwrap().publisher())
        .publish_timeout(Duration::from_secs(3));
    let (status, headers, body) = tokio::time::timeout(
        Duration::from_secs(30),
        call(&ingest, post(Bytes::from_static(b"{}"))),
    )
    .await
    .expect("answered within the publish timeout");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(body["code"], "broker_unavailable");
    assert!(body["eventId"].is_string());
}
