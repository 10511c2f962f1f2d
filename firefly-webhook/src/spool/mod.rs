//! No lost webhooks when the broker is down: a durable local log in front of any
//! [`Publisher`] ([`Spool`]), and the same log as an embedded durable transport
//! ([`DiskBroker`]).
//!
//! # The spool
//!
//! Without it, a broker outage turns into `503`s, and providers that do not retry (GitHub
//! marks a delivery failed after 10 s and never redelivers) lose events. [`Spool`] wraps the
//! broker's publisher and is a [`Publisher`] itself:
//!
//! 1. **broker first**: it publishes to the broker within
//!    [`publish_timeout`](SpoolConfig::publish_timeout) (1 s by default);
//! 2. if the broker is unavailable, overloaded or too slow, it appends the event to the spool
//!    and returns `Ok` once the append is on disk (`fdatasync`), never before;
//! 3. a forwarder task drains the spool into the broker, oldest first, releasing an entry only
//!    once the broker confirmed it (at-least-once), backing off while the broker is down.
//!
//! **Order per destination**: once a destination has events in the spool, its new events go
//! to the spool behind them until it is drained, so an event acknowledged (`202`) before
//! another one reaches the broker before it. The forwarder publishes up to
//! [`forward_window`](SpoolConfig::forward_window) events of a destination at once, started
//! in order (the order one Kafka producer keeps per partition); after a failure it probes with
//! one event per destination. If the broker fails in the middle of such a window, an event can
//! reach it after a later one; and a publisher that spreads publishes over several
//! connections or channels (the AMQP publisher's channel pool) may reorder a window: set
//! `forward_window` to 1 for strict order (the example gateway does on RabbitMQ).
//!
//! A publish that timed out may still complete in the broker after the event was spooled, and
//! a crash between the broker's confirmation and the release record redelivers an event: both
//! are duplicates, which the worker's idempotency absorbs, never losses. An event the broker
//! *rejects* ([`PublishError::Rejected`]) is not spooled (the caller sees the error); one it
//! rejects while being forwarded goes to the spool's [dead letters](Spool::dead_letters).
//!
//! [`Spool::publish_with_storage`] tells where an event is held ([`Storage::Broker`] or
//! [`Storage::Spool`]), for the `202` receipt. [`Spool::state`] tells whether the spool is
//! holding events, for a readiness probe that reports "degraded" while the broker is down:
//! [`health`](Publisher::health) stays `Ok` as long as the spool has room.
//!
//! ```
//! use std::time::Duration;
//! use firefly_webhook::memory::MemoryBroker;
//! use firefly_webhook::spool::{Spool, SpoolConfig, SpoolState, Storage};
//! use firefly_webhook::WebhookEvent;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("firefly-spool-doc-{}", std::process::id()));
//! let broker = MemoryBroker::new(1000);
//! let mut config = SpoolConfig::new(&dir); // e.g. /var/lib/firefly/spool
//! config.publish_timeout = Duration::from_secs(1);
//! let spool = Spool::open(broker.publisher(), config).await?;
//!
//! let storage = spool.publish_with_storage("github", WebhookEvent::new("github", "{}")).await?;
//! assert_eq!(storage, Storage::Broker); // the broker is up: nothing is spooled
//! assert_eq!(spool.state(), SpoolState::Direct);
//! # drop(spool); std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! # The disk transport
//!
//! [`DiskBroker`] (name `"disk"`) is the same log as an embedded durable [`Broker`]: a
//! single-node deployment is durable without Kafka or RabbitMQ. A publish returns once the
//! event is on disk; subscribers receive it, and:
//!
//! - an entry is released when its delivery is **acked**; one handed out and not acked when
//!   the process stops (crash, `kill -9`, a dropped subscriber) is delivered again after the
//!   restart;
//! - a **retry** appends the event again with its attempt number and due time (so a delayed
//!   retry survives a restart), then releases the original;
//! - a **dead letter** is appended to the destination's `dead/{destination}.dlq` file, then
//!   the original is released; read them back with [`DiskBroker::dead_letters`] (which
//!   destinations have some: [`DiskBroker::dead_letter_destinations`]), delete them with
//!   [`DiskBroker::remove_dead_letters`] (named by [`DeadLetterKey`]) or
//!   [`DiskBroker::clear_dead_letters`]. To replay one, publish its event, then remove it.
//!
//! Acks are written with the next group commit and not waited for: a crash loses at most the
//! acks of the batch being written, and those events are delivered again.
//!
//! ```
//! use firefly_webhook::spool::{DiskBroker, DiskConfig};
//! use firefly_webhook::{Broker, Publisher, Subscriber, WebhookEvent};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("firefly-disk-doc-{}", std::process::id()));
//! let broker = DiskBroker::connect(DiskConfig::new(&dir)).await?;
//! broker.publisher().publish("github", WebhookEvent::new("github", "{}")).await?;
//!
//! let mut subscriber = broker.subscriber(["github"])?;
//! let delivery = subscriber.next().await.unwrap()?;
//! assert_eq!(&*delivery.destination, "github");
//! delivery.ack().await?;
//! # drop((subscriber, broker)); std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! # File format
//!
//! A directory holds segment files named after the sequence number of their first entry
//! (`00000000000000000000.seg`), a `dead/` folder of dead-letter files, and a `lock` file on
//! which the process that has the directory open holds an exclusive lock (`flock`; a second
//! process is refused with [`SpoolError::Locked`]). A
//! segment starts with the 8-byte magic `FFSPOOL1` (a dead-letter file with `FFSPDLQ1`);
//! then records, each
//!
//! ```text
//! length: u32 LE | crc32(payload): u32 LE | payload (length bytes)
//! ```
//!
//! and the payload's first byte says what it is (integers little-endian; strings and byte
//! strings as a u32 length and the bytes):
//!
//! | kind | payload |
//! |---|---|
//! | 1 entry | seq u64, written (Unix ms) u64, due (Unix ms, 0 = now) u64, attempt u32, destination, event |
//! | 2 release | seq u64: that entry is done with |
//! | 3 live set | base u64, count u32, bitmap: of entries `base..base+count` only those whose bit is set may be live |
//! | 4 dead letter | destination, reason, category, attempts u32, error type, rejected at (Unix ns) i128, origin destination, event |
//!
//! An event is stored field by field, not re-serialised: id (16 bytes), received at (Unix ns,
//! i128), provider, method, path, query (flag + string), source IP (0, 4 + 4 bytes or 6 + 16
//! bytes), correlation id, content type (flag + string), the header values in order (count,
//! then per value a sensitive flag, name and value bytes) and the body, byte for byte.
//!
//! **Crash safety.** On open the segments are replayed in order. A record whose length is
//! impossible, that the file ends inside (a write cut short by `kill -9` or a power loss), or
//! whose checksum does not match ends its segment: it and everything after it in that file
//! are logged at error level, counted in
//! [`SPOOL_CUT_TOTAL`](crate::metric::SPOOL_CUT_TOTAL) and cut off; the records before
//! it are kept. Nothing in the files' content can make opening panic. Entries without a
//! release are live again.
//!
//! **Dead letters are removed** by rewriting the destination's dead-letter file without them
//! into `dead/{destination}.dlq.tmp`, syncing it, and renaming it over the file (then syncing
//! the folder): a crash leaves the old file or the new one, never a mix; a leftover `.tmp`
//! is deleted on open.
//!
//! **Segments** are [`segment_bytes`](SpoolConfig::segment_bytes) (64 MiB by default) and
//! deleted as soon as every entry in them is released (before that, the live sets of older
//! segments are written, since the deleted segment may hold their only release records). An
//! event that would take the directory past [`max_bytes`](SpoolConfig::max_bytes) fails as
//! [`PublishError::Overloaded`] (the ingest service answers `503` with `Retry-After`); only
//! the small release records written while it drains may go beyond.
//!
//! # Group commit
//!
//! One writer thread owns the files. Appends, releases and dead letters queue on a channel;
//! the writer takes everything queued and writes it with one `write`, and one `fdatasync`
//! makes the batch durable; batches complete in the order they were written, each indexed and
//! its waiters woken once its own sync and those of the batches before it returned. While a
//! batch syncs the next one queues up, so syncs per second stay bounded and events per second
//! grow with the number of concurrent requests. On a quick disk the writer syncs each batch
//! itself; when syncs take longer (0.5 ms on average) it hands them to up to four sync
//! threads and goes on writing, since a disk completes overlapping syncs in about the time of
//! one. Events are kept in memory (up to [`cache_bytes`](SpoolConfig::cache_bytes)) for
//! delivery; beyond that, and after a restart, they are read back from the segment.
//!
//! # Throughput
//!
//! `cargo run --release -p firefly-bench --features spool --bin spool [events] [concurrency]
//! [body bytes] [directory]` publishes through a spool whose broker always fails (every event
//! spooled) and through the disk transport with a subscriber acking; `scripts/bench-spool`
//! runs it, then the same paths through the gateway under wrk. 64 concurrent publishers of
//! 1 KiB events with GitHub-like headers on the machine below, the old writer (one sync at a
//! time, always on the writer thread) against this one, interleaved runs:
//!
//! | disk (single syncs/s) | spooled, old | spooled, now | disk transport end to end, old | now |
//! |---|---|---|---|---|
//! | idle (6,200–7,400) | 118,600–131,100/s | 95,500–136,900/s | 115,600–124,100/s | 96,300–133,300/s |
//! | other writers fsyncing (1,400–1,900) | 38,600–43,500/s | 46,700/s | 40,600–42,600/s | 46,000–49,400/s |
//! | saturated by writers (60–290) | 7,100–9,500/s | 8,700–10,800/s | 6,200–9,600/s | 9,500–11,600/s |
//!
//! Each publisher waits for its sync, so events per sync grow with concurrency; the spooled
//! append p99 stayed under 3 ms on the idle disk and 17 ms on the saturated one. While other
//! engineers' builds loaded both cores (load average 6–7; syncs of several milliseconds) the
//! threads alone took the spooled path from 9,700–14,800 to 73,800–80,300 events/s. Through
//! the gateway (`scripts/bench-spool`: wrk, 64 connections, the broker down, every `202` after
//! its sync) see the figures in the changelog.
//!
//! # Why a purpose-built log
//!
//! Append + `fdatasync` of batches of 1 KiB records, 40,000 records per row, measured with a
//! throwaway program (not in this repository): the log's framing with `crc32fast` and one
//! `write` + `fdatasync` per batch; `redb` 4.6 with one write transaction per batch
//! (`Durability::Immediate`); `fjall` 3.1 with one write batch and `persist(SyncData)` per
//! batch. Machine: the project's 2-core AMD EPYC VM, ext4 on virtio, while other builds ran
//! (load average 5.5; it did 270–420 single syncs per second then); two runs each, and one on
//! tmpfs, where a sync costs nothing and what is left is CPU:
//!
//! | records per commit | log | redb | fjall |
//! |---|---|---|---|
//! | 1 | 268–321/s | 317–329/s | 287–416/s |
//! | 16 | 4,799–4,864/s | 2,656–3,834/s | 4,948–5,037/s |
//! | 64 | 15,410–17,939/s | 11,173–14,837/s | 11,561–16,027/s |
//! | 64, on tmpfs (CPU only) | 855,198/s | 103,498/s | 321,941/s |
//! | disk used for 40,000 records | 39 MiB | 68 MiB | 64 MiB (preallocated journal) |
//!
//! On a disk all three are bound by the sync, so what matters is the group commit in front of
//! them, the same for each. The log is never slower, costs a third to an eighth of the CPU,
//! adds one small dependency (`crc32fast`; `redb` is one crate, `fjall` about 45), builds on the
//! workspace's Rust 1.88 (`redb` 4 and `fjall` 3 need 1.90), and its crash story is the
//! simplest to state and test: cut the tail at the first bad checksum. A B-tree or an LSM tree
//! buys random access and compaction, which a queue read in order and deleted by whole
//! segments does not need.
//!
//! # Metrics
//!
//! Named in the [`metric`](crate::metric) module; every one carries the label
//! [`LOG`](crate::metric::LOG): [`SPOOL`] or [`DISK`]. The gauges
//! [`SPOOL_EVENTS`](crate::metric::SPOOL_EVENTS), [`SPOOL_BYTES`](crate::metric::SPOOL_BYTES)
//! and [`SPOOL_OLDEST_AGE_SECONDS`](crate::metric::SPOOL_OLDEST_AGE_SECONDS) are refreshed
//! after each write and every second; the counters
//! [`SPOOL_FORWARDED_TOTAL`](crate::metric::SPOOL_FORWARDED_TOTAL) (the forward rate),
//! [`SPOOL_FORWARD_FAILURES_TOTAL`](crate::metric::SPOOL_FORWARD_FAILURES_TOTAL),
//! [`SPOOL_DEAD_LETTERED_TOTAL`](crate::metric::SPOOL_DEAD_LETTERED_TOTAL) and
//! [`SPOOL_CUT_TOTAL`](crate::metric::SPOOL_CUT_TOTAL).
//!
//! # Readiness
//!
//! [`Spool::state`] is what a readiness check reports: [`Spooling`](SpoolState::Spooling) is
//! "degraded" (ready, answering 200: nothing is lost, events are delayed);
//! [`Full`](SpoolState::Full) and [`Failed`](SpoolState::Failed) are "down". See
//! [`Readiness::check_health`](crate::health::Readiness::check_health) and
//! [`Health::Degraded`](crate::health::Health::Degraded).
//!
//! [`Broker`]: crate::broker::Broker

