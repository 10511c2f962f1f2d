//! Reading, replaying and purging dead letters: [`DeadLetters`].
//!
//! A subscriber dead-letters a message by writing it, unchanged plus the
//! [dead-letter attributes](firefly_webhook::wire), to its topic's dead-letter topic
//! ([`KafkaConfig::dead_letter_topic`], `{topic}.dlq` by default). This module reads those
//! topics back, republishes what an operator wants replayed and forgets what they purge.
//!
//! # What "removed" means on Kafka
//!
//! A topic cannot delete single records. What has been handled is recorded instead as the
//! committed offset of a consumer group that belongs to this module, [`REPLAY_GROUP`]
//! (`firefly-dlq-replay`; [`DeadLetters::group`] changes it): per partition of the
//! dead-letter topic, everything before the group's offset has been replayed or purged, and
//! a [`Cursor`] reads only what lies beyond it. The group never joins (it reads with a manual
//! assignment), so it shows no members, only offsets; resetting them
//! (`kafka-consumer-groups --reset-offsets`) brings dead letters back.
//!
//! So only a **leading run** of each partition can be removed: the committed offset moves past
//! a record only once every record before it in its partition was replayed or purged. A
//! filtered replay or purge handles the matching records up to the first record of the
//! partition that it keeps (that does not match, or failed); the matching records after it are
//! *blocked* (counted in [`Summary::blocked`]) and stay, to be handled once the records in
//! front of them are. Nothing is ever both replayed and still listed.
//!
//! Replaying republishes the original value, key and headers to the destination topic,
//! without the dead-letter attributes and the attempt counter (the worker starts again at
//! attempt 1), plus [`REPLAYED_AT`]; it waits for the broker's acknowledgement, then commits
//! the offset past the record. A replay stopped between the two (a crash, a killed process)
//! replays that record again next time: the worker's idempotency absorbs the duplicate. Run
//! one replay or purge per dead-letter topic at a time.
//!
//! ```no_run
//! use firefly_webhook_kafka::KafkaConfig;
//! use firefly_webhook_kafka::dlq::DeadLetters;
//!
//! # async fn run() -> Result<(), firefly_webhook_kafka::dlq::Error> {
//! let dead_letters = DeadLetters::connect(KafkaConfig::from_brokers("127.0.0.1:9092")).await?;
//! for letter in dead_letters.list("github", |_| true).await? {
//!     println!("{:?} {:?}", letter.id(), letter.dead_letter.as_ref().map(|d| &d.reason));
//! }
//! let summary = dead_letters
//!     .replay("github", |letter| letter.provider() == Some("github"), None)
//!     .await?;
//! println!("{} replayed, {} blocked", summary.handled, summary.blocked);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use firefly_webhook::wire::{self, Binding, WireError, WireHeader};
use firefly_webhook::{DeadLetter, EventId, PublishError, WebhookEvent};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::metadata::MetadataPartition;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::offset::KafkaOffset;
use crate::producer::Producer;

/// The consumer group whose committed offsets mark what was replayed or purged.
pub const REPLAY_GROUP: &str = "firefly-dlq-replay";

/// The header a replayed record carries: when it was replayed (RFC 3339), a CloudEvents
/// extension attribute like the dead-letter ones.
pub const REPLAYED_AT: &str = "ce_replayedat";

/// Prefix of the dead-letter attributes, which a replayed record drops.
const DEAD_LETTER_ATTRIBUTES: &str = "ce_deadletter";

