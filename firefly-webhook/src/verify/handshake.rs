//! Endpoint handshakes: the [`Handshake`] port and the providers' handshakes.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use super::schemes::{Algorithm, token_eq};
use super::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};
use crate::event::WebhookEvent;

/// The longest challenge echoed back; longer ones are [`HandshakeError::Malformed`].
pub const MAX_CHALLENGE_LEN: usize = 2048;

/// An endpoint handshake: the requests a provider sends to prove that an endpoint is theirs
/// before (or while) delivering to it, answered synchronously in the provider's format.
///
/// A [`Handshake`] belongs to a provider's verifier configuration: the [`Scheme`](super::Scheme)
/// that says "this provider is Slack" attaches Slack's handshake to the verifier it builds
/// ([`SignatureVerifier::handshake`]), and [`Verifiers::handshake`](super::Verifiers::handshake)
/// adds or replaces one for a provider by hand (e.g. [`CloudEventsOrigin`] beside any scheme).
///
/// The ingest service, for a provider with a handshake:
///
/// - accepts `GET` and `OPTIONS` exactly when the handshake [lists](Handshake::methods) them
///   (everyone else still gets 405);
/// - asks the handshake whether a request [is one of its handshakes](Handshake::is_handshake);
/// - if the provider [signs](Handshake::is_signed) its handshakes, verifies the request with the
///   provider's verifier first (401 on failure, as for any webhook);
/// - answers with what [`Handshake::answer`] returns, or refuses with its [`HandshakeError`];
/// - does not publish the handshake, unless
///   [`Verifiers::publish_handshakes`](super::Verifiers::publish_handshakes) says so.
///
/// | provider | request | answer | signed |
/// | --- | --- | --- | --- |
/// | Slack ([`SlackUrlVerification`]) | `POST` `{"type":"url_verification","challenge":…}` | `{"challenge":…}` | yes |
/// | Zoom ([`ZoomUrlValidation`]) | `POST` `endpoint.url_validation` with `plainToken` | `{"plainToken":…,"encryptedToken":hex HMAC-SHA256}` | yes |
/// | Meta ([`MetaVerifyToken`]) | `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` | the challenge, `text/plain`; 403 on a wrong token | token |
/// | X ([`XCrc`]) | `GET ?crc_token=…` | `{"response_token":"sha256=<base64 HMAC-SHA256>"}` | no (the answer proves the secret) |
/// | Microsoft Graph ([`GraphValidation`]) | `POST ?validationToken=…` | the token, `text/plain` | no |
/// | Dropbox ([`DropboxChallenge`]) | `GET ?challenge=…` | the challenge, `text/plain`, `X-Content-Type-Options: nosniff` | no |
/// | Okta ([`OktaVerification`]) | `GET` with `X-Okta-Verification-Challenge` | `{"verification":…}` | no |
/// | Twitch ([`TwitchCallbackVerification`]) | `POST` `webhook_callback_verification` | the challenge, `text/plain` | yes |
/// | Discord ([`DiscordPing`]) | `POST` `{"type":1}` | `{"type":1}` | yes |
/// | AWS SNS ([`SnsSubscription`](super::SnsSubscription)) | `POST` `SubscriptionConfirmation` | `GET SubscribeURL` (SNS hosts only), then 200 | yes |
/// | CloudEvents / Azure Event Grid ([`CloudEventsOrigin`]) | `OPTIONS` with `WebHook-Request-Origin` | `WebHook-Allowed-Origin` (+ `WebHook-Allowed-Rate`) | no |
#[crate::async_trait]
pub trait Handshake: Send + Sync + 'static {
    /// The methods other than `POST` that this handshake arrives with (`GET`, `OPTIONS`); the
    /// ingest service answers 405 to them for providers without such a handshake.
    ///
    /// Default: none (the handshake is a `POST`).
    fn methods(&self) -> &[Method] {
        &[]
    }

    /// Whether the provider signs its handshake requests, so the provider's verifier must
    /// accept them before they are answered. Default: `true`.
    fn is_signed(&self) -> bool {
        true
    }

    /// Whether `event` is this handshake (cheap: reads the method, query, headers or body).
    fn is_handshake(&self, event: &WebhookEvent) -> bool;

    /// The answer to a handshake (called only when [`is_handshake`](Self::is_handshake) said
    /// so, and the request passed the verifier if the handshake [is signed](Self::is_signed)).
    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError>;
}

