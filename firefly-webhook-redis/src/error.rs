//! The crate's error type.

use deadpool_redis::redis::{ErrorKind, RedisError, ServerErrorKind};
use firefly_webhook::{BoxError, StoreError};

/// A Redis store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (bad key prefix, zero pool size, unparsable URL).
    #[error("invalid redis store configuration: {0}")]
    Config(String),
    /// The connection pool could not be built.
    #[error("could not build the redis connection pool")]
    Pool(#[source] deadpool_redis::BuildError),
    /// Redis cannot be reached, or did not answer in time.
    #[error("redis is unavailable")]
    Unavailable(#[source] BoxError),
    /// Redis answered with an error.
    #[error("redis rejected the command")]
    Redis(#[source] RedisError),
    /// Redis answered with something the store did not expect.
    #[error("redis returned an unexpected reply: {0}")]
    UnexpectedReply(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the failure means Redis could not be reached (as opposed to a wrong answer).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    pub(crate) fn from_redis(err: RedisError) -> Self {
        if unreachable(&err) {
            Self::Unavailable(Box::new(err))
        } else {
            Self::Redis(err)
        }
    }

    pub(crate) fn from_pool(err: deadpool_redis::PoolError) -> Self {
        match err {
            deadpool_redis::PoolError::Backend(err) => Self::from_redis(err),
            other => Self::Unavailable(Box::new(other)),
        }
    }
}

/// Errors after which the connection should be replaced, and which mean "try again later".
pub(crate) fn unreachable(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
        || matches!(
            err.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

impl From<Error> for StoreError {
    fn from(err: Error) -> Self {
        if err.is_unavailable() {
            StoreError::Unavailable(Box::new(err))
        } else {
            StoreError::Backend(Box::new(err))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn display_leaves_the_cause_to_source() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        let err = Error::from_redis(io);
        assert!(err.is_unavailable());
        assert_eq!(err.to_string(), "redis is unavailable");
        let source = err.source().expect("the redis error is the source");
        assert!(
            source.to_string().contains("connection refused"),
            "{source}"
        );

        let store = StoreError::from(err);
        assert_eq!(store.to_string(), "idempotency store unavailable");
        let chain: Vec<String> = std::iter::successors(store.source(), |e| (*e).source())
            .map(ToString::to_string)
            .collect();
        assert_eq!(chain[0], "redis is unavailable");
        assert!(chain[1].contains("connection refused"), "{chain:?}");
    }
}
