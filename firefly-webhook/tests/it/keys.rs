//! Idempotency keys from signed data: a replayed request with a fresh, unsigned delivery header
//! is a duplicate; a signed delivery id is the key; long ids are hashed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use firefly_webhook::idempotency::{IdempotencyKeys, IdempotencyLayer, MAX_ID_LEN, MemoryStore};
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Outcome, processor_fn};
use firefly_webhook::verify::{GitHub, StandardWebhooks, Stripe, Verifiers};
use firefly_webhook::worker::Worker;
use firefly_webhook::{Publisher, WebhookEvent, http};
use hmac::{Hmac, Mac};

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const STRIPE_SECRET: &str = "whsec_test";
const STANDARD_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn event(provider: &str, body: &str, headers: &[(&'static str, String)]) -> WebhookEvent {
    let mut h = http::HeaderMap::new();
    for (name, value) in headers {
        h.insert(*name, value.parse().unwrap());
    }
    WebhookEvent::new(provider, body.to_owned()).with_headers(h)
}

/// A GitHub delivery as GitHub sends it: the body signed, the delivery header not.
fn github(delivery: &str, body: &str) -> WebhookEvent {
    let signature = hex(&hmac256(GITHUB_SECRET.as_bytes(), &[body.as_bytes()]));
    event(
        "github",
        body,
        &[
            ("x-hub-signature-256", format!("sha256={signature}")),
            ("x-github-delivery", delivery.to_owned()),
        ],
    )
}

fn standard(provider: &str, id: &str, body: &str) -> WebhookEvent {
    let key = base64::engine::general_purpose::STANDARD
        .decode(STANDARD_KEY.trim_start_matches("whsec_"))
        .unwrap();
    let ts = now_unix().to_string();
    let signature = base64::engine::general_purpose::STANDARD.encode(hmac256(
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()],
    ));
    event(
        provider,
        body,
        &[
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts),
            ("webhook-signature", format!("v1,{signature}")),
        ],
    )
}

fn stripe(provider: &str, body: &str) -> WebhookEvent {
    let ts = now_unix();
    let signature = hex(&hmac256(
        STRIPE_SECRET.as_bytes(),
        &[ts.to_string().as_bytes(), b".", body.as_bytes()],
    ));
    event(
        provider,
        body,
        &[("stripe-signature", format!("t={ts},v1={signature}"))],
    )
}

fn verifiers() -> Verifiers {
    Verifiers::new()
        .provider("github", GitHub::new(GITHUB_SECRET))
        .provider("payments", Stripe::new(STRIPE_SECRET))
        .provider("acme", StandardWebhooks::new(STANDARD_KEY).unwrap())
}

/// What the processor saw: each call's provider and idempotency key.
type Seen = Arc<Mutex<Vec<String>>>;

/// Publishes `events` in order, then runs a worker that verifies them (one at a time, so each
/// delivery finds the previous one settled) until all are settled.
async fn process(events: Vec<WebhookEvent>) -> (Vec<String>, MemoryBroker) {
    let broker = MemoryBroker::new(64);
    let publisher = broker.publisher();
    for e in events {
        let destination = e.provider.clone();
        publisher.publish(&destination, e).await.unwrap();
    }
    broker.close();
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    tokio::time::timeout(
        Duration::from_secs(30),
        Worker::builder(broker.subscriber_all())
            .concurrency(1)
            .verifiers(verifiers())
            .build(processor_fn(move |_e, ctx| {
                s.lock().unwrap().push(ctx.idempotency_key.to_string());
                async { Ok(Outcome::Processed) }
            }))
            .run(),
    )
    .await
    .expect("the worker settles everything");
    let seen = seen.lock().unwrap().clone();
    (seen, broker)
}

#[tokio::test]
async fn a_replayed_github_request_with_a_fresh_delivery_header_is_a_duplicate() {
    let body = r#"{"action":"opened","number":1}"#;
    let original = github("72d3162e-cc78-11e3-81ab-4c9367dc0958", body);
    // Captured and sent again: same signed body, a delivery header of the attacker's choosing.
    let mut replay = original.clone();
    replay.id = firefly_webhook::EventId::new();
    replay.headers.insert(
        "x-github-delivery",
        "00000000-0000-0000-0000-000000000000".parse().unwrap(),
    );
    let (seen, broker) = process(vec![original, replay]).await;
    assert_eq!(seen.len(), 1, "the replay ran: {seen:?}");
    assert!(seen[0].starts_with("github:sha256:"), "{seen:?}");
    assert!(broker.dead_letters("github").is_empty(), "both verified");
    assert!(broker.is_empty());
}

