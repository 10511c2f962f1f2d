use std::process::{Command, Stdio};
use std::time::Duration;

use firefly_webhook::wire::{self, Binding};
use firefly_webhook::{Broker, PublishError, Publisher, WebhookEvent};
use firefly_webhook_amqp::lapin::types::{AMQPValue, ShortString};
use firefly_webhook_amqp::{AmqpBroker, AmqpConfig, Error, topology};

use crate::{Scope, sample, within};

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn published_message_reaches_a_raw_consumer_unchanged() {
    let scope = Scope::new(&["github"]).await;
    let publisher = scope.broker().await.publisher();
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
    let publisher = scope.broker().await.publisher();

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
    let publisher = scope.broker().await.publisher();
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
    let broker = AmqpBroker::new(config.clone()).unwrap();
    let publisher = broker.publisher();
    let err = within(publisher.publish("x", WebhookEvent::new("x", "{}")))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(publisher.health().await.is_err());
    assert!(broker.health().await.is_err());
    // `connect` reports why the last attempt failed, not just that time ran out.
    let err = within(AmqpBroker::connect(config)).await.unwrap_err();
    assert!(matches!(err, Error::Amqp(_)), "{err:?}");
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn a_lazy_broker_connects_on_first_use() {
    let scope = Scope::new(&["lazy"]).await;
    let broker = AmqpBroker::new(scope.config.clone()).unwrap();
    assert_eq!(broker.name(), "amqp");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!broker.is_connected(), "connected before first use");

    // The first publish waits for the connection instead of failing.
    within(broker.publisher().publish("lazy", sample("lazy")))
        .await
        .unwrap();
    assert!(broker.is_connected());
    broker.health().await.unwrap();
    assert_eq!(scope.depth(&scope.config.queue("lazy")).await, 1);

    drop(broker);
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn oversized_headers_are_rejected_without_hurting_the_connection() {
    let scope = Scope::new(&["big"]).await;
    let publisher = scope.broker().await.publisher();
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

/// Closes the broker side of every connection whose client properties mention `name`.
fn close_connections(name: &str) -> usize {
    let rabbitmqctl = |args: &[&str]| {
        Command::new("rabbitmqctl")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("rabbitmqctl")
    };
    let listed = rabbitmqctl(&[
        "list_connections",
        "--quiet",
        "--no-table-headers",
        "pid",
        "client_properties",
    ]);
    let mut closed = 0;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        if let Some((pid, properties)) = line.split_once('\t')
            && properties.contains(name)
        {
            assert!(
                rabbitmqctl(&["close_connection", pid, "test"])
                    .status
                    .success()
            );
            closed += 1;
        }
    }
    closed
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672 and rabbitmqctl; run scripts/test"]
async fn a_destination_is_declared_again_after_a_reconnect() {
    let scope = Scope::new(&["again"]).await;
    let publisher = scope.broker().await.publisher();
    within(publisher.publish("again", sample("again")))
        .await
        .unwrap();
    // The broker lost the queues and then the connection (as after a node reset).
    topology::delete_destination(&scope.channel, &scope.config, "again")
        .await
        .unwrap();
    let name = format!("{} (publisher)", scope.config.connection_name);
    let closed = tokio::task::spawn_blocking(move || close_connections(&name))
        .await
        .unwrap();
    assert_eq!(closed, 1);

    // Publishes fail while it reconnects, then succeed: the new connection declared the
    // destination again before its first publish.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match within(publisher.publish("again", sample("again"))).await {
            Ok(()) => break,
            Err(e) if attempts < 100 => {
                eprintln!("while reconnecting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    }
    assert_eq!(scope.depth(&scope.config.queue("again")).await, 1);

    drop(publisher);
    scope.cleanup().await;
}
