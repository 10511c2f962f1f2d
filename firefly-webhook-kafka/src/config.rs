//! [`KafkaConfig`] and the typed librdkafka values it uses.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use tracing::level_filters::LevelFilter;

use crate::error::{Error, Result};
use crate::key::KeyStrategy;

/// Settings of a [`KafkaBroker`](crate::KafkaBroker): the connection, the durable producer its
/// publishers (and the subscribers' dead-letter writes) share, and the consumer group its
/// subscribers join.
///
/// Every field maps to a librdkafka property or to this crate's behaviour (see the table in
/// the crate docs). Anything not covered goes into [`properties`](Self::properties) (every
/// client) or [`consumer_properties`](Self::consumer_properties), which are applied last and
/// so win.
///
/// `Debug` never shows the SASL password nor properties that can carry a credential.
///
/// ```
/// use std::time::Duration;
/// use firefly_webhook_kafka::{Compression, KafkaConfig, SaslMechanism, SecurityProtocol};
///
/// let mut config = KafkaConfig::from_brokers("10.0.0.1:9092,10.0.0.2:9092");
/// config.security_protocol = SecurityProtocol::SaslPlaintext;
/// config.sasl_mechanism = Some(SaslMechanism::Plain);
/// config.sasl_username = Some("gateway".into());
/// config.sasl_password = Some("s3cret".into());
/// config.compression = "zstd".parse()?;
/// config.group_id = "billing-workers".into();
/// config.commit_interval = Duration::from_millis(500);
/// let config = config.set("socket.keepalive.enable", "true");
/// assert_eq!(config.compression, Compression::Zstd);
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), firefly_webhook_kafka::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct KafkaConfig {
    // Connection.
    /// `bootstrap.servers`: comma-separated `host:port` (default `127.0.0.1:9092`). Prefer IP
    /// addresses over `localhost`, which may resolve to an address the broker does not listen on.
    pub brokers: String,
    /// `client.id` (default `firefly-webhook`).
    pub client_id: String,
    /// `security.protocol` (default [`SecurityProtocol::Plaintext`]).
    pub security_protocol: SecurityProtocol,
    /// `sasl.mechanisms` for the `sasl_*` protocols; unset by default (librdkafka's default is
    /// `GSSAPI`).
    pub sasl_mechanism: Option<SaslMechanism>,
    /// `sasl.username`; unset by default.
    pub sasl_username: Option<String>,
    /// `sasl.password`; unset by default and never shown by `Debug`.
    pub sasl_password: Option<String>,
    /// `ssl.ca.location`: the CA certificate(s) (PEM file or directory) that sign the brokers'
    /// certificates, for the `ssl` and `sasl_ssl` protocols; unset by default (the system's
    /// trust store). Needs this crate's `ssl` feature. Client certificates and other TLS
    /// settings go into [`properties`](Self::properties) (`ssl.certificate.location`,
    /// `ssl.key.location`, `ssl.key.password`, ...).
    pub ssl_ca_location: Option<PathBuf>,

    // Producer (publishers and dead letters).
    /// `compression.type` (default [`Compression::Lz4`]).
    pub compression: Compression,
    /// `linger.ms`: how long the producer waits to fill a batch (default 2 ms). A millisecond
    /// or two batches concurrent requests without adding much latency to each; librdkafka also
    /// batches whatever queues up while earlier requests are in flight.
    #[cfg_attr(feature = "serde", serde(with = "millis", rename = "linger_ms"))]
    pub linger: Duration,
    /// `batch.size` in bytes (default 1 000 000).
    pub batch_size: u32,
    /// `message.max.bytes` of the producer: the largest message (body, key and headers,
    /// uncompressed) it sends (default 1 MiB + 64 KiB: the gateway's default 1 MiB body limit
    /// plus [`HEADER_ROOM`](Self::HEADER_ROOM)). A larger message fails at once as
    /// `Rejected`. Topics this crate creates get it as their `max.message.bytes`, so the
    /// broker accepts what the producer sends; [`KafkaBroker::connect`](crate::KafkaBroker::connect)
    /// compares it with the broker's `message.max.bytes` when the broker reports it.
    pub max_message_bytes: usize,
    /// Producer instances (broker connections) to spread publishes over (default 1); a message
    /// key always maps to the same one. More than one helps brokers that serve a connection's
    /// requests one at a time.
    pub producers: usize,
    /// `queue.buffering.max.messages`: messages buffered before publishing answers
    /// "overloaded" (default 100 000).
    pub max_queued_messages: u32,
    /// `message.timeout.ms`: how long a message may wait for the broker's acknowledgement
    /// (retries included) before publishing fails (default 5 s). Keep it short so the gateway
    /// answers 503 quickly when the broker is down.
    #[cfg_attr(
        feature = "serde",
        serde(with = "millis", rename = "delivery_timeout_ms")
    )]
    pub delivery_timeout: Duration,
    /// How long the health check, and [`KafkaBroker::connect`](crate::KafkaBroker::connect),
    /// wait for a metadata response (default 2 s).
    #[cfg_attr(
        feature = "serde",
        serde(with = "millis", rename = "health_timeout_ms")
    )]
    pub health_timeout: Duration,
    /// How message keys are chosen (default [`KeyStrategy::IdempotencyKey`]).
    pub key: KeyStrategy,
    /// Create missing topics through the admin API on first use (default on). When off,
    /// publishing to a topic that does not exist fails as unavailable.
    pub create_topics: bool,
    /// Partitions of topics this crate creates (default 6).
    pub partitions: i32,
    /// Replication factor of topics this crate creates (default 1; use 3 in production).
    pub replication: i32,
    /// `min.insync.replicas` of topics this crate creates: how many replicas must have a
    /// message before the broker acknowledges it (the producer always uses `acks=all`). Unset
    /// by default (the broker's default, 1); with `replication = 3`, use 2, so one broker may
    /// fail without losing acknowledged messages or stopping writes.
    pub min_insync_replicas: Option<u16>,

    // Consumer (subscribers).
    /// `group.id`: members of one group share the topics' partitions (default
    /// `firefly-webhook`).
    pub group_id: String,
    /// `auto.offset.reset` for a group without committed offsets (default
    /// [`OffsetReset::Earliest`], so nothing published before the first worker started is
    /// skipped).
    pub auto_offset_reset: OffsetReset,
    /// `session.timeout.ms` (default 10 s).
    #[cfg_attr(
        feature = "serde",
        serde(with = "millis", rename = "session_timeout_ms")
    )]
    pub session_timeout: Duration,
    /// Finished offsets are committed at least this often (default 1 s) ...
    #[cfg_attr(
        feature = "serde",
        serde(with = "millis", rename = "commit_interval_ms")
    )]
    pub commit_interval: Duration,
    /// ... and as soon as this many deliveries finished since the last commit (default 500).
    pub commit_every: usize,
    /// How often consumer lag ([`metric::CONSUMER_LAG`]) and the producer queue depth
    /// ([`metric::PRODUCER_QUEUE_DEPTH`]) are reported (`statistics.interval.ms` of the consumer
    /// and of each producer, default 10 s); zero turns both off.
    ///
    /// [`metric::CONSUMER_LAG`]: firefly_webhook::metric::CONSUMER_LAG
    /// [`metric::PRODUCER_QUEUE_DEPTH`]: firefly_webhook::metric::PRODUCER_QUEUE_DEPTH
    #[cfg_attr(feature = "serde", serde(with = "millis", rename = "lag_interval_ms"))]
    pub lag_interval: Duration,
    /// Pause before retrying a dead-letter write that failed (default 1 s).
    #[cfg_attr(
        feature = "serde",
        serde(with = "millis", rename = "settle_backoff_ms")
    )]
    pub settle_backoff: Duration,
    /// The dead-letter topic of a consumed topic; `{topic}` is replaced by the consumed topic's
    /// name (default `{topic}.dlq`).
    pub dead_letter_topic: String,

    // Escape hatches.
    /// Extra librdkafka properties for every client (producer, admin and consumer), applied
    /// last (default empty).
    pub properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for consumers only, applied after
    /// [`properties`](Self::properties). The default sets `topic.metadata.refresh.interval.ms`
    /// to 10 s, so a subscribed topic created later (no webhook for it so far) is picked up
    /// within seconds instead of librdkafka's default 5 minutes.
    pub consumer_properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            client_id: "firefly-webhook".to_owned(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            compression: Compression::Lz4,
            // Short: with a bounded number of requests in flight (connections waiting for their
            // 202), the batching window adds straight to every request's latency.
            linger: Duration::from_millis(2),
            batch_size: 1_000_000,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            producers: 1,
            max_queued_messages: 100_000,
            delivery_timeout: Duration::from_secs(5),
            health_timeout: Duration::from_secs(2),
            key: KeyStrategy::default(),
            create_topics: true,
            partitions: 6,
            replication: 1,
            min_insync_replicas: None,
            group_id: "firefly-webhook".to_owned(),
            auto_offset_reset: OffsetReset::Earliest,
            session_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_secs(1),
            commit_every: 500,
            lag_interval: Duration::from_secs(10),
            settle_backoff: Duration::from_secs(1),
            dead_letter_topic: "{topic}.dlq".to_owned(),
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::from([(
                "topic.metadata.refresh.interval.ms".to_owned(),
                "10000".to_owned(),
            )]),
        }
    }
}

