//! Provider-aware idempotency keys: recognise a provider's redelivery of the same webhook from
//! what the provider signed, so a replayed request cannot pass for a new delivery.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::event::WebhookEvent;
use crate::verify::{Verifiers, body_delivery_id};

type KeyFn = dyn Fn(&WebhookEvent) -> Option<String> + Send + Sync;

/// Longest id kept verbatim after the `{provider}:` prefix; a longer one is replaced by its
/// SHA-256 digest, so a key is at most the prefix plus this many bytes.
pub const MAX_ID_LEN: usize = 128;

/// Marks a body digest: `{provider}:sha256:{hex}`.
const BODY_DIGEST: &str = "sha256:";
/// Marks the digest of an id that is too long (or looks like a digest): `{provider}:id-sha256:{hex}`.
const ID_DIGEST: &str = "id-sha256:";

/// Computes idempotency keys from data the provider signed.
///
/// The ingest-assigned event id is new for every delivery, so it cannot detect redeliveries.
/// The provider's delivery id can — but only when the signature covers it. GitHub, for one,
/// signs only the body: its `X-GitHub-Delivery` header can be changed on a captured request,
/// and a key taken from it would let that replay through as a new event. So a key is `{provider}:`
/// followed by the first of:
///
/// 1. your [rule](Self::provider) for the provider, if it returns an id;
/// 2. the id the provider's verifier declares signed
///    ([`SignatureVerifier::delivery_id`](crate::verify::SignatureVerifier::delivery_id)),
///    when these keys know the [verifiers](Self::verifiers);
/// 3. for a provider *named* `stripe`, `slack`, `square`, `paddle`, `intercom` or `linear`,
///    the id its scheme reads from the body (the body is signed whatever the verifier, and
///    no header is read, so the name alone is safe to go by);
/// 4. `sha256:` and the SHA-256 (64 hex digits) of the provider name and the body.
///
/// | provider (verifier)                      | key after `{provider}:`                             |
/// |------------------------------------------|-----------------------------------------------------|
/// | Standard Webhooks ([`StandardWebhooks`]) | `webhook-id` header — signed with the body          |
/// | Svix ([`StandardWebhooks::svix`])        | `svix-id` header — signed with the body             |
/// | Stripe ([`Stripe`])                      | body `id` (`evt_…`)                                 |
/// | Slack ([`Slack`])                        | body `event_id` (Events API); else the body digest  |
/// | Square ([`Square`])                      | body `event_id`                                     |
/// | Paddle ([`Paddle`])                      | body `event_id`, else `notification_id`             |
/// | Intercom ([`Intercom`])                  | body `id` (the notification; retries change the body) |
/// | Linear ([`Linear`])                      | digest of the body without `webhookTimestamp` (which retries change) |
/// | GitHub, Shopify, GitLab, Zoom, Twilio, [`GenericHmac`], [`ApiKey`], [`Basic`] | body digest `sha256:…` |
/// | any provider without a verifier           | body digest, or the body id of rule 3               |
///
/// Without verifiers ([`IdempotencyKeys::new`]) no header is trusted: Standard Webhooks and
/// Svix fall back to the body digest too. Give the keys the same registry as the gateway
/// (the worker passes its own [`verifiers`](crate::worker::WorkerBuilder::verifiers) when the
/// keys have none). A declared id is read, not checked: the event is verified before its key
/// is claimed, at ingest or by the worker's [`VerifyLayer`](crate::verify::VerifyLayer).
///
/// What that means for the cases that matter:
///
/// - **a captured request replayed with a fresh delivery header** has the same signed id or
///   the same body, so the same key: a duplicate;
/// - **a provider's redelivery** (same delivery id, same body) is a duplicate;
/// - **two different bodies under one delivery id**: with a signed id they share the key and
///   the second is a duplicate (the signature says they are one message); with a body digest
///   they are two keys and both are processed — an unsigned header cannot vouch that they are
///   the same delivery, and a provider does not resend a delivery with another body;
/// - **one body under two delivery ids** (body-digest providers) is one key: identical signed
///   bytes are one event. Distinct events carry distinct content (ids, timestamps, the state
///   they report), so this only merges what a replay would.
///
/// An id longer than [`MAX_ID_LEN`] bytes, or one that starts like a digest, becomes
/// `id-sha256:` and its SHA-256 (hex), so a 400 kB header never makes a 400 kB key and the
/// provider prefix stays readable.
///
/// ```
/// use firefly_webhook::WebhookEvent;
/// use firefly_webhook::http::HeaderMap;
/// use firefly_webhook::idempotency::IdempotencyKeys;
/// use firefly_webhook::verify::{GitHub, StandardWebhooks, Verifiers};
///
/// # fn main() -> Result<(), firefly_webhook::verify::ConfigError> {
/// let verifiers = Verifiers::new()
///     .provider("github", GitHub::new("secret"))
///     .provider("acme", StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?);
/// let keys = IdempotencyKeys::new().verifiers(verifiers);
///
/// let delivered = |provider: &str, header: &'static str, id: &str, body: &str| {
///     let mut headers = HeaderMap::new();
///     headers.insert(header, id.parse().unwrap());
///     WebhookEvent::new(provider, body.to_owned()).with_headers(headers)
/// };
/// // GitHub signs the body only: a fresh delivery header does not make a new key.
/// let original = delivered("github", "x-github-delivery", "72d3162e", r#"{"zen":"hi"}"#);
/// let replayed = delivered("github", "x-github-delivery", "ffffffff", r#"{"zen":"hi"}"#);
/// assert_eq!(keys.key(&original), keys.key(&replayed));
/// assert!(keys.key(&original).starts_with("github:sha256:"));
/// // Standard Webhooks signs `webhook-id`: it is the key.
/// let message = delivered("acme", "webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek", "{}");
/// assert_eq!(keys.key(&message), "acme:msg_p5jXN8AQM9LWM0D4loKWxJek");
/// # Ok(()) }
/// ```
///
/// [`StandardWebhooks`]: crate::verify::StandardWebhooks
/// [`StandardWebhooks::svix`]: crate::verify::StandardWebhooks::svix
/// [`Stripe`]: crate::verify::Stripe
/// [`Slack`]: crate::verify::Slack
/// [`Square`]: crate::verify::Square
/// [`Paddle`]: crate::verify::Paddle
/// [`Intercom`]: crate::verify::Intercom
/// [`Linear`]: crate::verify::Linear
/// [`GenericHmac`]: crate::verify::GenericHmac
/// [`ApiKey`]: crate::verify::ApiKey
/// [`Basic`]: crate::verify::Basic
#[derive(Clone, Default)]
pub struct IdempotencyKeys {
    custom: HashMap<String, Arc<KeyFn>>,
    verifiers: Option<Verifiers>,
}

