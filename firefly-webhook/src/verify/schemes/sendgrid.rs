//! SendGrid's signed Event Webhook: ECDSA P-256 over timestamp and body.

use std::time::Duration;

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

use super::public_key::{PublicKeys, base64_bytes};
use super::{FIVE_MINUTES, check_window, parse_unix_seconds};
use crate::verify::{
    ConfigError, SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError,
};

/// SendGrid (Twilio SendGrid) signed Event Webhook:
/// `X-Twilio-Email-Event-Webhook-Signature: <base64 DER ECDSA P-256 / SHA-256 signature of
/// "{timestamp}{body}">` with `X-Twilio-Email-Event-Webhook-Timestamp` (Unix seconds).
///
/// Keys are the "Verification Key" the SendGrid console shows once signing is enabled: the
/// base64 DER of the public key (`MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE…`; PEM armour is
/// accepted too). SendGrid documents no tolerance; five minutes (either way) by default.
/// See SendGrid's "Getting Started with the Event Webhook Security Features":
/// <https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features>.
#[derive(Debug, Clone)]
pub struct SendGrid {
    keys: PublicKeys<VerifyingKey>,
    tolerance: Duration,
}

fn parse_key(text: &[u8]) -> Result<VerifyingKey, &'static str> {
    const REASON: &str = "not a P-256 public key: expected base64 DER (SubjectPublicKeyInfo)";
    let text = std::str::from_utf8(text).map_err(|_| REASON)?;
    // The body of a PEM block, or the bare base64 the console shows.
    let base64: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .flat_map(|line| line.trim().chars())
        .collect();
    let der = base64_bytes(&base64, 1024).ok_or(REASON)?;
    VerifyingKey::from_public_key_der(&der).map_err(|_| REASON)
}

impl SendGrid {
    /// Verifies with these public keys (base64 DER); fails when one is not a P-256 key.
    pub fn new(public_keys: impl Into<SecretSet>) -> Result<Self, ConfigError> {
        Ok(Self {
            keys: PublicKeys::parse(&public_keys.into(), parse_key)?,
            tolerance: FIVE_MINUTES,
        })
    }

    /// How far the timestamp may be from the reference time, either way (default 5 minutes).
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }
}

impl SignatureVerifier for SendGrid {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let signature = request.require_header("x-twilio-email-event-webhook-signature")?;
        let timestamp = request.require_header("x-twilio-email-event-webhook-timestamp")?;
        // A DER P-256 signature is at most 72 bytes.
        let der = base64_bytes(signature, 72).ok_or(VerifyError::MalformedSignature)?;
        let signature = Signature::from_der(&der).map_err(|_| VerifyError::MalformedSignature)?;
        let signed_at = parse_unix_seconds(timestamp)?;
        check_window(signed_at, request.now(), self.tolerance)?;
        let message = [timestamp.as_bytes(), request.body()].concat();
        self.keys
            .verify_with(request.now(), |key| {
                key.verify(&message, &signature).is_ok()
            })
            .map(|v| v.with_signed_at(signed_at))
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;

    use super::super::testing::{b64, headers, run};
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn public(k: &SigningKey) -> String {
        b64(k.verifying_key().to_public_key_der().unwrap().as_bytes())
    }

    fn signed(k: &SigningKey, ts: &str, body: &[u8]) -> http::HeaderMap {
        let sig: Signature = k.sign(&[ts.as_bytes(), body].concat());
        headers(&[
            (
                "x-twilio-email-event-webhook-signature",
                &b64(sig.to_der().as_bytes()),
            ),
            ("x-twilio-email-event-webhook-timestamp", ts),
        ])
    }

    const TS: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"[{"email":"a@example.com","event":"processed"}]"#;

    // The example verification key of SendGrid's documentation and libraries
    // (sendgrid-python `test/test_eventwebhook.py`), with its signed payload.
    const DOC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
    const DOC_SIG: &str = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
    const DOC_TS: &str = "1588788367";
    const DOC_BODY: &str =
        "{\"category\":\"example_payload\",\"event\":\"test_event\",\"message_id\":\"message_id\"}";

