//! The crate's error type.

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
    #[error("kafka client could not be created: {0}")]
    Client(#[source] KafkaError),
    /// A Kafka request failed.
    #[error("kafka request failed: {0}")]
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
    /// A concurrent attempt to create or find a topic failed.
    #[error("topic `{0}` is not ready")]
    TopicNotReady(String),
    /// The client was shut down while a request was pending.
    #[error("the kafka client was shut down")]
    ShutDown,
    /// A blocking librdkafka call could not be run.
    #[error("kafka call was interrupted: {0}")]
    Interrupted(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
