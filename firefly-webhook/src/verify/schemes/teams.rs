//! Microsoft Teams outgoing webhooks: `Authorization: HMAC <base64>` with a base64 key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{Algorithm, Encoding, decode_signature, verify_mac};
use crate::verify::{
    ConfigError, SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError,
};

/// Microsoft Teams outgoing webhooks: `Authorization: HMAC <base64 HMAC-SHA256(body)>`.
///
/// The key is the security token Teams shows when the outgoing webhook is created, base64-decoded
/// (the token is base64; [`new`](Self::new) decodes it). Signed: the raw body. No timestamp, so
/// no tolerance: a replay is caught by the idempotency layer. The `Authorization` header holds a
/// signature, not the token, so it is not [removed](SignatureVerifier::secret_headers) before
/// publishing.
/// See Microsoft's "Create Outgoing Webhooks", section "Verify the outgoing webhook HMAC token":
/// <https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/add-outgoing-webhook>.
#[derive(Debug, Clone)]
pub struct Teams {
    keys: SecretSet,
}

impl Teams {
    /// Verifies with these security tokens (base64, as Teams shows them). Fails when a token is
    /// not base64.
    pub fn new(secrets: impl Into<SecretSet>) -> Result<Self, ConfigError> {
        let keys = secrets.into().try_map_keys(|token| {
            STANDARD
                .decode(token)
                .map_err(|_| "not a Teams security token: expected base64")
        })?;
        Ok(Self { keys })
    }
}

impl SignatureVerifier for Teams {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let value = request.require_header("authorization")?;
        let (scheme, encoded) = value
            .split_once(' ')
            .ok_or(VerifyError::MalformedSignature)?;
        if !scheme.eq_ignore_ascii_case("HMAC") {
            return Err(VerifyError::MalformedSignature);
        }
        let signature = decode_signature(encoded.trim(), Encoding::Base64, Algorithm::Sha256)?;
        verify_mac(
            &self.keys,
            request.now(),
            Algorithm::Sha256,
            &[request.body()],
            &[signature],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, b64, headers, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    // A token of the shape Teams issues: 32 random bytes, base64.
    const TOKEN: &str = "vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA=";
    const BODY: &[u8] = br#"{"type":"message","text":"<at>Bot</at> hello"}"#;

    fn auth(key: &[u8], body: &[u8]) -> http::HeaderMap {
        headers(&[(
            "authorization",
            &format!("HMAC {}", b64(&hmac256(key, body))),
        )])
    }

    fn key() -> Vec<u8> {
        STANDARD.decode(TOKEN).unwrap()
    }

    #[test]
    fn valid_tampered_and_wrong_token() {
        let v = Teams::new(TOKEN).unwrap();
        assert!(run(&v, BODY, &auth(&key(), BODY), 0).is_ok());
        assert_eq!(
            run(&v, b"{}", &auth(&key(), BODY), 0),
            Err(VerifyError::InvalidSignature)
        );
        // Keyed with the token's text instead of its bytes: what a forgetful sender does.
        assert_eq!(
            run(&v, BODY, &auth(TOKEN.as_bytes(), BODY), 0),
            Err(VerifyError::InvalidSignature)
        );
        let other = Teams::new(b64(b"another 32-byte key, for tests!!")).unwrap();
        assert_eq!(
            run(&other, BODY, &auth(&key(), BODY), 0),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn missing_malformed_and_bad_tokens() {
        let v = Teams::new(TOKEN).unwrap();
        assert_eq!(
            run(&v, BODY, &headers(&[]), 0),
            Err(VerifyError::MissingSignature)
        );
        let sig = b64(&hmac256(&key(), BODY));
        for bad in [
            sig.clone(),
            format!("Bearer {sig}"),
            "HMAC not-base64!".to_owned(),
            "HMAC AAAA".to_owned(),
        ] {
            assert_eq!(
                run(&v, BODY, &headers(&[("authorization", &bad)]), 0),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
        assert!(
            run(
                &v,
                BODY,
                &headers(&[("authorization", &format!("hmac {sig}"))]),
                0
            )
            .is_ok()
        );
        let err = Teams::new(SecretSet::new(TOKEN).with("not base64!")).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidSecret { index: 1, .. }));
        assert!(!err.to_string().contains("not base64!"));
    }

    #[test]
    fn rotation() {
        let old = b64(b"the old key of this outgoing hook");
        let v =
            Teams::new(SecretSet::new(TOKEN).with(Secret::new(old.as_str()).expires_at(at(10))))
                .unwrap();
        let h = auth(b"the old key of this outgoing hook", BODY);
        assert_eq!(run(&v, BODY, &h, 9).unwrap().secret_index(), 1);
        assert_eq!(run(&v, BODY, &h, 10), Err(VerifyError::InvalidSignature));
    }
}
