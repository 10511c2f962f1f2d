//! The worker's span continues the trace an event carries: one trace from the request to
//! the processing. Alone in its binary: `tracing`'s per-callsite interest is process-wide, and
//! other tests' scoped subscribers with other filters would race with this one's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use firefly_webhook::IngestService;
use firefly_webhook::event::TraceContext;
use firefly_webhook::memory::MemoryBroker;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::ServiceExt;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn post_with(provider: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("/api/v1/webhook/{provider}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::from_static(b"{}"))).unwrap()
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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
    tracing::subscriber::with_default(subscriber, || rt.block_on(f()));
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn the_worker_span_continues_the_trace_the_event_carries() {
    let broker = MemoryBroker::new(16);
    let publisher = broker.publisher();
    let subscriber = broker.subscriber_all();
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&hooked);
    let lines = logged("info,firefly_webhook=debug", || async move {
        let svc = IngestService::new(publisher);
        let answer = svc
            .oneshot(post_with("github", &[("traceparent", PARENT)]))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);

        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(Mutex::new(Some(done)));
        let worker = firefly_webhook::Worker::builder(subscriber)
            .on_span(move |_span, parent| {
                record
                    .lock()
                    .unwrap()
                    .push(parent.map(TraceContext::traceparent));
                None
            })
            .build(firefly_webhook::process::processor_fn(
                move |_event, _ctx| {
                    tracing::info!("inside the processor");
                    if let Some(done) = done.lock().unwrap().take() {
                        let _ = done.send(());
                    }
                    async { Ok(firefly_webhook::process::Outcome::Processed) }
                },
            ));
        worker
            .run_until(async {
                let _ = finished.await;
            })
            .await;
    });
    let inside = lines
        .iter()
        .find(|l| l.contains("inside the processor"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    // The processor runs in the delivery's span, in the trace the request started.
    assert!(inside.contains("process{"), "{inside}");
    assert!(
        inside.contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
        "{inside}"
    );
    assert!(inside.contains("provider=\"github\""), "{inside}");
    assert!(inside.contains("attempt=1"), "{inside}");
    // Its parent is the ingest span (the context the event carried), not the request's caller.
    let carried = hooked.lock().unwrap().clone();
    assert_eq!(carried.len(), 1, "{carried:?}");
    let carried = carried[0].clone().expect("the event carries a trace");
    assert!(carried.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_ne!(carried, PARENT);
    assert!(
        inside.contains(&format!("traceparent={carried}")),
        "{inside}"
    );
    let span_id = &carried[36..52];
    assert!(
        !inside.contains(&format!("span_id={span_id}")),
        "a span of its own: {inside}"
    );
}
