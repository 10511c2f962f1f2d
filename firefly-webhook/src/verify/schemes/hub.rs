//! Schemes that sign only the body, without a timestamp: GitHub, Intercom, Shopify.
//!
//! They cannot detect a replay on their own; pair them with the idempotency layer.

use super::{Algorithm, Encoding, decode_signature, verify_mac};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Verifies a `<prefix><encoded HMAC(body)>` header.
fn body_signature(
    request: &SignedRequest<'_>,
    secrets: &SecretSet,
    header: &str,
    prefix: &str,
    encoding: Encoding,
    algorithm: Algorithm,
) -> Result<Verified, VerifyError> {
    let value = request.require_header(header)?;
    let encoded = value
        .strip_prefix(prefix)
        .ok_or(VerifyError::MalformedSignature)?;
    let signature = decode_signature(encoded, encoding, algorithm)?;
    verify_mac(
        secrets,
        request.now(),
        algorithm,
        &[request.body()],
        &[signature],
    )
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>`.
///
/// The legacy `X-Hub-Signature: sha1=…` header is accepted only when the SHA-256 one is absent
/// and [`legacy_sha1`](Self::legacy_sha1) is on.
/// See <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>.
#[derive(Debug, Clone)]
pub struct GitHub {
    secrets: SecretSet,
    legacy_sha1: bool,
}

impl GitHub {
    /// Verifies with these webhook secrets.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
            legacy_sha1: false,
        }
    }

    /// Also accept the SHA-1 `X-Hub-Signature` when `X-Hub-Signature-256` is absent (off by
    /// default: SHA-1 is only for old GitHub Enterprise servers).
    #[must_use]
    pub fn legacy_sha1(mut self, on: bool) -> Self {
        self.legacy_sha1 = on;
        self
    }
}

impl SignatureVerifier for GitHub {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let has_sha256 = request.headers().contains_key("x-hub-signature-256");
        if !has_sha256 && self.legacy_sha1 && request.headers().contains_key("x-hub-signature") {
            return body_signature(
                request,
                &self.secrets,
                "x-hub-signature",
                "sha1=",
                Encoding::Hex,
                Algorithm::Sha1,
            );
        }
        body_signature(
            request,
            &self.secrets,
            "x-hub-signature-256",
            "sha256=",
            Encoding::Hex,
            Algorithm::Sha256,
        )
    }
}

/// Intercom: `X-Hub-Signature: sha1=<hex HMAC-SHA1(body)>` keyed with the app's client secret.
/// See <https://developers.intercom.com/docs/webhooks/webhook-notifications>.
#[derive(Debug, Clone)]
pub struct Intercom {
    secrets: SecretSet,
}

impl Intercom {
    /// Verifies with these client secrets.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
        }
    }
}

impl SignatureVerifier for Intercom {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        body_signature(
            request,
            &self.secrets,
            "x-hub-signature",
            "sha1=",
            Encoding::Hex,
            Algorithm::Sha1,
        )
    }
}

/// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(body)>`.
/// See <https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook>.
#[derive(Debug, Clone)]
pub struct Shopify {
    secrets: SecretSet,
}

impl Shopify {
    /// Verifies with these app client secrets.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
        }
    }
}

