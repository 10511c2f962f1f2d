//! Shared-token schemes: GitLab's token header, HTTP Basic and an API-key header.
//!
//! These prove only that the sender knows the token: there is no body signature and no
//! timestamp. Tokens are compared in constant time, length included. Each names the header that
//! carries its token in [`SignatureVerifier::secret_headers`], so the ingest service does not
//! publish the token with the event.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderName;
use http::header::AUTHORIZATION;

use super::token_eq;
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

// Statics, not consts: `secret_headers` lends them out for `'static`.
static GITLAB_TOKEN: [HeaderName; 1] = [HeaderName::from_static("x-gitlab-token")];
static BASIC_CREDENTIALS: [HeaderName; 1] = [AUTHORIZATION];

fn verify_token(
    request: &SignedRequest<'_>,
    secrets: &SecretSet,
    provided: &[u8],
) -> Result<Verified, VerifyError> {
    secrets.verify_with(request.now(), |secret| token_eq(provided, secret))
}

/// GitLab: `X-Gitlab-Token` must equal the webhook's secret token.
/// See <https://docs.gitlab.com/user/project/integrations/webhooks/#validate-requests-with-a-secret-token>.
#[derive(Debug, Clone)]
pub struct GitLab {
    secrets: SecretSet,
}

impl GitLab {
    /// Verifies with these secret tokens.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
        }
    }
}

impl SignatureVerifier for GitLab {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let token = request.require_header(GITLAB_TOKEN[0].as_str())?;
        verify_token(request, &self.secrets, token.as_bytes())
    }

    fn secret_headers(&self) -> &[HeaderName] {
        &GITLAB_TOKEN
    }
}

/// HTTP Basic authentication: `Authorization: Basic base64(user:password)`; each secret is
/// the `user:password` pair.
#[derive(Debug, Clone)]
pub struct Basic {
    secrets: SecretSet,
}

impl Basic {
    /// Verifies with these `user:password` credentials.
    pub fn new(credentials: impl Into<SecretSet>) -> Self {
        Self {
            secrets: credentials.into(),
        }
    }
}

impl SignatureVerifier for Basic {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let value = request.require_header(BASIC_CREDENTIALS[0].as_str())?;
        let (scheme, encoded) = value
            .split_once(' ')
            .ok_or(VerifyError::MalformedSignature)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(VerifyError::MalformedSignature);
        }
        let decoded = zeroize::Zeroizing::new(
            STANDARD
                .decode(encoded.trim())
                .map_err(|_| VerifyError::MalformedSignature)?,
        );
        if !decoded.contains(&b':') {
            return Err(VerifyError::MalformedSignature);
        }
        verify_token(request, &self.secrets, &decoded)
    }

    fn secret_headers(&self) -> &[HeaderName] {
        &BASIC_CREDENTIALS
    }
}

/// An API key in a header (default `X-Api-Key`), optionally after a prefix such as
/// `Bearer `.
#[derive(Debug, Clone)]
pub struct ApiKey {
    secrets: SecretSet,
    header: HeaderName,
    prefix: String,
}

impl ApiKey {
    /// Verifies `X-Api-Key` against these keys.
    pub fn new(keys: impl Into<SecretSet>) -> Self {
        Self {
            secrets: keys.into(),
            header: HeaderName::from_static("x-api-key"),
            prefix: String::new(),
        }
    }

    /// Reads the key from `header` instead.
    #[must_use]
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Requires the header value to start with `prefix` (e.g. `Bearer `), which is not part
    /// of the key.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

impl SignatureVerifier for ApiKey {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let value = request.require_header(self.header.as_str())?;
        let key = value
            .strip_prefix(self.prefix.trim())
            .ok_or(VerifyError::MalformedSignature)?
            .trim();
        verify_token(request, &self.secrets, key.as_bytes())
    }

