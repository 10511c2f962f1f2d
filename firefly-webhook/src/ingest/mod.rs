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
//!
//! Names that collide with the broker topology the transports build around a destination are
//! reserved (see [`is_reserved_destination`]): such a provider is refused with 400
//! `reserved_destination` before the body is read, and so is a request whose
//! [routed](IngestService::routing) destination is reserved, before anything is published.
//!
//! # Endpoint handshakes
//!
//! A provider whose verifier comes with a [`Handshake`] (Slack, Zoom, Meta, X, Microsoft
//! Graph, Dropbox, Okta, Twitch, Discord, AWS SNS, CloudEvents) has its handshake answered
//! here, after the checks below and, where the provider signs it, after its signature was verified; the answer
//! is in the provider's format (`200` with JSON, `text/plain` or headers) and the request is
//! not published unless [`Verifiers::publish_handshakes`] says so. `GET` and `OPTIONS` are
//! accepted exactly for the providers whose handshake arrives with them; every other method
//! and provider gets 405 as before. A refused handshake is 403 `handshake_refused` (wrong
//! verify token or origin), 400 `malformed_handshake` or 502 `handshake_failed`.
//!
//! # On the open internet
//!
//! Every protection is enforced inside [`IngestService`], so an app that mounts [`IngestLayer`]
//! in its own router has them too. In this order, each refusal being one [`Rejection`]:
//!
//! | check | default | answer |
//! | --- | --- | --- |
//! | path, method, provider name, [reserved name](is_reserved_destination) | always | 404, 405, 400 |
//! | [provider allowlist](IngestService::providers) | off | 404 `unknown_provider` |
//! | [verification required](crate::Verifiers::require_verification), no verifier | off | 401 `unknown_provider` |
//! | declared `Content-Length` over the [limit](IngestService::max_body_bytes) | 1 MiB | 413 |
//! | [source-IP allowlist](IngestService::allow_ips) of the provider | off | 403 `ip_not_allowed` |
//! | [per-IP](IngestService::rate_limit_per_ip) and [per-provider](IngestService::rate_limit_per_provider) rate limits | off | 429 `rate_limited` |
//! | [in-flight cap](IngestService::max_in_flight) | 1024 | 503 `overloaded` |
//! | [body byte budget](IngestService::body_budget), declared length | 64 MiB | 503 `overloaded` |
//!
//! All of these are decided before the body is read: the request's body is not polled and
//! nothing is published. Then, while the body is read:
//!
//! | check | default | answer |
//! | --- | --- | --- |
//! | the whole body within the [body timeout](IngestService::body_timeout) | 30 s | 408 `body_timeout`, `Connection: close` |
//! | streamed size within the [limit](IngestService::max_body_bytes) | 1 MiB | 413 |
//! | streamed bytes within the [body byte budget](IngestService::body_budget) | 64 MiB | 503 `overloaded` |
//!
//! and after it: the signature, the reserved routed destination and the publish. Credentials of
//! token schemes are [not published](IngestService::keep_credentials). Every refusal counts in
//! [`INGEST_REJECTED_TOTAL`](crate::metric::INGEST_REJECTED_TOTAL).
//!
//! With the defaults, the per-request cost of all this is a few atomic operations.
//!
//! # Observability
//!
//! Each request runs in a [`SPAN`] span that continues the W3C trace context of the request's
//! `traceparent` / `tracestate` headers (or starts a trace), and records the event id,
//! provider, destination and outcome. The published event carries the span's own context as
//! [`WebhookEvent::trace`], which the [wire format](crate::wire) passes on as the CloudEvents
//! `traceparent` / `tracestate` attributes. `X-Request-ID` (or `X-Correlation-ID`) still
//! becomes the event's correlation id.
//!
//! Every answer counts in [`INGEST_REQUESTS_TOTAL`](crate::metric::INGEST_REQUESTS_TOTAL)
//! and [`INGEST_RECEIPTS_TOTAL`](crate::metric::INGEST_RECEIPTS_TOTAL); bodies read, publish
//! times and requests in flight have metrics of their own (see [`metric`](mod@crate::metric)).
//! Provider labels are bounded: see [`OTHER_PROVIDER`](crate::metric::OTHER_PROVIDER). Each
//! rejected request is logged once, at `info` (`warn` when the broker failed), with its
//! provider, code and event id: never a header value or the body.
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//!
//! use firefly_webhook::{IngestService, memory::MemoryBroker};
//!
//! let per_second = NonZeroU32::new(50).unwrap();
//! let burst = NonZeroU32::new(100).unwrap();
//! let ingest = IngestService::new(MemoryBroker::new(10_000).publisher())
//!     .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
//!     .allow_ips("github", ["192.30.252.0/22".parse().unwrap(), "140.82.112.0/20".parse().unwrap()])
//!     .rate_limit_per_ip(per_second, burst)
//!     .body_timeout(Duration::from_secs(10))
//!     .max_in_flight(512)
//!     .body_budget(32 * 1024 * 1024);
//! # let _ = ingest;
//! ```

