//! Consumer callbacks: rebalances, commit results, lag statistics.

use std::sync::Arc;

use firefly_webhook::metric;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;

use super::tracker::Tracker;
use crate::offset::TRANSPORT;

/// The gauge with each assigned partition's consumer lag (messages not yet committed):
/// [`metric::CONSUMER_LAG`] (`firefly_consumer_lag`), labels `transport` (`kafka`), `group`,
/// `destination` (the topic) and `partition`. Kept as an alias of the core's name, which every
/// transport shares.
pub const LAG_GAUGE: &str = metric::CONSUMER_LAG;

pub(crate) struct SubscriberContext {
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) group: String,
}

impl SubscriberContext {
    /// The [`metric::CONSUMER_LAG`] gauge of one partition.
    fn lag(&self, topic: &str, partition: i32) -> metrics::Gauge {
        metrics::gauge!(
            metric::CONSUMER_LAG,
            metric::TRANSPORT => TRANSPORT,
            metric::GROUP => self.group.clone(),
            metric::DESTINATION => topic.to_owned(),
            metric::PARTITION => partition.to_string(),
        )
    }
}

impl ClientContext for SubscriberContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::producer::log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(
            target: "librdkafka",
            error = &error as &dyn std::error::Error,
            reason,
            group = %self.group,
            "kafka consumer error"
        );
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // Partition -1 is librdkafka's internal "unassigned" bucket; lag is -1 when
                // unknown (not assigned to this member).
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                #[allow(clippy::cast_precision_loss)]
                self.lag(topic, *partition).set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for SubscriberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Commit what is finished before another member takes over, then forget the
                // partitions so acks of their in-flight deliveries no longer commit.
                let commit = self.tracker.revoke(tpl);
                if commit.count() > 0
                    && !consumer.assignment_lost()
                    && let Err(err) = consumer.commit(&commit, CommitMode::Sync)
                {
                    tracing::warn!(
                        error = &err as &dyn std::error::Error,
                        group = %self.group,
                        "kafka commit on revocation failed"
                    );
                }
                // The next owner reports these partitions' lag; a stale figure here would be
                // counted twice.
                for element in tpl.elements() {
                    self.lag(element.topic(), element.partition()).set(0.0);
                }
                tracing::info!(group = %self.group, partitions = tpl.count(), "kafka partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                self.tracker.assign(tpl);
                tracing::info!(group = %self.group, partitions = tpl.count(), "kafka partitions assigned");
            }
            Rebalance::Error(err) => {
                tracing::warn!(
                    error = err as &dyn std::error::Error,
                    group = %self.group,
                    "kafka rebalance failed"
                );
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(err) = result {
            tracing::warn!(
                error = &err as &dyn std::error::Error,
                group = %self.group,
                "kafka offset commit failed; will retry"
            );
            self.tracker.commit_failed(offsets);
        }
    }
}
