//! Settling when the broker refuses the retry or dead-letter copy: the message is neither
//! dropped nor redelivered in a tight loop.

use std::time::{Duration, Instant};

use firefly_webhook::{DeadLetter, Delivery, EventId, FailureCategory, Publisher, Subscriber};
use firefly_webhook_amqp::lapin::options::QueueDeleteOptions;
use firefly_webhook_amqp::{AmqpSubscriber, topology};

use crate::{Scope, sample, subscribe, within};

const BACKOFF: Duration = Duration::from_millis(300);
const WINDOW: Duration = Duration::from_secs(3);

/// Hands every delivery of `id` that arrives within `WINDOW` to `settle` and counts them;
/// each settle must fail.
async fn deliveries_within_window<F, Fut>(
    subscriber: &mut AmqpSubscriber,
    id: EventId,
    mut settle: F,
) -> usize
where
    F: FnMut(Delivery) -> Fut,
    Fut: Future<Output = Result<(), firefly_webhook::SubscribeError>>,
{
    let end = Instant::now() + WINDOW;
    let mut count = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Ok(next) = tokio::time::timeout(left, subscriber.next()).await else {
            break;
        };
        let delivery = next
            .expect("subscription ended")
            .expect("subscriber failed");
        assert_eq!(delivery.event.id, id);
        count += 1;
        assert!(settle(delivery).await.is_err(), "the copy should fail");
    }
    count
}

async fn delete_queue(scope: &Scope, name: &str) {
    scope
        .channel
        .queue_delete(name.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn a_poison_message_waits_for_an_unroutable_dlq_without_a_hot_loop() {
    let mut scope = Scope::new(&["poison"]).await;
    scope.config.settle_backoff = BACKOFF;
    let broker = scope.broker().await;
    let mut subscriber = subscribe(&broker, ["poison"]).await;
    let publisher = broker.publisher();
    let event = sample("poison");
    publisher.publish("poison", event.clone()).await.unwrap();
    // The DLQ is gone: the dead-letter exchange cannot route the copy.
    let dlq = scope.config.dead_letter_queue("poison");
    delete_queue(&scope, &dlq).await;

    let failure = DeadLetter::new("bad", FailureCategory::Processing, 5, "test", "poison");
    let count =
        deliveries_within_window(&mut subscriber, event.id, |d| d.dead_letter(&failure)).await;
    eprintln!("deliveries while the dlq was unroutable: {count}");
    // Once per backoff (3 s / 300 ms = 10 at most); without the backoff it would be hundreds.
    assert!((2..=11).contains(&count), "{count} deliveries");

    // The DLQ is back: the next delivery is dead-lettered, with its metadata.
    topology::declare_destination(&scope.channel, &scope.config, "poison")
        .await
        .unwrap();
    let delivery = within(subscriber.next()).await.unwrap().unwrap();
    assert_eq!(delivery.event.id, event.id);
    delivery.dead_letter(&failure).await.unwrap();
    let message = scope.get(&dlq).await;
    assert_eq!(message.delivery.data, event.body.as_ref());
    let headers = message.delivery.properties.headers().clone().unwrap();
    assert!(headers.contains_key("cloudEvents:deadletterreason"));
    assert_eq!(scope.depth(&scope.config.queue("poison")).await, 0);

    subscriber.close().await;
    drop((publisher, broker));
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn a_failed_retry_copy_requeues_after_the_backoff() {
    let mut scope = Scope::new(&["noretry"]).await;
    scope.config.settle_backoff = BACKOFF;
    let broker = scope.broker().await;
    let mut subscriber = subscribe(&broker, ["noretry"]).await;
    let publisher = broker.publisher();
    let event = sample("noretry");
    publisher.publish("noretry", event.clone()).await.unwrap();
    let tier = scope.config.retry_delays[0];
    let retry_queue = scope.config.retry_queue_for_tier("noretry", tier);
    delete_queue(&scope, &retry_queue).await;

    let count =
        deliveries_within_window(&mut subscriber, event.id, |d| d.retry(Duration::ZERO)).await;
    eprintln!("deliveries while the retry queue was missing: {count}");
    assert!((2..=11).contains(&count), "{count} deliveries");

    topology::declare_destination(&scope.channel, &scope.config, "noretry")
        .await
        .unwrap();
    let delivery = within(subscriber.next()).await.unwrap().unwrap();
    delivery.retry(Duration::ZERO).await.unwrap();
    let again = within(subscriber.next()).await.unwrap().unwrap();
    assert_eq!((again.event.id, again.attempt), (event.id, 2));
    again.ack().await.unwrap();

    subscriber.close().await;
    drop((publisher, broker));
    scope.cleanup().await;
}
