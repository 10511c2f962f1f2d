//! The crate's error type.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use firefly_webhook::{BoxError, PublishError, SubscribeError};

/// What can go wrong talking to RabbitMQ.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client reported an error (connection, channel or protocol).
    #[error("rabbitmq client error")]
    Amqp(#[from] lapin::Error),
    /// There is no usable connection right now; a background task is reconnecting.
    #[error("not connected to rabbitmq")]
    Disconnected,
    /// The broker blocked the connection (memory or disk alarm).
    #[error("rabbitmq blocked the connection (resource alarm)")]
    Blocked,
    /// A broker operation did not finish in time.
    #[error("rabbitmq did not answer within {0:?}")]
    Timeout(Duration),
    /// The message could not be routed to any queue (returned by the broker).
    #[error("rabbitmq could not route the message: {code} {text}")]
    Unroutable {
        /// The AMQP reply code (312 NO_ROUTE).
        code: u16,
        /// The broker's explanation.
        text: String,
    },
    /// The broker refused to take responsibility for the message (negative confirm).
    #[error("rabbitmq did not accept the message (nack)")]
    Nacked,
    /// A name is too long for AMQP (exchange, queue, routing key, header names: 255 bytes).
    #[error("name is longer than 255 bytes: {0}")]
    NameTooLong(String),
    /// The message headers would not fit in one AMQP frame.
    #[error("message headers too large: {0} bytes")]
    HeadersTooLarge(usize),
    /// [`AmqpConfig::url`](crate::AmqpConfig::url) is not an AMQP URL.
    #[error("invalid rabbitmq url: {0}")]
    InvalidUrl(String),
    /// A subscriber was asked to consume no destination.
    #[error("a subscriber needs at least one destination")]
    NoDestinations,
    /// An exchange or queue exists on the broker with other settings than this crate declares
    /// (RabbitMQ answered 406 PRECONDITION_FAILED), typically a queue declared by an older
    /// version or another config. The broker keeps the existing one; see the crate docs,
    /// "Changing the topology".
    #[error(
        "`{name}` exists on rabbitmq with other arguments ({reason}): delete it (after draining \
         it) so it is declared anew, or set declare_topology = false and manage the topology \
         yourself (a policy can apply dead-letter-strategy and overflow)"
    )]
    TopologyMismatch {
        /// The exchange or queue.
        name: String,
        /// The broker's explanation.
        reason: String,
    },
    /// [`AmqpConfig::tls_ca_file`](crate::AmqpConfig::tls_ca_file) cannot be read or holds
    /// no PEM certificate.
    #[error("cannot use the tls ca file {}", path.display())]
    TlsCaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether a later attempt with the same message may succeed.
    pub fn is_retryable(&self) -> bool {
        !self.is_permanent()
    }

    /// Mistakes in the message, the names or the configuration: retrying cannot help.
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Unroutable { .. }
                | Self::NameTooLong(_)
                | Self::HeadersTooLarge(_)
                | Self::InvalidUrl(_)
                | Self::NoDestinations
                | Self::TopologyMismatch { .. }
                | Self::TlsCaFile { .. }
        )
    }

    pub(crate) fn into_subscribe(self) -> SubscribeError {
        match self {
            e @ (Self::Disconnected | Self::Amqp(_) | Self::Blocked) => {
                SubscribeError::Unavailable(Box::new(e))
            }
            e => SubscribeError::Settle(Box::new(e)),
        }
    }
}

impl Error {
    /// `error` from declaring `name`, a [`TopologyMismatch`](Self::TopologyMismatch) when the
    /// broker refused it as different from the existing one.
    pub(crate) fn declaring(name: &str, error: lapin::Error) -> Self {
        use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
        match error.kind() {
            lapin::ErrorKind::ProtocolError(e)
                if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) =>
            {
                Self::TopologyMismatch {
                    name: name.to_owned(),
                    reason: e.get_message().to_string(),
                }
            }
            _ => Self::Amqp(error),
        }
    }
}

impl From<Error> for PublishError {
    /// Unroutable messages, over-long names and oversized headers are rejections (HTTP 500:
    /// resending the same message cannot help until the topology changes); a nack, a lost
    /// connection or a resource alarm is temporary (503).
    fn from(e: Error) -> Self {
        match e {
            Error::Timeout(d) => Self::TimedOut(d),
            Error::Blocked => Self::Overloaded,
            e if e.is_permanent() => Self::Rejected(BoxError::from(e)),
            e => Self::Unavailable(BoxError::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn wrapped_errors_are_a_source_not_part_of_the_message() {
        let inner = lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
            lapin::ConnectionState::Closed,
        ));
        let inner_text = inner.to_string();
        let err = Error::from(inner);
        assert_eq!(err.to_string(), "rabbitmq client error");
        assert_eq!(err.source().map(ToString::to_string), Some(inner_text));
    }

    #[test]
    fn permanent_errors_are_rejections_others_unavailable() {
        let rejected = PublishError::from(Error::Unroutable {
            code: 312,
            text: "NO_ROUTE".into(),
        });
        assert!(matches!(rejected, PublishError::Rejected(_)));
        assert!(!Error::NoDestinations.is_retryable());
        assert!(matches!(
            PublishError::from(Error::Nacked),
            PublishError::Unavailable(_)
        ));
        assert!(matches!(
            PublishError::from(Error::Blocked),
            PublishError::Overloaded
        ));
    }
}
