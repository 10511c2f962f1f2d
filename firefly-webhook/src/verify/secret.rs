//! Signing secrets: several per provider for zero-downtime rotation, wiped on drop, never
//! printed.

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{ConfigError, Verified, VerifyError};

/// One signing secret, optionally labelled and with an expiry.
///
/// The bytes are zeroized when the secret is dropped; `Debug` and `Display` show only the
/// label and expiry.
#[derive(Clone)]
pub struct Secret {
    key: Zeroizing<Vec<u8>>,
    label: Option<Arc<str>>,
    expires_at: Option<OffsetDateTime>,
}

impl Secret {
    /// A secret from its raw bytes (for text secrets, their UTF-8 bytes).
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Zeroizing::new(key.into()),
            label: None,
            expires_at: None,
        }
    }

    /// A name reported in [`Verified::secret_label`] when this secret matches, e.g. `"2026-q3"`.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(Arc::from(label.into()));
        self
    }

    /// Stop accepting this secret at `at` (judged at the event's reference time, see
    /// [`Verifiers`](super::Verifiers)).
    #[must_use]
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The label, if any.
    pub fn label_str(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The expiry, if any.
    pub fn expiry(&self) -> Option<OffsetDateTime> {
        self.expires_at
    }

    /// Whether the secret is still valid at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }

    /// The secret bytes, for custom [`SignatureVerifier`](super::SignatureVerifier)s. Don't log
    /// them.
    pub fn expose_secret(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("key", &"[redacted]")
            .field("label", &self.label)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(label) => write!(f, "[redacted secret `{label}`]"),
            None => f.write_str("[redacted secret]"),
        }
    }
}

impl From<&str> for Secret {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

impl From<String> for Secret {
    fn from(key: String) -> Self {
        Self::new(key)
    }
}

impl From<&[u8]> for Secret {
    fn from(key: &[u8]) -> Self {
        Self::new(key)
    }
}

impl From<Vec<u8>> for Secret {
    fn from(key: Vec<u8>) -> Self {
        Self::new(key)
    }
}

/// The secrets one provider may sign with, tried in order.
///
/// Rotate without downtime by adding the new secret first and giving the old one an expiry:
/// both verify until then.
///
/// ```
/// use firefly_webhook::verify::{Secret, SecretSet};
/// use time::macros::datetime;
///
/// let secrets = SecretSet::new(Secret::new("new-secret").label("2026-12"))
///     .with(Secret::new("old-secret").label("2026-06").expires_at(datetime!(2026-12-31 0:00 UTC)));
/// assert_eq!(secrets.len(), 2);
/// assert!(!format!("{secrets:?}").contains("secret\""));
/// ```
#[derive(Clone, Default)]
pub struct SecretSet {
    secrets: Vec<Secret>,
}

impl SecretSet {
    /// A set of one secret.
    pub fn new(secret: impl Into<Secret>) -> Self {
        Self {
            secrets: vec![secret.into()],
        }
    }

    /// Adds another secret, tried after the ones before it.
    #[must_use]
    pub fn with(mut self, secret: impl Into<Secret>) -> Self {
        self.secrets.push(secret.into());
        self
    }

    /// Number of secrets, active or not.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether there are no secrets (such a set verifies nothing).
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// All secrets in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Secret> {
        self.secrets.iter()
    }

    /// The secrets valid at `now`, with their index in the set.
    pub fn active(&self, now: OffsetDateTime) -> impl Iterator<Item = (usize, &Secret)> {
        self.secrets
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.is_active(now))
    }

    /// Tries every secret valid at `now` with `matches` (which must compare in constant time)
    /// and reports the first that matches; [`VerifyError::InvalidSignature`] when none does.
    pub fn verify_with(
        &self,
        now: OffsetDateTime,
        mut matches: impl FnMut(&[u8]) -> bool,
    ) -> Result<Verified, VerifyError> {
        self.active(now)
            .find(|(_, secret)| matches(secret.expose_secret()))
            .map(|(index, secret)| Verified::new(index).with_label_arc(secret.label.clone()))
            .ok_or(VerifyError::InvalidSignature)
    }

    /// The same set with every key transformed (e.g. base64-decoded), keeping labels and expiry.
    pub(crate) fn try_map_keys(
        &self,
        f: impl Fn(&[u8]) -> Result<Vec<u8>, &'static str>,
    ) -> Result<Self, ConfigError> {
        let secrets = self
            .secrets
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let key =
                    f(&s.key).map_err(|reason| ConfigError::InvalidSecret { index, reason })?;
                Ok(Secret {
                    key: Zeroizing::new(key),
                    label: s.label.clone(),
                    expires_at: s.expires_at,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Self { secrets })
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSet")
            .field("secrets", &self.secrets)
            .finish()
    }
}

impl fmt::Display for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} redacted secret(s)", self.secrets.len())
    }
}

impl<S: Into<Secret>> FromIterator<S> for SecretSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self {
            secrets: iter.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Secret> for SecretSet {
    fn from(secret: Secret) -> Self {
        Self::new(secret)
    }
}

impl From<&str> for SecretSet {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

impl From<String> for SecretSet {
    fn from(key: String) -> Self {
        Self::new(key)
    }
}

impl<'a> IntoIterator for &'a SecretSet {
    type Item = &'a Secret;
    type IntoIter = std::slice::Iter<'a, Secret>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn debug_and_display_never_show_the_key() {
        let set = SecretSet::new(Secret::new("hunter2-very-secret").label("primary"))
            .with("another-s3cret");
        for text in [
            format!("{set:?}"),
            format!("{set}"),
            format!("{:?}", set.iter().next().unwrap()),
            format!("{}", set.iter().next().unwrap()),
            format!("{set:#?}"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        assert!(format!("{set:?}").contains("primary"));
    }

    #[test]
    fn expired_secrets_are_skipped() {
        let t = datetime!(2026-06-01 0:00 UTC);
        let set = SecretSet::new("new").with(Secret::new("old").label("old").expires_at(t));
        let before = t - time::Duration::SECOND;
        let v = set.verify_with(before, |k| k == b"old").unwrap();
        assert_eq!(v.secret_index(), 1);
        assert_eq!(v.secret_label(), Some("old"));
        assert_eq!(
            set.verify_with(t, |k| k == b"old"),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            set.verify_with(t, |k| k == b"new").unwrap().secret_index(),
            0
        );
    }

    #[test]
    fn map_keys_reports_the_failing_index() {
        let set: SecretSet = ["ok", "bad"].into_iter().collect();
        let err = set
            .try_map_keys(|k| {
                if k == b"bad" {
                    Err("nope")
                } else {
                    Ok(k.to_vec())
                }
            })
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::InvalidSecret {
                index: 1,
                reason: "nope"
            }
        );
    }
}
