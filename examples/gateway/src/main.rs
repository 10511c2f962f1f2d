//! A webhook gateway: an axum app that mounts the ingest layer beside its own routes, publishes
//! to the embedded memory broker (or Kafka / RabbitMQ when built with those features) and runs
//! an in-process worker that logs every webhook it receives.
//!
//! ```text
//! cargo run -p gateway
//! curl -i -X POST localhost:8080/api/v1/webhook/github -H 'content-type: application/json' -d '{"zen":"hi"}'
//! ```
//!
//! Configuration: see the workspace README (`FIREFLY_*` variables).
#![allow(clippy::print_stderr)]

mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use firefly_webhook::health::{Liveness, Readiness};
use firefly_webhook::idempotency::IdempotencyStore;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Context, Outcome, ProcessError, WebhookProcessor};
use firefly_webhook::{
    IngestLayer, IngestService, Publisher, Routing, Subscriber, Verifiers, WebhookEvent, Worker,
    async_trait,
};
use tokio::sync::watch;

use crate::config::{Config, TransportKind};

/// The in-process consumer: shows each webhook arriving.
struct LogProcessor;

#[async_trait]
impl WebhookProcessor for LogProcessor {
    async fn process(&self, event: &WebhookEvent, ctx: &Context) -> Result<Outcome, ProcessError> {
        tracing::info!(
            event_id = %event.id,
            provider = %event.provider,
            destination = %ctx.destination,
            bytes = event.body.len(),
            attempt = ctx.attempt,
            "webhook received"
        );
        Ok(Outcome::Processed)
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("gateway: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("gateway: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gateway: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A publisher plus, when the worker is on, a subscriber for it.
struct Transport {
    publisher: Arc<dyn Publisher>,
    subscriber: Option<Box<dyn Subscriber>>,
    name: &'static str,
    /// The embedded broker, whose queue lives only in this process.
    memory: Option<MemoryBroker>,
}

// Brokers other than memory connect asynchronously.
#[cfg_attr(
    not(any(feature = "kafka", feature = "amqp")),
    allow(clippy::unused_async)
)]
async fn transport(config: &Config) -> Result<Transport, BoxError> {
    match config.transport {
        TransportKind::Memory => {
            let broker = MemoryBroker::new(config.queue_capacity);
            Ok(Transport {
                publisher: Arc::new(broker.publisher()),
                subscriber: config
                    .worker
                    .then(|| Box::new(broker.subscriber()) as Box<dyn Subscriber>),
                name: "memory",
                memory: Some(broker),
            })
        }
        #[cfg(feature = "kafka")]
        TransportKind::Kafka => {
            use firefly_webhook_kafka::{
                KafkaConfig, KafkaPublisher, KafkaSubscriber, SubscriberConfig,
            };
            let kafka = KafkaConfig::from_brokers(config.kafka_brokers.clone());
            let publisher = KafkaPublisher::new(kafka.clone())?;
            let subscriber = match worker_destinations(config) {
                Some(topics) => {
                    // Create the topics first, so the consumer finds them when it subscribes.
                    for topic in &topics {
                        if let Err(err) = publisher.ensure_topic(topic).await {
                            tracing::warn!(topic, error = %err, "could not create the topic yet");
                        }
                    }
                    let sub = SubscriberConfig::new(config.group.clone(), topics);
                    Some(Box::new(KafkaSubscriber::new(&kafka, sub)?) as Box<dyn Subscriber>)
                }
                None => None,
            };
            Ok(Transport {
                publisher: Arc::new(publisher),
                subscriber,
                name: "kafka",
                memory: None,
            })
        }
        #[cfg(not(feature = "kafka"))]
        TransportKind::Kafka => Err("FIREFLY_TRANSPORT=kafka needs `--features kafka`".into()),
        #[cfg(feature = "amqp")]
        TransportKind::Amqp => {
            use firefly_webhook_amqp::{AmqpConfig, AmqpPublisher, AmqpSubscriber};
            let amqp = AmqpConfig::from_url(config.amqp_url.0.clone());
            let publisher = AmqpPublisher::connect(amqp.clone()).await?;
            let subscriber =
                match worker_destinations(config) {
                    Some(queues) => Some(Box::new(AmqpSubscriber::connect(amqp, queues).await?)
                        as Box<dyn Subscriber>),
                    None => None,
                };
            Ok(Transport {
                publisher: Arc::new(publisher),
                subscriber,
                name: "amqp",
                memory: None,
            })
        }
        #[cfg(not(feature = "amqp"))]
        TransportKind::Amqp => Err("FIREFLY_TRANSPORT=amqp needs `--features amqp`".into()),
    }
}

async fn run(config: Config) -> Result<(), BoxError> {
    // FIREFLY_VERIFY_<PROVIDER>, FIREFLY_SECRET_<PROVIDER>, ...: checked before connecting.
    let verifiers = Verifiers::from_env()?;
    let transport = transport(&config).await?;
    let mut ingest = IngestService::new(Arc::clone(&transport.publisher))
        .max_body_bytes(config.max_body_bytes)
        .trusted_proxies(config.trusted_proxies.clone())
        .routing(Routing::provider().prefix(config.topic_prefix.clone()))
        .verifiers(verifiers);
    if let Some(providers) = &config.providers {
        ingest = ingest.providers(providers);
    }

    let readiness = Readiness::new().publisher(transport.name, Arc::clone(&transport.publisher));
    let app = Router::new()
        .route(
            "/",
            get(|| async { "firefly-webhook gateway: POST /api/v1/webhook/{provider}\n" }),
        )
        .route_service("/health/live", Liveness)
        .route_service("/health/ready", readiness)
        .layer(IngestLayer::from(ingest));

    let (stop_tx, stop_rx) = watch::channel(false);
    let store = idempotency_store(&config).await?;
    let worker = transport.subscriber.map(|subscriber| {
        let mut builder = Worker::builder(subscriber).concurrency(config.concurrency);
        if let Some(store) = store {
            builder = builder.idempotency_shared(store);
        }
        let worker = builder.build(LogProcessor);
        let mut stop = stop_rx.clone();
        tokio::spawn(worker.run_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });

    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        transport = transport.name,
        worker = worker.is_some(),
        "gateway ready: POST /api/v1/webhook/{{provider}}"
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;

    // The server has finished its in-flight requests; now let the worker drain.
    tracing::info!("shutting down");
    match (&transport.memory, worker) {
        // Accepted events live only in this process: process everything queued before
        // exiting (closing the broker ends the subscription once it is empty).
        (Some(broker), Some(mut handle)) => {
            broker.close();
            if tokio::time::timeout(Duration::from_secs(30), &mut handle)
                .await
                .is_err()
            {
                let _ = stop_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(35), handle).await;
            }
            let left = broker.in_flight() + u64::try_from(broker.total_len()).unwrap_or(u64::MAX);
            if left > 0 {
                tracing::error!(left, "exiting with accepted events not processed");
            }
        }
        // On a broker, unprocessed events stay there for the next run.
        (_, Some(handle)) => {
            let _ = stop_tx.send(true);
            if tokio::time::timeout(Duration::from_secs(35), handle)
                .await
                .is_err()
            {
                tracing::warn!("worker did not stop in time");
            }
        }
        (Some(broker), None) if !broker.is_empty() => {
            tracing::error!(
                "exiting with accepted events queued and no worker (FIREFLY_WORKER=off)"
            );
        }
        _ => {}
    }
    Ok(())
}

/// The topics / queues the in-process worker consumes on a broker, when it runs.
#[cfg_attr(not(any(feature = "kafka", feature = "amqp")), allow(dead_code))]
fn worker_destinations(config: &Config) -> Option<Vec<String>> {
    if !config.worker {
        return None;
    }
    if config.destinations.is_none() {
        tracing::info!(
            "in-process worker off: on a broker it needs FIREFLY_PROVIDERS or FIREFLY_DESTINATIONS to know what to consume"
        );
    }
    config.destinations.clone()
}

/// Redis when `FIREFLY_REDIS_URL` is set (with `--features redis`), else the worker's own
/// memory store.
#[allow(clippy::unused_async)]
async fn idempotency_store(config: &Config) -> Result<Option<Arc<dyn IdempotencyStore>>, BoxError> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        let store = firefly_webhook_redis::RedisStore::from_url(url.0.as_str())?;
        if let Err(err) = store.ping().await {
            // Fail closed: deliveries wait (unacked) until Redis is back.
            tracing::warn!(error = %err, "redis unreachable; processing waits until it is back");
        }
        tracing::info!("idempotency shared through redis");
        Ok(Some(Arc::new(store)))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = &url.0;
        Err("FIREFLY_REDIS_URL needs the gateway built with `--features redis`".into())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
