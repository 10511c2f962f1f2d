//! [`Telemetry`]: logs (`FIREFLY_LOG_FORMAT`), traces (`--features otel`) and the Prometheus
//! metrics endpoint, set up the same way by every application.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use firefly_webhook::health::Readiness;
use firefly_webhook::serve::Server;
use firefly_webhook::worker::WorkerBuilder;
use firefly_webhook::{BoxError, IngestService, Subscriber};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::env::{LogFormat, Settings};

/// Where the metrics are served.
pub const METRICS_PATH: &str = "/metrics";
/// Where the gateway serves its OpenAPI document.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where the gateway answers liveness probes.
pub const LIVE_PATH: &str = "/health/live";
/// Where the gateway answers readiness probes.
pub const READY_PATH: &str = "/health/ready";

/// Buckets of every `*_seconds` histogram: webhook latencies, from half a millisecond (a
/// memory publish) to the 10 s that no provider waits for.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of every `*_bytes` histogram: bodies from 256 B to 16 MiB, by powers of 4.
pub const BYTES_BUCKETS: &[f64] = &[
    256.0,
    1024.0,
    4096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
];

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The log levels: `RUST_LOG`, default `info`.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The observability of one application: installed once, at start-up, inside the Tokio
/// runtime, by [`Telemetry::install`].
#[derive(Debug)]
pub struct Telemetry {
    metrics: PrometheusHandle,
    #[cfg(feature = "otel")]
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// The gateway's Prometheus recorder, not installed yet: histograms with [`SECONDS_BUCKETS`]
/// and [`BYTES_BUCKETS`].
pub fn recorder() -> Result<PrometheusBuilder, BoxError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".to_owned()), BYTES_BUCKETS)?)
}

/// Installs `recorder` as the process's `metrics` recorder, describes firefly's metrics, and
/// folds histogram samples in four times a second (what [`Telemetry::install`] does for metrics).
/// Must run inside the Tokio runtime, once per process.
pub fn install_recorder(recorder: PrometheusBuilder) -> Result<PrometheusHandle, BoxError> {
    let metrics = recorder.install_recorder()?;
    firefly_webhook::metric::describe();
    // Histogram samples wait in a buffer (8 bytes each) until they are folded in: at 80,000
    // webhooks a second, three histograms buffer about 2 MB a second. Folding four times a
    // second instead of every five seconds keeps that much off the peak RSS, for the same work.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(metrics)
}

