//! Signature verification: the [`SignatureVerifier`] port, the per-provider [`Verifiers`]
//! registry and the [`VerifyLayer`] middleware.
//!
//! One registry serves both places a webhook is checked:
//!
//! - **at ingest**, [`IngestService::verifiers`](crate::IngestService::verifiers) refuses a
//!   forged, tampered or replayed request with `401` and a JSON error code before anything is
//!   published;
//! - **in the worker**, [`VerifyLayer`] re-checks the consumed [`WebhookEvent`] (same bytes,
//!   same verifiers) and fails it with a permanent error instead of calling the processor.
//!
//! Providers without a verifier pass through unless the registry
//! [requires verification](Verifiers::require_verification).
//!
//! # Example
//!
//! ```
//! use firefly_webhook::verify::{GitHub, SecretSet, StandardWebhooks, Stripe, Verifiers};
//! use firefly_webhook::{IngestService, memory::MemoryBroker};
//!
//! # fn main() -> Result<(), firefly_webhook::verify::ConfigError> {
//! let verifiers = Verifiers::new()
//!     .provider("github", GitHub::new("It's a Secret to Everybody"))
//!     .provider("stripe", Stripe::new(SecretSet::new("whsec_new").with("whsec_old")))
//!     .provider("acme", StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?)
//!     .require_verification(true);
//!
//! let ingest = IngestService::new(MemoryBroker::new(1024).publisher()).verifiers(verifiers);
//! # let _ = ingest;
//! # Ok(()) }
//! ```
//!
//! Or, in an application built on the examples' `stack` crate, from the environment (the crate
//! itself reads no environment; a [`Scheme`] builds a verifier from configuration):
//!
//! ```text
//! FIREFLY_VERIFY_GITHUB=github
//! FIREFLY_SECRET_GITHUB=new-secret,old-secret
//! ```
//!
//! # Time
//!
//! Timestamp tolerances and secret expiry are judged at the event's *reference time*: the
//! earlier of [`WebhookEvent::received_at`] and the registry's [`Clock`]. At ingest the two
//! coincide; in a worker the event's `received_at` (carried with it through the broker) wins, so
//! an event accepted at ingest is still accepted when it is re-verified minutes later, while a
//! replayed request is refused in both places. Every comparison of signatures or tokens is
//! constant-time.

mod clock;
mod handshake;
mod layer;
mod scheme;
mod schemes;
mod secret;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use time::OffsetDateTime;

pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::handshake::{
    CloudEventsOrigin, DiscordPing, DropboxChallenge, GraphValidation, Handshake, HandshakeError,
    HandshakeResponse, MAX_CHALLENGE_LEN, MetaVerifyToken, OktaVerification, SlackUrlVerification,
    TwitchCallbackVerification, WithHandshake, XCrc, ZoomUrlValidation,
};
pub use self::layer::{ResponseFuture, Verify, VerifyLayer};
pub use self::scheme::{Scheme, SchemeOptions, UnknownScheme};
pub(crate) use self::schemes::body_delivery_id;
pub use self::schemes::{
    Algorithm, ApiKey, Basic, Bitbucket, BoxWebhooks, Calendly, DocuSign, Encoding, GenericHmac,
    GitHub, GitLab, HubSpot, Intercom, Linear, Mailgun, Meta, Paddle, Shopify, Slack, Square,
    StandardWebhooks, Stripe, Teams, Twilio, Twitch, Typeform, Zendesk, Zoom,
};
pub use self::schemes::{
    Discord, GraphClientState, HttpsFetcher, MAX_CACHED, PayPal, RETRY_FAILED_AFTER, SendGrid, Sns,
    SnsSubscription, Telnyx, TrustedUrl,
};
pub use self::secret::{Secret, SecretSet};
use crate::event::WebhookEvent;
use crate::metric;

