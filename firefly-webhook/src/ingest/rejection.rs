//! Every way the ingest service can refuse a request, each with one status code and JSON body.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::event::EventId;
use crate::json::json_response;
use crate::verify::HandshakeError;

/// The body of every ingest response.
pub type IngestBody = crate::json::JsonBody;

/// Why a webhook was not accepted.
///
/// Each variant maps to one HTTP status and a JSON body of the form
/// `{"status":"rejected","code":"…","message":"…","eventId":"…"}` (`eventId` only when one was
/// assigned before the failure).
///
/// | status | `code` | variant | body read? |
/// | --- | --- | --- | --- |
/// | 404 | `not_found` | [`NotFound`](Self::NotFound) | no |
/// | 405 | `method_not_allowed` (+ `Allow: POST`) | [`MethodNotAllowed`](Self::MethodNotAllowed) | no |
/// | 400 | `invalid_provider` | [`InvalidProvider`](Self::InvalidProvider) | no |
/// | 400 | `reserved_destination` | [`ReservedDestination`](Self::ReservedDestination) | provider: no; routed destination: yes, never published |
/// | 404 | `unknown_provider` | [`UnknownProvider`](Self::UnknownProvider) | no |
/// | 401 | `unknown_provider` (verification required, no verifier) | [`Unauthorized`](Self::Unauthorized) | no |
/// | 413 | `payload_too_large` | [`PayloadTooLarge`](Self::PayloadTooLarge) | declared: no; streamed: up to the limit |
/// | 403 | `ip_not_allowed` | [`IpNotAllowed`](Self::IpNotAllowed) | no |
/// | 429 | `rate_limited` (+ `Retry-After`) | [`RateLimited`](Self::RateLimited) | no |
/// | 503 | `overloaded` (+ `Retry-After`) | [`Overloaded`](Self::Overloaded) | in-flight cap, declared length: no; streamed body: up to the budget |
/// | 408 | `body_timeout` (+ `Connection: close`) | [`BodyTimeout`](Self::BodyTimeout) | partly |
/// | 400 | `body_read_failed` | [`BodyRead`](Self::BodyRead) | partly |
/// | 401 | `invalid_signature`, `missing_signature`, … | [`Unauthorized`](Self::Unauthorized) | yes |
/// | 503 | `certificate_unavailable` (+ `Retry-After`) | [`CertificateUnavailable`](Self::CertificateUnavailable) | yes |
/// | 403, 400, 502 | `handshake_refused`, `malformed_handshake`, `handshake_failed` | [`Handshake`](Self::Handshake) | yes |
/// | 503 | `broker_unavailable` (+ `Retry-After`) | [`Unavailable`](Self::Unavailable) | yes |
/// | 500 | `publish_rejected` | [`PublishRejected`](Self::PublishRejected) | yes |
///
/// Every rejection counts in [`INGEST_REJECTED_TOTAL`](crate::metric::INGEST_REJECTED_TOTAL).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// 404: the path is not `{prefix}/{provider}`.
    #[error("no webhook endpoint at this path")]
    NotFound,
    /// 405: only `POST` is accepted (and `GET` / `OPTIONS` for providers whose endpoint
    /// handshake arrives with them).
    #[error("method not allowed; use POST")]
    MethodNotAllowed,
    /// 400: the provider segment is not 1–64 characters of `a-z0-9._-`.
    #[error("invalid provider name: use 1-64 characters of a-z, 0-9, '.', '_' and '-'")]
    InvalidProvider,
    /// 400: the provider name, or the destination it is routed to, collides with the broker
    /// topology (see [`is_reserved_destination`](super::is_reserved_destination)). Holds the
    /// provider name; a routed destination is only logged.
    #[error("provider `{0}` is or routes to a reserved destination name")]
    ReservedDestination(String),
    /// 404: the provider is not in the configured allowlist.
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    /// 403: the client address is outside the provider's
    /// [IP allowlist](super::IngestService::allow_ips).
    #[error("the client address is not allowed for this provider")]
    IpNotAllowed,
    /// 429: a [rate limit](super::IngestService::rate_limit_per_ip) is exhausted; the response
    /// carries `Retry-After`.
    #[error("too many requests, retry later")]
    RateLimited {
        /// When a request from this client / for this provider can be admitted again.
        retry_after: Duration,
    },
    /// 503: too many requests in flight or too many body bytes being read at once (see
    /// [`max_in_flight`](super::IngestService::max_in_flight) and
    /// [`body_budget`](super::IngestService::body_budget)); answered at once, never queued.
    #[error("the gateway is overloaded, retry later")]
    Overloaded {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// 408: the body did not arrive within the [body timeout](super::IngestService::body_timeout).
    /// The response carries `Connection: close`.
    #[error("the request body did not arrive within {timeout:?}")]
    BodyTimeout {
        /// The configured timeout.
        timeout: Duration,
    },
    /// 413: the body is larger than the configured limit.
    #[error("payload exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// 400: the request body could not be read.
    #[error("request body could not be read")]
    BodyRead,
    /// 401: signature verification failed.
    #[error("{message}")]
    Unauthorized {
        /// Machine-readable code (`invalid_signature`, `missing_signature`, ...).
        code: &'static str,
        /// Human-readable explanation.
        message: String,
        /// The event id assigned before verification.
        event_id: EventId,
    },
    /// 503: the broker could not take the event now; the client should retry.
    #[error("broker unavailable, retry later")]
    Unavailable {
        /// The event id that was assigned and not accepted.
        event_id: EventId,
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// 500: the broker refused the event.
    #[error("the broker rejected the webhook")]
    PublishRejected {
        /// The event id that was assigned and not accepted.
        event_id: EventId,
    },
    /// 503: the provider's signing certificate could not be fetched (see
    /// [`VerifyError::CertificateUnavailable`](crate::verify::VerifyError::CertificateUnavailable));
    /// the provider should retry.
    #[error("the signing certificate is unavailable, retry later")]
    CertificateUnavailable {
        /// The event id assigned before verification.
        event_id: EventId,
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// 403, 400 or 502: the provider's endpoint handshake was refused or failed (see
    /// [`HandshakeError`]).
    #[error("{0}")]
    Handshake(HandshakeError),
}

/// The JSON body of every [`Rejection`].
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Rejection))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody<'a> {
    /// Always `rejected`.
    #[cfg_attr(feature = "openapi", schema(example = "rejected"))]
    status: &'static str,
    /// Machine-readable: what went wrong (one per status; see each response).
    code: &'a str,
    /// Human-readable explanation; may change between versions.
    message: String,
    /// The event id, when one was assigned before the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    event_id: Option<EventId>,
}