/// What a handshake answers: a status, headers and a body, sent as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl HandshakeResponse {
    /// `status` with an empty body.
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// `200` with `text` as `text/plain; charset=utf-8`, marked `nosniff` (it echoes what the
    /// request sent).
    pub fn text(text: impl Into<String>) -> Self {
        let mut this = Self::empty(StatusCode::OK);
        this.body = Bytes::from(text.into());
        this.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        this.headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        this
    }

    /// `200` with `value` as `application/json`.
    pub fn json(value: &serde_json::Value) -> Self {
        let mut this = Self::empty(StatusCode::OK);
        // A `Value` always serialises.
        this.body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
        this.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        this
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Status, headers and body.
    pub fn into_parts(self) -> (StatusCode, HeaderMap, Bytes) {
        (self.status, self.headers, self.body)
    }
}

/// Why a handshake was not answered. Each maps to one status and
/// [`code`](Self::code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// 403 `handshake_refused`: the verify token does not match, the origin is not allowed,
    /// or the confirmation URL is not on the provider's host.
    #[error("handshake refused")]
    Refused,
    /// 400 `malformed_handshake`: the challenge is missing, too long or not text.
    #[error("the handshake request is malformed")]
    Malformed,
    /// 502 `handshake_failed`: confirming with the provider failed; it will ask again.
    #[error("confirming the handshake with the provider failed")]
    Failed,
}

impl HandshakeError {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Refused => StatusCode::FORBIDDEN,
            Self::Malformed => StatusCode::BAD_REQUEST,
            Self::Failed => StatusCode::BAD_GATEWAY,
        }
    }

    /// The machine-readable code: `handshake_refused`, `malformed_handshake` or
    /// `handshake_failed`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Refused => "handshake_refused",
            Self::Malformed => "malformed_handshake",
            Self::Failed => "handshake_failed",
        }
    }
}

/// A verifier with a handshake attached: what [`Scheme`](super::Scheme) builds for providers
/// that have one, and how to attach one to any verifier by hand.
///
/// ```
/// use firefly_webhook::verify::{Slack, SlackUrlVerification, Verifiers, WithHandshake};
///
/// let slack = WithHandshake::new(Slack::new("signing-secret"), SlackUrlVerification);
/// let verifiers = Verifiers::new().provider("slack", slack);
/// assert!(verifiers.handshake_of("slack").is_some());
/// ```
#[derive(Clone)]
pub struct WithHandshake<V> {
    verifier: V,
    handshake: Arc<dyn Handshake>,
}

impl<V: fmt::Debug> fmt::Debug for WithHandshake<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithHandshake")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl<V: SignatureVerifier> WithHandshake<V> {
    /// `verifier`, answering `handshake`.
    pub fn new(verifier: V, handshake: impl Handshake) -> Self {
        Self {
            verifier,
            handshake: Arc::new(handshake),
        }
    }

    /// The verifier.
    pub fn verifier(&self) -> &V {
        &self.verifier
    }
}

impl<V: SignatureVerifier> SignatureVerifier for WithHandshake<V> {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        self.verifier.verify(request)
    }

    fn secret_headers(&self) -> &[HeaderName] {
        self.verifier.secret_headers()
    }

    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        self.verifier.delivery_id(request)
    }

    fn prepare(&self, request: &SignedRequest<'_>) -> Option<crate::BoxFuture<()>> {
        self.verifier.prepare(request)
    }

    fn handshake(&self) -> Option<&dyn Handshake> {
        Some(&*self.handshake)
    }
}

/// A challenge that may be echoed: non-empty, at most [`MAX_CHALLENGE_LEN`] bytes, no control
/// characters.
fn echoable(challenge: &str) -> Result<&str, HandshakeError> {
    if challenge.is_empty()
        || challenge.len() > MAX_CHALLENGE_LEN
        || challenge.chars().any(char::is_control)
    {
        return Err(HandshakeError::Malformed);
    }
    Ok(challenge)
}

