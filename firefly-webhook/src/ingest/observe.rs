//! What ingest tells about itself: metric labels (bounded), the ingest span and the one log
//! line per rejected request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;

use http::{Response, StatusCode};
use metrics::{Counter, Gauge, Histogram, SharedString};

use super::budget::Held;
use super::rate::ProviderKey;
use super::{IngestBody, Refused, Rejection};
use crate::event::{TraceContext, TraceId};
use crate::handles::Handles;
use crate::metric;
use crate::publish::{BreakerOpen, PublishError};

/// The name of the span each ingest request runs in (target `firefly_webhook::ingest`, level
/// `DEBUG`, as `tower-http`'s request spans: at the usual `info` it costs nothing, while an
/// exporting layer can enable it with a filter of its own, say
/// `firefly_webhook::ingest=debug`).
///
/// Its fields: `provider`, `event_id`, `destination`, `outcome` (`accepted` or the rejection
/// code), `trace_id` and `span_id` (the span's own W3C ids, which the published event carries
/// as its [`TraceContext`]), and, when the request carried one, the `traceparent` and
/// `tracestate` it continues. A layer that exports spans (OpenTelemetry) joins in through
/// [`IngestService::on_span`](super::IngestService::on_span).
pub const SPAN: &str = "ingest";

/// The target of the [`SPAN`] span and of the ingest log lines.
pub const SPAN_TARGET: &str = "firefly_webhook::ingest";
const TARGET: &str = SPAN_TARGET;

/// The span of one request; `parent` is the trace context the request carried. The span's own
/// ids are recorded with [`record_trace`] once they are known.
pub(super) fn span(parent: Option<&TraceContext>) -> tracing::Span {
    use tracing::field::Empty;
    tracing::debug_span!(
        target: TARGET,
        SPAN,
        provider = Empty,
        event_id = Empty,
        destination = Empty,
        outcome = Empty,
        trace_id = Empty,
        span_id = Empty,
        traceparent = parent.map(tracing::field::display),
        tracestate = parent.and_then(TraceContext::tracestate),
    )
}

/// Records the span's own W3C ids.
pub(super) fn record_trace(span: &tracing::Span, own: &TraceContext) {
    span.record("trace_id", tracing::field::display(own.trace_id()));
    span.record("span_id", tracing::field::display(own.parent_id()));
}

/// A provider's [`metric::PROVIDER`] label and the handles of the metrics every request of
/// that provider records, registered on first use (see [`Handles`]): one lookup per request
/// finds them all.
#[derive(Debug)]
pub(super) struct ProviderMetrics {
    label: SharedString,
    /// [`metric::INGEST_REQUESTS_TOTAL`] with status `202`, code `accepted`.
    accepted: OnceLock<Counter>,
    /// [`metric::INGEST_BODY_BYTES`].
    body_bytes: OnceLock<Histogram>,
}

impl ProviderMetrics {
    fn new(label: SharedString) -> Arc<Self> {
        Arc::new(Self {
            label,
            accepted: OnceLock::new(),
            body_bytes: OnceLock::new(),
        })
    }
}

/// Provider label values, so that clients cannot mint series: configured providers by name,
/// and without an allowlist the first [`metric::MAX_PROVIDER_LABELS`] other names; everyone
/// else is [`metric::OTHER_PROVIDER`]. A known provider costs a lookup in a snapshot of the
/// map (no lock) and a reference count, no allocation.
#[derive(Debug)]
pub(super) struct ProviderLabels {
    named: ArcSwap<HashMap<Box<str>, Arc<ProviderMetrics>, foldhash::fast::RandomState>>,
    other: Arc<ProviderMetrics>,
    /// Serialises inserts, and with them the count of unconfigured names.
    insert: Mutex<()>,
    unconfigured: AtomicUsize,
}

impl Default for ProviderLabels {
    fn default() -> Self {
        Self {
            named: ArcSwap::from_pointee(HashMap::default()),
            other: ProviderMetrics::new(SharedString::const_str(metric::OTHER_PROVIDER)),
            insert: Mutex::new(()),
            unconfigured: AtomicUsize::new(0),
        }
    }
}

