//! Every way the ingest service can refuse a request, each with one status code and JSON body.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use crate::event::EventId;

/// The body of every ingest response.
pub type IngestBody = Full<Bytes>;

/// Why a webhook was not accepted.
///
/// Each variant maps to one HTTP status and a JSON body of the form
/// `{"status":"rejected","code":"…","message":"…","eventId":"…"}` (`eventId` only when one was
/// assigned before the failure).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// 404: the path is not `{prefix}/{provider}`.
    #[error("no webhook endpoint at this path")]
    NotFound,
    /// 405: only `POST` is accepted.
    #[error("method not allowed; use POST")]
    MethodNotAllowed,
    /// 400: the provider segment is not 1–64 characters of `a-z0-9._-`.
    #[error("invalid provider name: use 1-64 characters of a-z, 0-9, '.', '_' and '-'")]
    InvalidProvider,
    /// 404: the provider is not in the configured allowlist.
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
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
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    status: &'static str,
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<EventId>,
}

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::UnknownProvider(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidProvider | Self::BodyRead => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::PublishRejected { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidProvider => "invalid_provider",
            Self::UnknownProvider(_) => "unknown_provider",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BodyRead => "body_read_failed",
            Self::Unauthorized { code, .. } => code,
            Self::Unavailable { .. } => "broker_unavailable",
            Self::PublishRejected { .. } => "publish_rejected",
        }
    }

    /// The event id, when one was assigned before the failure.
    pub fn event_id(&self) -> Option<EventId> {
        match self {
            Self::Unauthorized { event_id, .. }
            | Self::Unavailable { event_id, .. }
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
            Self::Unavailable { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, retry_after.as_secs().max(1).into());
            }
            _ => {}
        }
        response
    }
}

pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<IngestBody> {
    // Receipts are ~400 bytes: one allocation instead of a chain of reallocations.
    let mut bytes = Vec::with_capacity(512);
    // Serialising these plain structs cannot fail; fall back to an empty object regardless.
    if serde_json::to_writer(&mut bytes, body).is_err() {
        bytes.clear();
        bytes.extend_from_slice(b"{}");
    }
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
