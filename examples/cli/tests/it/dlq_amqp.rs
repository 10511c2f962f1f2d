//! `firefly dlq` against RabbitMQ.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use firefly_webhook::{Publisher, WebhookEvent};
use firefly_webhook_amqp::dlq::DeadLetters;
use firefly_webhook_amqp::lapin::{Connection, ConnectionProperties};
use firefly_webhook_amqp::{AmqpBroker, AmqpConfig, topology};
use tokio::sync::watch;

use crate::{Counts, dlq_scenario, worker};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn list_show_replay_interrupt_and_purge_on_rabbitmq() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = AmqpConfig::from_url(URL);
    config.exchange = format!("t.{id}.x");
    config.dead_letter_exchange = format!("t.{id}.dlx");
    config.queue_prefix = format!("t.{id}.");
    config.retry_delays = vec![Duration::from_millis(200)];
    let broker = AmqpBroker::connect(config.clone()).await.unwrap();
    let mut subscriber = broker.subscriber(["work"]).unwrap();
    subscriber.connect().await.unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let counts = Counts::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = worker(subscriber, &fixed, &counts, stop_rx);

    let mut sent = Vec::new();
    for i in 0..10 {
        let event = WebhookEvent::new("github", format!("{{\"n\":{i}}}"));
        sent.push(event.id);
        broker.publisher().publish("work", event).await.unwrap();
    }
    let dlq = DeadLetters::new(config.clone()).unwrap();
    let count = || async { dlq.list("work", |_| true).await.unwrap().len() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count().await < sent.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dead-lettered in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let args: Vec<String> = [
        "--transport",
        "amqp",
        "--url",
        URL,
        "--queue-prefix",
        &config.queue_prefix,
        "--destination",
        "work",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    dlq_scenario(&args, &sent, &fixed, &counts, count).await;

    // RabbitMQ cannot list queues: without destinations it is a usage error.
    let out = crate::firefly(["dlq", "list", "--transport", "amqp", "--url", URL]).await;
    crate::assert_exit(&out, 2);

    // Purge, selected by provider.
    fixed.store(false, std::sync::atomic::Ordering::Release);
    for provider in ["stripe", "github", "stripe"] {
        let event = WebhookEvent::new(provider, format!("{{\"p\":\"{}\"}}", uuid::Uuid::new_v4()));
        broker.publisher().publish("work", event).await.unwrap();
    }
    while count().await < 3 {
        assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut purge = args.clone();
    purge.splice(
        0..0,
        ["--json", "dlq", "purge", "--yes", "--provider", "stripe"].map(String::from),
    );
    let out = crate::firefly(purge).await;
    crate::assert_exit(&out, 0);
    assert_eq!(crate::json(&out)["purged"], 2);
    let left = dlq.list("work", |_| true).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].provider(), Some("github"));

    let _ = stop_tx.send(true);
    running.await.unwrap();
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let _ = topology::delete_destination(&channel, &config, "work").await;
    let _ = topology::delete_exchanges(&channel, &config).await;
    let _ = connection.close(200, "OK".into()).await;
}