mod disk;
mod format;
mod forward;
mod index;
mod log;
mod recover;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;

pub use self::disk::{DiskBroker, DiskConfig, DiskPublisher, DiskSubscriber};
use self::log::{Log, LogConfig, now_ms};
use crate::event::WebhookEvent;
use crate::publish::{PublishError, Publisher};

/// [`LOG`](crate::metric::LOG) label value of a [`Spool`]'s metrics.
pub const SPOOL: &str = "spool";
/// [`LOG`](crate::metric::LOG) label value of a [`DiskBroker`]'s metrics; also its
/// [`Broker::name`](crate::Broker::name).
pub const DISK: &str = "disk";

/// The directory a [`SpoolConfig::default`] uses, relative to the working directory.
pub const DEFAULT_SPOOL_DIR: &str = "firefly-spool";
/// The directory a [`DiskConfig::default`] uses, relative to the working directory.
pub const DEFAULT_DISK_DIR: &str = "firefly-disk";

const MIB: u64 = 1024 * 1024;
/// Smallest segment; smaller settings are raised to it.
const MIN_SEGMENT_BYTES: u64 = 4096;

/// Opening a spool or disk transport failed, or reading its dead letters did.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file operation on the directory failed.
    #[error("spool directory {} is not usable", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Another spool or disk transport of this process has the directory open.
    #[error("spool directory {} is already open in this process", .0.display())]
    InUse(PathBuf),
    /// Another process (a running gateway or worker, say) has the directory open: it holds
    /// the lock on its `lock` file.
    #[error("spool directory {} is in use by another process", .0.display())]
    Locked(PathBuf),
}

