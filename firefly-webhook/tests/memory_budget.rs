//! The body byte budget bounds memory: hundreds of concurrent 1 MiB bodies never raise the
//! process's resident set above the budget plus a fixed margin.
//!
//! A binary of its own, since the resident set is the whole process's: nothing else may run
//! beside it. Linux only (it reads `/proc/self`).
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use firefly_webhook::{IngestService, PublishError, Publisher, WebhookEvent, async_trait};
use http::{Request, StatusCode, header};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const BODY: usize = MIB;
const REQUESTS: usize = 256;
const BUDGET: usize = 16 * MIB;
/// Room for what the budget does not count: the chunk each body is copying, allocator slack,
/// the runtime's task stacks and buffers.
const MARGIN: usize = 8 * MIB;

static DATA: [u8; CHUNK] = [b'x'; CHUNK];

fn page_size() -> usize {
    const AT_PAGESZ: u64 = 6;
    let auxv = std::fs::read("/proc/self/auxv").unwrap();
    auxv.chunks_exact(16)
        .find_map(|pair| {
            let key = u64::from_ne_bytes(pair[..8].try_into().unwrap());
            let value = u64::from_ne_bytes(pair[8..].try_into().unwrap());
            (key == AT_PAGESZ).then(|| usize::try_from(value).unwrap())
        })
        .unwrap()
}

/// The resident set in bytes, from `/proc/self/statm` (its second field, in pages).
fn rss(page_size: usize) -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * page_size
}

struct Peak {
    page_size: usize,
    max: AtomicUsize,
}

impl Peak {
    fn sample(&self) {
        self.max.fetch_max(rss(self.page_size), Ordering::Relaxed);
    }
}

/// Holds every publish until released, then drops the event: accepted bodies stay in memory
/// for as long as the test wants, and nothing else keeps them.
struct Gate {
    open: Semaphore,
    arrived: watch::Sender<usize>,
}

#[async_trait]
impl Publisher for Gate {
    async fn publish(&self, _destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        self.arrived.send_modify(|n| *n += 1);
        self.open.acquire().await.unwrap().forget();
        drop(event);
        Ok(())
    }
}

/// A 1 MiB body in 64 KiB chunks of static data (the sender holds no memory), yielding between
/// chunks so that all requests are read at once, sampling the resident set at each chunk.
fn body(
    peak: Arc<Peak>,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send> {
    StreamBody::new(futures_util::stream::unfold(0, move |sent| {
        let peak = Arc::clone(&peak);
        async move {
            if sent == BODY {
                return None;
            }
            tokio::task::yield_now().await;
            peak.sample();
            let chunk = Bytes::from_static(&DATA);
            Some((Ok(Frame::data(chunk)), sent + CHUNK))
        }
    }))
}

struct Round {
    accepted: usize,
    peak: usize,
}

/// Sends `REQUESTS` bodies at once, every `declared_every`-th with a `Content-Length`, and
/// measures the resident set while they are read and held.
async fn round(svc: &IngestService, gate: &Gate, peak: &Arc<Peak>, declared_every: usize) -> Round {
    let before = *gate.arrived.borrow();
    peak.max.store(0, Ordering::Relaxed);
    let shed = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let mut req = Request::post(format!("/api/v1/webhook/p{}", i % 8));
            if i % declared_every == 0 {
                req = req.header(header::CONTENT_LENGTH, BODY);
            }
            let req = req.body(body(Arc::clone(peak))).unwrap();
            let (svc, shed) = (svc.clone(), Arc::clone(&shed));
            tokio::spawn(async move {
                let status = svc.oneshot(req).await.unwrap().status();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    shed.fetch_add(1, Ordering::Relaxed);
                }
                status
            })
        })
        .collect();

    // Every request is either shed or holds its whole body at the gate: the most memory this
    // load can take at once.
    let held = loop {
        let held = *gate.arrived.borrow() - before;
        if held + shed.load(Ordering::Relaxed) == REQUESTS {
            break held;
        }
        tokio::task::yield_now().await;
    };
    peak.sample();
    let peak_rss = peak.max.load(Ordering::Relaxed);

    gate.open.add_permits(held);
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(held, accepted);
    assert!(accepted <= BUDGET / BODY, "the budget was kept");
    Round {
        accepted,
        peak: peak_rss,
    }
}

#[test]
fn concurrent_large_bodies_stay_within_the_budget() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let gate = Arc::new(Gate {
            open: Semaphore::new(0),
            arrived: watch::Sender::new(0),
        });
        let svc = IngestService::new(Arc::clone(&gate))
            .max_body_bytes(2 * MIB)
            .max_in_flight(REQUESTS)
            .body_budget(BUDGET);
        let peak = Arc::new(Peak {
            page_size: page_size(),
            max: AtomicUsize::new(0),
        });

        // Warm up the paths a request takes, then measure the baseline.
        gate.open.add_permits(1);
        let req = Request::post("/api/v1/webhook/warm")
            .body(body(Arc::clone(&peak)))
            .unwrap();
        assert_eq!(
            svc.clone().oneshot(req).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
        let baseline = rss(peak.page_size);

        // Chunked bodies only (reserved as they stream), then half of them declared
        // (reserved up front).
        for (name, declared_every) in [("chunked", usize::MAX), ("half declared", 2)] {
            let Round { accepted, peak } = round(&svc, &gate, &peak, declared_every).await;
            let grew = peak.saturating_sub(baseline);
            eprintln!(
                "{name}: {REQUESTS} concurrent {} KiB bodies, budget {} MiB: {accepted} accepted, \
                 {} shed; resident set {} KiB before, peak {} KiB (+{} KiB)",
                BODY / 1024,
                BUDGET / MIB,
                REQUESTS - accepted,
                baseline / 1024,
                peak / 1024,
                grew / 1024,
            );
            assert!(
                grew <= BUDGET + MARGIN,
                "{name}: the resident set grew by {} KiB, more than the budget ({} KiB) + \
                 margin ({} KiB)",
                grew / 1024,
                BUDGET / 1024,
                MARGIN / 1024
            );
            if declared_every == 2 {
                assert!(accepted >= BUDGET / BODY / 2, "the budget was used");
            }
        }
    });
}
