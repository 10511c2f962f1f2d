use std::collections::HashMap;
use std::time::Duration;

use firefly_webhook::http::{HeaderMap, HeaderValue};
use firefly_webhook::{Delivery, Subscriber, WebhookEvent};
use firefly_webhook_kafka::rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use firefly_webhook_kafka::rdkafka::message::{Headers, Message, OwnedMessage};
use firefly_webhook_kafka::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use firefly_webhook_kafka::{KafkaBroker, KafkaConfig, KafkaPublisher, KafkaSubscriber};

pub(crate) const BROKERS: &str = "127.0.0.1:9092";

/// A first assignment takes about half of session.timeout.ms; leave room on a busy machine.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub(crate) fn kafka(partitions: i32) -> KafkaConfig {
    let mut config = KafkaConfig::from_brokers(BROKERS);
    config.partitions = partitions;
    config
}

/// A publisher of a broker with `kafka(partitions)`.
pub(crate) fn publisher(partitions: i32) -> KafkaPublisher {
    KafkaBroker::new(kafka(partitions)).unwrap().publisher()
}

pub(crate) fn subscriber(group: &str, topic: &str) -> KafkaSubscriber {
    KafkaBroker::new(group_config(group))
        .unwrap()
        .subscriber([topic])
        .unwrap()
}

/// `kafka(1)` as member of `group`, with a short session and frequent commits.
pub(crate) fn group_config(group: &str) -> KafkaConfig {
    let mut config = kafka(1);
    group.clone_into(&mut config.group_id);
    config.session_timeout = Duration::from_secs(6);
    config.commit_interval = Duration::from_millis(100);
    config
}

/// `err` and its sources, joined with ": " (as tracing-subscriber prints an error chain).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

/// A webhook with a binary body and a repeated header.
pub(crate) fn event(provider: &str) -> WebhookEvent {
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
pub(crate) async fn next(sub: &mut KafkaSubscriber) -> Delivery {
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
pub(crate) fn raw_consumer(topic: &str) -> StreamConsumer {
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

pub(crate) async fn raw_next(consumer: &StreamConsumer) -> OwnedMessage {
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

pub(crate) fn header_list(message: &OwnedMessage) -> Vec<(String, Vec<u8>)> {
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
pub(crate) async fn committed(group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
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
pub(crate) async fn committed_until(
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
pub(crate) fn trace() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