/// Which dead letter of a [`DiskBroker`] or [`Spool`] to remove: the event's id and when
/// it was dead-lettered.
///
/// The time tells apart two dead letters of one event: an event replayed and dead-lettered
/// again while the first one was being removed is a new dead letter, which a removal of the
/// first must not take with it.
///
/// ```
/// use firefly_webhook::spool::DeadLetterKey;
/// use firefly_webhook::{DeadLetter, FailureCategory, WebhookEvent};
///
/// let event = WebhookEvent::new("github", "{}");
/// let failure = DeadLetter::new("boom", FailureCategory::Processing, 3, "io", "github");
/// let key = DeadLetterKey::of(&event, &failure);
/// assert_eq!(key.id, event.id);
/// assert_eq!(key.dead_lettered_at, failure.rejected_at);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct DeadLetterKey {
    /// The event's id.
    pub id: crate::EventId,
    /// When it was dead-lettered: its [`DeadLetter::rejected_at`](crate::DeadLetter::rejected_at).
    pub dead_lettered_at: time::OffsetDateTime,
}

impl DeadLetterKey {
    /// The key of the event `id` dead-lettered at `dead_lettered_at`.
    pub const fn new(id: crate::EventId, dead_lettered_at: time::OffsetDateTime) -> Self {
        Self {
            id,
            dead_lettered_at,
        }
    }

