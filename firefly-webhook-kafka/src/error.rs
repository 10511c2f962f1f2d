//! The crate's error type.

use firefly_webhook::PublishError;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// An error setting up or talking to Kafka outside the [`Publisher`](firefly_webhook::Publisher)
/// and [`Subscriber`](firefly_webhook::Subscriber) ports (which have their own error types).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid kafka configuration: {0}")]
    Config(String),
    /// librdkafka refused to create a client (bad property, unknown value, ...).
    #[error("kafka client could not be created")]
    Client(#[source] KafkaError),
    /// [`KafkaBroker::connect`](crate::KafkaBroker::connect): the cluster did not answer a
    /// metadata request within the health timeout.
    #[error("kafka cluster did not answer")]
    Unreachable(#[source] PublishError),
    /// A Kafka request failed.
    #[error("kafka request failed")]
    Kafka(#[from] KafkaError),
    /// A topic does not exist and topic creation is off.
    #[error("topic `{0}` does not exist and topic creation is off")]
    UnknownTopic(String),
    /// The broker refused to create a topic.
    #[error("topic `{topic}` could not be created: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
    /// A message larger than [`max_message_bytes`](crate::KafkaConfig::max_message_bytes)
    /// (refused by the producer before sending), or than its topic's `max.message.bytes`
    /// (refused by the broker).
    #[error(
        "message too large for kafka (max_message_bytes is {limit}; the topic's max.message.bytes may be lower)"
    )]
    TooLarge {
        /// [`max_message_bytes`](crate::KafkaConfig::max_message_bytes).
        limit: usize,
        /// librdkafka's or the broker's answer.
        #[source]
        source: KafkaError,
    },
    /// [`KafkaBroker::connect`](crate::KafkaBroker::connect): the broker reports a
    /// `message.max.bytes` below [`max_message_bytes`](crate::KafkaConfig::max_message_bytes)
    /// and topics are not created by this crate, so large messages would be refused.
    #[error(
        "the kafka broker accepts messages up to {broker} bytes (message.max.bytes), less than max_message_bytes ({configured}): raise the broker's or the topics' limit, or lower max_message_bytes"
    )]
    MessageLimit {
        /// The broker's `message.max.bytes`.
        broker: usize,
        /// [`max_message_bytes`](crate::KafkaConfig::max_message_bytes).
        configured: usize,
    },
    /// A concurrent attempt to create or find a topic failed.
    #[error("topic `{0}` is not ready")]
    TopicNotReady(String),
    /// The client was shut down while a request was pending.
    #[error("the kafka client was shut down")]
    ShutDown,
    /// A blocking librdkafka call could not be run.
    #[error("kafka call was interrupted")]
    Interrupted(#[source] tokio::task::JoinError),
    /// A subscriber was created outside a Tokio runtime (it runs a background committer).
    #[error("kafka subscribers must be created inside a tokio runtime")]
    NoRuntime,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