impl KafkaConfig {
    /// Room for a message's key and headers (the CloudEvents and `http_*` headers) on top of
    /// the body: 64 KiB. `max_message_bytes` = body limit + `HEADER_ROOM`.
    pub const HEADER_ROOM: usize = 64 * 1024;

    /// The default [`max_message_bytes`](Self::max_message_bytes): the gateway's default body
    /// limit (1 MiB) plus [`HEADER_ROOM`](Self::HEADER_ROOM).
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024 + Self::HEADER_ROOM;

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

    /// The dead-letter topic for messages from `topic`.
    pub fn dead_letter_topic_for(&self, topic: &str) -> String {
        self.dead_letter_topic.replace("{topic}", topic)
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
        match self.min_insync_replicas {
            Some(0) => {
                return Err(Error::Config(
                    "min_insync_replicas must be at least 1".into(),
                ));
            }
            Some(n) if i32::from(n) > self.replication => {
                return Err(Error::Config(format!(
                    "min_insync_replicas ({n}) exceeds replication ({}): every write would fail",
                    self.replication
                )));
            }
            _ => {}
        }
        // librdkafka's range for message.max.bytes.
        if !(1_000..=1_000_000_000).contains(&self.max_message_bytes) {
            return Err(Error::Config(
                "max_message_bytes must be between 1000 and 1000000000".into(),
            ));
        }
        if self.ssl_ca_location.is_some()
            && matches!(
                self.security_protocol,
                SecurityProtocol::Plaintext | SecurityProtocol::SaslPlaintext
            )
        {
            return Err(Error::Config(format!(
                "ssl_ca_location is set but security_protocol is {}; use ssl or sasl_ssl",
                self.security_protocol
            )));
        }
        if self.delivery_timeout <= self.linger {
            return Err(Error::Config(
                "delivery timeout must be longer than linger".into(),
            ));
        }
        if self.group_id.is_empty() {
            return Err(Error::Config("no consumer group given".into()));
        }
        if self.dead_letter_topic.is_empty() {
            return Err(Error::Config("no dead-letter topic given".into()));
        }
        Ok(())
    }

