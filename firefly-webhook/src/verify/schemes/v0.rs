//! The `v0:{timestamp}:{body}` schemes: Slack and Zoom.

use std::borrow::Cow;
use std::time::Duration;

use super::{
    Algorithm, BodyIds, Encoding, FIVE_MINUTES, check_window, decode_signature, non_empty,
    parse_unix_seconds, verify_mac,
};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

fn verify_v0(
    request: &SignedRequest<'_>,
    secrets: &SecretSet,
    timestamp_header: &str,
    signature_header: &str,
    tolerance: Duration,
) -> Result<Verified, VerifyError> {
    let signature = request.require_header(signature_header)?;
    let timestamp = request.require_header(timestamp_header)?;
    let encoded = signature
        .strip_prefix("v0=")
        .ok_or(VerifyError::MalformedSignature)?;
    let signature = decode_signature(encoded, Encoding::Hex, Algorithm::Sha256)?;
    let signed_at = parse_unix_seconds(timestamp)?;
    check_window(signed_at, request.now(), tolerance)?;
    let parts: [&[u8]; 4] = [b"v0:", timestamp.as_bytes(), b":", request.body()];
    verify_mac(
        secrets,
        request.now(),
        Algorithm::Sha256,
        &parts,
        &[signature],
    )
    .map(|v| v.with_signed_at(signed_at))
}

/// Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256("v0:{ts}:{body}")>` with
/// `X-Slack-Request-Timestamp`, five minutes' tolerance.
/// See <https://api.slack.com/authentication/verifying-requests-from-slack>.
#[derive(Debug, Clone)]
pub struct Slack {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    Slack,
    FIVE_MINUTES,
    "Verifies with these signing secrets.",
    "How far the timestamp may be from the reference time, either way (default 5 minutes)."
);

/// An Events API callback's `event_id`, kept by Slack's retries. Slash commands and
/// interactions (form bodies) carry none.
pub(super) fn slack_delivery_id(body: &[u8]) -> Option<Cow<'_, str>> {
    non_empty(BodyIds::of(body).event_id)
}

impl SignatureVerifier for Slack {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        verify_v0(
            request,
            &self.secrets,
            "x-slack-request-timestamp",
            "x-slack-signature",
            self.tolerance,
        )
    }

    /// The body's `event_id` (Events API callbacks).
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        slack_delivery_id(request.body())
    }
}

/// Zoom: `x-zm-signature: v0=<hex HMAC-SHA256("v0:{ts}:{body}")>` with
/// `x-zm-request-timestamp`, keyed with the app's secret token; five minutes' tolerance.
/// See <https://developers.zoom.us/docs/api/webhooks/#verify-webhook-events>.
#[derive(Debug, Clone)]
pub struct Zoom {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    Zoom,
    FIVE_MINUTES,
    "Verifies with these secret tokens.",
    "How far the timestamp may be from the reference time, either way (default 5 minutes)."
);

