//! What the crate declares, and what happens when the broker has something else.

use std::error::Error as _;

use firefly_webhook::{PublishError, Publisher};
use firefly_webhook_amqp::Error;
use firefly_webhook_amqp::lapin::options::QueueDeclareOptions;
use firefly_webhook_amqp::lapin::types::{AMQPValue, FieldTable};

use crate::{Scope, sample, subscribe, within};

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// The arguments an earlier version declared main queues with (at-most-once dead-lettering).
fn old_queue_args(scope: &Scope, destination: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert(
        "x-dead-letter-exchange".into(),
        text(&scope.config.dead_letter_exchange),
    );
    args.insert("x-dead-letter-routing-key".into(), text(destination));
    args
}

const DURABLE: QueueDeclareOptions = QueueDeclareOptions {
    passive: false,
    durable: true,
    exclusive: false,
    auto_delete: false,
    nowait: false,
};

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn quorum_queues_dead_letter_at_least_once() {
    let scope = Scope::new(&["alo"]).await;
    let broker = scope.broker().await;
    let subscriber = subscribe(&broker, ["alo"]).await;

    // RabbitMQ refuses a redeclaration without the strategy: the queue has it.
    let channel = scope.connection.create_channel().await.unwrap();
    let queue = scope.config.queue("alo");
    let err = channel
        .queue_declare(
            queue.as_str().into(),
            DURABLE,
            old_queue_args(&scope, "alo"),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("x-dead-letter-strategy")
            || err.to_string().contains("x-overflow"),
        "{err}"
    );
    // With the same arguments it is accepted.
    let channel = scope.connection.create_channel().await.unwrap();
    let mut args = old_queue_args(&scope, "alo");
    args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    args.insert("x-overflow".into(), text("reject-publish"));
    channel
        .queue_declare(queue.as_str().into(), DURABLE, args)
        .await
        .unwrap();

    drop((subscriber, broker));
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn a_queue_declared_with_other_arguments_is_a_clear_error() {
    let scope = Scope::new(&["old", "fine"]).await;
    // A queue left by an earlier version, without at-least-once dead-lettering.
    let queue = scope.config.queue("old");
    scope
        .channel
        .queue_declare(
            queue.as_str().into(),
            DURABLE,
            old_queue_args(&scope, "old"),
        )
        .await
        .unwrap();
    let broker = scope.broker().await;

    // The subscriber fails at start-up, saying which queue and what to do.
    let mut subscriber = broker.subscriber(["old"]).unwrap();
    let err = within(subscriber.connect()).await.unwrap_err();
    let Error::TopologyMismatch { name, reason } = &err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(name, &queue);
    assert!(reason.contains("PRECONDITION_FAILED"), "{reason}");
    let message = err.to_string();
    assert!(message.contains(&queue), "{message}");
    assert!(message.contains("declare_topology = false"), "{message}");
    assert!(!err.is_retryable());

    // A publish to it is rejected (500, not 503: retrying cannot help) ...
    let publisher = broker.publisher();
    let err = within(publisher.publish("old", sample("old")))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Rejected(_)), "{err:?}");
    let source = err.source().and_then(|s| s.downcast_ref::<Error>());
    assert!(
        matches!(source, Some(Error::TopologyMismatch { .. })),
        "{source:?}"
    );
    // ... and the connection and its channels are untouched.
    assert!(publisher.is_connected());
    within(publisher.publish("fine", sample("fine")))
        .await
        .unwrap();

    drop((publisher, broker));
    scope.cleanup().await;
}
