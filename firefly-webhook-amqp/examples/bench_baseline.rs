//! Baseline for the ingest benchmark: a bare axum handler that publishes each body with lapin
//! (persistent, mandatory) straight to the durable queue `{prefix}{provider}` and awaits its
//! confirm; nothing else (no wire headers, no event, no receipt).
//!
//! ```text
//! cargo run --release -p firefly-webhook-amqp --example bench_baseline
//! ```
//! Environment: `BENCH_ADDR` (default `127.0.0.1:8082`), `FIREFLY_AMQP_URL`,
//! `BENCH_CHANNELS` (default 4), `BENCH_PREFIX` (default `bench.`), `BENCH_EXCHANGE` (publish
//! through this exchange with routing key = provider), `BENCH_HEADERS` (attach that many
//! 36-byte headers). Declare the queue first
//! (run `bench_ingest` once, or any publish through it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use firefly_webhook_amqp::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use firefly_webhook_amqp::lapin::types::{AMQPValue, FieldTable};
use firefly_webhook_amqp::lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
};

struct Pool {
    channels: Vec<Channel>,
    next: AtomicUsize,
    prefix: String,
    /// Publish through this exchange with routing key = provider instead of straight to the
    /// queue through the default exchange (for finding where the cost is).
    exchange: Option<String>,
    /// Extra headers to attach, to measure their cost on the broker.
    headers: Option<FieldTable>,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn publish(
    State(pool): State<Arc<Pool>>,
    Path(provider): Path<String>,
    body: Bytes,
) -> StatusCode {
    let channel = &pool.channels[pool.next.fetch_add(1, Ordering::Relaxed) % pool.channels.len()];
    let (exchange, routing_key) = match &pool.exchange {
        Some(exchange) => (exchange.as_str().into(), provider.as_str().into()),
        None => ("".into(), format!("{}{provider}", pool.prefix).into()),
    };
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if let Some(headers) = &pool.headers {
        properties = properties.with_headers(headers.clone());
    }
    let confirm = channel
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &body,
            properties,
        )
        .await;
    match confirm {
        Ok(confirm) => match confirm.await {
            Ok(Confirmation::Ack(None)) => StatusCode::ACCEPTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[tokio::main]
async fn main() {
    let addr = env("BENCH_ADDR", "127.0.0.1:8082");
    let url = env("FIREFLY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let mut channels = Vec::new();
    for _ in 0..env("BENCH_CHANNELS", "4").parse::<usize>().unwrap() {
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        channels.push(channel);
    }
    let pool = Arc::new(Pool {
        channels,
        next: AtomicUsize::new(0),
        prefix: env("BENCH_PREFIX", "bench."),
        exchange: std::env::var("BENCH_EXCHANGE").ok(),
        headers: std::env::var("BENCH_HEADERS").ok().map(|n| {
            let mut table = FieldTable::default();
            for i in 0..n.parse::<usize>().unwrap() {
                table.insert(
                    format!("cloudEvents:attribute{i}").into(),
                    AMQPValue::LongString("0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b".into()),
                );
            }
            table
        }),
    });
    let app = axum::Router::new()
        .route("/api/v1/webhook/{provider}", axum::routing::post(publish))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    eprintln!("bench_baseline on http://{addr}");
    axum::serve(listener, app).await.unwrap();
}
