//! Ingest benchmark server for the RabbitMQ transport: `POST /api/v1/webhook/{provider}`
//! through `IngestService`, published with the AMQP publisher (confirms, persistent) or the
//! memory transport.
//!
//! ```text
//! BENCH_TRANSPORT=amqp   cargo run --release -p firefly-bench --features amqp --bin amqp_ingest
//! BENCH_TRANSPORT=memory cargo run --release -p firefly-bench --features amqp --bin amqp_ingest
//! ```
//! Environment: `BENCH_ADDR` (default `127.0.0.1:8081`), `FIREFLY_AMQP_URL`,
//! `BENCH_CHANNELS` (publisher channels, default 4), `BENCH_QUEUE_TYPE` (`quorum` | `classic`),
//! `BENCH_EXCHANGE_TYPE` (`topic` | `direct`), `BENCH_PREFIX` (names prefix, default `bench.`).
//! The queue is `{prefix}{provider}`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::{IngestService, Publisher, Subscriber};
use firefly_webhook_amqp::{AmqpBroker, AmqpConfig};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() {
    let addr = env("BENCH_ADDR", "127.0.0.1:8081");
    let transport = env("BENCH_TRANSPORT", "amqp");
    let ingest = if transport == "memory" {
        let broker = MemoryBroker::new(1_000_000);
        let mut drain = broker.subscriber_all();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = drain.next().await {
                let _ = delivery.ack().await;
            }
        });
        IngestService::new(broker.publisher())
    } else {
        let prefix = env("BENCH_PREFIX", "bench.");
        let mut config = AmqpConfig::from_url(env(
            "FIREFLY_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        ));
        config.exchange = format!("{prefix}x");
        config.dead_letter_exchange = format!("{prefix}dlx");
        config.queue_prefix = prefix;
        config.channels = env("BENCH_CHANNELS", "4").parse().unwrap();
        config.exchange_type = env("BENCH_EXCHANGE_TYPE", "topic").parse().unwrap();
        config.queue_type = env("BENCH_QUEUE_TYPE", "quorum").parse().unwrap();
        let broker = AmqpBroker::connect(config).await.unwrap();
        let publisher = broker.publisher();
        publisher.health().await.unwrap();
        IngestService::new(publisher)
    };
    let app = axum::Router::new().route_service("/api/v1/webhook/{provider}", ingest);
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    eprintln!("amqp_ingest ({transport}) on http://{addr}");
    axum::serve(listener, app).await.unwrap();
}
