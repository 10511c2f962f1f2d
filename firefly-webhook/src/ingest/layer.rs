//! [`IngestLayer`]: ingest under the prefix, pass everything else to the wrapped service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use http_body_util::Either;
use tower::{Layer, Service};

use super::{IngestBody, IngestService, ResponseFuture as IngestFuture};
use crate::BoxError;
use crate::publish::Publisher;

/// Wraps a service so that requests under the ingest prefix are ingested and all others reach
/// the wrapped service untouched. Configure it like [`IngestService`].
///
/// Responses are `Response<Either<ResBody, IngestBody>>`: the left side from the wrapped
/// service, the right side from ingest.
#[derive(Clone, Debug)]
pub struct IngestLayer {
    ingest: IngestService,
}

impl IngestLayer {
    /// A layer that ingests into `publisher` with default settings.
    pub fn new(publisher: impl Publisher) -> Self {
        Self {
            ingest: IngestService::new(publisher),
        }
    }

    /// A layer around a configured ingest service.
    pub fn from_service(ingest: IngestService) -> Self {
        Self { ingest }
    }
}

impl From<IngestService> for IngestLayer {
    fn from(ingest: IngestService) -> Self {
        Self::from_service(ingest)
    }
}

impl<S> Layer<S> for IngestLayer {
    type Service = Ingested<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Ingested {
            inner,
            ingest: self.ingest.clone(),
        }
    }
}

/// The service produced by [`IngestLayer`].
#[derive(Clone, Debug)]
pub struct Ingested<S> {
    inner: S,
    ingest: IngestService,
}

impl<S, B, ResBody> Service<Request<B>> for Ingested<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Either<ResBody, IngestBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Ingest is always ready; readiness is the wrapped service's.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.ingest.matches(req.uri().path()) {
            let fut = <IngestService as Service<Request<B>>>::call(&mut self.ingest, req);
            ResponseFuture {
                kind: Kind::Ingest { fut },
            }
        } else {
            // Take the service that was driven to readiness, leave a clone in its place.
            let clone = self.inner.clone();
            let mut ready = std::mem::replace(&mut self.inner, clone);
            ResponseFuture {
                kind: Kind::Inner {
                    fut: ready.call(req),
                },
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Ingested`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] fut: F },
        Ingest { #[pin] fut: IngestFuture },
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<Either<ResBody, IngestBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut } => fut.poll(cx).map(|r| r.map(|res| res.map(Either::Left))),
            KindProj::Ingest { fut } => fut.poll(cx).map(|r: Result<_, Infallible>| match r {
                Ok(res) => Ok(res.map(Either::Right)),
                Err(never) => match never {},
            }),
        }
    }
}
