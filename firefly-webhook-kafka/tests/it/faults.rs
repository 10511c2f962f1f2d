//! Broker failure against a PRIVATE broker instance on its own port (the shared one is never
//! stopped).

use std::time::Duration;

use firefly_webhook::http::{HeaderValue, StatusCode};
use firefly_webhook::{Bytes, IngestService, Publisher, Routing};
use firefly_webhook_kafka::rdkafka::ClientConfig;
use firefly_webhook_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use firefly_webhook_kafka::{KafkaBroker, KafkaConfig};

use crate::common::{event, unique};
use crate::private::PrivateBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn broker_down_fails_fast_and_publishing_recovers_after_restart() {
    crate::common::trace();
    let mut broker = PrivateBroker::start();
    let mut config = KafkaConfig::from_brokers(broker.brokers());
    config.delivery_timeout = Duration::from_secs(3);
    config.partitions = 1;
    if let Ok(debug) = std::env::var("KAFKA_DEBUG") {
        config = config.set("debug", debug);
    }
    let publisher = std::sync::Arc::new(KafkaBroker::new(config).unwrap().publisher());
    let topic = unique("down");
    let t = topic.clone();
    let ingest = firefly_webhook::IngestService::new(std::sync::Arc::clone(&publisher))
        .publish_timeout(Duration::from_secs(5))
        .routing(firefly_webhook::Routing::custom(move |_| t.clone()));
    let webhook = || crate::ingest::post(firefly_webhook::Bytes::from_static(b"{}"));
    let outer = Duration::from_secs(30);

    tokio::time::timeout(outer, publisher.publish(&topic, event("github")))
        .await
        .unwrap()
        .unwrap();

    broker.stop();
    let err = tokio::time::timeout(outer, publisher.publish(&topic, event("github")))
        .await
        .expect("publish must fail within the delivery timeout, not hang")
        .unwrap_err();
    assert!(err.is_retryable(), "a 503 kind of error: {err:?}");
    assert!(publisher.health().await.is_err());
    // What the provider sees meanwhile: 503 with Retry-After, never 202.
    let (status, headers, _) = tokio::time::timeout(outer, crate::ingest::call(&ingest, webhook()))
        .await
        .expect("the gateway answers within its publish timeout");
    assert_eq!(
        status,
        firefly_webhook::http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(headers.contains_key("retry-after"));

    broker.start_again();
    let recovered = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            match publisher.publish(&topic, event("github")).await {
                Ok(()) => return,
                Err(err) => {
                    eprintln!("not yet: {err}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
    .await;
    assert!(
        recovered.is_ok(),
        "publishing recovers with the same publisher"
    );
    publisher.health().await.unwrap();
    // The same gateway accepts webhooks again without a restart.
    let (status, _, receipt) = crate::ingest::call(&ingest, webhook()).await;
    assert_eq!(
        status,
        firefly_webhook::http::StatusCode::ACCEPTED,
        "{receipt}"
    );
}

/// The production case: a gateway with the default configuration (6 partitions, 5 s delivery
/// timeout, 5 s publish timeout, so the gateway stops waiting exactly when librdkafka reports
/// the timeout) and a broker that comes back without its topics and producer ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the kafka broker (scripts/kafka-broker); run scripts/test"]
async fn gateway_with_defaults_accepts_again_within_30s_after_a_restart_that_lost_the_topics() {
    crate::common::trace();
    let mut broker = PrivateBroker::start();
    let mut config = KafkaConfig::from_brokers(broker.brokers());
    if let Ok(debug) = std::env::var("KAFKA_DEBUG") {
        config = config.set("debug", debug);
    }
    let publisher = KafkaBroker::connect(config).await.unwrap().publisher();
    let topic = unique("lost");
    let t = topic.clone();
    let ingest = IngestService::new(publisher.clone()).routing(Routing::custom(move |_| t.clone()));
    let webhook = || crate::ingest::post(Bytes::from_static(b"{}"));
    let (status, _, receipt) = crate::ingest::call(&ingest, webhook()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");

    // Requests keep arriving while the broker is down: each is a 503 within the timeout.
    broker.stop();
    for _ in 0..2 {
        let (status, _, _) = tokio::time::timeout(
            Duration::from_secs(30),
            crate::ingest::call(&ingest, webhook()),
        )
        .await
        .expect("answered within the publish timeout");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    // A fresh broker on the same port: in-memory storage, so topics and producer ids are gone.
    broker.start_again();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let accepted = loop {
        let answer =
            tokio::time::timeout_at(deadline, crate::ingest::call(&ingest, webhook())).await;
        match answer {
            Ok((StatusCode::ACCEPTED, _, _)) => break true,
            Ok((status, _, body)) => eprintln!("not yet: {status} {body}"),
            Err(_) => break false,
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        accepted,
        "the gateway accepts again within 30 s of the restart"
    );

    // The topic was re-created by this crate, with its partitions, and all of them take
    // messages (distinct deliveries get distinct keys, spread over the partitions).
    assert_eq!(partitions(&broker.brokers(), &topic).await, 6);
    for i in 0..24 {
        let mut event = event("github");
        event.headers.insert(
            "x-github-delivery",
            HeaderValue::from_str(&format!("restart-{i}")).unwrap(),
        );
        event.body = Bytes::from(format!("{{\"n\":{i}}}"));
        publisher.publish(&topic, event).await.unwrap();
    }
}

/// The partition count of `topic` as the broker reports it.
async fn partitions(brokers: &str, topic: &str) -> usize {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("allow.auto.create.topics", "false")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0].partitions().len()
    })
    .await
    .unwrap()
}
