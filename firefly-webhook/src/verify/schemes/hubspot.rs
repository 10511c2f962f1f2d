//! HubSpot v3: the method, the URL, the body and a millisecond timestamp, signed together.

use std::time::Duration;

use super::{
    Algorithm, Encoding, FIVE_MINUTES, check_window, decode_signature, parse_unix_millis,
    verify_mac,
};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

const SIGNATURE: &str = "x-hubspot-signature-v3";
const TIMESTAMP: &str = "x-hubspot-request-timestamp";

/// HubSpot: `X-HubSpot-Signature-v3: <base64 HMAC-SHA256(method + URI + body + timestamp)>` with
/// `X-HubSpot-Request-Timestamp` (Unix milliseconds), keyed with the app's client secret.
///
/// Signed: the HTTP method, the full request URI, the raw body and the timestamp header as sent,
/// with no separators. The URI is the registry's
/// [public URL](crate::verify::Verifiers::public_url) plus the request path and query, with the
/// percent-encoded characters HubSpot lists decoded (`%3A` `%2F` `%3F` `%40` `%21` `%24` `%27`
/// `%28` `%29` `%2A` `%2C` `%3B`); it must be the URL configured at HubSpot. Without a public
/// URL every request is refused. The timestamp must be within five minutes of the reference
/// time, either way. The older `X-HubSpot-Signature` (v1, v2) headers are ignored.
/// See HubSpot's "Validating requests", section "Validate the v3 request signature":
/// <https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests#validate-the-v3-request-signature>.
#[derive(Debug, Clone)]
pub struct HubSpot {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    HubSpot,
    FIVE_MINUTES,
    "Verifies with these app client secrets.",
    "How far the timestamp may be from the reference time, either way (default 5 minutes)."
);