/// Checks one provider's signature scheme.
///
/// Implementations are synchronous (HMAC is CPU-bound and fast) and object-safe, so a registry
/// holds them as `Arc<dyn SignatureVerifier>`. They must compare secrets in constant time and
/// never log secret material.
pub trait SignatureVerifier: Send + Sync + 'static {
    /// Verifies `request`; `Ok` says which secret matched.
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError>;

    /// The headers that carry the shared secret itself (a token, a password), as opposed to a
    /// signature derived from it. The ingest service removes them from a verified event before
    /// publishing, unless told to [keep them](crate::IngestService::keep_credentials).
    ///
    /// Default: none, right for every signature scheme (an HMAC does not reveal its key).
    fn secret_headers(&self) -> &[HeaderName] {
        &[]
    }

    /// The provider's delivery id, when this scheme's signature covers it: the id a redelivery
    /// repeats and a forger cannot change without breaking the signature. The idempotency keys
    /// use it (see [`IdempotencyKeys`](crate::idempotency::IdempotencyKeys)).
    ///
    /// It is read, not checked: call it on a request that [`verify`](Self::verify) accepted.
    /// Return only what the signature covers — an id in a header that is not signed can be
    /// changed on a replayed request, and then the replay would not look like a duplicate.
    ///
    /// Default: `None` (the key then comes from the body, which every scheme signs).
    fn delivery_id<'a>(&self, _request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        None
    }

    /// What must be fetched before [`verify`](Self::verify) can decide `request`: a future
    /// that fills the verifier's cache (the signing certificate of AWS SNS or PayPal), or
    /// `None` when nothing is missing. The ingest service and [`VerifyLayer`] await it
    /// (bounded by [`PREPARE_TIMEOUT`]) before verifying; `verify` itself stays synchronous
    /// and only reads the cache. See [`Sns`] for why a certificate fetch fits this way.
    ///
    /// Default: `None`, right for every scheme whose keys are in the configuration.
    fn prepare(&self, _request: &SignedRequest<'_>) -> Option<crate::BoxFuture<()>> {
        None
    }

    /// The provider's endpoint [`Handshake`], when this verifier comes with one (see
    /// [`WithHandshake`]). Default: none.
    fn handshake(&self) -> Option<&dyn Handshake> {
        None
    }
}

/// How long the ingest service and [`VerifyLayer`] wait for a verifier's
/// [`prepare`](SignatureVerifier::prepare) step (a certificate fetch) before verifying without
/// it.
pub const PREPARE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl<V: SignatureVerifier + ?Sized> SignatureVerifier for Arc<V> {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        (**self).verify(request)
    }

    fn prepare(&self, request: &SignedRequest<'_>) -> Option<crate::BoxFuture<()>> {
        (**self).prepare(request)
    }

    fn handshake(&self) -> Option<&dyn Handshake> {
        (**self).handshake()
    }

    fn secret_headers(&self) -> &[HeaderName] {
        (**self).secret_headers()
    }

    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        (**self).delivery_id(request)
    }
}

impl<V: SignatureVerifier + ?Sized> SignatureVerifier for Box<V> {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        (**self).verify(request)
    }

    fn prepare(&self, request: &SignedRequest<'_>) -> Option<crate::BoxFuture<()>> {
        (**self).prepare(request)
    }

    fn handshake(&self) -> Option<&dyn Handshake> {
        (**self).handshake()
    }

    fn secret_headers(&self) -> &[HeaderName] {
        (**self).secret_headers()
    }

    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        (**self).delivery_id(request)
    }
}

/// What a verifier sees: the raw body, all headers, the public URL of the request and the
/// time to judge timestamps at.
#[derive(Clone, Copy)]
pub struct SignedRequest<'a> {
    body: &'a [u8],
    headers: &'a HeaderMap,
    public_url: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    now: OffsetDateTime,
}

impl<'a> SignedRequest<'a> {
    /// A `POST` with this body and headers, judged at the current system time, with no URL.
    pub fn new(body: &'a [u8], headers: &'a HeaderMap) -> Self {
        Self {
            body,
            headers,
            public_url: None,
            method: "POST",
            path: "",
            query: None,
            now: OffsetDateTime::now_utc(),
        }
    }