/// The first value of query parameter `name`.
fn query_param<'a>(event: &'a WebhookEvent, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(event.query.as_deref()?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// The first active secret's HMAC-SHA256 of `message`; [`HandshakeError::Refused`] when no
/// secret is active.
fn first_secret_mac(
    secrets: &SecretSet,
    event: &WebhookEvent,
    message: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    let (_, secret) = secrets
        .active(event.received_at)
        .next()
        .ok_or(HandshakeError::Refused)?;
    Ok(Algorithm::Sha256
        .mac(secret.expose_secret(), &[message])
        .as_slice()
        .to_vec())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Slack Events API `url_verification`: a signed `POST` of
/// `{"type":"url_verification","challenge":"…"}`, answered `{"challenge":"…"}`.
/// See <https://api.slack.com/events/url_verification>.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlackUrlVerification;

#[derive(Deserialize)]
struct TypeAndChallenge<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    challenge: Option<Cow<'a, str>>,
}

impl<'a> TypeAndChallenge<'a> {
    fn of(body: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}

#[crate::async_trait]
impl Handshake for SlackUrlVerification {
    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::POST
            && TypeAndChallenge::of(&event.body)
                .is_some_and(|b| b.kind.as_deref() == Some("url_verification"))
    }

    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        let body = TypeAndChallenge::of(&event.body).ok_or(HandshakeError::Malformed)?;
        let challenge = echoable(body.challenge.as_deref().unwrap_or(""))?;
        Ok(HandshakeResponse::json(
            &serde_json::json!({ "challenge": challenge }),
        ))
    }
}

/// Zoom `endpoint.url_validation`: a signed `POST` whose `payload.plainToken` is answered
/// `{"plainToken":"…","encryptedToken":"<hex HMAC-SHA256(secret token, plainToken)>"}`, with
/// the first active secret token.
/// See <https://developers.zoom.us/docs/api/webhooks/#validate-your-webhook-endpoint>.
#[derive(Debug, Clone)]
pub struct ZoomUrlValidation {
    secrets: SecretSet,
}

impl ZoomUrlValidation {
    /// Answers with these secret tokens (the first active one).
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
        }
    }
}

#[derive(Deserialize)]
struct ZoomEvent<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<ZoomPayload<'a>>,
}

#[derive(Deserialize)]
struct ZoomPayload<'a> {
    #[serde(rename = "plainToken", borrow, default)]
    plain_token: Option<Cow<'a, str>>,
}

#[crate::async_trait]
impl Handshake for ZoomUrlValidation {
    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::POST
            && serde_json::from_slice::<ZoomEvent<'_>>(&event.body)
                .is_ok_and(|e| e.event.as_deref() == Some("endpoint.url_validation"))
    }

    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        let body: ZoomEvent<'_> =
            serde_json::from_slice(&event.body).map_err(|_| HandshakeError::Malformed)?;
        let plain = body
            .payload
            .and_then(|p| p.plain_token)
            .ok_or(HandshakeError::Malformed)?;
        let plain = echoable(&plain)?;
        let encrypted = hex(&first_secret_mac(&self.secrets, event, plain.as_bytes())?);
        Ok(HandshakeResponse::json(&serde_json::json!({
            "plainToken": plain,
            "encryptedToken": encrypted,
        })))
    }
}

/// Meta (Facebook, Instagram, WhatsApp) webhook verification: `GET
/// ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` is answered with the challenge as
/// `text/plain` when the verify token is one of the configured ones, 403 `handshake_refused`
/// otherwise. The verify token is the one typed into the app dashboard, not the app secret.
/// See <https://developers.facebook.com/docs/graph-api/webhooks/getting-started#verification-requests>.
#[derive(Debug, Clone)]
pub struct MetaVerifyToken {
    tokens: SecretSet,
}

impl MetaVerifyToken {
    /// Accepts these verify tokens.
    pub fn new(tokens: impl Into<SecretSet>) -> Self {
        Self {
            tokens: tokens.into(),
        }
    }
}

#[crate::async_trait]
impl Handshake for MetaVerifyToken {
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    fn is_signed(&self) -> bool {
        false
    }

    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::GET && query_param(event, "hub.mode").is_some()
    }

    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        if query_param(event, "hub.mode").as_deref() != Some("subscribe") {
            return Err(HandshakeError::Malformed);
        }
        let token = query_param(event, "hub.verify_token").ok_or(HandshakeError::Refused)?;
        self.tokens
            .verify_with(event.received_at, |t| token_eq(token.as_bytes(), t))
            .map_err(|_| HandshakeError::Refused)?;
        let challenge = query_param(event, "hub.challenge").ok_or(HandshakeError::Malformed)?;
        Ok(HandshakeResponse::text(echoable(&challenge)?))
    }
}

