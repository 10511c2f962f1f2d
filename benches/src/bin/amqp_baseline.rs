//! Baseline for the ingest benchmark: a bare axum handler that publishes each body with lapin
//! (persistent, mandatory) and awaits its confirm; no event, no receipt, no ingest checks.
//!
//! ```text
//! cargo run --release -p firefly-bench --features amqp --bin amqp_baseline
//! ```
//!
//! `BENCH_MESSAGE` picks what is published, to the same durable queue `{prefix}{provider}`:
//!
//! - `bare` (default): straight to the queue through the default exchange, no headers and no
//!   properties but the delivery mode: the baseline the issue defines;
//! - `exchange`: the same, but through the topic exchange `{prefix}x` with routing key =
//!   provider, as `AmqpPublisher` routes;
//! - `same`: through the topic exchange with exactly the properties `AmqpPublisher` sends
//!   ([`firefly_webhook_amqp::properties`]: message id, timestamp, content type and the
//!   wire-format headers), so the broker does the same work per message as for the publisher.
//!
//! Environment: `BENCH_ADDR` (default `127.0.0.1:8082`), `FIREFLY_AMQP_URL`,
//! `BENCH_CHANNELS` (default 4), `BENCH_PREFIX` (default `bench.`). Declare the topology first
//! (run `amqp_ingest` once and publish through it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use firefly_webhook::WebhookEvent;
use firefly_webhook_amqp::lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use firefly_webhook_amqp::lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Message {
    Bare,
    Exchange,
    Same,
}

struct Pool {
    channels: Vec<Channel>,
    next: AtomicUsize,
    prefix: String,
    message: Message,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn publish(
    State(pool): State<Arc<Pool>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let channel = &pool.channels[pool.next.fetch_add(1, Ordering::Relaxed) % pool.channels.len()];
    let (exchange, routing_key, properties) = match pool.message {
        Message::Bare => (
            String::new(),
            format!("{}{provider}", pool.prefix),
            BasicProperties::default().with_delivery_mode(2),
        ),
        message => {
            let properties = if message == Message::Same {
                let event = WebhookEvent::new(provider.as_str(), body.clone())
                    .with_path(format!("/api/v1/webhook/{provider}"))
                    .with_source_ip(Some(std::net::Ipv4Addr::LOCALHOST.into()))
                    .with_headers(headers);
                firefly_webhook_amqp::properties(&event).unwrap()
            } else {
                BasicProperties::default().with_delivery_mode(2)
            };
            (format!("{}x", pool.prefix), provider, properties)
        }
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
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
    let message = match env("BENCH_MESSAGE", "bare").as_str() {
        "bare" => Message::Bare,
        "exchange" => Message::Exchange,
        "same" => Message::Same,
        other => panic!("BENCH_MESSAGE must be bare, exchange or same, not {other}"),
    };
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
        message,
    });
    let app = axum::Router::new()
        .route("/api/v1/webhook/{provider}", axum::routing::post(publish))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    eprintln!("amqp_baseline on http://{addr}");
    axum::serve(listener, app).await.unwrap();
}
