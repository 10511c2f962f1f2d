//! verify integration tests: signatures checked at ingest (`IngestService::verifiers`, 401
//! before publishing) and again in the worker stack (`VerifyLayer`) on the consumed event,
//! after a round trip through the wire format.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::ProcessError;
use firefly_webhook::verify::{
    GitHub, ManualClock, Scheme, SchemeOptions, Secret, SecretSet, Slack, StandardWebhooks, Stripe,
    Twilio, Verifiers, VerifyError, VerifyLayer,
};
use firefly_webhook::wire::{self, Binding};
use firefly_webhook::{IngestService, Subscriber, WebhookEvent};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use time::OffsetDateTime;
use tower::{Layer, ServiceExt, service_fn};

// ---------------------------------------------------------------------------------------------
// helpers

/// A provider name unique to one test, so parallel tests never share a destination.
fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hmac1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
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

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

struct Gateway {
    broker: MemoryBroker,
    ingest: IngestService,
    verifiers: Verifiers,
}

impl Gateway {
    fn new(verifiers: Verifiers) -> Self {
        let broker = MemoryBroker::new(64);
        let ingest = IngestService::new(broker.publisher()).verifiers(verifiers.clone());
        Self {
            broker,
            ingest,
            verifiers,
        }
    }

    /// POSTs to `/api/v1/webhook/{provider}{query}` and returns the status and JSON answer.
    async fn post(
        &self,
        provider: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, Value) {
        let mut req = Request::post(format!("/api/v1/webhook/{provider}{query}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let res = self.ingest.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// Takes the one published event of `provider`, acks it and passes it through the Kafka
    /// wire format, as a worker on another machine would see it.
    async fn consume(&self, provider: &str) -> WebhookEvent {
        let mut sub = self.broker.subscriber([provider]).unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("an event was published")
            .unwrap()
            .unwrap();
        let event = delivery.event.clone();
        delivery.ack().await.unwrap();
        let headers = wire::encode(&event, Binding::KAFKA);
        wire::decode(
            headers.iter().map(|(k, v)| (k.as_str(), v.as_ref())),
            event.body.clone(),
            None,
            Binding::KAFKA,
        )
        .unwrap()
    }

    fn published(&self, provider: &str) -> usize {
        self.broker.len(provider)
    }
}

/// Runs `event` through `VerifyLayer` over a processor stand-in; `Ok` only if the inner
/// service was called.
async fn worker_verify(verifiers: &Verifiers, event: WebhookEvent) -> Result<(), ProcessError> {
    let inner = service_fn(|_: WebhookEvent| async { Ok::<_, ProcessError>(()) });
    VerifyLayer::new(verifiers.clone())
        .layer(inner)
        .oneshot(event)
        .await
}

fn verify_code(err: &ProcessError) -> Option<&'static str> {
    err.source_ref()
        .downcast_ref::<VerifyError>()
        .map(VerifyError::code)
}

fn assert_rejected(answer: &(StatusCode, Value), code: &str) {
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{}", answer.1);
    assert_eq!(answer.1["status"], "rejected");
    assert_eq!(answer.1["code"], code, "{}", answer.1);
    assert!(answer.1["eventId"].is_string());
}

// ---------------------------------------------------------------------------------------------
// accepted at ingest, published, and accepted again in the worker

#[tokio::test]
async fn github_documented_vector_is_accepted_at_ingest_and_in_the_worker() {
    let provider = unique("github");
    let gw = Gateway::new(
        Verifiers::new().provider(&provider, GitHub::new("It's a Secret to Everybody")),
    );
    // docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let answer = gw
        .post(
            &provider,
            "",
            &[("x-hub-signature-256", sig)],
            b"Hello, World!",
        )
        .await;
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{}", answer.1);
    assert_eq!(gw.published(&provider), 1);

    let event = gw.consume(&provider).await;
    assert_eq!(&event.body[..], b"Hello, World!");
    assert_eq!(answer.1["eventId"], event.id.to_string());
    worker_verify(&gw.verifiers, event.clone()).await.unwrap();
    // The same check in the worker refuses a tampered copy.
    let mut tampered = event;
    tampered.body = Bytes::from_static(b"Hello, World?");
    let err = worker_verify(&gw.verifiers, tampered).await.unwrap_err();
    assert_eq!(verify_code(&err), Some("invalid_signature"));
    assert!(err.is_permanent());
}

#[tokio::test]
async fn standard_webhooks_reference_vector_end_to_end() {
    // github.com/standard-webhooks/standard-webhooks (library test vector), judged at its time.
    let provider = unique("acme");
    let ts = 1_614_265_330;
    let verifiers = Verifiers::new()
        .provider(
            &provider,
            StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
        )
        .clock(ManualClock::at_unix(ts + 30));
    let gw = Gateway::new(verifiers);
    let headers = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        ("content-type", "application/json"),
    ];
    let body = br#"{"test": 2432232314}"#;
    let answer = gw.post(&provider, "", &headers, body).await;
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{}", answer.1);
    let event = gw.consume(&provider).await;
    worker_verify(&gw.verifiers, event).await.unwrap();

    // Tampered: 401 and nothing published.
    let answer = gw.post(&provider, "", &headers, br#"{"test": 1}"#).await;
    assert_rejected(&answer, "invalid_signature");
    assert_eq!(gw.published(&provider), 0);
}

#[tokio::test]
async fn stripe_signed_now_and_rotated_secrets() {
    let provider = unique("stripe");
    let gw = Gateway::new(Verifiers::new().provider(
        &provider,
        Stripe::new(SecretSet::new(Secret::new("whsec_new").label("new")).with("whsec_old")),
    ));
    let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    let t = now_unix().to_string();
    for key in ["whsec_new", "whsec_old"] {
        let header = format!(
            "t={t},v1={}",
            hex(&hmac256(key.as_bytes(), &[t.as_bytes(), b".", body]))
        );
        let answer = gw
            .post(&provider, "", &[("stripe-signature", &header)], body)
            .await;
        assert_eq!(answer.0, StatusCode::ACCEPTED, "{key}: {}", answer.1);
        let event = gw.consume(&provider).await;
        let verified = gw.verifiers.verify_event(&event).unwrap().unwrap();
        assert_eq!(
            verified.secret_label(),
            (key == "whsec_new").then_some("new"),
            "rotation is visible in Verified"
        );
        worker_verify(&gw.verifiers, event).await.unwrap();
    }
}

#[tokio::test]
async fn twilio_signs_the_public_url_and_form_params() {
    let provider = unique("twilio");
    let gw = Gateway::new(
        Verifiers::new()
            .provider(&provider, Twilio::new("auth-token"))
            .public_url("https://hooks.example.com/"),
    );
    let query = "?tenant=7";
    let url = format!("https://hooks.example.com/api/v1/webhook/{provider}{query}");
    let body = b"From=%2B14158675309&Body=Ahoy%21&To=%2B18005551212";
    // Sorted parameters, decoded: Body, From, To.
    let signed = [
        url.as_bytes(),
        b"BodyAhoy!",
        b"From+14158675309",
        b"To+18005551212",
    ]
    .concat();
    let sig = b64(&hmac1(b"auth-token", &[&signed]));
    let headers = [
        ("x-twilio-signature", sig.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let answer = gw.post(&provider, query, &headers, body).await;
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{}", answer.1);
    worker_verify(&gw.verifiers, gw.consume(&provider).await)
        .await
        .unwrap();

    // Same body and signature at another path or query: refused.
    let answer = gw.post(&provider, "?tenant=8", &headers, body).await;
    assert_rejected(&answer, "invalid_signature");
    assert_eq!(gw.published(&provider), 0);
}

// ---------------------------------------------------------------------------------------------
// refused at ingest: 401 with the code, nothing published

#[tokio::test]
async fn forged_tampered_replayed_missing_and_malformed_requests_get_401() {
    // (headers, body, expected code)
    type Case<'a> = (Vec<(&'a str, String)>, &'a [u8], &'a str);
    let provider = unique("slack");
    let gw = Gateway::new(Verifiers::new().provider(&provider, Slack::new("slack-signing-secret")));
    let body = br#"{"type":"event_callback","event_id":"Ev1"}"#;
    let sign = |key: &[u8], ts: &str, body: &[u8]| {
        format!(
            "v0={}",
            hex(&hmac256(key, &[b"v0:", ts.as_bytes(), b":", body]))
        )
    };
    let now = now_unix().to_string();
    let stale = (now_unix() - 3_600).to_string();
    let future = (now_unix() + 3_600).to_string();
    let good = sign(b"slack-signing-secret", &now, body);

    let cases: Vec<Case<'_>> = vec![
        // Forged: signed with another secret.
        (
            vec![
                ("x-slack-request-timestamp", now.clone()),
                ("x-slack-signature", sign(b"guess", &now, body)),
            ],
            body,
            "invalid_signature",
        ),
        // Tampered body.
        (
            vec![
                ("x-slack-request-timestamp", now.clone()),
                ("x-slack-signature", good.clone()),
            ],
            br#"{"type":"event_callback","event_id":"Ev2"}"#,
            "invalid_signature",
        ),
        // Replayed an hour later (validly signed then).
        (
            vec![
                ("x-slack-request-timestamp", stale.clone()),
                (
                    "x-slack-signature",
                    sign(b"slack-signing-secret", &stale, body),
                ),
            ],
            body,
            "timestamp_out_of_tolerance",
        ),
        // Pre-signed for the future.
        (
            vec![
                ("x-slack-request-timestamp", future.clone()),
                (
                    "x-slack-signature",
                    sign(b"slack-signing-secret", &future, body),
                ),
            ],
            body,
            "timestamp_out_of_tolerance",
        ),
        (
            vec![("x-slack-request-timestamp", now.clone())],
            body,
            "missing_signature",
        ),
        (
            vec![
                ("x-slack-request-timestamp", now.clone()),
                ("x-slack-signature", "v0=not-hex".to_owned()),
            ],
            body,
            "malformed_signature",
        ),
    ];
    for (headers, body, code) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = gw.post(&provider, "", &headers, body).await;
        assert_rejected(&answer, code);
        assert_eq!(gw.published(&provider), 0, "{code}: nothing is published");
    }

