//! Parked retries: a retry waits in its worker slot, so a Kafka worker holds at most
//! `concurrency` records whatever the failure rate, and a shutdown does not wait for it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::{
    EventId, Outcome, ProcessError, Publisher, RetryPolicy, WebhookEvent, Worker, processor_fn,
};
use firefly_webhook_kafka::KafkaBroker;
use firefly_webhook_kafka::dlq::DeadLetters;
use tokio::sync::watch;

use crate::common::{
    WAIT, committed, committed_until, group_config, next, publisher, subscriber, trace, unique,
};

const CONCURRENCY: usize = 4;
const EVENTS: usize = 240;
/// How long the downstream is down in the storm test.
const OUTAGE: Duration = Duration::from_secs(30);

fn distinct_event(i: usize) -> WebhookEvent {
    WebhookEvent::new("github", format!("{{\"n\":{i}}}"))
}

/// What the storm's processor saw.
#[derive(Default)]
struct Seen {
    /// Events that failed while the downstream was down.
    failed: Mutex<HashSet<EventId>>,
    failures: AtomicUsize,
    /// Successful runs per event.
    processed: Mutex<HashMap<EventId, u32>>,
}

/// Polls until `done` holds; panics (rather than hangs) if it never does.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs Kafka; run scripts/test"]
async fn a_failure_storm_holds_at_most_concurrency_events_and_loses_none() {
    trace();
    let (topic, group) = (unique("storm"), unique("g"));
    let publisher = publisher(3);
    publisher.ensure_topic(&topic).await.unwrap();

    let mut config = group_config(&group);
    config.partitions = 3;
    let subscriber = KafkaBroker::new(config)
        .unwrap()
        .subscriber([topic.as_str()])
        .unwrap();
    let held = subscriber.held();
    let healthy = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let (up, log) = (Arc::clone(&healthy), Arc::clone(&seen));
    // No pause breaker and no idempotency: the transport alone bounds what is held, and an
    // event processed twice would show. Every retry goes through the transport.
    let worker = Worker::builder(subscriber)
        .concurrency(CONCURRENCY)
        .without_pause()
        .without_idempotency()
        .retry(
            RetryPolicy::new()
                .max_attempts(u32::MAX)
                .backoff(Duration::from_millis(100), Duration::from_millis(400))
                .in_process_limit(Duration::ZERO),
        )
        .build(processor_fn(move |event, _| {
            let (up, log, id) = (Arc::clone(&up), Arc::clone(&log), event.id);
            async move {
                if !up.load(Ordering::Acquire) {
                    log.failed.lock().unwrap().insert(id);
                    log.failures.fetch_add(1, Ordering::AcqRel);
                    return Err(ProcessError::transient("downstream down"));
                }
                *log.processed.lock().unwrap().entry(id).or_default() += 1;
                Ok(Outcome::Processed)
            }
        }));
    let (stop, mut stopped) = watch::channel(false);
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));

    // Published while the downstream is down.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..EVENTS {
        let (publisher, topic) = (publisher.clone(), topic.clone());
        sends.spawn(async move { publisher.publish(&topic, distinct_event(i)).await });
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap().unwrap();
    }
    tokio::time::sleep(OUTAGE).await;
    healthy.store(true, Ordering::Release);
    let failed = seen.failed.lock().unwrap().len();
    let failures = seen.failures.load(Ordering::Acquire);

    until("every event processed after the outage", || {
        seen.processed.lock().unwrap().len() == EVENTS
    })
    .await;
    let total = i64::try_from(EVENTS).unwrap();
    let offsets = committed_until(&group, &topic, 3, |o| o.values().sum::<i64>() == total).await;
    stop.send_replace(true);
    tokio::time::timeout(WAIT, running)
        .await
        .expect("the worker stops")
        .unwrap();

    eprintln!(
        "outage: {failures} failures of {failed} events; held at most {} of {EVENTS} records",
        held.peak()
    );
    // The storm was real: records were waiting, and the ones pulled failed again and again.
    assert!(failed >= 1, "nothing failed");
    assert!(
        failures > failed,
        "{failures} failures of {failed} events: no retries"
    );
    // Nothing settles during the outage, so no record left and no new one came in past the
    // worker's concurrency.
    assert!(
        failed <= CONCURRENCY,
        "{failed} events pulled during the outage"
    );
    assert!(
        (1..=CONCURRENCY).contains(&held.peak()),
        "held at most {} records",
        held.peak()
    );
    assert_eq!(held.current(), 0, "the worker is gone: nothing held");

    let processed = seen.processed.lock().unwrap().clone();
    assert_eq!(processed.len(), EVENTS);
    let twice: Vec<_> = processed.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    assert_eq!(offsets.values().sum::<i64>(), total, "{offsets:?}");

    let mut dlq_config = group_config("unused");
    dlq_config.partitions = 3;
    let dead_letters = DeadLetters::new(dlq_config)
        .unwrap()
        .group(unique("replay"));
    let listed = dead_letters.list(&topic, |_| true).await.unwrap();
    assert!(listed.is_empty(), "{} dead-lettered", listed.len());
}

#[tokio::test]
#[ignore = "needs Kafka; run scripts/test"]
async fn a_shutdown_ends_a_long_retry_and_leaves_the_record_to_the_group() {
    trace();
    let (topic, group) = (unique("parked"), unique("g"));
    let sent = distinct_event(0);
    publisher(1).publish(&topic, sent.clone()).await.unwrap();

    let subscriber = subscriber(&group, &topic);
    let held = subscriber.held();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let hour = Duration::from_secs(3600);
    // Only the subscriber's stop can end the retry: neither the delay nor the shutdown
    // timeout runs out during the test.
    let worker = Worker::builder(subscriber)
        .concurrency(2)
        .without_pause()
        .shutdown_timeout(hour)
        .retry(
            RetryPolicy::new()
                .max_attempts(5)
                .backoff(hour, hour)
                .in_process_limit(Duration::ZERO),
        )
        .build(processor_fn(move |_, _| {
            counted.fetch_add(1, Ordering::AcqRel);
            async { Err::<Outcome, _>(ProcessError::transient("downstream down")) }
        }));
    let (stop, mut stopped) = watch::channel(false);
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));

    until("the first attempt", || {
        attempts.load(Ordering::Acquire) == 1
    })
    .await;
    assert_eq!(held.current(), 1, "the retry holds its record");
    stop.send_replace(true);
    tokio::time::timeout(WAIT, running)
        .await
        .expect("the shutdown waited for the hour-long retry")
        .unwrap();
    assert_eq!(attempts.load(Ordering::Acquire), 1);
    assert_eq!(held.current(), 0);
    let offsets = committed(&group, &topic, 1).await;
    assert!(
        matches!(offsets.get(&0), None | Some(0)),
        "committed past the unfinished record: {offsets:?}"
    );

    // The next member of the group gets the record again.
    let mut sub = crate::common::subscriber(&group, &topic);
    let again = next(&mut sub).await;
    assert_eq!(again.event.id, sent.id);
    again.ack().await.unwrap();
    let offsets = committed_until(&group, &topic, 1, |o| o.get(&0) == Some(&1)).await;
    assert_eq!(offsets.get(&0), Some(&1));
}
