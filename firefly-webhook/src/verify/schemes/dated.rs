//! Schemes whose timestamp is an RFC 3339 date in a header of its own, signed with the body:
//! Twitch EventSub, Box and Zendesk.

use std::borrow::Cow;
use std::time::Duration;

use super::{
    Algorithm, Encoding, FIVE_MINUTES, TEN_MINUTES, Tag, check_window, decode_signature,
    optional_header, parse_rfc3339, verify_mac,
};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

const TWITCH_ID: &str = "twitch-eventsub-message-id";
const TWITCH_TIMESTAMP: &str = "twitch-eventsub-message-timestamp";
const TWITCH_SIGNATURE: &str = "twitch-eventsub-message-signature";

/// Twitch EventSub webhooks:
/// `Twitch-Eventsub-Message-Signature: sha256=<hex HMAC-SHA256(id + timestamp + body)>`, keyed
/// with the subscription's secret.
///
/// Signed: the `Twitch-Eventsub-Message-Id` header, then the `Twitch-Eventsub-Message-Timestamp`
/// header (RFC 3339 with nanoseconds, as sent), then the raw body, with no separators. The
/// timestamp must be within ten minutes of the reference time, either way (Twitch asks to drop
/// messages older than ten minutes). Notifications, revocations and the
/// `webhook_callback_verification` challenge are all signed this way.
///
/// The message id is signed and kept by Twitch's redeliveries, so it is the
/// [delivery id](SignatureVerifier::delivery_id).
/// See Twitch's "Handling webhook events", section "Verifying the event message":
/// <https://dev.twitch.tv/docs/eventsub/handling-webhook-events/#verifying-the-event-message>.
#[derive(Debug, Clone)]
pub struct Twitch {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    Twitch,
    TEN_MINUTES,
    "Verifies with these subscription secrets.",
    "How far the timestamp may be from the reference time, either way (default 10 minutes)."
);

impl SignatureVerifier for Twitch {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let signature = request.require_header(TWITCH_SIGNATURE)?;
        let id = request.require_header(TWITCH_ID)?;
        let timestamp = request.require_header(TWITCH_TIMESTAMP)?;
        let encoded = signature
            .strip_prefix("sha256=")
            .ok_or(VerifyError::MalformedSignature)?;
        let signature = decode_signature(encoded, Encoding::Hex, Algorithm::Sha256)?;
        let signed_at = parse_rfc3339(timestamp)?;
        check_window(signed_at, request.now(), self.tolerance)?;
        let parts: [&[u8]; 3] = [id.as_bytes(), timestamp.as_bytes(), request.body()];
        verify_mac(
            &self.secrets,
            request.now(),
            Algorithm::Sha256,
            &parts,
            &[signature],
        )
        .map(|v| v.with_signed_at(signed_at))
    }

    /// `Twitch-Eventsub-Message-Id`: signed, and the same on every redelivery.
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        request.require_header(TWITCH_ID).ok().map(Cow::Borrowed)
    }
}

const BOX_PRIMARY: &str = "box-signature-primary";
const BOX_SECONDARY: &str = "box-signature-secondary";
const BOX_TIMESTAMP: &str = "box-delivery-timestamp";
const BOX_VERSION: &str = "box-signature-version";
const BOX_ALGORITHM: &str = "box-signature-algorithm";

/// Box webhooks (v2): `box-signature-primary` and `box-signature-secondary`, each
/// `<base64 HMAC-SHA256(body + timestamp)>`, with `box-delivery-timestamp`.
///
/// Signed: the raw body followed by the `box-delivery-timestamp` header (RFC 3339, as sent). Box
/// signs with the app's primary key in `box-signature-primary` and its secondary key in
/// `box-signature-secondary`, so either key can be rotated while the other still verifies;
/// configure both keys as this verifier's secrets (each is tried against both signatures). The
/// timestamp must be within ten minutes of the reference time, either way. When present,
/// `box-signature-version` must be `1` and `box-signature-algorithm` `HmacSHA256`.
/// See Box's "Signatures" guide for webhooks:
/// <https://developer.box.com/guides/webhooks/v2/signatures-v2/>.
#[derive(Debug, Clone)]
pub struct BoxWebhooks {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    BoxWebhooks,
    TEN_MINUTES,
    "Verifies with these signature keys (the primary and the secondary key, in any order).",
    "How far the timestamp may be from the reference time, either way (default 10 minutes)."
);

