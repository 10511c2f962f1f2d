//! Process each event's effect once.
//!
//! - [`IdempotencyStore`]: the port (claim with a fenced lock, renew it, complete, release,
//!   count failures), with [`MemoryStore`] here and `RedisStore` in `firefly-webhook-redis`.
//! - [`IdempotencyLayer`]: the tower layer the worker puts in front of your processor; it
//!   renews the lock while the processor runs and hands it the [`FencingToken`].
//! - [`IdempotencyKeys`]: keys from what the provider signed, so a provider's redelivery is
//!   recognised and a replayed request with a fresh delivery header is too.

mod key;
mod layer;
mod store;

pub use self::key::{IdempotencyKeys, MAX_ID_LEN, idempotency_key};
pub use self::layer::{
    Idempotency, IdempotencyConfig, IdempotencyLayer, InProgress, LeaseLost, ResponseFuture,
};
pub use self::store::{Claim, FencingToken, IdempotencyStore, MemoryStore, StoreError};
