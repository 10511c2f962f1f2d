use std::time::Duration;

use firefly_webhook::wire::{self, Binding};
use firefly_webhook::{PublishError, Publisher};
use firefly_webhook_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use firefly_webhook_kafka::rdkafka::{ClientConfig, Message};
use firefly_webhook_kafka::{KafkaConfig, KafkaPublisher, KeyStrategy};

use crate::common::{BROKERS, event, header_list, kafka, raw_consumer, raw_next, unique};

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn published_message_is_the_body_with_every_header() {
    let topic = unique("pub");
    let publisher = KafkaPublisher::new(kafka(3)).unwrap();
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
    let publisher = KafkaPublisher::new(config).unwrap();
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
    let publisher = KafkaPublisher::new(config).unwrap();
    let topic = unique("absent");
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        publisher.publish(&topic, event("github")),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, PublishError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err:?}");

    // An existing topic is accepted.
    let creator = KafkaPublisher::new(kafka(1)).unwrap();
    creator.ensure_topic(&topic).await.unwrap();
    publisher.publish(&topic, event("github")).await.unwrap();
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn health_is_ok_with_a_broker() {
    let publisher = KafkaPublisher::new(kafka(1)).unwrap();
    tokio::time::timeout(Duration::from_secs(30), publisher.health())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn health_fails_without_a_broker() {
    let mut config = KafkaConfig::from_brokers("127.0.0.1:1");
    config.health_timeout = Duration::from_millis(500);
    let publisher = KafkaPublisher::new(config).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), publisher.health())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_retryable());
}

#[tokio::test]
async fn invalid_configuration_is_an_error() {
    let config = KafkaConfig {
        compression: "bogus".into(),
        ..KafkaConfig::default()
    };
    assert!(KafkaPublisher::new(config).is_err());
    assert!(KafkaPublisher::new(KafkaConfig::default().set("no.such.property", "1")).is_err());
}
