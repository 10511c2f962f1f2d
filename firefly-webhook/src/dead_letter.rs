//! Why an event was given up on: [`DeadLetter`] records and their [`FailureCategory`], and the
//! [`Summary`] of replaying or purging dead letters.
//!
//! These are domain types; [`wire`](crate::wire) encodes them as message attributes.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

/// Why a message was dead-lettered, as written next to the original message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Human-readable reason (the last error's message).
    pub reason: String,
    /// Coarse failure class.
    pub category: FailureCategory,
    /// How many attempts were made.
    pub attempts: u32,
    /// The error's type or code, for grouping.
    pub error_type: String,
    /// When the message was given up on.
    pub rejected_at: OffsetDateTime,
    /// Where the message was originally published.
    pub destination: String,
}

impl DeadLetter {
    /// A dead-letter record rejected now.
    pub fn new(
        reason: impl Into<String>,
        category: FailureCategory,
        attempts: u32,
        error_type: impl Into<String>,
        destination: impl Into<String>,
    ) -> Self {
        Self {
            reason: reason.into(),
            category,
            attempts,
            error_type: error_type.into(),
            rejected_at: OffsetDateTime::now_utc(),
            destination: destination.into(),
        }
    }
}

/// Coarse classes of processing failure, recorded on dead-lettered messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureCategory {
    /// The event is malformed or failed verification; retrying cannot help.
    Validation,
    /// The processor failed.
    Processing,
    /// The processor did not finish in time.
    Timeout,
    /// The processor said the failure is permanent.
    Unrecoverable,
}

impl FailureCategory {
    /// The lower-case name written on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::Processing => "processing",
            Self::Timeout => "timeout",
            Self::Unrecoverable => "unrecoverable",
        }
    }
}

impl fmt::Display for FailureCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureCategory {
    type Err = UnknownCategory;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "validation" => Self::Validation,
            "processing" => Self::Processing,
            "timeout" => Self::Timeout,
            "unrecoverable" => Self::Unrecoverable,
            other => return Err(UnknownCategory(other.to_owned())),
        })
    }
}

/// A failure category name that is not one of [`FailureCategory`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure category `{0}`")]
pub struct UnknownCategory(pub String);

/// How a replay or purge of dead letters went, per dead letter read: the shape every
/// transport's dead-letter tools share (`firefly_webhook_kafka::dlq`,
/// `firefly_webhook_amqp::dlq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Replayed or purged: no longer among the dead letters.
    pub handled: u64,
    /// Not selected by the filter, or beyond the limit: still there.
    pub skipped: u64,
    /// Selected but kept in place by the transport: on Kafka, a record behind one that stays
    /// (a topic is cut only from its start); never on RabbitMQ. Still there.
    pub blocked: u64,
    /// Selected, but replaying it failed: still there.
    pub failed: u64,
}
