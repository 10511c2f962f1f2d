//! Ingestion: turn `POST {prefix}/{provider}` requests into published [`WebhookEvent`]s.
//!
//! [`IngestService`] is a `tower::Service` that answers webhook requests itself;
//! [`IngestLayer`] wraps an existing application and takes only the requests under the ingest
//! prefix (default `/api/v1/webhook`), passing everything else through untouched.
//!
//! A request is answered `202 Accepted` with a JSON [`Receipt`] only after the [`Publisher`]
//! confirmed the event. Everything else gets a [`Rejection`]: one status code and a JSON body.
//!
//! # Mounting in an axum app
//!
//! ```
//! use axum::{Router, routing::get};
//! use firefly_webhook::{IngestLayer, memory::MemoryBroker};
//!
//! let broker = MemoryBroker::new(10_000);
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "my app" }))
//!     .layer(IngestLayer::new(broker.publisher()));
//! // POST /api/v1/webhook/github is ingested; GET / reaches the app.
//! # let _ = app;
//! ```
//!
//! Or as one route of its own:
//!
//! ```
//! use axum::Router;
//! use firefly_webhook::{IngestService, memory::MemoryBroker};
//!
//! let ingest = IngestService::new(MemoryBroker::new(10_000).publisher());
//! let app: Router = Router::new().route_service("/api/v1/webhook/{provider}", ingest);
//! # let _ = app;
//! ```
//!
//! # Provider names
//!
//! The path segment after the prefix is the provider name: 1–64 characters of `a-z`, `0-9`, `.`,
//! `_` and `-`, not `.` or `..`. Upper-case ASCII letters are **normalised** to lower case
//! (`/api/v1/webhook/GitHub` is provider `github`); anything else, including percent-encoded
//! bytes such as `%2F`, is rejected with 400. One trailing slash is tolerated.

mod client_ip;
mod layer;
pub(crate) mod rejection;

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

pub use self::layer::{IngestLayer, Ingested};
pub use self::rejection::{IngestBody, Rejection};
use crate::BoxError;
use crate::event::{EventId, WebhookEvent};
use crate::publish::{PublishError, Publisher, Routing};
use crate::verify::Verifiers;

/// The peer address of a connection, for servers that are not axum (with axum, its
/// `ConnectInfo<SocketAddr>` extension is read instead). Insert it into request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

#[derive(Clone)]
pub(crate) struct IngestConfig {
    prefix: String,
    max_body_bytes: usize,
    providers: Option<HashSet<String>>,
    trusted_proxies: Vec<IpNet>,
    routing: Routing,
    publish_timeout: Duration,
    retry_after: Duration,
    echo_payload: bool,
    verifiers: Option<Verifiers>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            prefix: "/api/v1/webhook".to_owned(),
            max_body_bytes: 1024 * 1024,
            providers: None,
            trusted_proxies: Vec::new(),
            routing: Routing::provider(),
            publish_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(5),
            echo_payload: false,
            verifiers: None,
        }
    }
}

impl fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestConfig")
            .field("prefix", &self.prefix)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("providers", &self.providers)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("routing", &self.routing)
            .field("publish_timeout", &self.publish_timeout)
            .field("echo_payload", &self.echo_payload)
            .field("verifiers", &self.verifiers)
            .finish_non_exhaustive()
    }
}

/// The JSON body of a `202 Accepted` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The assigned event id.
    pub event_id: EventId,
    /// Always `accepted`.
    pub status: &'static str,
    /// Human-readable summary.
    pub message: &'static str,
    /// When the request was read (RFC 3339).
    pub received_at: String,
    /// When the broker confirmed the event (RFC 3339).
    pub processed_at: String,
    /// The provider name.
    pub provider: String,
    /// Where the event was published.
    pub destination: String,
    /// The client address, if known.
    pub source_ip: Option<String>,
    /// Body size in bytes.
    pub payload_size: usize,
    /// Number of header values received.
    pub header_count: usize,
    /// Time from the start of handling to the broker's confirmation.
    pub response_time_ms: f64,
    /// The body echoed back, when enabled with [`IngestService::echo_payload`]: as JSON when
    /// it is JSON, else as text when it is UTF-8, else omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_payload: Option<Box<RawValue>>,
}

/// A `tower::Service` that ingests webhook requests and publishes them.
///
/// Cloning is cheap (one `Arc`). See the [module docs](self) for mounting it.
#[derive(Clone)]
pub struct IngestService {
    inner: Arc<Inner>,
}

struct Inner {
    publisher: Arc<dyn Publisher>,
    config: IngestConfig,
}