/// Bound on each metadata, offset and watermark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Cursor::next`] waits for a record it knows is there before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What can go wrong reading, replaying or removing dead letters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Setting up a client or the configuration failed.
    #[error(transparent)]
    Setup(#[from] crate::Error),
    /// A Kafka request (metadata, offsets, fetch, commit) failed.
    #[error("kafka request failed")]
    Kafka(#[from] KafkaError),
    /// Republishing the record failed; it stays in the dead-letter topic.
    #[error("republishing the dead letter failed")]
    Publish(#[source] PublishError),
    /// The record does not follow the wire format, so it cannot be replayed (purge it).
    #[error("the dead letter cannot be replayed: {0}")]
    Undecodable(String),
    /// An earlier record of the same partition is still in the dead-letter topic: the group's
    /// offset cannot move past it (see the [module docs](self)).
    #[error("an earlier dead letter in {0} is kept, so this one cannot be removed")]
    Blocked(KafkaOffset),
    /// Records the topic holds did not arrive within 30 s.
    #[error("the dead-letter topic `{0}` stopped delivering records")]
    Stalled(String),
    /// A blocking librdkafka call could not be run.
    #[error("kafka call was interrupted")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One record of a dead-letter topic.
#[derive(Debug)]
#[non_exhaustive]
pub struct DeadLettered {
    /// The original event, as the worker received it; an error for a record that does not
    /// follow the wire format (dead-lettered as a `validation` failure).
    pub event: Result<WebhookEvent, WireError>,
    /// The record's value: the original body.
    pub body: Bytes,
    /// Why it was dead-lettered; `None` when the record carries no dead-letter attributes.
    pub dead_letter: Option<DeadLetter>,
    /// The destination (topic) it is replayed to.
    pub destination: String,
    /// Where it sits in the dead-letter topic.
    pub position: KafkaOffset,
    /// The record's headers, in order.
    pub headers: Vec<WireHeader>,
    key: Option<Bytes>,
}

impl DeadLettered {
    /// The event id, when the record has a readable one.
    pub fn id(&self) -> Option<EventId> {
        match &self.event {
            Ok(event) => Some(event.id),
            Err(_) => self.attribute("ce_id")?.parse().ok(),
        }
    }

    /// The provider, when the record names one.
    pub fn provider(&self) -> Option<&str> {
        match &self.event {
            Ok(event) => Some(&event.provider),
            Err(_) => self.attribute("ce_provider"),
        }
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        let (_, value) = self.headers.iter().find(|(n, _)| n == name)?;
        std::str::from_utf8(value).ok()
    }
}

/// How a replay or purge went (the shape every transport shares).
pub use firefly_webhook::dead_letter::Summary;

/// The dead-letter topics of a cluster: read them, replay records to their destination, purge
/// them. See the [module docs](self) for how records are removed.
///
/// [`new`](Self::new) creates the producer that replays, without waiting for the cluster;
/// [`connect`](Self::connect) also waits until the cluster answers.
#[derive(Clone)]
pub struct DeadLetters {
    config: Arc<KafkaConfig>,
    producer: Arc<Producer>,
    group: String,
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters")
            .field("config", &self.config)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// Dead letters on the cluster of `config`, named by its
    /// [`dead_letter_topic`](KafkaConfig::dead_letter_topic); replays go through a producer
    /// with its settings. Removal is recorded in [`REPLAY_GROUP`].
    pub fn new(config: KafkaConfig) -> Result<Self> {
        let producer = Producer::new(&config)?;
        Ok(Self {
            config: Arc::new(config),
            producer: Arc::new(producer),
            group: REPLAY_GROUP.to_owned(),
        })
    }

    /// [`new`](Self::new), then waits until the cluster answers a metadata request within
    /// [`health_timeout`](KafkaConfig::health_timeout).
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        let this = Self::new(config)?;
        this.producer
            .health()
            .await
            .map_err(|e| Error::Setup(crate::Error::Unreachable(e)))?;
        Ok(this)
    }

    /// Records removal in consumer group `group` instead of [`REPLAY_GROUP`].
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The consumer group that records removal.
    pub fn group_id(&self) -> &str {
        &self.group
    }

    /// The dead-letter topic of `destination`.
    pub fn topic(&self, destination: &str) -> String {
        self.config.dead_letter_topic_for(destination)
    }

    /// The destinations that have a dead-letter topic on the cluster, sorted.
    pub async fn destinations(&self) -> Result<Vec<String>> {
        let template = &self.config.dead_letter_topic;
        let Some((prefix, suffix)) = template.split_once("{topic}") else {
            return Err(Error::Setup(crate::Error::Config(format!(
                "the dead-letter topic `{template}` does not name its destination with {{topic}}"
            ))));
        };
        let (prefix, suffix) = (prefix.to_owned(), suffix.to_owned());
        let consumer = Arc::new(self.consumer()?);
        let mut names = blocking(move || {
            let metadata = consumer.fetch_metadata(None, REQUEST_TIMEOUT)?;
            Ok(metadata
                .topics()
                .iter()
                .filter_map(|t| {
                    let name = t.name().strip_prefix(prefix.as_str())?;
                    let name = name.strip_suffix(suffix.as_str())?;
                    (!name.is_empty()).then(|| name.to_owned())
                })
                .collect::<Vec<_>>())
        })
        .await?;
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// A cursor over the dead letters of `destination` that were neither replayed nor purged
    /// yet, as they are now; empty when the destination has no dead-letter topic.
    pub async fn open(&self, destination: &str) -> Result<Cursor> {
        let topic = self.topic(destination);
        let consumer = Arc::new(self.consumer()?);
        let opened_at = unix_millis(SystemTime::now());
        let (probe, name) = (Arc::clone(&consumer), topic.clone());
        let starts = blocking(move || starts(&probe, &name)).await?;
        let mut assignment = TopicPartitionList::new();
        let mut partitions = HashMap::with_capacity(starts.len());
        let mut len = 0;
        for start in starts {
            assignment.add_partition_offset(&topic, start.partition, start.offset)?;
            partitions.insert(
                start.partition,
                Partition {
                    high: start.high,
                    done: false,
                    pending: VecDeque::new(),
                },
            );
            len += start.estimate;
        }
        if !partitions.is_empty() {
            consumer.assign(&assignment)?;
        }
        Ok(Cursor {
            open: partitions.len(),
            consumer,
            producer: Arc::clone(&self.producer),
            destination: destination.to_owned(),
            topic,
            partitions,
            len,
            opened_at,
            dry_run: false,
        })
    }

    /// The dead letters of `destination` that `filter` selects, in topic order per partition.
    /// Reads only; removes nothing.
    pub async fn list<F>(&self, destination: &str, filter: F) -> Result<Vec<DeadLettered>>
    where
        F: Fn(&DeadLettered) -> bool,
    {
        let mut cursor = self.open(destination).await?;
        let mut out = Vec::new();
        while let Some(letter) = cursor.next().await? {
            if filter(&letter) {
                out.push(letter);
            }
        }
        cursor.close().await;
        Ok(out)
    }

    /// Replays the dead letters of `destination` that `filter` selects, at most `limit` of
    /// them, each removed once the broker acknowledged its republished copy. A record that
    /// fails to replay stays, and so does every record behind it in its partition.
    pub async fn replay<F>(
        &self,
        destination: &str,
        filter: F,
        limit: Option<u64>,
    ) -> Result<Summary>
    where
        F: Fn(&DeadLettered) -> bool,
    {
        let mut cursor = self.open(destination).await?;
        let mut summary = Summary::default();
        while let Some(letter) = cursor.next().await? {
            if !filter(&letter) || limit.is_some_and(|l| summary.handled >= l) {
                summary.skipped += 1;
            } else if !cursor.is_removable(&letter) {
                summary.blocked += 1;
            } else {
                match cursor.replay(&letter).await {
                    Ok(()) => summary.handled += 1,
                    Err(Error::Publish(_) | Error::Undecodable(_)) => summary.failed += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        cursor.close().await;
        Ok(summary)
    }

    /// Removes the dead letters of `destination` that `filter` selects without replaying
    /// them: only the leading run of selected records of each partition (see the
    /// [module docs](self)); the others are counted as blocked.
    pub async fn purge<F>(&self, destination: &str, filter: F) -> Result<Summary>
    where
        F: Fn(&DeadLettered) -> bool,
    {
        let mut cursor = self.open(destination).await?;
        let mut summary = Summary::default();
        while let Some(letter) = cursor.next().await? {
            if !filter(&letter) {
                summary.skipped += 1;
            } else if cursor.is_removable(&letter) {
                cursor.remove(&letter).await?;
                summary.handled += 1;
            } else {
                summary.blocked += 1;
            }
        }
        cursor.close().await;
        Ok(summary)
    }

    /// A consumer of the removal group that reads with a manual assignment.
    fn consumer(&self) -> Result<Inner> {
        let mut client = self.config.consumer_client();
        client
            .set("group.id", &self.group)
            .set("statistics.interval.ms", "0")
            // A partition's pass ends at its end of log.
            .set("enable.partition.eof", "true");
        client
            .create_with_context(DlqContext)
            .map_err(|e| Error::Setup(crate::Error::Client(e)))
    }
}

type Inner = StreamConsumer<DlqContext>;

/// Routes librdkafka's log lines to `tracing`; no rebalances happen (manual assignment).
struct DlqContext;

impl ClientContext for DlqContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::producer::log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(
            target: "librdkafka",
            error = &error as &dyn std::error::Error,
            reason,
            "kafka client error"
        );
    }
}

impl ConsumerContext for DlqContext {}

/// Where a pass over one partition starts, and how many records it should find.
struct Start {
    partition: i32,
    offset: Offset,
    /// The high watermark.
    high: i64,
    estimate: u64,
}

/// Per partition of `topic`: the group's offset (the oldest record when it has none) and the
/// number of records from there to the end of the log, estimated from the watermarks. Empty
/// when the topic does not exist.
///
/// The estimate is not used to end a pass: some Kafka-protocol brokers report the high
/// watermark of a partition whose last batch holds several records short of its end. A pass
/// ends at the end of each partition's log instead (`enable.partition.eof`).
fn starts(consumer: &Inner, topic: &str) -> Result<Vec<Start>> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    if found.error().is_some() {
        return Ok(Vec::new());
    }
    let ids: Vec<i32> = found
        .partitions()
        .iter()
        .map(MetadataPartition::id)
        .collect();
    let mut tpl = TopicPartitionList::new();
    for id in &ids {
        tpl.add_partition(topic, *id);
    }
    let committed = consumer.committed_offsets(tpl, REQUEST_TIMEOUT)?;
    let mut out = Vec::with_capacity(ids.len());
    for partition in ids {
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        let (offset, from) = match committed
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(at)) if at >= low => (Offset::Offset(at), at),
            _ => (Offset::Beginning, low),
        };
        let estimate = u64::try_from(high - from).unwrap_or_default();
        out.push(Start {
            partition,
            offset,
            high,
            estimate,
        });
    }
    Ok(out)
}

async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::Interrupted)?
}