    /// The key of a dead letter as [`DiskBroker::dead_letters`] returns it.
    pub fn of(event: &WebhookEvent, dead_letter: &crate::DeadLetter) -> Self {
        Self::new(event.id, dead_letter.rejected_at)
    }

    fn stored(self) -> (crate::EventId, i128) {
        (self.id, self.dead_lettered_at.unix_timestamp_nanos())
    }
}

/// The stored form of `keys`, for the writer.
fn stored_keys(keys: &[DeadLetterKey]) -> std::collections::HashSet<(crate::EventId, i128)> {
    keys.iter().map(|key| key.stored()).collect()
}

pub use crate::publish::Storage;

/// What a [`Spool`] is doing; see [`Spool::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpoolState {
    /// Nothing is held: events go straight to the broker.
    Direct,
    /// Events are held on disk and forwarded as the broker takes them. Readiness should say
    /// "degraded" (and still answer 200): nothing is lost, but events are delayed.
    Spooling,
    /// The last event that needed the spool did not fit in
    /// [`max_bytes`](SpoolConfig::max_bytes) and failed as overloaded (`503`), and nothing
    /// was freed since. Destinations without events held still go straight to the broker.
    Full,
    /// A write failed; the spool takes nothing more until the process restarts (what it
    /// holds is forwarded then). Destinations without events held still go straight to the
    /// broker while it is up.
    Failed,
}

