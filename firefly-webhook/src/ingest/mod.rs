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
//! `Router::layer` wraps every route and the fallback — axum's default 404 included — so
//! requests under the prefix reach ingest although no route matches them, and everything else
//! keeps the app's routing, method handling (405) and fallback. Requests under the prefix never
//! reach the app, even if it has a route there; the bare prefix itself (`/api/v1/webhook`) does.
//! Wrapping the whole `Router` from outside (`IngestLayer::layer(router)`, or
//! `ServiceBuilder`) behaves the same.
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
mod receipt;
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
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ipnet::IpNet;
use serde_json::value::RawValue;
use time::OffsetDateTime;

pub use self::layer::{IngestLayer, Ingested};
pub use self::receipt::Receipt;
use self::receipt::ReceiptWriter;
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

/// A `tower::Service` that ingests webhook requests and publishes them.
///
/// Cloning is cheap (one `Arc`). See the [module docs](self) for mounting it.
#[derive(Clone)]
pub struct IngestService {
    inner: Arc<Inner>,
}

#[derive(Clone)]
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
        &mut Arc::make_mut(&mut self.inner).config
    }

    /// The publisher events go to.
    pub fn publisher(&self) -> &Arc<dyn Publisher> {
        &self.inner.publisher
    }

    /// The path prefix before `/{provider}` (default `/api/v1/webhook`). A missing leading `/`
    /// is added and trailing ones are dropped, so `"hooks/"` means `/hooks/{provider}` and `"/"`
    /// means `/{provider}`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let trimmed = prefix.trim_matches('/');
        self.config_mut().prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
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

    /// Whether `path` is under this service's prefix, i.e. `{prefix}/…` (what [`IngestLayer`]
    /// routes here). The bare prefix itself is not: an app may serve it.
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.inner.config.prefix.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
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
        if let Some(allowed) = &config.providers
            && !allowed.contains(&provider)
        {
            return Err(Rejection::UnknownProvider(provider));
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
        // Built in one go: `WebhookEvent::new` would generate (and `with_id` discard) a second
        // UUID, which costs a random-number syscall per request.
        let id = EventId::new();
        let correlation_id = request_id(&parts.headers).unwrap_or_else(|| {
            // Skips the formatting machinery of `to_string`.
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            id.as_uuid().hyphenated().encode_lower(&mut text).to_owned()
        });
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let event = WebhookEvent {
            id,
            provider,
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            body,
            received_at: OffsetDateTime::now_utc(),
            source_ip,
            correlation_id,
            content_type,
        };

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
        let receipt = ReceiptWriter::start(&event, &destination, config.echo_payload);

        let published = tokio::time::timeout(
            config.publish_timeout,
            self.inner.publisher.publish(&destination, event),
        )
        .await
        .unwrap_or(Err(PublishError::TimedOut(config.publish_timeout)));

        if let Err(err) = published {
            // A full queue is ordinary backpressure: a warning per refused request would add
            // log volume exactly when the gateway is busiest.
            if matches!(err, PublishError::Overloaded) {
                tracing::debug!(event_id = %id, destination, error = %err, "webhook not published");
            } else {
                tracing::warn!(event_id = %id, destination, error = %err, "webhook not published");
            }
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
        Ok(receipt.finish(started))
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
    const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
    let v = headers.get(X_REQUEST_ID)?.to_str().ok()?;
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
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a%2Fb",
            "sp ace",
            "é",
            &"x".repeat(65),
        ] {
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