/// X (Twitter) Account Activity CRC: `GET ?crc_token=…` is answered
/// `{"response_token":"sha256=<base64 HMAC-SHA256(consumer secret, crc_token)>"}` with the
/// first active consumer secret. The request is not signed; the answer proves the secret.
/// See <https://docs.x.com/x-api/webhooks/introduction#challenge-response-check-crc>.
#[derive(Debug, Clone)]
pub struct XCrc {
    secrets: SecretSet,
}

impl XCrc {
    /// Answers with these consumer secrets (the first active one).
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
        }
    }
}

#[crate::async_trait]
impl Handshake for XCrc {
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    fn is_signed(&self) -> bool {
        false
    }

    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::GET && query_param(event, "crc_token").is_some()
    }

    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        use base64::Engine as _;
        let token = query_param(event, "crc_token").ok_or(HandshakeError::Malformed)?;
        let token = echoable(&token)?;
        let mac = first_secret_mac(&self.secrets, event, token.as_bytes())?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(mac);
        Ok(HandshakeResponse::json(&serde_json::json!({
            "response_token": format!("sha256={encoded}"),
        })))
    }
}

/// Microsoft Graph change notifications, subscription validation: a `POST
/// ?validationToken=…` (unsigned, empty body) is answered with the decoded token as
/// `text/plain`, which Graph expects within 10 seconds. Notifications themselves are checked
/// by [`GraphClientState`](super::GraphClientState).
/// See <https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks#notificationurl-validation>.
#[derive(Debug, Clone, Copy, Default)]
pub struct GraphValidation;

#[crate::async_trait]
impl Handshake for GraphValidation {
    fn is_signed(&self) -> bool {
        false
    }

    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::POST && query_param(event, "validationToken").is_some()
    }

    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        let token = query_param(event, "validationToken").ok_or(HandshakeError::Malformed)?;
        Ok(HandshakeResponse::text(echoable(&token)?))
    }
}

/// Dropbox webhook verification: `GET ?challenge=…` is answered with the challenge as
/// `text/plain` with `X-Content-Type-Options: nosniff`, as Dropbox asks. Unsigned.
/// See <https://www.dropbox.com/developers/reference/webhooks#documentation>.
#[derive(Debug, Clone, Copy, Default)]
pub struct DropboxChallenge;

#[crate::async_trait]
impl Handshake for DropboxChallenge {
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    fn is_signed(&self) -> bool {
        false
    }

    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::GET && query_param(event, "challenge").is_some()
    }

    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        let challenge = query_param(event, "challenge").ok_or(HandshakeError::Malformed)?;
        Ok(HandshakeResponse::text(echoable(&challenge)?))
    }
}

const OKTA_CHALLENGE: &str = "x-okta-verification-challenge";

/// Okta event hooks, one-time verification: a `GET` with `X-Okta-Verification-Challenge` is
/// answered `{"verification":"<the header's value>"}`. Okta sends its configured
/// `Authorization` header with it, but the ingest service does not require it here (Okta
/// documents the check as the echo).
/// See <https://developer.okta.com/docs/concepts/event-hooks/#one-time-verification-request>.
#[derive(Debug, Clone, Copy, Default)]
pub struct OktaVerification;

#[crate::async_trait]
impl Handshake for OktaVerification {
    fn methods(&self) -> &[Method] {
        &[Method::GET]
    }

    fn is_signed(&self) -> bool {
        false
    }

    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::GET && event.headers.contains_key(OKTA_CHALLENGE)
    }

    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        let challenge = event
            .headers
            .get(OKTA_CHALLENGE)
            .and_then(|v| v.to_str().ok())
            .ok_or(HandshakeError::Malformed)?;
        Ok(HandshakeResponse::json(
            &serde_json::json!({ "verification": echoable(challenge.trim())? }),
        ))
    }
}

const TWITCH_MESSAGE_TYPE: &str = "twitch-eventsub-message-type";

/// Twitch EventSub `webhook_callback_verification`: a signed `POST` (header
/// `Twitch-Eventsub-Message-Type: webhook_callback_verification`) whose body's `challenge` is
/// answered as `text/plain`.
/// See <https://dev.twitch.tv/docs/eventsub/handling-webhook-events/#responding-to-a-challenge-request>.
#[derive(Debug, Clone, Copy, Default)]
pub struct TwitchCallbackVerification;

