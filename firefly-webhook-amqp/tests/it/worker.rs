//! The lead's `Worker` over RabbitMQ: delayed retries through the TTL queues, then success or
//! the dead-letter queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::wire::Binding;
use firefly_webhook::{Outcome, ProcessError, Publisher, RetryPolicy, Worker, processor_fn};
use firefly_webhook_amqp::lapin::types::AMQPValue;
use tokio::sync::Notify;

use crate::{Scope, sample, subscribe, within};

#[tokio::test]
#[ignore = "needs rabbitmq on 127.0.0.1:5672; run scripts/test"]
async fn worker_retries_through_delay_queues_then_succeeds_or_dead_letters() {
    let scope = Scope::new(&["work"]).await;
    let broker = scope.broker().await;
    let subscriber = subscribe(&broker, ["work"]).await;
    let publisher = broker.publisher();
    let flaky = sample("work");
    let doomed = sample("work");
    let (flaky_id, doomed_id) = (flaky.id, doomed.id);
    publisher.publish("work", flaky).await.unwrap();
    publisher.publish("work", doomed).await.unwrap();

    let attempts: Arc<Mutex<HashMap<_, Vec<u32>>>> = Arc::default();
    let done = Arc::new(Notify::new());
    let finals = Arc::new(AtomicU32::new(0));
    let processor = {
        let (attempts, done) = (Arc::clone(&attempts), Arc::clone(&done));
        processor_fn(move |event, ctx| {
            let (attempts, done, finals) = (
                Arc::clone(&attempts),
                Arc::clone(&done),
                Arc::clone(&finals),
            );
            let (id, attempt) = (event.id, ctx.attempt);
            async move {
                attempts
                    .lock()
                    .unwrap()
                    .entry(id)
                    .or_default()
                    .push(attempt);
                let last = attempt >= 3;
                // Stop once both events had their last attempt (the worker drains in-flight
                // settlement, dead-lettering included, before `run_until` returns).
                if last && finals.fetch_add(1, Ordering::AcqRel) == 1 {
                    done.notify_one();
                }
                if id == flaky_id && last {
                    return Ok(Outcome::Processed);
                }
                Err(ProcessError::transient(std::io::Error::other(
                    "downstream 503",
                )))
            }
        })
    };
    // Every retry goes back to RabbitMQ (nothing is waited out in process). No pause: with it,
    // the doomed event's last failure, if it came before the flaky one's success was recorded,
    // would count as "other events fail too" and be given back instead of dead-lettered (the
    // pause's own tests cover that).
    let worker = Worker::builder(subscriber)
        .concurrency(4)
        .without_pause()
        .without_idempotency()
        .retry(
            RetryPolicy::new()
                .max_attempts(3)
                .backoff(Duration::from_millis(100), Duration::from_millis(400))
                .in_process_limit(Duration::ZERO),
        )
        .build(processor);

    let dlq = scope.config.dead_letter_queue("work");
    let shutdown = {
        let done = Arc::clone(&done);
        async move {
            done.notified().await;
        }
    };
    within(worker.run_until(shutdown)).await;
    let message = scope.get(&dlq).await;

    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts[&flaky_id], [1, 2, 3]);
    assert_eq!(attempts[&doomed_id], [1, 2, 3]);
    assert_eq!(
        message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string),
        Some(doomed_id.to_string())
    );
    let headers = message.delivery.properties.headers().clone().unwrap();
    let attr = |name: &str| match headers
        .inner()
        .get(&*format!("{}{name}", Binding::AMQP.prefix))
    {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(attr("deadletterattempts"), "3");
    assert!(attr("deadletterreason").contains("downstream 503"));
    assert_eq!(attr("deadletterdestination"), "work");
    assert_eq!(scope.depth(&scope.config.queue("work")).await, 0);

    drop((publisher, broker));
    scope.cleanup().await;
}
