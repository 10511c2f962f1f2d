//! The [`IdempotencyStore`] port and the in-process [`MemoryStore`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use siphasher::sip128::{Hasher128, SipHasher13};
use tokio::time::Instant;

pub use crate::process::FencingToken;
use futures_util::future::BoxFuture;

use crate::BoxError;

/// Remembers which events were processed, so each event's effect happens once.
///
/// A claim is two-phase: [`claim`](Self::claim) takes a short lock (the lock TTL bounds how
/// long a crashed worker blocks others), [`complete`](Self::complete) turns it into a long-lived
/// "processed" marker. While the processor runs, [`renew`](Self::renew) keeps the lock alive.
/// Every phase is fenced: only the holder of the [`FencingToken`] returned by `claim` can renew,
/// complete or release, so a worker whose lock expired cannot overwrite a newer owner's claim.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Tries to take the processing lock for `key` for `lock_ttl`.
    async fn claim(&self, key: &str, lock_ttl: Duration) -> Result<Claim, StoreError>;

    /// Extends the lock on `key` to `lock_ttl` from now, if `token` still owns it and it has
    /// not expired. Fails with [`StoreError::Fenced`] otherwise: the caller no longer holds the
    /// lock and must stop.
    ///
    /// The [`IdempotencyLayer`](super::IdempotencyLayer) calls it every third of the lock TTL
    /// while a processor runs, so a processor may run longer than the lock TTL while a crashed
    /// worker still blocks others for one TTL at most.
    async fn renew(
        &self,
        key: &str,
        token: &FencingToken,
        lock_ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Marks `key` processed for `processed_ttl` and drops the lock, if `token` still owns it.
    /// Fails with [`StoreError::Fenced`] otherwise.
    async fn complete(
        &self,
        key: &str,
        token: &FencingToken,
        processed_ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Drops the lock without marking `key` processed, if `token` still owns it (so another
    /// attempt may claim it at once). Fails with [`StoreError::Fenced`] otherwise.
    async fn release(&self, key: &str, token: &FencingToken) -> Result<(), StoreError>;

    /// Counts a failed attempt for `key` and remembers `error`; returns the count so far.
    /// The counter expires `ttl` after the last failure.
    async fn record_failure(
        &self,
        key: &str,
        error: &str,
        ttl: Duration,
    ) -> Result<u64, StoreError>;

    /// Whether the store is reachable; backs the readiness probe.
    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

// Each method hands on the inner store's future, without boxing it once more.
// (The signatures are the ones `#[async_trait]` gives the trait's methods.)
impl<S: IdempotencyStore + ?Sized> IdempotencyStore for std::sync::Arc<S> {
    fn claim<'s, 'k, 'async_trait>(
        &'s self,
        key: &'k str,
        lock_ttl: Duration,
    ) -> BoxFuture<'async_trait, Result<Claim, StoreError>>
    where
        's: 'async_trait,
        'k: 'async_trait,
        Self: 'async_trait,
    {
        (**self).claim(key, lock_ttl)
    }

    fn renew<'s, 'k, 't, 'async_trait>(
        &'s self,
        key: &'k str,
        token: &'t FencingToken,
        lock_ttl: Duration,
    ) -> BoxFuture<'async_trait, Result<(), StoreError>>
    where
        's: 'async_trait,
        'k: 'async_trait,
        't: 'async_trait,
        Self: 'async_trait,
    {
        (**self).renew(key, token, lock_ttl)
    }

    fn complete<'s, 'k, 't, 'async_trait>(
        &'s self,
        key: &'k str,
        token: &'t FencingToken,
        processed_ttl: Duration,
    ) -> BoxFuture<'async_trait, Result<(), StoreError>>
    where
        's: 'async_trait,
        'k: 'async_trait,
        't: 'async_trait,
        Self: 'async_trait,
    {
        (**self).complete(key, token, processed_ttl)
    }

    fn release<'s, 'k, 't, 'async_trait>(
        &'s self,
        key: &'k str,
        token: &'t FencingToken,
    ) -> BoxFuture<'async_trait, Result<(), StoreError>>
    where
        's: 'async_trait,
        'k: 'async_trait,
        't: 'async_trait,
        Self: 'async_trait,
    {
        (**self).release(key, token)
    }

    fn record_failure<'s, 'k, 'e, 'async_trait>(
        &'s self,
        key: &'k str,
        error: &'e str,
        ttl: Duration,
    ) -> BoxFuture<'async_trait, Result<u64, StoreError>>
    where
        's: 'async_trait,
        'k: 'async_trait,
        'e: 'async_trait,
        Self: 'async_trait,
    {
        (**self).record_failure(key, error, ttl)
    }

    fn health<'s, 'async_trait>(&'s self) -> BoxFuture<'async_trait, Result<(), StoreError>>
    where
        's: 'async_trait,
        Self: 'async_trait,
    {
        (**self).health()
    }
}

/// The answer to [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the lock until it completes, releases, or the lock TTL passes.
    Acquired(FencingToken),
    /// Another worker holds the lock; try again later.
    InProgress {
        /// How long the other worker's lock still runs, when the store knows.
        retry_after: Option<Duration>,
    },
    /// The event was already processed.
    Completed,
}

/// An idempotency store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached (or did not answer in time).
    #[error("idempotency store unavailable")]
    Unavailable(#[source] BoxError),
    /// The token no longer owns the lock: it expired and someone else may have claimed it.
    #[error("the idempotency lock is no longer held by this worker")]
    Fenced,
    /// The store answered with something unexpected.
    #[error("idempotency store failed")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// An [`Unavailable`](Self::Unavailable) error from any error.
    pub fn unavailable(err: impl Into<BoxError>) -> Self {
        Self::Unavailable(err.into())
    }
}

/// A key's lock or "processed" marker: 16 bytes (keys are kept as [`Digest`]s, 16 bytes more;
/// see [`MemoryStore`] for what a full store takes).
#[derive(Clone, Copy)]
struct Slot {
    /// When it expires, in nanoseconds since the store's epoch.
    until: u64,
    /// The digest of the lock owner's token, never 0; 0 for a "processed" marker.
    owner: u64,
}

impl Slot {
    const PROCESSED: u64 = 0;

    fn is_processed(self) -> bool {
        self.owner == Self::PROCESSED
    }
}

/// A 128-bit digest of a key: SipHash-1-3 with 128-bit output, under a key drawn at random
/// for each store. The store keeps digests instead of the keys (which are up to 160 bytes),
/// and since the hash key is secret, nobody can pick keys whose digests collide (by chance:
/// one pair in 2^128).
type Digest = u128;

/// Digests keys (see [`Digest`]) and hashes tokens (see [`owner`](Self::owner)).
struct Digests {
    /// Keyed, with nothing written yet: each digest starts from a copy.
    keyed: SipHasher13,
    /// Seeded at random for each store: the 64 bits of a token.
    owners: foldhash::quality::RandomState,
}

impl Digests {
    fn new() -> Self {
        // 128 bits from the operating system's randomness, through std's randomly keyed
        // hasher (a keyed SipHash of two constants).
        let random = RandomState::new();
        Self {
            keyed: SipHasher13::new_with_keys(random.hash_one(0_u8), random.hash_one(1_u8)),
            owners: foldhash::quality::RandomState::default(),
        }
    }

    /// One pass over `key`.
    fn key(&self, key: &str) -> Digest {
        let mut hasher = self.keyed;
        hasher.write(key.as_bytes());
        hasher.finish128().as_u128()
    }

    /// 64 bits of a token, never [`Slot::PROCESSED`].
    ///
    /// Unlike keys, which clients choose, the tokens a store compares are the 128 random bits
    /// of its own claims ([`FencingToken::random`]), so a fast seeded hash keeps them apart as
    /// well as SipHash would: another token matches one in 2^64. A claim and its completion
    /// each take this hash once; foldhash takes about 30 instructions for a token, where a
    /// SipHash pass takes about 200.
    fn owner(&self, token: &FencingToken) -> u64 {
        self.owners.hash_one(token.as_str()).max(1)
    }
}

/// Hashes a [`Digest`] for the map by folding it: it is already uniform and unpredictable.
#[derive(Clone, Copy, Default)]
struct Fold(u64);

impl Hasher for Fold {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; any other input is still hashed, slowly.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        // Truncation is the point: the low half of the fold.
        #[allow(clippy::cast_possible_truncation)]
        let folded = (n ^ (n >> 64)) as u64;
        self.0 = folded;
    }
}

/// Each key's slot.
type Map = HashMap<Digest, Slot, BuildHasherDefault<Fold>>;

/// The keys' slots, and the order in which their processed markers were written.
#[derive(Default)]
struct Slots {
    map: Map,
    /// Every processed marker as it was written, oldest first: the next to go when a new key
    /// needs room. A marker overwritten or removed since leaves its entry behind, which is
    /// skipped when it comes up (see [`current`](Self::current)).
    written: VecDeque<Written>,
}

/// A processed marker as it was written: 24 bytes, where a `(Digest, u64)` pair takes 32.
#[derive(Clone, Copy)]
struct Written {
    /// The key's digest, low half first.
    digest: [u64; 2],
    /// The marker's expiry: a marker written again for the same key has another.
    until: u64,
}

impl Written {
    fn new(digest: Digest, until: u64) -> Self {
        // The two halves of the digest, kept apart for the smaller alignment.
        #[allow(clippy::cast_possible_truncation)]
        let digest = [digest as u64, (digest >> 64) as u64];
        Self { digest, until }
    }

    fn digest(self) -> Digest {
        u128::from(self.digest[0]) | (u128::from(self.digest[1]) << 64)
    }
}

impl Slots {
    /// `digest`'s slot, if `owner` holds its lock and it has not expired.
    fn owned(&mut self, digest: Digest, owner: u64, now: u64) -> Option<&mut Slot> {
        self.map
            .get_mut(&digest)
            .filter(|s| s.owner == owner && s.until > now)
    }

    /// Notes `digest`'s processed marker, just written to expire at `until`, as the newest.
    fn written_now(&mut self, digest: Digest, until: u64, capacity: usize) {
        // Entries left behind pile up only while nothing is evicted and markers are written
        // again (keys processed anew after theirs expired). The map holds at most as many
        // markers as keys, so once the queue is twice the larger of that and the capacity, at
        // least half of it is left behind: dropping those costs O(1) amortised.
        if self.written.len() >= self.map.len().max(capacity).saturating_mul(2) {
            let map = &self.map;
            self.written.retain(|w| Self::current(map, *w));
        }
        self.written.push_back(Written::new(digest, until));
    }

    /// Whether `written` is still the marker its key holds.
    fn current(map: &Map, written: Written) -> bool {
        map.get(&written.digest())
            .is_some_and(|s| s.is_processed() && s.until == written.until)
    }

    /// Makes room for one key: drops the processed marker written longest ago, expired or not.
    /// Only when no marker is left (every key is locked) does it search the map, for expired
    /// locks; a held lock is never dropped. O(1) amortised: each marker is queued once.
    fn evict(&mut self, now: u64) {
        while let Some(written) = self.written.pop_front() {
            if Self::current(&self.map, written) {
                self.map.remove(&written.digest());
                return;
            }
        }
        self.map.retain(|_, s| s.until > now);
    }
}

struct Failure {
    count: u64,
    last_error: String,
    until: Instant,
}

/// Failure counters, swept by TTL and bounded like the slots.
struct Failures {
    entries: HashMap<String, Failure>,
    /// The size at which the next insert sweeps expired counters first.
    sweep_at: usize,
}

/// Fewest counters that trigger a sweep, so small maps are not swept on every insert.
const MIN_SWEEP: usize = 64;

/// Longest error text a failure counter keeps; longer ones are cut at a char boundary.
const MAX_ERROR_LEN: usize = 1024;

impl Failures {
    /// Drops expired counters, then, at `capacity`, the tenth that expires soonest. The next
    /// sweep comes when the map has doubled, so an insert costs O(1) amortised and expired
    /// counters never outnumber live ones by more than that.
    fn sweep(&mut self, now: Instant, capacity: usize) {
        self.entries.retain(|_, f| f.until > now);
        if self.entries.len() >= capacity {
            let mut untils: Vec<Instant> = self.entries.values().map(|f| f.until).collect();
            let n = (capacity / 10).max(1).min(untils.len());
            let (_, cutoff, _) = untils.select_nth_unstable(n - 1);
            let cutoff = *cutoff;
            let mut left = n;
            self.entries.retain(|_, f| {
                let drop = f.until <= cutoff && left > 0;
                left -= usize::from(drop);
                !drop
            });
        }
        self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP).min(capacity);
    }
}

