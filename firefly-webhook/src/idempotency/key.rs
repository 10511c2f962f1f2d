//! Provider-aware idempotency keys: recognise a provider's redelivery of the same webhook.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::event::WebhookEvent;

type KeyFn = dyn Fn(&WebhookEvent) -> Option<String> + Send + Sync;

/// Computes idempotency keys: custom rules per provider first, then the built-in rules.
///
/// The ingest-assigned event id is new for every delivery, so it cannot detect redeliveries.
/// Instead the key comes from the provider's own delivery id when there is one:
///
/// | provider            | source                                            |
/// |---------------------|---------------------------------------------------|
/// | GitHub              | `X-GitHub-Delivery` header                        |
/// | Standard Webhooks   | `webhook-id` header                               |
/// | Svix                | `svix-id` header                                  |
/// | Shopify             | `X-Shopify-Webhook-Id` header                     |
/// | Linear              | `Linear-Delivery` header                          |
/// | Stripe              | body `id` (when `Stripe-Signature` is present or the provider is `stripe`) |
/// | Slack               | body `event_id` (when `X-Slack-Signature` is present or the provider is `slack`) |
/// | Square              | body `event_id` (when a Square signature header is present or the provider is `square`) |
/// | anything else       | `sha256:` + SHA-256 of provider name and body      |
///
/// Keys are prefixed with the provider name, so two providers never collide. Add your own rule
/// per provider with [`IdempotencyKeys::provider`].
#[derive(Clone, Default)]
pub struct IdempotencyKeys {
    custom: HashMap<String, Arc<KeyFn>>,
}

impl fmt::Debug for IdempotencyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyKeys")
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

const HEADER_RULES: [&str; 5] = [
    "x-github-delivery",
    "webhook-id",
    "svix-id",
    "x-shopify-webhook-id",
    "linear-delivery",
];

impl IdempotencyKeys {
    /// The built-in rules only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `rule` for `provider`; when it returns `None` the built-in rules apply.
    #[must_use]
    pub fn provider<F>(mut self, provider: &str, rule: F) -> Self
    where
        F: Fn(&WebhookEvent) -> Option<String> + Send + Sync + 'static,
    {
        self.custom
            .insert(provider.to_ascii_lowercase(), Arc::new(rule));
        self
    }

    /// The key for `event`, always prefixed with `{provider}:`.
    pub fn key(&self, event: &WebhookEvent) -> String {
        let id = self
            .custom
            .get(&event.provider)
            .and_then(|rule| rule(event))
            .or_else(|| builtin(event))
            .unwrap_or_else(|| content_hash(event));
        let mut key = String::with_capacity(event.provider.len() + 1 + id.len());
        key.push_str(&event.provider);
        key.push(':');
        key.push_str(&id);
        key
    }
}

/// The key for `event` under the built-in rules (see [`IdempotencyKeys`]).
pub fn idempotency_key(event: &WebhookEvent) -> String {
    IdempotencyKeys::default().key(event)
}

fn builtin(event: &WebhookEvent) -> Option<String> {
    for name in HEADER_RULES {
        if let Some(v) = event.header(name).filter(|v| !v.is_empty()) {
            return Some(v.to_owned());
        }
    }
    let p = event.provider.as_str();
    let has = |h: &str| event.headers.contains_key(h);
    if p == "stripe" || has("stripe-signature") {
        return body_field(&event.body, Field::Id);
    }
    if p == "slack" || has("x-slack-signature") {
        return body_field(&event.body, Field::EventId);
    }
    if p == "square" || has("x-square-hmacsha256-signature") || has("x-square-signature") {
        return body_field(&event.body, Field::EventId);
    }
    None
}

#[derive(Clone, Copy)]
enum Field {
    Id,
    EventId,
}

fn body_field(body: &[u8], field: Field) -> Option<String> {
    #[derive(Deserialize)]
    struct Ids<'a> {
        #[serde(borrow, default)]
        id: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        event_id: Option<std::borrow::Cow<'a, str>>,
    }
    let ids: Ids<'_> = serde_json::from_slice(body).ok()?;
    match field {
        Field::Id => ids.id,
        Field::EventId => ids.event_id,
    }
    .filter(|s| !s.is_empty())
    .map(std::borrow::Cow::into_owned)
}

fn content_hash(event: &WebhookEvent) -> String {
    let mut h = Sha256::new();
    h.update(event.provider.as_bytes());
    h.update([0]);
    h.update(&event.body);
    let digest = h.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        use std::fmt::Write;
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn with_header(provider: &str, name: &'static str, value: &str, body: &str) -> WebhookEvent {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        WebhookEvent::new(provider, body.to_owned()).with_headers(h)
    }

    #[test]
    fn header_rules() {
        let keys = IdempotencyKeys::new();
        let e = with_header("github", "x-github-delivery", "72d3162e", "{}");
        assert_eq!(keys.key(&e), "github:72d3162e");
        let e = with_header("acme", "webhook-id", "msg_1", "{}");
        assert_eq!(keys.key(&e), "acme:msg_1");
        let e = with_header("shop", "x-shopify-webhook-id", "b54557e4", "{}");
        assert_eq!(keys.key(&e), "shop:b54557e4");
    }

    #[test]
    fn body_rules() {
        let e = with_header(
            "payments",
            "stripe-signature",
            "t=1,v1=x",
            r#"{"id":"evt_1","object":"event"}"#,
        );
        assert_eq!(idempotency_key(&e), "payments:evt_1");
        let e = WebhookEvent::new("slack", r#"{"type":"event_callback","event_id":"Ev01"}"#);
        assert_eq!(idempotency_key(&e), "slack:Ev01");
        let e = WebhookEvent::new("square", r#"{"event_id":"sq-1"}"#);
        assert_eq!(idempotency_key(&e), "square:sq-1");
    }

    #[test]
    fn fallback_hashes_provider_and_body_not_the_event_id() {
        let a = WebhookEvent::new("custom", "same body");
        let b = WebhookEvent::new("custom", "same body");
        let c = WebhookEvent::new("other", "same body");
        assert_ne!(a.id, b.id);
        assert_eq!(idempotency_key(&a), idempotency_key(&b));
        assert_ne!(idempotency_key(&a), idempotency_key(&c));
        assert!(idempotency_key(&a).starts_with("custom:sha256:"));
        // Stripe without an id falls back to the hash too.
        assert!(
            idempotency_key(&WebhookEvent::new("stripe", "not json")).starts_with("stripe:sha256:")
        );
    }

    #[test]
    fn custom_rule_wins() {
        let keys =
            IdempotencyKeys::new().provider("acme", |e| e.header("x-acme-id").map(str::to_owned));
        let e = with_header("acme", "x-acme-id", "42", "{}");
        assert_eq!(keys.key(&e), "acme:42");
        // No match: built-ins apply.
        assert!(
            keys.key(&WebhookEvent::new("acme", "x"))
                .starts_with("acme:sha256:")
        );
    }
}
