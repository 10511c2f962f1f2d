//! The providers' signature schemes, and the primitives they share (HMAC over several parts,
//! hex/base64 decoding, constant-time comparison, timestamp windows).

/// `new` and `tolerance` for a scheme that is just its secrets and a timestamp tolerance:
/// `secrets_and_tolerance!(Type, default, "doc of new", "doc of tolerance")`.
macro_rules! secrets_and_tolerance {
    ($scheme:ident, $default:expr, $new_doc:literal, $tolerance_doc:literal) => {
        impl $scheme {
            #[doc = $new_doc]
            pub fn new(secrets: impl Into<$crate::verify::SecretSet>) -> Self {
                Self {
                    secrets: secrets.into(),
                    tolerance: $default,
                }
            }

            #[doc = $tolerance_doc]
            #[must_use]
            pub fn tolerance(mut self, tolerance: ::std::time::Duration) -> Self {
                self.tolerance = tolerance;
                self
            }
        }
    };
}

mod calendly;
pub(crate) mod certificate;
mod dated;
mod docusign;
mod ed25519;
mod generic;
mod graph;
mod hub;
mod hubspot;
mod linear;
mod mailgun;
mod paddle;
mod paypal;
mod public_key;
mod sendgrid;
pub(crate) mod sns;
mod standard;
mod stripe;
mod teams;
mod timestamped;
mod token;
mod twilio;
mod url_signed;
mod v0;

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

pub use self::calendly::Calendly;
pub use self::certificate::{HttpsFetcher, MAX_CACHED, RETRY_FAILED_AFTER, TrustedUrl};
pub use self::dated::{BoxWebhooks, Twitch, Zendesk};
pub use self::docusign::DocuSign;
pub use self::ed25519::{Discord, Telnyx};
pub use self::generic::GenericHmac;
pub use self::graph::GraphClientState;
pub use self::hub::{Bitbucket, GitHub, Intercom, Meta, Shopify, Typeform};
pub use self::hubspot::HubSpot;
pub use self::linear::Linear;
pub use self::mailgun::Mailgun;
pub use self::paddle::Paddle;
pub use self::paypal::PayPal;
pub use self::sendgrid::SendGrid;
pub use self::sns::{Sns, SnsSubscription};
pub use self::standard::StandardWebhooks;
pub use self::stripe::Stripe;
pub use self::teams::Teams;
pub use self::token::{ApiKey, Basic, GitLab};
pub use self::twilio::Twilio;
pub use self::url_signed::Square;
pub use self::v0::{Slack, Zoom};
use super::{SecretSet, SignedRequest, Verified, VerifyError};

/// The hash function of an HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC-SHA1 (legacy schemes only).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Algorithm {
    /// Length of the MAC in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    /// HMAC of the concatenation of `parts` (without building it).
    pub(crate) fn mac(self, key: &[u8], parts: &[&[u8]]) -> Tag {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Tag {
            // HMAC accepts keys of any length, so this never fails; an empty tag matches nothing.
            let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
                return Tag::default();
            };
            for part in parts {
                mac.update(part);
            }
            Tag::from_slice(&mac.finalize().into_bytes()).unwrap_or_default()
        }
        match self {
            Self::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
            Self::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
            Self::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
        }
    }
}

/// How a signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// Hexadecimal, either case.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

impl Encoding {
    pub(crate) fn decode(self, text: &str) -> Option<Tag> {
        match self {
            Self::Hex => Tag::from_hex(text),
            Self::Base64 => Tag::from_base64(text),
        }
    }
}

/// A MAC or a decoded signature: at most 64 bytes, kept inline to avoid allocating per request.
#[derive(Clone, Copy)]
pub(crate) struct Tag {
    // 66 fits base64's decode-length estimate for a 64-byte value.
    buf: [u8; 66],
    len: usize,
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tag({} bytes)", self.len)
    }
}

impl Default for Tag {
    fn default() -> Self {
        Self {
            buf: [0; 66],
            len: 0,
        }
    }
}

