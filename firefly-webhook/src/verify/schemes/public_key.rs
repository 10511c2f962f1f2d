//! Public keys for the asymmetric schemes: parsed once at construction, with the labels and
//! expiry of the [`SecretSet`] entries they came from, so rotation works as for secrets.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use time::OffsetDateTime;

use crate::verify::{ConfigError, SecretSet, Verified, VerifyError};

/// Parsed public keys, in the order of the set they came from.
#[derive(Clone)]
pub(crate) struct PublicKeys<K> {
    keys: Vec<Entry<K>>,
}

#[derive(Clone)]
struct Entry<K> {
    key: K,
    label: Option<Arc<str>>,
    expires_at: Option<OffsetDateTime>,
}

impl<K> std::fmt::Debug for PublicKeys<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKeys")
            .field("len", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl<K> PublicKeys<K> {
    /// Parses every entry of `set` with `parse`; the first failure names its index.
    pub(crate) fn parse(
        set: &SecretSet,
        parse: impl Fn(&[u8]) -> Result<K, &'static str>,
    ) -> Result<Self, ConfigError> {
        let keys = set
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let key = parse(trim(s.expose_secret()))
                    .map_err(|reason| ConfigError::InvalidSecret { index, reason })?;
                Ok(Entry {
                    key,
                    label: s.label_str().map(Arc::from),
                    expires_at: s.expiry(),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Self { keys })
    }

    /// Tries every key valid at `now` with `accepts` and reports the first that does;
    /// [`VerifyError::InvalidSignature`] when none does.
    pub(crate) fn verify_with(
        &self,
        now: OffsetDateTime,
        mut accepts: impl FnMut(&K) -> bool,
    ) -> Result<Verified, VerifyError> {
        self.keys
            .iter()
            .enumerate()
            .filter(|(_, e)| e.expires_at.is_none_or(|at| now < at))
            .find(|(_, e)| accepts(&e.key))
            .map(|(index, e)| Verified::new(index).with_label_arc(e.label.clone()))
            .ok_or(VerifyError::InvalidSignature)
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// An ed25519 public key written as 64 hex digits (Discord) or base64 of its 32 bytes (Telnyx,
/// Standard Webhooks after `whpk_`).
pub(crate) fn ed25519_key(text: &[u8]) -> Result<ed25519_dalek::VerifyingKey, &'static str> {
    const REASON: &str = "not an ed25519 public key: expected 32 bytes in hex or base64";
    let bytes: [u8; 32] = if text.len() == 64 {
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            let hi = (pair[0] as char).to_digit(16).ok_or(REASON)?;
            let lo = (pair[1] as char).to_digit(16).ok_or(REASON)?;
            // Two hex digits fit a byte.
            #[allow(clippy::cast_possible_truncation)]
            {
                *o = (hi * 16 + lo) as u8;
            }
        }
        out
    } else {
        STANDARD
            .decode(text)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or(REASON)?
    };
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| REASON)
}

/// An ed25519 signature: 64 bytes, hex or base64 as the scheme writes it.
pub(crate) fn ed25519_signature(
    bytes: Option<Vec<u8>>,
) -> Result<ed25519_dalek::Signature, VerifyError> {
    let bytes = bytes.ok_or(VerifyError::MalformedSignature)?;
    let bytes = <[u8; 64]>::try_from(bytes).map_err(|_| VerifyError::MalformedSignature)?;
    Ok(ed25519_dalek::Signature::from_bytes(&bytes))
}

/// Decodes hex (either case) of at most `max` bytes.
pub(crate) fn hex_bytes(text: &str, max: usize) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) || text.len() > max * 2 {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// Decodes standard base64 of at most `max` bytes.
pub(crate) fn base64_bytes(text: &str, max: usize) -> Option<Vec<u8>> {
    if text.len() > max.div_ceil(3) * 4 {
        return None;
    }
    STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Secret;

    #[test]
    fn keys_parse_hex_and_base64_and_name_the_bad_one() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        let hex = crate::verify::schemes::testing::hex(key.as_bytes());
        let b64 = STANDARD.encode(key.as_bytes());
        assert_eq!(ed25519_key(hex.as_bytes()).unwrap(), key);
        assert_eq!(ed25519_key(hex.to_uppercase().as_bytes()).unwrap(), key);
        assert_eq!(ed25519_key(b64.as_bytes()).unwrap(), key);
        for bad in ["", "zz", &"g".repeat(64), "AAAA", &hex[2..]] {
            assert!(ed25519_key(bad.as_bytes()).is_err(), "{bad}");
        }
        let set = SecretSet::new(hex.as_str()).with("nope");
        assert!(matches!(
            PublicKeys::parse(&set, ed25519_key),
            Err(ConfigError::InvalidSecret { index: 1, .. })
        ));
    }

    #[test]
    fn expired_keys_are_skipped_and_labels_reported() {
        let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let set = SecretSet::new("a").with(Secret::new("b").label("old").expires_at(at(10)));
        let keys = PublicKeys::parse(&set, |k| Ok(k.to_vec())).unwrap();
        let v = keys.verify_with(at(9), |k| k == b"b").unwrap();
        assert_eq!((v.secret_index(), v.secret_label()), (1, Some("old")));
        assert_eq!(
            keys.verify_with(at(10), |k| k == b"b"),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn decoders_bound_their_input() {
        assert_eq!(hex_bytes("00ff", 2), Some(vec![0, 255]));
        assert_eq!(hex_bytes("00ff", 1), None);
        assert_eq!(hex_bytes("0", 4), None);
        assert_eq!(hex_bytes("zz", 4), None);
        assert_eq!(base64_bytes("AAE=", 2), Some(vec![0, 1]));
        assert_eq!(base64_bytes(&"A".repeat(200), 64), None);
        assert!(ed25519_signature(Some(vec![0; 63])).is_err());
        assert!(ed25519_signature(None).is_err());
    }
}
