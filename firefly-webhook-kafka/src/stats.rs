//! Producer statistics: the depth of each producer's local queue, summed into one gauge.

use std::sync::atomic::{AtomicU64, Ordering};

use firefly_webhook::metric;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;

use crate::offset::TRANSPORT;
use crate::producer::TracingContext;

/// The context of every durable producer: logs through `tracing` as [`TracingContext`] does,
/// and reports its queue (librdkafka's `msg_cnt`: produced and not yet acknowledged or
/// failed) in [`metric::PRODUCER_QUEUE_DEPTH`] at each statistics interval
/// (`statistics.interval.ms`, [`KafkaConfig::lag_interval`](crate::KafkaConfig::lag_interval)).
///
/// The gauge sums every producer of the process (the publisher's several connections, other
/// brokers): each one adds the change since its own last report, and takes its share back
/// when it is dropped (a producer replaced after a fatal error, a broker dropped).
#[derive(Debug, Default)]
pub(crate) struct ProducerContext {
    reported: AtomicU64,
}

impl ProducerContext {
    fn report(&self, now: u64) {
        let before = self.reported.swap(now, Ordering::AcqRel);
        adjust(before, now);
    }
}

/// Moves the process-wide gauge by `now - before` (by zero too, so that it shows from the
/// first report).
#[allow(clippy::cast_precision_loss)] // counts of queued messages, far below 2^52
fn adjust(before: u64, now: u64) {
    let gauge = metric_gauge();
    if now >= before {
        gauge.increment((now - before) as f64);
    } else {
        gauge.decrement((before - now) as f64);
    }
}

fn metric_gauge() -> metrics::Gauge {
    metrics::gauge!(metric::PRODUCER_QUEUE_DEPTH, metric::TRANSPORT => TRANSPORT)
}

impl ClientContext for ProducerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        TracingContext.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        TracingContext.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.report(statistics.msg_cnt);
    }
}

impl Drop for ProducerContext {
    fn drop(&mut self) {
        adjust(*self.reported.get_mut(), 0);
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;

    /// The gauge's total: a snapshot resets it, and it is only ever moved, so the readings
    /// add up.
    struct Depth {
        snapshotter: Snapshotter,
        total: f64,
    }

    impl Depth {
        fn read(&mut self) -> f64 {
            self.total += self
                .snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .find_map(|(key, _, _, value)| match value {
                    DebugValue::Gauge(v) if key.key().name() == metric::PRODUCER_QUEUE_DEPTH => {
                        Some(v.into_inner())
                    }
                    _ => None,
                })
                .unwrap_or_default();
            self.total
        }
    }

    #[test]
    #[allow(clippy::float_cmp)] // small integers, exactly
    fn producers_add_up_and_give_their_share_back_when_dropped() {
        let recorder = DebuggingRecorder::new();
        let mut depth = Depth {
            snapshotter: recorder.snapshotter(),
            total: 0.0,
        };
        metrics::with_local_recorder(&recorder, || {
            let (a, b) = (ProducerContext::default(), ProducerContext::default());
            a.report(3);
            b.report(4);
            assert_eq!(depth.read(), 7.0);
            a.report(1);
            assert_eq!(depth.read(), 5.0);
            drop(b);
            assert_eq!(depth.read(), 1.0);
            a.report(0);
            assert_eq!(depth.read(), 0.0);
        });
    }
}
