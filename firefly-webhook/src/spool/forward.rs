//! The forwarder: drains the spool into the broker, oldest first, and releases an entry only
//! once the broker confirmed it.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{FutureExt as _, StreamExt as _};

use super::SPOOL;
use super::format;
use super::index::{Cursor, Slot};
use super::log::{Log, Shared};
use crate::dead_letter::{DeadLetter, FailureCategory};
use crate::metric::{
    LOG, SPOOL_DEAD_LETTERED_TOTAL, SPOOL_FORWARD_FAILURES_TOTAL, SPOOL_FORWARDED_TOTAL,
};
use crate::publish::{PublishError, Publisher};

/// How the forwarder works; from [`SpoolConfig`](super::SpoolConfig).
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) timeout: Duration,
    pub(super) concurrency: usize,
    pub(super) window: usize,
    pub(super) backoff: Duration,
    pub(super) max_backoff: Duration,
}

/// Forwards until the log is gone. Holds the log only while a batch is in flight, so that
/// dropping the spool closes it.
pub(super) async fn run<P: Publisher>(
    log: Weak<Log>,
    shared: Arc<Shared>,
    inner: Arc<P>,
    settings: Settings,
) {
    let mut cursor = Cursor::After(None);
    let mut failures: u32 = 0;
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(log) = log.upgrade() else {
            return;
        };
        if log.failed() {
            // Releases cannot be written any more: what is left is forwarded after a restart.
            return;
        }
        // After a failure, one event per destination probes the broker.
        let window = if failures > 0 { 1 } else { settings.window };
        let batch = log.lock().take(window, settings.concurrency, &mut cursor);
        if batch.is_empty() {
            drop(log);
            notified.await;
            continue;
        }
        // A loop, not a closure: the futures borrow the log and the publisher.
        let mut forwards = Vec::with_capacity(batch.len());
        for (destination, slots) in batch {
            forwards.push(forward(&log, &*inner, destination, slots, settings));
        }
        let results = join_all(forwards).await;
        drop(log);
        if results.iter().any(|failed| *failed) {
            if failures == 0 {
                tracing::warn!("the broker does not take spooled events; holding them");
            }
            failures = failures.saturating_add(1);
            tokio::time::sleep(backoff(settings, failures)).await;
        } else if failures > 0 {
            tracing::info!("the broker takes spooled events again");
            failures = 0;
        }
    }
}

/// `backoff · 2^(failures - 1)`, at most `max_backoff`, less up to a quarter at random so
/// that several gateways do not probe in step.
fn backoff(settings: Settings, failures: u32) -> Duration {
    let exp = settings
        .backoff
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(settings.max_backoff);
    exp.mul_f64(1.0 - fastrand::f64() / 4.0)
}

/// Publishes one destination's entries in order, all at once (at most the window); releases
/// the confirmed ones, dead-letters the rejected ones and gives the others back to the
/// front of the queue. Whether any failed.
async fn forward<P: Publisher + ?Sized>(
    log: &Log,
    inner: &P,
    destination: String,
    slots: Vec<Slot>,
    settings: Settings,
) -> bool {
    let locators: Vec<_> = slots.iter().map(Slot::locator).collect();
    let bytes = match log.read(locators).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%destination, %error, "could not read spooled events back");
            metrics::counter!(SPOOL_FORWARD_FAILURES_TOTAL, LOG => SPOOL)
                .increment(slots.len() as u64);
            log.requeue_all(&destination, slots);
            return true;
        }
    };
    let mut released = Vec::new();
    let mut items = Vec::with_capacity(slots.len());
    for (slot, bytes) in slots.into_iter().zip(bytes) {
        match format::decode_event(&bytes) {
            Ok(event) => items.push((slot, event)),
            Err(error) => {
                // Its checksum matched, so this version did not write it.
                tracing::error!(%destination, seq = slot.seq, %error, "dropped an unreadable spooled event");
                metrics::counter!(SPOOL_FORWARD_FAILURES_TOTAL, LOG => SPOOL).increment(1);
                released.push((destination.clone(), slot));
            }
        }
    }
    let mut publishes = Vec::with_capacity(items.len());
    for (_, event) in &items {
        // A publisher that panics must not end the forwarder: that event fails like any other.
        let publish = AssertUnwindSafe(inner.publish(&destination, event.clone())).catch_unwind();
        publishes.push(tokio::time::timeout(settings.timeout, publish));
    }
    let outcomes: Vec<Result<(), PublishError>> = futures_util::stream::iter(publishes)
        .buffered(settings.window.max(1))
        .map(|outcome| match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_panic)) => Err(PublishError::unavailable("the publisher panicked")),
            Err(_elapsed) => Err(PublishError::TimedOut(settings.timeout)),
        })
        .collect()
        .await;

    let mut retry = Vec::new();
    let mut rejected = Vec::new();
    let mut forwarded = 0_u64;
    let mut last_error = None;
    for ((slot, event), outcome) in items.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => {
                forwarded += 1;
                released.push((destination.clone(), slot));
            }
            Err(PublishError::Rejected(error)) => rejected.push((slot, event, error)),
            Err(error) => {
                last_error = Some(error);
                retry.push(slot);
            }
        }
    }
    log.release(released);
    metrics::counter!(SPOOL_FORWARDED_TOTAL, LOG => SPOOL).increment(forwarded);
    if let Some(error) = last_error {
        tracing::debug!(%destination, %error, failed = retry.len(), "forwarding failed; will retry");
        metrics::counter!(SPOOL_FORWARD_FAILURES_TOTAL, LOG => SPOOL).increment(retry.len() as u64);
    }
    for (slot, event, error) in rejected {
        tracing::error!(
            %destination,
            event_id = %event.id,
            error = %error,
            "the broker rejected a spooled event; it goes to the spool's dead letters"
        );
        metrics::counter!(SPOOL_FORWARD_FAILURES_TOTAL, LOG => SPOOL).increment(1);
        metrics::counter!(SPOOL_DEAD_LETTERED_TOTAL, LOG => SPOOL).increment(1);
        let failure = DeadLetter::new(
            error_chain(&*error),
            FailureCategory::Unrecoverable,
            slot.attempt,
            "rejected",
            destination.clone(),
        );
        if let Err(error) = log
            .dead_letter(destination.clone(), slot, &failure, &event)
            .await
        {
            tracing::error!(%destination, %error, "could not write a spool dead letter");
        }
    }
    let failed = !retry.is_empty();
    log.requeue_all(&destination, retry);
    failed
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let settings = Settings {
            timeout: Duration::from_secs(1),
            concurrency: 1,
            window: 1,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        };
        let first = backoff(settings, 1);
        assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(75));
        let late = backoff(settings, 60);
        assert!(late <= Duration::from_secs(30) && late >= Duration::from_millis(22_500));
    }
}
