//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and Svix, which
//! is the same scheme with `svix-` headers.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{
    Algorithm, Encoding, FIVE_MINUTES, Tag, check_window, decode_signature, parse_unix_seconds,
    verify_mac,
};
use crate::verify::{
    ConfigError, SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError,
};

/// Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256("{id}.{ts}.{body}")> …`
/// (space-separated, any of them may match) with `webhook-id` and `webhook-timestamp`; keys
/// are `whsec_<base64>`; five minutes' tolerance. Asymmetric `v1a` signatures are ignored.
///
/// [`svix`](Self::svix) reads the `svix-id`, `svix-timestamp` and `svix-signature` headers
/// instead (falling back to the `webhook-` ones, as Svix's libraries do).
/// See <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>
/// and <https://docs.svix.com/receiving/verifying-payloads/how-manual>.
#[derive(Debug, Clone)]
pub struct StandardWebhooks {
    keys: SecretSet,
    tolerance: Duration,
    svix: bool,
}

impl StandardWebhooks {
    /// Verifies with these keys (`whsec_<base64>`; the prefix is optional). Fails when a key
    /// is not base64.
    pub fn new(secrets: impl Into<SecretSet>) -> Result<Self, ConfigError> {
        let keys = secrets.into().try_map_keys(|key| {
            let key = key.strip_prefix(b"whsec_").unwrap_or(key);
            STANDARD
                .decode(key)
                .map_err(|_| "not a whsec_ key: expected base64 after the prefix")
        })?;
        Ok(Self {
            keys,
            tolerance: FIVE_MINUTES,
            svix: false,
        })
    }

    /// The same scheme under Svix's header names (`svix-id`, `svix-timestamp`,
    /// `svix-signature`).
    pub fn svix(secrets: impl Into<SecretSet>) -> Result<Self, ConfigError> {
        let mut this = Self::new(secrets)?;
        this.svix = true;
        Ok(this)
    }

    /// How far the timestamp may be from the reference time, either way (default 5 minutes).
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Reads a header by its Standard Webhooks name, trying the Svix name first in Svix mode.
    fn header<'a>(
        &self,
        request: &SignedRequest<'a>,
        standard: &str,
        svix: &str,
    ) -> Result<&'a str, VerifyError> {
        if self.svix {
            match request.require_header(svix) {
                Err(VerifyError::MissingSignature) => {}
                other => return other,
            }
        }
        request.require_header(standard)
    }
}

const MAX_SIGNATURES: usize = 16;

/// The `v1` signatures of a `webhook-signature` header.
pub(crate) fn parse_signatures(header: &str) -> Result<Vec<Tag>, VerifyError> {
    let mut signatures = Vec::new();
    let mut other_versions = false;
    for entry in header.split_ascii_whitespace().take(MAX_SIGNATURES) {
        let Some((version, signature)) = entry.split_once(',') else {
            continue;
        };
        if version == "v1" {
            if let Ok(tag) = decode_signature(signature, Encoding::Base64, Algorithm::Sha256) {
                signatures.push(tag);
            }
        } else if !version.is_empty() && !signature.is_empty() {
            other_versions = true;
        }
    }
    if signatures.is_empty() && !other_versions {
        return Err(VerifyError::MalformedSignature);
    }
    Ok(signatures)
}