impl SpoolState {
    /// `"direct"`, `"spooling"`, `"full"` or `"failed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Spooling => "spooling",
            Self::Full => "full",
            Self::Failed => "failed",
        }
    }
}

/// How a [`Spool`] stores and forwards; public fields, [`Default`] and [`new`](Self::new).
///
/// ```
/// use std::time::Duration;
/// use firefly_webhook::spool::SpoolConfig;
///
/// let mut config = SpoolConfig::new("/var/lib/firefly/spool");
/// config.max_bytes = 4 << 30;
/// config.publish_timeout = Duration::from_millis(500);
/// assert_eq!(config.segment_bytes, 64 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolConfig {
    /// The directory (created when missing; default [`DEFAULT_SPOOL_DIR`]). One log per
    /// directory: a second open in this process fails with [`SpoolError::InUse`], one in
    /// another process with [`SpoolError::Locked`]; give each gateway its own.
    pub dir: PathBuf,
    /// Bytes the directory holds at most (default 1 GiB); an event that does not fit fails
    /// as [`PublishError::Overloaded`].
    pub max_bytes: u64,
    /// Size at which a segment file is closed and the next one started (default 64 MiB; at
    /// most a quarter of `max_bytes`, at least 4 KiB).
    pub segment_bytes: u64,
    /// Bytes of events kept in memory for forwarding (default 64 MiB); the rest is read back
    /// from disk.
    pub cache_bytes: usize,
    /// How long a publish waits for the broker before the event is spooled (default 1 s).
    pub publish_timeout: Duration,
    /// How long the forwarder waits for the broker to confirm an event (default 10 s).
    pub forward_timeout: Duration,
    /// Events the forwarder has in flight at most, all destinations together (default 64).
    pub forward_concurrency: usize,
    /// Events of one destination the forwarder has in flight at most (default 64), started
    /// in order. Set it to 1 when the publisher may reorder concurrent publishes of one
    /// destination (one spread over a pool of AMQP channels does), or for strict order
    /// through a broker failure; each destination then drains one confirmation at a time.
    pub forward_window: usize,
    /// The forwarder's first wait after a failure; it doubles up to `max_backoff` (default
    /// 100 ms).
    pub backoff: Duration,
    /// The forwarder's longest wait between attempts while the broker is down (default 10 s).
    pub max_backoff: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            max_bytes: 1024 * MIB,
            segment_bytes: 64 * MIB,
            cache_bytes: 64 * 1024 * 1024,
            publish_timeout: Duration::from_secs(1),
            forward_timeout: Duration::from_secs(10),
            forward_concurrency: 64,
            forward_window: 64,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl SpoolConfig {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Self::default()
        }
    }

    fn log(&self) -> LogConfig {
        log_config(
            &self.dir,
            self.max_bytes,
            self.segment_bytes,
            self.cache_bytes,
            SPOOL,
        )
    }
}