impl fmt::Debug for IdempotencyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyKeys")
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .field("verifiers", &self.verifiers)
            .finish()
    }
}

impl IdempotencyKeys {
    /// The built-in rules, without verifiers: only the body decides (see the table).
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the delivery ids these verifiers declare signed (rule 2).
    #[must_use]
    pub fn verifiers(mut self, verifiers: Verifiers) -> Self {
        self.verifiers = Some(verifiers);
        self
    }

    /// Uses `verifiers` unless verifiers were given already (the worker passes its own).
    #[must_use]
    pub(crate) fn or_verifiers(mut self, verifiers: Option<&Verifiers>) -> Self {
        if self.verifiers.is_none() {
            self.verifiers = verifiers.cloned();
        }
        self
    }

    /// Uses `rule` for `provider`; when it returns `None` (or an empty id) the other rules
    /// apply. The rule decides what is trusted: read only what the provider signs.
    #[must_use]
    pub fn provider<F>(mut self, provider: &str, rule: F) -> Self
    where
        F: Fn(&WebhookEvent) -> Option<String> + Send + Sync + 'static,
    {
        self.custom
            .insert(provider.to_ascii_lowercase(), Arc::new(rule));
        self
    }

    /// The key for `event`: `{provider}:` and at most [`MAX_ID_LEN`] more bytes.
    pub fn key(&self, event: &WebhookEvent) -> String {
        let mut key = String::new();
        write_key(event, self.id(event), &mut key);
        key
    }

