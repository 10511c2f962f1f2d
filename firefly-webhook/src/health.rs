//! Liveness and readiness endpoints as `tower` services.
//!
//! Readiness has three answers: `200 {"status":"up"}` when every check passed,
//! `200 {"status":"degraded"}` when every check passed but some reported [`Health::Degraded`]
//! (ready, working around a problem: for example a spool holding events on disk while the
//! broker is down; nothing is lost, but events are delayed), and `503 {"status":"down"}` when a
//! check failed. A load balancer keeps sending traffic to a degraded instance; an operator
//! sees why in the answer's `checks` and in the [`READY_DEGRADED`](crate::metric::READY_DEGRADED)
//! gauge.
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
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::Shared;
use http::{Request, Response, StatusCode};
use serde::Serialize;
use tokio::time::Instant;

use crate::idempotency::IdempotencyStore;
use crate::json::{JsonBody, json_response};
use crate::publish::Publisher;
use crate::{BoxError, BoxFuture};

type Check = Arc<dyn Fn() -> BoxFuture<Result<Health, BoxError>> + Send + Sync>;

/// The outcome of one run of every check: names, health or error texts, in registration order.
type Report = Arc<[(String, Result<Health, String>)]>;

/// What a readiness check that passed found; a check that fails returns an error instead.
///
/// ```
/// use firefly_webhook::health::{Health, Readiness};
///
/// let backlog = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
/// let readiness = Readiness::new().check_health("spool", move || {
///     let held = backlog.load(std::sync::atomic::Ordering::Relaxed);
///     async move {
///         Ok(if held > 0 { Health::Degraded("spooling") } else { Health::Up })
///     }
/// });
/// # let _ = readiness;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Health {
    /// Everything works.
    Up,
    /// Ready, but working around a problem. The probe still answers 200, with
    /// `"status":"degraded"` and this reason beside the check: a fixed word such as
    /// `"spooling"`, never error text (the answer is public).
    Degraded(&'static str),
}

impl Health {
    /// `"up"` or `"degraded"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded(_) => "degraded",
        }
    }
}

/// A run in flight, shared by every caller that wants its result.
type Run = Shared<BoxFuture<(Instant, Report)>>;

/// The body of every health answer.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Health))]
struct Status<'a> {
    /// `up` (every check is up), `degraded` (every check passed, some degraded; still 200) or
    /// `down` (a check failed; 503).
    #[cfg_attr(feature = "openapi", schema(example = "up"))]
    status: &'a str,
    /// Each readiness check (absent from liveness answers).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<CheckStatus<'static>>>))]
    checks: &'a [CheckStatus<'a>],
}

/// One readiness check.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = HealthCheck))]
struct CheckStatus<'a> {
    /// The check's name (the transport's, `idempotency`, …).
    name: &'a str,
    /// `up`, `degraded` or `down`.
    status: &'a str,
    /// Why a `degraded` check is degraded (a fixed word such as `spooling`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// An OpenAPI 3.1 description of [`Liveness`] mounted at `live` and [`Readiness`] at `ready`
/// (feature `openapi`), to merge into an application's document.
#[cfg(feature = "openapi")]
pub fn openapi(live: &str, ready: &str) -> utoipa::openapi::OpenApi {
    use utoipa::ToSchema as _;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder};
    use utoipa::openapi::{
        ComponentsBuilder, ContentBuilder, OpenApiBuilder, PathItem, PathsBuilder, Ref,
        ResponseBuilder,
    };

    let answer = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Status::name())))
                .build(),
        )
    };
    let live_op = OperationBuilder::new()
        .operation_id(Some("live"))
        .tag("health")
        .summary(Some("Liveness: the process answers"))
        .response("200", answer("Alive: `{\"status\":\"up\"}`."));
    let ready_op = OperationBuilder::new()
        .operation_id(Some("ready"))
        .tag("health")
        .summary(Some("Readiness: every check passes (cached briefly)"))
        .response(
            "200",
            answer(
                "Ready: every check is `up` (`\"status\":\"up\"`), or passed degraded \
                 (`\"status\":\"degraded\"`: working around a problem, such as holding \
                 events on disk while the broker is down).",
            ),
        )
        .response("503", answer("Not ready: at least one check is `down`."));
    OpenApiBuilder::new()
        .paths(
            PathsBuilder::new()
                .path(live, PathItem::new(HttpMethod::Get, live_op))
                .path(ready, PathItem::new(HttpMethod::Get, ready_op)),
        )
        .components(Some(
            ComponentsBuilder::new()
                .schema_from::<Status<'static>>()
                .schema_from::<CheckStatus<'static>>()
                .build(),
        ))
        .build()
}

