//! The spool in front of a publisher that fails, and the disk transport: nothing accepted is
//! lost across outages, restarts, torn files and `kill -9`.
//!
//! No timing thresholds: waits poll until a condition holds and give up only after a minute
//! (a hang, not a slow machine). Each test uses its own directory under the temp dir,
//! removed at the end.
#![cfg(feature = "spool")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firefly_webhook::metric::SPOOL_CUT_TOTAL;
use firefly_webhook::process::{Outcome, processor_fn};
use firefly_webhook::spool::{DiskBroker, DiskConfig, Spool, SpoolConfig, SpoolState, Storage};
use firefly_webhook::{
    Broker, DeadLetter, FailureCategory, PublishError, Publisher, Subscriber, WebhookEvent, Worker,
    async_trait,
};

/// A directory of its own under the temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "firefly-spool-test-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker publisher the test turns on and off, that records what it confirmed, and that
/// rejects the bodies it is told to.
#[derive(Clone, Default)]
struct Flaky {
    up: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
    received: Arc<Mutex<Vec<(String, String)>>>,
    reject: Arc<Mutex<HashSet<String>>>,
}

impl Flaky {
    fn down() -> Self {
        Self::default()
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    fn received(&self) -> Vec<(String, String)> {
        self.received.lock().unwrap().clone()
    }

    /// The bodies received for `destination`, first occurrences only, in order.
    fn order(&self, destination: &str) -> Vec<String> {
        let mut seen = HashSet::new();
        self.received()
            .into_iter()
            .filter(|(d, body)| d == destination && seen.insert(body.clone()))
            .map(|(_, body)| body)
            .collect()
    }
}

#[async_trait]
impl Publisher for Flaky {
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let body = String::from_utf8(event.body.to_vec()).unwrap();
        if self.reject.lock().unwrap().contains(&body) {
            return Err(PublishError::rejected("poison"));
        }
        if !self.up.load(Ordering::SeqCst) {
            return Err(PublishError::unavailable("broker down"));
        }
        self.received
            .lock()
            .unwrap()
            .push((destination.to_owned(), body));
        Ok(())
    }
}

fn config(dir: &Path) -> SpoolConfig {
    let mut config = SpoolConfig::new(dir);
    config.backoff = Duration::from_millis(5);
    config.max_backoff = Duration::from_millis(20);
    config
}

fn event(body: &str) -> WebhookEvent {
    let provider = body.split('-').next().unwrap();
    WebhookEvent::new(provider, body.to_owned())
}

fn body(event: &WebhookEvent) -> String {
    String::from_utf8(event.body.to_vec()).unwrap()
}

/// Polls `done` until it holds; a minute without is a hang.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn spool_absorbs_an_outage_and_drains_in_order() {
    let dir = TempDir::new("outage");
    let broker = Flaky::down();
    let spool = Spool::open(broker.clone(), config(dir.path()))
        .await
        .unwrap();
    assert_eq!(spool.state(), SpoolState::Direct);

    let mut sent: HashMap<&str, Vec<String>> = HashMap::new();
    for i in 0..60 {
        let destination = ["a", "b", "c"][i % 3];
        let body = format!("{destination}-{i}");
        let storage = spool
            .publish_with_storage(destination, event(&body))
            .await
            .unwrap();
        assert_eq!(storage, Storage::Spool);
        sent.entry(destination).or_default().push(body);
    }
    assert_eq!(spool.events(), 60);
    assert_eq!(spool.state(), SpoolState::Spooling);
    assert!(spool.is_spooling());
    spool.health().await.unwrap(); // ready (degraded) while the broker is down
    assert!(broker.received().is_empty());

    broker.set_up(true);
    // Published while the spool drains: behind what is spooled, whichever way they go.
    for i in 60..90 {
        let destination = ["a", "b", "c"][i % 3];
        let body = format!("{destination}-{i}");
        spool.publish(destination, event(&body)).await.unwrap();
        sent.entry(destination).or_default().push(body);
    }
    wait_for("the spool drains", || spool.events() == 0).await;

    for (destination, bodies) in &sent {
        assert_eq!(&broker.order(destination), bodies, "order of {destination}");
    }
    assert!(broker.received().len() >= 90);
    assert_eq!(spool.state(), SpoolState::Direct);
    let storage = spool
        .publish_with_storage("a", event("a-after"))
        .await
        .unwrap();
    assert_eq!(storage, Storage::Broker);
}

