//! Integration tests against the RabbitMQ on 127.0.0.1:5672 (`scripts/test`).
//!
//! Every test uses its own exchanges and queues (a random prefix) and deletes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod declare;
mod depth;
mod dlq;
mod publish;
#[path = "../../../firefly-webhook/tests/support/recorded.rs"]
mod recorded;
mod settle;
mod subscribe;
mod worker;

use std::time::Duration;

use firefly_webhook::WebhookEvent;
use firefly_webhook::http::{HeaderMap, HeaderValue};
use firefly_webhook_amqp::lapin::options::{BasicGetOptions, QueueDeclareOptions};
use firefly_webhook_amqp::lapin::types::FieldTable;
use firefly_webhook_amqp::lapin::{
    Channel, Connection, ConnectionProperties, message::BasicGetMessage,
};
use firefly_webhook_amqp::{AmqpBroker, AmqpConfig, AmqpSubscriber, topology};

pub(crate) const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A test's private topology: names under a random prefix, deleted by [`Scope::cleanup`].
pub(crate) struct Scope {
    pub(crate) config: AmqpConfig,
    pub(crate) destinations: Vec<String>,
    pub(crate) connection: Connection,
    pub(crate) channel: Channel,
}

impl Scope {
    pub(crate) async fn new(destinations: &[&str]) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut config = AmqpConfig::from_url(URL);
        config.exchange = format!("t.{id}.x");
        config.dead_letter_exchange = format!("t.{id}.dlx");
        config.queue_prefix = format!("t.{id}.");
        config.retry_delays = vec![Duration::from_millis(200), Duration::from_millis(500)];
        config.connection_name = format!("firefly-webhook-amqp test {id}");
        let connection = Connection::connect(URL, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        Self {
            config,
            destinations: destinations.iter().map(ToString::to_string).collect(),
            connection,
            channel,
        }
    }

    /// A broker on this scope's names, its publisher connected.
    pub(crate) async fn broker(&self) -> AmqpBroker {
        AmqpBroker::connect(self.config.clone()).await.unwrap()
    }

    /// Number of ready messages in `queue`.
    pub(crate) async fn depth(&self, queue: &str) -> u32 {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .unwrap()
            .message_count()
    }

    /// Polls `queue` until a message arrives (bounded), acking it.
    pub(crate) async fn get(&self, queue: &str) -> BasicGetMessage {
        for _ in 0..200 {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap();
            if let Some(message) = got {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no message arrived in {queue}");
    }

    pub(crate) async fn cleanup(self) {
        for d in &self.destinations {
            let _ = topology::delete_destination(&self.channel, &self.config, d).await;
        }
        let _ = topology::delete_exchanges(&self.channel, &self.config).await;
        let _ = self.connection.close(200, "OK".into()).await;
    }
}

/// An event with a binary body, a repeated header and a content type.
pub(crate) fn sample(provider: &str) -> WebhookEvent {
    let mut headers = HeaderMap::new();
    headers.append("content-type", HeaderValue::from_static("application/json"));
    headers.append("x-multi", HeaderValue::from_static("one"));
    headers.append("x-multi", HeaderValue::from_static("two"));
    headers.append("x-signature", HeaderValue::from_static("sha256=abc"));
    WebhookEvent::new(provider, &b"{\"a\":1}\x00\xff\xfe binary"[..])
        .with_headers(headers)
        .with_query(Some("x=1".to_owned()))
        .with_source_ip(Some("203.0.113.7".parse().unwrap()))
}

/// `broker`'s subscriber of `destinations`, connected: its queues exist once this returns.
pub(crate) async fn subscribe<const N: usize>(
    broker: &AmqpBroker,
    destinations: [&str; N],
) -> AmqpSubscriber {
    let mut subscriber = broker.subscriber(destinations).unwrap();
    subscriber.connect().await.unwrap();
    assert!(subscriber.is_connected());
    subscriber
}

/// Bounds a future in a test, so a bug shows as a failure rather than a hang.
pub(crate) async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("timed out")
}
