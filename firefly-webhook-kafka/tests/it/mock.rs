//! Fault injection with librdkafka's in-process mock cluster (no broker needed).

use std::time::Duration;

use firefly_webhook::{PublishError, Publisher, WebhookEvent};
use firefly_webhook_kafka::rdkafka::mocking::MockCluster;
use firefly_webhook_kafka::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use firefly_webhook_kafka::{KafkaBroker, KafkaConfig, KafkaPublisher};

use crate::common::{event, unique};

fn publisher(
    cluster: &MockCluster<'_, impl firefly_webhook_kafka::rdkafka::ClientContext>,
) -> KafkaPublisher {
    let mut config = KafkaConfig::from_brokers(cluster.bootstrap_servers());
    // The mock cluster has no CreateTopics: topics are created on the cluster directly.
    config.create_topics = false;
    config.delivery_timeout = Duration::from_secs(2);
    KafkaBroker::new(config).unwrap().publisher()
}

#[tokio::test]
async fn publishes_to_the_mock_cluster() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique("mock");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let publisher = publisher(&cluster);
    publisher.publish(&topic, event("github")).await.unwrap();
    publisher.health().await.unwrap();
}

#[tokio::test]
async fn message_too_large_is_rejected() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique("mock");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let publisher = publisher(&cluster);
    publisher.publish(&topic, event("github")).await.unwrap();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let err = publisher
        .publish(&topic, event("github"))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Rejected(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn persistent_retriable_errors_time_out_as_a_503() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique("mock");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let publisher = publisher(&cluster);
    publisher.publish(&topic, event("github")).await.unwrap();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 500],
    );
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        publisher.publish(&topic, event("github")),
    )
    .await
    .expect("bounded by the delivery timeout")
    .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    publisher.publish(&topic, event("github")).await.unwrap();
}

#[tokio::test]
async fn broker_down_fails_within_the_delivery_timeout_then_recovers() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique("mock");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let publisher = publisher(&cluster);
    publisher.publish(&topic, event("github")).await.unwrap();

    cluster.broker_down(1).unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        publisher.publish(&topic, event("github")),
    )
    .await
    .expect("bounded by the delivery timeout")
    .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");

    cluster.broker_up(1).unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while publisher.publish(&topic, event("github")).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("recovers with the same publisher");
}

#[tokio::test]
async fn a_full_local_queue_answers_overloaded_at_once() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique("mock");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let mut config = KafkaConfig::from_brokers(cluster.bootstrap_servers());
    config.create_topics = false;
    config.max_queued_messages = 1;
    config.delivery_timeout = Duration::from_secs(5);
    let publisher = KafkaBroker::new(config).unwrap().publisher();
    publisher.publish(&topic, event("github")).await.unwrap();

    // With the broker down the first message stays queued; the next one does not fit.
    cluster.broker_down(1).unwrap();
    let first = tokio::spawn({
        let publisher = publisher.clone();
        let topic = topic.clone();
        async move { publisher.publish(&topic, event("github")).await }
    });
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        publisher.publish(&topic, event("github")),
    )
    .await
    .unwrap()
    .unwrap_err();
    // Overloaded, not TimedOut: it did not wait for the delivery timeout.
    assert!(matches!(err, PublishError::Overloaded), "{err:?}");
    cluster.broker_up(1).unwrap();
    let _ = first.await.unwrap();
}

#[tokio::test]
async fn a_message_over_max_message_bytes_is_rejected_at_once_with_a_clear_message() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = unique("mock");
    cluster.create_topic(&topic, 1, 1).unwrap();
    let mut config = KafkaConfig::from_brokers(cluster.bootstrap_servers());
    config.create_topics = false;
    config.max_message_bytes = 16 * 1024;
    // Long, so answering within the bound below means the producer did not send it at all.
    config.delivery_timeout = Duration::from_secs(60);
    let publisher = KafkaBroker::new(config).unwrap().publisher();

    let fits = WebhookEvent::new("github", vec![b'x'; 8 * 1024]);
    publisher.publish(&topic, fits).await.unwrap();
    let too_large = WebhookEvent::new("github", vec![b'x'; 32 * 1024]);
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        publisher.publish(&topic, too_large),
    )
    .await
    .expect("refused before sending, not after the delivery timeout")
    .unwrap_err();
    assert!(matches!(err, PublishError::Rejected(_)), "{err:?}");
    assert!(!err.is_retryable());
    let chain = crate::common::chain(&err);
    assert!(chain.contains("message too large"), "{chain}");
    assert!(chain.contains("max_message_bytes is 16384"), "{chain}");
}