#[tokio::test]
async fn a_destination_with_spooled_events_keeps_spooling_until_drained() {
    let dir = TempDir::new("order");
    let broker = Flaky::down();
    let mut config = config(dir.path());
    // The forwarder waits long after its first failure: the broker is back before it retries.
    config.backoff = Duration::from_secs(3600);
    config.max_backoff = Duration::from_secs(3600);
    let spool = Spool::open(broker.clone(), config).await.unwrap();
    spool.publish("a", event("a-1")).await.unwrap();
    // One attempt by the publish itself, one by the forwarder.
    wait_for("the forwarder tries once", || {
        broker.attempts.load(Ordering::SeqCst) >= 2
    })
    .await;
    broker.set_up(true);
    let storage = spool.publish_with_storage("a", event("a-2")).await.unwrap();
    assert_eq!(storage, Storage::Spool, "behind a-1");
    let storage = spool.publish_with_storage("b", event("b-1")).await.unwrap();
    assert_eq!(storage, Storage::Broker, "b has nothing spooled");
    assert_eq!(spool.pending("a"), 2);
}

#[tokio::test]
async fn restart_resumes_forwarding() {
    let dir = TempDir::new("restart");
    let down = Flaky::down();
    let spool = Spool::open(down.clone(), config(dir.path())).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..20 {
        let body = format!("a-{i}");
        spool.publish("a", event(&body)).await.unwrap();
        sent.push(body);
    }
    drop(spool);

    let up = Flaky::default();
    up.set_up(true);
    let spool = Spool::open(up.clone(), config(dir.path())).await.unwrap();
    wait_for("the reopened spool drains", || spool.events() == 0).await;
    assert_eq!(up.order("a"), sent);
    assert!(down.received().is_empty());
    drop(spool);

    // The releases are on disk: nothing is forwarded twice after another restart.
    let again = Flaky::default();
    let spool = Spool::open(again.clone(), config(dir.path()))
        .await
        .unwrap();
    assert_eq!(spool.events(), 0);
}

#[tokio::test]
async fn a_full_spool_answers_overloaded_until_it_drains() {
    let dir = TempDir::new("full");
    let broker = Flaky::down();
    let mut config = config(dir.path());
    config.max_bytes = 64 * 1024;
    let spool = Spool::open(broker.clone(), config).await.unwrap();
    let filler = "x".repeat(1000);
    let mut accepted = 0;
    let error = loop {
        match spool
            .publish("a", event(&format!("a-{accepted}-{filler}")))
            .await
        {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < 1000, "the spool never filled up");
    };
    assert!(matches!(error, PublishError::Overloaded), "{error:?}");
    assert!(accepted > 10);
    assert!(spool.bytes() <= 64 * 1024);
    assert_eq!(spool.state(), SpoolState::Full);
    assert!(matches!(
        spool.health().await,
        Err(PublishError::Overloaded)
    ));

    broker.set_up(true);
    wait_for("the full spool drains", || spool.events() == 0).await;
    assert_eq!(broker.order("a").len(), accepted);
    wait_for("segments are deleted", || spool.bytes() < 32 * 1024).await;
    assert_ne!(spool.state(), SpoolState::Full);
    let storage = spool
        .publish_with_storage("a", event("a-again"))
        .await
        .unwrap();
    assert_eq!(storage, Storage::Broker);
}

#[tokio::test]
async fn events_the_broker_rejects_while_forwarded_are_dead_lettered() {
    let dir = TempDir::new("rejected");
    let broker = Flaky::down();
    let spool = Spool::open(broker.clone(), config(dir.path()))
        .await
        .unwrap();
    for body in ["a-1", "a-poison", "a-3"] {
        spool.publish("a", event(body)).await.unwrap();
    }
    broker.reject.lock().unwrap().insert("a-poison".to_owned());
    broker.set_up(true);
    wait_for("the spool drains", || spool.events() == 0).await;
    assert_eq!(broker.order("a"), ["a-1", "a-3"]);
    let dead = spool.dead_letters("a").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(body(&dead[0].0), "a-poison");
    assert_eq!(dead[0].1.error_type, "rejected");
    assert_eq!(dead[0].1.destination, "a");
    spool.clear_dead_letters("a").await.unwrap();
    assert!(spool.dead_letters("a").await.unwrap().is_empty());
}

/// The single segment file of a log directory.
fn only_segment(dir: &Path) -> PathBuf {
    let segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.into_iter().next().unwrap()
}

