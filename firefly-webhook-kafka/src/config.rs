//! Publisher and subscriber configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use tracing::level_filters::LevelFilter;

use crate::error::{Error, Result};
use crate::key::KeyStrategy;

/// Connection and producer settings, shared by [`KafkaPublisher`](crate::KafkaPublisher) and
/// the dead-letter producer of [`KafkaSubscriber`](crate::KafkaSubscriber).
///
/// Every field maps to a librdkafka property (see the table in the crate docs); anything not
/// covered here goes into [`properties`](Self::properties), which is applied last and so wins.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`. Prefer IP addresses over `localhost`.
    pub brokers: String,
    /// `client.id`.
    pub client_id: String,
    /// `security.protocol` (`plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl`).
    pub security_protocol: Option<String>,
    /// `sasl.mechanisms` (`PLAIN`, `SCRAM-SHA-256`, ...).
    pub sasl_mechanism: Option<String>,
    /// `sasl.username`.
    pub sasl_username: Option<String>,
    /// `sasl.password`; never shown by `Debug`.
    pub sasl_password: Option<String>,
    /// `compression.type`: `lz4` (default), `gzip`, `snappy` or `none` (`zstd` needs rdkafka's
    /// `zstd` feature).
    pub compression: String,
    /// `linger.ms`: how long the producer waits to fill a batch. A millisecond or two batches
    /// concurrent requests without adding much latency to each; librdkafka also batches
    /// whatever queues up while earlier requests are in flight.
    pub linger: Duration,
    /// `batch.size` in bytes.
    pub batch_size: u32,
    /// Producer instances (broker connections) to spread publishes over; a message key always
    /// maps to the same one. More than one helps brokers that serve a connection's requests
    /// one at a time.
    pub producers: usize,
    /// `queue.buffering.max.messages`: messages buffered before publishing answers
    /// "overloaded".
    pub max_queued_messages: u32,
    /// `message.timeout.ms`: how long a message may wait for the broker's acknowledgement
    /// (retries included) before publishing fails. Keep it short so the gateway answers 503
    /// quickly when the broker is down.
    pub delivery_timeout: Duration,
    /// How long the health check waits for a metadata response.
    pub health_timeout: Duration,
    /// How message keys are chosen.
    pub key: KeyStrategy,
    /// Create missing topics through the admin API on first use. When off, publishing to a
    /// topic that does not exist fails as unavailable.
    pub create_topics: bool,
    /// Partitions of topics this crate creates.
    pub partitions: i32,
    /// Replication factor of topics this crate creates.
    pub replication: i32,
    /// Extra librdkafka properties for every client (producer, admin and consumer), applied last.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            client_id: "firefly-webhook".to_owned(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            compression: "lz4".to_owned(),
            // Short: with a bounded number of requests in flight (connections waiting for their
            // 202), the batching window adds straight to every request's latency.
            linger: Duration::from_millis(2),
            batch_size: 1_000_000,
            producers: 1,
            max_queued_messages: 100_000,
            delivery_timeout: Duration::from_secs(5),
            health_timeout: Duration::from_secs(2),
            key: KeyStrategy::default(),
            create_topics: true,
            partitions: 6,
            replication: 1,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The defaults with `bootstrap.servers` set to `brokers` (comma-separated `host:port`).
    pub fn from_brokers(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            ..Self::default()
        }
    }

    /// Adds a librdkafka property for every client (overrides the typed fields).
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(Error::Config("no brokers given".into()));
        }
        if self.partitions < 1 {
            return Err(Error::Config("partitions must be at least 1".into()));
        }
        if self.replication < 1 {
            return Err(Error::Config("replication must be at least 1".into()));
        }
        if self.delivery_timeout <= self.linger {
            return Err(Error::Config(
                "delivery timeout must be longer than linger".into(),
            ));
        }
        Ok(())
    }

    /// Connection settings common to every client.
    pub(crate) fn base_client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        // rdkafka derives the level from the `log` crate; this crate logs through `tracing`.
        c.set_log_level(log_level());
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            // Reconnect quickly after a broker restart so publishing recovers within seconds.
            .set("reconnect.backoff.max.ms", "1000");
        let optional = [
            ("security.protocol", &self.security_protocol),
            ("sasl.mechanisms", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                c.set(key, v);
            }
        }
        c
    }

    /// The durable producer: idempotent, `acks=all`, batched.
    pub(crate) fn producer_client(&self) -> ClientConfig {
        let mut c = self.base_client();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &self.compression)
            .set("linger.ms", millis(self.linger))
            .set("batch.size", self.batch_size.to_string())
            .set(
                "queue.buffering.max.messages",
                self.max_queued_messages.to_string(),
            )
            .set("message.timeout.ms", millis(self.delivery_timeout));
        apply(&mut c, &self.properties);
        c
    }

    /// The admin client used to create and look up topics.
    pub(crate) fn admin_client(&self) -> ClientConfig {
        let mut c = self.base_client();
        apply(&mut c, &self.properties);
        // Looking a topic up must never create it behind the admin API's back.
        c.set("allow.auto.create.topics", "false");
        c
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .field("compression", &self.compression)
            .field("linger", &self.linger)
            .field("batch_size", &self.batch_size)
            .field("producers", &self.producers)
            .field("max_queued_messages", &self.max_queued_messages)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("health_timeout", &self.health_timeout)
            .field("key", &self.key)
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("properties", &Redacted(&self.properties))
            .finish()
    }
}