struct Partition {
    /// The high watermark when the cursor was opened: records before it belong to the pass.
    high: i64,
    /// Whether the partition was read to its end.
    done: bool,
    /// Offsets read and still in the topic, in order: only the first may be removed.
    pending: VecDeque<i64>,
}

/// A pass over one dead-letter topic, from the group's offset to the end of each partition;
/// records dead-lettered after the cursor was opened (past the partition's high watermark of
/// then, with a later timestamp) wait for the next pass, so replaying to a worker that
/// dead-letters them again cannot loop.
///
/// Read with [`next`](Self::next); for each record, [`replay`](Self::replay) it,
/// [`remove`](Self::remove) it, or do nothing to keep it. Each removal commits the group's
/// offset at once, so a cursor dropped at any point leaves the topic consistent.
///
/// In a [dry run](Self::dry_run) replay and remove publish and commit nothing but are counted
/// as if they had, so a dry run reports what a real one would do.
pub struct Cursor {
    consumer: Arc<Inner>,
    producer: Arc<Producer>,
    destination: String,
    topic: String,
    partitions: HashMap<i32, Partition>,
    /// Partitions not read to their end yet.
    open: usize,
    len: u64,
    /// When the cursor was opened, in Unix milliseconds: later records are left for the next
    /// pass.
    opened_at: i64,
    dry_run: bool,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("destination", &self.destination)
            .field("topic", &self.topic)
            .field("len", &self.len)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl Cursor {
    /// Publishes and commits nothing, as a rehearsal.
    #[must_use]
    pub fn dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// The destination whose dead letters this reads.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How many records the pass should cover: those beyond the group's offset when it was
    /// opened, as the broker's watermarks tell (an estimate: count what
    /// [`next`](Self::next) returns for an exact number).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the pass should find no record (see [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next record, or `None` once every partition was read to its end. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<DeadLettered>> {
        while self.open > 0 {
            let consumer = Arc::clone(&self.consumer);
            let received = tokio::time::timeout(READ_TIMEOUT, consumer.recv())
                .await
                .map_err(|_| Error::Stalled(self.topic.clone()))?;
            let message = match received {
                Ok(message) => message,
                Err(KafkaError::PartitionEOF(id)) => {
                    self.finish(id)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let id = message.partition();
            let Some(partition) = self.partitions.get(&id).filter(|p| !p.done) else {
                continue;
            };
            // Written after the cursor was opened: beyond the watermark of then, and newer
            // (the watermark alone may fall short, the time alone may be skewed).
            let later = message.offset() >= partition.high
                && message
                    .timestamp()
                    .to_millis()
                    .is_some_and(|at| at > self.opened_at);
            if later {
                self.finish(id)?;
                continue;
            }
            if let Some(partition) = self.partitions.get_mut(&id) {
                partition.pending.push_back(message.offset());
            }
            return Ok(Some(decode(&message, &self.destination)));
        }
        Ok(None)
    }

    /// Partition `id` was read to its end: stop fetching it.
    fn finish(&mut self, id: i32) -> Result<()> {
        let Some(partition) = self.partitions.get_mut(&id) else {
            return Ok(());
        };
        if !partition.done {
            partition.done = true;
            self.open -= 1;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, id);
            self.consumer.pause(&tpl)?;
        }
        Ok(())
    }

    /// Whether `letter` can leave the topic now: every record before it in its partition was
    /// replayed or removed by this cursor.
    pub fn is_removable(&self, letter: &DeadLettered) -> bool {
        self.partitions
            .get(&letter.position.partition)
            .and_then(|p| p.pending.front())
            == Some(&letter.position.offset)
    }

    /// Republishes `letter` to its destination (original value, key and headers, without the
    /// dead-letter attributes and the attempt counter, with [`REPLAYED_AT`]), waits for the
    /// broker's acknowledgement, then removes it.
    ///
    /// Fails without publishing when it [is not removable](Self::is_removable)
    /// ([`Error::Blocked`]) or not in the wire format ([`Error::Undecodable`]).
    pub async fn replay(&mut self, letter: &DeadLettered) -> Result<()> {
        self.check_removable(letter)?;
        if let Err(e) = &letter.event {
            return Err(Error::Undecodable(e.to_string()));
        }
        if !self.dry_run {
            let headers = replay_headers(&letter.headers, &rfc3339(SystemTime::now()));
            self.producer
                .send(
                    &letter.destination,
                    letter.key.as_deref(),
                    &letter.body,
                    headers,
                )
                .await
                .map_err(Error::Publish)?;
        }
        self.remove(letter).await
    }

    /// Removes `letter` without replaying it: commits the group's offset past it.
    /// [`Error::Blocked`] when it [is not removable](Self::is_removable).
    pub async fn remove(&mut self, letter: &DeadLettered) -> Result<()> {
        self.check_removable(letter)?;
        let at = &letter.position;
        if !self.dry_run {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, at.partition, Offset::Offset(at.offset + 1))?;
            let consumer = Arc::clone(&self.consumer);
            blocking(move || Ok(consumer.commit(&tpl, CommitMode::Sync)?)).await?;
        }
        if let Some(partition) = self.partitions.get_mut(&at.partition) {
            partition.pending.pop_front();
        }
        Ok(())
    }

