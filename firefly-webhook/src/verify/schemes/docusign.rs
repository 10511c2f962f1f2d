//! DocuSign Connect: one `X-DocuSign-Signature-<n>` header per active HMAC key.

use super::{Algorithm, Encoding, Tag, decode_signature, verify_mac};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

const PREFIX: &str = "x-docusign-signature-";

/// DocuSign Connect with HMAC: `X-DocuSign-Signature-1` … `X-DocuSign-Signature-<n>`, each
/// `<base64 HMAC-SHA256(body)>` with one of the account's active Connect keys.
///
/// Signed: the raw body (the whole POST body, line endings included). DocuSign sends one header
/// per active key (up to [`MAX_KEYS`](Self::MAX_KEYS)); the request verifies when any of them
/// matches any of this verifier's keys, so keys can be added at DocuSign before they are
/// configured here and removed after. The keys are used as the text DocuSign shows. No timestamp,
/// so no tolerance: a replay is caught by the idempotency layer.
/// See DocuSign's "How to validate an HMAC signature":
/// <https://developers.docusign.com/platform/webhooks/connect/validate/>.
#[derive(Debug, Clone)]
pub struct DocuSign {
    secrets: SecretSet,
}

impl DocuSign {
    /// DocuSign allows up to 100 Connect keys, hence headers `-1` to `-100`; others are ignored.
    pub const MAX_KEYS: usize = 100;

    /// Verifies with these Connect HMAC keys.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
        }
    }
}

/// Whether `name` is `x-docusign-signature-<1..=100>`.
fn is_signature_header(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .filter(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| (1..=DocuSign::MAX_KEYS).contains(&n))
}

impl SignatureVerifier for DocuSign {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let mut present = false;
        let mut signatures: Vec<Tag> = Vec::new();
        for (name, value) in request.headers() {
            if signatures.len() == Self::MAX_KEYS || !is_signature_header(name.as_str()) {
                continue;
            }
            present = true;
            // One malformed header does not hide a good one.
            if let Some(tag) = value
                .to_str()
                .ok()
                .and_then(|v| decode_signature(v.trim(), Encoding::Base64, Algorithm::Sha256).ok())
            {
                signatures.push(tag);
            }
        }
        if !present {
            return Err(VerifyError::MissingSignature);
        }
        if signatures.is_empty() {
            return Err(VerifyError::MalformedSignature);
        }
        verify_mac(
            &self.secrets,
            request.now(),
            Algorithm::Sha256,
            &[request.body()],
            &signatures,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, b64, headers, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    const BODY: &[u8] = b"{\"event\":\"envelope-completed\",\"data\":{}}\r\n";

    fn sig(key: &str) -> String {
        b64(&hmac256(key.as_bytes(), BODY))
    }

    #[test]
    fn any_header_matching_any_key_verifies() {
        let v = DocuSign::new(SecretSet::new("key-b").with("key-c"));
        let h = headers(&[
            ("x-docusign-signature-1", &sig("key-a")),
            ("x-docusign-signature-2", &sig("key-c")),
            ("x-authorization-digest", "HMACSHA256"),
        ]);
        assert_eq!(run(&v, BODY, &h, 0).unwrap().secret_index(), 1);
        assert_eq!(run(&v, b"{}", &h, 0), Err(VerifyError::InvalidSignature));
        assert_eq!(
            run(&DocuSign::new("key-a-typo"), BODY, &h, 0),
            Err(VerifyError::InvalidSignature)
        );
        let hundredth = headers(&[("x-docusign-signature-100", &sig("key-b"))]);
        assert!(run(&v, BODY, &hundredth, 0).is_ok());
        // A malformed header next to a good one is ignored.
        let mixed = headers(&[
            ("x-docusign-signature-1", "garbage"),
            ("x-docusign-signature-3", &sig("key-b")),
        ]);
        assert!(run(&v, BODY, &mixed, 0).is_ok());
    }

    #[test]
    fn missing_and_malformed() {
        let v = DocuSign::new("k");
        for missing in [
            headers(&[]),
            headers(&[("x-docusign-signature", &sig("k"))]),
            headers(&[("x-docusign-signature-0", &sig("k"))]),
            headers(&[("x-docusign-signature-101", &sig("k"))]),
            headers(&[("x-docusign-signature-01x", &sig("k"))]),
        ] {
            assert_eq!(
                run(&v, BODY, &missing, 0),
                Err(VerifyError::MissingSignature),
                "{missing:?}"
            );
        }
        for bad in ["not base64!", "AAAA", ""] {
            assert_eq!(
                run(&v, BODY, &headers(&[("x-docusign-signature-1", bad)]), 0),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn rotation_and_the_header_cap() {
        let v = DocuSign::new(SecretSet::new("new").with(Secret::new("old").expires_at(at(5))));
        let h = headers(&[("x-docusign-signature-1", &sig("old"))]);
        assert_eq!(run(&v, BODY, &h, 4).unwrap().secret_index(), 1);
        assert_eq!(run(&v, BODY, &h, 5), Err(VerifyError::InvalidSignature));
        // Repeated headers count towards the cap: the 101st value is not read.
        let mut many = http::HeaderMap::new();
        for _ in 0..DocuSign::MAX_KEYS {
            many.append("x-docusign-signature-1", sig("other").parse().unwrap());
        }
        many.append("x-docusign-signature-2", sig("new").parse().unwrap());
        assert_eq!(run(&v, BODY, &many, 0), Err(VerifyError::InvalidSignature));
    }
}