/// `url` with the percent-escapes of HubSpot's list decoded (either case of hex digit).
pub(crate) fn decode_listed_escapes(url: &str) -> String {
    let bytes = url.as_bytes();
    let mut out = String::with_capacity(url.len());
    let mut rest = 0;
    let mut i = 0;
    while i + 2 < bytes.len() {
        if bytes[i] == b'%' {
            let decoded = match [bytes[i + 1].to_ascii_uppercase(), bytes[i + 2]] {
                [b'3', b'A' | b'a'] => Some(':'),
                [b'2', b'F' | b'f'] => Some('/'),
                [b'3', b'F' | b'f'] => Some('?'),
                [b'4', b'0'] => Some('@'),
                [b'2', b'1'] => Some('!'),
                [b'2', b'4'] => Some('$'),
                [b'2', b'7'] => Some('\''),
                [b'2', b'8'] => Some('('),
                [b'2', b'9'] => Some(')'),
                [b'2', b'A' | b'a'] => Some('*'),
                [b'2', b'C' | b'c'] => Some(','),
                [b'3', b'B' | b'b'] => Some(';'),
                _ => None,
            };
            if let Some(c) = decoded {
                out.push_str(&url[rest..i]);
                out.push(c);
                i += 3;
                rest = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&url[rest..]);
    out
}

impl SignatureVerifier for HubSpot {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let signature = decode_signature(
            request.require_header(SIGNATURE)?,
            Encoding::Base64,
            Algorithm::Sha256,
        )?;
        let timestamp = request.require_header(TIMESTAMP)?;
        let signed_at = parse_unix_millis(timestamp)?;
        check_window(signed_at, request.now(), self.tolerance)?;
        let Some(url) = request.url() else {
            tracing::warn!("hubspot signatures need the public URL; none is configured");
            return Err(VerifyError::InvalidSignature);
        };
        let uri = decode_listed_escapes(&url);
        let parts: [&[u8]; 4] = [
            request.method_str().as_bytes(),
            uri.as_bytes(),
            request.body(),
            timestamp.as_bytes(),
        ];
        verify_mac(
            &self.secrets,
            request.now(),
            Algorithm::Sha256,
            &parts,
            &[signature],
        )
        .map(|v| v.with_signed_at(signed_at))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, b64, headers, hmac256};
    use super::*;
    use crate::verify::Secret;

    const BASE: &str = "https://hooks.example.com";
    const PATH: &str = "/api/v1/webhook/hubspot";
    const BODY: &[u8] = br#"[{"eventId":1,"subscriptionType":"contact.creation","objectId":123}]"#;
    /// Unix milliseconds.
    const TS: i64 = 1_700_000_000_123;
    const NOW: i64 = 1_700_000_000;

    fn sign(key: &[u8], method: &str, uri: &str, body: &[u8], ts: &str) -> String {
        let msg = [method.as_bytes(), uri.as_bytes(), body, ts.as_bytes()].concat();
        b64(&hmac256(key, &msg))
    }

    fn h(sig: &str, ts: &str) -> http::HeaderMap {
        headers(&[(SIGNATURE, sig), (TIMESTAMP, ts)])
    }

    fn check(
        v: &HubSpot,
        method: &str,
        query: Option<&str>,
        body: &[u8],
        hs: &http::HeaderMap,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        v.verify(
            &SignedRequest::new(body, hs)
                .method(method)
                .public_url(BASE)
                .target(PATH, query)
                .at(at(now)),
        )
    }

    #[test]
    fn valid_tampered_wrong_key_method_and_url() {
        let v = HubSpot::new("client-secret");
        let ts = TS.to_string();
        let uri = format!("{BASE}{PATH}");
        let sig = sign(b"client-secret", "POST", &uri, BODY, &ts);
        let ok = check(&v, "POST", None, BODY, &h(&sig, &ts), NOW).unwrap();
        assert_eq!(ok.signed_at().unwrap().unix_timestamp(), NOW);
        assert_eq!(
            check(&v, "POST", None, b"[]", &h(&sig, &ts), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            check(&HubSpot::new("x"), "POST", None, BODY, &h(&sig, &ts), NOW),
            Err(VerifyError::InvalidSignature)
        );
        // The method, the URL (query included) and the timestamp are signed.
        assert_eq!(
            check(&v, "PUT", None, BODY, &h(&sig, &ts), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            check(&v, "POST", Some("a=1"), BODY, &h(&sig, &ts), NOW),
            Err(VerifyError::InvalidSignature)
        );
        let moved = (TS + 1).to_string();
        assert_eq!(
            check(&v, "POST", None, BODY, &h(&sig, &moved), NOW),
            Err(VerifyError::InvalidSignature)
        );
        // No public URL: nothing can match.
        let hs = h(&sig, &ts);
        assert_eq!(
            v.verify(&SignedRequest::new(BODY, &hs).at(at(NOW))),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn listed_escapes_are_decoded_before_signing() {
        let v = HubSpot::new("k");
        let ts = TS.to_string();
        // HubSpot signs `?portal=a:b@c` for a request whose query arrives escaped.
        let signed_uri = format!("{BASE}{PATH}?portal=a:b@c&x=%20");
        let sig = sign(b"k", "POST", &signed_uri, BODY, &ts);
        assert!(
            check(
                &v,
                "POST",
                Some("portal=a%3Ab%40c&x=%20"),
                BODY,
                &h(&sig, &ts),
                NOW
            )
            .is_ok()
        );
        assert_eq!(
            decode_listed_escapes("%3a%2F%3F%40%21%24%27%28%29%2a%2C%3b%20%2%"),
            ":/?@!$'()*,;%20%2%"
        );
        assert_eq!(decode_listed_escapes("%3"), "%3");
        assert_eq!(decode_listed_escapes("x%2C"), "x,");
    }

    #[test]
    fn five_minutes_either_way() {
        let v = HubSpot::new("k");
        let ts = TS.to_string();
        let sig = sign(b"k", "POST", &format!("{BASE}{PATH}"), BODY, &ts);
        let hs = h(&sig, &ts);
        assert!(check(&v, "POST", None, BODY, &hs, NOW + 300).is_ok());
        assert!(check(&v, "POST", None, BODY, &hs, NOW - 299).is_ok());
        assert_eq!(
            check(&v, "POST", None, BODY, &hs, NOW + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            check(&v, "POST", None, BODY, &hs, NOW - 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn missing_malformed_rotation() {
        let v = HubSpot::new(SecretSet::new("new").with(Secret::new("old").expires_at(at(NOW))));
        let ts = TS.to_string();
        let old = sign(b"old", "POST", &format!("{BASE}{PATH}"), BODY, &ts);
        assert_eq!(
            check(&v, "POST", None, BODY, &h(&old, &ts), NOW - 1)
                .unwrap()
                .secret_index(),
            1
        );
        assert_eq!(
            check(&v, "POST", None, BODY, &h(&old, &ts), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            check(&v, "POST", None, BODY, &headers(&[(TIMESTAMP, &ts)]), NOW),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            check(&v, "POST", None, BODY, &headers(&[(SIGNATURE, &old)]), NOW),
            Err(VerifyError::MissingSignature)
        );
        for (s, t) in [
            ("not base64!", ts.as_str()),
            ("AAAA", ts.as_str()),
            (old.as_str(), "2023-11-14T22:13:20Z"),
            (old.as_str(), "-1"),
            (old.as_str(), "9999999999999999"),
        ] {
            assert_eq!(
                check(&v, "POST", None, BODY, &h(s, t), NOW),
                Err(VerifyError::MalformedSignature),
                "{s} {t}"
            );
        }
    }

    /// HubSpot's official Python SDK (`hubspot-api-client`) signs; we verify.
    #[test]
    #[ignore = "needs python3 with hubspot-api-client; run scripts/test"]
    fn official_sdk_signature_verifies() {
        const SCRIPT: &str = "\
import sys
from hubspot.utils.signature import Signature
secret, uri, body, ts = sys.argv[1:5]
print(Signature.get_signature(secret, body, 'v3', http_uri=uri, http_method='POST', timestamp=ts))
";
        let ts = TS.to_string();
        let query = "portal=62515&app=54321";
        let uri = format!("{BASE}{PATH}?{query}");
        let body = std::str::from_utf8(BODY).unwrap();
        let sig = super::super::testing::python(SCRIPT, &["client-secret", &uri, body, &ts]);
        let v = HubSpot::new("client-secret");
        let ok = check(&v, "POST", Some(query), BODY, &h(&sig, &ts), NOW).unwrap();
        assert_eq!(ok.secret_index(), 0);
        assert_eq!(
            check(&v, "POST", Some(query), b"[]", &h(&sig, &ts), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            check(
                &HubSpot::new("other"),
                "POST",
                Some(query),
                BODY,
                &h(&sig, &ts),
                NOW
            ),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            check(&v, "POST", Some(query), BODY, &h(&sig, &ts), NOW + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }
}