impl Tag {
    fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut tag = Self::default();
        tag.buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        tag.len = bytes.len();
        Some(tag)
    }

    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if !text.len().is_multiple_of(2) || text.len() > 128 {
            return None;
        }
        let mut tag = Self::default();
        for (out, pair) in tag.buf.iter_mut().zip(text.chunks_exact(2)) {
            *out = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        tag.len = text.len() / 2;
        Some(tag)
    }

    pub(crate) fn from_base64(text: &str) -> Option<Self> {
        if text.len() > 88 {
            return None;
        }
        let mut tag = Self::default();
        tag.len = STANDARD.decode_slice(text, &mut tag.buf).ok()?;
        Some(tag)
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Constant-time equality (the length is not secret).
    pub(crate) fn matches(&self, other: &Self) -> bool {
        self.len != 0 && bool::from(self.as_slice().ct_eq(other.as_slice()))
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a signature that must be exactly one MAC long; anything else is malformed.
pub(crate) fn decode_signature(
    text: &str,
    encoding: Encoding,
    algorithm: Algorithm,
) -> Result<Tag, VerifyError> {
    encoding
        .decode(text)
        .filter(|t| t.len == algorithm.output_len())
        .ok_or(VerifyError::MalformedSignature)
}

/// Tries each secret active at `now`: computes its MAC over `parts` once and compares it with
/// every candidate in constant time.
pub(crate) fn verify_mac(
    secrets: &SecretSet,
    now: OffsetDateTime,
    algorithm: Algorithm,
    parts: &[&[u8]],
    candidates: &[Tag],
) -> Result<Verified, VerifyError> {
    secrets.verify_with(now, |key| {
        let expected = algorithm.mac(key, parts);
        // Fold without short-circuit so the position of a match does not show in timing.
        candidates
            .iter()
            .fold(false, |found, c| found | c.matches(&expected))
    })
}

/// Compares two tokens in constant time, including their length, by comparing their SHA-256
/// digests.
pub(crate) fn token_eq(provided: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest as _;
    let a = sha2::Sha256::digest(provided);
    let b = sha2::Sha256::digest(expected);
    a.ct_eq(&b).into()
}

/// Parses a Unix timestamp in whole seconds (ASCII digits only).
pub(crate) fn parse_unix_seconds(text: &str) -> Result<OffsetDateTime, VerifyError> {
    let text = text.trim();
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedSignature);
    }
    let seconds: i64 = text.parse().map_err(|_| VerifyError::MalformedSignature)?;
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| VerifyError::MalformedSignature)
}

/// Refuses timestamps more than `tolerance` before or after `now`.
pub(crate) fn check_window(
    signed_at: OffsetDateTime,
    now: OffsetDateTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let skew = (now - signed_at).unsigned_abs();
    if skew > tolerance {
        return Err(VerifyError::TimestampOutOfTolerance);
    }
    Ok(())
}

/// The five-minute window most providers document.
pub(crate) const FIVE_MINUTES: Duration = Duration::from_secs(300);

/// The ten-minute window of Twitch and Box.
pub(crate) const TEN_MINUTES: Duration = Duration::from_secs(600);

/// Parses an RFC 3339 date-time as providers send it (`2021-03-25T05:09:27Z`, optional
/// fraction, `Z` or an offset).
pub(crate) fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, VerifyError> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    // Nine fraction digits and an offset fit well within this.
    if text.len() > 40 {
        return Err(VerifyError::MalformedSignature);
    }
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| VerifyError::MalformedSignature)
}

/// Parses a Unix timestamp in milliseconds (ASCII digits only).
pub(crate) fn parse_unix_millis(text: &str) -> Result<OffsetDateTime, VerifyError> {
    let text = text.trim();
    if text.is_empty() || text.len() > 15 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedSignature);
    }
    let millis: i128 = text.parse().map_err(|_| VerifyError::MalformedSignature)?;
    OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
        .map_err(|_| VerifyError::MalformedSignature)
}