#[crate::async_trait]
impl Handshake for TwitchCallbackVerification {
    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::POST
            && event.headers.get(TWITCH_MESSAGE_TYPE).is_some_and(|v| {
                v.as_bytes()
                    .eq_ignore_ascii_case(b"webhook_callback_verification")
            })
    }

    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        let body = TypeAndChallenge::of(&event.body).ok_or(HandshakeError::Malformed)?;
        let challenge = echoable(body.challenge.as_deref().unwrap_or(""))?;
        Ok(HandshakeResponse::text(challenge))
    }
}

/// Discord interactions PING: a signed `POST` of `{"type":1}` is answered with the PONG
/// `{"type":1}`. Discord checks the endpoint with it, and with a badly signed one it expects
/// to be refused (401).
/// See <https://discord.com/developers/docs/interactions/receiving-and-responding#receiving-an-interaction>.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscordPing;

#[derive(Deserialize)]
struct InteractionType {
    #[serde(rename = "type")]
    kind: u64,
}

#[crate::async_trait]
impl Handshake for DiscordPing {
    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::POST
            && serde_json::from_slice::<InteractionType>(&event.body).is_ok_and(|i| i.kind == 1)
    }

    async fn answer(&self, _event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        Ok(HandshakeResponse::json(&serde_json::json!({ "type": 1 })))
    }
}

const REQUEST_ORIGIN: &str = "webhook-request-origin";
const ALLOWED_ORIGIN: HeaderName = HeaderName::from_static("webhook-allowed-origin");
const ALLOWED_RATE: HeaderName = HeaderName::from_static("webhook-allowed-rate");

/// The CloudEvents HTTP webhook abuse protection (used by Azure Event Grid): an `OPTIONS`
/// request with `WebHook-Request-Origin` is answered `200` with `WebHook-Allowed-Origin` (the
/// origin, when it is allowed), optionally `WebHook-Allowed-Rate`, and `Allow: POST`; an origin
/// that is not allowed gets 403 `handshake_refused`. Unsigned. The asynchronous variant
/// (`WebHook-Request-Callback`) is not followed.
/// See <https://github.com/cloudevents/spec/blob/main/cloudevents/http-webhook.md#4-abuse-protection>.
#[derive(Debug, Clone, Default)]
pub struct CloudEventsOrigin {
    origins: Option<Vec<String>>,
    rate: Option<u32>,
}

impl CloudEventsOrigin {
    /// Allows any origin.
    pub fn any() -> Self {
        Self::default()
    }

    /// Allows only these origins (host names, compared ignoring ASCII case).
    pub fn allow<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            origins: Some(origins.into_iter().map(Into::into).collect()),
            rate: None,
        }
    }

    /// Announces `WebHook-Allowed-Rate: <per_minute>` (requests per minute).
    #[must_use]
    pub fn rate(mut self, per_minute: u32) -> Self {
        self.rate = Some(per_minute);
        self
    }
}

#[crate::async_trait]
impl Handshake for CloudEventsOrigin {
    fn methods(&self) -> &[Method] {
        &[Method::OPTIONS]
    }

    fn is_signed(&self) -> bool {
        false
    }

    fn is_handshake(&self, event: &WebhookEvent) -> bool {
        event.method == Method::OPTIONS
    }

