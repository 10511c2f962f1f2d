//! A webhook gateway: an axum app that mounts the ingest layer beside its own routes, publishes
//! to the embedded memory broker (or Kafka / RabbitMQ when built with those features) and runs
//! an in-process worker that logs every webhook it receives.
//!
//! ```text
//! cargo run -p gateway
//! curl -i -X POST localhost:8080/api/v1/webhook/github -H 'content-type: application/json' -d '{"zen":"hi"}'
//! ```
//!
//! Besides ingest it serves `GET /health/live`, `GET /health/ready`, `GET /openapi.json` and
//! `GET /metrics` (Prometheus; on `FIREFLY_METRICS_LISTEN` instead when that is set, to keep
//! it off a listener that faces the internet).
//!
//! Configuration: see the workspace README (`FIREFLY_*` variables).
#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use firefly_webhook::health::Liveness;
use firefly_webhook::process::{Context, Outcome, ProcessError, WebhookProcessor};
use firefly_webhook::{BoxError, IngestLayer, WebhookEvent, async_trait, http};
use stack::{Defaults, LIVE_PATH, OPENAPI_PATH, READY_PATH, Settings, Telemetry, Transport};
use tokio::sync::watch;

/// mimalloc: the gateway allocates a few dozen small blocks per webhook, on one thread and
/// frees them on another (ingest, then the worker); glibc's allocator spends a fifth of the
/// CPU on that under load (see the performance notes in the README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            correlation_id = %event.correlation_id,
            trace_id = event.trace.as_ref().map(|t| tracing::field::display(t.trace_id())),
            "webhook received"
        );
        Ok(Outcome::Processed)
    }
}

fn main() -> std::process::ExitCode {
    // Refused before anything connects: a broker needs no reachability for this.
    let config =
        match Settings::from_env(Defaults::GATEWAY).and_then(|c| c.check_ingest().map(|()| c)) {
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

async fn run(config: Settings) -> Result<(), BoxError> {
    let telemetry = Telemetry::install(&config, "gateway")?;
    let transport = Transport::connect(&config).await?;
    let publisher = config.publisher(&transport).await?;
    let ingest = telemetry.trace(config.ingest(Arc::clone(&publisher)));
    let readiness = config.readiness(transport.name(), publisher);
    let openapi: Arc<str> = stack::openapi(&ingest, config.metrics_listen.is_none())
        .to_json()?
        .into();
    let mut app = Router::new()
        .route(
            "/",
            get(|| async { "firefly-webhook gateway: POST /api/v1/webhook/{provider}\n" }),
        )
        .route(
            OPENAPI_PATH,
            get(move || {
                let body = String::from(&*openapi);
                async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route_service(LIVE_PATH, Liveness)
        .route_service(READY_PATH, readiness.clone());
    // Metrics tell provider names and volumes: where the main listener faces the internet,
    // FIREFLY_METRICS_LISTEN moves them to an address only the scraper reaches.
    match config.metrics_listen {
        None => app = app.merge(telemetry.routes(Some(readiness))),
        Some(addr) => {
            let bound = telemetry.serve(addr, Some(readiness)).await?;
            tracing::info!(listen = %bound, "metrics on their own listener");
        }
    }
    let app = app.layer(IngestLayer::from(ingest));

    let (stop_tx, stop_rx) = watch::channel(false);
    let store = stack::idempotency_store(&config).await?;
    let worker = worker_subscriber(&config, &transport)?.map(|subscriber| {
        let mut builder = telemetry.trace_worker(config.worker(subscriber));
        if let Some(store) = store {
            builder = builder.idempotency(store);
        }
        let worker = builder.build(LogProcessor);
        let mut stop = stop_rx.clone();
        tokio::spawn(worker.run_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });

    let server = config.server().await?;
    tracing::info!(
        listen = %server.local_addr()?,
        transport = transport.name(),
        worker = worker.is_some(),
        "gateway ready: POST /api/v1/webhook/{{provider}}"
    );
    server.serve_until(app, shutdown_signal()).await;

    // The server has finished its in-flight requests (or given up on them after
    // FIREFLY_SHUTDOWN_TIMEOUT); now let the worker drain.
    tracing::info!("server stopped");
    match (transport.memory(), worker) {
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
    telemetry.shutdown().await;
    Ok(())
}

/// What the in-process worker consumes, when it runs: everything on the memory transport;
/// on a broker, `FIREFLY_DESTINATIONS` (or the allowlisted providers).
fn worker_subscriber(
    config: &Settings,
    transport: &Transport,
) -> Result<Option<Box<dyn firefly_webhook::Subscriber>>, BoxError> {
    if !config.worker {
        return Ok(None);
    }
    if let Some(memory) = transport.memory() {
        return Ok(Some(Box::new(memory.subscriber_all())));
    }
    let Some(destinations) = &config.destinations else {
        tracing::info!(
            "in-process worker off: on a broker it needs FIREFLY_PROVIDERS or FIREFLY_DESTINATIONS to know what to consume"
        );
        return Ok(None);
    };
    transport.subscriber(destinations).map(Some)
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
    tracing::info!("shutting down: finishing the requests in progress");
}