mod body;
mod budget;
mod client_ip;
mod layer;
mod observe;
#[cfg(feature = "openapi")]
mod openapi;
mod rate;
mod receipt;
pub(crate) mod rejection;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use ipnet::IpNet;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tracing::Instrument as _;

use self::body::ReadError;
use self::budget::{Budget, Held};
pub use self::layer::{IngestLayer, Ingested};
use self::observe::{InFlight, ProviderLabels, ProviderMetrics, Recorded};
pub use self::observe::{SPAN, SPAN_TARGET};
use self::rate::{KeyedLimit, ProviderKey};
pub use self::receipt::Receipt;
use self::receipt::ReceiptWriter;
pub use self::rejection::{IngestBody, Rejection};
use crate::event::{DEFAULT_PREFIX, EventId, TraceContext, WebhookEvent, provider_name};
use crate::publish::{PublishError, Publisher, Routing, Storage};
use crate::verify::{Handshake, PREPARE_TIMEOUT, Verified, Verifiers, VerifyError};
use crate::{BoxError, BoxFuture};

/// Whether `name` is reserved for the broker topology the transports build around a
/// destination, and so may be neither a provider nor a destination:
///
/// - names ending in `.dlq` (dead-letter destinations, `{topic}.dlq`, `{queue}.dlq`);
/// - names containing `.retry.` (retry tiers, e.g. `orders.retry.5s`);
/// - names starting with `_` (broker internals such as Kafka's `__consumer_offsets`).
///
/// ASCII case is ignored, so `orders.DLQ` is reserved too.
///
/// ```
/// use firefly_webhook::ingest::is_reserved_destination;
///
/// assert!(is_reserved_destination("orders.dlq"));
/// assert!(is_reserved_destination("orders.retry.5s"));
/// assert!(is_reserved_destination("__consumer_offsets"));
/// assert!(!is_reserved_destination("github"));
/// assert!(!is_reserved_destination("retry.dlq-archive"));
/// ```
pub fn is_reserved_destination(name: &str) -> bool {
    const DLQ: &[u8] = b".dlq";
    const RETRY: &[u8] = b".retry.";
    let bytes = name.as_bytes();
    name.starts_with('_')
        || (bytes.len() >= DLQ.len() && bytes[bytes.len() - DLQ.len()..].eq_ignore_ascii_case(DLQ))
        || bytes
            .windows(RETRY.len())
            .any(|w| w.eq_ignore_ascii_case(RETRY))
}

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
    body_timeout: Duration,
    keep_credentials: bool,
    allowed_ips: HashMap<String, Vec<IpNet>>,
    transport_name: &'static str,
    on_span: Option<SpanHook>,
}

/// See [`IngestService::on_span`].
type SpanHook =
    Arc<dyn Fn(&tracing::Span, Option<&TraceContext>) -> Option<TraceContext> + Send + Sync>;

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            max_body_bytes: 1024 * 1024,
            providers: None,
            trusted_proxies: Vec::new(),
            routing: Routing::provider(),
            publish_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(5),
            echo_payload: false,
            verifiers: None,
            body_timeout: Duration::from_secs(30),
            keep_credentials: false,
            allowed_ips: HashMap::new(),
            transport_name: "unknown",
            on_span: None,
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
            .field("body_timeout", &self.body_timeout)
            .field("keep_credentials", &self.keep_credentials)
            .field("allowed_ips", &self.allowed_ips)
            .field("transport_name", &self.transport_name)
            .field("on_span", &self.on_span.is_some())
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
    limits: Limits,
    /// Depends on the configured providers: replaced when the configuration changes.
    labels: Arc<ProviderLabels>,
    recorded: Arc<Recorded>,
}