/// The first value of header `name`, `None` when absent; malformed as in
/// [`SignedRequest::require_header`].
pub(crate) fn optional_header<'a>(
    request: &SignedRequest<'a>,
    name: &str,
) -> Result<Option<&'a str>, VerifyError> {
    match request.require_header(name) {
        Ok(value) => Ok(Some(value)),
        Err(VerifyError::MissingSignature) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Top-level ids of a JSON body: any signature over the body covers them.
#[derive(Default, serde::Deserialize)]
struct BodyIds<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    notification_id: Option<Cow<'a, str>>,
}

impl<'a> BodyIds<'a> {
    /// The ids of `body`; none when it is not a JSON object or one of them is not a string.
    fn of(body: &'a [u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

fn non_empty(id: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    id.filter(|id| !id.is_empty())
}

/// The delivery id the built-in scheme of the provider called `provider` reads from the body
/// alone: what key rules without a verifier use for the providers whose body carries one.
/// Headers are never read here: without a verifier there is no telling which are signed.
pub(crate) fn body_delivery_id<'a>(provider: &str, body: &'a [u8]) -> Option<Cow<'a, str>> {
    match provider {
        "stripe" => stripe::delivery_id(body),
        "slack" => v0::slack_delivery_id(body),
        "square" => url_signed::delivery_id(body),
        "paddle" => paddle::delivery_id(body),
        "intercom" => hub::intercom_delivery_id(body),
        "linear" => linear::delivery_id(body),
        "mailgun" => mailgun::delivery_id(body),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the scheme tests: independent signing with the hmac crate directly.

    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use http::HeaderMap;
    use time::OffsetDateTime;

    use crate::verify::{SignatureVerifier, SignedRequest, Verified, VerifyError};

    pub(crate) fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }

    pub(crate) fn hmac1(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }

