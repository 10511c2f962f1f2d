//! The one shape every transport has: `KafkaBroker::new`/`connect`, `publisher()`,
//! `subscriber(..)`, `health()`, also through the generic [`Broker`] trait.

use std::time::Duration;

use firefly_webhook::process::{Outcome, processor_fn};
use firefly_webhook::{Broker, Publisher, Subscriber, WebhookEvent, Worker};
use firefly_webhook_kafka::{Error, KafkaBroker, KafkaConfig};

use crate::common::{WAIT, event, group_config, kafka, unique};

/// What an application does with any transport, written once.
async fn publish_then_consume<B: Broker>(broker: &B, topic: &str, sent: WebhookEvent)
where
    B::Error: std::fmt::Debug,
{
    broker.health().await.unwrap();
    broker
        .publisher()
        .publish(topic, sent.clone())
        .await
        .unwrap();
    let mut subscriber = broker.subscriber([topic]).unwrap();
    let delivery = tokio::time::timeout(WAIT, async {
        loop {
            match subscriber.next().await {
                Some(Ok(d)) => return d,
                Some(Err(err)) => eprintln!("subscriber: {err}"),
                None => panic!("subscription ended"),
            }
        }
    })
    .await
    .expect("no delivery in time");
    assert_eq!(delivery.event.id, sent.id);
    assert_eq!(&*delivery.destination, topic);
    assert_eq!(delivery.position.transport(), broker.name());
    delivery.ack().await.unwrap();
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn connect_then_publish_and_consume_through_the_broker_trait() {
    let broker = KafkaBroker::connect(group_config(&unique("g")))
        .await
        .unwrap();
    assert_eq!(Broker::name(&broker), "kafka");
    let topic = unique("shape");
    publish_then_consume(&broker, &topic, event("github")).await;
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn the_readme_swap_ingests_and_works() {
    let topic = unique("stripe");
    let mut config = group_config(&unique("g"));
    config.partitions = 1;
    let broker = KafkaBroker::connect(config).await.unwrap();
    let sent = event("stripe");
    broker
        .publisher()
        .publish(&topic, sent.clone())
        .await
        .unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(broker.subscriber([&topic]).unwrap()).build(processor_fn(
        move |event, ctx| {
            let (tx, id, attempt) = (tx.clone(), event.id, ctx.attempt);
            async move {
                let _ = tx.send((id, attempt));
                Ok(Outcome::Processed)
            }
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let (id, attempt) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("processed in time")
        .unwrap();
    assert_eq!((id, attempt), (sent.id, 1));
    stop.send(()).unwrap();
    running.await.unwrap();
}

#[tokio::test]
async fn connect_fails_fast_without_a_cluster_but_new_is_lazy() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = KafkaConfig::from_brokers(format!("127.0.0.1:{port}"));
    config.health_timeout = Duration::from_millis(500);
    let lazy = KafkaBroker::new(config.clone()).expect("new does not talk to the cluster");
    assert!(lazy.health().await.unwrap_err().is_retryable());
    let err = tokio::time::timeout(Duration::from_secs(30), KafkaBroker::connect(config))
        .await
        .expect("bounded by the health timeout")
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    assert_eq!(err.to_string(), "kafka cluster did not answer");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
}

#[tokio::test]
async fn subscriber_refuses_a_bad_subscription() {
    let broker = KafkaBroker::new(kafka(1)).unwrap();
    let none: [&str; 0] = [];
    assert!(matches!(broker.subscriber(none), Err(Error::Config(_))));
    assert!(matches!(broker.subscriber([""]), Err(Error::Config(_))));
    let mut config = kafka(1);
    config.dead_letter_topic = "{topic}".into();
    let loops = KafkaBroker::new(config).unwrap().subscriber(["github"]);
    assert!(matches!(loops, Err(Error::Config(_))), "{loops:?}");
    assert!(matches!(
        broker.subscriber_prefixed("webhooks."),
        Err(Error::Config(_))
    ));
}

#[test]
fn subscriber_outside_a_runtime_is_an_error_not_a_panic() {
    let broker = KafkaBroker::new(kafka(1)).unwrap();
    let err = broker.subscriber(["github"]).unwrap_err();
    assert!(matches!(err, Error::NoRuntime), "{err:?}");
}
