//! What ingest tells about itself: the trace context an event carries, the metrics every
//! answer counts in (with bounded labels), and one log line per rejected request.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use firefly_webhook::event::TraceContext;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::metric;
use firefly_webhook::{IngestService, PublishError, Publisher, WebhookEvent, async_trait};
use http::{Request, StatusCode};
use http_body_util::Full;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::ServiceExt;

use crate::ingest::{post_req, queued, unique, url};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct Answer {
    status: StatusCode,
}

async fn send(svc: IngestService, req: Request<Full<Bytes>>) -> Answer {
    let response = svc.oneshot(req).await.unwrap();
    Answer {
        status: response.status(),
    }
}

fn post_with(provider: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::post(url(provider));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::from_static(b"{}"))).unwrap()
}

// ---------------------------------------------------------------------------------------------
// trace context

#[tokio::test]
async fn the_event_continues_the_request_trace() {
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher());
    let req = post_with(
        "github",
        &[("traceparent", PARENT), ("tracestate", "congo=t61rcWkgMzE")],
    );
    assert_eq!(send(svc, req).await.status, StatusCode::ACCEPTED);
    let trace = queued(&broker)
        .trace
        .expect("an ingested event has a trace");
    let parent = TraceContext::parse(PARENT, None).unwrap();
    assert_eq!(trace.trace_id(), parent.trace_id(), "same trace");
    assert_ne!(
        trace.parent_id(),
        parent.parent_id(),
        "the ingest span's own id"
    );
    assert!(trace.sampled());
    assert_eq!(trace.tracestate(), Some("congo=t61rcWkgMzE"));
    assert!(
        trace
            .traceparent()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    );
}

