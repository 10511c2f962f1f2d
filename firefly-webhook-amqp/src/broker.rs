//! [`AmqpBroker`]: RabbitMQ in the shape every transport has ([`Broker`]).

use std::fmt;
use std::sync::Arc;

use firefly_webhook::{Broker, PublishError, Publisher, async_trait};

use crate::config::AmqpConfig;
use crate::depth::DepthWatch;
use crate::error::{Error, Result};
use crate::publisher::AmqpPublisher;
use crate::subscriber::AmqpSubscriber;

/// RabbitMQ as a [`Broker`]: built from an [`AmqpConfig`], it hands out publishers that share
/// one connection and subscribers that each open their own.
///
/// - [`new`](Self::new) checks the config and connects nothing: the publisher connects on
///   its first publish or health check, each subscriber on its first `next`.
/// - [`connect`](Self::connect) also connects the publisher and waits until RabbitMQ
///   answers, so a wrong address or password fails at start-up.
///
/// Both then reconnect by themselves after a connection loss. Cloning is cheap and shares the
/// publisher connection; it closes when the broker, its clones and every publisher are dropped.
///
/// ```no_run
/// use firefly_webhook_amqp::{AmqpBroker, AmqpConfig};
///
/// # async fn run() -> firefly_webhook_amqp::Result<()> {
/// let broker = AmqpBroker::connect(AmqpConfig::from_url("amqp://guest:guest@127.0.0.1:5672/%2f")).await?;
/// let publisher = broker.publisher(); // for `IngestService::new`
/// let subscriber = broker.subscriber(["github", "stripe"])?; // for `Worker::builder`
/// # let _ = (publisher, subscriber);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AmqpBroker {
    config: Arc<AmqpConfig>,
    publisher: AmqpPublisher,
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("config", &self.config)
            .field("connected", &self.publisher.is_connected())
            .finish()
    }
}

impl AmqpBroker {
    /// A broker that connects on first use. Fails only for a config that can never work: a
    /// URL that is not an AMQP URL ([`Error::InvalidUrl`]), an exchange name over 255 bytes
    /// ([`Error::NameTooLong`]).
    pub fn new(config: AmqpConfig) -> Result<Self> {
        config.validate()?;
        let config = Arc::new(config);
        Ok(Self {
            publisher: AmqpPublisher::lazy(Arc::clone(&config))?,
            config,
        })
    }

    /// A broker whose publisher is connected: waits at most
    /// [`AmqpConfig::operation_timeout`] for RabbitMQ (retrying meanwhile), and fails with the
    /// last attempt's error if it does not answer by then.
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        let broker = Self::new(config)?;
        broker.publisher.wait_connected().await?;
        Ok(broker)
    }

    /// The configuration.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// Whether the publisher connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected()
    }

    /// A publisher sharing this broker's connection and channels (a cheap clone).
    pub fn publisher(&self) -> AmqpPublisher {
        self.publisher.clone()
    }

    /// A subscriber consuming the queues of `destinations` with its own connection, opened on
    /// its first `next`; prefetch, topology and timeouts come from the config. Fails with
    /// [`Error::NoDestinations`] for none, [`Error::NameTooLong`] when a queue name would not
    /// fit AMQP.
    pub fn subscriber<I, S>(&self, destinations: I) -> Result<AmqpSubscriber>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AmqpSubscriber::lazy(Arc::clone(&self.config), destinations)
    }

    /// Reports the depth of `destinations`' main, retry and dead-letter queues every
    /// [`AmqpConfig::depth_interval`] on a connection of its own, until the [`DepthWatch`] is
    /// dropped: for a process that publishes but does not consume (the gateway), so the
    /// depth is known while no worker runs. Subscribers report their own destinations without
    /// it. Does nothing when the interval is off.
    ///
    /// Must be called within a Tokio runtime (unless the interval is off).
    pub fn watch_depth<I, S>(&self, destinations: I) -> DepthWatch
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let destinations = destinations
            .into_iter()
            .map(|d| Arc::from(d.into()))
            .collect();
        DepthWatch::spawn(Arc::clone(&self.config), destinations)
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    type Publisher = AmqpPublisher;
    type Subscriber = AmqpSubscriber;
    type Error = Error;

    fn name(&self) -> &'static str {
        crate::TRANSPORT
    }

    fn publisher(&self) -> AmqpPublisher {
        AmqpBroker::publisher(self)
    }

    fn subscriber<I, S>(&self, destinations: I) -> Result<AmqpSubscriber>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AmqpBroker::subscriber(self, destinations)
    }

    async fn health(&self) -> Result<(), PublishError> {
        self.publisher.health().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_the_config_and_needs_no_runtime() {
        let broker = AmqpBroker::new(AmqpConfig::from_url("amqp://u:pw@127.0.0.1:1/%2f")).unwrap();
        assert_eq!(Broker::name(&broker), "amqp");
        assert!(!broker.is_connected());
        assert!(!format!("{broker:?}").contains(":pw@"));
        assert!(matches!(
            AmqpBroker::new(AmqpConfig::from_url("not a url")),
            Err(Error::InvalidUrl(_))
        ));
    }

    #[test]
    fn subscribers_need_destinations_with_short_enough_names() {
        let broker = AmqpBroker::new(AmqpConfig::default()).unwrap();
        assert!(broker.subscriber(["github"]).is_ok());
        assert!(matches!(
            broker.subscriber(Vec::<String>::new()),
            Err(Error::NoDestinations)
        ));
        assert!(matches!(
            broker.subscriber(["x".repeat(250)]),
            Err(Error::NameTooLong(_))
        ));
    }
}
