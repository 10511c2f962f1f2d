//! A downstream service: consumes the webhooks the gateway published and runs its own
//! [`WebhookProcessor`](firefly_webhook::process::WebhookProcessor) behind idempotency, retry
//! and dead-lettering. See README.md.
#![allow(clippy::print_stderr)]

mod processor;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use firefly_webhook::idempotency::IdempotencyStore;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::{Publisher, Subscriber, WebhookEvent, Worker, http};

use crate::processor::OrderProcessor;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BoxError::from)
        .and_then(|rt| rt.block_on(run()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("worker: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The destinations to consume (`FIREFLY_DESTINATIONS`, default `github,stripe`).
fn destinations() -> Vec<String> {
    std::env::var("FIREFLY_DESTINATIONS")
        .unwrap_or_else(|_| "github,stripe".to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Picks the broker from `FIREFLY_TRANSPORT`.
// Brokers other than memory connect asynchronously.
#[cfg_attr(not(feature = "amqp"), allow(clippy::unused_async))]
async fn subscriber(destinations: &[String]) -> Result<Box<dyn Subscriber>, BoxError> {
    match std::env::var("FIREFLY_TRANSPORT").as_deref() {
        Err(_) | Ok("" | "memory") => {
            // No broker: publish a few sample webhooks into an embedded one.
            let broker = MemoryBroker::new(1000);
            demo_events(&broker).await?;
            Ok(Box::new(broker.subscriber_for(destinations.iter().cloned())))
        }
        #[cfg(feature = "kafka")]
        Ok("kafka") => {
            use firefly_webhook_kafka::{KafkaConfig, KafkaSubscriber, SubscriberConfig};
            let brokers = env_or("FIREFLY_KAFKA_BROKERS", "127.0.0.1:9092");
            let kafka = KafkaConfig::from_brokers(brokers);
            let config = SubscriberConfig::new(env_or("FIREFLY_GROUP", "orders"), destinations);
            Ok(Box::new(KafkaSubscriber::new(&kafka, config)?))
        }
        #[cfg(feature = "amqp")]
        Ok("amqp" | "rabbitmq") => {
            use firefly_webhook_amqp::{AmqpConfig, AmqpSubscriber};
            let url = env_or("FIREFLY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
            let subscriber = AmqpSubscriber::connect(AmqpConfig::from_url(url), destinations.iter().cloned()).await?;
            Ok(Box::new(subscriber))
        }
        Ok(other) => Err(format!(
            "FIREFLY_TRANSPORT={other:?} is not available in this build (memory, or kafka/amqp with --features)"
        )
        .into()),
    }
}

#[cfg_attr(
    not(any(feature = "kafka", feature = "amqp", feature = "redis")),
    allow(dead_code)
)]
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Redis when `FIREFLY_REDIS_URL` is set (with `--features redis`).
fn store() -> Result<Option<Arc<dyn IdempotencyStore>>, BoxError> {
    let Ok(url) = std::env::var("FIREFLY_REDIS_URL") else {
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        Ok(Some(Arc::new(firefly_webhook_redis::RedisStore::from_url(
            url,
        )?)))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err("FIREFLY_REDIS_URL needs `--features redis`".into())
    }
}

async fn demo_events(broker: &MemoryBroker) -> Result<(), BoxError> {
    let publisher = broker.publisher();
    let mut push = http::HeaderMap::new();
    push.insert("x-github-event", http::HeaderValue::from_static("push"));
    push.insert(
        "x-github-delivery",
        http::HeaderValue::from_static("demo-1"),
    );
    let push = WebhookEvent::new("github", r#"{"repository":{"full_name":"octo/demo"}}"#)
        .with_headers(push);
    // The same delivery twice: the second is skipped as a duplicate.
    publisher.publish("github", push.clone()).await?;
    publisher.publish("github", push).await?;
    publisher
        .publish(
            "stripe",
            WebhookEvent::new(
                "stripe",
                r#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1"}}}"#,
            ),
        )
        .await?;
    publisher
        .publish("stripe", WebhookEvent::new("stripe", "not json"))
        .await?;
    broker.close(); // the demo ends once these are processed
    Ok(())
}

async fn run() -> Result<(), BoxError> {
    let destinations = destinations();
    let subscriber = subscriber(&destinations).await?;
    let processor = Arc::new(OrderProcessor::default());
    let mut builder = Worker::builder(subscriber).concurrency(32);
    if let Some(store) = store()? {
        builder = builder.idempotency_shared(store);
    }
    let worker = builder.build(Arc::clone(&processor));
    tracing::info!(?destinations, "worker started; Ctrl-C to stop");
    worker
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    tracing::info!(
        pushes = processor.pushes.load(Ordering::Relaxed),
        payments = processor.payments.load(Ordering::Relaxed),
        "worker stopped"
    );
    Ok(())
}
