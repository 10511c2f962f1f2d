//! [`HeldEvents`]: how many records a subscriber holds in memory, now and at most.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use firefly_webhook::metric::{CONSUMER_HELD_EVENTS, TRANSPORT};

use crate::offset;

/// The records a [`KafkaSubscriber`](crate::KafkaSubscriber) holds in memory: taken from
/// librdkafka and not settled yet, whether a worker is processing them, a retry is waiting
/// out its delay, or they wait to be pulled again.
///
/// Under a [`Worker`](firefly_webhook::Worker) this is at most the worker's concurrency,
/// whatever the failure rate: a retry waits in the slot of the delivery it retries. Get one
/// with [`KafkaSubscriber::held`](crate::KafkaSubscriber::held) before handing the subscriber
/// to a worker; clones share the counts. The process-wide total is also the gauge
/// [`CONSUMER_HELD_EVENTS`] (`transport="kafka"`).
#[derive(Clone)]
pub struct HeldEvents {
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl HeldEvents {
    pub(crate) fn new() -> Self {
        Self {
            counts: Arc::default(),
        }
    }

    /// Records held right now.
    pub fn current(&self) -> usize {
        self.counts.current.load(Ordering::Acquire)
    }

    /// The most records held at once since the subscriber was created.
    pub fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::Acquire)
    }

    /// Counts one more record until the returned guard is dropped.
    pub(crate) fn hold(&self) -> Hold {
        let now = self.counts.current.fetch_add(1, Ordering::AcqRel) + 1;
        self.counts.peak.fetch_max(now, Ordering::AcqRel);
        metrics::gauge!(CONSUMER_HELD_EVENTS, TRANSPORT => offset::TRANSPORT).increment(1.0);
        Hold {
            counts: Arc::clone(&self.counts),
        }
    }
}

impl fmt::Debug for HeldEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldEvents")
            .field("current", &self.current())
            .field("peak", &self.peak())
            .finish()
    }
}

/// One held record; dropping it releases the count.
pub(crate) struct Hold {
    counts: Arc<Counts>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.counts.current.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(CONSUMER_HELD_EVENTS, TRANSPORT => offset::TRANSPORT).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_is_held_and_remembers_the_peak() {
        let held = HeldEvents::new();
        let a = held.hold();
        let b = held.hold();
        assert_eq!((held.current(), held.peak()), (2, 2));
        drop(a);
        let shared = held.clone();
        assert_eq!((shared.current(), shared.peak()), (1, 2));
        drop(b);
        let c = held.hold();
        assert_eq!((held.current(), held.peak()), (1, 2));
        drop(c);
        assert_eq!(held.current(), 0);
    }
}