impl fmt::Debug for IngestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestService")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl IngestService {
    /// An ingest service publishing to `publisher` with default settings; adjust them with
    /// the builder methods below.
    pub fn new(publisher: impl Publisher) -> Self {
        Self {
            inner: Arc::new(Inner {
                publisher: Arc::new(publisher),
                config: IngestConfig::default(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut IngestConfig {
        // Builder methods run before the service is cloned; if it was, copy on write.
        if Arc::get_mut(&mut self.inner).is_none() {
            self.inner = Arc::new(Inner {
                publisher: Arc::clone(&self.inner.publisher),
                config: self.inner.config.clone(),
            });
        }
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => &mut inner.config,
            None => unreachable!("freshly created Arc is unique"),
        }
    }

    /// The publisher events go to.
    pub fn publisher(&self) -> &Arc<dyn Publisher> {
        &self.inner.publisher
    }

    /// The path prefix before `/{provider}` (default `/api/v1/webhook`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config_mut().prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// The largest accepted body in bytes (default 1 MiB). Larger bodies get 413; the limit is
    /// enforced while streaming, so memory stays bounded.
    #[must_use]
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.config_mut().max_body_bytes = limit;
        self
    }

    /// Accept only these providers; others get 404. Names are normalised to lower case.
    #[must_use]
    pub fn providers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config_mut().providers = Some(
            names
                .into_iter()
                .map(|s| s.as_ref().to_ascii_lowercase())
                .collect(),
        );
        self
    }

    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed.
    #[must_use]
    pub fn trusted_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.config_mut().trusted_proxies = nets.into_iter().collect();
        self
    }

    /// How events are routed to destinations (default: the provider name).
    #[must_use]
    pub fn routing(mut self, routing: Routing) -> Self {
        self.config_mut().routing = routing;
        self
    }

    /// How long to wait for the broker's confirmation before answering 503 (default 5 s).
    #[must_use]
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().publish_timeout = timeout;
        self
    }

    /// The `Retry-After` advertised with 503 answers (default 5 s).
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.config_mut().retry_after = after;
        self
    }

    /// Echo the payload in the receipt's `receivedPayload` (default off).
    #[must_use]
    pub fn echo_payload(mut self, on: bool) -> Self {
        self.config_mut().echo_payload = on;
        self
    }

    /// Verify signatures before publishing; failures get 401 and nothing is published.
    #[must_use]
    pub fn verifiers(mut self, verifiers: Verifiers) -> Self {
        self.config_mut().verifiers = Some(verifiers);
        self
    }

    /// Whether `path` is under this service's prefix (what [`IngestLayer`] routes here).
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.inner.config.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Checks everything that can be checked before the body is read.
    fn precheck<B: Body>(&self, req: &Request<B>) -> Result<String, Rejection> {
        let config = &self.inner.config;
        let rest = req
            .uri()
            .path()
            .strip_prefix(config.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(Rejection::NotFound)?;
        if req.method() != Method::POST {
            return Err(Rejection::MethodNotAllowed);
        }
        let segment = rest.strip_suffix('/').unwrap_or(rest);
        let provider = provider_name(segment).ok_or(Rejection::InvalidProvider)?;
        if let Some(allowed) = &config.providers {
            if !allowed.contains(&provider) {
                return Err(Rejection::UnknownProvider(provider));
            }
        }
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
            return Err(Rejection::PayloadTooLarge {
                limit: config.max_body_bytes,
            });
        }
        Ok(provider)
    }

    async fn ingest<B>(
        self,
        req: Request<B>,
        provider: String,
        started: Instant,
    ) -> Result<Response<IngestBody>, Rejection>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let config = &self.inner.config;
        let (parts, body) = req.into_parts();
        let body = read_body(body, config.max_body_bytes).await?;

        let source_ip = client_ip::resolve(&parts, &config.trusted_proxies);
        let id = EventId::new();
        let correlation_id = request_id(&parts.headers).unwrap_or_else(|| id.to_string());
        let mut event = WebhookEvent::new(provider, body)
            .with_id(id)
            .with_path(parts.uri.path())
            .with_query(parts.uri.query().map(str::to_owned))
            .with_source_ip(source_ip)
            .with_correlation_id(correlation_id)
            .with_headers(parts.headers);
        event.method = parts.method;

        if let Some(verifiers) = &config.verifiers {
            verifiers
                .verify_event(&event)
                .map_err(|e| Rejection::Unauthorized {
                    code: e.code(),
                    message: e.to_string(),
                    event_id: id,
                })?;
        }

        let destination = config.routing.destination(&event);
        let receipt_base = ReceiptBase {
            received_at: event.received_at,
            provider: event.provider.clone(),
            source_ip: event.source_ip.map(|ip| ip.to_string()),
            payload_size: event.body.len(),
            header_count: event.header_count(),
            echo: config.echo_payload.then(|| event.body.clone()),
        };

        let published = tokio::time::timeout(
            config.publish_timeout,
            self.inner.publisher.publish(&destination, event),
        )
        .await
        .unwrap_or(Err(PublishError::TimedOut(config.publish_timeout)));

        if let Err(err) = published {
            tracing::warn!(event_id = %id, destination, error = %err, "webhook not published");
            return Err(if err.is_retryable() {
                Rejection::Unavailable {
                    event_id: id,
                    retry_after: config.retry_after,
                }
            } else {
                Rejection::PublishRejected { event_id: id }
            });
        }
        tracing::debug!(event_id = %id, destination, "webhook accepted");
        Ok(receipt_base.into_response(id, destination, started))
    }
}