impl ProviderLabels {
    /// The label (and metrics) of `provider`; `configured` says whether it is allowlisted or
    /// has a verifier, `open` whether unconfigured names may have labels of their own.
    pub(super) fn get(
        &self,
        provider: &str,
        configured: impl FnOnce() -> bool,
        open: bool,
    ) -> Arc<ProviderMetrics> {
        // Checked names are at most 64 bytes; anything longer is no provider's label.
        let provider = provider.get(..ProviderKey::MAX).unwrap_or(provider);
        if let Some(metrics) = self.named.load().get(provider) {
            return Arc::clone(metrics);
        }
        let configured = configured();
        if !configured
            && (!open || self.unconfigured.load(Ordering::Relaxed) >= metric::MAX_PROVIDER_LABELS)
        {
            return self.other();
        }
        let _insert = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let named = self.named.load_full();
        if let Some(metrics) = named.get(provider) {
            return Arc::clone(metrics);
        }
        if !configured {
            // Counted under the insert lock: the cap holds however many requests race here.
            if self.unconfigured.load(Ordering::Relaxed) >= metric::MAX_PROVIDER_LABELS {
                return self.other();
            }
            self.unconfigured.fetch_add(1, Ordering::Relaxed);
        }
        let metrics = ProviderMetrics::new(SharedString::from(Arc::<str>::from(provider)));
        let mut next = HashMap::clone(&named);
        next.insert(provider.into(), Arc::clone(&metrics));
        self.named.store(Arc::new(next));
        metrics
    }

    /// The metrics of requests without a provider of their own ([`metric::OTHER_PROVIDER`]).
    pub(super) fn other(&self) -> Arc<ProviderMetrics> {
        Arc::clone(&self.other)
    }
}

/// The [`metric::STATUS`] label of an ingest answer.
pub(super) fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        202 => "202",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        _ => "other",
    }
}

/// The [`metric::OUTCOME`] of a publish the broker confirmed.
const OK: &str = "ok";

/// The [`metric::OUTCOME`] label of a publish.
pub(super) fn publish_outcome(result: &Result<impl Sized, PublishError>) -> &'static str {
    match result {
        Ok(_) => OK,
        Err(PublishError::Unavailable(_)) => "unavailable",
        Err(PublishError::Overloaded) => "overloaded",
        Err(PublishError::TimedOut(_)) => "timed_out",
        Err(PublishError::Rejected(_)) => "rejected",
    }
}

