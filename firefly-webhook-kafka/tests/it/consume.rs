use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::wire::Binding;
use firefly_webhook::{DeadLetter, FailureCategory, Position, Publisher, Subscriber};
use firefly_webhook_kafka::rdkafka::Message;
use firefly_webhook_kafka::rdkafka::message::{Header, OwnedHeaders};
use firefly_webhook_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use firefly_webhook_kafka::{KafkaBroker, KafkaOffset};

use crate::common::{
    BROKERS, committed, committed_until, event, group_config, header_list, next, publisher,
    raw_consumer, raw_next, subscriber, unique,
};

fn at(position: &Position) -> &KafkaOffset {
    assert_eq!(position.transport(), "kafka");
    position
        .downcast_ref::<KafkaOffset>()
        .unwrap_or_else(|| panic!("not a kafka position: {position}"))
}

fn offset(position: &Position) -> i64 {
    at(position).offset
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn crash_before_commit_redelivers_to_the_next_member() {
    let topic = unique("crash");
    let group = unique("g");
    let publisher = publisher(1);
    let sent = event("github");
    publisher.publish(&topic, sent.clone()).await.unwrap();

    let mut first = subscriber(&group, &topic);
    let delivery = next(&mut first).await;
    assert_eq!(delivery.event.id, sent.id);
    assert_eq!(delivery.event.body, sent.body);
    assert_eq!(delivery.event.headers, sent.headers);
    assert_eq!(delivery.attempt, 1);
    // "Crash": processed, never acked, consumer gone.
    drop(delivery);
    drop(first);

    let mut second = subscriber(&group, &topic);
    let again = next(&mut second).await;
    assert_eq!(again.event.id, sent.id, "the next member gets the message");
    again.ack().await.unwrap();
    second.commit().await.unwrap();
    let offsets = committed(&group, &topic, 1).await;
    assert_eq!(offsets.get(&0), Some(&1));
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn out_of_order_acks_never_commit_past_an_unfinished_message() {
    let topic = unique("order");
    let group = unique("g");
    let publisher = publisher(1);
    for _ in 0..10 {
        publisher.publish(&topic, event("github")).await.unwrap();
    }
    let mut sub = subscriber(&group, &topic);
    let mut held = Vec::new();
    let mut done = Vec::new();
    for _ in 0..10 {
        let d = next(&mut sub).await;
        match offset(&d.position) {
            3 | 7 => held.push(d),
            _ => done.push(d),
        }
    }
    // Finish everything but 3 and 7, newest first.
    for d in done.into_iter().rev() {
        d.ack().await.unwrap();
    }
    sub.commit().await.unwrap();
    // Give the background committer every chance to overshoot.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(committed(&group, &topic, 1).await.get(&0), Some(&3));

    let seven = held.pop().unwrap();
    let three = held.pop().unwrap();
    seven.ack().await.unwrap();
    sub.commit().await.unwrap();
    assert_eq!(committed(&group, &topic, 1).await.get(&0), Some(&3));

    three.ack().await.unwrap();
    let offsets = committed_until(&group, &topic, 1, |o| o.get(&0) == Some(&10)).await;
    assert_eq!(
        offsets.get(&0),
        Some(&10),
        "the background committer catches up"
    );
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn concurrent_workers_commit_only_finished_prefixes() {
    const N: i64 = 40;
    let topic = unique("conc");
    let group = unique("g");
    let publisher = publisher(1);
    for _ in 0..N {
        publisher.publish(&topic, event("github")).await.unwrap();
    }
    let mut config = group_config(&group);
    config.commit_every = 1;
    config.commit_interval = Duration::from_millis(20);
    let mut sub = KafkaBroker::new(config)
        .unwrap()
        .subscriber([&topic])
        .unwrap();

    let unfinished = Arc::new(Mutex::new(BTreeSet::new()));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..N {
        let d = next(&mut sub).await;
        let o = offset(&d.position);
        unfinished.lock().unwrap().insert(o);
        let unfinished = Arc::clone(&unfinished);
        let mut release = release_rx.clone();
        tasks.push(tokio::spawn(async move {
            if o % 9 == 4 {
                // A few slow ones, finished only at the end.
                release.wait_for(|r| *r).await.unwrap();
            } else {
                // Out-of-order completion.
                tokio::time::sleep(Duration::from_millis(((o * 37) % 11 * 15).unsigned_abs()))
                    .await;
            }
            unfinished.lock().unwrap().remove(&o);
            d.ack().await.unwrap();
        }));
    }
    // Read the committed offset first, then the unfinished set: offsets only ever finish, so
    // at the time of any commit, its position was <= every offset still unfinished now.
    for _ in 0..15 {
        let c = committed(&group, &topic, 1)
            .await
            .get(&0)
            .copied()
            .unwrap_or(0);
        let lowest = unfinished.lock().unwrap().first().copied().unwrap_or(N);
        assert!(c <= lowest, "committed {c} passed unfinished {lowest}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    release_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let offsets = committed_until(&group, &topic, 1, |o| o.get(&0) == Some(&N)).await;
    assert_eq!(offsets.get(&0), Some(&N));
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn dead_letter_goes_to_the_dlq_and_the_offset_moves_on() {
    let topic = unique("dl");
    let group = unique("g");
    let publisher = publisher(1);
    let sent = event("stripe");
    publisher.publish(&topic, sent.clone()).await.unwrap();

    let mut sub = subscriber(&group, &topic);
    let d = next(&mut sub).await;
    let failure = DeadLetter::new(
        "boom",
        FailureCategory::Unrecoverable,
        3,
        "permanent",
        &topic,
    );
    d.dead_letter(&failure).await.unwrap();

    let dlq = raw_next(&raw_consumer(&format!("{topic}.dlq"))).await;
    assert_eq!(dlq.payload().unwrap(), &sent.body[..]);
    let headers = header_list(&dlq);
    let id = headers.iter().find(|(k, _)| k == "ce_id").unwrap();
    assert_eq!(
        id.1,
        sent.id.to_string().as_bytes(),
        "original headers kept"
    );
    assert_eq!(
        headers.iter().filter(|(k, _)| k == "http_x-multi").count(),
        2
    );
    let back = DeadLetter::decode(
        headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        Binding::KAFKA,
    )
    .unwrap();
    assert_eq!(back.reason, "boom");
    assert_eq!(back.category, FailureCategory::Unrecoverable);
    assert_eq!(back.attempts, 3);
    assert_eq!(back.destination, topic);

    let offsets = committed_until(&group, &topic, 1, |o| o.get(&0) == Some(&1)).await;
    assert_eq!(
        offsets.get(&0),
        Some(&1),
        "main topic moved past the message"
    );
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn undecodable_messages_are_dead_lettered_without_blocking() {
    let topic = unique("junk");
    let group = unique("g");
    let publisher = publisher(1);
    publisher.ensure_topic(&topic).await.unwrap();
    let raw: FutureProducer = firefly_webhook_kafka::rdkafka::ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    let headers = OwnedHeaders::new().insert(Header {
        key: "x-foreign",
        value: Some("yes"),
    });
    raw.send(
        FutureRecord::<str, [u8]>::to(&topic)
            .payload(b"not a webhook")
            .headers(headers),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let good = event("github");
    publisher.publish(&topic, good.clone()).await.unwrap();

    let mut sub = subscriber(&group, &topic);
    let d = next(&mut sub).await;
    assert_eq!(
        d.event.id, good.id,
        "the junk record never reaches the worker"
    );
    d.ack().await.unwrap();

    let dlq = raw_next(&raw_consumer(&format!("{topic}.dlq"))).await;
    assert_eq!(dlq.payload().unwrap(), b"not a webhook");
    let headers = header_list(&dlq);
    assert!(headers.contains(&("x-foreign".into(), b"yes".to_vec())));
    let dl = DeadLetter::decode(
        headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        Binding::KAFKA,
    )
    .unwrap();
    assert_eq!(dl.category, FailureCategory::Validation);
    let offsets = committed_until(&group, &topic, 1, |o| o.get(&0) == Some(&2)).await;
    assert_eq!(offsets.get(&0), Some(&2));
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn retry_redelivers_the_same_record_later_without_committing_it() {
    let topic = unique("retry");
    let group = unique("g");
    let publisher = publisher(1);
    let sent = event("github");
    publisher.publish(&topic, sent.clone()).await.unwrap();

    let mut sub = subscriber(&group, &topic);
    let d = next(&mut sub).await;
    let position = d.position.clone();
    assert_eq!(
        at(&position),
        &KafkaOffset {
            topic: topic.clone(),
            partition: 0,
            offset: 0
        }
    );
    assert_eq!(position.to_string(), format!("kafka:{topic}/0@0"));
    d.retry(Duration::from_millis(300)).await.unwrap();
    sub.commit().await.unwrap();
    let before = committed(&group, &topic, 1).await;
    assert!(
        matches!(before.get(&0), None | Some(0)),
        "nothing finished yet: {before:?}"
    );

    let again = next(&mut sub).await;
    assert_eq!(again.event.id, sent.id);
    assert_eq!(at(&again.position), at(&position));
    assert_eq!(again.attempt, 2);
    again.ack().await.unwrap();
    let offsets = committed_until(&group, &topic, 1, |o| o.get(&0) == Some(&1)).await;
    assert_eq!(offsets.get(&0), Some(&1));
}

/// The consumer lag gauge of `group` on partition 0 of `topic`, if reported yet.
fn lag_of(group: &str, topic: &str) -> Option<f64> {
    use firefly_webhook::metric;

    crate::recorded::Recorded::global().gauge(
        metric::CONSUMER_LAG,
        &[
            (metric::TRANSPORT, "kafka"),
            (metric::GROUP, group),
            (metric::DESTINATION, topic),
            (metric::PARTITION, "0"),
        ],
    )
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn consumer_lag_rises_while_the_consumer_is_stuck_and_falls_when_it_catches_up() {
    const STUCK: u8 = 5;
    // The lag comes from librdkafka's statistics thread: a recorder for the whole process.
    crate::recorded::Recorded::global();
    assert_eq!(firefly_webhook_kafka::LAG_GAUGE, "firefly_consumer_lag");

    let topic = unique("lag");
    let group = unique("g");
    let publisher = publisher(1);
    for _ in 0..=STUCK {
        publisher.publish(&topic, event("github")).await.unwrap();
    }
    let mut config = group_config(&group);
    config.lag_interval = Duration::from_millis(200);
    let mut sub = KafkaBroker::new(config)
        .unwrap()
        .subscriber([&topic])
        .unwrap();
    let first = next(&mut sub).await;
    first.ack().await.unwrap();
    sub.commit().await.unwrap();

    // The worker takes the rest but finishes none: nothing more is committed, and the lag
    // is every event after the first.
    let mut held = Vec::new();
    tokio::time::timeout(crate::common::WAIT, async {
        loop {
            // Statistics are served while the consumer is polled.
            if let Ok(Some(Ok(delivery))) =
                tokio::time::timeout(Duration::from_millis(300), sub.next()).await
            {
                held.push(delivery);
            }
            if held.len() == usize::from(STUCK) && lag_of(&group, &topic) == Some(f64::from(STUCK))
            {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "lag never reached {STUCK}: {:?}, {} held",
            lag_of(&group, &topic),
            held.len()
        )
    });

    // It catches up: everything finished and committed, the lag falls to zero.
    for delivery in held {
        delivery.ack().await.unwrap();
    }
    sub.commit().await.unwrap();
    tokio::time::timeout(crate::common::WAIT, async {
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
            if lag_of(&group, &topic) == Some(0.0) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("lag never fell to 0: {:?}", lag_of(&group, &topic)));
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn acks_after_revocation_do_not_commit() {
    let topic = unique("revoke");
    let group = unique("g");
    let publisher = publisher(1);
    publisher.publish(&topic, event("github")).await.unwrap();

    let mut a = subscriber(&group, &topic);
    let held = next(&mut a).await;
    assert_eq!(offset(&held.position), 0);

    // A second member joins: the partition is revoked from `a` (and maybe handed back), so
    // the uncommitted record is delivered again, to whichever member owns it now.
    let mut b = subscriber(&group, &topic);
    let again = tokio::time::timeout(crate::common::WAIT, async {
        loop {
            tokio::select! {
                Some(Ok(d)) = a.next() => return d,
                Some(Ok(d)) = b.next() => return d,
                else => {}
            }
        }
    })
    .await
    .expect("redelivered after the rebalance");
    assert_eq!(offset(&again.position), 0);

    // The stale delivery finishing must not move the group's offset past the redelivered one.
    held.ack().await.unwrap();
    a.commit().await.unwrap();
    b.commit().await.unwrap();
    let offsets = committed(&group, &topic, 1).await;
    assert!(matches!(offsets.get(&0), None | Some(0)), "{offsets:?}");

    again.ack().await.unwrap();
    a.commit().await.unwrap();
    b.commit().await.unwrap();
    let offsets = committed_until(&group, &topic, 1, |o| o.get(&0) == Some(&1)).await;
    assert_eq!(offsets.get(&0), Some(&1));
}

#[tokio::test]
#[ignore = "needs kafka on 127.0.0.1:9092; run scripts/test"]
async fn prefixed_subscription_reads_every_provider_topic() {
    let prefix = format!("{}.", unique("px"));
    let publisher = publisher(1);
    let (gh, st) = (event("github"), event("stripe"));
    publisher
        .publish(&format!("{prefix}github"), gh.clone())
        .await
        .unwrap();
    publisher
        .publish(&format!("{prefix}stripe"), st.clone())
        .await
        .unwrap();

    let mut config = group_config(&unique("g"));
    // Dead letters must not match the prefix subscription: the default `{topic}.dlq` would.
    let refused = KafkaBroker::new(config.clone())
        .unwrap()
        .subscriber_prefixed(&prefix)
        .unwrap_err();
    assert!(refused.to_string().contains("dlq.{topic}"), "{refused}");
    config.dead_letter_topic = "dlq.{topic}".into();
    let mut sub = KafkaBroker::new(config)
        .unwrap()
        .subscriber_prefixed(&prefix)
        .unwrap();
    let mut seen = vec![next(&mut sub).await, next(&mut sub).await];
    seen.sort_by(|a, b| a.destination.cmp(&b.destination));
    assert_eq!(&*seen[0].destination, format!("{prefix}github"));
    assert_eq!(seen[0].event.id, gh.id);
    assert_eq!(seen[1].event.id, st.id);

    let failure = DeadLetter::new(
        "no",
        FailureCategory::Processing,
        1,
        "x",
        &*seen[1].destination,
    );
    let stripe = seen.pop().unwrap();
    stripe.dead_letter(&failure).await.unwrap();
    let dlq = raw_next(&raw_consumer(&format!("dlq.{prefix}stripe"))).await;
    assert_eq!(dlq.payload().unwrap(), &st.body[..]);
}