impl SignatureVerifier for Zoom {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        verify_v0(
            request,
            &self.secrets,
            "x-zm-request-timestamp",
            "x-zm-signature",
            self.tolerance,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{headers, hex, hmac256, run};
    use super::*;

    // api.slack.com/authentication/verifying-requests-from-slack ("A recipe for security"):
    // the documented signing secret, timestamp, slash-command body and signature.
    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TS: i64 = 1_531_420_618;
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn slack_headers(ts: &str, sig: &str) -> http::HeaderMap {
        headers(&[
            ("x-slack-request-timestamp", ts),
            ("x-slack-signature", sig),
        ])
    }

    #[test]
    fn slack_documented_vector() {
        let v = Slack::new(DOC_SECRET);
        let h = slack_headers(&DOC_TS.to_string(), DOC_SIG);
        let ok = run(&v, DOC_BODY.as_bytes(), &h, DOC_TS + 10).unwrap();
        assert_eq!(ok.signed_at().unwrap().unix_timestamp(), DOC_TS);
        let tampered = DOC_BODY.replace("foobar", "foobaz");
        assert_eq!(
            run(&v, tampered.as_bytes(), &h, DOC_TS),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&Slack::new("wrong"), DOC_BODY.as_bytes(), &h, DOC_TS),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn slack_window_both_ways() {
        let v = Slack::new(DOC_SECRET);
        let h = slack_headers(&DOC_TS.to_string(), DOC_SIG);
        let body = DOC_BODY.as_bytes();
        assert!(run(&v, body, &h, DOC_TS + 300).is_ok());
        assert!(run(&v, body, &h, DOC_TS - 300).is_ok());
        assert_eq!(
            run(&v, body, &h, DOC_TS + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(&v, body, &h, DOC_TS - 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        let strict = Slack::new(DOC_SECRET).tolerance(Duration::from_secs(5));
        assert_eq!(
            run(&strict, body, &h, DOC_TS + 6),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = slack_headers(&(DOC_TS + 1).to_string(), DOC_SIG);
        assert_eq!(
            run(&v, body, &moved, DOC_TS),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn slack_missing_and_malformed() {
        let v = Slack::new(DOC_SECRET);
        let ts = DOC_TS.to_string();
        let body = DOC_BODY.as_bytes();
        assert_eq!(
            run(
                &v,
                body,
                &headers(&[("x-slack-request-timestamp", &ts)]),
                DOC_TS
            ),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            run(
                &v,
                body,
                &headers(&[("x-slack-signature", DOC_SIG)]),
                DOC_TS
            ),
            Err(VerifyError::MissingSignature)
        );
        for (t, s) in [
            (ts.as_str(), "v1=00"),
            (ts.as_str(), "v0=xyz"),
            (ts.as_str(), &DOC_SIG[3..]),
            ("yesterday", DOC_SIG),
            ("-5", DOC_SIG),
        ] {
            assert_eq!(
                run(&v, body, &slack_headers(t, s), DOC_TS),
                Err(VerifyError::MalformedSignature),
                "{t} {s}"
            );
        }
    }

    #[test]
    fn zoom() {
        // Zoom publishes no fixed vector; computed independently.
        let secret = b"zoom-secret-token";
        let body = br#"{"event":"meeting.started","payload":{}}"#;
        let ts = "1700000000";
        let msg = [b"v0:".as_slice(), ts.as_bytes(), b":", body].concat();
        let sig = format!("v0={}", hex(&hmac256(secret, &msg)));
        let h = headers(&[("x-zm-request-timestamp", ts), ("x-zm-signature", &sig)]);
        let v = Zoom::new("zoom-secret-token");
        assert!(run(&v, body, &h, 1_700_000_100).is_ok());
        assert_eq!(
            run(&v, b"{}", &h, 1_700_000_000),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&Zoom::new("nope"), body, &h, 1_700_000_000),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, body, &h, 1_700_000_301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(&v, body, &h, 1_699_999_699),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(
                &v,
                body,
                &headers(&[("x-zm-request-timestamp", ts)]),
                1_700_000_000
            ),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            run(
                &v,
                body,
                &headers(&[("x-zm-request-timestamp", ts), ("x-zm-signature", "v0")]),
                1_700_000_000
            ),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn slack_and_zoom_rotation() {
        use crate::verify::{Secret, SecretSet};
        let exp = time::OffsetDateTime::from_unix_timestamp(1_700_000_010).unwrap();
        let set = || SecretSet::new("new").with(Secret::new("old").label("old").expires_at(exp));
        let ts = "1700000000";
        let body = b"{}";
        let sig = |key: &[u8]| {
            let msg = [b"v0:".as_slice(), ts.as_bytes(), b":", body].concat();
            format!("v0={}", hex(&hmac256(key, &msg)))
        };
        let slack = Slack::new(set());
        let old = slack_headers(ts, &sig(b"old"));
        assert_eq!(
            run(&slack, body, &old, 1_700_000_009)
                .unwrap()
                .secret_label(),
            Some("old")
        );
        assert_eq!(
            run(&slack, body, &old, 1_700_000_010),
            Err(VerifyError::InvalidSignature)
        );
        assert!(
            run(
                &slack,
                body,
                &slack_headers(ts, &sig(b"new")),
                1_700_000_010
            )
            .is_ok()
        );
        let zoom = Zoom::new(set());
        let old = headers(&[
            ("x-zm-request-timestamp", ts),
            ("x-zm-signature", &sig(b"old")),
        ]);
        assert_eq!(
            run(&zoom, body, &old, 1_700_000_009)
                .unwrap()
                .secret_index(),
            1
        );
        assert_eq!(
            run(&zoom, body, &old, 1_700_000_010),
            Err(VerifyError::InvalidSignature)
        );
    }
}
