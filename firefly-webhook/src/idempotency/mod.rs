//! Process each event's effect once: the [`IdempotencyStore`] port and its memory backend.

mod store;

pub use self::store::{Claim, FencingToken, IdempotencyStore, MemoryStore, StoreError};
