//! The worker's pause breaker: stop pulling deliveries while the processor keeps failing.
//!
//! It sees each delivery's outcome after the stack (in-process retries included) and moves
//! between the states of [`BreakerState`]: closed (pulling at full concurrency), open (pulling
//! nothing for the cool-down) and half-open (one probe delivery at a time). While it is not
//! closed, a failed delivery goes back to the transport without counting an attempt, so an
//! outage does not burn retry budgets or fill the dead-letter destination.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::event::EventId;
use crate::metric;
use crate::publish::BreakerState;

/// What a delivery's outcome says about the downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It works: processed, or a permanent error (the downstream answered).
    Up,
    /// It failed transiently.
    Failed,
    /// Nothing: skipped, a duplicate, deferred.
    Unknown,
}

/// What the worker loop may do next.
#[derive(Debug)]
pub(super) enum Gate {
    /// Pull a delivery; with a [`Probe`] when the breaker is half-open.
    Pull(Option<Probe>),
    /// Pull nothing before this (the cool-down).
    WaitUntil(Instant),
    /// Pull nothing until the probe in flight has an outcome.
    WaitForProbe,
}

/// How to settle a failed delivery, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Advice {
    /// The breaker is open: give the delivery back for this long, without counting an attempt.
    pub(super) defer: Option<Duration>,
    /// Other events have failed since the last success too: the downstream is suspect, so a
    /// delivery out of attempts should not be dead-lettered yet.
    pub(super) others_failing: bool,
}

enum State {
    Closed {
        failures: u32,
        /// The first event of the current run of failures, and whether others followed.
        first: Option<EventId>,
        mixed: bool,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
}

impl State {
    const CLOSED: Self = Self::Closed {
        failures: 0,
        first: None,
        mixed: false,
    };

    fn name(&self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// The breaker one worker shares between its loop and its tasks.
pub(super) struct Pause {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
    /// Wakes the loop when a probe ends.
    probed: Notify,
}

impl std::fmt::Debug for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pause")
            .field("state", &self.lock().name())
            .field("threshold", &self.threshold)
            .field("cool_down", &self.cool_down)
            .finish_non_exhaustive()
    }
}

impl Pause {
    pub(super) fn new(threshold: u32, cool_down: Duration) -> Self {
        transitioned(BreakerState::Closed);
        Self {
            threshold: threshold.max(1),
            cool_down,
            state: Mutex::new(State::CLOSED),
            probed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each critical section replaces the state as a whole: a poisoned one is consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the loop may pull a delivery now.
    pub(super) fn gate(self: &Arc<Self>) -> Gate {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Gate::Pull(None),
            State::Open { until } if Instant::now() < until => Gate::WaitUntil(until),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                if matches!(*state, State::Open { .. }) {
                    transitioned(BreakerState::HalfOpen);
                    tracing::info!("worker half-open: probing with one delivery");
                }
                *state = State::HalfOpen { probing: true };
                Gate::Pull(Some(Probe {
                    pause: Arc::clone(self),
                    done: false,
                }))
            }
            State::HalfOpen { probing: true } => Gate::WaitForProbe,
        }
    }

    /// Resolves when a probe may have ended; call after [`gate`](Self::gate) said
    /// [`Gate::WaitForProbe`] (a probe that ended in between is not missed).
    pub(super) async fn probe_ended(&self) {
        self.probed.notified().await;
    }

    /// `None`: process the delivery; `Some(delay)`: the breaker is not closed and this is not
    /// its probe, so give it back for `delay` without processing it (it was pulled just before
    /// the breaker opened).
    pub(super) fn admit(&self, probe: Option<&Probe>) -> Option<Duration> {
        if probe.is_some() {
            return None;
        }
        match *self.lock() {
            State::Closed { .. } => None,
            State::Open { until } => Some(until.saturating_duration_since(Instant::now())),
            State::HalfOpen { .. } => Some(self.cool_down),
        }
    }

    /// Records the outcome of a delivery of event `id` (`probe`: the half-open probe's).
    pub(super) fn record(
        &self,
        id: EventId,
        verdict: Verdict,
        probe: Option<&mut Probe>,
    ) -> Advice {
        let mut state = self.lock();
        if let Some(probe) = probe {
            probe.done = true;
            let (next, advice) = match verdict {
                Verdict::Up => {
                    tracing::info!("worker closed: the probe succeeded, resuming");
                    (State::CLOSED, Advice::default())
                }
                Verdict::Failed => {
                    tracing::warn!(cool_down = ?self.cool_down, "worker re-opened: the probe failed, pausing");
                    (self.open(), Self::deferral(self.cool_down))
                }
                Verdict::Unknown => (State::HalfOpen { probing: false }, Advice::default()),
            };
            if next.name() != state.name() {
                transitioned(next.name());
            }
            *state = next;
            drop(state);
            self.probed.notify_one();
            return advice;
        }
        match (&mut *state, verdict) {
            (State::Closed { .. }, Verdict::Up) => {
                *state = State::CLOSED;
                Advice::default()
            }
            (
                State::Closed {
                    failures,
                    first,
                    mixed,
                },
                Verdict::Failed,
            ) => {
                *failures += 1;
                let first = *first.get_or_insert(id);
                *mixed |= first != id;
                let advice = Advice {
                    defer: None,
                    others_failing: *mixed,
                };
                // One event failing on and on is that event's problem, not an outage.
                if *failures < self.threshold || !*mixed {
                    return advice;
                }
                tracing::warn!(failures = *failures, cool_down = ?self.cool_down, "worker open: the processor keeps failing, pausing");
                *state = self.open();
                transitioned(BreakerState::Open);
                Self::deferral(self.cool_down)
            }
            (State::Open { until }, Verdict::Failed) => {
                Self::deferral(until.saturating_duration_since(Instant::now()))
            }
            (State::HalfOpen { .. }, Verdict::Failed) => Self::deferral(self.cool_down),
            _ => Advice::default(),
        }
    }