    pub(crate) fn hex(bytes: &[u8]) -> String {
        use std::fmt::Write as _;
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    pub(crate) fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    pub(crate) fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    /// Runs `python3 -c <script> <args>…` (a provider's official SDK signing a request) and
    /// returns its standard output, trimmed.
    pub(crate) fn python(script: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub(crate) fn run(
        v: &(impl SignatureVerifier + ?Sized),
        body: &[u8],
        h: &HeaderMap,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        v.verify(&SignedRequest::new(body, h).at(at(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_decode_hex_and_base64() {
        assert_eq!(Tag::from_hex("00ffAB").unwrap().as_slice(), &[0, 255, 0xab]);
        assert!(Tag::from_hex("0").is_none());
        assert!(Tag::from_hex("zz").is_none());
        assert!(Tag::from_hex(&"a".repeat(130)).is_none());
        assert_eq!(Tag::from_base64("AAE=").unwrap().as_slice(), &[0, 1]);
        assert!(Tag::from_base64("!!!").is_none());
        let sha512_b64 = testing::b64(&[7; 64]);
        assert_eq!(Tag::from_base64(&sha512_b64).unwrap().len, 64);
    }

    #[test]
    fn empty_tags_never_match() {
        assert!(!Tag::default().matches(&Tag::default()));
    }

    #[test]
    fn macs_match_the_hmac_crate() {
        let key = b"key";
        let tag = Algorithm::Sha256.mac(key, &[b"ab", b"", b"c"]);
        assert_eq!(tag.as_slice(), testing::hmac256(key, b"abc"));
        assert_eq!(
            Algorithm::Sha1.mac(key, &[b"x"]).as_slice(),
            testing::hmac1(key, b"x")
        );
        assert_eq!(Algorithm::Sha512.mac(key, &[b"x"]).len, 64);
    }

    #[test]
    fn window_is_symmetric() {
        let now = testing::at(1_000);
        let tol = Duration::from_secs(300);
        assert!(check_window(testing::at(700), now, tol).is_ok());
        assert!(check_window(testing::at(1_300), now, tol).is_ok());
        assert_eq!(
            check_window(testing::at(699), now, tol),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            check_window(testing::at(1_301), now, tol),
            Err(VerifyError::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn timestamps_are_plain_digits() {
        assert!(parse_unix_seconds("1531420618").is_ok());
        for bad in ["", "-1", "1e9", "12 34", "9999999999999", "0x10", "+5"] {
            assert_eq!(
                parse_unix_seconds(bad),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn token_eq_is_exact() {
        assert!(token_eq(b"abc", b"abc"));
        assert!(!token_eq(b"abc", b"abd"));
        assert!(!token_eq(b"abc", b"abcd"));
    }
}

/// A bounded, deterministic stand-in for the cargo-fuzz targets in `fuzz/` that runs on stable
/// in every `cargo test`: mutated header values never make a parser panic or accept.
#[cfg(test)]
mod random_input {
    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::testing::at;
    use crate::verify::{
        Paddle, SignatureVerifier, SignedRequest, Slack, StandardWebhooks, Stripe, Twilio,
    };

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n.max(1) as u64).unwrap()
        }
    }

    const TOKENS: &[&[u8]] = &[
        b",",
        b";",
        b"=",
        b" ",
        b"v1",
        b"v0=",
        b"t=",
        b"ts=",
        b"h1=",
        b"v1,",
        b"1700000000",
        b"-1",
        b"99999999999999999999",
        b"%",
        b"%2",
        b"&",
        b"+",
        b"==",
        b"\t",
        b"\xc3\xa9",
        b"bodySHA256=",
        b"00",
        b"zz",
    ];

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(out.len() + 1);
            match rng.below(4) {
                0 => out.insert(at, u8::try_from(rng.below(256)).unwrap()),
                1 if !out.is_empty() => {
                    out.remove(at.min(out.len() - 1));
                }
                2 => {
                    let t = TOKENS[rng.below(TOKENS.len())];
                    out.splice(at..at, t.iter().copied());
                }
                _ => out.truncate(at),
            }
        }
        out
    }

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                map.append(HeaderName::from_static(name), v);
            }
        }
        map
    }

    fn refuse(v: &dyn SignatureVerifier, body: &[u8], h: &HeaderMap, query: Option<&str>) {
        let req = SignedRequest::new(body, h)
            .at(at(1_700_000_000))
            .public_url("https://hooks.example.com")
            .target("/api/v1/webhook/x", query);
        assert!(v.verify(&req).is_err());
    }

    #[test]
    fn parsers_survive_mutated_headers() {
        let stripe = Stripe::new("k");
        let paddle = Paddle::new("k");
        let slack = Slack::new("k");
        let svix = StandardWebhooks::svix("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let twilio = Twilio::new("k");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let hex64 = "eb4d0dc8853be92b7f063b9f3ba5233eb920a09459b6e6b2c26705b4364db151";
        for _ in 0..4_000 {
            let body = mutate(&mut rng, b"{\"a\":1}&x=1&y=%2B2");
            let s = mutate(
                &mut rng,
                format!("t=1700000000,v1={hex64},v0=00").as_bytes(),
            );
            refuse(&stripe, &body, &headers(&[("stripe-signature", &s)]), None);
            let p = mutate(&mut rng, format!("ts=1700000000;h1={hex64}").as_bytes());
            refuse(&paddle, &body, &headers(&[("paddle-signature", &p)]), None);
            let ts = mutate(&mut rng, b"1700000000");
            let sig = mutate(&mut rng, format!("v0={hex64}").as_bytes());
            let h = headers(&[
                ("x-slack-request-timestamp", &ts),
                ("x-slack-signature", &sig),
            ]);
            refuse(&slack, &body, &h, None);
            let list = mutate(
                &mut rng,
                b"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1a,c2ln",
            );
            let h = headers(&[
                ("svix-id", b"msg_1"),
                ("svix-timestamp", &ts),
                ("svix-signature", &list),
            ]);
            refuse(&svix, &body, &h, None);
            let q = mutate(&mut rng, b"bodySHA256=00ff&foo=1");
            let q = String::from_utf8_lossy(&q);
            let tw = mutate(&mut rng, b"RSOYDt4T1cUTdK1PDd93/VVr8B8=");
            let h = headers(&[("x-twilio-signature", &tw)]);
            refuse(&twilio, &body, &h, Some(&q));
            refuse(&twilio, &body, &h, None);
        }
    }
    #[test]
    fn issue_16_parsers_survive_mutated_input() {
        use crate::verify::{
            Bitbucket, BoxWebhooks, Calendly, DocuSign, HubSpot, Mailgun, Meta, Teams, Twitch,
            Typeform, Zendesk,
        };
        let meta = Meta::new("k");
        let bitbucket = Bitbucket::new("k");
        let typeform = Typeform::new("k");
        let twitch = Twitch::new("k");
        let mailgun = Mailgun::new("k");
        let teams = Teams::new("vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA=").unwrap();
        let docusign = DocuSign::new("k");
        let hubspot = HubSpot::new("k");
        let boxes = BoxWebhooks::new("k");
        let calendly = Calendly::new("k");
        let zendesk = Zendesk::new("k");
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let hex64 = "eb4d0dc8853be92b7f063b9f3ba5233eb920a09459b6e6b2c26705b4364db151";
        let b64 = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        for _ in 0..2_000 {
            let body = mutate(&mut rng, b"{\"a\":1}&timestamp=1700000000&token=t");
            let hub = mutate(&mut rng, format!("sha256={hex64}").as_bytes());
            refuse(
                &meta,
                &body,
                &headers(&[("x-hub-signature-256", &hub)]),
                None,
            );
            refuse(
                &bitbucket,
                &body,
                &headers(&[("x-hub-signature", &hub)]),
                None,
            );
            let tf = mutate(&mut rng, format!("sha256={b64}").as_bytes());
            refuse(
                &typeform,
                &body,
                &headers(&[("typeform-signature", &tf)]),
                None,
            );
            let rfc = mutate(&mut rng, b"2023-11-14T22:13:20.634234626Z");
            let h = headers(&[
                ("twitch-eventsub-message-id", b"id-1"),
                ("twitch-eventsub-message-timestamp", &rfc),
                ("twitch-eventsub-message-signature", &hub),
            ]);
            refuse(&twitch, &body, &h, None);
            let mg = mutate(
                &mut rng,
                format!(r#"{{"signature":{{"timestamp":"1700000000","token":"t","signature":"{hex64}"}}}}"#)
                    .as_bytes(),
            );
            refuse(&mailgun, &mg, &headers(&[]), None);
            let form = mutate(
                &mut rng,
                format!("timestamp=1700000000&token=t&signature={hex64}").as_bytes(),
            );
            refuse(&mailgun, &form, &headers(&[]), None);
            let auth = mutate(&mut rng, format!("HMAC {b64}").as_bytes());
            refuse(&teams, &body, &headers(&[("authorization", &auth)]), None);
            let ds = mutate(&mut rng, b64.as_bytes());
            let h = headers(&[
                ("x-docusign-signature-1", &ds),
                ("x-docusign-signature-2", &tf),
            ]);
            refuse(&docusign, &body, &h, None);
            let ms = mutate(&mut rng, b"1700000000123");
            let h = headers(&[
                ("x-hubspot-signature-v3", &ds),
                ("x-hubspot-request-timestamp", &ms),
            ]);
            let q = mutate(&mut rng, b"portal=a%3Ab%40c&x=%2");
            refuse(&hubspot, &body, &h, Some(&String::from_utf8_lossy(&q)));
            let h = headers(&[
                ("box-signature-primary", &ds),
                ("box-signature-secondary", &tf),
                ("box-delivery-timestamp", &rfc),
                ("box-signature-version", &mutate(&mut rng, b"1")),
            ]);
            refuse(&boxes, &body, &h, None);
            let cal = mutate(&mut rng, format!("t=1700000000,v1={hex64}").as_bytes());
            refuse(
                &calendly,
                &body,
                &headers(&[("calendly-webhook-signature", &cal)]),
                None,
            );
            let h = headers(&[
                ("x-zendesk-webhook-signature", &ds),
                ("x-zendesk-webhook-signature-timestamp", &rfc),
            ]);
            refuse(&zendesk, &body, &h, None);
        }
    }
}