/// Opens a disk broker and counts the records it cut off.
fn open_counting_cuts(dir: &Path) -> (DiskBroker, u64) {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let broker =
        metrics::with_local_recorder(&recorder, || DiskBroker::new(DiskConfig::new(dir))).unwrap();
    let cut = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) if key.key().name() == SPOOL_CUT_TOTAL => Some(n),
            _ => None,
        })
        .unwrap_or(0);
    (broker, cut)
}

/// Every event the broker holds, by body, acking them.
async fn drain(broker: &DiskBroker) -> Vec<String> {
    let mut subscriber = broker.subscriber_all();
    let mut bodies = Vec::new();
    let held = broker.events();
    while bodies.len() < held {
        let delivery = subscriber.next().await.unwrap().unwrap();
        bodies.push(body(&delivery.event));
        delivery.ack().await.unwrap();
    }
    bodies
}

#[tokio::test]
async fn torn_and_corrupt_tails_are_cut_and_earlier_records_survive() {
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, usize); 5] = [
        (
            "garbage appended",
            |f| f.extend_from_slice(b"\x13\x00\x00\x00garbage!"),
            10,
        ),
        ("zeroes appended", |f| f.extend_from_slice(&[0; 64]), 10),
        ("cut mid-record", |f| f.truncate(f.len() - 5), 9),
        (
            "cut mid-header",
            |f| {
                // The ten records have the same length: keep 4 bytes of the last one.
                let record = (f.len() - 8) / 10;
                let len = f.len();
                f.truncate(len - record + 4);
            },
            9,
        ),
        (
            "bit flipped",
            |f| {
                let at = f.len() - 3;
                f[at] ^= 0x40;
            },
            9,
        ),
    ];
    for (name, damage, survivors) in cases {
        let dir = TempDir::new("torn");
        let broker = DiskBroker::connect(DiskConfig::new(dir.path()))
            .await
            .unwrap();
        for i in 0..10 {
            broker
                .publisher()
                .publish("a", event(&format!("a-{i}")))
                .await
                .unwrap();
        }
        drop(broker);
        let path = only_segment(dir.path());
        let mut data = std::fs::read(&path).unwrap();
        damage(&mut data);
        std::fs::write(&path, &data).unwrap();

        let (broker, cut) = open_counting_cuts(dir.path());
        assert_eq!(cut, 1, "{name}: the damage is detected");
        assert_eq!(broker.events(), survivors, "{name}");
        // Appends after the cut are readable after another restart.
        broker
            .publisher()
            .publish("a", event("a-new"))
            .await
            .unwrap();
        drop(broker);
        let (broker, cut) = open_counting_cuts(dir.path());
        assert_eq!(cut, 0, "{name}: the file is clean again");
        let mut expected: Vec<String> = (0..survivors).map(|i| format!("a-{i}")).collect();
        expected.push("a-new".to_owned());
        assert_eq!(drain(&broker).await, expected, "{name}");
    }
}

#[tokio::test]
async fn a_spool_with_a_torn_tail_forwards_what_survived() {
    let dir = TempDir::new("spool-torn");
    let spool = Spool::open(Flaky::down(), config(dir.path()))
        .await
        .unwrap();
    for i in 0..5 {
        spool.publish("a", event(&format!("a-{i}"))).await.unwrap();
    }
    drop(spool);
    let path = only_segment(dir.path());
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() - 2]).unwrap();

    let up = Flaky::default();
    up.set_up(true);
    let spool = Spool::open(up.clone(), config(dir.path())).await.unwrap();
    wait_for("the spool drains", || spool.events() == 0).await;
    assert_eq!(up.order("a"), ["a-0", "a-1", "a-2", "a-3"]);
}

