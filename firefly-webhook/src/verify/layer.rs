//! [`VerifyLayer`]: re-verify events in the worker stack before the processor sees them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{PREPARE_TIMEOUT, Verifiers, VerifyError};
use crate::BoxFuture;
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
///
/// When the event's verifier must fetch something first (the signing certificate of AWS SNS
/// or PayPal, see [`SignatureVerifier::prepare`](crate::SignatureVerifier::prepare)), the
/// response future awaits that fetch, bounded by [`PREPARE_TIMEOUT`], before verifying: a
/// worker with a cold certificate cache verifies such an event instead of refusing it. The
/// ready inner service waits in that future (a clone takes its place), hence `S: Clone`.
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
    S: Service<R> + Clone,
    S::Error: From<VerifyError>,
    R: AsRef<WebhookEvent>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        if let Some(prepare) = self.verifiers.prepare_event(request.as_ref()) {
            // The ready service waits in the future; a clone takes its place here.
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::preparing(prepare, inner, request, self.verifiers.clone());
        }
        match self.verifiers.verify_event(request.as_ref()) {
            Ok(_) => ResponseFuture::future(self.inner.call(request)),
            Err(err) => ResponseFuture::rejected(S::Error::from(err)),
        }
    }
}

pin_project! {
    /// Response future of [`Verify`]: the inner service's future, the verification error
    /// ready at once (no allocation), or, when the event's verifier must fetch something
    /// first (a certificate), that fetch followed by the verification.
    pub struct ResponseFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        kind: Kind<S, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, R>
    where
        S: Service<R>,
    {
        Preparing { prepare: BoxFuture<()>, pending: Option<Pending<S, R>> },
        Future { #[pin] future: S::Future },
        Rejected { error: Option<S::Error> },
    }
}

/// What a [`Kind::Preparing`] future verifies and calls once the fetch is done.
struct Pending<S, R> {
    inner: S,
    request: R,
    verifiers: Verifiers,
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    fn preparing(prepare: BoxFuture<()>, inner: S, request: R, verifiers: Verifiers) -> Self {
        // Bounded as at ingest; the timeout is made on first poll, inside the runtime.
        let prepare = Box::pin(async move {
            let _ = tokio::time::timeout(PREPARE_TIMEOUT, prepare).await;
        });
        Self {
            kind: Kind::Preparing {
                prepare,
                pending: Some(Pending {
                    inner,
                    request,
                    verifiers,
                }),
            },
        }
    }

    fn future(future: S::Future) -> Self {
        Self {
            kind: Kind::Future { future },
        }
    }

    fn rejected(error: S::Error) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<S: Service<R>, R> fmt::Debug for ResponseFuture<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, R> Future for ResponseFuture<S, R>
where
    S: Service<R>,
    S::Error: From<VerifyError>,
    R: AsRef<WebhookEvent>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut kind = self.as_mut().project().kind;
            let next = match kind.as_mut().project() {
                KindProj::Preparing { prepare, pending } => {
                    ready!(prepare.as_mut().poll(cx));
                    // Always `Some` here: the state moves on as soon as it is taken.
                    let Some(Pending {
                        mut inner,
                        request,
                        verifiers,
                    }) = pending.take()
                    else {
                        return Poll::Pending;
                    };
                    match verifiers.verify_event(request.as_ref()) {
                        Ok(_) => Kind::Future {
                            future: inner.call(request),
                        },
                        Err(err) => Kind::Rejected {
                            error: Some(S::Error::from(err)),
                        },
                    }
                }
                KindProj::Future { future } => return future.poll(cx),
                KindProj::Rejected { error } => {
                    return match error.take() {
                        Some(e) => Poll::Ready(Err(e)),
                        // Polled again after completion: never resolve twice.
                        None => Poll::Pending,
                    };
                }
            };
            kind.set(next);
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

    /// An SNS event reaches a worker whose verifier has never fetched SNS's certificate: the
    /// layer fetches it (through the injected client), verifies, and the processor runs.
    #[tokio::test]
    async fn a_worker_fetches_the_certificate_of_an_sns_event_with_a_cold_cache() {
        use crate::Publisher as _;
        use crate::memory::MemoryBroker;
        use crate::process::{Outcome, processor_fn};
        use crate::verify::schemes::sns::tests::{CERT_URL, TOPIC, fetcher, signed};
        use crate::verify::{ManualClock, Sns};
        use crate::worker::Worker;

        let fetcher = fetcher();
        let verifiers = Verifiers::new()
            .provider("sns", Sns::new(TOPIC, fetcher.clone()).unwrap())
            .require_verification(true)
            .clock(ManualClock::at_unix(1_700_000_000));
        let broker = MemoryBroker::new(16);
        let body = signed("Notification", "2", &[]);
        let forged = {
            let mut m: serde_json::Value = serde_json::from_slice(&body).unwrap();
            m["Message"] = serde_json::json!("{\"order\":2}");
            serde_json::to_vec(&m).unwrap()
        };
        let good = WebhookEvent::new("sns", body);
        let bad = WebhookEvent::new("sns", forged);
        let publisher = broker.publisher();
        publisher.publish("sns", good.clone()).await.unwrap();
        publisher.publish("sns", bad.clone()).await.unwrap();

        let processed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&processed);
        let worker = Worker::builder(broker.subscriber_all())
            .verifiers(verifiers)
            .without_idempotency()
            .concurrency(1)
            .build(processor_fn(move |event: &WebhookEvent, _| {
                seen.lock().unwrap().push(event.id);
                async { Ok(Outcome::Processed) }
            }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(worker.run_until(async {
            let _ = stopped.await;
        }));

        // Both events settle (processed or dead-lettered); a hang guard, not a timing check.
        let settled = async {
            while processed.lock().unwrap().len() + broker.dead_letters("sns").len() < 2 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), settled)
            .await
            .expect("both events settle");
        stop.send(()).unwrap();
        run.await.unwrap();

        assert_eq!(
            *processed.lock().unwrap(),
            [good.id],
            "verified with a cold cache"
        );
        // The forged one is refused with the certificate at hand, not for the lack of it.
        let dead = broker.dead_letters("sns");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0.id, bad.id);
        let reason = &dead[0].1.reason;
        let expected = VerifyError::InvalidSignature.to_string();
        assert!(reason.contains(&expected), "{reason}");
        assert_eq!(fetcher.calls(), [CERT_URL], "fetched once, then cached");
    }
}
