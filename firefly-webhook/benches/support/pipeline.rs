//! Throughput of the whole memory pipeline on one core: memory broker → worker → idempotency
//! (memory store) → retry → a no-op processor → ack. Shared by two bench targets, which differ
//! only in their global allocator:
//!
//! - `cargo bench -p firefly-webhook --bench pipeline`: mimalloc, as the gateway ships it;
//! - `cargo bench -p firefly-webhook --bench pipeline-system`: the system allocator (glibc's
//!   on Linux), as an application that embeds the worker and keeps its default gets.
//!
//! The backlog is published before the clock starts. Most rows publish 20,000 events, more than
//! the CPU caches hold, so the worker reads and frees events that left the caches long before
//! (the allocator's share differs between the two targets by a fifth or more); the `in cache`
//! row publishes 1,000, as the gateway's worker sees them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use firefly_webhook::http::HeaderMap;
use firefly_webhook::idempotency::{
    Claim, IdempotencyKeys, IdempotencyLayer, IdempotencyStore, MemoryStore,
};
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Outcome, processor_fn};
use firefly_webhook::worker::Worker;
use firefly_webhook::{Publisher, WebhookEvent};

/// The backlog of most rows: some 50 MB of events, more than the CPU caches hold, so the worker
/// reads each event from memory, as one catching up after a pause does.
const EVENTS: u64 = 20_000;

/// The backlog of the `in cache` row: some 2.5 MB, which the last-level cache holds. The
/// gateway's in-process worker takes each event within a scheduler turn of its publish, while
/// it is still cached: this row is that steady state.
const CACHED: u64 = 1_000;

/// The memory store's default capacity.
const CAPACITY: usize = 50_000;

/// Delivery ids never used before: a store shared by the runs sees only new keys.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn events(n: u64, body: &'static [u8]) -> Vec<WebhookEvent> {
    let first = NEXT_ID.fetch_add(n, Ordering::Relaxed);
    (first..first + n)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert("content-type", "application/json".parse().unwrap());
            h.insert("user-agent", "GitHub-Hookshot/abc".parse().unwrap());
            h.insert("x-github-event", "push".parse().unwrap());
            h.insert("x-github-delivery", format!("d-{i}").parse().unwrap());
            // GitHub events are keyed by their body: each event needs a body of its own.
            let mut own = format!("d-{i}:").into_bytes();
            own.extend_from_slice(body);
            WebhookEvent::new("github", own).with_headers(h)
        })
        .collect()
}

/// How the worker keys the events.
#[derive(Clone)]
enum Keys {
    /// No idempotency layer (the key is still computed for the processor's context).
    Off,
    /// The built-in rule for GitHub without a verifier: the SHA-256 digest of the body.
    BodyDigest,
    /// The `X-GitHub-Delivery` header, as a verifier-backed rule would: no digest of the
    /// body, what the pipeline costs besides it.
    DeliveryId,
    /// The same, with one store shared by every run and filled to its capacity beforehand:
    /// a long-running worker's steady state, in which every new key makes room for itself.
    DeliveryIdFull(Arc<MemoryStore>),
}

/// A store holding `CAPACITY` processed markers.
async fn full_store() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::with_capacity(CAPACITY));
    for i in 0..CAPACITY {
        let key = format!("github:earlier-{i}");
        let Claim::Acquired(token) = store.claim(&key, Duration::from_secs(60)).await.unwrap()
        else {
            unreachable!("a new key is acquired")
        };
        store
            .complete(&key, &token, Duration::from_secs(3600))
            .await
            .unwrap();
    }
    assert_eq!(store.len(), CAPACITY);
    store
}

fn delivery_id_rule() -> IdempotencyKeys {
    IdempotencyKeys::new().provider("github", |e| {
        e.header("x-github-delivery").map(str::to_owned)
    })
}

async fn run_once(batch: Vec<WebhookEvent>, keys: Keys, inline: bool) -> Duration {
    let broker = MemoryBroker::new(batch.len() + 1);
    let publisher = broker.publisher();
    for e in batch {
        publisher.publish("github", e).await.unwrap();
    }
    let mut builder = Worker::builder(broker.subscriber_all())
        .concurrency(64)
        .inline(inline);
    match keys {
        Keys::Off => builder = builder.without_idempotency(),
        Keys::BodyDigest => {}
        Keys::DeliveryId => {
            builder = builder
                .idempotency(IdempotencyLayer::new(MemoryStore::new()).keys(delivery_id_rule()));
        }
        Keys::DeliveryIdFull(store) => {
            let store: Arc<dyn IdempotencyStore> = store;
            builder =
                builder.idempotency(IdempotencyLayer::from_arc(store).keys(delivery_id_rule()));
        }
    }
    let worker = builder.build(processor_fn(|_e, _ctx| async { Ok(Outcome::Processed) }));
    // A closed broker still hands out what it holds, then ends the subscription: the worker
    // returns once every event is settled.
    broker.close();
    let started = Instant::now();
    worker.run().await;
    let elapsed = started.elapsed();
    assert!(broker.is_empty() && broker.in_flight() == 0);
    elapsed
}

fn pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body: &'static [u8] = Box::leak(vec![b'x'; 1500].into_boxed_slice());
    let rows = [
        ("idempotency+retry", Keys::BodyDigest, false, EVENTS),
        ("idempotency+retry, in task", Keys::BodyDigest, true, EVENTS),
        (
            "idempotency+retry, in task, in cache",
            Keys::BodyDigest,
            true,
            CACHED,
        ),
        ("retry only", Keys::Off, false, EVENTS),
        (
            "idempotency+retry, in task, keyed by delivery id",
            Keys::DeliveryId,
            true,
            EVENTS,
        ),
        (
            "idempotency+retry, in task, keyed by delivery id, store at capacity",
            Keys::DeliveryIdFull(rt.block_on(full_store())),
            true,
            EVENTS,
        ),
    ];
    // `PIPELINE_ONCE=<row>`: that row's backlog through the pipeline once, and no measurement:
    // `scripts/bench-instructions` counts its instructions under callgrind.
    if let Ok(once) = std::env::var("PIPELINE_ONCE") {
        let (_, keys, inline, backlog) = rows
            .into_iter()
            .find(|row| row.0 == once)
            .unwrap_or_else(|| panic!("PIPELINE_ONCE: no row named {once:?}"));
        rt.block_on(run_once(events(backlog, body), keys, inline));
        eprintln!("pipeline once: {backlog} events");
        return;
    }
    let mut group = c.benchmark_group(super::GROUP);
    group.sample_size(10);
    for (name, keys, inline, backlog) in rows {
        group.throughput(Throughput::Elements(backlog));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = events(backlog, body);
                    total += rt.block_on(run_once(batch, keys.clone(), inline));
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
