//! Stripe: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>…]`.

use std::borrow::Cow;
use std::time::Duration;

use super::timestamped::TimestampedHeader;
use super::{BodyIds, FIVE_MINUTES, non_empty};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Stripe: `Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256("{t}.{body}")>`, with one `v1` per
/// active endpoint secret during Stripe-side rotation; five minutes' tolerance. Other schemes
/// (`v0`) are ignored.
/// See <https://docs.stripe.com/webhooks#verify-manually>.
#[derive(Debug, Clone)]
pub struct Stripe {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    Stripe,
    FIVE_MINUTES,
    "Verifies with these endpoint secrets (`whsec_…`, used as-is).",
    "How far the timestamp may be from the reference time, either way (default 5 minutes)."
);

/// `t=<ts>,v1=<hex>…`, signed over `{t}.{body}`.
const HEADER: TimestampedHeader = TimestampedHeader {
    name: "stripe-signature",
    separator: ',',
    timestamp_key: "t",
    signature_key: "v1",
    // Stripe sends one or two.
    max_signatures: 16,
    joiner: b".",
};

/// The event id (`evt_…`): the body's `id`, the same on every retry of the event.
pub(super) fn delivery_id(body: &[u8]) -> Option<Cow<'_, str>> {
    non_empty(BodyIds::of(body).id)
}

impl SignatureVerifier for Stripe {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        HEADER.verify(request, &self.secrets, self.tolerance)
    }

    /// The body's `id` (`evt_…`).
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        delivery_id(request.body())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{headers, hex, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;

    // Stripe's docs show the header format but no secret to reproduce it; the expected
    // signature is computed independently with the hmac crate.
    fn sign(secret: &str, ts: i64, body: &[u8]) -> String {
        let msg = [ts.to_string().as_bytes(), b".", body].concat();
        hex(&hmac256(secret.as_bytes(), &msg))
    }

    fn h(value: &str) -> http::HeaderMap {
        headers(&[("stripe-signature", value)])
    }

    #[test]
    fn accepts_valid_and_rejects_tampering() {
        let v = Stripe::new("whsec_test");
        let header = format!("t={NOW},v1={}", sign("whsec_test", NOW, BODY));
        let ok = run(&v, BODY, &h(&header), NOW + 1).unwrap();
        assert_eq!(ok.signed_at().unwrap().unix_timestamp(), NOW);
        assert_eq!(
            run(&v, b"{}", &h(&header), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&Stripe::new("whsec_other"), BODY, &h(&header), NOW),
            Err(VerifyError::InvalidSignature)
        );
        // Timestamp is covered by the signature.
        let moved = format!("t={},v1={}", NOW + 1, sign("whsec_test", NOW, BODY));
        assert_eq!(
            run(&v, BODY, &h(&moved), NOW),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn documented_header_shape_with_spaces_v0_and_several_v1() {
        let v = Stripe::new("whsec_test");
        let good = sign("whsec_test", NOW, BODY);
        let header = format!(
            "t={NOW}, v1={}, v1={good}, v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
            sign("whsec_rolled", NOW, BODY)
        );
        assert!(run(&v, BODY, &h(&header), NOW).is_ok());
    }

    #[test]
    fn window_both_ways() {
        let v = Stripe::new("s");
        let header = format!("t={NOW},v1={}", sign("s", NOW, BODY));
        assert!(run(&v, BODY, &h(&header), NOW + 300).is_ok());
        assert_eq!(
            run(&v, BODY, &h(&header), NOW + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(&v, BODY, &h(&header), NOW - 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        let lax = Stripe::new("s").tolerance(Duration::from_secs(3600));
        assert!(run(&lax, BODY, &h(&header), NOW + 3000).is_ok());
    }

    #[test]
    fn missing_and_malformed() {
        let v = Stripe::new("s");
        assert_eq!(
            run(&v, BODY, &headers(&[]), NOW),
            Err(VerifyError::MissingSignature)
        );
        let sig = sign("s", NOW, BODY);
        for bad in [
            format!("v1={sig}"),
            format!("t={NOW}"),
            format!("t={NOW},v0={sig}"),
            format!("t=abc,v1={sig}"),
            format!("t={NOW},v1=xyz"),
            format!("t={NOW},v1={}", &sig[..10]),
            format!("t={NOW},t={NOW},v1={sig}"),
            format!("t={NOW};v1={sig}"),
            "garbage".to_owned(),
        ] {
            assert_eq!(
                run(&v, BODY, &h(&bad), NOW),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn rotation() {
        let expiry = time::OffsetDateTime::from_unix_timestamp(NOW + 100).unwrap();
        let v = Stripe::new(SecretSet::new("new").with(Secret::new("old").expires_at(expiry)))
            .tolerance(Duration::from_secs(1_000));
        let old = format!("t={NOW},v1={}", sign("old", NOW, BODY));
        let new = format!("t={NOW},v1={}", sign("new", NOW, BODY));
        assert_eq!(run(&v, BODY, &h(&old), NOW).unwrap().secret_index(), 1);
        assert_eq!(run(&v, BODY, &h(&new), NOW).unwrap().secret_index(), 0);
        assert_eq!(
            run(&v, BODY, &h(&old), NOW + 100),
            Err(VerifyError::InvalidSignature)
        );
        assert!(run(&v, BODY, &h(&new), NOW + 100).is_ok());
    }
}
