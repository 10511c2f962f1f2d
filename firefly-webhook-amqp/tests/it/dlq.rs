//! `dlq::DeadLetters`: a worker dead-letters events, an operator lists, replays and purges them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::{
    EventId, FailureCategory, Outcome, ProcessError, Publisher, WebhookEvent, Worker, processor_fn,
};
use firefly_webhook_amqp::AmqpBroker;
use firefly_webhook_amqp::dlq::{DeadLetters, REPLAYED_AT};
use firefly_webhook_amqp::lapin::types::{AMQPValue, ShortString};
use tokio::sync::{mpsc, watch};

use crate::{Scope, sample, subscribe, within};

type Counts = Arc<Mutex<HashMap<EventId, u32>>>;

/// A worker on `destination` whose processor fails permanently until `fixed`, then counts
/// each event it processes. Stops when `stop` is set.
async fn worker(
    broker: &AmqpBroker,
    destination: &'static str,
    fixed: &Arc<AtomicBool>,
    counts: &Counts,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let subscriber = subscribe(broker, [destination]).await;
    let (fixed, counts) = (Arc::clone(fixed), Arc::clone(counts));
    let worker = Worker::builder(subscriber)
        .concurrency(8)
        .build(processor_fn(move |event, _| {
            let (fixed, counts, id) = (Arc::clone(&fixed), Arc::clone(&counts), event.id);
            async move {
                if !fixed.load(Ordering::Acquire) {
                    return Err(ProcessError::permanent("boom"));
                }
                *counts.lock().unwrap().entry(id).or_default() += 1;
                Ok(Outcome::Processed)
            }
        }));
    let mut stop = stop;
    tokio::spawn(worker.run_until(async move {
        let _ = stop.wait_for(|s| *s).await;
    }))
}

async fn count(dlq: &DeadLetters, destination: &str) -> usize {
    dlq.list(destination, |_| true).await.unwrap().len()
}