/// The state behind the limits, shared by every clone of a service.
#[derive(Clone, Debug)]
struct Limits {
    in_flight: Arc<Budget>,
    body_bytes: Arc<Budget>,
    per_ip: Option<Arc<KeyedLimit<IpAddr>>>,
    per_provider: Option<Arc<KeyedLimit<ProviderKey>>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            in_flight: Budget::new(1024),
            body_bytes: Budget::new(64 * 1024 * 1024),
            per_ip: None,
            per_provider: None,
        }
    }
}

/// What a request admitted before its body was read carries through ingest. The guards give
/// their share back when the request ends, however it ends.
struct Admission {
    source_ip: Option<IpAddr>,
    body_bytes: Held,
    _in_flight: InFlight,
}

/// A rejection, and what its log line says beyond it.
#[derive(Debug)]
struct Refused {
    rejection: Rejection,
    destination: Option<String>,
    error: Option<PublishError>,
}

impl From<Rejection> for Refused {
    fn from(rejection: Rejection) -> Self {
        Self {
            rejection,
            destination: None,
            error: None,
        }
    }
}

impl fmt::Debug for IngestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestService")
            .field("config", &self.inner.config)
            .field("limits", &self.inner.limits)
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
                limits: Limits::default(),
                labels: Arc::default(),
                recorded: Arc::default(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut IngestConfig {
        // Builder methods run before the service is cloned; if it was, copy on write.
        let inner = Arc::make_mut(&mut self.inner);
        inner.labels = Arc::default();
        &mut inner.config
    }

    fn limits_mut(&mut self) -> &mut Limits {
        // A clone made before this call keeps the limits' old state.
        &mut Arc::make_mut(&mut self.inner).limits
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

    /// The name of the transport behind the publisher (`memory`, `kafka`, `amqp`, …; default
    /// `unknown`): the [`transport`](crate::metric::TRANSPORT) label of
    /// [`INGEST_PUBLISH_SECONDS`](crate::metric::INGEST_PUBLISH_SECONDS).
    #[must_use]
    pub fn transport_name(mut self, name: &'static str) -> Self {
        self.config_mut().transport_name = name;
        self
    }

    /// Calls `hook` with each request's [`SPAN`] span as soon as it is created (before it is
    /// entered) and the W3C trace context the request carried, if any. What the hook returns
    /// becomes the span's own context, which the event carries on; `None` leaves it to ingest
    /// (a child of the request's context, or a new trace).
    ///
    /// This is where a tracing layer that exports spans joins in without the crate knowing it:
    /// an OpenTelemetry hook makes the request's context the span's remote parent and returns
    /// the ids the span was given, so the event continues the exported span.
    #[must_use]
    pub fn on_span<F>(mut self, hook: F) -> Self
    where
        F: Fn(&tracing::Span, Option<&TraceContext>) -> Option<TraceContext>
            + Send
            + Sync
            + 'static,
    {
        self.config_mut().on_span = Some(Arc::new(hook));
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
    ///
    /// When the registry [requires verification](Verifiers::require_verification), a provider
    /// without a verifier gets 401 `unknown_provider` before its body is read.
    #[must_use]
    pub fn verifiers(mut self, verifiers: Verifiers) -> Self {
        self.config_mut().verifiers = Some(verifiers);
        self
    }

    /// Publish the headers that carried a verified request's shared secret (default `false`:
    /// they are removed).
    ///
    /// By default, after a successful verification the headers named by the verifier's
    /// [`secret_headers`](crate::SignatureVerifier::secret_headers) — `Authorization` for
    /// [`Basic`](crate::verify::Basic), the key header of [`ApiKey`](crate::verify::ApiKey),
    /// `X-Gitlab-Token` for [`GitLab`](crate::verify::GitLab) — are removed from the event, so
    /// the credential never reaches the broker, its replicas or dead-letter copies. Signature
    /// headers (`X-Hub-Signature-256`, `Stripe-Signature`, …) reveal no secret and are kept.
    ///
    /// A worker that re-verifies with [`VerifyLayer`](crate::VerifyLayer) then cannot re-check
    /// those token schemes: their events lack the token and are refused with
    /// `missing_signature`. Keep the credentials (and accept that the broker holds them), or
    /// leave token providers out of the worker's registry.
    #[must_use]
    pub fn keep_credentials(mut self, keep: bool) -> Self {
        self.config_mut().keep_credentials = keep;
        self
    }

    /// How long the whole body may take to arrive (default 30 s), counted from when the
    /// service starts reading it, after the checks above. A slower sender gets 408
    /// `body_timeout` with `Connection: close` (so the server drops the connection rather than
    /// drain the rest), and nothing is published. How long the request head may take is the
    /// server's business.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().body_timeout = timeout;
        self
    }

    /// Accept `provider`'s requests only from these networks (default: any address). Others
    /// get 403 `ip_not_allowed` before the body is read; so do requests whose client address
    /// is unknown (no [`PeerAddr`] or `ConnectInfo`). Other providers are unaffected.
    ///
    /// The client address is the one resolved through the
    /// [trusted proxies](Self::trusted_proxies): a forwarding header counts only when the
    /// socket peer is a trusted proxy. IPv4-mapped IPv6 addresses match IPv4 networks. Calling
    /// this again for the same provider replaces its list; the name is normalised to lower
    /// case.
    #[must_use]
    pub fn allow_ips(mut self, provider: &str, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.config_mut()
            .allowed_ips
            .insert(provider.to_ascii_lowercase(), nets.into_iter().collect());
        self
    }

    /// Limit each client address to `per_second` requests per second on average, with bursts of
    /// up to `burst` (default: no limit). Beyond it: 429 `rate_limited` with `Retry-After`, the
    /// whole seconds until a request would be admitted (at least 1), before the body is read.
    ///
    /// The client address is resolved through the [trusted proxies](Self::trusted_proxies);
    /// IPv6 clients are limited per /64 (one host usually holds a whole /64); requests whose
    /// address is unknown are not limited per IP. All providers share a client's limit.
    ///
    /// Memory stays bounded: every 1024 requests, addresses whose allowance has refilled
    /// completely (idle for `burst / per_second` seconds) are forgotten, which changes nothing
    /// for them; so the state holds about the addresses seen in the last `burst / per_second`
    /// seconds, plus at most 1024.
    #[must_use]
    pub fn rate_limit_per_ip(mut self, per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        self.limits_mut().per_ip = Some(Arc::new(KeyedLimit::new(per_second, burst)));
        self
    }

    /// Limit each provider to `per_second` requests per second on average, with bursts of up
    /// to `burst` (default: no limit), whoever sends them. Beyond it: 429 `rate_limited` with
    /// `Retry-After`, as [`rate_limit_per_ip`](Self::rate_limit_per_ip), whose notes on
    /// bounded memory apply here too.
    #[must_use]
    pub fn rate_limit_per_provider(mut self, per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        self.limits_mut().per_provider = Some(Arc::new(KeyedLimit::new(per_second, burst)));
        self
    }

    /// The most requests handled at once by this service and its clones (default 1024), from
    /// admission until the answer. Beyond it a request is answered at once with 503
    /// `overloaded` and [`Retry-After`](Self::retry_after): never queued, its body never read.
    #[must_use]
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.limits_mut().in_flight = Budget::new(requests);
        self
    }

    /// The body bytes that this service and its clones hold at once (default 64 MiB), from
    /// the read of each body until its answer; this bounds the memory that request bodies
    /// take. A request the budget cannot cover gets 503 `overloaded` with
    /// [`Retry-After`](Self::retry_after) and is never queued.
    ///
    /// A request with `Content-Length` reserves that many bytes before its body is read, and
    /// is refused at once if they are not available. A body without one (chunked) reserves as
    /// its chunks arrive, and is refused as soon as the next chunk cannot be covered. Keep the
    /// budget well above [`max_body_bytes`](Self::max_body_bytes): a body larger than the
    /// budget is never accepted.
    #[must_use]
    pub fn body_budget(mut self, bytes: usize) -> Self {
        self.limits_mut().body_bytes = Budget::new(bytes);
        self
    }

    /// Whether `path` is under this service's prefix, i.e. `{prefix}/…` (what [`IngestLayer`]
    /// routes here). The bare prefix itself is not: an app may serve it.
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.inner.config.prefix.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The provider of a request to `{prefix}/{provider}`.
    fn route<B>(&self, req: &Request<B>) -> Result<String, Rejection> {
        let rest = req
            .uri()
            .path()
            .strip_prefix(self.inner.config.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(Rejection::NotFound)?;
        let segment = rest.strip_suffix('/').unwrap_or(rest);
        if req.method() != Method::POST {
            // Only a provider whose handshake arrives with this method takes it.
            return provider_name(segment)
                .filter(|provider| self.answers(req.method(), provider))
                .ok_or(Rejection::MethodNotAllowed);
        }
        provider_name(segment).ok_or(Rejection::InvalidProvider)
    }

    /// Whether `provider` has a handshake that arrives with `method`.
    fn answers(&self, method: &Method, provider: &str) -> bool {
        self.inner
            .config
            .verifiers
            .as_ref()
            .and_then(|v| v.handshake_of(provider))
            .is_some_and(|h| h.methods().contains(method))
    }

    /// Decides everything that can be decided before the body is read, and takes the
    /// request's share of the limits.
    fn admit<B>(&self, req: &Request<B>, provider: &str) -> Result<Admission, Rejection> {
        let Inner { config, limits, .. } = &*self.inner;
        if is_reserved_destination(provider) {
            return Err(Rejection::ReservedDestination(provider.to_owned()));
        }
        if let Some(allowed) = &config.providers
            && !allowed.contains(provider)
        {
            return Err(Rejection::UnknownProvider(provider.to_owned()));
        }
        if let Some(verifiers) = &config.verifiers
            && verifiers.is_required()
            && verifiers.get(provider).is_none()
        {
            let err = VerifyError::UnknownProvider;
            return Err(Rejection::Unauthorized {
                code: err.code(),
                message: err.to_string(),
                event_id: EventId::new(),
            });
        }
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let declared = match declared {
            Some(n) if n > config.max_body_bytes as u64 => {
                return Err(Rejection::PayloadTooLarge {
                    limit: config.max_body_bytes,
                });
            }
            // At most the limit, which is a usize.
            #[allow(clippy::cast_possible_truncation)]
            Some(n) => n as usize,
            None => 0,
        };

        let source_ip =
            client_ip::resolve(req.headers(), req.extensions(), &config.trusted_proxies);
        if let Some(nets) = config.allowed_ips.get(provider) {
            let allowed = source_ip.is_some_and(|ip| {
                let ip = ip.to_canonical();
                nets.iter().any(|net| net.contains(&ip))
            });
            if !allowed {
                return Err(Rejection::IpNotAllowed);
            }
        }
        if let (Some(limit), Some(ip)) = (&limits.per_ip, source_ip) {
            limit
                .check(&rate::ip_key(ip))
                .map_err(|retry_after| Rejection::RateLimited { retry_after })?;
        }
        if let Some(limit) = &limits.per_provider {
            limit
                .check(&ProviderKey::new(provider))
                .map_err(|retry_after| Rejection::RateLimited { retry_after })?;
        }

        let overloaded = || Rejection::Overloaded {
            retry_after: config.retry_after,
        };
        let in_flight = InFlight::new(
            limits.in_flight.try_take(1).ok_or_else(overloaded)?,
            &self.inner.recorded,
        );
        let body_bytes = limits
            .body_bytes
            .try_take(declared)
            .ok_or_else(overloaded)?;
        Ok(Admission {
            source_ip,
            body_bytes,
            _in_flight: in_flight,
        })
    }

    /// Whether `provider` is allowlisted or has a verifier.
    fn is_configured(&self, provider: &str) -> bool {
        let config = &self.inner.config;
        config
            .providers
            .as_ref()
            .is_some_and(|allowed| allowed.contains(provider))
            || config
                .verifiers
                .as_ref()
                .is_some_and(|v| v.get(provider).is_some())
    }

    /// The [`PROVIDER`](crate::metric::PROVIDER) label of `provider` (see
    /// [`OTHER_PROVIDER`](crate::metric::OTHER_PROVIDER)): unconfigured names have labels of their
    /// own only while ingest takes any provider name, and never reserved ones.
    fn label(&self, provider: Option<&str>) -> Arc<ProviderMetrics> {
        let Some(provider) = provider else {
            return self.inner.labels.other();
        };
        let config = &self.inner.config;
        let open = config.providers.is_none()
            && !config
                .verifiers
                .as_ref()
                .is_some_and(Verifiers::is_required)
            && !is_reserved_destination(provider);
        self.inner
            .labels
            .get(provider, || self.is_configured(provider), open)
    }

    /// Answers an admitted request: reads its body, checks the event and publishes it.
    ///
    /// The event is built here, before the first await. One `async move` block holds it once
    /// and moves it into the publisher's future; a combinator answers. The chain of `async
    /// fn`s this replaces kept a copy of the request, then of the event, at each level (an
    /// `async fn` keeps its arguments beside its locals): 3,352 bytes a request, above the size
    /// that allocators serve from their per-thread caches (glibc: up to 1,032 bytes). In a
    /// release build this future is now 1,008 bytes for an `http_body_util::Full` body, 960
    /// behind axum's body type.
    fn ingest<B>(
        self,
        req: Request<B>,
        provider: String,
        admission: Admission,
        started: Instant,
        trace: TraceContext,
    ) -> impl Future<Output = Response<IngestBody>> + Send + 'static
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        // The name moves into the event; the label and the log line outlive it.
        let name = ProviderKey::new(&provider);
        let label = self.label(Some(&provider));
        let trace_id = trace.trace_id();
        let (parts, body) = req.into_parts();
        let Admission {
            source_ip,
            body_bytes: mut held,
            _in_flight: in_flight,
        } = admission;
        let mut event = event_head(parts, provider, source_ip, trace);
        let (this, metrics) = (self.clone(), Arc::clone(&label));
        let accepting = async move {
            // Counted in flight, and its bytes held, until answered.
            let _in_flight = in_flight;
            let config = &this.inner.config;
            event.body = this.read_body(body, &mut held).await?;
            event.received_at = OffsetDateTime::now_utc();
            // Only now: a request refused before this has no event.
            tracing::Span::current().record("event_id", tracing::field::display(event.id));
            Recorded::body_bytes(&metrics, event.body.len());
            if let Some(verifiers) = &config.verifiers {
                if let Some(handshake) = verifiers
                    .handshake_of(&event.provider)
                    .filter(|h| h.is_handshake(&event))
                {
                    // Boxed: a rare path, which would otherwise make every request's future
                    // larger by its own state.
                    let response = Box::pin(this.handshake(verifiers, handshake, event)).await?;
                    return Ok((response, "handshake"));
                }
                if event.method != Method::POST {
                    // A GET or OPTIONS that is not the provider's handshake.
                    return Err(Rejection::MethodNotAllowed.into());
                }
                let verified = this.verify(verifiers, &event).await?;
                if verified.is_some()
                    && !config.keep_credentials
                    && let Some(verifier) = verifiers.get(&event.provider)
                {
                    for name in verifier.secret_headers() {
                        event.headers.remove(name);
                    }
                }
            }
            let destination = this.route_event(&event)?;
            let receipt = ReceiptWriter::start(&event, &destination, config.echo_payload);
            let storage = this.publish(&destination, event).await?;
            Ok::<_, Refused>((receipt.finish(started, storage), "accepted"))
        };
        // A combinator, not a third `async` block: awaiting `accepting` there would move it
        // into a second slot of that block's state.
        accepting.map(move |accepted| match accepted {
            Ok((response, outcome)) => {
                tracing::Span::current().record("outcome", outcome);
                self.inner
                    .recorded
                    .answer(&label, response.status(), outcome);
                response
            }
            Err(refused) => {
                self.inner
                    .recorded
                    .refuse(Some(name.as_str()), &label, refused, trace_id)
            }
        })
    }

    /// The whole body, within the size limit, the byte budget and the body timeout.
    fn read_body<'a, B>(
        &'a self,
        body: B,
        held: &'a mut Held,
    ) -> impl Future<Output = Result<Bytes, Rejection>> + Send + 'a
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let config = &self.inner.config;
        let read = body::read(body, config.max_body_bytes, held);
        tokio::time::timeout(config.body_timeout, read).map(move |read| match read {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(ReadError::TooLarge)) => Err(Rejection::PayloadTooLarge {
                limit: config.max_body_bytes,
            }),
            Ok(Err(ReadError::Budget)) => Err(Rejection::Overloaded {
                retry_after: config.retry_after,
            }),
            Ok(Err(ReadError::Read)) => Err(Rejection::BodyRead),
            Err(_elapsed) => Err(Rejection::BodyTimeout {
                timeout: config.body_timeout,
            }),
        })
    }

    /// Publishes `event` to `destination` within the publish timeout, timed in
    /// [`INGEST_PUBLISH_SECONDS`](crate::metric::INGEST_PUBLISH_SECONDS).
    ///
    /// A plain `fn`, and a combinator rather than an `async` block: the event moves into the
    /// publisher's future here, and the future returned holds no other copy of it (nor a
    /// second slot for the timeout that an `.await` inside a block would move it into).
    fn publish<'a>(
        &'a self,
        destination: &'a str,
        event: WebhookEvent,
    ) -> impl Future<Output = Result<Storage, Refused>> + Send + 'a {
        let config = &self.inner.config;
        let id = event.id;
        let started = Instant::now();
        let publishing = tokio::time::timeout(
            config.publish_timeout,
            self.inner
                .publisher
                .publish_with_storage(destination, event),
        );
        publishing.map(move |published| {
            let published =
                published.unwrap_or(Err(PublishError::TimedOut(config.publish_timeout)));
            self.inner.recorded.publish(
                config.transport_name,
                observe::publish_outcome(&published),
                started.elapsed().as_secs_f64(),
            );
            match published {
                Ok(storage) => {
                    tracing::debug!(event_id = %id, destination, %storage, "webhook accepted");
                    Ok(storage)
                }
                Err(err) => {
                    let rejection = if err.is_retryable() {
                        Rejection::Unavailable {
                            event_id: id,
                            retry_after: config.retry_after,
                        }
                    } else {
                        Rejection::PublishRejected { event_id: id }
                    };
                    Err(Refused {
                        rejection,
                        destination: Some(destination.to_owned()),
                        error: Some(err),
                    })
                }
            }
        })
    }

    /// Verifies `event` with its provider's verifier, after the verifier's
    /// [`prepare`](crate::SignatureVerifier::prepare) step (a certificate fetch).
    async fn verify(
        &self,
        verifiers: &Verifiers,
        event: &WebhookEvent,
    ) -> Result<Option<Verified>, Rejection> {
        if let Some(prepare) = verifiers.prepare_event(event) {
            // On timeout the verifier answers `certificate_unavailable` from its cache.
            let _ = tokio::time::timeout(PREPARE_TIMEOUT, prepare).await;
        }
        verifiers.verify_event(event).map_err(|e| match e {
            VerifyError::CertificateUnavailable => Rejection::CertificateUnavailable {
                event_id: event.id,
                retry_after: self.inner.config.retry_after,
            },
            e => Rejection::Unauthorized {
                code: e.code(),
                message: e.to_string(),
                event_id: event.id,
            },
        })
    }

    /// Answers `event`, a request `handshake` recognised: verified first when the provider
    /// signs it, published only when the registry says so.
    async fn handshake(
        &self,
        verifiers: &Verifiers,
        handshake: &dyn Handshake,
        event: WebhookEvent,
    ) -> Result<Response<IngestBody>, Refused> {
        if handshake.is_signed() {
            self.verify(verifiers, &event).await?;
        }
        let answer = handshake
            .answer(&event)
            .await
            .map_err(Rejection::Handshake)?;
        if verifiers.is_publishing_handshakes() {
            let destination = self.route_event(&event)?;
            self.publish(&destination, event).await?;
        } else {
            tracing::debug!(event_id = %event.id, provider = %event.provider, "handshake answered");
        }
        let (status, headers, body) = answer.into_parts();
        let mut response = Response::new(IngestBody::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// The destination of `event`, recorded in the request's span; refused when the routing
    /// names a reserved destination.
    fn route_event(&self, event: &WebhookEvent) -> Result<String, Refused> {
        let destination = self.inner.config.routing.destination(event);
        tracing::Span::current().record("destination", destination.as_str());
        if is_reserved_destination(&destination) {
            // A routing mistake; the client learns only that its provider cannot be taken,
            // the log line names the destination.
            return Err(Refused {
                rejection: Rejection::ReservedDestination(event.provider.clone()),
                destination: Some(destination),
                error: None,
            });
        }
        Ok(destination)
    }
}

/// The event of a request whose body is still to be read: its `body` and `received_at` are
/// set once it is.
fn event_head(
    parts: http::request::Parts,
    provider: String,
    source_ip: Option<IpAddr>,
    trace: TraceContext,
) -> WebhookEvent {
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
    WebhookEvent {
        id,
        provider,
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: Bytes::new(),
        received_at: OffsetDateTime::UNIX_EPOCH,
        source_ip,
        correlation_id,
        content_type,
        trace: Some(trace),
    }
}

fn echo(body: &[u8]) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(body).ok()?;
    RawValue::from_string(text.to_owned())
        .ok()
        .or_else(|| serde_json::value::to_raw_value(text).ok())
}