/// The handles of the per-request ingest metrics (see [`Handles`]); those of a provider's
/// accepted requests are in its [`ProviderMetrics`].
#[derive(Debug, Default)]
pub(super) struct Recorded {
    answers: Handles<(SharedString, &'static str, &'static str), Counter>,
    accepted_receipts: OnceLock<Counter>,
    rejected_receipts: OnceLock<Counter>,
    rejected: Handles<(SharedString, &'static str), Counter>,
    publish: Handles<(&'static str, &'static str), Histogram>,
    /// The histogram of the first transport's successful publishes, the one nearly every
    /// request records into: found without a lookup in `publish`.
    published: OnceLock<(&'static str, Histogram)>,
    in_flight: OnceLock<Gauge>,
}

/// The answer counter of an accepted request.
const ACCEPTED: (StatusCode, &str) = (StatusCode::ACCEPTED, "accepted");

impl Recorded {
    /// Counts one answer in [`metric::INGEST_REQUESTS_TOTAL`] and
    /// [`metric::INGEST_RECEIPTS_TOTAL`].
    pub(super) fn answer(
        &self,
        provider: &ProviderMetrics,
        status: StatusCode,
        code: &'static str,
    ) {
        let register = |(p, s, c): &(SharedString, &'static str, &'static str)| {
            metrics::counter!(
                metric::INGEST_REQUESTS_TOTAL,
                metric::PROVIDER => p.clone(),
                metric::STATUS => *s,
                metric::CODE => *c,
            )
        };
        if (status, code) == ACCEPTED {
            provider
                .accepted
                .get_or_init(|| register(&(provider.label.clone(), "202", code)))
                .increment(1);
        } else {
            self.answers.with(
                &(provider.label.clone(), status_label(status), code),
                register,
                |counter| counter.increment(1),
            );
        }
        let (receipts, receipt) = if status.is_success() {
            (&self.accepted_receipts, "accepted")
        } else {
            (&self.rejected_receipts, "rejected")
        };
        receipts
            .get_or_init(
                || metrics::counter!(metric::INGEST_RECEIPTS_TOTAL, metric::STATUS => receipt),
            )
            .increment(1);
    }

    /// Records a body's size in [`metric::INGEST_BODY_BYTES`].
    pub(super) fn body_bytes(provider: &ProviderMetrics, bytes: usize) {
        // Sizes up to a few MiB: f64 holds them exactly.
        #[allow(clippy::cast_precision_loss)]
        provider
            .body_bytes
            .get_or_init(|| {
                metrics::histogram!(metric::INGEST_BODY_BYTES, metric::PROVIDER => provider.label.clone())
            })
            .record(bytes as f64);
    }

    /// Records a publish's duration in [`metric::INGEST_PUBLISH_SECONDS`].
    pub(super) fn publish(&self, transport: &'static str, outcome: &'static str, seconds: f64) {
        let register = |(t, o): &(&'static str, &'static str)| {
            metrics::histogram!(
                metric::INGEST_PUBLISH_SECONDS,
                metric::TRANSPORT => *t,
                metric::OUTCOME => *o,
            )
        };
        if outcome == OK {
            let (first, histogram) = self
                .published
                .get_or_init(|| (transport, register(&(transport, OK))));
            if *first == transport {
                histogram.record(seconds);
                return;
            }
        }
        self.publish
            .with(&(transport, outcome), register, |histogram| {
                histogram.record(seconds);
            });
    }

    /// Counts, logs and answers a refusal.
    pub(super) fn refuse(
        &self,
        provider: Option<&str>,
        metrics: &ProviderMetrics,
        refused: Refused,
        trace_id: TraceId,
    ) -> Response<IngestBody> {
        let code = refused.rejection.code();
        tracing::Span::current().record("outcome", code);
        log_rejection(provider, &refused, trace_id);
        self.rejected.with(
            &(metrics.label.clone(), code),
            |(p, c)| {
                metrics::counter!(
                    metric::INGEST_REJECTED_TOTAL,
                    metric::PROVIDER => p.clone(),
                    metric::CODE => *c,
                )
            },
            |counter| counter.increment(1),
        );
        self.answer(metrics, refused.rejection.status(), code);
        refused.rejection.into_response()
    }
}

/// The one log line of a rejected request: its provider (as sent, when it was a valid name),
/// code, event id and what went wrong behind it; never a header value or the body.
///
/// Answers the client could cause (4xx) and backpressure (shed load, a full queue, an open
/// breaker) are `info`; failures of the broker behind the gateway and routes to a reserved
/// destination are `warn`.
pub(super) fn log_rejection(provider: Option<&str>, refused: &Refused, trace_id: TraceId) {
    let rejection = &refused.rejection;
    let status = rejection.status().as_u16();
    let code = rejection.code();
    let event_id = rejection.event_id().map(tracing::field::display);
    let destination = refused.destination.as_deref();
    let error = refused
        .error
        .as_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    // The broker failed, or the routing is misconfigured: the operator's problem. A full queue
    // and an open breaker are backpressure (the breaker logs its own turns): `warn` for each
    // refused request would add volume exactly when the gateway is busiest.
    let operator = match rejection {
        Rejection::Unavailable { .. } => {
            !matches!(&refused.error, Some(PublishError::Overloaded))
                && !matches!(
                    &refused.error,
                    Some(PublishError::Unavailable(source)) if source.is::<BreakerOpen>()
                )
        }
        Rejection::PublishRejected { .. } => true,
        Rejection::ReservedDestination(_) => destination.is_some(),
        _ => false,
    };
    if operator {
        tracing::warn!(target: TARGET, provider, code, status, event_id, destination, %trace_id, error, "webhook rejected");
    } else {
        tracing::info!(target: TARGET, provider, code, status, event_id, destination, %trace_id, error, "webhook rejected");
    }
}

/// A request's share of the in-flight cap, counted in
/// [`metric::INGEST_REQUESTS_IN_FLIGHT`] while it is held.
#[derive(Debug)]
pub(super) struct InFlight {
    gauge: Gauge,
    _held: Held,
}

impl InFlight {
    pub(super) fn new(held: Held, recorded: &Recorded) -> Self {
        let gauge = recorded
            .in_flight
            .get_or_init(|| metrics::gauge!(metric::INGEST_REQUESTS_IN_FLIGHT))
            .clone();
        gauge.increment(1.0);
        Self { gauge, _held: held }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let labels = ProviderLabels::default();
        let label = |p: &str, configured: bool, open: bool| {
            labels.get(p, || configured, open).label.to_string()
        };
        assert_eq!(label("github", true, false), "github");
        assert_eq!(label("random", false, false), "other");
        for i in 0..1000 {
            let _ = label(&format!("p{i}"), false, true);
        }
        assert_eq!(label("p0", false, true), "p0");
        assert_eq!(label("p99", false, true), "p99");
        assert_eq!(label("p100", false, true), "other");
        // Configured names are never crowded out.
        assert_eq!(label("stripe", true, true), "stripe");
        assert_eq!(labels.named.load().len(), 2 + metric::MAX_PROVIDER_LABELS);
    }

    #[test]
    fn every_rejection_status_has_a_label() {
        for (status, _, _) in Rejection::CATALOGUE {
            assert_ne!(status_label(*status), "other", "{status}");
        }
        assert_eq!(status_label(StatusCode::ACCEPTED), "202");
    }
}
