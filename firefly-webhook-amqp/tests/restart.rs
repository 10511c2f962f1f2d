//! Broker restart (`rabbitmqctl stop_app` / `start_app`) during a publish loop.
//!
//! This stops the shared RabbitMQ, so it lives alone in its own test binary (cargo runs test
//! binaries one after another) and always starts the broker again, even when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firefly_webhook::{EventId, PublishError, Publisher, Subscriber, WebhookEvent};
use firefly_webhook_amqp::lapin::{Connection, ConnectionProperties};
use firefly_webhook_amqp::{AmqpBroker, AmqpConfig, topology};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DESTINATION: &str = "restart";

fn rabbitmqctl(command: &str) -> bool {
    Command::new("rabbitmqctl")
        .arg(command)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts the broker again whatever happens to the test.
struct StartAppOnDrop;

impl Drop for StartAppOnDrop {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
    }
}

#[derive(Default)]
struct Tally {
    confirmed: Vec<EventId>,
    confirmed_after_recovery: usize,
    unavailable: usize,
    rejected: Vec<String>,
    hung: usize,
}

#[allow(clippy::too_many_lines)] // one scenario, told in order
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs rabbitmq on 127.0.0.1:5672 and rabbitmqctl; run scripts/test"]
async fn publisher_and_subscriber_recover_from_a_broker_restart() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = AmqpConfig::from_url(URL);
    config.exchange = format!("t.{id}.x");
    config.dead_letter_exchange = format!("t.{id}.dlx");
    config.queue_prefix = format!("t.{id}.");
    config.publish_timeout = Duration::from_secs(3);
    config.reconnect_max = Duration::from_millis(500);

    let broker = AmqpBroker::connect(config.clone()).await.unwrap();
    let mut subscriber = broker.subscriber([DESTINATION]).unwrap();
    // Connected before the restart, so resuming afterwards is the subscriber's own doing.
    subscriber.connect().await.unwrap();
    let publisher = broker.publisher();

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let recovered = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (publisher, tally, stop, recovered) = (
            publisher.clone(),
            Arc::clone(&tally),
            Arc::clone(&stop),
            Arc::clone(&recovered),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                let event = WebhookEvent::new(DESTINATION, r#"{"n":1}"#);
                let id = event.id;
                let after = recovered.load(Ordering::Acquire);
                let outcome = tokio::time::timeout(
                    Duration::from_secs(10),
                    publisher.publish(DESTINATION, event),
                )
                .await;
                {
                    let mut t = tally.lock().unwrap();
                    match outcome {
                        Ok(Ok(())) => {
                            t.confirmed.push(id);
                            if after {
                                t.confirmed_after_recovery += 1;
                            }
                        }
                        Ok(Err(e @ PublishError::Rejected(_))) => t.rejected.push(e.to_string()),
                        Ok(Err(_)) => t.unavailable += 1,
                        Err(_) => t.hung += 1,
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let guard = StartAppOnDrop;
    assert!(
        tokio::task::spawn_blocking(|| rabbitmqctl("stop_app"))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        tokio::task::spawn_blocking(|| rabbitmqctl("start_app"))
            .await
            .unwrap()
    );
    drop(guard);

    // The publisher reconnects by itself.
    let mut healthy = false;
    for _ in 0..600 {
        if publisher.health().await.is_ok() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "publisher did not recover");
    recovered.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    for l in loops {
        l.await.unwrap();
    }

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    eprintln!(
        "confirmed {} ({} after recovery), unavailable {}, rejected {}, hung {}",
        tally.confirmed.len(),
        tally.confirmed_after_recovery,
        tally.unavailable,
        tally.rejected.len(),
        tally.hung
    );
    assert_eq!(tally.hung, 0, "a publish neither confirmed nor failed");
    assert!(tally.rejected.is_empty(), "{:?}", tally.rejected);
    assert!(
        tally.unavailable > 0,
        "publishes during the outage must fail"
    );
    assert!(tally.confirmed_after_recovery > 0);

    // Every confirmed message survived and is consumable; the subscriber resumes by itself.
    let mut missing: HashSet<EventId> = tally.confirmed.iter().copied().collect();
    let mut errors = 0;
    let consumed = tokio::time::timeout(Duration::from_secs(120), async {
        while !missing.is_empty() {
            match subscriber.next().await {
                Some(Ok(delivery)) => {
                    missing.remove(&delivery.event.id);
                    delivery.ack().await.ok();
                }
                Some(Err(_)) => errors += 1,
                None => break,
            }
        }
    })
    .await;
    eprintln!("subscriber errors while resuming: {errors}");
    assert!(
        consumed.is_ok(),
        "{} confirmed messages not consumed",
        missing.len()
    );
    assert!(missing.is_empty());

    subscriber.close().await;
    drop((publisher, broker));
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology::delete_destination(&channel, &config, DESTINATION)
        .await
        .unwrap();
    topology::delete_exchanges(&channel, &config).await.unwrap();
    connection.close(200, "OK".into()).await.ok();
}
