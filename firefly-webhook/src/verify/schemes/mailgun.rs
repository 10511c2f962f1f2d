//! Mailgun: the signature travels in the body, over a timestamp and a one-time token.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::Value;

use super::{
    Algorithm, Encoding, FIVE_MINUTES, Tag, check_window, decode_signature, parse_unix_seconds,
    verify_mac,
};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Mailgun webhooks: `signature = <hex HMAC-SHA256(timestamp + token)>` in the body, keyed with
/// the HTTP webhook signing key.
///
/// Where: a JSON body's `signature` object (`{"timestamp": …, "token": …, "signature": …}`, what
/// Mailgun's webhooks send), or the `timestamp`, `token` and `signature` fields of an
/// `application/x-www-form-urlencoded` body (legacy webhooks and routes). `multipart/form-data`
/// bodies are not read (they are refused with `missing_signature`).
///
/// Signed: the timestamp (Unix seconds, as sent) followed by the token, with no separator — and
/// nothing else: **the rest of the body is not covered by the signature**, so anyone who saw one
/// signed delivery could attach its signature to another body. Mailgun's answer is to accept each
/// token once: the token is this scheme's [delivery id](SignatureVerifier::delivery_id), so the
/// idempotency layer refuses a second delivery with it, and the timestamp must be within five
/// minutes of the reference time, either way (configurable), which bounds how long tokens must be
/// remembered. A subaccount's event also carries `parent-signature`, the same HMAC keyed with the
/// primary account's key; either may match.
/// See Mailgun's "Securing Webhooks":
/// <https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks>.
#[derive(Debug, Clone)]
pub struct Mailgun {
    secrets: SecretSet,
    tolerance: Duration,
}

secrets_and_tolerance!(
    Mailgun,
    FIVE_MINUTES,
    "Verifies with these webhook signing keys.",
    "How far the timestamp may be from the reference time, either way (default 5 minutes)."
);

/// Mailgun's tokens are 50 characters; anything much longer is not one.
const MAX_TOKEN: usize = 256;

/// The signed fields of a Mailgun body, as sent.
#[derive(Debug)]
struct Fields<'a> {
    timestamp: Cow<'a, str>,
    token: Cow<'a, str>,
    signatures: Vec<Tag>,
}

fn is_json(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// The `signature` object of a JSON body; `MissingSignature` when it has none.
fn json_fields(body: &[u8]) -> Result<Fields<'static>, VerifyError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        signature: Option<Value>,
    }
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|_| VerifyError::MalformedSignature)?;
    let Some(Value::Object(object)) = envelope.signature else {
        return match envelope.signature {
            None => Err(VerifyError::MissingSignature),
            Some(_) => Err(VerifyError::MalformedSignature),
        };
    };
    let text = |name: &str| match object.get(name) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(VerifyError::MalformedSignature),
    };
    // The timestamp is a string in Mailgun's examples and an integer in its reference.
    let timestamp = match object.get("timestamp") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        _ => return Err(VerifyError::MalformedSignature),
    };
    let token = text("token")?.ok_or(VerifyError::MalformedSignature)?;
    let signature = text("signature")?.ok_or(VerifyError::MalformedSignature)?;
    let parent = text("parent-signature")?;
    Ok(Fields {
        timestamp: Cow::Owned(timestamp),
        token: Cow::Owned(token),
        signatures: signatures(&signature, parent.as_deref())?,
    })
}

/// The `timestamp`, `token` and `signature` fields of a form body (the first of each).
fn form_fields(body: &[u8]) -> Result<Fields<'_>, VerifyError> {
    let (mut timestamp, mut token, mut signature) = (None, None, None);
    for (name, value) in form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "timestamp" => &mut timestamp,
            "token" => &mut token,
            "signature" => &mut signature,
            _ => continue,
        };
        slot.get_or_insert(value);
        if timestamp.is_some() && token.is_some() && signature.is_some() {
            break;
        }
    }
    match (timestamp, token, signature) {
        (None, None, None) => Err(VerifyError::MissingSignature),
        (Some(timestamp), Some(token), Some(signature)) => Ok(Fields {
            timestamp,
            signatures: signatures(&signature, None)?,
            token,
        }),
        _ => Err(VerifyError::MalformedSignature),
    }
}

