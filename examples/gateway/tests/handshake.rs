//! Endpoint handshakes against the built gateway binary, configured only through `FIREFLY_*`
//! variables: Slack's signed `url_verification`, Meta's `GET hub.challenge`, the CloudEvents
//! `OPTIONS`; refused with a wrong signature or token; never published (the publish metric
//! counts only the one real webhook). Each test runs its own gateway on a free port of
//! 127.0.0.1 (memory transport) and kills it whatever happens.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Far beyond anything under test: waiting this long means the test failed.
const PATIENCE: Duration = Duration::from_secs(10);

// Slack's documented signing secret (api.slack.com, "Verifying requests from Slack"), its
// timestamp, and bodies signed with them (HMAC-SHA256 of `v0:{ts}:{body}`, computed once with
// Python's `hmac`). The gateway's tolerance is widened to accept the 2018 timestamp.
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS: &str = "1531420618";
const URL_VERIFICATION: &str = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
const URL_VERIFICATION_SIG: &str =
    "v0=f9bd80929259f3f6d5fe3a3186c453c89cd1ad4862815a15837584f31c993652";
const EVENT: &str = r#"{"type":"event_callback","event_id":"Ev08MFMKH6"}"#;
const EVENT_SIG: &str = "v0=649cd74419d0db312c74495a9d279048690dfc1dc085146872cdbe24409ff2ff";

/// A gateway child process, killed on drop.
struct Gateway {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(vars: &[(&str, &str)]) -> Self {
        let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .env_clear()
            .env("FIREFLY_LISTEN", addr.to_string())
            .env("RUST_LOG", "warn")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway binary starts");
        let gateway = Self { child, addr };
        let deadline = Instant::now() + PATIENCE;
        while gateway.request("GET", "/health/live", "", "").status != 200 {
            assert!(Instant::now() < deadline, "the gateway did not come up");
            thread::sleep(Duration::from_millis(50));
        }
        gateway
    }

