//! `firefly dlq` on the disk transport. No broker to start: the test's worker and the command
//! line take turns on one data directory, since only one process at a time may open it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use firefly_webhook::spool::{DiskBroker, DiskConfig};
use firefly_webhook::{EventId, Publisher, WebhookEvent};
use tokio::sync::watch;

use crate::{
    Counts, assert_exit, assert_processed_once, firefly, interrupt_after, json, stdout,
    wait_for_processed, worker,
};

const DESTINATION: &str = "work";

/// A data directory of its own under the temp dir, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "firefly-cli-disk-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = extra.iter().map(ToString::to_string).collect();
        all.extend(
            [
                "--transport",
                "disk",
                "--data-dir",
                self.0.to_str().unwrap(),
            ]
            .map(String::from),
        );
        all
    }

    async fn open(&self) -> DiskBroker {
        DiskBroker::connect(DiskConfig::new(self.path()))
            .await
            .unwrap()
    }

    /// The dead letters of [`DESTINATION`], read with the library (the directory must be free).
    async fn count(&self) -> usize {
        self.open()
            .await
            .dead_letters(DESTINATION)
            .await
            .unwrap()
            .len()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Publishes one event per provider through a worker whose processor fails permanently, waits
/// until all are dead-lettered, and gives the directory back. Returns their ids.
async fn dead_letter(dir: &DataDir, providers: &[&str]) -> Vec<EventId> {
    let broker = dir.open().await;
    let before = broker.dead_letters(DESTINATION).await.unwrap().len();
    let (stop_tx, stop_rx) = watch::channel(false);
    let failing = Arc::new(AtomicBool::new(false));
    let running = worker(
        broker.subscriber([DESTINATION]).unwrap(),
        &failing,
        &Counts::default(),
        stop_rx,
    );
    let mut sent = Vec::new();
    for (i, provider) in providers.iter().enumerate() {
        let event = WebhookEvent::new(
            *provider,
            format!("{{\"n\":{i},\"id\":\"{}\"}}", uuid::Uuid::new_v4()),
        );
        sent.push(event.id);
        broker
            .publisher()
            .publish(DESTINATION, event)
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while broker.dead_letters(DESTINATION).await.unwrap().len() < before + sent.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dead-lettered in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    running.await.unwrap();
    sent
}

/// Runs the fixed processor over what the directory holds until `n` distinct events were
/// processed, then gives the directory back.
async fn process(dir: &DataDir, counts: &Counts, n: usize) {
    let broker = dir.open().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let fixed = Arc::new(AtomicBool::new(true));
    let running = worker(
        broker.subscriber([DESTINATION]).unwrap(),
        &fixed,
        counts,
        stop_rx,
    );
    wait_for_processed(counts, n).await;
    let _ = stop_tx.send(true);
    running.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while broker.pending(DESTINATION) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "events left over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn list_show_replay_interrupt_and_purge_on_disk() {
    let dir = DataDir::new();
    let sent = dead_letter(&dir, &["github"; 50]).await;
    let n = sent.len();

    // A directory a running process holds is refused, and nothing is touched.
    let held = dir.open().await;
    let out = firefly(dir.args(&["dlq", "list"])).await;
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert_eq!(held.dead_letters(DESTINATION).await.unwrap().len(), n);
    drop(held);
    // A directory that does not exist is not created.
    let missing = dir.path().join("missing");
    let out = firefly([
        "dlq",
        "list",
        "--transport",
        "disk",
        "--data-dir",
        missing.to_str().unwrap(),
    ])
    .await;
    assert_exit(&out, 2);
    assert!(!missing.exists());

    // list: every destination with dead letters, the count, the right category.
    let out = firefly(dir.args(&["--json", "dlq", "list", "--limit", "3"])).await;
    assert_exit(&out, 0);
    let listed = json(&out);
    assert_eq!(listed["count"], n);
    assert_eq!(listed["destinations"][0]["destination"], DESTINATION);
    let rows = listed["deadLetters"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row["category"], "unrecoverable");
        assert_eq!(row["lastError"], "boom");
        assert_eq!(row["attempts"], 1);
        assert_eq!(row["provider"], "github");
    }
    let out = firefly(dir.args(&["dlq", "list"])).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains(&format!("{n} dead letters")), "{text}");
    assert!(
        text.contains("EVENT ID") && text.contains("DEAD-LETTERED AT"),
        "{text}"
    );
    let out = firefly(dir.args(&["--json", "dlq", "list", "--category", "timeout"])).await;
    assert_eq!(json(&out)["count"], 0);

    // show: metadata and the body.
    let id = rows[0]["eventId"].as_str().unwrap().to_owned();
    let out = firefly(dir.args(&["dlq", "show", &id])).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(&id) && text.contains("boom") && text.contains("\"n\":"),
        "{text}"
    );
    let out = firefly(dir.args(&["dlq", "show", &EventId::new().to_string()])).await;
    assert_exit(&out, 4);

    // A dry run, and a purge that will not go ahead without --yes.
    let out = firefly(dir.args(&["--json", "dlq", "replay", "--dry-run"])).await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["replayed"], n);
    let out = firefly(dir.args(&["dlq", "purge"])).await;
    assert_exit(&out, 2);
    assert_eq!(dir.count().await, n, "dry runs and refusals change nothing");

    // A replay stopped by its limit, one stopped by Ctrl-C, then the rest.
    let out = firefly(dir.args(&["--json", "dlq", "replay", "--limit", "20"])).await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["replayed"], 20);
    assert_eq!(dir.count().await, n - 20);
    let out = interrupt_after(
        dir.args(&["dlq", "replay", "--rate", "5"]),
        Duration::from_millis(1500),
    )
    .await;
    assert_exit(&out, 130);
    assert!(stdout(&out).contains("interrupted"), "{}", stdout(&out));
    let left = dir.count().await;
    assert!(left < n - 20 && left > 0, "{left} left");
    let out = firefly(dir.args(&["dlq", "replay"])).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains(&format!("total: {left} replayed, 0 skipped, 0 failed")),
        "{}",
        stdout(&out)
    );
    assert_eq!(dir.count().await, 0);

    // The fixed worker takes every replayed event, each once.
    let counts = Counts::default();
    process(&dir, &counts, n).await;
    assert_processed_once(&counts, &sent).await;
    let out = firefly(dir.args(&["--json", "dlq", "list"])).await;
    assert_eq!(json(&out)["count"], 0);

    // Purge, selected by provider: only what matches goes.
    dead_letter(&dir, &["stripe", "github", "stripe"]).await;
    let out = firefly(dir.args(&["--json", "dlq", "purge", "--yes", "--provider", "stripe"])).await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["purged"], 2);
    let broker = dir.open().await;
    let left = broker.dead_letters(DESTINATION).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0.provider, "github");
    assert_eq!(
        broker.pending(DESTINATION),
        0,
        "purged events are not replayed"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_replay_killed_half_way_loses_nothing() {
    let dir = DataDir::new();
    let sent = dead_letter(&dir, &["github"; 20]).await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_firefly"))
        .args(dir.args(&["dlq", "replay", "--rate", "10"]))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = child.wait_with_output().await.unwrap().status;
    assert_eq!(status.code(), None, "killed by the signal");
    let left = dir.count().await;
    assert!(left < sent.len(), "some were replayed: {left} left");

    // The second run replays the rest, and what the killed one replayed but had not removed.
    let out = firefly(dir.args(&["--json", "dlq", "replay"])).await;
    assert_exit(&out, 0);
    assert_eq!(json(&out)["replayed"], left);
    assert_eq!(dir.count().await, 0);
    let counts = Counts::default();
    process(&dir, &counts, sent.len()).await;
    // At least once: the worker's idempotency absorbed any duplicate.
    assert_processed_once(&counts, &sent).await;
}