    /// The request that `event` was, judged at its `received_at`.
    pub fn from_event(event: &'a WebhookEvent) -> Self {
        Self {
            body: &event.body,
            headers: &event.headers,
            public_url: None,
            method: event.method.as_str(),
            path: &event.path,
            query: event.query.as_deref(),
            now: event.received_at,
        }
    }

    /// Judges timestamps and secret expiry at `now`.
    #[must_use]
    pub fn at(mut self, now: OffsetDateTime) -> Self {
        self.now = now;
        self
    }

    /// The externally visible base URL (scheme, host and optional port, e.g.
    /// `https://hooks.example.com`) that the path is appended to.
    #[must_use]
    pub fn public_url(mut self, base: &'a str) -> Self {
        self.public_url = Some(base.trim_end_matches('/'));
        self
    }

    /// The request path and raw query string (without `?`).
    #[must_use]
    pub fn target(mut self, path: &'a str, query: Option<&'a str>) -> Self {
        self.path = path;
        self.query = query;
        self
    }

    /// The HTTP method (default `POST`), for schemes that sign it (HubSpot).
    #[must_use]
    pub fn method(mut self, method: &'a str) -> Self {
        self.method = method;
        self
    }

    /// The HTTP method, upper case as sent.
    pub fn method_str(&self) -> &'a str {
        self.method
    }

    /// The raw body bytes.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// All headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The time to judge timestamps and secret expiry at.
    pub fn now(&self) -> OffsetDateTime {
        self.now
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The first value of header `name`: [`VerifyError::MissingSignature`] when absent,
    /// [`VerifyError::MalformedSignature`] when it is not visible ASCII or is blank.
    pub fn require_header(&self, name: &str) -> Result<&'a str, VerifyError> {
        let value = self
            .headers
            .get(name)
            .ok_or(VerifyError::MissingSignature)?;
        let text = value
            .to_str()
            .map_err(|_| VerifyError::MalformedSignature)?
            .trim();
        if text.is_empty() {
            return Err(VerifyError::MalformedSignature);
        }
        Ok(text)
    }

    /// The full public URL (`public_url` + path + `?query`), when a public URL is known.
    pub fn url(&self) -> Option<String> {
        let base = self.public_url?;
        let mut url = String::with_capacity(
            base.len() + self.path.len() + self.query.map_or(0, |q| q.len() + 1),
        );
        url.push_str(base);
        url.push_str(self.path);
        if let Some(query) = self.query {
            url.push('?');
            url.push_str(query);
        }
        Some(url)
    }
}

impl fmt::Debug for SignedRequest<'_> {
    // Header values and bodies may be credentials or personal data: show only their shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRequest")
            .field("body_len", &self.body.len())
            .field("header_names", &self.headers.keys().collect::<Vec<_>>())
            .field("public_url", &self.public_url)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// A successful verification: which secret matched, so rotations can be monitored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    secret_index: usize,
    secret_label: Option<Arc<str>>,
    signed_at: Option<OffsetDateTime>,
}

impl Verified {
    /// Secret number `secret_index` of its [`SecretSet`] matched.
    pub fn new(secret_index: usize) -> Self {
        Self {
            secret_index,
            secret_label: None,
            signed_at: None,
        }
    }

    /// Adds the matching secret's label.
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.secret_label = Some(Arc::from(label.into()));
        self
    }

    pub(crate) fn with_label_arc(mut self, label: Option<Arc<str>>) -> Self {
        self.secret_label = label;
        self
    }

    /// Adds the signed timestamp the provider sent.
    #[must_use]
    pub fn with_signed_at(mut self, at: OffsetDateTime) -> Self {
        self.signed_at = Some(at);
        self
    }

    /// Index of the matching secret in its set (0 is the first).
    pub fn secret_index(&self) -> usize {
        self.secret_index
    }

    /// Label of the matching secret, if it has one.
    pub fn secret_label(&self) -> Option<&str> {
        self.secret_label.as_deref()
    }

    /// The timestamp covered by the signature, for timestamped schemes.
    pub fn signed_at(&self) -> Option<OffsetDateTime> {
        self.signed_at
    }
}

