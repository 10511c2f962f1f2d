//! The gateway on the memory transport, as `examples/gateway` runs it: an axum app with its own
//! route, `IngestLayer` in front, and a consumer task that drains and acknowledges every
//! delivery (without logging each one). Listens on `FIREFLY_LISTEN` (default `127.0.0.1:8080`).
//!
//! For diagnosis, `FIREFLY_BENCH_PUBLISHER=discard` replaces the broker and its consumer with a
//! publisher that confirms and drops every event, isolating the HTTP ingest path's own cost;
//! `FIREFLY_BENCH_WATCH=1` prints the deepest backlog of the `github` queue every second.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use firefly_webhook::health::Liveness;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::{
    IngestLayer, IngestService, PublishError, Publisher, Subscriber, WebhookEvent, async_trait,
};

/// Confirms and drops every event.
struct Discard;

#[async_trait]
impl Publisher for Discard {
    async fn publish(&self, _destination: &str, _event: WebhookEvent) -> Result<(), PublishError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("FIREFLY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let broker = MemoryBroker::new(10_000);

    let mut subscriber = broker.subscriber();
    tokio::spawn(async move {
        while let Some(delivery) = subscriber.next().await {
            if let Ok(delivery) = delivery {
                // Acking the memory transport cannot fail.
                let _ = delivery.ack().await;
            }
        }
    });

    if std::env::var_os("FIREFLY_BENCH_WATCH").is_some() {
        // Diagnosis: the deepest backlog seen in each second, on stderr.
        let broker = broker.clone();
        tokio::spawn(async move {
            loop {
                let mut deepest = 0;
                for _ in 0..100 {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    deepest = deepest.max(broker.len("github"));
                }
                eprintln!("backlog {deepest}");
            }
        });
    }

    let ingest = if std::env::var("FIREFLY_BENCH_PUBLISHER").is_ok_and(|v| v == "discard") {
        IngestService::new(Discard)
    } else {
        IngestService::new(broker.publisher())
    };
    let app = Router::new()
        .route("/", get(|| async { "firefly-webhook gateway" }))
        .route_service("/health/live", Liveness)
        .layer(IngestLayer::from_service(ingest));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("ingest listening on {listen}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
