//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and Svix, which
//! is the same scheme with `svix-` headers.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use zeroize::Zeroizing;

use super::public_key::{PublicKeys, base64_bytes, ed25519_key, ed25519_signature};
use super::{
    Algorithm, Encoding, FIVE_MINUTES, Tag, check_window, decode_signature, parse_unix_seconds,
};
use crate::verify::{
    ConfigError, SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError,
};

/// Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256("{id}.{ts}.{body}")> …` or
/// `v1a,<base64 ed25519 signature of "{id}.{ts}.{body}">` (space-separated, mixed lists
/// allowed, any of them may match) with `webhook-id` and `webhook-timestamp`; five minutes'
/// tolerance either way.
///
/// Keys are symmetric secrets `whsec_<base64>` (for `v1`) or ed25519 public keys
/// `whpk_<base64 of 32 bytes>` (for `v1a`); one set may mix both, e.g. while a sender moves from
/// one to the other, and rotation works as for any [`SecretSet`]. A `v1` signature is only
/// checked against `whsec_` keys and a `v1a` one only against `whpk_` keys.
///
/// [`svix`](Self::svix) reads the `svix-id`, `svix-timestamp` and `svix-signature` headers
/// instead (falling back to the `webhook-` ones, as Svix's libraries do).
/// See the Standard Webhooks specification, "Signature scheme" and "Asymmetric signatures":
/// <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>,
/// and <https://docs.svix.com/receiving/verifying-payloads/how-manual>.
#[derive(Debug, Clone)]
pub struct StandardWebhooks {
    keys: PublicKeys<Key>,
    tolerance: Duration,
    svix: bool,
}

/// One configured key: a symmetric secret or an ed25519 public key.
#[derive(Clone)]
enum Key {
    Hmac(Zeroizing<Vec<u8>>),
    Ed25519(VerifyingKey),
}

fn parse_key(key: &[u8]) -> Result<Key, &'static str> {
    if let Some(public) = key.strip_prefix(b"whpk_") {
        return ed25519_key(public)
            .map(Key::Ed25519)
            .map_err(|_| "not a whpk_ key: expected base64 of a 32-byte ed25519 public key");
    }
    if key.starts_with(b"whsk_") {
        return Err(
            "a whsk_ key is the sender's private signing key: configure its whpk_ public key",
        );
    }
    let key = key.strip_prefix(b"whsec_").unwrap_or(key);
    STANDARD
        .decode(key)
        .map(|k| Key::Hmac(Zeroizing::new(k)))
        .map_err(|_| "not a whsec_ key: expected base64 after the prefix")
}

