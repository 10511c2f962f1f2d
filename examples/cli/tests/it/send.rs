//! `firefly send` against a real ingest service: every scheme with a verifier configured.

use axum::Router;
use firefly_webhook::IngestService;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::verify::{Scheme, SchemeOptions, Verifiers};
use tokio::net::TcpListener;

use crate::{assert_exit, firefly, json, stdout};

pub(crate) fn secret(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::StandardWebhooks | Scheme::Svix => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        Scheme::Basic => "ops:pa55word",
        Scheme::Teams => "vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA=",
        _ => "s3cret-for-tests",
    }
}

fn wrong_secret(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::StandardWebhooks | Scheme::Svix => "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        Scheme::Basic => "ops:wrong",
        Scheme::Teams => "QgyNSToQjf4p6+YzDpjKks1/tXeJQ7FhVHqRwTnugVI=",
        _ => "not-the-secret",
    }
}

/// The schemes `firefly send` signs for (those keyed with a shared secret that the sender uses
/// to sign the request).
fn shared_secret_schemes() -> Vec<Scheme> {
    [
        "github",
        "stripe",
        "shopify",
        "slack",
        "standard-webhooks",
        "svix",
        "twilio",
        "gitlab",
        "square",
        "paddle",
        "linear",
        "zoom",
        "intercom",
        "hmac-sha256",
        "basic",
        "api-key",
        "meta",
        "bitbucket",
        "twitch",
        "mailgun",
        "teams",
        "docusign",
        "hubspot",
        "box",
        "typeform",
        "calendly",
        "zendesk",
        "x",
        "dropbox",
        "okta",
    ]
    .iter()
    .map(|name| name.parse().unwrap())
    .collect()
}

/// An ingest service on a free port with provider `<scheme name>` verified by that scheme,
/// and the memory broker it publishes to.
async fn gateway() -> (String, MemoryBroker) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut verifiers = Verifiers::new().public_url(base.clone());
    for scheme in shared_secret_schemes() {
        let verifier = scheme.verifier(SchemeOptions::new(secret(scheme))).unwrap();
        verifiers = verifiers.provider(scheme.name(), verifier);
    }
    let graph = Scheme::MicrosoftGraph;
    let verifier = graph.verifier(SchemeOptions::new(secret(graph))).unwrap();
    verifiers = verifiers.provider(graph.name(), verifier);
    // The ed25519 schemes, with the public keys of the seeds in `private_keys`.
    for (provider, scheme, public, _) in private_keys() {
        let verifier = scheme.parse::<Scheme>().unwrap();
        let verifier = verifier.verifier(SchemeOptions::new(public)).unwrap();
        verifiers = verifiers.provider(provider, verifier);
    }
    let broker = MemoryBroker::new(1_000);
    let ingest = IngestService::new(broker.publisher()).verifiers(verifiers);
    let app = Router::new().route_service("/api/v1/webhook/{provider}", ingest);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, broker)
}

#[tokio::test]
async fn every_scheme_is_accepted_and_a_wrong_secret_is_refused_with_its_code() {
    let (base, broker) = gateway().await;
    let body = r#"{"id":"evt_1","event_id":"e1","webhookTimestamp":0,"text":"hi"}"#;
    let schemes = shared_secret_schemes();
    for scheme in schemes.iter().copied() {
        let provider = scheme.name();
        let out = firefly([
            "--json",
            "send",
            provider,
            "--url",
            &base,
            "--body",
            body,
            "--secret",
            secret(scheme),
        ])
        .await;
        assert_exit(&out, 0);
        let receipt = json(&out);
        assert_eq!(receipt["status"], "accepted", "{scheme}");
        assert_eq!(receipt["provider"], provider);

        let out = firefly([
            "send",
            provider,
            "--url",
            &base,
            "--body",
            body,
            "--secret",
            wrong_secret(scheme),
        ])
        .await;
        assert_exit(&out, 1);
        assert!(
            stdout(&out).contains("rejected: 401 invalid_signature"),
            "{scheme}: {}",
            stdout(&out)
        );
    }
    assert_eq!(broker.total_len(), schemes.len());
}