/// Why a signature was refused. Each maps to a machine-readable [`code`](Self::code), sent in
/// the JSON body of the ingest's `401`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature header is absent.
    #[error("signature header is missing")]
    MissingSignature,
    /// The signature header cannot be parsed.
    #[error("signature header is malformed")]
    MalformedSignature,
    /// No secret produces this signature.
    #[error("signature does not match")]
    InvalidSignature,
    /// The signed timestamp is too old or too far in the future.
    #[error("signature timestamp is outside the tolerance")]
    TimestampOutOfTolerance,
    /// Verification is required and this provider has no verifier.
    #[error("no verifier is configured for this provider")]
    UnknownProvider,
    /// The signing certificate's URL is not `https` on the provider's host, or what it holds
    /// is not a usable certificate (does not parse, expired).
    #[error("the signing certificate is not trusted")]
    UntrustedCertificate,
    /// The signing certificate could not be fetched (yet); the provider should retry.
    #[error("the signing certificate is unavailable, retry later")]
    CertificateUnavailable,
}

impl VerifyError {
    /// The machine-readable code: `missing_signature`, `malformed_signature`,
    /// `invalid_signature`, `timestamp_out_of_tolerance`, `unknown_provider`,
    /// `untrusted_certificate` or `certificate_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::InvalidSignature => "invalid_signature",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Self::UnknownProvider => "unknown_provider",
            Self::UntrustedCertificate => "untrusted_certificate",
            Self::CertificateUnavailable => "certificate_unavailable",
        }
    }
}

/// A verifier or the registry could not be built. Messages name the offending setting and
/// never contain secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A secret is not in the form the scheme needs (e.g. a `whsec_` key that is not base64).
    #[error("secret #{index} is invalid: {reason}")]
    InvalidSecret {
        /// Position of the secret in its set.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A setting other than a secret is invalid.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The setting, e.g. `header name` or `template`.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Verifiers by provider name: the registry used at ingest and by [`VerifyLayer`].
///
/// Cloning is cheap (one `Arc`). Provider names are matched case-insensitively.
///
/// ```
/// use firefly_webhook::WebhookEvent;
/// use firefly_webhook::http::HeaderMap;
/// use firefly_webhook::verify::{GitHub, Verifiers, VerifyError};
///
/// let verifiers = Verifiers::new().provider("github", GitHub::new("It's a Secret to Everybody"));
///
/// // GitHub's documented example (docs.github.com, "Validating webhook deliveries").
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     "x-hub-signature-256",
///     "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".parse().unwrap(),
/// );
/// let event = WebhookEvent::new("github", "Hello, World!").with_headers(headers);
/// let verified = verifiers.verify_event(&event).unwrap().expect("github has a verifier");
/// assert_eq!(verified.secret_index(), 0);
///
/// let forged = WebhookEvent::new("github", "Hello, World?").with_headers(event.headers.clone());
/// assert_eq!(verifiers.verify_event(&forged), Err(VerifyError::InvalidSignature));
///
/// // No verifier and not required: passes unverified.
/// assert_eq!(verifiers.verify_event(&WebhookEvent::new("other", "{}")), Ok(None));
/// ```
#[derive(Clone, Default)]
pub struct Verifiers {
    inner: Arc<Registry>,
}

#[derive(Clone)]
struct Registry {
    by_provider: HashMap<String, Arc<dyn SignatureVerifier>>,
    handshakes: HashMap<String, Arc<dyn Handshake>>,
    publish_handshakes: bool,
    require: bool,
    public_url: Option<String>,
    clock: Arc<dyn Clock>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            by_provider: HashMap::new(),
            handshakes: HashMap::new(),
            publish_handshakes: false,
            require: false,
            public_url: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut providers: Vec<_> = self.inner.by_provider.keys().collect();
        providers.sort();
        f.debug_struct("Verifiers")
            .field("providers", &providers)
            .field("require", &self.inner.require)
            .field("public_url", &self.inner.public_url)
            .finish_non_exhaustive()
    }
}

impl Verifiers {
    /// An empty registry: every provider passes unverified.
    pub fn new() -> Self {
        Self::default()
    }

    fn registry_mut(&mut self) -> &mut Registry {
        Arc::make_mut(&mut self.inner)
    }

