#![doc = include_str!("../README.md")]

mod app;
mod env;
mod fetch;
mod openapi;
mod telemetry;
mod transport;
mod verify;

use std::sync::Arc;

use firefly_webhook::BoxError;
use firefly_webhook::idempotency::IdempotencyStore;

pub use crate::env::{Defaults, EnvError, LogFormat, RateLimit, Redacted, Settings};
pub use crate::openapi::openapi;
pub use crate::telemetry::{
    BYTES_BUCKETS, LIVE_PATH, METRICS_PATH, OPENAPI_PATH, READY_PATH, SECONDS_BUCKETS, Telemetry,
    install_recorder, recorder,
};
pub use crate::transport::{Transport, TransportKind, UnknownTransport};

/// The idempotency store `FIREFLY_REDIS_URL` asks for (`--features redis`), or `None` for the
/// worker's own memory store.
///
/// Redis is not required to be up at start: processing waits (deliveries stay unacked) until it
/// answers, which the log says.
#[cfg_attr(not(feature = "redis"), allow(clippy::unused_async))]
pub async fn idempotency_store(
    settings: &Settings,
) -> Result<Option<Arc<dyn IdempotencyStore>>, BoxError> {
    let Some(url) = &settings.redis_url else {
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        let store = firefly_webhook_redis::RedisStore::from_url(url.0.as_str())?;
        if let Err(err) = store.ping().await {
            tracing::warn!(
                error = &err as &dyn std::error::Error,
                "redis unreachable; processing waits until it is back"
            );
        }
        tracing::info!("idempotency shared through redis");
        Ok(Some(Arc::new(store)))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err("FIREFLY_REDIS_URL needs `--features redis`".into())
    }
}
