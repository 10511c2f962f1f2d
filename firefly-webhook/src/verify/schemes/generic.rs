//! A configurable HMAC scheme for providers without a dedicated verifier.

use std::time::Duration;

use http::HeaderName;

use super::{
    Algorithm, Encoding, FIVE_MINUTES, check_window, decode_signature, parse_unix_seconds,
    verify_mac,
};
use crate::verify::{
    ConfigError, SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Body,
    Url,
    Timestamp,
    Header(HeaderName),
}

/// A configurable HMAC: `<header>: [prefix]<encoded HMAC(signed content)>`.
///
/// Defaults: header `X-Signature`, hex, no prefix, signed content `{body}`, no timestamp.
/// The signed content is a template of literal text and placeholders:
///
/// | placeholder      | replaced by                                                  |
/// |------------------|--------------------------------------------------------------|
/// | `{body}`         | the raw body                                                 |
/// | `{url}`          | the public URL of the request (public URL + path + query)    |
/// | `{timestamp}`    | the timestamp header's value, as sent                        |
/// | `{header:name}`  | the first value of header `name`                             |
/// | `{{` / `}}`      | a literal brace                                              |
///
/// When a timestamp header is set, or the template uses `{timestamp}` (header `X-Timestamp`
/// unless set), the timestamp must be Unix seconds within the tolerance (default 5 minutes).
///
/// ```
/// use firefly_webhook::http::HeaderName;
/// use firefly_webhook::verify::{Encoding, GenericHmac};
///
/// # fn main() -> Result<(), firefly_webhook::verify::ConfigError> {
/// // `X-Acme-Signature: t=…` style: base64 of HMAC-SHA512("{timestamp}.{body}").
/// let acme = GenericHmac::sha512("acme-secret")
///     .header(HeaderName::from_static("x-acme-signature"))
///     .encoding(Encoding::Base64)
///     .timestamp_header(HeaderName::from_static("x-acme-timestamp"))
///     .template("{timestamp}.{body}")?;
/// # let _ = acme; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GenericHmac {
    secrets: SecretSet,
    algorithm: Algorithm,
    header: HeaderName,
    prefix: String,
    encoding: Encoding,
    template: Vec<Piece>,
    timestamp_header: Option<HeaderName>,
    tolerance: Duration,
}

impl GenericHmac {
    /// An HMAC with `algorithm` over the body, hex in `X-Signature`.
    pub fn new(algorithm: Algorithm, secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
            algorithm,
            header: HeaderName::from_static("x-signature"),
            prefix: String::new(),
            encoding: Encoding::Hex,
            template: vec![Piece::Body],
            timestamp_header: None,
            tolerance: FIVE_MINUTES,
        }
    }

    /// HMAC-SHA1.
    pub fn sha1(secrets: impl Into<SecretSet>) -> Self {
        Self::new(Algorithm::Sha1, secrets)
    }

    /// HMAC-SHA256.
    pub fn sha256(secrets: impl Into<SecretSet>) -> Self {
        Self::new(Algorithm::Sha256, secrets)
    }

    /// HMAC-SHA512.
    pub fn sha512(secrets: impl Into<SecretSet>) -> Self {
        Self::new(Algorithm::Sha512, secrets)
    }

    /// The header carrying the signature.
    #[must_use]
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// A prefix before the encoded signature, such as `sha256=`; removed when present.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How the signature is encoded (default hex).
    #[must_use]
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The header carrying the signed Unix timestamp; turns on the tolerance check.
    #[must_use]
    pub fn timestamp_header(mut self, header: HeaderName) -> Self {
        self.timestamp_header = Some(header);
        self
    }

    /// How far the timestamp may be from the reference time, either way (default 5 minutes).
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The signed content (see the [type docs](Self)); fails on an unknown placeholder or
    /// an unbalanced brace.
    pub fn template(mut self, template: &str) -> Result<Self, ConfigError> {
        self.template = parse_template(template)?;
        Ok(self)
    }

    fn timestamp_header_name(&self) -> Option<&str> {
        match &self.timestamp_header {
            Some(h) => Some(h.as_str()),
            None if self.template.contains(&Piece::Timestamp) => Some("x-timestamp"),
            None => None,
        }
    }
}

fn invalid(reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: "signed-content template",
        reason: reason.into(),
    }
}

