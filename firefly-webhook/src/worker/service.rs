//! [`ProcessorService`]: the innermost service, calling the user's [`WebhookProcessor`].

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;

use crate::dead_letter::FailureCategory;
use crate::process::{Job, Outcome, ProcessError, WebhookProcessor};

/// The processor panicked; the panic was caught and counts as a failed attempt.
#[derive(Debug, thiserror::Error)]
#[error("processor panicked: {0}")]
pub struct Panicked(pub String);

/// The processor did not finish within the processing timeout.
#[derive(Debug, thiserror::Error)]
#[error("processor did not finish within {0:?}")]
pub struct Elapsed(pub Duration);

/// Calls a [`WebhookProcessor`] with its hooks, catching panics and enforcing an optional
/// timeout, as a `tower::Service<Job>`.
pub struct ProcessorService<P: ?Sized> {
    processor: Arc<P>,
    timeout: Option<Duration>,
}

impl<P: ?Sized> Clone for ProcessorService<P> {
    fn clone(&self) -> Self {
        Self {
            processor: Arc::clone(&self.processor),
            timeout: self.timeout,
        }
    }
}

impl<P: ?Sized> fmt::Debug for ProcessorService<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorService")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<P: WebhookProcessor> ProcessorService<P> {
    /// Wraps `processor`.
    pub fn new(processor: P) -> Self {
        Self::from_arc(Arc::new(processor))
    }
}

impl<P: WebhookProcessor + ?Sized> ProcessorService<P> {
    /// Wraps a shared processor.
    pub fn from_arc(processor: Arc<P>) -> Self {
        Self {
            processor,
            timeout: None,
        }
    }

    /// Fails an attempt that runs longer than `timeout` (category `timeout`).
    #[must_use]
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

impl<P: WebhookProcessor + ?Sized> tower::Service<Job> for ProcessorService<P> {
    type Response = Outcome;
    type Error = ProcessError;
    type Future = Pin<Box<dyn Future<Output = Result<Outcome, ProcessError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        let processor = Arc::clone(&self.processor);
        let timeout = self.timeout;
        Box::pin(async move {
            let p = &*processor;
            let attempt = AssertUnwindSafe(async {
                p.before_process(&job.event, &job.ctx).await?;
                p.process(&job.event, &job.ctx).await
            })
            .catch_unwind();
            let caught = match timeout {
                Some(t) => tokio::time::timeout(t, attempt).await.unwrap_or_else(|_| {
                    Ok(Err(
                        ProcessError::transient(Elapsed(t)).with_category(FailureCategory::Timeout)
                    ))
                }),
                None => attempt.await,
            };
            let result = caught.unwrap_or_else(|panic| {
                let msg = panic_message(&*panic);
                tracing::error!(event_id = %job.event.id, panic = msg, "processor panicked");
                Err(ProcessError::transient(Panicked(msg)))
            });
            // Hooks are user code too: a panicking hook must not unwind into the worker.
            let hook = match &result {
                Ok(outcome) => {
                    AssertUnwindSafe(p.after_process(&job.event, &job.ctx, outcome))
                        .catch_unwind()
                        .await
                }
                Err(err) => {
                    AssertUnwindSafe(p.on_error(&job.event, &job.ctx, err))
                        .catch_unwind()
                        .await
                }
            };
            if hook.is_err() {
                tracing::error!(event_id = %job.event.id, "processor hook panicked");
            }
            result
        })
    }
}
