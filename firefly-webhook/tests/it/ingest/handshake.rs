//! Endpoint handshakes through `IngestService`: each answered in the provider's format and not
//! published; refused (401 / 403) with a wrong signature or token, nothing published; GET and
//! OPTIONS only for providers whose handshake uses them.

use std::sync::Mutex;

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use firefly_webhook::verify::{
    CloudEventsOrigin, HttpsFetcher, Scheme, SchemeOptions, TrustedUrl, Verifiers,
};
use hmac::{Hmac, Mac};
use time::OffsetDateTime;

use super::*;

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
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

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn ingest(broker: &MemoryBroker, verifiers: Verifiers) -> IngestService {
    IngestService::new(broker.publisher()).verifiers(verifiers)
}

fn scheme(scheme: Scheme, options: SchemeOptions) -> Box<dyn firefly_webhook::SignatureVerifier> {
    scheme.verifier(options).unwrap()
}

fn request(
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

fn slack_signed(body: &str, secret: &str) -> Request<Full<Bytes>> {
    let ts = now().to_string();
    let sig = hex(&hmac256(
        secret.as_bytes(),
        format!("v0:{ts}:{body}").as_bytes(),
    ));
    request(
        Method::POST,
        &url("slack"),
        &[
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &format!("v0={sig}")),
        ],
        body,
    )
}

fn text(answer: &Answer) -> &str {
    std::str::from_utf8(&answer.body).unwrap()
}

fn content_type(answer: &Answer) -> &str {
    answer.headers[header::CONTENT_TYPE].to_str().unwrap()
}