/// Answers every request with `200 {"status":"up"}`: the process is alive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Liveness;

impl<B> tower::Service<Request<B>> for Liveness {
    type Response = Response<JsonBody>;
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
                checks: &[],
            },
        )))
    }
}

/// Runs every registered check (each bounded by a timeout) and answers 200 when all pass,
/// 503 otherwise, with the name and `up`/`degraded`/`down` status of each check.
///
/// A check registered with [`check_health`](Self::check_health) may pass
/// [degraded](Health::Degraded): the answer is then still 200, with `"status":"degraded"`
/// (see the [module docs](self)).
///
/// Probes are cheap, so a busy load balancer cannot use them to load the broker:
///
/// - the result is cached for [`cache_for`](Self::cache_for) (default 1 s), shared by every
///   clone of the service;
/// - probes that arrive while the checks run wait for that run instead of starting their own.
///
/// The response never contains error text (it may name hosts or credentials); each failure is
/// logged at `warn` once per run instead.
#[derive(Clone)]
pub struct Readiness {
    checks: Arc<Vec<(String, Check)>>,
    timeout: Duration,
    cache_for: Duration,
    cache: Arc<Mutex<Cache>>,
}

/// The latest run: in flight, or finished at some instant.
#[derive(Default)]
enum Cache {
    #[default]
    Empty,
    Running(Run),
    Done(Instant, Report),
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            checks: Arc::default(),
            timeout: Duration::from_secs(2),
            cache_for: Duration::from_secs(1),
            cache: Arc::default(),
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
            .field("cache_for", &self.cache_for)
            .finish_non_exhaustive()
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
        self.cache = Arc::default();
        self
    }

    /// How long a result is reused before the checks run again (default 1 s). The window
    /// starts when a run finishes; `Duration::ZERO` runs the checks for every probe that does
    /// not arrive while a run is in flight.
    #[must_use]
    pub fn cache_for(mut self, cache_for: Duration) -> Self {
        self.cache_for = cache_for;
        self.cache = Arc::default();
        self
    }

    /// Adds a check: it passes ([`Health::Up`]) or fails.
    #[must_use]
    pub fn check<F, Fut>(self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.check_health(name, move || {
            let run = check();
            async move { run.await.map(|()| Health::Up) }
        })
    }

    /// Adds a check that may also pass [degraded](Health::Degraded).
    #[must_use]
    pub fn check_health<F, Fut>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Health, BoxError>> + Send + 'static,
    {
        Arc::make_mut(&mut self.checks).push((name.into(), Arc::new(move || Box::pin(check()))));
        self.cache = Arc::default();
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

    /// The checks' results: `Ok` when all pass (degraded ones too), else the failures by name
    /// with their error text. Shares the cache and the in-flight run with the service.
    pub async fn run(&self) -> Result<(), Vec<(String, String)>> {
        let report = self.report().await;
        let failed: Vec<_> = report
            .iter()
            .filter_map(|(n, r)| r.as_ref().err().map(|e| (n.clone(), e.clone())))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    /// The cached report when fresh, else the result of the run in flight or of a new one.
    async fn report(&self) -> Report {
        let run = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            match &*cache {
                Cache::Done(at, report) if at.elapsed() < self.cache_for => {
                    return Arc::clone(report);
                }
                Cache::Running(run) => run.clone(),
                Cache::Empty | Cache::Done(..) => {
                    let run = self.start().shared();
                    *cache = Cache::Running(run.clone());
                    run
                }
            }
        };
        let (at, report) = run.clone().await;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(&*cache, Cache::Running(current) if current.ptr_eq(&run)) {
            *cache = Cache::Done(at, Arc::clone(&report));
        }
        report
    }

    /// One run of every check, concurrently, each bounded by the timeout. Nothing runs until
    /// it is polled, and a check that panics counts as failed.
    fn start(&self) -> BoxFuture<(Instant, Report)> {
        let (checks, timeout) = (Arc::clone(&self.checks), self.timeout);
        Box::pin(async move {
            let runs = checks.iter().map(|(name, check)| async move {
                let run = AssertUnwindSafe(async { check().await }).catch_unwind();
                let r = match tokio::time::timeout(timeout, run).await {
                    Ok(Ok(Ok(health))) => Ok(health),
                    Ok(Ok(Err(e))) => Err(e.to_string()),
                    Ok(Err(_panic)) => Err("check panicked".to_owned()),
                    Err(_elapsed) => Err("check timed out".to_owned()),
                };
                if let Err(error) = &r {
                    tracing::warn!(check = %name, error, "readiness check failed");
                }
                let degraded = matches!(r, Ok(Health::Degraded(_)));
                metrics::gauge!(crate::metric::READY, crate::metric::CHECK => name.clone())
                    .set(if r.is_ok() { 1.0 } else { 0.0 });
                metrics::gauge!(crate::metric::READY_DEGRADED, crate::metric::CHECK => name.clone())
                    .set(if degraded { 1.0 } else { 0.0 });
                (name.clone(), r)
            });
            let report: Report = futures_util::future::join_all(runs).await.into();
            (Instant::now(), report)
        })
    }
}

