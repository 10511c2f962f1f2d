//! Message keys: which partition a webhook lands in.

use std::borrow::Cow;

use firefly_webhook::WebhookEvent;

/// How the Kafka message key is chosen. Messages with one key land in one partition, in order.
///
/// With the `serde` feature it is written `"idempotency_key"`, `"none"`, `"provider"`,
/// `"event_id"`, `{"header": "x-delivery-id"}` or `{"json_pointer": "/data/id"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum KeyStrategy {
    /// The webhook's idempotency key, so redeliveries of one webhook by its provider land in
    /// one partition (and reach one worker at a time).
    #[default]
    IdempotencyKey,
    /// No key: librdkafka spreads messages over partitions.
    None,
    /// The provider name: one provider's webhooks stay in order.
    Provider,
    /// The event id assigned at ingest.
    EventId,
    /// The first value of this HTTP header; no key when it is absent.
    Header(String),
    /// The value at this [JSON pointer](https://www.rfc-editor.org/rfc/rfc6901) in the body
    /// (strings as-is, other values as JSON); no key when the body is not JSON or the pointer
    /// does not resolve.
    JsonPointer(String),
}

impl KeyStrategy {
    /// A [`Header`](Self::Header) strategy.
    pub fn header(name: impl Into<String>) -> Self {
        Self::Header(name.into())
    }

    /// A [`JsonPointer`](Self::JsonPointer) strategy, e.g. `"/data/object/id"`.
    pub fn json_pointer(pointer: impl Into<String>) -> Self {
        Self::JsonPointer(pointer.into())
    }

    /// The key for `event`, or `None` for no key.
    pub fn key<'a>(&self, event: &'a WebhookEvent) -> Option<Cow<'a, [u8]>> {
        match self {
            Self::IdempotencyKey => Some(idempotency_key(event)),
            Self::None => None,
            Self::Provider => Some(Cow::Borrowed(event.provider.as_bytes())),
            Self::EventId => Some(Cow::Owned(event.id.to_string().into_bytes())),
            Self::Header(name) => event
                .headers
                .get(name.as_str())
                .map(|v| Cow::Borrowed(v.as_bytes())),
            Self::JsonPointer(pointer) => {
                let body: serde_json::Value = serde_json::from_slice(&event.body).ok()?;
                match body.pointer(pointer)? {
                    serde_json::Value::String(s) => Some(Cow::Owned(s.clone().into_bytes())),
                    serde_json::Value::Null => None,
                    other => Some(Cow::Owned(other.to_string().into_bytes())),
                }
            }
        }
    }
}

/// The provider-aware idempotency key (the provider's delivery id, else a content hash): the
/// one rule the worker's idempotency layer uses too.
fn idempotency_key(event: &WebhookEvent) -> Cow<'_, [u8]> {
    Cow::Owned(firefly_webhook::idempotency::idempotency_key(event).into_bytes())
}

#[cfg(test)]
mod tests {
    use firefly_webhook::http::HeaderMap;

    use super::*;

    fn event() -> WebhookEvent {
        let mut headers = HeaderMap::new();
        headers.insert("x-github-delivery", "abc-123".parse().unwrap());
        WebhookEvent::new(
            "github",
            r#"{"id":"evt_1","data":{"n":7,"nested":{"a":1},"nothing":null}}"#,
        )
        .with_headers(headers)
    }

    fn key(strategy: &KeyStrategy, event: &WebhookEvent) -> Option<Vec<u8>> {
        strategy.key(event).map(Cow::into_owned)
    }

    #[test]
    fn strategies() {
        let e = event();
        assert_eq!(key(&KeyStrategy::None, &e), None);
        assert_eq!(key(&KeyStrategy::Provider, &e).unwrap(), b"github");
        assert_eq!(
            key(&KeyStrategy::EventId, &e).unwrap(),
            e.id.to_string().as_bytes()
        );
        assert_eq!(
            key(&KeyStrategy::IdempotencyKey, &e).unwrap(),
            firefly_webhook::idempotency::idempotency_key(&e).as_bytes(),
            "a provider's redelivery gets the same key"
        );
        assert_eq!(
            key(&KeyStrategy::header("X-GitHub-Delivery"), &e).unwrap(),
            b"abc-123"
        );
        assert_eq!(key(&KeyStrategy::header("x-missing"), &e), None);
        assert_eq!(
            key(&KeyStrategy::json_pointer("/id"), &e).unwrap(),
            b"evt_1"
        );
        assert_eq!(
            key(&KeyStrategy::json_pointer("/data/n"), &e).unwrap(),
            b"7"
        );
        assert_eq!(
            key(&KeyStrategy::json_pointer("/data/nested"), &e).unwrap(),
            br#"{"a":1}"#
        );
        assert_eq!(key(&KeyStrategy::json_pointer("/data/nothing"), &e), None);
        assert_eq!(key(&KeyStrategy::json_pointer("/nope"), &e), None);
        let binary = WebhookEvent::new("x", vec![0xff, 0x00]);
        assert_eq!(key(&KeyStrategy::json_pointer("/id"), &binary), None);
    }
}