struct ReceiptBase {
    received_at: OffsetDateTime,
    provider: String,
    source_ip: Option<String>,
    payload_size: usize,
    header_count: usize,
    echo: Option<Bytes>,
}

impl ReceiptBase {
    fn into_response(
        self,
        event_id: EventId,
        destination: String,
        started: Instant,
    ) -> Response<IngestBody> {
        let receipt = Receipt {
            event_id,
            status: "accepted",
            message: "Webhook accepted",
            received_at: crate::wire::rfc3339(self.received_at),
            processed_at: crate::wire::rfc3339(OffsetDateTime::now_utc()),
            provider: self.provider,
            destination,
            source_ip: self.source_ip,
            payload_size: self.payload_size,
            header_count: self.header_count,
            response_time_ms: started.elapsed().as_secs_f64() * 1000.0,
            received_payload: self.echo.as_deref().and_then(echo),
        };
        rejection::json_response(StatusCode::ACCEPTED, &receipt)
    }
}

fn echo(body: &[u8]) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(body).ok()?;
    RawValue::from_string(text.to_owned())
        .ok()
        .or_else(|| serde_json::value::to_raw_value(text).ok())
}

/// Normalises and validates a provider path segment.
pub(crate) fn provider_name(segment: &str) -> Option<String> {
    let ok = (1..=64).contains(&segment.len())
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| segment.to_ascii_lowercase())
}

/// `X-Request-ID`, when it is short visible ASCII (it ends up in logs and message headers).
fn request_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-request-id")?.to_str().ok()?;
    let ok = (1..=200).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| v.to_owned())
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Rejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Rejection::PayloadTooLarge { limit })
        }
        Err(_) => Err(Rejection::BodyRead),
    }
}

impl<B> tower::Service<Request<B>> for IngestService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<IngestBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        match self.precheck(&req) {
            Err(rejection) => ResponseFuture::ready(rejection.into_response()),
            Ok(provider) => {
                let this = self.clone();
                ResponseFuture::pending(Box::pin(async move {
                    this.ingest(req, provider, started)
                        .await
                        .unwrap_or_else(Rejection::into_response)
                }))
            }
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Response future of [`IngestService`]: ready at once for requests rejected before the body
/// is read, so those cost no allocation.
pub struct ResponseFuture {
    kind: Kind,
}

enum Kind {
    Ready(Option<Response<IngestBody>>),
    Pending(BoxFuture<Response<IngestBody>>),
}

impl ResponseFuture {
    fn ready(response: Response<IngestBody>) -> Self {
        Self {
            kind: Kind::Ready(Some(response)),
        }
    }

    fn pending(fut: BoxFuture<Response<IngestBody>>) -> Self {
        Self {
            kind: Kind::Pending(fut),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<IngestBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.kind {
            Kind::Ready(response) => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Pending,
            },
            Kind::Pending(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names() {
        assert_eq!(provider_name("github").as_deref(), Some("github"));
        assert_eq!(provider_name("GitHub").as_deref(), Some("github"));
        assert_eq!(provider_name("my-app_2.v1").as_deref(), Some("my-app_2.v1"));
        for bad in ["", ".", "..", "a/b", "a%2Fb", "sp ace", "é", &"x".repeat(65)] {
            assert_eq!(provider_name(bad), None, "{bad:?}");
        }
        assert!(provider_name(&"x".repeat(64)).is_some());
    }

    #[test]
    fn request_ids_are_sanitised() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(request_id(&h).as_deref(), Some("abc-123"));
        h.insert("x-request-id", "has space".parse().unwrap());
        assert_eq!(request_id(&h), None);
    }

    #[test]
    fn echo_keeps_json_and_quotes_text() {
        assert_eq!(echo(br#"{"a":1}"#).unwrap().get(), r#"{"a":1}"#);
        assert_eq!(echo(b"a=1&b=2").unwrap().get(), r#""a=1&b=2""#);
        assert!(echo(&[0xff]).is_none());
    }
}
