//! The ed25519 schemes over timestamp and body: Discord and Telnyx.

use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use super::public_key::{PublicKeys, base64_bytes, ed25519_key, ed25519_signature, hex_bytes};
use super::{FIVE_MINUTES, check_window, parse_unix_seconds};
use crate::verify::{
    ConfigError, SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError,
};

/// Checks an ed25519 signature over `{timestamp}{separator}{body}` with every active key.
fn verify_ed25519(
    keys: &PublicKeys<VerifyingKey>,
    request: &SignedRequest<'_>,
    timestamp: &str,
    separator: &[u8],
    signature: &ed25519_dalek::Signature,
    tolerance: Duration,
) -> Result<Verified, VerifyError> {
    let signed_at = parse_unix_seconds(timestamp)?;
    check_window(signed_at, request.now(), tolerance)?;
    let message = [timestamp.as_bytes(), separator, request.body()].concat();
    // `verify_strict` refuses small-order keys and malleable signatures, as libsodium does.
    keys.verify_with(request.now(), |key| {
        key.verify_strict(&message, signature).is_ok()
    })
    .map(|v| v.with_signed_at(signed_at))
}

/// Discord interactions: `X-Signature-Ed25519: <hex ed25519 signature of "{timestamp}{body}">`
/// with `X-Signature-Timestamp` (Unix seconds), checked with the application's public key (64
/// hex digits, from the Developer Portal).
///
/// Discord documents no tolerance; five minutes (either way) by default, as for the other
/// timestamped schemes. The interaction's PING (`{"type":1}`) is answered by
/// [`DiscordPing`](crate::verify::DiscordPing), which the `discord` [`Scheme`](crate::verify::Scheme)
/// attaches. See Discord's "Interactions: Receiving and Responding — Security and
/// Authorization": <https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-validating-security-request-headers>.
#[derive(Debug, Clone)]
pub struct Discord {
    keys: PublicKeys<VerifyingKey>,
    tolerance: Duration,
}

