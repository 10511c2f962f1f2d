//! Process each event's effect once.
//!
//! - [`IdempotencyStore`]: the port (claim with a fenced lock, complete, release, count
//!   failures), with [`MemoryStore`] here and `RedisStore` in `firefly-webhook-redis`.
//! - [`IdempotencyLayer`]: the tower layer the worker puts in front of your processor.
//! - [`IdempotencyKeys`]: provider-aware keys, so a provider's redelivery is recognised.

mod key;
mod layer;
mod store;

pub use self::key::{IdempotencyKeys, idempotency_key};
pub use self::layer::{
    Idempotency, IdempotencyConfig, IdempotencyLayer, InProgress, ResponseFuture,
};
pub use self::store::{Claim, FencingToken, IdempotencyStore, MemoryStore, StoreError};