/// `X-Request-ID`, else `X-Correlation-ID`, when it is short visible ASCII (it ends up in
/// logs and message headers).
fn request_id(headers: &HeaderMap) -> Option<String> {
    const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
    const X_CORRELATION_ID: http::HeaderName = http::HeaderName::from_static("x-correlation-id");
    let usable = |name| {
        let v = headers.get(name)?.to_str().ok()?;
        let ok = (1..=200).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| v.to_owned())
    };
    usable(X_REQUEST_ID).or_else(|| usable(X_CORRELATION_ID))
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
        let parent = TraceContext::from_headers(req.headers());
        let span = observe::span(parent.as_ref());
        // The span's own context: the hook's, else a child of the caller's, or a new trace.
        let trace = self
            .inner
            .config
            .on_span
            .as_ref()
            .and_then(|hook| hook(&span, parent.as_ref()))
            .unwrap_or_else(|| {
                parent
                    .as_ref()
                    .map_or_else(TraceContext::start, TraceContext::child)
            });
        observe::record_trace(&span, &trace);
        let provider = match self.route(&req) {
            Ok(provider) => provider,
            Err(rejection) => {
                let refused = rejection.into();
                return ResponseFuture::ready(span.in_scope(|| {
                    self.inner.recorded.refuse(
                        None,
                        &self.inner.labels.other(),
                        refused,
                        trace.trace_id(),
                    )
                }));
            }
        };
        span.record("provider", provider.as_str());
        match self.admit(&req, &provider) {
            Err(rejection) => {
                let label = self.label(Some(&provider));
                ResponseFuture::ready(span.in_scope(|| {
                    self.inner.recorded.refuse(
                        Some(&provider),
                        &label,
                        rejection.into(),
                        trace.trace_id(),
                    )
                }))
            }
            Ok(admission) => {
                let this = self.clone();
                let ingest = this.ingest(req, provider, admission, started, trace);
                ResponseFuture::pending(Box::pin(ingest.instrument(span)))
            }
        }
    }
}

/// Response future of [`IngestService`]: ready at once for requests rejected before the body
/// is read, so those cost no allocation (beyond the metric's labels).
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
    fn reserved_destinations() {
        for reserved in [
            "orders.dlq",
            "github.DLQ",
            ".dlq",
            "orders.retry.5s",
            "a.RETRY.b",
            ".retry.",
            "_",
            "__consumer_offsets",
            "_schemas",
        ] {
            assert!(is_reserved_destination(reserved), "{reserved}");
        }
        for free in [
            "",
            "dlq",
            "orders-dlq",
            "orders.dlq.archive",
            "retry",
            "orders.retry",
            "retry.orders",
            "orders_retry_5s",
            "a_b",
            "webhooks._x",
        ] {
            assert!(!is_reserved_destination(free), "{free}");
        }
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