    async fn answer(&self, event: &WebhookEvent) -> Result<HandshakeResponse, HandshakeError> {
        let origin = event
            .headers
            .get(REQUEST_ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .ok_or(HandshakeError::Malformed)?;
        if let Some(allowed) = &self.origins
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
        {
            return Err(HandshakeError::Refused);
        }
        let origin = HeaderValue::from_str(origin).map_err(|_| HandshakeError::Malformed)?;
        let mut response = HandshakeResponse::empty(StatusCode::OK)
            .header(ALLOWED_ORIGIN, origin)
            .header(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        if let Some(rate) = self.rate {
            response = response.header(ALLOWED_RATE, HeaderValue::from(rate));
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Secret;

    fn get(query: &str) -> WebhookEvent {
        let mut e = WebhookEvent::new("p", "");
        e.method = Method::GET;
        e.query = Some(query.to_owned());
        e
    }

    fn post(body: &str) -> WebhookEvent {
        WebhookEvent::new("p", body.to_owned())
    }

    async fn answer(
        h: &dyn Handshake,
        e: &WebhookEvent,
    ) -> Result<HandshakeResponse, HandshakeError> {
        assert!(h.is_handshake(e));
        h.answer(e).await
    }

    fn body_str(r: &HandshakeResponse) -> &str {
        std::str::from_utf8(r.body()).unwrap()
    }

    fn content_type(r: &HandshakeResponse) -> &str {
        r.headers()[header::CONTENT_TYPE].to_str().unwrap()
    }

    #[tokio::test]
    async fn slack() {
        let e = post(
            r#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#,
        );
        let r = answer(&SlackUrlVerification, &e).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(content_type(&r), "application/json");
        assert_eq!(
            body_str(&r),
            r#"{"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#
        );
        assert!(!SlackUrlVerification.is_handshake(&post(r#"{"type":"event_callback"}"#)));
        assert!(!SlackUrlVerification.is_handshake(&post("token=x&command=/hi")));
        let missing = post(r#"{"type":"url_verification"}"#);
        assert_eq!(
            answer(&SlackUrlVerification, &missing).await,
            Err(HandshakeError::Malformed)
        );
    }

    #[tokio::test]
    async fn zoom() {
        // Zoom's documented example: plainToken qgg8vlvZRS6UYooatFL8Aw, secret token
        // (computed here independently with the hmac crate).
        let e = post(
            r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#,
        );
        let h = ZoomUrlValidation::new("zoom-secret");
        let r = answer(&h, &e).await.unwrap();
        let expected = hex(&crate::verify::schemes::testing::hmac256(
            b"zoom-secret",
            b"qgg8vlvZRS6UYooatFL8Aw",
        ));
        assert_eq!(
            body_str(&r),
            format!(r#"{{"encryptedToken":"{expected}","plainToken":"qgg8vlvZRS6UYooatFL8Aw"}}"#)
        );
        assert!(!h.is_handshake(&post(r#"{"event":"meeting.started"}"#)));
        let no_token = post(r#"{"event":"endpoint.url_validation","payload":{}}"#);
        assert_eq!(answer(&h, &no_token).await, Err(HandshakeError::Malformed));
        // With every secret expired there is nothing to answer with.
        let expired =
            ZoomUrlValidation::new(Secret::new("s").expires_at(time::OffsetDateTime::UNIX_EPOCH));
        assert_eq!(answer(&expired, &e).await, Err(HandshakeError::Refused));
    }

    #[tokio::test]
    async fn meta() {
        let h = MetaVerifyToken::new(SecretSet::new("new-token").with("old-token"));
        assert_eq!(h.methods(), [Method::GET]);
        for token in ["new-token", "old-token"] {
            let e = get(&format!(
                "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}"
            ));
            let r = answer(&h, &e).await.unwrap();
            assert_eq!(body_str(&r), "1158201444");
            assert_eq!(content_type(&r), "text/plain; charset=utf-8");
        }
        let wrong = get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess");
        assert_eq!(answer(&h, &wrong).await, Err(HandshakeError::Refused));
        let none = get("hub.mode=subscribe&hub.challenge=1");
        assert_eq!(answer(&h, &none).await, Err(HandshakeError::Refused));
        let other_mode = get("hub.mode=unsubscribe&hub.verify_token=new-token&hub.challenge=1");
        assert_eq!(
            answer(&h, &other_mode).await,
            Err(HandshakeError::Malformed)
        );
        assert!(!h.is_handshake(&get("foo=1")));
        assert!(!h.is_handshake(&post("{}")));
        let encoded = get("hub.mode=subscribe&hub.challenge=a%20b&hub.verify_token=new%2Dtoken");
        assert_eq!(body_str(&answer(&h, &encoded).await.unwrap()), "a b");
    }

    #[tokio::test]
    async fn x_crc() {
        use base64::Engine as _;
        let h = XCrc::new("consumer-secret");
        let r = answer(&h, &get("crc_token=abc123&nonce=1")).await.unwrap();
        let mac = crate::verify::schemes::testing::hmac256(b"consumer-secret", b"abc123");
        let expected = base64::engine::general_purpose::STANDARD.encode(mac);
        assert_eq!(
            body_str(&r),
            format!(r#"{{"response_token":"sha256={expected}"}}"#)
        );
        assert_eq!(content_type(&r), "application/json");
        assert!(!h.is_handshake(&get("other=1")));
        assert_eq!(
            answer(&h, &get("crc_token=")).await,
            Err(HandshakeError::Malformed)
        );
    }

    #[tokio::test]
    async fn graph_dropbox_okta() {
        let mut e = post("");
        e.query = Some("validationToken=Validation%3A%20Testing%20client%20application".into());
        let r = answer(&GraphValidation, &e).await.unwrap();
        assert_eq!(body_str(&r), "Validation: Testing client application");
        assert_eq!(content_type(&r), "text/plain; charset=utf-8");
        assert!(!GraphValidation.is_handshake(&post(r#"{"value":[]}"#)));

        let r = answer(&DropboxChallenge, &get("challenge=xyz"))
            .await
            .unwrap();
        assert_eq!(body_str(&r), "xyz");
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(
            answer(
                &DropboxChallenge,
                &get(&format!("challenge={}", "a".repeat(3000)))
            )
            .await,
            Err(HandshakeError::Malformed)
        );
        assert_eq!(
            answer(&DropboxChallenge, &get("challenge=a%0Ab")).await,
            Err(HandshakeError::Malformed)
        );

        let mut e = get("");
        e.headers.insert(
            OKTA_CHALLENGE,
            HeaderValue::from_static("X1bfBQ9xHB6Ifv2ajXpo"),
        );
        let r = answer(&OktaVerification, &e).await.unwrap();
        assert_eq!(body_str(&r), r#"{"verification":"X1bfBQ9xHB6Ifv2ajXpo"}"#);
        assert!(!OktaVerification.is_handshake(&get("")));
    }

    #[tokio::test]
    async fn twitch_and_discord() {
        let mut e = post(
            r#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387"}}"#,
        );
        e.headers.insert(
            TWITCH_MESSAGE_TYPE,
            HeaderValue::from_static("webhook_callback_verification"),
        );
        let r = answer(&TwitchCallbackVerification, &e).await.unwrap();
        assert_eq!(body_str(&r), "pogchamp-kappa-360noscope-vohiyo");
        assert_eq!(content_type(&r), "text/plain; charset=utf-8");
        let mut n = post("{}");
        n.headers.insert(
            TWITCH_MESSAGE_TYPE,
            HeaderValue::from_static("notification"),
        );
        assert!(!TwitchCallbackVerification.is_handshake(&n));
        assert!(TwitchCallbackVerification.is_signed());

        let r = answer(
            &DiscordPing,
            &post(r#"{"type":1,"id":"1","application_id":"2"}"#),
        )
        .await
        .unwrap();
        assert_eq!(body_str(&r), r#"{"type":1}"#);
        assert!(!DiscordPing.is_handshake(&post(r#"{"type":2}"#)));
        assert!(DiscordPing.is_signed());
    }

    #[tokio::test]
    async fn cloudevents() {
        let mut e = post("");
        e.method = Method::OPTIONS;
        e.headers.insert(
            REQUEST_ORIGIN,
            HeaderValue::from_static("eventemitter.example.com"),
        );
        let r = answer(&CloudEventsOrigin::any().rate(120), &e)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[ALLOWED_ORIGIN], "eventemitter.example.com");
        assert_eq!(r.headers()[ALLOWED_RATE], "120");
        let only = CloudEventsOrigin::allow(["EventEmitter.example.com"]);
        let r = answer(&only, &e).await.unwrap();
        assert!(!r.headers().contains_key(ALLOWED_RATE));
        let other = CloudEventsOrigin::allow(["other.example"]);
        assert_eq!(answer(&other, &e).await, Err(HandshakeError::Refused));
        e.headers.remove(REQUEST_ORIGIN);
        assert_eq!(answer(&only, &e).await, Err(HandshakeError::Malformed));
    }

    #[test]
    fn errors_have_stable_codes_and_statuses() {
        for (e, status, code) in [
            (HandshakeError::Refused, 403, "handshake_refused"),
            (HandshakeError::Malformed, 400, "malformed_handshake"),
            (HandshakeError::Failed, 502, "handshake_failed"),
        ] {
            assert_eq!((e.status().as_u16(), e.code()), (status, code));
        }
    }
}