impl StandardWebhooks {
    /// Verifies with these keys: `whsec_<base64>` secrets (the prefix is optional) and
    /// `whpk_<base64>` ed25519 public keys. Fails when a key is neither.
    pub fn new(secrets: impl Into<SecretSet>) -> Result<Self, ConfigError> {
        Ok(Self {
            keys: PublicKeys::parse(&secrets.into(), parse_key)?,
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

/// The signatures of a `webhook-signature` header that this scheme can check.
#[derive(Default)]
pub(crate) struct Signatures {
    /// `v1`: HMAC-SHA256.
    hmac: Vec<Tag>,
    /// `v1a`: ed25519.
    ed25519: Vec<ed25519_dalek::Signature>,
}

/// The `v1` and `v1a` signatures of a `webhook-signature` header. Entries of other versions
/// are skipped; a header with nothing usable in it is malformed.
pub(crate) fn parse_signatures(header: &str) -> Result<Signatures, VerifyError> {
    let mut signatures = Signatures::default();
    let mut other_versions = false;
    for entry in header.split_ascii_whitespace().take(MAX_SIGNATURES) {
        let Some((version, signature)) = entry.split_once(',') else {
            continue;
        };
        match version {
            "v1" => {
                if let Ok(tag) = decode_signature(signature, Encoding::Base64, Algorithm::Sha256) {
                    signatures.hmac.push(tag);
                }
            }
            "v1a" => {
                if let Ok(sig) = ed25519_signature(base64_bytes(signature, 64)) {
                    signatures.ed25519.push(sig);
                }
            }
            _ if !version.is_empty() && !signature.is_empty() => other_versions = true,
            _ => {}
        }
    }
    if signatures.hmac.is_empty() && signatures.ed25519.is_empty() && !other_versions {
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
        // Built only when there is an ed25519 signature to check (it needs the whole message).
        let mut message = None;
        self.keys
            .verify_with(request.now(), |key| match key {
                Key::Hmac(secret) => {
                    let expected = Algorithm::Sha256.mac(secret, &parts);
                    // Fold without short-circuit so the position of a match does not show.
                    signatures
                        .hmac
                        .iter()
                        .fold(false, |found, c| found | c.matches(&expected))
                }
                Key::Ed25519(public) => {
                    if signatures.ed25519.is_empty() {
                        return false;
                    }
                    let message = message.get_or_insert_with(|| parts.concat());
                    signatures
                        .ed25519
                        .iter()
                        .any(|sig| public.verify_strict(message, sig).is_ok())
                }
            })
            .map(|v| v.with_signed_at(signed_at))
    }

    /// `webhook-id` (`svix-id` in Svix mode): signed with the timestamp and the body, and kept
    /// by every retry of the message.
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        self.header(request, "webhook-id", "svix-id")
            .ok()
            .map(Cow::Borrowed)
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
        // Only a v1a entry that is not an ed25519 signature: nothing to check.
        assert_eq!(
            run(
                &v,
                BODY,
                &std_headers("webhook", ID, &ts, "v1a,c2lnbmF0dXJl"),
                TS
            ),
            Err(VerifyError::MalformedSignature)
        );
        // Only a version we do not know: nothing we can match.
        assert_eq!(
            run(&v, BODY, &std_headers("webhook", ID, &ts, "v9,c2ln"), TS),
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

    fn whpk(key: &ed25519_dalek::SigningKey) -> String {
        format!("whpk_{}", b64(key.verifying_key().as_bytes()))
    }

    fn v1a(key: &ed25519_dalek::SigningKey, id: &str, ts: i64, body: &[u8]) -> String {
        use ed25519_dalek::Signer as _;
        let msg = [id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body].concat();
        format!("v1a,{}", b64(&key.sign(&msg).to_bytes()))
    }

    #[test]
    fn v1a_ed25519_accepted_tampered_wrong_key_and_stale_refused() {
        let k = super::super::ed25519::tests::key(7);
        let v = StandardWebhooks::new(whpk(&k)).unwrap();
        let ts = TS.to_string();
        let h = std_headers("webhook", ID, &ts, &v1a(&k, ID, TS, BODY));
        assert!(run(&v, BODY, &h, TS).is_ok());
        assert_eq!(run(&v, b"{}", &h, TS), Err(VerifyError::InvalidSignature));
        let h_other_id = std_headers("webhook", "msg_x", &ts, &v1a(&k, ID, TS, BODY));
        assert_eq!(
            run(&v, BODY, &h_other_id, TS),
            Err(VerifyError::InvalidSignature)
        );
        let other = StandardWebhooks::new(whpk(&super::super::ed25519::tests::key(8))).unwrap();
        assert_eq!(
            run(&other, BODY, &h, TS),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, BODY, &h, TS + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        // A v1 (HMAC) signature is never checked against a public key, and the reverse.
        assert_eq!(
            run(&v, BODY, &std_headers("webhook", ID, &ts, SIG), TS),
            Err(VerifyError::InvalidSignature)
        );
        let hmac_only = StandardWebhooks::new(KEY).unwrap();
        assert_eq!(
            run(&hmac_only, BODY, &h, TS),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn mixed_lists_and_mixed_key_sets_rotate() {
        let exp = time::OffsetDateTime::from_unix_timestamp(TS + 10).unwrap();
        let k = super::super::ed25519::tests::key(9);
        // The sender moves from the HMAC secret to an ed25519 key.
        let v = StandardWebhooks::new(
            SecretSet::new(Secret::new(whpk(&k)).label("ed25519"))
                .with(Secret::new(KEY).label("hmac").expires_at(exp)),
        )
        .unwrap();
        let ts = TS.to_string();
        let both = format!("{} {SIG}", v1a(&k, ID, TS, BODY));
        let h = std_headers("webhook", ID, &ts, &both);
        assert_eq!(
            run(&v, BODY, &h, TS).unwrap().secret_label(),
            Some("ed25519")
        );
        let hmac = std_headers("webhook", ID, &ts, SIG);
        assert_eq!(
            run(&v, BODY, &hmac, TS + 9).unwrap().secret_label(),
            Some("hmac")
        );
        assert_eq!(
            run(&v, BODY, &hmac, TS + 10),
            Err(VerifyError::InvalidSignature)
        );
        // A bad v1a entry beside a good v1 one does not spoil the list.
        let list = format!("v1a,{} {SIG}", b64(&[0; 64]));
        let h = std_headers("webhook", ID, &ts, &list);
        assert_eq!(run(&v, BODY, &h, TS).unwrap().secret_label(), Some("hmac"));
    }

    #[test]
    fn public_key_errors_at_construction() {
        for bad in ["whpk_AAAA", "whpk_!!", "whsk_c2VjcmV0"] {
            let err = StandardWebhooks::new(bad).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidSecret { index: 0, .. }),
                "{bad}"
            );
        }
        assert!(
            StandardWebhooks::new("whsk_c2VjcmV0")
                .unwrap_err()
                .to_string()
                .contains("whpk_")
        );
    }

    /// The `standardwebhooks` reference library signs `v1` and PyNaCl signs `v1a` as the
    /// specification describes; one mixed header verifies with either key.
    #[test]
    #[ignore = "needs python3 with standardwebhooks and PyNaCl; run scripts/test"]
    fn reference_library_and_pynacl_signatures_verify() {
        const SCRIPT: &str = "\
import sys, base64
from datetime import datetime, timezone
from nacl.signing import SigningKey
from standardwebhooks import Webhook
secret, msg_id, ts, body = sys.argv[1:5]
v1 = Webhook(secret).sign(msg_id, datetime.fromtimestamp(int(ts), tz=timezone.utc), body)
key = SigningKey(bytes([21]) * 32)
sig = key.sign(f'{msg_id}.{ts}.{body}'.encode()).signature
print('whpk_' + base64.b64encode(key.verify_key.encode()).decode())
print(v1 + ' v1a,' + base64.b64encode(sig).decode())
";
        let body = r#"{"type":"invoice.paid"}"#;
        let out = super::super::testing::python(SCRIPT, &[KEY, ID, &TS.to_string(), body]);
        let (public, header) = out.split_once('\n').unwrap();
        let h = std_headers("webhook", ID, &TS.to_string(), header);
        for keys in [
            SecretSet::new(public),
            SecretSet::new(KEY),
            SecretSet::new(public).with(KEY),
        ] {
            let v = StandardWebhooks::new(keys).unwrap();
            assert!(run(&v, body.as_bytes(), &h, TS).is_ok());
            assert_eq!(run(&v, b"{}", &h, TS), Err(VerifyError::InvalidSignature));
            assert_eq!(
                run(&v, body.as_bytes(), &h, TS + 301),
                Err(VerifyError::TimestampOutOfTolerance)
            );
        }
        let other = StandardWebhooks::new(whpk(&super::super::ed25519::tests::key(22))).unwrap();
        assert_eq!(
            run(&other, body.as_bytes(), &h, TS),
            Err(VerifyError::InvalidSignature)
        );
    }
}