    fn secret_headers(&self) -> &[HeaderName] {
        std::slice::from_ref(&self.header)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{b64, headers, run};
    use super::*;
    use crate::verify::Secret;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn gitlab() {
        let v = GitLab::new(SecretSet::new("tok-new").with("tok-old"));
        assert_eq!(
            run(&v, b"{}", &headers(&[("x-gitlab-token", "tok-old")]), NOW)
                .unwrap()
                .secret_index(),
            1
        );
        for wrong in ["tok", "tok-new2", "TOK-NEW"] {
            assert_eq!(
                run(&v, b"{}", &headers(&[("x-gitlab-token", wrong)]), NOW),
                Err(VerifyError::InvalidSignature)
            );
        }
        assert_eq!(
            run(&v, b"{}", &headers(&[]), NOW),
            Err(VerifyError::MissingSignature)
        );
        assert_eq!(
            run(&v, b"{}", &headers(&[("x-gitlab-token", "")]), NOW),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn gitlab_rotation() {
        let exp = time::OffsetDateTime::from_unix_timestamp(NOW).unwrap();
        let v = GitLab::new(SecretSet::new("new").with(Secret::new("old").expires_at(exp)));
        let old = headers(&[("x-gitlab-token", "old")]);
        assert!(run(&v, b"", &old, NOW - 1).is_ok());
        assert_eq!(run(&v, b"", &old, NOW), Err(VerifyError::InvalidSignature));
    }

    #[test]
    fn basic() {
        let v = Basic::new("hook:pa:ss");
        let good = format!("Basic {}", b64(b"hook:pa:ss"));
        assert!(run(&v, b"", &headers(&[("authorization", &good)]), NOW).is_ok());
        let lower = format!("basic {}", b64(b"hook:pa:ss"));
        assert!(run(&v, b"", &headers(&[("authorization", &lower)]), NOW).is_ok());
        let wrong = format!("Basic {}", b64(b"hook:nope"));
        assert_eq!(
            run(&v, b"", &headers(&[("authorization", &wrong)]), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, b"", &headers(&[]), NOW),
            Err(VerifyError::MissingSignature)
        );
        for bad in [
            "Bearer abc",
            "Basic",
            "Basic !!!",
            &format!("Basic {}", b64(b"nocolon")),
        ] {
            assert_eq!(
                run(&v, b"", &headers(&[("authorization", bad)]), NOW),
                Err(VerifyError::MalformedSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn api_key() {
        let v = ApiKey::new("k-123");
        assert!(run(&v, b"", &headers(&[("x-api-key", "k-123")]), NOW).is_ok());
        assert_eq!(
            run(&v, b"", &headers(&[("x-api-key", "k-124")]), NOW),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            run(&v, b"", &headers(&[]), NOW),
            Err(VerifyError::MissingSignature)
        );
        let bearer = ApiKey::new("k-123")
            .header(http::header::AUTHORIZATION)
            .prefix("Bearer ");
        assert!(
            run(
                &bearer,
                b"",
                &headers(&[("authorization", "Bearer k-123")]),
                NOW
            )
            .is_ok()
        );
        assert_eq!(
            run(
                &bearer,
                b"",
                &headers(&[("authorization", "Token k-123")]),
                NOW
            ),
            Err(VerifyError::MalformedSignature)
        );
    }

    #[test]
    fn token_headers_are_secret_headers() {
        assert_eq!(GitLab::new("t").secret_headers(), ["x-gitlab-token"]);
        assert_eq!(Basic::new("u:p").secret_headers(), [AUTHORIZATION]);
        assert_eq!(ApiKey::new("k").secret_headers(), ["x-api-key"]);
        let custom = ApiKey::new("k").header(HeaderName::from_static("x-hook-key"));
        assert_eq!(custom.secret_headers(), ["x-hook-key"]);
        // Through the wrappers a registry uses.
        let boxed: Box<dyn SignatureVerifier> = Box::new(GitLab::new("t"));
        assert_eq!(boxed.secret_headers(), ["x-gitlab-token"]);
        let shared = std::sync::Arc::new(Basic::new("u:p"));
        assert_eq!(SignatureVerifier::secret_headers(&shared), [AUTHORIZATION]);
    }

    #[test]
    fn basic_and_api_key_rotation() {
        let exp = time::OffsetDateTime::from_unix_timestamp(NOW).unwrap();
        let basic = Basic::new(SecretSet::new("u:new").with(Secret::new("u:old").expires_at(exp)));
        let old = format!("Basic {}", b64(b"u:old"));
        let h = headers(&[("authorization", &old)]);
        assert_eq!(run(&basic, b"", &h, NOW - 1).unwrap().secret_index(), 1);
        assert_eq!(
            run(&basic, b"", &h, NOW),
            Err(VerifyError::InvalidSignature)
        );
        let key = ApiKey::new(SecretSet::new("new").with(Secret::new("old").expires_at(exp)));
        let h = headers(&[("x-api-key", "old")]);
        assert_eq!(run(&key, b"", &h, NOW - 1).unwrap().secret_index(), 1);
        assert_eq!(run(&key, b"", &h, NOW), Err(VerifyError::InvalidSignature));
        assert!(run(&key, b"", &headers(&[("x-api-key", "new")]), NOW).is_ok());
    }
}
