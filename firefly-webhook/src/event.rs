//! The webhook as it was received.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use bytes::Bytes;
use http::{HeaderMap, Method};
use time::OffsetDateTime;
use uuid::Uuid;

/// The identifier the gateway assigns to every accepted webhook: a UUIDv7, so ids sort by
/// arrival time.
///
/// A provider that redelivers the same webhook gets a *new* `EventId`; use the idempotency key
/// (see [`crate::idempotency`]) to recognise redeliveries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for EventId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One webhook exactly as a provider sent it, plus what the gateway learned while receiving it.
///
/// The body is the raw bytes received (binary, empty and non-UTF-8 bodies survive unchanged) and
/// `headers` keeps every value of every header, in the order received. Signature verification
/// and idempotency keys work on these bytes, never on a re-serialised form.
///
/// Build one with [`WebhookEvent::new`] and the `with_*` methods; the fields are public for
/// reading and for adjusting in tests.
#[derive(Clone)]
#[non_exhaustive]
pub struct WebhookEvent {
    /// Assigned at ingest.
    pub id: EventId,
    /// The provider name from the request path (lower case, `a-z0-9._-`).
    pub provider: String,
    /// The HTTP method of the original request (normally `POST`).
    pub method: Method,
    /// The request path as received, e.g. `/api/v1/webhook/github`.
    pub path: String,
    /// The raw query string, without the `?`, when there was one.
    pub query: Option<String>,
    /// All request headers with all their values.
    pub headers: HeaderMap,
    /// The request body, byte for byte.
    pub body: Bytes,
    /// When the gateway finished reading the request.
    pub received_at: OffsetDateTime,
    /// The client address: the socket peer, or the forwarded client when the peer is a trusted proxy.
    pub source_ip: Option<IpAddr>,
    /// `X-Request-ID` when the request carried a usable one, otherwise the event id.
    pub correlation_id: String,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<String>,
}

impl WebhookEvent {
    /// A `POST` event for `provider` with the given body, a fresh id, received now.
    pub fn new(provider: impl Into<String>, body: impl Into<Bytes>) -> Self {
        let id = EventId::new();
        let provider = provider.into();
        Self {
            id,
            path: format!("/api/v1/webhook/{provider}"),
            provider,
            method: Method::POST,
            query: None,
            headers: HeaderMap::new(),
            body: body.into(),
            received_at: OffsetDateTime::now_utc(),
            source_ip: None,
            correlation_id: id.to_string(),
            content_type: None,
        }
    }

    /// Replaces the headers (and takes `content_type` from them).
    #[must_use]
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.headers = headers;
        self
    }

    /// Sets the event id.
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Sets the request path.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets the query string (without `?`).
    #[must_use]
    pub fn with_query(mut self, query: Option<String>) -> Self {
        self.query = query;
        self
    }

    /// Sets the source address.
    #[must_use]
    pub fn with_source_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.source_ip = ip;
        self
    }

    /// Sets the receive time.
    #[must_use]
    pub fn with_received_at(mut self, at: OffsetDateTime) -> Self {
        self.received_at = at;
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = id.into();
        self
    }

    /// Copies the body and header values into buffers of their own.
    ///
    /// Bodies and header values parsed by hyper are slices of its connection read buffer, so an
    /// event kept around (queued in memory) would keep that whole buffer alive. Transports that
    /// hold events call this first.
    pub fn detach(&mut self) {
        self.body = Bytes::copy_from_slice(&self.body);
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            // A value that was valid stays valid when copied; `from_bytes` only re-checks it.
            if let Ok(mut copy) = http::HeaderValue::from_bytes(value.as_bytes()) {
                copy.set_sensitive(value.is_sensitive());
                headers.append(name.clone(), copy);
            }
        }
        self.headers = headers;
    }

    /// The first value of header `name` as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Number of header values (a header sent twice counts twice).
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }
}

impl fmt::Debug for WebhookEvent {
    // Header values may carry credentials (Authorization, signatures) and bodies may carry
    // personal data: Debug shows only their shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEvent")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("header_names", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("received_at", &self.received_at)
            .field("source_ip", &self.source_ip)
            .field("correlation_id", &self.correlation_id)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_ordered() {
        let a = EventId::new();
        let b = EventId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<EventId>().unwrap(), a);
    }

    #[test]
    fn detach_keeps_content() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        let shared = Bytes::from_static(b"0123456789");
        let mut event = WebhookEvent::new("p", shared.slice(2..5)).with_headers(headers.clone());
        event.detach();
        assert_eq!(&event.body[..], b"234");
        assert_eq!(event.headers, headers);
    }

    #[test]
    fn debug_hides_header_values_and_body() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer s3cr3t".parse().unwrap());
        let event = WebhookEvent::new("github", "top secret body").with_headers(headers);
        let debug = format!("{event:?}");
        assert!(!debug.contains("s3cr3t"));
        assert!(!debug.contains("top secret"));
        assert!(debug.contains("authorization"));
    }
}
