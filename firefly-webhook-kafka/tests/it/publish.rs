use std::time::Duration;

use firefly_webhook::wire::{self, Binding};
use firefly_webhook::{PublishError, Publisher};
use firefly_webhook_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use firefly_webhook_kafka::rdkafka::{ClientConfig, Message};
use firefly_webhook_kafka::{Compression, Error, KafkaBroker, KafkaConfig, KeyStrategy};

use crate::common::{
    BROKERS, chain, event, header_list, kafka, publisher, raw_consumer, raw_next, unique,
};

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn published_message_is_the_body_with_every_header() {
    let topic = unique("pub");
    let publisher = publisher(3);
    let event = event("github");
    publisher.publish(&topic, event.clone()).await.unwrap();

    let message = raw_next(&raw_consumer(&topic)).await;
    assert_eq!(
        message.payload().unwrap(),
        &event.body[..],
        "body bytes differ"
    );
    assert!(message.key().is_some(), "default strategy sets a key");

    let headers = header_list(&message);
    let expected: Vec<(String, Vec<u8>)> = wire::encode(&event, Binding::KAFKA)
        .into_iter()
        .map(|(k, v)| (k, v.to_vec()))
        .collect();
    assert_eq!(headers, expected, "all headers, in order");
    let multi: Vec<&[u8]> = headers
        .iter()
        .filter(|(k, _)| k == "http_x-multi")
        .map(|(_, v)| v.as_slice())
        .collect();
    assert_eq!(multi, [b"one".as_slice(), b"two"]);
    let id = headers.iter().find(|(k, _)| k == "ce_id").unwrap();
    assert_eq!(id.1, event.id.to_string().as_bytes());
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn key_strategy_and_topic_creation() {
    let topic = unique("key");
    let mut config = kafka(3);
    config.key = KeyStrategy::Provider;
    let publisher = KafkaBroker::new(config).unwrap().publisher();
    publisher.publish(&topic, event("github")).await.unwrap();
    let message = raw_next(&raw_consumer(&topic)).await;
    assert_eq!(message.key(), Some(b"github".as_slice()));

    let name = topic.clone();
    let partitions = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", BROKERS)
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(&name), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0].partitions().len()
    })
    .await
    .unwrap();
    assert_eq!(partitions, 3, "created with the configured partitions");
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn missing_topic_is_refused_when_creation_is_off() {
    let mut config = kafka(1);
    config.create_topics = false;
    let publisher = KafkaBroker::new(config).unwrap().publisher();
    let topic = unique("absent");
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        publisher.publish(&topic, event("github")),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, PublishError::Unavailable(_)), "{err:?}");
    assert!(chain(&err).contains("does not exist"), "{err:?}");

    // An existing topic is accepted.
    let creator = crate::common::publisher(1);
    creator.ensure_topic(&topic).await.unwrap();
    publisher.publish(&topic, event("github")).await.unwrap();
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn health_is_ok_with_a_broker() {
    let publisher = publisher(1);
    tokio::time::timeout(Duration::from_secs(30), publisher.health())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn health_fails_without_a_broker() {
    let mut config = KafkaConfig::from_brokers("127.0.0.1:1");
    config.health_timeout = Duration::from_millis(500);
    let publisher = KafkaBroker::new(config).unwrap().publisher();
    let err = tokio::time::timeout(Duration::from_secs(30), publisher.health())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_retryable());
}

#[tokio::test]
async fn invalid_configuration_is_an_error() {
    assert!("bogus".parse::<Compression>().is_err());
    let bogus = KafkaBroker::new(KafkaConfig::default().set("compression.type", "bogus"));
    assert!(matches!(bogus, Err(Error::Client(_))), "{bogus:?}");
    let unknown = KafkaBroker::new(KafkaConfig::default().set("no.such.property", "1"));
    assert!(matches!(unknown, Err(Error::Client(_))), "{unknown:?}");
    let mut config = KafkaConfig::default();
    config.partitions = 0;
    assert!(matches!(KafkaBroker::new(config), Err(Error::Config(_))));
}

/// Deterministic, incompressible bytes (compression must not hide the size).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn a_body_at_the_gateway_limit_fits_with_the_defaults_and_a_larger_one_is_rejected() {
    let topic = unique("big");
    let publisher = publisher(1);
    // The gateway's default body limit, 1 MiB, with its headers.
    let mut big = event("github");
    big.body = noise(1024 * 1024).into();
    publisher.publish(&topic, big.clone()).await.unwrap();
    let message = raw_next(&raw_consumer(&topic)).await;
    assert_eq!(message.payload().unwrap(), &big.body[..]);

    big.body = noise(KafkaConfig::DEFAULT_MAX_MESSAGE_BYTES).into();
    let err = publisher.publish(&topic, big).await.unwrap_err();
    assert!(matches!(err, PublishError::Rejected(_)), "{err:?}");
    assert!(chain(&err).contains("max_message_bytes"), "{err:?}");
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn topics_are_created_with_min_insync_replicas() {
    // Tansu has no DescribeConfigs to read the topic's configuration back: this checks that
    // the broker accepts the creation request with it and the topic takes messages.
    let mut config = kafka(2);
    config.min_insync_replicas = Some(1);
    let publisher = KafkaBroker::connect(config).await.unwrap().publisher();
    let topic = unique("isr");
    publisher.ensure_topic(&topic).await.unwrap();
    publisher.publish(&topic, event("github")).await.unwrap();

    let mut bad = kafka(1);
    bad.min_insync_replicas = Some(2);
    let err = KafkaBroker::new(bad).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("exceeds replication"), "{err}");
}

#[cfg(not(feature = "ssl"))]
#[test]
fn tls_needs_the_ssl_feature() {
    let mut config = KafkaConfig::default();
    config.security_protocol = firefly_webhook_kafka::SecurityProtocol::Ssl;
    let err = KafkaBroker::new(config).unwrap_err();
    assert!(matches!(err, Error::Client(_)), "{err:?}");
}