impl Telemetry {
    /// Installs the log subscriber (`FIREFLY_LOG_FORMAT`, levels from `RUST_LOG`, default
    /// `info`), the OTLP trace exporter when built with `--features otel` and
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and the
    /// Prometheus recorder that every `metrics` counter of the process then reports to.
    /// `service` is the default `OTEL_SERVICE_NAME`.
    ///
    /// Must run inside the Tokio runtime (the recorder's upkeep and the trace exporter run
    /// there), and once per process.
    pub fn install(settings: &Settings, service: &'static str) -> Result<Self, BoxError> {
        #[cfg(feature = "otel")]
        let traces = otel::provider(service)?;
        #[cfg(not(feature = "otel"))]
        let _ = service;

        // Each layer has its own filter: the logs follow `RUST_LOG`, while the exported traces
        // also take the ingest and worker spans, which are `debug` so that they cost nothing
        // when only logs are wanted.
        let text = (settings.log_format == LogFormat::Text)
            .then(|| tracing_subscriber::fmt::layer().with_filter(log_filter()));
        let json = (settings.log_format == LogFormat::Json).then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(log_filter())
        });
        let registry = tracing_subscriber::registry().with(text).with(json);
        #[cfg(feature = "otel")]
        let registry = registry.with(
            traces
                .as_ref()
                .map(|provider| otel::layer(provider).with_filter(otel::span_filter())),
        );
        registry.try_init()?;

        let metrics = install_recorder(recorder()?)?;

        #[cfg(feature = "otel")]
        if traces.is_some() {
            tracing::info!(service, "exporting traces over OTLP");
        }
        Ok(Self {
            metrics,
            #[cfg(feature = "otel")]
            traces,
        })
    }

    /// The metrics, in the Prometheus text format.
    pub fn render(&self) -> String {
        self.metrics.render()
    }

    /// `GET /metrics`. With `readiness`, each scrape runs (or reuses the cached result of) the
    /// readiness checks first, so [`READY`](firefly_webhook::metric::READY) is fresh even
    /// when nothing probes readiness.
    pub fn routes(&self, readiness: Option<Readiness>) -> Router {
        let handle = self.metrics.clone();
        Router::new().route(
            METRICS_PATH,
            get(move || {
                let (handle, readiness) = (handle.clone(), readiness.clone());
                async move {
                    if let Some(readiness) = readiness {
                        let _ = readiness.run().await;
                    }
                    (
                        [(http::header::CONTENT_TYPE, PROMETHEUS_TEXT)],
                        handle.render(),
                    )
                }
            }),
        )
    }

    /// Serves [`routes`](Self::routes) on a listener of its own at `addr`, until the process
    /// ends. Returns the bound address.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        readiness: Option<Readiness>,
    ) -> Result<SocketAddr, BoxError> {
        let server = Server::bind(addr)
            .await
            .map_err(|err| format!("cannot listen on {addr} (FIREFLY_METRICS_LISTEN): {err}"))?;
        let bound = server.local_addr()?;
        tokio::spawn(server.serve(self.routes(readiness)));
        Ok(bound)
    }

    /// `ingest` with its spans joined to the exported traces, when traces are exported: the
    /// request's `traceparent` becomes the span's remote parent and the event carries the
    /// exported span's ids. Otherwise `ingest` unchanged.
    pub fn trace(&self, ingest: IngestService) -> IngestService {
        #[cfg(feature = "otel")]
        if self.traces.is_some() {
            return ingest.on_span(otel::join);
        }
        ingest
    }

    /// `worker` with its delivery spans joined to the exported traces, when traces are
    /// exported: the context the event carries (the ingest span's) becomes the span's remote
    /// parent. Otherwise `worker` unchanged.
    pub fn trace_worker<Sub: Subscriber>(&self, worker: WorkerBuilder<Sub>) -> WorkerBuilder<Sub> {
        #[cfg(feature = "otel")]
        if self.traces.is_some() {
            return worker.on_span(otel::join);
        }
        worker
    }

    /// Sends the spans still buffered (with `--features otel`); call before exiting.
    #[cfg_attr(not(feature = "otel"), allow(clippy::unused_async))]
    pub async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.traces {
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(err)) = flushed {
                tracing::warn!(error = %err, "traces not flushed");
            }
        }
    }
}

#[cfg(feature = "otel")]
mod otel {
    //! OTLP export of the `tracing` spans, and the hook that ties the ingest span to the
    //! request's W3C context.