    // And the genuine request goes through.
    let answer = gw
        .post(
            &provider,
            "",
            &[
                ("x-slack-request-timestamp", &now),
                ("x-slack-signature", &good),
            ],
            body,
        )
        .await;
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{}", answer.1);
    assert_eq!(gw.published(&provider), 1);
}

#[tokio::test]
async fn unknown_providers_pass_or_get_401_when_verification_is_required() {
    let open = Gateway::new(Verifiers::new());
    let provider = unique("plain");
    let answer = open.post(&provider, "", &[], b"{}").await;
    assert_eq!(answer.0, StatusCode::ACCEPTED);

    let strict = Gateway::new(Verifiers::new().require_verification(true));
    let answer = strict.post(&provider, "", &[], b"{}").await;
    assert_rejected(&answer, "unknown_provider");
    assert_eq!(strict.published(&provider), 0);
}

#[tokio::test]
async fn scheme_configured_gateway_verifies() {
    let provider = unique("gh");
    let scheme: Scheme = "github".parse().unwrap();
    let secrets: SecretSet = ["next", "It's a Secret to Everybody"].into_iter().collect();
    let verifiers = Verifiers::new()
        .provider(
            &provider,
            scheme.verifier(SchemeOptions::new(secrets)).unwrap(),
        )
        .require_verification(true);
    let gw = Gateway::new(verifiers);
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let answer = gw
        .post(
            &provider,
            "",
            &[("x-hub-signature-256", sig)],
            b"Hello, World!",
        )
        .await;
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{}", answer.1);
    let event = gw.consume(&provider).await;
    assert_eq!(
        gw.verifiers
            .verify_event(&event)
            .unwrap()
            .unwrap()
            .secret_index(),
        1
    );
    let answer = gw.post(&unique("other"), "", &[], b"{}").await;
    assert_rejected(&answer, "unknown_provider");
}