#[tokio::test]
async fn without_a_usable_traceparent_a_trace_starts() {
    let malformed = PARENT.to_uppercase();
    let mut traces = Vec::new();
    for headers in [
        vec![],
        vec![("traceparent", malformed.as_str()), ("tracestate", "a=1")],
    ] {
        let broker = MemoryBroker::new(16);
        let svc = IngestService::new(broker.publisher());
        let answer = send(svc, post_with("github", &headers)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        let trace = queued(&broker).trace.unwrap();
        assert_eq!(trace.tracestate(), None);
        assert!(trace.sampled());
        traces.push(trace.trace_id());
    }
    assert_ne!(traces[0], traces[1]);
    assert_ne!(
        traces[1],
        TraceContext::parse(PARENT, None).unwrap().trace_id()
    );
}

#[tokio::test]
async fn correlation_headers_keep_working() {
    for (headers, expected) in [
        (vec![("x-request-id", "req-1")], "req-1"),
        (vec![("x-correlation-id", "corr-1")], "corr-1"),
        (
            vec![("x-request-id", "req-2"), ("x-correlation-id", "corr-2")],
            "req-2",
        ),
    ] {
        let broker = MemoryBroker::new(16);
        let svc = IngestService::new(broker.publisher());
        let mut with_trace = headers.clone();
        with_trace.push(("traceparent", PARENT));
        let answer = send(svc, post_with("github", &with_trace)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(queued(&broker).correlation_id, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// metrics

/// Runs `f` on a current-thread runtime with a local debugging recorder.
fn recorded<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) -> Snapshotter {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || rt.block_on(f()));
    snapshotter
}

/// `(labels as name=value pairs, value)` of every series named `name`.
fn series(
    snapshot: &[(metrics_util::CompositeKey, DebugValue)],
    name: &str,
) -> Vec<(Vec<(String, String)>, DebugValue)> {
    let mut out: Vec<_> = snapshot
        .iter()
        .filter(|(key, _)| key.key().name() == name)
        .map(|(key, value)| {
            let labels: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            // DebugValue is not Clone.
            let value = match value {
                DebugValue::Counter(n) => DebugValue::Counter(*n),
                DebugValue::Gauge(g) => DebugValue::Gauge(*g),
                DebugValue::Histogram(v) => DebugValue::Histogram(v.clone()),
            };
            (labels, value)
        })
        .collect::<Vec<(Vec<(String, String)>, DebugValue)>>();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn counters(
    snapshot: &[(metrics_util::CompositeKey, DebugValue)],
    name: &str,
) -> Vec<(Vec<String>, u64)> {
    series(snapshot, name)
        .into_iter()
        .map(|(labels, value)| {
            let DebugValue::Counter(n) = value else {
                panic!("{name} is not a counter")
            };
            (labels.into_iter().map(|(_, v)| v).collect(), n)
        })
        .collect()
}

fn snapshot(snapshotter: &Snapshotter) -> Vec<(metrics_util::CompositeKey, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

struct Refusing;

#[async_trait]
impl Publisher for Refusing {
    async fn publish(&self, _destination: &str, _event: WebhookEvent) -> Result<(), PublishError> {
        Err(PublishError::unavailable("connection refused"))
    }
}

#[test]
fn every_answer_is_counted_with_its_labels() {
    let snapshotter = recorded(|| async {
        let broker = MemoryBroker::new(64);
        let svc = IngestService::new(broker.publisher())
            .providers(["github", "stripe"])
            .transport_name("memory")
            .max_body_bytes(64);
        for _ in 0..3 {
            let answer = send(svc.clone(), post_req(&url("github"), "{}")).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED);
        }
        let answer = send(svc.clone(), post_req(&url("stripe"), "0123456789")).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        for _ in 0..2 {
            let answer = send(svc.clone(), post_req(&url(&unique("x")), "{}")).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND);
        }
        let answer = send(svc.clone(), post_req(&url("github"), vec![b'x'; 65])).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        let get = Request::get(url("github")).body(Full::default()).unwrap();
        assert_eq!(
            send(svc.clone(), get).await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );

        let down = IngestService::new(Refusing)
            .providers(["github"])
            .transport_name("kafka");
        let answer = send(down, post_req(&url("github"), "{}")).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    });
    let snap = snapshot(&snapshotter);
    let row = |labels: &[&str], n| (labels.iter().map(|s| (*s).to_owned()).collect(), n);
    assert_eq!(
        counters(&snap, metric::INGEST_REQUESTS_TOTAL),
        vec![
            row(&["github", "202", "accepted"], 3),
            row(&["github", "413", "payload_too_large"], 1),
            row(&["github", "503", "broker_unavailable"], 1),
            row(&["other", "404", "unknown_provider"], 2),
            row(&["other", "405", "method_not_allowed"], 1),
            row(&["stripe", "202", "accepted"], 1),
        ]
    );
    assert_eq!(
        counters(&snap, metric::INGEST_RECEIPTS_TOTAL),
        vec![row(&["accepted"], 4), row(&["rejected"], 5)]
    );
    // Every rejection also counts in the rejected counter.
    let rejected: u64 = counters(&snap, metric::INGEST_REJECTED_TOTAL)
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(rejected, 5);

    let histograms = |name| {
        series(&snap, name)
            .into_iter()
            .map(|(labels, value)| {
                let DebugValue::Histogram(values) = value else {
                    panic!("{name} is not a histogram")
                };
                let labels: Vec<String> = labels.into_iter().map(|(_, v)| v).collect();
                (labels, values.into_iter().map(|v| v.0).collect::<Vec<_>>())
            })
            .collect::<Vec<_>>()
    };
    let bodies = histograms(metric::INGEST_BODY_BYTES);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0].0, ["github"]);
    assert_eq!(
        bodies[0].1,
        [2.0, 2.0, 2.0, 2.0],
        "three accepted, one refused"
    );
    assert_eq!(bodies[1], (vec!["stripe".to_owned()], vec![10.0]));
    let publishes = histograms(metric::INGEST_PUBLISH_SECONDS);
    assert_eq!(publishes.len(), 2, "{publishes:?}");
    assert_eq!(publishes[0].0, ["kafka", "unavailable"]);
    assert_eq!(publishes[0].1.len(), 1);
    assert_eq!(publishes[1].0, ["memory", "ok"]);
    assert_eq!(publishes[1].1.len(), 4);
    assert!(publishes[1].1.iter().all(|s| (0.0..1.0).contains(s)));

    let in_flight = series(&snap, metric::INGEST_REQUESTS_IN_FLIGHT);
    assert_eq!(in_flight.len(), 1);
    assert!(
        matches!(in_flight[0].1, DebugValue::Gauge(g) if g.0 == 0.0),
        "every request ended: {:?}",
        in_flight[0].1
    );
}

#[test]
fn unknown_provider_names_make_a_bounded_number_of_series() {
    let snapshotter = recorded(|| async {
        // No allowlist: every name is accepted, the first ones labelled by name.
        let broker = MemoryBroker::new(2000);
        let open = IngestService::new(broker.publisher());
        // An allowlist: unlisted names are refused and all labelled `other`.
        let listed = IngestService::new(broker.publisher()).providers(["github"]);
        for i in 0..1000 {
            let provider = format!("p{i}-{}", unique("n"));
            let answer = send(open.clone(), post_req(&url(&provider), "{}")).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED);
            let answer = send(listed.clone(), post_req(&url(&provider), "{}")).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND);
        }
    });
    let snap = snapshot(&snapshotter);
    let requests = counters(&snap, metric::INGEST_REQUESTS_TOTAL);
    let accepted: Vec<_> = requests
        .iter()
        .filter(|(labels, _)| labels[2] == "accepted")
        .collect();
    assert_eq!(accepted.len(), metric::MAX_PROVIDER_LABELS + 1);
    let other = accepted
        .iter()
        .find(|(labels, _)| labels[0] == metric::OTHER_PROVIDER)
        .unwrap();
    assert_eq!(other.1, 1000 - metric::MAX_PROVIDER_LABELS as u64);
    let refused: Vec<_> = requests
        .iter()
        .filter(|(labels, _)| labels[2] == "unknown_provider")
        .collect();
    assert_eq!(
        refused,
        [&(
            vec![
                "other".to_owned(),
                "404".to_owned(),
                "unknown_provider".to_owned()
            ],
            1000
        )]
    );
    assert!(series(&snap, metric::INGEST_BODY_BYTES).len() <= metric::MAX_PROVIDER_LABELS + 1);
}