    fn check_removable(&self, letter: &DeadLettered) -> Result<()> {
        if self.is_removable(letter) {
            Ok(())
        } else {
            Err(Error::Blocked(letter.position.clone()))
        }
    }

    /// Ends the pass. Records not removed stay in the topic.
    pub async fn close(self) {
        // Closing a consumer may wait for the broker: not on a runtime thread.
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    }
}

/// Reads a dead-letter record; never fails (an undecodable record is still listed).
fn decode<M: Message>(message: &M, destination: &str) -> DeadLettered {
    let headers: Vec<WireHeader> = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let value = Bytes::copy_from_slice(h.value.unwrap_or_default());
                    (h.key.to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    let pairs = || headers.iter().map(|(n, v)| (n.as_str(), v.as_ref()));
    let body = Bytes::copy_from_slice(message.payload().unwrap_or_default());
    let event = wire::decode(pairs(), body.clone(), None, Binding::KAFKA);
    let dead_letter = DeadLetter::decode(pairs(), Binding::KAFKA);
    DeadLettered {
        event,
        body,
        dead_letter,
        destination: destination.to_owned(),
        position: KafkaOffset {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        },
        key: message.key().map(Bytes::copy_from_slice),
        headers,
    }
}

/// The headers of a replayed record: the original ones without the dead-letter attributes,
/// the attempt counter and an earlier replay mark, then [`REPLAYED_AT`].
fn replay_headers(original: &[WireHeader], replayed_at: &str) -> OwnedHeaders {
    let attempt = wire::attempt_header(Binding::KAFKA);
    let mut headers = OwnedHeaders::new_with_capacity(original.len() + 1);
    for (name, value) in original {
        if name.starts_with(DEAD_LETTER_ATTRIBUTES) || *name == attempt || name == REPLAYED_AT {
            continue;
        }
        headers = headers.insert(Header {
            key: name.as_str(),
            value: Some(value.as_ref()),
        });
    }
    headers.insert(Header {
        key: REPLAYED_AT,
        value: Some(replayed_at.as_bytes()),
    })
}

fn unix_millis(at: SystemTime) -> i64 {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    i64::try_from(millis).unwrap_or(i64::MAX)
}

/// `at` as RFC 3339 UTC with whole seconds, e.g. `2026-01-02T03:04:05Z` (the crate has no
/// date library of its own).
fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, day) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = i64::try_from(days).unwrap_or_default() + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        day / 3_600,
        day % 3_600 / 60,
        day % 60
    )
}