// ---------------------------------------------------------------------------------------------
// the worker's answer does not drift with time

#[tokio::test]
async fn worker_judges_timestamps_at_the_receive_time_not_the_wall_clock() {
    // An event received an hour ago, signed five seconds before that: valid when it arrived,
    // so it stays valid however late a worker (or a retry) re-verifies it.
    let received = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let ts = (received.unix_timestamp() - 5).to_string();
    let body = br#"{"type":"event_callback"}"#;
    let sig = format!(
        "v0={}",
        hex(&hmac256(b"k", &[b"v0:", ts.as_bytes(), b":", body]))
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-slack-request-timestamp",
        HeaderValue::from_str(&ts).unwrap(),
    );
    headers.insert(
        HeaderName::from_static("x-slack-signature"),
        HeaderValue::from_str(&sig).unwrap(),
    );
    let event = WebhookEvent::new("slack", &body[..])
        .with_headers(headers)
        .with_received_at(received);
    let verifiers = Verifiers::new().provider("slack", Slack::new("k"));
    worker_verify(&verifiers, event.clone()).await.unwrap();

    // Had it been received now, it would be a replay.
    let replayed = event.with_received_at(OffsetDateTime::now_utc());
    let err = worker_verify(&verifiers, replayed).await.unwrap_err();
    assert_eq!(verify_code(&err), Some("timestamp_out_of_tolerance"));
}

#[tokio::test]
async fn worker_rejects_events_that_would_fail_at_ingest() {
    // Events that reach a worker without passing a verifying gateway (another producer, a
    // broker-side edit) are refused without calling the processor.
    let verifiers = Verifiers::new()
        .provider("github", GitHub::new("s"))
        .require_verification(true);
    for (event, code) in [
        (WebhookEvent::new("github", "{}"), "missing_signature"),
        (WebhookEvent::new("unknown", "{}"), "unknown_provider"),
    ] {
        let err = worker_verify(&verifiers, event).await.unwrap_err();
        assert_eq!(verify_code(&err), Some(code));
        assert_eq!(err.error_type(), "validation");
    }
}
