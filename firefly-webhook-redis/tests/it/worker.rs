//! End to end: four workers share one Redis; every key is processed exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::http::{HeaderMap, HeaderValue};
use firefly_webhook::idempotency::{IdempotencyConfig, IdempotencyLayer};
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::process::{Outcome, processor_fn};
use firefly_webhook::worker::Worker;
use firefly_webhook::{Publisher, WebhookEvent};
use tokio::sync::watch;

use crate::common::{cleanup, prefix, store};

const EVENTS: usize = 10_000;
const UNIQUE: usize = 7_000; // the other 30 % are redeliveries of these
const WORKERS: usize = 4;

fn event(delivery: &str) -> WebhookEvent {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-github-delivery",
        HeaderValue::from_str(delivery).unwrap(),
    );
    WebhookEvent::new("github", format!(r#"{{"delivery":"{delivery}"}}"#)).with_headers(headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis on 127.0.0.1:6379; run scripts/test"]
async fn four_workers_process_each_key_once() {
    let prefix = prefix();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let broker = MemoryBroker::new(EVENTS);
    let publisher = broker.publisher();
    // 7,000 keys and 3,000 redeliveries: 1,000 right behind their original (workers race for
    // them) and 2,000 at the end (they find the key completed).
    let mut deliveries = Vec::with_capacity(EVENTS);
    for n in 0..UNIQUE {
        deliveries.push(n);
        if n % 7 == 0 {
            deliveries.push(n);
        }
    }
    deliveries.extend((0..2_000).map(|j| (j * 7_919) % UNIQUE));
    assert_eq!(deliveries.len(), EVENTS);
    for n in deliveries {
        publisher
            .publish("github", event(&format!("{run}-{n}")))
            .await
            .unwrap();
    }

    let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut config = IdempotencyConfig::default();
    config.in_progress_retry = Duration::from_millis(50);
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            // One store per worker stands for one process with its own connections.
            let store = store(&prefix);
            let calls = Arc::clone(&calls);
            let worker = Worker::builder(broker.subscriber_all())
                .concurrency(32)
                .idempotency(IdempotencyLayer::new(store).config(config))
                .build(processor_fn(move |event, _ctx| {
                    let calls = Arc::clone(&calls);
                    let key = event
                        .header("x-github-delivery")
                        .unwrap_or_default()
                        .to_owned();
                    async move {
                        *calls.lock().unwrap().entry(key).or_default() += 1;
                        tokio::task::yield_now().await; // let duplicates race the claim
                        Ok(Outcome::Processed)
                    }
                }));
            let mut stop = stop_rx.clone();
            tokio::spawn(worker.run_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        })
        .collect();

    // Done when every key ran and the broker stayed idle past the in-progress retry delay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut idle_polls = 0;
    while idle_polls < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers did not drain the broker"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let all_ran = calls.lock().unwrap().len() == UNIQUE;
        if all_ran && broker.is_empty() && broker.in_flight() == 0 {
            idle_polls += 1;
        } else {
            idle_polls = 0;
        }
    }
    stop_tx.send(true).unwrap();
    for w in workers {
        w.await.unwrap();
    }

    let calls = std::mem::take(&mut *calls.lock().unwrap());
    assert_eq!(calls.len(), UNIQUE);
    let repeated: Vec<_> = calls.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "processed more than once: {repeated:?}"
    );
    assert!(broker.dead_letters("github").is_empty());
    cleanup(&prefix).await;
}
