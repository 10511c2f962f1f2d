//! [`RetryPolicy`]: exponential backoff with jitter, as a `tower::retry::Policy`.

use std::time::Duration;

use crate::metric;
use crate::process::{Job, Outcome, ProcessError, RetryDecision};

/// Retries transient failures with exponential backoff and full jitter.
///
/// Short delays are waited out in process (the worker slot stays busy); a delay longer than
/// [`in_process_limit`](Self::in_process_limit) goes back to the transport as a delayed
/// redelivery instead, so slow retries never hold a slot. Permanent errors and deferred
/// attempts are never retried here. A processor's retry-after hint replaces the backoff.
///
/// Defaults: 3 attempts, 1 s doubling to at most 30 s, ±20 % jitter, in-process up to 2 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
    in_process_limit: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            in_process_limit: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts in total, the first included (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Delay before the second attempt, and the cap for later ones.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max = max.max(initial);
        self
    }

    /// Growth factor per attempt (default 2).
    #[must_use]
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m.max(1.0);
        self
    }

    /// Relative jitter in `[0, 1]` (default 0.2: ±20 %).
    #[must_use]
    pub fn jitter(mut self, j: f64) -> Self {
        self.jitter = j.clamp(0.0, 1.0);
        self
    }

    /// Longest delay waited out in process; longer ones go back to the transport.
    #[must_use]
    pub fn in_process_limit(mut self, limit: Duration) -> Self {
        self.in_process_limit = limit;
        self
    }

    /// The configured attempt limit.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay after failed attempt `attempt` (1-based), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let capped = base.min(self.max.as_secs_f64());
        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        Duration::from_secs_f64((capped * factor).max(0.0))
    }

    /// What to do after `err` on `attempt`: `None` = give up (dead-letter), else the delay.
    pub(crate) fn next_delay(&self, attempt: u32, err: &ProcessError) -> Option<Duration> {
        if err.is_permanent() || attempt >= self.max_attempts {
            return None;
        }
        Some(
            err.retry_after_hint()
                .unwrap_or_else(|| self.delay(attempt)),
        )
    }
}

impl tower::retry::Policy<Job, Outcome, ProcessError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Job,
        result: &mut Result<Outcome, ProcessError>,
    ) -> Option<Self::Future> {
        let Err(err) = result else { return None };
        if err.is_deferred() {
            return None;
        }
        let attempt = req.ctx.attempt;
        let delay = self.next_delay(attempt, err);
        match delay {
            Some(d) if d <= self.in_process_limit => {
                metrics::counter!(metric::RETRIED_TOTAL, metric::PROVIDER => req.event.provider.clone())
                    .increment(1);
                req.ctx.attempt = attempt + 1;
                Some(tokio::time::sleep(d))
            }
            _ => {
                err.record_decision(RetryDecision {
                    attempt,
                    retry_in: delay,
                });
                None
            }
        }
    }

    fn clone_request(&mut self, req: &Job) -> Option<Job> {
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy::new().jitter(0.0);
        assert_eq!(p.delay(1), Duration::from_secs(1));
        assert_eq!(p.delay(2), Duration::from_secs(2));
        assert_eq!(p.delay(3), Duration::from_secs(4));
        assert_eq!(p.delay(10), Duration::from_secs(30));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let p = RetryPolicy::new().jitter(0.2);
        for _ in 0..1000 {
            let d = p.delay(1).as_secs_f64();
            assert!((0.8..=1.2).contains(&d), "{d}");
        }
    }

    #[test]
    fn gives_up_on_permanent_and_max_attempts() {
        let p = RetryPolicy::new();
        assert!(p.next_delay(1, &ProcessError::permanent("x")).is_none());
        assert!(p.next_delay(3, &ProcessError::transient("x")).is_none());
        assert!(p.next_delay(2, &ProcessError::transient("x")).is_some());
        let hinted = ProcessError::retry_after("429", Duration::from_secs(7));
        assert_eq!(p.next_delay(1, &hinted), Some(Duration::from_secs(7)));
    }
}
