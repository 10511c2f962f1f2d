//! `firefly verify` on requests captured from `firefly send`: it names the failing step.

use std::path::PathBuf;

use firefly_webhook::verify::Scheme;

use crate::send::secret;
use crate::{assert_exit, capture_one, firefly, json, stdout};

/// A request `firefly send` signed with `scheme`, as a server received it, in a file.
async fn captured(scheme: Scheme, body: &str) -> (PathBuf, Vec<u8>) {
    let (port, server) = capture_one().await;
    let url = format!("http://127.0.0.1:{port}");
    let out = firefly([
        "send",
        scheme.name(),
        "--url",
        &url,
        "--body",
        body,
        "--secret",
        secret(scheme),
    ])
    .await;
    assert_exit(&out, 0);
    let raw = server.await.unwrap();
    let path = std::env::temp_dir().join(format!("firefly-{}.http", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, &raw).unwrap();
    (path, raw)
}

async fn verify(path: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let request = format!("@{}", path.display());
    let mut args = vec!["verify", "--request", request.as_str()];
    args.extend_from_slice(extra);
    firefly(args).await
}

#[tokio::test]
async fn a_good_capture_verifies_and_secrets_are_never_printed() {
    let (path, _) = captured(Scheme::GitHub, r#"{"zen":"hi"}"#).await;
    let out = verify(
        &path,
        &["--secret", "old-secret", "--secret", secret(Scheme::GitHub)],
    )
    .await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("matches secret #2"), "{text}");
    assert!(text.ends_with("verified\n"), "{text}");
    assert!(!text.contains(secret(Scheme::GitHub)) && !text.contains("old-secret"));
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn a_tampered_body_fails_at_the_signature() {
    let (path, mut raw) = captured(Scheme::GitHub, r#"{"amount":100}"#).await;
    // Search for the whole body, not just `100`: a header (a delivery id, a
    // date) may hold those digits too.
    let body = br#"{"amount":100}"#;
    let at = raw.windows(body.len()).rposition(|w| w == body).unwrap();
    raw[at..at + body.len()].copy_from_slice(br#"{"amount":999}"#);
    std::fs::write(&path, &raw).unwrap();

    let out = verify(
        &path,
        &["--secret", "first", "--secret", secret(Scheme::GitHub)],
    )
    .await;
    assert_exit(&out, 3);
    let text = stdout(&out);
    assert!(text.contains("FAIL  signature"), "{text}");
    assert!(
        text.contains("secret #1: mismatch, secret #2: mismatch"),
        "{text}"
    );
    assert!(
        text.contains("verification failed at `signature`: invalid_signature"),
        "{text}"
    );

    let out = verify(&path, &["--json", "--secret", secret(Scheme::GitHub)]).await;
    assert_exit(&out, 3);
    let report = json(&out);
    assert_eq!(report["failedStep"], "signature");
    assert_eq!(report["code"], "invalid_signature");
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn a_stale_timestamp_fails_at_the_timestamp_with_its_age() {
    let (path, _) = captured(Scheme::Stripe, r#"{"id":"evt_1"}"#).await;
    // Judged an hour after it was signed.
    let later = (time::OffsetDateTime::now_utc().unix_timestamp() + 3_600).to_string();
    let out = verify(&path, &["--secret", secret(Scheme::Stripe), "--at", &later]).await;
    assert_exit(&out, 3);
    let text = stdout(&out);
    assert!(text.contains("FAIL  timestamp"), "{text}");
    assert!(
        text.contains("signed 3600 s before") || text.contains("signed 3599 s before"),
        "{text}"
    );
    assert!(text.contains("timestamp_out_of_tolerance"), "{text}");
    assert!(text.contains("--    signature"), "{text}");

    // Within the scheme's tolerance it verifies.
    let out = verify(&path, &["--secret", secret(Scheme::Stripe)]).await;
    assert_exit(&out, 0);
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn a_missing_header_fails_at_the_headers_and_names_it() {
    let (path, raw) = captured(Scheme::Slack, r#"{"event_id":"Ev1"}"#).await;
    let text = String::from_utf8(raw).unwrap();
    let stripped: String = text
        .split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("x-slack-signature:"))
        .collect();
    std::fs::write(&path, stripped).unwrap();

    let out = verify(&path, &["--json", "--secret", secret(Scheme::Slack)]).await;
    assert_exit(&out, 3);
    let report = json(&out);
    assert_eq!(report["failedStep"], "headers");
    assert_eq!(report["code"], "missing_signature");
    let detail = report["steps"][0]["detail"].as_str().unwrap();
    assert_eq!(detail, "missing `x-slack-signature`");
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn url_schemes_need_the_public_url() {
    let (path, _) = captured(Scheme::Square, r#"{"event_id":"e1"}"#).await;
    let out = verify(&path, &["--secret", secret(Scheme::Square)]).await;
    assert_exit(&out, 2);
    // `send` signed the URL it posted to; the capture server's address was the public URL.
    let raw = std::fs::read_to_string(&path).unwrap();
    let host = raw
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .trim()
        .to_owned();
    let public = format!("http://{host}");
    let out = verify(
        &path,
        &["--secret", secret(Scheme::Square), "--public-url", &public],
    )
    .await;
    assert_exit(&out, 0);
    let out = verify(
        &path,
        &[
            "--secret",
            secret(Scheme::Square),
            "--public-url",
            "https://elsewhere.example",
        ],
    )
    .await;
    assert_exit(&out, 3);
    assert!(
        stdout(&out).contains("check --public-url"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_file(path).unwrap();
}