impl SignatureVerifier for StandardWebhooks {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let id = self.header(request, "webhook-id", "svix-id")?;
        let timestamp = self.header(request, "webhook-timestamp", "svix-timestamp")?;
        let signatures =
            parse_signatures(self.header(request, "webhook-signature", "svix-signature")?)?;
        let signed_at = parse_unix_seconds(timestamp)?;
        check_window(signed_at, request.now(), self.tolerance)?;
        let parts: [&[u8]; 5] = [
            id.as_bytes(),
            b".",
            timestamp.as_bytes(),
            b".",
            request.body(),
        ];
        verify_mac(
            &self.keys,
            request.now(),
            Algorithm::Sha256,
            &parts,
            &signatures,
        )
        .map(|v| v.with_signed_at(signed_at))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{b64, headers, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    // The test vector of the Standard Webhooks reference libraries and Svix's docs
    // (github.com/standard-webhooks/standard-webhooks, libraries/*/ tests;
    // docs.svix.com/receiving/verifying-payloads/how-manual).
    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn std_headers(prefix: &str, id: &str, ts: &str, sig: &str) -> http::HeaderMap {
        headers(&[
            (&format!("{prefix}-id"), id),
            (&format!("{prefix}-timestamp"), ts),
            (&format!("{prefix}-signature"), sig),
        ])
    }

    #[test]
    fn reference_vector_standard_and_svix() {
        let h = std_headers("webhook", ID, &TS.to_string(), SIG);
        let v = StandardWebhooks::new(KEY).unwrap();
        assert!(run(&v, BODY, &h, TS).is_ok());
        let s = StandardWebhooks::svix(KEY).unwrap();
        assert!(
            run(&s, BODY, &h, TS).is_ok(),
            "svix falls back to webhook- headers"
        );
        let sh = std_headers("svix", ID, &TS.to_string(), SIG);
        assert!(run(&s, BODY, &sh, TS).is_ok());
        assert_eq!(run(&v, BODY, &sh, TS), Err(VerifyError::MissingSignature));
        // The key without its prefix works too.
        let bare = StandardWebhooks::new(KEY.trim_start_matches("whsec_")).unwrap();
        assert!(run(&bare, BODY, &h, TS).is_ok());
    }

    #[test]
    fn tampering_wrong_key_and_several_signatures() {
        let v = StandardWebhooks::new(KEY).unwrap();
        let ts = TS.to_string();
        assert_eq!(
            run(
                &v,
                br#"{"test": 2432232315}"#,
                &std_headers("webhook", ID, &ts, SIG),
                TS
            ),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, BODY, &std_headers("webhook", "msg_other", &ts, SIG), TS),
            Err(VerifyError::InvalidSignature)
        );
        let other = StandardWebhooks::new(b64(b"another key of some length")).unwrap();
        assert_eq!(
            run(&other, BODY, &std_headers("webhook", ID, &ts, SIG), TS),
            Err(VerifyError::InvalidSignature)
        );
        let several = format!("v1,bm9wZQ== v1a,c2lnbmF0dXJl v2,abc {SIG}");
        assert!(run(&v, BODY, &std_headers("webhook", ID, &ts, &several), TS).is_ok());
        // Only asymmetric signatures: nothing we can match.
        assert_eq!(
            run(
                &v,
                BODY,
                &std_headers("webhook", ID, &ts, "v1a,c2lnbmF0dXJl"),
                TS
            ),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn window_both_ways() {
        let v = StandardWebhooks::new(KEY).unwrap();
        let h = std_headers("webhook", ID, &TS.to_string(), SIG);
        assert!(run(&v, BODY, &h, TS + 300).is_ok());
        assert!(run(&v, BODY, &h, TS - 300).is_ok());
        assert_eq!(
            run(&v, BODY, &h, TS + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(&v, BODY, &h, TS - 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn missing_and_malformed() {
        let v = StandardWebhooks::new(KEY).unwrap();
        let ts = TS.to_string();
        for missing in [
            headers(&[("webhook-timestamp", &ts), ("webhook-signature", SIG)]),
            headers(&[("webhook-id", ID), ("webhook-signature", SIG)]),
            headers(&[("webhook-id", ID), ("webhook-timestamp", &ts)]),
        ] {
            assert_eq!(
                run(&v, BODY, &missing, TS),
                Err(VerifyError::MissingSignature)
            );
        }
        for (t, s) in [
            (ts.as_str(), "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            (ts.as_str(), "v1,not-base64!"),
            (ts.as_str(), "v1,AAAA"),
            (ts.as_str(), ","),
            ("1614265330.5", SIG),
        ] {
            assert_eq!(
                run(&v, BODY, &std_headers("webhook", ID, t, s), TS),
                Err(VerifyError::MalformedSignature),
                "{t} {s}"
            );
        }
    }

    #[test]
    fn invalid_keys_fail_at_construction() {
        let err = StandardWebhooks::new(SecretSet::new(KEY).with("whsec_???")).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidSecret { index: 1, .. }));
        assert!(!err.to_string().contains("???"));
    }

    #[test]
    fn rotation() {
        let exp = time::OffsetDateTime::from_unix_timestamp(TS + 10).unwrap();
        let new_key = b"the new key, 24 bytes!!!";
        let v = StandardWebhooks::new(
            SecretSet::new(format!("whsec_{}", b64(new_key)))
                .with(Secret::new(KEY).label("old").expires_at(exp)),
        )
        .unwrap();
        let h = std_headers("webhook", ID, &TS.to_string(), SIG);
        assert_eq!(
            run(&v, BODY, &h, TS + 9).unwrap().secret_label(),
            Some("old")
        );
        assert_eq!(
            run(&v, BODY, &h, TS + 10),
            Err(VerifyError::InvalidSignature)
        );
        let msg = [ID.as_bytes(), b".", TS.to_string().as_bytes(), b".", BODY].concat();
        let new_sig = format!("v1,{}", b64(&hmac256(new_key, &msg)));
        let h = std_headers("webhook", ID, &TS.to_string(), &new_sig);
        assert_eq!(run(&v, BODY, &h, TS + 10).unwrap().secret_index(), 0);
    }
}