impl<B> tower::Service<Request<B>> for Readiness {
    type Response = Response<JsonBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        // Two `Arc`s and two durations: cheap.
        let this = self.clone();
        Box::pin(async move {
            let report = this.report().await;
            let down = report.iter().any(|(_, r)| r.is_err());
            let degraded = report
                .iter()
                .any(|(_, r)| matches!(r, Ok(Health::Degraded(_))));
            let checks: Vec<_> = report
                .iter()
                .map(|(name, r)| CheckStatus {
                    name,
                    status: r.as_ref().map_or("down", |h| h.as_str()),
                    reason: match r {
                        Ok(Health::Degraded(reason)) => Some(reason),
                        _ => None,
                    },
                })
                .collect();
            let (status, text) = if down {
                (StatusCode::SERVICE_UNAVAILABLE, "down")
            } else if degraded {
                (StatusCode::OK, "degraded")
            } else {
                (StatusCode::OK, "up")
            };
            Ok(json_response(
                status,
                &Status {
                    status: text,
                    checks: &checks,
                },
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;

    async fn probe(ready: &Readiness) -> (StatusCode, Value) {
        let req = Request::get("/health/ready").body(()).unwrap();
        let res = ready.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let body: Bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    async fn up() -> Result<Health, BoxError> {
        Ok(Health::Up)
    }

    async fn degraded() -> Result<Health, BoxError> {
        Ok(Health::Degraded("spooling"))
    }

    #[tokio::test]
    async fn every_check_up_is_up() {
        let ready = Readiness::new()
            .check("broker", || async { Ok(()) })
            .check_health("spool", up);
        let (status, body) = probe(&ready).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"status": "up", "checks": [
                {"name": "broker", "status": "up"},
                {"name": "spool", "status": "up"},
            ]})
        );
    }

    #[tokio::test]
    async fn a_degraded_check_is_still_ready() {
        let ready = Readiness::new()
            .check("idempotency", || async { Ok(()) })
            .check_health("kafka", degraded);
        let (status, body) = probe(&ready).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"status": "degraded", "checks": [
                {"name": "idempotency", "status": "up"},
                {"name": "kafka", "status": "degraded", "reason": "spooling"},
            ]})
        );
        assert!(ready.run().await.is_ok(), "degraded passes");
    }

    #[tokio::test]
    async fn a_failed_check_wins_over_a_degraded_one() {
        let ready = Readiness::new()
            .check_health("kafka", degraded)
            .check("idempotency", || async {
                Err::<(), BoxError>("redis://:secret@10.0.0.1 refused".into())
            });
        let (status, body) = probe(&ready).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({"status": "down", "checks": [
                {"name": "kafka", "status": "degraded", "reason": "spooling"},
                {"name": "idempotency", "status": "down"},
            ]})
        );
        let failed = ready.run().await.unwrap_err();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "idempotency");
    }

    #[test]
    fn health_names() {
        assert_eq!(Health::Up.as_str(), "up");
        assert_eq!(Health::Degraded("spooling").as_str(), "degraded");
    }
}
