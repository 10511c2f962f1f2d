//! `firefly dlq` against Kafka.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use firefly_webhook::{Publisher, WebhookEvent};
use firefly_webhook_kafka::dlq::DeadLetters;
use firefly_webhook_kafka::{KafkaBroker, KafkaConfig};
use tokio::sync::watch;

use crate::{Counts, dlq_scenario, worker};

const BROKERS: &str = "127.0.0.1:9092";

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn config(group: &str) -> KafkaConfig {
    let mut config = KafkaConfig::from_brokers(BROKERS);
    config.partitions = 2;
    group.clone_into(&mut config.group_id);
    config.session_timeout = Duration::from_secs(6);
    config.commit_interval = Duration::from_millis(100);
    config
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn list_show_replay_and_interrupt_on_kafka() {
    let (topic, group, replay_group) = (unique("cli"), unique("g"), unique("replay"));
    let broker = KafkaBroker::new(config(&group)).unwrap();
    broker.publisher().ensure_topic(&topic).await.unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let counts = Counts::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = worker(
        broker.subscriber([topic.as_str()]).unwrap(),
        &fixed,
        &counts,
        stop_rx,
    );

    let mut sent = Vec::new();
    for i in 0..10 {
        let event = WebhookEvent::new("github", format!("{{\"n\":{i}}}"));
        sent.push(event.id);
        broker.publisher().publish(&topic, event).await.unwrap();
    }
    let dlq = DeadLetters::new(config("unused"))
        .unwrap()
        .group(&replay_group);
    let count = || async { dlq.list(&topic, |_| true).await.unwrap().len() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count().await < sent.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dead-lettered in time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let args: Vec<String> = [
        "--transport",
        "kafka",
        "--brokers",
        BROKERS,
        "--destination",
        &topic,
        "--group",
        &replay_group,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    dlq_scenario(&args, &sent, &fixed, &counts, count).await;

    // Without --destination, every dead-letter topic is found.
    let out = crate::firefly([
        "--json",
        "dlq",
        "list",
        "--transport",
        "kafka",
        "--brokers",
        BROKERS,
        "--group",
        &replay_group,
    ])
    .await;
    crate::assert_exit(&out, 0);
    let destinations = crate::json(&out)["destinations"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        destinations
            .iter()
            .any(|d| d["destination"] == topic.as_str())
    );

    let _ = stop_tx.send(true);
    running.await.unwrap();
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn an_unreachable_kafka_is_a_failure_and_no_transport_is_a_usage_error() {
    let out = crate::firefly([
        "dlq",
        "list",
        "--transport",
        "kafka",
        "--brokers",
        "127.0.0.1:1",
    ])
    .await;
    crate::assert_exit(&out, 1);
    let out = crate::firefly(["dlq", "list"]).await;
    crate::assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--transport"));
}