#[tokio::test]
async fn disk_redelivers_what_a_crashed_consumer_did_not_ack() {
    let dir = TempDir::new("redeliver");
    let broker = DiskBroker::connect(DiskConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(broker.name(), "disk");
    let publisher = broker.publisher();
    for i in 0..10 {
        publisher
            .publish("github", event(&format!("github-{i}")))
            .await
            .unwrap();
    }
    publisher
        .publish("stripe", event("stripe-0"))
        .await
        .unwrap();

    let mut subscriber = broker.subscriber(["github"]).unwrap();
    let first = subscriber.next().await.unwrap().unwrap();
    assert_eq!(body(&first.event), "github-0");
    assert_eq!(first.position.transport(), "disk");
    first.ack().await.unwrap();
    let unacked = [
        subscriber.next().await.unwrap().unwrap(),
        subscriber.next().await.unwrap().unwrap(),
    ];
    assert_eq!(broker.in_flight(), 2);
    // The consumer crashes: its deliveries are never settled, the process goes away.
    drop((unacked, subscriber, publisher, broker));

    let broker = DiskBroker::connect(DiskConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(broker.pending("github"), 9);
    assert_eq!(broker.pending("stripe"), 1);
    // The provider sends three of them again: the worker's idempotency processes each once.
    for i in [1, 2, 5] {
        broker
            .publisher()
            .publish("github", event(&format!("github-{i}")))
            .await
            .unwrap();
    }
    let processed: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&processed);
    let worker = Worker::builder(broker.subscriber(["github"]).unwrap())
        .concurrency(1)
        .build(processor_fn(move |event, _ctx| {
            seen.lock().unwrap().push(body(event));
            async { Ok(Outcome::Processed) }
        }));
    let watched = broker.clone();
    worker
        .run_until(async move {
            wait_for("github is processed", || watched.pending("github") == 0).await;
        })
        .await;
    let mut processed = processed.lock().unwrap().clone();
    processed.sort();
    let mut expected: Vec<String> = (1..10).map(|i| format!("github-{i}")).collect();
    expected.sort();
    assert_eq!(processed, expected, "each once, github-0 (acked) not again");
    assert_eq!(broker.pending("stripe"), 1);
    assert!(broker.dead_letters("github").await.unwrap().is_empty());
}

#[tokio::test]
async fn disk_dead_letters_and_delayed_retries_survive_a_restart() {
    let dir = TempDir::new("dead");
    let broker = DiskBroker::connect(DiskConfig::new(dir.path()))
        .await
        .unwrap();
    for body in ["github-bad", "github-later", "github-ok"] {
        broker
            .publisher()
            .publish("github", event(body))
            .await
            .unwrap();
    }
    let mut subscriber = broker.subscriber(["github"]).unwrap();
    let bad = subscriber.next().await.unwrap().unwrap();
    let failure = DeadLetter::new(
        "bad signature",
        FailureCategory::Validation,
        1,
        "invalid",
        "github",
    );
    bad.dead_letter(&failure).await.unwrap();
    let later = subscriber.next().await.unwrap().unwrap();
    assert_eq!(later.attempt, 1);
    later.retry(Duration::from_millis(300)).await.unwrap();
    let ok = subscriber.next().await.unwrap().unwrap();
    assert_eq!(body(&ok.event), "github-ok");
    ok.ack().await.unwrap();
    drop((subscriber, broker));

    let broker = DiskBroker::connect(DiskConfig::new(dir.path()))
        .await
        .unwrap();
    let dead = broker.dead_letters("github").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(body(&dead[0].0), "github-bad");
    assert_eq!(dead[0].1, failure);
    assert!(broker.dead_letters("stripe").await.unwrap().is_empty());
    // The retry kept its attempt number and waited for its time across the restart.
    let mut subscriber = broker.subscriber(["github"]).unwrap();
    let again = subscriber.next().await.unwrap().unwrap();
    assert_eq!(body(&again.event), "github-later");
    assert_eq!(again.attempt, 2);
    again.ack().await.unwrap();
    assert_eq!(broker.events(), 0);

    let before = broker.bytes();
    broker.clear_dead_letters("github").await.unwrap();
    assert!(broker.dead_letters("github").await.unwrap().is_empty());
    assert!(broker.bytes() < before);
}

/// Receives and acks `n` deliveries.
async fn ack(subscriber: &mut impl Subscriber, n: usize) {
    for _ in 0..n {
        let delivery = subscriber.next().await.unwrap().unwrap();
        delivery.ack().await.unwrap();
    }
}

/// The segment files of a log directory, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

#[tokio::test]
async fn releases_survive_the_deletion_of_the_segment_that_recorded_them() {
    let dir = TempDir::new("carry");
    let mut config = DiskConfig::new(dir.path());
    config.max_bytes = 256 * 1024; // 64 KiB segments
    let broker = DiskBroker::connect(config.clone()).await.unwrap();
    let publisher = broker.publisher();
    let filler = "x".repeat(1000);
    // The first segment: one event nobody consumes, and events acked only once it is sealed,
    // so that their release records go to a later segment.
    publisher.publish("slow", event("slow-0")).await.unwrap();
    let mut i = 0;
    while segments(dir.path()).len() < 2 {
        publisher
            .publish("fast", event(&format!("fast-{i}-{filler}")))
            .await
            .unwrap();
        i += 1;
    }
    let mut fast = broker.subscriber(["fast"]).unwrap();
    ack(&mut fast, i).await;
    // More segments, all acked: the second one (with those release records) is deleted
    // while the first stays for `slow-0`.
    let mut j = 0;
    while segments(dir.path()).len() < 4 {
        publisher
            .publish("fast", event(&format!("fast-more-{j}-{filler}")))
            .await
            .unwrap();
        j += 1;
    }
    ack(&mut fast, j).await;
    let first = segments(dir.path())[0].clone();
    wait_for("a middle segment is deleted", || {
        let now = segments(dir.path());
        now[0] == first && now.len() <= 3
    })
    .await;
    assert_eq!(broker.events(), 1);
    drop((fast, publisher, broker));

    let broker = DiskBroker::connect(config).await.unwrap();
    assert_eq!(broker.events(), 1, "only slow-0 is live");
    assert_eq!(broker.pending("slow"), 1);
}

#[tokio::test]
async fn a_directory_opens_once_per_process() {
    let dir = TempDir::new("once");
    let broker = DiskBroker::connect(DiskConfig::new(dir.path()))
        .await
        .unwrap();
    let again = DiskBroker::connect(DiskConfig::new(dir.path())).await;
    assert!(
        matches!(again, Err(firefly_webhook::spool::SpoolError::InUse(_))),
        "{again:?}"
    );
    drop(broker);
    DiskBroker::connect(DiskConfig::new(dir.path()))
        .await
        .unwrap();
}

/// Set (with a directory) only in the child process of [`kill_9_loses_no_acknowledged_event`].
const KILL_DIR: &str = "SPOOL_TEST_KILL_DIR";

/// The child of [`kill_9_loses_no_acknowledged_event`]: publishes from 16 tasks and prints
/// `acked <body>` for every publish that returned `Ok`, until it is killed.
#[test]
#[ignore = "run by kill_9_loses_no_acknowledged_event as a child process"]
fn kill_child_writer() {
    use std::io::Write as _;

    let Some(dir) = std::env::var_os(KILL_DIR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let broker = DiskBroker::connect(DiskConfig::new(PathBuf::from(dir)))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|task| {
                let publisher = broker.publisher();
                tokio::spawn(async move {
                    // Bounded: the parent kills it long before.
                    for i in 0..20_000 {
                        let body = format!("k-{task}-{i}");
                        publisher.publish("k", event(&body)).await.unwrap();
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "acked {body}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[cfg(unix)]
#[test]
fn kill_9_loses_no_acknowledged_event() {
    use std::io::{BufRead as _, BufReader};

    use std::process::{Command, Stdio};

    let dir = TempDir::new("kill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut acked = HashSet::new();
    // Whole lines only: a line cut short by the kill is not an acknowledgement.
    let mut read = |acked: &mut HashSet<String>| {
        let mut line = String::new();
        match out.read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => {
                if let Some(body) = line.trim_end().strip_prefix("acked ") {
                    acked.insert(body.to_owned());
                }
                true
            }
            _ => false,
        }
    };
    while acked.len() < 2000 && read(&mut acked) {}
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What it printed before it died was acknowledged too.
    while read(&mut acked) {}
    assert!(acked.len() >= 2000, "the child died early: {}", acked.len());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let broker = DiskBroker::connect(DiskConfig::new(dir.path()))
            .await
            .unwrap();
        let held: HashSet<String> = drain(&broker).await.into_iter().collect();
        let missing: Vec<_> = acked.difference(&held).collect();
        assert!(
            missing.is_empty(),
            "lost {} acknowledged events: {missing:?}",
            missing.len()
        );
        // Per task, what survived is a prefix of what it published: no holes.
        let mut per_task: HashMap<&str, Vec<u32>> = HashMap::new();
        for body in &held {
            let mut parts = body.rsplitn(2, '-');
            let i: u32 = parts.next().unwrap().parse().unwrap();
            per_task.entry(parts.next().unwrap()).or_default().push(i);
        }
        for (task, mut seen) in per_task {
            seen.sort_unstable();
            let expected: Vec<u32> = (0..u32::try_from(seen.len()).unwrap()).collect();
            assert_eq!(seen, expected, "task {task}");
        }
    });
}