fn log_config(
    dir: &Path,
    max_bytes: u64,
    segment_bytes: u64,
    cache_bytes: usize,
    kind: &'static str,
) -> LogConfig {
    LogConfig {
        dir: dir.to_owned(),
        max_bytes,
        segment_bytes: segment_bytes.min(max_bytes / 4).max(MIN_SEGMENT_BYTES),
        cache_bytes,
        kind,
    }
}

/// Aborts the forwarder when the last [`Spool`] clone is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A durable local log in front of the publisher `P`; see the [module docs](self).
///
/// Cloning is cheap and shares the log and the forwarder. Dropping the last clone stops the
/// forwarder; what is still spooled stays on disk and is forwarded after the next
/// [`open`](Self::open).
pub struct Spool<P> {
    inner: Arc<P>,
    log: Arc<Log>,
    config: Arc<SpoolConfig>,
    forwarder: Arc<AbortOnDrop>,
}

impl<P> Clone for Spool<P> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            log: Arc::clone(&self.log),
            config: Arc::clone(&self.config),
            forwarder: Arc::clone(&self.forwarder),
        }
    }
}

impl<P> fmt::Debug for Spool<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.log.dir())
            .field("events", &self.log.lock().events())
            .field("bytes", &self.log.used())
            .finish_non_exhaustive()
    }
}

impl<P: Publisher> Spool<P> {
    /// Opens (or creates) the spool in [`config.dir`](SpoolConfig::dir) in front of `inner`,
    /// replays what it holds, and starts forwarding it. Must be called within a tokio
    /// runtime, which runs the forwarder.
    pub async fn open(inner: P, config: SpoolConfig) -> Result<Self, SpoolError> {
        let log_config = config.log();
        let dir = log_config.dir.clone();
        let log = tokio::task::spawn_blocking(move || Log::open(log_config))
            .await
            .map_err(|e| SpoolError::Io {
                path: dir,
                source: std::io::Error::other(e),
            })??;
        let log = Arc::new(log);
        let inner = Arc::new(inner);
        let settings = forward::Settings {
            timeout: config.forward_timeout,
            concurrency: config.forward_concurrency.max(1),
            window: config
                .forward_window
                .clamp(1, config.forward_concurrency.max(1)),
            backoff: config.backoff,
            max_backoff: config.max_backoff.max(config.backoff),
        };
        let forwarder = tokio::spawn(forward::run(
            Arc::downgrade(&log),
            Arc::clone(log.shared()),
            Arc::clone(&inner),
            settings,
        ));
        Ok(Self {
            inner,
            log,
            config: Arc::new(config),
            forwarder: Arc::new(AbortOnDrop(forwarder)),
        })
    }