impl Discord {
    /// Verifies with these public keys (hex or base64 of 32 bytes); fails when one is not an
    /// ed25519 key.
    pub fn new(public_keys: impl Into<SecretSet>) -> Result<Self, ConfigError> {
        Ok(Self {
            keys: PublicKeys::parse(&public_keys.into(), ed25519_key)?,
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

impl SignatureVerifier for Discord {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let signature = request.require_header("x-signature-ed25519")?;
        let timestamp = request.require_header("x-signature-timestamp")?;
        let signature = ed25519_signature(hex_bytes(signature, 64))?;
        verify_ed25519(
            &self.keys,
            request,
            timestamp,
            b"",
            &signature,
            self.tolerance,
        )
    }
}

/// Telnyx (API v2 webhooks): `telnyx-signature-ed25519: <base64 ed25519 signature of
/// "{timestamp}|{body}">` with `telnyx-timestamp` (Unix seconds), checked with the account's
/// public key (base64, from the Mission Control Portal); five minutes' tolerance, as Telnyx's
/// SDKs default to. See Telnyx's "Webhook signing":
/// <https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks#webhook-signing>.
#[derive(Debug, Clone)]
pub struct Telnyx {
    keys: PublicKeys<VerifyingKey>,
    tolerance: Duration,
}

impl Telnyx {
    /// Verifies with these public keys (base64 or hex of 32 bytes); fails when one is not an
    /// ed25519 key.
    pub fn new(public_keys: impl Into<SecretSet>) -> Result<Self, ConfigError> {
        Ok(Self {
            keys: PublicKeys::parse(&public_keys.into(), ed25519_key)?,
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

impl SignatureVerifier for Telnyx {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let signature = request.require_header("telnyx-signature-ed25519")?;
        let timestamp = request.require_header("telnyx-timestamp")?;
        let signature = ed25519_signature(base64_bytes(signature, 64))?;
        verify_ed25519(
            &self.keys,
            request,
            timestamp,
            b"|",
            &signature,
            self.tolerance,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::super::testing::{b64, headers, hex, run};
    use super::*;
    use crate::verify::Secret;

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn discord_headers(k: &SigningKey, ts: &str, body: &[u8]) -> http::HeaderMap {
        let sig = k.sign(&[ts.as_bytes(), body].concat());
        headers(&[
            ("x-signature-ed25519", &hex(&sig.to_bytes())),
            ("x-signature-timestamp", ts),
        ])
    }

    fn telnyx_headers(k: &SigningKey, ts: &str, body: &[u8]) -> http::HeaderMap {
        let sig = k.sign(&[ts.as_bytes(), b"|", body].concat());
        headers(&[
            ("telnyx-signature-ed25519", &b64(&sig.to_bytes())),
            ("telnyx-timestamp", ts),
        ])
    }

    const TS: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"type":1}"#;

    #[test]
    fn discord_accepts_tampering_wrong_key_and_window() {
        let k = key(1);
        let v = Discord::new(hex(k.verifying_key().as_bytes())).unwrap();
        let h = discord_headers(&k, "1700000000", BODY);
        assert_eq!(
            run(&v, BODY, &h, TS)
                .unwrap()
                .signed_at()
                .unwrap()
                .unix_timestamp(),
            TS
        );
        assert_eq!(
            run(&v, br#"{"type":2}"#, &h, TS),
            Err(VerifyError::InvalidSignature)
        );
        let other = Discord::new(hex(key(2).verifying_key().as_bytes())).unwrap();
        assert_eq!(
            run(&other, BODY, &h, TS),
            Err(VerifyError::InvalidSignature)
        );
        assert!(run(&v, BODY, &h, TS + 300).is_ok());
        assert_eq!(
            run(&v, BODY, &h, TS + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(&v, BODY, &h, TS - 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        // The timestamp is signed.
        let moved = headers(&[
            (
                "x-signature-ed25519",
                h["x-signature-ed25519"].to_str().unwrap(),
            ),
            ("x-signature-timestamp", "1700000001"),
        ]);
        assert_eq!(
            run(&v, BODY, &moved, TS),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn discord_missing_and_malformed() {
        let k = key(1);
        let v = Discord::new(hex(k.verifying_key().as_bytes())).unwrap();
        assert_eq!(
            run(&v, BODY, &headers(&[("x-signature-timestamp", "1")]), TS),
            Err(VerifyError::MissingSignature)
        );
        let sig = hex(&[0; 64]);
        for (s, t) in [
            ("zz", "1700000000"),
            (&sig[2..], "1700000000"),
            (&sig, "soon"),
            (&*format!("{sig}00"), "1700000000"),
        ] {
            let h = headers(&[("x-signature-ed25519", s), ("x-signature-timestamp", t)]);
            assert_eq!(
                run(&v, BODY, &h, TS),
                Err(VerifyError::MalformedSignature),
                "{s} {t}"
            );
        }
        // Well-formed but not a valid signature.
        let h = headers(&[
            ("x-signature-ed25519", &sig),
            ("x-signature-timestamp", "1700000000"),
        ]);
        assert_eq!(run(&v, BODY, &h, TS), Err(VerifyError::InvalidSignature));
        assert!(Discord::new("not a key").is_err());
    }

    #[test]
    fn telnyx_and_rotation() {
        let old = key(3);
        let new = key(4);
        let exp = time::OffsetDateTime::from_unix_timestamp(TS + 10).unwrap();
        let v = Telnyx::new(
            SecretSet::new(b64(new.verifying_key().as_bytes())).with(
                Secret::new(b64(old.verifying_key().as_bytes()))
                    .label("old")
                    .expires_at(exp),
            ),
        )
        .unwrap();
        let h = telnyx_headers(&old, "1700000000", BODY);
        assert_eq!(
            run(&v, BODY, &h, TS + 9).unwrap().secret_label(),
            Some("old")
        );
        assert_eq!(
            run(&v, BODY, &h, TS + 10),
            Err(VerifyError::InvalidSignature)
        );
        let h = telnyx_headers(&new, "1700000000", BODY);
        assert_eq!(run(&v, BODY, &h, TS + 10).unwrap().secret_index(), 0);
        assert_eq!(run(&v, b"{}", &h, TS), Err(VerifyError::InvalidSignature));
        assert_eq!(
            run(&v, BODY, &h, TS + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        // Discord's message (no `|`) does not verify as Telnyx.
        let discord = discord_headers(&new, "1700000000", BODY);
        let sig = b64(&hex_bytes(discord["x-signature-ed25519"].to_str().unwrap(), 64).unwrap());
        let h = headers(&[
            ("telnyx-signature-ed25519", &sig),
            ("telnyx-timestamp", "1700000000"),
        ]);
        assert_eq!(run(&v, BODY, &h, TS), Err(VerifyError::InvalidSignature));
        let h = headers(&[
            ("telnyx-signature-ed25519", "@@"),
            ("telnyx-timestamp", "1700000000"),
        ]);
        assert_eq!(run(&v, BODY, &h, TS), Err(VerifyError::MalformedSignature));
        let strict = Telnyx::new(b64(new.verifying_key().as_bytes()))
            .unwrap()
            .tolerance(Duration::from_secs(1));
        let h = telnyx_headers(&new, "1700000000", BODY);
        assert_eq!(
            run(&strict, BODY, &h, TS + 2),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }

    /// PyNaCl (libsodium, what Discord's own Python example verifies with) signs as Discord
    /// and Telnyx document; we verify.
    #[test]
    #[ignore = "needs python3 with PyNaCl; run scripts/test"]
    fn pynacl_signatures_verify() {
        const SCRIPT: &str = "\
import sys, base64
from nacl.signing import SigningKey
key = SigningKey(bytes([int(sys.argv[1])]) * 32)
ts, body, sep = sys.argv[2], sys.argv[3], sys.argv[4]
sig = key.sign((ts + sep + body).encode()).signature
print(key.verify_key.encode().hex(), sig.hex(), base64.b64encode(key.verify_key.encode()).decode(), base64.b64encode(sig).decode())
";
        let body = r#"{"id":"1","type":1}"#;
        let out = super::super::testing::python(SCRIPT, &["11", "1700000000", body, ""]);
        let f: Vec<&str> = out.split(' ').collect();
        let v = Discord::new(f[0]).unwrap();
        let h = headers(&[
            ("x-signature-ed25519", f[1]),
            ("x-signature-timestamp", "1700000000"),
        ]);
        assert!(run(&v, body.as_bytes(), &h, TS).is_ok());
        assert_eq!(run(&v, b"{}", &h, TS), Err(VerifyError::InvalidSignature));
        assert_eq!(
            run(&v, body.as_bytes(), &h, TS + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );

        let out = super::super::testing::python(SCRIPT, &["12", "1700000000", body, "|"]);
        let f: Vec<&str> = out.split(' ').collect();
        let v = Telnyx::new(f[2]).unwrap();
        let h = headers(&[
            ("telnyx-signature-ed25519", f[3]),
            ("telnyx-timestamp", "1700000000"),
        ]);
        assert!(run(&v, body.as_bytes(), &h, TS).is_ok());
        assert_eq!(run(&v, b"{}", &h, TS), Err(VerifyError::InvalidSignature));
        let other = Telnyx::new(b64(key(13).verifying_key().as_bytes())).unwrap();
        assert_eq!(
            run(&other, body.as_bytes(), &h, TS),
            Err(VerifyError::InvalidSignature)
        );
    }
}
