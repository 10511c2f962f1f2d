//! Metric handles registered once per label set, then reused.
//!
//! A `metrics::counter!(name, label => value)` call builds a key, hashes it and asks the
//! recorder for the handle every time; with `metrics-exporter-prometheus` that clones the key's
//! name and labels into fresh allocations on every call. On paths that run per request or per
//! event, [`Handles`] keeps the handle of each label set after its first use: afterwards a
//! lookup in a snapshot of the map, with no lock and no reference count.
//!
//! A handle belongs to the recorder that was in place when it was first asked for, as with
//! any handle from the `metrics` crate: install the recorder before serving.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

/// At most this many label sets are kept per cache; further ones are registered on every call
/// (still correct, only slower). Label values are bounded upstream (see
/// [`metric::MAX_PROVIDER_LABELS`](crate::metric::MAX_PROVIDER_LABELS)), so this is a backstop.
const MAX_ENTRIES: usize = 1024;

/// Handles of type `H` by label set `K`.
///
/// Reads take no lock and write no shared memory (an [`ArcSwap`] snapshot of the map), so the
/// worker threads that record the same metric do not bounce a lock's cache line between them;
/// a new label set copies the map once. [`with`](Self::with) lends the handle instead of
/// cloning it (a clone is a reference count, which would be shared again).
#[derive(Debug)]
pub(crate) struct Handles<K, H> {
    map: ArcSwap<HashMap<K, H, foldhash::fast::RandomState>>,
    /// Serialises the rare inserts (copy, insert, swap).
    insert: Mutex<()>,
}

impl<K, H> Default for Handles<K, H> {
    fn default() -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::default()),
            insert: Mutex::new(()),
        }
    }
}

impl<K: Hash + Eq + Clone, H: Clone> Handles<K, H> {
    /// Calls `f` with the handle for `key`, registered with `register` the first time.
    pub(crate) fn with<Q, R>(
        &self,
        key: &Q,
        register: impl FnOnce(&Q) -> H,
        f: impl FnOnce(&H) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(handle) = self.map.load().get(key) {
            return f(handle);
        }
        let handle = register(key);
        let _insert = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.map.load_full();
        if current.len() < MAX_ENTRIES && !current.contains_key(key) {
            let mut next = HashMap::clone(&current);
            next.insert(key.to_owned(), handle.clone());
            self.map.store(Arc::new(next));
        }
        f(&handle)
    }

    /// The handle for `key` (a clone), registered with `register` the first time.
    pub(crate) fn get<Q>(&self, key: &Q, register: impl FnOnce(&Q) -> H) -> H
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.with(key, register, H::clone)
    }

    /// How many label sets have handles.
    pub(crate) fn len(&self) -> usize {
        self.map.load().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn registers_once_per_key_and_stays_bounded() {
        let handles = Handles::<usize, usize>::default();
        let registered = AtomicUsize::new(0);
        let register = |k: &usize| {
            registered.fetch_add(1, Ordering::Relaxed);
            *k
        };
        assert_eq!(handles.get(&1, register), 1);
        assert_eq!(handles.get(&1, register), 1);
        assert_eq!(registered.load(Ordering::Relaxed), 1);
        for k in 0..MAX_ENTRIES * 2 {
            assert_eq!(handles.get(&k, register), k);
        }
        assert_eq!(handles.len(), MAX_ENTRIES);
        // Past the cap: still the right handle, registered again each time.
        let before = registered.load(Ordering::Relaxed);
        assert_eq!(handles.get(&(MAX_ENTRIES * 3), register), MAX_ENTRIES * 3);
        assert_eq!(handles.get(&(MAX_ENTRIES * 3), register), MAX_ENTRIES * 3);
        assert_eq!(registered.load(Ordering::Relaxed), before + 2);
    }
}