// ---------------------------------------------------------------------------------------------
// logs

/// Log output captured by a thread-local subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = self.0.lock().unwrap().clone();
        String::from_utf8(text)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The binary's global subscriber: it records nothing, but tells tracing to ask the current
/// subscriber about every callsite each time (`Interest::sometimes`).
///
/// tracing caches whether a callsite is enabled, over the subscribers alive when the callsite
/// is first hit. A test on another thread that hits a callsite (the ingest span, say) while a
/// capture below installs its scoped subscriber could leave it cached as disabled, and the
/// capture would miss its lines. With this global subscriber no callsite is ever cached as
/// disabled, so each capture's own filter decides.
fn ask_every_time() {
    use tracing::subscriber::Interest;
    use tracing::{Event, Metadata, span};

    struct AskEveryTime;
    impl tracing::Subscriber for AskEveryTime {
        fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
            Interest::sometimes()
        }
        fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
            Some(tracing::level_filters::LevelFilter::TRACE)
        }
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            false
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    static ONCE: std::sync::Once = std::sync::Once::new();
    // Nothing else in this binary installs a global subscriber.
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(AskEveryTime);
    });
}

/// Runs `f` with text logs at `level` captured.
fn logged<F: std::future::Future<Output = ()>>(level: &str, f: impl FnOnce() -> F) -> Vec<String> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    ask_every_time();
    tracing::subscriber::with_default(subscriber, || rt.block_on(f()));
    captured.lines()
}

