//! Twilio: the full URL plus the sorted form parameters, HMAC-SHA1.

use sha2::Digest as _;
use subtle::ConstantTimeEq;

use super::{Algorithm, Encoding, Tag, decode_signature, verify_mac};
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Twilio: `X-Twilio-Signature: <base64 HMAC-SHA1(URL + sorted form parameters)>`, keyed with
/// the account's auth token.
///
/// - Form bodies (`application/x-www-form-urlencoded`): every `name` + `value` pair of the
///   body, sorted, is appended to the URL.
/// - JSON bodies: the URL carries `bodySHA256=<hex SHA-256(body)>`; the URL alone is signed and
///   the body must hash to that value.
///
/// A form body with more than [`MAX_FORM_PARAMS`](Self::MAX_FORM_PARAMS) parameters is refused
/// with [`VerifyError::InvalidSignature`] before it is parsed.
///
/// The URL is the registry's public URL plus the request path and query. As Twilio's SDKs do,
/// the URL is also tried with the default port added or removed (`:443`/`:80`), since Twilio
/// may sign either form.
/// See <https://www.twilio.com/docs/usage/security#validating-requests>.
#[derive(Debug, Clone)]
pub struct Twilio {
    secrets: SecretSet,
}

impl Twilio {
    /// The most form parameters a signed body may have. Twilio's own requests carry a few dozen;
    /// the cap bounds what one unauthenticated request can make the verifier allocate (sorting
    /// millions of tiny parameters would take tens of MB).
    pub const MAX_FORM_PARAMS: usize = 1_000;

    /// Verifies with these auth tokens.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
        }
    }
}

/// The form parameters of `body`, sorted and concatenated as `name` + `value`; `None`, before
/// anything is decoded or allocated, when there are more than `max` of them.
pub(crate) fn signed_params(body: &[u8], max: usize) -> Option<Vec<u8>> {
    // Counts as `form_urlencoded::parse` splits: on `&`, skipping empty parameters.
    let count = body
        .split(|&b| b == b'&')
        .filter(|param| !param.is_empty())
        .take(max + 1)
        .count();
    if count > max {
        return None;
    }
    let mut pairs: Vec<_> = form_urlencoded::parse(body).collect();
    pairs.sort_unstable();
    let mut out = Vec::with_capacity(body.len());
    for (name, value) in &pairs {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    Some(out)
}

/// The `bodySHA256` query parameter, when present.
fn body_sha256(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "bodySHA256")
        .map(|(_, value)| value.into_owned())
}

/// The URL with its default port removed, or added when absent; `None` when there is no such
/// variant (no scheme, or a non-HTTP one).
pub(crate) fn port_variant(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host = &authority[host_start..];
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    // A colon after the last `]` (IPv6 literals contain colons) starts the port.
    let port_at = host
        .rfind(':')
        .filter(|&i| !host[i..].contains(']'))
        .map(|i| host_start + i);
    Some(match port_at {
        Some(i) => format!("{scheme}://{}{tail}", &authority[..i]),
        None => format!("{scheme}://{authority}:{default_port}{tail}"),
    })
}

impl SignatureVerifier for Twilio {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let signature = decode_signature(
            request.require_header("x-twilio-signature")?,
            Encoding::Base64,
            Algorithm::Sha1,
        )?;
        let Some(url) = request.url() else {
            tracing::warn!("twilio signatures need the public URL; none is configured");
            return Err(VerifyError::InvalidSignature);
        };

        let params = match body_sha256(request.query()) {
            Some(expected) => {
                let expected = Tag::from_hex(&expected)
                    .filter(|t| t.as_slice().len() == 32)
                    .ok_or(VerifyError::MalformedSignature)?;
                let actual = sha2::Sha256::digest(request.body());
                if !bool::from(expected.as_slice().ct_eq(actual.as_slice())) {
                    return Err(VerifyError::InvalidSignature);
                }
                Vec::new()
            }
            None => signed_params(request.body(), Self::MAX_FORM_PARAMS).ok_or_else(|| {
                tracing::debug!(
                    max = Self::MAX_FORM_PARAMS,
                    "twilio form body has too many parameters"
                );
                VerifyError::InvalidSignature
            })?,
        };

