//! A minimal ingest server for load tests: `IngestService` on the Kafka transport or, for a
//! baseline in the same load shape, on the memory broker (drained by a consumer task).
//!
//! ```text
//! cargo run --release -p firefly-bench --features kafka --bin kafka_ingest -- kafka 127.0.0.1:8081
//! cargo run --release -p firefly-bench --features kafka --bin kafka_ingest -- memory 127.0.0.1:8082
//! wrk -t2 -c64 -d20s --latency -s benches/post.lua http://127.0.0.1:8081/api/v1/webhook/github
//! ```
//!
//! `KAFKA_BROKERS` (default `127.0.0.1:9092`) and `KAFKA_TOPIC_PREFIX` (default `bench.`) pick
//! the cluster and topic; `KAFKA_SET="linger.ms=1,..."` adds librdkafka properties and
//! `KAFKA_PRODUCERS` sets the number of producer instances.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::net::SocketAddr;

use axum::Router;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::{IngestService, Routing, Subscriber};
use firefly_webhook_kafka::{KafkaBroker, KafkaConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let transport = args.next().unwrap_or_else(|| "kafka".into());
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8081".into())
        .parse()
        .expect("listen address");
    let prefix = std::env::var("KAFKA_TOPIC_PREFIX").unwrap_or_else(|_| "bench.".into());

    let ingest = match transport.as_str() {
        "kafka" => {
            let brokers =
                std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
            let mut config = KafkaConfig::from_brokers(brokers);
            // Extra librdkafka properties for experiments: KAFKA_SET="linger.ms=1,batch.num.messages=500".
            for pair in std::env::var("KAFKA_SET").unwrap_or_default().split(',') {
                if let Some((k, v)) = pair.split_once('=') {
                    config = config.set(k.trim(), v.trim());
                }
            }
            if let Ok(n) = std::env::var("KAFKA_PRODUCERS") {
                config.producers = n.parse().expect("KAFKA_PRODUCERS");
            }
            let broker = KafkaBroker::connect(config)
                .await
                .expect("kafka is reachable");
            IngestService::new(broker.publisher())
        }
        "memory" => {
            let broker = MemoryBroker::new(100_000);
            let mut subscriber = broker.subscriber_all();
            // Drain like a worker would, so the queue never fills up.
            tokio::spawn(async move {
                while let Some(Ok(delivery)) = subscriber.next().await {
                    let _ = delivery.ack().await;
                }
            });
            IngestService::new(broker.publisher())
        }
        other => panic!("unknown transport {other}: kafka or memory"),
    }
    .routing(Routing::provider().prefix(prefix));

    let app = Router::new().route_service("/api/v1/webhook/{provider}", ingest);
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    eprintln!("kafka_ingest: {transport} on http://{listen}/api/v1/webhook/{{provider}}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .unwrap();
}