    /// Verifies `provider`'s requests with `verifier` (replacing any earlier one).
    #[must_use]
    pub fn provider(mut self, provider: &str, verifier: impl SignatureVerifier) -> Self {
        self.registry_mut()
            .by_provider
            .insert(provider.to_ascii_lowercase(), Arc::new(verifier));
        self
    }

    /// Answers `provider`'s endpoint handshake with `handshake`, replacing the one its verifier
    /// comes with (see [`SignatureVerifier::handshake`]); e.g. [`CloudEventsOrigin`] beside any
    /// scheme. A provider with a handshake accepts the `GET` / `OPTIONS` requests it
    /// [lists](Handshake::methods).
    #[must_use]
    pub fn handshake(mut self, provider: &str, handshake: impl Handshake) -> Self {
        self.registry_mut()
            .handshakes
            .insert(provider.to_ascii_lowercase(), Arc::new(handshake));
        self
    }

    /// Publish handshake requests too, after answering them (default `false`: a handshake is
    /// answered and nothing is published).
    #[must_use]
    pub fn publish_handshakes(mut self, publish: bool) -> Self {
        self.registry_mut().publish_handshakes = publish;
        self
    }

    /// Whether handshake requests are published.
    pub fn is_publishing_handshakes(&self) -> bool {
        self.inner.publish_handshakes
    }

    /// The handshake of `provider`: the one [set](Self::handshake) for it, else its verifier's.
    pub fn handshake_of(&self, provider: &str) -> Option<&dyn Handshake> {
        let map = &self.inner.handshakes;
        let set = match map.get(provider) {
            Some(h) => Some(h),
            None if provider.bytes().any(|b| b.is_ascii_uppercase()) => {
                map.get(&provider.to_ascii_lowercase())
            }
            None => None,
        };
        match set {
            Some(h) => Some(&**h),
            None => self.lookup(provider)?.handshake(),
        }
    }

    /// What `event`'s verifier must fetch before it can verify it (see
    /// [`SignatureVerifier::prepare`]); `None` when nothing.
    pub fn prepare_event(&self, event: &WebhookEvent) -> Option<crate::BoxFuture<()>> {
        let verifier = self.lookup(&event.provider)?;
        verifier.prepare(&SignedRequest::from_event(event))
    }

    /// When `true`, providers without a verifier are refused with `unknown_provider`.
    #[must_use]
    pub fn require_verification(mut self, require: bool) -> Self {
        self.registry_mut().require = require;
        self
    }

    /// The public base URL (e.g. `https://hooks.example.com`) that request paths are appended
    /// to for schemes that sign the URL (Twilio, Square).
    #[must_use]
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.registry_mut().public_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// The clock bounding the reference time (default: the system clock). Tests use a
    /// [`ManualClock`] to verify fixed, documented test vectors.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.registry_mut().clock = Arc::new(clock);
        self
    }

    /// Whether providers without a verifier are refused.
    pub fn is_required(&self) -> bool {
        self.inner.require
    }

    /// The configured public base URL.
    pub fn public_url_str(&self) -> Option<&str> {
        self.inner.public_url.as_deref()
    }

    /// The verifier of `provider`, if one is configured.
    pub fn get(&self, provider: &str) -> Option<&dyn SignatureVerifier> {
        self.lookup(provider).map(|v| &**v)
    }

    /// The configured provider names, sorted.
    pub fn providers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.inner.by_provider.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    fn lookup(&self, provider: &str) -> Option<&Arc<dyn SignatureVerifier>> {
        let map = &self.inner.by_provider;
        match map.get(provider) {
            Some(v) => Some(v),
            None if provider.bytes().any(|b| b.is_ascii_uppercase()) => {
                map.get(&provider.to_ascii_lowercase())
            }
            None => None,
        }
    }

    /// The time `event` is judged at: the earlier of its `received_at` and the clock.
    pub fn reference_time(&self, event: &WebhookEvent) -> OffsetDateTime {
        self.inner.clock.now().min(event.received_at)
    }

    /// The delivery id that `event`'s verifier declares signed (see
    /// [`SignatureVerifier::delivery_id`]); `None` when the provider has no verifier or its
    /// scheme signs no id. It does not verify `event`.
    pub fn delivery_id<'a>(&self, event: &'a WebhookEvent) -> Option<Cow<'a, str>> {
        let request = SignedRequest::from_event(event);
        self.lookup(&event.provider)?.delivery_id(&request)
    }

    /// Verifies `event` with its provider's verifier. `Ok(None)`: no verifier, not required.
    pub fn verify_event(&self, event: &WebhookEvent) -> Result<Option<Verified>, VerifyError> {
        let Some(verifier) = self.lookup(&event.provider) else {
            if self.inner.require {
                record(
                    "unconfigured",
                    &Err::<Verified, _>(VerifyError::UnknownProvider),
                );
                return Err(VerifyError::UnknownProvider);
            }
            return Ok(None);
        };
        let mut request = SignedRequest::from_event(event).at(self.reference_time(event));
        if let Some(url) = &self.inner.public_url {
            request = request.public_url(url);
        }
        let result = verifier.verify(&request);
        record(&event.provider, &result);
        match &result {
            Ok(v) => tracing::debug!(
                event_id = %event.id,
                provider = %event.provider,
                secret_index = v.secret_index(),
                secret_label = v.secret_label(),
                "signature verified"
            ),
            Err(e) => tracing::debug!(
                event_id = %event.id,
                provider = %event.provider,
                code = e.code(),
                "signature refused"
            ),
        }
        result.map(Some)
    }
}