        let check = |url: &str| {
            verify_mac(
                &self.secrets,
                request.now(),
                Algorithm::Sha1,
                &[url.as_bytes(), &params],
                &[signature],
            )
        };
        check(&url).or_else(|err| match port_variant(&url) {
            Some(variant) => check(&variant),
            None => Err(err),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{at, b64, headers, hex, hmac1};
    use super::*;
    use crate::verify::Secret;

    fn check(
        v: &Twilio,
        base: &str,
        path: &str,
        query: Option<&str>,
        body: &[u8],
        sig: &str,
    ) -> Result<Verified, VerifyError> {
        let h = headers(&[("x-twilio-signature", sig)]);
        v.verify(
            &SignedRequest::new(body, &h)
                .public_url(base)
                .target(path, query)
                .at(at(0)),
        )
    }

    // The example in Twilio's request-validation docs (twilio-php docs/usage/validation.rst,
    // www.twilio.com/docs/usage/security): auth token 12345, this URL and these parameters.
    const DOC_BODY: &[u8] = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
    const DOC_SIG: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    /// The documented URL and signature, with `body`.
    fn check_doc(v: &Twilio, body: &[u8]) -> Result<Verified, VerifyError> {
        check(
            v,
            "https://mycompany.com",
            "/myapp.php",
            Some("foo=1&bar=2"),
            body,
            DOC_SIG,
        )
    }

    #[test]
    fn documented_form_vector() {
        let v = Twilio::new("12345");
        let ok = check_doc(&v, DOC_BODY);
        assert!(ok.is_ok());
        // Parameter order in the body does not matter; values do.
        let shuffled = b"To=%2B18005551212&Digits=1234&From=%2B14158675309&Caller=%2B14158675309&CallSid=CA1234567890ABCDE";
        assert!(check_doc(&v, shuffled).is_ok());
        let tampered = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=9999&From=%2B14158675309&To=%2B18005551212";
        assert_eq!(check_doc(&v, tampered), Err(VerifyError::InvalidSignature));
        assert_eq!(
            check_doc(&Twilio::new("54321"), DOC_BODY),
            Err(VerifyError::InvalidSignature)
        );
        // The query is signed too.
        assert_eq!(
            check(
                &v,
                "https://mycompany.com",
                "/myapp.php",
                Some("foo=1&bar=3"),
                DOC_BODY,
                DOC_SIG
            ),
            Err(VerifyError::InvalidSignature)
        );
        // Twilio may sign with the default port spelled out, or not.
        assert!(
            check(
                &v,
                "https://mycompany.com:443",
                "/myapp.php",
                Some("foo=1&bar=2"),
                DOC_BODY,
                DOC_SIG
            )
            .is_ok()
        );
    }

    #[test]
    fn json_body_with_body_sha256() {
        let token = b"tw-token";
        let body = br#"{"event":"call.state"}"#;
        let digest = hex(&sha2::Sha256::digest(body));
        let query = format!("bodySHA256={digest}");
        let url = format!("https://h.example/api/v1/webhook/twilio?{query}");
        let sig = b64(&hmac1(token, url.as_bytes()));
        let v = Twilio::new("tw-token");
        let path = "/api/v1/webhook/twilio";
        assert!(check(&v, "https://h.example", path, Some(&query), body, &sig).is_ok());
        assert_eq!(
            check(
                &v,
                "https://h.example",
                path,
                Some(&query),
                br#"{"event":"x"}"#,
                &sig
            ),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            check(
                &v,
                "https://h.example",
                path,
                Some("bodySHA256=zz"),
                body,
                &sig
            ),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn missing_malformed_and_no_url() {
        let v = Twilio::new("12345");
        let h = headers(&[]);
        let req = SignedRequest::new(DOC_BODY, &h).public_url("https://mycompany.com");
        assert_eq!(v.verify(&req), Err(VerifyError::MissingSignature));
        assert_eq!(
            check(&v, "https://x", "/", None, DOC_BODY, "not base64!"),
            Err(VerifyError::MalformedSignature)
        );
        let h = headers(&[("x-twilio-signature", DOC_SIG)]);
        assert_eq!(
            v.verify(&SignedRequest::new(DOC_BODY, &h)),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn rotation() {
        let v = Twilio::new(SecretSet::new("new").with(Secret::new("12345").expires_at(at(1))));
        let ok = check_doc(&v, DOC_BODY);
        assert_eq!(ok.unwrap().secret_index(), 1);
        let h = headers(&[("x-twilio-signature", DOC_SIG)]);
        let late = SignedRequest::new(DOC_BODY, &h)
            .public_url("https://mycompany.com")
            .target("/myapp.php", Some("foo=1&bar=2"))
            .at(at(1));
        assert_eq!(v.verify(&late), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn too_many_form_parameters_are_refused_before_canonicalizing() {
        let v = Twilio::new("12345");
        let at_cap = vec!["a=1"; Twilio::MAX_FORM_PARAMS].join("&");
        assert!(signed_params(at_cap.as_bytes(), Twilio::MAX_FORM_PARAMS).is_some());

        // A megabyte of one-byte parameters: refused by counting, without decoding or sorting.
        let flood = "a&".repeat(512 * 1024);
        assert_eq!(
            signed_params(flood.as_bytes(), Twilio::MAX_FORM_PARAMS),
            None
        );
        assert_eq!(
            check_doc(&v, flood.as_bytes()),
            Err(VerifyError::InvalidSignature)
        );
        // Even with the documented parameters (and signature) at the front.
        let padded = [DOC_BODY, flood.as_bytes()].concat();
        assert_eq!(check_doc(&v, &padded), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn params_and_ports() {
        assert_eq!(
            signed_params(b"b=2&a=1&a=0&c", 4),
            Some(b"a0a1b2c".to_vec())
        );
        assert_eq!(signed_params(b"x=a+b%21", 1), Some(b"xa b!".to_vec()));
        // Empty parameters are skipped, as by the parser, and do not count.
        assert_eq!(signed_params(b"&&a=1&&b=2&", 2), Some(b"a1b2".to_vec()));
        assert_eq!(signed_params(b"a=1&b=2&c=3", 2), None);
        assert_eq!(
            port_variant("https://h.example/p?q=1").as_deref(),
            Some("https://h.example:443/p?q=1")
        );
        assert_eq!(
            port_variant("http://u:p@h.example:8080/p").as_deref(),
            Some("http://u:p@h.example/p")
        );
        assert_eq!(
            port_variant("https://[::1]/p").as_deref(),
            Some("https://[::1]:443/p")
        );
        assert_eq!(port_variant("ftp://h/p"), None);
        assert_eq!(port_variant("no scheme"), None);
    }
}