fn signatures(signature: &str, parent: Option<&str>) -> Result<Vec<Tag>, VerifyError> {
    let mut tags = vec![decode_signature(
        signature,
        Encoding::Hex,
        Algorithm::Sha256,
    )?];
    if let Some(parent) = parent {
        tags.push(decode_signature(parent, Encoding::Hex, Algorithm::Sha256)?);
    }
    Ok(tags)
}

fn fields(body: &[u8]) -> Result<Fields<'_>, VerifyError> {
    let fields = if is_json(body) {
        json_fields(body)?
    } else {
        form_fields(body)?
    };
    if fields.token.is_empty() || fields.token.len() > MAX_TOKEN {
        return Err(VerifyError::MalformedSignature);
    }
    Ok(fields)
}

/// The token of a Mailgun body: signed, and to be accepted once.
pub(super) fn delivery_id(body: &[u8]) -> Option<Cow<'_, str>> {
    fields(body).ok().map(|f| f.token)
}

impl SignatureVerifier for Mailgun {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let fields = fields(request.body())?;
        let signed_at = parse_unix_seconds(&fields.timestamp)?;
        check_window(signed_at, request.now(), self.tolerance)?;
        let parts: [&[u8]; 2] = [fields.timestamp.as_bytes(), fields.token.as_bytes()];
        verify_mac(
            &self.secrets,
            request.now(),
            Algorithm::Sha256,
            &parts,
            &fields.signatures,
        )
        .map(|v| v.with_signed_at(signed_at))
    }

    /// The signed `token`: Mailgun asks receivers to accept each token once.
    fn delivery_id<'a>(&self, request: &SignedRequest<'a>) -> Option<Cow<'a, str>> {
        delivery_id(request.body())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, headers, hex, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    const NOW: i64 = 1_700_000_000;
    const TOKEN: &str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";

    fn sign(key: &[u8], ts: &str, token: &str) -> String {
        hex(&hmac256(key, &[ts.as_bytes(), token.as_bytes()].concat()))
    }

    fn json_body(ts: &str, token: &str, sig: &str) -> Vec<u8> {
        format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{sig}"}},"event-data":{{"event":"delivered","id":"x"}}}}"#
        )
        .into_bytes()
    }

    fn check(v: &Mailgun, body: &[u8], now: i64) -> Result<Verified, VerifyError> {
        run(v, body, &headers(&[]), now)
    }

    #[test]
    fn json_body_valid_wrong_key_tampered_fields() {
        let v = Mailgun::new("mg-signing-key");
        let ts = NOW.to_string();
        let sig = sign(b"mg-signing-key", &ts, TOKEN);
        let ok = check(&v, &json_body(&ts, TOKEN, &sig), NOW).unwrap();
        assert_eq!(ok.signed_at().unwrap().unix_timestamp(), NOW);
        assert_eq!(
            check(&Mailgun::new("other"), &json_body(&ts, TOKEN, &sig), NOW),
            Err(VerifyError::InvalidSignature)
        );
        let other_token = "b".repeat(50);
        assert_eq!(
            check(&v, &json_body(&ts, &other_token, &sig), NOW),
            Err(VerifyError::InvalidSignature)
        );
        let moved = (NOW + 1).to_string();
        assert_eq!(
            check(&v, &json_body(&moved, TOKEN, &sig), NOW),
            Err(VerifyError::InvalidSignature)
        );
        // An integer timestamp is signed as its digits.
        let numeric = format!(
            r#"{{"signature":{{"timestamp":{NOW},"token":"{TOKEN}","signature":"{sig}"}}}}"#
        );
        assert!(check(&v, numeric.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn replay_window_both_ways() {
        let v = Mailgun::new("k");
        let ts = NOW.to_string();
        let body = json_body(&ts, TOKEN, &sign(b"k", &ts, TOKEN));
        assert!(check(&v, &body, NOW + 300).is_ok());
        assert!(check(&v, &body, NOW - 300).is_ok());
        assert_eq!(
            check(&v, &body, NOW + 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            check(&v, &body, NOW - 301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        let wide = Mailgun::new("k").tolerance(Duration::from_secs(3600));
        assert!(check(&wide, &body, NOW + 3600).is_ok());
    }

    #[test]
    fn form_body_and_parent_signature() {
        let v = Mailgun::new(SecretSet::new("sub-key").with("parent-key"));
        let ts = NOW.to_string();
        let form = format!(
            "recipient=a%40example.com&timestamp={ts}&token={TOKEN}&signature={}&event=delivered",
            sign(b"sub-key", &ts, TOKEN)
        );
        assert_eq!(check(&v, form.as_bytes(), NOW).unwrap().secret_index(), 0);
        // A subaccount's event: our key is the parent's.
        let parent_only = Mailgun::new("parent-key");
        let body = format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"{TOKEN}","signature":"{}","parent-signature":"{}"}}}}"#,
            sign(b"sub-key", &ts, TOKEN),
            sign(b"parent-key", &ts, TOKEN)
        );
        assert!(check(&parent_only, body.as_bytes(), NOW).is_ok());
        assert_eq!(
            check(&Mailgun::new("neither"), body.as_bytes(), NOW),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn missing_and_malformed() {
        let v = Mailgun::new("k");
        let ts = NOW.to_string();
        let sig = sign(b"k", &ts, TOKEN);
        for missing in [
            br#"{"event-data":{}}"#.as_slice(),
            b"event=delivered&recipient=x",
            b"",
        ] {
            assert_eq!(
                check(&v, missing, NOW),
                Err(VerifyError::MissingSignature),
                "{}",
                String::from_utf8_lossy(missing)
            );
        }
        let long_token = "t".repeat(MAX_TOKEN + 1);
        for bad in [
            json_body(&ts, TOKEN, "zz"),
            json_body(&ts, TOKEN, &sig[..10]),
            json_body("yesterday", TOKEN, &sig),
            json_body(&ts, "", &sig),
            json_body(&ts, &long_token, &sig),
            br#"{"signature":"abc"}"#.to_vec(),
            br#"{"signature":{"timestamp":"1","token":7,"signature":"00"}}"#.to_vec(),
            br#"{"signature":{"token":"t","signature":"00"}}"#.to_vec(),
            br#"{"signature":{"timestamp":-1,"token":"t","signature":"00"}}"#.to_vec(),
            br#"{"signature": {"#.to_vec(),
            format!("timestamp={ts}&token={TOKEN}").into_bytes(),
            format!("timestamp={ts}&token={TOKEN}&signature=xyz").into_bytes(),
        ] {
            assert_eq!(
                check(&v, &bad, NOW),
                Err(VerifyError::MalformedSignature),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    #[test]
    fn the_token_is_the_delivery_id() {
        let ts = NOW.to_string();
        let sig = sign(b"k", &ts, TOKEN);
        let h = headers(&[]);
        let v = Mailgun::new("k");
        let body = json_body(&ts, TOKEN, &sig);
        assert_eq!(
            v.delivery_id(&SignedRequest::new(&body, &h)).as_deref(),
            Some(TOKEN)
        );
        let form = format!("token={TOKEN}&timestamp={ts}&signature={sig}");
        assert_eq!(delivery_id(form.as_bytes()).as_deref(), Some(TOKEN));
        assert_eq!(delivery_id(b"{}"), None);
    }

    #[test]
    fn rotation() {
        let v = Mailgun::new(SecretSet::new("new").with(Secret::new("old").expires_at(at(NOW))));
        let ts = (NOW - 5).to_string();
        let body = json_body(&ts, TOKEN, &sign(b"old", &ts, TOKEN));
        assert_eq!(check(&v, &body, NOW - 1).unwrap().secret_index(), 1);
        assert_eq!(check(&v, &body, NOW), Err(VerifyError::InvalidSignature));
    }
}
