//! A downstream service: consumes the webhooks the gateway published and runs its own
//! [`WebhookProcessor`](firefly_webhook::process::WebhookProcessor) behind idempotency, retry
//! and dead-lettering. See README.md.
#![allow(clippy::print_stderr)]

mod processor;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::{BoxError, Publisher, Subscriber, WebhookEvent, http};
use stack::{Defaults, Settings, Telemetry, Transport};

use crate::processor::OrderProcessor;

/// This service's defaults: consumer group `orders`, destinations `github` and `stripe`.
const DEFAULTS: Defaults = Defaults {
    group: "orders",
    destinations: Some(&["github", "stripe"]),
};

fn main() -> std::process::ExitCode {
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

/// The configured transport's subscriber; on the memory transport (no broker) an embedded
/// broker with a few sample webhooks.
async fn subscriber(
    settings: &Settings,
    destinations: &[String],
) -> Result<Box<dyn Subscriber>, BoxError> {
    let transport = Transport::connect(settings).await?;
    if let Some(broker) = transport.memory() {
        demo_events(broker).await?;
    }
    transport.subscriber(destinations)
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
    let settings = Settings::from_env(DEFAULTS)?;
    let telemetry = Telemetry::install(&settings, "worker")?;
    // No HTTP server of its own: metrics only when asked for, on their own listener.
    if let Some(addr) = settings.metrics_listen {
        let bound = telemetry.serve(addr, None).await?;
        tracing::info!(listen = %bound, "metrics at GET /metrics");
    }
    let destinations = settings.destinations.clone().unwrap_or_default();
    let subscriber = subscriber(&settings, &destinations).await?;
    let processor = Arc::new(OrderProcessor::default());
    let mut builder = telemetry.trace_worker(settings.worker(subscriber));
    if let Some(store) = stack::idempotency_store(&settings).await? {
        builder = builder.idempotency(store);
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
    telemetry.shutdown().await;
    Ok(())
}