/// `(provider, scheme, public key, private key)` of the ed25519 schemes: seeds 1, 2 and 3.
fn private_keys() -> [(&'static str, &'static str, String, String); 3] {
    use std::fmt::Write as _;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    let key = |n: u8| ed25519_dalek::SigningKey::from_bytes(&[n; 32]);
    let public = |n: u8| key(n).verifying_key().to_bytes();
    let hex = |bytes: &[u8]| {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    [
        ("discord", "discord", hex(&public(1)), hex(&[1; 32])),
        (
            "telnyx",
            "telnyx",
            STANDARD.encode(public(2)),
            STANDARD.encode([2; 32]),
        ),
        (
            "ed25519-acme",
            "standard-webhooks",
            format!("whpk_{}", STANDARD.encode(public(3))),
            format!("whsk_{}", STANDARD.encode([3; 32])),
        ),
    ]
}

#[tokio::test]
async fn ed25519_schemes_are_signed_with_a_private_key() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    let (base, broker) = gateway().await;
    let keys = private_keys();
    for (provider, scheme, _, private) in &keys {
        let out = firefly([
            "--json",
            "send",
            provider,
            "--scheme",
            scheme,
            "--url",
            &base,
            "--body",
            r#"{"type":2,"id":"e1"}"#,
            "--private-key",
            private,
        ])
        .await;
        assert_exit(&out, 0);
        assert_eq!(json(&out)["status"], "accepted", "{scheme}");
        // Another key (seed 9), written as this scheme takes it: refused.
        let other = match *scheme {
            "discord" => "09".repeat(32),
            "telnyx" => STANDARD.encode([9; 32]),
            _ => format!("whsk_{}", STANDARD.encode([9; 32])),
        };
        let out = firefly([
            "send",
            provider,
            "--scheme",
            scheme,
            "--url",
            &base,
            "--body",
            "{}",
            "--private-key",
            &other,
        ])
        .await;
        assert_exit(&out, 1);
        assert!(
            stdout(&out).contains("rejected: 401 invalid_signature"),
            "{scheme}: {}",
            stdout(&out)
        );
    }
    assert_eq!(broker.total_len(), keys.len());
    // --secret and --private-key are one or the other.
    let out = firefly(["send", "discord", "--url", &base, "--body", "{}"]).await;
    assert_exit(&out, 2);
    let out = firefly([
        "send",
        "github",
        "--url",
        &base,
        "--body",
        "{}",
        "--secret",
        "s",
        "--private-key",
        "k",
    ])
    .await;
    assert_exit(&out, 2);
}

#[tokio::test]
async fn microsoft_graph_notifications_carry_the_client_state() {
    let (base, broker) = gateway().await;
    let body = r#"{"value":[{"subscriptionId":"s1","changeType":"created"}]}"#;
    let graph = Scheme::MicrosoftGraph;
    let send = |secret: &'static str| {
        firefly([
            "--json",
            "send",
            "microsoft-graph",
            "--url",
            &base,
            "--body",
            body,
            "--secret",
            secret,
        ])
    };
    let out = send(secret(graph)).await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["status"], "accepted");
    let out = send(wrong_secret(graph)).await;
    assert_exit(&out, 1);
    let out = firefly([
        "send",
        "microsoft-graph",
        "--url",
        &base,
        "--body",
        "{}",
        "--secret",
        "s",
    ])
    .await;
    assert_exit(&out, 2);
    assert_eq!(broker.total_len(), 1);
}

#[tokio::test]
async fn form_bodies_files_and_explicit_schemes() {
    let (base, _broker) = gateway().await;
    // A Twilio form body, sent as a form, signed over the sorted parameters.
    let out = firefly([
        "send",
        "twilio",
        "--url",
        &base,
        "--body",
        "From=%2B15551234567&Body=hello+there",
        "--secret",
        secret(Scheme::Twilio),
    ])
    .await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("\"status\": \"accepted\""),
        "{}",
        stdout(&out)
    );

    // The body and the secret from files, the full ingest URL.
    let dir = std::env::temp_dir().join(format!("firefly-send-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("body.json"),
        br#"{"zen":"Keep it logically awesome."}"#,
    )
    .unwrap();
    std::fs::write(dir.join("secret"), format!("{}\n", secret(Scheme::GitHub))).unwrap();
    let url = format!("{base}/api/v1/webhook/github");
    let body = format!("@{}", dir.join("body.json").display());
    let secret_file = format!("@{}", dir.join("secret").display());
    let out = firefly([
        "send",
        "github",
        "--url",
        &url,
        "--body",
        &body,
        "--secret",
        &secret_file,
    ])
    .await;
    assert_exit(&out, 0);

    // A provider that names no scheme needs --scheme; the gateway knows no verifier for it
    // here, so it is accepted unverified.
    let out = firefly([
        "send", "acme", "--url", &base, "--body", "{}", "--secret", "x",
    ])
    .await;
    assert_exit(&out, 2);
    let out = firefly([
        "send",
        "acme",
        "--scheme",
        "hmac-sha256",
        "--url",
        &base,
        "--body",
        "{}",
        "--secret",
        "x",
    ])
    .await;
    assert_exit(&out, 0);

    // Nothing listens: a failure, not a usage error.
    let out = firefly([
        "send",
        "github",
        "--url",
        "http://127.0.0.1:1",
        "--body",
        "{}",
        "--secret",
        "x",
    ])
    .await;
    assert_exit(&out, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