impl SignatureVerifier for BoxWebhooks {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let primary = optional_header(request, BOX_PRIMARY)?;
        let secondary = optional_header(request, BOX_SECONDARY)?;
        if primary.is_none() && secondary.is_none() {
            return Err(VerifyError::MissingSignature);
        }
        let timestamp = request.require_header(BOX_TIMESTAMP)?;
        if optional_header(request, BOX_VERSION)?.is_some_and(|v| v != "1")
            || optional_header(request, BOX_ALGORITHM)?.is_some_and(|a| a != "HmacSHA256")
        {
            return Err(VerifyError::MalformedSignature);
        }
        // A malformed signature next to a well-formed one is ignored, as Box's SDKs do.
        let signatures: Vec<Tag> = [primary, secondary]
            .into_iter()
            .flatten()
            .filter_map(|s| decode_signature(s, Encoding::Base64, Algorithm::Sha256).ok())
            .collect();
        if signatures.is_empty() {
            return Err(VerifyError::MalformedSignature);
        }
        let signed_at = parse_rfc3339(timestamp)?;
        check_window(signed_at, request.now(), self.tolerance)?;
        let parts: [&[u8]; 2] = [request.body(), timestamp.as_bytes()];
        verify_mac(
            &self.secrets,
            request.now(),
            Algorithm::Sha256,
            &parts,
            &signatures,
        )
        .map(|v| v.with_signed_at(signed_at))
    }
}

const ZENDESK_SIGNATURE: &str = "x-zendesk-webhook-signature";
const ZENDESK_TIMESTAMP: &str = "x-zendesk-webhook-signature-timestamp";

/// Zendesk webhooks: `X-Zendesk-Webhook-Signature: <base64 HMAC-SHA256(timestamp + body)>` with
/// `X-Zendesk-Webhook-Signature-Timestamp`, keyed with the webhook's signing secret.
///
/// Signed: the `X-Zendesk-Webhook-Signature-Timestamp` header (RFC 3339, as sent) followed by the
/// raw body, with no separator. Zendesk documents no window; the timestamp must be within five
/// minutes of the reference time, either way (configurable). Its `x-zendesk-webhook-invocation-id`
/// is not signed.
/// See Zendesk's "Verifying webhook authenticity":
/// <https://developer.zendesk.com/documentation/webhooks/verifying/>.
#[derive(Debug, Clone)]
pub struct Zendesk {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    Zendesk,
    FIVE_MINUTES,
    "Verifies with these webhook signing secrets.",
    "How far the timestamp may be from the reference time, either way (default 5 minutes)."
);

