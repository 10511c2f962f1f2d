//! Load shedding: the in-flight cap and the body byte budget. Both are a [`Budget`] shared by
//! every clone of the service; a request that does not fit is refused at once, never queued.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A capacity in some unit (requests, bytes), taken with [`Budget::try_take`] and given back
/// when the [`Held`] guard drops.
pub(super) struct Budget {
    capacity: usize,
    used: AtomicUsize,
}

impl Budget {
    pub(super) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes `amount` units, or nothing when they are not available.
    pub(super) fn try_take(self: &Arc<Self>, amount: usize) -> Option<Held> {
        self.try_add(amount).then(|| Held {
            budget: Arc::clone(self),
            amount,
        })
    }

    fn try_add(&self, amount: usize) -> bool {
        if amount == 0 {
            return true;
        }
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(amount)
                    .filter(|&total| total <= self.capacity)
            })
            .is_ok()
    }

    /// Units taken now.
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("capacity", &self.capacity)
            .field("used", &self.used())
            .finish()
    }
}

/// Units taken from a [`Budget`]; returned on drop, whether the request completed, failed or
/// was abandoned.
#[derive(Debug)]
pub(super) struct Held {
    budget: Arc<Budget>,
    amount: usize,
}

impl Held {
    /// Grows the holding to at least `total` units; `false`, holding unchanged, when the budget
    /// cannot spare them.
    pub(super) fn grow_to(&mut self, total: usize) -> bool {
        let Some(more) = total.checked_sub(self.amount) else {
            return true;
        };
        if !self.budget.try_add(more) {
            return false;
        }
        self.amount = total;
        true
    }

    pub(super) fn amount(&self) -> usize {
        self.amount
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.amount > 0 {
            self.budget.used.fetch_sub(self.amount, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_capacity_and_returns_on_drop() {
        let budget = Budget::new(3);
        let a = budget.try_take(2).unwrap();
        assert!(budget.try_take(2).is_none());
        let b = budget.try_take(1).unwrap();
        assert_eq!(budget.used(), 3);
        assert!(budget.try_take(1).is_none());
        // Nothing is always available.
        let zero = budget.try_take(0).unwrap();
        drop(a);
        assert_eq!(budget.used(), 1);
        drop((b, zero));
        assert_eq!(budget.used(), 0);
        assert!(budget.try_take(usize::MAX).is_none(), "no overflow");
    }

    #[test]
    fn holdings_grow_only_into_what_is_free() {
        let budget = Budget::new(10);
        let mut held = budget.try_take(4).unwrap();
        assert!(held.grow_to(3), "already holds more");
        assert_eq!(held.amount(), 4);
        assert!(held.grow_to(8));
        assert_eq!(budget.used(), 8);
        let other = budget.try_take(2).unwrap();
        assert!(!held.grow_to(9));
        assert_eq!(held.amount(), 8);
        assert_eq!(budget.used(), 10);
        drop(other);
        assert!(held.grow_to(10));
        drop(held);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn concurrent_takers_never_exceed_capacity() {
        let budget = Budget::new(8);
        let peak = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (budget, peak) = (&budget, &peak);
                s.spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(held) = budget.try_take(3) {
                            peak.fetch_max(budget.used(), Ordering::Relaxed);
                            drop(held);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 8);
        assert_eq!(budget.used(), 0);
    }
}
