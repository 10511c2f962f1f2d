//! The in-process idempotency store at its capacity, as a worker's store is once it has run
//! for a while: 1,000,000 new keys, each claimed and completed, into a `MemoryStore` of the
//! default 50,000 keys; each pair timed on its own. Prints the mean, quantiles and the longest
//! pair of the last 900,000 (the store is full from the 50,001st key), since a store that makes
//! room in batches shows it only in the tail: the time the caller waits, holding the store's
//! lock, which every other claim then waits for too.
//!
//! `cargo bench -p firefly-webhook --bench store`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use firefly_webhook::idempotency::{Claim, IdempotencyStore, MemoryStore};

const KEYS: usize = 1_000_000;
const WARM: usize = 100_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store = MemoryStore::new();
    let (lock, done) = (Duration::from_secs(300), Duration::from_secs(86_400));
    let mut times = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let key = format!("github:sha256:{i:064x}");
        let started = Instant::now();
        let Claim::Acquired(token) = store.claim(&key, lock).await.unwrap() else {
            panic!("{key} is new")
        };
        store.complete(&key, &token, done).await.unwrap();
        times.push(started.elapsed());
    }
    assert_eq!(store.len(), 50_000);
    let full = &mut times[WARM..];
    let mean = full.iter().sum::<Duration>() / u32::try_from(full.len()).unwrap();
    full.sort_unstable();
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((full.len() - 1) as f64 * q) as usize;
        full[i]
    };
    println!(
        "memory store at capacity (50,000 keys), claim + complete of a new key, {} pairs:",
        full.len()
    );
    println!(
        "  mean {mean:?}  p50 {:?}  p99 {:?}  p99.9 {:?}  p99.99 {:?}  max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(0.9999),
        full[full.len() - 1]
    );
}
