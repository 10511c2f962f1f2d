//! `dlq::DeadLetters`: a worker dead-letters events, an operator lists, replays and purges them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::{
    EventId, FailureCategory, Outcome, ProcessError, Publisher, WebhookEvent, Worker, processor_fn,
};
use firefly_webhook_kafka::KafkaBroker;
use firefly_webhook_kafka::dlq::{DeadLetters, Error, REPLAYED_AT};
use tokio::sync::{mpsc, watch};

use crate::common::{WAIT, group_config, header_list, raw_consumer, raw_next, unique};

type Counts = Arc<Mutex<HashMap<EventId, u32>>>;

/// A worker on `topic` whose processor fails permanently until `fixed`, then counts each event
/// it processes. Stops when `stop` is set.
fn worker(
    group: &str,
    topic: &str,
    fixed: &Arc<AtomicBool>,
    counts: &Counts,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut config = group_config(group);
    config.partitions = 3;
    let broker = KafkaBroker::new(config).unwrap();
    let subscriber = broker.subscriber([topic]).unwrap();
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

fn dead_letters(replay_group: &str) -> DeadLetters {
    let mut config = group_config("unused");
    config.partitions = 3;
    DeadLetters::new(config).unwrap().group(replay_group)
}

/// The number of dead letters of `topic` not replayed or purged yet.
async fn count(dlq: &DeadLetters, topic: &str) -> usize {
    dlq.list(topic, |_| true).await.unwrap().len()
}

/// Polls until `topic`'s dead-letter topic holds `n` records.
async fn wait_for_dead_letters(dlq: &DeadLetters, topic: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let len = count(dlq, topic).await;
        if len >= n {
            assert_eq!(len, n);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{len} of {n} dead letters"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_for_processed(counts: &Counts, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while counts.lock().unwrap().len() < n {
        assert!(tokio::time::Instant::now() < deadline, "not all processed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn distinct_event(i: usize) -> WebhookEvent {
    // Distinct bodies: the worker's idempotency keys are body digests.
    WebhookEvent::new("github", format!("{{\"n\":{i}}}"))
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn dead_letters_are_listed_replayed_once_and_leave_the_topic() {
    let (topic, group, replay_group) = (unique("dlq"), unique("g"), unique("replay"));
    let mut config = group_config(&group);
    config.partitions = 3;
    let publisher = KafkaBroker::new(config).unwrap().publisher();
    publisher.ensure_topic(&topic).await.unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let counts = Counts::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = worker(&group, &topic, &fixed, &counts, stop_rx);

    let mut sent = Vec::new();
    for i in 0..50 {
        let event = distinct_event(i);
        sent.push(event.id);
        publisher.publish(&topic, event).await.unwrap();
    }
    let dlq = dead_letters(&replay_group);
    wait_for_dead_letters(&dlq, &topic, 50).await;
    assert!(dlq.destinations().await.unwrap().contains(&topic));

    let listed = dlq.list(&topic, |_| true).await.unwrap();
    assert_eq!(listed.len(), 50);
    for letter in &listed {
        let dl = letter.dead_letter.as_ref().expect("dead-letter attributes");
        assert_eq!(dl.category, FailureCategory::Unrecoverable);
        assert_eq!(dl.reason, "boom");
        assert_eq!(dl.attempts, 1);
        assert_eq!(dl.destination, topic);
        assert_eq!(letter.provider(), Some("github"));
        assert!(sent.contains(&letter.id().unwrap()));
    }
    let none = dlq
        .list(&topic, |l| l.provider() == Some("stripe"))
        .await
        .unwrap();
    assert!(none.is_empty());

    // A dry run changes nothing.
    let mut rehearsal = dlq.open(&topic).await.unwrap().dry_run(true);
    while let Some(letter) = rehearsal.next().await.unwrap() {
        rehearsal.replay(&letter).await.unwrap();
    }
    rehearsal.close().await;
    assert_eq!(count(&dlq, &topic).await, 50);

    fixed.store(true, Ordering::Release);
    // Interrupted by a limit.
    let first = dlq.replay(&topic, |_| true, Some(20)).await.unwrap();
    assert_eq!((first.handled, first.skipped, first.failed), (20, 30, 0));
    wait_for_processed(&counts, 20).await;
    assert_eq!(count(&dlq, &topic).await, 30);

    // Interrupted by dropping the task in the middle of replaying.
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let task = {
        let (dlq, topic) = (dlq.clone(), topic.clone());
        tokio::spawn(async move {
            let mut cursor = dlq.open(&topic).await.unwrap();
            while let Some(letter) = cursor.next().await.unwrap() {
                cursor.replay(&letter).await.unwrap();
                let _ = progress_tx.send(());
            }
        })
    };
    for _ in 0..5 {
        progress.recv().await.unwrap();
    }
    task.abort();
    let _ = task.await;

    // Run again: everything left comes back.
    let rest = dlq.replay(&topic, |_| true, None).await.unwrap();
    assert_eq!(rest.failed, 0);
    assert!(rest.handled <= 25, "{rest:?}");
    wait_for_processed(&counts, 50).await;
    assert_eq!(count(&dlq, &topic).await, 0);

    // Give duplicates, if any, the time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.len(), 50);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert!(sent.iter().all(|id| counts.contains_key(id)));

    let _ = stop_tx.send(true);
    running.await.unwrap();
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn replayed_records_keep_id_body_and_headers_and_carry_the_mark() {
    let (topic, replay_group) = (unique("mark"), unique("replay"));
    let dlq_topic = format!("{topic}.dlq");
    let config = group_config("unused");
    let publisher = KafkaBroker::new(config).unwrap().publisher();
    // A dead letter as a subscriber writes it: the original record plus the attributes.
    let original = crate::common::event("github");
    let mut headers =
        firefly_webhook::wire::encode(&original, firefly_webhook::wire::Binding::KAFKA);
    headers.push(("ce_attempt".into(), "4".into()));
    let failure = firefly_webhook::DeadLetter::new(
        "boom",
        FailureCategory::Processing,
        4,
        "transient",
        topic.as_str(),
    );
    headers.extend(failure.encode(firefly_webhook::wire::Binding::KAFKA));
    produce(&dlq_topic, &original.body, &headers).await;
    publisher.ensure_topic(&topic).await.unwrap();
    let watcher = raw_consumer(&topic);

    let dlq = dead_letters(&replay_group);
    let mut cursor = dlq.open(&topic).await.unwrap();
    assert_eq!(cursor.len(), 1);
    let letter = cursor.next().await.unwrap().unwrap();
    assert_eq!(letter.dead_letter.as_ref().unwrap().attempts, 4);
    cursor.replay(&letter).await.unwrap();
    assert!(cursor.next().await.unwrap().is_none());
    cursor.close().await;

    let replayed = raw_next(&watcher).await;
    let list = header_list(&replayed);
    let value = |name: &str| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(value("ce_id"), Some(original.id.to_string()));
    assert_eq!(value("ce_attempt"), None);
    assert!(list.iter().all(|(n, _)| !n.starts_with("ce_deadletter")));
    assert_eq!(
        list.iter().filter(|(n, _)| n == "http_x-multi").count(),
        2,
        "repeated headers stay repeated"
    );
    let mark = value(REPLAYED_AT).unwrap();
    assert!(mark.ends_with('Z') && mark.len() == 20, "{mark}");
    assert_eq!(
        firefly_webhook_kafka::rdkafka::Message::payload(&replayed),
        Some(&original.body[..])
    );
    assert_eq!(count(&dlq, &topic).await, 0);
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn filters_remove_only_leading_runs_and_purge_needs_no_replay() {
    let (topic, replay_group) = (unique("purge"), unique("replay"));
    let dlq_topic = format!("{topic}.dlq");
    // One partition, in this order: github, github, stripe, github.
    for provider in ["github", "github", "stripe", "github"] {
        let event = WebhookEvent::new(provider, "{}");
        let mut headers =
            firefly_webhook::wire::encode(&event, firefly_webhook::wire::Binding::KAFKA);
        let failure =
            firefly_webhook::DeadLetter::new("x", FailureCategory::Timeout, 2, "timeout", &topic);
        headers.extend(failure.encode(firefly_webhook::wire::Binding::KAFKA));
        produce(&dlq_topic, b"{}", &headers).await;
    }
    let dlq = dead_letters(&replay_group);
    let github = |l: &firefly_webhook_kafka::dlq::DeadLettered| l.provider() == Some("github");

    let summary = dlq.purge(&topic, github).await.unwrap();
    assert_eq!(
        (summary.handled, summary.skipped, summary.blocked),
        (2, 1, 1)
    );
    let left: Vec<_> = dlq
        .list(&topic, |_| true)
        .await
        .unwrap()
        .iter()
        .map(|l| l.provider().unwrap().to_owned())
        .collect();
    assert_eq!(left, ["stripe", "github"]);

    // The blocked record cannot be removed while the one before it stays.
    let mut cursor = dlq.open(&topic).await.unwrap();
    let stripe = cursor.next().await.unwrap().unwrap();
    let behind = cursor.next().await.unwrap().unwrap();
    assert!(!cursor.is_removable(&behind));
    assert!(matches!(
        cursor.remove(&behind).await,
        Err(Error::Blocked(_))
    ));
    cursor.remove(&stripe).await.unwrap();
    cursor.remove(&behind).await.unwrap();
    cursor.close().await;
    assert_eq!(count(&dlq, &topic).await, 0);
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn a_destination_without_dead_letters_is_empty() {
    let dlq = dead_letters(&unique("replay"));
    let cursor = dlq.open(&unique("nothing")).await.unwrap();
    assert!(cursor.is_empty());
    cursor.close().await;
}

/// Writes one record with `headers` to `topic`, as a subscriber's dead-lettering does.
async fn produce(topic: &str, body: &[u8], headers: &[firefly_webhook::wire::WireHeader]) {
    use firefly_webhook_kafka::rdkafka::ClientConfig;
    use firefly_webhook_kafka::rdkafka::message::{Header, OwnedHeaders};
    use firefly_webhook_kafka::rdkafka::producer::{FutureProducer, FutureRecord};

    // Create it with one partition, so the order of the records is the order written.
    let mut config = group_config("unused");
    config.partitions = 1;
    KafkaBroker::new(config)
        .unwrap()
        .publisher()
        .ensure_topic(topic)
        .await
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", crate::common::BROKERS)
        .create()
        .unwrap();
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header {
            key: key.as_str(),
            value: Some(value.as_ref()),
        });
    }
    producer
        .send(
            FutureRecord::<[u8], [u8]>::to(topic)
                .payload(body)
                .headers(owned),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn replaying_to_a_worker_that_still_fails_does_not_loop() {
    let (topic, group, replay_group) = (unique("loop"), unique("g"), unique("replay"));
    let mut config = group_config(&group);
    config.partitions = 3;
    let publisher = KafkaBroker::new(config).unwrap().publisher();
    publisher.ensure_topic(&topic).await.unwrap();
    let never = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = worker(&group, &topic, &never, &Counts::default(), stop_rx);
    for i in 0..5 {
        publisher.publish(&topic, distinct_event(i)).await.unwrap();
    }
    let dlq = dead_letters(&replay_group);
    wait_for_dead_letters(&dlq, &topic, 5).await;

    // Each dead letter is replayed once, although copies come back while the pass runs.
    let summary = dlq.replay(&topic, |_| true, None).await.unwrap();
    assert_eq!(summary.handled, 5, "{summary:?}");
    // They fail again and are dead-lettered again, carrying the replay mark.
    wait_for_dead_letters(&dlq, &topic, 5).await;
    for letter in dlq.list(&topic, |_| true).await.unwrap() {
        assert!(
            letter.headers.iter().any(|(n, _)| n == REPLAYED_AT),
            "{:?}",
            letter.headers
        );
    }
    let _ = stop_tx.send(true);
    running.await.unwrap();
}
