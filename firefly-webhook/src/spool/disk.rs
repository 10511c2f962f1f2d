//! The disk transport: the spool's log as an embedded durable broker.

use std::convert::Infallible;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::index::{Cursor, Slot};
use super::log::{Log, now_ms};
use super::{
    DEFAULT_DISK_DIR, DISK, DeadLetterKey, MIB, SpoolError, format, log_config, stored_keys,
};
use crate::broker::Broker;
use crate::dead_letter::DeadLetter;
use crate::event::WebhookEvent;
use crate::publish::{PublishError, Publisher};
use crate::subscribe::{Acker, Delivery, Position, SubscribeError, Subscriber};

/// How a [`DiskBroker`] stores; public fields, [`Default`] and [`new`](Self::new).
///
/// ```
/// use firefly_webhook::spool::DiskConfig;
///
/// let mut config = DiskConfig::new("/var/lib/firefly/queue");
/// config.max_bytes = 8 << 30;
/// assert_eq!(config.segment_bytes, 64 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskConfig {
    /// The directory (created when missing; default [`DEFAULT_DISK_DIR`]). One log per
    /// directory: a second open in this process fails with [`SpoolError::InUse`], one in
    /// another process (a gateway running on it, say) with [`SpoolError::Locked`].
    pub dir: PathBuf,
    /// Bytes the directory holds at most, dead letters included (default 1 GiB); a publish
    /// that does not fit fails as [`PublishError::Overloaded`].
    pub max_bytes: u64,
    /// Size at which a segment file is closed and the next one started (default 64 MiB; at
    /// most a quarter of `max_bytes`, at least 4 KiB).
    pub segment_bytes: u64,
    /// Bytes of events kept in memory for delivery (default 64 MiB); the rest is read back
    /// from disk.
    pub cache_bytes: usize,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_DISK_DIR),
            max_bytes: 1024 * MIB,
            segment_bytes: 64 * MIB,
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl DiskConfig {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Self::default()
        }
    }
}

/// An embedded durable broker in a local directory; see the
/// [module docs](super#the-disk-transport). Cloning is cheap and shares the log.
///
/// Like the other transports: [`new`](Self::new) (opens the directory, blocking) or
/// [`connect`](Self::connect) (the same on a blocking thread), then
/// [`publisher`](Self::publisher) and [`subscriber`](Self::subscriber).
#[derive(Clone)]
pub struct DiskBroker {
    log: Arc<Log>,
    config: Arc<DiskConfig>,
}

impl fmt::Debug for DiskBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskBroker")
            .field("config", &self.config)
            .field("events", &self.events())
            .finish_non_exhaustive()
    }
}

impl DiskBroker {
    /// Opens (or creates) the log in [`config.dir`](DiskConfig::dir) and replays it. Blocks
    /// while it reads the directory: at start-up, or use [`connect`](Self::connect).
    pub fn new(config: DiskConfig) -> Result<Self, SpoolError> {
        let log = Log::open(log_config(
            &config.dir,
            config.max_bytes,
            config.segment_bytes,
            config.cache_bytes,
            DISK,
        ))?;
        Ok(Self {
            log: Arc::new(log),
            config: Arc::new(config),
        })
    }

    /// [`new`](Self::new) on a blocking thread of the tokio runtime.
    pub async fn connect(config: DiskConfig) -> Result<Self, SpoolError> {
        let dir = config.dir.clone();
        tokio::task::spawn_blocking(move || Self::new(config))
            .await
            .map_err(|e| SpoolError::Io {
                path: dir,
                source: std::io::Error::other(e),
            })?
    }

    /// Its configuration.
    pub fn config(&self) -> &DiskConfig {
        &self.config
    }

    /// A publisher into this broker.
    pub fn publisher(&self) -> DiskPublisher {
        DiskPublisher {
            log: Arc::clone(&self.log),
        }
    }

    /// A subscriber of every destination.
    pub fn subscriber_all(&self) -> DiskSubscriber {
        DiskSubscriber {
            log: Arc::clone(&self.log),
            destinations: None,
            cursor: Cursor::After(None),
        }
    }

