//! Schemes that sign only the body, without a timestamp, in one `<prefix><encoded MAC>` header:
//! GitHub, Intercom, Shopify, Meta, Bitbucket Cloud and Typeform.
//!
//! They cannot detect a replay on their own; pair them with the idempotency layer. Their
//! delivery headers (`X-GitHub-Delivery`, `X-Shopify-Webhook-Id`, `X-Request-UUID`, …) are not
//! signed, so their idempotency keys come from the body.

use std::borrow::Cow;

use super::{Algorithm, BodyIds, Encoding, decode_signature, non_empty, verify_mac};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Verifies a `<prefix><encoded HMAC(body)>` header.
pub(super) fn body_signature(
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

/// The notification's `id`. Intercom's retries change the body (`delivery_attempts`), so the
/// body alone would not recognise them.
pub(super) fn intercom_delivery_id(body: &[u8]) -> Option<Cow<'_, str>> {
    non_empty(BodyIds::of(body).id)
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

    /// The notification's `id` in the body.
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        intercom_delivery_id(request.body())
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

/// A scheme that is one fixed `<prefix><encoded HMAC-SHA256(body)>` header and its secrets.
macro_rules! body_scheme {
    (
        $(#[$doc:meta])*
        $name:ident, $new_doc:literal, $header:literal, $prefix:literal, $encoding:expr
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            secrets: SecretSet,
        }

        impl $name {
            #[doc = $new_doc]
            pub fn new(secrets: impl Into<SecretSet>) -> Self {
                Self {
                    secrets: secrets.into(),
                }
            }
        }

        impl SignatureVerifier for $name {
            fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
                body_signature(
                    request,
                    &self.secrets,
                    $header,
                    $prefix,
                    $encoding,
                    Algorithm::Sha256,
                )
            }
        }
    };
}

body_scheme!(
    /// Meta (Facebook, Instagram, Messenger, WhatsApp Business) webhooks:
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>`, keyed with the app secret.
    ///
    /// Signed: the raw body exactly as sent (Meta escapes non-ASCII characters in it as
    /// `\uXXXX`; the bytes on the wire are what is signed). No timestamp, so no tolerance: a
    /// replay is caught by the idempotency layer. The legacy SHA-1 `X-Hub-Signature` that Meta
    /// also sends is ignored.
    /// See Meta's "Webhooks: Getting Started", section "Validate Payloads":
    /// <https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads>.
    Meta,
    "Verifies with these app secrets.",
    "x-hub-signature-256",
    "sha256=",
    Encoding::Hex
);

body_scheme!(
    /// Bitbucket Cloud webhooks with a secret:
    /// `X-Hub-Signature: sha256=<hex HMAC-SHA256(body)>`, keyed with the webhook's secret.
    ///
    /// Signed: the raw body. No timestamp, so no tolerance. Its `X-Request-UUID` is not signed.
    /// See Bitbucket Cloud's "Manage webhooks", section "Secure webhooks":
    /// <https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/#Secure-webhooks>.
    Bitbucket,
    "Verifies with these webhook secrets.",
    "x-hub-signature",
    "sha256=",
    Encoding::Hex
);

body_scheme!(
    /// Typeform: `Typeform-Signature: sha256=<base64 HMAC-SHA256(body)>`, keyed with the
    /// webhook's secret.
    ///
    /// Signed: the raw body. No timestamp, so no tolerance.
    /// See Typeform's "Secure your webhooks":
    /// <https://www.typeform.com/developers/webhooks/secure-your-webhooks/>.
    Typeform,
    "Verifies with these webhook secrets.",
    "typeform-signature",
    "sha256=",
    Encoding::Base64
);

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

    #[test]
    fn meta_bitbucket_typeform() {
        let body = "{\"object\":\"page\",\"entry\":[{\"text\":\"caf\\u00e9\"}]}".as_bytes();
        let hex_sig = |k: &[u8]| format!("sha256={}", hex(&hmac256(k, body)));
        let b64_sig = |k: &[u8]| format!("sha256={}", b64(&hmac256(k, body)));
        let cases: [(&dyn SignatureVerifier, &dyn SignatureVerifier, &str, String); 3] = [
            (
                &Meta::new("app-secret"),
                &Meta::new("other"),
                "x-hub-signature-256",
                hex_sig(b"app-secret"),
            ),
            (
                &Bitbucket::new("app-secret"),
                &Bitbucket::new("other"),
                "x-hub-signature",
                hex_sig(b"app-secret"),
            ),
            (
                &Typeform::new("app-secret"),
                &Typeform::new("other"),
                "typeform-signature",
                b64_sig(b"app-secret"),
            ),
        ];
        for (v, wrong, header, good) in cases {
            let h = headers(&[(header, &good)]);
            assert!(run(v, body, &h, NOW).is_ok(), "{header}");
            assert_eq!(
                run(v, b"{}", &h, NOW),
                Err(VerifyError::InvalidSignature),
                "{header}"
            );
            assert_eq!(
                run(wrong, body, &h, NOW),
                Err(VerifyError::InvalidSignature),
                "{header}"
            );
            assert_eq!(
                run(v, body, &headers(&[]), NOW),
                Err(VerifyError::MissingSignature),
                "{header}"
            );
            // Without the prefix, with the other encoding, or SHA-1 sized.
            let encoded = good.trim_start_matches("sha256=");
            let other_encoding = if header == "typeform-signature" {
                format!("sha256={}", hex(&hmac256(b"app-secret", body)))
            } else {
                format!("sha256={}", b64(&hmac256(b"app-secret", body)))
            };
            for bad in [
                encoded.to_owned(),
                other_encoding,
                format!("sha1={}", hex(&hmac1(b"app-secret", body))),
                "sha256=".to_owned(),
            ] {
                assert_eq!(
                    run(v, body, &headers(&[(header, &bad)]), NOW),
                    Err(VerifyError::MalformedSignature),
                    "{header}: {bad}"
                );
            }
        }
        // Bitbucket's header is GitHub's legacy name with SHA-256 in it: not Intercom's SHA-1.
        let h = headers(&[("x-hub-signature", &hex_sig(b"app-secret"))]);
        assert_eq!(
            run(&Intercom::new("app-secret"), body, &h, NOW),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn meta_bitbucket_typeform_rotation() {
        let exp = time::OffsetDateTime::from_unix_timestamp(NOW).unwrap();
        let set = || SecretSet::new("new").with(Secret::new("old").label("old").expires_at(exp));
        let body = b"{}";
        let old_hex = format!("sha256={}", hex(&hmac256(b"old", body)));
        let old_b64 = format!("sha256={}", b64(&hmac256(b"old", body)));
        let cases: [(&dyn SignatureVerifier, &str, &str); 3] = [
            (&Meta::new(set()), "x-hub-signature-256", &old_hex),
            (&Bitbucket::new(set()), "x-hub-signature", &old_hex),
            (&Typeform::new(set()), "typeform-signature", &old_b64),
        ];
        for (v, header, sig) in cases {
            let h = headers(&[(header, sig)]);
            assert_eq!(
                run(v, body, &h, NOW - 1).unwrap().secret_label(),
                Some("old")
            );
            assert_eq!(run(v, body, &h, NOW), Err(VerifyError::InvalidSignature));
        }
    }
}
