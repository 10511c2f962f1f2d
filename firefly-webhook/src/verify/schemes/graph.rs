//! Microsoft Graph change notifications: the `clientState` secret in every notification.

use std::borrow::Cow;

use serde::Deserialize;

use super::token_eq;
use crate::verify::{SecretSet, SignatureVerifier, SignedRequest, Verified, VerifyError};

/// Microsoft Graph change notifications: every notification in the body's `value` array must
/// carry a `clientState` equal to one of the configured secrets (the value given when the
/// subscription was created), compared in constant time. Nothing is signed and there is no
/// timestamp; Graph's subscription validation (`?validationToken=`) is answered by
/// [`GraphValidation`](crate::verify::GraphValidation), which the `microsoft-graph`
/// [`Scheme`](crate::verify::Scheme) attaches.
/// See "Receive change notifications through webhooks", "Processing the change notification":
/// <https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks#change-notifications>.
#[derive(Debug, Clone)]
pub struct GraphClientState {
    secrets: SecretSet,
}

impl GraphClientState {
    /// Accepts notifications carrying one of these client states.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
        }
    }
}

#[derive(Deserialize)]
struct Notifications<'a> {
    #[serde(borrow)]
    value: Vec<Notification<'a>>,
}

#[derive(Deserialize)]
struct Notification<'a> {
    #[serde(rename = "clientState", borrow, default)]
    client_state: Option<Cow<'a, str>>,
}

impl SignatureVerifier for GraphClientState {
    fn verify(&self, request: &SignedRequest<'_>) -> Result<Verified, VerifyError> {
        let body: Notifications<'_> =
            serde_json::from_slice(request.body()).map_err(|_| VerifyError::MissingSignature)?;
        let states = body
            .value
            .iter()
            .map(|n| {
                n.client_state
                    .as_deref()
                    .ok_or(VerifyError::MissingSignature)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = states.first() else {
            return Err(VerifyError::MissingSignature);
        };
        let verified = self
            .secrets
            .verify_with(request.now(), |s| token_eq(first.as_bytes(), s))?;
        // One batch, one subscription's secret: every notification carries the same one.
        if states
            .iter()
            .all(|state| token_eq(state.as_bytes(), first.as_bytes()))
        {
            Ok(verified)
        } else {
            Err(VerifyError::InvalidSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::run;
    use super::*;

    #[test]
    fn every_notification_carries_the_client_state() {
        let v = GraphClientState::new(SecretSet::new("new-state").with("secretClientValue"));
        let h = http::HeaderMap::new();
        let ok = br#"{"value":[{"subscriptionId":"a","clientState":"secretClientValue","changeType":"created"},{"clientState":"secretClientValue"}]}"#;
        assert_eq!(run(&v, ok, &h, 0).unwrap().secret_index(), 1);
        let wrong = br#"{"value":[{"clientState":"guess"}]}"#;
        assert_eq!(run(&v, wrong, &h, 0), Err(VerifyError::InvalidSignature));
        let mixed = br#"{"value":[{"clientState":"secretClientValue"},{"clientState":"guess"}]}"#;
        assert_eq!(run(&v, mixed, &h, 0), Err(VerifyError::InvalidSignature));
        for missing in [
            &br#"{"value":[{"subscriptionId":"a"}]}"#[..],
            br#"{"value":[]}"#,
            b"{}",
            b"",
        ] {
            assert_eq!(run(&v, missing, &h, 0), Err(VerifyError::MissingSignature));
        }
    }
}