    #[test]
    fn documented_vector() {
        let v = SendGrid::new(DOC_KEY).unwrap();
        let h = headers(&[
            ("x-twilio-email-event-webhook-signature", DOC_SIG),
            ("x-twilio-email-event-webhook-timestamp", DOC_TS),
        ]);
        assert!(run(&v, DOC_BODY.as_bytes(), &h, 1_588_788_367).is_ok());
        assert_eq!(
            run(&v, b"{}", &h, 1_588_788_367),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn accepts_and_refuses_with_the_right_codes() {
        let k = key(1);
        let v = SendGrid::new(public(&k)).unwrap();
        let h = signed(&k, "1700000000", BODY);
        assert!(run(&v, BODY, &h, TS).is_ok());
        assert_eq!(run(&v, b"[]", &h, TS), Err(VerifyError::InvalidSignature));
        let other = SendGrid::new(public(&key(2))).unwrap();
        assert_eq!(
            run(&other, BODY, &h, TS),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, BODY, &h, TS + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(
                &v,
                BODY,
                &headers(&[("x-twilio-email-event-webhook-timestamp", "1")]),
                TS
            ),
            Err(VerifyError::MissingSignature)
        );
        for bad in ["@@", "AAAA", &b64(&[0x30; 100])] {
            let h = headers(&[
                ("x-twilio-email-event-webhook-signature", bad),
                ("x-twilio-email-event-webhook-timestamp", "1700000000"),
            ]);
            assert_eq!(
                run(&v, BODY, &h, TS),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn rotation_and_pem_keys() {
        let (old, new) = (key(3), key(4));
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            public(&new)
        );
        let v = SendGrid::new(SecretSet::new(pem).with(public(&old))).unwrap();
        assert_eq!(
            run(&v, BODY, &signed(&old, "1700000000", BODY), TS)
                .unwrap()
                .secret_index(),
            1
        );
        assert_eq!(
            run(&v, BODY, &signed(&new, "1700000000", BODY), TS)
                .unwrap()
                .secret_index(),
            0
        );
        assert!(matches!(
            SendGrid::new(SecretSet::new(public(&new)).with("MFkw")),
            Err(ConfigError::InvalidSecret { index: 1, .. })
        ));
    }

    /// `cryptography` signs as SendGrid does, SendGrid's own `EventWebhook` helper (sendgrid
    /// Python library) accepts it, and so do we.
    #[test]
    #[ignore = "needs python3 with sendgrid; run scripts/test"]
    fn sendgrid_helper_agrees() {
        const SCRIPT: &str = "\
import sys, base64
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
ts, body = sys.argv[1:3]
key = ec.generate_private_key(ec.SECP256R1())
public = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
sig = base64.b64encode(key.sign((ts + body).encode(), ec.ECDSA(hashes.SHA256()))).decode()
assert EventWebhook(public).verify_signature(body, sig, ts)
print(public, sig)
";
        let body = r#"[{"email":"a@example.com","event":"delivered","sg_event_id":"x"}]"#;
        for _ in 0..4 {
            let out = super::super::testing::python(SCRIPT, &["1700000000", body]);
            let (public, sig) = out.split_once(' ').unwrap();
            let v = SendGrid::new(public).unwrap();
            let h = headers(&[
                ("x-twilio-email-event-webhook-signature", sig),
                ("x-twilio-email-event-webhook-timestamp", "1700000000"),
            ]);
            assert!(run(&v, body.as_bytes(), &h, TS).is_ok());
            assert_eq!(run(&v, b"[]", &h, TS), Err(VerifyError::InvalidSignature));
            assert_eq!(
                run(&v, body.as_bytes(), &h, TS + 301),
                Err(VerifyError::TimestampOutOfTolerance)
            );
        }
    }
}
