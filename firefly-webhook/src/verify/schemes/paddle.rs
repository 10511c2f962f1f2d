//! Paddle Billing: `Paddle-Signature: ts=<ts>;h1=<hex>`.

use std::borrow::Cow;
use std::time::Duration;

use super::timestamped::TimestampedHeader;
use super::{BodyIds, non_empty};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Paddle Billing: `Paddle-Signature: ts=<ts>;h1=<hex HMAC-SHA256("{ts}:{body}")>`, one or more
/// `h1`, keyed with the notification destination's secret key.
///
/// The default tolerance is 5 seconds, as Paddle's SDKs use; widen it with
/// [`tolerance`](Self::tolerance) if your clock is less precise.
/// See <https://developer.paddle.com/webhooks/signature-verification>.
#[derive(Debug, Clone)]
pub struct Paddle {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    Paddle,
    Duration::from_secs(5),
    "Verifies with these endpoint secret keys (`pdl_ntfset_…`, used as-is).",
    "How far the timestamp may be from the reference time, either way (default 5 seconds)."
);

/// `ts=<ts>;h1=<hex>…`, signed over `{ts}:{body}`.
const HEADER: TimestampedHeader = TimestampedHeader {
    name: "paddle-signature",
    separator: ';',
    timestamp_key: "ts",
    signature_key: "h1",
    max_signatures: 16,
    joiner: b":",
};

/// The body's `event_id` (one per event, kept by retries and by replays of the notification),
/// else its `notification_id`.
pub(super) fn delivery_id(body: &[u8]) -> Option<Cow<'_, str>> {
    let ids = BodyIds::of(body);
    non_empty(ids.event_id).or_else(|| non_empty(ids.notification_id))
}

impl SignatureVerifier for Paddle {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        HEADER.verify(request, &self.secrets, self.tolerance)
    }

    /// The body's `event_id`, else its `notification_id`.
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        delivery_id(request.body())
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::super::testing::{headers, hex, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    // developer.paddle.com/webhooks/signature-verification shows the header shape
    // (`ts=1671552777;h1=eb4d…`) without the secret behind it; signatures here are computed
    // independently with the hmac crate.
    const TS: i64 = 1_671_552_777;
    const KEY: &str = "pdl_ntfset_01gkpjp8bkm3tm53kdgkx6sms7_6h3qd3uFSi9YCD3OLYAShQI90XTI5vEI";
    const BODY: &[u8] = br#"{"event_id":"evt_01","event_type":"transaction.paid"}"#;

    fn sign(key: &str, ts: i64, body: &[u8]) -> String {
        hex(&hmac256(
            key.as_bytes(),
            &[ts.to_string().as_bytes(), b":", body].concat(),
        ))
    }

    fn h(value: &str) -> http::HeaderMap {
        headers(&[("paddle-signature", value)])
    }

    #[test]
    fn valid_tampered_wrong_secret() {
        let v = Paddle::new(KEY);
        let header = format!("ts={TS};h1={}", sign(KEY, TS, BODY));
        assert_eq!(
            run(&v, BODY, &h(&header), TS + 2)
                .unwrap()
                .signed_at()
                .unwrap()
                .unix_timestamp(),
            TS
        );
        assert_eq!(
            run(&v, b"{}", &h(&header), TS),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&Paddle::new("pdl_other"), BODY, &h(&header), TS),
            Err(VerifyError::InvalidSignature)
        );
        let two = format!(
            "ts={TS};h1={};h1={}",
            sign("x", TS, BODY),
            sign(KEY, TS, BODY)
        );
        assert!(run(&v, BODY, &h(&two), TS).is_ok());
    }

    #[test]
    fn window_both_ways() {
        let v = Paddle::new(KEY);
        let header = format!("ts={TS};h1={}", sign(KEY, TS, BODY));
        assert!(run(&v, BODY, &h(&header), TS + 5).is_ok());
        assert_eq!(
            run(&v, BODY, &h(&header), TS + 6),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(&v, BODY, &h(&header), TS - 6),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        let lax = Paddle::new(KEY).tolerance(Duration::from_secs(60));
        assert!(run(&lax, BODY, &h(&header), TS + 60).is_ok());
    }

    #[test]
    fn missing_and_malformed() {
        let v = Paddle::new(KEY);
        assert_eq!(
            run(&v, BODY, &headers(&[]), TS),
            Err(VerifyError::MissingSignature)
        );
        let sig = sign(KEY, TS, BODY);
        for bad in [
            format!("ts={TS}"),
            format!("h1={sig}"),
            format!("ts={TS},h1={sig}"),
            format!("ts=now;h1={sig}"),
            format!("ts={TS};h1=nothex"),
            format!("ts={TS};ts={TS};h1={sig}"),
        ] {
            assert_eq!(
                run(&v, BODY, &h(&bad), TS),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn rotation() {
        let exp = OffsetDateTime::from_unix_timestamp(TS + 3).unwrap();
        let v = Paddle::new(SecretSet::new("new").with(Secret::new("old").expires_at(exp)));
        let old = format!("ts={TS};h1={}", sign("old", TS, BODY));
        assert_eq!(run(&v, BODY, &h(&old), TS + 2).unwrap().secret_index(), 1);
        assert_eq!(
            run(&v, BODY, &h(&old), TS + 3),
            Err(VerifyError::InvalidSignature)
        );
        let new = format!("ts={TS};h1={}", sign("new", TS, BODY));
        assert!(run(&v, BODY, &h(&new), TS + 3).is_ok());
    }
}