async fn wait_for_dead_letters(dlq: &DeadLetters, destination: &str, n: usize) {
    within(async {
        while count(dlq, destination).await < n {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(count(dlq, destination).await, n);
}

async fn wait_for_processed(counts: &Counts, n: usize) {
    within(async {
        while counts.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn dead_letters_are_listed_replayed_once_and_leave_the_queue() {
    let scope = Scope::new(&["work"]).await;
    let broker = scope.broker().await;
    let fixed = Arc::new(AtomicBool::new(false));
    let counts = Counts::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = worker(&broker, "work", &fixed, &counts, stop_rx).await;

    let mut sent = Vec::new();
    for i in 0..50 {
        // Distinct bodies: the worker's idempotency keys are body digests.
        let event = WebhookEvent::new("github", format!("{{\"n\":{i}}}"));
        sent.push(event.id);
        broker.publisher().publish("work", event).await.unwrap();
    }
    let dlq = DeadLetters::connect(scope.config.clone()).await.unwrap();
    wait_for_dead_letters(&dlq, "work", 50).await;

    let listed = dlq.list("work", |_| true).await.unwrap();
    assert_eq!(listed.len(), 50, "listing returns every message");
    for letter in &listed {
        let dl = letter.dead_letter.as_ref().expect("dead-letter attributes");
        assert_eq!(dl.category, FailureCategory::Unrecoverable);
        assert_eq!(dl.reason, "boom");
        assert_eq!(dl.attempts, 1);
        assert_eq!(dl.destination, "work");
        assert_eq!(letter.provider(), Some("github"));
        assert!(sent.contains(&letter.id().unwrap()));
    }
    let dlq_name = scope.config.dead_letter_queue("work");
    // Listing removes nothing: the messages are ready again once the broker took them back.
    within(async {
        while scope.depth(&dlq_name).await != 50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // A dry run changes nothing.
    let mut rehearsal = dlq.open("work").await.unwrap().dry_run(true);
    assert_eq!(rehearsal.len(), 50);
    while let Some(letter) = rehearsal.next().await.unwrap() {
        rehearsal.replay(&letter).await.unwrap();
    }
    rehearsal.close().await;
    assert_eq!(count(&dlq, "work").await, 50);

    fixed.store(true, Ordering::Release);
    // Interrupted by a limit.
    let first = dlq.replay("work", |_| true, Some(20)).await.unwrap();
    assert_eq!((first.handled, first.skipped, first.failed), (20, 30, 0));
    wait_for_processed(&counts, 20).await;
    assert_eq!(count(&dlq, "work").await, 30);

    // Interrupted by dropping the task in the middle of replaying.
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let task = {
        let dlq = dlq.clone();
        tokio::spawn(async move {
            let mut cursor = dlq.open("work").await.unwrap();
            while let Some(letter) = cursor.next().await.unwrap() {
                cursor.replay(&letter).await.unwrap();
                let _ = progress_tx.send(());
            }
        })
    };
    for _ in 0..5 {
        within(progress.recv()).await.unwrap();
    }
    task.abort();
    let _ = task.await;

    // Run again: everything left comes back.
    let rest = within(async {
        // The aborted cursor's connection may take a moment to give its messages back.
        loop {
            let rest = dlq.replay("work", |_| true, None).await.unwrap();
            if scope.depth(&dlq_name).await == 0 {
                return rest;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(rest.failed, 0);
    wait_for_processed(&counts, 50).await;
    assert_eq!(count(&dlq, "work").await, 0);

    // Give duplicates, if any, the time to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.len(), 50);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert!(sent.iter().all(|id| counts.contains_key(id)));

    let _ = stop_tx.send(true);
    running.await.unwrap();
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn replayed_messages_keep_id_body_and_headers_and_carry_the_mark() {
    let scope = Scope::new(&["mark"]).await;
    let broker = scope.broker().await;
    let fixed = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = worker(&broker, "mark", &fixed, &Counts::default(), stop_rx).await;
    let original = sample("github");
    broker
        .publisher()
        .publish("mark", original.clone())
        .await
        .unwrap();
    let dlq = DeadLetters::new(scope.config.clone()).unwrap();
    wait_for_dead_letters(&dlq, "mark", 1).await;
    // Stop consuming, so the replayed copy stays in the queue for us to read.
    let _ = stop_tx.send(true);
    running.await.unwrap();

    let summary = dlq.replay("mark", |_| true, None).await.unwrap();
    assert_eq!(summary.handled, 1);
    let copy = scope.get(&scope.config.queue("mark")).await;
    let table = copy.delivery.properties.headers().clone().unwrap();
    let names: Vec<&str> = table.inner().keys().map(ShortString::as_str).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("cloudEvents:deadletter"))
    );
    assert!(!names.contains(&"cloudEvents:attempt"));
    assert!(matches!(
        table.inner().get("http_x-multi"),
        Some(AMQPValue::FieldArray(values)) if values.as_slice().len() == 2
    ));
    let Some(AMQPValue::LongString(mark)) = table.inner().get(REPLAYED_AT) else {
        panic!("no replay mark: {names:?}");
    };
    assert!(mark.as_bytes().ends_with(b"Z"));
    assert_eq!(copy.delivery.data, original.body.to_vec());
    let id = original.id.to_string();
    assert_eq!(
        copy.delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str),
        Some(id.as_str())
    );
    assert_eq!(count(&dlq, "mark").await, 0);
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn purge_removes_only_what_the_filter_selects() {
    let scope = Scope::new(&["purge"]).await;
    let broker = scope.broker().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let never = Arc::new(AtomicBool::new(false));
    let running = worker(&broker, "purge", &never, &Counts::default(), stop_rx).await;
    for provider in ["github", "stripe", "github"] {
        let event = WebhookEvent::new(
            provider,
            format!("{{\"p\":\"{provider}\",\"r\":{}}}", fastrand()),
        );
        broker.publisher().publish("purge", event).await.unwrap();
    }
    let dlq = DeadLetters::new(scope.config.clone()).unwrap();
    wait_for_dead_letters(&dlq, "purge", 3).await;
    let _ = stop_tx.send(true);
    running.await.unwrap();

    let summary = dlq
        .purge("purge", |l| l.provider() == Some("github"))
        .await
        .unwrap();
    assert_eq!(
        (summary.handled, summary.skipped, summary.blocked),
        (2, 1, 0)
    );
    let left = dlq.list("purge", |_| true).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].provider(), Some("stripe"));
    // Nothing was replayed.
    assert_eq!(scope.depth(&scope.config.queue("purge")).await, 0);
    scope.cleanup().await;
}

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn a_destination_without_a_dead_letter_queue_is_empty() {
    let scope = Scope::new(&[]).await;
    let dlq = DeadLetters::connect(scope.config.clone()).await.unwrap();
    let mut cursor = dlq.open("never-declared").await.unwrap();
    assert!(cursor.is_empty());
    assert!(cursor.next().await.unwrap().is_none());
    cursor.close().await;
    scope.cleanup().await;
}

fn fastrand() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_fields().0)
}
