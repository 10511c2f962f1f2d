//! [`VerifyLayer`]: re-verify events in the worker stack before the processor sees them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{Verifiers, VerifyError};
use crate::event::WebhookEvent;

/// Applies [`Verify`] to a service: each request's [`WebhookEvent`] is checked with the
/// [`Verifiers`] registry first.
///
/// ```
/// use std::convert::Infallible;
/// use firefly_webhook::verify::{GitHub, VerifyError, VerifyLayer, Verifiers};
/// use firefly_webhook::{BoxError, WebhookEvent};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let verifiers = Verifiers::new().provider("github", GitHub::new("secret"));
/// let service = ServiceBuilder::new()
///     .layer(VerifyLayer::new(verifiers))
///     .service(service_fn(|_event: WebhookEvent| async { Ok::<_, BoxError>("processed") }));
///
/// let unsigned = WebhookEvent::new("github", "{}");
/// let err = service.oneshot(unsigned).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<VerifyError>(), Some(&VerifyError::MissingSignature));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct VerifyLayer {
    verifiers: Verifiers,
}

impl VerifyLayer {
    /// A layer verifying with `verifiers`.
    pub fn new(verifiers: Verifiers) -> Self {
        Self { verifiers }
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = Verify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Verify::new(inner, self.verifiers.clone())
    }
}

/// Verifies each request's event before calling the inner service.
///
/// Requests are anything that is `AsRef<WebhookEvent>` (the event itself, or the worker's
/// request type). A failed verification resolves to `S::Error::from(VerifyError)` without
/// calling the inner service; [`ProcessError`](crate::ProcessError) classifies it as a
/// permanent validation failure, so the event is dead-lettered rather than retried.
#[derive(Clone)]
pub struct Verify<S> {
    inner: S,
    verifiers: Verifiers,
}

impl<S> Verify<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, verifiers: Verifiers) -> Self {
        Self { inner, verifiers }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Verify<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verify")
            .field("inner", &self.inner)
            .field("verifiers", &self.verifiers)
            .finish()
    }
}

impl<S, R> Service<R> for Verify<S>
where
    S: Service<R>,
    S::Error: From<VerifyError>,
    R: AsRef<WebhookEvent>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        match self.verifiers.verify_event(request.as_ref()) {
            Ok(_) => ResponseFuture::future(self.inner.call(request)),
            Err(err) => ResponseFuture::rejected(S::Error::from(err)),
        }
    }
}

pin_project! {
    /// Response future of [`Verify`]: the inner service's future, or the verification error
    /// ready at once (no allocation).
    pub struct ResponseFuture<F, E> {
        #[pin]
        kind: Kind<F, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, E> {
        Future { #[pin] future: F },
        Rejected { error: Option<E> },
    }
}

impl<F, E> ResponseFuture<F, E> {
    fn future(future: F) -> Self {
        Self {
            kind: Kind::Future { future },
        }
    }

    fn rejected(error: E) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, E> fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Future { future } => future.poll(cx),
            KindProj::Rejected { error } => match error.take() {
                Some(e) => Poll::Ready(Err(e)),
                // Polled again after completion: never resolve twice.
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::ProcessError;
    use crate::verify::GitLab;

    fn event(token: Option<&str>) -> WebhookEvent {
        let mut headers = http::HeaderMap::new();
        if let Some(t) = token {
            headers.insert("x-gitlab-token", t.parse().unwrap());
        }
        WebhookEvent::new("gitlab", "{}").with_headers(headers)
    }

    #[tokio::test]
    async fn rejects_without_calling_inner_and_passes_valid_events() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let inner = service_fn(move |e: WebhookEvent| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ProcessError>(e.id) }
        });
        let verifiers = Verifiers::new().provider("gitlab", GitLab::new("tok"));
        let svc = VerifyLayer::new(verifiers).layer(inner);

        let err = svc.clone().oneshot(event(Some("nope"))).await.unwrap_err();
        assert!(err.is_permanent());
        assert_eq!(err.error_type(), "validation");
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let ok = event(Some("tok"));
        assert_eq!(svc.oneshot(ok.clone()).await.unwrap(), ok.id);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
