//! Where verifiers get "now" from: the system clock, or a clock a test controls.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

/// A source of the current time, for timestamp tolerances and secret expiry.
///
/// Implemented by [`SystemClock`], [`ManualClock`] and every `Fn() -> OffsetDateTime`.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

impl<F> Clock for F
where
    F: Fn() -> OffsetDateTime + Send + Sync + 'static,
{
    fn now(&self) -> OffsetDateTime {
        self()
    }
}

/// The operating system's wall clock (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stands still until it is moved; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use firefly_webhook::verify::{Clock, ManualClock};
///
/// let clock = ManualClock::at_unix(1_700_000_000);
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(clock.now().unix_timestamp(), 1_700_000_010);
/// ```
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<OffsetDateTime>>,
}

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: OffsetDateTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// A clock showing the given Unix time in seconds (clamped to what `time` can represent).
    pub fn at_unix(seconds: i64) -> Self {
        Self::new(
            OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: OffsetDateTime) {
        *self.lock() = now;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now = now.saturating_add(time::Duration::try_from(by).unwrap_or(time::Duration::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffsetDateTime> {
        // A plain value behind the lock cannot be left half-written.
        self.now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.lock()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_between_clones() {
        let a = ManualClock::at_unix(100);
        let b = a.clone();
        a.advance(Duration::from_secs(5));
        assert_eq!(b.now().unix_timestamp(), 105);
        b.set(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(a.now(), OffsetDateTime::UNIX_EPOCH);
    }

    #[test]
    fn closures_are_clocks() {
        let clock = || OffsetDateTime::UNIX_EPOCH;
        assert_eq!(Clock::now(&clock), OffsetDateTime::UNIX_EPOCH);
    }
}
