//! Verifications per second for the main schemes, through the registry (as ingest and
//! `VerifyLayer` call it), at 1.5 KB and 64 KB bodies.
//!
//! `cargo bench -p firefly-webhook --bench verify`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use base64::Engine as _;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use firefly_webhook::WebhookEvent;
use firefly_webhook::http::{HeaderMap, HeaderName, HeaderValue};
use firefly_webhook::verify::{
    GitHub, ManualClock, Shopify, Slack, StandardWebhooks, Stripe, Verifiers,
};
use hmac::{Hmac, Mac};
use time::OffsetDateTime;

const SIZES: [(usize, &str); 2] = [(1536, "1.5KB"), (64 * 1024, "64KB")];
const SECRET: &str = "bench-secret-0123456789";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

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

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn body(size: usize) -> Vec<u8> {
    // A JSON-ish body of the requested size.
    let mut b = br#"{"id":"evt_1","data":""#.to_vec();
    b.resize(size - 2, b'x');
    b.extend_from_slice(b"\"}");
    b
}

/// A signed event for `scheme` with a body of `size` bytes.
fn signed(scheme: &str, size: usize, now: OffsetDateTime) -> WebhookEvent {
    let body = body(size);
    let ts = now.unix_timestamp().to_string();
    let key = SECRET.as_bytes();
    let headers: Vec<(&str, String)> = match scheme {
        "github" => vec![(
            "x-hub-signature-256",
            format!("sha256={}", hex(&hmac256(key, &[&body]))),
        )],
        "stripe" => vec![(
            "stripe-signature",
            format!(
                "t={ts},v1={}",
                hex(&hmac256(key, &[ts.as_bytes(), b".", &body]))
            ),
        )],
        "standard-webhooks" => {
            let raw_key = base64::engine::general_purpose::STANDARD
                .decode(WHSEC.trim_start_matches("whsec_"))
                .unwrap();
            let id = "msg_2abc";
            let sig = hmac256(&raw_key, &[id.as_bytes(), b".", ts.as_bytes(), b".", &body]);
            vec![
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", ts.clone()),
                ("webhook-signature", format!("v1,{}", b64(&sig))),
            ]
        }
        "slack" => vec![
            ("x-slack-request-timestamp", ts.clone()),
            (
                "x-slack-signature",
                format!(
                    "v0={}",
                    hex(&hmac256(key, &[b"v0:", ts.as_bytes(), b":", &body]))
                ),
            ),
        ],
        "shopify" => vec![("x-shopify-hmac-sha256", b64(&hmac256(key, &[&body])))],
        other => unreachable!("{other}"),
    };
    let mut map = HeaderMap::new();
    map.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in headers {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    WebhookEvent::new(scheme, body).with_headers(map)
}

fn registry(now: OffsetDateTime) -> Verifiers {
    // A fixed clock keeps every timestamp inside its window however long the run takes.
    Verifiers::new()
        .clock(ManualClock::new(now))
        .provider("github", GitHub::new(SECRET))
        .provider("stripe", Stripe::new(SECRET))
        .provider("standard-webhooks", StandardWebhooks::new(WHSEC).unwrap())
        .provider("slack", Slack::new(SECRET))
        .provider("shopify", Shopify::new(SECRET))
}

fn verify(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let verifiers = registry(now);
    let mut group = c.benchmark_group("verify");
    for scheme in ["github", "stripe", "standard-webhooks", "slack", "shopify"] {
        for (size, label) in SIZES {
            let event = signed(scheme, size, now);
            assert!(
                verifiers.verify_event(&event).unwrap().is_some(),
                "{scheme}"
            );
            group.throughput(Throughput::Elements(1));
            group.bench_with_input(BenchmarkId::new(scheme, label), &event, |b, event| {
                b.iter(|| verifiers.verify_event(black_box(event)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
