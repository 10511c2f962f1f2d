//! Liveness and readiness endpoints as `tower` services.
//!
//! ```
//! use axum::Router;
//! use firefly_webhook::health::{Liveness, Readiness};
//! use firefly_webhook::memory::MemoryBroker;
//!
//! let broker = MemoryBroker::new(100);
//! let app: Router = Router::new()
//!     .route_service("/health/live", Liveness)
//!     .route_service("/health/ready", Readiness::new().publisher("broker", broker.publisher()));
//! # let _ = app;
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use serde::Serialize;

use crate::BoxError;
use crate::idempotency::IdempotencyStore;
use crate::ingest::IngestBody;
use crate::ingest::rejection::json_response;
use crate::publish::Publisher;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Check = Arc<dyn Fn() -> BoxFuture<Result<(), BoxError>> + Send + Sync>;

#[derive(Serialize)]
struct Status<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks: Vec<CheckStatus<'a>>,
}

#[derive(Serialize)]
struct CheckStatus<'a> {
    name: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Answers every request with `200 {"status":"up"}`: the process is alive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Liveness;

impl<B> tower::Service<Request<B>> for Liveness {
    type Response = Response<IngestBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        std::future::ready(Ok(json_response(
            StatusCode::OK,
            &Status {
                status: "up",
                checks: Vec::new(),
            },
        )))
    }
}

/// Runs every registered check (each bounded by a timeout) and answers 200 when all pass,
/// 503 otherwise, with a JSON list of results.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<(String, Check)>,
    timeout: Duration,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            checks: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field(
                "checks",
                &self.checks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Readiness {
    /// No checks yet: always ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long each check may take before it counts as failed (default 2 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a check.
    #[must_use]
    pub fn check<F, Fut>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.checks
            .push((name.into(), Arc::new(move || Box::pin(check()))));
        self
    }

    /// Checks a publisher's [`health`](Publisher::health).
    #[must_use]
    pub fn publisher(self, name: impl Into<String>, publisher: impl Publisher) -> Self {
        let publisher = Arc::new(publisher);
        self.check(name, move || {
            let p = Arc::clone(&publisher);
            async move { p.health().await.map_err(Into::into) }
        })
    }

    /// Checks an idempotency store's [`health`](IdempotencyStore::health).
    #[must_use]
    pub fn store(self, name: impl Into<String>, store: impl IdempotencyStore) -> Self {
        let store = Arc::new(store);
        self.check(name, move || {
            let s = Arc::clone(&store);
            async move { s.health().await.map_err(Into::into) }
        })
    }

    /// Runs the checks: `Ok` when all pass, else the failures by name.
    pub async fn run(&self) -> Result<(), Vec<(String, String)>> {
        let results = self.results().await;
        let failed: Vec<_> = results
            .into_iter()
            .filter_map(|(n, r)| r.err().map(|e| (n, e)))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    async fn results(&self) -> Vec<(String, Result<(), String>)> {
        let runs = self.checks.iter().map(|(name, check)| {
            let fut = tokio::time::timeout(self.timeout, check());
            async move {
                let r = match fut.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("check timed out".to_owned()),
                };
                (name.clone(), r)
            }
        });
        futures_util::future::join_all(runs).await
    }
}

impl<B> tower::Service<Request<B>> for Readiness {
    type Response = Response<IngestBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let results = this.results().await;
            let ok = results.iter().all(|(_, r)| r.is_ok());
            let checks = results
                .iter()
                .map(|(name, r)| CheckStatus {
                    name,
                    status: if r.is_ok() { "up" } else { "down" },
                    error: r.as_ref().err().cloned(),
                })
                .collect();
            let (status, text) = if ok {
                (StatusCode::OK, "up")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "down")
            };
            Ok(json_response(
                status,
                &Status {
                    status: text,
                    checks,
                },
            ))
        })
    }
}