impl SignatureVerifier for Zendesk {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let signature = decode_signature(
            request.require_header(ZENDESK_SIGNATURE)?,
            Encoding::Base64,
            Algorithm::Sha256,
        )?;
        let timestamp = request.require_header(ZENDESK_TIMESTAMP)?;
        let signed_at = parse_rfc3339(timestamp)?;
        check_window(signed_at, request.now(), self.tolerance)?;
        let parts: [&[u8]; 2] = [timestamp.as_bytes(), request.body()];
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
    use super::super::testing::{b64, headers, hex, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    /// 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000;

    mod twitch {
        use super::*;

        const ID: &str = "e76c6bd4-55c9-4987-8304-da1588d8988b";
        const TS: &str = "2023-11-14T22:13:20.634234626Z";
        const BODY: &[u8] = br#"{"subscription":{"type":"channel.follow"},"event":{}}"#;

        fn sign(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
            let msg = [id.as_bytes(), ts.as_bytes(), body].concat();
            format!("sha256={}", hex(&hmac256(key, &msg)))
        }

        fn h(id: &str, ts: &str, sig: &str) -> http::HeaderMap {
            headers(&[
                (TWITCH_ID, id),
                (TWITCH_TIMESTAMP, ts),
                (TWITCH_SIGNATURE, sig),
                ("twitch-eventsub-message-type", "notification"),
            ])
        }

        #[test]
        fn valid_tampered_wrong_key() {
            let v = Twitch::new("twitch-secret");
            let sig = sign(b"twitch-secret", ID, TS, BODY);
            let ok = run(&v, BODY, &h(ID, TS, &sig), NOW).unwrap();
            assert_eq!(ok.signed_at().unwrap().unix_timestamp(), NOW);
            assert_eq!(
                run(&v, b"{}", &h(ID, TS, &sig), NOW),
                Err(VerifyError::InvalidSignature)
            );
            // The id and the timestamp are signed.
            assert_eq!(
                run(&v, BODY, &h("other-id", TS, &sig), NOW),
                Err(VerifyError::InvalidSignature)
            );
            let moved = "2023-11-14T22:13:21.634234626Z";
            assert_eq!(
                run(&v, BODY, &h(ID, moved, &sig), NOW),
                Err(VerifyError::InvalidSignature)
            );
            assert_eq!(
                run(&Twitch::new("other"), BODY, &h(ID, TS, &sig), NOW),
                Err(VerifyError::InvalidSignature)
            );
        }

        #[test]
        fn ten_minutes_either_way() {
            let v = Twitch::new("k");
            let sig = sign(b"k", ID, TS, BODY);
            let hs = h(ID, TS, &sig);
            assert!(run(&v, BODY, &hs, NOW + 600).is_ok());
            assert!(run(&v, BODY, &hs, NOW - 599).is_ok());
            assert_eq!(
                run(&v, BODY, &hs, NOW + 601),
                Err(VerifyError::TimestampOutOfTolerance)
            );
            assert_eq!(
                run(&v, BODY, &hs, NOW - 601),
                Err(VerifyError::TimestampOutOfTolerance)
            );
            let strict = Twitch::new("k").tolerance(Duration::from_secs(5));
            assert_eq!(
                run(&strict, BODY, &hs, NOW + 6),
                Err(VerifyError::TimestampOutOfTolerance)
            );
        }

        #[test]
        fn missing_and_malformed() {
            let v = Twitch::new("k");
            let sig = sign(b"k", ID, TS, BODY);
            for missing in [
                headers(&[(TWITCH_TIMESTAMP, TS), (TWITCH_SIGNATURE, &sig)]),
                headers(&[(TWITCH_ID, ID), (TWITCH_SIGNATURE, &sig)]),
                headers(&[(TWITCH_ID, ID), (TWITCH_TIMESTAMP, TS)]),
            ] {
                assert_eq!(
                    run(&v, BODY, &missing, NOW),
                    Err(VerifyError::MissingSignature)
                );
            }
            for (ts, s) in [
                (TS, &sig[7..]),
                (TS, "sha1=00"),
                (TS, "sha256=zz"),
                ("1700000000", sig.as_str()),
                ("Tue, 14 Nov 2023 22:13:20 GMT", sig.as_str()),
                ("2023-11-14T22:13:20", sig.as_str()),
            ] {
                assert_eq!(
                    run(&v, BODY, &h(ID, ts, s), NOW),
                    Err(VerifyError::MalformedSignature),
                    "{ts} {s}"
                );
            }
        }

        #[test]
        fn the_message_id_is_the_delivery_id() {
            let v = Twitch::new("k");
            let hs = h(ID, TS, "sha256=00");
            assert_eq!(
                v.delivery_id(&SignedRequest::new(BODY, &hs)).as_deref(),
                Some(ID)
            );
            let none = headers(&[]);
            assert_eq!(v.delivery_id(&SignedRequest::new(BODY, &none)), None);
        }

        #[test]
        fn rotation() {
            let exp = super::super::super::testing::at(NOW + 10);
            let v = Twitch::new(SecretSet::new("new").with(Secret::new("old").expires_at(exp)));
            let old = h(ID, TS, &sign(b"old", ID, TS, BODY));
            assert_eq!(run(&v, BODY, &old, NOW + 9).unwrap().secret_index(), 1);
            assert_eq!(
                run(&v, BODY, &old, NOW + 10),
                Err(VerifyError::InvalidSignature)
            );
        }
    }

    mod box_webhooks {
        use super::*;

        const TS: &str = "2023-11-14T14:13:20-08:00";
        const BODY: &[u8] = br#"{"type":"webhook_event","trigger":"FILE.UPLOADED"}"#;

        fn sign(key: &[u8]) -> String {
            b64(&hmac256(key, &[BODY, TS.as_bytes()].concat()))
        }

        fn h(extra: &[(&str, &str)]) -> http::HeaderMap {
            let mut pairs = vec![
                (BOX_TIMESTAMP, TS),
                (BOX_VERSION, "1"),
                (BOX_ALGORITHM, "HmacSHA256"),
            ];
            pairs.extend_from_slice(extra);
            headers(&pairs)
        }

        #[test]
        fn primary_or_secondary_key_verifies() {
            let v = BoxWebhooks::new(SecretSet::new("primary-key").with("secondary-key"));
            let p = sign(b"primary-key");
            let s = sign(b"secondary-key");
            let both = h(&[(BOX_PRIMARY, &p), (BOX_SECONDARY, &s)]);
            assert_eq!(run(&v, BODY, &both, NOW).unwrap().secret_index(), 0);
            // The primary key was rotated at Box and is no longer ours: the secondary still is.
            let rotated = h(&[(BOX_PRIMARY, &sign(b"new-primary")), (BOX_SECONDARY, &s)]);
            assert_eq!(run(&v, BODY, &rotated, NOW).unwrap().secret_index(), 1);
            // Only one key configured, only one header sent.
            let primary_only = BoxWebhooks::new("primary-key");
            assert!(run(&primary_only, BODY, &h(&[(BOX_PRIMARY, &p)]), NOW).is_ok());
            assert!(
                run(
                    &BoxWebhooks::new("secondary-key"),
                    BODY,
                    &h(&[(BOX_SECONDARY, &s)]),
                    NOW
                )
                .is_ok()
            );
        }

        #[test]
        fn tampered_wrong_key_and_timestamp() {
            let v = BoxWebhooks::new("primary-key");
            let hs = h(&[(BOX_PRIMARY, &sign(b"primary-key"))]);
            assert_eq!(run(&v, b"{}", &hs, NOW), Err(VerifyError::InvalidSignature));
            assert_eq!(
                run(&BoxWebhooks::new("nope"), BODY, &hs, NOW),
                Err(VerifyError::InvalidSignature)
            );
            assert!(run(&v, BODY, &hs, NOW + 600).is_ok());
            assert_eq!(
                run(&v, BODY, &hs, NOW + 601),
                Err(VerifyError::TimestampOutOfTolerance)
            );
            assert_eq!(
                run(&v, BODY, &hs, NOW - 601),
                Err(VerifyError::TimestampOutOfTolerance)
            );
            // The timestamp is signed.
            let mut moved = hs.clone();
            moved.insert(BOX_TIMESTAMP, "2023-11-14T14:13:21-08:00".parse().unwrap());
            assert_eq!(
                run(&v, BODY, &moved, NOW),
                Err(VerifyError::InvalidSignature)
            );
        }

        #[test]
        fn missing_and_malformed() {
            let v = BoxWebhooks::new("k");
            let good = sign(b"k");
            assert_eq!(
                run(&v, BODY, &h(&[]), NOW),
                Err(VerifyError::MissingSignature)
            );
            assert_eq!(
                run(&v, BODY, &headers(&[(BOX_PRIMARY, &good)]), NOW),
                Err(VerifyError::MissingSignature)
            );
            for bad in [
                h(&[(BOX_PRIMARY, "not base64!")]),
                h(&[(BOX_PRIMARY, "AAAA"), (BOX_SECONDARY, "!!")]),
                headers(&[
                    (BOX_PRIMARY, &good),
                    (BOX_TIMESTAMP, TS),
                    (BOX_VERSION, "2"),
                ]),
                headers(&[
                    (BOX_PRIMARY, &good),
                    (BOX_TIMESTAMP, TS),
                    (BOX_ALGORITHM, "HmacSHA1"),
                ]),
                headers(&[(BOX_PRIMARY, &good), (BOX_TIMESTAMP, "yesterday")]),
            ] {
                assert_eq!(
                    run(&v, BODY, &bad, NOW),
                    Err(VerifyError::MalformedSignature),
                    "{bad:?}"
                );
            }
            // A malformed secondary next to a good primary does not matter.
            let mixed = h(&[(BOX_PRIMARY, &good), (BOX_SECONDARY, "garbage")]);
            assert!(run(&v, BODY, &mixed, NOW).is_ok());
        }
    }

    /// Box's official Python SDK (`boxsdk`, module `box_sdk_gen`) signs with its primary and
    /// secondary keys, as Box does; we verify.
    #[test]
    #[ignore = "needs python3 with boxsdk; run scripts/test"]
    fn box_official_sdk_signatures_verify() {
        const SCRIPT: &str = "\
import sys
from box_sdk_gen.internal.utils import compute_webhook_signature
body, ts, key = sys.argv[1:4]
headers = {
    'box-delivery-timestamp': ts,
    'box-signature-version': '1',
    'box-signature-algorithm': 'HmacSHA256',
}
print(compute_webhook_signature(body, headers, key))
";
        const TS: &str = "2023-11-14T14:13:20-08:00";
        let body = r#"{"type":"webhook_event","trigger":"FILE.UPLOADED","source":{"name":"caf\u00e9.txt"}}"#;
        let primary = super::super::testing::python(SCRIPT, &[body, TS, "primary-key"]);
        let secondary = super::super::testing::python(SCRIPT, &[body, TS, "secondary-key"]);
        let h = headers(&[
            (BOX_PRIMARY, &primary),
            (BOX_SECONDARY, &secondary),
            (BOX_TIMESTAMP, TS),
            (BOX_VERSION, "1"),
            (BOX_ALGORITHM, "HmacSHA256"),
        ]);
        let body = body.as_bytes();
        let both = BoxWebhooks::new(SecretSet::new("primary-key").with("secondary-key"));
        assert_eq!(run(&both, body, &h, NOW).unwrap().secret_index(), 0);
        let secondary_only = BoxWebhooks::new("secondary-key");
        assert!(run(&secondary_only, body, &h, NOW).is_ok());
        assert_eq!(
            run(&BoxWebhooks::new("other"), body, &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&both, b"{}", &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&both, body, &h, NOW + 601),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }

    mod zendesk {
        use super::*;

        const TS: &str = "2023-11-14T22:13:20Z";
        const BODY: &[u8] = br#"{"type":"zen:event-type:ticket.created","detail":{}}"#;

        fn h(key: &[u8], ts: &str) -> http::HeaderMap {
            let sig = b64(&hmac256(key, &[ts.as_bytes(), BODY].concat()));
            headers(&[(ZENDESK_SIGNATURE, &sig), (ZENDESK_TIMESTAMP, ts)])
        }

        #[test]
        fn valid_tampered_wrong_key_window() {
            let v = Zendesk::new("zd-secret");
            let hs = h(b"zd-secret", TS);
            let ok = run(&v, BODY, &hs, NOW + 300).unwrap();
            assert_eq!(ok.signed_at().unwrap().unix_timestamp(), NOW);
            assert_eq!(run(&v, b"{}", &hs, NOW), Err(VerifyError::InvalidSignature));
            assert_eq!(
                run(&Zendesk::new("x"), BODY, &hs, NOW),
                Err(VerifyError::InvalidSignature)
            );
            assert_eq!(
                run(&v, BODY, &hs, NOW + 301),
                Err(VerifyError::TimestampOutOfTolerance)
            );
            assert_eq!(
                run(&v, BODY, &hs, NOW - 301),
                Err(VerifyError::TimestampOutOfTolerance)
            );
            let mut moved = hs.clone();
            moved.insert(ZENDESK_TIMESTAMP, "2023-11-14T22:13:21Z".parse().unwrap());
            assert_eq!(
                run(&v, BODY, &moved, NOW),
                Err(VerifyError::InvalidSignature)
            );
        }

        #[test]
        fn missing_malformed_rotation() {
            let v = Zendesk::new(
                SecretSet::new("new")
                    .with(Secret::new("old").expires_at(super::super::super::testing::at(NOW))),
            );
            assert_eq!(
                run(&v, BODY, &h(b"old", TS), NOW - 1)
                    .unwrap()
                    .secret_index(),
                1
            );
            assert_eq!(
                run(&v, BODY, &h(b"old", TS), NOW),
                Err(VerifyError::InvalidSignature)
            );
            assert_eq!(
                run(&v, BODY, &headers(&[(ZENDESK_TIMESTAMP, TS)]), NOW),
                Err(VerifyError::MissingSignature)
            );
            let sig = b64(&[0; 32]);
            assert_eq!(
                run(&v, BODY, &headers(&[(ZENDESK_SIGNATURE, &sig)]), NOW),
                Err(VerifyError::MissingSignature)
            );
            for (s, ts) in [
                ("not base64!", TS),
                ("AAAA", TS),
                (sig.as_str(), "1700000000"),
            ] {
                assert_eq!(
                    run(
                        &v,
                        BODY,
                        &headers(&[(ZENDESK_SIGNATURE, s), (ZENDESK_TIMESTAMP, ts)]),
                        NOW
                    ),
                    Err(VerifyError::MalformedSignature),
                    "{s} {ts}"
                );
            }
        }
    }
}
