//! Linear: `Linear-Signature` over the body, with the timestamp inside the body.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Algorithm, Encoding, check_window, decode_signature, verify_mac};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Linear: `Linear-Signature: <hex HMAC-SHA256(body)>`; replay protection comes from the
/// body's `webhookTimestamp` (Unix milliseconds), which must be within a minute of the
/// reference time, as Linear recommends.
/// See <https://linear.app/developers/webhooks#securing-webhooks>.
#[derive(Debug, Clone)]
pub struct Linear {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    Linear,
    Duration::from_secs(60),
    "Verifies with these webhook signing secrets.",
    "How far `webhookTimestamp` may be from the reference time, either way (default 1 minute)."
);

#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "webhookTimestamp")]
    webhook_timestamp: Option<i64>,
}

/// The body's `webhookTimestamp`, in milliseconds.
fn body_timestamp(body: &[u8]) -> Result<OffsetDateTime, VerifyError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|_| VerifyError::MalformedSignature)?;
    let millis = envelope
        .webhook_timestamp
        .ok_or(VerifyError::MalformedSignature)?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map_err(|_| VerifyError::MalformedSignature)
}

/// The signed body without its `webhookTimestamp`, as a SHA-256 digest (hex).
///
/// Linear signs only the body; its `Linear-Delivery` header is not signed, and `webhookId`
/// names the webhook, not the delivery. The timestamp is the one part of the body a retry
/// changes (it must be within a minute of the reference time), so the rest identifies the
/// delivery: a retry gets the same id, a replay with a fresh `Linear-Delivery` header too.
/// Top-level fields are taken in name order, each value exactly as sent.
pub(super) fn delivery_id(body: &[u8]) -> Option<Cow<'static, str>> {
    let fields: BTreeMap<Cow<'_, str>, &RawValue> = serde_json::from_slice(body).ok()?;
    let mut digest = Sha256::new();
    for (name, value) in fields
        .iter()
        .filter(|(name, _)| *name != "webhookTimestamp")
    {
        let value = value.get().as_bytes();
        for part in [name.as_bytes(), value] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
    }
    Some(Cow::Owned(format!("{:x}", digest.finalize())))
}

impl SignatureVerifier for Linear {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let signature = decode_signature(
            request.require_header("linear-signature")?,
            Encoding::Hex,
            Algorithm::Sha256,
        )?;
        // Authenticate first: only a signed body's timestamp is worth parsing and trusting.
        let verified = verify_mac(
            &self.secrets,
            request.now(),
            Algorithm::Sha256,
            &[request.body()],
            &[signature],
        )?;
        let signed_at = body_timestamp(request.body())?;
        check_window(signed_at, request.now(), self.tolerance)?;
        Ok(verified.with_signed_at(signed_at))
    }

    /// A digest of the body without its `webhookTimestamp`.
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        delivery_id(request.body())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{headers, hex, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    // Linear documents the scheme but publishes no vector; computed independently.
    const NOW: i64 = 1_714_478_400;

    fn body(ts_ms: i64) -> Vec<u8> {
        format!(
            r#"{{"action":"update","type":"Issue","data":{{"id":"x"}},"webhookTimestamp":{ts_ms}}}"#
        )
        .into_bytes()
    }

    fn h(secret: &[u8], body: &[u8]) -> http::HeaderMap {
        headers(&[("linear-signature", &hex(&hmac256(secret, body)))])
    }

    #[test]
    fn valid_tampered_wrong_secret() {
        let v = Linear::new("lin_wh_secret");
        let b = body(NOW * 1000 + 250);
        let ok = run(&v, &b, &h(b"lin_wh_secret", &b), NOW).unwrap();
        assert_eq!(ok.signed_at().unwrap().unix_timestamp(), NOW);
        let tampered = body(NOW * 1000 + 251);
        assert_eq!(
            run(&v, &tampered, &h(b"lin_wh_secret", &b), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, &b, &h(b"other", &b), NOW),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn window_both_ways() {
        let v = Linear::new("s");
        let b = body(NOW * 1000);
        let sig = h(b"s", &b);
        assert!(run(&v, &b, &sig, NOW + 60).is_ok());
        assert_eq!(
            run(&v, &b, &sig, NOW + 61),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(&v, &b, &sig, NOW - 61),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn missing_and_malformed() {
        let v = Linear::new("s");
        let b = body(NOW * 1000);
        assert_eq!(
            run(&v, &b, &headers(&[]), NOW),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            run(&v, &b, &headers(&[("linear-signature", "sha256=abc")]), NOW),
            Err(VerifyError::MalformedSignature)
        );
        // Signed, but without a usable timestamp.
        for b in [
            br#"{"action":"update"}"#.to_vec(),
            br#"{"webhookTimestamp":"soon"}"#.to_vec(),
            b"not json".to_vec(),
        ] {
            assert_eq!(
                run(&v, &b, &h(b"s", &b), NOW),
                Err(VerifyError::MalformedSignature)
            );
        }
    }

    #[test]
    fn rotation() {
        let exp = OffsetDateTime::from_unix_timestamp(NOW + 30).unwrap();
        let v = Linear::new(SecretSet::new("new").with(Secret::new("old").expires_at(exp)));
        let b = body(NOW * 1000);
        assert_eq!(
            run(&v, &b, &h(b"old", &b), NOW + 29)
                .unwrap()
                .secret_index(),
            1
        );
        assert_eq!(
            run(&v, &b, &h(b"old", &b), NOW + 30),
            Err(VerifyError::InvalidSignature)
        );
        assert!(run(&v, &b, &h(b"new", &b), NOW + 30).is_ok());
    }
}
