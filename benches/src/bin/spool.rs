//! The spool's group commit and the disk transport, in process:
//!
//! 1. the disk's own rate: one 4 KiB write + `fdatasync` at a time;
//! 2. the spooled path: a `Spool` whose broker always fails at once, `concurrency` tasks
//!    publishing: events/s and append latency (p50, p99, max);
//! 3. the disk transport end to end: `concurrency` tasks publishing into a `DiskBroker` while
//!    one subscriber receives and acks: events/s from the first publish to the last ack.
//!
//! `cargo run --release -p firefly-bench --features spool --bin spool [events] [concurrency]
//! [body bytes] [directory]` (defaults 100,000, 64, 1,024 and the temp dir). Files go to a new
//! directory in `directory`, removed at the end; `/dev/shm` (no real sync) shows the CPU
//! ceiling. `scripts/bench-spool` runs it, then the same paths through the gateway under wrk.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firefly_webhook::spool::{DiskBroker, DiskConfig, Spool, SpoolConfig};
use firefly_webhook::{PublishError, Publisher, Subscriber, WebhookEvent, async_trait, http};

/// A broker that is down: every publish fails at once.
struct Down;

#[async_trait]
impl Publisher for Down {
    async fn publish(&self, _destination: &str, _event: WebhookEvent) -> Result<(), PublishError> {
        Err(PublishError::unavailable("down"))
    }
}

fn event(body: &[u8]) -> WebhookEvent {
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("user-agent", "GitHub-Hookshot/abc1234"),
        ("x-github-event", "pull_request"),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (
            "x-hub-signature-256",
            "sha256=0123456789abcdef0123456789abcdef",
        ),
        ("x-github-hook-id", "292430182"),
    ] {
        headers.append(name, http::HeaderValue::from_static(value));
    }
    WebhookEvent::new("github", body.to_vec()).with_headers(headers)
}

fn fresh_dir(name: &str) -> PathBuf {
    let base = std::env::args_os()
        .nth(4)
        .map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(format!("firefly-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// One 4 KiB write and `fdatasync` at a time, for a second or 1,000 writes.
fn disk_rate(dir: &Path) -> f64 {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join("fsync");
    let Ok(mut file) = std::fs::File::create(&path) else {
        return 0.0;
    };
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut n = 0_u32;
    while n < 1000 && started.elapsed() < Duration::from_secs(1) {
        if file
            .write_all(&block)
            .and_then(|()| file.sync_data())
            .is_err()
        {
            return 0.0;
        }
        n += 1;
    }
    let _ = std::fs::remove_file(&path);
    f64::from(n) / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// `concurrency` tasks publishing `events` in all through `publisher`; the latencies.
async fn publish_all<P: Publisher>(
    publisher: Arc<P>,
    events: usize,
    concurrency: usize,
    body: Arc<Vec<u8>>,
) -> Vec<Duration> {
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let (publisher, body) = (Arc::clone(&publisher), Arc::clone(&body));
            let mine = events / concurrency + usize::from(task < events % concurrency);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(mine);
                for _ in 0..mine {
                    let event = event(&body);
                    let started = Instant::now();
                    if let Err(error) = publisher.publish("github", event).await {
                        eprintln!("publish failed: {error}");
                        std::process::exit(1);
                    }
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(events);
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    all.sort_unstable();
    all
}

#[allow(clippy::cast_precision_loss)]
fn report(name: &str, events: usize, elapsed: Duration, latencies: &[Duration]) {
    println!(
        "{name:22} {:8.0} events/s   append p50 {:6.2} ms  p99 {:6.2} ms  max {:7.2} ms",
        events as f64 / elapsed.as_secs_f64(),
        percentile(latencies, 0.50).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn spooled(events: usize, concurrency: usize, body: Arc<Vec<u8>>) {
    let dir = fresh_dir("spool");
    let mut config = SpoolConfig::new(&dir);
    config.max_bytes = 16 << 30;
    config.max_backoff = Duration::from_secs(60);
    let spool = match Spool::open(Down, config).await {
        Ok(spool) => Arc::new(spool),
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let latencies = publish_all(Arc::clone(&spool), events, concurrency, body).await;
    let elapsed = started.elapsed();
    report("spooled (broker down)", events, elapsed, &latencies);
    drop(spool);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn disk(events: usize, concurrency: usize, body: Arc<Vec<u8>>) {
    let dir = fresh_dir("disk");
    let mut config = DiskConfig::new(&dir);
    config.max_bytes = 16 << 30;
    let broker = match DiskBroker::connect(config).await {
        Ok(broker) => broker,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(1);
        }
    };
    let mut subscriber = broker.subscriber_all();
    let started = Instant::now();
    let consumer = tokio::spawn(async move {
        for _ in 0..events {
            match subscriber.next().await {
                Some(Ok(delivery)) => {
                    let _ = delivery.ack().await;
                }
                _ => return None,
            }
        }
        Some(started.elapsed())
    });
    let latencies = publish_all(Arc::new(broker.publisher()), events, concurrency, body).await;
    let Ok(Some(elapsed)) = consumer.await else {
        eprintln!("the subscriber ended early");
        std::process::exit(1);
    };
    report("disk publish+ack", events, elapsed, &latencies);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (events, concurrency, size) = (arg(1, 100_000), arg(2, 64).max(1), arg(3, 1024));
    let body = Arc::new(vec![b'x'; size]);
    let probe = fresh_dir("fsync");
    println!(
        "disk: {:.0} single 4 KiB write+fdatasync per second",
        disk_rate(&probe)
    );
    let _ = std::fs::remove_dir_all(&probe);
    println!("{events} events of {size} bytes, {concurrency} concurrent publishers");
    spooled(events, concurrency, Arc::clone(&body)).await;
    disk(events, concurrency, body).await;
}