/// Consumer-group settings of a [`KafkaSubscriber`](crate::KafkaSubscriber).
#[derive(Clone)]
pub struct SubscriberConfig {
    /// `group.id`: members of one group share the topics' partitions.
    pub group_id: String,
    /// Topics to consume (a name starting with `^` is a regular expression).
    pub topics: Vec<String>,
    /// Dead-letter topic; `{topic}` is replaced by the source topic. Default `{topic}.dlq`.
    pub dead_letter_topic: String,
    /// `auto.offset.reset` for a group without committed offsets (`earliest` by default, so
    /// nothing published before the first worker started is skipped).
    pub auto_offset_reset: String,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// Finished offsets are committed at least this often.
    pub commit_interval: Duration,
    /// ... and as soon as this many deliveries finished since the last commit.
    pub commit_every: usize,
    /// How often consumer lag is reported (`statistics.interval.ms`); zero turns it off.
    pub lag_interval: Duration,
    /// Pause before redelivering a message whose dead-lettering failed.
    pub settle_backoff: Duration,
    /// Extra librdkafka consumer properties, applied last.
    pub properties: BTreeMap<String, String>,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        Self {
            group_id: "firefly-webhook".to_owned(),
            topics: Vec::new(),
            dead_letter_topic: "{topic}.dlq".to_owned(),
            auto_offset_reset: "earliest".to_owned(),
            session_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_secs(1),
            commit_every: 500,
            lag_interval: Duration::from_secs(10),
            settle_backoff: Duration::from_secs(1),
            // A subscribed topic that does not exist yet (no webhook for it so far) is picked
            // up within 10 s of its creation instead of librdkafka's default 5 minutes.
            properties: BTreeMap::from([(
                "topic.metadata.refresh.interval.ms".to_owned(),
                "10000".to_owned(),
            )]),
        }
    }
}