    /// [`key`](Self::key) as shared text, built in a per-thread buffer: one allocation, the
    /// `Arc`'s (the worker's, once per delivery).
    pub(crate) fn shared_key(&self, event: &WebhookEvent) -> Arc<str> {
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        // The rules (user code) run before the buffer is borrowed.
        let id = self.id(event);
        KEY.with_borrow_mut(|key| {
            key.clear();
            write_key(event, id, key);
            Arc::from(key.as_str())
        })
    }

    /// The event's id under the rules, if one applies (else the key is the body's digest).
    fn id<'e>(&self, event: &'e WebhookEvent) -> Option<Cow<'e, str>> {
        let provider = event.provider.as_str();
        self.custom
            .get(provider)
            .and_then(|rule| rule(event))
            .map(Cow::<str>::Owned)
            .filter(|id| !id.is_empty())
            .or_else(|| {
                self.verifiers
                    .as_ref()
                    .and_then(|v| v.delivery_id(event))
                    .filter(|id| !id.is_empty())
            })
            .or_else(|| body_delivery_id(provider, &event.body))
    }
}

/// Writes the key of `event`, whose id under the rules is `id`, into `key`.
fn write_key(event: &WebhookEvent, id: Option<Cow<'_, str>>, key: &mut String) {
    match id {
        Some(id) => push_prefixed(key, &event.provider, &id),
        None => push_body_digest(key, event),
    }
}

/// The key for `event` under the built-in rules without verifiers (see [`IdempotencyKeys`]).
pub fn idempotency_key(event: &WebhookEvent) -> String {
    IdempotencyKeys::default().key(event)
}

fn push_prefixed(key: &mut String, provider: &str, id: &str) {
    key.reserve(provider.len() + 1 + id.len().min(ID_DIGEST.len() + 64));
    key.push_str(provider);
    key.push(':');
    if id.len() > MAX_ID_LEN || id.starts_with(BODY_DIGEST) || id.starts_with(ID_DIGEST) {
        // A verbatim id never looks like a digest, so digests and ids cannot collide.
        key.push_str(ID_DIGEST);
        push_hex(key, &Sha256::digest(id.as_bytes()));
    } else {
        key.push_str(id);
    }
}