    /// Whether a broker whose `message.max.bytes` is `broker` takes messages up to
    /// `max_message_bytes`. Topics this crate creates carry their own `max.message.bytes`;
    /// topics created elsewhere inherit the broker's limit.
    pub(crate) fn check_broker_message_limit(&self, broker: usize) -> Result<()> {
        if broker >= self.max_message_bytes {
            return Ok(());
        }
        if !self.create_topics {
            return Err(Error::MessageLimit {
                broker,
                configured: self.max_message_bytes,
            });
        }
        tracing::warn!(
            broker,
            max_message_bytes = self.max_message_bytes,
            "the kafka broker's message.max.bytes is below max_message_bytes: topics created \
             by this crate set their own max.message.bytes, topics created elsewhere keep the \
             broker's limit"
        );
        Ok(())
    }

    /// Checks a subscription to `topics` (names, or `^` regular expressions).
    pub(crate) fn validate_topics(&self, topics: &[String]) -> Result<()> {
        if topics.is_empty() {
            return Err(Error::Config("no topics to subscribe to".into()));
        }
        if topics.iter().any(String::is_empty) {
            return Err(Error::Config("a topic name is empty".into()));
        }
        if topics.iter().any(|t| self.dead_letter_topic_for(t) == *t) {
            return Err(Error::Config(
                "the dead-letter topic is one of the subscribed topics".into(),
            ));
        }
        Ok(())
    }

