//! End-to-end tests of the `firefly` binary. Tests marked `#[ignore]` need the Kafka-protocol
//! broker on 127.0.0.1:9092 and RabbitMQ on 127.0.0.1:5672 (`scripts/test` runs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dlq_amqp;
mod dlq_disk;
mod dlq_kafka;
mod send;
mod verify;

use std::collections::HashMap;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firefly_webhook::{EventId, Outcome, ProcessError, Subscriber, Worker, processor_fn};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Runs `firefly` with `args`, without the caller's `FIREFLY_*` variables.
pub(crate) async fn firefly<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_firefly"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FIREFLY_") {
            command.env_remove(key);
        }
    }
    let run = command
        .args(args)
        .stdin(std::process::Stdio::null())
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("firefly did not finish")
        .expect("firefly did not start")
}

/// Runs `firefly` with `args` and sends it SIGINT (Ctrl-C) after `delay`.
pub(crate) async fn interrupt_after(args: Vec<String>, delay: Duration) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_firefly"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(delay).await;
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("firefly did not stop")
        .unwrap()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The exit code, with the output in the message when it is not `expected`.
pub(crate) fn assert_exit(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub(crate) fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(output)))
}

/// Answers one request with `202 {}` and returns it as received, byte for byte.
pub(crate) async fn capture_one() -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            raw.extend_from_slice(&buf[..n]);
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if raw.len() >= end + 4 + length || n == 0 {
                    break;
                }
            }
            assert!(n > 0, "connection closed early");
        }
        let answer = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
        stream.write_all(answer).await.unwrap();
        raw
    });
    (port, task)
}

/// What the worker processed, per event.
pub(crate) type Counts = Arc<Mutex<HashMap<EventId, u32>>>;

/// Runs a worker on `subscriber` whose processor fails permanently until `fixed`, then counts
/// each event it processes; stops when `stop` is set.
pub(crate) fn worker<S: Subscriber>(
    subscriber: S,
    fixed: &Arc<AtomicBool>,
    counts: &Counts,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let (fixed, counts) = (Arc::clone(fixed), Arc::clone(counts));
    let worker = Worker::builder(subscriber)
        .concurrency(8)
        .build(processor_fn(move |event, _| {
            let (fixed, counts, id) = (Arc::clone(&fixed), Arc::clone(&counts), event.id);
            async move {
                if !fixed.load(Ordering::Acquire) {
                    return Err(ProcessError::permanent("boom"));
                }
                *counts.lock().unwrap().entry(id).or_default() += 1;
                Ok(Outcome::Processed)
            }
        }));
    let mut stop = stop;
    tokio::spawn(worker.run_until(async move {
        let _ = stop.wait_for(|s| *s).await;
    }))
}

/// Waits (bounded) until the worker processed `n` distinct events.
pub(crate) async fn wait_for_processed(counts: &Counts, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counts.lock().unwrap().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} processed",
            counts.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After a pause for late duplicates: every event was processed exactly once.
pub(crate) async fn assert_processed_once(counts: &Counts, sent: &[EventId]) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.len(), sent.len());
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert!(sent.iter().all(|id| counts.contains_key(id)));
}

/// The list/show/replay/purge scenario both transports share, on `args` (the transport
/// flags). `count` reads the dead-letter queue through the library.
pub(crate) async fn dlq_scenario<F, Fut>(
    args: &[String],
    sent: &[EventId],
    fixed: &Arc<AtomicBool>,
    counts: &Counts,
    count: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let with = |extra: &[&str]| {
        let mut all: Vec<String> = extra.iter().map(ToString::to_string).collect();
        all.splice(2..2, args.iter().cloned());
        all
    };
    let n = sent.len();

    // list: the count, the right categories.
    let out = firefly(with(&["--json", "dlq", "list", "--limit", "3"])).await;
    assert_exit(&out, 0);
    let listed = json(&out);
    assert_eq!(listed["count"], n);
    let rows = listed["deadLetters"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["category"], "unrecoverable");
        assert_eq!(row["lastError"], "boom");
        assert_eq!(row["attempts"], 1);
        assert_eq!(row["provider"], "github");
    }
    let out = firefly(with(&["dlq", "list"])).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains(&format!("{n} dead letters")), "{text}");
    assert!(
        text.contains("EVENT ID") && text.contains("DEAD-LETTERED AT"),
        "{text}"
    );
    let out = firefly(with(&["--json", "dlq", "list", "--category", "timeout"])).await;
    assert_eq!(json(&out)["count"], 0);
    let out = firefly(with(&[
        "--json",
        "dlq",
        "list",
        "--since",
        "2000-01-01T00:00:00Z",
    ]))
    .await;
    assert_eq!(json(&out)["count"], n);

    // show: metadata and the pretty body.
    let id = rows[0]["eventId"].as_str().unwrap().to_owned();
    let out = firefly(with(&["dlq", "show", &id])).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(&id) && text.contains("boom") && text.contains("\"n\":"),
        "{text}"
    );
    let out = firefly(with(&["dlq", "show", &EventId::new().to_string()])).await;
    assert_exit(&out, 4);

    // A dry run, and a purge that will not go ahead without --yes.
    let out = firefly(with(&["--json", "dlq", "replay", "--dry-run"])).await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["replayed"], n);
    let out = firefly(with(&["dlq", "purge"])).await;
    assert_exit(&out, 2);
    assert_eq!(count().await, n, "dry runs and refusals change nothing");

    // The processor is fixed: a replay stopped by its limit, then the rest.
    fixed.store(true, Ordering::Release);
    let out = firefly(with(&["--json", "dlq", "replay", "--limit", "4"])).await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["replayed"], 4);
    wait_for_processed(counts, 4).await;
    assert_eq!(count().await, n - 4);
    // Ctrl-C in the middle of a slow replay: it stops after the current event.
    let out = interrupt_after(
        with(&["dlq", "replay", "--rate", "2"]),
        Duration::from_millis(1500),
    )
    .await;
    assert_exit(&out, 130);
    assert!(stdout(&out).contains("interrupted"), "{}", stdout(&out));
    let left = count().await;
    assert!(
        left < n - 4,
        "the interrupted replay replayed some: {left} left"
    );
    let out = firefly(with(&["dlq", "replay", "--rate", "200"])).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains(&format!("total: {left} replayed, 0 skipped, 0 failed")),
        "{}",
        stdout(&out)
    );
    wait_for_processed(counts, n).await;
    assert_processed_once(counts, sent).await;
    assert_eq!(count().await, 0);
    let out = firefly(with(&["--json", "dlq", "list"])).await;
    assert_eq!(json(&out)["count"], 0);
}