impl Rejection {
    /// Every status and `code` an ingest answer can carry, with when: what the OpenAPI
    /// description lists (tested against the variants below).
    #[cfg(any(test, feature = "openapi"))]
    pub(crate) const CATALOGUE: &'static [(StatusCode, &'static str, &'static str)] = &[
        (
            StatusCode::BAD_REQUEST,
            "invalid_provider",
            "the provider segment is not 1-64 characters of a-z, 0-9, '.', '_' and '-'",
        ),
        (
            StatusCode::BAD_REQUEST,
            "reserved_destination",
            "the provider, or the destination it routes to, is a reserved broker name (`*.dlq`, `*.retry.*`, `_*`)",
        ),
        (
            StatusCode::BAD_REQUEST,
            "body_read_failed",
            "the request body could not be read",
        ),
        (
            StatusCode::UNAUTHORIZED,
            "missing_signature",
            "the provider's signature header is absent",
        ),
        (
            StatusCode::UNAUTHORIZED,
            "malformed_signature",
            "the signature header cannot be parsed",
        ),
        (
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "no configured secret produces the signature",
        ),
        (
            StatusCode::UNAUTHORIZED,
            "timestamp_out_of_tolerance",
            "the signed timestamp is too old or in the future",
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unknown_provider",
            "verification is required and the provider has no verifier",
        ),
        (
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            "the client address is outside the provider's IP allowlist",
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "the path is not `{prefix}/{provider}`",
        ),
        (
            StatusCode::NOT_FOUND,
            "unknown_provider",
            "the provider is not in the allowlist",
        ),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only POST is accepted (`Allow: POST`)",
        ),
        (
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the body did not arrive within the body timeout (`Connection: close`)",
        ),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is larger than the limit",
        ),
        (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "a per-IP or per-provider rate limit is exhausted (`Retry-After`)",
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "publish_rejected",
            "the broker refused the event; retrying the same request will not help",
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests or body bytes in flight; shed before the body is read (`Retry-After`)",
        ),
        (
            StatusCode::UNAUTHORIZED,
            "untrusted_certificate",
            "the signing certificate's URL is not on the provider's https host, or it is not a valid certificate",
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "certificate_unavailable",
            "the provider's signing certificate could not be fetched (`Retry-After`)",
        ),
        (
            StatusCode::FORBIDDEN,
            "handshake_refused",
            "the endpoint handshake's verify token or origin is not the configured one",
        ),
        (
            StatusCode::BAD_REQUEST,
            "malformed_handshake",
            "the endpoint handshake has no usable challenge",
        ),
        (
            StatusCode::BAD_GATEWAY,
            "handshake_failed",
            "confirming the endpoint handshake with the provider failed",
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "the broker did not confirm the event in time or is unreachable (`Retry-After`)",
        ),
    ];

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::UnknownProvider(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidProvider | Self::ReservedDestination(_) | Self::BodyRead => {
                StatusCode::BAD_REQUEST
            }
            Self::IpNotAllowed => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Overloaded { .. }
            | Self::Unavailable { .. }
            | Self::CertificateUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Handshake(e) => e.status(),
            Self::PublishRejected { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidProvider => "invalid_provider",
            Self::ReservedDestination(_) => "reserved_destination",
            Self::UnknownProvider(_) => "unknown_provider",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded { .. } => "overloaded",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BodyRead => "body_read_failed",
            Self::Unauthorized { code, .. } => code,
            Self::Unavailable { .. } => "broker_unavailable",
            Self::PublishRejected { .. } => "publish_rejected",
            Self::CertificateUnavailable { .. } => "certificate_unavailable",
            Self::Handshake(e) => e.code(),
        }
    }

    /// The event id, when one was assigned before the failure.
    pub fn event_id(&self) -> Option<EventId> {
        match self {
            Self::Unauthorized { event_id, .. }
            | Self::Unavailable { event_id, .. }
            | Self::CertificateUnavailable { event_id, .. }
            | Self::PublishRejected { event_id } => Some(*event_id),
            _ => None,
        }
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<IngestBody> {
        let body = ErrorBody {
            status: "rejected",
            code: self.code(),
            message: self.to_string(),
            event_id: self.event_id(),
        };
        let mut response = json_response(self.status(), &body);
        let headers = response.headers_mut();
        match self {
            Self::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Self::Unavailable { retry_after, .. }
            | Self::CertificateUnavailable { retry_after, .. }
            | Self::RateLimited { retry_after }
            | Self::Overloaded { retry_after } => {
                headers.insert(header::RETRY_AFTER, retry_after_secs(retry_after).into());
            }
            Self::BodyTimeout { .. } => {
                // The rest of the body may still be on its way; don't read it.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// Whole seconds, rounded up and at least 1: `Retry-After: 0` would invite a retry storm.
fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(rejection: Rejection) -> http::HeaderMap {
        rejection.into_response().headers().clone()
    }

    #[test]
    fn edge_rejections_have_one_status_and_code() {
        let after = Duration::from_millis(1500);
        let cases = [
            (
                Rejection::ReservedDestination("a.dlq".into()),
                StatusCode::BAD_REQUEST,
                "reserved_destination",
            ),
            (
                Rejection::IpNotAllowed,
                StatusCode::FORBIDDEN,
                "ip_not_allowed",
            ),
            (
                Rejection::RateLimited { retry_after: after },
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
            ),
            (
                Rejection::Overloaded { retry_after: after },
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
            ),
            (
                Rejection::BodyTimeout {
                    timeout: Duration::from_secs(30),
                },
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
            ),
        ];
        for (rejection, status, code) in cases {
            assert_eq!(rejection.status(), status);
            assert_eq!(rejection.code(), code);
            assert_eq!(rejection.event_id(), None);
        }
    }

    #[test]
    fn the_catalogue_lists_every_answer() {
        use crate::verify::VerifyError;

        let id = EventId::new();
        let after = Duration::from_secs(1);
        let unauthorized = |e: VerifyError| Rejection::Unauthorized {
            code: e.code(),
            message: e.to_string(),
            event_id: id,
        };
        // A new variant must be added here (the match does not compile otherwise) and to
        // the catalogue.
        let every = |r: &Rejection| match r {
            Rejection::NotFound
            | Rejection::MethodNotAllowed
            | Rejection::InvalidProvider
            | Rejection::ReservedDestination(_)
            | Rejection::UnknownProvider(_)
            | Rejection::IpNotAllowed
            | Rejection::RateLimited { .. }
            | Rejection::Overloaded { .. }
            | Rejection::BodyTimeout { .. }
            | Rejection::PayloadTooLarge { .. }
            | Rejection::BodyRead
            | Rejection::Unauthorized { .. }
            | Rejection::Unavailable { .. }
            | Rejection::PublishRejected { .. }
            | Rejection::CertificateUnavailable { .. }
            | Rejection::Handshake(_) => (),
        };
        let verify = |e: &VerifyError| match e {
            VerifyError::MissingSignature
            | VerifyError::MalformedSignature
            | VerifyError::InvalidSignature
            | VerifyError::TimestampOutOfTolerance
            | VerifyError::UnknownProvider
            | VerifyError::UntrustedCertificate => (),
            // Not a 401: its own rejection.
            VerifyError::CertificateUnavailable => unreachable!(),
        };
        let mut all = vec![
            Rejection::NotFound,
            Rejection::MethodNotAllowed,
            Rejection::InvalidProvider,
            Rejection::ReservedDestination("a.dlq".into()),
            Rejection::UnknownProvider("x".into()),
            Rejection::IpNotAllowed,
            Rejection::RateLimited { retry_after: after },
            Rejection::Overloaded { retry_after: after },
            Rejection::BodyTimeout { timeout: after },
            Rejection::PayloadTooLarge { limit: 1 },
            Rejection::BodyRead,
            Rejection::Unavailable {
                event_id: id,
                retry_after: after,
            },
            Rejection::PublishRejected { event_id: id },
            Rejection::CertificateUnavailable {
                event_id: id,
                retry_after: after,
            },
            Rejection::Handshake(HandshakeError::Refused),
            Rejection::Handshake(HandshakeError::Malformed),
            Rejection::Handshake(HandshakeError::Failed),
        ];
        for e in [
            VerifyError::MissingSignature,
            VerifyError::MalformedSignature,
            VerifyError::InvalidSignature,
            VerifyError::TimestampOutOfTolerance,
            VerifyError::UnknownProvider,
            VerifyError::UntrustedCertificate,
        ] {
            verify(&e);
            all.push(unauthorized(e));
        }
        for r in &all {
            every(r);
            assert!(
                Rejection::CATALOGUE
                    .iter()
                    .any(|(s, c, _)| *s == r.status() && *c == r.code()),
                "{} {} missing",
                r.status(),
                r.code()
            );
        }
        assert_eq!(
            all.len(),
            Rejection::CATALOGUE.len(),
            "nothing listed twice"
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        for (after, secs) in [
            (0, "1"),
            (1, "1"),
            (999, "1"),
            (1000, "1"),
            (1001, "2"),
            (7000, "7"),
        ] {
            let h = headers(Rejection::RateLimited {
                retry_after: Duration::from_millis(after),
            });
            assert_eq!(h[header::RETRY_AFTER], secs, "{after} ms");
        }
        let h = headers(Rejection::BodyTimeout {
            timeout: Duration::from_secs(1),
        });
        assert_eq!(h[header::CONNECTION], "close");
        assert!(!h.contains_key(header::RETRY_AFTER));
    }
}
