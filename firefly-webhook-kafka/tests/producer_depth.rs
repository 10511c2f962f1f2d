//! The producer queue depth gauge, on librdkafka's in-process mock cluster (no broker needed).
//!
//! A binary of its own: the gauge sums every producer of the process, and the recorder is
//! process-wide (the statistics arrive on librdkafka's threads), so no other test may publish
//! meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use firefly_webhook::{Publisher, WebhookEvent, metric};
use firefly_webhook_kafka::rdkafka::mocking::MockCluster;
use firefly_webhook_kafka::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use firefly_webhook_kafka::{KafkaBroker, KafkaConfig};

#[path = "../../firefly-webhook/tests/support/recorded.rs"]
mod recorded;

fn depth() -> Option<f64> {
    recorded::Recorded::global().gauge(
        metric::PRODUCER_QUEUE_DEPTH,
        &[(metric::TRANSPORT, "kafka")],
    )
}

/// Waits (boundedly) until the gauge reads `wanted`.
async fn until(wanted: f64) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while depth() != Some(wanted) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("depth {:?}, never {wanted}", depth()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::float_cmp)] // small integers, exactly
async fn the_producer_queue_fills_while_the_cluster_refuses_and_drains_when_it_accepts() {
    const STUCK: u8 = 6;
    recorded::Recorded::global();
    let cluster = MockCluster::new(1).unwrap();
    let topic = "depth";
    cluster.create_topic(topic, 1, 1).unwrap();
    let mut config = KafkaConfig::from_brokers(cluster.bootstrap_servers());
    // The mock cluster has no CreateTopics: the topic was created on the cluster directly.
    config.create_topics = false;
    config.lag_interval = Duration::from_millis(100);
    config.producers = 2;
    // Stuck records must wait, not fail, until the cluster accepts them again.
    config.delivery_timeout = Duration::from_secs(300);
    let publisher = KafkaBroker::new(config).unwrap().publisher();
    publisher
        .publish(topic, WebhookEvent::new("github", "warm-up"))
        .await
        .unwrap();
    until(0.0).await;

    // Every produce request fails with a retriable error: the records wait in the producers.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
    );
    let mut sends = Vec::new();
    for i in 0..STUCK {
        let publisher = publisher.clone();
        sends.push(tokio::spawn(async move {
            publisher
                .publish(topic, WebhookEvent::new("github", format!("stuck {i}")))
                .await
        }));
    }
    until(f64::from(STUCK)).await;

    // The cluster accepts again: every record is acknowledged and the queue drains.
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    for send in sends {
        send.await.unwrap().unwrap();
    }
    until(0.0).await;
}
