//! ingest integration tests: `IngestService`, `IngestLayer` and the health services, driven
//! with `tower::ServiceExt::oneshot` and through a real axum server on 127.0.0.1.

mod client;
mod edge;
mod fidelity;
mod handshake;
mod health;
mod layer;
mod limits;
mod publish;
mod receipt;
mod rejections;
mod shed;
mod tcp;

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

pub(crate) const MIB: usize = 1024 * 1024;
pub(crate) const PREFIX: &str = "/api/v1/webhook";

// ---------------------------------------------------------------------------------------------
// helpers

/// A provider name unique to one test (tests share nothing, but names make failures readable).
pub(crate) fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

pub(crate) fn url(provider: &str) -> String {
    format!("{PREFIX}/{provider}")
}

pub(crate) fn post_req(uri: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(uri).body(Full::new(body.into())).unwrap()
}

pub(crate) struct Answer {
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

pub(crate) async fn into_answer<B>(res: Response<B>) -> Answer
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

pub(crate) async fn send<S, B>(svc: S, req: Request<B>) -> Answer
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible>,
{
    into_answer(svc.oneshot(req).await.unwrap()).await
}

/// The next delivery, which must already be queued: ingest answers 202 only after the
/// publisher confirmed, so no waiting is involved.
pub(crate) fn queued(broker: &MemoryBroker) -> WebhookEvent {
    let mut sub = broker.subscriber_all();
    let delivery = sub
        .next()
        .now_or_never()
        .expect("a confirmed event is queued without waiting")
        .unwrap()
        .unwrap();
    delivery.event
}

/// Asserts the shared error shape and returns the body.
pub(crate) fn assert_rejected(
    answer: &Answer,
    status: StatusCode,
    code: &str,
    has_event_id: bool,
) -> Value {
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
pub(crate) fn counting_stream(
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
pub(crate) struct Failing {
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
pub(crate) struct Flaky {
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