    /// The subscription pattern for every topic starting with `prefix`, after checking that
    /// the dead letters of those topics would not match it too (and be consumed again).
    pub(crate) fn prefix_subscription(&self, prefix: &str) -> Result<String> {
        if prefix.is_empty() {
            return Err(Error::Config(
                "a topic prefix is needed to subscribe by prefix".into(),
            ));
        }
        if self
            .dead_letter_topic_for(&format!("{prefix}x"))
            .starts_with(prefix)
        {
            return Err(Error::Config(format!(
                "dead letters to `{}` would match the subscription to `{prefix}*`; \
                 use a dead-letter topic that does not start with the prefix, e.g. `dlq.{{topic}}`",
                self.dead_letter_topic
            )));
        }
        let mut pattern = String::from("^");
        for c in prefix.chars() {
            if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(".*");
        Ok(pattern)
    }

    /// Connection settings common to every client.
    fn base_client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        // rdkafka derives the level from the `log` crate; this crate logs through `tracing`.
        c.set_log_level(log_level());
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("security.protocol", self.security_protocol.as_str())
            // Reconnect quickly after a broker restart so publishing recovers within seconds.
            .set("reconnect.backoff.max.ms", "1000");
        if let Some(mechanism) = self.sasl_mechanism {
            c.set("sasl.mechanisms", mechanism.as_str());
        }
        let optional = [
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                c.set(key, v);
            }
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca.to_string_lossy());
        }
        c
    }

    /// The durable producer: idempotent, `acks=all`, batched.
    pub(crate) fn producer_client(&self) -> ClientConfig {
        let mut c = self.base_client();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.compression.as_str())
            .set("linger.ms", millis(self.linger))
            .set("batch.size", self.batch_size.to_string())
            .set(
                "queue.buffering.max.messages",
                self.max_queued_messages.to_string(),
            )
            .set("message.timeout.ms", millis(self.delivery_timeout))
            .set("message.max.bytes", self.max_message_bytes.to_string())
            // Reports the producer queue depth (see `stats::ProducerContext`).
            .set("statistics.interval.ms", millis(self.lag_interval))
            // Topics are created through the admin API only, with this config's partitions;
            // a broker that auto-created them on a metadata request would use its defaults.
            .set("allow.auto.create.topics", "false");
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

    /// A consumer-group member that commits only what the subscriber says is finished.
    pub(crate) fn consumer_client(&self) -> ClientConfig {
        let mut c = self.base_client();
        c.set("group.id", &self.group_id)
            // Offsets are committed by the subscriber, only up to what is finished.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", self.auto_offset_reset.as_str())
            .set("session.timeout.ms", millis(self.session_timeout))
            .set("statistics.interval.ms", millis(self.lag_interval));
        apply(&mut c, &self.properties);
        apply(&mut c, &self.consumer_properties);
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
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("compression", &self.compression)
            .field("linger", &self.linger)
            .field("batch_size", &self.batch_size)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("producers", &self.producers)
            .field("max_queued_messages", &self.max_queued_messages)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("health_timeout", &self.health_timeout)
            .field("key", &self.key)
            .field("create_topics", &self.create_topics)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("min_insync_replicas", &self.min_insync_replicas)
            .field("group_id", &self.group_id)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("session_timeout", &self.session_timeout)
            .field("commit_interval", &self.commit_interval)
            .field("commit_every", &self.commit_every)
            .field("lag_interval", &self.lag_interval)
            .field("settle_backoff", &self.settle_backoff)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("properties", &Redacted(&self.properties))
            .field("consumer_properties", &Redacted(&self.consumer_properties))
            .finish()
    }
}