    /// A subscriber of the named destinations. Several subscribers of one destination
    /// compete for its events.
    pub fn subscriber<I, S>(&self, destinations: I) -> Result<DiskSubscriber, Infallible>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ok(DiskSubscriber {
            log: Arc::clone(&self.log),
            destinations: Some(destinations.into_iter().map(Into::into).collect()),
            cursor: Cursor::Index(0),
        })
    }

    /// Events of `destination` not acked yet: queued, waiting for a delayed retry, or
    /// handed out.
    pub fn pending(&self, destination: &str) -> usize {
        self.log.lock().pending(destination)
    }

    /// Events not acked yet, all destinations together.
    pub fn events(&self) -> usize {
        self.log.lock().events()
    }

    /// Deliveries handed out and not settled, plus retries waiting for their time.
    pub fn in_flight(&self) -> usize {
        self.log.lock().in_flight()
    }

    /// Bytes of the directory's files, dead letters included; at most
    /// [`max_bytes`](DiskConfig::max_bytes).
    pub fn bytes(&self) -> u64 {
        self.log.used()
    }

    /// The dead letters of `destination`, oldest first, with their failure records.
    pub async fn dead_letters(
        &self,
        destination: &str,
    ) -> Result<Vec<(WebhookEvent, DeadLetter)>, SpoolError> {
        self.log.dead_letters(destination).await
    }

    /// Deletes the dead letters of `destination` (they count against
    /// [`max_bytes`](DiskConfig::max_bytes)).
    pub async fn clear_dead_letters(&self, destination: &str) -> Result<(), SpoolError> {
        self.log.clear_dead_letters(destination).await
    }

    /// The destinations that have dead letters, sorted: what an operator's tool lists when
    /// no destination is named.
    pub async fn dead_letter_destinations(&self) -> Result<Vec<String>, SpoolError> {
        self.log.dead_letter_destinations().await
    }

    /// Deletes the dead letters of `destination` that `keys` name (keys of none are
    /// ignored), and says how many it deleted. Returns once the deletion is durable.
    ///
    /// Crash-safe: the destination's dead-letter file is rewritten without them into a new
    /// file, which replaces it with an atomic rename once it is on disk; interrupted at any
    /// point, the file holds either all of them or none, and every other dead letter.
    /// Dead letters written meanwhile by this process are kept. Each call rewrites the
    /// file, so remove many at once.
    ///
    /// To replay a dead letter, publish its event with [`publisher`](Self::publisher), then
    /// remove it: interrupted in between, the event is in both places, a duplicate that the
    /// worker's idempotency absorbs, never in neither.
    ///
    /// ```
    /// use firefly_webhook::spool::{DeadLetterKey, DiskBroker, DiskConfig};
    /// use firefly_webhook::Publisher;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("firefly-disk-remove-doc-{}", std::process::id()));
    /// let broker = DiskBroker::connect(DiskConfig::new(&dir)).await?;
    /// for destination in broker.dead_letter_destinations().await? {
    ///     let mut replayed = Vec::new();
    ///     for (event, failure) in broker.dead_letters(&destination).await? {
    ///         let key = DeadLetterKey::of(&event, &failure);
    ///         broker.publisher().publish(&destination, event).await?;
    ///         replayed.push(key);
    ///     }
    ///     broker.remove_dead_letters(&destination, &replayed).await?;
    /// }
    /// # drop(broker); std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn remove_dead_letters(
        &self,
        destination: &str,
        keys: &[DeadLetterKey],
    ) -> Result<u64, SpoolError> {
        self.log
            .remove_dead_letters(destination, stored_keys(keys))
            .await
    }

    /// Stops accepting events (publish fails as unavailable). Subscribers keep delivering
    /// what is queued and end once nothing is queued, in flight or waiting for a retry.
    pub fn close(&self) {
        self.log.close();
    }
}

#[async_trait]
impl Broker for DiskBroker {
    type Publisher = DiskPublisher;
    type Subscriber = DiskSubscriber;
    type Error = Infallible;

