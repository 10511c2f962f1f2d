//! Signature verification: the [`SignatureVerifier`] port and the per-provider [`Verifiers`]
//! registry used at ingest (401 before publishing) and in the worker.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::event::WebhookEvent;

/// What a verifier sees: the raw request as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The event (raw body and all headers).
    pub event: &'a WebhookEvent,
    /// The externally visible base URL (scheme and host), for schemes that sign the URL.
    pub public_url: Option<&'a str>,
}

/// Checks one provider's signature scheme.
pub trait SignatureVerifier: Send + Sync + 'static {
    /// Verifies the request; `Ok` says which secret matched.
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError>;
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Index of the matching secret in its set.
    pub secret_index: usize,
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature header is absent.
    #[error("signature header is missing")]
    MissingSignature,
    /// The signature header cannot be parsed.
    #[error("signature header is malformed")]
    MalformedSignature,
    /// No secret produces this signature.
    #[error("signature does not match")]
    InvalidSignature,
    /// The signed timestamp is too old or too far in the future.
    #[error("signature timestamp is outside the tolerance")]
    TimestampOutOfTolerance,
    /// Verification is required and this provider has no verifier.
    #[error("no verifier is configured for this provider")]
    UnknownProvider,
}

impl VerifyError {
    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::InvalidSignature => "invalid_signature",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Self::UnknownProvider => "unknown_provider",
        }
    }
}

/// Verifiers by provider name.
#[derive(Clone, Default)]
pub struct Verifiers {
    by_provider: HashMap<String, Arc<dyn SignatureVerifier>>,
    require: bool,
    public_url: Option<String>,
}

impl fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifiers")
            .field("providers", &self.by_provider.keys().collect::<Vec<_>>())
            .field("require", &self.require)
            .field("public_url", &self.public_url)
            .finish()
    }
}

impl Verifiers {
    /// An empty registry: every provider passes unverified.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `provider`'s requests with `verifier`.
    #[must_use]
    pub fn provider(mut self, provider: &str, verifier: impl SignatureVerifier) -> Self {
        self.by_provider
            .insert(provider.to_ascii_lowercase(), Arc::new(verifier));
        self
    }

    /// Providers without a verifier are refused with `unknown_provider`.
    #[must_use]
    pub fn require_verification(mut self, require: bool) -> Self {
        self.require = require;
        self
    }

    /// The public base URL (e.g. `https://hooks.example.com`) for schemes that sign the URL.
    #[must_use]
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Verifies `event` with its provider's verifier. `Ok(None)`: no verifier, not required.
    pub fn verify_event(&self, event: &WebhookEvent) -> Result<Option<Verified>, VerifyError> {
        match self.by_provider.get(&event.provider) {
            Some(v) => v
                .verify(&SignedRequest {
                    event,
                    public_url: self.public_url.as_deref(),
                })
                .map(Some),
            None if self.require => Err(VerifyError::UnknownProvider),
            None => Ok(None),
        }
    }
}