#[tokio::test]
async fn slack_url_verification_is_answered_and_not_published() {
    let broker = MemoryBroker::new(16);
    let svc = ingest(
        &broker,
        Verifiers::new().provider(
            "slack",
            scheme(Scheme::Slack, SchemeOptions::new(SLACK_SECRET)),
        ),
    );
    let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let answer = send(svc.clone(), slack_signed(body, SLACK_SECRET)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(content_type(&answer), "application/json");
    assert_eq!(
        answer.json(),
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    assert!(broker.is_empty(), "a handshake is not published");

    // Forged: refused like any webhook.
    let answer = send(svc.clone(), slack_signed(body, "not-the-secret")).await;
    assert_rejected(&answer, StatusCode::UNAUTHORIZED, "invalid_signature", true);
    let unsigned = request(Method::POST, &url("slack"), &[], body);
    assert_rejected(
        &send(svc.clone(), unsigned).await,
        StatusCode::UNAUTHORIZED,
        "missing_signature",
        true,
    );
    assert!(broker.is_empty());

    // Other events are webhooks as before.
    let event = r#"{"type":"event_callback","event_id":"Ev1"}"#;
    assert_eq!(
        send(svc.clone(), slack_signed(event, SLACK_SECRET))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(broker.len("slack"), 1);

    // Slack's handshake is a POST: GET stays 405.
    let get = request(Method::GET, &url("slack"), &[], "");
    assert_rejected(
        &send(svc, get).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        false,
    );
}

#[tokio::test]
async fn handshakes_are_published_when_asked_to() {
    let broker = MemoryBroker::new(16);
    let svc = ingest(
        &broker,
        Verifiers::new()
            .provider(
                "slack",
                scheme(Scheme::Slack, SchemeOptions::new(SLACK_SECRET)),
            )
            .publish_handshakes(true),
    );
    let body = r#"{"challenge":"c1","type":"url_verification"}"#;
    let answer = send(svc, slack_signed(body, SLACK_SECRET)).await;
    assert_eq!(answer.json(), serde_json::json!({"challenge": "c1"}));
    assert_eq!(queued(&broker).body, body.as_bytes());
}

#[tokio::test]
async fn zoom_url_validation() {
    let broker = MemoryBroker::new(16);
    let svc = ingest(
        &broker,
        Verifiers::new().provider(
            "zoom",
            scheme(Scheme::Zoom, SchemeOptions::new("zoom-secret")),
        ),
    );
    let body = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let sign = |secret: &str| {
        let ts = now().to_string();
        let sig = hex(&hmac256(
            secret.as_bytes(),
            format!("v0:{ts}:{body}").as_bytes(),
        ));
        request(
            Method::POST,
            &url("zoom"),
            &[
                ("x-zm-request-timestamp", &ts),
                ("x-zm-signature", &format!("v0={sig}")),
            ],
            body,
        )
    };
    let answer = send(svc.clone(), sign("zoom-secret")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        serde_json::json!({
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": hex(&hmac256(b"zoom-secret", b"qgg8vlvZRS6UYooatFL8Aw")),
        })
    );
    assert_rejected(
        &send(svc, sign("wrong")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        true,
    );
    assert!(broker.is_empty());
}

#[tokio::test]
async fn meta_verify_token_get() {
    let broker = MemoryBroker::new(16);
    let svc = ingest(
        &broker,
        Verifiers::new().provider(
            "meta",
            scheme(
                Scheme::Meta,
                SchemeOptions::new("app-secret").verify_token("my-verify-token"),
            ),
        ),
    );
    let get = |query: &str| request(Method::GET, &format!("{}?{query}", url("meta")), &[], "");
    let answer = send(
        svc.clone(),
        get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=my-verify-token"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(text(&answer), "1158201444");
    assert!(content_type(&answer).starts_with("text/plain"));

    let wrong = get("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess");
    assert_rejected(
        &send(svc.clone(), wrong).await,
        StatusCode::FORBIDDEN,
        "handshake_refused",
        false,
    );
    // A GET that is not the handshake.
    assert_rejected(
        &send(svc.clone(), get("a=1")).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        false,
    );
    assert!(broker.is_empty());

    // Notifications are POSTs signed with the app secret.
    let body = r#"{"object":"page","entry":[]}"#;
    let sig = hex(&hmac256(b"app-secret", body.as_bytes()));
    let post = request(
        Method::POST,
        &url("meta"),
        &[("x-hub-signature-256", &format!("sha256={sig}"))],
        body,
    );
    assert_eq!(send(svc, post).await.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len("meta"), 1);
}

#[tokio::test]
async fn x_crc_dropbox_okta_and_graph() {
    let broker = MemoryBroker::new(16);
    let svc = ingest(
        &broker,
        Verifiers::new()
            .provider(
                "x",
                scheme(Scheme::X, SchemeOptions::new("consumer-secret")),
            )
            .provider(
                "dropbox",
                scheme(Scheme::Dropbox, SchemeOptions::new("app-secret")),
            )
            .provider(
                "okta",
                scheme(Scheme::Okta, SchemeOptions::new("Bearer okta-key")),
            )
            .provider(
                "graph",
                scheme(Scheme::MicrosoftGraph, SchemeOptions::new("client-state")),
            ),
    );

    let crc = request(
        Method::GET,
        &format!("{}?crc_token=abc123", url("x")),
        &[],
        "",
    );
    let answer = send(svc.clone(), crc).await;
    assert_eq!(
        answer.json(),
        serde_json::json!({"response_token": format!("sha256={}", b64(&hmac256(b"consumer-secret", b"abc123")))})
    );
    let body = r#"{"for_user_id":"1","tweet_create_events":[]}"#;
    let sig = b64(&hmac256(b"consumer-secret", body.as_bytes()));
    let post = request(
        Method::POST,
        &url("x"),
        &[("x-twitter-webhooks-signature", &format!("sha256={sig}"))],
        body,
    );
    assert_eq!(send(svc.clone(), post).await.status, StatusCode::ACCEPTED);

    let challenge = request(
        Method::GET,
        &format!("{}?challenge=dbx-42", url("dropbox")),
        &[],
        "",
    );
    let answer = send(svc.clone(), challenge).await;
    assert_eq!(text(&answer), "dbx-42");
    assert_eq!(answer.headers["x-content-type-options"], "nosniff");
    assert!(content_type(&answer).starts_with("text/plain"));

    let okta = request(
        Method::GET,
        &url("okta"),
        &[("x-okta-verification-challenge", "X1bfBQ9xHB6Ifv2ajXpo")],
        "",
    );
    assert_eq!(
        send(svc.clone(), okta).await.json(),
        serde_json::json!({"verification": "X1bfBQ9xHB6Ifv2ajXpo"})
    );

    let validation = request(
        Method::POST,
        &format!(
            "{}?validationToken=Validation%3A%20Testing%20client%20application",
            url("graph")
        ),
        &[],
        "",
    );
    let answer = send(svc.clone(), validation).await;
    assert_eq!(text(&answer), "Validation: Testing client application");
    assert!(content_type(&answer).starts_with("text/plain"));
    assert_eq!(
        broker.total_len(),
        1,
        "only the X notification, no handshake"
    );

    let forged = request(
        Method::POST,
        &url("graph"),
        &[],
        r#"{"value":[{"clientState":"guess"}]}"#,
    );
    assert_rejected(
        &send(svc.clone(), forged).await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        true,
    );
    let notification = request(
        Method::POST,
        &url("graph"),
        &[],
        r#"{"value":[{"clientState":"client-state"}]}"#,
    );
    assert_eq!(send(svc, notification).await.status, StatusCode::ACCEPTED);
    assert_eq!(broker.len("x") + broker.len("graph"), 2);
}

#[tokio::test]
async fn twitch_callback_verification() {
    let broker = MemoryBroker::new(16);
    let svc = ingest(
        &broker,
        Verifiers::new().provider(
            "twitch",
            scheme(Scheme::Twitch, SchemeOptions::new("twitch-secret")),
        ),
    );
    let body =
        r#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387"}}"#;
    let ts = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let signed = |secret: &str| {
        let sig = hex(&hmac256(
            secret.as_bytes(),
            format!("e76c6bd4{ts}{body}").as_bytes(),
        ));
        request(
            Method::POST,
            &url("twitch"),
            &[
                ("twitch-eventsub-message-id", "e76c6bd4"),
                ("twitch-eventsub-message-timestamp", &ts),
                (
                    "twitch-eventsub-message-signature",
                    &format!("sha256={sig}"),
                ),
                (
                    "twitch-eventsub-message-type",
                    "webhook_callback_verification",
                ),
            ],
            body,
        )
    };
    let answer = send(svc.clone(), signed("twitch-secret")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(text(&answer), "pogchamp-kappa-360noscope-vohiyo");
    assert!(content_type(&answer).starts_with("text/plain"));
    assert_rejected(
        &send(svc, signed("wrong")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        true,
    );
    assert!(broker.is_empty());
}

#[tokio::test]
async fn discord_ping() {
    let broker = MemoryBroker::new(16);
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let svc = ingest(
        &broker,
        Verifiers::new().provider(
            "discord",
            scheme(
                Scheme::Discord,
                SchemeOptions::new(hex(key.verifying_key().as_bytes())),
            ),
        ),
    );
    let body = r#"{"id":"1","application_id":"2","type":1,"version":1}"#;
    let signed = |k: &ed25519_dalek::SigningKey| {
        let ts = now().to_string();
        let sig = k.sign(format!("{ts}{body}").as_bytes());
        request(
            Method::POST,
            &url("discord"),
            &[
                ("x-signature-ed25519", &hex(&sig.to_bytes())),
                ("x-signature-timestamp", &ts),
            ],
            body,
        )
    };
    let answer = send(svc.clone(), signed(&key)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"type": 1}));
    // Discord sends a badly signed PING on purpose and expects 401.
    let other = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
    assert_rejected(
        &send(svc, signed(&other)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        true,
    );
    assert!(broker.is_empty());
}

/// Serves the test certificate and records the SubscribeURL fetch.
#[derive(Default)]
struct Fixtures {
    fetched: Mutex<Vec<String>>,
}

const CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:orders";

#[async_trait]
impl HttpsFetcher for Fixtures {
    async fn get(&self, url: &TrustedUrl) -> Result<Bytes, firefly_webhook::BoxError> {
        self.fetched.lock().unwrap().push(url.as_str().to_owned());
        if url.as_str() == CERT_URL {
            return Ok(Bytes::from_static(include_bytes!(
                "../../fixtures/signing-cert.pem"
            )));
        }
        Ok(Bytes::from_static(b"<ConfirmSubscriptionResponse/>"))
    }
}

fn sns_confirmation(subscribe_url: &str) -> String {
    use std::fmt::Write as _;

    use rsa::pkcs8::DecodePrivateKey as _;
    let mut m = serde_json::json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425c464de12884fd2d8a56f5",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic arn:aws:sns:us-east-1:123456789012:orders.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2023-11-14T22:13:20.000Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
    });
    let mut canonical = String::new();
    for key in [
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ] {
        let _ = write!(canonical, "{key}\n{}\n", m[key].as_str().unwrap());
    }
    let key =
        rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../../fixtures/signing-key.pem")).unwrap();
    let hashed = <sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes());
    let sig = key
        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &hashed)
        .unwrap();
    m["Signature"] = serde_json::json!(b64(&sig));
    m.to_string()
}

#[tokio::test]
async fn sns_subscription_confirmation() {
    let broker = MemoryBroker::new(16);
    let fetcher = Arc::new(Fixtures::default());
    let svc = ingest(
        &broker,
        Verifiers::new().provider(
            "sns",
            scheme(
                Scheme::Sns,
                SchemeOptions::new(TOPIC).fetcher(fetcher.clone()),
            ),
        ),
    );
    let subscribe = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:123456789012:orders&Token=2336412f";
    let sns = |body: String| {
        request(
            Method::POST,
            &url("sns"),
            &[("x-amz-sns-message-type", "SubscriptionConfirmation")],
            &body,
        )
    };
    let answer = send(svc.clone(), sns(sns_confirmation(subscribe))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", text(&answer));
    assert_eq!(*fetcher.fetched.lock().unwrap(), [CERT_URL, subscribe]);
    assert!(broker.is_empty());

    // Tampered: refused before anything is confirmed.
    let tampered = sns_confirmation(subscribe).replace("You have chosen", "You chose");
    assert_rejected(
        &send(svc.clone(), sns(tampered)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        true,
    );
    // Correctly signed, but the SubscribeURL is not SNS: never fetched.
    let evil = sns_confirmation("https://evil.example/?Action=ConfirmSubscription");
    assert_rejected(
        &send(svc, sns(evil)).await,
        StatusCode::FORBIDDEN,
        "handshake_refused",
        false,
    );
    assert_eq!(fetcher.fetched.lock().unwrap().len(), 2);
    assert!(broker.is_empty());
}

#[tokio::test]
async fn cloudevents_options_and_405_for_everyone_else() {
    let broker = MemoryBroker::new(16);
    let svc = ingest(
        &broker,
        Verifiers::new()
            .provider("grid", scheme(Scheme::ApiKey, SchemeOptions::new("k")))
            .handshake(
                "grid",
                CloudEventsOrigin::allow(["eventgrid.azure.net"]).rate(120),
            )
            .provider("github", scheme(Scheme::GitHub, SchemeOptions::new("s"))),
    );
    let options = |provider: &str, origin: &str| {
        request(
            Method::OPTIONS,
            &url(provider),
            &[("webhook-request-origin", origin)],
            "",
        )
    };
    let answer = send(svc.clone(), options("grid", "eventgrid.azure.net")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers["webhook-allowed-origin"],
        "eventgrid.azure.net"
    );
    assert_eq!(answer.headers["webhook-allowed-rate"], "120");
    assert_rejected(
        &send(svc.clone(), options("grid", "evil.example")).await,
        StatusCode::FORBIDDEN,
        "handshake_refused",
        false,
    );
    for (method, provider) in [
        (Method::OPTIONS, "github"),
        (Method::GET, "github"),
        (Method::GET, "grid"),
        (Method::OPTIONS, "nobody"),
        (Method::PUT, "grid"),
        (Method::DELETE, "grid"),
    ] {
        let answer = send(
            svc.clone(),
            request(method.clone(), &url(provider), &[], ""),
        )
        .await;
        assert_rejected(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            false,
        );
        assert_eq!(answer.headers[header::ALLOW], "POST", "{method} {provider}");
    }
    assert!(broker.is_empty());
}

/// Serves no certificate.
struct Offline;

#[async_trait]
impl HttpsFetcher for Offline {
    async fn get(&self, _url: &TrustedUrl) -> Result<Bytes, firefly_webhook::BoxError> {
        Err("connection refused".into())
    }
}

#[tokio::test]
async fn certificates_unavailable_or_untrusted() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher())
        .retry_after(Duration::from_secs(7))
        .verifiers(Verifiers::new().provider(
            "sns",
            scheme(
                Scheme::Sns,
                SchemeOptions::new(TOPIC).fetcher(Arc::new(Offline)),
            ),
        ));
    let subscribe = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=1";
    let body = sns_confirmation(subscribe);
    // The certificate cannot be fetched: the provider should retry.
    let answer = send(svc.clone(), request(Method::POST, &url("sns"), &[], &body)).await;
    assert_rejected(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "certificate_unavailable",
        true,
    );
    assert_eq!(answer.headers[header::RETRY_AFTER], "7");
    // A certificate URL off SNS's hosts is never fetched, and refused.
    let evil = body.replace(CERT_URL, "https://evil.example/cert.pem");
    let answer = send(svc, request(Method::POST, &url("sns"), &[], &evil)).await;
    assert_rejected(
        &answer,
        StatusCode::UNAUTHORIZED,
        "untrusted_certificate",
        true,
    );
    assert!(broker.is_empty());
}

#[tokio::test]
async fn sns_notifications_are_published_after_the_certificate_check() {
    use std::fmt::Write as _;

    use rsa::pkcs8::DecodePrivateKey as _;
    let broker = MemoryBroker::new(16);
    let fetcher = Arc::new(Fixtures::default());
    let svc = ingest(
        &broker,
        Verifiers::new().provider(
            "sns",
            scheme(
                Scheme::Sns,
                SchemeOptions::new(TOPIC).fetcher(fetcher.clone()),
            ),
        ),
    );
    let mut m = serde_json::json!({
        "Type": "Notification",
        "MessageId": "da41e39f-ea4d-435a-b922-c6aae3915ebe",
        "TopicArn": TOPIC,
        "Message": "{\"order\":1}",
        "Timestamp": "2023-11-14T22:13:20.000Z",
        "SignatureVersion": "1",
        "SigningCertURL": CERT_URL,
    });
    let mut canonical = String::new();
    for key in ["Message", "MessageId", "Timestamp", "TopicArn", "Type"] {
        let _ = write!(canonical, "{key}\n{}\n", m[key].as_str().unwrap());
    }
    let key =
        rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../../fixtures/signing-key.pem")).unwrap();
    let hashed = <sha1::Sha1 as sha2::Digest>::digest(canonical.as_bytes());
    let sig = key
        .sign(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &hashed)
        .unwrap();
    m["Signature"] = serde_json::json!(b64(&sig));
    let body = m.to_string();
    for _ in 0..2 {
        let answer = send(svc.clone(), request(Method::POST, &url("sns"), &[], &body)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    }
    assert_eq!(broker.len("sns"), 2);
    assert_eq!(
        *fetcher.fetched.lock().unwrap(),
        [CERT_URL],
        "fetched once, then cached"
    );
}
