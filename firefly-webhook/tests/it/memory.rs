//! The memory transport under its budget: every event it holds — queued, in flight, waiting
//! for a retry, dead-lettered — counts, and nothing grows past it.

use std::collections::HashMap;
use std::time::Duration;

use firefly_webhook::memory::{MemoryBroker, MemoryConfig, MemorySubscriber};
use firefly_webhook::{
    DeadLetter, Delivery, FailureCategory, PublishError, Publisher, Subscriber, WebhookEvent,
    metric,
};

use crate::worker_pause::Recorded;

fn event(body: &str) -> WebhookEvent {
    WebhookEvent::new("acme", body.to_owned())
}

/// What one event like `event(body)` costs in a queue named `destination`.
async fn footprint(destination: &str, body: &str) -> usize {
    let broker = MemoryBroker::new(1);
    broker
        .publisher()
        .publish(destination, event(body))
        .await
        .unwrap();
    broker.bytes()
}

fn broker(max_bytes: usize, queue_capacity: usize, dead_letters: usize) -> MemoryBroker {
    let mut config = MemoryConfig::default();
    config.max_bytes = max_bytes;
    config.queue_capacity = queue_capacity;
    config.dead_letters = dead_letters;
    MemoryBroker::with_config(config)
}

async fn next(subscriber: &mut MemorySubscriber) -> Delivery {
    tokio::time::timeout(Duration::from_secs(60), subscriber.next())
        .await
        .expect("a delivery within a minute")
        .expect("the subscription is open")
        .expect("no transport error")
}

fn record(destination: &str) -> DeadLetter {
    DeadLetter::new(
        "downstream said no",
        FailureCategory::Processing,
        3,
        "transient",
        destination,
    )
}

#[test]
fn the_default_budget_fits_a_512_mb_process() {
    let config = MemoryConfig::default();
    assert_eq!(config.max_bytes, 256 * 1024 * 1024);
    assert_eq!(config.dead_letters, 1_000);
    assert_eq!(config.queue_capacity, 10_000);
    assert_eq!(MemoryBroker::new(7).config().queue_capacity, 7);
    assert_eq!(MemoryBroker::new(7).config().max_bytes, config.max_bytes);
}