    fn open(&self) -> State {
        State::Open {
            until: Instant::now() + self.cool_down,
        }
    }

    fn deferral(delay: Duration) -> Advice {
        Advice {
            defer: Some(delay),
            others_failing: true,
        }
    }

    /// A probe ended without an outcome (the pull failed, shutdown): let another one through.
    fn release(&self) {
        let mut state = self.lock();
        if matches!(*state, State::HalfOpen { probing: true }) {
            *state = State::HalfOpen { probing: false };
        }
        drop(state);
        self.probed.notify_one();
    }
}

/// The half-open breaker's one delivery in flight. Dropped without an outcome recorded, it
/// lets the next delivery probe instead.
pub(super) struct Probe {
    pause: Arc<Pause>,
    done: bool,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.done {
            self.pause.release();
        }
    }
}

fn transitioned(to: BreakerState) {
    let value = match to {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
    };
    metrics::gauge!(metric::WORKER_BREAKER_STATE).set(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(30);

    fn pull(pause: &Arc<Pause>) -> Option<Probe> {
        match pause.gate() {
            Gate::Pull(probe) => probe,
            other => panic!("expected to pull, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes_one_at_a_time() {
        let pause = Arc::new(Pause::new(3, COOL_DOWN));
        let (a, b) = (EventId::new(), EventId::new());
        assert_eq!(pause.record(a, Verdict::Failed, None), Advice::default());
        assert!(pause.record(b, Verdict::Failed, None).others_failing);
        assert_eq!(
            pause.record(a, Verdict::Failed, None).defer,
            Some(COOL_DOWN)
        );
        assert!(matches!(pause.gate(), Gate::WaitUntil(_)));
        assert!(pause.admit(None).is_some(), "a late pull is given back");

        tokio::time::advance(COOL_DOWN).await;
        let mut probe = pull(&pause).expect("the first pull after the cool-down probes");
        assert!(matches!(pause.gate(), Gate::WaitForProbe));
        assert_eq!(pause.admit(Some(&probe)), None);
        let advice = pause.record(a, Verdict::Failed, Some(&mut probe));
        assert_eq!(advice.defer, Some(COOL_DOWN));
        assert!(matches!(pause.gate(), Gate::WaitUntil(_)));

        tokio::time::advance(COOL_DOWN).await;
        let mut probe = pull(&pause).unwrap();
        pause.record(b, Verdict::Up, Some(&mut probe));
        assert!(pull(&pause).is_none(), "closed: no probe");
        assert_eq!(pause.admit(None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reset_the_count_and_unknown_outcomes_do_not() {
        let pause = Arc::new(Pause::new(2, COOL_DOWN));
        let (a, b) = (EventId::new(), EventId::new());
        pause.record(a, Verdict::Failed, None);
        pause.record(a, Verdict::Up, None);
        assert_eq!(pause.record(b, Verdict::Failed, None).defer, None);
        pause.record(b, Verdict::Unknown, None);
        assert!(pause.record(a, Verdict::Failed, None).defer.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_lets_the_next_delivery_probe() {
        let pause = Arc::new(Pause::new(2, COOL_DOWN));
        pause.record(EventId::new(), Verdict::Failed, None);
        pause.record(EventId::new(), Verdict::Failed, None);
        tokio::time::advance(COOL_DOWN).await;
        let probe = pull(&pause).unwrap();
        drop(probe);
        pause.probe_ended().await;
        assert!(pull(&pause).is_some());
    }

    #[test]
    fn one_event_failing_alone_is_not_an_outage() {
        let pause = Pause::new(2, COOL_DOWN);
        let id = EventId::new();
        for _ in 0..3 {
            assert_eq!(pause.record(id, Verdict::Failed, None), Advice::default());
        }
        assert!(
            pause
                .record(EventId::new(), Verdict::Failed, None)
                .others_failing
        );
        assert!(pause.record(id, Verdict::Failed, None).others_failing);
    }
}
