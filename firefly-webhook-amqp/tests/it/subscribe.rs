use std::time::Duration;

use firefly_webhook::wire::Binding;
use firefly_webhook::{DeadLetter, Delivery, FailureCategory, Publisher, Subscriber};
use firefly_webhook_amqp::lapin::BasicProperties;
use firefly_webhook_amqp::lapin::options::BasicPublishOptions;
use firefly_webhook_amqp::lapin::types::AMQPValue;
use firefly_webhook_amqp::{AmqpSubscriber, AmqpTag};

use crate::{Scope, sample, subscribe, within};

async fn next(subscriber: &mut AmqpSubscriber) -> Delivery {
    within(async {
        loop {
            match subscriber.next().await {
                Some(Ok(delivery)) => return delivery,
                Some(Err(e)) => eprintln!("subscriber: {e}"),
                None => panic!("subscription ended"),
            }
        }
    })
    .await
}

fn text<'a>(headers: &'a firefly_webhook_amqp::lapin::types::FieldTable, name: &str) -> &'a [u8] {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => s.as_bytes(),
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn subscriber_decodes_what_the_publisher_sent() {
    let scope = Scope::new(&["a", "b"]).await;
    let broker = scope.broker().await;
    let mut subscriber = subscribe(&broker, ["a", "b"]).await;
    let publisher = broker.publisher();
    let (ea, eb) = (sample("a"), sample("b"));
    publisher.publish("a", ea.clone()).await.unwrap();
    publisher.publish("b", eb.clone()).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut subscriber).await;
        assert_eq!(delivery.attempt, 1);
        assert_eq!(delivery.position.transport(), "amqp");
        let tag = delivery.position.downcast_ref::<AmqpTag>().unwrap();
        assert!(!tag.redelivered, "{tag}");
        let expected = if &*delivery.destination == "a" {
            &ea
        } else {
            &eb
        };
        let got = &delivery.event;
        assert_eq!(got.id, expected.id);
        assert_eq!(got.body, expected.body);
        assert_eq!(got.headers, expected.headers);
        assert_eq!(got.content_type, expected.content_type);
        assert_eq!(got.query, expected.query);
        assert_eq!(got.source_ip, expected.source_ip);
        assert_eq!(got.correlation_id, expected.correlation_id);
        seen.push(delivery.destination.to_string());
        delivery.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, ["a", "b"]);
    assert_eq!(scope.depth(&scope.config.queue("a")).await, 0);

    subscriber.close().await;
    drop((publisher, broker));
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn a_consumer_that_dies_before_ack_gets_the_message_redelivered_elsewhere() {
    let scope = Scope::new(&["crash"]).await;
    let broker = scope.broker().await;
    let publisher = broker.publisher();
    let event = sample("crash");
    publisher.publish("crash", event.clone()).await.unwrap();

    let mut first = subscribe(&broker, ["crash"]).await;
    let delivery = next(&mut first).await;
    assert_eq!(delivery.event.id, event.id);
    // The process dies: the delivery is never settled and the connection goes away.
    drop(delivery);
    drop(first);

    let mut second = subscribe(&broker, ["crash"]).await;
    let again = next(&mut second).await;
    assert_eq!(again.event.id, event.id);
    assert_eq!(again.event.body, event.body);
    let tag = again.position.downcast_ref::<AmqpTag>().unwrap();
    assert!(tag.redelivered, "{tag}");
    assert!(again.position.to_string().ends_with(" (redelivered)"));
    again.ack().await.unwrap();

    second.close().await;
    drop((publisher, broker));
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn transient_failures_are_retried_later_with_rising_attempts_then_succeed() {
    let scope = Scope::new(&["flaky"]).await;
    let broker = scope.broker().await;
    let mut subscriber = subscribe(&broker, ["flaky"]).await;
    let publisher = broker.publisher();
    let event = sample("flaky");
    publisher.publish("flaky", event.clone()).await.unwrap();

    let mut attempts = Vec::new();
    loop {
        let delivery = next(&mut subscriber).await;
        assert_eq!(delivery.event.id, event.id);
        assert_eq!(delivery.event.body, event.body);
        attempts.push(delivery.attempt);
        if delivery.attempt < 3 {
            // 100 ms → the 200 ms tier, 400 ms → the 500 ms tier.
            let delay = Duration::from_millis(u64::from(delivery.attempt) * 300 - 200);
            delivery.retry(delay).await.unwrap();
        } else {
            delivery.ack().await.unwrap();
            break;
        }
    }
    assert_eq!(attempts, [1, 2, 3]);
    for tier in &scope.config.retry_delays {
        let retry = scope.config.retry_queue_for_tier("flaky", *tier);
        assert_eq!(scope.depth(&retry).await, 0);
    }
    assert_eq!(scope.depth(&scope.config.queue("flaky")).await, 0);
    assert_eq!(
        scope.depth(&scope.config.dead_letter_queue("flaky")).await,
        0
    );

    subscriber.close().await;
    drop((publisher, broker));
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn always_failing_messages_reach_the_dead_letter_queue_with_metadata() {
    const MAX_ATTEMPTS: u32 = 3;
    let scope = Scope::new(&["doomed"]).await;
    let broker = scope.broker().await;
    let mut subscriber = subscribe(&broker, ["doomed"]).await;
    let publisher = broker.publisher();
    let event = sample("doomed");
    publisher.publish("doomed", event.clone()).await.unwrap();

    loop {
        let delivery = next(&mut subscriber).await;
        if delivery.attempt < MAX_ATTEMPTS {
            delivery.retry(Duration::ZERO).await.unwrap();
        } else {
            let failure = DeadLetter::new(
                "downstream said no",
                FailureCategory::Processing,
                delivery.attempt,
                "http_500",
                &*delivery.destination,
            );
            delivery.dead_letter(&failure).await.unwrap();
            break;
        }
    }

    let message = scope.get(&scope.config.dead_letter_queue("doomed")).await;
    assert_eq!(message.delivery.data, event.body.as_ref());
    let props = &message.delivery.properties;
    assert_eq!(
        props.message_id().as_ref().map(ToString::to_string),
        Some(event.id.to_string())
    );
    let headers = props.headers().clone().unwrap();
    let prefix = Binding::AMQP.prefix;
    assert_eq!(
        text(&headers, &format!("{prefix}deadletterreason")),
        b"downstream said no"
    );
    assert_eq!(
        text(&headers, &format!("{prefix}deadlettercategory")),
        b"processing"
    );
    assert_eq!(text(&headers, &format!("{prefix}deadletterattempts")), b"3");
    assert_eq!(
        text(&headers, &format!("{prefix}deadletterdestination")),
        b"doomed"
    );
    assert_eq!(text(&headers, &format!("{prefix}attempt")), b"3");
    assert_eq!(
        text(&headers, &format!("{prefix}id")),
        event.id.to_string().as_bytes()
    );
    assert!(headers.contains_key("http_x-signature"));
    assert_eq!(scope.depth(&scope.config.queue("doomed")).await, 0);

    subscriber.close().await;
    drop((publisher, broker));
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn undecodable_messages_are_dead_lettered_not_fatal() {
    let scope = Scope::new(&["junk"]).await;
    let broker = scope.broker().await;
    let mut subscriber = subscribe(&broker, ["junk"]).await;
    // Not the wire format: no headers at all.
    scope
        .channel
        .basic_publish(
            scope.config.exchange.as_str().into(),
            "junk".into(),
            BasicPublishOptions::default(),
            b"garbage",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let publisher = broker.publisher();
    let event = sample("junk");
    publisher.publish("junk", event.clone()).await.unwrap();

    let delivery = next(&mut subscriber).await;
    assert_eq!(delivery.event.id, event.id);
    delivery.ack().await.unwrap();

    let message = scope.get(&scope.config.dead_letter_queue("junk")).await;
    assert_eq!(message.delivery.data, b"garbage");
    let headers = message.delivery.properties.headers().clone().unwrap();
    let prefix = Binding::AMQP.prefix;
    assert_eq!(
        text(&headers, &format!("{prefix}deadlettercategory")),
        b"validation"
    );

    subscriber.close().await;
    drop((publisher, broker));
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn abandoned_deliveries_come_back() {
    let scope = Scope::new(&["later"]).await;
    let broker = scope.broker().await;
    let mut subscriber = subscribe(&broker, ["later"]).await;
    let publisher = broker.publisher();
    let event = sample("later");
    publisher.publish("later", event.clone()).await.unwrap();

    let delivery = next(&mut subscriber).await;
    delivery.abandon().await.unwrap();
    let again = next(&mut subscriber).await;
    assert_eq!(again.event.id, event.id);
    again.ack().await.unwrap();

    subscriber.close().await;
    drop((publisher, broker));
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn classic_queues_retry_and_dead_letter_too() {
    let mut scope = Scope::new(&["classic"]).await;
    scope.config.queue_type = firefly_webhook_amqp::QueueType::Classic;
    let broker = scope.broker().await;
    let mut subscriber = subscribe(&broker, ["classic"]).await;
    let publisher = broker.publisher();
    let event = sample("classic");
    publisher.publish("classic", event.clone()).await.unwrap();

    let first = next(&mut subscriber).await;
    first.retry(Duration::from_millis(300)).await.unwrap();
    let second = next(&mut subscriber).await;
    assert_eq!((second.event.id, second.attempt), (event.id, 2));
    let failure = DeadLetter::new("no", FailureCategory::Unrecoverable, 2, "test", "classic");
    second.dead_letter(&failure).await.unwrap();
    let message = scope.get(&scope.config.dead_letter_queue("classic")).await;
    assert_eq!(message.delivery.data, event.body.as_ref());

    subscriber.close().await;
    drop((publisher, broker));
    scope.cleanup().await;
}