fn parse_template(template: &str) -> Result<Vec<Piece>, ConfigError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        literal.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            literal.push('{');
            rest = after;
            continue;
        }
        if let Some(after) = tail.strip_prefix("}}") {
            literal.push('}');
            rest = after;
            continue;
        }
        if tail.starts_with('}') {
            return Err(invalid("unmatched `}` (write `}}` for a literal brace)"));
        }
        let end = tail
            .find('}')
            .ok_or_else(|| invalid("unclosed `{` (write `{{` for a literal brace)"))?;
        let name = &tail[1..end];
        let piece = match name {
            "body" => Piece::Body,
            "url" => Piece::Url,
            "timestamp" => Piece::Timestamp,
            _ => match name.strip_prefix("header:") {
                Some(h) => Piece::Header(
                    HeaderName::from_bytes(h.trim().as_bytes())
                        .map_err(|_| invalid(format!("`{h}` is not a header name")))?,
                ),
                None => {
                    return Err(invalid(format!(
                        "unknown placeholder `{{{name}}}`; use {{body}}, {{url}}, {{timestamp}} or {{header:name}}"
                    )));
                }
            },
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
        rest = &tail[end + 1..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

impl SignatureVerifier for GenericHmac {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let value = request.require_header(self.header.as_str())?;
        let encoded = value.strip_prefix(self.prefix.as_str()).unwrap_or(value);
        let signature = decode_signature(encoded, self.encoding, self.algorithm)?;

        let mut signed_at = None;
        let timestamp = match self.timestamp_header_name() {
            Some(name) => {
                let text = request.require_header(name)?;
                let at = parse_unix_seconds(text)?;
                check_window(at, request.now(), self.tolerance)?;
                signed_at = Some(at);
                text
            }
            None => "",
        };
        let url = if self.template.contains(&Piece::Url) {
            request.url().ok_or_else(|| {
                tracing::warn!("the signed content uses {{url}}; no public URL is configured");
                VerifyError::InvalidSignature
            })?
        } else {
            String::new()
        };
        let mut parts: Vec<&[u8]> = Vec::with_capacity(self.template.len());
        for piece in &self.template {
            parts.push(match piece {
                Piece::Literal(text) => text.as_bytes(),
                Piece::Body => request.body(),
                Piece::Url => url.as_bytes(),
                Piece::Timestamp => timestamp.as_bytes(),
                Piece::Header(name) => request.require_header(name.as_str())?.as_bytes(),
            });
        }
        let verified = verify_mac(
            &self.secrets,
            request.now(),
            self.algorithm,
            &parts,
            &[signature],
        )?;
        Ok(match signed_at {
            Some(at) => verified.with_signed_at(at),
            None => verified,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::super::testing::{at, b64, headers, hex, hmac1, hmac256, run};
    use super::*;
    use crate::verify::Secret;

    fn hmac512(key: &[u8], msg: &[u8]) -> Vec<u8> {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }

    #[test]
    fn templates_parse() {
        assert_eq!(parse_template("{body}").unwrap(), vec![Piece::Body]);
        assert_eq!(
            parse_template("v1:{timestamp}.{{x}}{header:X-Id}{url}").unwrap(),
            vec![
                Piece::Literal("v1:".into()),
                Piece::Timestamp,
                Piece::Literal(".{x}".into()),
                Piece::Header(HeaderName::from_static("x-id")),
                Piece::Url,
            ]
        );
        for bad in ["{nope}", "{body", "body}", "{header:bad name}"] {
            let err = parse_template(bad).unwrap_err();
            assert!(err.to_string().contains("template"), "{bad}: {err}");
        }
    }

    #[test]
    fn default_sha256_hex_over_body_with_optional_prefix() {
        let v = GenericHmac::sha256("k").prefix("sha256=");
        let body = b"payload";
        let sig = hex(&hmac256(b"k", body));
        assert!(run(&v, body, &headers(&[("x-signature", &sig)]), 0).is_ok());
        let prefixed = format!("sha256={sig}");
        assert!(run(&v, body, &headers(&[("x-signature", &prefixed)]), 0).is_ok());
        assert_eq!(
            run(&v, b"other", &headers(&[("x-signature", &sig)]), 0),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(
                &GenericHmac::sha256("j"),
                body,
                &headers(&[("x-signature", &sig)]),
                0
            ),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, body, &headers(&[]), 0),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            run(&v, body, &headers(&[("x-signature", "sha256=12")]), 0),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn sha1_and_sha512_base64_with_timestamp_template() {
        let body = b"{}";
        let ts = "1700000000";
        let msg = [ts.as_bytes(), b".", body].concat();
        let v = GenericHmac::sha512("k")
            .header(HeaderName::from_static("x-sig"))
            .encoding(Encoding::Base64)
            .template("{timestamp}.{body}")
            .unwrap();
        let h = headers(&[("x-sig", &b64(&hmac512(b"k", &msg))), ("x-timestamp", ts)]);
        assert_eq!(
            run(&v, body, &h, 1_700_000_100).unwrap().signed_at(),
            Some(at(1_700_000_000))
        );
        assert_eq!(
            run(&v, body, &h, 1_700_000_301),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(&v, body, &h, 1_699_999_699),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        assert_eq!(
            run(
                &v,
                body,
                &headers(&[("x-sig", &b64(&hmac512(b"k", &msg)))]),
                1_700_000_000
            ),
            Err(VerifyError::MissingSignature)
        );

        let v1 = GenericHmac::sha1("k");
        let h1 = headers(&[("x-signature", &hex(&hmac1(b"k", body)))]);
        assert!(run(&v1, body, &h1, 0).is_ok());
        let b64_engine = base64::engine::general_purpose::STANDARD;
        let wrong_len = b64_engine.encode([0u8; 20]);
        assert_eq!(
            run(
                &v.clone(),
                body,
                &headers(&[("x-sig", &wrong_len), ("x-timestamp", ts)]),
                1_700_000_000
            ),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn header_and_url_placeholders_and_rotation() {
        let v =
            GenericHmac::sha256(SecretSet::new("new").with(Secret::new("old").expires_at(at(10))))
                .template("{url}|{header:x-delivery}|{body}")
                .unwrap();
        let url = "https://h.example/api/v1/webhook/acme?x=1";
        let body = b"b";
        let msg = [url.as_bytes(), b"|", b"d-1", b"|", body].concat();
        let h = headers(&[
            ("x-signature", &hex(&hmac256(b"old", &msg))),
            ("x-delivery", "d-1"),
        ]);
        let req = |now| {
            SignedRequest::new(body, &h)
                .public_url("https://h.example")
                .target("/api/v1/webhook/acme", Some("x=1"))
                .at(at(now))
        };
        assert_eq!(v.verify(&req(9)).unwrap().secret_index(), 1);
        assert_eq!(v.verify(&req(10)), Err(VerifyError::InvalidSignature));
        // Without a public URL the signature cannot be checked.
        assert_eq!(
            v.verify(&SignedRequest::new(body, &h).at(at(0))),
            Err(VerifyError::InvalidSignature)
        );
    }
}
