//! [`DepthWatch`]: the queue depth gauges, polled with a passive `queue.declare`.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use firefly_webhook::metric;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use tokio::task::JoinHandle;

use crate::config::AmqpConfig;
use crate::connection::{bounded, open};
use crate::error::{Error, Result};
use crate::headers::short;

/// Asks for a queue's counts without declaring it: RabbitMQ answers 404 (and closes the
/// channel) when it does not exist.
const PASSIVE: QueueDeclareOptions = QueueDeclareOptions {
    passive: true,
    durable: false,
    exclusive: false,
    auto_delete: false,
    nowait: false,
};

/// Reports how many messages wait in some destinations' queues, as the gauge
/// [`metric::QUEUE_DEPTH`] (`firefly_queue_depth{transport="amqp", destination, queue}`, `queue`
/// being `main`, `retry` (every retry tier together) or `dead_letter`), every
/// [`AmqpConfig::depth_interval`], until it is dropped.
///
/// Each poll is one passive `queue.declare` per queue on a channel of the watch's own, so it
/// never gets in the way of publishing or consuming: a poll that fails (a queue missing, the
/// broker not answering) is logged, counted in [`metric::QUEUE_DEPTH_ERRORS_TOTAL`] and tried
/// again at the next interval. RabbitMQ counts the messages ready for delivery: those
/// delivered to a consumer and not yet acknowledged (at most
/// [`prefetch`](AmqpConfig::prefetch) per consumer) are not in the figure.
///
/// Every [`AmqpSubscriber`](crate::AmqpSubscriber) runs one for its destinations on its own
/// connection while connected. Get one from
/// [`AmqpBroker::watch_depth`](crate::AmqpBroker::watch_depth) for a process that does not
/// consume (the gateway), so the depth is reported while no worker runs too.
#[must_use = "the watch stops when dropped"]
pub struct DepthWatch {
    destinations: Vec<Arc<str>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for DepthWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DepthWatch")
            .field("destinations", &self.destinations)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl Drop for DepthWatch {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl DepthWatch {
    /// A watch of `destinations` on a connection of its own (opened at the first poll and
    /// again after a loss). Needs a Tokio runtime; does nothing when the interval is off.
    pub(crate) fn spawn(config: Arc<AmqpConfig>, destinations: Vec<Arc<str>>) -> Self {
        Self::start(Link::Own(None), config, destinations)
    }

    /// A watch of `destinations` on `connection` (a subscriber's), through a channel of its
    /// own. It stops when dropped or when the connection is lost (the subscriber starts
    /// another with its next connection).
    pub(crate) fn on(
        connection: Arc<Connection>,
        config: Arc<AmqpConfig>,
        destinations: Vec<Arc<str>>,
    ) -> Self {
        Self::start(Link::Shared(connection), config, destinations)
    }

    fn start(link: Link, config: Arc<AmqpConfig>, destinations: Vec<Arc<str>>) -> Self {
        let period = config.depth_interval.filter(|d| !d.is_zero());
        let task = match period {
            None => None,
            Some(period) => {
                let targets = targets(&config, &destinations);
                let poller = Poller {
                    link,
                    config,
                    channel: None,
                    targets,
                    failing: HashSet::new(),
                };
                Some(tokio::spawn(poller.run(period)))
            }
        };
        Self { destinations, task }
    }

    /// The destinations watched.
    pub fn destinations(&self) -> impl Iterator<Item = &str> {
        self.destinations.iter().map(AsRef::as_ref)
    }

    /// Whether it is polling: false when [`AmqpConfig::depth_interval`] is off, or after the
    /// connection it shared was lost.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

/// One series of the gauge: the queues whose ready messages it adds up.
struct Target {
    destination: Arc<str>,
    queue: &'static str,
    names: Vec<ShortString>,
}

/// Each destination's main queue, its retry queues (one series) and its dead-letter queue.
/// A name too long for AMQP is left out: no such queue can exist.
fn targets(config: &AmqpConfig, destinations: &[Arc<str>]) -> Vec<Target> {
    let mut targets = Vec::with_capacity(destinations.len() * 3);
    for destination in destinations {
        let retries = config
            .retry_delays
            .iter()
            .map(|tier| config.retry_queue_for_tier(destination, *tier))
            .collect();
        let series = [
            (metric::QUEUE_MAIN, vec![config.queue(destination)]),
            (metric::QUEUE_RETRY, retries),
            (
                metric::QUEUE_DEAD_LETTER,
                vec![config.dead_letter_queue(destination)],
            ),
        ];
        for (queue, names) in series {
            let names: Vec<ShortString> = names.iter().filter_map(|n| short(n).ok()).collect();
            if !names.is_empty() {
                targets.push(Target {
                    destination: Arc::clone(destination),
                    queue,
                    names,
                });
            }
        }
    }
    targets
}

enum Link {
    /// A subscriber's connection: the watch ends with it.
    Shared(Arc<Connection>),
    /// A connection of the watch's own, opened when needed.
    Own(Option<Box<Connection>>),
}

struct Poller {
    link: Link,
    config: Arc<AmqpConfig>,
    channel: Option<Channel>,
    targets: Vec<Target>,
    /// Queues whose last poll failed: warned about once, until a poll succeeds again.
    failing: HashSet<ShortString>,
}

impl Poller {
    async fn run(mut self, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Link::Shared(connection) = &self.link
                && !connection.status().connected()
            {
                // The subscriber reconnects and starts a new watch.
                return;
            }
            self.poll().await;
        }
    }

    async fn poll(&mut self) {
        for i in 0..self.targets.len() {
            let mut ready = 0_u64;
            let mut complete = true;
            for n in 0..self.targets[i].names.len() {
                let name = self.targets[i].names[n].clone();
                match self.count(&name).await {
                    Ok(count) => {
                        ready += u64::from(count);
                        if self.failing.remove(&name) {
                            tracing::info!(queue = name.as_str(), "amqp queue depth polled again");
                        }
                    }
                    Err(error) => {
                        complete = false;
                        self.failed(&name, &error);
                    }
                }
            }
            let target = &self.targets[i];
            if complete {
                #[allow(clippy::cast_precision_loss)] // a gauge; exact below 2^52
                metrics::gauge!(
                    metric::QUEUE_DEPTH,
                    metric::TRANSPORT => crate::TRANSPORT,
                    metric::DESTINATION => target.destination.to_string(),
                    metric::QUEUE => target.queue,
                )
                .set(ready as f64);
            }
        }
    }

    /// Ready messages in `queue`.
    async fn count(&mut self, queue: &ShortString) -> Result<u32> {
        let limit = self.config.operation_timeout;
        let channel = self.channel().await?;
        let declared = bounded(
            limit,
            channel.queue_declare(queue.clone(), PASSIVE, FieldTable::default()),
        )
        .await;
        match declared {
            Ok(queue) => Ok(queue.message_count()),
            Err(error) => {
                // A 404 closed the channel; a timeout may have left it unusable.
                self.channel = None;
                Err(error)
            }
        }
    }

    /// The channel, opened anew (and the connection, when the watch has its own) when needed.
    async fn channel(&mut self) -> Result<Channel> {
        if let Some(channel) = &self.channel
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let limit = self.config.operation_timeout;
        let channel = match &mut self.link {
            Link::Shared(connection) => bounded(limit, connection.create_channel()).await?,
            Link::Own(own) => {
                if !own.as_ref().is_some_and(|c| c.status().connected()) {
                    *own = Some(Box::new(open(&self.config, "depth").await?));
                }
                let Some(connection) = own.as_ref() else {
                    return Err(Error::Disconnected);
                };
                bounded(limit, connection.create_channel()).await?
            }
        };
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    fn failed(&mut self, queue: &ShortString, error: &Error) {
        metrics::counter!(metric::QUEUE_DEPTH_ERRORS_TOTAL, metric::TRANSPORT => crate::TRANSPORT)
            .increment(1);
        if self.failing.insert(queue.clone()) {
            tracing::warn!(
                queue = queue.as_str(),
                error = error as &dyn std::error::Error,
                "could not poll the amqp queue depth; consuming goes on"
            );
        } else {
            tracing::debug!(
                queue = queue.as_str(),
                error = error as &dyn std::error::Error,
                "could not poll the amqp queue depth"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_destination_has_a_main_retry_and_dead_letter_series() {
        let config = AmqpConfig::default();
        let targets = targets(&config, &[Arc::from("github")]);
        let series: Vec<(&str, Vec<&str>)> = targets
            .iter()
            .map(|t| (t.queue, t.names.iter().map(ShortString::as_str).collect()))
            .collect();
        assert_eq!(
            series,
            [
                ("main", vec!["firefly.webhooks.github"]),
                (
                    "retry",
                    vec![
                        "firefly.webhooks.github.retry.1s",
                        "firefly.webhooks.github.retry.5s",
                        "firefly.webhooks.github.retry.30s",
                        "firefly.webhooks.github.retry.5m",
                    ]
                ),
                ("dead_letter", vec!["firefly.webhooks.github.dlq"]),
            ]
        );
        let no_retries = AmqpConfig {
            retry_delays: Vec::new(),
            ..AmqpConfig::default()
        };
        assert_eq!(targets_len(&no_retries), 2);
    }

    fn targets_len(config: &AmqpConfig) -> usize {
        targets(config, &[Arc::from("github")]).len()
    }

    #[test]
    fn an_interval_of_zero_or_none_polls_nothing() {
        for interval in [None, Some(Duration::ZERO)] {
            let config = AmqpConfig {
                depth_interval: interval,
                ..AmqpConfig::default()
            };
            // No runtime needed: nothing is spawned.
            let watch = DepthWatch::spawn(Arc::new(config), vec![Arc::from("github")]);
            assert!(!watch.is_running());
            assert_eq!(watch.destinations().collect::<Vec<_>>(), ["github"]);
        }
    }
}