fn record(provider: &str, result: &Result<Verified, VerifyError>) {
    match result {
        Ok(v) => {
            let secret = v
                .secret_label()
                .map_or_else(|| v.secret_index().to_string(), str::to_owned);
            metrics::counter!(
                metric::VERIFICATIONS_TOTAL,
                metric::PROVIDER => provider.to_owned(),
                metric::OUTCOME => "verified",
                metric::SECRET => secret,
            )
            .increment(1);
        }
        Err(e) => metrics::counter!(
            metric::VERIFICATIONS_TOTAL,
            metric::PROVIDER => provider.to_owned(),
            metric::OUTCOME => e.code(),
        )
        .increment(1),
    }
}

/// Lets [`VerifyLayer`] wrap services over plain events.
impl AsRef<WebhookEvent> for WebhookEvent {
    fn as_ref(&self) -> &WebhookEvent {
        self
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn codes_are_stable() {
        let all = [
            (VerifyError::MissingSignature, "missing_signature"),
            (VerifyError::MalformedSignature, "malformed_signature"),
            (VerifyError::InvalidSignature, "invalid_signature"),
            (
                VerifyError::TimestampOutOfTolerance,
                "timestamp_out_of_tolerance",
            ),
            (VerifyError::UnknownProvider, "unknown_provider"),
            (VerifyError::UntrustedCertificate, "untrusted_certificate"),
            (
                VerifyError::CertificateUnavailable,
                "certificate_unavailable",
            ),
        ];
        for (err, code) in all {
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn require_header_distinguishes_missing_and_malformed() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ok", HeaderValue::from_static(" v "));
        headers.insert("x-blank", HeaderValue::from_static(""));
        headers.insert("x-bin", HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap());
        let req = SignedRequest::new(b"", &headers);
        assert_eq!(req.require_header("x-ok"), Ok("v"));
        assert_eq!(
            req.require_header("x-none"),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            req.require_header("x-blank"),
            Err(VerifyError::MalformedSignature)
        );
        assert_eq!(
            req.require_header("x-bin"),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn url_joins_base_path_and_query() {
        let headers = HeaderMap::new();
        let req = SignedRequest::new(b"", &headers)
            .public_url("https://h.example/")
            .target("/api/v1/webhook/twilio", Some("a=1"));
        assert_eq!(
            req.url().as_deref(),
            Some("https://h.example/api/v1/webhook/twilio?a=1")
        );
        assert_eq!(SignedRequest::new(b"", &headers).url(), None);
    }

    #[test]
    fn unknown_providers_pass_unless_required() {
        let event = WebhookEvent::new("nobody", "{}");
        assert_eq!(Verifiers::new().verify_event(&event), Ok(None));
        assert_eq!(
            Verifiers::new()
                .require_verification(true)
                .verify_event(&event),
            Err(VerifyError::UnknownProvider)
        );
    }

    #[test]
    fn provider_lookup_ignores_case_and_builders_copy_on_write() {
        let a = Verifiers::new().provider("GitHub", GitHub::new("s"));
        let b = a.clone().require_verification(true);
        assert!(!a.is_required());
        assert!(b.is_required());
        assert!(a.get("github").is_some());
        assert!(a.get("GITHUB").is_some());
        assert_eq!(a.providers(), vec!["github"]);
        assert!(format!("{a:?}").contains("github"));
    }

    #[test]
    fn verifiers_declare_only_the_ids_their_signatures_cover() {
        const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let v = Verifiers::new()
            .provider("std", StandardWebhooks::new(KEY).unwrap())
            .provider("svix", StandardWebhooks::svix(KEY).unwrap())
            .provider("stripe", Stripe::new("s"))
            .provider("slack", Slack::new("s"))
            .provider("square", Square::new("s"))
            .provider("paddle", Paddle::new("s"))
            .provider("intercom", Intercom::new("s"))
            .provider("linear", Linear::new("s"))
            .provider("github", GitHub::new("s"))
            .provider("shopify", Shopify::new("s"))
            .provider("zoom", Zoom::new("s"));
        let event = |provider: &str, headers: &[(&'static str, &str)], body: &str| {
            let mut h = HeaderMap::new();
            for (name, value) in headers {
                h.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            WebhookEvent::new(provider, body.to_owned()).with_headers(h)
        };
        let id = |e: &WebhookEvent| v.delivery_id(e).map(Cow::into_owned);
        let body = r#"{"id":"a","event_id":"b","notification_id":"c","webhookTimestamp":1}"#;
        for (provider, expected) in [
            ("stripe", Some("a")),
            ("slack", Some("b")),
            ("square", Some("b")),
            ("paddle", Some("b")),
            ("intercom", Some("a")),
            // Signed only the body, their delivery headers are not ids.
            ("github", None),
            ("shopify", None),
            ("zoom", None),
            ("nobody", None),
        ] {
            let e = event(
                provider,
                &[
                    ("x-github-delivery", "h"),
                    ("x-shopify-webhook-id", "h"),
                    ("webhook-id", "h"),
                ],
                body,
            );
            assert_eq!(id(&e).as_deref(), expected, "{provider}");
        }
        assert_eq!(
            id(&event("std", &[("webhook-id", "msg_1")], "{}")).as_deref(),
            Some("msg_1")
        );
        assert_eq!(
            id(&event("svix", &[("svix-id", "msg_2")], "{}")).as_deref(),
            Some("msg_2")
        );
        assert_eq!(id(&event("std", &[], "{}")), None);
        // Linear: the body without its timestamp, which retries change.
        let linear = |ts: u64| {
            id(&event(
                "linear",
                &[],
                &format!(r#"{{"a":1,"webhookTimestamp":{ts}}}"#),
            ))
        };
        assert_eq!(linear(1), linear(2));
        assert_ne!(
            linear(1),
            id(&event("linear", &[], r#"{"a":2,"webhookTimestamp":1}"#))
        );
        // No id, or not a string: none.
        assert_eq!(id(&event("stripe", &[], r#"{"id":""}"#)), None);
        assert_eq!(id(&event("stripe", &[], r#"{"id":7}"#)), None);
        assert_eq!(id(&event("slack", &[], "token=x&command=%2Fhi")), None);
    }

    #[test]
    fn reference_time_is_the_earlier_of_received_at_and_clock() {
        let event = WebhookEvent::new("x", "");
        let past = ManualClock::at_unix(1_000);
        assert_eq!(
            Verifiers::new()
                .clock(past.clone())
                .reference_time(&event)
                .unix_timestamp(),
            1_000
        );
        assert_eq!(Verifiers::new().reference_time(&event), event.received_at);
    }
}
