use std::time::Duration;

use firefly_webhook::wire::{self, Binding};
use firefly_webhook::{PublishError, Publisher, WebhookEvent};
use firefly_webhook_amqp::lapin::types::{AMQPValue, ShortString};
use firefly_webhook_amqp::{AmqpConfig, AmqpPublisher, Error, topology};

use crate::{Scope, sample, within};

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn published_message_reaches_a_raw_consumer_unchanged() {
    let scope = Scope::new(&["github"]).await;
    let publisher = AmqpPublisher::connect(scope.config.clone()).await.unwrap();
    publisher.health().await.unwrap();
    let event = sample("github");

    within(publisher.publish("github", event.clone()))
        .await
        .unwrap();

    let message = scope.get(&scope.config.queue("github")).await;
    let delivery = &message.delivery;
    assert_eq!(delivery.data, event.body.as_ref(), "body bytes identical");
    let props = &delivery.properties;
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str().to_owned()),
        Some(event.id.to_string())
    );
    assert_eq!(
        props.content_type().as_ref().map(ShortString::as_str),
        Some("application/json")
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    assert!(props.timestamp().is_some());
    let headers = props.headers().as_ref().unwrap().inner();
    let Some(AMQPValue::FieldArray(multi)) = headers.get("http_x-multi") else {
        panic!("repeated header is not a field array: {headers:?}")
    };
    let values: Vec<_> = multi
        .as_slice()
        .iter()
        .map(|v| match v {
            AMQPValue::LongString(s) => s.as_bytes().to_vec(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(values, [b"one".to_vec(), b"two".to_vec()]);
    for name in [
        "cloudEvents:specversion",
        "cloudEvents:id",
        "cloudEvents:source",
        "cloudEvents:type",
        "cloudEvents:time",
        "cloudEvents:provider",
        "http_x-signature",
    ] {
        assert!(headers.contains_key(name), "{name} missing");
    }
    let Some(AMQPValue::LongString(id)) = headers.get("cloudEvents:id") else {
        panic!("no id")
    };
    assert_eq!(id.as_bytes(), event.id.to_string().as_bytes());

    drop(publisher);
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn unroutable_publish_is_an_error_not_a_silent_loss() {
    let mut scope = Scope::new(&[]).await;
    scope.config.declare_topology = false;
    // Exchanges exist, but no queue is bound for the destination.
    topology::declare_exchanges(&scope.channel, &scope.config)
        .await
        .unwrap();
    let publisher = AmqpPublisher::connect(scope.config.clone()).await.unwrap();

    let err = within(publisher.send("nobody-listens", &sample("x")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unroutable { code: 312, .. }),
        "unexpected {err:?}"
    );
    let err = within(publisher.publish("nobody-listens", sample("x")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Rejected(_)),
        "unexpected {err:?}"
    );
    // The channel survives: a routable publish still works.
    scope.destinations.push("bound".to_owned());
    topology::declare_destination(&scope.channel, &scope.config, "bound")
        .await
        .unwrap();
    within(publisher.publish("bound", sample("bound")))
        .await
        .unwrap();

    drop(publisher);
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn concurrent_publishes_are_all_confirmed_and_decodable() {
    let scope = Scope::new(&["many"]).await;
    let publisher = AmqpPublisher::connect(scope.config.clone()).await.unwrap();
    let events: Vec<WebhookEvent> = (0..200).map(|_| sample("many")).collect();
    let pending = events.iter().map(|e| publisher.publish("many", e.clone()));
    for result in within(futures_util::future::join_all(pending)).await {
        result.unwrap();
    }
    let queue = scope.config.queue("many");
    assert_eq!(scope.depth(&queue).await, 200);
    let message = scope.get(&queue).await;
    let props = &message.delivery.properties;
    let table = props.headers().clone().unwrap_or_default();
    let flat: Vec<(String, Vec<u8>)> = table
        .inner()
        .iter()
        .flat_map(|(k, v)| match v {
            AMQPValue::LongString(s) => vec![(k.to_string(), s.as_bytes().to_vec())],
            AMQPValue::FieldArray(a) => a
                .as_slice()
                .iter()
                .filter_map(|v| match v {
                    AMQPValue::LongString(s) => Some((k.to_string(), s.as_bytes().to_vec())),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let decoded = wire::decode(
        flat.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        message.delivery.data.clone().into(),
        props.content_type().as_ref().map(ShortString::as_str),
        Binding::AMQP,
    )
    .unwrap();
    assert!(events.iter().any(|e| e.id == decoded.id));

    drop(publisher);
    scope.cleanup().await;
}

#[tokio::test]
async fn publishing_without_a_broker_fails_fast_as_unavailable() {
    let mut config = AmqpConfig::from_url("amqp://guest:guest@127.0.0.1:1/%2f");
    config.operation_timeout = Duration::from_secs(1);
    let publisher = AmqpPublisher::new(config.clone());
    let err = within(publisher.publish("x", WebhookEvent::new("x", "{}")))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(publisher.health().await.is_err());
    assert!(within(AmqpPublisher::connect(config)).await.is_err());
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn oversized_headers_are_rejected_without_hurting_the_connection() {
    let scope = Scope::new(&["big"]).await;
    let publisher = AmqpPublisher::connect(scope.config.clone()).await.unwrap();
    let mut headers = firefly_webhook::http::HeaderMap::new();
    for i in 0..40 {
        let name: firefly_webhook::http::HeaderName = format!("x-big-{i}").parse().unwrap();
        headers.insert(name, "a".repeat(8 * 1024).parse().unwrap());
    }
    let big = WebhookEvent::new("big", "{}").with_headers(headers);
    let err = within(publisher.publish("big", big)).await.unwrap_err();
    assert!(matches!(err, PublishError::Rejected(_)), "{err:?}");
    within(publisher.publish("big", sample("big")))
        .await
        .unwrap();
    assert!(publisher.is_connected());

    drop(publisher);
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn a_refused_declaration_fails_that_publish_only() {
    let scope = Scope::new(&["clash", "fine"]).await;
    // Someone declared the queue with other arguments: RabbitMQ answers 406 and closes the
    // declaring channel.
    scope
        .channel
        .queue_declare(
            scope.config.queue("clash").as_str().into(),
            firefly_webhook_amqp::lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            firefly_webhook_amqp::lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let publisher = AmqpPublisher::connect(scope.config.clone()).await.unwrap();

    let err = within(publisher.publish("clash", sample("clash")))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Unavailable(_)), "{err:?}");
    // The connection and its publishing channels are untouched.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(publisher.is_connected());
    within(publisher.publish("fine", sample("fine")))
        .await
        .unwrap();

    drop(publisher);
    scope.cleanup().await;
}