/// A closed set of librdkafka property values: `as_str`, `Display` and `FromStr` (ASCII case
/// insensitive) use librdkafka's spelling, and so does serde.
macro_rules! property_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $what:literal {
            $($(#[$variant_meta:meta])* $variant:ident => $value:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// The librdkafka value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                $(
                    if s.eq_ignore_ascii_case($value) {
                        return Ok(Self::$variant);
                    }
                )+
                Err(Error::Config(format!(
                    concat!("unknown ", $what, " `{}` (expected one of: {})"),
                    s,
                    [$($value),+].join(", "),
                )))
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

property_enum! {
    /// `security.protocol`: how clients talk to the brokers.
    ///
    /// `ssl` and `sasl_ssl` need librdkafka built with OpenSSL: enable rdkafka's `ssl` (or
    /// `ssl-vendored`) feature in your application's `Cargo.toml`.
    pub enum SecurityProtocol: "security protocol" {
        /// `plaintext`: no encryption, no authentication (the default).
        #[default]
        Plaintext => "plaintext",
        /// `ssl`: TLS.
        Ssl => "ssl",
        /// `sasl_plaintext`: SASL authentication without encryption.
        SaslPlaintext => "sasl_plaintext",
        /// `sasl_ssl`: SASL authentication over TLS.
        SaslSsl => "sasl_ssl",
    }
}

property_enum! {
    /// `sasl.mechanisms`: how clients authenticate with the `sasl_*` protocols.
    ///
    /// `SCRAM-*` and `OAUTHBEARER` need librdkafka built with OpenSSL (rdkafka's `ssl`
    /// feature), `GSSAPI` needs rdkafka's `gssapi` feature. `OAUTHBEARER` also needs a token
    /// source configured through [`KafkaConfig::properties`] (`sasl.oauthbearer.method=oidc`
    /// needs rdkafka's `curl` feature as well).
    pub enum SaslMechanism: "sasl mechanism" {
        /// `PLAIN`: username and password (use with `sasl_ssl` outside trusted networks).
        #[default]
        Plain => "PLAIN",
        /// `SCRAM-SHA-256`.
        ScramSha256 => "SCRAM-SHA-256",
        /// `SCRAM-SHA-512`.
        ScramSha512 => "SCRAM-SHA-512",
        /// `OAUTHBEARER`.
        OAuthBearer => "OAUTHBEARER",
        /// `GSSAPI` (Kerberos).
        Gssapi => "GSSAPI",
    }
}

property_enum! {
    /// `compression.type` of produced batches.
    ///
    /// `gzip`, `snappy` and `lz4` are built in; `zstd` needs rdkafka's `zstd` feature (without
    /// it creating the broker fails).
    pub enum Compression: "compression" {
        /// `none`.
        None => "none",
        /// `gzip`.
        Gzip => "gzip",
        /// `snappy`.
        Snappy => "snappy",
        /// `lz4` (the default): cheap on CPU, good on JSON.
        #[default]
        Lz4 => "lz4",
        /// `zstd`.
        Zstd => "zstd",
    }
}

property_enum! {
    /// `auto.offset.reset`: where a consumer group without committed offsets starts.
    pub enum OffsetReset: "offset reset" {
        /// `earliest`: from the oldest retained message (the default), so nothing published
        /// before the first worker started is skipped.
        #[default]
        Earliest => "earliest",
        /// `latest`: only messages published from now on.
        Latest => "latest",
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

#[cfg(feature = "serde")]
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
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
        config
            .consumer_properties
            .insert("sasl.password".into(), "c0nsumer".into());
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains("s3cr3t"));
        assert!(!debug.contains("pa55word"));
        assert!(!debug.contains("c0nsumer"));
        assert!(debug.contains("socket.keepalive.enable"));
        assert!(debug.contains("10.0.0.1:9092"));
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
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
        assert_eq!(c.get("sasl.mechanisms"), None);
        assert_eq!(c.get("message.max.bytes"), Some("1114112"));
        assert_eq!(c.get("allow.auto.create.topics"), Some("false"));
        assert_eq!(c.get("ssl.ca.location"), None);
    }

    #[test]
    fn tls_settings_reach_every_client() {
        let config = KafkaConfig {
            security_protocol: SecurityProtocol::Ssl,
            ssl_ca_location: Some("/etc/kafka/ca.pem".into()),
            ..KafkaConfig::default()
        };
        assert!(config.validate().is_ok());
        for c in [
            config.producer_client(),
            config.consumer_client(),
            config.admin_client(),
        ] {
            assert_eq!(c.get("security.protocol"), Some("ssl"));
            assert_eq!(c.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
        }
        let plaintext = KafkaConfig {
            ssl_ca_location: Some("/etc/kafka/ca.pem".into()),
            ..KafkaConfig::default()
        };
        let err = plaintext.validate().unwrap_err();
        assert!(err.to_string().contains("use ssl or sasl_ssl"), "{err}");
    }

    #[test]
    fn broker_message_limit() {
        let config = KafkaConfig::default();
        assert_eq!(
            config.max_message_bytes,
            1024 * 1024 + KafkaConfig::HEADER_ROOM
        );
        assert!(config.check_broker_message_limit(2_000_000).is_ok());
        assert!(
            config
                .check_broker_message_limit(config.max_message_bytes)
                .is_ok()
        );
        // Topics this crate creates carry their own max.message.bytes.
        assert!(config.check_broker_message_limit(1_048_588).is_ok());
        let existing = KafkaConfig {
            create_topics: false,
            ..KafkaConfig::default()
        };
        let err = existing.check_broker_message_limit(1_048_588).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MessageLimit {
                    broker: 1_048_588,
                    configured: 1_114_112
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(
                "the kafka broker accepts messages up to 1048588 bytes (message.max.bytes)"
            ),
            "{err}"
        );
    }

    #[test]
    fn typed_values_reach_librdkafka() {
        let config = KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            compression: Compression::Zstd,
            auto_offset_reset: OffsetReset::Latest,
            ..KafkaConfig::default()
        };
        let producer = config.producer_client();
        assert_eq!(producer.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(producer.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(producer.get("compression.type"), Some("zstd"));
        let consumer = config.consumer_client();
        assert_eq!(consumer.get("auto.offset.reset"), Some("latest"));
        assert_eq!(consumer.get("security.protocol"), Some("sasl_ssl"));
    }

    #[test]
    fn enums_parse_and_print_librdkafka_values() {
        for p in [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ] {
            assert_eq!(p.to_string().parse::<SecurityProtocol>().unwrap(), p);
        }
        assert_eq!(
            "scram-sha-256".parse::<SaslMechanism>().unwrap(),
            SaslMechanism::ScramSha256
        );
        assert_eq!(SaslMechanism::OAuthBearer.to_string(), "OAUTHBEARER");
        assert_eq!("LZ4".parse::<Compression>().unwrap(), Compression::Lz4);
        assert_eq!(Compression::None.as_str(), "none");
        assert_eq!(
            "earliest".parse::<OffsetReset>().unwrap(),
            OffsetReset::Earliest
        );
        let err = "brotli".parse::<Compression>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid kafka configuration: unknown compression `brotli` \
             (expected one of: none, gzip, snappy, lz4, zstd)"
        );
        assert!("ssl3".parse::<SecurityProtocol>().is_err());
        assert!("smallest".parse::<OffsetReset>().is_err());
    }

    #[test]
    fn consumer_never_auto_commits() {
        let config = KafkaConfig {
            group_id: "g".into(),
            ..KafkaConfig::default()
        };
        let c = config.consumer_client();
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(c.get("topic.metadata.refresh.interval.ms"), Some("10000"));
        assert_eq!(config.dead_letter_topic_for("github"), "github.dlq");
        // Consumer-only properties stay out of the producer.
        assert_eq!(
            config
                .producer_client()
                .get("topic.metadata.refresh.interval.ms"),
            None
        );
    }

    #[test]
    fn consumer_properties_win_over_shared_ones() {
        let mut config = KafkaConfig::default().set("fetch.max.bytes", "1000");
        config
            .consumer_properties
            .insert("fetch.max.bytes".into(), "2000".into());
        assert_eq!(
            config.consumer_client().get("fetch.max.bytes"),
            Some("2000")
        );
        assert_eq!(
            config.producer_client().get("fetch.max.bytes"),
            Some("1000")
        );
    }

    #[test]
    fn prefix_subscription_escapes_and_avoids_its_dead_letters() {
        let mut config = KafkaConfig::default();
        let err = config.prefix_subscription("webhooks.").unwrap_err();
        assert!(err.to_string().contains("dlq.{topic}"), "{err}");
        config.dead_letter_topic = "dlq.{topic}".into();
        let pattern = config.prefix_subscription("webhooks.").unwrap();
        assert_eq!(pattern, r"^webhooks\..*");
        assert_eq!(
            config.dead_letter_topic_for("webhooks.github"),
            "dlq.webhooks.github"
        );
        assert!(config.validate_topics(&[pattern]).is_ok());
        assert!(config.prefix_subscription("").is_err());
    }

    #[test]
    fn validation() {
        assert!(KafkaConfig::default().validate().is_ok());
        assert!(KafkaConfig::from_brokers("").validate().is_err());
        let production = KafkaConfig {
            replication: 3,
            min_insync_replicas: Some(2),
            ..KafkaConfig::default()
        };
        assert!(production.validate().is_ok());
        for bad in [
            KafkaConfig {
                partitions: 0,
                ..KafkaConfig::default()
            },
            KafkaConfig {
                replication: 0,
                ..KafkaConfig::default()
            },
            KafkaConfig {
                group_id: String::new(),
                ..KafkaConfig::default()
            },
            KafkaConfig {
                dead_letter_topic: String::new(),
                ..KafkaConfig::default()
            },
            KafkaConfig {
                delivery_timeout: Duration::from_millis(2),
                ..KafkaConfig::default()
            },
            KafkaConfig {
                min_insync_replicas: Some(0),
                ..KafkaConfig::default()
            },
            KafkaConfig {
                min_insync_replicas: Some(2),
                ..KafkaConfig::default()
            },
            KafkaConfig {
                max_message_bytes: 999,
                ..KafkaConfig::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(Error::Config(_))), "{bad:?}");
        }

        let mut s = KafkaConfig::default();
        assert!(s.validate_topics(&[]).is_err());
        assert!(s.validate_topics(&[String::new()]).is_err());
        s.dead_letter_topic = "a".into();
        assert!(s.validate_topics(&["a".into()]).is_err());
        s.dead_letter_topic = "{topic}".into();
        assert!(s.validate_topics(&["a".into()]).is_err());
        s.dead_letter_topic = "dlq.{topic}".into();
        assert!(s.validate_topics(&["a".into()]).is_ok());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_uses_milliseconds_librdkafka_values_and_defaults() {
        let config: KafkaConfig = serde_json::from_str(
            r#"{
                "brokers": "10.0.0.1:9092",
                "security_protocol": "sasl_ssl",
                "sasl_mechanism": "SCRAM-SHA-256",
                "compression": "zstd",
                "auto_offset_reset": "latest",
                "linger_ms": 5,
                "session_timeout_ms": 6000,
                "max_message_bytes": 2097152,
                "replication": 3,
                "min_insync_replicas": 2,
                "ssl_ca_location": "/etc/kafka/ca.pem",
                "key": {"header": "x-id"},
                "properties": {"socket.keepalive.enable": "true"}
            }"#,
        )
        .unwrap();
        assert_eq!(config.brokers, "10.0.0.1:9092");
        assert_eq!(config.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(config.sasl_mechanism, Some(SaslMechanism::ScramSha256));
        assert_eq!(config.compression, Compression::Zstd);
        assert_eq!(config.auto_offset_reset, OffsetReset::Latest);
        assert_eq!(config.linger, Duration::from_millis(5));
        assert_eq!(config.session_timeout, Duration::from_secs(6));
        assert_eq!(config.max_message_bytes, 2 * 1024 * 1024);
        assert_eq!(config.min_insync_replicas, Some(2));
        assert_eq!(
            config.ssl_ca_location.as_deref(),
            Some(std::path::Path::new("/etc/kafka/ca.pem"))
        );
        assert_eq!(config.key, KeyStrategy::header("x-id"));
        assert_eq!(config.group_id, KafkaConfig::default().group_id);
        assert_eq!(
            config.consumer_properties,
            KafkaConfig::default().consumer_properties
        );
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["delivery_timeout_ms"], 5000);
        assert_eq!(json["compression"], "zstd");
        let back: KafkaConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
        assert!(serde_json::from_str::<KafkaConfig>(r#"{"compression":"brotli"}"#).is_err());
    }
}