#[tokio::test]
async fn githubs_own_redelivery_is_a_duplicate() {
    let body = r#"{"action":"opened","number":2}"#;
    let (seen, _) = process(vec![github("d-1", body), github("d-1", body)]).await;
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn two_github_bodies_under_one_delivery_id_are_two_events() {
    // The documented rule: the header is not signed, so it cannot make them one event.
    let (seen, _) = process(vec![
        github("d-2", r#"{"number":3}"#),
        github("d-2", r#"{"number":4}"#),
    ])
    .await;
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1]);
}

#[tokio::test]
async fn standard_webhooks_keys_are_the_signed_webhook_id() {
    let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    // A retry: same id, newly signed. A tampered id fails verification and claims nothing.
    let mut tampered = standard("acme", id, r#"{"n":1}"#);
    tampered
        .headers
        .insert("webhook-id", "msg_other".parse().unwrap());
    let (seen, broker) = process(vec![
        standard("acme", id, r#"{"n":1}"#),
        standard("acme", id, r#"{"n":1}"#),
        tampered,
    ])
    .await;
    assert_eq!(seen, [format!("acme:{id}")]);
    assert_eq!(broker.dead_letters("acme").len(), 1);
}

#[tokio::test]
async fn stripe_keys_are_the_signed_event_id_whatever_the_provider_is_called() {
    // Stripe's retries may differ in their body (`pending_webhooks`); the event id does not.
    let (seen, _) = process(vec![
        stripe("payments", r#"{"id":"evt_1","pending_webhooks":2}"#),
        stripe("payments", r#"{"id":"evt_1","pending_webhooks":1}"#),
        stripe("payments", r#"{"id":"evt_2","pending_webhooks":1}"#),
    ])
    .await;
    assert_eq!(seen, ["payments:evt_1", "payments:evt_2"]);
}

#[test]
fn without_verifiers_only_the_body_decides() {
    let keys = IdempotencyKeys::new();
    let a = standard("acme", "msg_1", "{}");
    let mut b = a.clone();
    b.headers.insert("webhook-id", "msg_2".parse().unwrap());
    assert_eq!(keys.key(&a), keys.key(&b));
    assert!(keys.key(&a).starts_with("acme:sha256:"));
    // With them, the signed id is the key.
    assert_eq!(keys.verifiers(verifiers()).key(&a), "acme:msg_1");
}

#[test]
fn long_ids_are_hashed_to_a_bounded_key() {
    let keys = IdempotencyKeys::new()
        .verifiers(verifiers())
        .provider("custom", |e| e.header("x-id").map(str::to_owned));
    let huge = "x".repeat(400 * 1024);
    let custom = event("custom", "{}", &[("x-id", huge.clone())]);
    let signed = standard("acme", &"m".repeat(1000), "{}");
    let body_id = WebhookEvent::new("stripe", format!(r#"{{"id":"{huge}"}}"#));
    for (e, prefix) in [(custom, "custom:"), (signed, "acme:"), (body_id, "stripe:")] {
        let key = keys.key(&e);
        assert!(key.starts_with(prefix), "{key}");
        assert!(
            key.len() <= prefix.len() + MAX_ID_LEN,
            "{} bytes",
            key.len()
        );
        assert!(key[prefix.len()..].starts_with("id-sha256:"), "{key}");
        // Deterministic: a redelivery gets the same key.
        assert_eq!(keys.key(&e), key);
    }
}

#[tokio::test]
async fn an_idempotency_layer_with_its_own_key_rules_keeps_them() {
    // Keys given to the layer win over the worker's verifiers.
    let broker = MemoryBroker::new(8);
    broker
        .publisher()
        .publish("acme", standard("acme", "msg_9", "{}"))
        .await
        .unwrap();
    broker.close();
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    Worker::builder(broker.subscriber_all())
        .verifiers(verifiers())
        .idempotency(
            IdempotencyLayer::new(MemoryStore::new())
                .keys(IdempotencyKeys::new().provider("acme", |_| Some("mine".into()))),
        )
        .build(processor_fn(move |_e, ctx| {
            s.lock().unwrap().push(ctx.idempotency_key.to_string());
            async { Ok(Outcome::Processed) }
        }))
        .run()
        .await;
    assert_eq!(*seen.lock().unwrap(), ["acme:mine"]);
}
