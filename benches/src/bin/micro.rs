//! In-process micro-benchmark: CPU time per request through the ingest path (axum `Router` with
//! `IngestLayer` on a drained `MemoryBroker`) versus the bare handler, without sockets, so it is
//! steadier than the load test on a busy machine. `cargo run --release -p firefly-bench --bin
//! micro [requests]`.

use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use firefly_webhook::ingest::PeerAddr;
use firefly_webhook::memory::MemoryBroker;
use firefly_webhook::{IngestLayer, Subscriber};
use tower::ServiceExt;

async fn accept(body: Bytes) -> impl IntoResponse {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"status":"accepted","payloadSize":{}}}"#, body.len()),
    )
}

fn request(body: &Bytes) -> Request<Body> {
    let mut req = Request::post("/api/v1/webhook/github")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .header("x-github-event", "pull_request")
        .body(Body::from(body.clone()))
        .unwrap_or_default();
    req.extensions_mut()
        .insert(PeerAddr(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40000,
        ))));
    req
}

/// Process CPU time (user + system) in microseconds.
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (1-based); 100 ticks per second on Linux.
    (ticks(11) + ticks(12)) * 10_000
}

#[allow(clippy::cast_precision_loss)] // nanoseconds per request fit easily
async fn measure(name: &str, app: Router, n: u32, body: &Bytes) {
    for _ in 0..n / 10 {
        let _ = app.clone().oneshot(request(body)).await;
    }
    let (wall, cpu) = (Instant::now(), cpu_us());
    for _ in 0..n {
        let res = app.clone().oneshot(request(body)).await;
        if !matches!(res, Ok(ref r) if r.status() == StatusCode::ACCEPTED) {
            eprintln!("{name}: unexpected answer");
            std::process::exit(1);
        }
        // Lets the consumer drain, as it would between requests on a server.
        tokio::task::yield_now().await;
    }
    let cpu = cpu_us() - cpu;
    let wall = wall.elapsed();
    println!(
        "{name:8} {:8.0} ns/req wall  {:8.0} ns/req cpu",
        wall.as_nanos() as f64 / f64::from(n),
        cpu as f64 * 1000.0 / f64::from(n)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let body = Bytes::from(format!(r#"{{"padding":"{}"}}"#, "x".repeat(1480)));

    let bare = Router::new().route("/api/v1/webhook/{provider}", post(accept));
    let broker = MemoryBroker::new(1_000_000);
    let mut subscriber = broker.subscriber_all();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = subscriber.next().await {
            let _ = delivery.ack().await;
        }
    });
    let ingest = Router::new().layer(IngestLayer::new(broker.publisher()));

    for _ in 0..2 {
        measure("bare", bare.clone(), n, &body).await;
        measure("ingest", ingest.clone(), n, &body).await;
    }
}
