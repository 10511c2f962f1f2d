//! ingest integration tests: `IngestService`, `IngestLayer` and the health services, driven
//! with `tower::ServiceExt::oneshot` and through a real axum server on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use firefly_webhook::health::{Liveness, Readiness};
use firefly_webhook::ingest::PeerAddr;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::{
    IngestLayer, IngestService, PublishError, Publisher, Routing, Subscriber, WebhookEvent,
    async_trait,
};
use futures_util::FutureExt;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, Service, ServiceExt};

const MIB: usize = 1024 * 1024;
const PREFIX: &str = "/api/v1/webhook";

// ---------------------------------------------------------------------------------------------
// helpers

/// A provider name unique to one test (tests share nothing, but names make failures readable).
fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

fn url(provider: &str) -> String {
    format!("{PREFIX}/{provider}")
}

fn post_req(uri: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(uri).body(Full::new(body.into())).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

async fn into_answer<B>(res: Response<B>) -> Answer
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = res.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn send<S, B>(svc: S, req: Request<B>) -> Answer
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible>,
{
    into_answer(svc.oneshot(req).await.unwrap()).await
}

/// The next delivery, which must already be queued: ingest answers 202 only after the
/// publisher confirmed, so no waiting is involved.
fn queued(broker: &MemoryBroker) -> WebhookEvent {
    let mut sub = broker.subscriber();
    let delivery = sub
        .next()
        .now_or_never()
        .expect("a confirmed event is queued without waiting")
        .unwrap()
        .unwrap();
    delivery.event
}

/// Asserts the shared error shape and returns the body.
fn assert_rejected(answer: &Answer, status: StatusCode, code: &str, has_event_id: bool) -> Value {
    assert_eq!(
        answer.status,
        status,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let json = answer.json();
    let obj = json.as_object().unwrap();
    assert_eq!(obj["status"], "rejected");
    assert_eq!(obj["code"], code);
    assert!(obj["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(obj.contains_key("eventId"), has_event_id, "{json}");
    let expected_keys = if has_event_id { 4 } else { 3 };
    assert_eq!(obj.len(), expected_keys, "unexpected keys in {json}");
    if has_event_id {
        let id: uuid::Uuid = obj["eventId"].as_str().unwrap().parse().unwrap();
        assert_eq!(id.get_version_num(), 7);
    }
    json
}

/// A body of `chunks` 64 KiB chunks that counts how many were pulled.
fn counting_stream(
    chunks: usize,
) -> (
    StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static>,
    Arc<AtomicUsize>,
) {
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::iter((0..chunks).map(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(Frame::data(chunk.clone()))
    }));
    (StreamBody::new(stream), pulled)
}

#[derive(Clone, Copy)]
enum Failure {
    Unavailable,
    Overloaded,
    Rejected,
    Hang,
}

/// A publisher that always fails in one way, counting its calls.
struct Failing {
    how: Failure,
    calls: AtomicUsize,
}

impl Failing {
    fn new(how: Failure) -> Arc<Self> {
        Arc::new(Self {
            how,
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Publisher for Failing {
    async fn publish(&self, _destination: &str, _event: WebhookEvent) -> Result<(), PublishError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.how {
            Failure::Unavailable => Err(PublishError::unavailable("connection refused")),
            Failure::Overloaded => Err(PublishError::Overloaded),
            Failure::Rejected => Err(PublishError::rejected("message too large for topic")),
            Failure::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }
    }

    async fn health(&self) -> Result<(), PublishError> {
        Err(PublishError::unavailable("connection refused"))
    }
}

/// Delegates to a memory publisher but fails every other publish, before touching the broker.
struct Flaky {
    inner: firefly_webhook::memory::MemoryPublisher,
    calls: AtomicUsize,
}

#[async_trait]
impl Publisher for Flaky {
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            return Err(PublishError::unavailable("flaky"));
        }
        self.inner.publish(destination, event).await
    }
}

// ---------------------------------------------------------------------------------------------
// 202 and the receipt

#[tokio::test]
async fn accepted_receipt_has_every_field() {
    let broker = MemoryBroker::new(16);
    let provider = unique("receipt");
    let svc = IngestService::new(broker.publisher());
    let mut req = Request::post(format!("{}?delivery=1", url(&provider)))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .body(Full::new(Bytes::from_static(br#"{"hello":"world"}"#)))
        .unwrap();
    req.extensions_mut()
        .insert(PeerAddr("198.51.100.20:4711".parse().unwrap()));
    let answer = send(svc, req).await;

    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let json = answer.json();
    let r = json.as_object().unwrap();
    assert_eq!(r["status"], "accepted");
    assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(r["provider"], provider.as_str());
    assert_eq!(r["destination"], provider.as_str());
    assert_eq!(r["sourceIp"], "198.51.100.20");
    assert_eq!(r["payloadSize"], 17);
    assert_eq!(r["headerCount"], 2);
    assert!(r["responseTimeMs"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert!(!r.contains_key("receivedPayload"), "echo is off by default");
    let received = time::OffsetDateTime::parse(
        r["receivedAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let processed = time::OffsetDateTime::parse(
        r["processedAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(processed >= received);
    assert_eq!(r.len(), 11, "exactly the documented fields: {json}");

    let event = queued(&broker);
    assert_eq!(event.id.to_string(), r["eventId"].as_str().unwrap());
    assert_eq!(event.id.as_uuid().get_version_num(), 7);
    assert_eq!(event.provider, provider);
    assert_eq!(event.method, Method::POST);
    assert_eq!(event.path, url(&provider));
    assert_eq!(event.query.as_deref(), Some("delivery=1"));
    assert_eq!(event.content_type.as_deref(), Some("application/json"));
    assert_eq!(event.header("x-github-event"), Some("push"));
    assert_eq!(event.source_ip, Some("198.51.100.20".parse().unwrap()));
    assert_eq!(event.received_at, received);
    assert_eq!(event.correlation_id, event.id.to_string());
    assert!(broker.is_empty());
}

#[tokio::test]
async fn echo_payload_is_opt_in_and_keeps_json() {
    let broker = MemoryBroker::new(16);
    let provider = unique("echo");
    let svc = IngestService::new(broker.publisher()).echo_payload(true);

    let json_body = br#"{"a": [1, 2, {"b": null}]}"#;
    let r = send(svc.clone(), post_req(&url(&provider), &json_body[..]))
        .await
        .json();
    assert_eq!(
        r["receivedPayload"],
        serde_json::json!({"a": [1, 2, {"b": null}]})
    );

    let r = send(svc.clone(), post_req(&url(&provider), "a=1&b=two+words"))
        .await
        .json();
    assert_eq!(r["receivedPayload"], "a=1&b=two+words");

    let r = send(
        svc.clone(),
        post_req(&url(&provider), vec![0xff, 0xfe, 0x00]),
    )
    .await
    .json();
    assert!(
        r.get("receivedPayload").is_none(),
        "binary bodies are not echoed"
    );

    let r = send(svc, post_req(&url(&provider), "")).await.json();
    assert_eq!(r["receivedPayload"], "");
    assert_eq!(broker.len(&provider), 4);
}

#[tokio::test]
async fn routing_and_custom_prefix_apply() {
    let broker = MemoryBroker::new(16);
    let provider = unique("routed");
    let svc = IngestService::new(broker.publisher())
        .prefix("/hooks/")
        .routing(Routing::provider().prefix("webhooks."));
    let answer = send(svc.clone(), post_req(&format!("/hooks/{provider}"), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let destination = format!("webhooks.{provider}");
    assert_eq!(answer.json()["destination"], destination.as_str());
    assert_eq!(broker.len(&destination), 1);

    // The default prefix no longer applies.
    let answer = send(svc, post_req(&url(&provider), "{}")).await;
    assert_rejected(&answer, StatusCode::NOT_FOUND, "not_found", false);
}

#[tokio::test]
async fn prefix_is_normalised() {
    let broker = MemoryBroker::new(16);
    let provider = unique("prefix");
    // No leading slash, extra trailing ones: still `/hooks/{provider}`.
    let svc = IngestService::new(broker.publisher()).prefix("hooks//");
    assert!(svc.matches(&format!("/hooks/{provider}")));
    assert!(!svc.matches("/hooks"));
    assert!(!svc.matches("/hooksx/a"));
    let answer = send(svc, post_req(&format!("/hooks/{provider}"), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);

    // "/" mounts providers at the root.
    let root = IngestService::new(broker.publisher()).prefix("/");
    let answer = send(root.clone(), post_req(&format!("/{provider}"), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let answer = send(root, post_req("/a/b", "{}")).await;
    assert_rejected(&answer, StatusCode::BAD_REQUEST, "invalid_provider", false);
    assert_eq!(broker.len(&provider), 2);
}

// ---------------------------------------------------------------------------------------------
// 400 / 404 / 405

#[tokio::test]
async fn invalid_provider_names_get_400() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let too_long = "a".repeat(65);
    for provider in [
        "..",
        ".",
        "%2E%2E",
        "a%2Fb",
        "%2F",
        "..%2Fadmin",
        "sp%20ace",
        too_long.as_str(),
        "",
        "a/b",
        "../admin",
        "caf%C3%A9",
        "a:b",
        "a+b",
        "github//",
    ] {
        let answer = send(svc.clone(), post_req(&url(provider), "{}")).await;
        let json = assert_rejected(&answer, StatusCode::BAD_REQUEST, "invalid_provider", false);
        assert!(
            json["message"].as_str().unwrap().contains("1-64"),
            "{provider:?}"
        );
    }
    let longest = "a".repeat(64);
    let answer = send(svc.clone(), post_req(&url(&longest), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    // One trailing slash is tolerated.
    let answer = send(svc, post_req(&format!("{}/", url("trailing")), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.json()["provider"], "trailing");
    assert_eq!(broker.len(&longest), 1);
    assert_eq!(broker.len("trailing"), 1);
    assert_eq!(broker.len(".."), 0);
}

#[tokio::test]
async fn uppercase_provider_is_normalised() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher()).providers(["GitHub"]);
    let answer = send(svc, post_req(&url("GitHub"), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let json = answer.json();
    assert_eq!(json["provider"], "github");
    assert_eq!(json["destination"], "github");
    let event = queued(&broker);
    assert_eq!(event.provider, "github");
    assert_eq!(event.path, url("GitHub"), "the path is kept as received");
}

#[tokio::test]
async fn outside_the_prefix_is_404() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    for path in [
        "/",
        "/api/v1/webhooks/github",
        "/api/v1/webhookgithub",
        "/api/v1/webhook",
        "/API/v1/webhook/github",
        "/other/api/v1/webhook/github",
    ] {
        let answer = send(svc.clone(), post_req(path, "{}")).await;
        assert_rejected(&answer, StatusCode::NOT_FOUND, "not_found", false);
    }
    assert!(broker.is_empty());
}

#[tokio::test]
async fn unknown_provider_with_allowlist_is_404() {
    let broker = MemoryBroker::new(16);
    let allowed = unique("allowed");
    let other = unique("other");
    let svc = IngestService::new(broker.publisher()).providers([allowed.as_str()]);
    let answer = send(svc.clone(), post_req(&url(&other), "{}")).await;
    let json = assert_rejected(&answer, StatusCode::NOT_FOUND, "unknown_provider", false);
    assert!(json["message"].as_str().unwrap().contains(&other));
    let answer = send(svc, post_req(&url(&allowed), "{}")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&other), 0);
    assert_eq!(broker.len(&allowed), 1);
}

#[tokio::test]
async fn non_post_is_405_with_allow() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    for method in [
        Method::GET,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(url("github"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = send(svc.clone(), req).await;
        assert_rejected(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            false,
        );
        assert_eq!(answer.headers[header::ALLOW], "POST", "{method}");
    }
    assert!(broker.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 413 and bounded memory

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

// ---------------------------------------------------------------------------------------------
// byte-exact bodies and headers

#[tokio::test]
async fn bodies_are_published_byte_for_byte() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let every_byte: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let not_utf8 = vec![
        0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x28, 0x8c, 0xbc,
    ];
    let form = b"name=J%C3%BCrgen+M&tags=a&tags=b&empty=&emoji=%F0%9F%94%A5".to_vec();
    let mut exact = vec![0u8; MIB];
    for (i, b) in exact.iter_mut().enumerate() {
        *b = u8::try_from(i % 251).unwrap();
    }
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("binary", every_byte, "application/octet-stream"),
        ("notutf8", not_utf8, "text/plain; charset=latin1"),
        ("empty", Vec::new(), "application/json"),
        ("form", form, "application/x-www-form-urlencoded"),
        ("onemib", exact, "application/octet-stream"),
    ];
    for (tag, bytes, content_type) in cases {
        let provider = unique(tag);
        let req = Request::post(url(&provider))
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Full::new(Bytes::from(bytes.clone())))
            .unwrap();
        let answer = send(svc.clone(), req).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{tag}");
        assert_eq!(answer.json()["payloadSize"], bytes.len(), "{tag}");
        let event = queued(&broker);
        assert_eq!(event.provider, provider);
        assert!(event.body == bytes, "{tag}: body differs");
        assert_eq!(event.content_type.as_deref(), Some(content_type));
    }
    assert!(broker.is_empty());
}

#[tokio::test]
async fn exactly_the_limit_is_accepted_one_more_byte_is_not() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let provider = unique("edge");

    // Exactly 1 MiB streamed in uneven chunks without Content-Length.
    let body = Bytes::from(vec![7u8; MIB]);
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = [0..1, 1..4097, 4097..MIB]
        .into_iter()
        .map(|r| Ok(Frame::data(body.slice(r))))
        .collect();
    let req = Request::post(url(&provider))
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let answer = send(svc.clone(), req).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(queued(&broker).body, body);

    // 1 MiB + 1 declared.
    let big = Bytes::from(vec![7u8; MIB + 1]);
    let req = Request::post(url(&provider))
        .header(header::CONTENT_LENGTH, MIB + 1)
        .body(Full::new(big.clone()))
        .unwrap();
    let answer = send(svc.clone(), req).await;
    assert_rejected(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        false,
    );

    // 1 MiB + 1 streamed: the last byte alone crosses the limit.
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(big.slice(..MIB))),
        Ok(Frame::data(big.slice(MIB..))),
    ];
    let req = Request::post(url(&provider))
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let answer = send(svc, req).await;
    assert_rejected(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        false,
    );
    assert!(broker.is_empty());
}

#[tokio::test]
async fn multi_value_headers_are_kept_in_order() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let req = Request::post(url(&unique("headers")))
        .header("x-multi", "first")
        .header("set-cookie", "a=1")
        .header("x-multi", "second")
        .header("x-single", "only")
        .header("x-multi", "third")
        .header("set-cookie", "b=2")
        .header(
            "x-binary",
            http::HeaderValue::from_bytes(&[0xe9, b'a', 0xff]).unwrap(),
        )
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let answer = send(svc, req).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.json()["headerCount"], 7, "each value counts");

    let event = queued(&broker);
    let values = |name: &str| -> Vec<Vec<u8>> {
        event
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    };
    assert_eq!(
        values("x-multi"),
        [b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
    );
    assert_eq!(values("set-cookie"), [b"a=1".to_vec(), b"b=2".to_vec()]);
    assert_eq!(values("x-single"), [b"only".to_vec()]);
    assert_eq!(values("x-binary"), [vec![0xe9, b'a', 0xff]]);
    assert_eq!(event.header_count(), 7);
}

// ---------------------------------------------------------------------------------------------
// client address, correlation id

fn with_peer(peer: &str, xff: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post(url("proxied"));
    if let Some(xff) = xff {
        b = b.header("x-forwarded-for", xff);
    }
    let mut req = b.body(Full::new(Bytes::from_static(b"{}"))).unwrap();
    req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
    req
}

#[tokio::test]
async fn untrusted_peers_cannot_spoof_their_address() {
    let broker = MemoryBroker::new(16);
    let nets = ["10.0.0.0/8".parse().unwrap()];
    let svc = IngestService::new(broker.publisher()).trusted_proxies(nets);

    let answer = send(svc.clone(), with_peer("203.0.113.9:5555", Some("1.2.3.4"))).await;
    assert_eq!(answer.json()["sourceIp"], "203.0.113.9");
    assert_eq!(
        queued(&broker).source_ip,
        Some("203.0.113.9".parse().unwrap())
    );

    // Without any trusted proxy the header is never read either.
    let plain = IngestService::new(broker.publisher());
    let answer = send(plain, with_peer("10.0.0.1:5555", Some("1.2.3.4"))).await;
    assert_eq!(answer.json()["sourceIp"], "10.0.0.1");
    queued(&broker);
}

#[tokio::test]
async fn trusted_proxies_are_believed() {
    let broker = MemoryBroker::new(16);
    let nets = ["10.0.0.0/8".parse().unwrap()];
    let svc = IngestService::new(broker.publisher()).trusted_proxies(nets);

    let answer = send(
        svc.clone(),
        with_peer("10.1.2.3:5555", Some("203.0.113.50")),
    )
    .await;
    assert_eq!(answer.json()["sourceIp"], "203.0.113.50");
    assert_eq!(
        queued(&broker).source_ip,
        Some("203.0.113.50".parse().unwrap())
    );

    // A client-supplied entry left of the proxy-appended one is not believed.
    let answer = send(
        svc.clone(),
        with_peer("10.1.2.3:5555", Some("6.6.6.6, 198.51.100.1, 10.9.9.9")),
    )
    .await;
    assert_eq!(answer.json()["sourceIp"], "198.51.100.1");
    queued(&broker);

    // A trusted peer without forwarding headers is itself the client.
    let answer = send(svc.clone(), with_peer("10.1.2.3:5555", None)).await;
    assert_eq!(answer.json()["sourceIp"], "10.1.2.3");
    queued(&broker);

    // No peer known at all: no source ip, and forwarding headers are not trusted blindly.
    let req = Request::post(url("proxied"))
        .header("x-forwarded-for", "1.2.3.4")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(svc, req).await;
    assert_eq!(answer.json()["sourceIp"], Value::Null);
    assert_eq!(queued(&broker).source_ip, None);
}

#[tokio::test]
async fn request_id_becomes_the_correlation_id() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let request_id = unique("req");
    let req = Request::post(url("correlated"))
        .header("x-request-id", request_id.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(svc.clone(), req).await.status, StatusCode::ACCEPTED);
    let event = queued(&broker);
    assert_eq!(event.correlation_id, request_id);

    // Unusable ids (spaces, too long) fall back to the event id.
    for bad in ["has space".to_owned(), "x".repeat(201)] {
        let req = Request::post(url("correlated"))
            .header("x-request-id", bad.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let id = send(svc.clone(), req).await.json()["eventId"]
            .as_str()
            .unwrap()
            .to_owned();
        let event = queued(&broker);
        assert_eq!(event.correlation_id, id);
        assert_eq!(event.id.to_string(), id);
    }
}

// ---------------------------------------------------------------------------------------------
// publish failures: 503 / 500, never 202

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
    let mut sub = broker.subscriber();
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

// ---------------------------------------------------------------------------------------------
// IngestLayer

/// An inner service with a distinctive answer, echoing the request path and body.
async fn teapot(req: Request<axum::body::Body>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let mut res = Response::new(Full::new(Bytes::from(format!(
        "{} {} {}",
        parts.method,
        parts.uri.path(),
        String::from_utf8_lossy(&body)
    ))));
    *res.status_mut() = StatusCode::IM_A_TEAPOT;
    res.headers_mut().insert("x-inner", "yes".parse().unwrap());
    res.headers_mut()
        .append("x-inner", "twice".parse().unwrap());
    Ok(res)
}

fn axum_req(method: Method, uri: &str, body: &'static str) -> Request<axum::body::Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(axum::body::Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn layer_passes_other_requests_through_untouched() {
    let broker = MemoryBroker::new(16);
    let svc = IngestLayer::new(broker.publisher()).layer(tower::service_fn(teapot));

    for (method, path) in [
        (Method::POST, "/"),
        (Method::GET, "/api/v1/webhook"),
        (Method::POST, "/api/v1/webhook"),
        (Method::POST, "/api/v1/webhooks/github"),
        (Method::GET, "/api/v2/webhook/github"),
    ] {
        let res = svc
            .clone()
            .oneshot(axum_req(method.clone(), path, "payload"))
            .await
            .unwrap();
        let answer = into_answer(res).await;
        assert_eq!(answer.status, StatusCode::IM_A_TEAPOT, "{method} {path}");
        let inner: Vec<_> = answer.headers.get_all("x-inner").iter().collect();
        assert_eq!(inner, ["yes", "twice"]);
        assert_eq!(answer.body, format!("{method} {path} payload"));
    }

    // Under the prefix: ingest answers, the inner service never sees it.
    let res = svc
        .clone()
        .oneshot(axum_req(Method::POST, &url("github"), "{}"))
        .await
        .unwrap();
    let answer = into_answer(res).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert!(answer.headers.get("x-inner").is_none());
    let res = svc
        .oneshot(axum_req(Method::GET, &url("github"), ""))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(broker.len("github"), 1);
}

fn app_routes() -> Router {
    Router::new().route("/", get(|| async { "home" })).route(
        "/api/v1/orders",
        post(|body: Bytes| async move { (StatusCode::CREATED, [("x-order", "1")], body) }),
    )
}

#[tokio::test]
async fn router_layer_wraps_routes_and_fallbacks() {
    let broker = MemoryBroker::new(16);
    let provider = unique("routerlayer");

    // Router::layer with axum's default fallback: unknown paths still get axum's empty 404,
    // and ingest paths (which match no route) reach the layer, so the default fallback is
    // wrapped too.
    let app = app_routes().layer(IngestLayer::new(broker.publisher()));
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::GET, "/", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (answer.status, &answer.body[..]),
        (StatusCode::OK, &b"home"[..])
    );
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::POST, "/api/v1/orders", "order-body"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.headers["x-order"], "1");
    assert_eq!(answer.body, "order-body");
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::GET, "/nope", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(
        answer.body.is_empty(),
        "axum's own 404, not an ingest rejection"
    );
    // Method routing stays axum's: 405 from the app's route.
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::GET, "/api/v1/orders", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let answer = into_answer(
        app.oneshot(axum_req(Method::POST, &url(&provider), "{}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&provider), 1);

    // A custom fallback is wrapped as well and still answers everything else.
    let app = app_routes()
        .fallback(|| async { (StatusCode::NOT_FOUND, "custom fallback") })
        .layer(IngestLayer::new(broker.publisher()));
    let answer = into_answer(
        app.clone()
            .oneshot(axum_req(Method::GET, "/nope", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (answer.status, &answer.body[..]),
        (StatusCode::NOT_FOUND, &b"custom fallback"[..])
    );
    let answer = into_answer(
        app.oneshot(axum_req(Method::POST, &url(&provider), "{}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&provider), 2);
}

#[tokio::test]
async fn layer_around_a_whole_router() {
    let broker = MemoryBroker::new(16);
    let provider = unique("outer");
    let svc = IngestLayer::from_service(
        IngestService::new(broker.publisher()).providers([provider.as_str()]),
    )
    .layer(app_routes());
    let answer = into_answer(
        svc.clone()
            .oneshot(axum_req(Method::GET, "/", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (answer.status, &answer.body[..]),
        (StatusCode::OK, &b"home"[..])
    );
    let answer = into_answer(
        svc.clone()
            .oneshot(axum_req(Method::GET, "/nope", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body.is_empty());
    let answer = into_answer(
        svc.clone()
            .oneshot(axum_req(Method::POST, &url("stranger"), "{}"))
            .await
            .unwrap(),
    )
    .await;
    assert_rejected(&answer, StatusCode::NOT_FOUND, "unknown_provider", false);
    let answer = into_answer(
        svc.oneshot(axum_req(Method::POST, &url(&provider), "{}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len(&provider), 1);
}

// ---------------------------------------------------------------------------------------------
// health

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
    let ready = Readiness::new().publisher("memory", broker.publisher());
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

// ---------------------------------------------------------------------------------------------
// through a real TCP server

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Parses one HTTP/1.1 response (Content-Length or chunked) from the bytes read.
fn parse_response(raw: &[u8]) -> RawAnswer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let rest = &raw[end + 4..];
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v)
    };
    let body = if let Some(len) = find("content-length") {
        rest[..len.parse::<usize>().unwrap()].to_vec()
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        let mut rest = rest;
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body
    } else {
        rest.to_vec()
    };
    RawAnswer {
        status,
        headers,
        body,
    }
}

/// Sends one complete request with `Connection: close` and reads the whole answer.
async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut msg = head.replace('\n', "\r\n").into_bytes();
    msg.extend_from_slice(b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    msg.extend_from_slice(body);
    stream.write_all(&msg).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_response(&raw)
}

fn ingest_app(broker: &MemoryBroker, svc: IngestService) -> Router {
    let _ = broker;
    app_routes()
        .route_service("/health/live", Liveness)
        .layer(IngestLayer::from_service(svc))
}

#[tokio::test]
async fn tcp_accepts_and_publishes() {
    let broker = MemoryBroker::new(16);
    let provider = unique("tcp");
    let addr = serve(ingest_app(&broker, IngestService::new(broker.publisher()))).await;
    let body = b"{\"action\":\"opened\",\"binary\":\"\xff\"}";
    let answer = raw_request(
        addr,
        &format!(
            "POST {}?x=1 HTTP/1.1\nContent-Type: application/json\nX-Multi: a\nX-Multi: b\nX-Request-ID: tcp-req-1\nContent-Length: {}",
            url(&provider),
            body.len()
        ),
        body,
    )
    .await;
    assert_eq!(
        answer.status,
        202,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let receipt = answer.json();
    assert_eq!(receipt["sourceIp"], "127.0.0.1");
    assert_eq!(receipt["payloadSize"], body.len());

    let event = queued(&broker);
    assert_eq!(event.body, &body[..]);
    assert_eq!(event.source_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(event.correlation_id, "tcp-req-1");
    assert_eq!(event.query.as_deref(), Some("x=1"));
    let multi: Vec<_> = event.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(receipt["headerCount"], event.header_count());

    // The app's own routes keep working on the same server.
    let answer = raw_request(addr, "GET / HTTP/1.1", b"").await;
    assert_eq!((answer.status, &answer.body[..]), (200, &b"home"[..]));
    let answer = raw_request(addr, "GET /health/live HTTP/1.1", b"").await;
    assert_eq!(answer.status, 200);
    let answer = raw_request(addr, "GET /nope HTTP/1.1", b"").await;
    assert_eq!(answer.status, 404);
    let answer = raw_request(addr, &format!("GET {} HTTP/1.1", url(&provider)), b"").await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("POST"));
}

#[tokio::test]
async fn tcp_rejections() {
    let broker = MemoryBroker::new(16);
    let addr = serve(ingest_app(&broker, IngestService::new(broker.publisher()))).await;

    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: 2", url("a%2Fb")),
        b"{}",
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.json()["code"], "invalid_provider");
    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: 2", url("..")),
        b"{}",
    )
    .await;
    assert_eq!(answer.status, 400);
    // A raw space cannot even form a request line: the HTTP server refuses it with 400.
    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: 2", url("sp ace")),
        b"{}",
    )
    .await;
    assert_eq!(answer.status, 400);

    // Declared too large: answered without the body ever being sent.
    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: {}", url("big"), MIB + 1),
        b"",
    )
    .await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["code"], "payload_too_large");
    assert!(broker.is_empty());
}

#[tokio::test]
async fn tcp_chunked_1gib_body_is_cut_off() {
    let broker = MemoryBroker::new(16);
    let addr = serve(ingest_app(&broker, IngestService::new(broker.publisher()))).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();

    // Writes up to 1 GiB as chunked encoding until the server stops reading.
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            url("chunked")
        );
        wr.write_all(head.as_bytes()).await.unwrap();
        let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
        chunk.extend(std::iter::repeat_n(b'z', 64 * 1024));
        chunk.extend_from_slice(b"\r\n");
        let mut sent = 0usize;
        for _ in 0..16 * 1024 {
            if wr.write_all(&chunk).await.is_err() {
                return sent;
            }
            sent += 64 * 1024;
        }
        sent
    });

    let mut raw = Vec::new();
    // The server answers and closes; a reset after the answer is fine.
    let mut buf = vec![0u8; 8192];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let answer = parse_response(&raw);
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["code"], "payload_too_large");
    drop(rd);
    let sent = writer.await.unwrap();
    // Socket buffers absorb a few MiB at most; the server never takes the whole GiB.
    assert!(sent < 64 * MIB, "client managed to send {sent} bytes");
    assert!(broker.is_empty());
}

#[tokio::test]
async fn tcp_trusted_proxy_end_to_end() {
    let broker = MemoryBroker::new(16);
    // The test client connects from 127.0.0.1.
    let trusting =
        IngestService::new(broker.publisher()).trusted_proxies(["127.0.0.0/8".parse().unwrap()]);
    let addr = serve(ingest_app(&broker, trusting)).await;
    let answer = raw_request(
        addr,
        &format!(
            "POST {} HTTP/1.1\nX-Forwarded-For: 203.0.113.77\nContent-Length: 0",
            url("viaproxy")
        ),
        b"",
    )
    .await;
    assert_eq!(answer.json()["sourceIp"], "203.0.113.77");
    assert_eq!(
        queued(&broker).source_ip,
        Some("203.0.113.77".parse().unwrap())
    );

    let distrusting =
        IngestService::new(broker.publisher()).trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    let addr = serve(ingest_app(&broker, distrusting)).await;
    let answer = raw_request(
        addr,
        &format!(
            "POST {} HTTP/1.1\nX-Forwarded-For: 203.0.113.77\nForwarded: for=198.51.100.3\nContent-Length: 0",
            url("spoofed")
        ),
        b"",
    )
    .await;
    assert_eq!(answer.json()["sourceIp"], "127.0.0.1");
    assert_eq!(
        queued(&broker).source_ip,
        Some("127.0.0.1".parse().unwrap())
    );
}

#[tokio::test]
async fn tcp_route_service_mount() {
    let broker = MemoryBroker::new(16);
    let app = Router::new().route_service(
        "/api/v1/webhook/{provider}",
        IngestService::new(broker.publisher()),
    );
    let addr = serve(app).await;
    let answer = raw_request(
        addr,
        &format!("POST {} HTTP/1.1\nContent-Length: 3", url("Mounted")),
        b"abc",
    )
    .await;
    assert_eq!(answer.status, 202);
    assert_eq!(answer.json()["provider"], "mounted");
    assert_eq!(queued(&broker).body, "abc");
}