/// `{provider}:sha256:{hex}` over the provider name and the body. Not truncated: 64 digits
/// stay well under [`MAX_ID_LEN`] and match the keys earlier versions wrote.
fn push_body_digest(key: &mut String, event: &WebhookEvent) {
    let mut h = Sha256::new();
    h.update(event.provider.as_bytes());
    h.update([0]);
    h.update(&event.body);
    key.reserve(event.provider.len() + 1 + BODY_DIGEST.len() + 64);
    key.push_str(&event.provider);
    key.push(':');
    key.push_str(BODY_DIGEST);
    push_hex(key, &h.finalize());
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::verify::{GitHub, Stripe};

    fn with_header(provider: &str, name: &'static str, value: &str, body: &str) -> WebhookEvent {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        WebhookEvent::new(provider, body.to_owned()).with_headers(h)
    }

    #[test]
    fn shared_keys_are_the_keys() {
        let keys =
            IdempotencyKeys::new().provider("acme", |e| e.header("x-acme-id").map(str::to_owned));
        let long = "x".repeat(MAX_ID_LEN + 1);
        let events = [
            // The body's digest, then a short id, a digested long id and a digest again: each
            // key leaves nothing of the one before it in the shared buffer.
            with_header("github", "x-github-delivery", "d-1", r#"{"a":1}"#),
            with_header("acme", "x-acme-id", "short", "{}"),
            with_header("acme", "x-acme-id", &long, "{}"),
            with_header("acme", "x-other", "none", "{}"),
            with_header("acme", "x-acme-id", "s", "{}"),
        ];
        for event in &events {
            assert_eq!(&*keys.shared_key(event), keys.key(event));
        }
    }

    #[test]
    fn unsigned_delivery_headers_do_not_make_the_key() {
        let keys = IdempotencyKeys::new();
        for (provider, header) in [
            ("github", "x-github-delivery"),
            ("acme", "webhook-id"),
            ("shop", "x-shopify-webhook-id"),
        ] {
            let a = with_header(provider, header, "original", "{}");
            let b = with_header(provider, header, "fresh", "{}");
            let c = with_header(provider, header, "original", r#"{"other":1}"#);
            assert_eq!(keys.key(&a), keys.key(&b), "{provider}");
            assert_ne!(keys.key(&a), keys.key(&c), "{provider}");
            assert!(keys.key(&a).starts_with(&format!("{provider}:sha256:")));
        }
        // A verifier that signs only the body changes nothing.
        let keys =
            IdempotencyKeys::new().verifiers(Verifiers::new().provider("github", GitHub::new("s")));
        let a = with_header("github", "x-github-delivery", "original", "{}");
        assert_eq!(keys.key(&a), idempotency_key(&a));
    }

    #[test]
    fn body_rules() {
        // By name, without verifiers.
        let e = WebhookEvent::new("stripe", r#"{"id":"evt_1","object":"event"}"#);
        assert_eq!(idempotency_key(&e), "stripe:evt_1");
        let e = WebhookEvent::new("slack", r#"{"type":"event_callback","event_id":"Ev01"}"#);
        assert_eq!(idempotency_key(&e), "slack:Ev01");
        let e = WebhookEvent::new("square", r#"{"event_id":"sq-1"}"#);
        assert_eq!(idempotency_key(&e), "square:sq-1");
        let e = WebhookEvent::new(
            "paddle",
            r#"{"notification_id":"ntf_1","event_id":"evt_1"}"#,
        );
        assert_eq!(idempotency_key(&e), "paddle:evt_1");
        let e = WebhookEvent::new(
            "intercom",
            r#"{"type":"notification_event","id":"notif_1"}"#,
        );
        assert_eq!(idempotency_key(&e), "intercom:notif_1");
        // Under another name, a signature header is not enough: it is not signed itself.
        let e = with_header(
            "payments",
            "stripe-signature",
            "t=1,v1=x",
            r#"{"id":"evt_1","object":"event"}"#,
        );
        assert!(idempotency_key(&e).starts_with("payments:sha256:"));
        // The verifier says what the body id is.
        let keys = IdempotencyKeys::new()
            .verifiers(Verifiers::new().provider("payments", Stripe::new("s")));
        assert_eq!(keys.key(&e), "payments:evt_1");
    }

    #[test]
    fn linear_retries_share_a_key_other_changes_do_not() {
        let body = |ts: u64, title: &str| {
            format!(
                r#"{{"action":"update","type":"Issue","data":{{"id":"x","title":"{title}"}},"webhookTimestamp":{ts}}}"#
            )
        };
        let key = |b: String| idempotency_key(&WebhookEvent::new("linear", b));
        assert_eq!(key(body(1, "a")), key(body(2, "a")));
        assert_ne!(key(body(1, "a")), key(body(1, "b")));
        assert!(key(body(1, "a")).len() <= "linear:".len() + MAX_ID_LEN);
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

    #[test]
    fn long_and_digest_like_ids_are_hashed() {
        let keys = IdempotencyKeys::new().provider("acme", |e| e.header("x-id").map(str::to_owned));
        let long = "a".repeat(400 * 1024);
        let k = keys.key(&with_header("acme", "x-id", &long, "{}"));
        assert!(k.starts_with("acme:id-sha256:"), "{k}");
        assert_eq!(k.len(), "acme:id-sha256:".len() + 64);
        assert!(k.len() <= "acme:".len() + MAX_ID_LEN);
        // At the limit an id stays verbatim; one byte more and it is hashed.
        let edge = "b".repeat(MAX_ID_LEN);
        assert_eq!(
            keys.key(&with_header("acme", "x-id", &edge, "{}")),
            format!("acme:{edge}")
        );
        let over = "b".repeat(MAX_ID_LEN + 1);
        assert!(
            keys.key(&with_header("acme", "x-id", &over, "{}"))
                .starts_with("acme:id-sha256:")
        );
        // An id cannot pose as a body digest.
        let body = WebhookEvent::new("acme", "{}");
        let digest = idempotency_key(&body);
        let posing = digest.strip_prefix("acme:").unwrap();
        let k = keys.key(&with_header("acme", "x-id", posing, "{}"));
        assert_ne!(k, digest);
        assert!(k.starts_with("acme:id-sha256:"));
    }
}