    /// Publishes `event` to the broker, or spools it (see the [module docs](self)), and says
    /// which. Fails as [overloaded](PublishError::Overloaded) when the spool is full, as
    /// [rejected](PublishError::Rejected) when the broker rejects the event.
    pub async fn publish_with_storage(
        &self,
        destination: &str,
        event: WebhookEvent,
    ) -> Result<Storage, PublishError> {
        // Behind events of the same destination that are still spooled: keeps their order.
        if self.log.lock().pending(destination) == 0 {
            let publish = self.inner.publish(destination, event.clone());
            match tokio::time::timeout(self.config.publish_timeout, publish).await {
                Ok(Ok(())) => return Ok(Storage::Broker),
                Ok(Err(error @ PublishError::Rejected(_))) => return Err(error),
                Ok(Err(error)) => {
                    tracing::debug!(%destination, %error, "broker unavailable; spooling");
                }
                Err(_) => tracing::debug!(%destination, "broker too slow; spooling"),
            }
        }
        self.log.append(destination, &event).await?;
        Ok(Storage::Spool)
    }

    /// What the spool is doing now: for a readiness probe that says "degraded" while it is
    /// [`Spooling`](SpoolState::Spooling).
    pub fn state(&self) -> SpoolState {
        if self.log.failed() {
            SpoolState::Failed
        } else if self.log.full() {
            SpoolState::Full
        } else if self.log.lock().events() > 0 {
            SpoolState::Spooling
        } else {
            SpoolState::Direct
        }
    }

    /// Whether events are held on disk (not forwarded yet).
    pub fn is_spooling(&self) -> bool {
        self.events() > 0
    }

    /// Events held, all destinations together.
    pub fn events(&self) -> usize {
        self.log.lock().events()
    }

    /// Events held for `destination`, being forwarded included. While it is not zero, new
    /// events of `destination` are spooled behind them.
    pub fn pending(&self, destination: &str) -> usize {
        self.log.lock().pending(destination)
    }

    /// Bytes of the spool's files; at most [`max_bytes`](SpoolConfig::max_bytes).
    pub fn bytes(&self) -> u64 {
        self.log.used()
    }

    /// How long the oldest held event has waited.
    pub fn oldest_age(&self) -> Option<Duration> {
        let oldest = self.log.lock().oldest_ms()?;
        Some(Duration::from_millis(now_ms().saturating_sub(oldest)))
    }

    /// The publisher it forwards to.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Its configuration.
    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    /// The events the broker rejected while they were forwarded to `destination`, oldest
    /// first, with their failure records.
    pub async fn dead_letters(
        &self,
        destination: &str,
    ) -> Result<Vec<(WebhookEvent, crate::DeadLetter)>, SpoolError> {
        self.log.dead_letters(destination).await
    }

    /// Deletes the dead letters of `destination`.
    pub async fn clear_dead_letters(&self, destination: &str) -> Result<(), SpoolError> {
        self.log.clear_dead_letters(destination).await
    }

    /// The destinations that have dead letters, sorted; see
    /// [`DiskBroker::dead_letter_destinations`].
    pub async fn dead_letter_destinations(&self) -> Result<Vec<String>, SpoolError> {
        self.log.dead_letter_destinations().await
    }

    /// Deletes the dead letters of `destination` that `keys` name, and says how many; see
    /// [`DiskBroker::remove_dead_letters`].
    pub async fn remove_dead_letters(
        &self,
        destination: &str,
        keys: &[DeadLetterKey],
    ) -> Result<u64, SpoolError> {
        self.log
            .remove_dead_letters(destination, stored_keys(keys))
            .await
    }
}

#[async_trait]
impl<P: Publisher> Publisher for Spool<P> {
    /// [`publish_with_storage`](Spool::publish_with_storage), without saying where.
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        Spool::publish_with_storage(self, destination, event)
            .await
            .map(|_| ())
    }

    async fn publish_with_storage(
        &self,
        destination: &str,
        event: WebhookEvent,
    ) -> Result<Storage, PublishError> {
        Spool::publish_with_storage(self, destination, event).await
    }

    /// `Ok` while the spool can take events, even with the broker down; unavailable once a
    /// write failed, overloaded when it is [full](SpoolState::Full).
    async fn health(&self) -> Result<(), PublishError> {
        match self.state() {
            SpoolState::Failed => Err(PublishError::unavailable(log::Stopped::Failed)),
            SpoolState::Full => Err(PublishError::Overloaded),
            _ => Ok(()),
        }
    }
}