#[tokio::test]
async fn publishing_past_the_byte_budget_fails_as_overloaded() {
    let one = footprint("acme", &"x".repeat(1000)).await;
    assert!(one > 1000, "the body and an overhead count");
    let broker = broker(3 * one + one / 2, 1_000, 10);
    let publisher = broker.publisher();
    for _ in 0..3 {
        publisher
            .publish("acme", event(&"x".repeat(1000)))
            .await
            .unwrap();
    }
    assert_eq!(broker.bytes(), 3 * one);
    assert!(matches!(
        publisher.publish("acme", event(&"x".repeat(1000))).await,
        Err(PublishError::Overloaded)
    ));
    // A smaller event still fits in what is left.
    publisher.publish("acme", event("small")).await.unwrap();
    assert!(broker.bytes() <= broker.config().max_bytes);

    // Processing frees the bytes.
    let mut subscriber = broker.subscriber_all();
    next(&mut subscriber).await.ack().await.unwrap();
    assert_eq!(broker.events(), 3);
    publisher
        .publish("acme", event(&"x".repeat(1000)))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_queue_capacity_applies_per_destination_and_only_to_publishing() {
    let broker = MemoryBroker::new(2);
    let publisher = broker.publisher();
    publisher.publish("a", event("1")).await.unwrap();
    publisher.publish("a", event("2")).await.unwrap();
    assert!(matches!(
        publisher.publish("a", event("3")).await,
        Err(PublishError::Overloaded)
    ));
    publisher.publish("b", event("4")).await.unwrap();

    // A delivery given back finds its place although the queue is full again.
    let mut subscriber = broker.subscriber(["a"]).unwrap();
    let delivery = next(&mut subscriber).await;
    publisher.publish("a", event("5")).await.unwrap();
    delivery.abandon().await.unwrap();
    assert_eq!(broker.len("a"), 3);
    assert_eq!(broker.events(), 4);
}

#[tokio::test]
async fn an_event_larger_than_the_whole_budget_is_rejected() {
    let broker = broker(4096, 10, 10);
    let err = broker
        .publisher()
        .publish("acme", event(&"x".repeat(8192)))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Rejected(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(broker.bytes(), 0);
}

#[tokio::test]
async fn in_flight_and_delayed_retries_keep_their_bytes() {
    let one = footprint("acme", "payload").await;
    let broker = broker(2 * one, 100, 10);
    let publisher = broker.publisher();
    publisher.publish("acme", event("payload")).await.unwrap();
    publisher.publish("acme", event("payload")).await.unwrap();
    let mut subscriber = broker.subscriber_all();

    // Handed out: still counted.
    let delivery = next(&mut subscriber).await;
    assert_eq!(broker.bytes(), 2 * one);
    assert!(matches!(
        publisher.publish("acme", event("payload")).await,
        Err(PublishError::Overloaded)
    ));

    // Waiting for a delayed retry: still counted, and it comes back although the budget is full.
    let id = delivery.event.id;
    delivery.retry(Duration::from_millis(50)).await.unwrap();
    assert_eq!(broker.in_flight(), 1);
    assert_eq!(broker.bytes(), 2 * one);
    assert!(matches!(
        publisher.publish("acme", event("payload")).await,
        Err(PublishError::Overloaded)
    ));
    let other = next(&mut subscriber).await;
    assert_ne!(other.event.id, id);
    other.ack().await.unwrap();
    let again = next(&mut subscriber).await;
    assert_eq!((again.event.id, again.attempt), (id, 2));
    again.ack().await.unwrap();
    assert_eq!(
        (broker.bytes(), broker.events(), broker.in_flight()),
        (0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn delayed_retries_wait_in_the_broker_not_in_tasks() {
    let broker = MemoryBroker::new(2_000);
    let publisher = broker.publisher();
    for i in 0..1_000 {
        publisher
            .publish("acme", event(&i.to_string()))
            .await
            .unwrap();
    }
    let mut subscriber = broker.subscriber_all();
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    for i in 0..1_000 {
        let delivery = next(&mut subscriber).await;
        delivery
            .retry(Duration::from_secs(1 + i % 7))
            .await
            .unwrap();
    }
    assert_eq!(broker.in_flight(), 1_000);
    assert!(broker.is_empty());
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        tasks,
        "a retry spawns no task"
    );
    // They come back once due, in due order.
    let mut attempts = 0;
    for _ in 0..1_000 {
        let delivery = next(&mut subscriber).await;
        attempts += delivery.attempt;
        delivery.ack().await.unwrap();
    }
    assert_eq!(attempts, 2_000);
    assert_eq!((broker.bytes(), broker.in_flight()), (0, 0));
}

#[tokio::test]
async fn dead_letters_count_and_the_ring_evicts_the_oldest() {
    let broker = broker(1 << 20, 100, 2);
    let publisher = broker.publisher();
    let mut subscriber = broker.subscriber_all();
    let mut held = Vec::new();
    for body in ["dl-1", "dl-2", "dl-3"] {
        publisher.publish("acme", event(body)).await.unwrap();
        let queued = broker.bytes();
        next(&mut subscriber)
            .await
            .dead_letter(&record("acme"))
            .await
            .unwrap();
        held.push((queued, broker.bytes()));
    }
    let (queued, one) = held[0];
    assert!(one > queued, "the failure record counts too");
    // Each dead letter keeps its bytes until the ring evicts it.
    let held: Vec<_> = held.into_iter().map(|(_, bytes)| bytes).collect();
    assert_eq!(held, [one, 2 * one, 2 * one]);
    assert_eq!(broker.events(), 0, "dead letters are not live events");
    assert_eq!(broker.dead_letter_count(), 2);
    assert_eq!(broker.dead_letters_evicted(), 1);
    let bodies: Vec<_> = broker
        .dead_letters("acme")
        .into_iter()
        .map(|(event, record)| {
            assert_eq!(record.attempts, 3);
            event.body
        })
        .collect();
    assert_eq!(bodies, ["dl-2", "dl-3"]);
}

#[tokio::test]
async fn dead_letters_give_way_to_new_events() {
    let one = footprint("acme", "payload").await;
    // Room for three events, or two dead letters and change.
    let broker = broker(3 * one, 100, 100);
    let publisher = broker.publisher();
    let mut subscriber = broker.subscriber_all();
    for _ in 0..3 {
        publisher.publish("acme", event("payload")).await.unwrap();
        next(&mut subscriber)
            .await
            .dead_letter(&record("acme"))
            .await
            .unwrap();
        assert!(broker.bytes() <= broker.config().max_bytes);
    }
    let dead = broker.dead_letter_count();
    assert!(dead >= 1);
    let evicted = broker.dead_letters_evicted();

    // A live event is worth more than the copy of a failed one.
    for _ in 0..3 {
        publisher.publish("acme", event("payload")).await.unwrap();
    }
    assert_eq!(broker.dead_letter_count(), 0);
    assert_eq!(broker.dead_letters_evicted(), evicted + dead as u64);
    assert_eq!(broker.bytes(), 3 * one);
    assert!(matches!(
        publisher.publish("acme", event("payload")).await,
        Err(PublishError::Overloaded)
    ));
}

#[tokio::test]
async fn a_flood_of_new_destinations_stays_within_the_budget() {
    let one = footprint("provider-00000", "{}").await;
    let budget = 100 * one;
    let broker = broker(budget, 1_000_000, 10);
    let publisher = broker.publisher();
    let mut accepted = 0;
    for i in 0..10_000 {
        match publisher
            .publish(&format!("provider-{i:05}"), event("{}"))
            .await
        {
            Ok(()) => accepted += 1,
            Err(PublishError::Overloaded) => {}
            Err(other) => panic!("{other:?}"),
        }
        assert!(broker.bytes() <= budget);
    }
    assert_eq!(
        accepted, 100,
        "each destination name is paid for by its event"
    );

    // Served round robin, and each emptied queue is forgotten.
    let mut subscriber = broker.subscriber_all();
    let mut seen = HashMap::new();
    for _ in 0..accepted {
        let delivery = next(&mut subscriber).await;
        *seen.entry(delivery.destination.to_string()).or_insert(0) += 1;
        delivery.ack().await.unwrap();
    }
    assert_eq!(seen.len(), 100);
    assert!(broker.is_empty());
    assert_eq!((broker.bytes(), broker.events()), (0, 0));
}

#[tokio::test]
async fn a_dropped_delivery_releases_its_bytes() {
    let broker = MemoryBroker::new(10);
    broker
        .publisher()
        .publish("acme", event("x"))
        .await
        .unwrap();
    let mut subscriber = broker.subscriber_all();
    let delivery = next(&mut subscriber).await;
    assert!(broker.bytes() > 0);
    // Forgotten, as a crash would forget it: nothing leaks, nothing is left in flight.
    drop(delivery);
    assert_eq!(
        (broker.bytes(), broker.events(), broker.in_flight()),
        (0, 0, 0)
    );
    assert!(broker.is_empty());
}

/// A subscriber woken from an empty queue lets the tasks already waiting to run publish first,
/// then takes what they queued one after another, instead of being woken (and polled, and
/// registered as a waiter again) once per event. One worker thread, as tokio runs a woken task
/// next on the thread that woke it: without that turn, the subscriber would take the first
/// event before the other publishers ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_woken_subscriber_takes_what_the_waiting_publishers_queued_in_one_go() {
    const PUBLISHERS: usize = 5;
    let broker = MemoryBroker::new(100);
    let mut subscriber = broker.subscriber_all();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let queued = broker.clone();
    let consumer = tokio::spawn(async move {
        for _ in 0..PUBLISHERS {
            let delivery = next(&mut subscriber).await;
            // How many were still queued when this one was taken.
            seen_tx.send(queued.len("acme")).unwrap();
            delivery.ack().await.unwrap();
        }
    });
    // The consumer waits on the empty queue (were it still starting, it would find the events
    // queued and take them in one go all the same).
    tokio::time::sleep(Duration::from_millis(50)).await;
    // All publishers are queued on the worker thread before the first runs.
    let publisher = broker.publisher();
    tokio::spawn(async move {
        for i in 0..PUBLISHERS {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                publisher
                    .publish("acme", event(&i.to_string()))
                    .await
                    .unwrap();
            });
        }
    })
    .await
    .unwrap();
    consumer.await.unwrap();
    let mut seen = Vec::new();
    while let Some(left) = seen_rx.recv().await {
        seen.push(left);
    }
    assert_eq!(seen, (0..PUBLISHERS).rev().collect::<Vec<_>>());
    assert!(broker.is_empty());
}

#[test]
#[allow(clippy::float_cmp, clippy::cast_precision_loss)] // small integers, exactly
fn the_budget_is_reported_as_metrics() {
    Recorded::run(async |metrics| {
        let broker = broker(1 << 20, 100, 1);
        let publisher = broker.publisher();
        publisher.publish("acme", event("a")).await.unwrap();
        publisher.publish("acme", event("b")).await.unwrap();
        let bytes = metrics.gauge(metric::MEMORY_QUEUE_BYTES);
        assert_eq!(bytes, Some(broker.bytes() as f64));
        assert_eq!(metrics.gauge(metric::MEMORY_QUEUE_EVENTS), Some(2.0));
        assert_eq!(metrics.gauge(metric::MEMORY_DEAD_LETTERS), Some(0.0));

        let mut subscriber = broker.subscriber_all();
        for _ in 0..2 {
            next(&mut subscriber)
                .await
                .dead_letter(&record("acme"))
                .await
                .unwrap();
        }
        assert_eq!(metrics.gauge(metric::MEMORY_QUEUE_EVENTS), Some(0.0));
        // A ring of one: the second dead letter pushed the first out.
        assert_eq!(metrics.gauge(metric::MEMORY_DEAD_LETTERS), Some(1.0));
        let bytes = metrics.gauge(metric::MEMORY_QUEUE_BYTES);
        assert_eq!(bytes, Some(broker.bytes() as f64));
        assert_eq!(
            metrics.counter(metric::MEMORY_DEAD_LETTERS_EVICTED_TOTAL),
            1
        );
    });
}

#[tokio::test]
async fn try_next_hands_out_what_is_queued_without_waiting_and_next_still_waits() {
    let broker = MemoryBroker::new(10);
    let publisher = broker.publisher();
    let mut subscriber = broker.subscriber(["a"]).unwrap();
    assert!(subscriber.try_next().is_none(), "nothing queued yet");

    publisher.publish("a", event("1")).await.unwrap();
    publisher.publish("b", event("other")).await.unwrap();
    publisher.publish("a", event("2")).await.unwrap();
    let first = subscriber.try_next().expect("queued");
    let second = subscriber.try_next().expect("queued");
    assert_eq!(
        (&*first.event.body, &*second.event.body),
        (&b"1"[..], &b"2"[..])
    );
    assert_eq!(&*first.destination, "a");
    assert!(subscriber.try_next().is_none(), "`b` is not subscribed to");
    assert_eq!(broker.in_flight(), 2);

    // After a `try_next` that found nothing, `next` waits for the next publish and takes it.
    let waiting = tokio::spawn(async move {
        let delivery = next(&mut subscriber).await;
        (subscriber, delivery)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    publisher.publish("a", event("3")).await.unwrap();
    let (mut subscriber, third) = waiting.await.unwrap();
    assert_eq!(&*third.event.body, b"3");

    // A delivery taken with `try_next` settles as any other; a retried one comes back.
    first.ack().await.unwrap();
    third.ack().await.unwrap();
    second.retry(Duration::ZERO).await.unwrap();
    let again = next(&mut subscriber).await;
    assert_eq!((&*again.event.body, again.attempt), (&b"2"[..], 2));
    again.ack().await.unwrap();

    // The end of the subscription comes through `next`: `try_next` only says "none now".
    broker.close();
    assert!(subscriber.try_next().is_none());
    let ended = tokio::time::timeout(Duration::from_secs(60), subscriber.next()).await;
    assert!(matches!(ended, Ok(None)), "the subscription ended");
    // A boxed subscriber hands `try_next` on.
    let mut boxed: Box<dyn Subscriber> = Box::new(broker.subscriber(["b"]).unwrap());
    assert_eq!(&*boxed.try_next().expect("queued").event.body, b"other");
}
