//! Key layout: every key of one event shares a Redis Cluster hash tag.

use std::borrow::Cow;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Longest idempotency key used verbatim inside the hash tag; longer ones are hashed.
const MAX_VERBATIM: usize = 200;
/// Marks a hashed key. Keys that already start with it are hashed too, so a verbatim key can
/// never collide with a hashed one.
const HASHED: &str = "sha256:";

/// The keys of one idempotency key, built on demand (each call needs one or two of them).
pub(crate) struct Keys<'a> {
    prefix: &'a str,
    tag: Cow<'a, str>,
}

impl<'a> Keys<'a> {
    pub(crate) fn new(prefix: &'a str, key: &'a str) -> Self {
        Self {
            prefix,
            tag: tag(key),
        }
    }

    fn with(&self, kind: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + kind.len() + self.tag.len() + 4);
        for part in [self.prefix, ":", kind, ":{", &self.tag, "}"] {
            out.push_str(part);
        }
        out
    }

    /// The lock: the owner's fencing token.
    pub(crate) fn processing(&self) -> String {
        self.with("processing")
    }

    /// The processed marker.
    pub(crate) fn processed(&self) -> String {
        self.with("processed")
    }

    /// The failure counter (a hash).
    pub(crate) fn failures(&self) -> String {
        self.with("failures")
    }
}

/// What goes between the braces: the key itself, or `sha256:<hex>` when the key is empty, too
/// long, contains a brace (which would end the tag early) or looks hashed already.
pub(crate) fn tag(key: &str) -> Cow<'_, str> {
    if key.is_empty()
        || key.len() > MAX_VERBATIM
        || key.contains(['{', '}'])
        || key.starts_with(HASHED)
    {
        Cow::Owned(format!("{HASHED}{:x}", Sha256::digest(key.as_bytes())))
    } else {
        Cow::Borrowed(key)
    }
}

/// A TTL as Redis `PX` milliseconds: at least 1 (Redis rejects 0) and far below the overflow
/// Redis checks for.
pub(crate) fn millis(ttl: Duration) -> u64 {
    const MAX: u64 = 1 << 46; // about 2,200 years
    u64::try_from(ttl.as_millis()).unwrap_or(MAX).clamp(1, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_uses_one_hash_tag() {
        let keys = Keys::new("firefly:webhooks", "stripe:evt_1");
        assert_eq!(
            keys.processing(),
            "firefly:webhooks:processing:{stripe:evt_1}"
        );
        assert_eq!(
            keys.processed(),
            "firefly:webhooks:processed:{stripe:evt_1}"
        );
        assert_eq!(keys.failures(), "firefly:webhooks:failures:{stripe:evt_1}");
    }

    #[test]
    fn awkward_keys_are_hashed() {
        let long = "x".repeat(MAX_VERBATIM + 1);
        let hashed_looking = format!("{HASHED}{:x}", Sha256::digest(b"a{b}"));
        for key in ["", "a{b}", "}", "{", long.as_str(), hashed_looking.as_str()] {
            let t = tag(key);
            assert!(t.starts_with(HASHED), "{key}");
            assert_eq!(t.len(), HASHED.len() + 64);
            assert!(!t.contains(['{', '}']));
        }
        // Distinct inputs stay distinct.
        assert_ne!(tag("a{b}"), tag(&hashed_looking));
        assert_eq!(tag("x".repeat(MAX_VERBATIM).as_str()).len(), MAX_VERBATIM);
    }

    #[test]
    fn ttl_millis_are_clamped() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_secs(300)), 300_000);
        assert_eq!(millis(Duration::MAX), 1 << 46);
    }
}
