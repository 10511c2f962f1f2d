//! Square: the notification URL and the body, signed together.

use std::borrow::Cow;

use super::{Algorithm, BodyIds, Encoding, decode_signature, non_empty, verify_mac};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Square: `x-square-hmacsha256-signature: <base64 HMAC-SHA256(notification URL + body)>`,
/// keyed with the subscription's signature key.
///
/// The URL is the registry's public URL plus the request path and query, or the one given to
/// [`notification_url`](Self::notification_url); it must match the subscription's URL exactly.
/// See <https://developer.squareup.com/docs/webhooks/step3validate>.
#[derive(Debug, Clone)]
pub struct Square {
    secrets: SecretSet,
    notification_url: Option<String>,
}

impl Square {
    /// Verifies with these signature keys.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
            notification_url: None,
        }
    }

    /// The subscription's notification URL, exactly as configured at Square (overrides the
    /// URL built from the registry's public URL).
    #[must_use]
    pub fn notification_url(mut self, url: impl Into<String>) -> Self {
        self.notification_url = Some(url.into());
        self
    }
}

/// The body's `event_id`, the same on every retry of the event.
pub(super) fn delivery_id(body: &[u8]) -> Option<Cow<'_, str>> {
    non_empty(BodyIds::of(body).event_id)
}

impl SignatureVerifier for Square {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let signature = decode_signature(
            request.require_header("x-square-hmacsha256-signature")?,
            Encoding::Base64,
            Algorithm::Sha256,
        )?;
        let built;
        let url = if let Some(url) = &self.notification_url {
            url.as_str()
        } else {
            built = request.url().ok_or_else(|| {
                tracing::warn!("square signatures need the public URL; none is configured");
                VerifyError::InvalidSignature
            })?;
            built.as_str()
        };
        verify_mac(
            &self.secrets,
            request.now(),
            Algorithm::Sha256,
            &[url.as_bytes(), request.body()],
            &[signature],
        )
    }

    /// The body's `event_id`.
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        delivery_id(request.body())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, b64, headers, hmac256};
    use super::*;
    use crate::verify::Secret;

    const URL: &str = "https://hooks.example.com/api/v1/webhook/square";
    const BODY: &[u8] = br#"{"merchant_id":"6SSW7HV8K2ST5","type":"payment.updated"}"#;

    // Square publishes no fixed vector; computed independently from URL + body.
    fn h(key: &[u8], url: &str, body: &[u8]) -> http::HeaderMap {
        let sig = b64(&hmac256(key, &[url.as_bytes(), body].concat()));
        headers(&[("x-square-hmacsha256-signature", &sig)])
    }

    fn check(
        v: &Square,
        body: &[u8],
        h: &http::HeaderMap,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        v.verify(
            &SignedRequest::new(body, h)
                .public_url("https://hooks.example.com")
                .target("/api/v1/webhook/square", None)
                .at(at(now)),
        )
    }

    #[test]
    fn valid_tampered_wrong_key_missing_malformed() {
        let v = Square::new("sq-key");
        assert!(check(&v, BODY, &h(b"sq-key", URL, BODY), 0).is_ok());
        assert_eq!(
            check(&v, b"{}", &h(b"sq-key", URL, BODY), 0),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            check(&Square::new("other"), BODY, &h(b"sq-key", URL, BODY), 0),
            Err(VerifyError::InvalidSignature)
        );
        // Signed for another URL.
        assert_eq!(
            check(
                &v,
                BODY,
                &h(b"sq-key", "https://evil.example/hook", BODY),
                0
            ),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            check(&v, BODY, &headers(&[]), 0),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            check(
                &v,
                BODY,
                &headers(&[("x-square-hmacsha256-signature", "abc")]),
                0
            ),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn explicit_notification_url_and_no_url() {
        let v = Square::new("k").notification_url("https://other.example/sq");
        let signed = h(b"k", "https://other.example/sq", BODY);
        assert!(check(&v, BODY, &signed, 0).is_ok());
        let bare = Square::new("k");
        assert_eq!(
            bare.verify(&SignedRequest::new(BODY, &signed)),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn rotation() {
        let exp = at(100);
        let v = Square::new(SecretSet::new("new").with(Secret::new("old").expires_at(exp)));
        assert_eq!(
            check(&v, BODY, &h(b"old", URL, BODY), 99)
                .unwrap()
                .secret_index(),
            1
        );
        assert_eq!(
            check(&v, BODY, &h(b"old", URL, BODY), 100),
            Err(VerifyError::InvalidSignature)
        );
    }
}