    fn name(&self) -> &'static str {
        DISK
    }

    fn publisher(&self) -> DiskPublisher {
        DiskBroker::publisher(self)
    }

    fn subscriber<I, S>(&self, destinations: I) -> Result<DiskSubscriber, Infallible>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        DiskBroker::subscriber(self, destinations)
    }
}

/// Publishes into a [`DiskBroker`]: `Ok` once the event is on disk.
#[derive(Clone)]
pub struct DiskPublisher {
    log: Arc<Log>,
}

impl fmt::Debug for DiskPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskPublisher").finish_non_exhaustive()
    }
}

#[async_trait]
impl Publisher for DiskPublisher {
    /// Appends `event`; overloaded when it does not fit in `max_bytes` now, rejected when it
    /// never could, unavailable once the broker is closed or a write failed.
    async fn publish(&self, destination: &str, event: WebhookEvent) -> Result<(), PublishError> {
        self.log.append(destination, &event).await
    }

    /// Unavailable once closed or after a failed write; overloaded while the last publish
    /// that needed room did not fit (until acks free some).
    async fn health(&self) -> Result<(), PublishError> {
        if let Some(stopped) = self.log.stopped() {
            return Err(PublishError::unavailable(stopped));
        }
        if self.log.full() {
            return Err(PublishError::Overloaded);
        }
        Ok(())
    }
}

/// Receives from a [`DiskBroker`].
pub struct DiskSubscriber {
    log: Arc<Log>,
    destinations: Option<Vec<String>>,
    cursor: Cursor,
}

