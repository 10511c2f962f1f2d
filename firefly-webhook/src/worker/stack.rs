//! [`JobService`]: the type-erased stack a [`Worker`](super::Worker) runs.

use std::any::Any;
use std::future::Future;
use std::task::{Context, Poll};

use crate::BoxFuture;
use crate::process::{Job, Outcome, ProcessError};

/// What the stack's future returns.
type Answer = Result<Outcome, ProcessError>;

/// The stack a [`Worker`](super::Worker) runs, its type erased: tower's `BoxCloneService`,
/// except that a stack whose future is boxed already (the idempotency layer's) is not boxed
/// once more, which would cost every delivery an allocation.
pub(super) struct JobService(Box<dyn Stack>);

impl JobService {
    pub(super) fn new<S>(service: S) -> Self
    where
        S: tower::Service<Job, Response = Outcome, Error = ProcessError> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        Self(Box::new(service))
    }
}

impl Clone for JobService {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

impl tower::Service<Job> for JobService {
    type Response = Outcome;
    type Error = ProcessError;
    type Future = BoxFuture<Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProcessError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, job: Job) -> Self::Future {
        self.0.call(job)
    }
}

/// A stack behind a pointer.
trait Stack: Send {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProcessError>>;
    fn call(&mut self, job: Job) -> BoxFuture<Answer>;
    fn clone_box(&self) -> Box<dyn Stack>;
}

impl<S> Stack for S
where
    S: tower::Service<Job, Response = Outcome, Error = ProcessError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProcessError>> {
        tower::Service::poll_ready(self, cx)
    }

    fn call(&mut self, job: Job) -> BoxFuture<Answer> {
        into_box(tower::Service::call(self, job))
    }

    fn clone_box(&self) -> Box<dyn Stack> {
        Box::new(self.clone())
    }
}

/// `fut` in a box: itself, if it is one already.
fn into_box<F>(mut fut: F) -> BoxFuture<Answer>
where
    F: Future<Output = Answer> + Send + 'static,
{
    match (&mut fut as &mut dyn Any).downcast_mut::<BoxFuture<Answer>>() {
        // Taken out, with a placeholder that holds nothing (so costs no allocation) left in
        // its place, dropped unpolled.
        Some(boxed) => std::mem::replace(boxed, Box::pin(std::future::pending())),
        None => Box::pin(fut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    #[test]
    fn a_boxed_future_is_handed_on_and_any_other_boxed() {
        let boxed: BoxFuture<Answer> = Box::pin(async { Ok(Outcome::Processed) });
        let address = std::ptr::from_ref(&*boxed).cast::<()>();
        let handed_on = into_box(boxed);
        assert_eq!(std::ptr::from_ref(&*handed_on).cast::<()>(), address);
        assert!(matches!(
            handed_on.now_or_never(),
            Some(Ok(Outcome::Processed))
        ));

        let plain = into_box(std::future::ready(Ok(Outcome::Processed)));
        assert!(matches!(plain.now_or_never(), Some(Ok(Outcome::Processed))));
    }
}
