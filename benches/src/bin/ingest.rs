//! The gateway on the memory transport, as `examples/gateway` runs it: an axum app with its own
//! route, `IngestLayer` in front, and a consumer task that drains and acknowledges every
//! delivery (without logging each one). Listens on `FIREFLY_LISTEN` (default `127.0.0.1:8080`).
//!
//! For diagnosis, `FIREFLY_BENCH_PUBLISHER=discard` replaces the broker and its consumer with a
//! publisher that confirms and drops every event, isolating the HTTP ingest path's own cost;
//! `FIREFLY_BENCH_WATCH=1` prints the deepest backlog of the `github` queue every second.
//!
//! `FIREFLY_BENCH_TELEMETRY=on` installs the gateway's own observability, through the same
//! `stack::Telemetry::install`: the Prometheus recorder with the gateway's histogram buckets
//! and its upkeep every second (no listener: nothing scrapes during the run), and the `tracing`
//! subscriber at the gateway's default level (`info`, text lines to stderr), so that
//! `scripts/bench` measures what metrics and tracing cost in the gateway. For diagnosis,
//! `metrics` or `tracing` installs one of the two (the recorder configured as the gateway's),
//! and `summary` the recorder with the exporter's default histograms (summaries, whose
//! quantile sketches the upkeep folds every sample into).
//!
//! `FIREFLY_BENCH_EDGE=on` serves through `firefly_webhook::serve::Server` with its default
//! limits (header, idle and request timeouts, connection cap, HTTP/2 limits), as the gateway
//! does, instead of plain `axum::serve`, which enforces none of them. The ingest service's own
//! limits (in-flight cap, body byte budget, body timeout) are on in both cases: they cannot be
//! switched off.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use firefly_webhook::health::Liveness;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::{
    IngestLayer, IngestService, PublishError, Publisher, Subscriber, WebhookEvent, async_trait,
};

/// The same allocator as the gateway, so that the comparison is of the code, not of the
/// allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let telemetry = std::env::var("FIREFLY_BENCH_TELEMETRY").unwrap_or_default();
    let _telemetry = match telemetry.as_str() {
        "on" => {
            let settings = stack::Settings::from_env(stack::Defaults::GATEWAY)
                .map_err(std::io::Error::other)?;
            Some(
                stack::Telemetry::install(&settings, "firefly-bench")
                    .map_err(std::io::Error::other)?,
            )
        }
        "metrics" => {
            stack::install_recorder(stack::recorder().map_err(std::io::Error::other)?)
                .map_err(std::io::Error::other)?;
            None
        }
        "summary" => {
            stack::install_recorder(metrics_exporter_prometheus::PrometheusBuilder::new())
                .map_err(std::io::Error::other)?;
            None
        }
        "tracing" => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
                .with_writer(std::io::stderr)
                .init();
            None
        }
        _ => None,
    };
    let broker = MemoryBroker::new(10_000);

    let mut subscriber = broker.subscriber_all();
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
    if std::env::var("FIREFLY_BENCH_EDGE").is_ok_and(|v| v == "on") {
        firefly_webhook::serve::Server::new(listener)
            .serve(app)
            .await;
        return Ok(());
    }
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