impl fmt::Debug for DiskSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskSubscriber")
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscriber for DiskSubscriber {
    async fn next(&mut self) -> Option<Result<Delivery, SubscribeError>> {
        let shared = Arc::clone(self.log.shared());
        loop {
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (popped, promoted, due, idle) = {
                let mut index = self.log.lock();
                let promoted = index.promote_due(now_ms());
                let popped = index.pop(self.destinations.as_deref(), &mut self.cursor);
                (popped, promoted, index.next_due(), index.in_flight() == 0)
            };
            if promoted {
                // Some of them may be for other subscribers' destinations.
                shared.notify.notify_waiters();
            }
            if let Some((destination, slot)) = popped {
                return Some(self.deliver(destination, slot).await);
            }
            // A delivery still in flight may come back (retry, abandon): end only when none is.
            if idle && self.log.closed() {
                return None;
            }
            match due {
                Some(due) => {
                    let wait = Duration::from_millis(due.saturating_sub(now_ms()));
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

impl DiskSubscriber {
    async fn deliver(&self, destination: String, slot: Slot) -> Result<Delivery, SubscribeError> {
        let locator = slot.locator();
        let (seq, attempt) = (slot.seq, slot.attempt);
        // Held by the acker from here: if this future is dropped, the entry goes back.
        let acker = DiskAcker {
            log: Arc::clone(&self.log),
            held: Mutex::new(Some((destination.clone(), slot))),
        };
        let bytes = self
            .log
            .read(vec![locator])
            .await
            .map_err(|e| SubscribeError::Unavailable(e.into()))?;
        let Some(bytes) = bytes.into_iter().next() else {
            return Err(SubscribeError::Unavailable("the entry was not read".into()));
        };
        match format::decode_event(&bytes) {
            Ok(event) => Ok(Delivery::new(
                event,
                destination,
                attempt,
                Position::new(DISK, seq),
                acker,
            )),
            Err(error) => {
                // Its checksum matched, so this version did not write it: delivering it again
                // would fail the same way.
                tracing::error!(%destination, seq, %error, "dropped an unreadable event");
                if let Some(held) = acker.take() {
                    self.log.release(vec![held]);
                }
                Err(SubscribeError::Decode(error.into()))
            }
        }
    }
}

/// Settles one delivery. Dropped unsettled, it gives the entry back to the front of its
/// queue (and a crash before it is settled leaves it live on disk).
struct DiskAcker {
    log: Arc<Log>,
    held: Mutex<Option<(String, Slot)>>,
}

impl DiskAcker {
    fn take(&self) -> Option<(String, Slot)> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for DiskAcker {
    fn drop(&mut self) {
        if let Some((destination, slot)) = self.take() {
            let attempt = slot.attempt;
            self.log.requeue(destination, slot, attempt);
        }
    }
}

#[async_trait]
impl Acker for DiskAcker {
    async fn ack(&self) -> Result<(), SubscribeError> {
        if let Some(held) = self.take() {
            self.log.release(vec![held]);
        }
        Ok(())
    }

    async fn retry(
        &self,
        event: &WebhookEvent,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), SubscribeError> {
        let Some((destination, slot)) = self.take() else {
            return Ok(());
        };
        self.log
            .retry(destination, slot, event, next_attempt, delay)
            .await
            .map_err(SubscribeError::Settle)
    }

    async fn dead_letter(
        &self,
        event: &WebhookEvent,
        failure: &DeadLetter,
    ) -> Result<(), SubscribeError> {
        let Some((destination, slot)) = self.take() else {
            return Ok(());
        };
        self.log
            .dead_letter(destination, slot, failure, event)
            .await
            .map_err(SubscribeError::Settle)
    }

    async fn abandon(&self, _event: &WebhookEvent, attempt: u32) -> Result<(), SubscribeError> {
        if let Some((destination, slot)) = self.take() {
            self.log.requeue(destination, slot, attempt);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::dead_letter::FailureCategory;

    /// A directory of its own under the temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "firefly-disk-unit-{name}-{}-{}",
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

    async fn open(dir: &TempDir) -> DiskBroker {
        DiskBroker::connect(DiskConfig::new(dir.path()))
            .await
            .unwrap()
    }

    /// Publishes `events` to `destination` and dead-letters each as it is delivered.
    async fn dead_letter(broker: &DiskBroker, destination: &str, events: &[WebhookEvent]) {
        let mut subscriber = broker.subscriber([destination]).unwrap();
        for event in events {
            broker
                .publisher()
                .publish(destination, event.clone())
                .await
                .unwrap();
            let delivery = subscriber.next().await.unwrap().unwrap();
            let failure = DeadLetter::new(
                "boom",
                FailureCategory::Unrecoverable,
                1,
                "test",
                destination,
            );
            delivery.dead_letter(&failure).await.unwrap();
        }
    }

    fn events(n: usize) -> Vec<WebhookEvent> {
        (0..n)
            .map(|i| WebhookEvent::new("github", format!("{{\"n\":{i}}}")))
            .collect()
    }

    fn ids(letters: &[(WebhookEvent, DeadLetter)]) -> Vec<crate::EventId> {
        letters.iter().map(|(event, _)| event.id).collect()
    }

    #[tokio::test]
    async fn removed_dead_letters_stay_removed_after_reopening() {
        let dir = TempDir::new("remove");
        let broker = open(&dir).await;
        let sent = events(5);
        dead_letter(&broker, "github", &sent).await;
        dead_letter(&broker, "stripe", &events(1)).await;
        assert_eq!(
            broker.dead_letter_destinations().await.unwrap(),
            ["github", "stripe"]
        );
        let letters = broker.dead_letters("github").await.unwrap();
        let before = broker.bytes();
        let doomed: Vec<_> = [&letters[1], &letters[3]]
            .iter()
            .map(|(event, failure)| DeadLetterKey::of(event, failure))
            .collect();
        assert_eq!(
            broker.remove_dead_letters("github", &doomed).await.unwrap(),
            2
        );
        assert!(broker.bytes() < before, "the freed bytes are counted");
        // Again: nothing left to remove, and keys of another destination remove nothing.
        assert_eq!(
            broker.remove_dead_letters("github", &doomed).await.unwrap(),
            0
        );
        let stripe = broker.dead_letters("stripe").await.unwrap();
        let key = DeadLetterKey::of(&stripe[0].0, &stripe[0].1);
        assert_eq!(
            broker.remove_dead_letters("github", &[key]).await.unwrap(),
            0
        );
        drop(broker);

        let broker = open(&dir).await;
        let left = broker.dead_letters("github").await.unwrap();
        assert_eq!(ids(&left), [sent[0].id, sent[2].id, sent[4].id]);
        assert_eq!(left[0].0.body, sent[0].body);
        // Dead letters appended after a removal land in the rewritten file.
        let late = events(1);
        dead_letter(&broker, "github", &late).await;
        assert_eq!(broker.dead_letters("github").await.unwrap().len(), 4);
        let all: Vec<_> = broker
            .dead_letters("github")
            .await
            .unwrap()
            .iter()
            .map(|(event, failure)| DeadLetterKey::of(event, failure))
            .collect();
        assert_eq!(broker.remove_dead_letters("github", &all).await.unwrap(), 4);
        assert_eq!(broker.dead_letter_destinations().await.unwrap(), ["stripe"]);
        drop(broker);
        let broker = open(&dir).await;
        assert!(broker.dead_letters("github").await.unwrap().is_empty());
        assert_eq!(broker.dead_letters("stripe").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_later_dead_letter_of_the_same_event_is_kept() {
        let dir = TempDir::new("again");
        let broker = open(&dir).await;
        let event = events(1).remove(0);
        dead_letter(&broker, "github", std::slice::from_ref(&event)).await;
        let first = broker.dead_letters("github").await.unwrap();
        // Replayed and dead-lettered again before the first one was removed.
        tokio::time::sleep(Duration::from_millis(2)).await;
        dead_letter(&broker, "github", std::slice::from_ref(&event)).await;
        let key = DeadLetterKey::of(&first[0].0, &first[0].1);
        assert_eq!(
            broker.remove_dead_letters("github", &[key]).await.unwrap(),
            1
        );
        let left = broker.dead_letters("github").await.unwrap();
        assert_eq!(ids(&left), [event.id]);
        assert_ne!(left[0].1.rejected_at, first[0].1.rejected_at);
    }

    #[tokio::test]
    async fn an_unfinished_rewrite_neither_loses_nor_resurrects() {
        let dir = TempDir::new("torn");
        let broker = open(&dir).await;
        dead_letter(&broker, "github", &events(3)).await;
        let letters = broker.dead_letters("github").await.unwrap();
        let key = DeadLetterKey::of(&letters[0].0, &letters[0].1);
        assert_eq!(
            broker.remove_dead_letters("github", &[key]).await.unwrap(),
            1
        );
        drop(broker);
        let file = super::super::recover::dead_path(dir.path(), "github");
        let whole = std::fs::read(&file).unwrap();

        // A crash while the next rewrite was being written: its file is cut short and the
        // rename never happened.
        let rewrite = super::super::recover::dead_rewrite_path(&file);
        std::fs::write(&rewrite, &whole[..whole.len() / 2]).unwrap();
        // And a torn record at the end of the dead-letter file itself.
        let mut torn = whole.clone();
        torn.extend_from_slice(&[0x40, 0, 0, 0, 1, 2]);
        std::fs::write(&file, &torn).unwrap();

        let broker = open(&dir).await;
        assert!(
            !rewrite.exists(),
            "the unfinished rewrite is deleted on open"
        );
        let left = broker.dead_letters("github").await.unwrap();
        assert_eq!(ids(&left), ids(&letters[1..]), "nothing lost, nothing back");
        let key = DeadLetterKey::of(&left[0].0, &left[0].1);
        assert_eq!(
            broker.remove_dead_letters("github", &[key]).await.unwrap(),
            1
        );
        assert_eq!(
            ids(&broker.dead_letters("github").await.unwrap()),
            ids(&letters[2..])
        );
        assert!(std::fs::read(&file).unwrap().len() < whole.len());
    }

    #[tokio::test]
    async fn a_directory_locked_by_another_process_is_refused() {
        let dir = TempDir::new("locked");
        drop(open(&dir).await);
        // flock locks belong to an open file: another handle stands for another process.
        let other = std::fs::File::options()
            .read(true)
            .write(true)
            .open(dir.path().join(super::super::log::LOCK_FILE))
            .unwrap();
        fs4::FileExt::try_lock(&other).unwrap();
        let refused = DiskBroker::connect(DiskConfig::new(dir.path())).await;
        assert!(matches!(refused, Err(SpoolError::Locked(_))), "{refused:?}");
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("another process"), "{message}");
        drop(other);
        // The refused open gave its in-process claim back.
        drop(open(&dir).await);
    }
}
