//! The log the spool and the disk transport share: a directory of segments, its index, the
//! writer thread, and the operations on them.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use super::SpoolError;
use super::format;
use super::index::{Index, Locator, Slot};
use super::recover::{self, read_dead, segment_path};
use super::writer::{Op, Request, Writer};
use crate::dead_letter::DeadLetter;
use crate::event::WebhookEvent;
use crate::metric::{LOG, SPOOL_BYTES, SPOOL_CUT_TOTAL, SPOOL_EVENTS, SPOOL_OLDEST_AGE_SECONDS};
use crate::publish::PublishError;

/// Now, in Unix milliseconds (0 before 1970: a clock that wrong delays nothing).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How a log is opened.
#[derive(Debug, Clone)]
pub(super) struct LogConfig {
    pub(super) dir: PathBuf,
    pub(super) max_bytes: u64,
    pub(super) segment_bytes: u64,
    pub(super) cache_bytes: usize,
    /// The [`LOG`] label of its metrics.
    pub(super) kind: &'static str,
}

/// The write that made the log stop (see the writer's `fail`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the spool could not write to disk")]
pub(super) struct WriteFailed(#[source] Arc<io::Error>);

impl WriteFailed {
    pub(super) fn new(error: io::Error) -> Self {
        Self(Arc::new(error))
    }
}

/// Why the log takes nothing more.
#[derive(Debug, thiserror::Error)]
pub(super) enum Stopped {
    #[error("the spool is closed")]
    Closed,
    #[error("the spool stopped after a failed write; restart to recover")]
    Failed,
}

/// An event larger than the whole budget.
#[derive(Debug, thiserror::Error)]
#[error("the event ({size} bytes) is larger than the spool ({budget} bytes)")]
pub(super) struct TooLarge {
    size: u64,
    budget: u64,
}

/// What the writer thread and the handles share.
#[derive(Debug)]
pub(super) struct Shared {
    index: Mutex<Index>,
    /// Woken when entries become deliverable and when the log closes.
    pub(super) notify: Notify,
    /// Bytes of the directory's files plus those reserved by appends in the queue.
    pub(super) used: AtomicU64,
    pub(super) failed: AtomicBool,
    /// The last append that needed room did not fit, and nothing was freed since.
    pub(super) full: AtomicBool,
    closed: AtomicBool,
    kind: &'static str,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Index> {
        // Every critical section leaves the index consistent before it can panic.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refreshes the gauges.
    pub(super) fn report(&self) {
        let (events, oldest) = {
            let index = self.lock();
            (index.events(), index.oldest_ms())
        };
        let age = oldest.map_or(0, |ms| now_ms().saturating_sub(ms));
        #[allow(clippy::cast_precision_loss)] // gauges; exact far beyond any real size
        {
            metrics::gauge!(SPOOL_EVENTS, LOG => self.kind).set(events as f64);
            metrics::gauge!(SPOOL_BYTES, LOG => self.kind)
                .set(self.used.load(Ordering::Acquire) as f64);
            metrics::gauge!(SPOOL_OLDEST_AGE_SECONDS, LOG => self.kind).set(age as f64 / 1000.0);
        }
    }
}

/// An open log. Dropping the last handle stops the writer once it has written what is
/// queued, and frees the directory.
#[derive(Debug)]
pub(super) struct Log {
    shared: Arc<Shared>,
    dir: PathBuf,
    config: LogConfig,
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<thread::JoinHandle<()>>,
    _claim: Claim,
}

impl Log {
    /// Opens (or creates) the log in `config.dir`, replaying what it holds. Blocks.
    pub(super) fn open(config: LogConfig) -> Result<Self, SpoolError> {
        let claim = Claim::new(&config.dir)?;
        let dir = claim.dir.clone();
        let io = |source| SpoolError::Io {
            path: dir.clone(),
            source,
        };
        let recovered = recover::recover(&dir, config.segment_bytes, config.cache_bytes, now_ms())
            .map_err(io)?;
        if recovered.cut > 0 {
            metrics::counter!(SPOOL_CUT_TOTAL, LOG => config.kind).increment(recovered.cut);
        }
        let shared = Arc::new(Shared {
            index: Mutex::new(recovered.index),
            notify: Notify::new(),
            used: AtomicU64::new(recovered.used),
            failed: AtomicBool::new(false),
            full: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            kind: config.kind,
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            dir: dir.clone(),
            segment_bytes: config.segment_bytes,
            active: recovered.active,
            active_base: recovered.active_base,
            active_len: recovered.active_len,
            next_seq: recovered.next_seq,
            buf: Vec::new(),
            dead: std::collections::HashMap::new(),
            written: 0,
            reported: None,
            syncs: None,
            collected: None,
            sync_file: None,
        };
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name(format!("firefly-{}-writer", config.kind))
            .spawn(move || writer.run(&rx))
            .map_err(io)?;
        {
            let index = shared.lock();
            tracing::info!(
                dir = %dir.display(),
                events = index.events(),
                bytes = shared.used.load(Ordering::Acquire),
                "{} opened", config.kind
            );
        }
        Ok(Self {
            shared,
            dir,
            config,
            tx: Some(tx),
            writer: Some(handle),
            _claim: claim,
        })
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Index> {
        self.shared.lock()
    }

    /// The directory, canonical.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the directory's files (and of appends being written).
    pub(super) fn used(&self) -> u64 {
        self.shared.used.load(Ordering::Acquire)
    }

    pub(super) fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    pub(super) fn closed(&self) -> bool {
        self.shared.closed()
    }

    /// Whether the last append that needed room did not fit (and nothing was freed since).
    pub(super) fn full(&self) -> bool {
        self.shared.full.load(Ordering::Acquire)
    }

    /// Stops taking new events and wakes every consumer.
    pub(super) fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.notify.notify_waiters();
    }

    /// Why nothing can be appended now, if so.
    pub(super) fn stopped(&self) -> Option<Stopped> {
        if self.failed() {
            Some(Stopped::Failed)
        } else if self.closed() {
            Some(Stopped::Closed)
        } else {
            None
        }
    }

    fn send(&self, ops: Vec<Op>, done: Option<oneshot::Sender<Result<(), WriteFailed>>>) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(Request { ops, done }).is_ok())
    }

    /// Writes `ops` together and waits until they are durable.
    async fn write(&self, ops: Vec<Op>) -> Result<(), crate::BoxError> {
        let (done, durable) = oneshot::channel();
        if !self.send(ops, Some(done)) {
            return Err(Stopped::Failed.into());
        }
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failed)) => Err(failed.into()),
            Err(_) => Err(Stopped::Failed.into()),
        }
    }

    /// Appends `event` for `destination` and returns once it is durable: overloaded when it
    /// does not fit in `max_bytes` now, rejected when it never could.
    pub(super) async fn append(
        &self,
        destination: &str,
        event: &WebhookEvent,
    ) -> Result<(), PublishError> {
        if let Some(stopped) = self.stopped() {
            return Err(PublishError::unavailable(stopped));
        }
        let encoded = format::encode_event(event).map_err(PublishError::rejected)?;
        let len = format::entry_len(destination, &encoded) as u64;
        let budget = self.config.max_bytes;
        if len > budget {
            return Err(PublishError::rejected(TooLarge { size: len, budget }));
        }
        let reserved = self
            .shared
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + len <= budget).then_some(used + len)
            });
        self.shared.full.store(reserved.is_err(), Ordering::Release);
        if reserved.is_err() {
            return Err(PublishError::Overloaded);
        }
        let (done, durable) = oneshot::channel();
        let op = Op::Append {
            destination: destination.to_owned(),
            event: Bytes::from(encoded),
            attempt: 1,
            due_ms: 0,
            reserved: len,
        };
        if !self.send(vec![op], Some(done)) {
            self.shared.used.fetch_sub(len, Ordering::AcqRel);
            return Err(PublishError::unavailable(Stopped::Failed));
        }
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failed)) => Err(PublishError::unavailable(failed)),
            Err(_) => Err(PublishError::unavailable(Stopped::Failed)),
        }
    }

    /// Releases handed-out entries: the index forgets them now, their release records are
    /// written with the next batch and not waited for (a crash before that delivers them
    /// again).
    pub(super) fn release(&self, released: Vec<(String, Slot)>) {
        if released.is_empty() {
            return;
        }
        let ops = {
            let mut index = self.lock();
            released
                .into_iter()
                .map(|(destination, slot)| {
                    index.release(&destination, &slot);
                    Op::Release { seq: slot.seq }
                })
                .collect()
        };
        // A stopped writer loses them; the restart that recovers delivers those entries again.
        let _ = self.send(ops, None);
    }

    /// Writes `op` and the release of `slot` in one batch, `op` first, and releases `slot`
    /// once both are durable. If they are not, `slot` goes back to its queue.
    async fn replace(
        &self,
        destination: String,
        slot: Slot,
        op: Op,
    ) -> Result<(), crate::BoxError> {
        match self.write(vec![op, Op::Release { seq: slot.seq }]).await {
            Ok(()) => {
                self.lock().release(&destination, &slot);
                Ok(())
            }
            Err(error) => {
                let attempt = slot.attempt;
                self.requeue(destination, slot, attempt);
                Err(error)
            }
        }
    }

    /// Appends `event` again as `attempt`, deliverable after `delay`, and releases `slot`.
    pub(super) async fn retry(
        &self,
        destination: String,
        slot: Slot,
        event: &WebhookEvent,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), crate::BoxError> {
        let encoded = format::encode_event(event)?;
        let due_ms = if delay.is_zero() {
            0
        } else {
            now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
        };
        let op = Op::Append {
            destination: destination.clone(),
            event: Bytes::from(encoded),
            attempt,
            due_ms,
            reserved: 0,
        };
        self.replace(destination, slot, op).await
    }

    /// Writes a dead letter to `destination`'s dead-letter file, then releases `slot`.
    pub(super) async fn dead_letter(
        &self,
        destination: String,
        slot: Slot,
        failure: &DeadLetter,
        event: &WebhookEvent,
    ) -> Result<(), crate::BoxError> {
        let encoded = format::encode_event(event)?;
        let mut frame = Vec::new();
        format::dead(&mut frame, &destination, failure, &encoded)?;
        let op = Op::Dead {
            destination: destination.clone(),
            frame,
        };
        self.replace(destination, slot, op).await
    }

    /// Gives a handed-out entry back to the front of its queue.
    pub(super) fn requeue(&self, destination: String, slot: Slot, attempt: u32) {
        self.lock().requeue(destination, slot, attempt);
        self.shared.notify.notify_waiters();
    }

    /// Gives handed-out entries back to the front of their queue, in order.
    pub(super) fn requeue_all(&self, destination: &str, slots: Vec<Slot>) {
        if slots.is_empty() {
            return;
        }
        self.lock().requeue_all(destination, slots);
        self.shared.notify.notify_waiters();
    }

    /// The encoded events at `locators`: from memory, or read back from their segments (all
    /// on one blocking thread).
    pub(super) async fn read(&self, locators: Vec<Locator>) -> io::Result<Vec<Bytes>> {
        if locators.iter().all(|l| l.cached.is_some()) {
            return Ok(locators.into_iter().filter_map(|l| l.cached).collect());
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            locators
                .into_iter()
                .map(|l| match l.cached {
                    Some(bytes) => Ok(bytes),
                    None => read_entry(&segment_path(&dir, l.segment), l.offset, l.frame_len),
                })
                .collect()
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The dead letters of `destination`, oldest first.
    pub(super) async fn dead_letters(
        &self,
        destination: &str,
    ) -> Result<Vec<(WebhookEvent, DeadLetter)>, SpoolError> {
        let (dir, name) = (self.dir.clone(), destination.to_owned());
        let path = self.dir.clone();
        tokio::task::spawn_blocking(move || read_dead(&dir, &name))
            .await
            .map_err(io::Error::other)
            .and_then(|read| read)
            .map_err(|source| SpoolError::Io { path, source })
    }

    /// Deletes the dead letters of `destination`.
    pub(super) async fn clear_dead_letters(&self, destination: &str) -> Result<(), SpoolError> {
        let op = Op::ClearDead {
            destination: destination.to_owned(),
        };
        self.write(vec![op]).await.map_err(|e| SpoolError::Io {
            path: self.dir.clone(),
            source: io::Error::other(e),
        })
    }
}

impl Log {
    /// Removes the dead letters of `destination` whose (event id, dead-lettered at in Unix
    /// ns) is in `keys`; returns once the removal is durable, with how many it removed.
    pub(super) async fn remove_dead_letters(
        &self,
        destination: &str,
        keys: std::collections::HashSet<(crate::EventId, i128)>,
    ) -> Result<u64, SpoolError> {
        let io = |source| SpoolError::Io {
            path: self.dir.clone(),
            source,
        };
        if keys.is_empty() {
            return Ok(0);
        }
        let (removed, count) = oneshot::channel();
        let op = Op::RemoveDead {
            destination: destination.to_owned(),
            keys,
            removed: Some(removed),
        };
        self.write(vec![op])
            .await
            .map_err(|e| io(io::Error::other(e)))?;
        count
            .await
            .map_err(|_| io(io::Error::other(Stopped::Failed)))
    }

    /// The destinations that have dead letters, sorted.
    pub(super) async fn dead_letter_destinations(&self) -> Result<Vec<String>, SpoolError> {
        let dir = self.dir.clone();
        let path = self.dir.clone();
        tokio::task::spawn_blocking(move || recover::dead_destinations(&dir))
            .await
            .map_err(io::Error::other)
            .and_then(|read| read)
            .map_err(|source| SpoolError::Io { path, source })
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
        // The writer writes what is queued and ends when its channel closes; the directory
        // is free once it has.
        self.tx = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Reads the event bytes of the entry whose frame is at `offset` in `path`.
fn read_entry(path: &Path, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = vec![0; len];
    file.read_exact(&mut data)?;
    let data = Bytes::from(data);
    let invalid = |e: format::Corrupt| io::Error::new(io::ErrorKind::InvalidData, e);
    let (payload, _) = format::read_frame(&data, 0)
        .map_err(invalid)?
        .ok_or_else(|| invalid(format::Corrupt::Torn))?;
    let payload = data.slice_ref(payload);
    format::entry_event(&payload)
        .map(|(_, event)| event)
        .map_err(invalid)
}

/// The directories open in this process: two logs on one directory would corrupt it.
static OPEN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// How long opening waits for a directory that a log being dropped still holds.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// The file in a log directory that the process using it holds an exclusive lock on.
pub(super) const LOCK_FILE: &str = "lock";

/// This process's claim on a log directory, released on drop: an entry in [`OPEN`] against
/// the other logs of this process, and an exclusive lock on its [`LOCK_FILE`] against other
/// processes (`flock` on Unix, `LockFileEx` on Windows; the system releases it when the
/// process ends, however it ends, so a crash leaves no stale lock).
#[derive(Debug)]
struct Claim {
    dir: PathBuf,
    lock: Option<File>,
}

impl Claim {
    fn new(dir: &Path) -> Result<Self, SpoolError> {
        let io = |source| SpoolError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let dir = dir.canonicalize().map_err(io)?;
        let started = std::time::Instant::now();
        loop {
            {
                let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
                if !open.contains(&dir) {
                    open.push(dir.clone());
                    break;
                }
            }
            if started.elapsed() >= CLAIM_WAIT {
                return Err(SpoolError::InUse(dir));
            }
            thread::sleep(Duration::from_millis(10));
        }
        // From here on, dropping the claim gives the directory back to this process.
        let mut claim = Self { dir, lock: None };
        let io = |source| SpoolError::Io {
            path: claim.dir.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(claim.dir.join(LOCK_FILE))
            .map_err(io)?;
        // Called through the trait: `File::try_lock` needs a newer Rust than this crate.
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(claim.dir.clone()));
            }
            Err(fs4::TryLockError::Error(source)) => return Err(io(source)),
        }
        claim.lock = Some(file);
        Ok(claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // The file lock first: a log of this process waiting in `new` takes it next.
        drop(self.lock.take());
        OPEN.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|dir| *dir != self.dir);
    }
}
