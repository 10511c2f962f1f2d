//! Heap allocations per webhook, counted by a counting global allocator (`stats_alloc` around
//! the system allocator), on one thread so that every count is the event's own:
//!
//! 1. the ingest service: a request with a fresh delivery id and a 1.5 kB JSON body → checks →
//!    `WebhookEvent` → memory publish → the JSON receipt, read to the end (no HTTP server: what
//!    hyper allocates per request is not counted);
//! 2. the pipeline those requests feed: memory subscriber → worker → idempotency (memory
//!    store) → retry → a no-op processor → ack, and the same without idempotency.
//!
//! `cargo bench -p firefly-webhook --bench allocations` (the counts do not depend on the
//! machine; `pipeline` measures the time).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use bytes::Bytes;
use firefly_webhook::IngestService;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Outcome, processor_fn};
use firefly_webhook::worker::Worker;
use http::Request;
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const EVENTS: usize = 5_000;

fn request(i: usize, body: &[u8]) -> Request<Full<Bytes>> {
    // GitHub events are keyed by their body: each request has a body of its own.
    let mut own = format!("{{\"delivery\":{i},").into_bytes();
    own.extend_from_slice(&body[1..]);
    Request::post("/api/v1/webhook/github")
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/abc")
        .header("x-github-event", "push")
        .header("x-github-delivery", format!("d-{i}"))
        .body(Full::new(Bytes::from(own)))
        .unwrap()
}

/// Allocations, and bytes allocated, per event while `f` runs.
async fn counted<F: Future<Output = ()>>(f: F) -> (f64, f64) {
    let region = Region::new(GLOBAL);
    f.await;
    let change = region.change();
    #[allow(clippy::cast_precision_loss)]
    let per = |n: usize| n as f64 / EVENTS as f64;
    (per(change.allocations), per(change.bytes_allocated))
}

/// Fills a broker through the ingest service; the allocations per request.
async fn ingest(broker: &MemoryBroker, body: &[u8]) -> (f64, f64) {
    let service = IngestService::new(broker.publisher());
    let requests: Vec<_> = (0..EVENTS).map(|i| request(i, body)).collect();
    counted(async {
        for req in requests {
            let response = service.clone().oneshot(req).await.unwrap();
            assert_eq!(response.status(), 202);
            response.into_body().collect().await.unwrap();
        }
    })
    .await
}

/// Drains the broker through a worker; the allocations per event.
async fn pipeline(broker: MemoryBroker, idempotency: bool, inline: bool) -> (f64, f64) {
    let mut builder = Worker::builder(broker.subscriber_all())
        .concurrency(64)
        .inline(inline);
    if !idempotency {
        builder = builder.without_idempotency();
    }
    let worker = builder.build(processor_fn(|_e, _ctx| async { Ok(Outcome::Processed) }));
    broker.close();
    let counts = counted(worker.run()).await;
    assert!(broker.is_empty() && broker.in_flight() == 0);
    counts
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (say, a filter) has no meaning here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut body =
        br#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","#
            .to_vec();
    body.resize(1_490, b' ');
    body.extend_from_slice(b"\"x\":1}");

    println!(
        "heap allocations per webhook ({EVENTS} webhooks, {}-byte JSON body)",
        body.len()
    );
    println!("{:<62} {:>8} {:>10}", "", "allocs", "bytes");
    let mut rows = Vec::new();
    for (name, idempotency, inline) in [
        (
            "pipeline: subscriber -> idempotency -> retry -> no-op -> ack",
            true,
            false,
        ),
        (
            "the same pipeline, deliveries in the worker's task",
            true,
            true,
        ),
        ("pipeline without idempotency", false, false),
    ] {
        let broker = MemoryBroker::new(EVENTS + 1);
        let ingested = rt.block_on(ingest(&broker, &body));
        if rows.is_empty() {
            rows.push(("ingest service: request -> publish -> receipt", ingested));
        }
        let processed = rt.block_on(pipeline(broker, idempotency, inline));
        rows.push((name, processed));
    }
    for (name, (allocs, bytes)) in rows {
        println!("{name:<62} {allocs:>8.1} {bytes:>10.0}");
    }
}
