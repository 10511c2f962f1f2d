use std::collections::HashMap;
use std::time::Duration;

use firefly_webhook::http::{HeaderMap, HeaderValue};
use firefly_webhook::{Delivery, Subscriber, WebhookEvent};
use firefly_webhook_kafka::rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use firefly_webhook_kafka::rdkafka::message::{Headers, Message, OwnedMessage};
use firefly_webhook_kafka::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use firefly_webhook_kafka::{KafkaConfig, KafkaSubscriber, SubscriberConfig};

pub const BROKERS: &str = "127.0.0.1:9092";

/// A first assignment takes about half of session.timeout.ms; leave room on a busy machine.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub fn kafka(partitions: i32) -> KafkaConfig {
    let mut config = KafkaConfig::from_brokers(BROKERS);
    config.partitions = partitions;
    config
}

pub fn subscriber(group: &str, topic: &str) -> KafkaSubscriber {
    KafkaSubscriber::new(&kafka(1), subscriber_config(group, topic)).unwrap()
}

pub fn subscriber_config(group: &str, topic: &str) -> SubscriberConfig {
    let mut config = SubscriberConfig::new(group, [topic]);
    config.session_timeout = Duration::from_secs(6);
    config.commit_interval = Duration::from_millis(100);
    config
}

/// A webhook with a binary body and a repeated header.
pub fn event(provider: &str) -> WebhookEvent {
    let mut headers = HeaderMap::new();
    headers.append(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.append("x-multi", HeaderValue::from_static("one"));
    headers.append("x-multi", HeaderValue::from_static("two"));
    headers.append("x-github-delivery", HeaderValue::from_static("d-1"));
    let body: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe]).collect();
    WebhookEvent::new(provider, body).with_headers(headers)
}

/// The next delivery, skipping transport errors (unknown topic while it is being created, ...).
pub async fn next(sub: &mut KafkaSubscriber) -> Delivery {
    tokio::time::timeout(WAIT, async {
        loop {
            match sub.next().await {
                Some(Ok(d)) => return d,
                Some(Err(err)) => eprintln!("subscriber: {err}"),
                None => panic!("subscription ended"),
            }
        }
    })
    .await
    .expect("no delivery in time")
}

/// A plain rdkafka consumer, independent of the crate under test.
pub fn raw_consumer(topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("group.id", unique("raw"))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

pub async fn raw_next(consumer: &StreamConsumer) -> OwnedMessage {
    tokio::time::timeout(WAIT, async {
        loop {
            match consumer.recv().await {
                Ok(m) => return m.detach(),
                Err(err) => eprintln!("raw consumer: {err}"),
            }
        }
    })
    .await
    .expect("no message in time")
}

pub fn header_list(message: &OwnedMessage) -> Vec<(String, Vec<u8>)> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// The group's committed offsets for `topic`'s partitions `0..partitions`, asked by a client
/// that is not a member of the group.
pub async fn committed(group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let group = group.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", BROKERS)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let result = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        result
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Polls `committed` until `check` holds or the wait is over; returns the last value.
pub async fn committed_until(
    group: &str,
    topic: &str,
    partitions: i32,
    check: impl Fn(&HashMap<i32, i64>) -> bool,
) -> HashMap<i32, i64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let offsets = committed(group, topic, partitions).await;
        if check(&offsets) || tokio::time::Instant::now() > deadline {
            return offsets;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Logs to stderr when `RUST_LOG` is set (librdkafka's log lines included).
pub fn trace() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
