//! Keyed rate limits (GCRA, through `governor`) with bounded key state.

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Idle keys are swept once per this many checks.
pub(super) const SWEEP_EVERY: usize = 1024;

/// Reads tokio's clock, so that a paused test runtime pauses the limits too; outside a runtime
/// it is the system's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// One rate limit, applied to each key separately.
pub(super) struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, DashMapStateStore<K>, TokioClock>,
    per_second: NonZeroU32,
    burst: NonZeroU32,
    checks: AtomicUsize,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    pub(super) fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::dashmap_with_clock(quota, TokioClock),
            per_second,
            burst,
            checks: AtomicUsize::new(0),
        }
    }

    /// Admits one request for `key`, or says how long until one would be admitted.
    pub(super) fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }

    /// Forgets every key whose bucket has refilled completely: its state is that of a key never
    /// seen, so nothing is lost.
    fn sweep(&self) {
        let before = self.limiter.len();
        self.limiter.retain_recent();
        // Give memory back after a burst of keys, without rehashing on every sweep.
        if self.limiter.len() < before / 2 {
            self.limiter.shrink_to_fit();
        }
    }

    /// Keys with state now.
    pub(super) fn keys(&self) -> usize {
        self.limiter.len()
    }
}

impl<K: Hash + Eq + Clone> fmt::Debug for KeyedLimit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimit")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

/// The per-IP key: IPv4 addresses as they are, IPv6 addresses by their /64 (one host usually
/// has a whole /64, so a per-address limit would not limit it).
pub(super) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((v6.to_bits() & !u128::from(u64::MAX)).into()),
        },
    }
}

/// A provider name (at most 64 bytes) held inline: a key that costs no allocation to look up,
/// and a metric label kept across the `String` moving into the event.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ProviderKey {
    len: u8,
    bytes: [u8; ProviderKey::MAX],
}

impl ProviderKey {
    pub(super) const MAX: usize = 64;

    /// `name` must be a checked provider name; longer input is cut to 64 bytes.
    pub(super) fn new(name: &str) -> Self {
        let mut bytes = [0; Self::MAX];
        let len = name.len().min(Self::MAX);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self {
            // len <= 64
            #[allow(clippy::cast_possible_truncation)]
            len: len as u8,
            bytes,
        }
    }

    pub(super) fn as_str(&self) -> &str {
        // Checked provider names are ASCII; a cut inside a character yields "".
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_per_key() {
        let limit = KeyedLimit::new(nz(2), nz(3));
        for _ in 0..3 {
            assert_eq!(limit.check(&"a"), Ok(()));
        }
        let wait = limit.check(&"a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(limit.check(&"b"), Ok(()), "keys are independent");
        tokio::time::advance(wait).await;
        assert_eq!(limit.check(&"a"), Ok(()));
        assert!(limit.check(&"a").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_swept() {
        let limit = KeyedLimit::new(nz(10), nz(1));
        for i in 0..SWEEP_EVERY - 1 {
            let _ = limit.check(&i);
        }
        assert_eq!(limit.keys(), SWEEP_EVERY - 1);
        // Once their buckets have refilled, the next sweep forgets them all.
        tokio::time::advance(Duration::from_secs(1)).await;
        let _ = limit.check(&usize::MAX);
        assert_eq!(limit.keys(), 1);
        // A key that is still limited survives a sweep.
        let busy = usize::MAX - 1;
        let _ = limit.check(&busy);
        for i in 0..SWEEP_EVERY {
            let _ = limit.check(&i);
        }
        assert!(limit.check(&busy).is_err());
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        assert_eq!(ip_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(ip_key(v4), v4);
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(ip_key(mapped), v4);
    }

    #[test]
    fn provider_keys_round_trip() {
        let name = "x".repeat(64);
        assert_eq!(ProviderKey::new(&name).as_str(), name);
        assert_eq!(ProviderKey::new("github").as_str(), "github");
        assert_ne!(ProviderKey::new("github"), ProviderKey::new("gitlab"));
        assert_eq!(format!("{:?}", ProviderKey::new("a")), "\"a\"");
    }
}