#[test]
fn each_rejection_is_logged_once_without_secrets() {
    const SECRET: &str = "hunter2-secret-token";
    let lines = logged("info", || async {
        let broker = MemoryBroker::new(16);
        let svc = IngestService::new(broker.publisher())
            .providers(["github", "gitlab"])
            .verifiers(firefly_webhook::Verifiers::new().provider(
                "gitlab",
                firefly_webhook::verify::GitLab::new("right-token"),
            ))
            .max_body_bytes(8);
        let wrong_token = Request::post(url("gitlab"))
            .header("x-gitlab-token", SECRET)
            .header("traceparent", PARENT)
            .body(Full::new(Bytes::from_static(b"pii")))
            .unwrap();
        let answer = send(svc.clone(), wrong_token).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        let answer = send(svc.clone(), post_req(&url("nope"), "{}")).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        let answer = send(svc.clone(), post_req("/elsewhere", "{}")).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        let answer = send(svc.clone(), post_req(&url("github"), "0123456789")).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        let answer = send(IngestService::new(Refusing), post_req(&url("github"), "{}")).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        let answer = send(svc, post_req(&url("github"), "{}")).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
    });
    assert_eq!(
        lines.len(),
        5,
        "one line per rejection, none else: {lines:#?}"
    );
    for (line, code) in lines.iter().zip([
        "invalid_signature",
        "unknown_provider",
        "not_found",
        "payload_too_large",
        "broker_unavailable",
    ]) {
        assert!(line.contains("webhook rejected"), "{line}");
        assert!(line.contains(&format!("code=\"{code}\"")), "{line}");
        assert!(!line.contains(SECRET) && !line.contains("pii"), "{line}");
    }
    // The span gives each line the trace; a refused event is named by its id.
    assert!(
        lines[0].contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("event_id="), "{}", lines[0]);
    assert!(lines[0].contains(" INFO "), "{}", lines[0]);
    assert!(lines[1].contains("provider=\"nope\""), "{}", lines[1]);
    assert!(lines[4].contains(" WARN "), "{}", lines[4]);
    assert!(lines[4].contains("connection refused"), "{}", lines[4]);
}

#[test]
fn the_span_names_the_ids_the_event_carries() {
    let broker = MemoryBroker::new(16);
    let publisher = broker.publisher();
    let lines = logged("firefly_webhook::ingest=debug", || async move {
        let svc = IngestService::new(publisher);
        let req = post_with("github", &[("traceparent", PARENT)]);
        let answer = svc.oneshot(req).await.unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    });
    let event = queued(&broker);
    let trace = event.trace.unwrap();
    let accepted = lines
        .iter()
        .find(|l| l.contains("webhook accepted"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    for field in [
        format!("trace_id={}", trace.trace_id()),
        format!("span_id={}", trace.parent_id()),
        format!("traceparent={PARENT}"),
        format!("event_id={}", event.id),
        "provider=\"github\"".to_owned(),
        "destination=\"github\"".to_owned(),
    ] {
        assert!(accepted.contains(&field), "{field} in {accepted}");
    }
}

#[tokio::test]
async fn a_span_hook_chooses_the_context_the_event_carries() {
    const CHOSEN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let broker = MemoryBroker::new(16);
    let svc = IngestService::new(broker.publisher()).on_span(move |_span, parent| {
        record
            .lock()
            .unwrap()
            .push(parent.map(TraceContext::traceparent));
        TraceContext::parse(CHOSEN, parent.and_then(TraceContext::tracestate))
    });
    let req = post_with("github", &[("traceparent", PARENT), ("tracestate", "a=1")]);
    assert_eq!(send(svc, req).await.status, StatusCode::ACCEPTED);
    let trace = queued(&broker).trace.unwrap();
    assert_eq!(trace.traceparent(), CHOSEN);
    assert_eq!(trace.tracestate(), Some("a=1"));
    assert_eq!(*seen.lock().unwrap(), [Some(PARENT.to_owned())]);
}