impl SubscriberConfig {
    /// The defaults for consumer group `group_id` reading `topics`.
    pub fn new<I, S>(group_id: impl Into<String>, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Every topic whose name starts with `prefix` (a regular-expression subscription), e.g. all
    /// `webhooks.{provider}` topics the gateway creates with `Routing::provider().prefix(..)`.
    ///
    /// Dead letters go to `dlq.{topic}` so they do not match the subscription, and topic
    /// metadata is refreshed every 10 s so topics of new providers are picked up soon.
    pub fn prefixed(group_id: impl Into<String>, prefix: &str) -> Result<Self> {
        if prefix.is_empty() {
            return Err(Error::Config(
                "a topic prefix is needed to subscribe by prefix".into(),
            ));
        }
        let mut pattern = String::from("^");
        for c in prefix.chars() {
            if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(".*");
        let config = Self {
            dead_letter_topic: "dlq.{topic}".to_owned(),
            ..Self::new(group_id, [pattern])
        };
        Ok(config)
    }

    /// Adds a librdkafka consumer property (overrides the typed fields).
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// The dead-letter topic for messages from `topic`.
    pub fn dead_letter_topic_for(&self, topic: &str) -> String {
        self.dead_letter_topic.replace("{topic}", topic)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.group_id.is_empty() {
            return Err(Error::Config("no consumer group given".into()));
        }
        if self.topics.is_empty() {
            return Err(Error::Config("no topics to subscribe to".into()));
        }
        if self
            .topics
            .iter()
            .any(|t| self.dead_letter_topic_for(t) == *t)
        {
            return Err(Error::Config(
                "the dead-letter topic is one of the subscribed topics".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn consumer_client(&self, kafka: &KafkaConfig) -> ClientConfig {
        let mut c = kafka.base_client();
        c.set("group.id", &self.group_id)
            // Offsets are committed by the subscriber, only up to what is finished.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("session.timeout.ms", millis(self.session_timeout))
            .set("statistics.interval.ms", millis(self.lag_interval));
        apply(&mut c, &kafka.properties);
        apply(&mut c, &self.properties);
        c
    }
}

impl fmt::Debug for SubscriberConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberConfig")
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("session_timeout", &self.session_timeout)
            .field("commit_interval", &self.commit_interval)
            .field("commit_every", &self.commit_every)
            .field("lag_interval", &self.lag_interval)
            .field("settle_backoff", &self.settle_backoff)
            .field("properties", &Redacted(&self.properties))
            .finish()
    }
}

fn apply(c: &mut ClientConfig, properties: &BTreeMap<String, String>) {
    for (k, v) in properties {
        c.set(k, v);
    }
}

/// The most verbose librdkafka level the installed `tracing` subscriber can show.
fn log_level() -> RDKafkaLogLevel {
    match LevelFilter::current() {
        LevelFilter::OFF | LevelFilter::ERROR => RDKafkaLogLevel::Error,
        LevelFilter::WARN => RDKafkaLogLevel::Warning,
        LevelFilter::INFO => RDKafkaLogLevel::Info,
        _ => RDKafkaLogLevel::Debug,
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// Whether a librdkafka property can carry a credential.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "sasl.oauthbearer.config",
        "ssl.key.pem",
        "ssl_key",
    ]
    .iter()
    .any(|s| key.contains(s))
}

struct Redacted<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v: &str = if is_secret(k) { "<redacted>" } else { v };
                (k, v)
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let mut config = KafkaConfig::from_brokers("10.0.0.1:9092")
            .set("ssl.key.password", "hunter2")
            .set("sasl.oauthbearer.client.secret", "s3cr3t")
            .set("socket.keepalive.enable", "true");
        config.sasl_password = Some("pa55word".into());
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains("s3cr3t"));
        assert!(!debug.contains("pa55word"));
        assert!(debug.contains("socket.keepalive.enable"));
        assert!(debug.contains("10.0.0.1:9092"));
        let sub = SubscriberConfig::new("g", ["t"]).set("sasl.password", "pa55word");
        assert!(!format!("{sub:?}").contains("pa55word"));
    }

    #[test]
    fn producer_is_durable_and_properties_win() {
        let config = KafkaConfig::default().set("linger.ms", "20");
        let c = config.producer_client();
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("compression.type"), Some("lz4"));
        assert_eq!(c.get("message.timeout.ms"), Some("5000"));
        assert_eq!(c.get("linger.ms"), Some("20"));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }

    #[test]
    fn consumer_never_auto_commits() {
        let sub = SubscriberConfig::new("g", ["t"]);
        let c = sub.consumer_client(&KafkaConfig::default());
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(sub.dead_letter_topic_for("github"), "github.dlq");
    }

    #[test]
    fn prefixed_subscription_escapes_and_avoids_its_dead_letters() {
        let c = SubscriberConfig::prefixed("g", "webhooks.").unwrap();
        assert_eq!(c.topics, [r"^webhooks\..*"]);
        assert_eq!(
            c.dead_letter_topic_for("webhooks.github"),
            "dlq.webhooks.github"
        );
        assert!(c.validate().is_ok());
        assert!(SubscriberConfig::prefixed("g", "").is_err());
    }

    #[test]
    fn validation() {
        assert!(KafkaConfig::default().validate().is_ok());
        assert!(KafkaConfig::from_brokers("").validate().is_err());
        let c = KafkaConfig {
            partitions: 0,
            ..KafkaConfig::default()
        };
        assert!(c.validate().is_err());
        assert!(
            SubscriberConfig::new("g", Vec::<String>::new())
                .validate()
                .is_err()
        );
        let mut s = SubscriberConfig::new("g", ["a"]);
        s.dead_letter_topic = "a".into();
        assert!(s.validate().is_err());
        s.dead_letter_topic = "{topic}".into();
        assert!(s.validate().is_err());
        s.dead_letter_topic = "dlq.{topic}".into();
        assert!(s.validate().is_ok());
    }
}
