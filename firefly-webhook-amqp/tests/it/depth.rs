//! The queue depth gauges: polled while no worker consumes, and while one does.

use std::time::Duration;

use firefly_webhook::{DeadLetter, FailureCategory, Publisher, Subscriber, metric};
use firefly_webhook_amqp::lapin::options::QueueDeleteOptions;
use firefly_webhook_amqp::topology;

use crate::recorded::Recorded;
use crate::{Scope, sample, subscribe, within};

fn depth(metrics: &Recorded, destination: &str, queue: &str) -> Option<f64> {
    metrics.gauge(
        metric::QUEUE_DEPTH,
        &[
            (metric::TRANSPORT, "amqp"),
            (metric::DESTINATION, destination),
            (metric::QUEUE, queue),
        ],
    )
}

/// Waits (boundedly) until `destination`'s gauges read `main`, `retry` and `dead_letter`.
async fn until(metrics: &Recorded, destination: &str, wanted: [f64; 3]) {
    let read = || {
        [
            metric::QUEUE_MAIN,
            metric::QUEUE_RETRY,
            metric::QUEUE_DEAD_LETTER,
        ]
        .map(|queue| depth(metrics, destination, queue))
    };
    let result = tokio::time::timeout(Duration::from_secs(30), async {
        while read() != wanted.map(Some) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "depth {:?}, never {wanted:?}", read());
}

#[test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
fn depth_rises_while_no_worker_consumes_and_falls_when_one_catches_up() {
    let metrics = Recorded::new();
    metrics.run(async {
        let mut scope = Scope::new(&["depth"]).await;
        scope.config.depth_interval = Some(Duration::from_millis(100));
        topology::declare_exchanges(&scope.channel, &scope.config)
            .await
            .unwrap();
        topology::declare_destination(&scope.channel, &scope.config, "depth")
            .await
            .unwrap();
        let broker = scope.broker().await;
        // The gateway's view: it publishes, nobody consumes.
        let watch = broker.watch_depth(["depth"]);
        assert!(watch.is_running());
        let publisher = broker.publisher();
        for _ in 0..5 {
            publisher.publish("depth", sample("depth")).await.unwrap();
        }
        until(&metrics, "depth", [5.0, 0.0, 0.0]).await;

        // A worker starts and catches up, giving one event up.
        let mut subscriber = subscribe(&broker, ["depth"]).await;
        for i in 0..5 {
            let delivery = within(subscriber.next()).await.unwrap().unwrap();
            if i == 0 {
                let failure =
                    DeadLetter::new("bad", FailureCategory::Processing, 1, "test", "depth");
                delivery.dead_letter(&failure).await.unwrap();
            } else {
                delivery.ack().await.unwrap();
            }
        }
        until(&metrics, "depth", [0.0, 0.0, 1.0]).await;
        assert_eq!(
            metrics.counter(metric::QUEUE_DEPTH_ERRORS_TOTAL, &[]),
            0,
            "every queue exists"
        );

        drop(watch);
        subscriber.close().await;
        drop((publisher, broker));
        scope.cleanup().await;
    });
}

#[test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
fn a_queue_that_cannot_be_polled_is_counted_and_consuming_goes_on() {
    let metrics = Recorded::new();
    metrics.run(async {
        let mut scope = Scope::new(&["gone"]).await;
        scope.config.depth_interval = Some(Duration::from_millis(100));
        topology::declare_exchanges(&scope.channel, &scope.config)
            .await
            .unwrap();
        topology::declare_destination(&scope.channel, &scope.config, "gone")
            .await
            .unwrap();
        // The operators manage the topology, and the dead-letter queue is missing.
        scope.config.declare_topology = false;
        scope
            .channel
            .queue_delete(
                scope.config.dead_letter_queue("gone").as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .unwrap();
        let broker = scope.broker().await;
        // The subscriber polls its own destinations.
        let mut subscriber = subscribe(&broker, ["gone"]).await;
        let errors = || {
            metrics.counter(
                metric::QUEUE_DEPTH_ERRORS_TOTAL,
                &[(metric::TRANSPORT, "amqp")],
            )
        };
        let counted = tokio::time::timeout(Duration::from_secs(30), async {
            while errors() < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(counted.is_ok(), "errors {}", errors());
        // The failed passive declares closed the poller's channel, not the consumer's.
        let sent = sample("gone");
        broker
            .publisher()
            .publish("gone", sent.clone())
            .await
            .unwrap();
        let delivery = within(subscriber.next()).await.unwrap().unwrap();
        assert_eq!(delivery.event.id, sent.id);
        delivery.ack().await.unwrap();
        assert!(subscriber.is_connected());
        // The queues that exist are still reported; the missing one never was.
        assert_eq!(depth(&metrics, "gone", metric::QUEUE_RETRY), Some(0.0));
        assert_eq!(depth(&metrics, "gone", metric::QUEUE_DEAD_LETTER), None);
        assert!(depth(&metrics, "gone", metric::QUEUE_MAIN).is_some());

        subscriber.close().await;
        drop(broker);
        scope.cleanup().await;
    });
}