fn truncate(error: &str) -> &str {
    if error.len() <= MAX_ERROR_LEN {
        return error;
    }
    let mut end = MAX_ERROR_LEN;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

/// An [`IdempotencyStore`] in this process's memory: for tests and single-process workers.
///
/// It holds at most [`capacity`](Self::with_capacity) keys (default 50,000, about 3.7 MB: each
/// key is kept as a 128-bit keyed digest, not as text, 32 bytes with its slot in a hash map and
/// 24 more in the order of the "processed" markers). A new key that finds it full takes the
/// place of the marker written longest ago, so under sustained load the window in which
/// duplicates are recognised is the last `capacity` events rather than the processed TTL; a
/// held lock is never dropped. Use the Redis store when several processes share work or the
/// window matters.
///
/// Failure counters are bounded the same way: expired ones are swept as the map grows, and at
/// `capacity` the ones closest to expiry go first. Each keeps at most 1 KiB of error text.
pub struct MemoryStore {
    slots: Mutex<Slots>,
    failures: Mutex<Failures>,
    capacity: usize,
    digests: Digests,
    /// The zero of [`Slot::until`].
    epoch: Instant,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(50_000)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update below is a single insert or remove, so a poisoned map is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryStore {
    /// An empty store with the default capacity.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps at most `capacity` keys (at least 16).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(16);
        Self {
            slots: Mutex::new(Slots::default()),
            failures: Mutex::new(Failures {
                entries: HashMap::new(),
                sweep_at: MIN_SWEEP.min(capacity),
            }),
            capacity,
            digests: Digests::new(),
            epoch: Instant::now(),
        }
    }

    /// [`claim`](IdempotencyStore::claim), answered at once: the
    /// [`IdempotencyLayer`](super::IdempotencyLayer) calls this directly, without the boxed
    /// future of the trait's method.
    pub(crate) fn claim_now(&self, key: &str, lock_ttl: Duration) -> Claim {
        let digest = self.digests.key(key);
        let now = self.now();
        let mut slots = lock(&self.slots);
        match slots.map.get(&digest) {
            Some(s) if s.until > now && s.is_processed() => return Claim::Completed,
            Some(s) if s.until > now => {
                return Claim::InProgress {
                    retry_after: Some(Duration::from_nanos(s.until - now)),
                };
            }
            None if slots.map.len() >= self.capacity => slots.evict(now),
            // Expired (replaced below), or room to spare.
            Some(_) | None => {}
        }
        // Only once the claim is known to succeed: a duplicate costs no token.
        let token = FencingToken::random();
        let owner = self.digests.owner(&token);
        slots.map.insert(
            digest,
            Slot {
                until: now.saturating_add(nanos(lock_ttl)),
                owner,
            },
        );
        Claim::Acquired(token)
    }

    /// [`complete`](IdempotencyStore::complete), answered at once (see [`claim_now`](Self::claim_now)).
    pub(crate) fn complete_now(
        &self,
        key: &str,
        token: &FencingToken,
        processed_ttl: Duration,
    ) -> Result<(), StoreError> {
        let (mut slots, digest, owner, now) = self.locked(key, token);
        let until = now.saturating_add(nanos(processed_ttl));
        *slots.owned(digest, owner, now).ok_or(StoreError::Fenced)? = Slot {
            until,
            owner: Slot::PROCESSED,
        };
        slots.written_now(digest, until, self.capacity);
        Ok(())
    }

    /// The slots, locked, with `key`'s digest, `token`'s owner hash and the time now: what
    /// [`Slots::owned`] needs to find the slot `token` holds.
    fn locked(&self, key: &str, token: &FencingToken) -> (MutexGuard<'_, Slots>, Digest, u64, u64) {
        let (digest, owner) = (self.digests.key(key), self.digests.owner(token));
        let now = self.now();
        (lock(&self.slots), digest, owner, now)
    }

    /// Now, in nanoseconds since the epoch.
    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    /// Keys currently held (locks and processed markers, expired ones not yet swept included).
    pub fn len(&self) -> usize {
        lock(&self.slots).map.len()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The failure count and last error recorded for `key`, if any and not expired.
    pub fn failures(&self, key: &str) -> Option<(u64, String)> {
        let now = Instant::now();
        lock(&self.failures)
            .entries
            .get(key)
            .filter(|f| f.until > now)
            .map(|f| (f.count, f.last_error.clone()))
    }
}

/// `d` in whole nanoseconds, saturating (at 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(&self, key: &str, lock_ttl: Duration) -> Result<Claim, StoreError> {
        Ok(self.claim_now(key, lock_ttl))
    }

    async fn renew(
        &self,
        key: &str,
        token: &FencingToken,
        lock_ttl: Duration,
    ) -> Result<(), StoreError> {
        let (mut slots, digest, owner, now) = self.locked(key, token);
        slots
            .owned(digest, owner, now)
            .ok_or(StoreError::Fenced)?
            .until = now.saturating_add(nanos(lock_ttl));
        Ok(())
    }

    async fn complete(
        &self,
        key: &str,
        token: &FencingToken,
        processed_ttl: Duration,
    ) -> Result<(), StoreError> {
        self.complete_now(key, token, processed_ttl)
    }

    async fn release(&self, key: &str, token: &FencingToken) -> Result<(), StoreError> {
        let (mut slots, digest, owner, now) = self.locked(key, token);
        slots.owned(digest, owner, now).ok_or(StoreError::Fenced)?;
        slots.map.remove(&digest);
        Ok(())
    }

    async fn record_failure(
        &self,
        key: &str,
        error: &str,
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        let now = Instant::now();
        let mut failures = lock(&self.failures);
        if failures.entries.len() >= failures.sweep_at && !failures.entries.contains_key(key) {
            failures.sweep(now, self.capacity);
        }
        let f = failures
            .entries
            .entry(key.to_owned())
            .or_insert_with(|| Failure {
                count: 0,
                last_error: String::new(),
                until: now,
            });
        if f.until <= now {
            f.count = 0;
        }
        f.count += 1;
        truncate(error).clone_into(&mut f.last_error);
        f.until = now + ttl;
        Ok(f.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: Duration = Duration::from_secs(300);
    const DONE: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn claim_complete_then_completed() {
        let store = MemoryStore::new();
        let Claim::Acquired(token) = store.claim("k", LOCK).await.unwrap() else {
            panic!("first claim must acquire");
        };
        assert!(matches!(
            store.claim("k", LOCK).await.unwrap(),
            Claim::InProgress {
                retry_after: Some(_)
            }
        ));
        store.complete("k", &token, DONE).await.unwrap();
        assert_eq!(store.claim("k", LOCK).await.unwrap(), Claim::Completed);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_owner_is_fenced() {
        let store = MemoryStore::new();
        let Claim::Acquired(old) = store.claim("k", Duration::from_secs(1)).await.unwrap() else {
            panic!()
        };
        tokio::time::advance(Duration::from_secs(2)).await;
        let Claim::Acquired(new) = store.claim("k", LOCK).await.unwrap() else {
            panic!("expired lock must be claimable")
        };
        assert!(matches!(
            store.complete("k", &old, DONE).await,
            Err(StoreError::Fenced)
        ));
        assert!(matches!(
            store.release("k", &old).await,
            Err(StoreError::Fenced)
        ));
        store.complete("k", &new, DONE).await.unwrap();
    }

    #[tokio::test]
    async fn release_lets_the_next_claim_acquire() {
        let store = MemoryStore::new();
        let Claim::Acquired(t) = store.claim("k", LOCK).await.unwrap() else {
            panic!()
        };
        store.release("k", &t).await.unwrap();
        assert!(matches!(
            store.claim("k", LOCK).await.unwrap(),
            Claim::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn capacity_evicts_the_oldest_processed_markers() {
        let store = MemoryStore::with_capacity(100);
        for i in 0..1000 {
            process(&store, &format!("k{i}"), DONE).await;
            assert!(store.len() <= 100);
        }
        // The newest keys are still recognised, the oldest were forgotten.
        assert_eq!(store.claim("k999", LOCK).await.unwrap(), Claim::Completed);
        assert!(matches!(
            store.claim("k0", LOCK).await.unwrap(),
            Claim::Acquired(_)
        ));
    }

    #[tokio::test]
    async fn eviction_never_drops_a_held_lock() {
        let store = MemoryStore::with_capacity(16);
        let Claim::Acquired(held) = store.claim("held", LOCK).await.unwrap() else {
            panic!()
        };
        for i in 0..100 {
            process(&store, &format!("k{i}"), DONE).await;
        }
        store.complete("held", &held, DONE).await.unwrap();
    }

    #[test]
    fn an_entry_takes_56_bytes() {
        // What the capacity's "about 3.7 MB" is made of (plus the map's control bytes and the
        // two containers' slack): the slot in the map, and the marker's place in the queue.
        assert_eq!(std::mem::size_of::<(Digest, Slot)>(), 32);
        assert_eq!(std::mem::size_of::<Written>(), 24);
        let digest = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!(Written::new(digest, 7).digest(), digest);
    }

    /// Claims and completes `key`; panics unless the claim is acquired.
    async fn process(store: &MemoryStore, key: &str, ttl: Duration) {
        let Claim::Acquired(t) = store.claim(key, LOCK).await.unwrap() else {
            panic!("{key} was not acquired")
        };
        store.complete(key, &t, ttl).await.unwrap();
    }

    #[tokio::test]
    async fn a_new_key_at_capacity_takes_the_place_of_the_marker_written_longest_ago() {
        let store = MemoryStore::with_capacity(16);
        for i in 0..16 {
            process(&store, &format!("k{i}"), DONE).await;
        }
        // Full: one new key costs exactly one marker, the oldest.
        process(&store, "new", DONE).await;
        assert_eq!(store.len(), 16);
        for i in 1..16 {
            assert_eq!(
                store.claim(&format!("k{i}"), LOCK).await.unwrap(),
                Claim::Completed,
                "k{i}"
            );
        }
        assert!(matches!(
            store.claim("k0", LOCK).await.unwrap(),
            Claim::Acquired(_)
        ));
        // That claim took k1's place, and the next new key takes k2's; k3 is still known.
        assert!(matches!(
            store.claim("k1", LOCK).await.unwrap(),
            Claim::Acquired(_)
        ));
        assert_eq!(store.claim("k3", LOCK).await.unwrap(), Claim::Completed);
        assert!(matches!(
            store.claim("k2", LOCK).await.unwrap(),
            Claim::Acquired(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_marker_written_again_keeps_its_newer_place() {
        let store = MemoryStore::with_capacity(16);
        let short = Duration::from_secs(10);
        process(&store, "again", short).await;
        for i in 0..8 {
            process(&store, &format!("old{i}"), DONE).await;
        }
        // Its first marker expires; the key is processed anew, after the eight others.
        tokio::time::advance(short + Duration::from_secs(1)).await;
        process(&store, "again", DONE).await;
        for i in 0..7 {
            process(&store, &format!("new{i}"), DONE).await;
        }
        assert_eq!(store.len(), 16);
        // Eight new keys push out the eight markers older than "again"'s second one: its
        // first entry in the queue, left behind, is skipped rather than taken for it.
        for i in 0..8 {
            process(&store, &format!("more{i}"), DONE).await;
        }
        assert_eq!(store.claim("again", LOCK).await.unwrap(), Claim::Completed);
        assert!(matches!(
            store.claim("old7", LOCK).await.unwrap(),
            Claim::Acquired(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn markers_written_again_leave_a_bounded_queue() {
        let store = MemoryStore::with_capacity(16);
        let short = Duration::from_secs(1);
        // One key processed over and over, each time after its marker expired: the map never
        // fills, so nothing is evicted, and each write leaves an entry behind.
        for _ in 0..1_000 {
            process(&store, "k", short).await;
            tokio::time::advance(short).await;
        }
        assert_eq!(store.len(), 1);
        let written = lock(&store.slots).written.len();
        assert!(written <= 2 * 16, "{written} entries queued");
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_full_of_locks_drops_the_expired_ones() {
        let store = MemoryStore::with_capacity(16);
        let short = Duration::from_secs(1);
        for i in 0..16 {
            assert!(matches!(
                store.claim(&format!("lock{i}"), short).await.unwrap(),
                Claim::Acquired(_)
            ));
        }
        let Claim::Acquired(held) = store.claim("held", LOCK).await.unwrap() else {
            panic!()
        };
        // Held locks are never dropped: the store goes over its capacity instead.
        assert_eq!(store.len(), 17);
        tokio::time::advance(short).await;
        process(&store, "new", DONE).await;
        assert_eq!(store.len(), 2);
        store.complete("held", &held, DONE).await.unwrap();
    }

    #[tokio::test]
    async fn keys_are_told_apart_by_their_digests() {
        let store = MemoryStore::new();
        let keys = ["a", "a\0", "b", "github:sha256:00", "github:sha256:01", ""];
        for key in keys {
            assert!(matches!(
                store.claim(key, LOCK).await.unwrap(),
                Claim::Acquired(_)
            ));
        }
        assert_eq!(store.len(), keys.len());
    }

    #[tokio::test(start_paused = true)]
    async fn failure_counter_counts_and_expires() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(10);
        assert_eq!(store.record_failure("k", "a", ttl).await.unwrap(), 1);
        assert_eq!(store.record_failure("k", "b", ttl).await.unwrap(), 2);
        assert_eq!(store.failures("k"), Some((2, "b".into())));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.failures("k"), None);
        assert_eq!(store.record_failure("k", "c", ttl).await.unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn renew_extends_the_owners_lock_only() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(3);
        let Claim::Acquired(token) = store.claim("k", ttl).await.unwrap() else {
            panic!()
        };
        // Renewed every two seconds, a three-second lock outlives its first TTL many times.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(2)).await;
            store.renew("k", &token, ttl).await.unwrap();
            assert!(matches!(
                store.claim("k", ttl).await.unwrap(),
                Claim::InProgress { .. }
            ));
        }
        assert!(matches!(
            store.renew("k", &FencingToken::random(), ttl).await,
            Err(StoreError::Fenced)
        ));
        // Once expired, even the right token cannot bring the lock back.
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(matches!(
            store.renew("k", &token, ttl).await,
            Err(StoreError::Fenced)
        ));
        let Claim::Acquired(newer) = store.claim("k", ttl).await.unwrap() else {
            panic!("an expired lock is claimable")
        };
        assert!(matches!(
            store.renew("k", &token, ttl).await,
            Err(StoreError::Fenced)
        ));
        store.renew("k", &newer, ttl).await.unwrap();
        store.complete("k", &newer, DONE).await.unwrap();
        assert!(matches!(
            store.renew("k", &newer, ttl).await,
            Err(StoreError::Fenced)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_failure_counters_are_evicted() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(10);
        for i in 0..1_000 {
            store
                .record_failure(&format!("old{i}"), "e", ttl)
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for i in 0..1_000 {
            store
                .record_failure(&format!("new{i}"), "e", ttl)
                .await
                .unwrap();
        }
        // The map doubled past its last sweep size, so the expired counters went.
        let failures = lock(&store.failures);
        assert_eq!(failures.entries.len(), 1_000);
        assert!(failures.entries.keys().all(|k| k.starts_with("new")));
    }

    #[tokio::test]
    async fn failure_counters_stay_within_capacity() {
        for capacity in [16, 100] {
            let store = MemoryStore::with_capacity(capacity);
            for i in 0..1_000 {
                store
                    .record_failure(&format!("k{i}"), "e", DONE)
                    .await
                    .unwrap();
                assert!(lock(&store.failures).entries.len() <= capacity);
            }
        }
        let store = MemoryStore::with_capacity(100);
        let long = "x".repeat(10 * MAX_ERROR_LEN);
        for i in 0..10_000 {
            store
                .record_failure(&format!("k{i}"), &long, DONE)
                .await
                .unwrap();
            assert!(lock(&store.failures).entries.len() <= 100);
        }
        // The newest are kept, each with a bounded error text.
        let (count, error) = store.failures("k9999").unwrap();
        assert_eq!(count, 1);
        assert_eq!(error.len(), MAX_ERROR_LEN);
        assert_eq!(store.failures("k0"), None);
    }
}
