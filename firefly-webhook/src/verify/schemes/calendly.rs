//! Calendly: `Calendly-Webhook-Signature: t=<ts>,v1=<hex>`.

use std::time::Duration;

use super::timestamped::TimestampedHeader;
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Calendly: `Calendly-Webhook-Signature: t=<ts>,v1=<hex HMAC-SHA256("{t}.{body}")>`, keyed with
/// the webhook signing key.
///
/// Signed: the `t` timestamp (Unix seconds, as sent), a `.`, then the raw body. The timestamp
/// must be within three minutes of the reference time, either way (the tolerance Calendly's
/// guide uses).
/// See Calendly's "Webhook signatures":
/// <https://developer.calendly.com/api-docs/overview/webhooks/webhook-signatures>.
#[derive(Debug, Clone)]
pub struct Calendly {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    Calendly,
    THREE_MINUTES,
    "Verifies with these webhook signing keys.",
    "How far the timestamp may be from the reference time, either way (default 3 minutes)."
);

const THREE_MINUTES: Duration = Duration::from_secs(180);

/// `t=<ts>,v1=<hex>`, signed over `{t}.{body}` (Stripe's shape).
const HEADER: TimestampedHeader = TimestampedHeader {
    name: "calendly-webhook-signature",
    separator: ',',
    timestamp_key: "t",
    signature_key: "v1",
    max_signatures: 16,
    joiner: b".",
};

impl SignatureVerifier for Calendly {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        HEADER.verify(request, &self.secrets, self.tolerance)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, headers, hex, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"event":"invitee.created","payload":{}}"#;

    fn h(key: &str, ts: i64) -> http::HeaderMap {
        let msg = [ts.to_string().as_bytes(), b".", BODY].concat();
        let value = format!("t={ts},v1={}", hex(&hmac256(key.as_bytes(), &msg)));
        headers(&[("calendly-webhook-signature", &value)])
    }

    #[test]
    fn valid_tampered_wrong_key_window() {
        let v = Calendly::new("cal-key");
        let ok = run(&v, BODY, &h("cal-key", NOW), NOW + 180).unwrap();
        assert_eq!(ok.signed_at().unwrap().unix_timestamp(), NOW);
        assert_eq!(
            run(&v, b"{}", &h("cal-key", NOW), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&Calendly::new("x"), BODY, &h("cal-key", NOW), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, BODY, &h("cal-key", NOW), NOW + 181),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(&v, BODY, &h("cal-key", NOW), NOW - 181),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        let wide = Calendly::new("cal-key").tolerance(Duration::from_secs(600));
        assert!(run(&wide, BODY, &h("cal-key", NOW), NOW + 600).is_ok());
    }

    #[test]
    fn missing_malformed_rotation() {
        let v = Calendly::new(SecretSet::new("new").with(Secret::new("old").expires_at(at(NOW))));
        assert_eq!(
            run(&v, BODY, &h("old", NOW), NOW - 1)
                .unwrap()
                .secret_index(),
            1
        );
        assert_eq!(
            run(&v, BODY, &h("old", NOW), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, BODY, &headers(&[]), NOW),
            Err(VerifyError::MissingSignature)
        );
        for bad in ["t=1700000000", "v1=00", "t=x,v1=00", "t=1700000000;v1=00"] {
            assert_eq!(
                run(
                    &v,
                    BODY,
                    &headers(&[("calendly-webhook-signature", bad)]),
                    NOW
                ),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
    }
}