    use firefly_webhook::BoxError;
    use firefly_webhook::event::TraceContext;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        TracerProvider as _,
    };
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    fn set(var: &str) -> bool {
        std::env::var_os(var).is_some_and(|v| !v.is_empty())
    }

    /// The exporter the standard `OTEL_*` variables configure, or `None` when no endpoint is
    /// set (or `OTEL_SDK_DISABLED=true`): built with the feature, off until pointed somewhere.
    pub(super) fn provider(service: &'static str) -> Result<Option<SdkTracerProvider>, BoxError> {
        let disabled =
            std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if disabled
            || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        let mut resource = Resource::builder();
        let named = set("OTEL_SERVICE_NAME")
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name"));
        if !named {
            resource = resource.with_service_name(service);
        }
        Ok(Some(
            SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(resource.build())
                .build(),
        ))
    }

    /// What the trace exporter takes: what the logs take, and the spans of every webhook.
    pub(super) fn span_filter() -> tracing_subscriber::EnvFilter {
        [
            firefly_webhook::ingest::SPAN_TARGET,
            firefly_webhook::worker::SPAN_TARGET,
        ]
        .into_iter()
        .filter_map(|target| format!("{target}=debug").parse().ok())
        .fold(
            super::log_filter(),
            tracing_subscriber::EnvFilter::add_directive,
        )
    }

    pub(super) fn layer<S>(
        provider: &SdkTracerProvider,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("firefly-webhook"))
    }

    /// [`IngestService::on_span`](firefly_webhook::IngestService::on_span): the request's
    /// context becomes the span's remote parent; the event carries the started span's ids.
    pub(super) fn join(
        span: &tracing::Span,
        parent: Option<&TraceContext>,
    ) -> Option<TraceContext> {
        if let Some(parent) = parent {
            let state = parent
                .tracestate()
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default();
            let remote = SpanContext::new(
                TraceId::from_bytes(parent.trace_id().to_bytes()),
                SpanId::from_bytes(parent.parent_id().to_bytes()),
                TraceFlags::new(parent.flags()),
                true,
                state,
            );
            // Fails only when the span is disabled or already started: then ingest's own
            // context is used.
            span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
                .ok()?;
        }
        // Starts the span, which gives it its ids.
        let cx = span.context();
        let own = cx.span().span_context().clone();
        if !own.is_valid() {
            return None;
        }
        let traceparent = format!(
            "00-{}-{}-{:02x}",
            own.trace_id(),
            own.span_id(),
            own.trace_flags().to_u8()
        );
        let state = own.trace_state().header();
        TraceContext::parse(&traceparent, Some(state.as_str()).filter(|s| !s.is_empty()))
    }

    #[cfg(test)]
    mod tests {
        use std::sync::{Arc, Mutex};

        use firefly_webhook::memory::MemoryBroker;
        use firefly_webhook::{IngestService, Subscriber as _, WebhookEvent};
        use opentelemetry_sdk::error::OTelSdkResult;
        use opentelemetry_sdk::trace::{SpanData, SpanExporter};
        use tower::ServiceExt as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        use super::*;

        const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

        /// Keeps what it is sent.
        #[derive(Debug, Clone, Default)]
        struct Collected(Arc<Mutex<Vec<SpanData>>>);

        impl SpanExporter for Collected {
            fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
                self.0.lock().unwrap().extend(batch);
                std::future::ready(Ok(()))
            }
        }

        /// Ingests one webhook with `headers` under an exporting subscriber: the exported
        /// ingest span and the published event.
        async fn ingest(headers: &[(&str, &str)]) -> (SpanData, WebhookEvent) {
            let collected = Collected::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(collected.clone())
                .build();
            let subscriber = tracing_subscriber::registry().with(layer(&provider));
            let _default = tracing::subscriber::set_default(subscriber);
            let broker = MemoryBroker::new(4);
            let svc = IngestService::new(broker.publisher()).on_span(join);
            let mut req = http::Request::post("/api/v1/webhook/github");
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let answer = svc
                .oneshot(req.body(String::from("{}")).unwrap())
                .await
                .unwrap();
            assert_eq!(answer.status(), http::StatusCode::ACCEPTED);
            let event = broker.subscriber_all().next().await.unwrap().unwrap().event;
            let spans = collected.0.lock().unwrap();
            let span = spans
                .iter()
                .find(|s| s.name == firefly_webhook::ingest::SPAN)
                .expect("the ingest span was exported")
                .clone();
            (span, event)
        }

        #[tokio::test]
        async fn the_ingest_span_is_a_child_of_the_request_context() {
            let (span, event) = ingest(&[("traceparent", PARENT), ("tracestate", "a=1")]).await;
            let remote = TraceContext::parse(PARENT, None).unwrap();
            assert_eq!(
                span.span_context.trace_id().to_string(),
                remote.trace_id().to_string()
            );
            assert_eq!(
                span.parent_span_id.to_string(),
                remote.parent_id().to_string()
            );
            assert!(span.parent_span_is_remote);
            // The event continues from the exported span itself.
            let trace = event.trace.unwrap();
            assert_eq!(
                trace.parent_id().to_string(),
                span.span_context.span_id().to_string()
            );
            assert_eq!(trace.trace_id(), remote.trace_id());
            assert_eq!(trace.tracestate(), Some("a=1"));
            let attribute = |key: &str| {
                span.attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == key)
                    .map(|kv| kv.value.to_string())
            };
            assert_eq!(attribute("provider").as_deref(), Some("github"));
            assert_eq!(attribute("outcome").as_deref(), Some("accepted"));
            assert_eq!(attribute("event_id"), Some(event.id.to_string()));
        }

        #[tokio::test]
        async fn without_a_request_context_the_span_starts_the_trace() {
            let (span, event) = ingest(&[]).await;
            assert_eq!(span.parent_span_id, SpanId::INVALID);
            let trace = event.trace.unwrap();
            assert_eq!(
                trace.trace_id().to_string(),
                span.span_context.trace_id().to_string()
            );
            assert_eq!(
                trace.parent_id().to_string(),
                span.span_context.span_id().to_string()
            );
        }
    }
}