#[cfg(test)]
mod tests {
    use firefly_webhook::FailureCategory;

    use super::*;

    fn names(headers: &OwnedHeaders) -> Vec<String> {
        headers.iter().map(|h| h.key.to_owned()).collect()
    }

    #[test]
    fn replayed_records_drop_dead_letter_attributes_and_attempts() {
        let event = WebhookEvent::new("github", "{}");
        let mut original = wire::encode(&event, Binding::KAFKA);
        original.push((
            wire::attempt_header(Binding::KAFKA),
            Bytes::from_static(b"3"),
        ));
        original.push((REPLAYED_AT.to_owned(), Bytes::from_static(b"earlier")));
        let failure = DeadLetter::new("boom", FailureCategory::Unrecoverable, 3, "permanent", "gh");
        original.extend(failure.encode(Binding::KAFKA));

        let at = rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(at, "2023-11-14T22:13:20Z");
        let headers = replay_headers(&original, &at);
        let names = names(&headers);
        assert!(names.contains(&"ce_id".to_owned()));
        assert!(!names.iter().any(|n| n.starts_with("ce_deadletter")));
        assert!(!names.contains(&"ce_attempt".to_owned()));
        assert_eq!(names.iter().filter(|n| *n == REPLAYED_AT).count(), 1);
        let mark = headers.iter().find(|h| h.key == REPLAYED_AT).unwrap();
        assert_eq!(mark.value, Some(&b"2023-11-14T22:13:20Z"[..]));

        let pairs = headers.iter().map(|h| (h.key, h.value.unwrap_or_default()));
        let back = wire::decode(pairs, event.body.clone(), None, Binding::KAFKA).unwrap();
        assert_eq!(back.id, event.id);
        assert!(
            DeadLetter::decode(
                headers.iter().map(|h| (h.key, h.value.unwrap_or_default())),
                Binding::KAFKA
            )
            .is_none()
        );
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(at(1_767_323_045), "2026-01-02T03:04:05Z");
    }
}
