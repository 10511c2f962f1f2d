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
    #[error("could not build the redis connection pool: {0}")]
    Pool(#[source] deadpool_redis::BuildError),
    /// Redis cannot be reached, or did not answer in time.
    #[error("redis is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Redis answered with an error.
    #[error("redis rejected the command: {0}")]
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
