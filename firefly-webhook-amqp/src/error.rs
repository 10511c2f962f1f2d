//! The crate's error type.

use std::time::Duration;

use firefly_webhook::{BoxError, PublishError, SubscribeError};

/// What can go wrong talking to RabbitMQ.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client reported an error (connection, channel or protocol).
    #[error("rabbitmq error: {0}")]
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
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether a later attempt with the same message may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Self::Unroutable { .. } | Self::NameTooLong(_) | Self::HeadersTooLarge(_)
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

impl From<Error> for PublishError {
    /// Unroutable messages, over-long names and oversized headers are rejections (HTTP 500: resending the same message
    /// cannot help until the topology changes); a nack, a lost connection or a resource
    /// alarm is temporary (503).
    fn from(e: Error) -> Self {
        match e {
            Error::Timeout(d) => Self::TimedOut(d),
            Error::Blocked => Self::Overloaded,
            e @ (Error::Unroutable { .. } | Error::NameTooLong(_) | Error::HeadersTooLarge(_)) => {
                Self::Rejected(BoxError::from(e))
            }
            e => Self::Unavailable(BoxError::from(e)),
        }
    }
}