impl SignatureVerifier for Shopify {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        body_signature(
            request,
            &self.secrets,
            "x-shopify-hmac-sha256",
            "",
            Encoding::Base64,
            Algorithm::Sha256,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{b64, headers, hex, hmac1, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn github_documented_vector() {
        // docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        // ("Testing the webhook payload validation").
        let v = GitHub::new("It's a Secret to Everybody");
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(
            run(&v, b"Hello, World!", &h, NOW).unwrap().secret_index(),
            0
        );
        assert_eq!(
            run(&v, b"Hello, World?", &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
        let wrong = GitHub::new("It's a Secret to Nobody");
        assert_eq!(
            run(&wrong, b"Hello, World!", &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn github_missing_malformed_and_legacy() {
        let v = GitHub::new("s");
        let body = b"{}";
        let sha1 = format!("sha1={}", hex(&hmac1(b"s", body)));
        assert_eq!(
            run(&v, body, &headers(&[]), NOW),
            Err(VerifyError::MissingSignature)
        );
        for bad in ["sha256=zz", "md5=00", "sha256=abcd", "757107ea"] {
            assert_eq!(
                run(&v, body, &headers(&[("x-hub-signature-256", bad)]), NOW),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
        // SHA-1 only when opted in.
        let legacy = headers(&[("x-hub-signature", &sha1)]);
        assert_eq!(
            run(&v, body, &legacy, NOW),
            Err(VerifyError::MissingSignature)
        );
        let v = v.legacy_sha1(true);
        assert!(run(&v, body, &legacy, NOW).is_ok());
        // With both headers, SHA-256 decides.
        let both = headers(&[
            ("x-hub-signature", &sha1),
            ("x-hub-signature-256", &format!("sha256={}", hex(&[0; 32]))),
        ]);
        assert_eq!(
            run(&v, body, &both, NOW),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn github_rotation() {
        use time::OffsetDateTime;
        let expiry = OffsetDateTime::from_unix_timestamp(NOW + 60).unwrap();
        let v = GitHub::new(
            SecretSet::new(Secret::new("new").label("new"))
                .with(Secret::new("old").label("old").expires_at(expiry)),
        );
        let body = b"{\"a\":1}";
        let sig = |k: &[u8]| {
            headers(&[(
                "x-hub-signature-256",
                &format!("sha256={}", hex(&hmac256(k, body))),
            )])
        };
        let ok_new = run(&v, body, &sig(b"new"), NOW).unwrap();
        assert_eq!(
            (ok_new.secret_index(), ok_new.secret_label()),
            (0, Some("new"))
        );
        let ok_old = run(&v, body, &sig(b"old"), NOW + 59).unwrap();
        assert_eq!(
            (ok_old.secret_index(), ok_old.secret_label()),
            (1, Some("old"))
        );
        assert_eq!(
            run(&v, body, &sig(b"old"), NOW + 60),
            Err(VerifyError::InvalidSignature)
        );
        assert!(run(&v, body, &sig(b"new"), NOW + 3600).is_ok());
    }

    #[test]
    fn intercom() {
        let v = Intercom::new("client-secret");
        let body = br#"{"type":"notification_event"}"#;
        let good = format!("sha1={}", hex(&hmac1(b"client-secret", body)));
        let h = headers(&[("x-hub-signature", &good)]);
        assert!(run(&v, body, &h, NOW).is_ok());
        assert_eq!(run(&v, b"{}", &h, NOW), Err(VerifyError::InvalidSignature));
        assert_eq!(
            run(&Intercom::new("other"), body, &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, body, &headers(&[]), NOW),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            run(&v, body, &headers(&[("x-hub-signature", "sha256=00")]), NOW),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn shopify() {
        // Shopify publishes no fixed vector; computed independently with the hmac crate.
        let v = Shopify::new("shop-secret");
        let body = br#"{"id":1}"#;
        let good = b64(&hmac256(b"shop-secret", body));
        let h = headers(&[("x-shopify-hmac-sha256", &good)]);
        assert!(run(&v, body, &h, NOW).is_ok());
        assert_eq!(
            run(&v, b"{\"id\":2}", &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&Shopify::new("x"), body, &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, body, &headers(&[]), NOW),
            Err(VerifyError::MissingSignature)
        );
        for bad in ["not base64!", "AAAA", &hex(&[0; 32])] {
            assert_eq!(
                run(&v, body, &headers(&[("x-shopify-hmac-sha256", bad)]), NOW),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn intercom_and_shopify_rotation() {
        let exp = time::OffsetDateTime::from_unix_timestamp(NOW).unwrap();
        let set = || SecretSet::new("new").with(Secret::new("old").expires_at(exp));
        let body = b"{}";
        let intercom = Intercom::new(set());
        let h = headers(&[(
            "x-hub-signature",
            &format!("sha1={}", hex(&hmac1(b"old", body))),
        )]);
        assert_eq!(run(&intercom, body, &h, NOW - 1).unwrap().secret_index(), 1);
        assert_eq!(
            run(&intercom, body, &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
        let shopify = Shopify::new(set());
        let h = headers(&[("x-shopify-hmac-sha256", &b64(&hmac256(b"old", body)))]);
        assert_eq!(run(&shopify, body, &h, NOW - 1).unwrap().secret_index(), 1);
        assert_eq!(
            run(&shopify, body, &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
        let h = headers(&[("x-shopify-hmac-sha256", &b64(&hmac256(b"new", body)))]);
        assert_eq!(run(&shopify, body, &h, NOW).unwrap().secret_index(), 0);
    }
}