    /// One HTTP/1.1 request on its own connection.
    fn request(&self, method: &str, path: &str, headers: &str, body: &str) -> Answer {
        let Ok(mut stream) = TcpStream::connect(self.addr) else {
            return Answer::default();
        };
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
             content-length: {}\r\n{headers}\r\n",
            body.len()
        );
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body.as_bytes()).is_err()
        {
            return Answer::default();
        }
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        Answer {
            status: head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
            head: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    fn slack(&self, body: &str, signature: &str) -> Answer {
        let headers = format!(
            "content-type: application/json\r\nx-slack-request-timestamp: {SLACK_TS}\r\n\
             x-slack-signature: {signature}\r\n"
        );
        self.request("POST", "/api/v1/webhook/slack", &headers, body)
    }

    /// The `firefly_ingest_publish_seconds_count` samples, summed: how many publishes ran.
    fn publishes(&self) -> f64 {
        let metrics = self.request("GET", "/metrics", "", "");
        assert_eq!(metrics.status, 200);
        metrics
            .body
            .lines()
            .filter(|l| l.starts_with("firefly_ingest_publish_seconds_count"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

#[derive(Default, Debug)]
struct Answer {
    status: u16,
    /// Lower-cased.
    head: String,
    body: String,
}

impl Answer {
    fn has_header(&self, line: &str) -> bool {
        self.head.lines().any(|l| l.trim() == line)
    }

    fn code(&self) -> String {
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        json["code"].as_str().unwrap().to_owned()
    }
}

#[test]
fn slack_url_verification_is_answered_signed_only_and_not_published() {
    let gateway = Gateway::start(&[
        ("FIREFLY_VERIFY_SLACK", "slack"),
        ("FIREFLY_SECRET_SLACK", SLACK_SECRET),
        ("FIREFLY_TOLERANCE_SLACK", "1000000000"),
    ]);
    let answer = gateway.slack(URL_VERIFICATION, URL_VERIFICATION_SIG);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer.has_header("content-type: application/json"),
        "{answer:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );

    // A forged handshake (the signature of another body) is refused like any webhook.
    let forged = gateway.slack(URL_VERIFICATION, EVENT_SIG);
    assert_eq!(
        (forged.status, forged.code().as_str()),
        (401, "invalid_signature")
    );
    let unsigned = gateway.request("POST", "/api/v1/webhook/slack", "", URL_VERIFICATION);
    assert_eq!(
        (unsigned.status, unsigned.code().as_str()),
        (401, "missing_signature")
    );
    // Slack's handshake is a POST: GET stays 405.
    let get = gateway.request("GET", "/api/v1/webhook/slack", "", "");
    assert_eq!(
        (get.status, get.code().as_str()),
        (405, "method_not_allowed")
    );
    assert!(gateway.publishes() < 0.5, "no handshake published");

    // A real event is still a webhook, and is published.
    assert_eq!(gateway.slack(EVENT, EVENT_SIG).status, 202);
    assert!(
        (gateway.publishes() - 1.0).abs() < 0.5,
        "exactly the event was published"
    );
}

#[test]
fn meta_verify_token_and_cloudevents_options() {
    let gateway = Gateway::start(&[
        ("FIREFLY_VERIFY_META", "meta"),
        ("FIREFLY_SECRET_META", "app-secret"),
        ("FIREFLY_VERIFY_TOKEN_META", "my-verify-token"),
        ("FIREFLY_VERIFY_GRID", "api-key"),
        ("FIREFLY_SECRET_GRID", "grid-key"),
        ("FIREFLY_ALLOWED_ORIGIN_GRID", "eventgrid.azure.net"),
        ("FIREFLY_ALLOWED_RATE_GRID", "120"),
    ]);
    let subscribe = |token: &str| {
        gateway.request(
            "GET",
            &format!(
                "/api/v1/webhook/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}"
            ),
            "",
            "",
        )
    };
    let answer = subscribe("my-verify-token");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, "1158201444");
    assert!(
        answer.has_header("content-type: text/plain; charset=utf-8"),
        "{answer:?}"
    );
    let wrong = subscribe("guess");
    assert_eq!(
        (wrong.status, wrong.code().as_str()),
        (403, "handshake_refused")
    );

    let options = |origin: &str| {
        gateway.request(
            "OPTIONS",
            "/api/v1/webhook/grid",
            &format!("webhook-request-origin: {origin}\r\n"),
            "",
        )
    };
    let answer = options("eventgrid.azure.net");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer.has_header("webhook-allowed-origin: eventgrid.azure.net"),
        "{answer:?}"
    );
    assert!(answer.has_header("webhook-allowed-rate: 120"), "{answer:?}");
    let refused = options("evil.example");
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (403, "handshake_refused")
    );
    // OPTIONS for Meta, GET for the CloudEvents provider: not their handshakes.
    assert_eq!(
        gateway
            .request("OPTIONS", "/api/v1/webhook/meta", "", "")
            .status,
        405
    );
    assert_eq!(
        gateway
            .request("GET", "/api/v1/webhook/grid", "", "")
            .status,
        405
    );
    assert!(gateway.publishes() < 0.5, "no handshake published");

    // Meta's notifications: POSTs signed with the app secret.
    let body = r#"{"object":"page","entry":[]}"#;
    let signature = "sha256=e6e9d7a842a48e17f43a34d6125d0d933e2aab92ee37f0993a4d493b50e3d438";
    let post = gateway.request(
        "POST",
        "/api/v1/webhook/meta",
        &format!("content-type: application/json\r\nx-hub-signature-256: {signature}\r\n"),
        body,
    );
    assert_eq!(post.status, 202, "{post:?}");
}

/// `sns` and `paypal` start (the gateway has an HTTPS client for their certificates now), and a
/// certificate URL off the provider's hosts is refused before anything is fetched: this test
/// never reaches the network.
#[test]
fn sns_and_paypal_are_configurable_and_refuse_foreign_certificate_hosts() {
    let gateway = Gateway::start(&[
        ("FIREFLY_VERIFY_SNS", "sns"),
        (
            "FIREFLY_SECRET_SNS",
            "arn:aws:sns:us-east-1:123456789012:orders",
        ),
        ("FIREFLY_VERIFY_PAYPAL", "paypal"),
        ("FIREFLY_SECRET_PAYPAL", "1JE4291016473214C"),
    ]);
    let sns = serde_json::json!({
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:orders",
        "Message": "{}",
        "Timestamp": "2023-11-14T22:13:20.000Z",
        "SignatureVersion": "2",
        "Signature": "AAAA",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
    })
    .to_string();
    let answer = gateway.request(
        "POST",
        "/api/v1/webhook/sns",
        "content-type: text/plain; charset=UTF-8\r\n",
        &sns,
    );
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (401, "untrusted_certificate"),
        "{answer:?}"
    );
    let answer = gateway.request(
        "POST",
        "/api/v1/webhook/paypal",
        "content-type: application/json\r\n\
         paypal-transmission-id: 69cd13f0-d67a-11e5-baa3-778b53f4ae55\r\n\
         paypal-transmission-time: 2016-02-18T20:01:35Z\r\n\
         paypal-transmission-sig: AAAA\r\n\
         paypal-auth-algo: SHA256withRSA\r\n\
         paypal-cert-url: https://evil.example/v1/notifications/certs/CERT-360caa42\r\n",
        r#"{"id":"WH-1","event_type":"PAYMENT.SALE.COMPLETED"}"#,
    );
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (401, "untrusted_certificate"),
        "{answer:?}"
    );
    assert!(gateway.publishes() < 0.5, "nothing published");
}
